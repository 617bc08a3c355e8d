// The iptables interceptor: nat chain EDGEMESH jumped from OUTPUT and PREROUTING, one REDIRECT
// rule per ClusterIP:port, applied with one `iptables-restore --noflush` per sync.
import {
  inSync,
  parseSave,
  type RuleOptions,
  renderCleanup,
  renderDelta,
  renderFull,
  type SavedNat,
} from './iptables-render.ts';
import { RuleInterceptor, type RuleInterceptorOptions } from './rule-interceptor.ts';
import { RuleSetSync } from './rule-set-sync.ts';
import { type CommandPrefix, mustRun, runCommand } from './run-command.ts';

/** Which binaries: `iptables` (whatever the system's alternative is), or an explicit backend. */
export type IptablesBinary = 'iptables' | 'iptables-legacy' | 'iptables-nft';

export interface IptablesInterceptorOptions extends RuleOptions, RuleInterceptorOptions {
  binary: IptablesBinary;
}

/** Installs REDIRECT rules with iptables-restore; removes exactly its own rules on stop(). */
export class IptablesInterceptor extends RuleInterceptor {
  readonly mode = 'iptables' as const;
  protected readonly state = new RuleSetSync({
    applyFull: async (targets) => this.restore(renderFull(targets, this.options, await this.save())),
    renderDelta,
    applyDelta: (payload) => this.restore(payload),
    installed: async (targets) => inSync(await this.save(), targets, this.options),
  });
  /** Whether the binaries are the nf_tables-backed ones (known after the first check). */
  private nfTables: boolean | undefined;

  constructor(private readonly options: IptablesInterceptorOptions) {
    super(options, 'iptables');
  }

  /** The binary set in use (for status and logs). */
  get binary(): IptablesBinary {
    return this.options.binary;
  }

  protected async removeLeftovers(): Promise<void> {
    const saved = await this.save();
    const cleanup = renderCleanup(saved);
    if (!cleanup) return;
    this.options.log.info(
      { rules: saved.chainRules.length, jumps: saved.jumps.length },
      'removing leftover edgemesh iptables rules',
    );
    await this.restore(cleanup);
    await this.dropEmptyNftChains();
  }

  protected async removeRules(): Promise<void> {
    const cleanup = renderCleanup(await this.save());
    if (cleanup) await this.restore(cleanup);
    await this.dropEmptyNftChains();
  }

  /**
   * iptables-nft creates the nft base chains (and table `ip nat`) lazily when a rule is first
   * added, and leaves them behind when the rules go. After removing our rules, drop the empty
   * accept-policy OUTPUT/PREROUTING chains (and the table if nothing else is in it), so
   * `nft list ruleset` is exactly as before start. Empty accept chains change no packet's fate.
   * (Legacy tables cannot be removed; they stay empty.)
   */
  private async dropEmptyNftChains(): Promise<void> {
    if (this.nfTables === undefined) {
      const version = await mustRun(this.prefix, this.options.binary, ['--version']);
      this.nfTables = version.includes('nf_tables');
    }
    if (!this.nfTables) return;
    const r = await runCommand(this.prefix, 'nft', ['-j', 'list', 'table', 'ip', 'nat']);
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
        ? 'delete table ip nat\n'
        : drop.map((c) => `delete chain ip nat ${c.name}\n`).join('');
    if (payload) await mustRun(this.prefix, 'nft', ['-f', '-'], payload);
  }

  private get prefix(): CommandPrefix {
    return this.options.commandPrefix ?? [];
  }

  private async save(): Promise<SavedNat> {
    return parseSave(await mustRun(this.prefix, `${this.options.binary}-save`, ['-t', 'nat']));
  }

  private async restore(payload: string): Promise<void> {
    // -w: wait for the xtables lock instead of failing when another tool holds it.
    await mustRun(this.prefix, `${this.options.binary}-restore`, ['--noflush', '-w', '5'], payload);
  }
}
