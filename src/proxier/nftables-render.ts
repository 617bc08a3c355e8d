// Pure rendering of the nftables interception state: table `ip edgemesh` with one map per L4
// protocol keyed by `ip daddr . <proto> dport` (one O(1) lookup per packet, however many services),
// whose value is the local port to redirect to. Golden unit tests drive every function here.
import type { InterceptTarget } from './interceptor.ts';
import type { RuleOptions } from './iptables-render.ts';
import { keyTargets, sortTargets, type TargetsInput } from './iptables-render.ts';

/** Our table (DESIGN.md §3); nothing outside it is ever touched. */
export const TABLE = 'edgemesh';
const MAPS = { TCP: 'services_tcp', UDP: 'services_udp' } as const;

/** `ip . port : toPort` map element text. */
function element(t: InterceptTarget): string {
  return `${t.clusterIP} . ${t.port} : ${t.toPort}`;
}

/** `ip . port` key text (what a delete names). */
function key(t: InterceptTarget): string {
  return `${t.clusterIP} . ${t.port}`;
}

/** Number of rules each chain holds and elements each map holds, for the drift check. */
export function expectedShape(
  targets: readonly InterceptTarget[],
  opts: RuleOptions,
): { chains: Record<string, number>; maps: Record<string, number> } {
  return {
    chains: {
      output: opts.bypassGid === undefined ? 1 : 2,
      prerouting: 1,
      services: 2 + (opts.catchAll ? 2 : 0),
    },
    maps: {
      [MAPS.TCP]: targets.filter((t) => t.protocol === 'TCP').length,
      [MAPS.UDP]: targets.filter((t) => t.protocol === 'UDP').length,
    },
  };
}

/**
 * The complete table as one `nft -f` file. Creating then deleting the table first makes the file
 * replace whatever is there (or nothing) in one atomic transaction.
 */
export function renderFull(targets: readonly InterceptTarget[], opts: RuleOptions): string {
  const sorted = sortTargets(targets);
  const lines = [`table ip ${TABLE} {}`, `delete table ip ${TABLE}`, `table ip ${TABLE} {`];
  for (const proto of ['TCP', 'UDP'] as const) {
    const elems = sorted.filter((t) => t.protocol === proto).map(element);
    lines.push(`  map ${MAPS[proto]} {`, '    type ipv4_addr . inet_service : inet_service');
    if (elems.length > 0) lines.push(`    elements = { ${elems.join(',\n      ')} }`);
    lines.push('  }');
  }
  lines.push('  chain services {');
  lines.push(
    `    meta l4proto tcp redirect to : ip daddr . tcp dport map @${MAPS.TCP} comment "edgemesh services tcp"`,
    `    meta l4proto udp redirect to : ip daddr . udp dport map @${MAPS.UDP} comment "edgemesh services udp"`,
  );
  if (opts.catchAll) {
    const { cidr, toPort } = opts.catchAll;
    lines.push(
      `    ip daddr ${cidr} meta l4proto tcp redirect to :${toPort} comment "edgemesh service CIDR tcp"`,
      `    ip daddr ${cidr} meta l4proto udp redirect to :${toPort} comment "edgemesh service CIDR udp"`,
    );
  }
  lines.push('  }');
  lines.push('  chain output {', '    type nat hook output priority -100; policy accept;');
  // The proxy's own upstream connections carry bypassGid: never intercept them (no loops).
  if (opts.bypassGid !== undefined)
    lines.push(
      `    meta skgid ${opts.bypassGid} return comment "edgemesh bypass: the proxy's own connections"`,
    );
  lines.push('    jump services', '  }');
  lines.push('  chain prerouting {', '    type nat hook prerouting priority dstnat; policy accept;');
  lines.push('    jump services', '  }', '}', '');
  return lines.join('\n');
}

/** Only the map elements that changed, as one `nft -f` transaction; undefined when nothing did. */
export function renderDelta(previous: TargetsInput, next: TargetsInput): string | undefined {
  const before = keyTargets(previous);
  const after = keyTargets(next);
  // Only the (few) changed lines are sorted: sorting all keys would cost more than nft itself.
  const deletes: string[] = [];
  const adds: string[] = [];
  for (const [k, t] of before) {
    if (!after.has(k)) deletes.push(`delete element ip ${TABLE} ${MAPS[t.protocol]} { ${key(t)} }`);
  }
  for (const [k, t] of after) {
    if (!before.has(k)) adds.push(`add element ip ${TABLE} ${MAPS[t.protocol]} { ${element(t)} }`);
  }
  const lines = [...deletes.sort(), ...adds.sort()];
  return lines.length === 0 ? undefined : `${lines.join('\n')}\n`;
}

/** Deletes our table whether or not it exists; never touches anything else. */
export function renderCleanup(): string {
  return `table ip ${TABLE} {}\ndelete table ip ${TABLE}\n`;
}
