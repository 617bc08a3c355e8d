// Local /32 (IPv6: /128) routes for intercepted ClusterIPs (`ip route add local <vip>/32 dev lo
// table local proto 228`), shared by every interceptor. Why: without one a node-local client's connect to a
// VIP takes the service-CIDR/default route, a 1500-MTU device, so its socket gets MSS 1448 for what
// is in fact a loopback leg to the proxy (bulk throughput pays ~20 %); with a local route the VIP
// is delivered over lo (MTU 65536) and REDIRECT/sk_lookup still act on it. sk_lookup needs these
// routes anyway (it only runs for locally delivered packets). The routes are reconciled against
// the complete desired set on every sync and drift check, adopted across a restart (never flushed
// on start: a new agent keeps serving a crashed one's VIPs until its first sync), removed on stop.
import net from 'node:net';
import type { ServiceTable } from '../controller/types.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../util/log.ts';
import { canonicalIp } from '../util/net.ts';
import type { InterceptTarget } from './interceptor.ts';
import { type CommandPrefix, runCommand } from './run-command.ts';

/** Routing protocol number that marks edgemesh's local VIP routes (`ip route show proto 228`). */
export const ROUTE_PROTO = 228;

/** Which address families a VipRoutes instance manages. */
export type VipFamilies = 'both' | 'ipv4' | 'ipv6';

/** Whether `ip` belongs to `families`. */
function inFamilies(ip: string, families: VipFamilies): boolean {
  if (families === 'ipv4') return net.isIPv4(ip);
  if (families === 'ipv6') return net.isIPv6(ip);
  return net.isIP(ip) !== 0;
}

/**
 * Addresses with a `local` host route (/32, or /128: `ip -6` prints none) in `ip -4|-6 route show
 * table local` output: all of them, and those edgemesh added (protocol ROUTE_PROTO).
 */
export function parseLocalRoutes(text: string): { all: Set<string>; ours: Set<string> } {
  const all = new Set<string>();
  const ours = new Set<string>();
  for (const line of text.split('\n')) {
    const words = line.trim().split(/\s+/);
    const raw = words[1]?.replace(/\/(32|128)$/, '');
    if (words[0] !== 'local' || !raw || raw.includes('/') || net.isIP(raw) === 0) continue;
    const ip = canonicalIp(raw);
    all.add(ip);
    const proto = words.indexOf('proto');
    if (proto > 0 && words[proto + 1] === String(ROUTE_PROTO)) ours.add(ip);
  }
  return { all, ours };
}

/** The distinct ClusterIPs of `targets` in `families` (canonical text), what a rule interceptor catches. */
export function vipsOf(targets: readonly InterceptTarget[], families: VipFamilies = 'both'): Set<string> {
  return new Set(targets.map((t) => canonicalIp(t.clusterIP)).filter((ip) => inFamilies(ip, families)));
}

/**
 * Every endpoint address of the snapshot. A ClusterIP that is also some service's endpoint (a
 * selectorless service pointing at another service's address, a machine that really owns it) gets
 * no local route: the proxy's own bypassed connection to it must leave the node, not be refused
 * by lo.
 */
export function endpointAddresses(table: ServiceTable): Set<string> {
  const out = new Set<string>();
  for (const svc of table.services.values())
    for (const port of svc.ports) for (const ep of port.endpoints) out.add(canonicalIp(ep.ip));
  return out;
}

/** The `ip -batch` lines that turn what is installed into `desired` (only our routes are deleted). */
export function renderRouteBatch(desired: ReadonlySet<string>, installed: string): string[] {
  const { all, ours } = parseLocalRoutes(installed);
  // A VIP that is already local (an address on lo, kube-proxy's IPVS device, someone else's route)
  // needs nothing from us.
  const add = [...desired].filter((v) => !all.has(v)).sort();
  const del = [...ours].filter((v) => !desired.has(v)).sort();
  const host = (v: string) => `${v}/${net.isIPv6(v) ? 128 : 32}`;
  return [
    ...add.map((v) => `route add local ${host(v)} dev lo table local proto ${ROUTE_PROTO}`),
    ...del.map((v) => `route del local ${host(v)} dev lo table local proto ${ROUTE_PROTO}`),
  ];
}

export interface VipRoutesOptions {
  log: Logger;
  /** Runs `ip` in the namespace the interceptor works in ([] = this process's). */
  commandPrefix: CommandPrefix;
  /** Who uses the routes (log context: 'iptables', 'nftables', 'sk_lookup'). */
  owner: string;
  /** What breaks while the routes cannot be managed (said in the one warning). */
  consequence?: string;
  /**
   * false (`localVipRoutes: false`): adds none; start() and clear() still remove the routes a
   * crashed earlier run left. Default true.
   */
  enabled?: boolean;
  /**
   * Families whose proto-228 routes this instance owns (default both). Two instances in one
   * namespace must not overlap: each deletes every route of its families that it did not want
   * (eBPF: sk_lookup steers IPv4, its IPv6 delegate interceptor routes IPv6).
   */
  families?: VipFamilies;
}

/** Keeps edgemesh's local VIP routes equal to a desired set; failures warn once and never throw. */
export class VipRoutes {
  private desired = new Set<string>();
  /** The set last reconciled without error (undefined: unknown, check what is installed). */
  private applied: ReadonlySet<string> | undefined;
  /** Addresses that must stay non-local (endpointAddresses of the last observed snapshot). */
  private endpoints: ReadonlySet<string> = new Set();
  /** The reason last warned about (a failure repeats on every drift check: warn once per reason). */
  private warned: string | undefined;

  constructor(private readonly opts: VipRoutesOptions) {}

  private get families(): VipFamilies {
    return this.opts.families ?? 'both';
  }

  /** Adopts the routes an earlier run left (they stay until the first sync says otherwise). */
  async start(): Promise<void> {
    this.desired = new Set();
    this.applied = undefined;
    if (this.opts.enabled === false) return this.clear();
    const shown = await this.show();
    const adopted = shown === undefined ? 0 : parseLocalRoutes(shown).ours.size;
    if (adopted > 0)
      this.opts.log.info(
        { routes: adopted, owner: this.opts.owner },
        'adopting local VIP routes of an earlier run',
      );
  }

  /**
   * Records the desired VIPs and reconciles; true when a route had to change. An unchanged set
   * (most syncs: endpoint changes) runs nothing — `ip route show` of 10k routes costs ~0.25 s;
   * routes someone else removed are found by the drift check (reconcile).
   */
  sync(vips: ReadonlySet<string>): Promise<boolean> {
    this.desired = new Set(vips);
    const same =
      this.applied !== undefined &&
      this.applied.size === this.desired.size &&
      [...this.desired].every((v) => this.applied!.has(v));
    return same ? Promise.resolve(false) : this.reconcile();
  }

  /** Records the snapshot the next syncTargets() goes with (its endpoint addresses get no route). */
  observe(table: ServiceTable): void {
    this.endpoints = endpointAddresses(table);
  }

  /** sync() with the ClusterIPs of an interceptor's targets, less the observed endpoint addresses. */
  syncTargets(targets: readonly InterceptTarget[]): Promise<boolean> {
    const vips = vipsOf(targets, this.families);
    for (const ip of this.endpoints) vips.delete(ip);
    return this.sync(vips);
  }

  /** Re-applies the last desired set (drift repair); true when a route was missing or extra. */
  async reconcile(): Promise<boolean> {
    if (this.opts.enabled === false) return false;
    const desired = new Set(this.desired);
    this.applied = undefined;
    const shown = await this.show();
    if (shown === undefined) return false;
    const batch = renderRouteBatch(desired, shown);
    if (batch.length === 0) {
      this.applied = desired;
      return false;
    }
    // One process for the whole change; -force keeps going past a line that fails (a route
    // someone else added meanwhile) so the others still apply.
    const r = await this.ip(['-force', '-batch', '-'], `${batch.join('\n')}\n`);
    if (r === undefined) return false;
    if (r.code !== 0) this.warn(`ip -batch failed: ${r.stderr.trim() || `exit ${r.code}`}`);
    else {
      this.warned = undefined;
      this.applied = desired;
    }
    this.opts.log.debug({ changes: batch.length, owner: this.opts.owner }, 'local VIP routes synced');
    return true;
  }

  /** Deletes every route edgemesh added (other local routes, e.g. addresses on lo, are not ours). */
  async clear(): Promise<void> {
    this.desired = new Set();
    this.applied = undefined;
    const shown = await this.show();
    // Look first: a flush with nothing to flush is another process on every stop, and `ip route
    // flush` of an empty selection exits non-zero on some iproute2 versions.
    if (shown === undefined) return;
    const ours = [...parseLocalRoutes(shown).ours];
    for (const fam of ['-4', '-6'] as const) {
      if (!ours.some((ip) => (fam === '-6') === net.isIPv6(ip))) continue;
      const r = await this.ip([fam, 'route', 'flush', 'table', 'local', 'proto', String(ROUTE_PROTO)]);
      if (r && r.code !== 0) this.warn(`ip route flush failed: ${r.stderr.trim() || `exit ${r.code}`}`);
    }
  }

  /** Local routes of this instance's families (`ip -4` and/or `ip -6 route show table local`). */
  private async show(): Promise<string | undefined> {
    const fams = this.families === 'both' ? ['-4', '-6'] : [this.families === 'ipv6' ? '-6' : '-4'];
    let out = '';
    for (const fam of fams) {
      const r = await this.ip([fam, 'route', 'show', 'table', 'local']);
      if (r === undefined) return undefined;
      if (r.code !== 0) {
        // A kernel without IPv6 has no IPv6 table at all: nothing of ours can be in it.
        if (fam === '-6' && this.families === 'both') continue;
        this.warn(`ip route show failed: ${r.stderr.trim() || `exit ${r.code}`}`);
        return undefined;
      }
      out += r.stdout;
    }
    return out;
  }

  /** Runs `ip`; undefined (after a warning) when it cannot run at all. */
  private async ip(args: string[], input?: string) {
    try {
      return await runCommand(this.opts.commandPrefix, 'ip', args, input);
    } catch (err) {
      this.warn(errorMessage(err));
      return undefined;
    }
  }

  private warn(reason: string): void {
    // Switched off, the only calls are best-effort leftover cleanups: nothing to warn about.
    if (this.warned === reason || this.opts.enabled === false) {
      this.opts.log.debug({ reason, owner: this.opts.owner }, 'local VIP routes still failing');
      return;
    }
    this.warned = reason;
    const consequence =
      this.opts.consequence ??
      'interception still works, but node-local clients reach the proxy over the service route (its MTU, e.g. MSS 1448)';
    this.opts.log.warn({ reason, owner: this.opts.owner }, `cannot manage local VIP routes: ${consequence}`);
  }
}
