// The control side of one sealed stream on a tunnel session: after SEALED_OPEN its bytes travel on
// a data connection, so the session only carries a RESET when setting it up fails. Once the pump
// runs, the stream id is forgotten (the data connection carries end and abort from then on).

import { FrameError, FrameType } from './frames.ts';
import type { Session, StreamSink } from './session.ts';

/** The session-side sink of a sealed stream: any frame but RESET is a protocol error. */
export class SealedControl implements StreamSink {
  private over = false;

  constructor(
    private readonly session: Session,
    readonly id: number,
    /** Called once when the far end resets the stream (or its session dies) before finish(). */
    private readonly onAbort: (reason: string) => void,
  ) {}

  /** True once the stream is reset or handed to its data connection. */
  get closed(): boolean {
    return this.over;
  }

  onData(): void {
    throw new FrameError(`DATA on sealed stream ${this.id}`);
  }

  onWindow(): void {
    throw new FrameError(`WINDOW on sealed stream ${this.id}`);
  }

  onClose(): void {
    throw new FrameError(`CLOSE on sealed stream ${this.id}`);
  }

  onReset(reason: string): void {
    if (this.over) return;
    this.over = true;
    this.session.forget(this.id);
    this.onAbort(reason);
  }

  /** Tells the far end setting up failed (once; not after finish or a RESET from it). */
  reset(reason: string): void {
    if (this.over) return;
    this.over = true;
    this.session.forget(this.id);
    this.session.send(FrameType.RESET, this.id, Buffer.from(reason.slice(0, 200)));
  }

  /** The data connection took over: the session forgets the stream. */
  finish(): void {
    if (this.over) return;
    this.over = true;
    this.session.forget(this.id);
  }
}
