// The way back (issue 6): once a protocol handler has made its L7 decision and would start a plain
// byte tunnel (websocket after the upgrade request, https passthrough after the ClientHello), the
// pair leaves JS and the native plane forwards it with splice. The plane dup()s both fds, so
// destroying the JS sockets afterwards closes only JS's descriptors: no FIN or RST reaches anyone.
import type net from 'node:net';
import { loadNative, type NativeBinding } from '../../native/index.ts';
import { setTunnelOffload, type TunnelOffload } from '../../protocols/tcp.ts';
import type { CounterRow } from './counters.ts';

/** How long pending JS writes may take to reach the kernel before the pair stays in JS. */
export const FLUSH_TIMEOUT_MS = 2000;

/** What the offload reports (a worker's counters, a test's spy). */
export interface SpliceBackEvents {
  handedBack(): void;
  /** The pair stays in the JS tunnel; `reason` for the debug log. */
  fallback(reason: string): void;
}

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
function fdOf(socket: net.Socket): number {
  const fd = handleOf(socket)?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** libuv stops reading: nothing more lands in JS buffers (synchronous; the next tick may restart it). */
function stopReading(socket: net.Socket): void {
  const h = handleOf(socket);
  if (!h?.readStop) return;
  h.reading = false;
  h.readStop();
}

/**
 * Undoes stopReading for the JS tunnel. Needed: read() may have left the stream waiting for a push
 * from libuv (its own `reading` flag set), and it would wait forever with libuv stopped.
 */
function resumeReading(socket: net.Socket): void {
  const h = handleOf(socket);
  if (!h?.readStart || h.reading || socket.destroyed) return;
  h.reading = true;
  h.readStart();
}

/** Everything JS has read from `socket` and not yet handed on. */
function takeBuffered(socket: net.Socket): Buffer {
  const chunks: Buffer[] = [];
  for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) chunks.push(c);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** Resolves true when every byte written to `socket` has reached the kernel, false on timeout/close. */
function flushed(socket: net.Socket): Promise<boolean> {
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

function usable(socket: net.Socket): string | undefined {
  if (socket.destroyed) return 'destroyed';
  if (socket.connecting) return 'connecting';
  if (fdOf(socket) < 0) return 'no fd';
  const state = (socket as unknown as { _readableState?: { ended?: boolean } })._readableState;
  // EOF already read into JS: the native side could not learn it from the socket any more.
  if (state?.ended || socket.readableEnded) return 'eof already read';
  if (socket.writableEnded) return 'already ended';
  return undefined;
}

/** The offload that gives tunnels to native plane `planeId` (tcp.ts setTunnelOffload). */
export function createSpliceBack(
  binding: NativeBinding,
  planeId: number,
  events: SpliceBackEvents,
): TunnelOffload {
  return (client, upstream, join, onClose) => {
    const stay = (reason: string) => {
      events.fallback(reason);
      join();
    };
    const early = usable(client) ?? usable(upstream);
    if (early) {
      stay(early);
      return;
    }
    // Nothing flows while the writes already made (peeked bytes, the request head) reach the kernel.
    client.pause();
    upstream.pause();
    void Promise.all([flushed(client), flushed(upstream)]).then(([a, b]) => {
      if (client.destroyed || upstream.destroyed) {
        // One side went away meanwhile: close the other like the tunnel would have.
        client.destroy();
        upstream.destroy();
        onClose?.();
        return;
      }
      const why = !a || !b ? 'writes did not flush' : (usable(client) ?? usable(upstream));
      if (why) {
        stay(why);
        return;
      }
      // From here to the destroy everything is synchronous: libuv cannot read in between.
      stopReading(client);
      stopReading(upstream);
      const toUpstream = takeBuffered(client);
      const toClient = takeBuffered(upstream);
      // read() may have asked libuv to read again.
      stopReading(client);
      stopReading(upstream);
      let taken = false;
      let reason = 'plane refused (stopping)';
      try {
        taken = binding.planeSplicePair(
          planeId,
          fdOf(client),
          fdOf(upstream),
          toUpstream.length > 0 ? toUpstream : undefined,
          toClient.length > 0 ? toClient : undefined,
        );
      } catch (err) {
        reason = err instanceof Error ? err.message : String(err);
      }
      if (!taken) {
        // The bytes taken out go first, in order, then the JS tunnel carries on.
        if (toUpstream.length > 0) upstream.write(toUpstream);
        if (toClient.length > 0) client.write(toClient);
        resumeReading(client);
        resumeReading(upstream);
        stay(reason);
        return;
      }
      events.handedBack();
      client.destroy();
      upstream.destroy();
      onClose?.();
    });
  };
}

/** Installs the offload for this worker thread; false (nothing installed) without the addon. */
export function installSpliceBack(planeId: number, counters: CounterRow): boolean {
  const { binding } = loadNative();
  if (!binding) return false;
  setTunnelOffload(
    createSpliceBack(binding, planeId, {
      handedBack: () => counters.add('handed_back'),
      fallback: () => counters.add('hand_back_fallbacks'),
    }),
  );
  return true;
}
