// `npm run bench` / `edgemesh bench`: runs the benchmark suites, then writes
// bench/results/<date>-<host>.{json,md,svg} and prints the Markdown table (bench/README.md).
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { cleanupAll } from './lib/cleanup.ts';
import { exec } from './lib/exec.ts';
import type { BenchModule, BenchOptions, BenchRecord } from './lib/record.ts';
import { markdownReport, type RunMeta, type RunResult, svgChart } from './lib/report.ts';

const benchDir = path.dirname(fileURLToPath(import.meta.url));

/** Every suite, in run order: each is bench/<name>.ts exporting `run: BenchModule`. */
export const suiteNames = ['tcp', 'dns', 'http', 'proxier', 'controller', 'micro', 'tunnel'] as const;

/** Suites that create network namespaces and so need root. */
const rootSuites = new Set(['tcp', 'tunnel']);

const help = `Usage: edgemesh bench [options]      (npm run bench -- [options])

Runs the benchmark suites side by side against peers and writes
bench/results/<date>-<host>.json (every sample), .md (medians and ratios) and .svg (chart).

Options:
  --quick              CI smoke mode: short runs, whole suite under 2 minutes (never judge speed by it)
  --only LIST          only these suites, comma-separated: ${suiteNames.join(', ')}
  --rounds N           rounds per contender, interleaved A B A B ... (default 3, quick 1)
  --cases LIST         tcp topologies: loopback, veth, veth-netem (default loopback,veth)
  --contenders LIST    only these contenders: direct, edgemesh-ebpf, edgemesh-native, edgemesh-native-ebpf,
                       edgemesh-native-ebpf-cpu, edgemesh-native-ebpf-sockmap, edgemesh-native-ebpf-sockmap-cpu,
                       edgemesh-ts, haproxy, haproxy-redirect, nginx, socat
  --netem SPEC         tc netem spec for the veth-netem case, e.g. "delay 1ms loss 0.1%" (adds the case)
  --out DIR            where results go (default bench/results)
  -h, --help           this help
`;

function list(v: unknown): string[] | undefined {
  return typeof v === 'string'
    ? v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : undefined;
}

async function firstLine(argv: string[]): Promise<string | undefined> {
  const r = await exec(argv, { timeoutMs: 5_000 });
  if (r.code !== 0) return undefined;
  return `${r.stdout}\n${r.stderr}`
    .split('\n')
    .find((l) => l.trim() !== '')
    ?.trim();
}

async function peerVersions(): Promise<Record<string, string>> {
  const probes: Array<[string, string[], RegExp]> = [
    ['haproxy', ['haproxy', '-v'], /version (\S+)/],
    ['nginx', ['nginx', '-v'], /nginx\/(\S+)/],
    ['socat', ['socat', '-V'], /socat version (\S+)/],
    ['iperf3', ['iperf3', '--version'], /iperf (\S+)/],
  ];
  const out: Record<string, string> = {};
  for (const [name, argv, re] of probes) {
    const line = await firstLine(argv).catch(() => undefined);
    const m = line ? re.exec(line) : null;
    if (m) out[name] = m[1]!;
  }
  return out;
}

async function loadSuite(name: string): Promise<BenchModule | string> {
  const file = path.join(benchDir, `${name}.ts`);
  if (!existsSync(file)) return `bench/${name}.ts is not there yet`;
  try {
    const mod = (await import(pathToFileURL(file).href)) as { run?: unknown };
    return typeof mod.run === 'function' ? (mod.run as BenchModule) : `bench/${name}.ts exports no run()`;
  } catch (err) {
    return `bench/${name}.ts failed to load: ${err instanceof Error ? err.message : String(err)}`;
  }
}

function stamp(d: Date): string {
  const iso = d.toISOString();
  return `${iso.slice(0, 10)}-${iso.slice(11, 13)}${iso.slice(14, 16)}`;
}

/** The `edgemesh bench` command; returns the exit code (2 = bad usage, 1 = nothing measured). */
export async function benchCommand(argv: string[], out: (s: string) => void): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean' },
        only: { type: 'string' },
        rounds: { type: 'string' },
        cases: { type: 'string' },
        contenders: { type: 'string' },
        netem: { type: 'string' },
        out: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (err) {
    process.stderr.write(`edgemesh bench: ${err instanceof Error ? err.message : String(err)}\n\n${help}`);
    return 2;
  }
  if (values.help) {
    out(help);
    return 0;
  }
  const only = list(values.only);
  const unknown = only?.filter((s) => !(suiteNames as readonly string[]).includes(s)) ?? [];
  const rounds = values.rounds === undefined ? undefined : Number(values.rounds);
  if (unknown.length > 0 || (rounds !== undefined && !(Number.isInteger(rounds) && rounds > 0))) {
    process.stderr.write(
      `edgemesh bench: ${unknown.length ? `unknown suite(s) ${unknown.join(', ')} (known: ${suiteNames.join(', ')})` : `--rounds must be a positive integer, got '${values.rounds}'`}\n`,
    );
    return 2;
  }

  const started = new Date();
  const loadAtStart = os.loadavg()[0]!;
  const quick = values.quick === true;
  const notes: string[] = [];
  const tty = process.stderr.isTTY === true;
  const t0 = Date.now();
  const progress = (line: string) => {
    const text = `[bench ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}`;
    process.stderr.write(tty ? `\r\x1b[K${text.slice(0, (process.stderr.columns ?? 120) - 1)}` : `${text}\n`);
  };
  const note = (text: string) => {
    notes.push(text);
    if (tty) process.stderr.write('\n');
    process.stderr.write(`[bench] note: ${text}\n`);
  };
  const options: BenchOptions = {
    quick,
    progress,
    note,
    rounds,
    cases: list(values.cases),
    contenders: list(values.contenders),
    netem: typeof values.netem === 'string' ? values.netem : undefined,
  };
  if (options.netem && options.cases && !options.cases.includes('veth-netem'))
    options.cases.push('veth-netem');

  const records: BenchRecord[] = [];
  let ran = 0;
  const isRoot = process.getuid?.() === 0;
  try {
    for (const name of suiteNames) {
      if (only && !only.includes(name)) continue;
      if (rootSuites.has(name) && !isRoot) {
        note(`${name}: skipped: needs root (it builds network namespaces); run the suite as root`);
        continue;
      }
      const mod = await loadSuite(name);
      if (typeof mod === 'string') {
        note(`${name}: skipped: ${mod}`);
        continue;
      }
      progress(`${name}: starting`);
      try {
        const got = await mod(options);
        records.push(...got);
        ran++;
        if (tty) process.stderr.write('\n');
        progress(`${name}: done, ${got.length} series`);
      } catch (err) {
        note(`${name}: failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
    }
  } finally {
    // Namespaces and processes from a failed suite must not outlive the run.
    cleanupAll();
  }
  if (tty) process.stderr.write('\n');

  const meta: RunMeta = {
    date: started.toISOString(),
    host: os.hostname(),
    kernel: os.release(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model.trim() ?? 'unknown CPU',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    quick,
    argv,
    versions: await peerVersions(),
    durationSeconds: (Date.now() - t0) / 1000,
    loadAverage: { start: loadAtStart, end: os.loadavg()[0]! },
  };
  const result: RunResult = { format: 'edgemesh-bench', version: 1, meta, notes, records };
  const outDir = typeof values.out === 'string' ? path.resolve(values.out) : path.join(benchDir, 'results');
  mkdirSync(outDir, { recursive: true });
  const stem = path.join(outDir, `${stamp(started)}-${os.hostname()}`);
  const markdown = markdownReport(result);
  writeFileSync(`${stem}.json`, `${JSON.stringify(result)}\n`);
  writeFileSync(`${stem}.md`, markdown);
  writeFileSync(`${stem}.svg`, svgChart(result));
  out(`${markdown}\nWrote ${stem}.json, ${stem}.md and ${stem}.svg\n`);
  return ran > 0 ? 0 : 1;
}
