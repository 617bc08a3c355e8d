// Pure renderer: snapshot + interception targets -> the service entries the BPF maps must hold.
// L4 TCP services whose endpoints are directly reachable get socket-level LB (connect() goes
// straight to an endpoint) unless socketLb is off; every other intercepted service is sent to the
// local proxy port.
import net from 'node:net';
import type { Endpoint, ServicePortEntry, ServiceTable } from '../../controller/types.ts';
import type { InterceptTarget } from '../interceptor.ts';
import { Action, type ActionValue, MAX_BACKENDS, Policy, type PolicyValue } from './map-layout.ts';

/** One service address as the BPF maps will see it. */
export interface EbpfServiceEntry {
  /** `namespace/name:port` or the target id (logs, status). */
  id: string;
  clusterIP: string;
  port: number;
  action: ActionValue;
  policy: PolicyValue;
  /** EM_ACTION_LB: endpoints in slot order. */
  backends: readonly { ip: string; port: number }[];
  /**
   * The local proxy port: connect4's target for EM_ACTION_PROXY, and for any action where sk_lookup
   * steers clients outside the cgroup (other namespaces/hosts); 0 = none (the service is not proxied).
   */
  proxyPort: number;
}

export interface RenderSocketLbOptions {
  /** This node's name (endpoints on it are always directly reachable). */
  nodeName: string;
  /**
   * When true (the tunnel is enabled: endpoints may sit in other LANs), only endpoints on this
   * node count as directly reachable; otherwise every endpoint does.
   */
  localEndpointsOnly: boolean;
  /**
   * False: no socket-LB at all, every intercepted TCP service goes through the proxy (no NAT either:
   * connect4 rewrites to the proxy and SO_ORIGINAL_DST comes from the maps). Default true.
   */
  socketLb?: boolean;
}

/** The endpoints new connections may use: ready ones, else serving+terminating ones. */
function usable(port: ServicePortEntry): readonly Endpoint[] {
  const ready = port.endpoints.filter((e) => e.ready);
  return ready.length > 0 ? ready : port.endpoints.filter((e) => e.serving && e.terminating);
}

/** Socket-LB policy for a port; undefined when the policy needs L7 (header/cookie/query hashing). */
export function socketLbPolicy(
  port: ServicePortEntry,
  affinity: 'None' | 'ClientIP',
): PolicyValue | undefined {
  const lb = port.trafficPolicy?.loadBalancer;
  const hash = lb?.consistentHash;
  if (hash && (hash.httpHeaderName || hash.httpCookie || hash.httpQueryParameterName)) return undefined;
  if (hash?.useSourceIp || affinity === 'ClientIP') return Policy.source;
  if (lb?.simple === 'RANDOM') return Policy.random;
  // LEAST_REQUEST/LEAST_CONN need per-backend load the kernel hook does not see: round robin is the
  // closest connect-time equivalent.
  return Policy.roundRobin;
}

/** Renders the complete desired BPF service state, sorted by clusterIP then port. */
export function renderSocketLb(
  table: ServiceTable,
  targets: readonly InterceptTarget[],
  opts: RenderSocketLbOptions,
): EbpfServiceEntry[] {
  const out = new Map<string, EbpfServiceEntry>();
  for (const t of targets) {
    if (t.protocol !== 'TCP' || !net.isIPv4(t.clusterIP)) continue;
    out.set(`${t.clusterIP}:${t.port}`, {
      id: t.id,
      clusterIP: t.clusterIP,
      port: t.port,
      action: Action.proxy,
      policy: Policy.roundRobin,
      backends: [],
      proxyPort: t.toPort,
    });
  }
  if (opts.socketLb === false) return sortEntries([...out.values()]);
  for (const svc of table.services.values()) {
    if (!svc.proxied || svc.headless) continue;
    for (const port of svc.ports) {
      if (port.protocol !== 'TCP' || port.appProtocol !== 'tcp') continue;
      const policy = socketLbPolicy(port, svc.sessionAffinity.type);
      if (policy === undefined) continue;
      const eps = usable(port);
      const direct = eps.filter(
        (e) => net.isIPv4(e.ip) && (!opts.localEndpointsOnly || e.nodeName === opts.nodeName),
      );
      // Any endpoint we cannot reach directly means the proxy (tunnel) must be in the path.
      if (direct.length === 0 || direct.length !== eps.length || direct.length > MAX_BACKENDS) continue;
      for (const ip of svc.clusterIPs) {
        if (!net.isIPv4(ip)) continue;
        // Clients outside the cgroup (sk_lookup) still need the proxy, when the data plane serves it.
        const proxyPort = out.get(`${ip}:${port.port}`)?.proxyPort ?? 0;
        out.set(`${ip}:${port.port}`, {
          id: `${svc.key}:${port.name || port.port}`,
          clusterIP: ip,
          port: port.port,
          action: Action.lb,
          policy,
          backends: direct.map((e) => ({ ip: e.ip, port: e.port })),
          proxyPort,
        });
      }
    }
  }
  return sortEntries([...out.values()]);
}

/** Sorted by clusterIP then port (stable map writes and /status). */
function sortEntries(entries: EbpfServiceEntry[]): EbpfServiceEntry[] {
  return entries.sort((a, b) =>
    a.clusterIP === b.clusterIP ? a.port - b.port : a.clusterIP < b.clusterIP ? -1 : 1,
  );
}
