// Privileged e2e of the opt-in sk_msg shortcut: with `sockmap: true`, both ends of a socket-LB
// connection between local sockets enter the sockhash (counter), and a 32 MiB echo transfer through
// the socket-to-socket path arrives byte-exact with the ClusterIP as the client's peer.
import { spawn } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNative } from '../../src/native/index.ts';
import { EbpfInterceptor, probeEbpf } from '../../src/proxier/ebpf/index.ts';
import { createLogger } from '../../src/util/log.ts';
import { type RunningCli, startCli } from '../helpers/cli.ts';
import { createNetns, type Netns, sh } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('eBPF sk_msg e2e');
const VIP = '10.96.201.1';
const client = path.join(import.meta.dirname, 'ebpf-client.mjs');

describe.skipIf(skip)('ebpf interceptor: sk_msg socket-to-socket forwarding', () => {
  let ns: Netns;
  let cgroup = '';
  let interceptor: EbpfInterceptor | undefined;
  let backendProc: RunningCli | undefined;

  beforeAll(async () => {
    const probe = await probeEbpf({ cgroupFallbackDir: '/run/edgemesh/cgroup2', pinRoot: '/sys/fs/bpf' });
    if (!probe.ok) throw new Error(`eBPF must be available for this test (CI builds it): ${probe.reason}`);
    ns = await createNetns('ek');
    cgroup = path.join(probe.cgroupRoot, ns.name);
    mkdirSync(cgroup);
    interceptor = new EbpfInterceptor({
      log: createLogger('silent'),
      binding: probe.binding,
      objects: probe.objects,
      cgroupPath: cgroup,
      pinDir: `/sys/fs/bpf/${ns.name}`,
      // sk_lookup belongs in the test namespace, never the host's.
      netnsPath: `/run/netns/${ns.name}`,
      commandPrefix: ['ip', 'netns', 'exec', ns.name],
      nodeName: 'n',
      localEndpointsOnly: false,
      sockmap: true,
    });
    await interceptor.start();
    // The echo backend must run inside the cgroup too: sockops only sees sockets of its processes.
    const backend = path.join(import.meta.dirname, '../helpers/backend-server.mjs');
    backendProc = startCli(['--name', 'e', '--echo', '9100'], {
      command: [
        'sh',
        '-c',
        `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${ns.name} "$@"`,
        'sh',
        process.execPath,
        backend,
      ],
    });
    await backendProc.waitFor(/ready/, 10_000);
    await interceptor.apply({
      generation: 1,
      services: new Map([
        [
          'd/echo',
          {
            namespace: 'd',
            name: 'echo',
            key: 'd/echo',
            clusterIPs: [VIP],
            headless: false,
            type: 'ClusterIP',
            ports: [
              {
                name: 'tcp',
                port: 7,
                protocol: 'TCP',
                appProtocol: 'tcp',
                targetPort: 9100,
                endpoints: [{ ip: '127.0.0.1', port: 9100, ready: true, serving: true, terminating: false }],
              },
            ],
            sessionAffinity: { type: 'None', timeoutSeconds: 0 },
            labels: {},
            proxied: true,
          },
        ],
      ]),
      gateways: new Map(),
      virtualServices: new Map(),
      destinationRules: new Map(),
      secrets: new Map(),
    });
  });

  afterAll(async () => {
    await backendProc?.stop('SIGKILL');
    await interceptor?.stop().catch(() => {});
    await ns?.destroy();
    if (cgroup) await sh('sh', ['-c', `rmdir ${cgroup} 2>/dev/null || true`]);
  });

  it('moves a 32 MiB echo transfer socket to socket, byte-exact', async () => {
    const before = interceptor!.counters();
    const child = spawn(
      'sh',
      [
        '-c',
        `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${ns.name} "$@"`,
        'sh',
        process.execPath,
        client,
        'transfer',
        VIP,
        '7',
        '32',
      ],
      { env: { ...process.env, EDGEMESH_NATIVE_ADDON: loadNative().path ?? '' } },
    );
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      if (String(d).includes('half')) child.stdin.write('go\n');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await new Promise((resolve) => child.on('close', resolve));
    clearTimeout(timer);
    const result = JSON.parse(out.split('\n').find((l) => l.startsWith('{')) ?? '{}');
    expect(result).toEqual({ ok: true, sent: 32 << 20, received: 32 << 20, peer: `${VIP}:7` });
    const after = interceptor!.counters();
    expect(after.lbConnect - before.lbConnect).toBe(1);
    // Both ends (client and the backend's accepted socket) entered the sockhash.
    expect(after.sockmapAdd - before.sockmapAdd).toBe(2);
    // And the bytes really took the shortcut (each redirected sendmsg is counted).
    expect(after.msgRedirect - before.msgRedirect).toBeGreaterThan(0);
  });
});
