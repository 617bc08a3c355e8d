// The iptables interceptor: nat chain EDGEMESH jumped from OUTPUT and PREROUTING, one REDIRECT
// rule per ClusterIP:port, applied with one `iptables-restore --noflush` per sync. IPv6 ClusterIPs
// get the same chain, jumps and comments in ip6tables' nat table, through the IPv6 twin of the
// chosen binary (iptables-nft → ip6tables-nft, iptables-legacy → ip6tables-legacy).
import type { IpFamily } from '../util/net.ts';
import type { InterceptTarget } from './interceptor.ts';
import {
  inSync,
  optionsForFamily,
  parseSave,
  type RuleOptions,
  renderCleanup,
  renderDelta,
  renderFull,
  type SavedNat,
  targetsOfFamily,
} from './iptables-render.ts';
import { ipv6Disabled, RuleInterceptor, type RuleInterceptorOptions } from './rule-interceptor.ts';
import { RuleSetSync } from './rule-set-sync.ts';
import { type CommandPrefix, haveCommand, mustRun, runCommand } from './run-command.ts';

/** Which binaries: `iptables` (whatever the system's alternative is), or an explicit backend. */
export type IptablesBinary = 'iptables' | 'iptables-legacy' | 'iptables-nft';

export interface IptablesInterceptorOptions extends RuleOptions, RuleInterceptorOptions {
  binary: IptablesBinary;
}

/** The IPv6 twin of an iptables binary name (`iptables-nft` → `ip6tables-nft`). */
export function ip6Binary(binary: string): string {
  return binary.replace(/^iptables/, 'ip6tables');
}

/** Installs REDIRECT rules with (ip6)iptables-restore; removes exactly its own rules on stop(). */
export class IptablesInterceptor extends RuleInterceptor {
  readonly mode = 'iptables' as const;
  private readonly states: Record<IpFamily, RuleSetSync> = { 4: this.stateFor(4), 6: this.stateFor(6) };
  /** Whether the binaries are the nf_tables-backed ones (known after the first check). */
  private nfTables: boolean | undefined;

  constructor(private readonly options: IptablesInterceptorOptions) {
    super(options, 'iptables');
  }

  /** The binary set in use (for status and logs). */
  get binary(): IptablesBinary {
    return this.options.binary;
  }

  private stateFor(family: IpFamily): RuleSetSync {
    return new RuleSetSync({
      applyFull: async (targets) =>
        this.restore(family, renderFull(targets, this.opts(family), await this.save(family))),
      renderDelta,
      applyDelta: (payload) => this.restore(family, payload),
      installed: async (targets) => inSync(await this.save(family), targets, this.opts(family)),
    });
  }

  protected async probeIpv6(): Promise<{ ok: true; how: string } | { ok: false; reason: string }> {
    const disabled = await ipv6Disabled(this.prefix);
    if (disabled) return { ok: false, reason: disabled };
    const bin = ip6Binary(this.options.binary);
    if (!(await haveCommand(this.prefix, `${bin}-restore`)))
      return { ok: false, reason: `${bin}-restore not found` };
    // The nat table and REDIRECT must exist for IPv6 too (a kernel may have only IPv4 NAT).
    const chain = 'EDGEMESH-PROBE';
    const payload = `*nat\n:${chain} - [0:0]\n-A ${chain} -p tcp -j REDIRECT --to-ports 1\n-F ${chain}\n-X ${chain}\nCOMMIT\n`;
    // The nf_tables backend leaves an empty `table ip6 nat` behind: drop it again if it was not there.
    const natBefore = await runCommand(this.prefix, 'nft', ['list', 'table', 'ip6', 'nat']).catch(
      () => undefined,
    );
    const r = await runCommand(this.prefix, `${bin}-restore`, ['--noflush', '-w', '5'], payload);
    if (natBefore && natBefore.code !== 0) await this.dropEmptyNftChains(6);
    if (r.code !== 0) return { ok: false, reason: `${bin}-restore nat REDIRECT failed: ${r.stderr.trim()}` };
    return { ok: true, how: `${bin} nat table` };
  }

  protected async syncRules(targets: readonly InterceptTarget[]): Promise<void> {
    for (const family of this.families) await this.states[family].sync(targetsOfFamily(targets, family));
  }

  protected async repairRules(): Promise<boolean> {
    let repaired = false;
    for (const family of this.families) if (await this.states[family].repair()) repaired = true;
    return repaired;
  }

  protected resetRules(): void {
    this.states[4].reset();
    this.states[6].reset();
  }

  protected async removeLeftovers(): Promise<void> {
    for (const family of this.families) {
      const saved = await this.save(family);
      const cleanup = renderCleanup(saved);
      if (!cleanup) continue;
      this.options.log.info(
        { family, rules: saved.chainRules.length, jumps: saved.jumps.length },
        'removing leftover edgemesh iptables rules',
      );
      await this.restore(family, cleanup);
      await this.dropEmptyNftChains(family);
    }
  }

  protected async removeRules(): Promise<void> {
    for (const family of this.families) {
      const cleanup = renderCleanup(await this.save(family));
      if (cleanup) await this.restore(family, cleanup);
      await this.dropEmptyNftChains(family);
    }
  }

  private opts(family: IpFamily): RuleOptions {
    return optionsForFamily(this.options, family);
  }

  private bin(family: IpFamily): string {
    return family === 6 ? ip6Binary(this.options.binary) : this.options.binary;
  }

  /**
   * iptables-nft creates the nft base chains (and table `ip nat` / `ip6 nat`) lazily when a rule is
   * first added, and leaves them behind when the rules go. After removing our rules, drop the empty
   * accept-policy OUTPUT/PREROUTING chains (and the table if nothing else is in it), so
   * `nft list ruleset` is exactly as before start. Empty accept chains change no packet's fate.
   * (Legacy tables cannot be removed; they stay empty.)
   */
  private async dropEmptyNftChains(family: IpFamily): Promise<void> {
    if (this.nfTables === undefined) {
      const version = await mustRun(this.prefix, this.options.binary, ['--version']);
      this.nfTables = version.includes('nf_tables');
    }
    if (!this.nfTables) return;
    const table = family === 6 ? 'ip6' : 'ip';
    const r = await runCommand(this.prefix, 'nft', ['-j', 'list', 'table', table, 'nat']);
    if (r.code !== 0) return;
    type Item = {
      chain?: { name: string; hook?: string; policy?: string };
      rule?: { chain: string };
      set?: unknown;
      map?: unknown;
    };
    const items = (JSON.parse(r.stdout) as { nftables?: Item[] }).nftables ?? [];
    const rules = new Map<string, number>();
    for (const it of items) if (it.rule) rules.set(it.rule.chain, (rules.get(it.rule.chain) ?? 0) + 1);
    const chains = items.flatMap((it) => (it.chain ? [it.chain] : []));
    const drop = chains.filter(
      (c) => (c.name === 'OUTPUT' || c.name === 'PREROUTING') && c.policy === 'accept' && !rules.has(c.name),
    );
    const others = items.some((it) => it.set !== undefined || it.map !== undefined);
    const payload =
      drop.length === chains.length && !others
        ? `delete table ${table} nat\n`
        : drop.map((c) => `delete chain ${table} nat ${c.name}\n`).join('');
    if (payload) await mustRun(this.prefix, 'nft', ['-f', '-'], payload);
  }

  private get prefix(): CommandPrefix {
    return this.options.commandPrefix ?? [];
  }

  private async save(family: IpFamily): Promise<SavedNat> {
    return parseSave(await mustRun(this.prefix, `${this.bin(family)}-save`, ['-t', 'nat']));
  }

  private async restore(family: IpFamily, payload: string): Promise<void> {
    // -w: wait for the xtables lock instead of failing when another tool holds it.
    await mustRun(this.prefix, `${this.bin(family)}-restore`, ['--noflush', '-w', '5'], payload);
  }
}
