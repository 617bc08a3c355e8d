// Messages between the TS data plane's main thread (decides) and its listener workers (own
// listeners and connections). Everything here is structured-clone safe.
import type { MessagePort } from 'node:worker_threads';
import type { ServiceEntry, ServicePortEntry } from '../../controller/types.ts';

/** Per-worker settings fixed at start. */
export interface WorkerSettings {
  /** Address the listeners bind (0.0.0.0: PREROUTING REDIRECT delivers to the incoming interface's address). */
  listenHost: string;
  connectTimeoutMs: number;
  /** 0 = never. */
  idleTimeoutMs: number;
  nodeName: string;
  /** Upstream connect attempts per client connection (a refused endpoint is retried on another). */
  maxConnectAttempts: number;
  /** Handler modules to import (see handlers.ts). */
  handlerModules: readonly string[];
  /** Native plane that takes byte tunnels back after the L7 decision (splice-back.ts); 0 = none. */
  nativePlaneId?: number;
}

/** One listener's route: what its connections are for. */
export interface ListenerRoute {
  listenPort: number;
  service: ServiceEntry;
  /** The service port, its endpoints narrowed to the route's family. */
  port: ServicePortEntry;
  /** 6: the route serves the service's IPv6 ClusterIP (listener on `::`); absent or 4: IPv4. */
  family?: 4 | 6;
}

/** Main → worker. */
export type ToWorker =
  | { type: 'update'; id: number; upserts: ListenerRoute[]; removes: number[] }
  | { type: 'metrics'; id: number }
  /** An accepted socket handed over by the native plane: serve it as accepted on listenPort. */
  | { type: 'adopt'; listenPort: number; fd: number }
  | { type: 'stop' };

/** Worker → main. */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'updated'; id: number; failed: Array<{ listenPort: number; code: string; message: string }> }
  /** The worker's protocol metrics (prom-client getMetricsAsJSON()). */
  | { type: 'metrics'; id: number; metrics: unknown[] };

/** The piscina task argument that makes a worker a listener owner. */
export interface WorkerTask {
  index: number;
  port: MessagePort;
  settings: WorkerSettings;
  counters: SharedArrayBuffer;
}
