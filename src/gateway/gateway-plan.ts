// From a ServiceTable to what the gateway should serve: for each port, its protocol, the Gateway
// servers on it (hosts, TLS settings) and the VirtualServices bound to those Gateways. Rebuilt on
// every snapshot; listeners read the current plan per request/connection, so route changes apply
// without touching sockets.
import type { KubeObject, ServiceTable } from '../controller/types.ts';
import {
  boundTo,
  compileHttpRoutes,
  type HttpRoute,
  parseDestinations,
  type RouteDestination,
} from './http-routes.ts';

/**
 * How a port is served. HTTP2/GRPC are served as HTTP/1.1; TLS is passthrough by SNI (or no tls
 * settings); TLS_TERMINATED is `protocol: TLS` with tls.mode SIMPLE/MUTUAL: the gateway terminates
 * TLS and the decrypted stream follows tcp[] routes (as Istio does).
 */
export type ServerProtocol = 'HTTP' | 'HTTPS' | 'TCP' | 'TLS' | 'TLS_TERMINATED';

/** TLS settings of one Gateway server. */
export interface ServerTls {
  mode: 'SIMPLE' | 'MUTUAL' | 'PASSTHROUGH';
  credentialName: string;
  minProtocolVersion?: string;
  maxProtocolVersion?: string;
  cipherSuites?: string[];
}

/** A VirtualService as the gateway uses it. */
export interface BoundVirtualService {
  key: string;
  namespace: string;
  hosts: string[];
  http: HttpRoute[];
  /** tcp[] routes: first whose match ports include the listener port (or has no match). */
  tcp: Array<{ ports: number[]; destinations: RouteDestination[] }>;
  /** tls[] routes (passthrough by SNI): one entry per match[] element. */
  tls: Array<{ sniHosts: string[]; port?: number; destinations: RouteDestination[] }>;
}

/** One servers[] entry of one Gateway. */
export interface ServerPlan {
  gateway: string;
  namespace: string;
  hosts: string[];
  tls?: ServerTls;
  virtualServices: BoundVirtualService[];
}

/** Everything served on one port. */
export interface PortPlan {
  port: number;
  protocol: ServerProtocol;
  servers: ServerPlan[];
  /** `namespace/name` of every Gateway with a server on this port (for logs and metrics). */
  gateways: string[];
}

function rec(v: unknown): Record<string, unknown> | undefined {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : undefined;
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}

/** True when every selector label of the Gateway is among the gateway's own labels. */
export function selectorMatches(gw: KubeObject, labels: Readonly<Record<string, string>>): boolean {
  const sel = rec(gw.spec?.selector) ?? {};
  return Object.entries(sel).every(([k, v]) => labels[k] === v);
}

function protocolOf(p: unknown): ServerProtocol | undefined {
  const s = typeof p === 'string' ? p.toUpperCase() : '';
  if (s === 'HTTP' || s === 'HTTP2' || s === 'GRPC') return 'HTTP';
  if (s === 'HTTPS' || s === 'TCP' || s === 'TLS') return s;
  return undefined;
}

const tlsVersions: Record<string, string> = {
  TLSV1_0: 'TLSv1',
  TLSV1_1: 'TLSv1.1',
  TLSV1_2: 'TLSv1.2',
  TLSV1_3: 'TLSv1.3',
};

function tlsOf(v: unknown): ServerTls | undefined {
  const t = rec(v);
  if (!t) return undefined;
  const mode = typeof t.mode === 'string' ? t.mode.toUpperCase() : 'SIMPLE';
  if (mode !== 'SIMPLE' && mode !== 'MUTUAL' && mode !== 'PASSTHROUGH') return undefined;
  const out: ServerTls = {
    mode,
    credentialName: typeof t.credentialName === 'string' ? t.credentialName : '',
  };
  const min = tlsVersions[String(t.minProtocolVersion ?? '').toUpperCase()];
  const max = tlsVersions[String(t.maxProtocolVersion ?? '').toUpperCase()];
  if (min) out.minProtocolVersion = min;
  if (max) out.maxProtocolVersion = max;
  const ciphers = strings(t.cipherSuites);
  if (ciphers.length > 0) out.cipherSuites = ciphers;
  return out;
}

function bindVirtualService(vs: KubeObject): BoundVirtualService {
  const namespace = vs.metadata.namespace ?? 'default';
  const tcp: BoundVirtualService['tcp'] = [];
  for (const r of Array.isArray(vs.spec?.tcp) ? vs.spec.tcp : []) {
    const route = rec(r);
    if (!route) continue;
    const ports = (Array.isArray(route.match) ? route.match : [])
      .map((m) => rec(m)?.port)
      .filter((p): p is number => typeof p === 'number');
    const destinations = parseDestinations(route.route);
    if (destinations.length > 0) tcp.push({ ports, destinations });
  }
  const tlsRoutes: BoundVirtualService['tls'] = [];
  for (const r of Array.isArray(vs.spec?.tls) ? vs.spec.tls : []) {
    const route = rec(r);
    const destinations = parseDestinations(route?.route);
    if (!route || destinations.length === 0) continue;
    for (const m of Array.isArray(route.match) ? route.match : []) {
      const match = rec(m);
      const sniHosts = strings(match?.sniHosts).map((h) => h.toLowerCase());
      if (sniHosts.length === 0) continue;
      const port = match?.port;
      tlsRoutes.push({ sniHosts, destinations, ...(typeof port === 'number' ? { port } : {}) });
    }
  }
  return {
    key: `${namespace}/${vs.metadata.name}`,
    tls: tlsRoutes,
    namespace,
    hosts: strings(vs.spec?.hosts).map((h) => h.toLowerCase()),
    http: compileHttpRoutes(vs),
    tcp,
  };
}

/** Problems found while planning (logged by the caller, never fatal). */
export interface PlanIssue {
  gateway: string;
  port?: number;
  message: string;
}

/** The ports to serve for the Gateways in `table` that select `labels`. */
export function planGateways(
  table: ServiceTable,
  labels: Readonly<Record<string, string>>,
  issues: PlanIssue[] = [],
): Map<number, PortPlan> {
  const plans = new Map<number, PortPlan>();
  const vss = [...table.virtualServices.values()].sort((a, b) =>
    `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`),
  );
  const gateways = [...table.gateways.entries()].sort(([a], [b]) => a.localeCompare(b));
  for (const [key, gw] of gateways) {
    if (!selectorMatches(gw, labels)) continue;
    const namespace = gw.metadata.namespace ?? 'default';
    const bound = vss.filter((vs) => boundTo(vs, key)).map(bindVirtualService);
    for (const s of Array.isArray(gw.spec?.servers) ? gw.spec.servers : []) {
      const server = rec(s);
      const portRec = rec(server?.port);
      const port = portRec?.number;
      if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
        issues.push({ gateway: key, message: 'server without a valid port.number skipped' });
        continue;
      }
      let protocol = protocolOf(portRec?.protocol);
      if (!protocol) {
        issues.push({ gateway: key, port, message: `unsupported protocol ${String(portRec?.protocol)}` });
        continue;
      }
      const tls = tlsOf(server?.tls);
      if (protocol === 'HTTPS' && tls?.mode === 'PASSTHROUGH') protocol = 'TLS';
      else if (protocol === 'TLS' && tls && tls.mode !== 'PASSTHROUGH') protocol = 'TLS_TERMINATED';
      if ((protocol === 'HTTPS' || protocol === 'TLS_TERMINATED') && (!tls || tls.credentialName === '')) {
        issues.push({
          gateway: key,
          port,
          message: `${protocol === 'HTTPS' ? 'HTTPS' : 'TLS (SIMPLE/MUTUAL)'} server without tls.credentialName skipped`,
        });
        continue;
      }
      const plan: ServerPlan = {
        gateway: key,
        namespace,
        hosts: strings(server?.hosts).map((h) => h.toLowerCase()),
        virtualServices: bound,
        ...(tls ? { tls } : {}),
      };
      if (plan.hosts.length === 0) plan.hosts = ['*'];
      const existing = plans.get(port);
      if (!existing) {
        plans.set(port, { port, protocol, servers: [plan], gateways: [key] });
      } else if (existing.protocol !== protocol) {
        issues.push({
          gateway: key,
          port,
          message: `port already served as ${existing.protocol} by ${existing.gateways.join(',')}; ${protocol} server skipped`,
        });
      } else {
        existing.servers.push(plan);
        if (!existing.gateways.includes(key)) existing.gateways.push(key);
      }
    }
  }
  return plans;
}
