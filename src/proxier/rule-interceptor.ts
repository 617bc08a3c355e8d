// What the iptables and nftables interceptors share: their rules are kept by a RuleSetSync and
// their VIPs get local routes (vip-routes.ts), always in the same order — rules before routes on
// sync (a VIP turns local only once it is caught), routes before rules on stop (a VIP still local
// after its redirect is gone would refuse connections). Subclasses only say how to remove rules.
import type { ServiceTable } from '../controller/types.ts';
import type { Logger } from '../util/log.ts';
import type { Interceptor, InterceptorMode, InterceptTarget } from './interceptor.ts';
import type { RuleSetSync } from './rule-set-sync.ts';
import type { CommandPrefix } from './run-command.ts';
import { VipRoutes } from './vip-routes.ts';

/** Options both rule interceptors take. */
export interface RuleInterceptorOptions {
  log: Logger;
  /** Adds a local /32 route per intercepted ClusterIP (vip-routes.ts): node-local clients get lo's MTU. */
  localVipRoutes?: boolean;
  /** Prefix for every command (tests run the tools inside a netns). */
  commandPrefix?: CommandPrefix;
}

/** An interceptor made of a rule set plus the VIPs' local routes. */
export abstract class RuleInterceptor implements Interceptor {
  readonly name = 'interceptor';
  abstract readonly mode: InterceptorMode;
  protected abstract readonly state: RuleSetSync;
  private readonly routes: VipRoutes;

  constructor(options: RuleInterceptorOptions, owner: string) {
    this.routes = new VipRoutes({
      log: options.log,
      commandPrefix: options.commandPrefix ?? [],
      owner,
      enabled: options.localVipRoutes ?? false,
    });
  }

  /** Removes the rules a crashed earlier run left (start). */
  protected abstract removeLeftovers(): Promise<void>;
  /** Removes exactly our own rules (stop). */
  protected abstract removeRules(): Promise<void>;

  /** Cleans up whatever a crashed earlier run left behind; its VIP routes are adopted. */
  async start(): Promise<void> {
    await this.removeLeftovers();
    this.state.reset();
    await this.routes.start();
  }

  /** Records the snapshot for the VIP routes (an endpoint address never gets one). */
  observe(table: ServiceTable): void {
    this.routes.observe(table);
  }

  /** Installs the rules, then the VIPs' local routes. */
  async sync(targets: readonly InterceptTarget[]): Promise<void> {
    await this.state.sync(targets);
    await this.routes.syncTargets(targets);
  }

  /** Drift check on the rules and the VIP routes; re-installs what differs; true when it repaired. */
  async repair(): Promise<boolean> {
    const rules = await this.state.repair();
    const routes = await this.routes.reconcile();
    return rules || routes;
  }

  /** Routes first, then the rules. */
  async stop(): Promise<void> {
    await this.routes.clear();
    await this.removeRules();
    this.state.reset();
  }
}
