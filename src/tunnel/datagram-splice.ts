// The relay's datagram flow forwarding: a flow one agent opened (DGRAM_OPEN) is joined to a flow
// the relay opens on the target agent's session; each DGRAM is re-sent whole with only the stream
// id rewritten, and RESET ends both halves. A target session that is backed up drops the datagram
// (counted) instead of queueing it: UDP senders expect loss, not an unbounded relay buffer.
import { FrameError, FrameType } from './frames.ts';
import type { Session, StreamSink } from './session.ts';

/** What a datagram splice half reports per datagram it was sent. */
export interface DatagramSpliceCounts {
  /** A datagram of `bytes` forwarded to the other half. */
  forwarded(bytes: number): void;
  /** A datagram dropped because the other half's session was backed up. */
  dropped(): void;
}

/** One half of a datagram splice: DGRAMs arriving for `id` on `session` go out on the other half. */
export class DatagramSpliceEnd implements StreamSink {
  /** The other half (set by spliceDatagrams). */
  other!: DatagramSpliceEnd;

  constructor(
    readonly session: Session,
    readonly id: number,
    private readonly counts: DatagramSpliceCounts,
    private readonly backlogBytes: number,
  ) {}

  onDatagram(payload: Buffer): void {
    const to = this.other.session;
    if (to.unsent > this.backlogBytes) {
      this.counts.dropped();
      return;
    }
    this.counts.forwarded(payload.length);
    to.send(FrameType.DGRAM, this.other.id, payload);
  }

  onReset(reason: string): void {
    this.session.forget(this.id);
    this.other.session.forget(this.other.id);
    this.other.session.send(FrameType.RESET, this.other.id, Buffer.from(reason.slice(0, 200)));
  }

  onData(): void {
    throw new FrameError(`DATA on datagram flow ${this.id}`);
  }
  onWindow(): void {
    throw new FrameError(`WINDOW on datagram flow ${this.id}`);
  }
  onClose(): void {
    throw new FrameError(`CLOSE on datagram flow ${this.id}`);
  }
}

/** Links two halves so each forwards to the other. */
export function spliceDatagrams(a: DatagramSpliceEnd, b: DatagramSpliceEnd): void {
  a.other = b;
  b.other = a;
}
