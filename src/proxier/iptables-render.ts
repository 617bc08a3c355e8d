// Pure rendering of the iptables interception state: targets in, iptables-restore text out.
// No processes, no I/O: golden unit tests drive every function here. The same text serves
// iptables-restore and ip6tables-restore: IPv6 targets differ only in their /128 host prefix.
import { canonicalIp, familyOf, type IpFamily } from '../util/net.ts';
import type { InterceptTarget } from './interceptor.ts';

/** The nat chain every ClusterIP rule lives in (DESIGN.md §3). */
export const CHAIN = 'EDGEMESH';
/** Comment on the jump rules in OUTPUT and PREROUTING. */
export const JUMP_COMMENT = 'edgemesh service portals';

/** What the interceptor adds besides one rule per target. */
export interface RuleOptions {
  /**
   * The agent's own upstream sockets carry this gid; the OUTPUT jump skips them so the proxy never
   * intercepts itself (owner matches are only valid in OUTPUT, so it sits on the jump, not in the chain).
   */
  bypassGid?: number;
  /** Service CIDR redirected as a whole after the per-ClusterIP rules (native plane only: it reads SO_ORIGINAL_DST). */
  catchAll?: { cidr: string; toPort: number };
}

/** Our rules found in an `iptables-save -t nat` dump. */
export interface SavedNat {
  /** True when the nat table was in the dump at all. */
  natPresent: boolean;
  chainPresent: boolean;
  /** `-A OUTPUT ...`/`-A PREROUTING ...` lines that jump to our chain. */
  jumps: string[];
  /** `-A EDGEMESH ...` lines. */
  chainRules: string[];
}

/** The targets of one family (an IPv4 rule set never sees an IPv6 ClusterIP and vice versa). */
export function targetsOfFamily(targets: readonly InterceptTarget[], family: IpFamily): InterceptTarget[] {
  return targets.filter((t) => familyOf(t.clusterIP) === family);
}

/** The rule options for one family's rule set: a catch-all CIDR only goes where its family is. */
export function optionsForFamily<T extends RuleOptions>(opts: T, family: IpFamily): T {
  if (!opts.catchAll || familyOf(opts.catchAll.cidr) === family) return opts;
  return { ...opts, catchAll: undefined };
}

/** Comment text safe inside a quoted iptables argument. */
function comment(text: string): string {
  return `"${text.replace(/["\\\r\n]+/g, '_')}"`;
}

/** Targets in a stable order (clusterIP, port, protocol), so renders are reproducible. */
export function sortTargets(targets: readonly InterceptTarget[]): InterceptTarget[] {
  return [...targets].sort(
    (a, b) =>
      a.clusterIP.localeCompare(b.clusterIP) || a.port - b.port || a.protocol.localeCompare(b.protocol),
  );
}

/** The rule spec (after `-A EDGEMESH `) for one target, in the order iptables-save prints it. */
export function targetRuleSpec(t: InterceptTarget): string {
  const p = t.protocol === 'UDP' ? 'udp' : 'tcp';
  const host = familyOf(t.clusterIP) === 6 ? 128 : 32;
  return `-d ${canonicalIp(t.clusterIP)}/${host} -p ${p} -m comment --comment ${comment(`edgemesh ${t.id}`)} -m ${p} --dport ${t.port} -j REDIRECT --to-ports ${t.toPort}`;
}

/** Everything a target's rule depends on, as a short string (for set differences). */
export function targetKey(t: InterceptTarget): string {
  return `${t.clusterIP}|${t.port}|${t.protocol}|${t.toPort}|${t.id}`;
}

/** Targets by targetKey (interceptors keep the last applied map to diff the next sync against). */
export type KeyedTargets = ReadonlyMap<string, InterceptTarget>;
/** A target list, or one already keyed. */
export type TargetsInput = readonly InterceptTarget[] | KeyedTargets;

/** Keys a target list by targetKey (a map is returned as is). */
export function keyTargets(targets: TargetsInput): KeyedTargets {
  if (!Array.isArray(targets)) return targets as KeyedTargets;
  return new Map((targets as readonly InterceptTarget[]).map((t) => [targetKey(t), t]));
}

/** The catch-all rule specs for the service CIDR (one per L4 protocol). */
export function catchAllSpecs(opts: RuleOptions): string[] {
  if (!opts.catchAll) return [];
  const { cidr, toPort } = opts.catchAll;
  return ['tcp', 'udp'].map(
    (p) =>
      `-d ${cidr} -p ${p} -m comment --comment ${comment(`edgemesh service CIDR ${p}`)} -j REDIRECT --to-ports ${toPort}`,
  );
}

/** The jump lines as iptables-save prints them (`-A OUTPUT ...`, `-A PREROUTING ...`). */
export function jumpLines(opts: RuleOptions): string[] {
  const owner = opts.bypassGid === undefined ? '' : ` -m owner ! --gid-owner ${opts.bypassGid}`;
  return [
    `-A PREROUTING -m comment --comment ${comment(JUMP_COMMENT)} -j ${CHAIN}`,
    `-A OUTPUT -m comment --comment ${comment(JUMP_COMMENT)}${owner} -j ${CHAIN}`,
  ];
}

/** Every `-A EDGEMESH` line the chain must hold, in order. */
export function chainLines(targets: readonly InterceptTarget[], opts: RuleOptions): string[] {
  return [
    ...sortTargets(targets).map((t) => `-A ${CHAIN} ${targetRuleSpec(t)}`),
    ...catchAllSpecs(opts).map((s) => `-A ${CHAIN} ${s}`),
  ];
}

/** Parses the nat part of `iptables-save` output, keeping only what belongs to edgemesh. */
export function parseSave(text: string): SavedNat {
  const saved: SavedNat = { natPresent: false, chainPresent: false, jumps: [], chainRules: [] };
  let inNat = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('*')) {
      inNat = line === '*nat';
      if (inNat) saved.natPresent = true;
      continue;
    }
    if (!inNat) continue;
    if (line.startsWith(`:${CHAIN} `)) saved.chainPresent = true;
    else if (line.startsWith(`-A ${CHAIN} `)) saved.chainRules.push(line);
    else if (line.startsWith('-A ') && line.endsWith(`-j ${CHAIN}`)) saved.jumps.push(line);
  }
  return saved;
}

/** Drops quoting differences so a saved line compares equal to the rendered one. */
export function normalizeRule(line: string): string {
  return line.replace(/"/g, '').replace(/\s+/g, ' ').trim();
}

/** True when the saved state is exactly the desired one (same jumps once each, same chain rules). */
export function inSync(saved: SavedNat, targets: readonly InterceptTarget[], opts: RuleOptions): boolean {
  const want = chainLines(targets, opts).map(normalizeRule);
  const have = saved.chainRules.map(normalizeRule);
  if (!saved.chainPresent || want.length !== have.length) return false;
  const wantSet = new Set(want);
  if (!have.every((l) => wantSet.has(l))) return false;
  const jumps = saved.jumps.map(normalizeRule).sort();
  const wantJumps = jumpLines(opts).map(normalizeRule).sort();
  return jumps.length === wantJumps.length && jumps.every((j, i) => j === wantJumps[i]);
}

/** `-A X ...` → `-D X ...` (deleting a saved rule by its exact spec). */
function asDelete(line: string): string {
  return `-D ${line.slice(3)}`;
}

/** `-A X ...` → `-I X 1 ...` (jumps go first so nobody else's rule preempts them). */
function asInsertFirst(line: string): string {
  const rest = line.slice(3);
  const sp = rest.indexOf(' ');
  return `-I ${rest.slice(0, sp)} 1 ${rest.slice(sp + 1)}`;
}

/**
 * The complete desired state as one `iptables-restore --noflush` payload: declaring our chain
 * flushes it, old jumps (whatever a previous run left) are deleted and the current ones inserted.
 */
export function renderFull(targets: readonly InterceptTarget[], opts: RuleOptions, saved: SavedNat): string {
  const lines = ['*nat', `:${CHAIN} - [0:0]`];
  for (const j of saved.jumps) lines.push(asDelete(j));
  for (const j of jumpLines(opts)) lines.push(asInsertFirst(j));
  lines.push(...chainLines(targets, opts));
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/**
 * Only what changed between two target sets (`-D` the old rule, `-I EDGEMESH 1` the new), so a
 * one-service change costs one small transaction; undefined when nothing changed.
 */
export function renderDelta(previous: TargetsInput, next: TargetsInput): string | undefined {
  // Cheap identity keys first; the full rule text is built only for the few that changed.
  const before = keyTargets(previous);
  const after = keyTargets(next);
  const deletes: string[] = [];
  const inserts: string[] = [];
  for (const [k, t] of before) if (!after.has(k)) deletes.push(`-D ${CHAIN} ${targetRuleSpec(t)}`);
  for (const [k, t] of after) if (!before.has(k)) inserts.push(`-I ${CHAIN} 1 ${targetRuleSpec(t)}`);
  const lines = [...deletes.sort(), ...inserts.sort()];
  if (lines.length === 0) return undefined;
  return ['*nat', ...lines, 'COMMIT', ''].join('\n');
}

/** Removes exactly what edgemesh installed (jumps, then the flushed chain); undefined when nothing is ours. */
export function renderCleanup(saved: SavedNat): string | undefined {
  if (!saved.chainPresent && saved.jumps.length === 0) return undefined;
  const lines = ['*nat'];
  if (saved.chainPresent) lines.push(`:${CHAIN} - [0:0]`);
  for (const j of saved.jumps) lines.push(asDelete(j));
  if (saved.chainPresent) lines.push(`-X ${CHAIN}`);
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** Simulates a connection through rendered chain lines: the local port it is redirected to, if any. */
export function traceConnect(
  lines: readonly string[],
  dst: string,
  port: number,
  protocol: 'TCP' | 'UDP' = 'TCP',
): number | undefined {
  const p = protocol === 'UDP' ? 'udp' : 'tcp';
  for (const line of lines) {
    const d = /-d (\S+)\/(?:32|128) /.exec(line)?.[1];
    const dport = /--dport (\d+)/.exec(line)?.[1];
    const proto = / -p (\w+) /.exec(line)?.[1];
    const to = /--to-ports (\d+)/.exec(line)?.[1];
    if (d !== undefined && d === canonicalIp(dst) && Number(dport) === port && proto === p && to)
      return Number(to);
  }
  return undefined;
}
