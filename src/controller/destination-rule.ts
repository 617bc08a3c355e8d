// Istio DestinationRule → the TrafficPolicy of one Service port: destination-level settings with
// the matching portLevelSettings entry overriding them field by field (Istio's merge rule).
import { arr, num, port, rec, str } from './raw.ts';
import type { LoadBalancerPolicy, OutlierDetectionPolicy, TrafficPolicy } from './types.ts';

const durationUnits: Record<string, number> = {
  h: 3600,
  m: 60,
  s: 1,
  ms: 1e-3,
  us: 1e-6,
  µs: 1e-6,
  ns: 1e-9,
};

/** Seconds in an Istio/Go duration ("10s", "1.5s", "1m30s", "500ms"), or undefined if malformed. */
export function parseDurationSeconds(v: unknown): number | undefined {
  if (typeof v === 'number' && Number.isFinite(v) && v >= 0) return v;
  if (typeof v !== 'string') return undefined;
  const s = v.trim();
  if (s === '' || s === '0') return s === '0' ? 0 : undefined;
  const re = /(\d+(?:\.\d+)?)(h|ms|us|µs|ns|m|s)/y;
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    re.lastIndex = pos;
    const m = re.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * durationUnits[m[2]];
    pos = re.lastIndex;
  }
  return total;
}

const simplePolicies = new Set(['ROUND_ROBIN', 'RANDOM', 'LEAST_REQUEST', 'LEAST_CONN', 'PASSTHROUGH']);

function loadBalancer(v: unknown): LoadBalancerPolicy | undefined {
  const lb = rec(v);
  if (!lb) return undefined;
  const out: LoadBalancerPolicy = {};
  const simple = str(lb.simple);
  if (simple && simplePolicies.has(simple)) out.simple = simple as LoadBalancerPolicy['simple'];
  const ch = rec(lb.consistentHash);
  if (ch) {
    const hash: NonNullable<LoadBalancerPolicy['consistentHash']> = {};
    const header = str(ch.httpHeaderName);
    if (header) hash.httpHeaderName = header;
    const cookie = rec(ch.httpCookie);
    const cookieName = str(cookie?.name);
    if (cookie && cookieName) {
      hash.httpCookie = { name: cookieName };
      const path = str(cookie.path);
      const ttl = str(cookie.ttl);
      if (path) hash.httpCookie.path = path;
      if (ttl) hash.httpCookie.ttl = ttl;
    }
    if (ch.useSourceIp === true) hash.useSourceIp = true;
    const query = str(ch.httpQueryParameterName);
    if (query) hash.httpQueryParameterName = query;
    const minRing = num(ch.minimumRingSize);
    if (minRing !== undefined) hash.minimumRingSize = minRing;
    const ring = rec(ch.ringHash);
    if (ring)
      hash.ringHash =
        num(ring.minimumRingSize) === undefined ? {} : { minimumRingSize: num(ring.minimumRingSize) };
    const maglev = rec(ch.maglev);
    if (maglev) hash.maglev = num(maglev.tableSize) === undefined ? {} : { tableSize: num(maglev.tableSize) };
    out.consistentHash = hash;
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

function outlierDetection(v: unknown): OutlierDetectionPolicy | undefined {
  const od = rec(v);
  if (!od) return undefined;
  const out: OutlierDetectionPolicy = {};
  const c5xx = num(od.consecutive5xxErrors) ?? num(od.consecutiveErrors);
  if (c5xx !== undefined) out.consecutive5xxErrors = c5xx;
  const cgw = num(od.consecutiveGatewayErrors);
  if (cgw !== undefined) out.consecutiveGatewayErrors = cgw;
  const interval = parseDurationSeconds(od.interval);
  if (interval !== undefined) out.intervalSeconds = interval;
  const base = parseDurationSeconds(od.baseEjectionTime);
  if (base !== undefined) out.baseEjectionTimeSeconds = base;
  const maxPct = num(od.maxEjectionPercent);
  if (maxPct !== undefined) out.maxEjectionPercent = maxPct;
  return Object.keys(out).length > 0 ? out : undefined;
}

function connectTimeoutMs(v: unknown): number | undefined {
  const seconds = parseDurationSeconds(rec(rec(v)?.tcp)?.connectTimeout);
  return seconds === undefined ? undefined : Math.round(seconds * 1000);
}

/** The policy for `servicePort` from a DestinationRule's spec.trafficPolicy, or undefined. */
export function trafficPolicyFor(drSpec: unknown, servicePort: number): TrafficPolicy | undefined {
  const tp = rec(rec(drSpec)?.trafficPolicy);
  if (!tp) return undefined;
  const level = arr(tp.portLevelSettings)
    .map(rec)
    .find((s) => s && port(rec(s.port)?.number) === servicePort);
  const out: TrafficPolicy = {};
  const lb = loadBalancer(level?.loadBalancer) ?? loadBalancer(tp.loadBalancer);
  if (lb) out.loadBalancer = lb;
  const od = outlierDetection(level?.outlierDetection) ?? outlierDetection(tp.outlierDetection);
  if (od) out.outlierDetection = od;
  const ct = connectTimeoutMs(level?.connectionPool) ?? connectTimeoutMs(tp.connectionPool);
  if (ct !== undefined) out.connectTimeoutMs = ct;
  return Object.keys(out).length > 0 ? out : undefined;
}
