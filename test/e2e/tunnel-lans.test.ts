// Edge connectivity across LANs with the real `edgemesh agent` and `edgemesh relay` processes
// (the client agent on the native data plane, the default).
// Topology (all in throwaway network namespaces): a cloud namespace, and three LANs (bridges in their
// gateway namespaces, MASQUERADE toward the cloud) whose nodes cannot route to each other. Agents on
// a1 + a2 (LAN A), b1 (LAN B), c1 (LAN C) and the cloud; two relays in the cloud. A client on a1
// reaches services whose only pod is in LAN B or LAN C (via relay, UDP too; 16 MiB byte-exact to LAN B on a
// sealed data connection the relay splices), in the cloud, and on a2 in its own LAN (direct, sealed
// too, UDP too: relay counters do not move); LAN C reaches the cloud
// but not LAN A or B; a killed relay is replaced by the other within 2 s; a wrong PSK is rejected
// with a log line on both sides; with every relay gone, the same-LAN path still works.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeAgentArgs } from '../helpers/agent.ts';
import { binPath, type RunningCli, repoRoot } from '../helpers/cli.ts';
import { eventually } from '../helpers/eventually.ts';
import { CLOUD_IP, createLans, type Lans } from '../helpers/lans.ts';
import { podManifest, serviceManifest } from '../helpers/manifests.ts';
import type { Netns } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('tunnel e2e (network namespaces, NAT, iptables)');

const RELAY_PORTS = [20007, 20008];
const tool = path.join(repoRoot, 'test/helpers/stream-tool.mjs');

const pod = (name: string, node: string, ip: string, app: string) =>
  podManifest({ name, namespace: 'edge', app, ip, nodeName: node });
const service = (name: string, clusterIP: string, sink = false, udp = false) =>
  serviceManifest({
    name,
    namespace: 'edge',
    clusterIP,
    app: name,
    ports: [
      { name: 'http-hostname', port: 80, targetPort: 9376 },
      { name: 'tcp-echo', port: 2701, targetPort: 2701 },
      ...(sink ? [{ name: 'tcp-sink', port: 2702, targetPort: 2702 }] : []),
      ...(udp ? [{ name: 'udp-echo', port: 5353, targetPort: 5353, protocol: 'UDP' as const }] : []),
    ],
  });
const manifests = [
  pod('lanb-0', 'b1', '10.2.0.2', 'lanb'),
  service('lanb', '10.96.0.21', true, true),
  pod('lanc-0', 'c1', '10.3.0.2', 'lanc'),
  service('lanc', '10.96.0.24'),
  pod('cloud-0', 'cloud', CLOUD_IP, 'cloudsvc'),
  service('cloudsvc', '10.96.0.22'),
  pod('lana-0', 'a2', '10.1.0.3', 'lana'),
  service('lana', '10.96.0.23', false, true),
].join('---\n');

const agentYaml = (psk: string, proxy: boolean, listenPort = 20006) => `
modules:
  edgeProxy: { enable: ${proxy}, workers: 1 }
  edgeTunnel:
    enable: true
    listenPort: ${listenPort}
    pskFile: ${psk}
    relayNodes:
      - { nodeName: relay-1, advertiseAddress: ["${CLOUD_IP}:${RELAY_PORTS[0]}"] }
      - { nodeName: relay-2, advertiseAddress: ["${CLOUD_IP}:${RELAY_PORTS[1]}"] }
`;

describe.skipIf(skip)('tunnel across LANs (agents + relays in network namespaces)', () => {
  let lans: Lans | undefined;
  let dir: string;
  let cloud: Netns;
  let a1: Netns;
  let c1: Netns;
  let b1: Netns;
  const relays: RunningCli[] = [];
  const agents = new Map<string, RunningCli>();

  /** Sum of the samples of metric `name` at `url` whose labels include `labels` (e.g. `path="relay"`). */
  async function metric(ns: Netns, url: string, name: string, ...labels: string[]): Promise<number> {
    const text = (await ns.exec('curl', ['-s', url])).stdout;
    let sum = 0;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{([^}]*)\\})? (\\d+)`, 'gm')))
      if (labels.every((l) => (m[1] ?? '').includes(l))) sum += Number(m[2]);
    return sum;
  }
  /** Like metric(), summed over the relays still running. */
  async function relayMetric(name: string, ...labels: string[]): Promise<number> {
    let sum = 0;
    for (const i of [0, 1]) {
      if (relays[i]!.child.exitCode !== null || relays[i]!.child.signalCode !== null) continue;
      sum += await metric(cloud, `http://127.0.0.1:${10553 + i}/metrics`, name, ...labels);
    }
    return sum;
  }
  /** Relay streams forwarded so far. */
  const relayStreams = () => relayMetric('edgemesh_relay_streams_total');
  /** Metric `name` of the agent in `ns`. */
  const agentMetric = (ns: Netns, name: string, ...labels: string[]) =>
    metric(ns, 'http://127.0.0.1:10551/metrics', name, ...labels);
  /** Connections a1's native plane forwarded for `service` so far. */
  async function nativeConnections(service: string): Promise<number> {
    const m = await a1.run('curl', '-s', 'http://127.0.0.1:10551/metrics');
    const re = new RegExp(`^edgemesh_native_service_connections_total\\{service="${service}"\\} (\\d+)`, 'm');
    return Number(re.exec(m)?.[1] ?? 0);
  }
  const http = async (vip: string) => (await a1.curl(`http://${vip}:80/`, 3)).stdout.trim();
  const echo = async (vip: string, text: string) => (await a1.tcp(vip, 2701, text)).stdout;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-tunnel-e2e-'));
    const psk = path.join(dir, 'psk');
    fs.writeFileSync(psk, 'e2e shared secret for the tunnel\n');
    fs.writeFileSync(path.join(dir, 'bad-psk'), 'not the secret the relays know\n');
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(path.join(dir, 'manifests', 'all.yaml'), manifests);
    fs.writeFileSync(path.join(dir, 'client.yaml'), agentYaml(psk, true));
    fs.writeFileSync(path.join(dir, 'node.yaml'), agentYaml(psk, false));
    fs.writeFileSync(path.join(dir, 'bad.yaml'), agentYaml(path.join(dir, 'bad-psk'), false, 20016));

    lans = await createLans('t', [2, 1, 1]);
    cloud = lans.cloud;
    const [na1, a2] = lans.nodes[1]!;
    b1 = lans.nodes[2]![0]!;
    a1 = na1!;
    c1 = lans.nodes[3]![0]!;

    const hostnameEcho = ['--http', '9376', '--echo', '2701'];
    const sink = b1.spawn(process.execPath, [tool, 'serve', '--sink', '2702']);
    await Promise.all([
      b1.backend('pod-b', [...hostnameEcho, '--udp', '5353']),
      c1.backend('pod-c', hostnameEcho),
      a2!.backend('pod-a2', [...hostnameEcho, '--udp', '5353']),
      cloud.backend('pod-cloud', hostnameEcho),
      sink.waitFor(/ready/, 10_000),
    ]);

    for (const [i, port] of RELAY_PORTS.entries()) {
      const r = cloud.spawn(process.execPath, [
        binPath,
        'relay',
        '--node-name',
        `relay-${i + 1}`,
        '--listen',
        `0.0.0.0:${port}`,
        '--psk-file',
        psk,
        '--metrics-listen',
        `127.0.0.1:${10553 + i}`,
      ]);
      relays.push(r);
    }
    await Promise.all(relays.map((r) => r.waitFor(/relay started/, 20_000)));
    const start = (ns: Netns, node: string, yaml: string, extra: string[] = []) => {
      const a = ns.agent([...nodeAgentArgs(dir, node, yaml), ...extra]);
      agents.set(node, a);
      return a;
    };
    start(a1, 'a1', 'client.yaml', ['--intercept', 'iptables', '--dataplane', 'native']);
    start(a2!, 'a2', 'node.yaml');
    start(b1, 'b1', 'node.yaml');
    start(c1, 'c1', 'node.yaml');
    start(cloud, 'cloud', 'node.yaml');
    await Promise.all([...agents.values()].map((a) => a.waitFor(/agent started/, 30_000)));
    // Each agent registered at both relays; a1's data plane serves all three services.
    await Promise.all(
      [...agents.values()].map((a) => a.waitFor(/connected to relay[\s\S]*connected to relay/, 15_000)),
    );
    await eventually(async () => (await http('10.96.0.21')) === 'pod-b', 20_000);
    await eventually(async () => (await http('10.96.0.24')) === 'pod-c', 10_000);
  }, 120_000);

  afterAll(async () => {
    await lans?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the LANs really cannot reach each other, and each reaches the cloud', async () => {
    const get = (ns: Netns, ip: string) => ns.exec('curl', ['-s', '--max-time', '1', `http://${ip}:9376/`]);
    const [aToB, aToC, cToA, cToA2, cToB, cToCloud, aToCloud] = await Promise.all([
      get(a1, '10.2.0.2'),
      get(a1, '10.3.0.2'),
      get(c1, '10.1.0.2'),
      get(c1, '10.1.0.3'),
      get(c1, '10.2.0.2'),
      get(c1, CLOUD_IP),
      get(a1, CLOUD_IP),
    ]);
    for (const r of [aToB, aToC, cToA, cToA2, cToB]) expect(r.code).not.toBe(0);
    // The negative checks fail because of the topology, not a dead network: the cloud answers.
    expect(cToCloud.stdout.trim()).toBe('pod-cloud');
    expect(aToCloud.stdout.trim()).toBe('pod-cloud');
  });

  it('reaches pods only in LAN B through the relay (HTTP and TCP echo)', async () => {
    const before = await relayStreams();
    const nativeBefore = await nativeConnections('edge/lanb');
    expect(await http('10.96.0.21')).toBe('pod-b');
    expect(await echo('10.96.0.21', 'across the relay\n')).toBe('across the relay\n');
    // The HTTP engine may reuse a pooled upstream connection; the echo is always a new stream.
    expect(await relayStreams()).toBeGreaterThanOrEqual(before + 1);
    // The echo port was forwarded by the native plane (HTTP ports go to the TS handlers).
    expect(await nativeConnections('edge/lanb')).toBeGreaterThanOrEqual(nativeBefore + 1);
    const status = JSON.parse(await a1.run('curl', '-s', 'http://127.0.0.1:10551/status'));
    expect(status.dataplane.mode).toMatch(/native/);
    expect(status.tunnel.peers).toContainEqual({ node: 'b1', path: 'relay' });
    const metrics = await a1.run('curl', '-s', 'http://127.0.0.1:10551/metrics');
    expect(metrics).toMatch(/edgemesh_tunnel_peer_path\{peer="b1",path="relay"\} 1/);
  });

  it('reaches pods only in LAN C through the relay', async () => {
    const before = await relayStreams();
    expect(await http('10.96.0.24')).toBe('pod-c');
    expect(await echo('10.96.0.24', 'a to c\n')).toBe('a to c\n');
    expect(await relayStreams()).toBeGreaterThanOrEqual(before + 1);
    const status = JSON.parse(await a1.run('curl', '-s', 'http://127.0.0.1:10551/status'));
    expect(status.tunnel.peers).toContainEqual({ node: 'c1', path: 'relay' });
  });

  it('a UDP service whose pod is only in LAN B answers a client in LAN A through the relay', async () => {
    const relayFlows = () => relayMetric('edgemesh_relay_datagram_flows_total', 'src="a1"', 'dst="b1"');
    const [flows0, relayed0] = await Promise.all([
      relayFlows(),
      relayMetric('edgemesh_relay_datagrams_total'),
    ]);
    const ask = (text: string) =>
      a1.exec('socat', ['-t', '1', '-T', '3', '-', 'UDP:10.96.0.21:5353'], { input: text });
    expect((await ask('across lans')).stdout).toBe('pod-b:across lans');
    // One flow a1 -> b1 through the relay, its datagram and the reply forwarded there.
    expect(await relayFlows()).toBe(flows0 + 1);
    expect(await relayMetric('edgemesh_relay_datagrams_total')).toBeGreaterThanOrEqual(relayed0 + 2);
    expect(
      await agentMetric(a1, 'edgemesh_tunnel_datagram_flows_total', 'path="relay"'),
    ).toBeGreaterThanOrEqual(1);
    expect(await agentMetric(b1, 'edgemesh_tunnel_datagram_flows_total', 'path="in"')).toBeGreaterThanOrEqual(
      1,
    );
    const status = JSON.parse(await a1.run('curl', '-s', 'http://127.0.0.1:10551/status'));
    expect(status.tunnel.datagrams.endpoints).toContainEqual(
      expect.objectContaining({ node: 'b1', endpoint: '10.2.0.2:5353' }),
    );
    expect(status.tunnel.datagrams.datagrams.tx).toBeGreaterThanOrEqual(1);
  });

  it('moves 16 MiB byte-exact to LAN B through the relay on a sealed data connection', async () => {
    const sealedOut = () =>
      agentMetric(a1, 'edgemesh_tunnel_sealed_streams_total', 'path="relay"', 'side="out"');
    const sealedIn = () =>
      agentMetric(b1, 'edgemesh_tunnel_sealed_streams_total', 'path="relay"', 'side="in"');
    const sealedTx = () =>
      agentMetric(a1, 'edgemesh_tunnel_sealed_bytes_total', 'path="relay"', 'direction="tx"');
    const relayRx = () => relayMetric('edgemesh_relay_bytes_total', 'node="a1"', 'direction="rx"');
    const failures = () => agentMetric(a1, 'edgemesh_tunnel_sealed_failures_total');
    // The relay's own pump counters: a splice pump started for the stream and carried its bytes.
    const relaySplices = () => relayMetric('edgemesh_tunnel_pump_events_total', 'counter="splice_started"');
    const relaySpliced = () => relayMetric('edgemesh_tunnel_pump_events_total', 'counter="splice_bytes"');
    const [streams0, out0, in0, tx0, rx0, fail0, splices0, spliced0] = await Promise.all([
      relayStreams(),
      sealedOut(),
      sealedIn(),
      sealedTx(),
      relayRx(),
      failures(),
      relaySplices(),
      relaySpliced(),
    ]);
    const r = await a1.exec(process.execPath, [tool, 'bulk', '10.96.0.21', '2702', String(16 << 20)], {
      timeoutMs: 30_000,
    });
    expect(r.code, r.stderr).toBe(0);
    const res = JSON.parse(r.stdout.trim().split('\n').pop()!);
    expect(res).toMatchObject({ ok: true, bytes: 16 << 20 });
    expect(await relayStreams()).toBe(streams0 + 1);
    // Both agents carried it as a sealed stream via the relay (not framed on the TLS session), and
    // the relay spliced its ciphertext (16 MiB plus record headers and tags, counted at the end).
    expect(await sealedOut()).toBe(out0 + 1);
    expect(await sealedIn()).toBe(in0 + 1);
    await eventually(async () => (await sealedTx()) >= tx0 + (16 << 20), 5000);
    await eventually(async () => (await relayRx()) >= rx0 + (16 << 20), 5000);
    expect(await relaySplices()).toBe(splices0 + 1);
    expect(await relaySpliced()).toBeGreaterThanOrEqual(spliced0 + (16 << 20));
    expect(await failures()).toBe(fail0);
    const status = JSON.parse(await a1.run('curl', '-s', 'http://127.0.0.1:10551/status'));
    expect(status.tunnel.sealed).toMatchObject({ enabled: true, pump: 'native' });
  });

  it('reaches pods only in the cloud, and pods in its own LAN directly (relay counters do not move)', async () => {
    expect(await http('10.96.0.22')).toBe('pod-cloud');
    expect(await echo('10.96.0.22', 'to the cloud\n')).toBe('to the cloud\n');
    await eventually(async () => {
      const s = JSON.parse(await a1.run('curl', '-s', 'http://127.0.0.1:10551/status'));
      return s.tunnel.peers.some(
        (p: { node: string; path: string }) => p.node === 'a2' && p.path === 'direct',
      );
    }, 15_000);
    const directSealed = () =>
      agentMetric(a1, 'edgemesh_tunnel_sealed_streams_total', 'path="direct"', 'side="out"');
    const [before, sealedBefore] = await Promise.all([relayStreams(), directSealed()]);
    expect(await http('10.96.0.23')).toBe('pod-a2');
    expect(await echo('10.96.0.23', 'same lan\n')).toBe('same lan\n');
    expect(await relayStreams()).toBe(before);
    // The direct stream is sealed too (a data connection to a2's tunnel port, no relay involved).
    expect(await directSealed()).toBeGreaterThanOrEqual(sealedBefore + 1);
    // UDP takes the direct session too: a datagram flow a1 -> a2 the relays never see.
    const relayed = await relayMetric('edgemesh_relay_datagrams_total');
    const udp = await a1.exec('socat', ['-t', '1', '-T', '3', '-', 'UDP:10.96.0.23:5353'], { input: 'lan' });
    expect(udp.stdout).toBe('pod-a2:lan');
    expect(
      await agentMetric(a1, 'edgemesh_tunnel_datagram_flows_total', 'path="direct"'),
    ).toBeGreaterThanOrEqual(1);
    expect(await relayMetric('edgemesh_relay_datagrams_total')).toBe(relayed);
    const out = await a1.run(process.execPath, binPath, 'status');
    expect(out).toMatch(/peer a2 path=direct/);
    expect(out).toMatch(/peer b1 path=relay/);
  });

  it('a wrong PSK is rejected with a clear log line on both sides', async () => {
    const bad = a1.agent([
      ...nodeAgentArgs(dir, 'intruder', 'bad.yaml'),
      '--metrics-listen',
      '127.0.0.1:10561',
    ]);
    await bad.waitFor(/credentials were not accepted/, 15_000);
    await relays[0]!.waitFor(/pre-shared key mismatch \(peer says it is node 'intruder'\)/, 5000);
    expect(bad.output()).toMatch(/EDGEMESH_ERR_TUNNEL/);
    expect(bad.output() + relays[0]!.output()).not.toMatch(/shared secret|not the secret/);
    await bad.stop('SIGKILL');
  });

  it('a killed relay is replaced by the other within 2 s for new connections', async () => {
    // Precondition: both ends hold sessions to both relays (a session lost earlier, e.g. to missed
    // keepalives on a loaded machine, reconnects with up to 2 s of backoff).
    const connected = (ns: Netns) => agentMetric(ns, 'edgemesh_tunnel_relay_connected');
    await eventually(async () => (await connected(a1)) === 2 && (await connected(b1)) === 2, 10_000);
    await relays[0]!.stop('SIGKILL');
    const t0 = Date.now();
    // Each attempt gives up 1 s after sending (socat -t 1): a connection caught in the switch-over
    // must not hold the next attempt back; the attempts are reported if the deadline is missed.
    const tries: string[] = [];
    await eventually(async () => {
      const t = Date.now();
      const r = await a1.exec('socat', ['-t', '1', '-T', '2', '-', 'TCP:10.96.0.21:2701'], {
        input: 'failover\n',
      });
      tries.push(`at ${t - t0} ms took ${Date.now() - t} ms: ${JSON.stringify(r.stdout)} ${r.stderr.trim()}`);
      return r.stdout === 'failover\n';
    }, 2000).catch(() => {});
    expect(Date.now() - t0, tries.join('\n')).toBeLessThan(2000);
    expect(await http('10.96.0.21')).toBe('pod-b');
  });

  it('with every relay gone, the same-LAN peer is still reached directly', async () => {
    await relays[1]!.stop('SIGKILL');
    expect(await http('10.96.0.23')).toBe('pod-a2');
    expect(await echo('10.96.0.23', 'offline lan\n')).toBe('offline lan\n');
    // LAN B now has no path: the connection is tried on the endpoint itself (README), which LAN A
    // cannot route to, so nothing comes back; the agent counts it and keeps serving.
    const noPath = await agentMetric(a1, 'edgemesh_tunnel_no_path_total');
    expect(await echo('10.96.0.21', 'nowhere\n')).toBe('');
    expect(await agentMetric(a1, 'edgemesh_tunnel_no_path_total')).toBeGreaterThan(noPath);
    expect(await echo('10.96.0.23', 'still here\n')).toBe('still here\n');
  });
});
