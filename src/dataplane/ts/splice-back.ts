// The way back (issue 6): once a protocol handler has made its L7 decision and would start a plain
// byte tunnel (websocket after the upgrade request, https passthrough after the ClientHello), the
// pair leaves JS and the native plane forwards it with splice. The plane dup()s both fds, so
// destroying the JS sockets afterwards closes only JS's descriptors: no FIN or RST reaches anyone.
import { loadNative, type NativeBinding } from '../../native/index.ts';
import { setTunnelOffload, type TunnelOffload } from '../../protocols/tcp.ts';
import {
  flushed,
  notHandable,
  resumeReading,
  socketFd,
  stopReading,
  takeBuffered,
} from '../../util/socket-handoff.ts';
import type { CounterRow } from './counters.ts';

/** What the offload reports (a worker's counters, a test's spy). */
export interface SpliceBackEvents {
  handedBack(): void;
  /** The pair stays in the JS tunnel; `reason` for the debug log. */
  fallback(reason: string): void;
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
    const early = notHandable(client) ?? notHandable(upstream);
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
      const why = !a || !b ? 'writes did not flush' : (notHandable(client) ?? notHandable(upstream));
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
        taken = binding.planeSplicePair(planeId, socketFd(client), socketFd(upstream), toUpstream, toClient);
      } catch (err) {
        reason = err instanceof Error ? err.message : String(err);
      }
      if (!taken) {
        // The bytes taken out go first, in order, then the JS tunnel carries on.
        if (toUpstream) upstream.write(toUpstream);
        if (toClient) client.write(toClient);
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
