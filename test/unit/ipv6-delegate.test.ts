// Which rule interceptor the eBPF interceptor hands IPv6 ClusterIPs to, without root: stand-in
// tools on a PATH of their own (env PATH=DIR as the command prefix) decide what "works here".
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { chooseIpv6Delegate } from '../../src/proxier/ebpf/ipv6-delegate.ts';
import { IptablesInterceptor } from '../../src/proxier/iptables.ts';
import { NftablesInterceptor } from '../../src/proxier/nftables.ts';
import { silentLogger } from '../../src/util/log.ts';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A PATH holding only `tools` (name → sh body), used as `env PATH=...` command prefix. */
function toolbox(tools: Record<string, string>): string[] {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'em-v6-delegate-'));
  dirs.push(dir);
  for (const [name, body] of Object.entries(tools)) {
    writeFileSync(path.join(dir, name), `#!/bin/sh\n${body}\n`);
    chmodSync(path.join(dir, name), 0o755);
  }
  return ['/usr/bin/env', `PATH=${dir}`];
}

const choose = (prefix: string[]) =>
  chooseIpv6Delegate({ log: silentLogger, commandPrefix: prefix, bypassGid: 40001 });

describe('eBPF IPv6 delegate choice', () => {
  it('prefers nftables when an ip6 nat redirect can be created', async () => {
    const c = await choose(
      toolbox({ cat: 'echo 0', nft: 'cat >/dev/null; exit 0', 'ip6tables-nft-restore': 'exit 0' }),
    );
    expect(c.interceptor).toBeInstanceOf(NftablesInterceptor);
    expect(c.reason).toBe('the BPF programs are IPv4 only; nftables ip6 nat redirect works');
  });

  it('falls back to ip6tables (nf_tables binaries) when nft cannot redirect, saying why', async () => {
    const c = await choose(
      toolbox({
        cat: 'echo 0',
        nft: '[ "$1" = --version ] && exit 0; cat >/dev/null; echo "no nat here" >&2; exit 1',
        'ip6tables-nft-restore': 'exit 0',
      }),
    );
    expect(c.interceptor).toBeInstanceOf(IptablesInterceptor);
    expect((c.interceptor as IptablesInterceptor).binary).toBe('iptables-nft');
    expect(c.reason).toMatch(/nft ip6 nat redirect failed: no nat here; ip6tables-nft$/);
  });

  it('serves no IPv6 when it is disabled or no tool can, with the reason', async () => {
    const off = await choose(toolbox({ cat: 'echo 1', nft: 'exit 0' }));
    expect(off).toEqual({ reason: 'IPv6 is disabled (net.ipv6.conf.all.disable_ipv6 = 1)' });
    const none = await choose(toolbox({ cat: 'echo 0' }));
    expect(none).toEqual({ reason: 'nft not found; no ip6tables-restore' });
  });
});
