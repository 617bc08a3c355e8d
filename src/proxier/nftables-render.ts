// Pure rendering of the nftables interception state: table `ip edgemesh` (and `ip6 edgemesh`,
// the same shape for IPv6 ClusterIPs) with one map per L4 protocol keyed by `daddr . <proto>
// dport` (one O(1) lookup per packet, however many services), whose value is the local port to
// redirect to. Golden unit tests drive every function here.
import { canonicalIp, familyOf, type IpFamily } from '../util/net.ts';
import type { InterceptTarget } from './interceptor.ts';
import {
  keyTargets,
  optionsForFamily,
  type RuleOptions,
  sortTargets,
  type TargetsInput,
  targetsOfFamily,
} from './iptables-render.ts';

/** Our table name (DESIGN.md §3): `ip edgemesh`, and `ip6 edgemesh` for IPv6; nothing else is touched. */
export const TABLE = 'edgemesh';
const MAPS = { TCP: 'services_tcp', UDP: 'services_udp' } as const;

/** The nft family keyword of an address family. */
export function nftFamily(family: IpFamily): 'ip' | 'ip6' {
  return family === 6 ? 'ip6' : 'ip';
}

/** `ip . port : toPort` map element text. */
function element(t: InterceptTarget): string {
  return `${canonicalIp(t.clusterIP)} . ${t.port} : ${t.toPort}`;
}

/** `ip . port` key text (what a delete names). */
function key(t: InterceptTarget): string {
  return `${canonicalIp(t.clusterIP)} . ${t.port}`;
}

/** Number of rules each chain holds and elements each map holds in one family's table, for the drift check. */
export function expectedShape(
  targets: readonly InterceptTarget[],
  opts: RuleOptions,
  family: IpFamily = 4,
): { chains: Record<string, number>; maps: Record<string, number> } {
  const own = targetsOfFamily(targets, family);
  const fo = optionsForFamily(opts, family);
  return {
    chains: {
      output: fo.bypassGid === undefined ? 1 : 2,
      prerouting: 1,
      services: 2 + (fo.catchAll ? 2 : 0),
    },
    maps: {
      [MAPS.TCP]: own.filter((t) => t.protocol === 'TCP').length,
      [MAPS.UDP]: own.filter((t) => t.protocol === 'UDP').length,
    },
  };
}

/** One family's table (`table ip edgemesh { ... }` / `table ip6 edgemesh { ... }`) lines. */
function tableLines(targets: readonly InterceptTarget[], opts: RuleOptions, family: IpFamily): string[] {
  const fam = nftFamily(family);
  const sorted = sortTargets(targetsOfFamily(targets, family));
  const fo = optionsForFamily(opts, family);
  const addrType = family === 6 ? 'ipv6_addr' : 'ipv4_addr';
  const lines = [`table ${fam} ${TABLE} {}`, `delete table ${fam} ${TABLE}`, `table ${fam} ${TABLE} {`];
  for (const proto of ['TCP', 'UDP'] as const) {
    const elems = sorted.filter((t) => t.protocol === proto).map(element);
    lines.push(`  map ${MAPS[proto]} {`, `    type ${addrType} . inet_service : inet_service`);
    if (elems.length > 0) lines.push(`    elements = { ${elems.join(',\n      ')} }`);
    lines.push('  }');
  }
  lines.push('  chain services {');
  lines.push(
    `    meta l4proto tcp redirect to : ${fam} daddr . tcp dport map @${MAPS.TCP} comment "edgemesh services tcp"`,
    `    meta l4proto udp redirect to : ${fam} daddr . udp dport map @${MAPS.UDP} comment "edgemesh services udp"`,
  );
  if (fo.catchAll) {
    const { cidr, toPort } = fo.catchAll;
    lines.push(
      `    ${fam} daddr ${cidr} meta l4proto tcp redirect to :${toPort} comment "edgemesh service CIDR tcp"`,
      `    ${fam} daddr ${cidr} meta l4proto udp redirect to :${toPort} comment "edgemesh service CIDR udp"`,
    );
  }
  lines.push('  }');
  lines.push('  chain output {', '    type nat hook output priority -100; policy accept;');
  // The proxy's own upstream connections carry bypassGid: never intercept them (no loops).
  if (fo.bypassGid !== undefined)
    lines.push(
      `    meta skgid ${fo.bypassGid} return comment "edgemesh bypass: the proxy's own connections"`,
    );
  lines.push('    jump services', '  }');
  lines.push('  chain prerouting {', '    type nat hook prerouting priority dstnat; policy accept;');
  lines.push('    jump services', '  }', '}');
  return lines;
}

/**
 * The complete state as one `nft -f` file: one table per family in `families` (`ip edgemesh`,
 * `ip6 edgemesh`), each holding that family's targets; a family not listed (IPv6 unusable here)
 * is neither rendered nor touched. Creating then deleting each table first makes the file replace
 * whatever is there (or nothing) in one atomic transaction.
 */
export function renderFull(
  targets: readonly InterceptTarget[],
  opts: RuleOptions,
  families: readonly IpFamily[] = [4],
): string {
  const lines = families.flatMap((f) => tableLines(targets, opts, f));
  lines.push('');
  return lines.join('\n');
}

/** Only the map elements that changed, as one `nft -f` transaction; undefined when nothing did. */
export function renderDelta(previous: TargetsInput, next: TargetsInput): string | undefined {
  const before = keyTargets(previous);
  const after = keyTargets(next);
  // Only the (few) changed lines are sorted: sorting all keys would cost more than nft itself.
  const deletes: string[] = [];
  const adds: string[] = [];
  const where = (t: InterceptTarget) => `${nftFamily(familyOf(t.clusterIP))} ${TABLE} ${MAPS[t.protocol]}`;
  for (const [k, t] of before) {
    if (!after.has(k)) deletes.push(`delete element ${where(t)} { ${key(t)} }`);
  }
  for (const [k, t] of after) {
    if (!before.has(k)) adds.push(`add element ${where(t)} { ${element(t)} }`);
  }
  const lines = [...deletes.sort(), ...adds.sort()];
  return lines.length === 0 ? undefined : `${lines.join('\n')}\n`;
}

/** Deletes our table of each family in `families`, whether or not it exists; never touches anything else. */
export function renderCleanup(families: readonly IpFamily[] = [4]): string {
  return families
    .map((f) => `table ${nftFamily(f)} ${TABLE} {}\ndelete table ${nftFamily(f)} ${TABLE}\n`)
    .join('');
}
