// The real agent in a node namespace, on each data plane, with two pods serving WebSocket echo
// (the seed's ws-svc on 12348), HTTPS with a certificate of their own, and UDP echo:
//   - a WebSocket client gets its messages echoed by a pod through the ClusterIP;
//   - `curl --resolve` with SNI gets a pod's own certificate (TLS passes through, never terminated:
//     the certificate's subject names the pod that answered);
//   - a UDP datagram to the ClusterIP comes back from a pod, and /metrics counts the flow.
// The native plane forwards TCP only; with --dataplane native its split sends UDP ports to the TS
// plane's UDP flows, so the UDP case runs on both.
// Plan: pods 10.244.0.10-11; ClusterIPs 10.96.0.140 ws :12348, .141 https :443, .142 udp :5353.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentArgs } from '../helpers/agent.ts';
import { makeSelfSigned } from '../helpers/certs.ts';
import { type RunningCli, repoRoot } from '../helpers/cli.ts';
import { eventually } from '../helpers/eventually.ts';
import { Topology } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('protocols streams agent e2e (network namespaces, iptables)');

const HOST = 'secure.example.com';

const manifests = (ips: string[]) =>
  [
    ...ips.map(
      (ip, i) => `
apiVersion: v1
kind: Pod
metadata: { name: pod-${i}, namespace: em, labels: { app: streams } }
spec: { containers: [{ name: c, image: x }] }
status: { podIP: ${ip}, phase: Running }`,
    ),
    `
apiVersion: v1
kind: Service
metadata: { name: ws-svc, namespace: em }
spec:
  clusterIP: 10.96.0.140
  selector: { app: streams }
  ports: [{ name: websocket-0, port: 12348, targetPort: 8080, protocol: TCP }]`,
    `
apiVersion: v1
kind: Service
metadata: { name: https-svc, namespace: em }
spec:
  clusterIP: 10.96.0.141
  selector: { app: streams }
  ports: [{ name: https, port: 443, targetPort: 8443, protocol: TCP }]`,
    `
apiVersion: v1
kind: Service
metadata: { name: udp-svc, namespace: em }
spec:
  clusterIP: 10.96.0.142
  selector: { app: streams }
  ports: [{ name: udp-echo, port: 5353, targetPort: 5353, protocol: UDP }]`,
  ].join('\n---\n');

/** A self-signed certificate for HOST whose subject names the pod (dir/server.{crt,key}). */
function podCert(dir: string, pod: string): void {
  fs.mkdirSync(dir, { recursive: true });
  makeSelfSigned(path.join(dir, 'server.crt'), path.join(dir, 'server.key'), `/O=${pod}/CN=${HOST}`, [HOST]);
}

// A WebSocket client run inside the node namespace: sends each argument, prints each reply.
const WS_CLIENT = `
const WebSocket = require(${JSON.stringify(path.join(repoRoot, 'node_modules/ws'))});
const [url, ...msgs] = process.argv.slice(1);
const ws = new WebSocket(url);
const got = [];
const timer = setTimeout(() => { console.log('TIMEOUT ' + got.join(',')); process.exit(1); }, 4000);
ws.on('open', () => ws.send(msgs[0]));
ws.on('message', (d) => {
  got.push(d.toString());
  if (got.length < msgs.length) ws.send(msgs[got.length]);
  else { clearTimeout(timer); console.log(got.join('\\n')); ws.close(); }
});
ws.on('error', (e) => { console.log('ERROR ' + e.message); process.exit(1); });
`;

for (const dataplane of ['ts', 'native'] as const) {
  describe.skipIf(skip)(`agent --dataplane ${dataplane}: websocket, https passthrough, udp`, () => {
    let topo: Topology;
    let dir = '';
    let agent: RunningCli | undefined;
    const metricsPort = (dataplane === 'ts' ? 26000 : 27000) + (process.pid % 1000);

    beforeAll(async () => {
      topo = await Topology.create({ tag: dataplane === 'ts' ? 'st' : 'sn', pods: 2 });
      dir = fs.mkdtempSync(path.join(os.tmpdir(), `em-streams-${dataplane}-`));
      for (const [i, p] of topo.pods.entries()) {
        const certDir = path.join(dir, `pod-${i}`);
        podCert(certDir, `pod-${i}`);
        await p.ns.backend(`pod-${i}`, ['--ws', '8080', '--https', `8443:${certDir}`, '--udp', '5353']);
      }
      fs.mkdirSync(path.join(dir, 'manifests'));
      fs.writeFileSync(
        path.join(dir, 'agent.yaml'),
        `metricsListen: 127.0.0.1:${metricsPort}\nmodules:\n  edgeProxy:\n    workers: 2\n    tsPortRange: 24000-24999\n`,
      );
      fs.writeFileSync(path.join(dir, 'manifests/all.yaml'), manifests(topo.pods.map((p) => p.ip)));
      agent = topo.node.agent(agentArgs(dir, 'iptables', dataplane));
      await agent.waitFor(/agent started/, 30_000);
      // Rules follow the first snapshot asynchronously: wait until the https service answers.
      await eventually(async () => (await curlHttps()).body.startsWith('pod-'), 15_000);
    }, 90_000);

    afterAll(async () => {
      await agent?.stop('SIGTERM');
      await topo?.destroy();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    /** curl https://HOST/ resolved to the ClusterIP, trusting only the two pods' certificates. */
    async function curlHttps(): Promise<{ body: string; subject: string }> {
      const bundle = path.join(dir, 'trusted.pem');
      if (!fs.existsSync(bundle))
        fs.writeFileSync(
          bundle,
          topo.pods.map((_, i) => fs.readFileSync(path.join(dir, `pod-${i}`, 'server.crt'))).join(''),
        );
      const r = await topo.node.exec('curl', [
        '-sv',
        '--max-time',
        '3',
        '--cacert',
        bundle,
        '--resolve',
        `${HOST}:443:10.96.0.141`,
        `https://${HOST}/`,
      ]);
      return { body: r.stdout.trim(), subject: /subject: (.*)/.exec(r.stderr)?.[1] ?? '' };
    }

    it('WebSocket echo through ws-svc:12348', async () => {
      const r = await topo.node.exec(process.execPath, [
        '-e',
        WS_CLIENT,
        'ws://10.96.0.140:12348/',
        'hello',
        'edge',
      ]);
      expect(r.stdout).toMatch(/^(pod-[01]):hello\n\1:edge\n$/);
    });

    it('HTTPS passes through: the client verifies the answering pod’s own certificate (SNI kept)', async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) {
        const { body, subject } = await curlHttps();
        expect(body).toMatch(/^pod-[01]$/);
        // The certificate the client verified is the one of the pod that answered.
        expect(subject).toContain(`O=${body}`);
        expect(subject).toContain(`CN=${HOST}`);
        seen.add(body);
      }
      // Round robin over two pods: both answer in four connections.
      expect(seen.size).toBe(2);
    });

    it('UDP echo through udp-svc:5353, counted as a flow in /metrics', async () => {
      const r = await topo.node.exec('socat', ['-t', '1', '-T', '3', '-', 'UDP:10.96.0.142:5353'], {
        input: 'ping',
      });
      expect(r.stdout).toMatch(/^pod-[01]:ping$/);
      // A pod client too (PREROUTING: the datagram arrives on the bridge address, not loopback).
      const fromPod = await topo.pods[0]!.ns.exec(
        'socat',
        ['-t', '1', '-T', '3', '-', 'UDP:10.96.0.142:5353'],
        {
          input: 'pong',
        },
      );
      expect(fromPod.stdout).toMatch(/^pod-[01]:pong$/);
      const metrics = await topo.node.run('curl', '-s', `http://127.0.0.1:${metricsPort}/metrics`);
      expect(metrics).toMatch(/^edgemesh_udp_flows_created_total\{service="em\/udp-svc:5353"\} [1-9]/m);
      expect(metrics).toMatch(
        /^edgemesh_udp_bytes_total\{service="em\/udp-svc:5353",direction="from_client"\} 8$/m,
      );
    });
  });
}
