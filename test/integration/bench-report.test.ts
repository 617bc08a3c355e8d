// The benchmark report machinery without running anything heavy: statistics, series collection,
// the Markdown table (medians and ratios to direct / HAProxy), the SVG chart, and the command's
// usage errors. The real suite is exercised by test/e2e/bench-quick.test.ts.
import { describe, expect, it } from 'vitest';
import { Collector } from '../../bench/lib/collector.ts';
import type { BenchRecord } from '../../bench/lib/record.ts';
import { groupRecords, markdownReport, type RunResult, svgChart } from '../../bench/lib/report.ts';
import { median, percentile } from '../../bench/lib/stats.ts';
import { runCli } from '../helpers/cli.ts';

function rec(contender: string, samples: number[], extra?: BenchRecord['extra']): BenchRecord {
  return {
    suite: 'tcp-bulk',
    case: 'loopback',
    contender,
    metric: 'throughput',
    unit: 'Gbit/s',
    higherIsBetter: true,
    samples,
    extra,
  };
}

function result(records: BenchRecord[], notes: string[] = []): RunResult {
  return {
    format: 'edgemesh-bench',
    version: 1,
    meta: {
      date: '2026-01-01T00:00:00.000Z',
      host: 'test-host',
      kernel: '6.1.0',
      node: 'v20.0.0',
      cpus: 2,
      cpuModel: 'Test CPU',
      memoryGiB: 4,
      quick: false,
      argv: [],
      versions: { haproxy: '2.6.12' },
    },
    notes,
    records,
  };
}

describe('bench statistics', () => {
  it('computes medians and nearest-rank percentiles', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(Number.isNaN(median([]))).toBe(true);
    const hundred = Array.from({ length: 101 }, (_, i) => 100 - i);
    expect(percentile(hundred, 50)).toBe(50);
    expect(percentile(hundred, 99)).toBe(99);
    expect(percentile(hundred, 100)).toBe(100);
  });

  it('collects interleaved rounds into one series per contender and metric', () => {
    const col = new Collector();
    const series = { suite: 's', case: 'c', metric: 'm', unit: 'u', higherIsBetter: true };
    col.add({ ...series, contender: 'a' }, 1, { path: 'x' });
    col.add({ ...series, contender: 'b' }, [2, 3]);
    col.add({ ...series, contender: 'a' }, [4, Number.NaN]);
    col.add({ ...series, contender: 'empty' }, []);
    const out = col.result();
    expect(out.map((r) => [r.contender, r.samples])).toEqual([
      ['a', [1, 4]],
      ['b', [2, 3]],
    ]);
    expect(out[0]!.extra).toEqual({ path: 'x' });
  });
});

describe('bench report', () => {
  const records = [
    rec('haproxy', [4, 5, 6], { path: 'splice' }),
    rec('direct', [10, 10, 12]),
    rec('edgemesh-native', [8, 8, 9], { path: 'splice' }),
    { ...rec('edgemesh', [100, 200]), suite: 'micro', case: 'lb pick', metric: 'ops', unit: 'per s' },
  ];

  it('writes one table per suite: medians with ratios to direct and HAProxy, columns in a fixed order', () => {
    const md = markdownReport(result(records, ['socat skipped: not installed']));
    expect(md).toContain('| case | metric | direct | edgemesh-native | haproxy |');
    // edgemesh-native: median 8 → 8/10 = 0.80× direct, 8/5 = 1.60× HAProxy.
    expect(md).toContain(
      '| loopback | throughput (Gbit/s) ↑ | 10.0<br>· / 2.00× | 8.00<br>0.80× / 1.60× | 5.00<br>0.50× / · |',
    );
    expect(md).toContain('**micro**\n\n| case | metric | edgemesh |');
    expect(md).toContain('| lb pick | ops (per s) ↑ | 150 |');
    expect(md).toContain('- socat skipped: not installed');
    expect(md).toContain('**tcp-bulk** — haproxy: splice; edgemesh-native: splice');
    expect(md).toContain('kernel 6.1.0; Node v20.0.0; haproxy 2.6.12');
  });

  it('groups proxy CPU rows with their suite, per case', () => {
    const cpu = (c: string, contender: string): BenchRecord => ({
      ...rec(contender, [50]),
      case: c,
      metric: 'proxy-cpu',
      unit: '%',
      higherIsBetter: false,
    });
    const groups = groupRecords([
      rec('direct', [1]),
      { ...rec('direct', [1]), case: 'veth' },
      cpu('loopback', 'haproxy'),
    ]);
    expect(groups.map((g) => `${g.case}/${g.metric}`)).toEqual([
      'loopback/throughput',
      'loopback/proxy-cpu',
      'veth/throughput',
    ]);
  });

  it('draws a well-formed SVG with one bar per contender of each side-by-side series', () => {
    const svg = svgChart(result(records));
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    // A background rect plus three bars (the single-contender micro series is not charted).
    expect(svg.match(/<rect /g)).toHaveLength(4);
    expect(svg).toContain('tcp-bulk · loopback · throughput (Gbit/s)');
    expect(svg).not.toContain('lb pick');
    // Every element that opens is closed (no stray '<' from unescaped labels).
    const opened = (svg.match(/<(text|svg)\b/g) ?? []).length;
    const closed = (svg.match(/<\/(text|svg)>/g) ?? []).length;
    expect(opened).toBe(closed);
  });
});

describe('edgemesh bench usage', () => {
  it('prints help and exits 0', async () => {
    const r = await runCli(['bench', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--quick');
    expect(r.stdout).toContain('--only LIST');
  });

  it('rejects an unknown suite and a bad --rounds with exit code 2', async () => {
    const bad = await runCli(['bench', '--only', 'nope']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('unknown suite(s) nope');
    const rounds = await runCli(['bench', '--rounds', '0']);
    expect(rounds.code).toBe(2);
    expect(rounds.stderr).toContain('--rounds must be a positive integer');
    const flag = await runCli(['bench', '--bogus']);
    expect(flag.code).toBe(2);
  });
});
