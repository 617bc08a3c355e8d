// Who forwards the bytes of intercepted connections: one interface, two implementations
// (native: C++ addon on port 40001; ts: one Node listener per service port), one shared test suite.
import type { ServiceTable, ServiceTableDiff } from '../controller/types.ts';
import type { InterceptTarget } from '../proxier/interceptor.ts';
import type { Service } from '../util/lifecycle.ts';

export type DataplaneMode = 'native' | 'ts';

/** A data plane: reconciles its listeners/routing to each snapshot. */
export interface Dataplane extends Service {
  readonly mode: DataplaneMode;
  /**
   * Reconciles to `table` and returns the interception targets it needs: where each proxied
   * ClusterIP:port must be redirected (the native plane: all to the proxy port; the TS plane: one
   * allocated port per service port).
   */
  apply(table: ServiceTable, diff: ServiceTableDiff): Promise<readonly InterceptTarget[]>;
  /** Counters for /metrics and `edgemesh status` (connections, bytes, errors ...). */
  counters(): Record<string, number>;
}
