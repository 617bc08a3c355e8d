// Joins two duplex streams both ways with backpressure and half-close; an error or reset on one
// side aborts the other (a TunnelStream is reset, a socket destroyed).
import type { Duplex } from 'node:stream';
import { endedWithin } from '../util/deadline.ts';
import { TunnelStream } from './tunnel-stream.ts';

function abort(s: Duplex, reason: string): void {
  if (s.destroyed) return;
  if (s instanceof TunnelStream) s.reset(reason);
  else s.destroy();
}

/** Pipes a→b and b→a; resolves when both are closed. */
export function joinStreams(a: Duplex, b: Duplex): Promise<void> {
  a.pipe(b);
  b.pipe(a);
  const closed = (s: Duplex) =>
    new Promise<void>((resolve) => (s.destroyed ? resolve() : s.once('close', () => resolve())));
  a.on('error', (err) => abort(b, err.message));
  b.on('error', (err) => abort(a, err.message));
  // A side closed without a clean end in both directions takes the other down too.
  a.once('close', () => {
    if (!(a.readableEnded && a.writableFinished)) abort(b, 'peer aborted');
  });
  b.once('close', () => {
    if (!(b.readableEnded && b.writableFinished)) abort(a, 'peer aborted');
  });
  return Promise.all([closed(a), closed(b)]).then(() => undefined);
}

/** How the joins of a set ended so far. */
export interface JoinOutcomes {
  finished: number;
  idle: number;
  aborted: number;
}

interface Joined {
  a: Duplex;
  b: Duplex;
  last: number;
  timer: NodeJS.Timeout | undefined;
  done: Promise<void>;
  /** Aborts both sides now (drain deadline). */
  abortNow: () => void;
}

/**
 * The running framed joins of one owner (an agent's tunnel): the same rule as sealed pumps — both
 * directions idle for `idleTimeoutMs` closes a join (0: never), and drain() lets them finish up to a
 * deadline, then aborts the rest (a TunnelStream is reset, a socket destroyed).
 */
export class StreamJoins {
  private readonly running = new Set<Joined>();
  private stopping = false;
  /** Counts by how each join ended (cleanly or by error, idle timeout, aborted by drain). */
  readonly outcomes: JoinOutcomes = { finished: 0, idle: 0, aborted: 0 };

  constructor(private readonly idleTimeoutMs: number) {}

  /** Joins running now. */
  get active(): number {
    return this.running.size;
  }

  /** joinStreams(a, b) under the set's idle timeout and drain; after drain() ended, aborts at once. */
  join(a: Duplex, b: Duplex): Promise<void> {
    if (this.stopping) {
      this.outcomes.aborted++;
      abort(a, 'tunnel stopping');
      abort(b, 'tunnel stopping');
      return Promise.resolve();
    }
    let cause: 'idle' | 'aborted' | undefined;
    const j: Joined = {
      a,
      b,
      last: performance.now(),
      timer: undefined,
      done: Promise.resolve(),
      abortNow: () => {
        cause ??= 'aborted';
        abort(a, 'tunnel stopping');
        abort(b, 'tunnel stopping');
      },
    };
    if (this.idleTimeoutMs > 0) {
      // A timestamp per chunk; the timer re-arms for the rest of the idle window when it fires early.
      const touch = () => {
        j.last = performance.now();
      };
      a.on('data', touch);
      b.on('data', touch);
      const check = () => {
        const left = j.last + this.idleTimeoutMs - performance.now();
        if (left > 0) {
          j.timer = setTimeout(check, left + 1);
          j.timer.unref();
          return;
        }
        cause ??= 'idle';
        abort(a, 'idle timeout');
        abort(b, 'idle timeout');
      };
      j.timer = setTimeout(check, this.idleTimeoutMs);
      j.timer.unref();
    }
    this.running.add(j);
    j.done = joinStreams(a, b).then(() => {
      clearTimeout(j.timer);
      this.running.delete(j);
      if (cause === 'idle') this.outcomes.idle++;
      else if (cause === 'aborted') this.outcomes.aborted++;
      else this.outcomes.finished++;
    });
    return j.done;
  }

  /**
   * Waits up to `deadlineMs` for the running joins to end by themselves, then aborts the rest;
   * resolves once every join ended. Joins started afterwards are aborted at once.
   */
  async drain(deadlineMs: number): Promise<{ drained: number; aborted: number }> {
    const waiting = [...this.running].map((j) => j.done);
    const late = !(await endedWithin(waiting, deadlineMs));
    this.stopping = true;
    const left = [...this.running];
    for (const j of left) j.abortNow();
    await Promise.all(left.map((j) => j.done));
    return { drained: waiting.length - (late ? left.length : 0), aborted: late ? left.length : 0 };
  }
}
