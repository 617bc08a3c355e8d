// The relay's stream forwarding: a stream one agent opened is spliced to a stream the relay opens
// on the target agent's session, frame by frame — DATA, WINDOW, CLOSE and RESET are re-sent with
// only the stream id rewritten. No per-stream Duplex, no re-chunking, no second flow-control loop:
// credit is end to end between the agents, and the relay only checks that nobody exceeds it.
import { encodeWindow, FrameError, FrameType } from './frames.ts';
import type { Session, StreamSink } from './session.ts';
import { DEFAULT_WINDOW } from './tunnel-stream.ts';

/** One side of a splice: frames arriving for `id` on `session` go out on the other side. */
export class SpliceEnd implements StreamSink {
  /** The far side (set by spliceStreams). */
  other!: SpliceEnd;
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
    }
  }

  onReset(reason: string): void {
    this.session.forget(this.id);
    this.other.session.forget(this.other.id);
    this.other.session.send(FrameType.RESET, this.other.id, Buffer.from(reason.slice(0, 200)));
  }
}

/** Links two ends so each forwards to the other. */
export function spliceStreams(a: SpliceEnd, b: SpliceEnd): void {
  a.other = b;
  b.other = a;
}
