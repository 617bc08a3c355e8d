// The nftables interceptor: table `ip edgemesh` with port maps keyed by `ip daddr . dport`,
// replaced atomically with one `nft -f` per sync.
import type { ServiceTable } from '../controller/types.ts';
import type { Logger } from '../util/log.ts';
import type { Interceptor, InterceptTarget } from './interceptor.ts';
import type { RuleOptions } from './iptables-render.ts';
import { expectedShape, renderCleanup, renderDelta, renderFull, TABLE } from './nftables-render.ts';
import { RuleSetSync } from './rule-set-sync.ts';
import { type CommandPrefix, mustRun, runCommand } from './run-command.ts';
import { VipRoutes } from './vip-routes.ts';

export interface NftablesInterceptorOptions extends RuleOptions {
  log: Logger;
  /** Adds a local /32 route per intercepted ClusterIP (vip-routes.ts): node-local clients get lo's MTU. */
  localVipRoutes?: boolean;
  /** Prefix for every command (tests run nft inside a netns). */
  commandPrefix?: CommandPrefix;
}

interface NftJson {
  nftables?: Array<{
    rule?: { chain: string };
    chain?: { name: string };
    map?: { name: string; elem?: unknown[] };
  }>;
}

/** Installs table `ip edgemesh`; stop() deletes that table and nothing else. */
export class NftablesInterceptor implements Interceptor {
  readonly name = 'interceptor';
  readonly mode = 'nftables' as const;
  private readonly state = new RuleSetSync({
    applyFull: (targets) => this.nft(renderFull(targets, this.options)),
    renderDelta,
    applyDelta: (payload) => this.nft(payload),
    installed: (targets) => this.matches(targets),
  });

  private readonly routes: VipRoutes;

  constructor(private readonly options: NftablesInterceptorOptions) {
    this.routes = new VipRoutes({
      log: options.log,
      commandPrefix: this.prefix,
      owner: 'nftables',
      enabled: options.localVipRoutes ?? false,
    });
  }

  /** Removes a table left by a crashed earlier run. */
  async start(): Promise<void> {
    const r = await runCommand(this.prefix, 'nft', ['list', 'table', 'ip', TABLE]);
    if (r.code === 0) {
      this.options.log.info('removing leftover edgemesh nftables table');
      await this.nft(renderCleanup());
    }
    this.state.reset();
    await this.routes.start();
  }

  /** Records the snapshot for the VIP routes (an endpoint address never gets one). */
  observe(table: ServiceTable): void {
    this.routes.observe(table);
  }

  /** Installs the table, then the VIPs' local routes (a VIP turns local only once it is caught). */
  async sync(targets: readonly InterceptTarget[]): Promise<void> {
    await this.state.sync(targets);
    await this.routes.syncTargets(targets);
  }

  /**
   * Drift check on the table's shape (chains, rule and element counts) and the VIP routes;
   * re-installs what differs.
   */
  async repair(): Promise<boolean> {
    const rules = await this.state.repair();
    const routes = await this.routes.reconcile();
    return rules || routes;
  }

  async stop(): Promise<void> {
    // Routes first: a VIP still local after its redirect is gone would refuse connections.
    await this.routes.clear();
    await this.nft(renderCleanup());
    this.state.reset();
  }

  private async matches(targets: readonly InterceptTarget[]): Promise<boolean> {
    const r = await runCommand(this.prefix, 'nft', ['-j', 'list', 'table', 'ip', TABLE]);
    if (r.code !== 0) return false;
    const want = expectedShape(targets, this.options);
    const chains: Record<string, number> = {};
    const maps: Record<string, number> = {};
    for (const item of (JSON.parse(r.stdout) as NftJson).nftables ?? []) {
      if (item.chain) chains[item.chain.name] ??= 0;
      if (item.rule) chains[item.rule.chain] = (chains[item.rule.chain] ?? 0) + 1;
      if (item.map) maps[item.map.name] = item.map.elem?.length ?? 0;
    }
    const same = (a: Record<string, number>, b: Record<string, number>) =>
      Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);
    return same(want.chains, chains) && same(want.maps, maps);
  }

  private get prefix(): CommandPrefix {
    return this.options.commandPrefix ?? [];
  }

  private async nft(payload: string): Promise<void> {
    await mustRun(this.prefix, 'nft', ['-f', '-'], payload);
  }
}
