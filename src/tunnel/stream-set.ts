// The running framed streams of one owner under the same rule as sealed pumps: both directions idle
// for `idleTimeoutMs` ends a stream (0: never), and drain() lets them finish up to a deadline, then
// aborts the rest. One mechanism for the agent's joins (socket <-> tunnel stream) and the relay's
// splices (tunnel stream <-> tunnel stream); what "activity" and "abort" mean is the stream's.
import { endedWithin } from '../util/deadline.ts';

/** How the streams of a set ended so far. */
export interface StreamOutcomes {
  finished: number;
  idle: number;
  aborted: number;
}

/** One stream as the set sees it. */
export interface TrackedStream {
  /** performance.now() of its last activity in either direction. */
  lastActive(): number;
  /** Ends it now on both sides, with `reason` for the peers and logs. */
  abort(reason: string): void;
}

interface Running {
  stream: TrackedStream;
  cause: 'idle' | 'aborted' | undefined;
  timer: NodeJS.Timeout | undefined;
  done: Promise<void>;
}

/** The running streams of one owner (an agent's tunnel, a relay). */
export class StreamSet {
  private readonly running = new Set<Running>();
  private stopping = false;
  /** Counts by how each stream ended (by its ends, idle timeout, aborted by the drain). */
  readonly outcomes: StreamOutcomes = { finished: 0, idle: 0, aborted: 0 };

  constructor(
    /** Both directions idle this long ends a stream; 0 = never. */
    readonly idleTimeoutMs: number,
    /** The abort reason once the owner is stopping, e.g. 'relay stopping'. */
    private readonly stopReason: string,
  ) {}

  /** Streams running now. */
  get active(): number {
    return this.running.size;
  }

  /**
   * Runs `start` (it resolves when the stream ended, however) under the set's idle timeout and
   * drain; after drain() ended, aborts `stream` at once instead of starting it.
   */
  track(stream: TrackedStream, start: () => Promise<void>): Promise<void> {
    if (this.stopping) {
      this.outcomes.aborted++;
      stream.abort(this.stopReason);
      return Promise.resolve();
    }
    const r: Running = { stream, cause: undefined, timer: undefined, done: Promise.resolve() };
    if (this.idleTimeoutMs > 0) {
      // The stream stamps its activity; the timer re-arms for the rest of the window when early.
      const check = () => {
        const left = stream.lastActive() + this.idleTimeoutMs - performance.now();
        if (left > 0) {
          r.timer = setTimeout(check, left + 1);
          r.timer.unref();
          return;
        }
        r.cause ??= 'idle';
        stream.abort('idle timeout');
      };
      r.timer = setTimeout(check, this.idleTimeoutMs);
      r.timer.unref();
    }
    this.running.add(r);
    r.done = start().then(() => {
      clearTimeout(r.timer);
      this.running.delete(r);
      if (r.cause === 'idle') this.outcomes.idle++;
      else if (r.cause === 'aborted') this.outcomes.aborted++;
      else this.outcomes.finished++;
    });
    return r.done;
  }

  /**
   * Waits up to `deadlineMs` for the running streams to end by themselves, then aborts the rest;
   * resolves once every stream ended. Streams tracked afterwards are aborted at once.
   */
  async drain(deadlineMs: number): Promise<{ drained: number; aborted: number }> {
    const waiting = [...this.running].map((r) => r.done);
    const late = !(await endedWithin(waiting, deadlineMs));
    this.stopping = true;
    const left = [...this.running];
    for (const r of left) {
      r.cause ??= 'aborted';
      r.stream.abort(this.stopReason);
    }
    await Promise.all(left.map((r) => r.done));
    return { drained: waiting.length - (late ? left.length : 0), aborted: late ? left.length : 0 };
  }
}
