// `edgemesh status`: the interceptor's IPv6 line (intercepted and how, or why not), and its absence
// for agents that report no IPv6 state (older agents, `--intercept none`).
import { describe, expect, it } from 'vitest';
import { type AgentStatus, formatStatus } from '../../src/cli/status.ts';

const doc = (intercept: AgentStatus['intercept']): AgentStatus => ({
  nodeName: 'node-a',
  generation: 3,
  intercept,
  dataplane: { mode: 'ts', reason: '--dataplane ts' },
  services: [],
});

describe('status: IPv6 interception line', () => {
  it('says how IPv6 is intercepted, or why not, right under the interceptor', () => {
    const on = formatStatus(
      doc({ mode: 'iptables', reason: 'r', ipv6: { intercepted: true, detail: 'ip6tables-nft nat table' } }),
    ).split('\n');
    const at = on.findIndex((l) => l.startsWith('intercept:'));
    expect(on[at + 1]).toBe('  ipv6:     intercepted: ip6tables-nft nat table');
    const off = formatStatus(
      doc({
        mode: 'nftables',
        ipv6: { intercepted: false, detail: 'IPv6 is disabled' },
      }),
    );
    expect(off).toContain('  ipv6:     not intercepted: IPv6 is disabled\n');
    expect(formatStatus(doc({ mode: 'none' }))).not.toContain('ipv6:');
  });
});
