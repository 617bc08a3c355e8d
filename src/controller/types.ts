// The ServiceTable: the one immutable snapshot of "what services exist and where their endpoints
// are" that the controller hands to every consumer (DNS, proxier, data plane, gateway, tunnel).
// Consumers never mutate it; a change produces a new table with a higher generation.

/** Application protocol chosen by the Service port name `<protocol>[-<suffix>]` (DESIGN.md §3). */
export type AppProtocol = 'tcp' | 'http' | 'https' | 'websocket' | 'udp';

/** L4 protocol of a Service port. */
export type L4Protocol = 'TCP' | 'UDP' | 'SCTP';

/** One backend address of one Service port. */
export interface Endpoint {
  ip: string;
  /** Resolved target port on this endpoint (named targetPorts resolved per Pod). */
  port: number;
  /** EndpointSlice conditions; Endpoints objects map addresses→ready, notReadyAddresses→not ready. */
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  /** Node the endpoint runs on, when known (needed for same-node preference and tunnels). */
  nodeName?: string;
  /** Endpoint hostname (headless services: `<hostname>.<svc>.<ns>.svc.<domain>`). */
  hostname?: string;
  zone?: string;
  /** `namespace/name` of the backing Pod when known. */
  targetRef?: string;
  /** Set by the edge tunnel on endpoints of other nodes it carries: how that node is reached now. */
  tunnelPath?: 'direct' | 'relay';
}

/**
 * The endpoints of a port that should receive new connections: the ready ones, or — only when none
 * is ready — the serving ones that are terminating (EndpointSlice semantics).
 */
export function usableEndpoints(port: ServicePortEntry): readonly Endpoint[] {
  const ready = port.endpoints.filter((e) => e.ready);
  return ready.length > 0 ? ready : port.endpoints.filter((e) => e.serving && e.terminating);
}

/** Istio DestinationRule load-balancer settings (trafficPolicy.loadBalancer). */
export interface LoadBalancerPolicy {
  simple?: 'ROUND_ROBIN' | 'RANDOM' | 'LEAST_REQUEST' | 'LEAST_CONN' | 'PASSTHROUGH';
  consistentHash?: {
    httpHeaderName?: string;
    httpCookie?: { name: string; path?: string; ttl?: string };
    useSourceIp?: boolean;
    httpQueryParameterName?: string;
    ringHash?: { minimumRingSize?: number };
    maglev?: { tableSize?: number };
    minimumRingSize?: number;
  };
}

/** Istio outlierDetection settings. */
export interface OutlierDetectionPolicy {
  consecutive5xxErrors?: number;
  consecutiveGatewayErrors?: number;
  /** Durations as seconds (converted from Istio's "10s" strings by the controller). */
  intervalSeconds?: number;
  baseEjectionTimeSeconds?: number;
  maxEjectionPercent?: number;
}

/** The traffic policy that applies to one port after DestinationRule port-level merging. */
export interface TrafficPolicy {
  loadBalancer?: LoadBalancerPolicy;
  outlierDetection?: OutlierDetectionPolicy;
  connectTimeoutMs?: number;
}

/** One port of a Service with its endpoints. */
export interface ServicePortEntry {
  /** Port name ('' when unnamed). */
  name: string;
  port: number;
  protocol: L4Protocol;
  /** From the port name (or appProtocol field); unknown or missing means 'tcp'. */
  appProtocol: AppProtocol;
  /** As written in the Service: a number or a Pod port name. */
  targetPort: number | string;
  nodePort?: number;
  /** Endpoints for this port, sorted by ip then port (stable for hashing and golden tests). */
  endpoints: readonly Endpoint[];
  /** The DestinationRule policy for this port (port-level settings merged), if any. */
  trafficPolicy?: TrafficPolicy;
}

/** One Service as consumers see it. */
export interface ServiceEntry {
  namespace: string;
  name: string;
  /** `namespace/name`. */
  key: string;
  /** ClusterIPs (IPv4 and/or IPv6); empty for headless and ExternalName services. */
  clusterIPs: readonly string[];
  headless: boolean;
  type: 'ClusterIP' | 'NodePort' | 'LoadBalancer' | 'ExternalName';
  externalName?: string;
  ports: readonly ServicePortEntry[];
  sessionAffinity: { type: 'None' | 'ClientIP'; timeoutSeconds: number };
  labels: Readonly<Record<string, string>>;
  /** `namespace/name` of the DestinationRule that applies, if any. */
  destinationRule?: string;
  /** False when the Service must not be intercepted (opted out, or default/kubernetes). */
  proxied: boolean;
}

/** A raw Kubernetes/Istio object as the sources saw it (for the gateway and tunnel). */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    resourceVersion?: string;
    uid?: string;
  };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  type?: string;
  [key: string]: unknown;
}

/** The immutable snapshot handed to consumers. */
export interface ServiceTable {
  /** Increases by one for every new snapshot. */
  readonly generation: number;
  /** Services by `namespace/name`. */
  readonly services: ReadonlyMap<string, ServiceEntry>;
  /** Istio Gateways, VirtualServices, DestinationRules and Secrets by `namespace/name`. */
  readonly gateways: ReadonlyMap<string, KubeObject>;
  readonly virtualServices: ReadonlyMap<string, KubeObject>;
  readonly destinationRules: ReadonlyMap<string, KubeObject>;
  readonly secrets: ReadonlyMap<string, KubeObject>;
}

/** What changed between two snapshots (by `namespace/name`). */
export interface ServiceTableDiff {
  added: readonly string[];
  updated: readonly string[];
  removed: readonly string[];
  /** True when Istio objects or Secrets changed (gateway consumers re-read them). */
  istioChanged: boolean;
}

/** The empty table (generation 0): what consumers start from. */
export const EMPTY_TABLE: ServiceTable = Object.freeze({
  generation: 0,
  services: new Map(),
  gateways: new Map(),
  virtualServices: new Map(),
  destinationRules: new Map(),
  secrets: new Map(),
});

/** A module that consumes snapshots: handed each new table and the diff from the previous one. */
export interface SnapshotConsumer {
  readonly name: string;
  /** Reconcile to `table`; called serially, never concurrently, never from an event handler. */
  apply(table: ServiceTable, diff: ServiceTableDiff): Promise<void>;
}
