// The sealed pump facade (issue 12, spec-sealed): forwards a plain socket <-> a sealed data
// connection (src/tunnel/sealed-records.ts format), and splices two raw sockets (the relay). The
// native addon runs them in its own epoll threads with no JS per byte; without the addon (or with
// EDGEMESH_SEALED_PUMP=ts) the TS twin below does the same with node:crypto.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import os from 'node:os';
import { Counter, type Registry } from 'prom-client';
import { errorMessage } from '../errors.ts';
import { loadNative, type NativeBinding, type NativePumpDone } from '../native/index.ts';
import {
  flushed,
  notHandable,
  resumeReading,
  socketFd,
  stopReading,
  takeBuffered,
} from '../util/socket-handoff.ts';
import { IV_BYTES, KEY_BYTES, SealedDecoder, SealedEncoder, SealedStreamError } from './sealed-records.ts';

/** Per-stream keys of one end: it seals with tx, opens with rx. */
export interface SealedKeys {
  txKey: Buffer;
  txIv: Buffer;
  rxKey: Buffer;
  rxIv: Buffer;
}

/** Why a pump was closed by us rather than by its sockets (both sockets are reset either way). */
export type PumpCause = 'idle' | 'aborted';

/** How a sealed pump ended; byte counts are plaintext bytes. */
export interface PumpResult {
  plainToSealed: number;
  sealedToPlain: number;
  error?: string;
  cause?: PumpCause;
}

/** How a splice pump ended. */
export interface SpliceResult {
  aToB: number;
  bToA: number;
  error?: string;
  cause?: PumpCause;
}

/** Bytes a pump moved so far each way (sealed: aToB = plain -> sealed). */
export interface PumpBytes {
  aToB: number;
  bToA: number;
}

/** Lifecycle options of both pumps, native and TS alike. */
export interface PumpLifecycle {
  /** Both directions idle this long (ms) -> both sockets reset, cause 'idle'; 0 or absent: never. */
  idleTimeoutMs?: number;
  /** Aborting resets both sockets at once (cause 'aborted'), also when it was aborted before the start. */
  signal?: AbortSignal;
  /** Called once the pump runs, with a live reader of the bytes it moved so far (for metrics). */
  onLive?: (live: () => PumpBytes) => void;
}

/** Which implementation runs and why ('native' | 'ts'); EDGEMESH_SEALED_PUMP=ts forces the TS twin. */
export function sealedPumpMode(): { mode: 'native' | 'ts'; reason: string } {
  if (process.env.EDGEMESH_SEALED_PUMP === 'ts')
    return { mode: 'ts', reason: 'forced by EDGEMESH_SEALED_PUMP=ts' };
  const { binding, reason } = loadNative();
  if (!binding) return { mode: 'ts', reason: `native addon unavailable: ${reason}` };
  if (typeof binding.sealedPumpStart !== 'function') {
    return { mode: 'ts', reason: 'the native addon was built without the sealed pump (rebuild it)' };
  }
  return { mode: 'native', reason: 'native pump threads (epoll; AES-256-GCM from the OpenSSL in node)' };
}

/** Counter names of sealedPumpCounters(), in the native engine's order (native/src/tunnel/pump_engine.h). */
export const PUMP_COUNTER_NAMES = [
  'sealed_started',
  'splice_started',
  'finished',
  'failed',
  'plain_to_sealed_bytes',
  'sealed_to_plain_bytes',
  'records_sealed',
  'records_opened',
  'auth_failures',
  'length_errors',
  'truncations',
  'after_end_errors',
  'splice_bytes',
  'idle_closes',
  'aborted',
] as const;
export type PumpCounterName = (typeof PUMP_COUNTER_NAMES)[number];

/** The counter each refusal of a sealed stream bumps. */
const FAILURE_COUNTER = {
  auth: 'auth_failures',
  length: 'length_errors',
  'after-end': 'after_end_errors',
  truncated: 'truncations',
} as const satisfies Record<SealedStreamError['reason'], PumpCounterName>;

/** What the TS twin counted in this thread (the native engine keeps its own). */
const tsCounters = Object.fromEntries(PUMP_COUNTER_NAMES.map((n) => [n, 0])) as Record<
  PumpCounterName,
  number
>;

/** Pump counters of this thread, native and TS pumps together (for metrics; read at scrape time). */
export function sealedPumpCounters(): Record<PumpCounterName, number> {
  const out = { ...tsCounters };
  const native = nativeEngine(false);
  if (native) {
    const raw = native.binding.pumpCounters();
    PUMP_COUNTER_NAMES.forEach((name, i) => {
      out[name] += raw[i] ?? 0;
    });
  }
  return out;
}

/** Name of the metric registerPumpMetrics adds (one series per PUMP_COUNTER_NAMES entry). */
export const PUMP_METRIC = 'edgemesh_tunnel_pump_events_total';

/** Exposes sealedPumpCounters() as `edgemesh_tunnel_pump_events_total{counter}`, read at scrape time; idempotent. */
export function registerPumpMetrics(registry: Registry): void {
  if (registry.getSingleMetric(PUMP_METRIC)) return;
  new Counter({
    name: PUMP_METRIC,
    help: 'Sealed and splice pump events and bytes of this process (native engine and TS twin together)',
    labelNames: ['counter'] as const,
    registers: [registry],
    // Plain numbers kept by the pumps, copied at scrape time: nothing per byte touches prom-client.
    collect() {
      this.reset();
      for (const [name, value] of Object.entries(sealedPumpCounters())) this.inc({ counter: name }, value);
    },
  });
}

/** Fresh random keys for one side of one stream. */
export function newSealedKeys(): SealedKeys {
  return {
    txKey: randomBytes(KEY_BYTES),
    txIv: randomBytes(IV_BYTES),
    rxKey: randomBytes(KEY_BYTES),
    rxIv: randomBytes(IV_BYTES),
  };
}

/** The peer's view of `k`: what one side sends with, the other receives with. */
export function mirrorKeys(k: SealedKeys): SealedKeys {
  return { txKey: k.rxKey, txIv: k.rxIv, rxKey: k.txKey, rxIv: k.txIv };
}

/**
 * Forwards plain <-> sealed until both directions end or one fails; takes ownership of both sockets
 * (they must be paused/not flowing; bytes already read off them go in the heads). Resolves, never rejects.
 */
export function startSealedPump(
  plain: net.Socket,
  sealed: net.Socket,
  keys: SealedKeys,
  opts: { plainHead?: Buffer; sealedHead?: Buffer } & PumpLifecycle = {},
): Promise<PumpResult> {
  const engine = sealedPumpMode().mode === 'native' ? nativeEngine(true) : undefined;
  const keyBuf = keyBuffer(keys);
  // Bad keys go to the twin, which refuses them with the reason.
  if (!engine || !keyBuf) return tsSealedPump(plain, sealed, keys, opts);
  const idleMs = opts.idleTimeoutMs ?? 0;
  return handOff(
    engine,
    plain,
    sealed,
    opts.plainHead,
    opts.sealedHead,
    (p, s, ph, sh) => engine.binding.sealedPumpStart(p, s, keyBuf, ph, sh, idleMs),
    (ph, sh) => tsSealedPump(plain, sealed, keys, { ...opts, plainHead: ph, sealedHead: sh }),
    opts,
  ).then((r) => ('id' in r ? withError({ plainToSealed: r.aToB, sealedToPlain: r.bToA }, r) : r));
}

/** Raw byte splice of two sockets both ways (the relay), native when available. Same ownership rules. */
export function startSplicePump(
  a: net.Socket,
  b: net.Socket,
  opts: { aHead?: Buffer; bHead?: Buffer } & PumpLifecycle = {},
): Promise<SpliceResult> {
  const engine = sealedPumpMode().mode === 'native' ? nativeEngine(true) : undefined;
  if (!engine) return tsSplicePump(a, b, opts);
  const idleMs = opts.idleTimeoutMs ?? 0;
  return handOff(
    engine,
    a,
    b,
    opts.aHead,
    opts.bHead,
    (x, y, xh, yh) => engine.binding.splicePumpStart(x, y, xh, yh, idleMs),
    (xh, yh) => tsSplicePump(a, b, { ...opts, aHead: xh, bHead: yh }),
    opts,
  ).then((r) => ('id' in r ? withError({ aToB: r.aToB, bToA: r.bToA }, r) : r));
}

function withError<T extends object>(r: T, done: NativePumpDone): T & { error?: string; cause?: PumpCause } {
  if (done.error === undefined) return r;
  return { ...r, error: done.error, ...(done.cause ? { cause: done.cause } : {}) };
}

/** txKey txIv rxKey rxIv back to back (the native layout), or undefined when a size is wrong. */
function keyBuffer(k: SealedKeys): Buffer | undefined {
  if (k.txKey.length !== KEY_BYTES || k.rxKey.length !== KEY_BYTES) return undefined;
  if (k.txIv.length !== IV_BYTES || k.rxIv.length !== IV_BYTES) return undefined;
  return Buffer.concat([k.txKey, k.txIv, k.rxKey, k.rxIv]);
}

interface NativeEngine {
  binding: NativeBinding;
  waiting: Map<number, (done: NativePumpDone) => void>;
}

let engineState: NativeEngine | undefined;

/** The native pump engine of this thread, started on first use (`start` false: only if running). */
function nativeEngine(start: boolean): NativeEngine | undefined {
  if (engineState || !start) return engineState;
  const { binding } = loadNative();
  if (!binding) return undefined;
  const waiting = new Map<number, (done: NativePumpDone) => void>();
  // Two threads at most: one stream needs one, and the machines we target have few cores.
  const threads = Math.max(1, Math.min(2, os.availableParallelism()));
  binding.pumpSetDone((batch) => {
    for (const done of batch) {
      const resolve = waiting.get(done.id);
      waiting.delete(done.id);
      resolve?.(done);
    }
  }, threads);
  engineState = { binding, waiting };
  return engineState;
}

/**
 * Moves two sockets into the native engine: their fds are dup'd natively, so destroying the JS
 * sockets afterwards closes only JS's descriptors (no FIN, no RST). Whatever JS already read
 * goes in the heads. When native code cannot take them, `twin` runs the TS pump instead.
 */
async function handOff<R>(
  engine: NativeEngine,
  x: net.Socket,
  y: net.Socket,
  xHead: Buffer | undefined,
  yHead: Buffer | undefined,
  start: (xFd: number, yFd: number, xh?: Buffer, yh?: Buffer) => number,
  twin: (xh?: Buffer, yh?: Buffer) => Promise<R>,
  lc: PumpLifecycle,
): Promise<R | NativePumpDone> {
  if (notHandable(x) ?? notHandable(y)) return twin(xHead, yHead);
  x.pause();
  y.pause();
  if (x.writableLength > 0 || y.writableLength > 0) {
    const [fx, fy] = await Promise.all([flushed(x), flushed(y)]);
    if (!fx || !fy || notHandable(x) || notHandable(y)) return twin(xHead, yHead);
  }
  // From here to the destroy everything is synchronous: libuv cannot read in between.
  stopReading(x);
  stopReading(y);
  const xh = takeBuffered(x, xHead);
  const yh = takeBuffered(y, yHead);
  // read() may have asked libuv to read again.
  stopReading(x);
  stopReading(y);
  let id: number;
  try {
    id = start(socketFd(x), socketFd(y), xh, yh);
  } catch {
    // dup or the engine failed (EMFILE ...): the twin carries this stream.
    resumeReading(x);
    resumeReading(y);
    return twin(xh, yh);
  }
  const done = new Promise<NativePumpDone>((resolve) => engine.waiting.set(id, resolve));
  x.destroy();
  y.destroy();
  const { binding } = engine;
  if (lc.onLive) {
    // Published by the pump thread once per turn; after the end the last reading stands (the
    // done report has the final counts).
    let last: PumpBytes = { aToB: 0, bToA: 0 };
    lc.onLive(() => {
      const p = binding.pumpProgress(id);
      if (p) last = { aToB: p[0] ?? 0, bToA: p[1] ?? 0 };
      return last;
    });
  }
  const { signal } = lc;
  if (signal) {
    const abort = () => binding.pumpAbort(id);
    if (signal.aborted) abort();
    else {
      signal.addEventListener('abort', abort, { once: true });
      void done.then(() => signal.removeEventListener('abort', abort));
    }
  }
  return done;
}

/**
 * Calls `onIdle` once nothing was `touch()`ed for `ms` (0/undefined: never): one timer re-armed
 * for the time left, so a busy stream pays a clock read per chunk, not a timer per chunk.
 */
function idleWatch(ms: number | undefined, onIdle: () => void): { touch(): void; stop(): void } {
  if (!ms || ms <= 0) return { touch() {}, stop() {} };
  let last = performance.now();
  let due = 0;
  let timer: NodeJS.Timeout | undefined;
  let recheck: NodeJS.Immediate | undefined;
  const arm = (delay: number) => {
    due = performance.now() + delay;
    timer = setTimeout(check, delay);
    timer.unref();
  };
  const check = () => {
    const now = performance.now();
    const left = last + ms - now;
    if (left > 0) arm(left);
    else if (now - due > ms / 2) {
      // Fired late: our own event loop stalled (GC, starved CPU) and bytes that arrived meanwhile
      // are still unread (timers run before I/O); judge once this turn's reads have run.
      recheck = setImmediate(() => {
        recheck = undefined;
        if (last + ms - performance.now() > 0) arm(last + ms - performance.now());
        else onIdle();
      });
    } else onIdle();
  };
  arm(ms);
  return {
    touch() {
      last = performance.now();
    },
    stop() {
      clearTimeout(timer);
      if (recheck) clearImmediate(recheck);
    },
  };
}

/** The counter a TS twin that ended with `r` bumps. */
function endCounter(r: { error?: string; cause?: PumpCause }): PumpCounterName {
  if (r.cause === 'idle') return 'idle_closes';
  if (r.cause === 'aborted') return 'aborted';
  return r.error === undefined ? 'finished' : 'failed';
}

/** Wires a twin's idle timeout, abort signal and live bytes; returns what its data handlers and end call. */
function twinLifecycle(
  lc: PumpLifecycle,
  live: () => PumpBytes,
  close: (why: string, cause: PumpCause) => void,
): { touch(): void; stop(): void } {
  const ms = lc.idleTimeoutMs;
  const idle = idleWatch(ms, () => close(`idle for ${ms} ms`, 'idle'));
  lc.onLive?.(live);
  const { signal } = lc;
  const abort = () => close('aborted', 'aborted');
  if (signal?.aborted) abort();
  else signal?.addEventListener('abort', abort, { once: true });
  return {
    touch: idle.touch,
    stop() {
      idle.stop();
      signal?.removeEventListener('abort', abort);
    },
  };
}

/** Resolves once both sockets have emitted 'close' (already-destroyed ones count at once). */
function bothClosed(a: net.Socket, b: net.Socket): Promise<void> {
  const closed = (s: net.Socket) =>
    new Promise<void>((resolve) => {
      if (s.closed) resolve();
      else s.once('close', () => resolve());
    });
  return Promise.all([closed(a), closed(b)]).then(() => undefined);
}

/**
 * Closes `s` with a RST. Once end() has shut its writing side down, libuv refuses the reset
 * (uv_tcp_close_reset after uv_shutdown: EINVAL) and Node then never emits 'close': a plain
 * destroy is all that is left (the FIN went out already).
 */
function resetSocket(s: net.Socket): void {
  if (s.destroyed) return;
  if (s.writableEnded) s.destroy();
  else s.resetAndDestroy();
}

/** Lets each readable side end alone: our pump decides when the writable side ends. */
function halfOpen(s: net.Socket): void {
  (s as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
}

/** Writes `data` to `to`; pauses `from` until `to` drains when its buffer is full. */
function forward(from: net.Socket, to: net.Socket, data: Buffer): void {
  if (!to.write(data)) {
    from.pause();
    to.once('drain', () => from.resume());
  }
}

/** The TS twin of the native sealed pump. */
function tsSealedPump(
  plain: net.Socket,
  sealed: net.Socket,
  keys: SealedKeys,
  opts: { plainHead?: Buffer; sealedHead?: Buffer } & PumpLifecycle,
): Promise<PumpResult> {
  const result: PumpResult = { plainToSealed: 0, sealedToPlain: 0 };
  tsCounters.sealed_started++;
  let life: { touch(): void; stop(): void } | undefined;
  const done = bothClosed(plain, sealed).then(() => {
    life?.stop();
    tsCounters[endCounter(result)]++;
    tsCounters.records_sealed += Number(enc?.records ?? 0n);
    tsCounters.records_opened += Number(dec?.records ?? 0n);
    return result;
  });
  // Keys are checked before anything flows: bad keys reset both sides like any other failure.
  let enc: SealedEncoder | undefined;
  let dec: SealedDecoder | undefined;
  const abort = (why: string, cause?: PumpCause) => {
    if (result.error === undefined) {
      result.error = why;
      if (cause) result.cause = cause;
    }
    // A reset, not a FIN: the far end must not take a cut stream for a complete one.
    resetSocket(plain);
    resetSocket(sealed);
  };
  const refuse = (err: unknown) => {
    if (err instanceof SealedStreamError) tsCounters[FAILURE_COUNTER[err.reason]]++;
    abort(errorMessage(err));
  };
  let e: SealedEncoder;
  let d: SealedDecoder;
  try {
    e = new SealedEncoder(keys.txKey, keys.txIv);
    d = new SealedDecoder(keys.rxKey, keys.rxIv);
  } catch (err) {
    abort(errorMessage(err));
    return done;
  }
  enc = e;
  dec = d;
  if (plain.destroyed || sealed.destroyed) {
    abort('socket already closed');
    return done;
  }
  halfOpen(plain);
  halfOpen(sealed);
  const lifecycle = twinLifecycle(
    opts,
    () => ({ aToB: result.plainToSealed, bToA: result.sealedToPlain }),
    abort,
  );
  life = lifecycle;

  const onPlain = (chunk: Buffer) => {
    if (sealed.destroyed) return;
    lifecycle.touch();
    result.plainToSealed += chunk.length;
    tsCounters.plain_to_sealed_bytes += chunk.length;
    forward(plain, sealed, e.seal(chunk));
  };
  const onSealed = (chunk: Buffer) => {
    if (plain.destroyed) return;
    lifecycle.touch();
    let step: ReturnType<SealedDecoder['push']>;
    try {
      step = d.push(chunk);
    } catch (err) {
      refuse(err);
      return;
    }
    for (const p of step.plain) {
      result.sealedToPlain += p.length;
      tsCounters.sealed_to_plain_bytes += p.length;
      forward(sealed, plain, p);
    }
    if (step.ended && !plain.writableEnded) plain.end();
  };
  plain.on('data', onPlain);
  const plainEnded = () => {
    if (!sealed.destroyed) sealed.end(e.end());
  };
  plain.on('end', plainEnded);
  sealed.on('data', onSealed);
  sealed.on('end', () => {
    try {
      d.finish();
    } catch (err) {
      refuse(err);
    }
  });
  plain.on('error', (err) => abort(`plain side: ${errorMessage(err)}`));
  sealed.on('error', (err) => abort(`sealed side: ${errorMessage(err)}`));
  // A close we did not cause (the owner destroyed a socket) must not leave the other open.
  plain.on('close', () => {
    if (!sealed.destroyed && !(plain.readableEnded && plain.writableFinished)) abort('plain side closed');
  });
  sealed.on('close', () => {
    if (!plain.destroyed && !(sealed.readableEnded && sealed.writableFinished)) abort('sealed side closed');
  });
  if (opts.plainHead && opts.plainHead.length > 0) onPlain(opts.plainHead);
  if (opts.sealedHead && opts.sealedHead.length > 0) onSealed(opts.sealedHead);
  // 'end' already emitted before we took over: it will not come again.
  if (plain.readableEnded) plainEnded();
  plain.resume();
  sealed.resume();
  return done;
}

/** The TS twin of the native splice pump. */
function tsSplicePump(
  a: net.Socket,
  b: net.Socket,
  opts: { aHead?: Buffer; bHead?: Buffer } & PumpLifecycle,
): Promise<SpliceResult> {
  const result: SpliceResult = { aToB: 0, bToA: 0 };
  tsCounters.splice_started++;
  let life: { touch(): void; stop(): void } | undefined;
  const done = bothClosed(a, b).then(() => {
    life?.stop();
    tsCounters[endCounter(result)]++;
    tsCounters.splice_bytes += result.aToB + result.bToA;
    return result;
  });
  const abort = (why: string, cause?: PumpCause) => {
    if (result.error === undefined) {
      result.error = why;
      if (cause) result.cause = cause;
    }
    resetSocket(a);
    resetSocket(b);
  };
  if (a.destroyed || b.destroyed) {
    abort('socket already closed');
    return done;
  }
  halfOpen(a);
  halfOpen(b);
  const lifecycle = twinLifecycle(opts, () => ({ aToB: result.aToB, bToA: result.bToA }), abort);
  life = lifecycle;
  const wire = (from: net.Socket, to: net.Socket, name: string, count: (n: number) => void) => {
    from.on('data', (chunk: Buffer) => {
      if (to.destroyed) return;
      lifecycle.touch();
      count(chunk.length);
      forward(from, to, chunk);
    });
    from.on('end', () => {
      if (!to.destroyed) to.end();
    });
    from.on('error', (err) => abort(`${name}: ${errorMessage(err)}`));
    from.on('close', () => {
      if (!to.destroyed && !(from.readableEnded && from.writableFinished)) abort(`${name} closed`);
    });
  };
  wire(a, b, 'a', (n) => {
    result.aToB += n;
  });
  wire(b, a, 'b', (n) => {
    result.bToA += n;
  });
  if (opts.aHead && opts.aHead.length > 0) {
    result.aToB += opts.aHead.length;
    b.write(opts.aHead);
  }
  if (opts.bHead && opts.bHead.length > 0) {
    result.bToA += opts.bHead.length;
    a.write(opts.bHead);
  }
  // 'end' already emitted before we took over: it will not come again.
  if (a.readableEnded) b.end();
  if (b.readableEnded) a.end();
  a.resume();
  b.resume();
  return done;
}
