// The running pumps of one owner (an agent's tunnel, a relay): each gets the owner's idle timeout
// and one shared abort signal, its bytes are readable live (metrics read them at scrape time, so a
// long stream's counters move while it runs), and stop() drains them with a deadline, then aborts
// the rest, so no pump (and no dup'd fd in the native engine) outlives its owner.
import { setMaxListeners } from 'node:events';
import type net from 'node:net';
import { endedWithin } from '../util/deadline.ts';
import {
  type PumpBytes,
  type PumpCause,
  type PumpResult,
  type SealedKeys,
  type SpliceResult,
  startSealedPump,
  startSplicePump,
} from './sealed-pump.ts';

/** How the pumps of a set ended so far. */
export interface PumpOutcomes {
  finished: number;
  failed: number;
  idle: number;
  aborted: number;
}

interface Running<K> {
  key: K;
  live: (() => PumpBytes) | undefined;
  done: Promise<unknown>;
}

/** The running pumps of one owner, keyed (e.g. by path) for byte totals. */
export class PumpSet<K extends string = string> {
  private readonly running = new Set<Running<K>>();
  private readonly ended = new Map<K, PumpBytes>();
  private readonly stop = new AbortController();
  /** Counts by how each pump ended (finished cleanly, failed, idle timeout, aborted). */
  readonly outcomes: PumpOutcomes = { finished: 0, failed: 0, idle: 0, aborted: 0 };

  /** `idleTimeoutMs`: both directions idle this long closes a pump (0: never). */
  constructor(private readonly idleTimeoutMs: number) {
    // Every running pump listens on the one signal.
    setMaxListeners(0, this.stop.signal);
  }

  /** A sealed pump (startSealedPump) under `key`; its bytes: aToB = plain -> sealed. */
  sealed(
    key: K,
    plain: net.Socket,
    sealed: net.Socket,
    keys: SealedKeys,
    opts: { plainHead?: Buffer; sealedHead?: Buffer } = {},
  ): Promise<PumpResult> {
    return this.track(
      key,
      (lc) => startSealedPump(plain, sealed, keys, { ...opts, ...lc }),
      (r) => ({ aToB: r.plainToSealed, bToA: r.sealedToPlain }),
    );
  }

  /** A splice pump (startSplicePump) under `key`. */
  splice(
    key: K,
    a: net.Socket,
    b: net.Socket,
    opts: { aHead?: Buffer; bHead?: Buffer } = {},
  ): Promise<SpliceResult> {
    return this.track(
      key,
      (lc) => startSplicePump(a, b, { ...opts, ...lc }),
      (r) => r,
    );
  }

  /** Pumps running now. */
  get active(): number {
    return this.running.size;
  }

  /** Bytes per key: ended pumps plus what running ones moved so far (never goes down). */
  bytes(): Map<K, PumpBytes> {
    const out = new Map<K, PumpBytes>();
    for (const [k, b] of this.ended) out.set(k, { ...b });
    for (const r of this.running) {
      if (!r.live) continue;
      const b = r.live();
      const t = out.get(r.key) ?? { aToB: 0, bToA: 0 };
      t.aToB += b.aToB;
      t.bToA += b.bToA;
      out.set(r.key, t);
    }
    return out;
  }

  /**
   * Waits up to `deadlineMs` for the running pumps to end by themselves, then aborts the rest (both
   * sockets reset); resolves once every pump ended. Pumps started afterwards are aborted at once.
   */
  async drain(deadlineMs: number): Promise<{ drained: number; aborted: number }> {
    const waiting = [...this.running].map((r) => r.done);
    const late = !(await endedWithin(waiting, deadlineMs));
    const left = late ? this.running.size : 0;
    this.stop.abort();
    await Promise.all([...this.running].map((r) => r.done));
    return { drained: waiting.length - left, aborted: left };
  }

  private track<R extends { error?: string; cause?: PumpCause }>(
    key: K,
    start: (lc: {
      idleTimeoutMs: number;
      signal: AbortSignal;
      onLive: (live: () => PumpBytes) => void;
    }) => Promise<R>,
    bytesOf: (r: R) => PumpBytes,
  ): Promise<R> {
    const entry: Running<K> = { key, live: undefined, done: Promise.resolve() };
    this.running.add(entry);
    const done = start({
      idleTimeoutMs: this.idleTimeoutMs,
      signal: this.stop.signal,
      onLive: (live) => {
        entry.live = live;
      },
    }).then((r) => {
      this.running.delete(entry);
      const b = bytesOf(r);
      const t = this.ended.get(key) ?? { aToB: 0, bToA: 0 };
      t.aToB += b.aToB;
      t.bToA += b.bToA;
      this.ended.set(key, t);
      if (r.cause === 'idle') this.outcomes.idle++;
      else if (r.cause === 'aborted') this.outcomes.aborted++;
      else if (r.error !== undefined) this.outcomes.failed++;
      else this.outcomes.finished++;
      return r;
    });
    entry.done = done;
    return done;
  }
}
