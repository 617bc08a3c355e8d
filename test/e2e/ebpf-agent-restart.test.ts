// The real agent (--intercept ebpf, native data plane) killed and restarted with a transfer in flight
// through a socket-LB ClusterIP: the flow never touched the proxy, the pinned programs and maps keep
// rewriting new connects while no agent runs, the restarted agent adopts them, the transfer completes
// byte-exact with the ClusterIP as its peer, and a clean SIGTERM then removes every pin.
// The pins live on a bpffs the test mounts on the host side: `ip netns exec` gives each agent a fresh
// /sys, so a bpffs under /sys/fs/bpf would die with the killed agent's mount namespace.
// Plan: pods 10.244.0.10-11 (http 9376, echo 9377); ClusterIPs 10.96.0.120:12345 (http) and
// 10.96.0.121:7 (echo), both plain TCP ports, so socket-LB.
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentArgs } from '../helpers/agent.ts';
import { binPath, type RunningCli, startCli } from '../helpers/cli.ts';
import { podManifest, serviceManifest } from '../helpers/manifests.ts';
import { sh, Topology } from '../helpers/netns.ts';
import { startPausedTransfer } from '../helpers/paused-transfer.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { createTestCgroup, inCgroupAndNs, removeTestCgroup } from '../helpers/test-cgroup.ts';

const skip = skipUnlessRoot('ebpf agent restart e2e (network namespaces, cgroup BPF)');
const client = path.join(import.meta.dirname, 'ebpf-client.mjs');
const MIB = 16;

const pod = (name: string, ip: string) => podManifest({ name, namespace: 'em', app: 'be', ip });
const service = (name: string, clusterIP: string, port: number, targetPort: number) =>
  serviceManifest({
    name,
    namespace: 'em',
    clusterIP,
    app: 'be',
    ports: [{ name: `tcp-${port}`, port, targetPort }],
  });

describe.skipIf(skip)('agent --intercept ebpf: kill and restart with a transfer in flight', () => {
  let topo: Topology;
  let dir = '';
  let cgroup = '';
  let bpffs = '';
  let agent: RunningCli | undefined;
  let transfer: ChildProcessWithoutNullStreams | undefined;

  /** `sh -c` prefix that joins the test cgroup, then enters the node namespace. */
  const inCgroup = () => inCgroupAndNs(cgroup, topo.node.name);

  async function curl(url: string): Promise<string> {
    const out = await sh('sh', [
      '-c',
      `echo $$ > ${cgroup}/cgroup.procs && ip netns exec ${topo.node.name} curl -s --max-time 3 ${url}; true`,
    ]);
    return out.trim();
  }

  async function startAgent(): Promise<RunningCli> {
    const a = startCli(agentArgs(dir, 'ebpf', 'native'), {
      command: [...inCgroup(), process.execPath, binPath, 'agent'],
    });
    // Ready, not just started: the first snapshot is served (routes, TS listeners, sk_lookup listener).
    await a.waitFor(/agent ready/, 20_000);
    return a;
  }

  beforeAll(async () => {
    topo = await Topology.create({ tag: 'er', pods: 2 });
    for (const [i, p] of topo.pods.entries())
      await p.ns.backend(`pod-${i}`, ['--http', '9376', '--echo', '9377']);
    cgroup = await createTestCgroup(topo.node.name);
    bpffs = `/run/${topo.node.name}-bpf`;
    fs.mkdirSync(bpffs, { recursive: true });
    await sh('mount', ['-t', 'bpf', 'bpf', bpffs]);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-ebpf-restart-'));
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(
      path.join(dir, 'agent.yaml'),
      `modules:\n  edgeProxy:\n    ebpfCgroup: ${topo.node.name}\n    ebpfPinDir: ${bpffs}/pins\n`,
    );
    fs.writeFileSync(
      path.join(dir, 'manifests/all.yaml'),
      [
        pod('be-0', topo.pods[0]!.ip),
        pod('be-1', topo.pods[1]!.ip),
        service('web', '10.96.0.120', 12345, 9376),
        service('echo', '10.96.0.121', 7, 9377),
      ].join('\n---\n'),
    );
    agent = await startAgent();
    const t0 = Date.now();
    while (!(await curl('http://10.96.0.120:12345')).startsWith('pod-') && Date.now() - t0 < 10_000);
  }, 60_000);

  afterAll(async () => {
    transfer?.kill('SIGKILL');
    await agent?.stop('SIGKILL');
    await topo?.destroy();
    if (bpffs) await sh('sh', ['-c', `umount ${bpffs}; rmdir ${bpffs}; true`]);
    await removeTestCgroup(cgroup);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('completes a transfer byte-exact across SIGKILL + restart; connects keep working meanwhile', async () => {
    const t = startPausedTransfer([
      ...inCgroup(),
      process.execPath,
      client,
      'transfer',
      '10.96.0.121',
      '7',
      String(MIB),
    ]);
    transfer = t.child;
    await t.half;

    expect(await agent!.stop('SIGKILL')).not.toBe(0);
    agent = undefined;
    // No agent at all: the pinned programs and maps still balance new connects.
    expect(await curl('http://10.96.0.120:12345')).toMatch(/^pod-[01]$/);
    expect(fs.readdirSync(path.join(bpffs, 'pins'))).toContain('edgemesh_svc_v1');

    agent = await startAgent();
    const result = await t.finish();
    expect(result).toEqual({ ok: true, sent: MIB << 20, received: MIB << 20, peer: '10.96.0.121:7' });

    // The restarted agent serves as before, from the cgroup and from a pod (sk_lookup, new listener).
    expect(await curl('http://10.96.0.120:12345')).toMatch(/^pod-[01]$/);
    expect((await topo.pods[1]!.ns.curl('http://10.96.0.120:12345')).stdout.trim()).toMatch(/^pod-[01]$/);

    expect(await agent.stop('SIGTERM')).toBe(0);
    agent = undefined;
    expect(fs.existsSync(path.join(bpffs, 'pins'))).toBe(false);
    expect(await sh('bpftool', ['cgroup', 'show', cgroup])).not.toMatch(/edgemesh/);
  }, 60_000);
});
