// TCP building blocks the protocol handlers share: connect to a balancer's endpoint (a refused or
// timed-out endpoint is reported to the balancer and the next one tried), and join two sockets.
import net from 'node:net';
import type { Endpoint } from '../controller/types.ts';
import { type Balancer, CONNECT_FAILURE, endpointKey, type PickContext } from '../lb/index.ts';

/** Connect limits. */
export interface ConnectOptions {
  connectTimeoutMs: number;
  /** Different endpoints tried before giving up. */
  maxAttempts: number;
}

/** Defaults when the data plane does not say otherwise. */
export const DEFAULT_CONNECT: ConnectOptions = { connectTimeoutMs: 5000, maxAttempts: 3 };

/** A connected upstream and the endpoint it goes to (its pick is still in flight). */
export interface Upstream {
  socket: net.Socket;
  endpoint: Endpoint;
}

/** The client's IP without the IPv4-mapped prefix. */
export function clientIp(socket: net.Socket): string {
  const ip = socket.remoteAddress ?? '';
  return ip.startsWith('::ffff:') ? ip.slice(7) : ip;
}

/** Opens one TCP connection with a timeout; resolves undefined on failure. */
export function connectOnce(ep: Endpoint, timeoutMs: number): Promise<net.Socket | undefined> {
  return new Promise((resolve) => {
    const s = net.connect({ host: ep.ip, port: ep.port, allowHalfOpen: true, noDelay: true });
    const timer = setTimeout(() => {
      s.destroy();
      resolve(undefined);
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.removeAllListeners('error');
      resolve(s);
    });
    s.once('error', () => {
      clearTimeout(timer);
      resolve(undefined);
    });
  });
}

/**
 * Picks and connects, trying up to maxAttempts endpoints. Failed connects are reported to the
 * balancer (passive ejection); the successful pick stays in flight until the caller reports it.
 */
export async function connectUpstream(
  balancer: Balancer,
  ctx: PickContext,
  opts: ConnectOptions = DEFAULT_CONNECT,
): Promise<Upstream | undefined> {
  const tried = new Set<string>();
  for (let attempt = 0; attempt < opts.maxAttempts; attempt++) {
    const endpoint = balancer.pick(ctx, tried);
    if (!endpoint) return undefined;
    tried.add(endpointKey(endpoint));
    const socket = await connectOnce(endpoint, opts.connectTimeoutMs);
    if (socket) return { socket, endpoint };
    balancer.onResult?.(endpoint, false, CONNECT_FAILURE);
  }
  return undefined;
}

/**
 * Joins two connected sockets (both allowHalfOpen): bytes both ways with backpressure, FIN passed
 * on, an error on either side destroys both. `onClose` runs once when both are closed. Returns the
 * function that destroys both (for callers that close the pair themselves, e.g. on idle).
 */
export function tunnel(client: net.Socket, upstream: net.Socket, onClose?: () => void): () => void {
  const destroyBoth = () => {
    client.destroy();
    upstream.destroy();
  };
  client.on('error', destroyBoth);
  upstream.on('error', destroyBoth);
  if (tunnelOffload) {
    // The data plane may forward the pair itself (native splice); it joins them here if it cannot.
    tunnelOffload(client, upstream, () => joinSockets(client, upstream, onClose), onClose);
    return destroyBoth;
  }
  joinSockets(client, upstream, onClose);
  return destroyBoth;
}

/**
 * Takes a joined pair out of JS (the data plane's way back to native forwarding). It owns both
 * sockets: either it forwards them elsewhere and calls `onClose` once they left JS, or it calls
 * `join` (the plain JS tunnel) when it cannot.
 */
export type TunnelOffload = (
  client: net.Socket,
  upstream: net.Socket,
  join: () => void,
  onClose?: () => void,
) => void;

let tunnelOffload: TunnelOffload | undefined;

/** Installs (or with undefined removes) this thread's tunnel offload. */
export function setTunnelOffload(offload: TunnelOffload | undefined): void {
  tunnelOffload = offload;
}

function joinSockets(client: net.Socket, upstream: net.Socket, onClose?: () => void): void {
  // With half-open allowed, pipe() ends the other side's writable when one side sends FIN, and a
  // socket closes only when both directions are done.
  client.pipe(upstream);
  upstream.pipe(client);
  let closed = 0;
  const onOneClosed = () => {
    closed++;
    if (closed === 2) onClose?.();
  };
  client.once('close', onOneClosed);
  upstream.once('close', onOneClosed);
  client.resume();
}
