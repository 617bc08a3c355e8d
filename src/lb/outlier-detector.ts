// Passive health: Istio outlierDetection (consecutive 5xx / gateway errors, ejection time growing
// with each ejection, max ejection percent) plus connect-failure ejection when none is configured.
// Ejection is decided the moment a failure is recorded; return happens lazily when time is up.
import type { OutlierDetectionPolicy } from '../controller/types.ts';

/** What a finished request/connection reports: HTTP status, or 0 for "could not connect". */
export type ResultStatus = number;

/** Status recorded for a failed connect (Envoy maps local connect failures to a 503, as we do). */
export const CONNECT_FAILURE: ResultStatus = 0;

/** Effective detector settings after applying Istio's defaults. */
export interface OutlierSettings {
  consecutive5xxErrors: number;
  consecutiveGatewayErrors: number;
  /** Consecutive connect failures that eject even when the 5xx counters are off. */
  consecutiveConnectFailures: number;
  intervalMs: number;
  baseEjectionMs: number;
  maxEjectionMs: number;
  maxEjectionPercent: number;
}

/** Settings for a port: Istio defaults when a policy exists, passive connect-failure ejection otherwise. */
export function outlierSettings(policy: OutlierDetectionPolicy | undefined): OutlierSettings {
  if (!policy) {
    // No DestinationRule: only a refused/unreachable connect ejects (it is unambiguous and every
    // retry on it costs a round trip), briefly, and never below one usable endpoint (panic mode).
    return {
      consecutive5xxErrors: 0,
      consecutiveGatewayErrors: 0,
      consecutiveConnectFailures: 1,
      intervalMs: 10_000,
      baseEjectionMs: 5_000,
      maxEjectionMs: 60_000,
      maxEjectionPercent: 100,
    };
  }
  const base = (policy.baseEjectionTimeSeconds ?? 30) * 1000;
  return {
    consecutive5xxErrors: policy.consecutive5xxErrors ?? 5,
    consecutiveGatewayErrors: policy.consecutiveGatewayErrors ?? 0,
    consecutiveConnectFailures: 0,
    intervalMs: Math.max(1, (policy.intervalSeconds ?? 10) * 1000),
    baseEjectionMs: base,
    maxEjectionMs: Math.max(base, 300_000),
    maxEjectionPercent: policy.maxEjectionPercent ?? 10,
  };
}

interface HostState {
  consecutive5xx: number;
  consecutiveGateway: number;
  consecutiveConnect: number;
  /** Times ejected, decaying by one per healthy interval. */
  ejections: number;
  ejectedUntil: number;
  /** When the last ejection ended (for decay). */
  returnedAt: number;
}

/** Tracks consecutive failures per endpoint key and which endpoints are ejected right now. */
export class OutlierDetector {
  private settings: OutlierSettings;
  private readonly hosts = new Map<string, HostState>();
  private members = 0;
  /** Total ejections so far (for metrics). */
  ejectionsTotal = 0;

  constructor(
    policy: OutlierDetectionPolicy | undefined,
    private readonly now: () => number = Date.now,
  ) {
    this.settings = outlierSettings(policy);
  }

  /** Applies a new policy and the current member keys (state of removed members is dropped). */
  update(policy: OutlierDetectionPolicy | undefined, memberKeys: Iterable<string>): void {
    this.settings = outlierSettings(policy);
    const keep = new Set(memberKeys);
    this.members = keep.size;
    for (const key of this.hosts.keys()) if (!keep.has(key)) this.hosts.delete(key);
  }

  private state(key: string): HostState {
    let s = this.hosts.get(key);
    if (!s) {
      s = {
        consecutive5xx: 0,
        consecutiveGateway: 0,
        consecutiveConnect: 0,
        ejections: 0,
        ejectedUntil: 0,
        returnedAt: 0,
      };
      this.hosts.set(key, s);
    }
    return s;
  }

  /** True while `key` is ejected. */
  isEjected(key: string): boolean {
    const s = this.hosts.get(key);
    return s !== undefined && s.ejectedUntil > this.now();
  }

  /** How many members are ejected right now. */
  ejectedCount(): number {
    const now = this.now();
    let n = 0;
    for (const s of this.hosts.values()) if (s.ejectedUntil > now) n++;
    return n;
  }

  /** Records one outcome; returns true when this outcome ejected the endpoint. */
  record(key: string, status: ResultStatus): boolean {
    const st = this.settings;
    const s = this.state(key);
    const connectFailure = status === CONNECT_FAILURE;
    const is5xx = connectFailure || status >= 500;
    const isGateway = connectFailure || status === 502 || status === 503 || status === 504;
    if (!is5xx) {
      s.consecutive5xx = 0;
      s.consecutiveGateway = 0;
      s.consecutiveConnect = 0;
      return false;
    }
    s.consecutive5xx++;
    s.consecutiveGateway = isGateway ? s.consecutiveGateway + 1 : 0;
    s.consecutiveConnect = connectFailure ? s.consecutiveConnect + 1 : 0;
    const trip =
      (st.consecutive5xxErrors > 0 && s.consecutive5xx >= st.consecutive5xxErrors) ||
      (st.consecutiveGatewayErrors > 0 && s.consecutiveGateway >= st.consecutiveGatewayErrors) ||
      (st.consecutiveConnectFailures > 0 && s.consecutiveConnect >= st.consecutiveConnectFailures);
    if (!trip) return false;
    const now = this.now();
    if (s.ejectedUntil > now) return false;
    const members = Math.max(this.members, this.hosts.size, 1);
    if ((this.ejectedCount() / members) * 100 >= st.maxEjectionPercent) return false;
    // Ejection time grows with repeated ejections and decays one step per healthy interval.
    if (s.returnedAt > 0) {
      const healthy = Math.floor((now - s.returnedAt) / st.intervalMs);
      s.ejections = Math.max(0, s.ejections - healthy);
    }
    s.ejections++;
    const duration = Math.min(st.baseEjectionMs * s.ejections, st.maxEjectionMs);
    s.ejectedUntil = now + duration;
    s.returnedAt = s.ejectedUntil;
    s.consecutive5xx = 0;
    s.consecutiveGateway = 0;
    s.consecutiveConnect = 0;
    this.ejectionsTotal++;
    return true;
  }
}
