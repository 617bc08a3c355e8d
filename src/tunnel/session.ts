// One authenticated tunnel connection (agent↔relay or agent↔agent): the HELLO handshake, then
// many TunnelStreams multiplexed over it, keepalive PINGs, and relay PEERS announcements.
// A malformed frame or failed authentication closes this session only.
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import type tls from 'node:tls';
import { EdgemeshError, ErrorCode, errorMessage } from '../errors.ts';
import type { Logger } from '../util/log.ts';
import { certificateNames, type TunnelCredentials } from './credentials.ts';
import {
  decodeDataPool,
  decodeJson,
  decodeOpen,
  decodeSealedOpen,
  decodeWindow,
  encodeFrame,
  encodeOpen,
  encodeSealedOpen,
  type Frame,
  FrameDecoder,
  FrameError,
  FrameType,
  type FrameTypeValue,
  type OpenTarget,
  type SealedOpen,
} from './frames.ts';
import { DEFAULT_WINDOW, type StreamOwner, TunnelStream } from './tunnel-stream.ts';

/** What each end says about itself in HELLO. */
export interface HelloInfo {
  node: string;
  kind: 'agent' | 'relay';
  /** Addresses (`ip` or `ip:port`) where an agent's own tunnel listener may answer directly. */
  addrs?: string[];
  /** Optional protocol features this end takes (`sealed-v1`: SEALED_OPEN + data connections). */
  caps?: string[];
}

/** The capability of sealed data connections (SEALED_OPEN, data hello, sealed records v1). */
export const SEALED_CAP = 'sealed-v1';

/** The capability of datagram flows (DGRAM_OPEN, DGRAM): UDP endpoints across the tunnel. */
export const DGRAM_CAP = 'dgram-v1';

/** A node a relay can reach, as announced in PEERS. */
export interface PeerAnnouncement {
  node: string;
  addrs: string[];
  /** The node's capabilities as the relay saw them in its HELLO (for the relay's streams). */
  caps?: string[];
}

/** What receives the frames of one stream: a TunnelStream, or one end of a relay splice. */
export interface StreamSink {
  onData(payload: Buffer): void;
  onWindow(increment: number): void;
  onClose(): void;
  onReset(reason: string): void;
  /** One DGRAM of a datagram flow; a sink without it is a byte stream (DGRAM there is malformed). */
  onDatagram?(payload: Buffer): void;
  /** True once the sink is done with its id (a sealed stream set up before its opener returned). */
  readonly closed?: boolean;
}

/**
 * Takes over a stream the far end opened (instead of a TunnelStream and the `open` event): returns
 * its sink, or a reason to reset it.
 */
export type StreamOpener = (id: number, target: OpenTarget) => StreamSink | { reject: string };

/** Takes a SEALED_OPEN the far end sent: returns the stream's sink (RESETs only), or a reason to reset it. */
export type SealedOpener = (id: number, open: SealedOpen) => StreamSink | { reject: string };

export interface SessionOptions {
  socket: tls.TLSSocket;
  /** `client` dialed, `server` accepted (stream ids: client odd, server even). */
  role: 'client' | 'server';
  creds: TunnelCredentials;
  hello: HelloInfo;
  /** The node the client expects to reach (checked against the peer's HELLO). */
  expectNode?: string;
  log: Logger;
  handshakeTimeoutMs?: number;
  /** Keepalive period; the session is dead after 3 periods without a frame. */
  pingMs?: number;
  window?: number;
  /** The address a client dialed (its data connections go there too). */
  dialed?: { host: string; port: number };
}

const EXPORTER_LABEL = 'EXPORTER-edgemesh-tunnel-v1';

/** HMAC of the PSK over the TLS exporter value: proves the PSK and binds it to this TLS session. */
function helloMac(psk: Buffer, ekm: Buffer, role: string, hello: HelloInfo): string {
  return crypto
    .createHmac('sha256', psk)
    .update(`edgemesh-tunnel-v1|${role}|${hello.kind}|${hello.node}|`)
    .update(ekm)
    .digest('hex');
}

/**
 * A tunnel session. Events: `ready` (peer HelloInfo), `open` (stream, target) for streams the far
 * end opened, `peers` (PeerAnnouncement[]), `dataPool` (DataPoolAnnouncement), `authFailure`
 * (reason), `frameError` (err), `close`.
 */
export class Session extends EventEmitter implements StreamOwner {
  peer: HelloInfo | undefined;
  readonly remote: string;
  private readonly decoder = new FrameDecoder();
  private readonly streams = new Map<number, StreamSink>();
  /** Set by the relay: streams the far end opens are spliced, not terminated here. */
  opener: StreamOpener | undefined;
  /** Takes DGRAM_OPENs; without one they are reset (this end announced no `dgram-v1`). */
  datagramOpener: StreamOpener | undefined;
  /** Takes SEALED_OPENs; without one they are reset (this end announced no `sealed-v1`). */
  sealedOpener: SealedOpener | undefined;
  private nextId: number;
  private state: 'handshake' | 'ready' | 'closed' = 'handshake';
  private lastFrameAt = Date.now();
  private readonly timers: NodeJS.Timeout[] = [];
  private readonly ekm: Buffer;
  private readonly window: number;
  /** Frames queued this tick (flushOut writes them together). */
  private out: Buffer[] = [];
  private flushQueued = false;
  /** Decoded frames held back while `ready` listeners attach (see dispatch). */
  private backlog: Frame[] | undefined;
  /** Resolves on ready, rejects when the session closes first. */
  readonly ready: Promise<HelloInfo>;

  constructor(private readonly o: SessionOptions) {
    super();
    this.remote = `${o.socket.remoteAddress ?? '?'}:${o.socket.remotePort ?? '?'}`;
    this.nextId = o.role === 'client' ? 1 : 2;
    this.window = o.window ?? DEFAULT_WINDOW;
    this.ekm = o.socket.exportKeyingMaterial(32, EXPORTER_LABEL, Buffer.from('edgemesh'));
    this.ready = new Promise((resolve, reject) => {
      this.once('ready', resolve);
      this.once('close', (err?: Error) =>
        reject(err ?? new EdgemeshError(ErrorCode.TUNNEL, 'tunnel closed during handshake')),
      );
    });
    this.ready.catch(() => {});
    o.socket.setNoDelay(true);
    o.socket.on('data', (d: Buffer) => this.onBytes(d));
    o.socket.on('error', (err) => this.close(err));
    o.socket.on('close', () => this.close());
    // The client speaks first; the server answers with its own HELLO only once the client's
    // checked out, so an unauthenticated client learns nothing and is never "ready".
    if (o.role === 'client') this.sendHello();
    const t = setTimeout(() => {
      if (this.state === 'handshake') this.authFail('no HELLO within the handshake timeout');
    }, o.handshakeTimeoutMs ?? 5000);
    t.unref();
    this.timers.push(t);
  }

  /** True while the session can carry streams. */
  get isReady(): boolean {
    return this.state === 'ready';
  }

  /** Number of open streams. */
  get streamCount(): number {
    return this.streams.size;
  }

  /** Opens a stream asking the far end to connect to `target`. */
  openStream(target: OpenTarget): TunnelStream {
    if (this.state !== 'ready') throw new EdgemeshError(ErrorCode.TUNNEL, 'tunnel session is not ready');
    return this.openSink(target, (id) => new TunnelStream(this, id, this.window)) as TunnelStream;
  }

  /**
   * Opens a stream toward `target` whose frames go to the sink `make` returns (relay splices);
   * with `type` DGRAM_OPEN a datagram flow instead.
   */
  openSink(
    target: OpenTarget,
    make: (id: number) => StreamSink,
    type: typeof FrameType.OPEN | typeof FrameType.DGRAM_OPEN = FrameType.OPEN,
  ): StreamSink {
    if (this.state !== 'ready') throw new EdgemeshError(ErrorCode.TUNNEL, 'tunnel session is not ready');
    const id = this.nextId;
    this.nextId += 2;
    if (this.nextId > 0xfffffff0) this.close(new EdgemeshError(ErrorCode.TUNNEL, 'stream ids exhausted'));
    const sink = make(id);
    this.streams.set(id, sink);
    this.send(type, id, encodeOpen(target));
    return sink;
  }

  /** Bytes written to the TLS socket and not yet taken by the kernel (datagram senders drop above a bound). */
  get unsent(): number {
    return this.o.socket.writableLength;
  }

  /** The session's role: a client dials data connections, a server expects them. */
  get role(): 'client' | 'server' {
    return this.o.role;
  }

  /** Where the client dialed this session (undefined on the server side). */
  get dialed(): { host: string; port: number } | undefined {
    return this.o.dialed;
  }

  /** True when both ends announced `cap` (the peer in its HELLO, this end in its own). */
  shares(cap: string): boolean {
    return !!this.peer?.caps?.includes(cap) && !!this.o.hello.caps?.includes(cap);
  }

  /**
   * Sends a SEALED_OPEN; `make` builds the sink for the stream's id (it only ever sees RESET).
   * Returns that sink's stream id.
   */
  openSealed(open: SealedOpen, make: (id: number) => StreamSink): number {
    if (this.state !== 'ready') throw new EdgemeshError(ErrorCode.TUNNEL, 'tunnel session is not ready');
    const id = this.nextId;
    this.nextId += 2;
    if (this.nextId > 0xfffffff0) this.close(new EdgemeshError(ErrorCode.TUNNEL, 'stream ids exhausted'));
    this.streams.set(id, make(id));
    this.send(FrameType.SEALED_OPEN, id, encodeSealedOpen(open));
    // Out now, not at the end of this tick: the far end's pod connect waits for this frame, and
    // what the opener does next in the same tick (claiming a data connection, handing sockets to
    // the pump) took 0.2-0.5 ms per hop under load before the batched flush let it go.
    this.flushOut();
    return id;
  }

  /** Relay → agent: the nodes reachable through this relay. */
  sendPeers(peers: PeerAnnouncement[]): void {
    if (this.state === 'ready') this.send(FrameType.PEERS, 0, Buffer.from(JSON.stringify({ peers })));
  }

  send(type: FrameTypeValue, stream: number, payload?: Buffer): void {
    if (this.state === 'closed') return;
    // Bulk DATA goes as header + payload (no copy into a frame buffer); small frames are encoded whole.
    if (payload && payload.length > 1024)
      this.out.push(encodeFrame(type, stream, undefined, payload.length), payload);
    else this.out.push(encodeFrame(type, stream, payload));
    if (!this.flushQueued) {
      this.flushQueued = true;
      process.nextTick(() => this.flushOut());
    }
  }

  /**
   * Writes every frame queued this tick as one corked batch: one writev, so TLS seals few large
   * records and the kernel sees one send instead of a record + syscall per small frame.
   */
  private flushOut(): void {
    this.flushQueued = false;
    const out = this.out;
    if (out.length === 0) return;
    this.out = [];
    const socket = this.o.socket;
    if (socket.destroyed) return;
    socket.cork();
    for (const b of out) socket.write(b);
    socket.uncork();
  }

  forget(stream: number): void {
    this.streams.delete(stream);
  }

  /** Closes the session and every stream on it. */
  close(err?: Error): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const t of this.timers) clearTimeout(t);
    const streams = [...this.streams.values()];
    this.streams.clear();
    for (const s of streams) s.onReset(err ? errorMessage(err) : 'tunnel closed');
    // Frames queued before the close (a RESET, AUTH_FAIL) still go out ahead of the TLS close.
    this.flushOut();
    this.o.socket.end();
    // A peer that does not finish the TLS close promptly is cut off.
    setTimeout(() => this.o.socket.destroy(), 1000).unref();
    this.emit('close', err);
  }

  private sendHello(): void {
    const hello: Record<string, unknown> = { v: 1, ...this.o.hello };
    if (this.o.creds.psk) hello.mac = helloMac(this.o.creds.psk, this.ekm, this.o.role, this.o.hello);
    this.send(FrameType.HELLO, 0, Buffer.from(JSON.stringify(hello)));
  }

  private authFail(reason: string): void {
    this.o.log.warn(
      { code: ErrorCode.TUNNEL, peer: this.remote, reason },
      'tunnel peer rejected: authentication failed',
    );
    this.emit('authFailure', reason);
    this.send(FrameType.AUTH_FAIL, 0, Buffer.from(reason));
    this.close(new EdgemeshError(ErrorCode.TUNNEL, `authentication failed: ${reason}`));
  }

  private get closed(): boolean {
    return this.state === 'closed';
  }

  private onBytes(data: Buffer): void {
    if (this.closed) return;
    this.lastFrameAt = Date.now();
    this.guarded(() => {
      const frames = this.decoder.push(data);
      if (this.backlog) this.backlog.push(...frames);
      else this.dispatch(frames);
    });
  }

  /** Runs `fn`; a FrameError (or any throw) closes this session only, logged and counted. */
  private guarded(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (this.closed) return;
      this.o.log.warn(
        { code: ErrorCode.TUNNEL, peer: this.remote, node: this.peer?.node, err: errorMessage(err) },
        'tunnel closed: protocol error',
      );
      this.emit('frameError', err);
      this.close(err as Error);
    }
  }

  private dispatch(frames: Frame[]): void {
    for (let i = 0; i < frames.length; i++) {
      if (this.closed) return;
      const f = frames[i]!;
      const handshaking = this.state === 'handshake';
      this.onFrame(f.type, f.stream, f.payload);
      if (handshaking && this.state === 'ready' && i + 1 < frames.length) {
        // Frames batched right behind the HELLO (PEERS, OPEN) wait until whoever awaits `ready`
        // has attached its listeners (promise callbacks run before setImmediate).
        this.backlog = frames.slice(i + 1);
        setImmediate(() => {
          const held = this.backlog ?? [];
          this.backlog = undefined;
          this.guarded(() => this.dispatch(held));
        });
        return;
      }
    }
  }

  private onFrame(type: FrameTypeValue, id: number, payload: Buffer): void {
    if (this.state === 'handshake') {
      if (type === FrameType.AUTH_FAIL) {
        const reason = payload.toString('utf8').slice(0, 200);
        this.o.log.error(
          { code: ErrorCode.TUNNEL, peer: this.remote, reason },
          'tunnel rejected by peer: our credentials were not accepted',
        );
        this.emit('authFailure', `rejected by peer: ${reason}`);
        this.close(new EdgemeshError(ErrorCode.TUNNEL, `rejected by peer: ${reason}`));
        return;
      }
      if (type !== FrameType.HELLO) throw new FrameError(`frame type ${type} before HELLO`);
      this.onHello(decodeJson(payload));
      return;
    }
    switch (type) {
      case FrameType.PING:
        this.send(FrameType.PONG, 0, payload.subarray(0, 8));
        return;
      case FrameType.PONG:
        return;
      case FrameType.PEERS:
        this.emit('peers', parsePeers(decodeJson(payload)));
        return;
      case FrameType.DATA_POOL:
        this.emit('dataPool', decodeDataPool(payload));
        return;
      case FrameType.HELLO:
      case FrameType.AUTH_FAIL:
        throw new FrameError(`unexpected frame type ${type} after the handshake`);
      case FrameType.SEALED_OPEN: {
        const open = decodeSealedOpen(payload);
        const own = this.o.role === 'client' ? 1 : 0;
        if (id % 2 === own || this.streams.has(id))
          throw new FrameError(`SEALED_OPEN reuses stream id ${id}`);
        const sink = this.sealedOpener?.(id, open) ?? { reject: 'this end takes no sealed streams' };
        if ('reject' in sink) this.send(FrameType.RESET, id, Buffer.from(sink.reject.slice(0, 200)));
        else if (!sink.closed) this.streams.set(id, sink);
        return;
      }
      case FrameType.DGRAM_OPEN: {
        const target = decodeOpen(payload);
        const own = this.o.role === 'client' ? 1 : 0;
        if (id % 2 === own || this.streams.has(id)) throw new FrameError(`DGRAM_OPEN reuses stream id ${id}`);
        const sink = this.datagramOpener?.(id, target) ?? { reject: 'this end takes no datagram flows' };
        if ('reject' in sink) this.send(FrameType.RESET, id, Buffer.from(sink.reject.slice(0, 200)));
        else this.streams.set(id, sink);
        return;
      }
      case FrameType.OPEN: {
        const target = decodeOpen(payload);
        const own = this.o.role === 'client' ? 1 : 0;
        if (id % 2 === own || this.streams.has(id)) throw new FrameError(`OPEN reuses stream id ${id}`);
        if (this.opener) {
          const sink = this.opener(id, target);
          if ('reject' in sink) this.send(FrameType.RESET, id, Buffer.from(sink.reject.slice(0, 200)));
          else this.streams.set(id, sink);
          return;
        }
        const stream = new TunnelStream(this, id, this.window);
        this.streams.set(id, stream);
        if (this.listenerCount('open') === 0) stream.reset('this end accepts no streams');
        else this.emit('open', stream, target);
        return;
      }
    }
    const stream = this.streams.get(id);
    // Frames for a stream already gone (a RESET crossed them on the wire) are dropped.
    if (!stream) return;
    if (type === FrameType.DATA) stream.onData(payload);
    else if (type === FrameType.DGRAM) {
      if (!stream.onDatagram) throw new FrameError(`DGRAM on byte stream ${id}`);
      stream.onDatagram(payload);
    } else if (type === FrameType.WINDOW) stream.onWindow(decodeWindow(payload));
    else if (type === FrameType.CLOSE) stream.onClose();
    else if (type === FrameType.RESET) stream.onReset(payload.toString('utf8').slice(0, 200));
  }

  private onHello(h: Record<string, unknown>): void {
    const node = h.node;
    const kind = h.kind;
    if (
      typeof node !== 'string' ||
      node === '' ||
      node.length > 253 ||
      (kind !== 'agent' && kind !== 'relay')
    )
      throw new FrameError('HELLO without a node name or kind');
    const addrs = Array.isArray(h.addrs) ? h.addrs.filter((a): a is string => typeof a === 'string') : [];
    const caps = Array.isArray(h.caps) ? h.caps.filter((c): c is string => typeof c === 'string') : [];
    const peer: HelloInfo = { node, kind, addrs: addrs.slice(0, 32), caps: caps.slice(0, 32) };
    const { creds } = this.o;
    if (creds.psk) {
      const peerRole = this.o.role === 'client' ? 'server' : 'client';
      const want = Buffer.from(helloMac(creds.psk, this.ekm, peerRole, peer), 'hex');
      const got = typeof h.mac === 'string' ? Buffer.from(h.mac, 'hex') : Buffer.alloc(0);
      if (got.length !== want.length || !crypto.timingSafeEqual(got, want)) {
        this.authFail(`pre-shared key mismatch (peer says it is node '${node}')`);
        return;
      }
    }
    if (creds.verifyCerts) {
      const names = certificateNames(this.o.socket.getPeerCertificate());
      if (!this.o.socket.authorized) {
        this.authFail(`certificate not trusted: ${String(this.o.socket.authorizationError)}`);
        return;
      }
      if (!names.includes(node)) {
        this.authFail(`node '${node}' is not named in its certificate (${names.join(', ') || 'no names'})`);
        return;
      }
    }
    if (this.o.expectNode !== undefined && node !== this.o.expectNode) {
      this.authFail(`expected node '${this.o.expectNode}', peer says '${node}'`);
      return;
    }
    this.peer = peer;
    if (this.o.role === 'server') this.sendHello();
    this.state = 'ready';
    const pingMs = this.o.pingMs ?? 1000;
    let lastTick = Date.now();
    const t = setInterval(() => {
      const now = Date.now();
      // A late tick means our own event loop stalled (GC, starved CPU): what the peer sent
      // meanwhile is still unread in the socket (timers run before reads), so judge next tick.
      const stalled = now - lastTick > 2 * pingMs;
      lastTick = now;
      if (!stalled && now - this.lastFrameAt > 3 * pingMs) {
        this.close(new EdgemeshError(ErrorCode.TUNNEL, 'tunnel peer stopped answering'));
        return;
      }
      this.send(FrameType.PING, 0, Buffer.alloc(8));
    }, pingMs);
    t.unref();
    this.timers.push(t);
    this.emit('ready', peer);
  }
}

function parsePeers(v: Record<string, unknown>): PeerAnnouncement[] {
  if (!Array.isArray(v.peers)) throw new FrameError('PEERS without a peers list');
  const out: PeerAnnouncement[] = [];
  for (const p of v.peers.slice(0, 10_000)) {
    if (typeof p !== 'object' || p === null || typeof (p as { node?: unknown }).node !== 'string')
      throw new FrameError('PEERS entry without a node');
    const addrs = (p as { addrs?: unknown }).addrs;
    const caps = (p as { caps?: unknown }).caps;
    out.push({
      node: (p as { node: string }).node,
      addrs: Array.isArray(addrs) ? addrs.filter((a): a is string => typeof a === 'string').slice(0, 32) : [],
      caps: Array.isArray(caps) ? caps.filter((c): c is string => typeof c === 'string').slice(0, 32) : [],
    });
  }
  return out;
}
