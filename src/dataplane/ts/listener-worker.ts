// A listener worker (one piscina thread): owns a set of per-service-port listeners and their
// connections. The main thread tells it which ports to listen on and what they route to; the
// worker only forwards. The piscina task runs until the main thread says stop.
import fs from 'node:fs';
import net from 'node:net';
import { createBalancer, type ServiceBalancer } from '../../lb/index.ts';
import { serviceLabel, threadProtocolMetrics } from '../../protocols/protocol-metrics.ts';
import { setTunnelOffload } from '../../protocols/tcp.ts';
import { UdpProxy } from '../../protocols/udp-proxy.ts';
import { CounterRow } from './counters.ts';
import { forwardTcp } from './forward-tcp.ts';
import { handlerFor, loadHandlerModules } from './handlers.ts';
import type { FromWorker, ListenerRoute, ToWorker, WorkerTask } from './messages.ts';
import { installSpliceBack } from './splice-back.ts';

interface Listener {
  /** TCP ports: the listening server. */
  server?: net.Server;
  /** UDP ports: per-client flows (src/protocols/udp-proxy.ts). */
  udp?: UdpProxy;
  route: ListenerRoute;
  balancer: ServiceBalancer;
  sockets: Set<net.Socket>;
}

/** The piscina task: serves listeners until a `stop` message arrives; resolves when all are closed. */
export default async function runListenerWorker(task: WorkerTask): Promise<{ index: number }> {
  const { port, settings } = task;
  const counters = new CounterRow(task.counters, task.index);
  const listeners = new Map<number, Listener>();
  // Protocol/outlier metrics of this thread; the main thread sums every worker's at scrape time.
  const metrics = threadProtocolMetrics();
  await loadHandlerModules(settings.handlerModules);
  // Byte tunnels the handlers start go back to the native plane when there is one.
  if (settings.nativePlaneId) installSpliceBack(settings.nativePlaneId, counters);

  const onConnection = (listener: Listener, client: net.Socket) => {
    listener.sockets.add(client);
    client.once('close', () => listener.sockets.delete(client));
    const { service, port: servicePort } = listener.route;
    const handler = handlerFor(servicePort.appProtocol);
    if (handler) {
      try {
        client.resume();
        handler(client, service, servicePort, listener.balancer);
      } catch {
        counters.add('handler_errors');
        client.destroy();
      }
      return;
    }
    void forwardTcp(client, listener.balancer, settings, counters);
  };

  // UDP flows end when idle like conntrack entries: the TCP idle timeout, at most 2 minutes.
  const udpIdleMs = Math.min(settings.idleTimeoutMs > 0 ? settings.idleTimeoutMs : 120_000, 120_000);

  /**
   * IPv6 routes listen on `::` (their own port; REDIRECT delivers to the incoming interface's
   * address, ::1 for local clients), or on ::1 when the plane is told to stay on loopback.
   */
  const hostOf = (route: ListenerRoute) =>
    route.family !== 6 ? settings.listenHost : settings.listenHost === '127.0.0.1' ? '::1' : '::';

  const openUdp = async (route: ListenerRoute): Promise<Listener> => {
    const balancer = createBalancer(route.service, route.port, { nodeName: settings.nodeName });
    const udp = new UdpProxy(balancer, {
      host: hostOf(route),
      port: route.listenPort,
      idleTimeoutMs: udpIdleMs,
      maxFlows: 65_536,
      metrics: { metrics, service: serviceLabel(route.service, route.port) },
    });
    await udp.start();
    metrics.trackBalancer(serviceLabel(route.service, route.port), balancer);
    return { udp, route, balancer, sockets: new Set() };
  };

  const open = (route: ListenerRoute): Promise<Listener> =>
    route.port.protocol === 'UDP' ? openUdp(route) : openTcp(route);

  const openTcp = (route: ListenerRoute): Promise<Listener> =>
    new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true });
      const listener: Listener = {
        server,
        route,
        balancer: createBalancer(route.service, route.port, { nodeName: settings.nodeName }),
        sockets: new Set(),
      };
      server.on('connection', (client) => onConnection(listener, client));
      server.once('error', reject);
      const host = hostOf(route);
      server.listen({ port: route.listenPort, host, ipv6Only: host === '::', backlog: 1024 }, () => {
        server.off('error', reject);
        // Later errors (EMFILE on accept ...) must not kill the worker.
        server.on('error', () => counters.add('handler_errors'));
        metrics.trackBalancer(serviceLabel(route.service, route.port), listener.balancer);
        resolve(listener);
      });
    });

  const close = (listener: Listener) => {
    // Established connections keep running (like a removed iptables rule); only new ones stop.
    listener.server?.close();
    void listener.udp?.stop();
    metrics.untrackBalancer(serviceLabel(listener.route.service, listener.route.port), listener.balancer);
  };

  const update = async (msg: Extract<ToWorker, { type: 'update' }>) => {
    for (const p of msg.removes) {
      const l = listeners.get(p);
      if (l) close(l);
      listeners.delete(p);
    }
    const failed: Array<{ listenPort: number; code: string; message: string }> = [];
    await Promise.all(
      msg.upserts.map(async (route) => {
        const existing = listeners.get(route.listenPort);
        if (existing) {
          existing.route = route;
          existing.balancer.update(route.service, route.port);
          return;
        }
        try {
          listeners.set(route.listenPort, await open(route));
        } catch (err) {
          const e = err as NodeJS.ErrnoException;
          failed.push({ listenPort: route.listenPort, code: e.code ?? 'ERROR', message: e.message });
        }
      }),
    );
    const reply: FromWorker = { type: 'updated', id: msg.id, failed };
    port.postMessage(reply);
  };

  // The same path as a connection accepted here (handlers, forwarding, counters).
  const adopt = (listenPort: number, fd: number) => {
    const listener = listeners.get(listenPort);
    if (!listener?.server) {
      fs.closeSync(fd);
      return;
    }
    // pauseOnCreate (untyped, what net.Server's pauseOnConnect uses): paused like an accepted socket.
    const opts = { fd, allowHalfOpen: true, readable: true, writable: true, pauseOnCreate: true };
    const client = new net.Socket(opts as net.SocketConstructorOpts);
    listener.server.emit('connection', client);
  };

  await new Promise<void>((resolve) => {
    let queue = Promise.resolve();
    port.on('message', (msg: ToWorker) => {
      if (msg.type === 'stop') {
        queue = queue.then(() => {
          for (const l of listeners.values()) {
            close(l);
            for (const s of l.sockets) s.destroy();
          }
          listeners.clear();
          setTunnelOffload(undefined);
          port.close();
          resolve();
        });
        return;
      }
      if (msg.type === 'metrics') {
        // Answered at once (not queued behind updates): a scrape must not wait for a sync.
        void metrics.registry.getMetricsAsJSON().then((values) => {
          const reply: FromWorker = { type: 'metrics', id: msg.id, metrics: values };
          port.postMessage(reply);
        });
        return;
      }
      if (msg.type === 'adopt') {
        // After the updates before it: the listener it names may be in one of them.
        queue = queue.then(() => adopt(msg.listenPort, msg.fd));
        return;
      }
      // Updates apply in order, one at a time.
      queue = queue.then(() => update(msg));
    });
    const ready: FromWorker = { type: 'ready' };
    port.postMessage(ready);
  });
  return { index: task.index };
}
