// Cross-LAN suite: LAN A → LAN B through the edgemesh relay (client → agent data plane → tunnel →
// relay in the cloud → agent in LAN B → backend) versus plain routed TCP over the same namespaces
// and links (LAN A gateway → cloud → LAN B gateway, NAT on the way out), which is the limit.
// Throughput by iperf3; time to first byte as the per-connection cycle (connect, 1-byte request,
// reply) of the load generator, one client thread. Topology: test/helpers/lans.ts. Two far nodes in
// LAN B: b1 takes sealed streams (data connections, sealed records, relay splice), b2 has
// sealedData off, so the same client agent and relay carry its streams framed over TLS. Two client
// nodes in LAN A: a1 as shipped (the data plane hands client fds to the tunnel), a2 the same with
// EDGEMESH_TUNNEL_HANDOFF=off (the plane's loopback connection to the tunnel port): an A/B in one
// run. Every throughput sample also records a CPU budget (CPU-seconds per GB, per party).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startCli } from '../test/helpers/cli.ts';
import { CLOUD_IP, createLans } from '../test/helpers/lans.ts';
import { onCleanup } from './lib/cleanup.ts';
import { budgetPerGB, budgetSnapshot } from './lib/cpu-budget.ts';
import { delay, exec, inNs } from './lib/exec.ts';
import { connRate, loadgenBinary } from './lib/loadgen.ts';
import type { BenchModule, BenchRecord } from './lib/record.ts';
import { superviseTree } from './lib/supervise.ts';

const binPath = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../src/cli/bin.js');
const VIP = '10.96.0.31';
const VIP_FRAMED = '10.96.0.32';
const IPERF_PORT = 5201;
const ECHO_PORT = 7000;
const RELAY_PORT = 20007;

const manifests = (name: string, node: string, vip: string, podIP: string) => `
apiVersion: v1
kind: Pod
metadata: { name: ${name}-0, namespace: bench, labels: { app: ${name} } }
spec: { nodeName: ${node}, containers: [{ name: c, image: x }] }
status: { podIP: ${podIP}, phase: Running }
---
apiVersion: v1
kind: Service
metadata: { name: ${name}, namespace: bench }
spec:
  clusterIP: ${vip}
  selector: { app: ${name} }
  ports:
    - { name: tcp-iperf, port: ${IPERF_PORT}, targetPort: ${IPERF_PORT}, protocol: TCP }
    - { name: tcp-echo, port: ${ECHO_PORT}, targetPort: ${ECHO_PORT}, protocol: TCP }
`;

// b1 advertises an address nobody routes, so a1 stays on the relay even once the LANs are routed.
const agentYaml = (psk: string, proxy: boolean, sealed = true) => `
modules:
  edgeProxy: { enable: ${proxy} }
  edgeTunnel:
    enable: true
    sealedData: ${sealed}
    pskFile: ${psk}
    advertiseAddress: ["192.0.2.1"]
    relayNodes: [{ nodeName: relay-1, advertiseAddress: ["${CLOUD_IP}:${RELAY_PORT}"] }]
`;

/** One iperf3 run: receiver Gbit/s, bytes, and the client's and server's own CPU (iperf3's getrusage). */
interface IperfRun {
  gbps: number;
  bytes: number;
  /** CPU-seconds of the iperf3 client and server during the test. */
  clientCpuS: number;
  serverCpuS: number;
}

async function iperf(ns: string, host: string, seconds: number): Promise<IperfRun> {
  const r = await exec(['iperf3', '-c', host, '-p', String(IPERF_PORT), '-t', String(seconds), '-J'], {
    ns,
    timeoutMs: (seconds + 20) * 1000,
  });
  const end = (
    JSON.parse(r.stdout || '{}') as {
      end?: {
        sum_received?: { bits_per_second?: number; bytes?: number; seconds?: number };
        cpu_utilization_percent?: { host_total?: number; remote_total?: number };
      };
    }
  ).end;
  const bps = end?.sum_received?.bits_per_second;
  if (r.code !== 0 || typeof bps !== 'number')
    throw new Error(`iperf3 to ${host} failed: ${r.stdout.slice(0, 300)}`);
  const secs = end?.sum_received?.seconds ?? seconds;
  const cpu = end?.cpu_utilization_percent;
  return {
    gbps: bps / 1e9,
    bytes: end?.sum_received?.bytes ?? (bps / 8) * secs,
    clientCpuS: ((cpu?.host_total ?? 0) / 100) * secs,
    serverCpuS: ((cpu?.remote_total ?? 0) / 100) * secs,
  };
}

/**
 * Rows of the CPU budget, in path order: the party and role prefixes of budgetPerGB's keys
 * ('agent-a/pump' = the native pump threads, 'agent-a/other' = the native plane's piscina workers
 * plus Node's helper threads, '/main' = the JS event loop), and 'machine' = every busy tick.
 */
const BUDGET_ROWS = [
  'client',
  'agent-a/other',
  'agent-a/main',
  'agent-a/em-pump',
  'relay/main',
  'relay/em-pump',
  'relay/other',
  'agent-b/em-pump',
  'agent-b/main',
  'agent-b/other',
  'server',
  'softirq',
  'machine',
] as const;

/** 'rest': the machine's busy CPU no row above accounts for (other processes, kernel threads). */
function budgetRows(budget: Map<string, number>): Array<[string, number]> {
  const rows: Array<[string, number]> = BUDGET_ROWS.map((r) => [r, budget.get(r) ?? 0]);
  const named = rows.filter(([r]) => r !== 'machine').reduce((a, [, v]) => a + v, 0);
  rows.push(['rest', Math.max(0, (budget.get('machine') ?? 0) - named)]);
  return rows;
}

async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (await check().catch(() => false)) return;
    await delay(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** The tunnel suite. */
export const run: BenchModule = async (options) => {
  const seconds = options.quick ? 1 : 5;
  const rounds = options.rounds ?? (options.quick ? 1 : 3);
  const lans = await createLans('bt', [2, 2]);
  // Ctrl-C cannot wait for async teardown: delete the namespaces synchronously then.
  const unregister = onCleanup(() => {
    for (const ns of [lans.cloud, ...Object.values(lans.nodes).flat()])
      execFileSync('ip', ['netns', 'del', ns.name], { stdio: 'ignore' });
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-bench-tunnel-'));
  const stops: Array<() => Promise<void>> = [];
  try {
    const a1 = lans.nodes[1]![0]!;
    const a2 = lans.nodes[1]![1]!;
    const b1 = lans.nodes[2]![0]!;
    const b2 = lans.nodes[2]![1]!;
    const psk = path.join(dir, 'psk');
    fs.writeFileSync(psk, 'benchmark pre-shared key, not secret\n');
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(path.join(dir, 'manifests', 'far.yaml'), manifests('far', 'b1', VIP, lans.ip(2, 0)));
    fs.writeFileSync(
      path.join(dir, 'manifests', 'far-framed.yaml'),
      manifests('far-framed', 'b2', VIP_FRAMED, lans.ip(2, 1)),
    );
    fs.writeFileSync(path.join(dir, 'a1.yaml'), agentYaml(psk, true));
    fs.writeFileSync(path.join(dir, 'a2.yaml'), agentYaml(psk, true));
    fs.writeFileSync(path.join(dir, 'b1.yaml'), agentYaml(psk, false));
    fs.writeFileSync(path.join(dir, 'b2.yaml'), agentYaml(psk, false, false));

    for (const ns of [b1, b2])
      for (const argv of [
        ['iperf3', '-s', '-p', String(IPERF_PORT)],
        [await loadgenBinary(), 'serve', String(ECHO_PORT)],
      ]) {
        const p = startCli([], { command: inNs(ns.name, argv) });
        stops.push(async () => void (await p.stop('SIGKILL')));
      }
    const relay = await superviseTree(
      inNs(lans.cloud.name, [
        process.execPath,
        binPath,
        'relay',
        '--node-name',
        'relay-1',
        '--listen',
        `0.0.0.0:${RELAY_PORT}`,
        '--psk-file',
        psk,
      ]),
      () =>
        until(
          async () =>
            (await exec(['curl', '-sf', 'http://127.0.0.1:10553/healthz'], { ns: lans.cloud.name })).code ===
            0,
          20_000,
          'relay',
        ),
    );
    stops.push(relay.stop);
    const agent = (ns: string, node: string, extra: string[], env: string[] = []) =>
      superviseTree(
        inNs(ns, [
          ...(env.length > 0 ? ['env', ...env] : []),
          process.execPath,
          binPath,
          'agent',
          '--config',
          path.join(dir, `${node}.yaml`),
          '--manifests',
          path.join(dir, 'manifests'),
          '--no-dns',
          '--node-name',
          node,
          '--state-dir',
          path.join(dir, `state-${node}`),
          ...extra,
        ]),
        () =>
          until(
            async () => {
              const r = await exec(['curl', '-s', 'http://127.0.0.1:10551/status'], { ns });
              const s = JSON.parse(r.stdout) as { tunnel?: { relays: Array<{ connected: boolean }> } };
              return s.tunnel?.relays[0]?.connected === true;
            },
            30_000,
            `agent ${node}`,
          ),
      );
    const b1Agent = await agent(b1.name, 'b1', []);
    stops.push(b1Agent.stop);
    const b2Agent = await agent(b2.name, 'b2', []);
    stops.push(b2Agent.stop);
    const a1Agent = await agent(a1.name, 'a1', ['--intercept', 'iptables']);
    stops.push(a1Agent.stop);
    // The A/B twin of a1: the same agent with the tunnel's fd hand-off off, so its data plane
    // splices each client into a loopback connection to the tunnel port (the path before it).
    const a2Agent = await agent(a2.name, 'a2', ['--intercept', 'iptables'], ['EDGEMESH_TUNNEL_HANDOFF=off']);
    stops.push(a2Agent.stop);
    const status = JSON.parse(
      (await exec(['curl', '-s', 'http://127.0.0.1:10551/status'], { ns: a1.name })).stdout,
    );
    const dataplane = String(status.dataplane?.mode ?? 'unknown');
    for (const [ns, vip] of [
      [a1.name, VIP],
      [a1.name, VIP_FRAMED],
      [a2.name, VIP],
    ] as const)
      await until(
        async () => (await connRate(ns, vip, ECHO_PORT, 0.2, 1)).connections > 0,
        20_000,
        `service ${vip} via relay from ${ns}`,
      );
    const pump = String(status.tunnel?.sealed?.pump ?? 'unknown');
    await lans.routeLans();

    const contenders = [
      {
        name: 'routed-tcp',
        host: lans.ip(2, 0),
        ns: a1.name,
        near: a1Agent.pid,
        far: b1Agent.pid,
        path: 'kernel routing + NAT (limit)',
      },
      {
        name: 'edgemesh-relay',
        host: VIP,
        ns: a1.name,
        near: a1Agent.pid,
        far: b1Agent.pid,
        path: `${dataplane} data plane hands the client fd to the tunnel → sealed data connection (${pump} pump) → relay splice → sealed (${pump} pump)`,
      },
      {
        name: 'edgemesh-relay-loopback',
        host: VIP,
        ns: a2.name,
        near: a2Agent.pid,
        far: b1Agent.pid,
        path: `as edgemesh-relay, but the ${dataplane} data plane splices the client into a loopback connection to the tunnel port (EDGEMESH_TUNNEL_HANDOFF=off)`,
      },
      {
        name: 'edgemesh-relay-framed',
        host: VIP_FRAMED,
        ns: a1.name,
        near: a1Agent.pid,
        far: b2Agent.pid,
        path: `${dataplane} data plane → TLS tunnel → relay → TLS tunnel (far agent sealedData: false)`,
      },
    ].filter((c) => !options.contenders || options.contenders.includes(c.name));
    const records = new Map<string, BenchRecord>();
    const rec = (
      c: (typeof contenders)[number],
      metric: string,
      unit: string,
      higher: boolean,
      v: number,
    ) => {
      const key = `${c.name}/${metric}`;
      let r = records.get(key);
      if (!r) {
        r = {
          suite: 'tunnel',
          case: 'lan-a-to-lan-b',
          contender: c.name,
          metric,
          unit,
          higherIsBetter: higher,
          samples: [],
          extra: { path: c.path },
        };
        records.set(key, r);
      }
      r.samples.push(v);
    };
    for (let round = 0; round < rounds; round++) {
      for (const c of contenders) {
        options.progress(`tunnel: round ${round + 1}/${rounds} ${c.name} throughput`);
        // The CPU budget of this transfer, per party (bench/lib/cpu-budget.ts): the agent and relay
        // threads by role, iperf3's own getrusage for client and server, the machine's softirq.
        const parties = { 'agent-a': c.near, relay: relay.pid, 'agent-b': c.far };
        const before = budgetSnapshot(parties);
        const run = await iperf(c.ns, c.host, seconds);
        const budget = budgetPerGB(before, budgetSnapshot(parties), run.bytes);
        rec(c, 'throughput', 'Gbit/s', true, run.gbps);
        const gb = run.bytes / 1e9;
        budget.set('client', run.clientCpuS / gb);
        budget.set('server', run.serverCpuS / gb);
        for (const [row, v] of budgetRows(budget)) rec(c, `cpu-${row}`, 'CPU-s/GB', false, v);
        options.progress(`tunnel: round ${round + 1}/${rounds} ${c.name} time to first byte`);
        const cr = await connRate(c.ns, c.host, ECHO_PORT, options.quick ? 0.5 : 2, 1);
        rec(c, 'ttfb-p50', 'us', false, cr.p50);
        rec(c, 'ttfb-p99', 'us', false, cr.p99);
      }
    }
    return [...records.values()];
  } finally {
    for (const stop of stops.reverse()) await stop().catch(() => {});
    await lans.destroy();
    unregister();
    fs.rmSync(dir, { recursive: true, force: true });
  }
};
