// Chooses the data plane for `--dataplane auto|native|ts` and says why.
import type { EdgemeshConfig } from '../config/types.ts';
import type { Logger } from '../util/log.ts';
import type { Dataplane } from './dataplane.ts';
import { NATIVE_PROXY_MARK, NativeDataplane } from './native/native-dataplane.ts';
import { probeNativeDataplane } from './native/probe.ts';
import { SplitDataplane } from './native/split-dataplane.ts';
import { TsDataplane } from './ts/ts-dataplane.ts';

export interface DataplaneChoice {
  dataplane: Dataplane;
  reason: string;
  /** The native plane inside `dataplane` (not started yet), when native was chosen. */
  native?: NativeDataplane;
}

export interface CreateDataplaneOptions {
  config: EdgemeshConfig;
  log: Logger;
  registry?: import('prom-client').Registry;
}

/** The pure-TS data plane configured from `modules.edgeProxy`. */
export function createTsDataplane(options: CreateDataplaneOptions): TsDataplane {
  const proxy = options.config.modules.edgeProxy;
  return new TsDataplane({
    log: options.log,
    registry: options.registry,
    workers: proxy.workers,
    portRange: proxy.tsPortRange,
    connectTimeoutMs: proxy.connectTimeoutMs,
    idleTimeoutMs: proxy.idleTimeoutMs,
    nodeName: options.config.nodeName,
  });
}

/**
 * Builds the data plane: `ts` always the TS one; `native`/`auto` the native one when it loads,
 * else the TS one with the reason (logged by the caller and shown in /status).
 */
export async function createDataplane(options: CreateDataplaneOptions): Promise<DataplaneChoice> {
  const mode = options.config.dataplane;
  if (mode === 'ts') return { dataplane: createTsDataplane(options), reason: '--dataplane ts' };
  // ---- NATIVE BRANCH (native data plane engineer) ----------------------------------------------
  const proxy = options.config.modules.edgeProxy;
  const why = probeNativeDataplane(NATIVE_PROXY_MARK);
  if (why === undefined) {
    const dataplane = new NativeDataplane({
      log: options.log,
      registry: options.registry,
      proxyPort: proxy.listenPort,
      workers: proxy.workers,
      connectTimeoutMs: proxy.connectTimeoutMs,
      idleTimeoutMs: proxy.idleTimeoutMs,
      mark: NATIVE_PROXY_MARK,
      spinUs: proxy.nativeSpinUs,
      cpuAffinity: proxy.nativeCpuAffinity,
    });
    // Ports with a TS protocol handler (http, websocket, https) or a hash that reads the request
    // go to the TS plane (started only when such a port exists) by fd hand-off from the native
    // workers (split-dataplane.ts).
    return {
      dataplane: new SplitDataplane(
        dataplane,
        createTsDataplane(options),
        undefined,
        'handoff',
        proxy.spliceBack,
      ),
      reason: `--dataplane ${mode}: native addon loaded and probes passed`,
      native: dataplane,
    };
  }
  // ----------------------------------------------------------------------------------------------
  return {
    dataplane: createTsDataplane(options),
    reason: `--dataplane ${mode}: ${why}; using the TS data plane`,
  };
}
