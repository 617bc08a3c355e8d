// UDP services: one listening socket per service port; each client address gets a flow — its own
// upstream socket connected to one endpoint — that lives until it is idle for `idleTimeoutMs`
// (like conntrack's UDP timeout). Replies go back from the listening socket to the client.
// An ICMP "port unreachable" from the endpoint ends the flow and is reported to the balancer, so
// the client's next datagram goes to another endpoint.
import dgram from 'node:dgram';
import type { Endpoint } from '../controller/types.ts';
import { type Balancer, CONNECT_FAILURE } from '../lb/index.ts';
import type { ProtocolMetrics } from './protocol-metrics.ts';

/** Where to listen and how long flows live. */
export interface UdpProxyOptions {
  host: string;
  /** 0 = any free port (see address()). */
  port: number;
  idleTimeoutMs: number;
  /** Flows at once; datagrams of new clients beyond it are dropped. */
  maxFlows: number;
  /** Where flows and bytes are counted, under label `service` (`namespace/name:port`). */
  metrics?: { metrics: ProtocolMetrics; service: string };
}

interface Flow {
  upstream: dgram.Socket;
  /** The listening socket the client's datagrams arrive on (replies leave from it). */
  via: dgram.Socket;
  endpoint: Endpoint;
  timer: NodeJS.Timeout;
  ready: boolean;
  /** Datagrams that arrived before the upstream socket was connected. */
  queue: Buffer[];
}

/** A UDP proxy for one service port. */
export class UdpProxy {
  private socket: dgram.Socket | undefined;
  /** 127.0.0.1 twin of a wildcard listener (see start()). */
  private loopback: dgram.Socket | undefined;
  private readonly flows = new Map<string, Flow>();
  readonly stats = { flows: 0, datagramsIn: 0, datagramsOut: 0, dropped: 0 };
  // Label children resolved once: the per-datagram path only adds numbers.
  private readonly m:
    | {
        active: { inc(): void; dec(): void };
        created: { inc(): void };
        expired: { inc(): void };
        bytesIn: { inc(n: number): void };
        bytesOut: { inc(n: number): void };
      }
    | undefined;

  constructor(
    private balancer: Balancer,
    private readonly opts: UdpProxyOptions,
  ) {
    const pm = opts.metrics;
    if (pm) {
      const { metrics, service } = pm;
      this.m = {
        active: metrics.udpFlowsActive.labels(service),
        created: metrics.udpFlowsCreated.labels(service),
        expired: metrics.udpFlowsExpired.labels(service),
        bytesIn: metrics.udpBytes.labels(service, 'from_client'),
        bytesOut: metrics.udpBytes.labels(service, 'to_client'),
      };
    }
  }

  /** Binds the listening socket. */
  async start(): Promise<void> {
    const family = this.opts.host.includes(':') ? 'udp6' : 'udp4';
    // An OUTPUT-chain REDIRECT sends a local client's datagram to 127.0.0.1:port, and conntrack
    // un-NATs the reply only if it leaves from 127.0.0.1. A wildcard socket's reply takes the
    // route's source address instead (10.x), so the client never sees it. A second socket bound to
    // 127.0.0.1 receives exactly those datagrams (the more specific bind wins) and answers from
    // the right address; SO_REUSEADDR lets both share the port.
    // The same for IPv6: an ip6 OUTPUT REDIRECT sends to ::1.
    const wildcard = this.opts.host === '0.0.0.0' || this.opts.host === '::';
    this.socket = await this.bind(family, this.opts.port, this.opts.host, wildcard);
    const loopback = family === 'udp6' ? '::1' : '127.0.0.1';
    if (wildcard) this.loopback = await this.bind(family, this.address().port, loopback, true);
  }

  private async bind(
    type: 'udp4' | 'udp6',
    port: number,
    host: string,
    reuseAddr: boolean,
  ): Promise<dgram.Socket> {
    const socket = dgram.createSocket({ type, reuseAddr });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, host, () => {
        socket.off('error', reject);
        resolve();
      });
    });
    // Errors after bind (e.g. send to a vanished client) must not end the proxy.
    socket.on('error', () => {});
    socket.on('message', (msg, rinfo) => this.onClientDatagram(msg, rinfo, socket));
    return socket;
  }

  /** The bound address. */
  address(): { address: string; port: number } {
    const a = this.socket!.address();
    return { address: a.address, port: a.port };
  }

  /** Replaces the balancer (new snapshot); existing flows keep their endpoint. */
  setBalancer(balancer: Balancer): void {
    this.balancer = balancer;
  }

  /** Number of live flows. */
  get flowCount(): number {
    return this.flows.size;
  }

  /** Closes the listener and every flow. */
  async stop(): Promise<void> {
    for (const key of [...this.flows.keys()]) this.endFlow(key, true);
    const sockets = [this.socket, this.loopback];
    this.socket = undefined;
    this.loopback = undefined;
    for (const s of sockets) if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  private onClientDatagram(msg: Buffer, rinfo: dgram.RemoteInfo, via: dgram.Socket): void {
    this.stats.datagramsIn++;
    this.m?.bytesIn.inc(msg.length);
    const key = `${rinfo.address}|${rinfo.port}`;
    let flow = this.flows.get(key);
    if (!flow) {
      flow = this.openFlow(key, rinfo, via);
      if (!flow) {
        this.stats.dropped++;
        return;
      }
    }
    flow.timer.refresh();
    if (!flow.ready) flow.queue.push(msg);
    else flow.upstream.send(msg);
  }

  private openFlow(key: string, rinfo: dgram.RemoteInfo, via: dgram.Socket): Flow | undefined {
    if (this.flows.size >= this.opts.maxFlows) return undefined;
    const clientIp = rinfo.address.startsWith('::ffff:') ? rinfo.address.slice(7) : rinfo.address;
    const endpoint = this.balancer.pick({ clientIp });
    if (!endpoint) return undefined;
    const upstream = dgram.createSocket({ type: endpoint.ip.includes(':') ? 'udp6' : 'udp4' });
    const flow: Flow = {
      upstream,
      via,
      endpoint,
      ready: false,
      queue: [],
      timer: setTimeout(() => {
        this.m?.expired.inc();
        this.endFlow(key, true);
      }, this.opts.idleTimeoutMs),
    };
    flow.timer.unref();
    this.flows.set(key, flow);
    this.stats.flows++;
    this.m?.created.inc();
    this.m?.active.inc();
    upstream.on('message', (reply) => {
      flow.timer.refresh();
      this.stats.datagramsOut++;
      this.m?.bytesOut.inc(reply.length);
      if (this.socket) flow.via.send(reply, rinfo.port, rinfo.address);
    });
    // On a connected UDP socket an ICMP port unreachable surfaces as ECONNREFUSED.
    upstream.on('error', () => this.endFlow(key, false));
    upstream.connect(endpoint.port, endpoint.ip, () => {
      flow.ready = true;
      for (const m of flow.queue) upstream.send(m);
      flow.queue = [];
    });
    return flow;
  }

  private endFlow(key: string, ok: boolean): void {
    const flow = this.flows.get(key);
    if (!flow) return;
    this.flows.delete(key);
    this.m?.active.dec();
    clearTimeout(flow.timer);
    try {
      flow.upstream.close();
    } catch {
      // already closed
    }
    this.balancer.onResult?.(flow.endpoint, ok, ok ? undefined : CONNECT_FAILURE);
  }
}
