// The ingress gateway: one listener per (address, port) of the current plan. HTTP/HTTPS requests
// are routed by VirtualService per request (the plan is read at request time, so route changes
// need no restart); TCP connections and terminated TLS streams follow tcp[] routes. A snapshot only opens listeners for new
// ports, closes those of removed ports and swaps TLS contexts in place (Secret rotation applies to
// new handshakes); listeners of unchanged ports and their connections are left alone.
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { Counter, Gauge, type Registry } from 'prom-client';
import { Pool } from 'undici';
import type { EdgemeshConfig } from '../config/types.ts';
import type {
  Endpoint,
  KubeObject,
  ServiceEntry,
  ServicePortEntry,
  ServiceTable,
  SnapshotConsumer,
} from '../controller/types.ts';
import { EMPTY_TABLE } from '../controller/types.ts';
import { ErrorCode } from '../errors.ts';
import { CONNECT_FAILURE, endpointKey, type PickContext } from '../lb/index.ts';
import { BalancerRegistry } from '../protocols/balancer-registry.ts';
import { CONNECT_ERRORS, HOP_BY_HOP, RESPONSE_HOP_BY_HOP } from '../protocols/http-headers.ts';
import { peek } from '../protocols/peek.ts';
import { plainReply } from '../protocols/plain-reply.ts';
import { PEEK_TIMEOUT_MS } from '../protocols/stream-handlers.ts';
import { clientIp, connectUpstream, tunnel } from '../protocols/tcp.ts';
import { MAX_CLIENT_HELLO, parseClientHello } from '../protocols/tls-client-hello.ts';
import type { Service } from '../util/lifecycle.ts';
import type { Logger } from '../util/log.ts';
import { type PlanIssue, type PortPlan, planGateways, type ServerPlan } from './gateway-plan.ts';
import {
  chooseRoute,
  type HttpRoute,
  hostMatches,
  hostSpecificity,
  pickWeighted,
  type RouteDestination,
} from './http-routes.ts';
import { selectListenAddresses } from './listen-addresses.ts';

/** How the gateway is built. */
export interface IngressGatewayOptions {
  config: EdgemeshConfig;
  log: Logger;
  registry: Registry;
  /** Listen addresses (default: from modules.edgeGateway nic/includeIP/excludeIP). */
  addresses?: () => string[];
  /** Random source for weighted routes (tests may inject one). */
  random?: () => number;
}

/** A secure context and the SNI hosts it serves. */
interface SniContext {
  hosts: string[];
  ctx: tls.SecureContext;
}

interface Listener {
  key: string;
  /** HTTPS / TLS_TERMINATED: contexts chosen by SNI (swapped in place on Secret rotation). */
  sni: SniContext[];
  port: number;
  protocol: PortPlan['protocol'];
  server: net.Server;
  sockets: Set<net.Socket>;
  /** Serialized TLS inputs last applied (HTTPS / TLS_TERMINATED), to swap contexts only on change. */
  tlsSignature?: string;
}

/** Request headers not forwarded: the hop-by-hop ones, and Host (the gateway sets it itself). */
const REQUEST_DROPPED = new Set([...HOP_BY_HOP, 'host']);
const DEFAULT_TIMEOUT_MS = 30_000;

/** Decodes one key of a Secret's base64 `data`. */
function secretValue(secret: KubeObject | undefined, key: string): Buffer | undefined {
  const v = secret?.data?.[key];
  return typeof v === 'string' && v !== '' ? Buffer.from(v, 'base64') : undefined;
}

/** The Host header without port, lower case. */
function requestHost(req: http.IncomingMessage): string {
  const h = (req.headers.host ?? '').toLowerCase();
  if (h.startsWith('[')) return h.slice(0, h.indexOf(']') + 1);
  const colon = h.lastIndexOf(':');
  return colon >= 0 ? h.slice(0, colon) : h;
}

/** The Service named by a route destination host, resolved in the VirtualService's namespace. */
export function resolveDestination(
  table: ServiceTable,
  dest: RouteDestination,
  namespace: string,
): { service: ServiceEntry; port: ServicePortEntry } | undefined {
  const parts = dest.host.toLowerCase().split('.');
  const key = parts.length === 1 ? `${namespace}/${parts[0]}` : `${parts[1]}/${parts[0]}`;
  const service = table.services.get(key);
  if (!service) return undefined;
  const tcpPorts = service.ports.filter((p) => p.protocol === 'TCP');
  const port =
    dest.port !== undefined
      ? tcpPorts.find((p) => p.port === dest.port)
      : tcpPorts.length === 1
        ? tcpPorts[0]
        : undefined;
  return port ? { service, port } : undefined;
}

/** The Istio Gateway + VirtualService ingress; a lifecycle Service and a snapshot consumer. */
export class IngressGateway implements Service, SnapshotConsumer {
  readonly name = 'gateway';
  private table: ServiceTable = EMPTY_TABLE;
  private plans = new Map<number, PortPlan>();
  private readonly listeners = new Map<string, Listener>();
  private readonly balancers: BalancerRegistry;
  private readonly pools = new Map<string, Pool>();
  private readonly labels: Record<string, string>;
  private readonly random: () => number;
  private readonly requests: Counter<'code'>;
  private readonly listenErrors: Counter<'gateway' | 'port'>;
  private readonly listenerGauge: Gauge;
  private stopped = false;

  constructor(private readonly opts: IngressGatewayOptions) {
    this.labels = opts.config.modules.edgeGateway.selector;
    this.random = opts.random ?? Math.random;
    this.balancers = new BalancerRegistry({ nodeName: opts.config.nodeName });
    this.requests = new Counter({
      name: 'edgemesh_gateway_requests_total',
      help: 'HTTP requests answered by the gateway, by status code',
      labelNames: ['code'],
      registers: [opts.registry],
    });
    this.listenErrors = new Counter({
      name: 'edgemesh_gateway_listen_errors_total',
      help: 'Gateway listeners that could not be bound, by Gateway and port',
      labelNames: ['gateway', 'port'],
      registers: [opts.registry],
    });
    this.listenerGauge = new Gauge({
      name: 'edgemesh_gateway_listeners',
      help: 'Gateway listeners currently bound',
      registers: [opts.registry],
      collect: () => this.listenerGauge.set(this.listeners.size),
    });
  }

  async start(): Promise<void> {
    // Listeners come with snapshots.
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.listeners.values()].map((l) => this.close(l)));
    this.listeners.clear();
    await Promise.all([...this.pools.values()].map((p) => p.destroy().catch(() => {})));
    this.pools.clear();
  }

  /** Bound listeners as `address:port` (for status and tests). */
  listening(): string[] {
    return [...this.listeners.keys()].sort();
  }

  async apply(table: ServiceTable): Promise<void> {
    if (this.stopped) return;
    this.table = table;
    const issues: PlanIssue[] = [];
    this.plans = planGateways(table, this.labels, issues);
    for (const i of issues) this.opts.log.warn({ gateway: i.gateway, port: i.port }, `gateway: ${i.message}`);
    const addresses = (
      this.opts.addresses ?? (() => selectListenAddresses(this.opts.config.modules.edgeGateway))
    )();
    const wanted = new Map<string, PortPlan>();
    for (const plan of this.plans.values()) for (const a of addresses) wanted.set(`${a}:${plan.port}`, plan);
    for (const [key, l] of this.listeners) {
      const plan = wanted.get(key);
      if (!plan || plan.protocol !== l.protocol) {
        this.listeners.delete(key);
        await this.close(l);
        this.opts.log.info({ listener: key }, 'gateway listener closed');
      }
    }
    for (const [key, plan] of wanted) {
      const existing = this.listeners.get(key);
      if (existing) {
        if (plan.protocol === 'HTTPS' || plan.protocol === 'TLS_TERMINATED') this.refreshTls(existing, plan);
        continue;
      }
      const address = key.slice(0, key.lastIndexOf(':'));
      try {
        await this.open(key, address, plan);
      } catch (err) {
        // One bad server must not stop the others from being served.
        this.opts.log.error(
          { err, listener: key, gateway: plan.gateways.join(',') },
          'gateway listener failed',
        );
      }
    }
  }

  private async open(key: string, address: string, plan: PortPlan): Promise<void> {
    let server: net.Server;
    let tlsSignature: string | undefined;
    let sni: SniContext[] = [];
    let secure: tls.TlsOptions | undefined;
    if (plan.protocol === 'HTTPS' || plan.protocol === 'TLS_TERMINATED') {
      const tlsOpts = this.tlsOptions(plan);
      if (!tlsOpts) return;
      tlsSignature = tlsOpts.signature;
      sni = tlsOpts.contexts;
      // One callback for the listener's life, reading the current contexts: rotation swaps them.
      secure = {
        ...tlsOpts.options,
        SNICallback: (servername, cb) => {
          const name = servername.toLowerCase();
          const current = listener.sni;
          cb(null, (current.find((c) => c.hosts.some((h) => hostMatches(h, name))) ?? current[0])?.ctx);
        },
      };
    }
    if (plan.protocol === 'HTTP' || plan.protocol === 'HTTPS') {
      const httpServer = secure ? https.createServer(secure) : http.createServer();
      httpServer.on('request', (req, res) => this.onRequest(plan.port, req, res, plan.protocol === 'HTTPS'));
      // No open relay: CONNECT is never tunnelled.
      httpServer.on('connect', (_req, socket: net.Socket) => {
        socket.on('error', () => socket.destroy());
        this.requests.inc({ code: '405' });
        socket.end('HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
      });
      httpServer.on('clientError', (_err, socket: net.Socket) => socket.destroy());
      server = httpServer;
    } else if (secure) {
      // Terminated TLS: the decrypted stream follows tcp[] routes like a TCP server's.
      server = tls.createServer({ ...secure, allowHalfOpen: true }, (s) => this.onTcp(plan.port, s));
    } else {
      server = net.createServer({ allowHalfOpen: true }, (s) => this.onTcp(plan.port, s));
    }
    const sockets = new Set<net.Socket>();
    server.on('connection', (s: net.Socket) => {
      sockets.add(s);
      s.once('close', () => sockets.delete(s));
    });
    const listener: Listener = { key, port: plan.port, protocol: plan.protocol, server, sockets, sni };
    if (tlsSignature !== undefined) listener.tlsSignature = tlsSignature;
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: address, port: plan.port, exclusive: true }, () => {
          server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      for (const g of plan.gateways) this.listenErrors.inc({ gateway: g, port: String(plan.port) });
      this.opts.log.error(
        { code: ErrorCode.LISTEN, gateway: plan.gateways.join(','), listener: key, errno: e.code },
        `gateway ${plan.gateways.join(',')}: cannot listen on ${key}: ${e.message}`,
      );
      return;
    }
    server.on('error', (err) => this.opts.log.error({ err, listener: key }, 'gateway listener error'));
    this.listeners.set(key, listener);
    this.opts.log.info(
      { listener: key, protocol: plan.protocol, gateway: plan.gateways.join(',') },
      'gateway listening',
    );
  }

  private close(l: Listener): Promise<void> {
    return new Promise((resolve) => {
      l.server.close(() => resolve());
      for (const s of l.sockets) s.destroy();
    });
  }

  /** The TLS server options of an HTTPS or terminated-TLS port, or undefined (logged) when its Secret is unusable. */
  private tlsOptions(
    plan: PortPlan,
  ): { options: tls.TlsOptions; contexts: SniContext[]; signature: string } | undefined {
    const contexts: Array<{ hosts: string[]; options: tls.SecureContextOptions }> = [];
    let mutual = false;
    for (const server of plan.servers) {
      const t = server.tls!;
      const secret = this.table.secrets.get(`${server.namespace}/${t.credentialName}`);
      const cert = secretValue(secret, 'tls.crt');
      const key = secretValue(secret, 'tls.key');
      const ca = secretValue(secret, 'ca.crt');
      if (!cert || !key || (t.mode === 'MUTUAL' && !ca)) {
        this.listenErrors.inc({ gateway: server.gateway, port: String(plan.port) });
        this.opts.log.error(
          {
            code: ErrorCode.LISTEN,
            gateway: server.gateway,
            port: plan.port,
            secret: `${server.namespace}/${t.credentialName}`,
          },
          `gateway ${server.gateway}: Secret ${server.namespace}/${t.credentialName} lacks tls.crt/tls.key${t.mode === 'MUTUAL' ? '/ca.crt' : ''}; server not served`,
        );
        continue;
      }
      if (t.mode === 'MUTUAL') mutual = true;
      const options: tls.SecureContextOptions = { cert, key };
      if (t.mode === 'MUTUAL' && ca) options.ca = ca;
      if (t.minProtocolVersion) options.minVersion = t.minProtocolVersion as tls.SecureVersion;
      if (t.maxProtocolVersion) options.maxVersion = t.maxProtocolVersion as tls.SecureVersion;
      if (t.cipherSuites) options.ciphers = t.cipherSuites.join(':');
      contexts.push({ hosts: server.hosts, options });
    }
    // A Secret whose PEM does not parse is reported and left out, never thrown into apply().
    const secure: Array<SniContext & { options: tls.SecureContextOptions }> = [];
    for (const c of contexts) {
      try {
        secure.push({ hosts: c.hosts, ctx: tls.createSecureContext(c.options), options: c.options });
      } catch (err) {
        for (const g of plan.gateways) this.listenErrors.inc({ gateway: g, port: String(plan.port) });
        this.opts.log.error(
          {
            code: ErrorCode.LISTEN,
            gateway: plan.gateways.join(','),
            port: plan.port,
            err: (err as Error).message,
          },
          `gateway ${plan.gateways.join(',')}: TLS credentials for port ${plan.port} are unusable`,
        );
      }
    }
    const first = secure[0];
    if (!first) return undefined;
    const options: tls.TlsOptions = {
      ...first.options,
      // Verified against ca.crt; a MUTUAL port without a client certificate fails the handshake.
      requestCert: mutual,
      rejectUnauthorized: mutual,
    };
    const signature = JSON.stringify(
      contexts.map((c) => [c.hosts, c.options]),
      (_k, v) => (v?.type === 'Buffer' ? Buffer.from(v.data).toString('base64') : v),
    );
    return { options, contexts: secure.map(({ hosts, ctx }) => ({ hosts, ctx })), signature };
  }

  /** Swaps an HTTPS / terminated-TLS listener's contexts when its Secrets or TLS settings changed (new handshakes only). */
  private refreshTls(l: Listener, plan: PortPlan): void {
    const next = this.tlsOptions(plan);
    if (!next || next.signature === l.tlsSignature) return;
    try {
      (l.server as tls.Server).setSecureContext(next.options);
    } catch (err) {
      this.opts.log.error({ listener: l.key, err }, 'gateway: new TLS credentials rejected; old ones kept');
      return;
    }
    // setSecureContext() leaves the client-certificate switches alone (SIMPLE ↔ MUTUAL changes).
    Object.assign(l.server, {
      requestCert: next.options.requestCert,
      rejectUnauthorized: next.options.rejectUnauthorized,
    });
    l.sni = next.contexts;
    l.tlsSignature = next.signature;
    this.opts.log.info({ listener: l.key }, 'gateway TLS credentials updated');
  }

  /** The routes for `host` on `port`: from servers whose hosts match, their bound VirtualServices. */
  private routesFor(port: number, host: string): HttpRoute[] | undefined {
    const plan = this.plans.get(port);
    if (!plan) return undefined;
    // Only the VirtualServices whose best host match is the most specific one serve this host
    // (an exact `second.test` beats `*.test`, which beats `*`); among those, routes keep their order.
    let best = -1;
    const candidates: Array<{ vs: ServerPlan['virtualServices'][number]; score: number }> = [];
    for (const server of plan.servers) {
      if (!server.hosts.some((h) => hostMatches(h, host))) continue;
      for (const vs of server.virtualServices) {
        const score = Math.max(...vs.hosts.map((h) => hostSpecificity(h, host)));
        if (score < 0) continue;
        candidates.push({ vs, score });
        best = Math.max(best, score);
      }
    }
    if (best < 0) return undefined;
    const seen = new Set<ServerPlan['virtualServices'][number]>();
    const routes: HttpRoute[] = [];
    for (const { vs, score } of candidates) {
      if (score !== best || seen.has(vs)) continue;
      seen.add(vs);
      routes.push(...vs.http);
    }
    return routes;
  }

  private reply(res: http.ServerResponse, status: number, text: string): void {
    this.requests.inc({ code: String(status) });
    plainReply(res, status, text);
  }

  private onRequest(
    port: number,
    req: http.IncomingMessage,
    res: http.ServerResponse,
    secure: boolean,
  ): void {
    const host = requestHost(req);
    const routes = this.routesFor(port, host);
    if (!routes) {
      req.resume();
      this.reply(res, 404, `no route for host ${host || '(none)'}`);
      return;
    }
    const choice = chooseRoute(routes, {
      host,
      url: req.url ?? '/',
      method: req.method ?? 'GET',
      headers: req.headers,
    });
    if (!choice) {
      req.resume();
      this.reply(res, 404, 'no route matched');
      return;
    }
    const { route } = choice;
    const dest = pickWeighted(route.destinations, this.random)!;
    const target = resolveDestination(this.table, dest, route.namespace);
    if (!target) {
      req.resume();
      this.reply(res, 503, `no such service ${dest.host}${dest.port ? `:${dest.port}` : ''}`);
      return;
    }
    const { service, port: svcPort } = target;
    const balancer = this.balancers.get(service, svcPort);
    const client = clientIp(req.socket);
    const ctx: PickContext = { clientIp: client };
    const headers: string[] = [];
    const raw = req.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i]!.toLowerCase();
      if (!REQUEST_DROPPED.has(name) && name !== 'x-forwarded-for' && name !== 'x-forwarded-proto')
        headers.push(raw[i]!, raw[i + 1]!);
    }
    const xff = req.headers['x-forwarded-for'];
    headers.push('host', req.headers.host ?? host);
    headers.push('x-forwarded-for', xff ? `${xff}, ${client}` : client);
    headers.push('x-forwarded-proto', secure ? 'https' : 'http');
    const hasBody =
      req.headers['transfer-encoding'] !== undefined ||
      (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
    // Retries only for requests without a body (a streamed body cannot be sent twice).
    const maxTries = 1 + (hasBody ? 0 : (route.retries?.attempts ?? 0));
    const totalMs = (route.timeoutSeconds ?? DEFAULT_TIMEOUT_MS / 1000) * 1000;
    const perTryMs = route.retries?.perTryTimeoutSeconds
      ? route.retries.perTryTimeoutSeconds * 1000
      : totalMs;
    const deadline = Date.now() + totalMs;
    const tried = new Set<string>();
    const name = `${service.key}:${svcPort.port}`;

    const attempt = (n: number): void => {
      let ep: Endpoint | undefined = balancer.pick(ctx, tried);
      if (!ep && tried.size > 0) ep = balancer.pick(ctx);
      if (!ep) {
        req.resume();
        this.reply(res, 503, `no healthy upstream for service ${name}`);
        return;
      }
      tried.add(endpointKey(ep));
      const chosen = ep;
      const ac = new AbortController();
      const budget = Math.max(1, Math.min(perTryMs, deadline - Date.now()));
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        ac.abort();
      }, budget);
      const onClientGone = () => {
        if (!res.writableFinished) ac.abort();
      };
      res.once('close', onClientGone);
      const retryable = () => n + 1 < maxTries && Date.now() < deadline && !res.destroyed;
      this.poolFor(chosen)
        .request({
          path: choice.path,
          method: (req.method ?? 'GET') as 'GET',
          headers,
          body: hasBody ? req : null,
          signal: ac.signal,
        })
        .then(
          (up) => {
            const status = up.statusCode;
            if (status >= 500 && retryable()) {
              clearTimeout(timer);
              res.off('close', onClientGone);
              balancer.onResult?.(chosen, false, status);
              up.body.dump().catch(() => {});
              attempt(n + 1);
              return;
            }
            const out: Record<string, string | string[]> = {};
            for (const [k, v] of Object.entries(up.headers))
              if (v !== undefined && !RESPONSE_HOP_BY_HOP.has(k)) out[k] = v;
            this.requests.inc({ code: String(status) });
            res.writeHead(status, out);
            up.body.on('error', () => res.destroy());
            up.body.pipe(res);
            res.once('finish', () => clearTimeout(timer));
            res.once('close', () => {
              clearTimeout(timer);
              balancer.onResult?.(chosen, status < 500, status);
            });
          },
          (err: { code?: string }) => {
            clearTimeout(timer);
            res.off('close', onClientGone);
            if (res.destroyed && !timedOut) {
              balancer.onResult?.(chosen, true, 200);
              return;
            }
            const connectFailed = CONNECT_ERRORS.has(err.code ?? '');
            balancer.onResult?.(chosen, false, connectFailed ? CONNECT_FAILURE : timedOut ? 504 : 502);
            if ((connectFailed && !req.readableDidRead && n + 1 < 3) || (!hasBody && retryable())) {
              attempt(n + 1);
              return;
            }
            if (timedOut) this.reply(res, 504, `upstream timeout for service ${name}`);
            else if (connectFailed) this.reply(res, 503, `upstream connect error for service ${name}`);
            else this.reply(res, 502, `upstream error for service ${name}`);
          },
        );
    };
    attempt(0);
  }

  private poolFor(ep: Endpoint): Pool {
    const origin = ep.ip.includes(':') ? `http://[${ep.ip}]:${ep.port}` : `http://${ep.ip}:${ep.port}`;
    let pool = this.pools.get(origin);
    if (!pool) {
      pool = new Pool(origin, {
        keepAliveTimeout: 4000,
        connect: { timeout: 5000, noDelay: true },
        headersTimeout: 0,
        bodyTimeout: 0,
      });
      this.pools.set(origin, pool);
    }
    return pool;
  }

  /** TLS passthrough servers: the SNI of the ClientHello picks a tls[] route; bytes pass untouched. */
  private async onTls(port: number, socket: net.Socket): Promise<void> {
    socket.pause();
    socket.on('error', () => socket.destroy());
    const first = await peek(
      socket,
      (b) => parseClientHello(b).status !== 'incomplete',
      MAX_CLIENT_HELLO,
      PEEK_TIMEOUT_MS,
    );
    const hello = parseClientHello(first);
    const sni = hello.status === 'complete' ? hello.sni?.toLowerCase() : undefined;
    let found: { dest: RouteDestination; ns: string } | undefined;
    if (sni !== undefined) {
      for (const server of this.plans.get(port)?.servers ?? []) {
        if (!server.hosts.some((h) => hostMatches(h, sni))) continue;
        for (const vs of server.virtualServices) {
          const r = vs.tls.find(
            (t) => (t.port === undefined || t.port === port) && t.sniHosts.some((h) => hostMatches(h, sni)),
          );
          const dest = r && pickWeighted(r.destinations, this.random);
          if (dest) {
            found = { dest, ns: vs.namespace };
            break;
          }
        }
        if (found) break;
      }
    }
    this.forwardStream(socket, found, first);
  }

  /** Connects a client stream to a route destination (replaying `first`), or closes it. */
  private forwardStream(
    socket: net.Socket,
    found: { dest: RouteDestination; ns: string } | undefined,
    first?: Buffer,
  ): void {
    const target = found && resolveDestination(this.table, found.dest, found.ns);
    if (!target || socket.destroyed) {
      socket.destroy();
      return;
    }
    const balancer = this.balancers.get(target.service, target.port);
    socket.pause();
    void connectUpstream(balancer, { clientIp: clientIp(socket) }).then((up) => {
      if (!up) {
        socket.destroy();
        return;
      }
      if (socket.destroyed) {
        up.socket.destroy();
        balancer.onResult?.(up.endpoint, true);
        return;
      }
      if (first && first.length > 0) up.socket.write(first);
      tunnel(socket, up.socket, () => balancer.onResult?.(up.endpoint, true));
    });
  }

  /** TCP and terminated-TLS servers: the first tcp[] route of a bound VirtualService covering this port. */
  private onTcp(port: number, socket: net.Socket): void {
    socket.on('error', () => socket.destroy());
    const plan = this.plans.get(port);
    if (plan?.protocol === 'TLS') {
      void this.onTls(port, socket);
      return;
    }
    let found: { dest: RouteDestination; ns: string } | undefined;
    for (const server of plan?.servers ?? []) {
      for (const vs of server.virtualServices) {
        const r = vs.tcp.find((t) => t.ports.length === 0 || t.ports.includes(port));
        const dest = r && pickWeighted(r.destinations, this.random);
        if (dest) {
          found = { dest, ns: vs.namespace };
          break;
        }
      }
      if (found) break;
    }
    this.forwardStream(socket, found);
  }
}

export type { ServerPlan };
