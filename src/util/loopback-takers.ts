// In-process loopback listeners that also take connections as bare fds. The tunnel gives each
// remote endpoint a 127.0.0.1:P port of its own; the native plane, when a route's endpoints are
// such ports, hands the accepted client socket itself to TS with 127.0.0.1:P as its destination
// instead of splicing it into a second loopback connection to P (one TCP leg and one splice less
// per byte). The data plane finds the owner of P here without importing the tunnel (imports flow
// one way). Ports are this process's bound ports, so one map per process cannot collide.
import net from 'node:net';

/** Serves a connection given as a paused net.Socket, as if its listener had accepted it. */
export type LoopbackTaker = (socket: net.Socket) => void;

const takers = new Map<number, LoopbackTaker>();

/** Registers the owner of 127.0.0.1:`port` (replaces an earlier one); returns the unregister function. */
export function registerLoopbackTaker(port: number, take: LoopbackTaker): () => void {
  takers.set(port, take);
  return () => {
    if (takers.get(port) === take) takers.delete(port);
  };
}

/** True when 127.0.0.1:`port` has a taker in this process. */
export function hasLoopbackTaker(port: number): boolean {
  return takers.has(port);
}

/**
 * Gives `fd` (a connected TCP socket, owned by the caller until this returns true) to the owner of
 * 127.0.0.1:`port`, wrapped in a paused net.Socket; false (fd untouched) when nobody owns the port.
 */
export function takeLoopbackFd(port: number, fd: number): boolean {
  const take = takers.get(port);
  if (!take) return false;
  // pauseOnCreate (untyped, what net.Server's pauseOnConnect uses): nothing is read into JS, so
  // a pump that takes the fd next finds every client byte still in the kernel.
  const opts = { fd, allowHalfOpen: true, readable: true, writable: true, pauseOnCreate: true };
  const socket = new net.Socket(opts as net.SocketConstructorOpts);
  take(socket);
  return true;
}
