// Per-service-port endpoint choice: Istio DestinationRule load balancing (simple policies and
// consistent hashing), Service ClientIP session affinity, outlier ejection, and endpoint
// preference (ready before terminating, same node before others). One Balancer lives as long as
// its service port; update() hands it each new snapshot so its state (rotation, ejections,
// affinity, in-flight counts) survives endpoint changes.
import type { Endpoint, LoadBalancerPolicy, ServiceEntry, ServicePortEntry } from '../controller/types.ts';
import { parseDurationSeconds } from './duration.ts';
import { endpointKey } from './endpoint-key.ts';
import { DEFAULT_MAGLEV_TABLE_SIZE, MaglevTable } from './maglev.ts';
import { murmur3 } from './murmur3.ts';
import { CONNECT_FAILURE, OutlierDetector, type ResultStatus } from './outlier-detector.ts';
import { DEFAULT_RING_SIZE, HashRing } from './ring-hash.ts';
import { SessionAffinityTable } from './session-affinity.ts';

/** What a pick may depend on. */
export interface PickContext {
  /** Client IP (no port): source-IP hashing and ClientIP session affinity use it. */
  clientIp: string;
  /** Header/cookie/query value for consistentHash (the L7 handler extracts it; see hashSource). */
  hashKey?: string;
  /** Original destination `ip:port` the client asked for (PASSTHROUGH uses it when it is an endpoint). */
  originalDst?: string;
}

/** Where a consistent-hash key comes from; L7 handlers read it to fill PickContext.hashKey. */
export type HashSource =
  | { kind: 'header'; name: string }
  | { kind: 'cookie'; name: string; path?: string; ttlSeconds?: number }
  | { kind: 'query'; name: string }
  | { kind: 'sourceIp' };

/** The policy a balancer applies, after defaults. */
export type PolicyKind = 'ROUND_ROBIN' | 'RANDOM' | 'LEAST_REQUEST' | 'PASSTHROUGH' | 'RING_HASH' | 'MAGLEV';

/** Chooses an endpoint for each connection/request of one service port. */
export interface Balancer {
  readonly kind: PolicyKind;
  /** Set for consistentHash policies. */
  readonly hashSource: HashSource | undefined;
  /**
   * An endpoint for this request, never one in `exclude` (keys `ip:port`); undefined when none is
   * usable. Each returned endpoint counts as in flight until onResult() is called for it once.
   */
  pick(ctx: PickContext, exclude?: ReadonlySet<string>): Endpoint | undefined;
  /**
   * Outcome of a pick: `ok` false with status 0 (CONNECT_FAILURE) for a failed connect, or the
   * HTTP status for L7 (5xx feed outlier detection). Ends the in-flight count of that pick.
   */
  onResult?(ep: Endpoint, ok: boolean, status?: ResultStatus): void;
  /** Hands the balancer the new snapshot of its service port (state is kept). */
  update?(service: ServiceEntry, port: ServicePortEntry): void;
}

/** Knobs that do not come from the snapshot. */
export interface BalancerOptions {
  /** This node's name: endpoints on it are preferred. Unset: no locality preference. */
  nodeName?: string;
  /** Random source in [0, 1) (tests inject a seeded one). */
  random?: () => number;
  /** Clock in ms (tests inject one). */
  now?: () => number;
  /**
   * Bounded-load factor for consistent hashing (Mirrokni et al.): an endpoint with more than
   * factor × average in-flight requests is skipped for the next one on the ring. 0 = off (default),
   * so affinity stays strict; values >= 1 enable it (1.25 is typical).
   */
  hashBalanceFactor?: number;
}

/** The concrete balancer (exported for the data planes' stats and for tests). */
export class ServiceBalancer implements Balancer {
  kind: PolicyKind = 'ROUND_ROBIN';
  hashSource: HashSource | undefined;
  /** Candidate tiers in preference order; each is sorted by key and non-empty. */
  private tiers: Endpoint[][] = [];
  private keys = new Set<string>();
  private rings: Array<HashRing | MaglevTable | undefined> = [];
  private ringSize = DEFAULT_RING_SIZE;
  private maglevSize = DEFAULT_MAGLEV_TABLE_SIZE;
  private rrCounter = 0;
  private readonly inflight = new Map<string, number>();
  private totalInflight = 0;
  private readonly outliers: OutlierDetector;
  private affinity: SessionAffinityTable | undefined;
  private readonly random: () => number;
  private readonly now: () => number;
  private readonly balanceFactor: number;
  private readonly nodeName: string | undefined;
  /** Service key, for logs and 503 bodies. */
  serviceKey = '';

  constructor(service: ServiceEntry, port: ServicePortEntry, opts: BalancerOptions = {}) {
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? Date.now;
    this.balanceFactor = opts.hashBalanceFactor ?? 0;
    this.nodeName = opts.nodeName;
    this.outliers = new OutlierDetector(port.trafficPolicy?.outlierDetection, this.now);
    this.update(service, port);
  }

  update(service: ServiceEntry, port: ServicePortEntry): void {
    this.serviceKey = service.key;
    const lb = port.trafficPolicy?.loadBalancer;
    this.applyPolicy(lb);
    // Tiers: ready before serving-but-terminating (kube-proxy's fallback); in each, this node
    // first, then nodes the tunnel reaches directly, then nodes behind a relay.
    const byKey = new Map<string, Endpoint>();
    for (const ep of port.endpoints) {
      const key = endpointKey(ep);
      if (!byKey.has(key)) byKey.set(key, ep);
    }
    const sorted = [...byKey.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    const buckets: Endpoint[][] = [[], [], [], [], [], []];
    for (const [, ep] of sorted) {
      const rank =
        this.nodeName !== undefined && ep.nodeName === this.nodeName ? 0 : ep.tunnelPath === 'relay' ? 2 : 1;
      if (ep.ready) buckets[rank]!.push(ep);
      else if (ep.serving && ep.terminating) buckets[3 + rank]!.push(ep);
    }
    this.tiers = buckets.filter((t) => t.length > 0);
    this.rings = this.tiers.map(() => undefined);
    this.keys = new Set(this.tiers.flat().map(endpointKey));
    this.outliers.update(port.trafficPolicy?.outlierDetection, this.keys);
    for (const key of this.inflight.keys()) {
      if (!this.keys.has(key)) {
        this.totalInflight -= this.inflight.get(key)!;
        this.inflight.delete(key);
      }
    }
    if (service.sessionAffinity.type === 'ClientIP' && !lb?.consistentHash) {
      const timeout = service.sessionAffinity.timeoutSeconds || 10800;
      if (this.affinity) this.affinity.setTimeout(timeout);
      else this.affinity = new SessionAffinityTable(timeout * 1000, this.now);
    } else {
      this.affinity = undefined;
    }
  }

  private applyPolicy(lb: LoadBalancerPolicy | undefined): void {
    const ch = lb?.consistentHash;
    if (ch) {
      this.kind = ch.maglev ? 'MAGLEV' : 'RING_HASH';
      this.ringSize = ch.ringHash?.minimumRingSize ?? ch.minimumRingSize ?? DEFAULT_RING_SIZE;
      this.maglevSize = ch.maglev?.tableSize ?? DEFAULT_MAGLEV_TABLE_SIZE;
      if (ch.httpHeaderName) this.hashSource = { kind: 'header', name: ch.httpHeaderName.toLowerCase() };
      else if (ch.httpCookie) {
        const ttl = parseDurationSeconds(ch.httpCookie.ttl);
        this.hashSource = {
          kind: 'cookie',
          name: ch.httpCookie.name,
          ...(ch.httpCookie.path !== undefined ? { path: ch.httpCookie.path } : {}),
          ...(ttl !== undefined ? { ttlSeconds: ttl } : {}),
        };
      } else if (ch.httpQueryParameterName)
        this.hashSource = { kind: 'query', name: ch.httpQueryParameterName };
      else if (ch.useSourceIp) this.hashSource = { kind: 'sourceIp' };
      else this.hashSource = undefined;
      return;
    }
    this.hashSource = undefined;
    const simple = lb?.simple ?? 'ROUND_ROBIN';
    this.kind = simple === 'LEAST_CONN' ? 'LEAST_REQUEST' : simple;
  }

  /** Usable endpoints of the most preferred tier that has any; panic: ignore ejections if none. */
  private candidates(exclude: ReadonlySet<string> | undefined): { tier: number; list: Endpoint[] } {
    for (let t = 0; t < this.tiers.length; t++) {
      const list = this.tiers[t]!.filter((ep) => {
        const key = endpointKey(ep);
        return !exclude?.has(key) && !this.outliers.isEjected(key);
      });
      if (list.length > 0) return { tier: t, list };
    }
    // Every endpoint is ejected (or excluded): Envoy's panic mode — better to try one than to fail.
    for (let t = 0; t < this.tiers.length; t++) {
      const list = this.tiers[t]!.filter((ep) => !exclude?.has(endpointKey(ep)));
      if (list.length > 0) return { tier: t, list };
    }
    return { tier: -1, list: [] };
  }

  pick(ctx: PickContext, exclude?: ReadonlySet<string>): Endpoint | undefined {
    const { tier, list } = this.candidates(exclude);
    if (list.length === 0) return undefined;
    const ep = this.choose(ctx, tier, list);
    const key = endpointKey(ep);
    this.inflight.set(key, (this.inflight.get(key) ?? 0) + 1);
    this.totalInflight++;
    return ep;
  }

  private choose(ctx: PickContext, tier: number, list: Endpoint[]): Endpoint {
    if (this.affinity) {
      const remembered = this.affinity.get(ctx.clientIp);
      const hit = remembered !== undefined ? list.find((ep) => endpointKey(ep) === remembered) : undefined;
      const ep = hit ?? this.chooseSimple(ctx, list);
      this.affinity.set(ctx.clientIp, endpointKey(ep));
      return ep;
    }
    if (this.kind === 'RING_HASH' || this.kind === 'MAGLEV') {
      const key = this.hashSource?.kind === 'sourceIp' ? ctx.clientIp : ctx.hashKey;
      // No key (header/cookie/query absent): Envoy picks at random; we rotate, which spreads better.
      if (key !== undefined) return this.chooseHashed(murmur3(key), tier, list);
    }
    return this.chooseSimple(ctx, list);
  }

  private chooseSimple(ctx: PickContext, list: Endpoint[]): Endpoint {
    switch (this.kind) {
      case 'RANDOM':
        return list[Math.floor(this.random() * list.length)]!;
      case 'LEAST_REQUEST': {
        if (list.length === 1) return list[0]!;
        // Power of two choices: two distinct random candidates, the one with fewer in flight wins.
        const i = Math.floor(this.random() * list.length);
        let j = Math.floor(this.random() * (list.length - 1));
        if (j >= i) j++;
        const a = list[i]!;
        const b = list[j]!;
        return this.load(b) < this.load(a) ? b : a;
      }
      case 'PASSTHROUGH': {
        const dst = ctx.originalDst;
        const hit = dst !== undefined ? list.find((ep) => endpointKey(ep) === dst) : undefined;
        return hit ?? list[Math.floor(this.random() * list.length)]!;
      }
      default: {
        const ep = list[this.rrCounter % list.length]!;
        this.rrCounter = (this.rrCounter + 1) % 0x7fffffff;
        return ep;
      }
    }
  }

  private chooseHashed(hash: number, tier: number, list: Endpoint[]): Endpoint {
    let ring = this.rings[tier];
    if (!ring) {
      // The ring covers the whole tier (ejected members included) so an ejection moves only the
      // keys of the ejected member, and its return moves them back.
      ring =
        this.kind === 'MAGLEV'
          ? new MaglevTable(this.tiers[tier]!, this.maglevSize)
          : new HashRing(this.tiers[tier]!, this.ringSize);
      this.rings[tier] = ring;
    }
    const usable = new Set(list.map(endpointKey));
    const bound =
      this.balanceFactor >= 1 ? Math.ceil((this.balanceFactor * (this.totalInflight + 1)) / list.length) : 0;
    let first: Endpoint | undefined;
    for (const ep of ring.walk(hash)) {
      if (!usable.has(endpointKey(ep))) continue;
      first ??= ep;
      if (bound === 0 || this.load(ep) + 1 <= bound) return ep;
    }
    return first ?? list[0]!;
  }

  private load(ep: Endpoint): number {
    return this.inflight.get(endpointKey(ep)) ?? 0;
  }

  onResult(ep: Endpoint, ok: boolean, status?: ResultStatus): void {
    const key = endpointKey(ep);
    const n = this.inflight.get(key);
    if (n !== undefined) {
      if (n <= 1) this.inflight.delete(key);
      else this.inflight.set(key, n - 1);
      this.totalInflight--;
    }
    if (!this.keys.has(key)) return;
    const effective = status ?? (ok ? 200 : CONNECT_FAILURE);
    const ejected = this.outliers.record(key, effective);
    if (ejected) this.affinity?.forgetKey(key);
  }

  /** In-flight picks per endpoint key (for status and tests). */
  inFlight(): ReadonlyMap<string, number> {
    return this.inflight;
  }

  /** True while `ep` is ejected by outlier detection. */
  isEjected(ep: Endpoint): boolean {
    return this.outliers.isEjected(endpointKey(ep));
  }

  /** How many endpoints are ejected right now. */
  ejectedCount(): number {
    return this.outliers.ejectedCount();
  }

  /** Ejections so far. */
  get ejections(): number {
    return this.outliers.ejectionsTotal;
  }

  /** Number of endpoints this balancer may choose from (all tiers). */
  get size(): number {
    return this.keys.size;
  }
}

/** A balancer for one service port with its DestinationRule policy and session affinity. */
export function createBalancer(
  service: ServiceEntry,
  port: ServicePortEntry,
  opts: BalancerOptions = {},
): ServiceBalancer {
  return new ServiceBalancer(service, port, opts);
}
