// Native data plane fixtures the tests share: a routing-table entry with defaults, a plane on
// loopback with test-sized timeouts, the echo route most plane tests start from, and the
// standalone plane (serve.ts) started in a namespace.
import type net from 'node:net';
import path from 'node:path';
import pino from 'pino';
import { NativeDataplane, type NativeDataplaneOptions } from '../../src/dataplane/native/native-dataplane.ts';
import { LbPolicyCode, type NativeRoute } from '../../src/dataplane/native/route-encoder.ts';
import type { InterceptTarget } from '../../src/proxier/interceptor.ts';
import { type RunningCli, repoRoot } from './cli.ts';
import { svc, table } from './dns.ts';
import type { Netns } from './netns.ts';

const silent = pino({ level: 'silent' });
const noDiff = { added: [], updated: [], removed: [], istioChanged: false };

/** A route as the encoder takes it: round robin to `endpoints` on 10.96.0.10:80 unless `fields` say otherwise. */
export function nativeRoute(fields: Partial<NativeRoute> & Pick<NativeRoute, 'endpoints'>): NativeRoute {
  return {
    id: 'ns/s:80',
    serviceKey: 'ns/s',
    vip: '10.96.0.10',
    port: 80,
    policy: LbPolicyCode.ROUND_ROBIN,
    affinityTimeoutS: 0,
    slot: 0,
    connectTimeoutMs: 0,
    needsL7: false,
    handoff: false,
    ...fields,
  };
}

/** A plane (not started) on 127.0.0.1, a free port, 2 workers, 1 s connect and drain timeouts; `extra` overrides. */
export function loopbackPlane(extra: Partial<NativeDataplaneOptions> = {}): NativeDataplane {
  return new NativeDataplane({
    log: silent,
    proxyPort: 0,
    listenHost: '127.0.0.1',
    workers: 2,
    connectTimeoutMs: 1000,
    idleTimeoutMs: 0,
    mark: 0,
    drainTimeoutMs: 1000,
    ...extra,
  });
}

/** Routes 127.0.0.1:<the plane's port> (service ns/echo) to `backend`; returns the plane's targets. */
export function routeToEcho(dp: NativeDataplane, backend: net.Server) {
  const backendPort = (backend.address() as net.AddressInfo).port;
  return dp.apply(
    table([
      svc('ns', 'echo', {
        clusterIPs: ['127.0.0.1'],
        ports: [{ port: dp.port, endpoints: [{ ip: '127.0.0.1', port: backendPort }] }],
      }),
    ]),
    noDiff,
  );
}

/** What the standalone plane prints once it listens (`ready {...}`, src/dataplane/native/serve.ts). */
export interface ServeReady {
  port: number;
  pid: number;
  targets: InterceptTarget[];
}

/** Starts src/dataplane/native/serve.ts in `ns` with `args`; resolves once it printed `ready`. */
export async function startServe(
  ns: Netns,
  args: string[],
): Promise<{ proc: RunningCli; ready: ServeReady }> {
  const script = path.join(repoRoot, 'src/dataplane/native/serve.ts');
  const proc = ns.spawn(process.execPath, ['--import', 'tsx', script, ...args]);
  await proc.waitFor(/ready \{.*\}\n/, 20_000);
  return { proc, ready: JSON.parse(/ready (\{.*\})\n/.exec(proc.output())![1]!) };
}
