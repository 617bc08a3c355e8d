// The native data plane in network namespaces: a node namespace runs the plane (standalone,
// src/dataplane/native/serve.ts, in the interceptor's bypass group), the proxier's interceptors
// REDIRECT ClusterIPs to it, a pod namespace holds the backends and another the clients.
// Proves: byte-exact 1 GiB through one connection, 2,000 concurrent connections, a backend reset
// reaching the client as a reset, and the plane's fd count back at baseline after 100k short
// connections; then the same paths under nftables and from the node itself (OUTPUT).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadgenBinary } from '../../bench/lib/loadgen.ts';
import type { InterceptTarget } from '../../src/proxier/interceptor.ts';
import { IptablesInterceptor } from '../../src/proxier/iptables.ts';
import { NftablesInterceptor } from '../../src/proxier/nftables.ts';
import { silentLogger } from '../../src/util/log.ts';
import type { RunningCli } from '../helpers/cli.ts';
import { repoRoot } from '../helpers/cli.ts';
import { startServe } from '../helpers/native-plane.ts';
import { Topology } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const BYPASS_GID = 40001;
const tool = path.join(repoRoot, 'test/helpers/stream-tool.mjs');
const SINK = '10.96.0.10';
const ECHO = '10.96.0.11';
const RESET = '10.96.0.12';
const SHORT = '10.96.0.13';

const skip = skipUnlessRoot('native data plane e2e');

describe.skipIf(skip)('native data plane e2e (netns, REDIRECT to the native plane)', () => {
  let topo: Topology;
  let plane: RunningCli;
  let planePid = 0;
  let targets: InterceptTarget[] = [];
  const prefix = () => ['ip', 'netns', 'exec', topo.node.name];

  let loadgen = '';
  /** The C load generator in the client pod: one JSON line. */
  const lg = async (args: string[], timeoutMs = 60_000) => {
    const r = await topo.pods[1]!.ns.exec(loadgen, args, { timeoutMs });
    if (r.code !== 0) throw new Error(`loadgen ${args.join(' ')} → ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  };
  const client = async (args: string[], timeoutMs = 60_000) => {
    const r = await topo.pods[1]!.ns.exec(process.execPath, [tool, ...args], { timeoutMs });
    if (r.code !== 0) throw new Error(`stream-tool ${args.join(' ')} → ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  };
  const fdCount = () => fs.readdirSync(`/proc/${planePid}/fd`).length;
  const counters = async (): Promise<Record<string, number>> => {
    const seen = plane.output().length;
    plane.child.kill('SIGUSR2');
    for (let i = 0; i < 250; i++) {
      const m = /counters (\{[^\n]*\})\n/.exec(plane.output().slice(seen));
      if (m) return JSON.parse(m[1]!);
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no counters from the plane; output:\n${plane.output()}`);
  };
  const idle = async () => {
    await expect.poll(async () => (await counters()).active, { timeout: 10_000, interval: 200 }).toBe(0);
  };

  beforeAll(async () => {
    topo = await Topology.create({ tag: 'nv', pods: 2 });
    const backend = topo.pods[0]!;
    const running = backend.ns.spawn(process.execPath, [
      tool,
      'serve',
      '--sink',
      '7001',
      '--echo',
      '7002',
      '--reset',
      '7003',
    ]);
    await running.waitFor(/ready/, 10_000);
    loadgen = await loadgenBinary();
    // The load generator's backend answers a 'C' and closes first: short connections leave
    // TIME_WAIT with the backend, never an ephemeral port with the client.
    await topo.pods[1]!.ns.run('sysctl', '-q', '-w', 'net.ipv4.ip_local_port_range=1024 65000');
    await backend.ns.spawn(loadgen, ['serve', '7004']).waitFor(/listening/, 10_000);
    const started = await startServe(topo.node, [
      '--port',
      '40001',
      '--workers',
      '2',
      '--gid',
      String(BYPASS_GID),
      '--route',
      `${SINK}:80=${backend.ip}:7001`,
      '--route',
      `${ECHO}:80=${backend.ip}:7002`,
      '--route',
      `${RESET}:80=${backend.ip}:7003`,
      '--route',
      `${SHORT}:80=${backend.ip}:7004`,
    ]);
    plane = started.proc;
    const ready = started.ready;
    planePid = ready.pid;
    targets = ready.targets;
    expect(targets.map((t) => t.toPort)).toEqual([40001, 40001, 40001, 40001]);
  });
  afterAll(async () => {
    await topo?.destroy();
  });

  describe('iptables', () => {
    let interceptor: IptablesInterceptor;
    let baselineFds = 0;
    beforeAll(async () => {
      baselineFds = fdCount();
      interceptor = new IptablesInterceptor({
        log: silentLogger,
        binary: 'iptables-nft',
        commandPrefix: prefix(),
        bypassGid: BYPASS_GID,
      });
      await interceptor.start();
      await interceptor.sync(targets);
    });
    afterAll(async () => {
      await interceptor?.stop();
    });

    it('moves 1 GiB through one connection byte-exact', async () => {
      const r = await client(['bulk', SINK, '80', String(1 << 30)], 120_000);
      console.log(
        `native 1 GiB pod→pod via REDIRECT: ${(r.gbps as number).toFixed(2)} Gbit/s (incl. sha256 both ends)`,
      );
      expect(r.got).toBe(r.expected);
      expect(r.ok).toBe(true);
      await idle();
      const c = await counters();
      expect(c.bytes_up).toBeGreaterThanOrEqual(1 << 30);
    });

    it('serves 2,000 concurrent connections', async () => {
      const r = await client(['concurrent', ECHO, '80', '2000'], 60_000);
      expect(r).toMatchObject({ connected: 2000, ok: 2000, failed: 0 });
      await idle();
    });

    // The probe is the C client: libuv (Node) reports a reset that arrives together with the last
    // data as EOF (it stops at EPOLLHUP after a partial read without reading the error), which
    // once made this test see EOF under load even without any proxy in the path.
    it('passes a backend reset mid-stream to the client and leaks nothing', async () => {
      const before = (await counters()).resets;
      const r = await lg(['reset', RESET, '80']);
      expect(r.code).toBe('ECONNRESET');
      expect(r.bytes as number).toBeGreaterThan(0);
      await idle();
      expect((await counters()).resets).toBe(before + 1);
    });

    it('returns to its baseline fd count after 100k short connections', async () => {
      // 16 in flight measured faster than 64 on 2 cores; 52-59 s at load average 10 (direct, with no
      // proxy, runs at about twice that rate there). The 110 s cap only bounds a slower machine.
      const r = await lg(['burst', SHORT, '80', '100000', '16', '110000'], 140_000);
      console.log(`native short connections: ${r.done} in ${r.ms} ms (${r.failed} failed)`);
      expect(r.failed).toBe(0);
      expect(r.done).toBe(100_000);
      await idle();
      await expect.poll(fdCount, { timeout: 10_000, interval: 250 }).toBe(baselineFds);
    }, 170_000);
  });

  describe('nftables', () => {
    let interceptor: NftablesInterceptor;
    beforeAll(async () => {
      interceptor = new NftablesInterceptor({
        log: silentLogger,
        commandPrefix: prefix(),
        bypassGid: BYPASS_GID,
      });
      await interceptor.start();
      await interceptor.sync(targets);
    });
    afterAll(async () => {
      await interceptor?.stop();
    });

    it('forwards pod traffic (PREROUTING) byte-exact', async () => {
      const r = await client(['bulk', SINK, '80', String(64 << 20)]);
      expect(r.ok).toBe(true);
    });

    it('forwards node-local traffic (OUTPUT) and passes resets', async () => {
      const echo = await topo.node.tcp(ECHO, 80, 'hello native\n');
      expect(echo.stdout).toBe('hello native\n');
      const r = await topo.node.exec(loadgen, ['reset', RESET, '80']);
      expect(JSON.parse(r.stdout).code).toBe('ECONNRESET');
      await idle();
    });
  });
});
