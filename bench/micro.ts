// benchmark.js micro-benchmarks of the hot functions: endpoint pick per policy, DNS query parse and
// cluster-name lookup (beside dns-packet's generic decode/encode as a reference), rule rendering
// for 1k services, config parsing. Every module is imported defensively: a case whose code is not
// there (or changed shape) is skipped with a note, never failing the run.
import Benchmark from 'benchmark';
import type { Endpoint, ServiceEntry, ServicePortEntry, ServiceTable } from '../src/controller/types.ts';
import type { InterceptTarget } from '../src/proxier/interceptor.ts';
import type { BenchModule, BenchOptions, BenchRecord } from './lib/record.ts';
import { fmt } from './lib/stats.ts';

interface Case {
  name: string;
  /** Builds the function to time (may throw: the case is then skipped with a note). */
  setup: () => Promise<() => unknown>;
}

function endpoints(n: number): Endpoint[] {
  return Array.from({ length: n }, (_, i) => ({
    ip: `10.244.${i >> 8}.${i & 255}`,
    port: 8080,
    ready: true,
    serving: true,
    terminating: false,
    nodeName: `node-${i % 3}`,
  }));
}

function service(i: number, port: Partial<ServicePortEntry> = {}): ServiceEntry {
  return {
    namespace: `ns${i % 10}`,
    name: `svc${i}`,
    key: `ns${i % 10}/svc${i}`,
    clusterIPs: [`10.96.${i >> 8}.${i & 255}`],
    headless: false,
    type: 'ClusterIP',
    ports: [
      {
        name: 'http',
        port: 80,
        protocol: 'TCP',
        appProtocol: 'http',
        targetPort: 8080,
        endpoints: endpoints(3),
        ...port,
      },
    ],
    sessionAffinity: { type: 'None', timeoutSeconds: 10800 },
    labels: {},
    proxied: true,
  };
}

function table(n: number): ServiceTable {
  return {
    generation: 1,
    services: new Map(Array.from({ length: n }, (_, i) => [service(i).key, service(i)])),
    gateways: new Map(),
    virtualServices: new Map(),
    destinationRules: new Map(),
    secrets: new Map(),
  };
}

function targets(n: number): InterceptTarget[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `ns${i % 10}/svc${i}:http`,
    clusterIP: `10.96.${i >> 8}.${i & 255}`,
    port: 80,
    protocol: 'TCP' as const,
    toPort: 40001,
  }));
}

const policies: Array<[string, ServicePortEntry['trafficPolicy']]> = [
  ['round-robin', { loadBalancer: { simple: 'ROUND_ROBIN' } }],
  ['random', { loadBalancer: { simple: 'RANDOM' } }],
  ['least-request', { loadBalancer: { simple: 'LEAST_REQUEST' } }],
  ['ring-hash(source-ip)', { loadBalancer: { consistentHash: { useSourceIp: true } } }],
  [
    'maglev(source-ip)',
    { loadBalancer: { consistentHash: { useSourceIp: true, maglev: { tableSize: 65537 } } } },
  ],
];

function cases(): Case[] {
  const list: Case[] = [];
  for (const [label, trafficPolicy] of policies) {
    list.push({
      name: `lb pick: ${label}, 10 endpoints`,
      setup: async () => {
        const { createBalancer } = await import('../src/lb/index.ts');
        const svc = service(1, { endpoints: endpoints(10), trafficPolicy });
        const b = createBalancer(svc, svc.ports[0]!);
        const clients = Array.from({ length: 256 }, (_, i) => `192.168.${i >> 4}.${i & 15}`);
        let i = 0;
        return () => {
          const ep = b.pick({ clientIp: clients[i++ & 255]! });
          if (ep) b.onResult?.(ep, true);
          return ep;
        };
      },
    });
  }
  list.push({
    name: 'murmur3: 24-byte key',
    setup: async () => {
      const { murmur3 } = await import('../src/lb/index.ts');
      return () => murmur3('10.244.17.3:8080#client42');
    },
  });
  const queryBytes = async () => {
    const packet = (await import('dns-packet')).default;
    return packet.encode({
      type: 'query',
      id: 4242,
      flags: packet.RECURSION_DESIRED,
      questions: [{ type: 'A', name: 'svc7.ns7.svc.cluster.local' }],
    });
  };
  list.push({
    name: 'dns: parse query (ours)',
    setup: async () => {
      const { parseQuery } = await import('../src/dns/wire.ts');
      const q = await queryBytes();
      return () => parseQuery(q);
    },
  });
  list.push({
    name: 'dns: cluster-name lookup, 1k services',
    setup: async () => {
      const { NameIndex } = await import('../src/dns/name-index.ts');
      const index = new NameIndex(table(1000), { domain: 'cluster.local', ttl: 5 });
      return () => index.lookup('svc7.ns7.svc.cluster.local', 1, 1);
    },
  });
  list.push({
    name: 'dns: NameIndex build, 1k services',
    setup: async () => {
      const { NameIndex } = await import('../src/dns/name-index.ts');
      const t = table(1000);
      return () => new NameIndex(t, { domain: 'cluster.local', ttl: 5 });
    },
  });
  list.push({
    name: 'dns: dns-packet decode (reference)',
    setup: async () => {
      const packet = (await import('dns-packet')).default;
      const q = await queryBytes();
      return () => packet.decode(q);
    },
  });
  list.push({
    name: 'dns: dns-packet encode answer (reference)',
    setup: async () => {
      const packet = (await import('dns-packet')).default;
      return () =>
        packet.encode({
          type: 'response',
          id: 4242,
          flags: packet.AUTHORITATIVE_ANSWER,
          questions: [{ type: 'A', name: 'svc7.ns7.svc.cluster.local' }],
          answers: [{ type: 'A', name: 'svc7.ns7.svc.cluster.local', ttl: 5, data: '10.96.0.7' }],
        });
    },
  });
  list.push({
    name: 'iptables: render full ruleset, 1k services',
    setup: async () => {
      const r = await import('../src/proxier/iptables-render.ts');
      const t = targets(1000);
      const empty = r.parseSave('');
      return () => r.renderFull(t, {}, empty);
    },
  });
  list.push({
    name: 'nftables: render full ruleset, 1k services',
    setup: async () => {
      const r = await import('../src/proxier/nftables-render.ts');
      const t = targets(1000);
      return () => r.renderFull(t, {});
    },
  });
  list.push({
    name: 'config: parse + validate a typical agent.yaml',
    setup: async () => {
      const { parseConfigText } = await import('../src/config/load.ts');
      const text = [
        'nodeName: edge-1',
        'kubeAPIConfig:',
        '  master: http://127.0.0.1:10550',
        'modules:',
        '  edgeDNS:',
        '    enable: true',
        '    listenPort: 53',
        '  edgeProxy:',
        '    enable: true',
        '    subNet: 10.96.0.0/12',
        '    listenPort: 40001',
        '',
      ].join('\n');
      parseConfigText(text, 'bench.yaml');
      return () => parseConfigText(text, 'bench.yaml');
    },
  });
  return list;
}

/** Runs every micro-benchmark once (benchmark.js picks the iteration counts). */
export const run: BenchModule = async (options: BenchOptions) => {
  const note = options.note ?? ((t: string) => options.progress(`note: ${t}`));
  const records: BenchRecord[] = [];
  for (const c of cases()) {
    let fn: () => unknown;
    try {
      fn = await c.setup();
      fn();
    } catch (err) {
      note(`micro: '${c.name}' skipped: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    // benchmark.js runs synchronously here; quick mode only proves each case runs.
    const bench = new Benchmark(c.name, fn, {
      maxTime: options.quick ? 0.05 : 1,
      minSamples: options.quick ? 2 : 10,
      initCount: 1,
    });
    bench.run();
    if (bench.error) {
      note(`micro: '${c.name}' failed: ${String(bench.error)}`);
      continue;
    }
    // stats.sample holds seconds per operation for each timed cycle: keep every one, as ops/s.
    const samples = bench.stats.sample.filter((s) => s > 0).map((s) => 1 / s);
    records.push({
      suite: 'micro',
      case: c.name,
      contender: 'edgemesh',
      metric: 'ops',
      unit: 'per s',
      higherIsBetter: true,
      samples,
      extra: { rme: Number(bench.stats.rme.toFixed(2)), meanNs: Number((bench.stats.mean * 1e9).toFixed(1)) },
    });
    options.progress(`micro: ${c.name}: ${fmt(bench.hz)} ops/s ±${bench.stats.rme.toFixed(1)}%`);
  }
  return records;
};
