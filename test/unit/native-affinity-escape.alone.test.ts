// A pinned native worker (cpuAffinity) escapes a CPU a hog keeps busy, and is pinned again after
// the hog stops: real plane, real client whose SYN is steered to the worker on CPU k, a real
// busy-loop process pinned to CPU k at normal priority. No namespace needed (loopback). Also the
// counter-name parity the escape counters extend.
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { requireNative } from '../../src/native/index.ts';
import { PLANE_COUNTER_NAMES } from '../../src/native/plane-counters.ts';
import { loopbackPlane, routeToEcho } from '../helpers/native-plane.ts';

/** Cpus_allowed_list of this process (e.g. "0-1"). */
function allowedList(): string {
  return /Cpus_allowed_list:\s+(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]!;
}

/** CPUs this process may use, as numbers. */
function allowedCpus(): number[] {
  return allowedList()
    .split(',')
    .flatMap((r) => {
      const [a, b] = r.split('-').map(Number);
      return Array.from({ length: (b ?? a!) - a! + 1 }, (_, i) => a! + i);
    });
}

/** Cpus_allowed_list of the thread named `em-worker-<index>` in this process (undefined: none). */
function workerCpus(index: number): string | undefined {
  for (const tid of fs.readdirSync('/proc/self/task')) {
    try {
      if (fs.readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim() !== `em-worker-${index}`) continue;
      return /Cpus_allowed_list:\s+(\S+)/.exec(fs.readFileSync(`/proc/self/task/${tid}/status`, 'utf8'))?.[1];
    } catch {
      // the thread went away meanwhile
    }
  }
  return undefined;
}

// The client: one connection, 1 KiB round trips (each checked byte for byte) until stdin ends,
// then {rounds, bad} on stdout.
const CLIENT = `
const net = require('node:net');
const s = net.connect({ port: Number(process.argv[1]), host: '127.0.0.1', noDelay: true });
let rounds = 0, bad = 0, stop = false, want = null, got = [];
function next() {
  if (stop) { s.end(); process.stdout.write(JSON.stringify({ rounds, bad }) + '\\n'); return; }
  want = Buffer.alloc(1024, rounds & 255); want.writeUInt32BE(rounds, 0); got = []; s.write(want);
}
s.on('connect', () => { process.stdout.write('connected\\n'); next(); });
s.on('data', (d) => {
  got.push(d);
  const all = Buffer.concat(got);
  if (all.length < 1024) return;
  if (all.length !== 1024 || !all.equals(want)) bad++;
  rounds++;
  next();
});
s.on('error', (e) => { process.stdout.write(JSON.stringify({ error: e.message }) + '\\n'); process.exit(1); });
process.stdin.on('end', () => { stop = true; });
process.stdin.resume();
`;

function firstLine(child: ChildProcess): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      child.stdout!.off('data', onData);
      resolve(buf.slice(0, nl));
    };
    child.stdout!.on('data', onData);
    child.once('close', (code) => reject(new Error(`client exited (${code}) before answering: ${buf}`)));
  });
}

async function until(what: string, ms: number, cond: () => boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('native plane: a pinned worker escapes a busy CPU', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function killOnCleanup(child: ChildProcess): void {
    cleanups.push(async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await gone;
    });
  }

  it('the addon returns exactly the counters PLANE_COUNTER_NAMES names (escape counters last)', () => {
    const native = requireNative();
    const id = native.planeCreate(0, 1000, 0, true, 1 << 20, 256 << 10, 3, 16, 0, true);
    try {
      expect(native.planeCounters(id).length).toBe(PLANE_COUNTER_NAMES.length);
      expect(PLANE_COUNTER_NAMES.slice(-2)).toEqual(['affinity_released', 'affinity_restored']);
    } finally {
      native.planeDestroy(id);
    }
  });

  it('widens its affinity under a CPU hog, counts it, keeps bytes exact, and is pinned again after', async (ctx) => {
    const cpus = allowedCpus();
    if (cpus.length < 2) {
      console.warn('SKIPPED: one allowed CPU, a worker has nowhere to escape to');
      ctx.skip();
    }
    const k = cpus[1]!; // worker 1 is pinned to the second allowed CPU
    const all = allowedList(); // what a released worker's Cpus_allowed_list reads
    const backend = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((r) => backend.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => backend.close(() => r())));
    const registry = new Registry();
    const dp = loopbackPlane({ registry, cpuAffinity: true });
    await dp.start();
    cleanups.push(() => dp.stop());
    await routeToEcho(dp, backend);
    await until('worker 1 pinned to its CPU', 2000, () => workerCpus(1) === String(k));

    // The client's SYN leaves from CPU k, so the CBPF steering hands it to worker 1; then the
    // client may run anywhere (only the worker is meant to be stuck behind the hog).
    const client = spawn('taskset', ['-c', String(k), process.execPath, '-e', CLIENT, String(dp.port)], {
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    killOnCleanup(client);
    expect(await firstLine(client)).toBe('connected');
    expect(spawnSync('taskset', ['-a', '-p', '-c', cpus.join(','), String(client.pid)]).status).toBe(0);
    await until('round trips flowing', 2000, () => (dp.counters().bytes_up ?? 0) > 64 * 1024);

    const released0 = dp.counters().affinity_released ?? 0;
    const hog = spawn('taskset', ['-c', String(k), 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' });
    killOnCleanup(hog);
    let sawWide = false;
    // Seconds are generous: it needs a window where the other CPU had room (>= 10 % idle), which
    // a parallel test file may take away for a while.
    await until('worker 1 released from its CPU', 15_000, () => {
      if (workerCpus(1) === all) sawWide = true;
      return sawWide && (dp.counters().affinity_released ?? 0) > released0;
    });

    const hogGone = new Promise((r) => hog.once('exit', r));
    hog.kill('SIGKILL');
    await hogGone;
    // Pinned again within the cool-down (1 s, 2 s if the hog made it release twice in a row).
    await until(
      'worker 1 pinned again',
      8000,
      () => workerCpus(1) === String(k) && (dp.counters().affinity_restored ?? 0) >= 1,
    );

    client.stdin!.end();
    const result = JSON.parse(await firstLine(client)) as { rounds: number; bad: number };
    expect(result.bad).toBe(0);
    expect(result.rounds).toBeGreaterThan(64);
    expect(dp.counters().bytes_up).toBe(result.rounds * 1024);
    const metrics = await registry.metrics();
    expect(metrics).toMatch(/^edgemesh_native_affinity_released_total [1-9]/m);
    expect(metrics).toMatch(/^edgemesh_native_affinity_restored_total [1-9]/m);
  }, 45_000);
});
