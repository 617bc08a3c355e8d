// The native plane over IPv6 behind real ip6tables REDIRECT rules, in namespaces this file creates:
// a node namespace runs the plane standalone (src/dataplane/native/serve.ts: IPv4 and IPv6
// listeners on one port) and the backends on [::1]/127.0.0.1; a client namespace reaches the node
// over a veth pair (IPv6 only). Proves: 16 MiB both ways with a half-close from the node (OUTPUT)
// and from the client namespace (PREROUTING), a backend reset reaching the client, IPv4 and IPv6
// connections through the same plane at once, per-service counters counting the IPv6 ones, fds
// back at baseline after, and originalDst(fd) answering the IPv6 ClusterIP.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '../../src/native/index.ts';
import type { RunningCli } from '../helpers/cli.ts';
import { repoRoot } from '../helpers/cli.ts';
import { startServe } from '../helpers/native-plane.ts';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const tool = path.join(repoRoot, 'test/e2e/native-v6-tool.mjs');
const ECHO6 = 'fd00:96::10';
const RESET6 = 'fd00:96::11';
const ORIG6 = 'fd00:96::12';
const ECHO4 = '10.96.0.50';
const PLANE_PORT = 40001;
const MIB16 = String(16 << 20);

const skip = skipUnlessRoot('native plane IPv6 e2e');

describe.skipIf(skip)('native plane over IPv6 (netns, ip6tables REDIRECT)', () => {
  let node: Netns;
  let client: Netns;
  let plane: RunningCli;
  let planePid = 0;
  /** The plane's fds when it serves nothing (idle workers give pooled pipes back after a second). */
  let baseline = 0;

  const run = async (ns: Netns, args: string[], timeoutMs = 60_000) => {
    const r = await ns.exec(process.execPath, [tool, ...args], { timeoutMs });
    if (r.code !== 0) throw new Error(`${args.join(' ')} → ${r.code}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
  };
  /** The plane's `prefix {json}` answer to SIGUSR2. */
  const report = async (prefix: string): Promise<Record<string, unknown>> => {
    const seen = plane.output().length;
    plane.child.kill('SIGUSR2');
    const re = new RegExp(`${prefix} (\\{[^\\n]*\\})\\n`);
    for (let i = 0; i < 250; i++) {
      const m = re.exec(plane.output().slice(seen));
      if (m) return JSON.parse(m[1]!);
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no ${prefix} from the plane; output:\n${plane.output()}`);
  };
  const counters = async () => (await report('counters')) as Record<string, number>;
  const services = async () => (await report('services')) as Record<string, Record<string, number>>;
  const idle = () =>
    expect.poll(async () => (await counters()).active, { timeout: 10_000, interval: 200 }).toBe(0);
  const fdCount = () => fs.readdirSync(`/proc/${planePid}/fd`).length;

  beforeAll(async () => {
    node = await createNetns('n6');
    client = await createNetns('c6');
    // Client namespace over a veth pair, IPv6 only (nodad: usable at once, not tentative).
    await node.run('ip', 'link', 'add', 'v6n', 'type', 'veth', 'peer', 'name', 'v6c', 'netns', client.name);
    await node.run('ip', 'link', 'set', 'v6n', 'up');
    await client.run('ip', 'link', 'set', 'v6c', 'up');
    await node.addr6('fd00:1::1/64', 'v6n');
    await client.addr6('fd00:1::2/64', 'v6c');
    await client.run('ip', '-6', 'route', 'add', 'fd00:96::/64', 'via', 'fd00:1::1');
    // ClusterIPs are routable on the node (OUTPUT nat only sees a routable destination).
    await node.run('ip', '-6', 'route', 'add', 'local', 'fd00:96::/64', 'dev', 'lo');
    await node.run('ip', 'route', 'add', 'local', '10.96.0.0/24', 'dev', 'lo');
    const backends = node.spawn(process.execPath, [tool, 'serve', '7002', '7003']);
    await backends.waitFor(/ready/, 10_000);
    const started = await startServe(node, [
      '--port',
      String(PLANE_PORT),
      '--workers',
      '2',
      '--route',
      `[${ECHO6}]:80=[::1]:7002`,
      '--route',
      `[${RESET6}]:80=[::1]:7003`,
      '--route',
      `${ECHO4}:80=127.0.0.1:7002`,
    ]);
    plane = started.proc;
    const ready = started.ready;
    planePid = ready.pid;
    baseline = fdCount();
    // The encoder emitted the IPv6 ClusterIPs as interception targets too.
    expect(ready.targets.map((t: { clusterIP: string }) => t.clusterIP)).toEqual([ECHO6, RESET6, ECHO4]);
    const redirect = (bin: string, chain: string, vip: string, port: number, to: number) =>
      node.run(
        bin,
        '-t',
        'nat',
        '-A',
        chain,
        '-d',
        vip,
        '-p',
        'tcp',
        '--dport',
        String(port),
        '-j',
        'REDIRECT',
        '--to-ports',
        String(to),
      );
    for (const vip of [ECHO6, RESET6]) {
      await redirect('ip6tables', 'OUTPUT', vip, 80, PLANE_PORT);
      await redirect('ip6tables', 'PREROUTING', vip, 80, PLANE_PORT);
    }
    await redirect('iptables', 'OUTPUT', ECHO4, 80, PLANE_PORT);
    await redirect('ip6tables', 'OUTPUT', ORIG6, 81, 7100);
  }, 60_000);

  afterAll(async () => {
    // Rules, routes, the veth pair and every process live in these namespaces.
    await client?.destroy();
    await node?.destroy();
  });

  it('serves IPv4 only and says why once when the host has IPv6 disabled', async () => {
    const off = await createNetns('o6');
    try {
      await off.run('sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1');
      const { proc: p, ready } = await startServe(off, [
        '--port',
        String(PLANE_PORT),
        '--workers',
        '1',
        '--route',
        `[${ECHO6}]:80=[::1]:7002`,
        '--route',
        `${ECHO4}:80=127.0.0.1:7002`,
      ]);
      expect(ready.targets.map((t: { clusterIP: string }) => t.clusterIP)).toEqual([ECHO4]);
      expect(p.output().match(/IPv6 listener off: net\.ipv6\.conf\.all\.disable_ipv6 is set/g)).toHaveLength(
        1,
      );
    } finally {
      await off.destroy();
    }
  });

  it('reads the IPv6 ClusterIP back with originalDst(fd) after an ip6tables REDIRECT', async () => {
    const addon = loadNative().path;
    expect(addon).toBeDefined();
    const r = await run(node, ['origdst', ORIG6, '81', '7100', addon!]);
    expect(r).toMatchObject({ address: ORIG6, port: 81, local: '::1' });
  });

  it('moves 16 MiB both ways with a half-close, from the node (OUTPUT) and over veth (PREROUTING)', async () => {
    const local = await run(node, ['echo', ECHO6, '80', MIB16]);
    expect(local).toMatchObject({ ok: true, got: 16 << 20 });
    const remote = await run(client, ['echo', ECHO6, '80', MIB16]);
    expect(remote).toMatchObject({ ok: true, got: 16 << 20 });
    await idle();
    const perService = await services();
    expect(perService['serve/route-0']).toMatchObject({
      connections: 2,
      active: 0,
      bytes_up: 2 * (16 << 20),
      bytes_down: 2 * (16 << 20),
    });
    await expect.poll(fdCount, { timeout: 10_000, interval: 250 }).toBe(baseline);
  });

  it('passes a backend reset to an IPv6 client', async () => {
    const before = (await counters()).resets;
    const r = await run(client, ['reset', RESET6, '80']);
    expect(r).toEqual({ code: 'ECONNRESET', bytes: 64 * 1024 });
    await idle();
    expect((await counters()).resets).toBe(before + 1);
    expect((await services())['serve/route-1']).toMatchObject({ connections: 1, errors: 1 });
  });

  it('serves IPv4 and IPv6 connections through the same plane at once; fds back at baseline', async () => {
    const before = await services();
    const runs = await Promise.all([
      run(node, ['echo', ECHO4, '80', String(4 << 20)]),
      run(node, ['echo', ECHO6, '80', String(4 << 20)]),
      run(client, ['echo', ECHO6, '80', String(4 << 20)]),
      run(node, ['echo', ECHO4, '80', String(4 << 20)]),
    ]);
    expect(runs.map((r) => r.ok)).toEqual([true, true, true, true]);
    await idle();
    const after = await services();
    expect(after['serve/route-0']!.connections! - before['serve/route-0']!.connections!).toBe(2);
    expect(after['serve/route-2']!.connections! - (before['serve/route-2']?.connections ?? 0)).toBe(2);
    expect((await counters()).listeners_ipv6).toBe(2);
    await expect.poll(fdCount, { timeout: 10_000, interval: 250 }).toBe(baseline);
    // Side by side in this run (not asserted: speed lives in bench/): IPv6 vs IPv4 bulk, node-local.
    const ms = { v4: 0, v6: 0 };
    for (let round = 0; round < 3; round++) {
      ms.v4 += (await run(node, ['echo', ECHO4, '80', String(32 << 20)])).ms as number;
      ms.v6 += (await run(node, ['echo', ECHO6, '80', String(32 << 20)])).ms as number;
    }
    console.log(
      `native plane 32 MiB echo x3 (OUTPUT REDIRECT): IPv4 ${ms.v4.toFixed(0)} ms, IPv6 ${ms.v6.toFixed(0)} ms, v6/v4 throughput ${(ms.v4 / ms.v6).toFixed(2)}x`,
    );
  });
});
