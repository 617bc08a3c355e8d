// The real `edgemesh agent` serving an IPv6 ClusterIP in a node namespace: --intercept iptables
// with the TS plane (TCP and UDP) and --intercept nftables with the native plane (TCP on
// [::]:40001, IP6T_SO_ORIGINAL_DST). Clients on the node (OUTPUT REDIRECT via the /128 local VIP
// route) and in a pod over the bridge (PREROUTING) reach IPv6 backend pods; /status says IPv6 is
// intercepted and how; SIGTERM leaves the IPv6 ruleset and routes exactly as before.
// Plan: pods fd00:244::10-11 on br0 (node fd00:244::1); ClusterIP fd00:96::100 (service CIDR
// fd00:96::/108 routed to br0, as on a node).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatStatus } from '../../src/cli/status.ts';
import { agentArgs } from '../helpers/agent.ts';
import type { RunningCli } from '../helpers/cli.ts';
import { eventually } from '../helpers/eventually.ts';
import { Topology } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { vipRoutes } from '../helpers/vip-routes.ts';
import { rulesetDump } from './interceptor-suite.ts';

const skip = skipUnlessRoot('IPv6 agent e2e (network namespaces, ip6tables/nft)');
const VIP = 'fd00:96::100';
const podIp = (i: number) => `fd00:244::${10 + i}`;

const manifests = `
apiVersion: v1
kind: Pod
metadata: { name: web-0, namespace: v6, labels: { app: web } }
spec: { containers: [{ name: c, image: x }] }
status: { podIP: "${podIp(0)}", phase: Running }
---
apiVersion: v1
kind: Pod
metadata: { name: web-1, namespace: v6, labels: { app: web } }
spec: { containers: [{ name: c, image: x }] }
status: { podIP: "${podIp(1)}", phase: Running }
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: v6 }
spec:
  clusterIP: "${VIP}"
  ipFamilies: [IPv6]
  selector: { app: web }
  ports:
    - { name: tcp-80, port: 80, targetPort: 9376, protocol: TCP }
    - { name: udp-53, port: 53, targetPort: 5353, protocol: UDP }
`;

for (const [mode, dataplane] of [
  ['iptables', 'ts'],
  ['nftables', 'native'],
] as const) {
  describe.skipIf(skip)(`agent --intercept ${mode} --dataplane ${dataplane}: IPv6 ClusterIP`, () => {
    let topo: Topology;
    let dir: string;
    let agent: RunningCli | undefined;
    let before = '';
    const ruleset = () => rulesetDump(topo.node, mode);
    const tcp = async (from = topo.node) =>
      (await from.exec('socat', ['-T', '2', '-', `TCP:[${VIP}]:80,connect-timeout=2`])).stdout.trim();
    const udp = async (from = topo.node) =>
      (await from.exec('socat', ['-T', '1', '-', `UDP:[${VIP}]:53`], { input: 'ping' })).stdout.trim();

    beforeAll(async () => {
      topo = await Topology.create({ tag: mode === 'iptables' ? '6i' : '6n', pods: 3 });
      await topo.node.addr6('fd00:244::1/64', 'br0');
      await topo.node.run('ip', '-6', 'route', 'add', 'fd00:96::/108', 'dev', 'br0');
      for (const [i, p] of topo.pods.entries()) {
        await p.ns.addr6(`${podIp(i)}/64`, 'eth0');
        await p.ns.run('ip', '-6', 'route', 'add', 'default', 'via', 'fd00:244::1');
        if (i < 2) await p.ns.backend6(['--tcp', `9376:pod-${i}`, '--udp', `5353:pod-${i}`]);
      }
      dir = fs.mkdtempSync(path.join(os.tmpdir(), `em-ipv6-${mode}-`));
      fs.mkdirSync(path.join(dir, 'manifests'));
      fs.writeFileSync(path.join(dir, 'manifests', 'web.yaml'), manifests);
      fs.writeFileSync(
        path.join(dir, 'agent.yaml'),
        'modules:\n  edgeProxy:\n    resyncPeriodMs: 300\n    workers: 1\n    tsPortRange: 21000-21999\n',
      );
      before = await ruleset();
      agent = topo.node.agent(agentArgs(dir, mode, dataplane));
      await agent.waitFor(/agent started/, 20_000);
      // The first snapshot syncs right after start.
      await eventually(async () => (await tcp()).startsWith('pod-'), 15_000);
    }, 60_000);

    afterAll(async () => {
      await agent?.stop('SIGKILL');
      await topo?.destroy();
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('TCP from the node (OUTPUT) and from a pod (PREROUTING) reaches both IPv6 backends', async () => {
      const seen = new Set<string>();
      for (let i = 0; i < 6; i++) seen.add((await tcp()).split(' ')[0]!);
      expect([...seen].sort()).toEqual(['pod-0', 'pod-1']);
      expect(await tcp(topo.pods[2]!.ns)).toMatch(/^pod-[01] /);
      // The routed VIP got its /128 local route (node-local clients take lo).
      expect(await vipRoutes(topo.node)).toEqual([VIP]);
    });

    if (dataplane === 'ts')
      it('UDP from the node and from a pod reaches an IPv6 backend and the answer comes back', async () => {
        expect(await udp()).toMatch(/^pod-[01]:ping$/);
        expect(await udp(topo.pods[2]!.ns)).toMatch(/^pod-[01]:ping$/);
      });

    it('/status says IPv6 is intercepted and how', async () => {
      const status = JSON.parse(await topo.node.run('curl', '-s', 'http://127.0.0.1:10551/status'));
      expect(status.intercept.mode).toBe(mode);
      expect(status.intercept.ipv6.intercepted).toBe(true);
      expect(status.intercept.ipv6.detail).toMatch(mode === 'iptables' ? /ip6tables/ : /table ip6 edgemesh/);
      expect(formatStatus(status)).toMatch(/^ {2}ipv6: +intercepted: /m);
    });

    it('SIGTERM removes the IPv6 rules and routes: the ruleset is exactly as before', async () => {
      await agent!.stop('SIGTERM');
      agent = undefined;
      expect(await ruleset()).toBe(before);
      expect(await vipRoutes(topo.node)).toEqual([]);
    });
  });
}
