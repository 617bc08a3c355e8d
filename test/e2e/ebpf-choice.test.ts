// How the agent's interceptor factory treats eBPF: `--intercept auto` picks it only where its hooks
// cover the node (root cgroup, agent in the host network namespace) and otherwise says why it fell
// back; `--intercept ebpf` gets PROXY_MARK as its bypass mark, so a socket carrying the native
// plane's mark is never redirected (proved with a real marked connect from inside the cgroup), and a
// service entry deleted from the pinned map behind the agent's back is restored by repair().
import { mkdirSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createInterceptor, ebpfCoverageGap } from '../../src/proxier/create-interceptor.ts';
import { type EbpfInterceptor, probeEbpf } from '../../src/proxier/ebpf/index.ts';
import { PROXY_MARK } from '../../src/proxier/interceptor.ts';
import { silentLogger } from '../../src/util/log.ts';
import { runProcess } from '../../src/util/run-process.ts';
import { repoRoot } from '../helpers/cli.ts';
import { createNetns, type Netns } from '../helpers/netns.ts';
import { skipUnlessRoot } from '../helpers/privileges.ts';

const skip = skipUnlessRoot('ebpf interceptor choice (cgroup BPF, network namespaces)');
const prefix = (ns: Netns) => ['ip', 'netns', 'exec', ns.name];

describe.skipIf(skip)('choosing the ebpf interceptor', () => {
  let ns: Netns;
  let cgroup = '';
  let interceptor: EbpfInterceptor | undefined;

  beforeAll(async () => {
    const probe = await probeEbpf({ cgroupFallbackDir: '/run/edgemesh/cgroup2', pinRoot: '/sys/fs/bpf' });
    if (!probe.ok) throw new Error(`eBPF must be available for this test (CI builds it): ${probe.reason}`);
    ns = await createNetns('ec');
    cgroup = path.join(probe.cgroupRoot, ns.name);
    mkdirSync(cgroup, { recursive: true });
    await ns.run('ip', 'addr', 'add', '10.96.0.10/32', 'dev', 'lo');
    await ns.backend('s', ['--text', '80:direct', '--text', '21000:proxied']);
  });
  afterAll(async () => {
    await interceptor?.stop().catch(() => {});
    await ns?.destroy();
    if (cgroup) rmdirSync(cgroup);
  });

  it('auto picks ebpf in the host network namespace with the root cgroup (probed, not started)', async () => {
    const c = await createInterceptor({ mode: 'auto', iptablesBackend: 'auto', log: silentLogger });
    expect(c.interceptor.mode).toBe('ebpf');
    expect(c.reason).toMatch(/^auto: eBPF probes pass and cover the node .*sk_lookup/);
  });

  it('auto leaves what eBPF cannot cover to iptables/nftables and says why', async () => {
    const c = await createInterceptor({
      mode: 'auto',
      iptablesBackend: 'auto',
      log: silentLogger,
      commandPrefix: prefix(ns),
    });
    expect(c.interceptor.mode).toBe('iptables');
    expect(c.reason).toMatch(/auto: ebpf not chosen: the rules are for another network namespace/);
    const base = { mode: 'auto' as const, iptablesBackend: 'auto' as const, log: silentLogger };
    expect(
      await ebpfCoverageGap({ ...base, ebpf: { cgroup: 'pods', nodeName: 'n', localEndpointsOnly: false } }),
    ).toMatch(/covers only the processes below it/);
    expect(await ebpfCoverageGap(base)).toBeUndefined();
    // An agent inside a network namespace of its own (as every agent e2e test runs it).
    const script = `import { ebpfCoverageGap } from './src/proxier/create-interceptor.ts';
console.log(await ebpfCoverageGap({ mode: 'auto', iptablesBackend: 'auto', log: undefined }));`;
    const r = await runProcess(
      [...prefix(ns), process.execPath, '--import', 'tsx', '--input-type=module', '-e', script],
      { timeoutMs: 20_000, env: { NODE_PATH: path.join(repoRoot, 'node_modules') } },
    );
    expect(r.stdout).toMatch(/not in the host network namespace/);
  });

  it('--intercept ebpf never redirects a socket carrying PROXY_MARK (the native plane upstream mark)', async () => {
    const c = await createInterceptor({
      mode: 'ebpf',
      iptablesBackend: 'auto',
      log: silentLogger,
      ebpf: {
        cgroup,
        pinDir: `/sys/fs/bpf/${ns.name}`,
        netnsPath: `/run/netns/${ns.name}`,
        commandPrefix: prefix(ns),
        nodeName: 'n',
        localEndpointsOnly: false,
      },
    });
    expect(c.interceptor.mode).toBe('ebpf');
    expect(c.reason).toMatch(/^--intercept ebpf: /);
    interceptor = c.interceptor as EbpfInterceptor;
    await interceptor.start();
    await interceptor.sync([
      { id: 't/a', clusterIP: '10.96.0.10', port: 80, protocol: 'TCP', toPort: 21000 },
    ]);
    // python3, not socat: socat applies setsockopt-int only after connect(), too late for connect4.
    const client = `import socket,sys
s=socket.socket()
m=int(sys.argv[1])
if m: s.setsockopt(socket.SOL_SOCKET, 36, m)  # SO_MARK
s.settimeout(3); s.connect(("10.96.0.10",80)); print(s.recv(100).decode().strip())`;
    const reach = async (mark = 0) => {
      const r = await runProcess(
        [
          'sh',
          '-c',
          `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${ns.name} python3 -c "$0" ${mark}`,
          client,
        ],
        { timeoutMs: 10_000 },
      );
      return r.stdout.trim() || r.stderr.trim();
    };
    const before = interceptor.counters().bypass;
    expect(await reach()).toBe('proxied');
    expect(await reach(PROXY_MARK)).toBe('direct');
    expect(await reach(0x1)).toBe('proxied');
    expect(interceptor.counters().bypass - before).toBe(1);

    // Drift in the maps: an entry deleted behind the agent's back is rewritten by repair().
    expect(await interceptor.repair()).toBe(false);
    const pin = `/sys/fs/bpf/${ns.name}/edgemesh_svc_v1`;
    // struct em_svc_key of 10.96.0.10:80/TCP: address and port in network order, protocol 6, pad.
    await runProcess(['bpftool', 'map', 'delete', 'pinned', pin, 'key', ...'10 96 0 10 0 80 6 0'.split(' ')]);
    expect(await reach()).toBe('direct');
    expect(await interceptor.repair()).toBe(true);
    expect(await reach()).toBe('proxied');
    await interceptor.stop();
    interceptor = undefined;
    expect(await reach()).toBe('direct');
  });
});
