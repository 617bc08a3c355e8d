// The eBPF interceptor's programs are IPv4 only (connect4, sk_lookup on IPv4 routes): IPv6
// ClusterIPs are handed to a rule interceptor it owns — nftables when `nft` can redirect in an
// ip6 nat chain here, else ip6tables — restricted to IPv6 (it never touches IPv4 rules or the
// IPv4 VIP routes sk_lookup keeps).
import type { Logger } from '../../util/log.ts';
import { IptablesInterceptor, ip6Binary } from '../iptables.ts';
import { NftablesInterceptor, nftIpv6RedirectProblem } from '../nftables.ts';
import { ipv6Disabled, type RuleInterceptor } from '../rule-interceptor.ts';
import { type CommandPrefix, haveCommand } from '../run-command.ts';

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
  const nftProblem = await nftIpv6RedirectProblem(prefix);
  if (!nftProblem)
    return {
      interceptor: new NftablesInterceptor(common),
      reason: 'the BPF programs are IPv4 only; nftables ip6 nat redirect works',
    };
  for (const binary of ['iptables-nft', 'iptables-legacy'] as const) {
    const bin6 = ip6Binary(binary);
    if (!(await haveCommand(prefix, `${bin6}-restore`, '--version', true))) continue;
    return {
      interceptor: new IptablesInterceptor({ ...common, binary }),
      reason: `the BPF programs are IPv4 only; ${nftProblem}; ${bin6}`,
    };
  }
  return { reason: `${nftProblem}; no ip6tables-restore` };
}
