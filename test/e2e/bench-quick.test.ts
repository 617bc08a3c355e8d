// Proves the benchmark suite works end to end (never judges speed): `edgemesh bench --quick` builds
// its namespaces, runs the L4 workloads against real contenders and the micro-benchmarks, writes
// well-formed JSON/Markdown/SVG, skips what is unavailable with a note, and leaves no namespace or
// process behind — also when interrupted with Ctrl-C.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { RunResult } from '../../bench/lib/report.ts';
import { runCli, startCli } from '../helpers/cli.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('the benchmark suite (network namespaces)');
const outDir = mkdtempSync(path.join(os.tmpdir(), 'edgemesh-bench-test-'));

/** Namespaces the bench topologies create (tags 'bl' and 'bv' of test/helpers/netns.ts). */
const BENCH_NETNS = /^em(bl|bvn|bvp)\d/;

function benchNamespaces(): string[] {
  const text = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return text
    .split('\n')
    .map((l) => l.split(' ')[0]!)
    .filter((n) => BENCH_NETNS.test(n));
}

/**
 * Load-generator processes (backends and clients) the bench left running. Other test files run
 * the same binary at the same time inside their own namespaces; a process in a named namespace
 * that is not one of the bench's belongs to them, so only the bench's namespaces, the host's and
 * deleted ones count.
 */
function loadgenProcesses(): string[] {
  let pids: string[];
  try {
    pids = execFileSync('pgrep', ['-f', 'edgemesh-bench/loadgen-'], { encoding: 'utf8' })
      .trim()
      .split('\n')
      .filter(Boolean);
  } catch {
    return [];
  }
  return pids.filter((pid) => {
    let netns = '';
    try {
      netns = execFileSync('ip', ['netns', 'identify', pid], { encoding: 'utf8' }).trim();
    } catch {
      return false; // exited meanwhile
    }
    return netns === '' || BENCH_NETNS.test(netns);
  });
}

afterAll(() => {
  rmSync(outDir, { recursive: true, force: true });
});

describe.skipIf(skip)('edgemesh bench --quick', () => {
  it('runs the L4 and micro suites and writes well-formed JSON, Markdown and SVG', {
    timeout: 180_000,
  }, async () => {
    const before = benchNamespaces();
    const r = await runCli(
      [
        'bench',
        '--quick',
        '--only',
        'tcp,micro',
        '--contenders',
        'direct,haproxy,edgemesh-native',
        '--out',
        outDir,
      ],
      { timeoutMs: 170_000 },
    );
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/\[bench +\d+ s\] \[\d+\/\d+\] tcp loopback round 1\/1/);

    const files = readdirSync(outDir);
    const json = files.find((f) => f.endsWith('.json'));
    expect(json).toMatch(new RegExp(`^\\d{4}-\\d{2}-\\d{2}-\\d{4}-${os.hostname()}\\.json$`));
    const stem = json!.slice(0, -'.json'.length);
    expect(files).toContain(`${stem}.md`);
    expect(files).toContain(`${stem}.svg`);

    const doc = JSON.parse(readFileSync(path.join(outDir, json!), 'utf8')) as RunResult;
    expect(doc.format).toBe('edgemesh-bench');
    expect(doc.version).toBe(1);
    expect(doc.meta.quick).toBe(true);
    expect(doc.meta.kernel).toBe(os.release());
    expect(doc.records.length).toBeGreaterThan(10);
    for (const rec of doc.records) {
      expect(typeof rec.suite).toBe('string');
      expect(typeof rec.case).toBe('string');
      expect(typeof rec.contender).toBe('string');
      expect(typeof rec.metric).toBe('string');
      expect(typeof rec.unit).toBe('string');
      expect(typeof rec.higherIsBetter).toBe('boolean');
      expect(rec.samples.length).toBeGreaterThan(0);
      for (const s of rec.samples) expect(Number.isFinite(s)).toBe(true);
    }
    const find = (suite: string, kase: string, contender: string, metric: string) =>
      doc.records.find(
        (x) => x.suite === suite && x.case === kase && x.contender === contender && x.metric === metric,
      );
    for (const kase of ['loopback', 'veth']) {
      for (const contender of ['direct', 'haproxy']) {
        expect(find('tcp-bulk', kase, contender, 'throughput')?.samples[0]).toBeGreaterThan(0);
        // Every 1 KB round trip is kept, not just a percentile.
        expect(find('tcp-rr-1k', kase, contender, 'round-trip')?.samples.length).toBe(1000);
        expect(find('tcp-connrate', kase, contender, 'connections')?.samples[0]).toBeGreaterThan(0);
        expect(find('tcp-500-conns', kase, contender, 'requests')?.samples[0]).toBeGreaterThan(0);
      }
      // The proxy's own CPU and memory are measured; direct has no proxy to measure.
      expect(find('tcp-bulk', kase, 'haproxy', 'proxy-rss')?.samples[0]).toBeGreaterThan(1);
      expect(find('tcp-bulk', kase, 'haproxy', 'proxy-cpu')).toBeDefined();
      expect(find('tcp-bulk', kase, 'direct', 'proxy-cpu')).toBeUndefined();
    }
    expect(doc.records.some((x) => x.suite === 'micro' && x.metric === 'ops')).toBe(true);
    // The edgemesh contender either produced numbers or was skipped with a note saying why.
    const native = doc.records.some((x) => x.contender === 'edgemesh-native');
    if (!native) expect(doc.notes.join('\n')).toMatch(/edgemesh-native did not start/);

    const md = readFileSync(path.join(outDir, `${stem}.md`), 'utf8');
    expect(md).toMatch(/\*\*tcp-bulk\*\*[^\n]*\n\n\| case \| metric \| direct \|/);
    expect(md).toContain('| loopback | throughput (Gbit/s) ↑ |');
    expect(r.stdout).toContain('| case | metric | direct |');
    const svg = readFileSync(path.join(outDir, `${stem}.svg`), 'utf8');
    expect(svg.startsWith('<svg ')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect((svg.match(/<rect /g) ?? []).length).toBeGreaterThan(10);

    expect(benchNamespaces()).toEqual(before);
    expect(loadgenProcesses()).toEqual([]);
  });

  it('cleans up its namespaces and processes on Ctrl-C', { timeout: 90_000 }, async () => {
    const before = benchNamespaces();
    const dir = mkdtempSync(path.join(os.tmpdir(), 'edgemesh-bench-int-'));
    const bench = startCli(['bench', '--quick', '--only', 'tcp', '--contenders', 'direct', '--out', dir]);
    try {
      // Interrupt in the middle of a measurement, with namespaces and backends up.
      await bench.waitFor(/tcp loopback round 1\/1 direct \.\.\./, 60_000);
      expect(benchNamespaces().length).toBeGreaterThan(before.length);
      const code = await bench.stop('SIGINT');
      expect(code).toBe(130);
      expect(bench.output()).toContain('SIGINT, cleaning up');
      expect(benchNamespaces()).toEqual(before);
      expect(loadgenProcesses()).toEqual([]);
    } finally {
      await bench.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
