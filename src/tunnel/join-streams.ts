// Joins two duplex streams both ways with backpressure and half-close; an error or reset on one
// side aborts the other (a TunnelStream is reset, a socket destroyed).
import type { Duplex } from 'node:stream';
import type { StreamSet } from './stream-set.ts';
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

/**
 * joinStreams(a, b) as one stream of `set` (idle timeout, drain): activity is a chunk read on either
 * side, an abort resets a TunnelStream and destroys a socket.
 */
export function joinTracked(set: StreamSet, a: Duplex, b: Duplex): Promise<void> {
  let last = performance.now();
  if (set.idleTimeoutMs > 0) {
    const touch = () => {
      last = performance.now();
    };
    a.on('data', touch);
    b.on('data', touch);
  }
  const stream = {
    lastActive: () => last,
    abort: (reason: string) => {
      abort(a, reason);
      abort(b, reason);
    },
  };
  return set.track(stream, () => joinStreams(a, b));
}
