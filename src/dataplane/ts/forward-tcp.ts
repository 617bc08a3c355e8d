// The plain TCP forwarder of the TS data plane: pick an endpoint, connect (with a timeout, retrying
// a refused endpoint on another one before the client sees an error), then pipe both ways with
// backpressure and half-close, closing both sides after an idle timeout.
import net from 'node:net';
import type { Endpoint } from '../../controller/types.ts';
import { type Balancer, CONNECT_FAILURE } from '../../lb/index.ts';
import { clientIp, tunnel } from '../../protocols/tcp.ts';
import type { CounterRow } from './counters.ts';
import type { WorkerSettings } from './messages.ts';

/**
 * Connects to an endpoint chosen by `balancer`, trying up to `maxAttempts` different endpoints
 * when a connect fails or times out; resolves with the connected socket, or undefined when none worked.
 */
export async function connectUpstream(
  balancer: Balancer,
  clientIp: string,
  settings: Pick<WorkerSettings, 'connectTimeoutMs' | 'maxConnectAttempts'>,
  counters?: CounterRow,
): Promise<{ socket: net.Socket; endpoint: Endpoint } | undefined> {
  const tried = new Set<string>();
  for (let attempt = 0; attempt < settings.maxConnectAttempts; attempt++) {
    const endpoint = balancer.pick({ clientIp }, tried);
    if (!endpoint) break;
    tried.add(`${endpoint.ip}:${endpoint.port}`);
    if (attempt > 0) counters?.add('connect_retries');
    const socket = await new Promise<net.Socket | undefined>((resolve) => {
      const s = net.connect({ host: endpoint.ip, port: endpoint.port, allowHalfOpen: true });
      const timer = setTimeout(() => {
        counters?.add('connect_timeouts');
        s.destroy();
        resolve(undefined);
      }, settings.connectTimeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        resolve(s);
      });
      s.once('error', () => {
        clearTimeout(timer);
        counters?.add('connect_errors');
        resolve(undefined);
      });
    });
    balancer.onResult?.(endpoint, socket !== undefined, socket ? undefined : CONNECT_FAILURE);
    if (socket) return { socket, endpoint };
  }
  return undefined;
}

/** Joins two connected sockets: bytes both ways with backpressure, FIN passed on, errors close both. */
export function splice(
  client: net.Socket,
  upstream: net.Socket,
  idleTimeoutMs: number,
  counters?: CounterRow,
): void {
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    counters?.add('connections_active', -1);
    counters?.add('bytes_from_clients', client.bytesRead);
    counters?.add('bytes_to_clients', client.bytesWritten);
  };
  const destroyBoth = tunnel(client, upstream);
  // A clean close means both directions finished on both sockets (the other one closes by itself);
  // resets and errors reach destroyBoth through 'error'.
  client.on('close', finish);
  if (idleTimeoutMs > 0) {
    // Timers reset on reads and writes of each socket; a connection idle both ways is closed.
    let idleSides = 0;
    const onTimeout = () => {
      idleSides++;
      if (idleSides >= 2) {
        counters?.add('idle_timeouts');
        destroyBoth();
      }
    };
    const onActive = () => {
      idleSides = 0;
    };
    client.setTimeout(idleTimeoutMs, onTimeout);
    upstream.setTimeout(idleTimeoutMs, onTimeout);
    client.on('data', onActive);
    upstream.on('data', onActive);
  }
}

/** Forwards one accepted client connection (paused on accept) to an endpoint of `balancer`. */
export async function forwardTcp(
  client: net.Socket,
  balancer: Balancer,
  settings: WorkerSettings,
  counters?: CounterRow,
): Promise<void> {
  counters?.add('connections_total');
  counters?.add('connections_active');
  client.on('error', () => {});
  const up = await connectUpstream(balancer, clientIp(client), settings, counters);
  if (!up || client.destroyed) {
    if (!up) counters?.add('no_endpoint');
    up?.socket.destroy();
    counters?.add('connections_active', -1);
    // A reset tells the client at once that nothing serves this port (like a refused connect).
    client.resetAndDestroy();
    return;
  }
  splice(client, up.socket, settings.idleTimeoutMs, counters);
}
