// Metrics of the protocol handlers (HTTP engine, UDP flows) and of the balancers' outlier
// detection. Handlers run in the TS data plane's worker threads, each with its own registry
// (threadProtocolMetrics()); the main thread's registry serves their sum through
// registerWorkerProtocolMetrics(), which asks every worker for its values once per scrape.
import {
  AggregatorRegistry,
  Counter,
  Gauge,
  type MetricObjectWithValues,
  type MetricValue,
  Registry,
} from 'prom-client';
import type { ServiceBalancer } from '../lb/index.ts';

/** Why the proxy answered a request itself (label `reason` of edgemesh_http_proxy_replies_total). */
export type ProxyReplyReason =
  | 'bad_request'
  | 'header_too_large'
  | 'no_route'
  | 'no_endpoint'
  | 'connect_failed'
  | 'timeout'
  | 'upstream_error';

/** One service's latency histogram, kept as plain numbers (see LatencyHistogram). */
interface LatencyCells {
  /** Observations per bucket (not cumulative); the last cell is +Inf. */
  counts: Float64Array;
  sum: number;
  count: number;
}

/** Upstream latency buckets (seconds): sub-millisecond LAN hops up to the 30 s request timeout. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** One thread's protocol metrics on `registry` (names are the edgemesh_http_/outlier_/udp_ contract). */
export class ProtocolMetrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'service' | 'code'>;
  readonly httpProxyReplies: Counter<'service' | 'code' | 'reason'>;
  readonly udpFlowsActive: Gauge<'service'>;
  readonly udpFlowsCreated: Counter<'service'>;
  readonly udpFlowsExpired: Counter<'service'>;
  readonly udpBytes: Counter<'service' | 'direction'>;
  /** Sources of open upstream connections (one per HTTP engine). */
  private readonly connectionSources = new Set<() => number>();
  /** Balancers by service label, with the ejection total already counted. */
  private readonly balancers = new Map<string, { balancer: ServiceBalancer; counted: number }>();
  // Per-request counts live in plain maps and reach prom-client at scrape time: its labels()
  // children still hash the label set on every inc()/observe(), which showed in HTTP profiles.
  private readonly requestCounts = new Map<string, { service: string; code: string; n: number }>();
  private readonly latency = new Map<string, LatencyCells>();

  constructor(registry: Registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    const requestCounts = this.requestCounts;
    this.httpRequests = new Counter({
      name: 'edgemesh_http_requests_total',
      help: 'HTTP requests answered by the HTTP engine, by service port and status code sent to the client',
      labelNames: ['service', 'code'],
      registers,
      collect() {
        this.reset();
        for (const c of requestCounts.values()) this.inc({ service: c.service, code: c.code }, c.n);
      },
    });
    registry.registerMetric(latencyHistogram(this.latency) as never);
    this.httpProxyReplies = new Counter({
      name: 'edgemesh_http_proxy_replies_total',
      help: 'Error replies the HTTP engine produced itself (not the upstream), by reason',
      labelNames: ['service', 'code', 'reason'],
      registers,
    });
    const sources = this.connectionSources;
    new Gauge({
      name: 'edgemesh_http_upstream_connections',
      help: 'Open connections in the HTTP engine upstream pools',
      registers,
      collect() {
        let n = 0;
        for (const source of sources) n += source();
        this.set(n);
      },
    });
    const balancers = this.balancers;
    new Counter({
      name: 'edgemesh_outlier_ejections_total',
      help: 'Endpoints ejected by outlier detection (consecutive errors or failed connects)',
      labelNames: ['service'],
      registers,
      collect() {
        // Balancers keep their own totals; the counter catches up at scrape time.
        for (const [service, slot] of balancers) {
          const total = slot.balancer.ejections;
          if (total > slot.counted) this.inc({ service }, total - slot.counted);
          slot.counted = total;
        }
      },
    });
    new Gauge({
      name: 'edgemesh_outlier_ejected_endpoints',
      help: 'Endpoints ejected right now',
      labelNames: ['service'],
      registers,
      collect() {
        this.reset();
        for (const [service, slot] of balancers) this.set({ service }, slot.balancer.ejectedCount());
      },
    });
    this.udpFlowsActive = new Gauge({
      name: 'edgemesh_udp_flows_active',
      help: 'UDP flows (client address to endpoint) open now',
      labelNames: ['service'],
      registers,
    });
    this.udpFlowsCreated = new Counter({
      name: 'edgemesh_udp_flows_created_total',
      help: 'UDP flows opened',
      labelNames: ['service'],
      registers,
    });
    this.udpFlowsExpired = new Counter({
      name: 'edgemesh_udp_flows_expired_total',
      help: 'UDP flows ended by their idle timeout',
      labelNames: ['service'],
      registers,
    });
    this.udpBytes = new Counter({
      name: 'edgemesh_udp_bytes_total',
      help: 'UDP payload bytes, direction from_client or to_client',
      labelNames: ['service', 'direction'],
      registers,
    });
  }

  /** Counts one request answered with `code` (whoever produced it). */
  request(service: string, code: number): void {
    const key = `${service}\0${code}`;
    const c = this.requestCounts.get(key);
    if (c) c.n++;
    else this.requestCounts.set(key, { service, code: String(code), n: 1 });
  }

  /** Records the time to upstream response headers. */
  upstreamLatency(service: string, seconds: number): void {
    let cells = this.latency.get(service);
    if (!cells) {
      cells = { counts: new Float64Array(LATENCY_BUCKETS.length + 1), sum: 0, count: 0 };
      this.latency.set(service, cells);
    }
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++;
    cells.counts[i]!++;
    cells.sum += seconds;
    cells.count++;
  }

  /** Counts an error reply the proxy produced itself (and the request it answered). */
  proxyReply(service: string, code: number, reason: ProxyReplyReason): void {
    this.httpProxyReplies.inc({ service, code: String(code), reason });
    this.request(service, code);
  }

  /** Adds a source of open upstream connections (sampled at scrape time). */
  addConnectionSource(source: () => number): void {
    this.connectionSources.add(source);
  }

  /** Removes a source added by addConnectionSource(). */
  removeConnectionSource(source: () => number): void {
    this.connectionSources.delete(source);
  }

  /** Reports `balancer`'s ejections under `service` (replaces an earlier balancer of that label). */
  trackBalancer(service: string, balancer: ServiceBalancer): void {
    const slot = this.balancers.get(service);
    if (slot?.balancer === balancer) return;
    this.balancers.set(service, { balancer, counted: 0 });
  }

  /** Stops reporting the balancer of `service` (its port is gone). */
  untrackBalancer(service: string, balancer: ServiceBalancer): void {
    if (this.balancers.get(service)?.balancer === balancer) this.balancers.delete(service);
  }
}

/**
 * edgemesh_http_upstream_latency_seconds as a registry metric object (the shape prom-client's
 * Registry and AggregatorRegistry read), rendered from plain per-service cells at scrape time.
 */
function latencyHistogram(cells: Map<string, LatencyCells>) {
  const name = 'edgemesh_http_upstream_latency_seconds';
  return {
    name,
    help: 'Time from sending a request upstream to its response headers',
    type: 'histogram',
    aggregator: 'sum',
    get() {
      const values: Array<{ labels: Record<string, string | number>; value: number; metricName: string }> =
        [];
      for (const [service, c] of cells) {
        let cumulative = 0;
        LATENCY_BUCKETS.forEach((le, i) => {
          cumulative += c.counts[i]!;
          values.push({ labels: { le, service }, value: cumulative, metricName: `${name}_bucket` });
        });
        values.push({ labels: { le: '+Inf', service }, value: c.count, metricName: `${name}_bucket` });
        values.push({ labels: { service }, value: c.sum, metricName: `${name}_sum` });
        values.push({ labels: { service }, value: c.count, metricName: `${name}_count` });
      }
      return { name, help: this.help, type: 'histogram', aggregator: 'sum', values };
    },
    reset() {
      cells.clear();
    },
  };
}

/** The label value for a service port: `namespace/name:port`. */
export function serviceLabel(service: { key: string }, port: { port: number }): string {
  return `${service.key}:${port.port}`;
}

let threadMetrics: ProtocolMetrics | undefined;

/** This thread's protocol metrics (own registry; the data plane's main thread aggregates them). */
export function threadProtocolMetrics(): ProtocolMetrics {
  threadMetrics ??= new ProtocolMetrics();
  return threadMetrics;
}

/**
 * Registers every protocol metric on the main `registry`, valued as the sum over what `fetch`
 * returns (one getMetricsAsJSON() result per worker). One fetch serves a whole scrape.
 */
export function registerWorkerProtocolMetrics(
  registry: Registry,
  fetch: () => Promise<MetricObjectWithValues<MetricValue<string>>[][]>,
): void {
  let inflight: Promise<Registry> | undefined;
  const aggregated = (): Promise<Registry> => {
    // Every metric's get() of one scrape runs in the same tick: they share one round of messages.
    inflight ??= fetch().then(
      (all) => {
        inflight = undefined;
        return AggregatorRegistry.aggregate(all);
      },
      (err: unknown) => {
        inflight = undefined;
        throw err;
      },
    );
    return inflight;
  };
  const template = new ProtocolMetrics(new Registry());
  for (const metric of template.registry.getMetricsAsArray()) {
    const { name, help } = metric as unknown as { name: string; help: string };
    const type = (metric as unknown as { type: string }).type;
    registry.registerMetric({
      name,
      help,
      type,
      aggregator: 'sum',
      async get() {
        const m = (await aggregated()).getSingleMetric(name) as unknown as
          | { get(): Promise<MetricObjectWithValues<MetricValue<string>>> }
          | undefined;
        return m ? m.get() : { name, help, type, aggregator: 'sum', values: [] };
      },
      reset() {},
    } as never);
  }
}
