// The real `edgemesh agent --intercept ebpf` in a node namespace, its programs attached to a cgroup
// the test creates (config ebpfCgroup) with its own pin folder (ebpfPinDir): an L4 ClusterIP from a
// client inside that cgroup reaches both backend pods by socket-LB (no proxy: the data plane counts
// no connection), an L7 (http-named) service goes through the data plane's proxy, /status reports
// the ebpf interceptor, a client in a pod namespace (outside the cgroup) reaches both services through
// sk_lookup with no iptables/nftables rule anywhere, and SIGTERM detaches, unpins and removes the
// VIP routes.
// Run once with the TS data plane and once with the native one (port 40001, SO_ORIGINAL_DST).
// Plan: pods 10.244.0.10-11 on the node's bridge; ClusterIPs 10.96.0.110 (tcp) and .111 (http).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentArgs } from '../helpers/agent.ts';
import { binPath, type RunningCli, startCli } from '../helpers/cli.ts';
import { detachConnect4Link } from '../helpers/connect4-link.ts';
import { podManifest, serviceManifest } from '../helpers/manifests.ts';
import { sh, Topology } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { createTestCgroup, inCgroupAndNs, removeTestCgroup } from '../helpers/test-cgroup.ts';

const skip = skipUnlessRoot('ebpf agent e2e (network namespaces, cgroup BPF)');

const pod = (name: string, ip: string) => podManifest({ name, namespace: 'em', app: 'hostname', ip });
const service = (name: string, clusterIP: string, port: number, portName: string) =>
  serviceManifest({
    name,
    namespace: 'em',
    clusterIP,
    app: 'hostname',
    ports: [{ name: portName, port, targetPort: 9376 }],
  });

for (const dataplane of ['ts', 'native'] as const) {
  describe.skipIf(skip)(`agent --intercept ebpf --dataplane ${dataplane}`, () => {
    let topo: Topology;
    let dir = '';
    let cgroup = '';
    let agent: RunningCli | undefined;
    const metricsPort = 20000 + (process.pid % 5000) + (dataplane === 'ts' ? 0 : 5000);

    /** curl from the node namespace, inside the test cgroup (joined on the host side first). */
    async function curl(url: string): Promise<string> {
      const out = await sh('sh', [
        '-c',
        `echo $$ > ${cgroup}/cgroup.procs && ip netns exec ${topo.node.name} curl -s --max-time 3 ${url}; true`,
      ]);
      return out.trim();
    }

    async function metric(event: string): Promise<number> {
      const text = await topo.node.run('curl', '-s', `http://127.0.0.1:${metricsPort}/metrics`);
      const m = new RegExp(`edgemesh_ebpf_events\\{event="${event}"\\} (\\d+)`).exec(text);
      return m ? Number(m[1]) : Number.NaN;
    }

    beforeAll(async () => {
      topo = await Topology.create({ tag: dataplane === 'ts' ? 'ea' : 'eb', pods: 2 });
      for (const [i, p] of topo.pods.entries()) await p.ns.backend(`pod-${i}`, ['--http', '9376']);
      cgroup = await createTestCgroup(topo.node.name);
      const pinDir = `/sys/fs/bpf/${topo.node.name}`;
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-ebpf-agent-'));
      fs.mkdirSync(path.join(dir, 'manifests'));
      fs.writeFileSync(
        path.join(dir, 'agent.yaml'),
        // Relative: `ip netns exec` hides the host's cgroup mounts, so the agent mounts cgroup2 itself
        // and finds the same cgroup below that root.
        `metricsListen: 127.0.0.1:${metricsPort}\nmodules:\n  edgeProxy:\n    ebpfCgroup: ${topo.node.name}\n    ebpfPinDir: ${pinDir}\n    tsPortRange: 22000-22999\n    resyncPeriodMs: 1000\n`,
      );
      fs.writeFileSync(
        path.join(dir, 'manifests/all.yaml'),
        [
          pod('hostname-0', topo.pods[0]!.ip),
          pod('hostname-1', topo.pods[1]!.ip),
          service('l4', '10.96.0.110', 12345, 'tcp-12345'),
          service('l7', '10.96.0.111', 80, 'http-80'),
        ].join('\n---\n'),
      );
      // The agent runs inside the cgroup too, as on a node where the programs sit on the root cgroup:
      // the native plane's getsockopt(SO_ORIGINAL_DST) must be answered by the hook.
      agent = startCli(agentArgs(dir, 'ebpf', dataplane), {
        command: [...inCgroupAndNs(cgroup, topo.node.name), process.execPath, binPath, 'agent'],
      });
      await agent.waitFor(/agent started/, 20_000);
      const t0 = Date.now();
      while (!(await curl('http://10.96.0.110:12345')).startsWith('pod-') && Date.now() - t0 < 10_000);
    }, 60_000);

    afterAll(async () => {
      await agent?.stop('SIGKILL');
      await topo?.destroy();
      await removeTestCgroup(cgroup);
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('reports the ebpf interceptor in /status', async () => {
      const status = JSON.parse(await topo.node.run('curl', '-s', `http://127.0.0.1:${metricsPort}/status`));
      expect(status.intercept.mode).toBe('ebpf');
    });

    it('re-attaches a connect4 link detached with bpftool on the next resync (drift repair)', async () => {
      await detachConnect4Link(cgroup);
      // The resync (1 s here) notices the detached link and attaches the program again.
      expect(agent!.output()).not.toMatch(/eBPF state drifted; repaired/);
      await agent!.waitFor(/eBPF state drifted; repaired/, 5000);
      expect(await sh('bpftool', ['cgroup', 'show', cgroup])).toMatch(/edgemesh_connect4/);
      const before = await metric('lbConnect');
      expect(await curl('http://10.96.0.110:12345')).toMatch(/^pod-[01]$/);
      expect((await metric('lbConnect')) - before).toBe(1);
    });

    it('sends L4 ClusterIP connects straight to both pods (socket-LB, nothing through the proxy)', async () => {
      const before = await metric('lbConnect');
      const proxiedBefore = await metric('proxyConnect');
      const seen = new Set<string>();
      for (let i = 0; i < 4; i++) seen.add(await curl('http://10.96.0.110:12345'));
      expect([...seen].sort()).toEqual(['pod-0', 'pod-1']);
      expect((await metric('lbConnect')) - before).toBe(4);
      expect((await metric('proxyConnect')) - proxiedBefore).toBe(0);
    });

    it('sends an http-named service through the data plane (proxy redirect)', async () => {
      const before = await metric('proxyConnect');
      expect(await curl('http://10.96.0.111:80')).toMatch(/^pod-[01]$/);
      expect((await metric('proxyConnect')) - before).toBe(1);
    });

    it('steers a pod namespace client to the proxy with sk_lookup (no NAT: no iptables/nft rules exist)', async () => {
      const before = await metric('skLookup');
      const pod = topo.pods[0]!.ns;
      const l4 = await pod.curl('http://10.96.0.110:12345');
      // On failure, show what the agent said (and whether it is still alive).
      const why = () =>
        `exit ${agent!.child.exitCode}/${agent!.child.signalCode}\n${agent!.output().slice(-4000)}`;
      expect(l4.stdout.trim(), why()).toMatch(/^pod-[01]$/);
      expect((await pod.curl('http://10.96.0.111:80')).stdout.trim()).toMatch(/^pod-[01]$/);
      expect((await metric('skLookup')) - before).toBe(2);
      // The VIPs are delivered locally through routes the agent added (protocol 228) ...
      const routes = await topo.node.run('ip', '-4', 'route', 'show', 'table', 'local', 'proto', '228');
      expect(routes).toContain('10.96.0.110');
      expect(routes).toContain('10.96.0.111');
      // ... and netfilter holds nothing at all (no REDIRECT, no edgemesh table or chain).
      expect((await topo.node.run('nft', 'list', 'ruleset')).trim()).toBe('');
      expect(await topo.node.run('iptables-legacy-save')).not.toMatch(/EDGEMESH|REDIRECT/);
    });

    it('SIGTERM detaches the programs and removes the VIP routes', async () => {
      // (Its pins live on the bpffs the agent mounted in its own mount namespace, invisible here;
      // ebpf-socket-lb.test.ts checks that unpinning removes them.)
      expect(await agent!.stop('SIGTERM')).toBe(0);
      agent = undefined;
      expect(await sh('bpftool', ['cgroup', 'show', cgroup])).not.toMatch(/edgemesh/);
      expect(
        (await topo.node.run('ip', '-4', 'route', 'show', 'table', 'local', 'proto', '228')).trim(),
      ).toBe('');
      expect(await topo.node.run('bpftool', 'net', 'show')).not.toMatch(/edgemesh/);
    });
  });
}
