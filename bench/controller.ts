// Controller benchmarks: (1) list start → first snapshot for 10k Services x 3 endpoints through the
// real Kubernetes client against the apiserver fixture over loopback HTTP; (2) snapshot rebuild
// time when one Service's endpoints change among 10k (the sync alone, no I/O).
// Goals from the issue: ≤ 1 s and ≤ 5 ms.
import { Registry } from 'prom-client';
import { defaultConfig } from '../src/config/defaults.ts';
import { Controller } from '../src/controller/controller.ts';
import { ObjectStore } from '../src/controller/object-store.ts';
import { buildTable } from '../src/controller/snapshot-builder.ts';
import { EMPTY_TABLE, type KubeObject } from '../src/controller/types.ts';
import { silentLogger } from '../src/util/log.ts';
import { type ApiObject, FakeApiServer } from '../test/helpers/apiserver.ts';
import type { BenchModule, BenchRecord } from './lib/record.ts';

function service(i: number): ApiObject {
  return {
    metadata: { name: `s${i}`, namespace: `ns${i % 10}` },
    spec: {
      clusterIP: `10.96.${i >> 8}.${i & 255}`,
      ports: [{ name: 'http', port: 80, targetPort: 8080 }],
      selector: { app: `s${i}` },
    },
  };
}

function slice(i: number, generation = 0): ApiObject {
  return {
    metadata: {
      name: `s${i}-abcde`,
      namespace: `ns${i % 10}`,
      labels: { 'kubernetes.io/service-name': `s${i}` },
    },
    addressType: 'IPv4',
    ports: [{ name: 'http', port: 8080 + generation, protocol: 'TCP' }],
    endpoints: [1, 2, 3].map((k) => ({
      addresses: [`10.${k}.${i >> 8}.${i & 255}`],
      conditions: { ready: true, serving: true, terminating: false },
      nodeName: `node-${k}`,
    })),
  };
}

/** List start → first snapshot delivered, through the real client and the fixture. */
async function firstSnapshotMs(count: number): Promise<number> {
  const api = new FakeApiServer();
  await api.start();
  try {
    api.seed(
      'services',
      Array.from({ length: count }, (_, i) => service(i)),
    );
    api.seed(
      'endpointslices',
      Array.from({ length: count }, (_, i) => slice(i)),
    );
    const config = defaultConfig();
    config.kubeAPIConfig.master = api.url;
    config.stateDir = '/nonexistent/edgemesh-bench'; // persistence is not what is measured
    const controller = new Controller({
      config,
      log: silentLogger,
      registry: new Registry(),
      minSyncIntervalMs: 0,
    });
    const t0 = performance.now();
    await controller.start();
    await controller.whenSynced();
    const ms = performance.now() - t0;
    if (controller.current().services.size !== count) throw new Error('bench: incomplete snapshot');
    await controller.stop();
    return ms;
  } finally {
    await api.stop();
  }
}

/** Rebuild time for one changed Service among `count` (store + builder, no I/O). */
function rebuildSamples(count: number, iterations: number): number[] {
  const store = new ObjectStore();
  const fill = (o: ApiObject, kind: string, apiVersion: string) =>
    ({ ...o, kind, apiVersion, metadata: { ...o.metadata } }) as KubeObject;
  for (let i = 0; i < count; i++) {
    store.upsert(fill(service(i), 'Service', 'v1'));
    store.upsert(fill(slice(i), 'EndpointSlice', 'discovery.k8s.io/v1'));
  }
  const opts = { noProxyLabel: 'noproxy' };
  let table = buildTable(EMPTY_TABLE, store, store.takeChanges(), true, opts)!;
  const samples: number[] = [];
  for (let n = 1; n <= iterations; n++) {
    const i = (n * 7919) % count;
    const t0 = performance.now();
    store.upsert(fill(slice(i, n), 'EndpointSlice', 'discovery.k8s.io/v1'));
    const next = buildTable(table, store, store.takeChanges(), false, opts);
    samples.push(performance.now() - t0);
    if (!next || next.services.size !== count) throw new Error('bench: rebuild lost services');
    table = next;
  }
  return samples;
}

/** The controller benchmark suite. */
export const run: BenchModule = async ({ quick, progress }) => {
  const count = 10_000;
  const firstRuns = quick ? 2 : 5;
  const first: number[] = [];
  for (let r = 0; r < firstRuns; r++) {
    first.push(await firstSnapshotMs(count));
    progress(`controller: first snapshot for ${count} services: ${first.at(-1)!.toFixed(0)} ms`);
  }
  const rebuild = rebuildSamples(count, quick ? 200 : 2_000);
  const sortedRebuild = [...rebuild].sort((a, b) => a - b);
  progress(
    `controller: one-service rebuild among ${count}: median ${sortedRebuild[sortedRebuild.length >> 1].toFixed(3)} ms`,
  );
  const base = { suite: 'controller', contender: 'edgemesh', unit: 'ms', higherIsBetter: false };
  const records: BenchRecord[] = [
    {
      ...base,
      case: '10k-services-3-endpoints',
      metric: 'first-snapshot',
      samples: first,
      extra: { path: '@kubernetes/client-node ListWatch over loopback HTTP (fixture)', goalMs: 1000 },
    },
    {
      ...base,
      case: '10k-services-one-changed',
      metric: 'rebuild',
      samples: rebuild,
      extra: { path: 'ObjectStore + buildTable (no I/O)', goalMs: 5 },
    },
  ];
  return records;
};
