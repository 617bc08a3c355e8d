// Cross-LAN suite: LAN A → LAN B through the edgemesh relay (client → agent data plane → tunnel →
// relay in the cloud → agent in LAN B → backend) versus plain routed TCP over the same namespaces
// and links (LAN A gateway → cloud → LAN B gateway, NAT on the way out), which is the limit.
// Throughput by iperf3; time to first byte as the per-connection cycle (connect, 1-byte request,
// reply) of the load generator, one client thread. Topology: test/helpers/lans.ts. Two far nodes in
// LAN B: b1 takes sealed streams (data connections, sealed records, relay splice), b2 has
// sealedData off, so the same client agent and relay carry its streams framed over TLS.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startCli } from '../test/helpers/cli.ts';
import { CLOUD_IP, createLans } from '../test/helpers/lans.ts';
import { onCleanup } from './lib/cleanup.ts';
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

async function iperf(ns: string, host: string, seconds: number): Promise<number> {
  const r = await exec(['iperf3', '-c', host, '-p', String(IPERF_PORT), '-t', String(seconds), '-J'], {
    ns,
    timeoutMs: (seconds + 20) * 1000,
  });
  const bps = (JSON.parse(r.stdout || '{}') as { end?: { sum_received?: { bits_per_second?: number } } }).end
    ?.sum_received?.bits_per_second;
  if (r.code !== 0 || typeof bps !== 'number')
    throw new Error(`iperf3 to ${host} failed: ${r.stdout.slice(0, 300)}`);
  return bps / 1e9;
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
  const lans = await createLans('bt', [1, 2]);
  // Ctrl-C cannot wait for async teardown: delete the namespaces synchronously then.
  const unregister = onCleanup(() => {
    for (const ns of [lans.cloud, ...Object.values(lans.nodes).flat()])
      execFileSync('ip', ['netns', 'del', ns.name], { stdio: 'ignore' });
  });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-bench-tunnel-'));
  const stops: Array<() => Promise<void>> = [];
  try {
    const a1 = lans.nodes[1]![0]!;
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
    const agent = (ns: string, node: string, extra: string[]) =>
      superviseTree(
        inNs(ns, [
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
    stops.push((await agent(b1.name, 'b1', [])).stop);
    stops.push((await agent(b2.name, 'b2', [])).stop);
    stops.push((await agent(a1.name, 'a1', ['--intercept', 'iptables'])).stop);
    const status = JSON.parse(
      (await exec(['curl', '-s', 'http://127.0.0.1:10551/status'], { ns: a1.name })).stdout,
    );
    const dataplane = String(status.dataplane?.mode ?? 'unknown');
    for (const vip of [VIP, VIP_FRAMED])
      await until(
        async () => (await connRate(a1.name, vip, ECHO_PORT, 0.2, 1)).connections > 0,
        20_000,
        `service ${vip} via relay`,
      );
    const pump = String(status.tunnel?.sealed?.pump ?? 'unknown');
    await lans.routeLans();

    const contenders = [
      { name: 'routed-tcp', host: lans.ip(2, 0), path: 'kernel routing + NAT (limit)' },
      {
        name: 'edgemesh-relay',
        host: VIP,
        path: `${dataplane} data plane → sealed data connection (${pump} pump) → relay splice → sealed (${pump} pump)`,
      },
      {
        name: 'edgemesh-relay-framed',
        host: VIP_FRAMED,
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
        rec(c, 'throughput', 'Gbit/s', true, await iperf(a1.name, c.host, seconds));
        options.progress(`tunnel: round ${round + 1}/${rounds} ${c.name} time to first byte`);
        const cr = await connRate(a1.name, c.host, ECHO_PORT, options.quick ? 0.5 : 2, 1);
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
