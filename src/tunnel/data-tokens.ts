// The tokens a tunnel listener expects on sealed data connections. A token is registered when its
// SEALED_OPEN is sent or received over an authenticated session, used once, and forgotten after a
// few seconds. A data connection may arrive before its token is registered (it travels on a
// different connection than the SEALED_OPEN), so an unknown token waits briefly before it is
// refused. Refusals close the connection with one log line and proxy nothing.
import type net from 'node:net';
import { ErrorCode } from '../errors.ts';
import type { Logger } from '../util/log.ts';
import { checkDataProof, DATA_HELLO_BYTES, parseDataHello } from './data-hello.ts';

/**
 * What a claimed token hands its owner: the data connection, paused, with any bytes that came
 * after the hello still in its read buffer (take them with takeBuffered() right before the pump).
 */
export type DataClaim = (socket: net.Socket) => void;

/**
 * Takes the bytes a paused socket holds in its read buffer (they go to the pump as its head).
 * Returns undefined when the socket already ended with nothing buffered: its 'end' event is gone,
 * so a pump would never see it (the stream was cut before a single record).
 */
export function takeBuffered(s: net.Socket): Buffer | undefined {
  if (s.readableEnded || s.destroyed) return undefined;
  // read() on an empty buffer would start the socket reading into JS: only drain what is there.
  const parts: Buffer[] = [];
  while (s.readableLength > 0) {
    const c = s.read() as Buffer | null;
    if (c === null) break;
    parts.push(c);
  }
  return Buffer.concat(parts);
}

interface Expected {
  proofKey: Buffer;
  onClaim: DataClaim;
  onExpire: () => void;
  timer: NodeJS.Timeout;
}

interface Waiting {
  socket: net.Socket;
  token: Buffer;
  proof: Buffer;
  timer: NodeJS.Timeout;
}

export interface DataTokensOptions {
  log: Logger;
  /** How long a registered token stays valid (ms). */
  ttlMs?: number;
  /** How long a connection with a not-yet-registered token waits for it (ms; default ttl / 4). */
  waitMs?: number;
  /** At most this many connections wait for their token at once (the rest are refused). */
  maxWaiting?: number;
  /** How long a connection may take to send its whole hello (ms). */
  helloTimeoutMs?: number;
}

/** Counts of what the registry did, for metrics and tests. */
export interface DataTokenStats {
  claimed: number;
  rejected: number;
  expired: number;
}

/** The listener's table of expected data connections. */
export class DataTokens {
  private readonly expected = new Map<string, Expected>();
  private readonly waiting = new Map<string, Waiting>();
  private readonly reading = new Set<net.Socket>();
  readonly stats: DataTokenStats = { claimed: 0, rejected: 0, expired: 0 };

  constructor(private readonly o: DataTokensOptions) {}

  /**
   * Expects one data connection presenting `token`, proven with `proofKey` (the dialer's txKey):
   * `onClaim` gets it, or `onExpire` runs when none came in time. Returns a cancel function.
   */
  expect(
    token: Buffer,
    proofKey: Buffer,
    onClaim: DataClaim,
    onExpire: () => void,
    ttlMs = this.o.ttlMs ?? 5000,
  ): () => void {
    const key = token.toString('hex');
    const timer = setTimeout(() => {
      if (this.expected.get(key)?.timer !== timer) return;
      this.expected.delete(key);
      this.stats.expired++;
      onExpire();
    }, ttlMs);
    timer.unref();
    this.expected.set(key, { proofKey, onClaim, onExpire, timer });
    const w = this.waiting.get(key);
    if (w) {
      this.waiting.delete(key);
      clearTimeout(w.timer);
      this.present(w.socket, w.token, w.proof);
    }
    return () => {
      const e = this.expected.get(key);
      if (e?.timer === timer) {
        clearTimeout(timer);
        this.expected.delete(key);
      }
    };
  }

  /**
   * Takes a connection whose first bytes (`first`, already read off it) start a data hello; reads
   * the rest of the hello and hands the connection to the token's owner, or refuses it.
   */
  accept(socket: net.Socket, first: Buffer): void {
    // Its end must wait for the pump: a socket that is not half-open answers the peer's FIN with
    // its own the moment 'end' fires (a short stream's FIN can arrive while it waits here).
    (socket as unknown as { allowHalfOpen: boolean }).allowHalfOpen = true;
    let got = first;
    this.reading.add(socket);
    const timer = setTimeout(
      () => done(undefined, 'no complete data hello in time'),
      this.o.helloTimeoutMs ?? 5000,
    );
    timer.unref();
    const onData = (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= DATA_HELLO_BYTES) done(got);
    };
    const onEnd = () => done(undefined, 'closed before the data hello was complete');
    const done = (hello: Buffer | undefined, error?: string) => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onEnd);
      this.reading.delete(socket);
      if (!hello) {
        this.refuse(socket, error ?? 'bad data hello');
        return;
      }
      // Nothing more is read here: the pump takes the socket over from this point. Bytes past
      // the hello go back into the read buffer, which also keeps 'end' from firing before the
      // pump listens (it fires only once the buffer is drained).
      socket.pause();
      const parsed = parseDataHello(hello);
      if ('error' in parsed) {
        this.refuse(socket, parsed.error);
        return;
      }
      if (hello.length > DATA_HELLO_BYTES) socket.unshift(hello.subarray(DATA_HELLO_BYTES));
      this.present(socket, parsed.token, parsed.proof);
    };
    socket.on('error', () => {});
    if (got.length >= DATA_HELLO_BYTES) {
      done(got);
      return;
    }
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onEnd);
    socket.resume();
  }

  /** Refuses everything pending (listener closing). */
  close(): void {
    for (const e of this.expected.values()) clearTimeout(e.timer);
    this.expected.clear();
    for (const w of this.waiting.values()) {
      clearTimeout(w.timer);
      w.socket.destroy();
    }
    this.waiting.clear();
    for (const s of this.reading) s.destroy();
    this.reading.clear();
  }

  private present(socket: net.Socket, token: Buffer, proof: Buffer): void {
    const key = token.toString('hex');
    const e = this.expected.get(key);
    if (!e) {
      if (this.waiting.has(key) || this.waiting.size >= (this.o.maxWaiting ?? 256)) {
        this.refuse(socket, 'unknown or expired token');
        return;
      }
      const timer = setTimeout(
        () => {
          if (this.waiting.get(key)?.socket !== socket) return;
          this.waiting.delete(key);
          this.refuse(socket, 'unknown or expired token');
        },
        this.o.waitMs ?? (this.o.ttlMs ?? 5000) / 4,
      );
      timer.unref();
      this.waiting.set(key, { socket, token, proof, timer });
      // A waiting connection that goes away is forgotten at once.
      socket.once('close', () => {
        const w = this.waiting.get(key);
        if (w?.socket === socket) {
          clearTimeout(w.timer);
          this.waiting.delete(key);
        }
      });
      return;
    }
    // A bad proof does not use the token up: whoever read it cannot deny the real dialer.
    if (!checkDataProof(token, proof, e.proofKey)) {
      this.refuse(socket, 'bad proof (the dialer does not hold the stream keys)');
      return;
    }
    clearTimeout(e.timer);
    this.expected.delete(key);
    this.stats.claimed++;
    e.onClaim(socket);
  }

  private refuse(socket: net.Socket, reason: string): void {
    this.stats.rejected++;
    this.o.log.warn(
      { code: ErrorCode.TUNNEL, peer: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`, reason },
      'tunnel: data connection rejected',
    );
    socket.destroy();
  }
}
