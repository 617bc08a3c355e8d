// The nftables interceptor: table `ip edgemesh` (and `ip6 edgemesh` for IPv6 ClusterIPs) with port
// maps keyed by `daddr . dport`, replaced atomically with one `nft -f` per sync that covers both.
import type { InterceptTarget } from './interceptor.ts';
import type { RuleOptions } from './iptables-render.ts';
import {
  expectedShape,
  nftFamily,
  renderCleanup,
  renderDelta,
  renderFull,
  TABLE,
} from './nftables-render.ts';
import { ipv6Disabled, RuleInterceptor, type RuleInterceptorOptions } from './rule-interceptor.ts';
import { RuleSetSync } from './rule-set-sync.ts';
import { type CommandPrefix, haveCommand, mustRun, runCommand } from './run-command.ts';

export interface NftablesInterceptorOptions extends RuleOptions, RuleInterceptorOptions {}

interface NftJson {
  nftables?: Array<{
    rule?: { chain: string };
    chain?: { name: string };
    map?: { name: string; elem?: unknown[] };
  }>;
}

/**
 * Why nft cannot REDIRECT IPv6 in the namespace `prefix` runs in (undefined: it can): nft missing,
 * or a throw-away ip6 nat chain with a redirect is refused (a kernel may have only IPv4 NAT).
 */
export async function nftIpv6RedirectProblem(prefix: CommandPrefix): Promise<string | undefined> {
  if (!(await haveCommand(prefix, 'nft', '--version', true))) return 'nft not found';
  const payload =
    'table ip6 edgemesh_probe {\n  chain c { type nat hook output priority -100; meta l4proto tcp redirect to :1; }\n}\ndelete table ip6 edgemesh_probe\n';
  const r = await runCommand(prefix, 'nft', ['-f', '-'], payload);
  return r.code === 0 ? undefined : `nft ip6 nat redirect failed: ${r.stderr.trim()}`;
}

/** Installs table `ip edgemesh` (+ `ip6 edgemesh`); stop() deletes those tables and nothing else. */
export class NftablesInterceptor extends RuleInterceptor {
  readonly mode = 'nftables' as const;
  private readonly state = new RuleSetSync({
    applyFull: (targets) => this.nft(renderFull(targets, this.options, this.families)),
    renderDelta,
    applyDelta: (payload) => this.nft(payload),
    installed: (targets) => this.matches(targets),
  });

  constructor(private readonly options: NftablesInterceptorOptions) {
    super(options, 'nftables');
  }

  protected async probeIpv6(): Promise<{ ok: true; how: string } | { ok: false; reason: string }> {
    const disabled = await ipv6Disabled(this.prefix);
    if (disabled) return { ok: false, reason: disabled };
    const problem = await nftIpv6RedirectProblem(this.prefix);
    return problem ? { ok: false, reason: problem } : { ok: true, how: `nftables table ip6 ${TABLE}` };
  }

  protected syncRules(targets: readonly InterceptTarget[]): Promise<void> {
    return this.state.sync(targets);
  }

  protected repairRules(): Promise<boolean> {
    return this.state.repair();
  }

  protected resetRules(): void {
    this.state.reset();
  }

  protected async removeLeftovers(): Promise<void> {
    for (const family of this.families) {
      const r = await runCommand(this.prefix, 'nft', ['list', 'table', nftFamily(family), TABLE]);
      if (r.code !== 0) continue;
      this.options.log.info({ family }, 'removing leftover edgemesh nftables table');
      await this.nft(renderCleanup([family]));
    }
  }

  protected async removeRules(): Promise<void> {
    if (this.families.length > 0) await this.nft(renderCleanup(this.families));
  }

  private async matches(targets: readonly InterceptTarget[]): Promise<boolean> {
    for (const family of this.families) {
      const r = await runCommand(this.prefix, 'nft', ['-j', 'list', 'table', nftFamily(family), TABLE]);
      if (r.code !== 0) return false;
      const want = expectedShape(targets, this.options, family);
      const chains: Record<string, number> = {};
      const maps: Record<string, number> = {};
      for (const item of (JSON.parse(r.stdout) as NftJson).nftables ?? []) {
        if (item.chain) chains[item.chain.name] ??= 0;
        if (item.rule) chains[item.rule.chain] = (chains[item.rule.chain] ?? 0) + 1;
        if (item.map) maps[item.map.name] = item.map.elem?.length ?? 0;
      }
      const same = (a: Record<string, number>, b: Record<string, number>) =>
        Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);
      if (!same(want.chains, chains) || !same(want.maps, maps)) return false;
    }
    return true;
  }

  private get prefix(): CommandPrefix {
    return this.options.commandPrefix ?? [];
  }

  private async nft(payload: string): Promise<void> {
    await mustRun(this.prefix, 'nft', ['-f', '-'], payload);
  }
}
