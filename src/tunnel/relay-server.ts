// The relay (`edgemesh relay`): agents dial in and register under their authenticated node name;
// a stream one agent opens toward node N is forwarded to N's registered session. The relay never
// connects anywhere itself — an OPEN for a node that is not registered is reset. Sealed streams
// (both agents `sealed-v1`): each agent dials a data connection to the relay's listen port with a
// token it was handed over its session, and the relay splices the two ciphertext connections
// (no crypto here; it relayed the keys, so trust is what it was with framed streams).
import type net from 'node:net';
import { Counter, Gauge, type Registry } from 'prom-client';
import { errorMessage } from '../errors.ts';
import type { Service } from '../util/lifecycle.ts';
import type { Logger } from '../util/log.ts';
import type { TunnelCredentials } from './credentials.ts';
import { newToken } from './data-hello.ts';
import { ServerDataPool } from './data-pool.ts';
import { DataTokens, takeBuffered } from './data-tokens.ts';
import { DatagramSpliceEnd, spliceDatagrams } from './datagram-splice.ts';
import { DGRAM_BACKLOG_BYTES } from './datagram-tunnel.ts';
import { type DataPoolAnnouncement, FrameType, type OpenTarget, type SealedOpen } from './frames.ts';
import { PumpSet } from './pump-set.ts';
import { SpliceEnd, spliceStreams } from './relay-splice.ts';
import { SealedControl } from './sealed-control.ts';
import { type PumpBytes, registerPumpMetrics, sealedPumpMode } from './sealed-pump.ts';
import { DGRAM_CAP, SEALED_CAP, type Session } from './session.ts';
import { StreamSet } from './stream-set.ts';
import { TlsListener } from './tls-listener.ts';

export interface RelayServerOptions {
  nodeName: string;
  host: string;
  port: number;
  creds: TunnelCredentials;
  log: Logger;
  registry?: Registry;
  pingMs?: number;
  /** Take sealed streams (announce `sealed-v1`); default true (modules.edgeTunnel.sealedData). */
  sealedData?: boolean;
  /** How long a sealed stream's data connections may take to arrive (ms, default 5000). */
  dataTimeoutMs?: number;
  /** Spliced sealed streams idle this long both ways are reset (ms; 0/absent: never). */
  idleTimeoutMs?: number;
  /** How long stop() lets spliced streams finish before resetting them (ms, default 5000). */
  drainTimeoutMs?: number;
}

/** The relay's /status document. */
export interface RelayStatus {
  nodeName: string;
  agents: Array<{ node: string; remote: string; streams: number }>;
  /** The pump splicing sealed streams: mode, streams running now, bytes (live), how ended ones ended. */
  pump: {
    mode: 'native splice' | 'ts';
    reason: string;
    active: number;
    bytes: number;
    finished: number;
    failed: number;
    idleClosed: number;
    aborted: number;
  };
  /** Framed streams spliced frame by frame: running now, ended idle or at the stop deadline (absent: older relay). */
  framed?: { active: number; idleClosed: number; aborted: number };
}

/**
 * Relay metrics (prefix edgemesh_relay_). `spliced`: bytes of sealed streams per JSON [src, dst]
 * key (aToB = src -> dst), ended and running, read at scrape time.
 */
function relayMetrics(registry: Registry | undefined, spliced: () => Map<string, PumpBytes>) {
  const registers = registry ? [registry] : [];
  /** Bytes per node: rx = sent by that node, tx = delivered to it. */
  const bytes = new Map<string, { rx: number; tx: number }>();
  return {
    /** The tally of `node` (created on first use). */
    byteTally(node: string): { rx: number; tx: number } {
      let t = bytes.get(node);
      if (!t) {
        t = { rx: 0, tx: 0 };
        bytes.set(node, t);
      }
      return t;
    },
    agents: new Gauge({ name: 'edgemesh_relay_agents', help: 'Agents registered at this relay', registers }),
    streams: new Counter({
      name: 'edgemesh_relay_streams_total',
      help: 'Streams forwarded between agents, by source and destination node',
      labelNames: ['src', 'dst'] as const,
      registers,
    }),
    rejected: new Counter({
      name: 'edgemesh_relay_streams_rejected_total',
      help: 'Streams reset because the target node is not registered here',
      registers,
    }),
    bytes: new Counter({
      name: 'edgemesh_relay_bytes_total',
      help: 'Bytes forwarded, by node and direction (rx = from that node, tx = to it)',
      labelNames: ['node', 'direction'] as const,
      registers,
      // Read from plain per-node tallies at scrape time: a labelled inc() per DATA frame (label
      // hashing) cost the relay ~4% of its CPU.
      collect() {
        this.reset();
        const sum = new Map<string, { rx: number; tx: number }>();
        const add = (node: string, rx: number, tx: number) => {
          const t = sum.get(node) ?? { rx: 0, tx: 0 };
          t.rx += rx;
          t.tx += tx;
          sum.set(node, t);
        };
        for (const [node, t] of bytes) add(node, t.rx, t.tx);
        // Spliced sealed streams count while they run (the pumps publish their progress).
        for (const [key, b] of spliced()) {
          const [src, dst] = JSON.parse(key) as [string, string];
          add(src, b.aToB, b.bToA);
          add(dst, b.bToA, b.aToB);
        }
        for (const [node, t] of sum) {
          this.inc({ node, direction: 'rx' }, t.rx);
          this.inc({ node, direction: 'tx' }, t.tx);
        }
      },
    }),
    authFailures: new Counter({
      name: 'edgemesh_relay_auth_failures_total',
      help: 'Connections rejected for bad credentials',
      registers,
    }),
    frameErrors: new Counter({
      name: 'edgemesh_relay_frame_errors_total',
      help: 'Tunnels closed for malformed frames',
      registers,
    }),
    datagramFlows: new Counter({
      name: 'edgemesh_relay_datagram_flows_total',
      help: 'UDP datagram flows forwarded between agents, by source and destination node',
      labelNames: ['src', 'dst'] as const,
      registers,
    }),
    datagrams: new Counter({
      name: 'edgemesh_relay_datagrams_total',
      help: 'UDP datagrams forwarded between agents',
      registers,
    }),
    datagramDrops: new Counter({
      name: 'edgemesh_relay_datagram_drops_total',
      help: 'UDP datagrams dropped because the receiving agent session was backed up',
      registers,
    }),
  };
}

/** A running relay: a TLS listener and the table node name → session. */
export class RelayServer implements Service {
  readonly name = 'relay';
  private readonly listener: TlsListener;
  private readonly agents = new Map<string, Session>();
  private readonly all = new Set<Session>();
  private readonly metrics;
  /** Splice pumps of sealed streams, keyed JSON [src, dst]: idle timeout, live bytes, drained on stop. */
  private readonly pumps: PumpSet;
  /** Framed streams spliced frame by frame: the same idle timeout and stop drain as the pumps. */
  private readonly splices: StreamSet;
  private stopping = false;
  private readonly dataTokens: DataTokens;
  private readonly sealed: boolean;
  /** Idle data connections each agent dialed ahead of its streams. */
  private readonly pools = new Map<Session, ServerDataPool>();
  /** Data connections waiting for their partner or spliced, destroyed on stop. */
  private readonly dataSockets = new Set<net.Socket>();
  /** Bound address after start(). */
  address: { host: string; port: number } | undefined;

  constructor(private readonly o: RelayServerOptions) {
    this.pumps = new PumpSet(o.idleTimeoutMs ?? 0);
    this.splices = new StreamSet(o.idleTimeoutMs ?? 0, 'relay stopping');
    this.metrics = relayMetrics(o.registry, () => this.pumps.bytes());
    // Live splice byte counters (edgemesh_relay_bytes_total counts a stream when it ends).
    if (o.registry) registerPumpMetrics(o.registry);
    this.sealed = o.sealedData ?? true;
    this.dataTokens = new DataTokens({ log: o.log, ttlMs: o.dataTimeoutMs ?? 5000 });
    this.listener = new TlsListener({
      host: o.host,
      port: o.port,
      creds: o.creds,
      hello: { node: o.nodeName, kind: 'relay', caps: this.sealed ? [SEALED_CAP, DGRAM_CAP] : [DGRAM_CAP] },
      log: o.log,
      dataTokens: this.dataTokens,
      ...(o.pingMs !== undefined ? { pingMs: o.pingMs } : {}),
      onAuthFailure: () => this.metrics.authFailures.inc(),
      onSession: (s) => this.onSession(s),
    });
  }

  async start(): Promise<void> {
    this.address = await this.listener.listen();
    this.o.log.info(
      { node: this.o.nodeName, listen: `${this.address.host}:${this.address.port}` },
      'relay started',
    );
  }

  async stop(): Promise<void> {
    // Spliced streams get a grace period (like the agents' data planes), then a reset.
    this.stopping = true;
    const draining = this.pumps.drain(this.o.drainTimeoutMs ?? 5000);
    // No new connections; a server's close() resolves once its open ones (the sessions) are gone.
    const closing = this.listener.close();
    // Framed streams ride the sessions: those stay open (taking no new streams) until the framed
    // drain ends.
    const framed = await this.splices.drain(this.o.drainTimeoutMs ?? 5000);
    if (framed.aborted > 0)
      this.o.log.info(framed, 'relay: framed streams still running at the drain deadline were reset');
    for (const s of this.all) s.close();
    this.dataTokens.close();
    for (const d of this.dataSockets) d.destroy();
    await closing;
    const drained = await draining;
    if (drained.aborted > 0)
      this.o.log.info(drained, 'relay: spliced streams still running at the drain deadline were reset');
  }

  /** Registered agents and their open stream counts, and the splice pump (for /status). */
  status(): RelayStatus {
    const m = sealedPumpMode();
    const o = this.pumps.outcomes;
    let bytes = 0;
    for (const b of this.pumps.bytes().values()) bytes += b.aToB + b.bToA;
    return {
      nodeName: this.o.nodeName,
      agents: [...this.agents.entries()].map(([node, s]) => ({
        node,
        remote: s.remote,
        streams: s.streamCount,
      })),
      pump: {
        mode: m.mode === 'native' ? 'native splice' : 'ts',
        reason: m.mode === 'native' ? 'native pump threads, splice through pipes' : m.reason,
        active: this.pumps.active,
        bytes,
        finished: o.finished,
        failed: o.failed,
        idleClosed: o.idle,
        aborted: o.aborted,
      },
      framed: {
        active: this.splices.active,
        idleClosed: this.splices.outcomes.idle,
        aborted: this.splices.outcomes.aborted,
      },
    };
  }

  private onSession(s: Session): void {
    this.all.add(s);
    s.on('frameError', () => this.metrics.frameErrors.inc());
    s.on('ready', (peer) => {
      if (peer.kind !== 'agent') {
        s.close();
        return;
      }
      const old = this.agents.get(peer.node);
      this.agents.set(peer.node, s);
      // A reconnecting agent replaces its old session (the old one may be half-dead behind NAT).
      if (old && old !== s) old.close();
      this.o.log.info({ node: peer.node, remote: s.remote }, 'relay: agent registered');
      this.announce();
    });
    s.opener = (id, target) => this.forward(s, id, target);
    s.datagramOpener = (id, target) => this.forwardDatagrams(s, id, target);
    if (this.sealed) {
      s.sealedOpener = (id, open) => this.forwardSealed(s, id, open);
      const pool = new ServerDataPool(this.dataTokens);
      this.pools.set(s, pool);
      s.on('dataPool', (a: DataPoolAnnouncement) => pool.announce(a));
      s.once('close', () => {
        pool.close();
        this.pools.delete(s);
      });
    }
    s.on('close', (err?: Error) => {
      this.all.delete(s);
      const node = s.peer?.node;
      if (node !== undefined && this.agents.get(node) === s) {
        this.agents.delete(node);
        this.o.log.info({ node, reason: err ? errorMessage(err) : 'closed' }, 'relay: agent gone');
        this.announce();
      }
    });
  }

  /** Splices a stream `from` opened toward `target.node` onto a new stream on that node's session. */
  private forward(from: Session, id: number, target: OpenTarget): SpliceEnd | { reject: string } {
    const src = from.peer!.node;
    const to = this.agents.get(target.node);
    if (this.stopping) return { reject: 'relay stopping' };
    if (!to?.isReady || target.node === src) {
      this.metrics.rejected.inc();
      return { reject: `node '${target.node}' is not connected to this relay` };
    }
    this.metrics.streams.inc({ src, dst: target.node });
    const srcBytes = this.metrics.byteTally(src);
    const dstBytes = this.metrics.byteTally(target.node);
    const inbound = new SpliceEnd(from, id, (n) => {
      srcBytes.rx += n;
      dstBytes.tx += n;
    });
    // The source is the authenticated name of the session, never what the OPEN claims.
    to.openSink({ ...target, src }, (outId) => {
      const outbound = new SpliceEnd(to, outId, (n) => {
        dstBytes.rx += n;
        srcBytes.tx += n;
      });
      const life = spliceStreams(inbound, outbound);
      const ended = new Promise<void>((resolve) => {
        life.onEnd = resolve;
      });
      const stream = { lastActive: () => life.last, abort: (reason: string) => inbound.resetBoth(reason) };
      void this.splices.track(stream, () => ended);
      return outbound;
    });
    return inbound;
  }

  /** Joins a datagram flow `from` opened toward `target.node` to a new flow on that node's session. */
  private forwardDatagrams(
    from: Session,
    id: number,
    target: OpenTarget,
  ): DatagramSpliceEnd | { reject: string } {
    const src = from.peer!.node;
    const to = this.agents.get(target.node);
    if (!to?.isReady || target.node === src || !to.peer?.caps?.includes(DGRAM_CAP)) {
      this.metrics.rejected.inc();
      return {
        reject: to?.isReady
          ? `node '${target.node}' takes no datagram flows`
          : `node '${target.node}' is not connected to this relay`,
      };
    }
    this.metrics.datagramFlows.inc({ src, dst: target.node });
    const srcBytes = this.metrics.byteTally(src);
    const dstBytes = this.metrics.byteTally(target.node);
    const dropped = () => this.metrics.datagramDrops.inc();
    const inbound = new DatagramSpliceEnd(
      from,
      id,
      {
        forwarded: (n) => {
          this.metrics.datagrams.inc();
          srcBytes.rx += n;
          dstBytes.tx += n;
        },
        dropped,
      },
      DGRAM_BACKLOG_BYTES,
    );
    // The source is the authenticated name of the session, never what the DGRAM_OPEN claims.
    to.openSink(
      { ...target, src },
      (outId) => {
        const outbound = new DatagramSpliceEnd(
          to,
          outId,
          {
            forwarded: (n) => {
              this.metrics.datagrams.inc();
              dstBytes.rx += n;
              srcBytes.tx += n;
            },
            dropped,
          },
          DGRAM_BACKLOG_BYTES,
        );
        spliceDatagrams(inbound, outbound);
        return outbound;
      },
      FrameType.DGRAM_OPEN,
    );
    return inbound;
  }

  /**
   * A sealed stream `from` opened toward `open.target.node`: hands that node a token and the keys
   * over its session, then splices the two data connections once both have arrived. Any failure
   * before that resets both agents' halves (their data connections and their SEALED_OPENs).
   */
  private forwardSealed(from: Session, id: number, open: SealedOpen): SealedControl | { reject: string } {
    const src = from.peer!.node;
    const target = open.target;
    const to = this.agents.get(target.node);
    // The source's data connection proves itself with its txKey (the far end's rxKey).
    const srcProof = open.keys.rxKey;
    if (!to?.isReady || target.node === src || !to.peer?.caps?.includes(SEALED_CAP)) {
      this.metrics.rejected.inc();
      // Its data connection may be pooled or on the way already: cut it now, not at expiry.
      if (!this.pools.get(from)?.claim(open.token, (d) => d?.resetAndDestroy()))
        this.dataTokens.expect(
          open.token,
          srcProof,
          (d) => d.resetAndDestroy(),
          () => {},
        );
      return {
        reject: to?.isReady
          ? `node '${target.node}' takes no sealed streams`
          : `node '${target.node}' is not connected to this relay`,
      };
    }
    this.metrics.streams.inc({ src, dst: target.node });
    const ends: { a?: net.Socket; b?: net.Socket } = {};
    let settled = false;
    const cancels: Array<() => void> = [];
    const abort = (reason: string) => {
      if (settled) return;
      settled = true;
      for (const c of cancels) c();
      for (const e of [ends.a, ends.b]) e?.resetAndDestroy();
      inbound.reset(reason);
      outbound?.reset(reason);
    };
    const inbound = new SealedControl(from, id, abort);
    let outbound: SealedControl | undefined;
    const pair = () => {
      if (settled || !ends.a || !ends.b) return;
      const { a, b } = ends;
      const aHead = takeBuffered(a);
      const bHead = takeBuffered(b);
      if (!aHead || !bHead) {
        abort('a data connection ended before its first record');
        return;
      }
      settled = true;
      inbound.finish();
      outbound?.finish();
      // The pump set owns both legs now: stop() drains them with its deadline instead of cutting
      // them. Bytes count through it too (edgemesh_relay_bytes_total reads it live).
      this.dataSockets.delete(a);
      this.dataSockets.delete(b);
      void this.pumps.splice(JSON.stringify([src, target.node]), a, b, {
        ...(aHead.length > 0 ? { aHead } : {}),
        ...(bHead.length > 0 ? { bHead } : {}),
      });
    };
    const arrived = (side: 'a' | 'b') => (s: net.Socket) => {
      if (settled) {
        s.resetAndDestroy();
        return;
      }
      this.dataSockets.add(s);
      ends[side] = s;
      // One leg gone before its partner came: the other must not wait for the timeout.
      s.once('close', () => {
        this.dataSockets.delete(s);
        abort('data connection closed before the stream was paired');
      });
      pair();
    };
    const expired = () => abort('data connections did not arrive in time');
    // The target's connection: an idle one it pooled here (its token tells it which), else a fresh
    // token it dials. Its SEALED_OPEN goes out first (and at once, see Session.openSealed): the
    // target's pod connect is the longest wait on the way to the first byte, and nothing below
    // needs to happen before it starts.
    const pooledB = this.pools.get(to)?.takeAny();
    const token = pooledB?.token ?? newToken();
    to.openSealed({ target: { ...target, src }, token, keys: open.keys }, (outId) => {
      outbound = new SealedControl(to, outId, abort);
      return outbound;
    });
    // The receiving agent's data connection proves itself with its own txKey.
    if (!pooledB) cancels.push(this.dataTokens.expect(token, open.keys.txKey, arrived('b'), expired));
    // The source's connection: one of its pooled ones (here or arriving), else dialed for this stream.
    const pooledA = this.pools.get(from)?.claim(open.token, (d) => {
      if (d) arrived('a')(d);
      else abort('pooled data connection never came');
    });
    if (!pooledA) cancels.push(this.dataTokens.expect(open.token, srcProof, arrived('a'), expired));
    if (pooledB) arrived('b')(pooledB.socket);
    return inbound;
  }

  private announce(): void {
    const peers = [...this.agents.entries()].map(([node, s]) => ({
      node,
      addrs: s.peer?.addrs ?? [],
      ...(s.peer?.caps?.length ? { caps: s.peer.caps } : {}),
    }));
    for (const s of this.agents.values()) s.sendPeers(peers);
  }
}
