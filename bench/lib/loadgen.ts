// The C load generator (bench/lib/loadgen.c), compiled on first use into a cache folder keyed by
// its source hash (not build/, which node-gyp wipes), and typed wrappers around its modes.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { exec, execOk, type Where } from './exec.ts';

const source = path.join(path.dirname(fileURLToPath(import.meta.url)), 'loadgen.c');

/** Compiles loadgen.c (once per source version) and returns the binary's path. */
export async function loadgenBinary(): Promise<string> {
  const hash = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 12);
  const dir = path.join(os.tmpdir(), 'edgemesh-bench');
  const bin = path.join(dir, `loadgen-${hash}`);
  if (existsSync(bin)) return bin;
  mkdirSync(dir, { recursive: true });
  const tmp = `${bin}.${process.pid}`;
  await execOk(['cc', '-O2', '-pthread', '-o', tmp, source], { timeoutMs: 60_000 });
  await execOk(['mv', tmp, bin]);
  return bin;
}

/** One request/response run: per-round-trip latencies in microseconds. */
export interface RrResult {
  count: number;
  seconds: number;
  samples: number[];
}

/** Connection-rate run: completed connect/request/close cycles. */
export interface ConnRateResult {
  connections: number;
  errors: number;
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
}

/** Many-connections run: how long opening them took and the request rate across all of them. */
export interface ConcurrentResult {
  established: number;
  failed: number;
  connectMs: number;
  requests: number;
  errors: number;
  seconds: number;
  perSecond: number;
  p50: number;
  p99: number;
}

async function runJson<T>(ns: Where, argv: string[], timeoutMs: number): Promise<T> {
  const r = await exec([await loadgenBinary(), ...argv], { ns, timeoutMs });
  if (r.code !== 0) throw new Error(`loadgen ${argv.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

/** COUNT round trips of SIZE bytes over one connection. */
export function rr(ns: Where, host: string, port: number, size: number, count: number): Promise<RrResult> {
  return runJson(ns, ['rr', host, String(port), String(size), String(count)], 60_000);
}

/** New connections per second for `seconds` with `threads` parallel clients. */
export function connRate(
  ns: Where,
  host: string,
  port: number,
  seconds: number,
  threads: number,
): Promise<ConnRateResult> {
  return runJson(
    ns,
    ['connrate', host, String(port), String(seconds), String(threads)],
    (seconds + 30) * 1000,
  );
}

/** Opens `conns` connections, then keeps one SIZE-byte request in flight on each for `seconds` (SIZE 0: holds them idle). */
export function concurrent(
  ns: Where,
  host: string,
  port: number,
  conns: number,
  seconds: number,
  size: number,
): Promise<ConcurrentResult> {
  return runJson(
    ns,
    ['concurrent', host, String(port), String(conns), String(seconds), String(size)],
    (seconds + 60) * 1000,
  );
}
