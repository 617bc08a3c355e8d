// Encodes a ServiceTable into the flat routing-table buffer the native plane decodes
// (layout: native/src/core/routing_table.h). Pure: snapshot in, bytes + interception targets out.
import net from 'node:net';
import type { Endpoint, ServiceEntry, ServicePortEntry, ServiceTable } from '../../controller/types.ts';
import { DEFAULT_RING_SIZE } from '../../lb/ring-hash.ts';
import type { InterceptTarget } from '../../proxier/interceptor.ts';
import { hasLoopbackTaker } from '../../util/loopback-takers.ts';
import { canonicalIp, type IpFamily } from '../../util/net.ts';

/** "EMR2": addresses of either family in 16 bytes (IPv4 as ::ffff:a.b.c.d). */
export const ROUTE_MAGIC = 0x32524d45;
/** "EMR1", the IPv4-only version 1 layout the addon refuses by name. */
export const ROUTE_MAGIC_V1 = 0x31524d45;
export const ROUTE_HEADER_SIZE = 16;
export const ROUTE_ENTRY_SIZE = 36;
export const ROUTE_ENDPOINT_SIZE = 20;
/** Offset of the flags byte inside a route entry (after vip[16], port u16, policy u8). */
export const ROUTE_FLAGS_OFFSET = 19;
/** Slot value meaning "no per-service counters". */
export const NO_SERVICE_SLOT = 0xffffffff;
/** Kubernetes' default sessionAffinityConfig.clientIP.timeoutSeconds. */
export const DEFAULT_AFFINITY_TIMEOUT_S = 10_800;

/** L4 policies the native plane implements (routing_table.h LbPolicy). */
export const LbPolicyCode = { ROUND_ROBIN: 0, RANDOM: 1, SOURCE_IP_HASH: 2 } as const;
export const ROUTE_FLAG_AFFINITY = 1;
/** The plane hands the accepted fd to TS instead of connecting (routing_table.h kRouteFlagHandoff). */
export const ROUTE_FLAG_HANDOFF = 2;
/**
 * Every endpoint is one of this agent's tunnel ports: the plane picks one and hands the client fd
 * to TS with it (no second loopback connection; routing_table.h kRouteFlagTunnel).
 */
export const ROUTE_FLAG_TUNNEL = 4;

/** One route as encoded (also what tests and /status read back). */
export interface NativeRoute {
  /** `namespace/name:port`. */
  id: string;
  serviceKey: string;
  vip: string;
  port: number;
  policy: number;
  affinityTimeoutS: number;
  slot: number;
  connectTimeoutMs: number;
  endpoints: { ip: string; port: number }[];
  /**
   * True when the port needs the TS plane: its hash reads L7 data (header/cookie/query) the native
   * plane cannot see, or uses Maglev / a non-default ring size the native ring does not implement.
   */
  needsL7: boolean;
  /** Connections are handed to TS (which runs the protocol handlers) instead of forwarded natively. */
  handoff: boolean;
  /** The endpoints are tunnel ports (Endpoint.tunnelPath): the client fd goes to the tunnel with the chosen one. */
  tunnel?: boolean;
}

/** Stable per-service counter slots: a service keeps its slot while it exists; freed slots are reused. */
export class ServiceSlots {
  private readonly byKey = new Map<string, number>();
  private readonly free: number[] = [];
  private next = 0;

  constructor(readonly capacity: number) {}

  /** The slot of `key`, assigning one if needed; NO_SERVICE_SLOT when all are taken. */
  assign(key: string): number {
    const have = this.byKey.get(key);
    if (have !== undefined) return have;
    const slot = this.free.pop() ?? (this.next < this.capacity ? this.next++ : NO_SERVICE_SLOT);
    if (slot !== NO_SERVICE_SLOT) this.byKey.set(key, slot);
    return slot;
  }

  /** Frees the slots of keys not in `keep`; returns the freed slots (their counters restart). */
  retain(keep: ReadonlySet<string>): number[] {
    const freed: number[] = [];
    for (const [key, slot] of this.byKey) {
      if (keep.has(key)) continue;
      this.byKey.delete(key);
      this.free.push(slot);
      freed.push(slot);
    }
    return freed;
  }

  /** Number of slots handed out so far (the counter range worth reading). */
  get used(): number {
    return this.next;
  }

  /** [key, slot] pairs currently assigned. */
  entries(): IterableIterator<[string, number]> {
    return this.byKey.entries();
  }
}

/**
 * Tunnel tier of an endpoint, as the TS balancer orders them: not carried by the tunnel (this
 * node's own pods once the tunnel rewrote the snapshot) first, then direct peers, then relayed.
 */
function tunnelRank(e: Endpoint): number {
  return e.tunnelPath === 'relay' ? 2 : e.tunnelPath === 'direct' ? 1 : 0;
}

/** The endpoints of the best non-empty tunnel tier (all of them when the tunnel tags none). */
function bestTier(eps: readonly Endpoint[]): readonly Endpoint[] {
  if (eps.length === 0) return eps;
  let best = 2;
  for (const e of eps) best = Math.min(best, tunnelRank(e));
  return eps.filter((e) => tunnelRank(e) === best);
}

/**
 * A ClusterIP of one family gets endpoints of that family only (dual-stack Services carry one
 * EndpointSlice per family); the tunnel's loopback ports (tunnelPath set) serve either family.
 */
function chosenEndpoints(port: ServicePortEntry, family: IpFamily): readonly Endpoint[] {
  const eligible = port.endpoints.filter((e) => e.tunnelPath !== undefined || net.isIP(e.ip) === family);
  const chosen = bestTier(eligible.filter((e) => e.ready));
  return chosen.length > 0 ? chosen : bestTier(eligible.filter((e) => e.serving));
}

/** True when the routable endpoints (for a ClusterIP of `family`) are tunnel ports (one tier: all or none of them are). */
export function tunnelledPort(port: ServicePortEntry, family: IpFamily = 4): boolean {
  const first = chosenEndpoints(port, family)[0];
  return first !== undefined && tunnelRank(first) > 0;
}

/**
 * Endpoints the native plane may use for a ClusterIP of `family`: ready ones of that family
 * (serving+terminating when none is ready), of the best tunnel tier only (same node, then direct,
 * then relayed), de-duplicated, IPv6 in canonical text.
 */
export function routableEndpoints(
  port: ServicePortEntry,
  family: IpFamily = 4,
): { ip: string; port: number }[] {
  const chosen = chosenEndpoints(port, family);
  const seen = new Set<string>();
  const out: { ip: string; port: number }[] = [];
  for (const raw of chosen) {
    const e = { ip: canonicalIp(raw.ip), port: raw.port };
    const key = `${e.ip}:${e.port}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ ip: e.ip, port: e.port });
  }
  return out;
}

/** The native L4 policy of a port and whether its configured policy actually needs L7. */
export function nativePolicy(port: ServicePortEntry): { policy: number; needsL7: boolean } {
  const lb = port.trafficPolicy?.loadBalancer;
  const ch = lb?.consistentHash;
  if (ch) {
    // The native ring is the default one (1024 points); Maglev or another ring size would pick
    // differently from the TS balancer, so such ports go to the TS plane like L7 ones.
    const customRing =
      ch.maglev !== undefined ||
      (ch.ringHash?.minimumRingSize ?? ch.minimumRingSize ?? DEFAULT_RING_SIZE) !== DEFAULT_RING_SIZE;
    if (ch.useSourceIp) return { policy: LbPolicyCode.SOURCE_IP_HASH, needsL7: customRing };
    // Header/cookie/query hashing needs the request; natively the closest is the client IP.
    return { policy: LbPolicyCode.SOURCE_IP_HASH, needsL7: true };
  }
  if (lb?.simple === 'RANDOM') return { policy: LbPolicyCode.RANDOM, needsL7: false };
  return { policy: LbPolicyCode.ROUND_ROBIN, needsL7: false };
}

/**
 * The routes of a table: every TCP port of every proxied service on each of its ClusterIPs (IPv4
 * and IPv6); ports `handoff` selects are marked for hand-off to TS.
 */
export function tableRoutes(
  table: ServiceTable,
  slots: ServiceSlots,
  handoff?: (service: ServiceEntry, port: ServicePortEntry) => boolean,
): NativeRoute[] {
  const routes: NativeRoute[] = [];
  const keep = new Set<string>();
  const taken = new Set<string>();
  for (const svc of table.services.values()) {
    if (!isRoutable(svc)) continue;
    keep.add(svc.key);
    const slot = slots.assign(svc.key);
    for (const port of svc.ports) {
      if (port.protocol !== 'TCP') continue;
      const { policy, needsL7 } = nativePolicy(port);
      const handedOff = handoff?.(svc, port) ?? false;
      const byFamily = new Map<IpFamily, { endpoints: { ip: string; port: number }[]; tunnel: boolean }>();
      const forFamily = (family: IpFamily) => {
        let f = byFamily.get(family);
        if (!f) {
          const endpoints = routableEndpoints(port, family);
          // Only when this process serves every one of those ports (the tunnel registers them): the
          // plane then never hands off a client nobody here would take.
          const tunnel = tunnelledPort(port, family) && endpoints.every((e) => hasLoopbackTaker(e.port));
          f = { endpoints, tunnel };
          byFamily.set(family, f);
        }
        return f;
      };
      for (const rawVip of svc.clusterIPs) {
        const family = net.isIP(rawVip);
        if (family === 0) continue;
        const vip = canonicalIp(rawVip);
        // One route per ClusterIP:port (the native table rejects duplicates): the first service wins.
        if (taken.has(`${vip}:${port.port}`)) continue;
        taken.add(`${vip}:${port.port}`);
        const { endpoints, tunnel } = forFamily(family as IpFamily);
        routes.push({
          id: `${svc.key}:${port.name || port.port}`,
          serviceKey: svc.key,
          vip,
          port: port.port,
          policy,
          affinityTimeoutS:
            svc.sessionAffinity.type === 'ClientIP'
              ? svc.sessionAffinity.timeoutSeconds || DEFAULT_AFFINITY_TIMEOUT_S
              : 0,
          slot,
          connectTimeoutMs: port.trafficPolicy?.connectTimeoutMs ?? 0,
          endpoints,
          needsL7,
          handoff: handedOff,
          tunnel,
        });
      }
    }
  }
  slots.retain(keep);
  return routes;
}

function isRoutable(svc: ServiceEntry): boolean {
  return svc.proxied && !svc.headless && svc.type !== 'ExternalName' && svc.clusterIPs.length > 0;
}

/** Encodes routes into the native layout (little-endian; addresses as 16 network-order bytes). */
export function encodeRoutes(generation: number, routes: readonly NativeRoute[]): Buffer {
  let size = ROUTE_HEADER_SIZE;
  for (const r of routes) size += ROUTE_ENTRY_SIZE + r.endpoints.length * ROUTE_ENDPOINT_SIZE;
  const buf = Buffer.alloc(size);
  buf.writeUInt32LE(ROUTE_MAGIC, 0);
  buf.writeUInt32LE(generation >>> 0, 4);
  buf.writeUInt32LE(routes.length, 8);
  let off = ROUTE_HEADER_SIZE;
  for (const r of routes) {
    writeAddr(buf, off, r.vip);
    buf.writeUInt16LE(r.port, off + 16);
    buf.writeUInt8(r.policy, off + 18);
    buf.writeUInt8(
      (r.affinityTimeoutS > 0 ? ROUTE_FLAG_AFFINITY : 0) |
        (r.handoff ? ROUTE_FLAG_HANDOFF : 0) |
        (r.tunnel ? ROUTE_FLAG_TUNNEL : 0),
      off + ROUTE_FLAGS_OFFSET,
    );
    buf.writeUInt32LE(r.affinityTimeoutS >>> 0, off + 20);
    buf.writeUInt32LE(r.slot >>> 0, off + 24);
    buf.writeUInt32LE(Math.max(0, Math.min(0xffffffff, Math.round(r.connectTimeoutMs))), off + 28);
    buf.writeUInt32LE(r.endpoints.length, off + 32);
    off += ROUTE_ENTRY_SIZE;
    for (const ep of r.endpoints) {
      writeAddr(buf, off, ep.ip);
      buf.writeUInt16LE(ep.port, off + 16);
      off += ROUTE_ENDPOINT_SIZE;
    }
  }
  return buf;
}

/** The interception targets of `routes`: each ClusterIP:port redirected to the proxy port. */
export function routeTargets(routes: readonly NativeRoute[], proxyPort: number): InterceptTarget[] {
  return routes.map((r) => ({
    id: r.id,
    clusterIP: r.vip,
    port: r.port,
    protocol: 'TCP',
    toPort: proxyPort,
  }));
}

/** Writes `ip` as 16 bytes: IPv4 as ::ffff:a.b.c.d, IPv6 as is. The buffer starts zeroed. */
function writeAddr(buf: Buffer, off: number, ip: string): void {
  if (net.isIPv4(ip)) {
    buf.writeUInt16BE(0xffff, off + 10);
    writeV4(buf, off + 12, ip);
    return;
  }
  ipv6Bytes(ip).copy(buf, off);
}

function writeV4(buf: Buffer, off: number, ip: string): void {
  const parts = ip.split('.');
  for (let i = 0; i < 4; i++) buf.writeUInt8(Number(parts[i]) & 0xff, off + i);
}

/** The 16 bytes of an IPv6 literal (`::` anywhere, an embedded dotted quad at the end). */
export function ipv6Bytes(ip: string): Buffer {
  if (!net.isIPv6(ip)) throw new RangeError(`not an IPv6 address: ${ip}`);
  const out = Buffer.alloc(16);
  const [head = '', tail] = ip.split('::') as [string, string | undefined];
  const groups = (text: string): number[] => {
    if (text === '') return [];
    const words: number[] = [];
    for (const part of text.split(':')) {
      if (part.includes('.')) {
        const b = Buffer.alloc(4);
        writeV4(b, 0, part);
        words.push(b.readUInt16BE(0), b.readUInt16BE(2));
      } else {
        words.push(Number.parseInt(part, 16));
      }
    }
    return words;
  };
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const words = [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
  for (let i = 0; i < 8; i++) out.writeUInt16BE(words[i] ?? 0, i * 2);
  return out;
}
