// Load balancing: the API the data planes (TS and native) and protocol handlers use.
export type { Balancer, BalancerOptions, HashSource, PickContext, PolicyKind } from './balancer.ts';
export { createBalancer, ServiceBalancer } from './balancer.ts';
export { parseDurationSeconds } from './duration.ts';
export { endpointKey } from './endpoint-key.ts';
export { DEFAULT_MAGLEV_TABLE_SIZE, MaglevTable, nextPrime } from './maglev.ts';
export { murmur3 } from './murmur3.ts';
export type { ResultStatus } from './outlier-detector.ts';
export { CONNECT_FAILURE, OutlierDetector, outlierSettings } from './outlier-detector.ts';
export { DEFAULT_RING_SIZE, HashRing, pointsPerEndpoint, ringHashPick } from './ring-hash.ts';
export { SessionAffinityTable } from './session-affinity.ts';
