// Report writers: the JSON file (every sample), a Markdown table of medians with ratios to
// direct and to HAProxy, and a hand-written SVG bar chart of the same medians.
import type { BenchRecord } from './record.ts';
import { fmt, median } from './stats.ts';

/** Where and on what a run happened; goes into the JSON and the report headers. */
export interface RunMeta {
  date: string;
  host: string;
  kernel: string;
  node: string;
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  quick: boolean;
  argv: string[];
  /** Peer versions, e.g. { haproxy: '2.6.12' }. */
  versions: Record<string, string>;
  durationSeconds?: number;
  /** 1-minute load average at start and end: other work on the machine skews every number. */
  loadAverage?: { start: number; end: number };
}

/** The whole JSON document written to bench/results/<date>-<host>.json. */
export interface RunResult {
  format: 'edgemesh-bench';
  version: 1;
  meta: RunMeta;
  notes: string[];
  records: BenchRecord[];
}

/** Contenders in column order; unknown ones follow alphabetically. */
const columnOrder = [
  'direct',
  'edgemesh-ebpf',
  'edgemesh-native',
  'edgemesh-native-ebpf',
  'edgemesh-native-ebpf-sockmap',
  'edgemesh-ts',
  'haproxy',
  'haproxy-redirect',
  'nginx',
  'socat',
  'edgemesh',
];

function orderContenders(names: Iterable<string>): string[] {
  const rank = (n: string) => {
    const i = columnOrder.indexOf(n);
    return i < 0 ? columnOrder.length : i;
  };
  return [...new Set(names)].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** Records grouped by (suite, case, metric), in first-seen order. */
export interface Group {
  suite: string;
  case: string;
  metric: string;
  unit: string;
  higherIsBetter: boolean;
  byContender: Map<string, BenchRecord>;
}

/** Groups records for tables and charts. */
export function groupRecords(records: readonly BenchRecord[]): Group[] {
  const groups = new Map<string, Group>();
  for (const r of records) {
    const key = `${r.suite}\u0000${r.case}\u0000${r.metric}`;
    let g = groups.get(key);
    if (!g) {
      g = {
        suite: r.suite,
        case: r.case,
        metric: r.metric,
        unit: r.unit,
        higherIsBetter: r.higherIsBetter,
        byContender: new Map(),
      };
      groups.set(key, g);
    }
    g.byContender.set(r.contender, r);
  }
  // Keep each suite's rows together per case (proxy CPU next to the numbers it was measured
  // with), in the order suites first appeared; sort is stable, so metrics keep theirs.
  const list = [...groups.values()];
  const firstSeen = (key: (g: Group) => string) => {
    const order = new Map<string, number>();
    for (const g of list) if (!order.has(key(g))) order.set(key(g), order.size);
    return (g: Group) => order.get(key(g))!;
  };
  const bySuite = firstSeen((g) => g.suite);
  const byCase = firstSeen((g) => g.case);
  return list.sort((a, b) => byCase(a) - byCase(b) || bySuite(a) - bySuite(b));
}

function ratio(value: number, ref: BenchRecord | undefined): string {
  if (!ref) return '';
  const r = value / median(ref.samples);
  return Number.isFinite(r) ? `${r.toFixed(2)}×` : '';
}

function escapeCell(s: string): string {
  return s.replace(/\|/g, '\\|');
}

/** Markdown: one table per suite, contenders side by side (medians, ratio to direct and to HAProxy). */
export function markdownReport(result: RunResult, options: { headline?: boolean } = {}): string {
  const { meta } = result;
  const groups = groupRecords(result.records);
  const lines: string[] = [];
  if (options.headline !== false) lines.push(`# edgemesh benchmark — ${meta.date}`, '');
  lines.push(
    `Machine: ${meta.host}, ${meta.cpus} × ${meta.cpuModel}, ${meta.memoryGiB} GiB RAM; kernel ${meta.kernel}; Node ${meta.node}` +
      `${
        Object.keys(meta.versions).length
          ? `; ${Object.entries(meta.versions)
              .map(([k, v]) => `${k} ${v}`)
              .join(', ')}`
          : ''
      }.`,
    `Mode: ${meta.quick ? '**quick (CI smoke: too short to judge speed)**' : 'full'}; command: \`${['edgemesh bench', ...meta.argv].join(' ')}\`` +
      `${meta.durationSeconds ? `; took ${Math.round(meta.durationSeconds)} s` : ''}` +
      `${meta.loadAverage ? `; load average ${meta.loadAverage.start.toFixed(1)} at start, ${meta.loadAverage.end.toFixed(1)} at end` : ''}.`,
    '',
  );
  const suites = [...new Set(groups.map((g) => g.suite))];
  if (groups.some((g) => g.byContender.has('direct') || g.byContender.has('haproxy'))) {
    lines.push(
      'Medians over all rounds. Under a value: its ratio to `direct` / to `haproxy` (value ÷ reference; ' +
        '↑ = higher is better, ↓ = lower is better; `·` = no reference in this row).',
      '',
    );
  }
  // One table per suite, with that suite's own contenders as columns.
  for (const suite of suites) {
    const rows = groups.filter((g) => g.suite === suite);
    const contenders = orderContenders(rows.flatMap((g) => [...g.byContender.keys()]));
    const paths = new Map<string, string>();
    for (const g of rows)
      for (const [c, r] of g.byContender) if (r.extra?.path !== undefined) paths.set(c, String(r.extra.path));
    const pathText = [...paths].filter(([c]) => c !== 'direct');
    lines.push(
      `**${suite}**${pathText.length ? ` — ${pathText.map(([c, p]) => `${c}: ${p}`).join('; ')}` : ''}`,
      '',
      `| case | metric | ${contenders.join(' | ')} |`,
      `|---|---|${contenders.map(() => '---:').join('|')}|`,
    );
    for (const g of rows) {
      const direct = g.byContender.get('direct');
      const haproxy = g.byContender.get('haproxy');
      const cells = contenders.map((c) => {
        const r = g.byContender.get(c);
        if (!r) return '–';
        const m = median(r.samples);
        const ratios = [c === 'direct' ? '' : ratio(m, direct), c === 'haproxy' ? '' : ratio(m, haproxy)];
        const tail = ratios.some(Boolean) ? `<br>${ratios.map((x) => x || '·').join(' / ')}` : '';
        return `${fmt(m)}${tail}`;
      });
      lines.push(
        `| ${escapeCell(g.case)} | ${escapeCell(`${g.metric} (${g.unit}) ${g.higherIsBetter ? '↑' : '↓'}`)} | ${cells.join(' | ')} |`,
      );
    }
    lines.push('');
  }
  if (result.notes.length > 0) {
    // One line per note (the JSON keeps stacks and full text).
    const oneLine = (n: string) => {
      const flat = n.replace(/\s*\n\s*/g, ' ').trim();
      return flat.length > 400 ? `${flat.slice(0, 400)}…` : flat;
    };
    lines.push('Notes:', '', ...result.notes.map((n) => `- ${oneLine(n)}`), '');
  }
  return lines.join('\n');
}

const palette: Record<string, string> = {
  direct: '#555555',
  'edgemesh-ebpf': '#1b7837',
  'edgemesh-native': '#2166ac',
  'edgemesh-native-ebpf': '#4393c3',
  'edgemesh-native-ebpf-sockmap': '#92c5de',
  'edgemesh-ts': '#67a9cf',
  haproxy: '#d6604d',
  'haproxy-redirect': '#b2182b',
  nginx: '#f4a582',
  socat: '#b2abd2',
};

function xml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** An SVG chart: one panel per side-by-side series, a horizontal bar per contender (median). */
export function svgChart(result: RunResult): string {
  const groups = groupRecords(result.records).filter(
    (g) => g.byContender.size > 1 && g.metric !== 'proxy-cpu',
  );
  const width = 760;
  const labelW = 130;
  const barH = 14;
  const gap = 4;
  let y = 40;
  const parts: string[] = [];
  for (const g of groups) {
    const contenders = orderContenders(g.byContender.keys());
    const medians = contenders.map((c) => median(g.byContender.get(c)!.samples));
    const max = Math.max(...medians.filter(Number.isFinite), 1e-9);
    parts.push(
      `<text x="10" y="${y + 12}" font-weight="bold">${xml(`${g.suite} · ${g.case} · ${g.metric} (${g.unit}) ${g.higherIsBetter ? '↑ higher is better' : '↓ lower is better'}`)}</text>`,
    );
    y += 20;
    contenders.forEach((c, i) => {
      const m = medians[i]!;
      const w = Number.isFinite(m) ? Math.max(1, ((width - labelW - 90) * m) / max) : 0;
      parts.push(
        `<text x="${labelW - 6}" y="${y + barH - 3}" text-anchor="end">${xml(c)}</text>`,
        `<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${palette[c] ?? '#999999'}"/>`,
        `<text x="${(labelW + w + 4).toFixed(1)}" y="${y + barH - 3}">${xml(fmt(m))}</text>`,
      );
      y += barH + gap;
    });
    y += 12;
  }
  const title = `edgemesh bench ${result.meta.date} — ${result.meta.host}, kernel ${result.meta.kernel}, Node ${result.meta.node}${result.meta.quick ? ' (quick mode)' : ''}`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${y + 10}" viewBox="0 0 ${width} ${y + 10}" font-family="sans-serif" font-size="11">`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="10" y="22" font-size="13" font-weight="bold">${xml(title)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}
