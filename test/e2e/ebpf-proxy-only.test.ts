// The real `edgemesh agent --intercept ebpf --dataplane native` with `ebpfSocketLb: false`: an L4
// ClusterIP (port name tcp-*, reachable endpoints, which socket-LB would take) goes through the
// native plane instead — connect4 sends it to 40001, the getsockopt hook answers SO_ORIGINAL_DST
// from the maps, the plane balances over both pods and its own upstream connects are left alone
// (else they would loop into itself). A 32 MiB stream through it arrives byte-exact. No NAT rule
// exists anywhere. The agent and the clients sit in a cgroup the test creates (as on a node whose
// root cgroup carries the programs).
// Plan: pods 10.244.0.10-11 (http hostname on 9376, sha256 sink on 7001); ClusterIP 10.96.0.120.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentArgs } from '../helpers/agent.ts';
import { binPath, type RunningCli, repoRoot, startCli } from '../helpers/cli.ts';
import { podManifest, serviceManifest } from '../helpers/manifests.ts';
import { sh, Topology } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { createTestCgroup, inCgroupAndNs, removeTestCgroup } from '../helpers/test-cgroup.ts';

const skip = skipUnlessRoot('ebpf proxy-only e2e (network namespaces, cgroup BPF, native plane)');
const VIP = '10.96.0.120';
const tool = path.join(repoRoot, 'test/helpers/stream-tool.mjs');

describe.skipIf(skip)('agent --intercept ebpf --dataplane native, ebpfSocketLb: false', () => {
  let topo: Topology;
  let dir = '';
  let cgroup = '';
  let agent: RunningCli | undefined;
  const metricsPort = 20000 + ((process.pid + 2500) % 5000);

  /** argv prefix: join the test cgroup on the host side, then enter the node namespace. */
  const inCgroup = () => inCgroupAndNs(cgroup, topo.node.name);
  const run = async (argv: string[]) => {
    const [cmd, ...args] = [...inCgroup(), ...argv];
    return sh(cmd!, args).catch((err: Error) => `failed: ${err.message}`);
  };
  const curl = async (url: string) => (await run(['curl', '-s', '--max-time', '3', url])).trim();

  async function metrics(): Promise<Record<string, number>> {
    const text = await topo.node.run('curl', '-s', `http://127.0.0.1:${metricsPort}/metrics`);
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^(edgemesh_ebpf_events\{event="\w+"\}|edgemesh_native_\w+) (\d+)/gm))
      out[m[1]!] = Number(m[2]);
    return out;
  }
  const ev = (m: Record<string, number>, event: string) => m[`edgemesh_ebpf_events{event="${event}"}`] ?? 0;

  beforeAll(async () => {
    topo = await Topology.create({ tag: 'eo', pods: 2 });
    for (const [i, p] of topo.pods.entries()) {
      await p.ns.backend(`pod-${i}`, ['--http', '9376']);
      await p.ns.spawn(process.execPath, [tool, 'serve', '--sink', '7001']).waitFor(/ready/, 10_000);
    }
    cgroup = await createTestCgroup(topo.node.name);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-ebpf-proxy-only-'));
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(
      path.join(dir, 'agent.yaml'),
      `metricsListen: 127.0.0.1:${metricsPort}\nmodules:\n  edgeProxy:\n    ebpfCgroup: ${topo.node.name}\n    ebpfPinDir: /sys/fs/bpf/${topo.node.name}\n    ebpfSocketLb: false\n`,
    );
    fs.writeFileSync(
      path.join(dir, 'manifests/all.yaml'),
      [
        podManifest({ name: 'hostname-0', namespace: 'em', app: 'hostname', ip: topo.pods[0]!.ip }),
        podManifest({ name: 'hostname-1', namespace: 'em', app: 'hostname', ip: topo.pods[1]!.ip }),
        serviceManifest({
          name: 'l4',
          namespace: 'em',
          clusterIP: VIP,
          app: 'hostname',
          ports: [
            { name: 'tcp-web', port: 12345, targetPort: 9376 },
            { name: 'tcp-sink', port: 7001, targetPort: 7001 },
          ],
        }),
      ].join('\n---\n'),
    );
    agent = startCli(agentArgs(dir, 'ebpf', 'native'), {
      command: [...inCgroup(), process.execPath, binPath, 'agent'],
    });
    await agent.waitFor(/agent started/, 20_000);
    const t0 = Date.now();
    while (!(await curl(`http://${VIP}:12345`)).startsWith('pod-') && Date.now() - t0 < 10_000);
  }, 60_000);

  afterAll(async () => {
    await agent?.stop('SIGTERM');
    await topo?.destroy();
    await removeTestCgroup(cgroup);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reports socket-LB off in /status', async () => {
    const status = JSON.parse(await topo.node.run('curl', '-s', `http://127.0.0.1:${metricsPort}/status`));
    expect(status.intercept.mode).toBe('ebpf');
    expect(status.intercept.reason).toMatch(/connect4 to the proxy \(socket-LB off\)/);
    expect(status.dataplane.mode).toBe('native');
  });

  it('sends L4 connects through the native plane (SO_ORIGINAL_DST from the maps), balanced over both pods', async () => {
    const before = await metrics();
    const seen = new Set<string>();
    for (let i = 0; i < 4; i++) seen.add(await curl(`http://${VIP}:12345`));
    expect([...seen].sort()).toEqual(['pod-0', 'pod-1']);
    const after = await metrics();
    expect(ev(after, 'proxyConnect') - ev(before, 'proxyConnect')).toBe(4);
    expect(ev(after, 'lbConnect') - ev(before, 'lbConnect')).toBe(0);
    expect(ev(after, 'originalDst') - ev(before, 'originalDst')).toBe(4);
    const accepted = 'edgemesh_native_accepted_total';
    expect((after[accepted] ?? 0) - (before[accepted] ?? 0)).toBe(4);
    // No NAT anywhere: netfilter holds nothing.
    expect((await topo.node.run('nft', 'list', 'ruleset')).trim()).toBe('');
  });

  it('carries 32 MiB byte-exact through the plane', async () => {
    const before = await metrics();
    const out = await run([process.execPath, tool, 'bulk', VIP, '7001', String(32 << 20)]);
    const r = JSON.parse(out.trim().split('\n').pop()!) as { ok: boolean; bytes: number };
    expect(r).toMatchObject({ ok: true, bytes: 32 << 20 });
    const after = await metrics();
    expect(ev(after, 'proxyConnect') - ev(before, 'proxyConnect')).toBe(1);
    expect((after.edgemesh_native_bytes_up_total ?? 0) - (before.edgemesh_native_bytes_up_total ?? 0)).toBe(
      32 << 20,
    );
  });
});
