// The relay's running framed splices under the same rule as its sealed pumps: both directions idle
// for `idleTimeoutMs` resets both agents' streams (0: never), and drain() lets them finish up to a
// deadline, then resets the rest — so a relay stop does not cut framed streams at once.
import { endedWithin } from '../util/deadline.ts';
import type { SpliceEnd } from './relay-splice.ts';

/** How the splices of a set ended so far. */
export interface SpliceOutcomes {
  finished: number;
  idle: number;
  aborted: number;
}

interface Tracked {
  end: SpliceEnd;
  cause: 'idle' | 'aborted' | undefined;
  timer: NodeJS.Timeout | undefined;
  done: Promise<void>;
}

/** The running framed splices of one relay. */
export class SpliceSet {
  private readonly running = new Set<Tracked>();
  private stopping = false;
  /** Counts by how each splice ended (by the agents, idle timeout, reset by the drain). */
  readonly outcomes: SpliceOutcomes = { finished: 0, idle: 0, aborted: 0 };

  constructor(private readonly idleTimeoutMs: number) {}

  /** Splices running now. */
  get active(): number {
    return this.running.size;
  }

  /** Tracks the splice `end` belongs to (after spliceStreams); after drain() ended, resets it at once. */
  add(end: SpliceEnd): void {
    if (this.stopping) {
      this.outcomes.aborted++;
      end.resetBoth('relay stopping');
      return;
    }
    const t: Tracked = { end, cause: undefined, timer: undefined, done: Promise.resolve() };
    t.done = new Promise<void>((resolve) => {
      end.life.onEnd = () => {
        clearTimeout(t.timer);
        this.running.delete(t);
        if (t.cause === 'idle') this.outcomes.idle++;
        else if (t.cause === 'aborted') this.outcomes.aborted++;
        else this.outcomes.finished++;
        resolve();
      };
    });
    this.running.add(t);
    if (this.idleTimeoutMs > 0) {
      // The ends stamp each DATA frame; the timer re-arms for the rest of the window when early.
      const check = () => {
        const left = end.life.last + this.idleTimeoutMs - performance.now();
        if (left > 0) {
          t.timer = setTimeout(check, left + 1);
          t.timer.unref();
          return;
        }
        t.cause ??= 'idle';
        end.resetBoth('idle timeout');
      };
      t.timer = setTimeout(check, this.idleTimeoutMs);
      t.timer.unref();
    }
  }

  /**
   * Waits up to `deadlineMs` for the running splices to end by themselves, then resets the rest;
   * resolves once every splice ended. Splices added afterwards are reset at once.
   */
  async drain(deadlineMs: number): Promise<{ drained: number; aborted: number }> {
    const waiting = [...this.running].map((t) => t.done);
    const late = !(await endedWithin(waiting, deadlineMs));
    this.stopping = true;
    const left = [...this.running];
    for (const t of left) {
      t.cause ??= 'aborted';
      t.end.resetBoth('relay stopping');
    }
    await Promise.all(left.map((t) => t.done));
    return { drained: waiting.length - (late ? left.length : 0), aborted: late ? left.length : 0 };
  }
}
