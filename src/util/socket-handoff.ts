// Taking a connected net.Socket away from libuv so native code can own its fd: the native side
// dup()s the fd, JS stops reading first and hands over whatever it already read, and destroying
// the JS socket afterwards closes only JS's descriptor (no FIN or RST reaches anyone). Used by the
// native plane's way back (dataplane/ts/splice-back.ts) and the tunnel's sealed pump.
import type net from 'node:net';

/** How long pending JS writes may take to reach the kernel before a hand-off gives up. */
export const FLUSH_TIMEOUT_MS = 2000;

interface StreamHandle {
  fd?: number;
  reading?: boolean;
  readStop?: () => number;
  readStart?: () => number;
}

function handleOf(socket: net.Socket): StreamHandle | undefined {
  return (socket as unknown as { _handle?: StreamHandle | null })._handle ?? undefined;
}

/** The kernel fd behind a connected TCP socket, or -1. */
export function socketFd(socket: net.Socket): number {
  const fd = handleOf(socket)?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** libuv stops reading: nothing more lands in JS buffers (synchronous; the next tick may restart it). */
export function stopReading(socket: net.Socket): void {
  const h = handleOf(socket);
  if (!h?.readStop) return;
  h.reading = false;
  h.readStop();
}

/**
 * Undoes stopReading when the socket stays in JS after all. Needed: read() may have left the
 * stream waiting for a push from libuv (its own `reading` flag set), and it would wait forever
 * with libuv stopped.
 */
export function resumeReading(socket: net.Socket): void {
  const h = handleOf(socket);
  if (!h?.readStart || h.reading || socket.destroyed) return;
  h.reading = true;
  h.readStart();
}

/** `head`, then everything JS has read from `socket` and not handed on; undefined when nothing. */
export function takeBuffered(socket: net.Socket, head?: Buffer): Buffer | undefined {
  const chunks: Buffer[] = head && head.length > 0 ? [head] : [];
  for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) chunks.push(c);
  if (chunks.length === 0) return undefined;
  return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks);
}

/** Why native code cannot take `socket` over (its EOF or state lives only in JS), or undefined. */
export function notHandable(socket: net.Socket): string | undefined {
  if (socket.destroyed) return 'destroyed';
  if (socket.connecting) return 'connecting';
  if (socketFd(socket) < 0) return 'no fd';
  const state = (socket as unknown as { _readableState?: { ended?: boolean } })._readableState;
  // EOF already read into JS: the native side could not learn it from the socket any more.
  if (state?.ended || socket.readableEnded) return 'eof already read';
  if (socket.writableEnded) return 'already ended';
  return undefined;
}

/** Resolves true when every byte written to `socket` reached the kernel, false on close/timeout. */
export function flushed(socket: net.Socket): Promise<boolean> {
  if (socket.writableLength === 0) return Promise.resolve(true);
  // 'drain' fires only after a write that returned false, so look again each millisecond (rare:
  // writes to a connected socket usually complete at once).
  const deadline = Date.now() + FLUSH_TIMEOUT_MS;
  return new Promise((resolve) => {
    const check = () => {
      if (socket.destroyed) resolve(false);
      else if (socket.writableLength === 0) resolve(true);
      else if (Date.now() > deadline) resolve(false);
      else setTimeout(check, 1);
    };
    check();
  });
}
