// The agent side of the tunnel. It consumes the snapshot to learn which endpoints live on other
// nodes, gives each such endpoint a loopback port (127.0.0.1:P) it owns, and hands the data plane
// a snapshot in which that endpoint reads 127.0.0.1:P — so the data planes need no change. A
// connection to 127.0.0.1:P becomes a stream to the endpoint's node: directly when that node's
// tunnel listener answers (probed, cached, re-probed), otherwise through a relay. Streams that
// arrive here are connected only to endpoints of THIS node in the current snapshot.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Counter, Gauge, type Registry } from 'prom-client';
import type { EdgemeshConfig } from '../config/types.ts';
import type {
  Endpoint,
  ServiceEntry,
  ServiceTable,
  ServiceTableDiff,
  SnapshotConsumer,
} from '../controller/types.ts';
import { EMPTY_TABLE } from '../controller/types.ts';
import { ErrorCode, errorMessage } from '../errors.ts';
import type { Service } from '../util/lifecycle.ts';
import type { Logger } from '../util/log.ts';
import { registerLoopbackTaker } from '../util/loopback-takers.ts';
import { parseHostPort } from '../util/net.ts';
import { clientTlsOptions, loadCredentials, type TunnelCredentials } from './credentials.ts';
import { dialData, newToken } from './data-hello.ts';
import { ClientDataPool, ServerDataPool } from './data-pool.ts';
import { DataTokens, takeBuffered } from './data-tokens.ts';
import { type DatagramRoute, type DatagramStatus, DatagramTunnel } from './datagram-tunnel.ts';
import type { DataPoolAnnouncement, OpenTarget, SealedOpen } from './frames.ts';
import { joinTracked } from './join-streams.ts';
import { PumpSet } from './pump-set.ts';
import { SealedControl } from './sealed-control.ts';
import {
  mirrorKeys,
  newSealedKeys,
  type PumpBytes,
  type PumpResult,
  registerPumpMetrics,
  sealedPumpMode,
} from './sealed-pump.ts';
import {
  DGRAM_CAP,
  type HelloInfo,
  type PeerAnnouncement,
  SEALED_CAP,
  type Session,
  type StreamSink,
} from './session.ts';
import { StreamSet } from './stream-set.ts';
import { dialSession, TlsListener } from './tls-listener.ts';
import type { TunnelStream } from './tunnel-stream.ts';

/** How a peer node is reached right now. */
export type PeerPath = 'direct' | 'relay' | 'none';

/** /status view of the tunnel. */
export interface TunnelStatus {
  listen: string;
  relays: Array<{ node: string; address: string; connected: boolean }>;
  peers: Array<{ node: string; path: PeerPath; address?: string }>;
  endpoints: Array<{ node: string; endpoint: string; local: string }>;
  /** Sealed data connections: offered at all (sealedData), and which pump runs them and why. */
  sealed: {
    enabled: boolean;
    pump: 'native' | 'ts';
    reason: string;
    /** Sealed streams whose pump runs now, and how the ended ones ended. */
    active: number;
    finished: number;
    failed: number;
    idleClosed: number;
    aborted: number;
  };
  /** Framed (not sealed) streams running now, and how many ended idle or at the stop deadline. */
  framed: { active: number; idleClosed: number; aborted: number };
  /** UDP endpoints on other nodes (their loopback UDP ports), live flows, datagram totals. */
  datagrams: DatagramStatus;
}

export interface EdgeTunnelOptions {
  config: EdgemeshConfig;
  log: Logger;
  registry?: Registry;
  /** Test knobs: keepalive period, re-probe period, relay reconnect backoff cap (ms). */
  pingMs?: number;
  reprobeMs?: number;
  probeTimeoutMs?: number;
  /** How long stop() lets running sealed streams finish before resetting them (ms, default 5000). */
  drainTimeoutMs?: number;
  /** Test knobs: UDP flow idle time (default: the UDP proxy's rule) and flows per port. */
  datagramIdleMs?: number;
  datagramMaxFlows?: number;
}

/** `ip` or `ip:port` → host and port (default port when none is given). */
export function splitAddress(addr: string, defaultPort: number): { host: string; port: number } {
  const hp = parseHostPort(addr);
  if (hp) return { host: hp.host, port: hp.port };
  return { host: addr.replace(/^\[|\]$/g, ''), port: defaultPort };
}

/** This host's non-loopback IPv4 addresses (the default advertised addresses). */
function hostAddresses(): string[] {
  const out: string[] = [];
  for (const list of Object.values(os.networkInterfaces()))
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) out.push(a.address);
  return out;
}

interface LocalPort {
  server: net.Server;
  port: number;
  node: string;
  ip: string;
  targetPort: number;
}

interface RelayLink {
  node: string;
  addrs: string[];
  session: Session | undefined;
  address: string;
  peers: Set<string>;
  /** Nodes this relay announced as taking sealed streams. */
  sealedPeers: Set<string>;
  /** Nodes this relay announced as taking datagram flows. */
  dgramPeers: Set<string>;
  backoffMs: number;
  timer: NodeJS.Timeout | undefined;
}

/** `sealedBytes`: plaintext bytes per path (aToB = sent to the peer), ended and running streams. */
function tunnelMetrics(registry: Registry | undefined, sealedBytes: () => Map<string, PumpBytes>) {
  const registers = registry ? [registry] : [];
  return {
    peerPath: new Gauge({
      name: 'edgemesh_tunnel_peer_path',
      help: 'How each peer node is reached (1 = current path)',
      labelNames: ['peer', 'path'] as const,
      registers,
    }),
    relayConnected: new Gauge({
      name: 'edgemesh_tunnel_relay_connected',
      help: '1 while the session to this relay is up',
      labelNames: ['relay'] as const,
      registers,
    }),
    streams: new Counter({
      name: 'edgemesh_tunnel_streams_total',
      help: 'Streams opened toward other nodes, by path',
      labelNames: ['path'] as const,
      registers,
    }),
    inbound: new Counter({
      name: 'edgemesh_tunnel_inbound_streams_total',
      help: 'Streams other nodes opened here, by result (connected, refused, rejected)',
      labelNames: ['result'] as const,
      registers,
    }),
    noPath: new Counter({
      name: 'edgemesh_tunnel_no_path_total',
      help: 'Connections with no direct or relay path to the node (tried on the endpoint itself)',
      registers,
    }),
    authFailures: new Counter({
      name: 'edgemesh_tunnel_auth_failures_total',
      help: 'Tunnel connections rejected for bad credentials (either side)',
      registers,
    }),
    frameErrors: new Counter({
      name: 'edgemesh_tunnel_frame_errors_total',
      help: 'Tunnels closed for malformed frames',
      registers,
    }),
    sealed: new Counter({
      name: 'edgemesh_tunnel_sealed_streams_total',
      help: 'Streams carried on sealed data connections, by path and side (out = opened here)',
      labelNames: ['path', 'side'] as const,
      registers,
    }),
    sealedBytes: new Counter({
      name: 'edgemesh_tunnel_sealed_bytes_total',
      help: 'Plaintext bytes of sealed streams, by path and direction (tx = sent to the peer); running streams count as they move',
      labelNames: ['path', 'direction'] as const,
      registers,
      // Read from the pumps at scrape time (native: published once per pump turn), not per byte.
      collect() {
        this.reset();
        for (const [path, b] of sealedBytes()) {
          this.inc({ path, direction: 'tx' }, b.aToB);
          this.inc({ path, direction: 'rx' }, b.bToA);
        }
      },
    }),
    sealedPooled: new Counter({
      name: 'edgemesh_tunnel_sealed_pooled_total',
      help: 'Sealed streams that took a pre-dialled (pooled) data connection instead of dialing one, by side',
      labelNames: ['side'] as const,
      registers,
    }),
    sealedFailures: new Counter({
      name: 'edgemesh_tunnel_sealed_failures_total',
      help: 'Sealed streams reset while being set up (refused, no data connection, peer reset)',
      registers,
    }),
  };
}

/** The agent's tunnel: a Service (listener, relay links) and the snapshot transformer. */
export class EdgeTunnel implements Service {
  readonly name = 'tunnel';
  private creds: TunnelCredentials | undefined;
  private listener: TlsListener | undefined;
  private listenAddr = '';
  private readonly relays: RelayLink[];
  private readonly direct = new Map<string, Set<Session>>();
  private readonly peerAddrs = new Map<string, string[]>();
  private readonly probing = new Set<string>();
  private readonly lastProbe = new Map<string, number>();
  private readonly localPorts = new Map<string, LocalPort>();
  private ownEndpoints = new Set<string>();
  private remoteNodes = new Set<string>();
  private readonly metrics;
  /** Running sealed pumps: idle timeout, live bytes, drained on stop. */
  private readonly pumps: PumpSet<'direct' | 'relay'>;
  /** Running framed streams (not sealed): the same idle timeout and stop drain as the pumps. */
  private readonly joins: StreamSet;
  private readonly hello: HelloInfo;
  private readonly own: string;
  private readonly cfg: EdgemeshConfig['modules']['edgeTunnel'];
  private stopped = false;
  private reprobeTimer: NodeJS.Timeout | undefined;
  private readonly sessions = new Set<Session>();
  /** The consumer behind us (the proxier) and what it was last given, for path re-renders. */
  private inner: SnapshotConsumer | undefined;
  private lastTable: ServiceTable = EMPTY_TABLE;
  private queue: Promise<void> = Promise.resolve();
  private renderedPaths = new Map<string, 'direct' | 'relay'>();
  private renderTimer: NodeJS.Timeout | undefined;
  private saveTimer: NodeJS.Timeout | undefined;
  /** Accepted loopback connections, destroyed on stop (a server's close() waits for them). */
  private readonly accepted = new Set<net.Socket>();
  /** Data connections this listener expects (sealed streams). */
  private readonly dataTokens: DataTokens;
  /** Sockets of sealed streams (plain, data) still being set up, destroyed on stop. */
  private readonly settingUp = new Set<net.Socket>();
  /** Idle data connections per session: dialed by us (we are its client) or to us (its server). */
  private readonly clientPools = new Map<Session, ClientDataPool>();
  private readonly serverPools = new Map<Session, ServerDataPool>();
  /** UDP endpoints on other nodes and the datagram flows to and from peers. */
  private readonly udp: DatagramTunnel;
  /** This node's own UDP endpoints (ip:port): the only ones other nodes' flows may reach. */
  private ownUdp = new Set<string>();

  constructor(private readonly o: EdgeTunnelOptions) {
    this.cfg = o.config.modules.edgeTunnel;
    this.own = o.config.nodeName;
    // modules.edgeProxy.idleTimeoutMs applies to sealed streams as to the data plane's connections.
    this.pumps = new PumpSet(o.config.modules.edgeProxy.idleTimeoutMs);
    this.joins = new StreamSet(o.config.modules.edgeProxy.idleTimeoutMs, 'tunnel stopping');
    this.metrics = tunnelMetrics(o.registry, () => this.pumps.bytes());
    // Live pump counters (bytes as they move; the per-stream ones count when a stream ends).
    if (o.registry) registerPumpMetrics(o.registry);
    const addrs = this.cfg.advertiseAddress.length > 0 ? this.cfg.advertiseAddress : hostAddresses();
    this.hello = {
      node: this.own,
      kind: 'agent',
      addrs,
      caps: this.cfg.sealedData ? [SEALED_CAP, DGRAM_CAP] : [DGRAM_CAP],
    };
    // UDP flows end when idle like the UDP proxy's: the proxy idle timeout, at most 2 minutes.
    const idle = o.config.modules.edgeProxy.idleTimeoutMs;
    this.udp = new DatagramTunnel({
      log: o.log,
      ...(o.registry ? { registry: o.registry } : {}),
      idleMs: o.datagramIdleMs ?? Math.min(idle > 0 ? idle : 120_000, 120_000),
      maxFlows: o.datagramMaxFlows ?? 65_536,
      nodeName: this.own,
      route: (node) => this.datagramRoute(node),
      ownsEndpoint: (ip, port) => this.ownUdp.has(`${ip}:${port}`),
    });
    this.dataTokens = new DataTokens({ log: o.log });
    this.relays = this.cfg.relayNodes.map((r) => ({
      node: r.nodeName,
      addrs: r.advertiseAddress,
      session: undefined,
      address: '',
      peers: new Set(),
      sealedPeers: new Set(),
      dgramPeers: new Set(),
      backoffMs: 100,
      timer: undefined,
    }));
  }

  async start(): Promise<void> {
    this.creds = await loadCredentials(this.cfg);
    this.loadPeers();
    this.listener = new TlsListener({
      host: '0.0.0.0',
      port: this.cfg.listenPort,
      creds: this.creds,
      hello: this.hello,
      log: this.o.log,
      ...(this.o.pingMs !== undefined ? { pingMs: this.o.pingMs } : {}),
      dataTokens: this.dataTokens,
      onAuthFailure: () => this.metrics.authFailures.inc(),
      onSession: (s) => {
        this.track(s);
        s.once('ready', (peer: HelloInfo) => {
          if (peer.kind === 'agent' && peer.node !== this.own) this.addDirect(peer.node, s);
          else s.close();
        });
      },
    });
    const bound = await this.listener.listen();
    this.listenAddr = `${bound.host}:${bound.port}`;
    for (const r of this.relays) this.connectRelay(r);
    const reprobe = this.o.reprobeMs ?? 10_000;
    this.reprobeTimer = setInterval(() => this.probeAll(), reprobe);
    this.reprobeTimer.unref();
    this.o.log.info(
      {
        listen: this.listenAddr,
        relays: this.relays.map((r) => r.node),
        mode: this.creds.verifyCerts ? 'cert' : 'psk',
      },
      'tunnel started',
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    // Running sealed streams get the same grace as the native data plane's connections, then a reset.
    const draining = this.pumps.drain(this.o.drainTimeoutMs ?? 5000);
    // Framed streams ride the sessions: those stay open until the framed drain ends (no new
    // streams are taken meanwhile), then close.
    const framed = this.joins.drain(this.o.drainTimeoutMs ?? 5000);
    if (this.reprobeTimer) clearInterval(this.reprobeTimer);
    if (this.renderTimer) clearTimeout(this.renderTimer);
    if (this.saveTimer) {
      clearTimeout(this.saveTimer);
      this.savePeers();
    }
    for (const r of this.relays) if (r.timer) clearTimeout(r.timer);
    const closing = this.listener?.close();
    const sessionsClosed = framed.then((f) => {
      for (const s of this.sessions) s.close();
      if (f.aborted > 0)
        this.o.log.info(f, 'tunnel: framed streams still running at the drain deadline were reset');
    });
    for (const c of this.accepted) c.destroy();
    for (const c of this.settingUp) c.destroy();
    this.dataTokens.close();
    this.udp.stop();
    await sessionsClosed;
    await closing;
    await Promise.all([...this.localPorts.values()].map((lp) => closeServer(lp.server)));
    this.localPorts.clear();
    const drained = await draining;
    if (drained.aborted > 0)
      this.o.log.info(drained, 'tunnel: sealed streams still running at the drain deadline were reset');
  }

  /**
   * The consumer to subscribe: it learns the snapshot, then hands `inner` (the proxier) a copy in
   * which endpoints on other nodes read 127.0.0.1:<tunnel port>.
   */
  consumer(inner?: SnapshotConsumer): SnapshotConsumer {
    this.inner = inner;
    return {
      name: inner ? `tunnel+${inner.name}` : 'tunnel',
      apply: (table: ServiceTable, diff: ServiceTableDiff) =>
        this.serial(async () => {
          const rewritten = await this.applyTable(table);
          this.lastTable = table;
          if (inner) await inner.apply(rewritten, diff);
        }),
    };
  }

  /** Runs `fn` after every earlier apply/re-render: the inner consumer is never called concurrently. */
  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => {});
    return run;
  }

  /**
   * A peer's path changed since the data plane's copy was rendered (its endpoints' tunnelPath, and
   * so the balancer's preference, is stale): one coalesced re-render of the last snapshot.
   */
  private scheduleRender(): void {
    if (!this.inner || this.renderTimer || this.stopped) return;
    const stale = [...this.renderedPaths].some(([node, p]) => this.tierOf(node) !== p);
    if (!stale) return;
    this.renderTimer = setTimeout(() => {
      this.renderTimer = undefined;
      const inner = this.inner!;
      this.serial(async () => {
        const table = this.lastTable;
        const rewritten = this.rewrite(table);
        const updated = [...rewritten.services.keys()].filter(
          (k) => rewritten.services.get(k) !== table.services.get(k),
        );
        await inner.apply(rewritten, { added: [], updated, removed: [], istioChanged: false });
      }).catch((err: unknown) =>
        this.o.log.warn({ err: errorMessage(err) }, 'tunnel: re-render after a path change failed'),
      );
    }, 300);
    this.renderTimer.unref();
  }

  private tierOf(node: string): 'direct' | 'relay' {
    return this.pathTo(node) === 'direct' ? 'direct' : 'relay';
  }

  /** Learns `table` and returns the data plane's copy (remote TCP endpoints rewritten). */
  async applyTable(table: ServiceTable): Promise<ServiceTable> {
    const own = new Set<string>();
    const ownUdp = new Set<string>();
    const wanted = new Map<string, { node: string; ip: string; port: number }>();
    const wantedUdp = new Map<string, OpenTarget>();
    for (const svc of table.services.values())
      for (const p of svc.ports)
        for (const e of p.endpoints) {
          if (e.nodeName === this.own) {
            own.add(`${e.ip}:${e.port}`);
            if (p.protocol === 'UDP') ownUdp.add(`${e.ip}:${e.port}`);
          } else if (e.nodeName && p.protocol === 'TCP')
            wanted.set(localKey(e), { node: e.nodeName, ip: e.ip, port: e.port });
          else if (e.nodeName && p.protocol === 'UDP')
            wantedUdp.set(localKey(e), { node: e.nodeName, src: this.own, ip: e.ip, port: e.port });
        }
    this.ownEndpoints = own;
    this.ownUdp = ownUdp;
    this.remoteNodes = new Set([...wanted.values(), ...wantedUdp.values()].map((w) => w.node));
    await this.udp.sync(wantedUdp);
    for (const [key, w] of wanted) if (!this.localPorts.has(key)) await this.openLocalPort(key, w);
    for (const [key, lp] of this.localPorts)
      if (!wanted.has(key)) {
        this.localPorts.delete(key);
        void closeServer(lp.server);
      }
    this.probeAll();
    this.updatePathMetrics();
    return this.rewrite(table);
  }

  /** The data plane's copy of `table`: endpoints with a tunnel port read 127.0.0.1:<port>. */
  private rewrite(table: ServiceTable): ServiceTable {
    this.renderedPaths = new Map([...this.remoteNodes].map((n) => [n, this.tierOf(n)]));
    if (table === EMPTY_TABLE || (this.localPorts.size === 0 && this.udp.size === 0)) return table;
    const services = new Map<string, ServiceEntry>();
    for (const [k, svc] of table.services) {
      const touched = svc.ports.some((p) =>
        p.endpoints.some((e) =>
          p.protocol === 'UDP'
            ? this.udp.localPort(localKey(e)) !== undefined
            : this.localPorts.has(localKey(e)),
        ),
      );
      if (!touched) {
        services.set(k, svc);
        continue;
      }
      services.set(k, {
        ...svc,
        ports: svc.ports.map((p) => ({
          ...p,
          endpoints: p.endpoints.map((e) => this.rewriteEndpoint(e, p.protocol)),
        })),
      });
    }
    return { ...table, services };
  }

  /** Current path to a node. */
  pathTo(node: string): PeerPath {
    if (this.directSession(node)) return 'direct';
    return this.relayFor(node) ? 'relay' : 'none';
  }

  status(): TunnelStatus {
    const nodes = new Set([...this.remoteNodes, ...this.direct.keys()]);
    return {
      listen: this.listenAddr,
      relays: this.relays.map((r) => ({ node: r.node, address: r.address, connected: !!r.session?.isReady })),
      peers: [...nodes].sort().map((node) => {
        const d = this.directSession(node);
        return { node, path: this.pathTo(node), ...(d ? { address: d.remote } : {}) };
      }),
      endpoints: [...this.localPorts.values()].map((lp) => ({
        node: lp.node,
        endpoint: `${lp.ip}:${lp.targetPort}`,
        local: `127.0.0.1:${lp.port}`,
      })),
      sealed: (() => {
        const m = sealedPumpMode();
        const o = this.pumps.outcomes;
        return {
          enabled: this.cfg.sealedData,
          pump: m.mode,
          reason: m.reason,
          active: this.pumps.active,
          finished: o.finished,
          failed: o.failed,
          idleClosed: o.idle,
          aborted: o.aborted,
        };
      })(),
      framed: {
        active: this.joins.active,
        idleClosed: this.joins.outcomes.idle,
        aborted: this.joins.outcomes.aborted,
      },
      datagrams: this.udp.status(),
    };
  }

  /**
   * The session for a new UDP flow to `node`: a direct one that takes datagram flows, else a relay
   * that announced the node with `dgram-v1`; none (an old peer or relay) means no tunnel for UDP.
   */
  private datagramRoute(node: string): DatagramRoute | undefined {
    const direct = this.directSession(node);
    if (direct?.shares(DGRAM_CAP)) return { session: direct, path: 'direct' };
    const relay = this.relays.find(
      (r) => r.session?.isReady && r.session.shares(DGRAM_CAP) && r.dgramPeers.has(node),
    );
    return relay?.session ? { session: relay.session, path: 'relay' } : undefined;
  }

  private rewriteEndpoint(e: Endpoint, protocol: string): Endpoint {
    if (protocol === 'UDP') {
      const port = this.udp.localPort(localKey(e));
      return port === undefined ? e : { ...e, ip: '127.0.0.1', port, tunnelPath: this.tierOf(e.nodeName!) };
    }
    if (protocol !== 'TCP') return e;
    const lp = this.localPorts.get(localKey(e));
    if (!lp) return e;
    return { ...e, ip: '127.0.0.1', port: lp.port, tunnelPath: this.tierOf(lp.node) };
  }

  private async openLocalPort(key: string, w: { node: string; ip: string; port: number }): Promise<void> {
    // noDelay: the client's socket goes to the sealed pump as is (replies leave record by record).
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true, noDelay: true }, (socket) =>
      this.onLocalConnection(socket, lp),
    );
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    server.on('error', (err) => this.o.log.warn({ err: errorMessage(err) }, 'tunnel local port error'));
    const lp: LocalPort = {
      server,
      port: (server.address() as net.AddressInfo).port,
      node: w.node,
      ip: w.ip,
      targetPort: w.port,
    };
    this.localPorts.set(key, lp);
    // The native plane hands clients bound for this port over as fds (no second loopback leg):
    // served exactly like a connection the server accepted, for as long as the server is open.
    // EDGEMESH_TUNNEL_HANDOFF=off keeps the plane's loopback connection (the bench's A/B).
    if (process.env.EDGEMESH_TUNNEL_HANDOFF !== 'off') {
      const take = (socket: net.Socket) => this.onLocalConnection(socket, lp);
      server.once('close', registerLoopbackTaker(lp.port, take));
    }
  }

  private onLocalConnection(socket: net.Socket, lp: LocalPort): void {
    socket.on('error', () => {});
    if (this.stopped) {
      socket.destroy();
      return;
    }
    this.accepted.add(socket);
    socket.once('close', () => this.accepted.delete(socket));
    const target: OpenTarget = { node: lp.node, src: this.own, ip: lp.ip, port: lp.targetPort };
    const direct = this.directSession(lp.node);
    const session = direct ?? this.relayFor(lp.node)?.session;
    if (!session) {
      // No tunnel path: the endpoint may still be routable from here (a flat network), so try
      // it the way the data plane would have without the tunnel, bounded by the connect timeout.
      this.metrics.noPath.inc();
      this.o.log.warn(
        { node: lp.node, endpoint: `${lp.ip}:${lp.targetPort}` },
        'tunnel: no direct or relay path to node; trying the endpoint itself',
      );
      const plain = net.connect({ host: lp.ip, port: lp.targetPort, allowHalfOpen: true });
      plain.setTimeout(this.o.config.modules.edgeProxy.connectTimeoutMs || 5000, () => plain.destroy());
      plain.once('connect', () => plain.setTimeout(0));
      plain.on('error', () => {});
      this.accepted.delete(socket);
      void joinTracked(this.joins, socket, plain);
      socket.resume();
      return;
    }
    this.metrics.streams.inc({ path: direct ? 'direct' : 'relay' });
    if (this.sealedTo(session, direct ? undefined : this.relayFor(lp.node), lp.node)) {
      this.openSealed(socket, session, target, direct ? 'direct' : 'relay');
      return;
    }
    const stream = session.openStream(target);
    stream.on('error', () => {});
    // The join owns the client now: stop() drains it with a deadline instead of cutting it.
    this.accepted.delete(socket);
    void joinTracked(this.joins, socket, stream);
    socket.resume();
  }

  /**
   * True when a stream to `node` over `session` can be sealed: this end and the session's peer
   * announced `sealed-v1`, and through a relay the relay announced the node with it too.
   */
  private sealedTo(session: Session, relay: RelayLink | undefined, node: string): boolean {
    if (!this.cfg.sealedData || !session.shares(SEALED_CAP)) return false;
    if (relay) return relay.sealedPeers.has(node);
    // A client dials the data connection where it dialed the session; a server waits for it.
    return session.role === 'server' || session.dialed !== undefined;
  }

  /**
   * The opening side of a sealed stream: keys and token go out in SEALED_OPEN, the data connection
   * is dialed (session client) or awaited (session server), then the loopback socket and the data
   * connection are handed to the pump. Any failure before that resets the client's connection.
   */
  private openSealed(
    socket: net.Socket,
    session: Session,
    target: OpenTarget,
    path: 'direct' | 'relay',
  ): void {
    const keys = newSealedKeys();
    const far = mirrorKeys(keys);
    // An idle pooled connection saves a connect + hello on the way to the first byte.
    const pooled =
      session.role === 'client'
        ? this.clientPools.get(session)?.takeAny()
        : this.serverPools.get(session)?.takeAny();
    const token = pooled?.token ?? newToken();
    let settled = false;
    let data: net.Socket | undefined;
    let cancel: (() => void) | undefined;
    const fail = (reason: string) => {
      if (settled) return;
      settled = true;
      cancel?.();
      data?.destroy();
      this.metrics.sealedFailures.inc();
      this.o.log.debug({ node: target.node, path, reason }, 'tunnel: sealed stream failed to set up');
      socket.resetAndDestroy();
    };
    let ctl: SealedControl | undefined;
    session.openSealed({ target, token, keys: far }, (id) => {
      ctl = new SealedControl(session, id, fail);
      return ctl;
    });
    const run = (d: net.Socket) => {
      const head = takeBuffered(d);
      if (settled || socket.destroyed || !head) {
        d.resetAndDestroy();
        if (!settled) fail(head ? 'client went away' : 'data connection ended before any record');
        return;
      }
      settled = true;
      ctl?.finish();
      // The pump owns the client now: stop() drains it with a deadline instead of cutting it.
      this.accepted.delete(socket);
      this.metrics.sealed.inc({ path, side: 'out' });
      if (pooled) this.metrics.sealedPooled.inc({ side: 'out' });
      void this.pumps
        .sealed(path, socket, d, keys, head.length > 0 ? { sealedHead: head } : {})
        .then((r) => this.pumpDone(r, path, target));
    };
    const dialed = session.dialed;
    if (pooled) {
      data = pooled.socket;
      run(pooled.socket);
    } else if (session.role === 'client' && dialed) {
      dialData(dialed.host, dialed.port, token, keys.txKey, this.dataTimeoutMs()).then(
        (d) => {
          data = d;
          run(d);
        },
        (err: unknown) => {
          ctl?.reset('no data connection');
          fail(`data connection: ${errorMessage(err)}`);
        },
      );
    } else {
      // The peer dials us and proves the token with its txKey (our rxKey).
      cancel = this.dataTokens.expect(token, keys.rxKey, run, () => {
        ctl?.reset('no data connection in time');
        fail('no data connection in time');
      });
    }
  }

  /** The receiving side of a sealed stream: only this node's own endpoints, like framed streams. */
  private onSealedInbound(session: Session, id: number, open: SealedOpen): StreamSink | { reject: string } {
    const t = open.target;
    const key = `${t.ip}:${t.port}`;
    const path = session.peer?.kind === 'relay' ? 'relay' : 'direct';
    const dialer = session.role === 'client';
    if (t.node !== this.own || !this.ownEndpoints.has(key)) {
      this.metrics.inbound.inc({ result: 'rejected' });
      this.o.log.warn(
        { from: t.src, target: key, node: t.node },
        'tunnel: refused a stream to an endpoint not on this node',
      );
      // A data connection already on its way here (or pooled) is cut at once, not at expiry.
      if (dialer) {
        const pool = this.clientPools.get(session);
        pool?.take(open.token)?.resetAndDestroy();
        pool?.refill();
      } else if (!this.serverPools.get(session)?.claim(open.token, (d) => d?.resetAndDestroy()))
        this.dataTokens.expect(
          open.token,
          open.keys.rxKey,
          (d) => d.resetAndDestroy(),
          () => {},
        );
      return { reject: `${key} is not an endpoint of node '${this.own}'` };
    }
    let settled = false;
    let data: net.Socket | undefined;
    let podUp = false;
    let cancel: (() => void) | undefined;
    // The pool we may take a connection from refills once this stream is set up (or failed).
    const pool = dialer ? this.clientPools.get(session) : undefined;
    const pod = new net.Socket({ allowHalfOpen: true });
    pod.pause();
    pod.on('error', () => {});
    this.settingUp.add(pod);
    const fail = (reason: string) => {
      if (settled) return;
      settled = true;
      cancel?.();
      this.settingUp.delete(pod);
      pod.destroy();
      if (data) {
        this.settingUp.delete(data);
        data.resetAndDestroy();
      }
      pool?.refill();
      this.metrics.sealedFailures.inc();
      this.o.log.debug(
        { from: t.src, target: key, reason },
        'tunnel: inbound sealed stream failed to set up',
      );
    };
    const ctl = new SealedControl(session, id, fail);
    const start = () => {
      if (settled || !podUp || !data) return;
      const sealedHead = takeBuffered(data);
      const plainHead = takeBuffered(pod);
      if (!sealedHead || !plainHead) {
        ctl.reset('a connection ended before the stream started');
        fail('a connection ended before the stream started');
        return;
      }
      settled = true;
      ctl.finish();
      this.settingUp.delete(pod);
      this.settingUp.delete(data);
      this.metrics.sealed.inc({ path, side: 'in' });
      if (pooledIn) this.metrics.sealedPooled.inc({ side: 'in' });
      void this.pumps
        .sealed(path, pod, data, open.keys, {
          ...(sealedHead.length > 0 ? { sealedHead } : {}),
          ...(plainHead.length > 0 ? { plainHead } : {}),
        })
        .then((r) => this.pumpDone(r, path, t));
      pool?.refill();
    };
    pod.once('connect', () => {
      clearTimeout(connectTimer);
      pod.setNoDelay(true);
      podUp = true;
      this.metrics.inbound.inc({ result: 'connected' });
      start();
    });
    pod.once('error', (err) => {
      if (podUp) return;
      this.metrics.inbound.inc({ result: 'refused' });
      ctl.reset(`connect ${key}: ${errorMessage(err)}`);
      fail(`connect ${key}: ${errorMessage(err)}`);
    });
    // A pod that never answers must not hold the client forever: the same bound as the data plane's.
    const connectMs = this.o.config.modules.edgeProxy.connectTimeoutMs || 5000;
    const connectTimer = setTimeout(() => {
      if (podUp || settled) return;
      this.metrics.inbound.inc({ result: 'refused' });
      ctl.reset(`connect ${key}: no answer in ${connectMs} ms`);
      fail(`connect ${key}: no answer in ${connectMs} ms`);
    }, connectMs);
    connectTimer.unref();
    pod.once('close', () => clearTimeout(connectTimer));
    pod.connect(t.port, t.ip);
    let pooledIn = false;
    const took = (socket: net.Socket) => {
      if (settled) {
        socket.resetAndDestroy();
        return;
      }
      this.settingUp.add(socket);
      data = socket;
      start();
    };
    const dialed = session.dialed;
    const ours = pool?.take(open.token);
    if (ours) {
      pooledIn = true;
      took(ours);
    } else if (
      !dialer &&
      this.serverPools.get(session)?.claim(open.token, (d) => {
        pooledIn = true;
        if (d) took(d);
        else {
          ctl.reset('pooled data connection never came');
          fail('pooled data connection never came');
        }
      })
    ) {
      // A pooled connection the peer dialed: here already, or handed over on arrival.
    } else if (dialer && dialed) {
      // Dialed alongside the pod's connect: the two handshakes overlap.
      dialData(dialed.host, dialed.port, open.token, open.keys.txKey, this.dataTimeoutMs()).then(
        (d) => took(d),
        (err: unknown) => {
          ctl.reset('no data connection');
          fail(`data connection: ${errorMessage(err)}`);
        },
      );
    } else if (dialer) {
      fail('no address to dial the data connection');
      return { reject: 'no address to dial the data connection' };
    } else {
      cancel = this.dataTokens.expect(open.token, open.keys.rxKey, took, () => {
        ctl.reset('no data connection in time');
        fail('no data connection in time');
      });
    }
    return ctl;
  }

  private pumpDone(r: PumpResult, path: 'direct' | 'relay', t: OpenTarget): void {
    if (r.error)
      this.o.log.debug(
        {
          code: ErrorCode.TUNNEL,
          node: t.node,
          endpoint: `${t.ip}:${t.port}`,
          path,
          err: r.error,
          ...(r.cause ? { cause: r.cause } : {}),
        },
        'tunnel: sealed stream aborted',
      );
  }

  private dataTimeoutMs(): number {
    return this.o.probeTimeoutMs !== undefined ? Math.max(this.o.probeTimeoutMs * 4, 2000) : 5000;
  }

  /** A stream another node opened here: connect it to one of this node's own endpoints only. */
  private onInbound(stream: TunnelStream, t: OpenTarget): void {
    stream.on('error', () => {});
    const key = `${t.ip}:${t.port}`;
    if (this.stopped) {
      stream.reset('tunnel stopping');
      return;
    }
    if (t.node !== this.own || !this.ownEndpoints.has(key)) {
      this.metrics.inbound.inc({ result: 'rejected' });
      this.o.log.warn(
        { from: t.src, target: key, node: t.node },
        'tunnel: refused a stream to an endpoint not on this node',
      );
      stream.reset(`${key} is not an endpoint of node '${this.own}'`);
      return;
    }
    const socket = net.connect({ host: t.ip, port: t.port, allowHalfOpen: true });
    socket.setNoDelay(true);
    socket.once('connect', () => {
      this.metrics.inbound.inc({ result: 'connected' });
      void joinTracked(this.joins, stream, socket);
    });
    socket.once('error', (err) => {
      if (socket.connecting || !socket.remoteAddress) {
        this.metrics.inbound.inc({ result: 'refused' });
        stream.reset(`connect ${key}: ${errorMessage(err)}`);
      }
    });
  }

  private track(s: Session): void {
    this.sessions.add(s);
    s.on('open', (stream: TunnelStream, t: OpenTarget) => this.onInbound(stream, t));
    s.datagramOpener = (id, t) => this.udp.openInbound(s, id, t);
    if (this.cfg.sealedData) {
      s.sealedOpener = (id, open) => this.onSealedInbound(s, id, open);
      if (s.isReady) this.startPool(s);
      else s.once('ready', () => this.startPool(s));
    }
    s.on('frameError', () => this.metrics.frameErrors.inc());
    s.on('authFailure', () => this.metrics.authFailures.inc());
    s.once('close', () => {
      this.sessions.delete(s);
      this.updatePathMetrics();
    });
  }

  /** Idle data connections for a sealed session: we dial them as its client, or take them as its server. */
  private startPool(s: Session): void {
    if (!s.shares(SEALED_CAP) || this.stopped) return;
    const dialed = s.dialed;
    if (s.role === 'client' && dialed) {
      const pool = new ClientDataPool(s, dialed.host, dialed.port, this.o.log, this.dataTimeoutMs());
      this.clientPools.set(s, pool);
      s.once('close', () => {
        pool.close();
        this.clientPools.delete(s);
      });
      pool.fill();
    } else if (s.role === 'server') {
      const pool = new ServerDataPool(this.dataTokens);
      this.serverPools.set(s, pool);
      s.on('dataPool', (a: DataPoolAnnouncement) => pool.announce(a));
      s.once('close', () => {
        pool.close();
        this.serverPools.delete(s);
      });
    }
  }

  /** A TLS session to host:port that must present `expectNode`'s identity (relay or direct peer). */
  private dial(
    creds: TunnelCredentials,
    host: string,
    port: number,
    expectNode: string,
    timeoutMs: number,
  ): Promise<Session> {
    return dialSession({
      host,
      port,
      creds,
      hello: this.hello,
      expectNode,
      log: this.o.log,
      timeoutMs,
      clientOptions: clientTlsOptions(creds),
      ...(this.o.pingMs !== undefined ? { pingMs: this.o.pingMs } : {}),
    });
  }

  private connectRelay(r: RelayLink): void {
    if (this.stopped || !this.creds) return;
    const creds = this.creds;
    void (async () => {
      let lastErr: unknown;
      for (const a of r.addrs) {
        const { host, port } = splitAddress(a, this.cfg.listenPort);
        try {
          const s = await this.dial(creds, host, port, r.node, 2000);
          if (this.stopped) {
            s.close();
            return;
          }
          this.onRelaySession(r, s, `${host}:${port}`);
          return;
        } catch (err) {
          lastErr = err;
        }
      }
      // Logged at most once per backoff step; auth failures were already logged by the session.
      this.o.log.warn(
        { relay: r.node, err: errorMessage(lastErr), retryMs: r.backoffMs },
        'tunnel: relay unreachable',
      );
      this.metrics.relayConnected.set({ relay: r.node }, 0);
      r.timer = setTimeout(() => this.connectRelay(r), r.backoffMs);
      r.timer.unref();
      r.backoffMs = Math.min(r.backoffMs * 2, 2000);
    })();
  }

  private onRelaySession(r: RelayLink, s: Session, address: string): void {
    r.session = s;
    r.address = address;
    r.backoffMs = 100;
    this.track(s);
    this.metrics.relayConnected.set({ relay: r.node }, 1);
    this.o.log.info({ relay: r.node, address }, 'tunnel: connected to relay');
    s.on('peers', (peers: PeerAnnouncement[]) => {
      r.peers = new Set(peers.map((p) => p.node));
      r.sealedPeers = new Set(peers.filter((p) => p.caps?.includes(SEALED_CAP)).map((p) => p.node));
      r.dgramPeers = new Set(peers.filter((p) => p.caps?.includes(DGRAM_CAP)).map((p) => p.node));
      for (const p of peers) if (p.node !== this.own && p.addrs.length > 0) this.learnAddrs(p.node, p.addrs);
      this.probeAll();
      this.updatePathMetrics();
    });
    s.once('close', (err?: Error) => {
      r.session = undefined;
      r.peers = new Set();
      r.sealedPeers = new Set();
      r.dgramPeers = new Set();
      this.metrics.relayConnected.set({ relay: r.node }, 0);
      this.updatePathMetrics();
      if (this.stopped) return;
      this.o.log.warn(
        { relay: r.node, reason: err ? errorMessage(err) : 'closed' },
        'tunnel: relay session lost',
      );
      r.timer = setTimeout(() => this.connectRelay(r), r.backoffMs);
      r.timer.unref();
    });
  }

  /** The relay to use for `node`: one that announced it, else any connected one. */
  private relayFor(node: string): RelayLink | undefined {
    const up = this.relays.filter((r) => r.session?.isReady);
    return up.find((r) => r.peers.has(node)) ?? up[0];
  }

  private directSession(node: string): Session | undefined {
    for (const s of this.direct.get(node) ?? []) if (s.isReady) return s;
    return undefined;
  }

  private addDirect(node: string, s: Session): void {
    let set = this.direct.get(node);
    if (!set) {
      set = new Set();
      this.direct.set(node, set);
    }
    set.add(s);
    if (s.peer?.addrs?.length) this.learnAddrs(node, s.peer.addrs);
    this.o.log.info({ peer: node, remote: s.remote }, 'tunnel: direct path up');
    this.updatePathMetrics();
    s.once('close', () => {
      set.delete(s);
      if (set.size === 0) this.direct.delete(node);
      this.updatePathMetrics();
      if (!this.stopped) this.o.log.info({ peer: node }, 'tunnel: direct path down');
      this.lastProbe.delete(node);
    });
  }

  /** The file where learned peer addresses survive a restart (so a LAN works with no relay up). */
  private get peersFile(): string {
    return path.join(this.o.config.stateDir, 'tunnel-peers.json');
  }

  private loadPeers(): void {
    let text: string;
    try {
      text = fs.readFileSync(this.peersFile, 'utf8');
    } catch {
      return; // first start
    }
    try {
      const doc = JSON.parse(text) as { version?: unknown; peers?: Record<string, unknown> };
      if (doc.version !== 1 || typeof doc.peers !== 'object' || doc.peers === null)
        throw new Error('unknown format');
      for (const [node, addrs] of Object.entries(doc.peers))
        if (Array.isArray(addrs) && node !== this.own)
          this.peerAddrs.set(node, addrs.filter((a): a is string => typeof a === 'string').slice(0, 32));
      this.o.log.info(
        { file: this.peersFile, peers: this.peerAddrs.size },
        'tunnel: peer addresses restored',
      );
    } catch (err) {
      this.o.log.warn(
        { file: this.peersFile, err: errorMessage(err) },
        'tunnel: ignoring unreadable peer address file',
      );
    }
  }

  private learnAddrs(node: string, addrs: string[]): void {
    const old = this.peerAddrs.get(node);
    if (old && old.length === addrs.length && old.every((a, i) => a === addrs[i])) return;
    this.peerAddrs.set(node, addrs);
    if (this.saveTimer || this.stopped) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      this.savePeers();
    }, 1000);
    this.saveTimer.unref();
  }

  private savePeers(): void {
    this.saveTimer = undefined;
    try {
      fs.mkdirSync(this.o.config.stateDir, { recursive: true });
      const tmp = `${this.peersFile}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, `${JSON.stringify({ version: 1, peers: Object.fromEntries(this.peerAddrs) })}\n`);
      fs.renameSync(tmp, this.peersFile);
    } catch (err) {
      this.o.log.warn({ file: this.peersFile, err: errorMessage(err) }, 'tunnel: cannot save peer addresses');
    }
  }

  /** Probes every remote node in the snapshot that has no direct session and is due. */
  private probeAll(): void {
    if (this.stopped || !this.creds) return;
    const reprobe = this.o.reprobeMs ?? 10_000;
    for (const node of this.remoteNodes) {
      if (this.directSession(node) || this.probing.has(node)) continue;
      const addrs = this.peerAddrs.get(node);
      if (!addrs || addrs.length === 0) continue;
      if (Date.now() - (this.lastProbe.get(node) ?? 0) < reprobe) continue;
      this.lastProbe.set(node, Date.now());
      void this.probe(node, addrs);
    }
  }

  private async probe(node: string, addrs: string[]): Promise<void> {
    const creds = this.creds!;
    this.probing.add(node);
    try {
      for (const a of addrs) {
        const { host, port } = splitAddress(a, this.cfg.listenPort);
        try {
          const s = await this.dial(creds, host, port, node, this.o.probeTimeoutMs ?? 1000);
          if (this.stopped) {
            s.close();
            return;
          }
          this.track(s);
          this.addDirect(node, s);
          return;
        } catch (err) {
          this.o.log.debug(
            { peer: node, address: `${host}:${port}`, err: errorMessage(err) },
            'tunnel: direct probe failed',
          );
        }
      }
      this.updatePathMetrics();
    } finally {
      this.probing.delete(node);
    }
  }

  private updatePathMetrics(): void {
    this.metrics.peerPath.reset();
    for (const node of new Set([...this.remoteNodes, ...this.direct.keys()]))
      this.metrics.peerPath.set({ peer: node, path: this.pathTo(node) }, 1);
    this.scheduleRender();
  }
}

function localKey(e: Endpoint): string {
  return `${e.nodeName ?? ''}|${e.ip}|${e.port}`;
}

function closeServer(s: net.Server): Promise<void> {
  return new Promise((resolve) => s.close(() => resolve()));
}
