// Rule-sync benchmark (STYLE.md: "benchmark the sync alone"): how long the interceptors take to
// install 100 / 1,000 / 10,000 services in one transaction, and to apply a one-service change on
// top of them. Runs each backend in its own throwaway network namespace (root).
import { execFileSync } from 'node:child_process';
import type { ServiceEntry, ServiceTable, ServiceTableDiff } from '../src/controller/types.ts';
import { TsDataplane } from '../src/dataplane/ts/ts-dataplane.ts';
import type { InterceptTarget } from '../src/proxier/interceptor.ts';
import { IptablesInterceptor } from '../src/proxier/iptables.ts';
import { NftablesInterceptor } from '../src/proxier/nftables.ts';
import { silentLogger } from '../src/util/log.ts';
import { onCleanup } from './lib/cleanup.ts';
import type { BenchModule, BenchRecord } from './lib/record.ts';

/** `n` services with one TCP port each: ClusterIPs counted up from 10.96.0.0, redirect ports from 21000. */
export function syntheticTargets(n: number): InterceptTarget[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `bench/svc-${i}:http`,
    clusterIP: `10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
    port: 80,
    protocol: 'TCP' as const,
    toPort: 21000 + (i % 40000),
  }));
}

const backends = ['iptables-nft', 'iptables-legacy', 'nftables'] as const;

/** A snapshot of `n` one-port services (endpoint port `epPort` for service `changed`, 8080 otherwise). */
function syntheticTable(
  n: number,
  generation: number,
  changed = -1,
  epPort = 8080,
): [ServiceTable, ServiceTableDiff] {
  const services = new Map<string, ServiceEntry>();
  for (let i = 0; i < n; i++) {
    const key = `bench/svc-${i}`;
    services.set(key, {
      namespace: 'bench',
      name: `svc-${i}`,
      key,
      clusterIPs: [`10.${96 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`],
      headless: false,
      type: 'ClusterIP',
      ports: [
        {
          name: 'tcp',
          port: 80,
          protocol: 'TCP',
          appProtocol: 'tcp',
          targetPort: 8080,
          endpoints: [
            {
              ip: '127.0.0.1',
              port: i === changed ? epPort : 8080,
              ready: true,
              serving: true,
              terminating: false,
            },
          ],
        },
      ],
      sessionAffinity: { type: 'None', timeoutSeconds: 0 },
      labels: {},
      proxied: true,
    });
  }
  const diff: ServiceTableDiff =
    changed >= 0
      ? { added: [], updated: [`bench/svc-${changed}`], removed: [], istioChanged: false }
      : { added: [...services.keys()], updated: [], removed: [], istioChanged: false };
  const table: ServiceTable = {
    generation,
    services,
    gateways: new Map(),
    virtualServices: new Map(),
    destinationRules: new Map(),
    secrets: new Map(),
  };
  return [table, diff];
}

/** The TS data plane's own sync: opening every listener, then a one-service endpoint change. */
async function tsDataplaneSync(
  sizes: number[],
  changes: number,
  progress: (l: string) => void,
): Promise<BenchRecord[]> {
  const records: BenchRecord[] = [];
  for (const n of sizes) {
    const dp = new TsDataplane({
      log: silentLogger,
      workers: 2,
      portRange: '41000-52999',
      listenHost: '127.0.0.1',
      nodeName: 'bench',
      connectTimeoutMs: 1000,
      idleTimeoutMs: 0,
    });
    await dp.start();
    try {
      let t0 = performance.now();
      const targets = await dp.apply(...syntheticTable(n, 1));
      const full = [performance.now() - t0];
      const one: number[] = [];
      for (let c = 0; c < changes; c++) {
        const table = syntheticTable(n, 2 + c, (c * 7919) % n, 9000 + c);
        t0 = performance.now();
        await dp.apply(...table);
        one.push(performance.now() - t0);
      }
      progress(
        `proxier: ts data plane ${n} services (${targets.length} listeners): full ${full[0]!.toFixed(1)} ms, one change ${one[Math.floor(one.length / 2)]!.toFixed(1)} ms`,
      );
      const base = {
        suite: 'rule-sync',
        case: `${n}-services`,
        contender: 'edgemesh-ts-dataplane',
        unit: 'ms',
      };
      const extra = { path: 'listeners in 2 piscina workers (no rules)', listeners: targets.length };
      records.push(
        { ...base, metric: 'full-sync', higherIsBetter: false, samples: full, extra },
        { ...base, metric: 'one-service-change', higherIsBetter: false, samples: one, extra },
      );
    } finally {
      await dp.stop();
    }
  }
  return records;
}

export const run: BenchModule = async ({ quick, progress }) => {
  if (process.getuid?.() !== 0) {
    progress('proxier: skipped (needs root for network namespaces and iptables/nft)');
    return [];
  }
  const sizes = quick ? [1000] : [100, 1000, 10_000];
  const rounds = quick ? 1 : 3;
  const changes = quick ? 3 : 10;
  const records: BenchRecord[] = await tsDataplaneSync(
    quick ? [100] : [100, 1000, 10_000],
    changes,
    progress,
  );
  for (const backend of backends) {
    const ns = `embench${process.pid % 100000}`;
    execFileSync('ip', ['netns', 'add', ns]);
    const undo = onCleanup(() => execFileSync('ip', ['netns', 'del', ns]));
    const commandPrefix = ['ip', 'netns', 'exec', ns];
    const make = () =>
      backend === 'nftables'
        ? new NftablesInterceptor({ log: silentLogger, bypassGid: 40001, commandPrefix })
        : new IptablesInterceptor({ log: silentLogger, bypassGid: 40001, binary: backend, commandPrefix });
    try {
      for (const n of sizes) {
        const targets = syntheticTargets(n);
        const full: number[] = [];
        const one: number[] = [];
        for (let r = 0; r < rounds; r++) {
          const ic = make();
          await ic.start();
          let t0 = performance.now();
          await ic.sync(targets);
          full.push(performance.now() - t0);
          for (let c = 0; c < changes; c++) {
            const next = [...targets];
            const i = (c * 7919) % n;
            next[i] = { ...next[i]!, toPort: 60000 + c };
            t0 = performance.now();
            await ic.sync(next);
            one.push(performance.now() - t0);
          }
          await ic.stop();
        }
        const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
        progress(
          `proxier: ${backend} ${n} services: full sync ${median(full).toFixed(1)} ms, one-service change ${median(one).toFixed(1)} ms`,
        );
        const path = backend === 'nftables' ? 'nft -f (map elements)' : `${backend}-restore --noflush`;
        const base = {
          suite: 'rule-sync',
          case: `${n}-services`,
          contender: `edgemesh-${backend}`,
          unit: 'ms',
        };
        records.push(
          {
            ...base,
            metric: 'full-sync',
            higherIsBetter: false,
            samples: full,
            extra: { path, goal: '<= 1000 ms at 10k' },
          },
          {
            ...base,
            metric: 'one-service-change',
            higherIsBetter: false,
            samples: one,
            extra: { path: `${path}, delta only`, goal: '<= 100 ms at 10k' },
          },
        );
      }
    } finally {
      undo();
    }
  }
  return records;
};
