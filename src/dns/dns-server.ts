// The node's DNS server: answers cluster names from the current snapshot's NameIndex and forwards
// everything else (with a TTL cache, negative cache and serve-stale). UDP and TCP on one address.
// It is a SnapshotConsumer (a new index per snapshot, swapped atomically) and a lifecycle Service.
import dgram from 'node:dgram';
import net from 'node:net';
import dnsPacket from 'dns-packet';
import type { Registry } from 'prom-client';
import { EMPTY_TABLE, type ServiceTable, type SnapshotConsumer } from '../controller/types.ts';
import { EdgemeshError, ErrorCode, errorMessage } from '../errors.ts';
import { loadNative, type NativeBinding } from '../native/index.ts';
import type { Service } from '../util/lifecycle.ts';
import type { Logger } from '../util/log.ts';
import { formatHostPort, type HostPort } from '../util/net.ts';
import { AnswerCache, type CachedAnswer } from './answer-cache.ts';
import { compileAnswerTable, emptyAnswerTable } from './answer-table.ts';
import { type BridgeDevice, ensureBridge, removeBridge } from './bridge-device.ts';
import { type AnswerSource, DnsMetrics } from './dns-metrics.ts';
import { Forwarder } from './forwarder.ts';
import { NameIndex, type OwnAnswer } from './name-index.ts';
import { type DnsCounterName, NativeResponder } from './native-responder.ts';
import { encodeRecord } from './records.ts';
import { UpstreamList } from './upstream-list.ts';
import {
  CLASS_IN,
  errorReply,
  isParseFailure,
  optRecord,
  parseQuery,
  QType,
  type Query,
  Rcode,
  writeReplyHeader,
} from './wire.ts';

/** Everything the server needs; the agent fills it from the config (see createDnsServer in index.ts). */
export interface DnsServerOptions {
  listen: HostPort;
  /** Cluster domain, e.g. cluster.local. */
  domain: string;
  /** TTL of cluster-name answers, seconds. */
  ttl: number;
  /** Configured upstreams (`IP` or `IP:PORT`); empty = the nameservers of resolvConf. */
  upstreams: readonly string[];
  resolvConf?: string;
  /** Forwarded answers kept; 0 disables the cache (and with it serve-stale). */
  cacheSize: number;
  serveStale: boolean;
  log: Logger;
  registry?: Registry;
  /** Create this bridge device with the listen IP first (and remove it on stop if we created it). */
  bridge?: string;
  /** One upstream attempt's timeout (default 1000 ms). */
  attemptTimeoutMs?: number;
  /** A forward's total budget before SERVFAIL (default 2500 ms, well below resolvers' 5 s). */
  deadlineMs?: number;
  /** RFC 8767 client-response timer: answer stale after this long if upstreams are slow (default 1800 ms). */
  staleAnswerTimeoutMs?: number;
  /** How long expired answers stay usable for serve-stale, seconds (default 1 day). */
  staleWindowSeconds?: number;
  /** resolv.conf poll interval (default 2000 ms). */
  resolvConfPollMs?: number;
  /** Idle TCP connections are closed after this long (default 10 s). */
  tcpIdleTimeoutMs?: number;
  maxTcpConnections?: number;
  /** Concurrent forwards; beyond it queries get SERVFAIL at once instead of piling up (default 4096). */
  maxInflight?: number;
  /** Milliseconds clock of the answer cache (tests move time instead of sleeping). */
  now?: () => number;
  /**
   * Answer hot cluster-name queries (A/AAAA, NXDOMAIN in the zone) over UDP in the native addon
   * (default true); false, or no addon, keeps every query on the JS server.
   */
  nativeFastPath?: boolean;
  /** The addon to use (default: loadNative()); tests inject one. */
  native?: NativeBinding;
}

/** What /status shows about DNS. */
export interface DnsStatus {
  listen: string;
  /** native: UDP cluster names answered by the addon, the rest by JS; js: everything in JS. */
  mode: 'native' | 'js' | 'disabled';
  reason?: string;
  names: number;
  counters: Record<string, number>;
}

/** Largest query we accept over TCP; queries are small, a bigger frame is an attack or garbage. */
export const MAX_TCP_QUERY = 4096;
/** A TCP client that does not read its answers loses its connection past this much queued output. */
const MAX_TCP_BACKLOG = 1 << 20;

const OPT_PLAIN = optRecord(false);
const OPT_DO = optRecord(true);

/** The DNS server (Service + SnapshotConsumer). */
export class DnsServer implements Service, SnapshotConsumer {
  readonly name = 'dns';
  readonly metrics: DnsMetrics;
  private index: NameIndex;
  private synced = false;
  private udp: dgram.Socket | undefined;
  private responder: NativeResponder | undefined;
  /** The services map the current index was built from (an unchanged map keeps the index). */
  private indexedServices: ServiceTable['services'] | undefined;
  /** Which UDP path serves, and why not native when it is not. */
  mode: 'native' | 'js' = 'js';
  modeReason: string | undefined;
  private tcp: net.Server | undefined;
  private readonly tcpClients = new Set<net.Socket>();
  private readonly cache: AnswerCache;
  private readonly upstreams: UpstreamList;
  private readonly forwarder: Forwarder;
  private readonly inflight = new Map<string, Promise<Buffer | undefined>>();
  private bridge: BridgeDevice | undefined;
  private bound: HostPort | undefined;
  /** Why the server is not serving although started (non-root without a usable address). */
  disabledReason: string | undefined;

  constructor(private readonly options: DnsServerOptions) {
    this.metrics = new DnsMetrics(options.registry);
    this.index = new NameIndex(EMPTY_TABLE, { domain: options.domain, ttl: options.ttl });
    this.cache = new AnswerCache({
      maxEntries: options.cacheSize,
      maxTtl: 86400,
      maxNegativeTtl: 3600,
      staleWindow: options.serveStale ? (options.staleWindowSeconds ?? 86400) : 0,
      now: options.now,
    });
    this.upstreams = new UpstreamList({
      configured: options.upstreams,
      resolvConf: options.resolvConf ?? '/etc/resolv.conf',
      self: [options.listen],
      log: options.log,
      pollMs: options.resolvConfPollMs,
      // Answers from the old servers may be what the network change was about.
      onChange: () => this.cache.clear(),
    });
    this.forwarder = new Forwarder({
      upstreams: () => this.upstreams.servers,
      attemptTimeoutMs: options.attemptTimeoutMs ?? 1000,
      deadlineMs: options.deadlineMs ?? 2500,
      onAttempt: (transport, seconds, failure) =>
        this.metrics.upstreamSeconds.observe({ transport, outcome: failure ?? 'ok' }, seconds),
    });
  }

  /** The address actually bound (port resolved when 0 was asked). */
  address(): HostPort | undefined {
    return this.bound;
  }

  /** The current upstream servers. */
  upstreamServers(): readonly HostPort[] {
    return this.upstreams.servers;
  }

  async apply(table: ServiceTable): Promise<void> {
    // Snapshots that changed only Istio objects keep the same services map: nothing to rebuild.
    if (this.synced && table.services === this.indexedServices) return;
    // Built from the previous index: only Services whose entry changed are rebuilt.
    const index = new NameIndex(
      table,
      { domain: this.options.domain, ttl: this.options.ttl },
      this.synced ? this.index : undefined,
    );
    this.index = index;
    this.indexedServices = table.services;
    this.synced = true;
    this.pushAnswerTable();
    this.options.log.debug({ generation: table.generation, names: index.size }, 'dns: name index updated');
  }

  /** Gives the native responder the current index's answers (after the first snapshot only). */
  private pushAnswerTable(): void {
    const responder = this.responder;
    if (!responder || !this.synced) return;
    try {
      responder.setTable(compileAnswerTable(this.index));
    } catch (err) {
      // Never leave an old table answering: everything goes to the JS server until the next one.
      this.options.log.error({ err: errorMessage(err) }, 'dns: native answer table rejected; JS answers all');
      try {
        responder.setTable(emptyAnswerTable());
      } catch {
        // Closed meanwhile.
      }
    }
  }

  /** Listen address, UDP path and counters, for /status. */
  status(): DnsStatus {
    const counters: Record<string, number> = {};
    const snap = this.metrics.snapshot();
    for (const [key, n] of Object.entries(snap.queries)) {
      const source = key.slice(key.lastIndexOf('|') + 1);
      counters[`queries.${source}`] = (counters[`queries.${source}`] ?? 0) + n;
    }
    for (const [k, n] of Object.entries(snap.cache)) counters[`cache.${k}`] = n;
    for (const [k, n] of Object.entries(snap.dropped)) counters[`dropped.${k}`] = n;
    if (this.responder) {
      const native = this.responder.counters();
      for (const k of Object.keys(native) as DnsCounterName[]) counters[`native.${k}`] = native[k];
    }
    return {
      listen: formatHostPort(this.bound ?? this.options.listen),
      mode: this.disabledReason ? 'disabled' : this.mode,
      reason: this.disabledReason ?? this.modeReason,
      names: this.index.size,
      counters,
    };
  }

  async start(): Promise<void> {
    const { listen, log } = this.options;
    if (this.options.bridge) {
      try {
        this.bridge = await ensureBridge(this.options.bridge, listen.host, log);
      } catch (err) {
        if (isRoot()) throw err;
        // A developer running the agent unprivileged still gets the proxy and metrics.
        this.disabledReason = (err as Error).message;
        log.error({ err: this.disabledReason }, 'dns: NOT SERVING (not root)');
        return;
      }
    }
    try {
      this.upstreams.start();
      // Port 0 (tests, benchmarks) picks the UDP port first and needs the same TCP port free; a
      // few retries cover the rare case that another process holds it for TCP.
      for (let attempt = 1; ; attempt++) {
        try {
          await this.bindBoth(listen);
          break;
        } catch (err) {
          await this.closeListeners();
          const inUse = (err as { cause?: NodeJS.ErrnoException }).cause?.code === 'EADDRINUSE';
          if (listen.port !== 0 || !inUse || attempt >= 10) throw err;
        }
      }
      log.info(
        {
          listen: formatHostPort(this.bound!),
          mode: this.mode,
          domain: this.options.domain,
          upstreams: this.upstreams.servers.length,
        },
        'dns: serving',
      );
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Binds UDP then TCP on the same port (one attempt). */
  private async bindBoth(listen: HostPort): Promise<void> {
    const { log } = this.options;
    if (!this.bindNative(listen)) await this.bindUdp(listen);
    const tcp = net.createServer({ noDelay: true }, (socket) => this.onTcp(socket));
    tcp.maxConnections = this.options.maxTcpConnections ?? 1000;
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(this.bound!.port, listen.host, () => {
        tcp.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      throw listenError(listen, 'tcp', err);
    });
    tcp.on('error', (err) => log.warn({ err: err.message }, 'dns: tcp server error'));
    this.tcp = tcp;
  }

  /**
   * Starts the native UDP responder on `listen` when the addon is there and the fast path is
   * wanted. False (JS UDP path) when not; address-in-use is an error like on the JS path.
   */
  private bindNative(listen: HostPort): boolean {
    const { log } = this.options;
    if (this.options.nativeFastPath === false) {
      this.mode = 'js';
      this.modeReason = 'native fast path disabled by configuration (modules.edgeDNS.nativeFastPath: false)';
      return false;
    }
    const binding = this.options.native ?? loadNative().binding;
    if (!binding || typeof binding.dnsListen !== 'function') {
      this.mode = 'js';
      this.modeReason = `native addon unavailable: ${loadNative().reason ?? 'built without the DNS responder'}`;
      log.warn({ reason: this.modeReason }, 'dns: answering every query in JS');
      return false;
    }
    try {
      const responder = new NativeResponder(
        binding,
        listen.host,
        listen.port,
        (msg, client) => this.onNativeMiss(responder, msg, client),
        (err) => this.internalError(err),
      );
      this.responder = responder;
      this.metrics.attachNative(
        () => responder.answeredByType(),
        () => responder.counters().puntDropped,
      );
      this.bound = { host: listen.host, port: responder.port };
      this.mode = 'native';
      this.modeReason = undefined;
      this.pushAnswerTable();
      return true;
    } catch (err) {
      const e = err as EdgemeshError;
      if (e.errno === 98 /* EADDRINUSE */ || e.errno === 99 /* EADDRNOTAVAIL */) {
        const code = e.errno === 98 ? 'EADDRINUSE' : 'EADDRNOTAVAIL';
        throw listenError(listen, 'udp', Object.assign(new Error(e.message), { code, syscall: e.syscall }));
      }
      this.mode = 'js';
      this.modeReason = `native responder failed to start: ${errorMessage(err)}`;
      log.warn({ reason: this.modeReason }, 'dns: answering every query in JS');
      return false;
    }
  }

  /** A query the native responder left to us: answered exactly as on the JS UDP path. */
  private onNativeMiss(responder: NativeResponder, msg: Buffer, client: Buffer): void {
    this.replyUdp(
      msg,
      (r) => {
        try {
          responder.send(client, r);
        } catch (err) {
          this.internalError(err);
        }
      },
      () => this.responder === responder,
    );
  }

  /** Answers a UDP query through `send`; a late (upstream) answer is sent only while `live()` holds. */
  private replyUdp(msg: Buffer, send: (reply: Buffer) => void, live: () => boolean): void {
    let reply: ReturnType<DnsServer['answer']>;
    try {
      reply = this.answer(msg, 'udp');
    } catch (err) {
      this.internalError(err);
      return;
    }
    if (reply === undefined) return;
    if (Buffer.isBuffer(reply)) send(reply);
    else
      reply.then(
        (r) => {
          if (r && live()) send(r);
        },
        (err) => this.internalError(err),
      );
  }

  /** The JS UDP path: a dgram socket on `listen`. */
  private async bindUdp(listen: HostPort): Promise<void> {
    const { log } = this.options;
    const udp = dgram.createSocket({ type: net.isIPv6(listen.host) ? 'udp6' : 'udp4' });
    this.udp = udp;
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(listen.port, listen.host, () => {
        udp.off('error', reject);
        resolve();
      });
    }).catch((err: NodeJS.ErrnoException) => {
      throw listenError(listen, 'udp', err);
    });
    try {
      // Bursts (a node's pods all starting at once, dnsperf) overflow the default 208 KiB.
      udp.setRecvBufferSize(4 << 20);
    } catch {
      // Capped by net.core.rmem_max; the default still works.
    }
    udp.on('error', (err) => log.warn({ err: err.message }, 'dns: udp socket error'));
    udp.on('message', (msg, rinfo) => this.onUdp(udp, msg, rinfo));
    this.bound = { host: listen.host, port: udp.address().port };
  }

  private async closeListeners(): Promise<void> {
    this.responder?.close();
    this.responder = undefined;
    const udp = this.udp;
    this.udp = undefined;
    if (udp) await new Promise<void>((resolve) => udp.close(() => resolve()));
    const tcp = this.tcp;
    this.tcp = undefined;
    for (const s of this.tcpClients) s.destroy();
    this.tcpClients.clear();
    if (tcp?.listening) await new Promise<void>((resolve) => tcp.close(() => resolve()));
  }

  async stop(): Promise<void> {
    this.upstreams.stop();
    await this.closeListeners();
    if (this.bridge) await removeBridge(this.bridge, this.options.log);
    this.bridge = undefined;
  }

  /**
   * Answers one query message. Returns the reply, a promise of it (forwarded names), or
   * undefined when the packet is dropped. Never throws: bad input is counted, not fatal.
   */
  answer(msg: Buffer, transport: 'udp' | 'tcp'): Buffer | Promise<Buffer | undefined> | undefined {
    const q = parseQuery(msg);
    if (isParseFailure(q)) {
      if (q.action === 'drop') {
        this.metrics.drop(q.reason);
        return undefined;
      }
      this.metrics.query(0, q.rcode, 'local');
      return errorReply(msg, undefined, q.rcode);
    }
    if (q.edns && q.ednsVersion > 0) {
      // RFC 6891 §6.1.3: BADVERS (16) is extended rcode 1 with header rcode 0.
      this.metrics.query(q.qtype, Rcode.NOERROR, 'local');
      return errorReply(msg, q, Rcode.NOERROR, false, 1);
    }
    const own = this.index.lookup(q.name, q.qtype, q.qclass);
    if (own) {
      if (!this.synced && own.rcode === Rcode.NXDOMAIN) {
        // Before the first snapshot "no such name" would be a lie that clients cache.
        this.metrics.query(q.qtype, Rcode.SERVFAIL, 'local');
        return errorReply(msg, q, Rcode.SERVFAIL);
      }
      this.metrics.query(q.qtype, own.rcode, 'cluster');
      if (own.chase) return this.chase(msg, q, own, own.chase, transport);
      return this.ownReply(msg, q, own, transport);
    }
    return this.forward(msg, q, transport);
  }

  private ownReply(msg: Buffer, q: Query, own: OwnAnswer, transport: 'udp' | 'tcp'): Buffer {
    const opt = q.edns ? (q.dnssecOk ? OPT_DO : OPT_PLAIN) : undefined;
    const optLen = opt ? opt.length : 0;
    const len = q.questionEnd + own.an.length + own.ns.length + optLen;
    if (transport === 'udp' && len > q.udpLimit) return errorReply(msg, q, own.rcode, true);
    const out = Buffer.allocUnsafe(len);
    writeReplyHeader(out, q, own.rcode, true, [1, own.ancount, own.nscount, opt ? 1 : 0]);
    msg.copy(out, 12, 12, q.questionEnd);
    let pos = q.questionEnd;
    pos += own.an.copy(out, pos);
    pos += own.ns.copy(out, pos);
    if (opt) opt.copy(out, pos);
    return out;
  }

  /**
   * Answers an ExternalName query with its CNAME plus the target's records, resolved upstream
   * (through the cache). If the target cannot be resolved the CNAME alone is the answer.
   */
  private async chase(
    msg: Buffer,
    q: Query,
    own: OwnAnswer,
    target: string,
    transport: 'udp' | 'tcp',
  ): Promise<Buffer> {
    let extra: Buffer[] = [];
    try {
      const key = `${q.qtype}|${CLASS_IN}|00|${target}`;
      const answer = this.cache.get(key);
      let message = answer?.state === 'fresh' ? answer.entry.message : undefined;
      if (!message) {
        const query = dnsPacket.encode({
          type: 'query',
          id: 0,
          flags: dnsPacket.RECURSION_DESIRED,
          questions: [{ type: q.qtype === QType.AAAA ? 'AAAA' : 'A', name: target, class: 'IN' }],
        });
        message = await this.forwarder.forward(query, [target, q.qtype, CLASS_IN]);
        if (message) this.cache.put(key, message);
        else if (answer) message = answer.entry.message;
      }
      if (message) {
        const decoded = dnsPacket.decode(message);
        extra = (decoded.answers ?? [])
          .filter((a) => a.type === 'A' || a.type === 'AAAA' || a.type === 'CNAME')
          .map((a) =>
            encodeRecord({
              type: a.type as 'A' | 'AAAA' | 'CNAME',
              owner: a.name,
              ttl: Math.min((a as { ttl?: number }).ttl ?? 0, this.options.ttl),
              data: (a as { data: string }).data,
            }),
          );
      }
    } catch (err) {
      this.options.log.debug(
        { target, err: (err as Error).message },
        'dns: ExternalName target not resolved',
      );
    }
    if (extra.length === 0) return this.ownReply(msg, q, own, transport);
    const an = Buffer.concat([own.an, ...extra]);
    return this.ownReply(msg, q, { ...own, an, ancount: own.ancount + extra.length }, transport);
  }

  /** Cache hits are answered synchronously (no promise on the hot path); misses go upstream. */
  private forward(msg: Buffer, q: Query, transport: 'udp' | 'tcp'): Buffer | Promise<Buffer | undefined> {
    const key = `${q.qtype}|${q.qclass}|${q.edns ? 1 : 0}${q.dnssecOk ? 1 : 0}|${q.name}`;
    const cached = this.cache.get(key);
    if (cached?.state === 'fresh') {
      this.metrics.cache('hit');
      return this.fromCache(msg, q, cached.entry, false, transport, 'cache');
    }
    this.metrics.cache('miss');
    return this.resolveUpstream(msg, q, transport, key, cached?.entry);
  }

  private async resolveUpstream(
    msg: Buffer,
    q: Query,
    transport: 'udp' | 'tcp',
    key: string,
    stale: CachedAnswer | undefined,
  ): Promise<Buffer | undefined> {
    let pending = this.inflight.get(key);
    if (!pending) {
      if (this.inflight.size >= (this.options.maxInflight ?? 4096)) {
        if (stale) return this.fromCache(msg, q, stale, true, transport, 'stale');
        this.metrics.query(q.qtype, Rcode.SERVFAIL, 'local');
        return errorReply(msg, q, Rcode.SERVFAIL);
      }
      pending = this.forwarder
        .forward(msg, [q.name, q.qtype, q.qclass])
        .then((answer) => {
          if (answer) this.cache.put(key, answer);
          return answer;
        })
        .finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    let answer: Buffer | undefined;
    if (stale) {
      // RFC 8767 §5: do not keep a client waiting on slow upstreams when a stale answer exists.
      let timer: NodeJS.Timeout | undefined;
      const staleTimer = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), this.options.staleAnswerTimeoutMs ?? 1800);
      });
      const winner = await Promise.race([pending, staleTimer]);
      clearTimeout(timer);
      answer = winner === 'timeout' ? undefined : winner;
      if (!answer) {
        this.metrics.cache('stale');
        return this.fromCache(msg, q, stale, true, transport, 'stale');
      }
    } else {
      answer = await pending;
    }
    if (!answer) {
      this.metrics.query(q.qtype, Rcode.SERVFAIL, 'local');
      return errorReply(msg, q, Rcode.SERVFAIL);
    }
    const rcode = answer.readUInt16BE(2) & 0xf;
    this.metrics.query(q.qtype, rcode, 'upstream');
    if (transport === 'udp' && answer.length > q.udpLimit) return errorReply(msg, q, rcode, true);
    const out = Buffer.from(answer);
    msg.copy(out, 0, 0, 2);
    // The same name in the client's letter case (resolvers using 0x20 randomization check it).
    if (out.length >= q.questionEnd) msg.copy(out, 12, 12, q.questionEnd);
    return out;
  }

  private fromCache(
    msg: Buffer,
    q: Query,
    entry: CachedAnswer,
    stale: boolean,
    transport: 'udp' | 'tcp',
    source: AnswerSource,
  ): Buffer {
    const rcode = entry.message.readUInt16BE(2) & 0xf;
    this.metrics.query(q.qtype, rcode, source);
    if (transport === 'udp' && entry.message.length > q.udpLimit) return errorReply(msg, q, rcode, true);
    return this.cache.render(entry, msg, q.questionEnd, stale);
  }

  private onUdp(socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    this.replyUdp(
      msg,
      (r) => socket.send(r, rinfo.port, rinfo.address),
      () => this.udp === socket,
    );
  }

  private onTcp(socket: net.Socket): void {
    this.tcpClients.add(socket);
    socket.setTimeout(this.options.tcpIdleTimeoutMs ?? 10_000, () => socket.destroy());
    socket.on('error', () => socket.destroy());
    socket.on('close', () => this.tcpClients.delete(socket));
    let buffered: Buffer = Buffer.alloc(0);
    const send = (reply: Buffer) => {
      if (socket.destroyed) return;
      if (socket.writableLength > MAX_TCP_BACKLOG) {
        this.metrics.drop('tcp-backlog');
        socket.destroy();
        return;
      }
      const frame = Buffer.allocUnsafe(reply.length + 2);
      frame.writeUInt16BE(reply.length, 0);
      reply.copy(frame, 2);
      socket.write(frame);
    };
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      while (buffered.length >= 2) {
        const len = buffered.readUInt16BE(0);
        if (len > MAX_TCP_QUERY) {
          this.metrics.drop('oversized-tcp-frame');
          socket.destroy();
          return;
        }
        if (buffered.length < len + 2) break;
        const msg = Buffer.from(buffered.subarray(2, 2 + len));
        buffered = buffered.subarray(2 + len);
        let reply: ReturnType<DnsServer['answer']>;
        try {
          reply = this.answer(msg, 'tcp');
        } catch (err) {
          this.internalError(err);
          continue;
        }
        if (reply === undefined) continue;
        if (Buffer.isBuffer(reply)) send(reply);
        else
          reply.then(
            (r) => r && send(r),
            (err) => this.internalError(err),
          );
      }
    });
  }

  private internalError(err: unknown): void {
    // A bug, not bad input (that is handled in answer()); keep serving everyone else.
    this.metrics.drop('internal-error');
    this.options.log.error({ err }, 'dns: internal error answering a query');
  }
}

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

function listenError(listen: HostPort, transport: string, err: NodeJS.ErrnoException): EdgemeshError {
  return new EdgemeshError(
    ErrorCode.LISTEN,
    `dns: cannot listen on ${formatHostPort(listen)}/${transport}: ${err.message}`,
    { cause: err, syscall: err.syscall, errno: err.errno },
  );
}
