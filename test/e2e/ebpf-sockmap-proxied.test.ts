// The real `edgemesh agent --intercept ebpf --dataplane native` with `ebpfSocketLb: false` and
// `ebpfSockmap: true`: both legs of a proxied connection enter the sk_msg sockhash when both ends
// are local sockets in the cgroup (client <-> plane's accepted socket, plane's SO_MARKed upstream
// socket <-> the backend's accepted socket in a pod namespace), so bytes move socket to socket and
// the plane forwards with read/write (splice() would not see them). Proves: 32 MiB echoed
// byte-exact both ways across a client half-close (the tail comes back after the client's FIN), a
// backend reset mid-stream reaches the client, a backend outside the cgroup still works, an idle
// connection on the shortcut is closed by the idle timeout, a stop drains an open one, a backend that
// never reads stops its writer after a few MiB (backpressure: the writer falls back to TCP/IP,
// counted as msgFallback), a writer returns to the shortcut once its slow reader caught up (msgResume), the
// sockmapAdd/msgRedirect counters move, the sockhash, sk and fb maps are empty once the connections
// are closed, and the agent's fd count is back to its baseline.
// Plan: pod-0 10.244.0.10 in the cgroup (sink 7001, echo 7002, reset 7003), pod-1 10.244.0.11
// outside it (sink 7001), and backends in pod-0's cgroup that never read (7004) or read late (7005); ClusterIPs 10.96.0.130 (pod-0) and 10.96.0.131 (pod-1).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentArgs } from '../helpers/agent.ts';
import { binPath, type RunningCli, repoRoot, startCli } from '../helpers/cli.ts';
import { eventually } from '../helpers/eventually.ts';
import { podManifest, serviceManifest } from '../helpers/manifests.ts';
import { sh, Topology } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';
import { createTestCgroup, inCgroupAndNs, removeTestCgroup } from '../helpers/test-cgroup.ts';

const skip = skipUnlessRoot('ebpf sk_msg on proxied connections e2e (namespaces, cgroup BPF, native plane)');
const VIP_IN = '10.96.0.130';
const VIP_OUT = '10.96.0.131';
const tool = path.join(repoRoot, 'test/helpers/stream-tool.mjs');
const echoClient = path.join(import.meta.dirname, 'ebpf-client.mjs');
const STALLED_SERVER = `require('net').createServer({ pauseOnConnect: true }, () => {}).listen(7004, () => console.log('ready'))`;
/** Writes 64 KiB blocks until the connection takes nothing for 1 s (or 1 GiB went in); prints the bytes taken. */
const FILL_CLIENT = `
const s = require('net').connect({ host: process.argv[1], port: 7004 });
const block = Buffer.alloc(65536);
let taken = 0;
const done = () => { console.log(JSON.stringify({ taken })); process.exit(0); };
s.on('error', done);
s.on('connect', function fill() {
  while (taken < 2 ** 30) {
    taken += block.length;
    if (!s.write(block)) {
      const timer = setTimeout(done, 1000);
      s.once('drain', () => { clearTimeout(timer); fill(); });
      return;
    }
  }
  done();
});`;

/** Reads nothing for the first second of each connection, then everything; answers the byte count at the client's FIN. */
const SLOW_SERVER = `require('net').createServer({ pauseOnConnect: true }, (s) => {
  let n = 0;
  s.on('data', (d) => { n += d.length; });
  s.on('end', () => s.end(String(n)));
  setTimeout(() => s.resume(), 1000);
}).listen(7005, () => console.log('ready'))`;
/** 16 MiB at once (the slow reader makes its writers fall back), 2.5 s quiet, then 1 MiB in 16 spaced writes; prints sent and the server's count. */
const BURST_CLIENT = `
const s = require('net').connect({ host: process.argv[1], port: 7005 });
const block = Buffer.alloc(65536, 7);
let sent = 0, reply = '';
const write = (b) => new Promise((r) => { sent += b.length; s.write(b) ? r() : s.once('drain', r); });
const pause = (ms) => new Promise((r) => setTimeout(r, ms));
s.on('data', (d) => { reply += d; });
s.on('end', () => { console.log(JSON.stringify({ sent, got: Number(reply) })); process.exit(0); });
s.on('error', (e) => { console.log(JSON.stringify({ sent, error: e.code })); process.exit(0); });
s.on('connect', async () => {
  for (let i = 0; i < 256; i++) await write(block);
  await pause(2500);
  for (let i = 0; i < 16; i++) { await write(block); await pause(20); }
  s.end();
});`;

describe.skipIf(skip)('agent --intercept ebpf, native plane, ebpfSocketLb: false, ebpfSockmap: true', () => {
  let topo: Topology;
  let dir = '';
  let cgroup = '';
  let agent: RunningCli | undefined;
  let inPod: RunningCli | undefined;
  let stalled: RunningCli | undefined;
  let slow: RunningCli | undefined;
  const metricsPort = 20000 + ((process.pid + 3100) % 5000);
  let baselineFds = 0;

  const inCgroup = () => inCgroupAndNs(cgroup, topo.node.name);
  const run = async (argv: string[]) => {
    const [cmd, ...args] = [...inCgroup(), ...argv];
    return sh(cmd!, args).catch((err: Error) => `failed: ${err.message}`);
  };
  const lastJson = (out: string) => JSON.parse(out.trim().split('\n').pop() ?? '{}');

  async function events(): Promise<Record<string, number>> {
    const text = await topo.node.run('curl', '-s', `http://127.0.0.1:${metricsPort}/metrics`);
    const out: Record<string, number> = {};
    for (const m of text.matchAll(/^edgemesh_ebpf_events\{event="(\w+)"\} (\d+)/gm))
      out[m[1]!] = Number(m[2]);
    return out;
  }
  const fdCount = () => fs.readdirSync(`/proc/${agent!.child.pid}/fd`).length;

  /** Keys in the agent's map named `name` (found through the agent's own map fds: names repeat across tests). */
  async function mapEntries(name: string): Promise<number> {
    const pid = agent!.child.pid;
    for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
      const info = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
      const id = /^map_id:\s+(\d+)/m.exec(info)?.[1];
      if (!id) continue;
      const show = JSON.parse(await sh('bpftool', ['-j', 'map', 'show', 'id', id])) as { name?: string };
      if (show.name !== name) continue;
      // A sockhash cannot be read from user space (only its keys are walked): count the keys.
      const dump = await sh('sh', ['-c', `bpftool -j map dump id ${id} 2>/dev/null || true`]);
      return (dump.match(/"key":/g) ?? []).length;
    }
    throw new Error(`agent holds no map named ${name}`);
  }

  /**
   * Echoes MiB through the ClusterIP in two halves; the second ends with the client's FIN. `atHalf`
   * runs while the connection is open between the halves.
   */
  async function echoTransfer(vip: string, port: number, mib: number, atHalf: () => Promise<void>) {
    const [cmd, ...args] = [
      ...inCgroup(),
      process.execPath,
      echoClient,
      'transfer',
      vip,
      String(port),
      String(mib),
    ];
    const child = spawn(cmd!, args);
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (String(d).includes('half'))
        void atHalf()
          .catch((err: unknown) => {
            out += `\n{"atHalf": ${JSON.stringify(String(err))}}`;
          })
          .finally(() => child.stdin.write('go\n'));
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await new Promise((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    return JSON.parse(out.split('\n').find((l) => l.startsWith('{')) ?? '{}');
  }

  beforeAll(async () => {
    topo = await Topology.create({ tag: 'es', pods: 2 });
    cgroup = await createTestCgroup(topo.node.name);
    // pod-0's servers run inside the cgroup (as every pod below a node's root cgroup does), pod-1's not.
    const [p0, p1] = topo.pods;
    inPod = startCli(['serve', '--sink', '7001', '--echo', '7002', '--reset', '7003'], {
      command: [...inCgroupAndNs(cgroup, p0!.ns.name), process.execPath, tool],
    });
    await inPod.waitFor(/ready/, 10_000);
    // A backend that accepts and never reads (for the backpressure check).
    stalled = startCli(['-e', STALLED_SERVER], {
      command: [...inCgroupAndNs(cgroup, p0!.ns.name), process.execPath],
    });
    await stalled.waitFor(/ready/, 10_000);
    slow = startCli(['-e', SLOW_SERVER], {
      command: [...inCgroupAndNs(cgroup, p0!.ns.name), process.execPath],
    });
    await slow.waitFor(/ready/, 10_000);
    await p1!.ns.spawn(process.execPath, [tool, 'serve', '--sink', '7001']).waitFor(/ready/, 10_000);
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-ebpf-sockmap-proxied-'));
    fs.mkdirSync(path.join(dir, 'manifests'));
    fs.writeFileSync(
      path.join(dir, 'agent.yaml'),
      `metricsListen: 127.0.0.1:${metricsPort}\nmodules:\n  edgeProxy:\n    ebpfCgroup: ${topo.node.name}\n    ebpfPinDir: /sys/fs/bpf/${topo.node.name}\n    ebpfSocketLb: false\n    ebpfSockmap: true\n    idleTimeoutMs: 3000\n`,
    );
    fs.writeFileSync(
      path.join(dir, 'manifests/all.yaml'),
      [
        podManifest({ name: 'in-0', namespace: 'em', app: 'in', ip: p0!.ip }),
        podManifest({ name: 'out-0', namespace: 'em', app: 'out', ip: p1!.ip }),
        serviceManifest({
          name: 'in',
          namespace: 'em',
          clusterIP: VIP_IN,
          app: 'in',
          ports: [
            { name: 'tcp-sink', port: 7001, targetPort: 7001 },
            { name: 'tcp-echo', port: 7002, targetPort: 7002 },
            { name: 'tcp-reset', port: 7003, targetPort: 7003 },
            { name: 'tcp-stall', port: 7004, targetPort: 7004 },
            { name: 'tcp-slow', port: 7005, targetPort: 7005 },
          ],
        }),
        serviceManifest({
          name: 'out',
          namespace: 'em',
          clusterIP: VIP_OUT,
          app: 'out',
          ports: [{ name: 'tcp-sink', port: 7001, targetPort: 7001 }],
        }),
      ].join('\n---\n'),
    );
    agent = startCli(agentArgs(dir, 'ebpf', 'native'), {
      command: [...inCgroup(), process.execPath, binPath, 'agent'],
    });
    await agent.waitFor(/agent ready/, 20_000);
    // Warm up (first connections through both services), then take the fd baseline.
    await eventually(
      async () => lastJson(await run([process.execPath, tool, 'bulk', VIP_IN, '7001', '1024'])).ok,
    );
    await eventually(
      async () => lastJson(await run([process.execPath, tool, 'bulk', VIP_OUT, '7001', '1024'])).ok,
    );
    baselineFds = fdCount();
  }, 60_000);

  afterAll(async () => {
    await agent?.stop('SIGTERM');
    await inPod?.stop('SIGKILL');
    await stalled?.stop('SIGKILL');
    await slow?.stop('SIGKILL');
    await topo?.destroy();
    await removeTestCgroup(cgroup);
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('forwards with read/write and says why in /status', async () => {
    const status = JSON.parse(await topo.node.run('curl', '-s', `http://127.0.0.1:${metricsPort}/status`));
    expect(status.intercept.mode).toBe('ebpf');
    expect(status.dataplane.mode).toBe('native');
    expect(status.dataplane.reason).toMatch(/forward read\/write: the eBPF sk_msg shortcut/);
  });

  it('echoes 32 MiB byte-exact both ways across a client half-close, socket to socket on both legs', async () => {
    const before = await events();
    let open = -1;
    const r = await echoTransfer(VIP_IN, 7002, 32, async () => {
      open = await mapEntries('edgemesh_sh_v1');
    });
    // While it is open, its four sockets are in the sockhash (and nothing else is).
    expect(open).toBe(4);
    expect(r).toEqual({ ok: true, sent: 32 << 20, received: 32 << 20, peer: `${VIP_IN}:7002` });
    const after = await events();
    expect(after.proxyConnect! - before.proxyConnect!).toBe(1);
    // Four sockets: the client, the plane's accepted one, the plane's upstream one, the backend's.
    expect(after.sockmapAdd! - before.sockmapAdd!).toBe(4);
    expect(after.msgRedirect! - before.msgRedirect!).toBeGreaterThan(0);
  });

  it('carries 32 MiB to a sink byte-exact (the backend answers after the client FIN)', async () => {
    const r = lastJson(await run([process.execPath, tool, 'bulk', VIP_IN, '7001', String(32 << 20)]));
    expect(r).toMatchObject({ ok: true, bytes: 32 << 20 });
  });

  it('passes a backend reset mid-stream on to the client', async () => {
    const r = lastJson(await run([process.execPath, tool, 'reset', VIP_IN, '7003']));
    expect(r.code).toBe('ECONNRESET');
  });

  it('still serves a backend outside the cgroup (no shortcut on that leg)', async () => {
    const before = await events();
    const r = lastJson(await run([process.execPath, tool, 'bulk', VIP_OUT, '7001', String(8 << 20)]));
    expect(r).toMatchObject({ ok: true, bytes: 8 << 20 });
    const after = await events();
    // The client leg (2) plus the plane's upstream socket, whose peer never joins.
    expect(after.sockmapAdd! - before.sockmapAdd!).toBe(3);
  });

  it('applies backpressure: a backend that never reads stops its writer after a few MiB', async () => {
    // sk_msg queues redirected bytes on the reader regardless of its receive buffer; past
    // EM_MSG_QUEUE_LIMIT (4 MiB) the writer goes back to TCP/IP, whose window stops it. Without
    // that the client was measured pushing the whole 1 GiB into kernel memory.
    const before = await events();
    const r = lastJson(await run([process.execPath, '-e', FILL_CLIENT, VIP_IN]));
    expect(r.taken).toBeGreaterThan(1 << 20);
    expect(r.taken).toBeLessThan(64 << 20);
    // The switch is counted (edgemesh_ebpf_events{event="msgFallback"}); a reader that never
    // reads never lets the writer back, so msgResume stays where it was.
    const after = await events();
    expect(after.msgFallback! - before.msgFallback!).toBeGreaterThan(0);
    expect(after.msgResume).toBe(before.msgResume);
    // Its never-closed sockets would stay in the sockhash: end it (the plane sees a reset).
    await stalled?.stop('SIGKILL');
  });

  it('returns a writer to the shortcut once its slow reader caught up, byte-exact', async () => {
    const before = await events();
    const r = lastJson(await run([process.execPath, '-e', BURST_CLIENT, VIP_IN]));
    expect(r).toEqual({ sent: 17 << 20, got: 17 << 20 });
    const after = await events();
    expect(after.msgFallback! - before.msgFallback!).toBeGreaterThan(0);
    expect(after.msgResume! - before.msgResume!).toBeGreaterThan(0);
  });

  it('closes a connection idle on the shortcut after idleTimeoutMs', async () => {
    const t0 = Date.now();
    // Connects to the echo port and sends nothing: only the plane's idle timer can end it.
    const r = lastJson(await run([process.execPath, tool, 'reset', VIP_IN, '7002']));
    expect(['EOF', 'ECONNRESET']).toContain(r.code);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2_900);
    expect(Date.now() - t0).toBeLessThan(10_000);
  });

  it('leaves no sockhash, sk or fb entry and no fd behind once the connections are closed', async () => {
    await eventually(async () => (await mapEntries('edgemesh_sh_v1')) === 0, 10_000);
    await eventually(async () => (await mapEntries('edgemesh_sk_v1')) === 0, 10_000);
    await eventually(async () => (await mapEntries('edgemesh_fb_v1')) === 0, 10_000);
    await eventually(async () => fdCount() === baselineFds, 10_000);
    expect(fdCount()).toBe(baselineFds);
  });

  // Last: it stops the agent.
  it('drains an open shortcut connection at stop: the tail still arrives byte-exact', async () => {
    let exited: Promise<number | null> | undefined;
    let refused = '';
    const r = await echoTransfer(VIP_IN, 7002, 8, async () => {
      exited = agent!.stop('SIGTERM');
      // Draining: the plane no longer accepts (a new connect is refused) while this one stays up.
      // `timeout`: a connect that lands in a backlog nobody accepts from must not hang the test.
      await eventually(async () => {
        const out = await run(['timeout', '2', process.execPath, tool, 'reset', VIP_IN, '7002']);
        refused = lastJson(out).code;
        return refused === 'ECONNREFUSED';
      }, 2_500);
    });
    expect(refused).toBe('ECONNREFUSED');
    expect(r).toEqual({ ok: true, sent: 8 << 20, received: 8 << 20, peer: `${VIP_IN}:7002` });
    expect(await exited).toBe(0);
  });
});
