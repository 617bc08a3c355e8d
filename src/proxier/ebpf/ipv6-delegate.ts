// The eBPF interceptor's programs are IPv4 only (connect4, sk_lookup on IPv4 routes): IPv6
// ClusterIPs are handed to a rule interceptor it owns — nftables when `nft` can redirect in an
// ip6 nat chain here, else ip6tables — restricted to IPv6 (it never touches IPv4 rules or the
// IPv4 VIP routes sk_lookup keeps).
import type { Logger } from '../../util/log.ts';
import { IptablesInterceptor } from '../iptables.ts';
import { NftablesInterceptor } from '../nftables.ts';
import { ipv6Disabled, type RuleInterceptor } from '../rule-interceptor.ts';
import { type CommandPrefix, runCommand } from '../run-command.ts';

export interface Ipv6DelegateOptions {
  log: Logger;
  commandPrefix: CommandPrefix;
  bypassGid?: number;
  /** A local /128 route per IPv6 VIP (default true, as sk_lookup always routes the IPv4 ones). */
  localVipRoutes?: boolean;
}

/** The rule interceptor that will serve IPv6 and why, or why IPv6 stays unserved. */
export async function chooseIpv6Delegate(
  opts: Ipv6DelegateOptions,
): Promise<{ interceptor?: RuleInterceptor; reason: string }> {
  const prefix = opts.commandPrefix;
  const disabled = await ipv6Disabled(prefix);
  if (disabled) return { reason: disabled };
  const common = {
    log: opts.log,
    commandPrefix: prefix,
    bypassGid: opts.bypassGid,
    localVipRoutes: opts.localVipRoutes ?? true,
    ipv6Only: true,
    routeFamilies: 'ipv6' as const,
  };
  // Exit 0 of `--version`, not just "spawned": behind a prefix (`ip netns exec`, `env`) a missing
  // tool is a non-zero exit of the prefix command, not a spawn error.
  const runs = async (cmd: string) =>
    (await runCommand(prefix, cmd, ['--version']).catch(() => undefined))?.code === 0;
  const why: string[] = [];
  if (await runs('nft')) {
    const probe =
      'table ip6 edgemesh_probe {\n  chain c { type nat hook output priority -100; meta l4proto tcp redirect to :1; }\n}\ndelete table ip6 edgemesh_probe\n';
    const r = await runCommand(prefix, 'nft', ['-f', '-'], probe);
    if (r.code === 0)
      return {
        interceptor: new NftablesInterceptor(common),
        reason: 'the BPF programs are IPv4 only; nftables ip6 nat redirect works',
      };
    why.push(`nft ip6 nat redirect failed: ${r.stderr.trim()}`);
  } else why.push('nft not found');
  for (const binary of ['iptables-nft', 'iptables-legacy'] as const) {
    const bin6 = binary.replace(/^iptables/, 'ip6tables');
    if (!(await runs(`${bin6}-restore`))) continue;
    return {
      interceptor: new IptablesInterceptor({ ...common, binary }),
      reason: `the BPF programs are IPv4 only; ${why.join('; ')}; ${bin6}`,
    };
  }
  return { reason: `${why.join('; ')}; no ip6tables-restore` };
}
