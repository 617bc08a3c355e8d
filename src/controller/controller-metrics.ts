// The controller's Prometheus metrics, registered once on the Registry the agent passes in.
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

/** Metrics shared by the controller and its sources. */
export interface ControllerMetrics {
  /** 1 while a source has a working connection to its origin (manifests: always 1 once scanned). */
  sourceUp: Gauge<'source'>;
  /** Restarts of a source's list-watch after an error. */
  sourceReconnects: Counter<'source' | 'resource'>;
  /** Manifest files that failed to parse or validate (each failure once). */
  manifestErrors: Counter;
  /** Manifest files currently broken (their last good content is served). */
  manifestFilesBroken: Gauge;
  snapshotGeneration: Gauge;
  services: Gauge;
  syncDuration: Histogram;
  consumerErrors: Counter<'consumer'>;
  stateWriteErrors: Counter;
}

/** Creates and registers the controller metrics on `registry`. */
export function createControllerMetrics(registry: Registry): ControllerMetrics {
  const registers = [registry];
  return {
    sourceUp: new Gauge({
      name: 'edgemesh_source_up',
      help: '1 while the source reaches its origin, else 0',
      labelNames: ['source'],
      registers,
    }),
    sourceReconnects: new Counter({
      name: 'edgemesh_source_reconnects_total',
      help: 'List-watch restarts after an error, by source and resource',
      labelNames: ['source', 'resource'],
      registers,
    }),
    manifestErrors: new Counter({
      name: 'edgemesh_manifest_errors_total',
      help: 'Manifest files that failed to parse or validate',
      registers,
    }),
    manifestFilesBroken: new Gauge({
      name: 'edgemesh_manifest_files_broken',
      help: 'Manifest files currently broken (last good content kept)',
      registers,
    }),
    snapshotGeneration: new Gauge({
      name: 'edgemesh_snapshot_generation',
      help: 'Generation of the current service snapshot',
      registers,
    }),
    services: new Gauge({ name: 'edgemesh_services', help: 'Services in the current snapshot', registers }),
    syncDuration: new Histogram({
      name: 'edgemesh_controller_sync_duration_seconds',
      help: 'Time to fold changes into a snapshot and apply it to all consumers',
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers,
    }),
    consumerErrors: new Counter({
      name: 'edgemesh_consumer_apply_errors_total',
      help: 'Snapshot applications that failed, by consumer',
      labelNames: ['consumer'],
      registers,
    }),
    stateWriteErrors: new Counter({
      name: 'edgemesh_state_write_errors_total',
      help: 'Failed writes of the persisted snapshot',
      registers,
    }),
  };
}
