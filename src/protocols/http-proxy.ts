// The HTTP/1.1 engine: Node's own parser (llhttp, via a non-listening http.Server that is handed
// accepted sockets) on the client side, undici keep-alive pools on the upstream side, one load-
// balancing decision per request. Bodies stream both ways with backpressure and are never
// buffered whole. Upgrade requests (WebSocket) become a byte tunnel to the chosen endpoint.
// Status mapping: malformed request → 400, no endpoint reachable → 503 naming the service,
// upstream did not answer in time → 504, upstream broke the exchange → 502.
import { randomBytes } from 'node:crypto';
import http from 'node:http';
import type net from 'node:net';
import { type Dispatcher, Pool } from 'undici';
import type { Endpoint, ServiceEntry, ServicePortEntry } from '../controller/types.ts';
import {
  type Balancer,
  CONNECT_FAILURE,
  endpointKey,
  type HashSource,
  type PickContext,
  ServiceBalancer,
} from '../lb/index.ts';
import type { Logger } from '../util/log.ts';
import { CONNECT_ERRORS, HOP_BY_HOP, RESPONSE_HOP_BY_HOP } from './http-headers.ts';
import { plainReply } from './plain-reply.ts';
import {
  type ProtocolMetrics,
  type ProxyReplyReason,
  serviceLabel,
  threadProtocolMetrics,
} from './protocol-metrics.ts';
import { clientIp, connectUpstream, tunnel } from './tcp.ts';

/** Limits of the HTTP engine. */
export interface HttpProxyOptions {
  connectTimeoutMs: number;
  /** Time to the upstream's response headers before the client gets 504. */
  requestTimeoutMs: number;
  /** Upstream body inactivity before the response is cut. */
  bodyTimeoutMs: number;
  /** Client connection idle time between requests. */
  keepAliveTimeoutMs: number;
  /** Endpoints tried for one request when connecting fails. */
  maxAttempts: number;
  /** Pooled idle upstream connections are closed after this long. */
  upstreamIdleMs: number;
  log?: Logger;
  /** Where requests, latencies and ejections are counted (default: this thread's). */
  metrics?: ProtocolMetrics;
}

/** Defaults (Envoy-like: 15 s route timeout would cut long polls, so a more lenient 30 s). */
export const DEFAULT_HTTP_OPTIONS: HttpProxyOptions = {
  connectTimeoutMs: 5000,
  requestTimeoutMs: 30_000,
  bodyTimeoutMs: 300_000,
  keepAliveTimeoutMs: 60_000,
  maxAttempts: 3,
  upstreamIdleMs: 4000,
};

interface Route {
  service: ServiceEntry;
  port: ServicePortEntry;
  balancer: Balancer;
  clientIp: string;
  /** Metrics label: `namespace/name:port`. */
  label: string;
  /** Requests of this connection whose response is not finished yet. */
  pending: number;
  /** The connection's latest request (its body may be what failed to parse). */
  last?: http.IncomingMessage;
  /** The 400/431 reply owed after a parse error, sent once `pending` reaches 0. */
  rejection?: string;
}

/** The value a consistent-hash policy hashes for this request (undefined: no key present). */
export function hashKeyOf(req: http.IncomingMessage, source: HashSource | undefined): string | undefined {
  if (!source) return undefined;
  switch (source.kind) {
    case 'header': {
      const v = req.headers[source.name];
      return Array.isArray(v) ? v.join(',') : v;
    }
    case 'cookie':
      return cookieValue(req.headers.cookie, source.name);
    case 'query': {
      const q = req.url?.indexOf('?') ?? -1;
      if (q < 0) return undefined;
      const v = new URLSearchParams(req.url!.slice(q + 1)).get(source.name);
      return v ?? undefined;
    }
    case 'sourceIp':
      return undefined;
  }
}

/** The value of cookie `name` in a Cookie header. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** A Set-Cookie header for a generated affinity cookie (Envoy: set when absent). */
function affinityCookie(source: Extract<HashSource, { kind: 'cookie' }>, value: string): string {
  let c = `${source.name}=${value}; Path=${source.path ?? '/'}; HttpOnly`;
  if (source.ttlSeconds !== undefined && source.ttlSeconds > 0)
    c += `; Max-Age=${Math.floor(source.ttlSeconds)}`;
  return c;
}

/** Request headers for the upstream: the client's, minus hop-by-hop ones and those Connection names. */
function upstreamHeaders(req: http.IncomingMessage): string[] {
  const raw = req.rawHeaders;
  const extra = req.headers.connection
    ?.toLowerCase()
    .split(',')
    .map((s) => s.trim());
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || extra?.includes(name)) continue;
    out.push(raw[i]!, raw[i + 1]!);
  }
  return out;
}

function errorCode(err: unknown): string {
  return (err as { code?: string } | null)?.code ?? '';
}

/** Upstream error codes that mean the endpoint never got the request (Envoy counts these as connect failures). */
function isConnectError(err: unknown): boolean {
  return CONNECT_ERRORS.has(errorCode(err));
}

/**
 * One request's exchange with one endpoint (an undici dispatch handler): streams the response
 * into the client's ServerResponse with backpressure and reports the outcome to the balancer once.
 */
class Exchange implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | undefined;
  private status = 0;
  private started = false;
  private finished = false;
  private clientGone = false;
  private readonly sentAt = performance.now();
  private readonly onClose = (): void => {
    // writableEnded, not writableFinished: at 'close' of a completed response the socket may still
    // hold unsent bytes; that exchange is complete, not abandoned.
    if (this.res.writableEnded) return;
    this.clientGone = true;
    this.controller?.abort(new Error('client went away'));
  };
  private readonly onDrain = (): void => this.controller?.resume();

  constructor(
    private readonly proxy: HttpProxy,
    private readonly res: http.ServerResponse,
    private readonly route: Route,
    private readonly ep: Endpoint,
    private readonly setCookie: string | undefined,
    /** Handles a failure before the response started (maps to 502/503/504 or retries). */
    private readonly failedEarly: (err: unknown) => void,
  ) {
    res.once('close', this.onClose);
  }

  private done(ok: boolean, status: number): void {
    if (this.finished) return;
    this.finished = true;
    this.res.off('close', this.onClose);
    this.res.off('drain', this.onDrain);
    this.route.balancer.onResult?.(this.ep, ok, status);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.res.destroyed) {
      this.clientGone = true;
      controller.abort(new Error('client went away'));
    }
  }

  onResponseStart(
    controller: Dispatcher.DispatchController,
    status: number,
    upHeaders: Record<string, string | string[] | undefined>,
  ): void {
    // 1xx informational answers (100 Continue) are not the response; node:http answered the
    // client's Expect itself.
    if (status < 200) return;
    this.started = true;
    this.status = status;
    const { proxy, res, route } = this;
    proxy.recordUpstream(route.label, status, (performance.now() - this.sentAt) / 1000);
    if (res.destroyed) {
      this.clientGone = true;
      controller.abort(new Error('client went away'));
      return;
    }
    const out: Record<string, string | string[]> = {};
    for (const k in upHeaders) {
      const v = upHeaders[k];
      if (v !== undefined && !RESPONSE_HOP_BY_HOP.has(k)) out[k] = v;
    }
    if (this.setCookie) {
      const prior = out['set-cookie'];
      out['set-cookie'] = prior === undefined ? [this.setCookie] : [...[prior].flat(), this.setCookie];
    }
    res.writeHead(status, out);
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.started || this.res.destroyed) return;
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', this.onDrain);
    }
  }

  onResponseEnd(): void {
    if (!this.started) return;
    this.res.end();
    this.done(this.status < 500, this.status);
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.clientGone || (this.res.destroyed && !this.started)) {
      this.done(true, 200); // the client left; not the endpoint's fault
      return;
    }
    if (this.started) {
      // Headers already went to the client: all we can do is cut the response.
      this.done(false, 502);
      this.res.destroy();
      return;
    }
    const connect = isConnectError(err);
    const timeout = errorCode(err) === 'UND_ERR_HEADERS_TIMEOUT';
    this.done(false, connect ? CONNECT_FAILURE : timeout ? 504 : 502);
    this.failedEarly(err);
  }
}

/** The HTTP engine of one thread: takes over accepted client sockets of `http` service ports. */
export class HttpProxy {
  private readonly server: http.Server;
  private readonly routes = new WeakMap<net.Socket, Route>();
  private readonly pools = new Map<string, { pool: Pool; lastUsed: number }>();
  private readonly sweepTimer: NodeJS.Timeout;
  readonly opts: HttpProxyOptions;
  private readonly metrics: ProtocolMetrics;
  private readonly countConnections = (): number => {
    let n = 0;
    for (const slot of this.pools.values()) n += slot.pool.stats.connected;
    return n;
  };
  /** Counters for status/metrics. */
  readonly stats = { requests: 0, responses5xx: 0, noEndpoint: 0, timeouts: 0, badRequests: 0, upgrades: 0 };

  constructor(opts: Partial<HttpProxyOptions> = {}) {
    this.opts = { ...DEFAULT_HTTP_OPTIONS, ...opts };
    this.metrics = opts.metrics ?? threadProtocolMetrics();
    this.metrics.addConnectionSource(this.countConnections);
    // Never listens: accepted sockets are handed in (handle()), node:http parses and answers
    // pipelined requests in order.
    this.server = http.createServer({ keepAliveTimeout: this.opts.keepAliveTimeoutMs });
    // A client that sends its request and then half-closes (`printf ... | nc`, some HTTP/1.0
    // clients) still gets its answer; by default node:http would abort the request on FIN.
    (this.server as unknown as { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true;
    this.server.on('request', (req, res) => this.onRequest(req, res));
    this.server.on('upgrade', (req, socket, head) => this.onUpgrade(req, socket as net.Socket, head));
    this.server.on('clientError', (err, socket) => this.onClientError(err, socket as net.Socket));
    // Forget upstream pools of endpoints not used for a while (endpoints come and go).
    this.sweepTimer = setInterval(() => this.sweepPools(), 30_000);
    this.sweepTimer.unref();
  }

  /** Takes over an accepted client socket of `service`/`port`, balanced by `balancer`. */
  handle(client: net.Socket, service: ServiceEntry, port: ServicePortEntry, balancer: Balancer): void {
    const label = serviceLabel(service, port);
    this.routes.set(client, { service, port, balancer, clientIp: clientIp(client), label, pending: 0 });
    if (balancer instanceof ServiceBalancer) this.metrics.trackBalancer(label, balancer);
    // node:http sets TCP_NODELAY only on sockets its own listener accepts; without it, a response
    // written as head + body + chunk terminator stalls ~40 ms on Nagle vs delayed ACK.
    client.setNoDelay(true);
    this.server.emit('connection', client);
  }

  /** Closes upstream pools (client sockets belong to the data plane). */
  async close(): Promise<void> {
    clearInterval(this.sweepTimer);
    this.metrics.removeConnectionSource(this.countConnections);
    const pools = [...this.pools.values()];
    this.pools.clear();
    await Promise.all(pools.map((p) => p.pool.destroy().catch(() => {})));
  }

  private poolFor(ep: Endpoint): Pool {
    const origin = ep.ip.includes(':') ? `http://[${ep.ip}]:${ep.port}` : `http://${ep.ip}:${ep.port}`;
    let slot = this.pools.get(origin);
    if (!slot) {
      slot = {
        pool: new Pool(origin, {
          pipelining: 1,
          keepAliveTimeout: this.opts.upstreamIdleMs,
          keepAliveMaxTimeout: this.opts.upstreamIdleMs,
          connect: { timeout: this.opts.connectTimeoutMs, noDelay: true },
          headersTimeout: this.opts.requestTimeoutMs,
          bodyTimeout: this.opts.bodyTimeoutMs,
        }),
        lastUsed: Date.now(),
      };
      this.pools.set(origin, slot);
    }
    slot.lastUsed = Date.now();
    return slot.pool;
  }

  private sweepPools(): void {
    const cutoff = Date.now() - 5 * 60_000;
    for (const [origin, slot] of this.pools) {
      if (slot.lastUsed < cutoff) {
        this.pools.delete(origin);
        void slot.pool.close().catch(() => {});
      }
    }
  }

  private onClientError(err: Error, socket: net.Socket): void {
    const code = errorCode(err);
    if (code === 'ECONNRESET' || !socket.writable) {
      socket.destroy();
      return;
    }
    const route = this.routes.get(socket);
    // The parser stays failed: more bytes on this connection raise the same error again.
    if (route?.rejection !== undefined) return;
    this.stats.badRequests++;
    const overflow = code === 'HPE_HEADER_OVERFLOW';
    const status = overflow ? '431 Request Header Fields Too Large' : '400 Bad Request';
    this.metrics.proxyReply(
      route?.label ?? 'unknown',
      overflow ? 431 : 400,
      overflow ? 'header_too_large' : 'bad_request',
    );
    const body = `${status.slice(4)}\n`;
    const text = `HTTP/1.1 ${status}\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;
    // A client that never reads must not hold the socket open.
    socket.setTimeout(5000, () => socket.destroy());
    if (route && route.pending > 0 && route.last?.complete) {
      // Valid requests pipelined before the bad one are still being answered: they go out first,
      // in order, and the 400 follows the last of them. (When the error is inside the latest
      // request's body, that request can never complete, so the 400 goes out at once.)
      route.rejection = text;
      // Not reading on: a FIN read now would make node:http close the connection after the last
      // answer, before the owed 400.
      socket.pause();
      return;
    }
    if (route) route.rejection = text;
    socket.end(text);
  }

  /** One response of `route`'s connection is done; sends a deferred parse-error reply after the last. */
  private responseDone(route: Route, socket: net.Socket): void {
    route.pending--;
    if (route.pending === 0 && route.rejection !== undefined && socket.writable) {
      socket.end(route.rejection);
      socket.resume(); // read the client's FIN so the connection closes now
    }
  }

  /** Counts an upstream response (called by Exchange). */
  recordUpstream(label: string, status: number, seconds: number): void {
    if (status >= 500) this.stats.responses5xx++;
    this.metrics.upstreamLatency(label, seconds);
    this.metrics.request(label, status);
  }

  private reply(
    res: http.ServerResponse,
    label: string,
    status: number,
    reason: ProxyReplyReason,
    text: string,
  ): void {
    if (status >= 500) this.stats.responses5xx++;
    this.metrics.proxyReply(label, status, reason);
    plainReply(res, status, text);
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const route = this.routes.get(req.socket);
    if (!route) {
      this.reply(res, 'unknown', 500, 'no_route', 'edgemesh: connection without a route');
      return;
    }
    this.stats.requests++;
    route.pending++;
    route.last = req;
    const socket = req.socket;
    res.once('close', () => this.responseDone(route, socket));
    const { balancer, service, port, label } = route;
    const ctx: PickContext = { clientIp: route.clientIp };
    const source = balancer.hashSource;
    let setCookie: string | undefined;
    if (source) {
      ctx.hashKey = hashKeyOf(req, source);
      if (ctx.hashKey === undefined && source.kind === 'cookie') {
        // Envoy's behaviour: no affinity cookie yet → make one, hash it, and hand it to the client.
        ctx.hashKey = randomBytes(8).toString('hex');
        setCookie = affinityCookie(source, ctx.hashKey);
      }
    }
    const hasBody =
      req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    const headers = upstreamHeaders(req);
    const tried = new Set<string>();
    const name = `${service.key}:${port.port}`;

    const attempt = (n: number): void => {
      const ep = balancer.pick(ctx, tried);
      if (!ep) {
        this.stats.noEndpoint++;
        this.reply(
          res,
          label,
          503,
          tried.size === 0 ? 'no_endpoint' : 'connect_failed',
          tried.size === 0
            ? `no healthy upstream for service ${name}`
            : `upstream connect error for service ${name}`,
        );
        req.resume();
        return;
      }
      tried.add(endpointKey(ep));
      const exchange = new Exchange(this, res, route, ep, setCookie, (err) => {
        // Called only for failures before any response byte reached the client.
        const code = errorCode(err);
        if (CONNECT_ERRORS.has(code)) {
          if (n + 1 < this.opts.maxAttempts && !req.readableDidRead) return attempt(n + 1);
          this.stats.noEndpoint++;
          this.reply(res, label, 503, 'connect_failed', `upstream connect error for service ${name}`);
          return;
        }
        if (code === 'UND_ERR_HEADERS_TIMEOUT') {
          this.stats.timeouts++;
          this.reply(res, label, 504, 'timeout', `upstream timeout for service ${name}`);
          return;
        }
        // Reset or closed mid-exchange: the endpoint may have acted on the request, so it is
        // not retried (Istio's default retryOn has no "reset" either).
        this.opts.log?.debug({ err, service: name, endpoint: endpointKey(ep) }, 'upstream error');
        this.reply(res, label, 502, 'upstream_error', `upstream error for service ${name}`);
      });
      // dispatch() with our own handler rather than request(): no Readable per response body, no
      // pipeline() (which makes and aborts an AbortController per call) — both showed in profiles.
      this.poolFor(ep).dispatch(
        {
          path: req.url ?? '/',
          method: (req.method ?? 'GET') as 'GET',
          headers,
          body: hasBody ? req : null,
        },
        exchange,
      );
    };
    attempt(0);
  }

  private onUpgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const route = this.routes.get(socket);
    if (!route) {
      socket.destroy();
      return;
    }
    this.stats.upgrades++;
    socket.on('error', () => socket.destroy());
    const ctx: PickContext = { clientIp: route.clientIp };
    const key = hashKeyOf(req, route.balancer.hashSource);
    if (key !== undefined) ctx.hashKey = key;
    // The request head goes upstream as received (bar nothing): the endpoint answers 101 itself.
    let text = `${req.method} ${req.url} HTTP/${req.httpVersion}\r\n`;
    for (let i = 0; i < req.rawHeaders.length; i += 2)
      text += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
    text += '\r\n';
    socket.pause();
    void connectUpstream(route.balancer, ctx, {
      connectTimeoutMs: this.opts.connectTimeoutMs,
      maxAttempts: this.opts.maxAttempts,
    }).then((up) => {
      if (!up) {
        this.metrics.proxyReply(route.label, 503, 'no_endpoint');
        const body = `no healthy upstream for service ${route.service.key}:${route.port.port}\n`;
        socket.end(
          `HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`,
        );
        return;
      }
      if (socket.destroyed) {
        up.socket.destroy();
        route.balancer.onResult?.(up.endpoint, true, 101);
        return;
      }
      up.socket.write(text);
      if (head.length > 0) up.socket.write(head);
      socket.setTimeout(0);
      tunnel(socket, up.socket, () => route.balancer.onResult?.(up.endpoint, true, 101));
    });
  }
}
