// The nftables interceptor: table `ip edgemesh` with port maps keyed by `ip daddr . dport`,
// replaced atomically with one `nft -f` per sync.
import type { InterceptTarget } from './interceptor.ts';
import type { RuleOptions } from './iptables-render.ts';
import { expectedShape, renderCleanup, renderDelta, renderFull, TABLE } from './nftables-render.ts';
import { RuleInterceptor, type RuleInterceptorOptions } from './rule-interceptor.ts';
import { RuleSetSync } from './rule-set-sync.ts';
import { type CommandPrefix, mustRun, runCommand } from './run-command.ts';

export interface NftablesInterceptorOptions extends RuleOptions, RuleInterceptorOptions {}

interface NftJson {
  nftables?: Array<{
    rule?: { chain: string };
    chain?: { name: string };
    map?: { name: string; elem?: unknown[] };
  }>;
}

/** Installs table `ip edgemesh`; stop() deletes that table and nothing else. */
export class NftablesInterceptor extends RuleInterceptor {
  readonly mode = 'nftables' as const;
  protected readonly state = new RuleSetSync({
    applyFull: (targets) => this.nft(renderFull(targets, this.options)),
    renderDelta,
    applyDelta: (payload) => this.nft(payload),
    installed: (targets) => this.matches(targets),
  });

  constructor(private readonly options: NftablesInterceptorOptions) {
    super(options, 'nftables');
  }

  protected async removeLeftovers(): Promise<void> {
    const r = await runCommand(this.prefix, 'nft', ['list', 'table', 'ip', TABLE]);
    if (r.code !== 0) return;
    this.options.log.info('removing leftover edgemesh nftables table');
    await this.nft(renderCleanup());
  }

  protected async removeRules(): Promise<void> {
    await this.nft(renderCleanup());
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
