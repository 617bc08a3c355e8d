// The real `edgemesh agent --dataplane native` in a node namespace, for --intercept iptables and
// nftables: node (OUTPUT) and pod (PREROUTING) clients reach backend pods through the native plane,
// /status names the native plane, /metrics carries its counters, and SIGTERM drains and leaves the
// ruleset exactly as before.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentArgs } from '../helpers/agent.ts';
import type { RunningCli } from '../helpers/cli.ts';
import { Topology } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { rulesetDump } from './interceptor-suite.ts';

const skip = skipUnlessRoot('native agent e2e (network namespaces, iptables/nft)');

const manifests = (p0: string, p1: string) => `
apiVersion: v1
kind: Pod
metadata: { name: web-0, namespace: nat, labels: { app: web } }
spec: { containers: [{ name: c, image: x }] }
status: { podIP: ${p0}, phase: Running }
---
apiVersion: v1
kind: Pod
metadata: { name: web-1, namespace: nat, labels: { app: web } }
spec: { containers: [{ name: c, image: x }] }
status: { podIP: ${p1}, phase: Running }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: nat }
spec:
  clusterIP: 10.96.0.100
  selector: { app: web }
  ports: [{ name: http, port: 12345, targetPort: 9376, protocol: TCP }]
---
apiVersion: v1
kind: Service
metadata: { name: echo, namespace: nat }
spec:
  clusterIP: 10.96.0.101
  selector: { app: web }
  ports: [{ name: tcp-echo, port: 2701, targetPort: 2701, protocol: TCP }]
---
apiVersion: v1
kind: Service
metadata: { name: wsecho, namespace: nat }
spec:
  clusterIP: 10.96.0.102
  selector: { app: web }
  ports: [{ name: websocket-echo, port: 2702, targetPort: 2701, protocol: TCP }]
`;

for (const mode of ['iptables', 'nftables'] as const) {
  describe.skipIf(skip)(`agent --intercept ${mode} --dataplane native`, () => {
    let topo: Topology;
    let dir: string;
    let agent: RunningCli | undefined;
    let before = '';
    const ruleset = () => rulesetDump(topo.node, mode);
    const body = async (url: string, from = topo.node) => (await from.curl(url, 2)).stdout.trim();

    beforeAll(async () => {
      topo = await Topology.create({ tag: mode === 'iptables' ? 'ai' : 'an', pods: 3 });
      const [p0, p1] = topo.pods;
      await p0!.ns.backend('pod-0', ['--http', '9376', '--echo', '2701']);
      await p1!.ns.backend('pod-1', ['--http', '9376', '--echo', '2701']);
      dir = fs.mkdtempSync(path.join(os.tmpdir(), `em-native-${mode}-`));
      fs.mkdirSync(path.join(dir, 'manifests'));
      fs.writeFileSync(path.join(dir, 'manifests', 'all.yaml'), manifests(p0!.ip, p1!.ip));
      fs.writeFileSync(path.join(dir, 'agent.yaml'), 'modules:\n  edgeProxy:\n    workers: 2\n');
      before = await ruleset();
      agent = topo.node.agent(agentArgs(dir, mode, 'native'));
      await agent.waitFor(/agent started/, 30_000);
      // Rules follow the first snapshot asynchronously: wait until the service answers.
      for (let i = 0; i < 150 && !(await body('http://10.96.0.100:12345')).startsWith('pod-'); i++)
        await new Promise((r) => setTimeout(r, 100));
    }, 60_000);

    afterAll(async () => {
      await agent?.stop('SIGKILL');
      await topo?.destroy();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('/status names the native plane', async () => {
      const status = JSON.parse(await topo.node.run('curl', '-s', 'http://127.0.0.1:10551/status'));
      expect(status.dataplane.mode).toBe('native');
      expect(status.dataplane.reason).toMatch(/native addon loaded/);
    });

    it('node and pod clients reach both backends through the native plane', async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 6; i++) seen.add(await body('http://10.96.0.100:12345'));
      expect(seen).toEqual(new Set(['pod-0', 'pod-1']));
      expect(await body('http://10.96.0.100:12345', topo.pods[2]!.ns)).toMatch(/^pod-[01]$/);
      const echo = await topo.node.tcp('10.96.0.101', 2701, 'native echo\n');
      expect(echo.stdout).toBe('native echo\n');
      const metrics = await topo.node.run('curl', '-s', 'http://127.0.0.1:10551/metrics');
      const accepted = /^edgemesh_native_accepted_total (\d+)/m.exec(metrics);
      expect(Number(accepted?.[1])).toBeGreaterThanOrEqual(8);
      expect(metrics).toMatch(/edgemesh_native_service_connections_total\{service="nat\/web"\} [1-9]/);
      // The http port (appProtocol http) reaches the TS HTTP engine by fd hand-off.
      const handedOff = /^edgemesh_native_handed_off_total (\d+)/m.exec(metrics);
      expect(Number(handedOff?.[1])).toBeGreaterThanOrEqual(7);
    });

    it('a websocket port goes to the TS handler, then back to the native splice (REDIRECT)', async () => {
      const echo = await topo.node.tcp('10.96.0.102', 2702, 'back to native\n');
      expect(echo.stdout).toBe('back to native\n');
      const metrics = await topo.node.run('curl', '-s', 'http://127.0.0.1:10551/metrics');
      const back = /^edgemesh_native_spliced_back_total (\d+)/m.exec(metrics);
      expect(Number(back?.[1])).toBeGreaterThanOrEqual(1);
      // Counted for its service: the worker found the route from SO_ORIGINAL_DST.
      expect(metrics).toMatch(/edgemesh_native_service_bytes_up_total\{service="nat\/wsecho"\} [1-9]/);
    });

    it('SIGTERM drains, exits 0 and leaves the ruleset exactly as before', async () => {
      const code = await agent!.stop('SIGTERM');
      agent = undefined;
      expect(code).toBe(0);
      expect(await ruleset()).toBe(before);
    });
  });
}
