// UDP across the tunnel. Each UDP endpoint on another node gets a loopback UDP port (127.0.0.1:P);
// every client address that sends to it (the data plane's per-client upstream socket) is one flow,
// carried over the session to that node — directly or through a relay — as a datagram flow:
// DGRAM_OPEN, then one whole DGRAM frame per datagram each way. The far agent sends the datagrams
// to the endpoint from its own UDP socket per flow and returns the replies. Flows end when idle
// (the UDP proxy's rule), or with their session. Nothing queues without bound: a session whose
// TLS socket is backed up, a full flow table or a full endpoint send queue drops (and counts).
import dgram from 'node:dgram';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../util/log.ts';
import { FrameError, FrameType, type OpenTarget } from './frames.ts';
import type { Session, StreamSink } from './session.ts';

/** Bytes a session may hold unsent before its datagrams are dropped (about 16 max-size datagrams). */
export const DGRAM_BACKLOG_BYTES = 1 << 20;
/** Datagrams a flow's endpoint socket may hold (before it is connected, or in its send queue). */
const ENDPOINT_QUEUE = 64;

/** How a flow toward `node` is carried now, or undefined (then the endpoint itself is tried). */
export interface DatagramRoute {
  session: Session;
  path: 'direct' | 'relay';
}

/** What the agent's tunnel gives its UDP side: limits, the route to a node, its own endpoints. */
export interface DatagramTunnelOptions {
  log: Logger;
  registry?: Registry;
  /** A flow with no datagram either way for this long ends (both sides keep the rule). */
  idleMs: number;
  /** Flows per loopback port and flows other nodes opened here; datagrams of new flows beyond it are dropped. */
  maxFlows: number;
  /** Session backlog above which datagrams are dropped. */
  backlogBytes?: number;
  /** The session to carry a new flow toward `node` (one that shares `dgram-v1`), if any. */
  route(node: string): DatagramRoute | undefined;
  /** True when ip:port is a UDP endpoint of this node in the current snapshot. */
  ownsEndpoint(ip: string, port: number): boolean;
  /** This node's name (inbound flows must name it). */
  nodeName: string;
}

/** /status view of the datagram flows. */
export interface DatagramStatus {
  /** Loopback UDP ports standing for remote endpoints. */
  endpoints: Array<{ node: string; endpoint: string; local: string }>;
  /** Live flows: opened here (out, by path) and by other nodes (in). */
  flows: { direct: number; relay: number; none: number; in: number };
  /** Datagrams carried (tx = into the tunnel, rx = out of it) and dropped since start. */
  datagrams: { tx: number; rx: number; dropped: number };
}

type DropReason = 'backlog' | 'flows' | 'endpoint';

/** The counters; `totals` mirrors them for /status (plain numbers, no registry read). */
function datagramMetrics(totals: DatagramStatus['datagrams'], registry?: Registry) {
  const registers = registry ? [registry] : [];
  const datagrams = new Counter({
    name: 'edgemesh_tunnel_datagrams_total',
    help: 'UDP datagrams carried by the tunnel, by direction (tx = sent to a peer, rx = received from one)',
    labelNames: ['direction'] as const,
    registers,
  });
  const drops = new Counter({
    name: 'edgemesh_tunnel_datagram_drops_total',
    help: 'UDP datagrams dropped by the tunnel (backlog = session backed up, flows = flow table full, endpoint = endpoint socket queue full)',
    labelNames: ['reason'] as const,
    registers,
  });
  const flows = new Gauge({
    name: 'edgemesh_tunnel_datagram_flows',
    help: 'Live UDP flows over the tunnel (path direct|relay|none opened here, in = opened by other nodes)',
    labelNames: ['path'] as const,
    registers,
  });
  const opened = new Counter({
    name: 'edgemesh_tunnel_datagram_flows_total',
    help: 'UDP flows opened, by path (direct|relay|none opened here, in = opened by other nodes)',
    labelNames: ['path'] as const,
    registers,
  });
  // Label children resolved once: the per-datagram path only adds numbers.
  const tx = datagrams.labels('tx');
  const rx = datagrams.labels('rx');
  return {
    tx: () => {
      totals.tx++;
      tx.inc();
    },
    rx: () => {
      totals.rx++;
      rx.inc();
    },
    drop: (reason: DropReason) => {
      totals.dropped++;
      drops.labels(reason).inc();
    },
    flows,
    opened,
  };
}

type Metrics = ReturnType<typeof datagramMetrics>;

/** A UDP socket connected to one endpoint: sends a flow's datagrams, hands back the replies. */
class EndpointSocket {
  private readonly socket: dgram.Socket;
  /** Datagrams waiting for connect() (undefined once connected). */
  private queue: Buffer[] | undefined = [];

  constructor(
    ip: string,
    port: number,
    onReply: (reply: Buffer) => void,
    onError: (err: Error) => void,
    private readonly dropped: () => void,
  ) {
    this.socket = dgram.createSocket(ip.includes(':') ? 'udp6' : 'udp4');
    this.socket.on('message', onReply);
    // On a connected socket an ICMP port unreachable surfaces as ECONNREFUSED: the flow ends.
    this.socket.on('error', onError);
    this.socket.connect(port, ip, () => {
      const q = this.queue ?? [];
      this.queue = undefined;
      for (const m of q) this.socket.send(m);
    });
  }

  send(msg: Buffer): void {
    if (this.queue) {
      if (this.queue.length >= ENDPOINT_QUEUE) this.dropped();
      else this.queue.push(msg);
    } else if (this.socket.getSendQueueCount() >= ENDPOINT_QUEUE) this.dropped();
    else this.socket.send(msg);
  }

  close(): void {
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }
}

/** The end of a flow: what a loopback port or the far agent keeps per flow. */
interface Flow {
  send(msg: Buffer): void;
  end(reason: string): void;
}

/** Frames other than DGRAM and RESET on a datagram flow are malformed (the session closes). */
function notAStream(id: number): never {
  throw new FrameError(`byte-stream frame on datagram flow ${id}`);
}

/**
 * One flow over a session (either end): sends DGRAMs unless the session is backed up, passes the
 * DGRAMs that arrive to `deliver`, ends with RESET (sent when idle, received when the far end or
 * the session ends it).
 */
class SessionFlow implements StreamSink, Flow {
  id = 0;
  closed = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly session: Session,
    private readonly m: Metrics,
    private readonly backlogBytes: number,
    idleMs: number,
    private readonly deliver: (payload: Buffer) => void,
    private readonly done: () => void,
  ) {
    this.timer = setTimeout(() => this.end('idle'), idleMs);
    this.timer.unref();
  }

  send(msg: Buffer): void {
    if (this.closed) return;
    this.timer.refresh();
    if (this.session.unsent > this.backlogBytes) {
      this.m.drop('backlog');
      return;
    }
    this.m.tx();
    this.session.send(FrameType.DGRAM, this.id, msg);
  }

  onDatagram(payload: Buffer): void {
    if (this.closed) return;
    this.timer.refresh();
    this.m.rx();
    this.deliver(payload);
  }

  end(reason: string): void {
    if (this.closed) return;
    this.session.send(FrameType.RESET, this.id, Buffer.from(reason.slice(0, 200)));
    this.session.forget(this.id);
    this.finish();
  }

  onReset(): void {
    this.session.forget(this.id);
    this.finish();
  }

  onData(): void {
    notAStream(this.id);
  }
  onWindow(): void {
    notAStream(this.id);
  }
  onClose(): void {
    notAStream(this.id);
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.done();
  }
}

/** A flow with no tunnel path: sent to the endpoint itself (a flat network may route it). */
class PlainFlow implements Flow {
  private readonly timer: NodeJS.Timeout;
  private readonly ep: EndpointSocket;
  private closed = false;

  constructor(
    t: OpenTarget,
    idleMs: number,
    deliver: (payload: Buffer) => void,
    dropped: () => void,
    private readonly done: () => void,
  ) {
    this.timer = setTimeout(() => this.end(), idleMs);
    this.timer.unref();
    this.ep = new EndpointSocket(
      t.ip,
      t.port,
      (reply) => {
        this.timer.refresh();
        deliver(reply);
      },
      () => this.end(),
      dropped,
    );
  }

  send(msg: Buffer): void {
    this.timer.refresh();
    this.ep.send(msg);
  }

  end(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.ep.close();
    this.done();
  }
}

/** A loopback UDP port standing for one remote endpoint; one flow per client address. */
class DatagramPort {
  readonly flows = new Map<string, Flow & { path: 'direct' | 'relay' | 'none' }>();
  port = 0;
  private readonly socket = dgram.createSocket('udp4');

  constructor(
    readonly target: OpenTarget,
    private readonly dt: DatagramTunnel,
  ) {}

  async bind(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.bind(0, '127.0.0.1', () => {
        this.socket.off('error', reject);
        resolve();
      });
    });
    // A reply to a client that went away must not end the port.
    this.socket.on('error', () => {});
    this.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    this.port = this.socket.address().port;
  }

  /** Sends `payload` back to the client at `address`:`port`. */
  reply(payload: Buffer, address: string, port: number): void {
    this.socket.send(payload, port, address);
  }

  close(): void {
    for (const f of [...this.flows.values()]) f.end('endpoint gone');
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }

  private onMessage(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const key = `${rinfo.address}|${rinfo.port}`;
    let flow = this.flows.get(key);
    if (!flow) {
      flow = this.dt.openOutbound(this, rinfo.address, rinfo.port, () => this.flows.delete(key));
      if (!flow) return;
      this.flows.set(key, flow);
    }
    flow.send(msg);
  }
}

/** The agent's UDP side of the tunnel: loopback ports for remote endpoints, flows to and from peers. */
export class DatagramTunnel {
  private readonly ports = new Map<string, DatagramPort>();
  private readonly inbound = new Set<SessionFlow>();
  private readonly m: Metrics;
  private readonly backlogBytes: number;
  private readonly totals = { tx: 0, rx: 0, dropped: 0 };

  constructor(private readonly o: DatagramTunnelOptions) {
    this.m = datagramMetrics(this.totals, o.registry);
    this.backlogBytes = o.backlogBytes ?? DGRAM_BACKLOG_BYTES;
  }

  /** The loopback port for the remote endpoint under `key`, if it has one. */
  localPort(key: string): number | undefined {
    return this.ports.get(key)?.port;
  }

  /** Number of remote endpoints with a loopback UDP port. */
  get size(): number {
    return this.ports.size;
  }

  /** Opens loopback ports for new remote UDP endpoints (`wanted`: key → target), closes the others. */
  async sync(wanted: Map<string, OpenTarget>): Promise<void> {
    for (const [key, t] of wanted) {
      if (this.ports.has(key)) continue;
      const p = new DatagramPort(t, this);
      await p.bind();
      this.ports.set(key, p);
    }
    for (const [key, p] of this.ports)
      if (!wanted.has(key)) {
        this.ports.delete(key);
        p.close();
      }
  }

  /** A new client flow at `port`: over a session that takes datagram flows, else to the endpoint itself. */
  openOutbound(
    port: DatagramPort,
    address: string,
    clientPort: number,
    done: () => void,
  ): (Flow & { path: 'direct' | 'relay' | 'none' }) | undefined {
    if (port.flows.size >= this.o.maxFlows) {
      this.m.drop('flows');
      return undefined;
    }
    const t = port.target;
    const deliver = (payload: Buffer) => port.reply(payload, address, clientPort);
    const route = this.o.route(t.node);
    const path: 'direct' | 'relay' | 'none' = route?.path ?? 'none';
    this.m.opened.inc({ path });
    this.m.flows.inc({ path });
    const finish = () => {
      this.m.flows.dec({ path });
      done();
    };
    if (!route) {
      this.o.log.debug(
        { node: t.node, endpoint: `${t.ip}:${t.port}` },
        'tunnel: no datagram path to node; sending to the endpoint itself',
      );
      const plain = new PlainFlow(t, this.o.idleMs, deliver, () => this.m.drop('endpoint'), finish);
      return Object.assign(plain, { path });
    }
    const flow = new SessionFlow(route.session, this.m, this.backlogBytes, this.o.idleMs, deliver, finish);
    route.session.openSink(
      t,
      (id) => {
        flow.id = id;
        return flow;
      },
      FrameType.DGRAM_OPEN,
    );
    return Object.assign(flow, { path });
  }

  /** A DGRAM_OPEN another node sent: a flow to one of this node's own UDP endpoints only. */
  openInbound(session: Session, id: number, t: OpenTarget): StreamSink | { reject: string } {
    const key = `${t.ip}:${t.port}`;
    if (t.node !== this.o.nodeName || !this.o.ownsEndpoint(t.ip, t.port)) {
      this.o.log.warn(
        { from: t.src, target: key, node: t.node },
        'tunnel: refused a datagram flow to an endpoint not on this node',
      );
      return { reject: `${key} is not a UDP endpoint of node '${this.o.nodeName}'` };
    }
    if (this.inbound.size >= this.o.maxFlows) {
      this.m.drop('flows');
      return { reject: 'too many datagram flows' };
    }
    let ep: EndpointSocket | undefined;
    const flow = new SessionFlow(
      session,
      this.m,
      this.backlogBytes,
      this.o.idleMs,
      (payload) => ep?.send(payload),
      () => {
        this.inbound.delete(flow);
        this.m.flows.dec({ path: 'in' });
        ep?.close();
      },
    );
    flow.id = id;
    ep = new EndpointSocket(
      t.ip,
      t.port,
      (reply) => flow.send(reply),
      (err) => flow.end(`endpoint ${key}: ${errorMessage(err)}`),
      () => this.m.drop('endpoint'),
    );
    this.inbound.add(flow);
    this.m.opened.inc({ path: 'in' });
    this.m.flows.inc({ path: 'in' });
    return flow;
  }

  status(): DatagramStatus {
    const flows = { direct: 0, relay: 0, none: 0, in: this.inbound.size };
    for (const p of this.ports.values()) for (const f of p.flows.values()) flows[f.path]++;
    return {
      endpoints: [...this.ports.values()].map((p) => ({
        node: p.target.node,
        endpoint: `${p.target.ip}:${p.target.port}`,
        local: `127.0.0.1:${p.port}`,
      })),
      flows,
      datagrams: { ...this.totals },
    };
  }

  /** Ends every flow and closes every loopback port. */
  stop(): void {
    for (const p of this.ports.values()) p.close();
    this.ports.clear();
    for (const f of [...this.inbound]) f.end('agent stopping');
  }
}
