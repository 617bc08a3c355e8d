// The real `edgemesh agent --dataplane ts --intercept iptables` in a node namespace with three
// hostname pods: http-named ClusterIP ports go through the HTTP engine in the data plane's workers,
// so requests on ONE client connection are balanced one by one (DestinationRule ROUND_ROBIN), and
// a consistentHash DestinationRule on User-Agent pins a user agent to one pod.
// Plan: pods 10.244.0.10-12 (pod-0..2, :9376); ClusterIPs 10.96.0.120:12345 (RR), .121:80 (hash).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentArgs } from '../helpers/agent.ts';
import type { RunningCli } from '../helpers/cli.ts';
import { podManifest, serviceManifest } from '../helpers/manifests.ts';
import { Topology } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('protocols agent e2e (network namespaces, iptables)');

const pod = (i: number, ip: string) =>
  podManifest({ name: `hostname-${i}`, namespace: 'em', app: 'hostname', ip });
const service = (name: string, clusterIP: string, port: number, portName: string) =>
  serviceManifest({
    name,
    namespace: 'em',
    clusterIP,
    app: 'hostname',
    ports: [{ name: portName, port, targetPort: 9376 }],
  });
const rule = (name: string, lb: string) => `
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: { name: ${name}, namespace: em }
spec:
  host: ${name}
  trafficPolicy:
    loadBalancer: ${lb}
`;

describe.skipIf(skip)('agent: HTTP per-request load balancing', () => {
  let topo: Topology;
  let dir = '';
  let agent: RunningCli | undefined;
  const metricsPort = 25000 + (process.pid % 5000);

  /** curl from the node namespace with extra args; the bodies of every URL, one per line. */
  async function curl(...args: string[]): Promise<string[]> {
    const r = await topo.node.exec('curl', ['-s', '--max-time', '5', ...args]);
    return r.stdout.split('\n').filter((l) => l !== '');
  }

  beforeAll(async () => {
    topo = await Topology.create({ tag: 'pa', pods: 3 });
    for (const [i, p] of topo.pods.entries()) await p.ns.backend(`pod-${i}`, ['--http', '9376']);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-proto-agent-'));
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(
      path.join(dir, 'agent.yaml'),
      `metricsListen: 127.0.0.1:${metricsPort}\nmodules:\n  edgeProxy:\n    tsPortRange: 23000-23999\n`,
    );
    fs.writeFileSync(
      path.join(dir, 'manifests/all.yaml'),
      [
        ...topo.pods.map((p, i) => pod(i, p.ip)),
        service('rr-svc', '10.96.0.120', 12345, 'http-0'),
        rule('rr-svc', '{ simple: ROUND_ROBIN }'),
        service('hash-svc', '10.96.0.121', 80, 'http-80'),
        rule('hash-svc', '{ consistentHash: { httpHeaderName: User-Agent } }'),
      ].join('\n---\n'),
    );
    agent = topo.node.agent(agentArgs(dir, 'iptables', 'ts'));
    await agent.waitFor(/agent started/, 30_000);
    const t0 = Date.now();
    while (!((await curl('http://10.96.0.121/'))[0] ?? '').startsWith('pod-') && Date.now() - t0 < 15_000);
  }, 90_000);

  afterAll(async () => {
    await agent?.stop('SIGTERM');
    await topo?.destroy();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('ROUND_ROBIN rotates exactly per request, even on one keep-alive connection', async () => {
    const url = 'http://10.96.0.120:12345/';
    // curl reuses one connection for several URLs of the same host.
    const bodies = await curl(url, url, url, url, url, url);
    expect(bodies).toHaveLength(6);
    expect(new Set(bodies.slice(0, 3)).size).toBe(3);
    expect(bodies.slice(3)).toEqual(bodies.slice(0, 3));
  });

  it('consistentHash on User-Agent: same agent → same pod; different agents spread', async () => {
    const url = 'http://10.96.0.121/';
    const same = await curl('-A', 'edge-client/1.0', url, url, url, url, url);
    expect(same).toHaveLength(5);
    expect(new Set(same).size).toBe(1);
    const spread = new Set<string>();
    for (let i = 0; i < 12; i++) spread.add((await curl('-A', `agent-${i}`, url))[0]!);
    expect(spread.size).toBeGreaterThanOrEqual(2);
  });

  it('/metrics counts the HTTP requests the workers answered, by service and code', async () => {
    const scrape = async () => {
      const metrics = await topo.node.run('curl', '-s', `http://127.0.0.1:${metricsPort}/metrics`);
      const ok = /^edgemesh_http_requests_total\{service="em\/rr-svc:12345",code="200"\} (\d+)$/m.exec(
        metrics,
      );
      return { metrics, ok: Number(ok?.[1] ?? 0) };
    };
    const before = await scrape();
    const url = 'http://10.96.0.120:12345/';
    expect(await curl(url, url, url)).toHaveLength(3);
    const after = await scrape();
    // Every request is counted once, whichever worker served it (the main thread sums them).
    expect(after.ok - before.ok).toBe(3);
    expect(after.metrics).toMatch(
      /^edgemesh_http_upstream_latency_seconds_count\{service="em\/rr-svc:12345"\} [1-9]\d*$/m,
    );
  });

  it('pods reach the http service too (PREROUTING path)', async () => {
    const r = await topo.pods[0]!.ns.curl('http://10.96.0.120:12345/');
    expect(r.stdout).toMatch(/^pod-[012]\n$/);
  });
});
