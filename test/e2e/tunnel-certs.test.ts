// The tunnel in certificate mode with the real `edgemesh agent` and `edgemesh relay` processes: a
// CA the test makes, node certificates naming each node, a relay in the cloud and agents in two
// LANs behind NAT (test/helpers/lans.ts). Proves: traffic LAN A → LAN B works through the relay;
// an agent whose certificate another CA signed is rejected with a log line naming the reason on
// both sides (the relay says why over the session, so the agent does not see a bare close), and an
// agent that does not trust the relay's certificate refuses it (TLS fails, logged on both sides);
// an agent with a valid certificate for one name cannot register as another node (the real node
// keeps its registration and its traffic).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nodeAgentArgs } from '../helpers/agent.ts';
import { makeCa, makeNodeCert, type NodeCert, type TestCa } from '../helpers/certs.ts';
import { binPath, type RunningCli } from '../helpers/cli.ts';
import { eventually } from '../helpers/eventually.ts';
import { CLOUD_IP, createLans, type Lans } from '../helpers/lans.ts';
import { podManifest, serviceManifest } from '../helpers/manifests.ts';
import type { Netns } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('tunnel cert-mode e2e (network namespaces, NAT, iptables)');

const RELAY_PORT = 20009;
const RELAY_METRICS = 'http://127.0.0.1:10553';

const manifests = [
  podManifest({ name: 'lanb-0', namespace: 'edge', app: 'lanb', ip: '10.2.0.2', nodeName: 'b1' }),
  serviceManifest({
    name: 'lanb',
    namespace: 'edge',
    clusterIP: '10.96.0.21',
    app: 'lanb',
    ports: [
      { name: 'http-hostname', port: 80, targetPort: 9376 },
      { name: 'tcp-echo', port: 2701, targetPort: 2701 },
    ],
  }),
].join('---\n');

/** Agent config in cert mode: trusts `ca`, presents `cert`, one relay in the cloud. */
const agentYaml = (ca: TestCa, cert: NodeCert, proxy: boolean, listenPort: number) => `
modules:
  edgeProxy: { enable: ${proxy}, workers: 1 }
  edgeTunnel:
    enable: true
    listenPort: ${listenPort}
    caFile: ${ca.crt}
    certFile: ${cert.crt}
    keyFile: ${cert.key}
    relayNodes:
      - { nodeName: relay-1, advertiseAddress: ["${CLOUD_IP}:${RELAY_PORT}"] }
`;

describe.skipIf(skip)('tunnel in certificate mode (agents + relay in network namespaces)', () => {
  let lans: Lans | undefined;
  let dir: string;
  let ca: TestCa;
  let cloud: Netns;
  let a1: Netns;
  let relay: RunningCli;

  const http = async () => (await a1.curl('http://10.96.0.21:80/', 3)).stdout.trim();
  const echo = async (text: string) => (await a1.tcp('10.96.0.21', 2701, text)).stdout;
  const relayMetric = async (name: string) => {
    const m = await cloud.run('curl', '-s', `${RELAY_METRICS}/metrics`);
    let sum = 0;
    for (const x of m.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'gm'))) sum += Number(x[1]);
    return sum;
  };
  const relayAgents = async () =>
    JSON.parse(await cloud.run('curl', '-s', `${RELAY_METRICS}/status`)).agents as Array<{
      node: string;
      remote: string;
    }>;
  /** Starts an agent in `ns` named `node` with config file `yaml`. */
  const agent = (ns: Netns, node: string, yaml: string, extra: string[]) =>
    ns.agent([...nodeAgentArgs(dir, node, yaml, yaml), ...extra]);

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-tunnel-certs-'));
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(path.join(dir, 'manifests', 'all.yaml'), manifests);
    ca = makeCa(dir, 'edge-ca');
    const foreign = makeCa(dir, 'other-ca');
    const relayCert = makeNodeCert(ca, 'relay-1');
    fs.writeFileSync(path.join(dir, 'a1.yaml'), agentYaml(ca, makeNodeCert(ca, 'a1'), true, 20006));
    // b1 is named by a DNS SAN only (the CN is something else): both forms identify a node.
    const b1Cert = makeNodeCert(ca, 'node-b-host', ['b1'], 'b1');
    fs.writeFileSync(path.join(dir, 'b1.yaml'), agentYaml(ca, b1Cert, false, 20006));
    // Trusts the right CA, but its own certificate comes from another one.
    const stranger = makeNodeCert(foreign, 'x1');
    fs.writeFileSync(path.join(dir, 'stranger.yaml'), agentYaml(ca, stranger, false, 20016));
    // An agent of another cluster: trusts only its own CA, so it refuses the relay first.
    fs.writeFileSync(path.join(dir, 'foreign.yaml'), agentYaml(foreign, stranger, false, 20036));
    // A valid certificate from the right CA, for a9; the agent will claim to be b1.
    fs.writeFileSync(path.join(dir, 'impostor.yaml'), agentYaml(ca, makeNodeCert(ca, 'a9'), false, 20026));

    lans = await createLans('k', [1, 1]);
    cloud = lans.cloud;
    a1 = lans.nodes[1]![0]!;
    const b1 = lans.nodes[2]![0]!;
    const backend = b1.backend('pod-b', ['--http', '9376', '--echo', '2701']);
    relay = cloud.spawn(process.execPath, [
      binPath,
      'relay',
      '--node-name',
      'relay-1',
      '--listen',
      `0.0.0.0:${RELAY_PORT}`,
      '--ca-file',
      ca.crt,
      '--cert-file',
      relayCert.crt,
      '--key-file',
      relayCert.key,
      '--metrics-listen',
      '127.0.0.1:10553',
    ]);
    await Promise.all([backend, relay.waitFor(/relay started/, 20_000)]);
    const agents = [
      agent(a1, 'a1', 'a1.yaml', ['--intercept', 'iptables', '--dataplane', 'native']),
      agent(b1, 'b1', 'b1.yaml', []),
    ];
    await Promise.all(agents.map((a) => a.waitFor(/connected to relay/, 30_000)));
    await eventually(async () => (await http()) === 'pod-b', 20_000);
  }, 120_000);

  afterAll(async () => {
    await lans?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reaches the pod in LAN B through the relay with CA-signed node certificates', async () => {
    const sealedOut = async () => {
      const m = await a1.run('curl', '-s', 'http://127.0.0.1:10551/metrics');
      return Number(
        /^edgemesh_tunnel_sealed_streams_total\{path="relay",side="out"\} (\d+)/m.exec(m)?.[1] ?? 0,
      );
    };
    const before = await relayMetric('edgemesh_relay_streams_total');
    const sealedBefore = await sealedOut();
    expect(await http()).toBe('pod-b');
    expect(await echo('cert mode\n')).toBe('cert mode\n');
    expect(await relayMetric('edgemesh_relay_streams_total')).toBeGreaterThanOrEqual(before + 1);
    // The echo's stream went on a sealed data connection (keys handed over the cert-authenticated sessions).
    expect(await sealedOut()).toBeGreaterThanOrEqual(sealedBefore + 1);
    const status = JSON.parse(await a1.run('curl', '-s', 'http://127.0.0.1:10551/status'));
    expect(status.tunnel.peers).toContainEqual({ node: 'b1', path: 'relay' });
    expect((await relayAgents()).map((a) => a.node).sort()).toEqual(['a1', 'b1']);
  });

  it('an agent whose certificate another CA signed is rejected, logged on both sides', async () => {
    const failures = await relayMetric('edgemesh_relay_auth_failures_total');
    const seen = relay.output().length;
    const stranger = agent(cloud, 'x1', 'stranger.yaml', ['--metrics-listen', '127.0.0.1:10561']);
    try {
      await stranger.waitFor(/credentials were not accepted/, 15_000);
      await eventually(
        async () =>
          /certificate not trusted: [A-Z_]+[^\n]*authentication failed/.test(relay.output().slice(seen)),
        5000,
      );
      // The dialing side learns why, not just that the connection closed.
      expect(stranger.output()).toMatch(
        /"reason":"certificate not trusted: [A-Z_]+"[^\n]*credentials were not accepted/,
      );
      expect(stranger.output()).toMatch(/EDGEMESH_ERR_TUNNEL/);
      expect(await relayMetric('edgemesh_relay_auth_failures_total')).toBeGreaterThan(failures);
      expect((await relayAgents()).map((a) => a.node)).not.toContain('x1');
    } finally {
      await stranger.stop('SIGKILL');
    }
  });

  it('an agent that does not trust the relay certificate refuses it, logged on both sides', async () => {
    const seen = relay.output().length;
    const foreign = agent(cloud, 'x2', 'foreign.yaml', ['--metrics-listen', '127.0.0.1:10563']);
    try {
      // The agent names the failed certificate check; the relay sees its TLS handshake fail.
      await foreign.waitFor(/"err":"[^"]*(certificate|verify)[^"]*"[^\n]*relay unreachable/, 15_000);
      await eventually(async () => /TLS handshake failed/.test(relay.output().slice(seen)), 5000);
      expect((await relayAgents()).map((a) => a.node)).not.toContain('x2');
    } finally {
      await foreign.stop('SIGKILL');
    }
  });

  it('a valid certificate for one node cannot register as another', async () => {
    const b1Remote = async () => (await relayAgents()).find((a) => a.node === 'b1')?.remote;
    const before = await b1Remote();
    expect(before).toMatch(/^172\.16\.2\.2:/);
    const seen = relay.output().length;
    const impostor = agent(cloud, 'b1', 'impostor.yaml', ['--metrics-listen', '127.0.0.1:10562']);
    try {
      await impostor.waitFor(/credentials were not accepted/, 15_000);
      await eventually(
        async () => /node 'b1' is not named in its certificate \(a9\)/.test(relay.output().slice(seen)),
        5000,
      );
      expect(impostor.output()).toMatch(/EDGEMESH_ERR_TUNNEL/);
      // The real b1 keeps its registration (same connection) and its traffic.
      expect(await b1Remote()).toBe(before);
      expect(await echo('still b1\n')).toBe('still b1\n');
    } finally {
      await impostor.stop('SIGKILL');
    }
  });
});
