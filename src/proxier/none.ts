// The `none` interceptor: installs nothing (unprivileged runs, tests that drive the data plane directly).
import type { Interceptor, InterceptTarget } from './interceptor.ts';

/** Accepts every sync and does nothing; remembers the last targets for status and tests. */
export class NoneInterceptor implements Interceptor {
  readonly name = 'interceptor';
  readonly mode = 'none' as const;
  /** The targets of the last sync. */
  targets: readonly InterceptTarget[] = [];

  async start(): Promise<void> {}

  async sync(targets: readonly InterceptTarget[]): Promise<void> {
    this.targets = targets;
  }

  async stop(): Promise<void> {
    this.targets = [];
  }
}
