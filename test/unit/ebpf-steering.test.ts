// Parsers behind sk_lookup steering: which process/fd owns a proxy listener (`ss -tlnp`), and which
// VIPs already have a local route (`ip route show table local`).
import { describe, expect, it } from 'vitest';
import { parseSsListener } from '../../src/proxier/ebpf/sk-lookup-steering.ts';
import { parseLocalRoutes, ROUTE_PROTO } from '../../src/proxier/vip-routes.ts';

describe('sk_lookup steering parsers', () => {
  it('finds the owner pid and fd of a listener in `ss -Htlnp` output', () => {
    const line =
      'LISTEN 0      511        127.0.0.1:40001      0.0.0.0:*    users:(("node",pid=4242,fd=23),("node",pid=4242,fd=24))';
    expect(parseSsListener(line)).toEqual({ pid: 4242, fd: 23 });
    expect(parseSsListener('')).toBeUndefined();
    expect(parseSsListener('LISTEN 0 511 0.0.0.0:40001 0.0.0.0:*')).toBeUndefined();
  });

  it('reads local /32 routes (any protocol) and ignores wider prefixes and other route types', () => {
    const text = [
      'local 10.96.0.10 dev lo proto kernel scope host src 10.96.0.10 ',
      `local 10.96.0.12 dev lo proto ${ROUTE_PROTO} scope host `,
      'local 10.96.0.13 dev lo proto 2280 scope host ',
      'local 127.0.0.0/8 dev lo proto kernel scope host src 127.0.0.1 ',
      'broadcast 10.244.0.255 dev br0 proto kernel scope link src 10.244.0.1 ',
      '',
    ].join('\n');
    const { all, ours } = parseLocalRoutes(text);
    expect([...all].sort()).toEqual(['10.96.0.10', '10.96.0.12', '10.96.0.13']);
    expect([...ours]).toEqual(['10.96.0.12']);
  });
});
