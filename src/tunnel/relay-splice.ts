// The relay's stream forwarding: a stream one agent opened is spliced to a stream the relay opens
// on the target agent's session, frame by frame — DATA, WINDOW, CLOSE and RESET are re-sent with
// only the stream id rewritten. No per-stream Duplex, no re-chunking, no second flow-control loop:
// credit is end to end between the agents, and the relay only checks that nobody exceeds it.
import { encodeWindow, FrameError, FrameType } from './frames.ts';
import type { Session, StreamSink } from './session.ts';
import { DEFAULT_WINDOW } from './tunnel-stream.ts';

/** A running splice (both ends): when data last moved and when it ended (idle timeout, stop drain). */
export interface SpliceLife {
  last: number;
  ended: boolean;
  /** Called once when both ends closed or either was reset. */
  onEnd: (() => void) | undefined;
}

/** One side of a splice: frames arriving for `id` on `session` go out on the other side. */
export class SpliceEnd implements StreamSink {
  /** The far side (set by spliceStreams). */
  other!: SpliceEnd;
  /** Shared with the other end (set by spliceStreams). */
  life!: SpliceLife;
  /** Bytes the agent on this side may still send (the other side's receiver grants more). */
  private allowed = DEFAULT_WINDOW;
  private closedIn = false;

  constructor(
    readonly session: Session,
    readonly id: number,
    /** Counts bytes this side sent (metrics). */
    private readonly count: (bytes: number) => void,
  ) {}

  onData(payload: Buffer): void {
    if (this.closedIn) throw new FrameError(`DATA after CLOSE on stream ${this.id}`);
    this.allowed -= payload.length;
    // The sender is at fault, so its own session is closed (not the receiver's).
    if (this.allowed < 0) throw new FrameError(`stream ${this.id} exceeded its flow-control window`);
    this.count(payload.length);
    this.life.last = performance.now();
    this.other.session.send(FrameType.DATA, this.other.id, payload);
  }

  onWindow(increment: number): void {
    this.other.allowed += increment;
    if (this.other.allowed > 2 ** 31) throw new FrameError(`stream ${this.id} credit overflow`);
    this.other.session.send(FrameType.WINDOW, this.other.id, encodeWindow(increment));
  }

  onClose(): void {
    if (this.closedIn) return;
    this.closedIn = true;
    this.other.session.send(FrameType.CLOSE, this.other.id);
    if (this.other.closedIn) {
      this.session.forget(this.id);
      this.other.session.forget(this.other.id);
      this.ended();
    }
  }

  onReset(reason: string): void {
    this.session.forget(this.id);
    this.other.session.forget(this.other.id);
    this.other.session.send(FrameType.RESET, this.other.id, Buffer.from(reason.slice(0, 200)));
    this.ended();
  }

  /** Resets both agents' streams (relay idle timeout or stop deadline). */
  resetBoth(reason: string): void {
    if (this.life.ended) return;
    this.session.send(FrameType.RESET, this.id, Buffer.from(reason.slice(0, 200)));
    this.onReset(reason);
  }

  private ended(): void {
    if (this.life.ended) return;
    this.life.ended = true;
    this.life.onEnd?.();
  }
}

/** Links two ends so each forwards to the other; returns their shared life. */
export function spliceStreams(a: SpliceEnd, b: SpliceEnd): SpliceLife {
  a.other = b;
  b.other = a;
  const life: SpliceLife = { last: performance.now(), ended: false, onEnd: undefined };
  a.life = life;
  b.life = life;
  return life;
}
