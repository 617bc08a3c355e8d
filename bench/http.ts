// HTTP suite: requests/s and p99 latency with wrk through our HTTP engine (node:http + undici,
// per-request load balancing, one process, one thread) vs straight to the backend vs HAProxy in
// http mode, keep-alive on and off, interleaved round by round. The backend is nginx answering a
// fixed body from memory, so the proxies are the bottleneck rather than the backend.
// `node --import tsx bench/http.ts --serve-proxy PORT BACKEND_PORT` runs the proxy process itself.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../test/helpers/ports.ts';
import { onCleanup } from './lib/cleanup.ts';
import { exec, haveCommand, waitListening } from './lib/exec.ts';
import { treeTicks } from './lib/proc-stats.ts';
import type { BenchModule, BenchRecord } from './lib/record.ts';
import { type Supervised, superviseTree } from './lib/supervise.ts';

const self = fileURLToPath(import.meta.url);

type Proc = Supervised;

/** Starts `argv` and waits until `port` listens; killed with its children on stop or Ctrl-C. */
function spawnListening(argv: string[], port: number): Promise<Proc> {
  return superviseTree(argv, () => waitListening(undefined, port, 60_000));
}

interface WrkResult {
  rps: number;
  p99Ms: number;
  errors: number;
}

function toMs(value: string, unit: string): number {
  const v = Number(value);
  return unit === 'us' ? v / 1000 : unit === 's' ? v * 1000 : unit === 'm' ? v * 60_000 : v;
}

/** One wrk run (1 thread: the proxies under test get the other core). */
async function wrk(port: number, seconds: number, keepAlive: boolean): Promise<WrkResult> {
  const argv = ['wrk', '-t1', '-c32', `-d${seconds}s`, '--latency', '--timeout', '5s'];
  if (!keepAlive) argv.push('-H', 'Connection: close');
  argv.push(`http://127.0.0.1:${port}/`);
  const r = await exec(argv, { timeoutMs: (seconds + 30) * 1000 });
  if (r.code !== 0) throw new Error(`wrk failed: ${r.stderr || r.stdout}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? Number.NaN);
  const p99 = /\s99%\s+([\d.]+)(us|ms|s|m)\b/.exec(r.stdout);
  const errLine = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(r.stdout);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(r.stdout)?.[1] ?? 0);
  const errors = (errLine ? errLine.slice(1).reduce((a, b) => a + Number(b), 0) : 0) + non2xx;
  return { rps, p99Ms: p99 ? toMs(p99[1]!, p99[2]!) : Number.NaN, errors };
}

interface Contender {
  name: string;
  path: string;
  start(backendPort: number, dir: string): Promise<{ port: number; proc?: Proc }>;
}

const contenders: Contender[] = [
  { name: 'direct', path: 'none', start: async (backendPort) => ({ port: backendPort }) },
  {
    name: 'edgemesh-ts',
    path: 'node:http + undici pool, per-request LB',
    async start(backendPort) {
      const port = await freePort();
      const proc = await spawnListening(
        [process.execPath, '--import', 'tsx', self, '--serve-proxy', String(port), String(backendPort)],
        port,
      );
      return { port, proc };
    },
  },
  {
    name: 'haproxy',
    path: 'http mode, http-reuse always',
    async start(backendPort, dir) {
      const port = await freePort();
      const cfg = path.join(dir, 'haproxy-http.cfg');
      writeFileSync(
        cfg,
        [
          'global',
          '  maxconn 5000',
          '  nbthread 1',
          'defaults',
          '  mode http',
          '  maxconn 5000',
          '  timeout connect 5s',
          '  timeout client 60s',
          '  timeout server 60s',
          '  http-reuse always',
          'listen web',
          `  bind 127.0.0.1:${port}`,
          `  server b 127.0.0.1:${backendPort}`,
          '',
        ].join('\n'),
      );
      return { port, proc: await spawnListening(['haproxy', '-db', '-f', cfg], port) };
    },
  },
];

/** nginx answering "ok\n" from memory on `port` (2 workers, keep-alive for many requests). */
async function startBackend(dir: string): Promise<{ port: number; proc: Proc }> {
  const port = await freePort();
  const conf = path.join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    [
      'daemon off;',
      'worker_processes 1;',
      `pid ${path.join(dir, 'nginx.pid')};`,
      `error_log ${path.join(dir, 'nginx-error.log')} warn;`,
      'events { worker_connections 4096; }',
      'http {',
      '  access_log off;',
      `  client_body_temp_path ${dir};`,
      '  keepalive_requests 1000000;',
      `  server { listen 127.0.0.1:${port}; location / { return 200 "ok\\n"; } }`,
      '}',
      '',
    ].join('\n'),
  );
  return { port, proc: await spawnListening(['nginx', '-c', conf, '-p', dir], port) };
}

/** The suite (see file comment). */
export const run: BenchModule = async ({ quick, progress }) => {
  for (const cmd of ['wrk', 'nginx']) {
    if (!(await haveCommand(cmd))) {
      progress(`http: skipped, ${cmd} is not installed`);
      return [];
    }
  }
  const haveHaproxy = await haveCommand('haproxy');
  const seconds = quick ? 2 : 5;
  const rounds = quick ? 1 : 3;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'em-bench-http-'));
  const unregisterDir = onCleanup(() => rmSync(dir, { recursive: true, force: true }));
  const backend = await startBackend(dir);
  const records = new Map<string, BenchRecord>();
  const record = (c: Contender, kase: string, metric: string, unit: string, higher: boolean, v: number) => {
    const key = `${c.name}|${kase}|${metric}`;
    let r = records.get(key);
    if (!r) {
      r = {
        suite: 'http',
        case: kase,
        contender: c.name,
        metric,
        unit,
        higherIsBetter: higher,
        samples: [],
        extra: { path: c.path, client: 'wrk -t1 -c32', backend: 'nginx return 200' },
      };
      records.set(key, r);
    }
    r.samples.push(v);
  };
  try {
    const active = contenders.filter((c) => c.name !== 'haproxy' || haveHaproxy);
    for (let round = 0; round < rounds; round++) {
      for (const c of active) {
        const started = await c.start(backend.port, dir);
        try {
          // Warm-up: JIT, upstream pools.
          await wrk(started.port, 1, true);
          for (const keepAlive of [true, false]) {
            const kase = keepAlive ? 'keep-alive' : 'close';
            const ticks0 = started.proc ? treeTicks(started.proc.pid) : 0;
            const res = await wrk(started.port, seconds, keepAlive);
            const cpu = started.proc ? (treeTicks(started.proc.pid) - ticks0) / (seconds * 100) : 0;
            progress(
              `http ${kase} ${c.name} round ${round + 1}: ${res.rps.toFixed(0)} req/s, p99 ${res.p99Ms.toFixed(2)} ms` +
                (res.errors ? `, ${res.errors} errors` : ''),
            );
            record(c, kase, 'requests', 'req/s', true, res.rps);
            record(c, kase, 'latency-p99', 'ms', false, res.p99Ms);
            const r = records.get(`${c.name}|${kase}|requests`)!;
            r.extra = { ...r.extra, errors: Number(r.extra?.errors ?? 0) + res.errors };
            if (started.proc) r.extra.proxyCpuPercent = Math.round(cpu * 100);
          }
        } finally {
          await started.proc?.stop();
        }
      }
    }
  } finally {
    await backend.proc.stop();
    unregisterDir();
  }
  return [...records.values()];
};

/** Proxy process for the edgemesh-ts contender: one frontend → HttpProxy → 127.0.0.1:backend. */
async function serveProxy(port: number, backendPort: number): Promise<void> {
  const { HttpProxy } = await import('../src/protocols/index.ts');
  const { createBalancer } = await import('../src/lb/index.ts');
  const sp = {
    name: 'http',
    port: 80,
    protocol: 'TCP' as const,
    appProtocol: 'http' as const,
    targetPort: backendPort,
    endpoints: [{ ip: '127.0.0.1', port: backendPort, ready: true, serving: true, terminating: false }],
  };
  const svc = {
    namespace: 'bench',
    name: 'http',
    key: 'bench/http',
    clusterIPs: ['10.96.0.80'],
    headless: false,
    type: 'ClusterIP' as const,
    ports: [sp],
    sessionAffinity: { type: 'None' as const, timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
  const proxy = new HttpProxy();
  const balancer = createBalancer(svc, sp);
  const server = net.createServer({ allowHalfOpen: true }, (c) => proxy.handle(c, svc, sp, balancer));
  server.listen({ port, host: '127.0.0.1', backlog: 1024 });
  process.on('SIGTERM', () => process.exit(0));
}

if (process.argv[2] === '--serve-proxy') {
  await serveProxy(Number(process.argv[3]), Number(process.argv[4]));
}
