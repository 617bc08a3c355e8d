// DNS suite: dnsperf QPS and latency against the real `edgemesh agent` (DNS module only; once
// with the native UDP responder, once with modules.edgeDNS.nativeFastPath: false) and against
// dnsmasq, with the same query files, interleaved round by round. Two cases: cluster names (our
// NameIndex vs dnsmasq --host-record) and cached external names (both forward to one upstream
// dnsmasq on loopback and answer from their caches after a warm-up pass).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startCli } from '../test/helpers/cli.ts';
import { freePort } from '../test/helpers/ports.ts';
import { onCleanup } from './lib/cleanup.ts';
import { delay, exec, haveCommand } from './lib/exec.ts';
import { treeTicks } from './lib/proc-stats.ts';
import type { BenchModule, BenchRecord } from './lib/record.ts';
import { percentile } from './lib/stats.ts';

const SERVICES = 100;
/** Query rate of the latency run: a busy node's DNS load, well below every contender's maximum. */
const PACED_QPS = 5000;

interface Running {
  port: number;
  /** How it answers UDP (edgemesh: native|js from its /status). */
  path?: string;
  /** Root of the server's process tree (its CPU is read from /proc). */
  pid: number;
  stop(): Promise<void>;
}

interface DnsperfResult {
  qps: number;
  avgUs: number;
  p99Us: number;
  lost: number;
  /** Average latency of the paced (PACED_QPS) run. */
  pacedAvgUs?: number;
  /** Server CPU time per query in the throughput run, microseconds. */
  cpuUs?: number;
}

/**
 * Runs dnsperf for `seconds` against 127.0.0.1:port. With `verbose` it prints one line per query
 * (slowing dnsperf itself), which is only used at a fixed rate for the latency percentiles.
 */
async function dnsperf(
  port: number,
  file: string,
  seconds: number,
  extra: string[] = [],
): Promise<DnsperfResult> {
  const argv = [
    'dnsperf',
    '-s',
    '127.0.0.1',
    '-p',
    String(port),
    '-d',
    file,
    '-l',
    String(seconds),
    '-c',
    '4',
  ];
  const r = await exec([...argv, ...extra], { timeoutMs: (seconds + 30) * 1000 });
  if (r.code !== 0) throw new Error(`dnsperf failed (${r.code}): ${r.stderr.trim()}`);
  const num = (re: RegExp) => Number(re.exec(r.stdout)?.[1] ?? Number.NaN);
  // Verbose lines: `> NOERROR name A 0.000123`.
  const latencies: number[] = [];
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('> ')) continue;
    const v = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (Number.isFinite(v)) latencies.push(v * 1e6);
  }
  return {
    qps: num(/Queries per second:\s+([\d.]+)/),
    avgUs: num(/Average Latency \(s\):\s+([\d.]+)/) * 1e6,
    p99Us: percentile(latencies, 99),
    lost: num(/Queries lost:\s+(\d+)/),
  };
}

async function startDnsmasq(args: string[], tag: string): Promise<Running> {
  const port = await freePort();
  const proc = startCli(
    [
      '--keep-in-foreground',
      '--no-hosts',
      '--bind-interfaces',
      '--listen-address=127.0.0.1',
      `--port=${port}`,
      '--pid-file=',
      '--log-facility=-',
      ...args,
    ],
    { command: ['dnsmasq'] },
  );
  const undo = onCleanup(() => proc.child.kill('SIGKILL'));
  await proc.waitFor(/started/, 10_000).catch((err) => {
    throw new Error(`dnsmasq (${tag}) did not start: ${err instanceof Error ? err.message : err}`);
  });
  return {
    port,
    pid: proc.child.pid!,
    async stop() {
      await proc.stop('SIGTERM');
      undo();
    },
  };
}

async function startEdgemesh(dir: string, upstreamPort: number, nativeFastPath: boolean): Promise<Running> {
  const port = await freePort();
  const manifests = path.join(dir, 'manifests');
  const stateDir = path.join(dir, `state-${nativeFastPath ? 'native' : 'js'}`);
  const docs: string[] = [];
  for (let i = 0; i < SERVICES; i++) {
    docs.push(
      `apiVersion: v1\nkind: Service\nmetadata: { name: svc-${i}, namespace: default }\n` +
        `spec:\n  clusterIP: 10.96.${i >> 8}.${(i & 255) + 1}\n  ports: [{ name: http, port: 80 }]\n`,
    );
  }
  mkdirSync(manifests, { recursive: true });
  writeFileSync(path.join(manifests, 'services.yaml'), docs.join('---\n'));
  const config = path.join(dir, `edgemesh-${nativeFastPath ? 'native' : 'js'}.yaml`);
  writeFileSync(
    config,
    [
      'modules:',
      '  edgeProxy: { enable: false }',
      `  edgeDNS: { listen: "127.0.0.1:${port}", upstreams: ["127.0.0.1:${upstreamPort}"], nativeFastPath: ${nativeFastPath} }`,
      '',
    ].join('\n'),
  );
  const metrics = await freePort();
  const proc = startCli([
    'agent',
    '--config',
    config,
    '--manifests',
    manifests,
    '--state-dir',
    stateDir,
    '--metrics-listen',
    `127.0.0.1:${metrics}`,
    '--log-level',
    'warn',
  ]);
  const undo = onCleanup(() => proc.child.kill('SIGKILL'));
  // Ready when the first cluster name resolves (listener up and first snapshot applied).
  const deadline = Date.now() + 30_000;
  for (;;) {
    const r = await exec([
      'dig',
      '@127.0.0.1',
      '-p',
      String(port),
      '+short',
      '+time=1',
      '+tries=1',
      'svc-0.default.svc.cluster.local',
    ]);
    if (r.stdout.trim() === '10.96.0.1') break;
    if (Date.now() > deadline || proc.child.exitCode !== null)
      throw new Error(`edgemesh agent did not answer cluster names:\n${proc.output()}`);
    await delay(100);
  }
  // Which UDP path the agent chose (the native responder, or JS with the reason in /status).
  const status = (await (await fetch(`http://127.0.0.1:${metrics}/status`)).json()) as {
    dns?: { mode: string };
  };
  return {
    port,
    pid: proc.child.pid!,
    path: `dns-${status.dns?.mode ?? 'unknown'}`,
    async stop() {
      await proc.stop('SIGTERM');
      undo();
    },
  };
}

/**
 * The floor of any Node.js UDP server: a dgram socket that sends each query back with the QR bit
 * set (no parsing, no answer). What edgemesh spends above this is its own DNS work.
 */
async function startNodeEcho(): Promise<Running> {
  const port = await freePort();
  const code =
    "const s = require('node:dgram').createSocket('udp4');" +
    's.on("message", (m, r) => { m[2] |= 0x80; s.send(m, r.port, r.address); });' +
    `s.bind(${port}, '127.0.0.1', () => console.log('ready'));`;
  const proc = startCli(['-e', code], { command: [process.execPath] });
  const undo = onCleanup(() => proc.child.kill('SIGKILL'));
  await proc.waitFor(/ready/, 10_000);
  return {
    port,
    pid: proc.child.pid!,
    async stop() {
      await proc.stop('SIGTERM');
      undo();
    },
  };
}

/** The DNS benchmark (see the file comment). */
export const run: BenchModule = async (options) => {
  for (const tool of ['dnsperf', 'dnsmasq', 'dig']) {
    if (!(await haveCommand(tool))) {
      options.note?.(
        `dns: skipped: ${tool} is not installed (apt-get install dnsperf dnsmasq-base dnsutils)`,
      );
      return [];
    }
  }
  const seconds = options.quick ? 1 : 5;
  const warmup = options.quick ? 1 : 3;
  const rounds = options.rounds ?? (options.quick ? 1 : 3);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'em-bench-dns-'));
  const undoDir = onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const started: Running[] = [];
  try {
    const clusterFile = path.join(dir, 'cluster.txt');
    const externalFile = path.join(dir, 'external.txt');
    writeFileSync(
      clusterFile,
      Array.from({ length: SERVICES }, (_, i) => `svc-${i}.default.svc.cluster.local A`).join('\n') + '\n',
    );
    writeFileSync(
      externalFile,
      Array.from({ length: SERVICES }, (_, i) => `h${i}.ext.test A`).join('\n') + '\n',
    );

    options.progress('dns: starting upstream dnsmasq, edgemesh agent, peer dnsmasq');
    const upstream = await startDnsmasq(
      ['--no-resolv', '--address=/ext.test/192.0.2.1', '--local-ttl=3600'],
      'upstream',
    );
    started.push(upstream);
    const edgemesh = await startEdgemesh(dir, upstream.port, true);
    started.push(edgemesh);
    // The same agent with every query on the JS server: what the native responder buys.
    const edgemeshJs = await startEdgemesh(dir, upstream.port, false);
    started.push(edgemeshJs);
    const hostRecords = Array.from(
      { length: SERVICES },
      (_, i) => `--host-record=svc-${i}.default.svc.cluster.local,10.96.${i >> 8}.${(i & 255) + 1}`,
    );
    const peer = await startDnsmasq(
      [
        '--no-resolv',
        `--server=127.0.0.1#${upstream.port}`,
        '--cache-size=10000',
        '--local-ttl=5',
        ...hostRecords,
      ],
      'peer',
    );
    started.push(peer);

    // Warm both caches with every external name, and V8's JIT on both paths.
    for (const c of [edgemesh, edgemeshJs, peer]) {
      // V8 needs a few seconds of traffic before the hot path is optimized (first runs were ~40 % slower).
      await dnsperf(c.port, externalFile, warmup);
      await dnsperf(c.port, clusterFile, warmup);
    }

    const echo = await startNodeEcho();
    started.push(echo);
    const contenders: Array<[string, Running]> = [
      ['edgemesh', edgemesh],
      ['edgemesh-js', edgemeshJs],
      ['dnsmasq', peer],
      ['node-dgram-echo', echo],
    ];
    const cases: Array<[string, string]> = [
      ['cluster-names', clusterFile],
      ['cached-external', externalFile],
    ];
    const samples = new Map<string, DnsperfResult[]>();
    for (let round = 0; round < rounds; round++) {
      for (const [caseName, file] of cases) {
        const order = round % 2 === 0 ? contenders : [...contenders].reverse();
        for (const [name, c] of order) {
          // The echo floor answers nothing real; one case is enough to show Node's per-packet cost.
          if (name === 'node-dgram-echo' && caseName !== 'cluster-names') continue;
          options.progress(`dns: round ${round + 1}/${rounds} ${caseName} ${name}`);
          const key = `${caseName}|${name}`;
          const list = samples.get(key) ?? [];
          const ticks0 = treeTicks(c.pid);
          const max = await dnsperf(c.port, file, seconds, ['-q', '100']);
          // CPU per answered query: independent of how busy the machine's other cores are.
          const cpuUs = (((treeTicks(c.pid) - ticks0) / 100) * 1e6) / Math.max(1, max.qps * seconds);
          const paced = await dnsperf(c.port, file, Math.min(seconds, 2), [
            '-q',
            '100',
            '-Q',
            String(PACED_QPS),
            '-v',
          ]);
          list.push({ ...max, p99Us: paced.p99Us, pacedAvgUs: paced.avgUs, cpuUs });
          samples.set(key, list);
        }
      }
    }
    const records: BenchRecord[] = [];
    const paths: Record<string, string> = {
      edgemesh: edgemesh.path ?? 'unknown',
      'edgemesh-js': edgemeshJs.path ?? 'unknown',
      dnsmasq: 'dnsmasq',
      'node-dgram-echo': 'js-dgram',
    };
    for (const [key, list] of samples) {
      const [caseName, contender] = key.split('|') as [string, string];
      const extra = {
        path: paths[contender] ?? contender,
        loadavg1: Math.round(os.loadavg()[0]! * 10) / 10,
        queries: `${SERVICES} names, dnsperf -c 4 -q 100, ${seconds} s; latency at -Q ${PACED_QPS}`,
        lost: list.reduce((a, r) => a + r.lost, 0),
      };
      const base = { suite: 'dns-qps', case: caseName, contender, extra };
      records.push({
        ...base,
        metric: 'qps',
        unit: 'qps',
        higherIsBetter: true,
        samples: list.map((r) => r.qps),
      });
      records.push({
        ...base,
        metric: 'cpu-per-query',
        unit: 'us',
        higherIsBetter: false,
        samples: list.map((r) => r.cpuUs ?? Number.NaN),
      });
      records.push({
        ...base,
        metric: 'latency-avg',
        unit: 'us',
        higherIsBetter: false,
        samples: list.map((r) => r.avgUs),
      });
      records.push({
        ...base,
        metric: `latency-avg-at-${PACED_QPS}qps`,
        unit: 'us',
        higherIsBetter: false,
        samples: list.map((r) => r.pacedAvgUs ?? Number.NaN),
      });
      records.push({
        ...base,
        metric: `latency-p99-at-${PACED_QPS}qps`,
        unit: 'us',
        higherIsBetter: false,
        samples: list.map((r) => r.p99Us),
      });
    }
    return records;
  } finally {
    for (const s of started.reverse()) await s.stop().catch(() => {});
    undoDir();
  }
};
