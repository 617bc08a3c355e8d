// Controller benchmarks: (1) list start → first snapshot for 10k Services x 3 endpoints through the
// real Kubernetes client against the apiserver fixture over loopback HTTP; (2) snapshot rebuild
// time when one Service's endpoints change among 10k (the sync alone, no I/O).
// Goals from the issue: ≤ 1 s and ≤ 5 ms.
import { spawn } from 'node:child_process';
import { Registry } from 'prom-client';
import { defaultConfig } from '../src/config/defaults.ts';
import { Controller } from '../src/controller/controller.ts';
import { ObjectStore } from '../src/controller/object-store.ts';
import { buildTable } from '../src/controller/snapshot-builder.ts';
import { EMPTY_TABLE, type KubeObject } from '../src/controller/types.ts';
import { silentLogger } from '../src/util/log.ts';
import type { ApiObject, FakeApiServer } from '../test/helpers/apiserver.ts';
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

/** Seeds the fixture with `count` Services, each with one 3-endpoint EndpointSlice. */
export function seedFixture(api: FakeApiServer, count: number): void {
  api.seed(
    'services',
    Array.from({ length: count }, (_, i) => service(i)),
  );
  api.seed(
    'endpointslices',
    Array.from({ length: count }, (_, i) => slice(i)),
  );
}

/**
 * Runs the apiserver fixture in its own process (as a real API server would be), so its JSON
 * encoding is not charged to the agent; resolves with its URL and a stop function.
 */
async function fixtureProcess(count: number): Promise<{ url: string; stop: () => void }> {
  const script = `
    const { FakeApiServer } = await import(${JSON.stringify(new URL('../test/helpers/apiserver.ts', import.meta.url).href)});
    const { seedFixture } = await import(${JSON.stringify(import.meta.url)});
    const api = new FakeApiServer();
    await api.start();
    seedFixture(api, ${count});
    process.stdout.write(api.url + '\\n');`;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes('\n')) resolve(out.trim());
    });
    child.once('exit', (code) => reject(new Error(`bench: fixture exited with ${code}`)));
  });
  return { url, stop: () => child.kill() };
}

/** List start → first snapshot delivered, through the real client. */
async function firstSnapshotMs(url: string, count: number): Promise<{ wall: number; cpu: number }> {
  const config = defaultConfig();
  config.kubeAPIConfig.master = url;
  config.stateDir = '/nonexistent/edgemesh-bench'; // persistence is not what is measured
  const controller = new Controller({
    config,
    log: silentLogger,
    registry: new Registry(),
    minSyncIntervalMs: 0,
  });
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  await controller.start();
  await controller.whenSynced();
  const wall = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  if (controller.current().services.size !== count) throw new Error('bench: incomplete snapshot');
  await controller.stop();
  return { wall, cpu: (cpu.user + cpu.system) / 1000 };
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

/** Full snapshot build (every Service rebuilt) from a filled store, no I/O. */
function fullBuildSamples(count: number, iterations: number): number[] {
  const store = new ObjectStore();
  for (let i = 0; i < count; i++) {
    store.upsert({ ...service(i), kind: 'Service', apiVersion: 'v1' } as KubeObject);
    store.upsert({ ...slice(i), kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1' } as KubeObject);
  }
  store.takeChanges();
  const samples: number[] = [];
  for (let n = 0; n < iterations; n++) {
    const t0 = performance.now();
    const table = buildTable(EMPTY_TABLE, store, { dirty: new Set(), istioDirty: false }, true, {
      noProxyLabel: 'noproxy',
    });
    samples.push(performance.now() - t0);
    if (table?.services.size !== count) throw new Error('bench: full build lost services');
  }
  return samples;
}

/** The controller benchmark suite. */
export const run: BenchModule = async ({ quick, progress }) => {
  const count = 10_000;
  const firstRuns = quick ? 2 : 5;
  const first: number[] = [];
  const firstCpu: number[] = [];
  const fixture = await fixtureProcess(count);
  try {
    // One unmeasured run warms up the JIT and loads the Kubernetes client.
    await firstSnapshotMs(fixture.url, count);
    for (let r = 0; r < firstRuns; r++) {
      const { wall, cpu } = await firstSnapshotMs(fixture.url, count);
      first.push(wall);
      firstCpu.push(cpu);
      progress(
        `controller: first snapshot for ${count} services: ${wall.toFixed(0)} ms (agent CPU ${cpu.toFixed(0)} ms)`,
      );
    }
  } finally {
    fixture.stop();
  }
  const rebuild = rebuildSamples(count, quick ? 200 : 2_000);
  const sortedRebuild = [...rebuild].sort((a, b) => a - b);
  progress(
    `controller: one-service rebuild among ${count}: median ${sortedRebuild[sortedRebuild.length >> 1].toFixed(3)} ms`,
  );
  const base = { suite: 'controller', contender: 'edgemesh', unit: 'ms', higherIsBetter: false };
  const fullBuilds: BenchRecord[] = [];
  for (const n of [100, 1_000, 10_000]) {
    const samples = fullBuildSamples(n, quick ? 3 : 10);
    progress(
      `controller: full snapshot build for ${n} services: ${Math.min(...samples).toFixed(1)} ms (best)`,
    );
    fullBuilds.push({
      ...base,
      case: `${n}-services`,
      metric: 'full-build',
      samples,
      extra: { path: 'buildTable, every Service rebuilt (no I/O)' },
    });
  }
  const records: BenchRecord[] = [
    {
      ...base,
      case: '10k-services-3-endpoints',
      metric: 'first-snapshot',
      samples: first,
      extra: {
        path: '@kubernetes/client-node ListWatch over loopback HTTP (fixture in its own process)',
        goalMs: 1000,
        agentCpuMsMedian: [...firstCpu].sort((a, b) => a - b)[firstCpu.length >> 1],
      },
    },
    {
      ...base,
      case: '10k-services-one-changed',
      metric: 'rebuild',
      samples: rebuild,
      extra: { path: 'ObjectStore + buildTable (no I/O)', goalMs: 5 },
    },
    ...fullBuilds,
  ];
  return records;
};
