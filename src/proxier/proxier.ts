// The proxier: the SnapshotConsumer that hands each snapshot to the data plane, then makes the
// interception rules exactly the targets the data plane returned. A periodic resync repairs rules
// someone else changed and retries a failed sync.
import type { ServiceTable, ServiceTableDiff, SnapshotConsumer } from '../controller/types.ts';
import type { Dataplane } from '../dataplane/dataplane.ts';
import { errorMessage } from '../errors.ts';
import type { Service } from '../util/lifecycle.ts';
import type { Logger } from '../util/log.ts';
import type { Interceptor, InterceptTarget } from './interceptor.ts';

export interface ProxierOptions {
  dataplane: Dataplane;
  interceptor: Interceptor;
  log: Logger;
  /** Drift check / retry period in ms; 0 = none. */
  resyncPeriodMs: number;
}

/** Starts interceptor then data plane, feeds them snapshots, stops them in reverse. */
export class Proxier implements SnapshotConsumer, Service {
  readonly name = 'proxier';
  private queue: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;
  private targets: readonly InterceptTarget[] = [];
  private syncFailed = false;
  private started = false;
  /** Time the last apply took (data plane + rules), ms. */
  lastSyncMs = 0;

  constructor(private readonly options: ProxierOptions) {}

  async start(): Promise<void> {
    // The interceptor first: its start() removes what a crashed run left before anything new.
    await this.options.interceptor.start();
    try {
      await this.options.dataplane.start();
    } catch (err) {
      await this.options.interceptor.stop().catch(() => {});
      throw err;
    }
    this.started = true;
    if (this.options.resyncPeriodMs > 0) {
      this.timer = setInterval(() => void this.serial(() => this.resync()), this.options.resyncPeriodMs);
      this.timer.unref();
    }
  }

  apply(table: ServiceTable, diff: ServiceTableDiff): Promise<void> {
    return this.serial(async () => {
      if (!this.started) return;
      const t0 = performance.now();
      this.targets = await this.options.dataplane.apply(table, diff);
      this.options.interceptor.observe?.(table);
      try {
        await this.options.interceptor.sync(this.targets);
        this.syncFailed = false;
      } catch (err) {
        // The resync retries; the data plane already serves the new listeners.
        this.syncFailed = true;
        throw err;
      } finally {
        this.lastSyncMs = performance.now() - t0;
      }
      this.options.log.debug(
        { generation: table.generation, targets: this.targets.length, ms: Math.round(this.lastSyncMs) },
        'proxier synced',
      );
    });
  }

  /** Data plane counters plus the last sync time, for /status. */
  counters(): Record<string, number> {
    return { ...this.options.dataplane.counters(), last_sync_ms: Math.round(this.lastSyncMs) };
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.queue.catch(() => {});
    if (!this.started) return;
    this.started = false;
    try {
      await this.options.dataplane.stop();
    } finally {
      await this.options.interceptor.stop();
    }
  }

  /** Runs `fn` after everything queued before it (apply and resync never overlap). */
  private serial(fn: () => Promise<void>): Promise<void> {
    const run = this.queue.then(fn);
    this.queue = run.catch(() => {});
    return run;
  }

  private async resync(): Promise<void> {
    if (!this.started) return;
    try {
      if (this.syncFailed) {
        await this.options.interceptor.sync(this.targets);
        this.syncFailed = false;
        this.options.log.info(
          { targets: this.targets.length },
          'interception rules installed after an earlier failure',
        );
      } else if (await this.options.interceptor.repair?.()) {
        this.options.log.warn(
          { mode: this.options.interceptor.mode },
          'interception rules were changed by someone else; restored',
        );
      }
    } catch (err) {
      this.syncFailed = true;
      this.options.log.error({ err: errorMessage(err) }, 'interception resync failed');
    }
  }
}
