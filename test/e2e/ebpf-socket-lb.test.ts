// Privileged e2e of the ebpf interceptor: real cgroup BPF programs attached to a throwaway cgroup,
// real connect()s from a process inside that cgroup and inside a throwaway netns. Proves socket-LB
// (backend reached directly, getpeername is the ClusterIP, round robin rotates, the proxy port sees
// nothing), proxy redirection with SO_ORIGINAL_DST from the maps, the bypass group, a restart with a
// transfer in flight (byte-exact), and that stop() leaves no pin and no attached program behind.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Endpoint, ServiceEntry, ServiceTable } from '../../src/controller/types.ts';
import { loadNative } from '../../src/native/index.ts';
import { EbpfInterceptor, probeEbpf } from '../../src/proxier/ebpf/index.ts';
import type { InterceptTarget } from '../../src/proxier/interceptor.ts';
import { createLogger } from '../../src/util/log.ts';
import { type RunningCli, startCli } from '../helpers/cli.ts';
import { createNetns, type Netns, sh } from '../helpers/netns.ts';
import { startPausedTransfer } from '../helpers/paused-transfer.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('eBPF socket-LB e2e');
const LB_VIP = '10.96.200.1';
const PROXY_VIP = '10.96.200.2';
const ECHO_VIP = '10.96.200.3';
const BYPASS_GID = 40123;
const client = path.join(import.meta.dirname, 'ebpf-client.mjs');

function endpoint(ip: string, port: number): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false };
}

function service(name: string, ip: string, port: number, endpoints: Endpoint[]): ServiceEntry {
  return {
    namespace: 'default',
    name,
    key: `default/${name}`,
    clusterIPs: [ip],
    headless: false,
    type: 'ClusterIP',
    ports: [{ name: 'tcp', port, protocol: 'TCP', appProtocol: 'tcp', targetPort: port, endpoints }],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
}

function table(services: ServiceEntry[], generation = 1): ServiceTable {
  return {
    generation,
    services: new Map(services.map((s) => [s.key, s])),
    gateways: new Map(),
    virtualServices: new Map(),
    destinationRules: new Map(),
    secrets: new Map(),
  };
}

describe.skipIf(skip)('ebpf interceptor: cgroup connect4 socket-LB in a netns + cgroup', () => {
  let ns: Netns;
  let cgroup = '';
  let pinDir = '';
  let interceptor: EbpfInterceptor | undefined;
  let restarted: EbpfInterceptor | undefined;
  let transfer: ChildProcessWithoutNullStreams | undefined;
  let proxy: RunningCli | undefined;
  const log = createLogger('silent');
  const addonPath = loadNative().path ?? '';
  let makeInterceptor: () => EbpfInterceptor;

  /**
   * argv that runs `node ebpf-client.mjs ...args` in the test cgroup and netns. The cgroup is joined
   * on the host side first: `ip netns exec` mounts a fresh /sys where the cgroup folder is absent.
   */
  function clientArgv(args: string[]): string[] {
    return [
      'sh',
      '-c',
      `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${ns.name} "$@"`,
      'sh',
      process.execPath,
      client,
      ...args,
    ];
  }

  /** Runs the client to completion and collects its output. */
  function inCgroup(
    args: string[],
    env: Record<string, string> = {},
  ): Promise<{ stdout: string; stderr: string }> {
    return new Promise((resolve, reject) => {
      const [cmd, ...rest] = clientArgv(args);
      const child = spawn(cmd!, rest, { env: { ...process.env, EDGEMESH_NATIVE_ADDON: addonPath, ...env } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => {
        stdout += d;
      });
      child.stderr.on('data', (d) => {
        stderr += d;
      });
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
      child.on('error', reject);
      child.on('close', () => {
        clearTimeout(timer);
        resolve({ stdout, stderr });
      });
    });
  }

  async function connects(ip: string, port: number, n: number, env: Record<string, string> = {}) {
    const r = await inCgroup(['connect', ip, String(port), String(n)], env);
    expect(r.stderr).toBe('');
    return r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { data?: string; peer?: string; error?: string });
  }

  beforeAll(async () => {
    const probe = await probeEbpf({ cgroupFallbackDir: '/run/edgemesh/cgroup2', pinRoot: '/sys/fs/bpf' });
    if (!probe.ok) throw new Error(`eBPF must be available for this test (CI builds it): ${probe.reason}`);
    ns = await createNetns('eb');
    cgroup = path.join(probe.cgroupRoot, ns.name);
    mkdirSync(cgroup, { recursive: true });
    pinDir = `/sys/fs/bpf/${ns.name}`;
    makeInterceptor = () =>
      new EbpfInterceptor({
        log,
        binding: probe.binding,
        objects: probe.objects,
        cgroupPath: cgroup,
        pinDir,
        // sk_lookup and its VIP routes belong in the test namespace, never the host's.
        netnsPath: `/run/netns/${ns.name}`,
        commandPrefix: ['ip', 'netns', 'exec', ns.name],
        nodeName: 'node-a',
        localEndpointsOnly: false,
        bypassGid: BYPASS_GID,
      });
    await ns.backend('b', [
      '--text',
      '8081:b1',
      '--text',
      '8082:b2',
      '--text',
      '40001:PROXY',
      '--echo',
      '9000',
    ]);
    proxy = startCli([], {
      command: clientArgv(['proxy', '40002']),
      env: { EDGEMESH_NATIVE_ADDON: addonPath },
    });
    await proxy.waitFor(/ready/, 10_000);
    interceptor = makeInterceptor();
    await interceptor.start();
    const targets: InterceptTarget[] = [
      { id: 'default/l7:http', clusterIP: PROXY_VIP, port: 80, protocol: 'TCP', toPort: 40002 },
      // The L4 service also has a proxy target: socket-LB must win over it.
      { id: 'default/lb:tcp', clusterIP: LB_VIP, port: 80, protocol: 'TCP', toPort: 40001 },
    ];
    await interceptor.sync(targets);
    await interceptor.apply(
      table([
        service('lb', LB_VIP, 80, [endpoint('127.0.0.1', 8081), endpoint('127.0.0.1', 8082)]),
        service('echo', ECHO_VIP, 7, [endpoint('127.0.0.1', 9000)]),
      ]),
    );
  });

  afterAll(async () => {
    transfer?.kill('SIGKILL');
    await proxy?.stop('SIGKILL');
    await restarted?.stop().catch(() => {});
    await interceptor?.stop().catch(() => {});
    await ns?.destroy();
    // Empty once ns.destroy() has killed the backends and the proxy that lived in it.
    if (cgroup) await sh('sh', ['-c', `rmdir ${cgroup} 2>/dev/null || true`]);
  });

  it('sends an L4 connect straight to an endpoint, round robin, with the ClusterIP as peer and no proxy', async () => {
    const before = interceptor!.counters();
    const results = await connects(LB_VIP, 80, 4);
    expect(results.map((r) => r.data)).toEqual(['b1', 'b2', 'b1', 'b2']);
    expect(results.every((r) => r.peer === `${LB_VIP}:80`)).toBe(true);
    const after = interceptor!.counters();
    expect(after.lbConnect - before.lbConnect).toBe(4);
    expect(after.proxyConnect - before.proxyConnect).toBe(0);
    expect(after.peername - before.peername).toBeGreaterThanOrEqual(4);
  });

  it('sends an L7 service to the proxy port and answers SO_ORIGINAL_DST from the maps', async () => {
    const before = interceptor!.counters();
    const [r] = await connects(PROXY_VIP, 80, 1);
    expect(r!.data).toBe(`${PROXY_VIP}:80`);
    expect(r!.peer).toBe(`${PROXY_VIP}:80`);
    const after = interceptor!.counters();
    expect(after.proxyConnect - before.proxyConnect).toBe(1);
    expect(after.originalDst - before.originalDst).toBe(1);
  });

  it('leaves the bypass group alone (the VIP is local for sk_lookup, nothing listens on it: refused)', async () => {
    const before = interceptor!.counters();
    const [r] = await connects(LB_VIP, 80, 1, { EBPF_TEST_GID: String(BYPASS_GID) });
    expect(r!.error).toBe('ECONNREFUSED');
    const after = interceptor!.counters();
    expect(after.bypass - before.bypass).toBe(1);
    expect(after.lbConnect - before.lbConnect).toBe(0);
  });

  it('follows snapshot changes: a removed endpoint gets no more connections', async () => {
    await interceptor!.apply(
      table([
        service('lb', LB_VIP, 80, [endpoint('127.0.0.1', 8082)]),
        service('echo', ECHO_VIP, 7, [endpoint('127.0.0.1', 9000)]),
      ]),
    );
    const results = await connects(LB_VIP, 80, 3);
    expect(results.map((r) => r.data)).toEqual(['b2', 'b2', 'b2']);
  });

  it('drops the cookie and tuple entries of closed sockets (the per-socket maps do not grow)', async () => {
    const entries = async (map: string) =>
      (JSON.parse(await sh('bpftool', ['-j', 'map', 'dump', 'pinned', `${pinDir}/${map}`])) as unknown[])
        .length;
    const before = interceptor!.counters();
    const results = [...(await connects(PROXY_VIP, 80, 20)), ...(await connects(LB_VIP, 80, 20))];
    expect(results.filter((r) => r.data === `${PROXY_VIP}:80` || r.data === 'b2')).toHaveLength(40);
    const after = interceptor!.counters();
    expect(after.proxyConnect - before.proxyConnect).toBe(20);
    expect(after.lbConnect - before.lbConnect).toBe(20);
    // Both ends have closed: every socket reached TCP_CLOSE (TIME_WAIT is not a full socket).
    await expect
      .poll(async () => [await entries('edgemesh_ck_v1'), await entries('edgemesh_tup_v1')], {
        timeout: 5_000,
        interval: 100,
      })
      .toEqual([0, 0]);
  });

  it('keeps a transfer byte-exact across an agent restart, and stop() removes everything (a retired map pin too)', async () => {
    const t = startPausedTransfer(clientArgv(['transfer', ECHO_VIP, '7', '16']));
    transfer = t.child;
    await t.half;
    // The agent dies without cleaning up (programs and maps stay pinned), a new one takes over.
    await interceptor!.detachKeepPinned();
    interceptor = undefined;
    // An older version's map the new one no longer uses (renamed or dropped) stays pinned in the
    // folder: stop() must still leave nothing behind.
    await sh('bpftool', [
      'map',
      'create',
      `${pinDir}/edgemesh_lbt_v1`,
      'type',
      'hash',
      'key',
      '12',
      'value',
      '4',
      'entries',
      '16',
      'name',
      'edgemesh_lbt_v1',
    ]);
    restarted = makeInterceptor();
    await restarted.start();
    await restarted.apply(
      table(
        [
          service('lb', LB_VIP, 80, [endpoint('127.0.0.1', 8081)]),
          service('echo', ECHO_VIP, 7, [endpoint('127.0.0.1', 9000)]),
        ],
        2,
      ),
    );
    const result = await t.finish();
    expect(result).toEqual({ ok: true, sent: 16 << 20, received: 16 << 20, peer: `${ECHO_VIP}:7` });
    // The new agent's programs and map contents serve new connects.
    expect(await connects(LB_VIP, 80, 2)).toEqual([
      { data: 'b1', peer: `${LB_VIP}:80` },
      { data: 'b1', peer: `${LB_VIP}:80` },
    ]);

    await restarted.stop();
    restarted = undefined;
    expect(existsSync(pinDir)).toBe(false);
    const attached = await sh('bpftool', ['cgroup', 'show', cgroup]);
    expect(attached).not.toMatch(/edgemesh/);
  });
});
