// The sealed pump facade (issue 12, spec-sealed): forwards a plain socket <-> a sealed data
// connection (src/tunnel/sealed-records.ts format), and splices two raw sockets (the relay). The
// native addon runs them in its own epoll threads with no JS per byte; without the addon (or with
// EDGEMESH_SEALED_PUMP=ts) the TS twin below does the same with node:crypto.
import { randomBytes } from 'node:crypto';
import type net from 'node:net';
import { errorMessage } from '../errors.ts';
import { IV_BYTES, KEY_BYTES, SealedDecoder, SealedEncoder } from './sealed-records.ts';

/** Per-stream keys of one end: it seals with tx, opens with rx. */
export interface SealedKeys {
  txKey: Buffer;
  txIv: Buffer;
  rxKey: Buffer;
  rxIv: Buffer;
}

/** How a sealed pump ended; byte counts are plaintext bytes. */
export interface PumpResult {
  plainToSealed: number;
  sealedToPlain: number;
  error?: string;
}

/** How a splice pump ended. */
export interface SpliceResult {
  aToB: number;
  bToA: number;
  error?: string;
}

/** Which implementation runs and why ('native' | 'ts'); EDGEMESH_SEALED_PUMP=ts forces the TS twin. */
export function sealedPumpMode(): { mode: 'native' | 'ts'; reason: string } {
  if (process.env.EDGEMESH_SEALED_PUMP === 'ts')
    return { mode: 'ts', reason: 'forced by EDGEMESH_SEALED_PUMP=ts' };
  return { mode: 'ts', reason: 'the native addon has no sealed pump yet' };
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
  opts: { plainHead?: Buffer; sealedHead?: Buffer } = {},
): Promise<PumpResult> {
  return tsSealedPump(plain, sealed, keys, opts);
}

/** Raw byte splice of two sockets both ways (the relay), native when available. Same ownership rules. */
export function startSplicePump(
  a: net.Socket,
  b: net.Socket,
  opts: { aHead?: Buffer; bHead?: Buffer } = {},
): Promise<SpliceResult> {
  return tsSplicePump(a, b, opts);
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
  opts: { plainHead?: Buffer; sealedHead?: Buffer },
): Promise<PumpResult> {
  const result: PumpResult = { plainToSealed: 0, sealedToPlain: 0 };
  const done = bothClosed(plain, sealed).then(() => result);
  // Keys are checked before anything flows: bad keys reset both sides like any other failure.
  let enc: SealedEncoder;
  let dec: SealedDecoder;
  const abort = (why: string) => {
    result.error ??= why;
    // A reset, not a FIN: the far end must not take a cut stream for a complete one.
    if (!plain.destroyed) plain.resetAndDestroy();
    if (!sealed.destroyed) sealed.resetAndDestroy();
  };
  try {
    enc = new SealedEncoder(keys.txKey, keys.txIv);
    dec = new SealedDecoder(keys.rxKey, keys.rxIv);
  } catch (err) {
    abort(errorMessage(err));
    return done;
  }
  if (plain.destroyed || sealed.destroyed) {
    abort('socket already closed');
    return done;
  }
  halfOpen(plain);
  halfOpen(sealed);

  const onPlain = (chunk: Buffer) => {
    if (sealed.destroyed) return;
    result.plainToSealed += chunk.length;
    forward(plain, sealed, enc.seal(chunk));
  };
  const onSealed = (chunk: Buffer) => {
    if (plain.destroyed) return;
    let step: ReturnType<SealedDecoder['push']>;
    try {
      step = dec.push(chunk);
    } catch (err) {
      abort(errorMessage(err));
      return;
    }
    for (const p of step.plain) {
      result.sealedToPlain += p.length;
      forward(sealed, plain, p);
    }
    if (step.ended && !plain.writableEnded) plain.end();
  };
  plain.on('data', onPlain);
  plain.on('end', () => {
    if (!sealed.destroyed) sealed.end(enc.end());
  });
  sealed.on('data', onSealed);
  sealed.on('end', () => {
    try {
      dec.finish();
    } catch (err) {
      abort(errorMessage(err));
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
  plain.resume();
  sealed.resume();
  return done;
}

/** The TS twin of the native splice pump. */
function tsSplicePump(
  a: net.Socket,
  b: net.Socket,
  opts: { aHead?: Buffer; bHead?: Buffer },
): Promise<SpliceResult> {
  const result: SpliceResult = { aToB: 0, bToA: 0 };
  const done = bothClosed(a, b).then(() => result);
  const abort = (why: string) => {
    result.error ??= why;
    if (!a.destroyed) a.resetAndDestroy();
    if (!b.destroyed) b.resetAndDestroy();
  };
  if (a.destroyed || b.destroyed) {
    abort('socket already closed');
    return done;
  }
  halfOpen(a);
  halfOpen(b);
  const wire = (from: net.Socket, to: net.Socket, name: string, count: (n: number) => void) => {
    from.on('data', (chunk: Buffer) => {
      if (to.destroyed) return;
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
  a.resume();
  b.resume();
  return done;
}
