// What the iptables and nftables interceptors share: their rules are kept by RuleSetSyncs and
// their VIPs get local routes (vip-routes.ts), always in the same order — rules before routes on
// sync (a VIP turns local only once it is caught), routes before rules on stop (a VIP still local
// after its redirect is gone would refuse connections). IPv6 targets are caught only when start()
// found IPv6 usable here; otherwise they are skipped with one warning (IPv4 is never affected).
// Subclasses say how to probe IPv6, sync, check and remove their rules.
import type { ServiceTable } from '../controller/types.ts';
import type { Logger } from '../util/log.ts';
import { familyOf, type IpFamily } from '../util/net.ts';
import type { Interceptor, InterceptorMode, InterceptTarget, Ipv6Interception } from './interceptor.ts';
import { type CommandPrefix, runCommand } from './run-command.ts';
import { type VipFamilies, VipRoutes } from './vip-routes.ts';

/** Options both rule interceptors take. */
export interface RuleInterceptorOptions {
  log: Logger;
  /** Adds a local /32 (/128) route per intercepted ClusterIP (vip-routes.ts): node-local clients get lo's MTU. */
  localVipRoutes?: boolean;
  /** Prefix for every command (tests run the tools inside a netns). */
  commandPrefix?: CommandPrefix;
  /** Which families' VIP routes this interceptor owns (default both; eBPF's IPv6 delegate: ipv6). */
  routeFamilies?: VipFamilies;
  /** Only IPv6 targets (eBPF's delegate: its BPF programs serve IPv4): no IPv4 rules at all. */
  ipv6Only?: boolean;
}

/**
 * Why IPv6 cannot carry traffic in the namespace `prefix` runs in (undefined: it can): the kernel
 * has no IPv6, or it is switched off (`net.ipv6.conf.all.disable_ipv6`, read in that namespace).
 */
export async function ipv6Disabled(prefix: CommandPrefix): Promise<string | undefined> {
  const path = '/proc/sys/net/ipv6/conf/all/disable_ipv6';
  const r = await runCommand(prefix, 'cat', [path]).catch(() => undefined);
  if (r?.code !== 0) return 'the kernel has no IPv6 (no /proc/sys/net/ipv6)';
  if (r.stdout.trim() === '1') return 'IPv6 is disabled (net.ipv6.conf.all.disable_ipv6 = 1)';
  return undefined;
}

/** An interceptor made of a rule set per family plus the VIPs' local routes. */
export abstract class RuleInterceptor implements Interceptor {
  readonly name = 'interceptor';
  abstract readonly mode: InterceptorMode;
  private readonly routes: VipRoutes;
  private v6: Ipv6Interception = { intercepted: false, detail: 'not started' };
  /** Warned once per start that IPv6 targets are being skipped. */
  private skipWarned = false;

  constructor(
    private readonly base: RuleInterceptorOptions,
    private readonly owner: string,
  ) {
    this.routes = new VipRoutes({
      log: base.log,
      commandPrefix: base.commandPrefix ?? [],
      owner,
      enabled: base.localVipRoutes ?? false,
      families: base.routeFamilies,
    });
  }

  /** IPv6 interception state (after start()). */
  get ipv6(): Ipv6Interception {
    return this.v6;
  }

  /** Whether IPv6 rules are installed (start() decided). */
  protected get ipv6Usable(): boolean {
    return this.v6.intercepted;
  }

  /** The families this interceptor installs rules for now (IPv6 once start() found it usable). */
  protected get families(): IpFamily[] {
    const out: IpFamily[] = this.base.ipv6Only ? [] : [4];
    if (this.ipv6Usable) out.push(6);
    return out;
  }

  /** How IPv6 is served when usable (e.g. 'ip6tables-nft nat'), or why not (a reason string). */
  protected abstract probeIpv6(): Promise<{ ok: true; how: string } | { ok: false; reason: string }>;
  /** Removes the rules a crashed earlier run left (start; IPv6 ones only when ipv6Usable). */
  protected abstract removeLeftovers(): Promise<void>;
  /** Removes exactly our own rules (stop). */
  protected abstract removeRules(): Promise<void>;
  /** Installs exactly `targets` (already filtered to the usable families). */
  protected abstract syncRules(targets: readonly InterceptTarget[]): Promise<void>;
  /** Drift check and repair of the rules; true when it repaired. */
  protected abstract repairRules(): Promise<boolean>;
  /** Forgets what was installed: the next sync installs everything. */
  protected abstract resetRules(): void;

  /** Cleans up whatever a crashed earlier run left behind; its VIP routes are adopted. */
  async start(): Promise<void> {
    const probe = await this.probeIpv6();
    this.v6 = probe.ok
      ? { intercepted: true, detail: probe.how }
      : { intercepted: false, detail: probe.reason };
    this.skipWarned = false;
    if (probe.ok) this.base.log.info({ owner: this.owner, how: probe.how }, 'IPv6 interception available');
    else
      this.base.log.warn(
        { owner: this.owner, reason: probe.reason },
        'IPv6 interception unavailable: IPv6 ClusterIPs will be skipped (IPv4 unaffected)',
      );
    await this.removeLeftovers();
    this.resetRules();
    await this.routes.start();
  }

  /** Records the snapshot for the VIP routes (an endpoint address never gets one). */
  observe(table: ServiceTable): void {
    this.routes.observe(table);
  }

  /** Installs the rules, then the VIPs' local routes (IPv6 targets only when IPv6 is usable). */
  async sync(targets: readonly InterceptTarget[]): Promise<void> {
    const kept = this.usable(targets);
    await this.syncRules(kept);
    await this.routes.syncTargets(kept);
  }

  /** Drift check on the rules and the VIP routes; re-installs what differs; true when it repaired. */
  async repair(): Promise<boolean> {
    const rules = await this.repairRules();
    const routes = await this.routes.reconcile();
    return rules || routes;
  }

  /** Routes first, then the rules. */
  async stop(): Promise<void> {
    await this.routes.clear();
    await this.removeRules();
    this.resetRules();
  }

  /** The targets this interceptor can catch; warns once when IPv6 ones must be skipped. */
  private usable(targets: readonly InterceptTarget[]): readonly InterceptTarget[] {
    const out = this.base.ipv6Only ? targets.filter((t) => familyOf(t.clusterIP) === 6) : targets;
    if (this.v6.intercepted) return out;
    const skipped = out.filter((t) => familyOf(t.clusterIP) === 6);
    if (skipped.length === 0) return out;
    if (!this.skipWarned) {
      this.skipWarned = true;
      this.base.log.warn(
        { owner: this.owner, skipped: skipped.length, first: skipped[0]?.id, reason: this.v6.detail },
        'skipping IPv6 ClusterIPs: IPv6 interception unavailable',
      );
    }
    return out.filter((t) => familyOf(t.clusterIP) === 4);
  }
}
