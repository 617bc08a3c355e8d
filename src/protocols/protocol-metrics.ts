// Metrics of the protocol handlers (HTTP engine, UDP flows) and of the balancers' outlier
// detection. Handlers run in the TS data plane's worker threads, each with its own registry
// (threadProtocolMetrics()); the main thread's registry serves their sum through
// registerWorkerProtocolMetrics(), which asks every worker for its values once per scrape.
import {
  AggregatorRegistry,
  Counter,
  Gauge,
  Histogram,
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

type Child<T extends { labels: (...a: never[]) => unknown }> = ReturnType<T['labels']>;

/** Upstream latency buckets (seconds): sub-millisecond LAN hops up to the 30 s request timeout. */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/** One thread's protocol metrics on `registry` (names are the edgemesh_http_/outlier_/udp_ contract). */
export class ProtocolMetrics {
  readonly registry: Registry;
  readonly httpRequests: Counter<'service' | 'code'>;
  readonly httpUpstreamLatency: Histogram<'service'>;
  readonly httpProxyReplies: Counter<'service' | 'code' | 'reason'>;
  readonly udpFlowsActive: Gauge<'service'>;
  readonly udpFlowsCreated: Counter<'service'>;
  readonly udpFlowsExpired: Counter<'service'>;
  readonly udpBytes: Counter<'service' | 'direction'>;
  /** Sources of open upstream connections (one per HTTP engine). */
  private readonly connectionSources = new Set<() => number>();
  /** Balancers by service label, with the ejection total already counted. */
  private readonly balancers = new Map<string, { balancer: ServiceBalancer; counted: number }>();
  // Children are cached: labels() hashes its arguments on every call, too slow per request.
  private readonly requestChildren = new Map<string, Child<Counter<'service' | 'code'>>>();
  private readonly latencyChildren = new Map<string, Child<Histogram<'service'>>>();

  constructor(registry: Registry = new Registry()) {
    this.registry = registry;
    const registers = [registry];
    this.httpRequests = new Counter({
      name: 'edgemesh_http_requests_total',
      help: 'HTTP requests answered by the HTTP engine, by service port and status code sent to the client',
      labelNames: ['service', 'code'],
      registers,
    });
    this.httpUpstreamLatency = new Histogram({
      name: 'edgemesh_http_upstream_latency_seconds',
      help: 'Time from sending a request upstream to its response headers',
      labelNames: ['service'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
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
    let child = this.requestChildren.get(key);
    if (!child) {
      child = this.httpRequests.labels(service, String(code));
      this.requestChildren.set(key, child);
    }
    child.inc();
  }

  /** Records the time to upstream response headers. */
  upstreamLatency(service: string, seconds: number): void {
    let child = this.latencyChildren.get(service);
    if (!child) {
      child = this.httpUpstreamLatency.labels(service);
      this.latencyChildren.set(service, child);
    }
    child.observe(seconds);
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
