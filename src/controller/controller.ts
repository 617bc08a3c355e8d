// The controller: sources record object changes into the store, one rate-limited sync folds them
// into a new immutable ServiceTable and hands it (with a diff) to every consumer, serially and in
// subscription order. With a Kubernetes source the last good table is persisted and served when
// the API is unreachable at start.
import path from 'node:path';
import type { Registry } from 'prom-client';
import type { EdgemeshConfig } from '../config/types.ts';
import { errorMessage, hasCode } from '../errors.ts';
import { BoundedFrequencyRunner, type RunnerClock } from '../util/bounded-frequency-runner.ts';
import type { Service } from '../util/lifecycle.ts';
import type { Logger } from '../util/log.ts';
import { type ControllerMetrics, createControllerMetrics } from './controller-metrics.ts';
import { kindOf, ObjectStore } from './object-store.ts';
import { buildTable, diffTables } from './snapshot-builder.ts';
import type { Source, SourceSink } from './source.ts';
import type { KubeSourceOptions } from './sources/kube-source.ts';
import { ManifestSource, type ManifestSourceOptions } from './sources/manifest-source.ts';
import { loadState, STATE_FILE_NAME, saveState } from './state-file.ts';
import { EMPTY_TABLE, type ServiceTable, type SnapshotConsumer } from './types.ts';

export interface ControllerOptions {
  config: EdgemeshConfig;
  log: Logger;
  registry: Registry;
  /** Sources to use instead of those the config names (tests, embedding). */
  sources?: Source[];
  /** Batching window: minimum time between two syncs. */
  minSyncIntervalMs?: number;
  /** Periodic resync (re-delivers to consumers that failed, re-checks the store). */
  resyncIntervalMs?: number;
  /** Retry delay after a consumer failed to apply a snapshot. */
  retryIntervalMs?: number;
  /** How long to wait for the sources before serving the persisted snapshot. */
  offlineGraceMs?: number;
  /** Minimum time between two writes of the state file. */
  stateWriteIntervalMs?: number;
  /** Persist and restore the snapshot (default: when a Kubernetes source is used). */
  persist?: boolean;
  clock?: RunnerClock;
  manifests?: ManifestSourceOptions;
  kube?: KubeSourceOptions;
}

/** True when the config asks for the Kubernetes source (explicitly, or in-cluster without manifests). */
export function kubeConfigured(config: EdgemeshConfig): boolean {
  const api = config.kubeAPIConfig;
  return (
    api.master !== '' ||
    api.kubeConfig !== '' ||
    (config.manifests.length === 0 && process.env.KUBERNETES_SERVICE_HOST !== undefined)
  );
}

/** Turns sources into snapshots for consumers; a Service in the agent's lifecycle. */
export class Controller implements Service {
  readonly name = 'controller';
  readonly metrics: ControllerMetrics;
  private readonly log: Logger;
  private readonly store: ObjectStore;
  private readonly runner: BoundedFrequencyRunner;
  private readonly consumers: SnapshotConsumer[] = [];
  private readonly applied = new Map<SnapshotConsumer, ServiceTable>();
  private sources: Source[] = [];
  private readonly syncedSources = new Set<Source>();
  private table: ServiceTable = EMPTY_TABLE;
  private fullSync = true;
  private restored: ServiceTable | undefined;
  private serveRestored = false;
  private persist = false;
  private persistDirty = false;
  private persistTimer: NodeJS.Timeout | undefined;
  private persisting: Promise<void> | undefined;
  private lastPersist = 0;
  private stateWriteFailing = false;
  private offlineTimer: NodeJS.Timeout | undefined;
  private resolveSynced: () => void = () => {};
  private readonly synced: Promise<void>;
  private isSynced = false;
  private started = false;

  constructor(private readonly options: ControllerOptions) {
    this.log = options.log.child({ module: 'controller' });
    this.metrics = createControllerMetrics(options.registry);
    this.store = new ObjectStore(options.config.clusterDomain);
    this.synced = new Promise((resolve) => {
      this.resolveSynced = resolve;
    });
    this.runner = new BoundedFrequencyRunner(() => this.sync(), {
      minIntervalMs: options.minSyncIntervalMs ?? 100,
      maxIntervalMs: options.resyncIntervalMs ?? 60_000,
      retryIntervalMs: options.retryIntervalMs ?? 1_000,
      clock: options.clock,
      onError: (err) => this.log.debug({ err: errorMessage(err) }, 'sync will be retried'),
    });
  }

  /** Adds a consumer; call before start(). Consumers are applied serially in subscription order. */
  subscribe(consumer: SnapshotConsumer): void {
    this.consumers.push(consumer);
    if (this.started) this.runner.run();
  }

  /** The current snapshot (EMPTY_TABLE, generation 0, until the first sync). */
  current(): ServiceTable {
    return this.table;
  }

  /** Resolves once a first snapshot has been applied by every consumer. */
  whenSynced(): Promise<void> {
    return this.synced;
  }

  /** True once whenSynced() has resolved. */
  ready(): boolean {
    return this.isSynced;
  }

  /** Where the last good snapshot is kept. */
  stateFile(): string {
    return path.join(this.options.config.stateDir, STATE_FILE_NAME);
  }

  async start(): Promise<void> {
    try {
      await this.startSources();
    } catch (err) {
      // The lifecycle only stops what started: undo a half-done start here.
      await this.stop();
      throw err;
    }
  }

  private async startSources(): Promise<void> {
    this.started = true;
    const { config } = this.options;
    if (this.options.sources) this.sources = this.options.sources;
    else {
      if (config.manifests.length > 0)
        this.sources.push(
          new ManifestSource(config.manifests, this.log, this.metrics, this.options.manifests),
        );
      if (kubeConfigured(config)) {
        // Loaded only when used: the Kubernetes client is large.
        const { KubeSource } = await import('./sources/kube-source.ts');
        this.sources.push(new KubeSource(config, this.log, this.metrics, this.options.kube));
      }
    }
    this.persist = this.options.persist ?? this.sources.some((s) => s.name === 'kube');
    if (this.persist) await this.restore();
    this.runner.start();
    for (const source of this.sources) await source.start(this.sinkFor(source));
    if (this.restored && !this.allSourcesSynced()) {
      this.offlineTimer = setTimeout(() => {
        if (this.allSourcesSynced()) return;
        this.log.warn('sources not synced yet: serving the persisted snapshot');
        this.serveRestored = true;
        this.runner.run();
      }, this.options.offlineGraceMs ?? 3_000);
      this.offlineTimer.unref();
    }
  }

  async stop(): Promise<void> {
    clearTimeout(this.offlineTimer);
    for (const source of [...this.sources].reverse()) {
      try {
        await source.stop();
      } catch (err) {
        this.log.error({ source: source.name, err }, 'source stop failed');
      }
    }
    await this.runner.stop();
    clearTimeout(this.persistTimer);
    await this.persisting;
    if (this.persistDirty) await this.writeState();
  }

  private allSourcesSynced(): boolean {
    return this.sources.every((s) => this.syncedSources.has(s));
  }

  private sinkFor(source: Source): SourceSink {
    return {
      upsert: (obj) => {
        if (this.store.upsert(obj)) this.runner.run();
        else
          this.log.debug({ source: source.name, kind: obj.kind, name: obj.metadata?.name }, 'kind ignored');
      },
      remove: (obj) => {
        if (kindOf(obj) && this.store.remove(obj)) this.runner.run();
      },
      synced: () => {
        if (this.syncedSources.has(source)) return;
        this.syncedSources.add(source);
        this.log.debug({ source: source.name }, 'source synced');
        this.runner.run();
      },
      unavailable: () => {
        if (this.restored && !this.allSourcesSynced() && !this.serveRestored) {
          this.log.warn({ source: source.name }, 'source unavailable: serving the persisted snapshot');
          this.serveRestored = true;
          this.runner.run();
        }
      },
    };
  }

  private async restore(): Promise<void> {
    const file = this.stateFile();
    try {
      this.restored = await loadState(file);
      if (this.restored)
        this.log.info({ file, services: this.restored.services.size }, 'persisted snapshot loaded');
    } catch (err) {
      // A corrupted file must not keep the agent down: start empty and overwrite it later.
      this.log.error(
        { file, code: hasCode(err, 'EDGEMESH_ERR_STATE') ? err.code : undefined, err: errorMessage(err) },
        'persisted snapshot unusable; starting empty',
      );
    }
  }

  /** The one sync: fold changes into a snapshot, then bring every consumer up to it. */
  private async sync(): Promise<void> {
    const started = performance.now();
    let next: ServiceTable | undefined;
    if (this.allSourcesSynced()) {
      const changes = this.store.takeChanges();
      next = buildTable(this.table, this.store, changes, this.fullSync, {
        noProxyLabel: this.options.config.modules.edgeProxy.noProxyLabel,
      });
      this.fullSync = false;
      this.restored = undefined;
      clearTimeout(this.offlineTimer);
      // The first sync always yields a snapshot, even an empty one: consumers wait for it.
      if (!next && this.table.generation === 0) next = { ...EMPTY_TABLE, generation: 1 };
    } else if (this.serveRestored && this.restored && this.table.generation === 0) {
      next = Object.freeze({ ...this.restored, generation: 1 });
    }
    if (next) {
      this.table = next;
      this.metrics.snapshotGeneration.set(next.generation);
      this.metrics.services.set(next.services.size);
      if (this.persist && !this.restored) this.schedulePersist();
    }
    let failed: unknown;
    for (const consumer of this.consumers) {
      const last = this.applied.get(consumer) ?? EMPTY_TABLE;
      if (last === this.table || this.table.generation === 0) continue;
      try {
        await consumer.apply(this.table, diffTables(last, this.table));
        this.applied.set(consumer, this.table);
      } catch (err) {
        failed = err;
        this.metrics.consumerErrors.inc({ consumer: consumer.name });
        this.log.error({ consumer: consumer.name, err }, 'consumer failed to apply the snapshot');
      }
    }
    if (next || failed) this.metrics.syncDuration.observe((performance.now() - started) / 1000);
    if (next)
      this.log.debug(
        { generation: next.generation, services: next.services.size, ms: performance.now() - started },
        'snapshot applied',
      );
    if (failed) throw failed;
    if (this.table.generation > 0 && !this.isSynced) {
      this.isSynced = true;
      this.resolveSynced();
    }
  }

  private schedulePersist(): void {
    this.persistDirty = true;
    if (this.persistTimer) return;
    const wait = Math.max(0, this.lastPersist + (this.options.stateWriteIntervalMs ?? 2_000) - Date.now());
    this.persistTimer = setTimeout(() => {
      this.persistTimer = undefined;
      this.persisting = this.writeState().finally(() => {
        this.persisting = undefined;
      });
    }, wait);
    this.persistTimer.unref();
  }

  private async writeState(): Promise<void> {
    this.persistDirty = false;
    this.lastPersist = Date.now();
    const file = this.stateFile();
    try {
      await saveState(file, this.table);
      if (this.stateWriteFailing) this.log.info({ file }, 'state file written again');
      this.stateWriteFailing = false;
    } catch (err) {
      this.metrics.stateWriteErrors.inc();
      // Logged once per outage: a read-only disk must not flood the log.
      if (!this.stateWriteFailing) this.log.warn({ file, err: errorMessage(err) }, 'cannot write state file');
      this.stateWriteFailing = true;
    }
  }
}
