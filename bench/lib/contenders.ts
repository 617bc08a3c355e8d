// The contenders measured side by side: "direct" (no proxy: the physical limit), the edgemesh
// data planes, and peers configured for plain TCP forwarding. Each starts inside the topology's
// node namespace, forwards two ports (bulk → iperf3, echo → the load generator's backend) and is
// stopped (whole process tree) after its turn.
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { repoRoot } from '../../test/helpers/cli.ts';
import { onCleanup } from './cleanup.ts';
import { delay, exec, haveCommand, inNs, type Where, waitListening } from './exec.ts';
import { loadgenBinary } from './loadgen.ts';
import { type Supervised, superviseTree } from './supervise.ts';
import type { Topology } from './topology.ts';

/** Host and port a client connects to. */
export interface Endpoint {
  host: string;
  port: number;
}

/** What a contender forwards to: the backends in the topology. */
export interface BackendPorts {
  /** iperf3 server port on topology.backendIP. */
  bulk: number;
  /** Load-generator echo server port on topology.backendIP. */
  echo: number;
}

/** Everything a contender needs to start. */
export interface ContenderContext {
  topo: Topology;
  backend: BackendPorts;
  /** A scratch folder for config files and logs, removed with the run's work dir. */
  workDir: string;
}

/** A started contender: where clients connect, which process tree to measure, how to stop it. */
export interface RunningContender {
  bulk: Endpoint;
  echo: Endpoint;
  /** Root of the proxy's process tree (undefined for direct: nothing to measure). */
  pid?: number;
  /** The forwarding path it uses, for the report ('splice', 'read/write', ...). */
  path: string;
  /** argv prefix clients must run under (default: `ip netns exec <node namespace>`). */
  clientPrefix?: string[];
  stop(): Promise<void>;
}

/** One contender kind. */
export interface Contender {
  name: string;
  /** Why it cannot run on this machine (missing binary ...), or undefined when it can. */
  unavailable(): Promise<string | undefined>;
  start(ctx: ContenderContext): Promise<RunningContender>;
}

/** Starts argv inside ns (or under an argv prefix) and returns a handle that stops its whole process tree. */
function daemon(ns: Where, argv: string[], ready: () => Promise<void>): Promise<Supervised> {
  return superviseTree(inNs(ns, argv), ready);
}

/** No proxy: the client connects straight to the backend. */
export const direct: Contender = {
  name: 'direct',
  unavailable: async () => undefined,
  start: async ({ topo, backend }) => ({
    bulk: { host: topo.backendIP, port: backend.bulk },
    echo: { host: topo.backendIP, port: backend.echo },
    path: 'none',
    stop: async () => {},
  }),
};

/**
 * HAProxy in TCP mode with kernel splicing forced on in both directions. `redirect`: clients use
 * the ClusterIP and an iptables REDIRECT sends them to HAProxy, so it pays the same NAT and
 * conntrack as the edgemesh planes (plain `haproxy` is reached on 127.0.0.1 with no netfilter
 * state in the namespace at all).
 */
function haproxyContender(redirect: boolean): Contender {
  return {
    name: redirect ? 'haproxy-redirect' : 'haproxy',
    unavailable: async () => ((await haveCommand('haproxy')) ? undefined : 'haproxy is not installed'),
    async start({ topo, backend, workDir }) {
      const dir = path.join(workDir, 'haproxy');
      mkdirSync(dir, { recursive: true });
      const cfg = path.join(dir, 'haproxy.cfg');
      writeFileSync(
        cfg,
        [
          'global',
          // 2 fds per connection plus 2 per splice pipe must fit the hard RLIMIT_NOFILE (20,000 on
          // the project's machines, not raisable in their containers): 8,500 holds the idle suite.
          '  maxconn 8500',
          '  maxpipes 500',
          'defaults',
          '  mode tcp',
          '  maxconn 8500',
          '  timeout connect 5s',
          '  timeout client 120s',
          '  timeout server 120s',
          '  option splice-request',
          '  option splice-response',
          'listen bulk',
          '  bind 127.0.0.1:11000',
          `  server b ${topo.backendIP}:${backend.bulk}`,
          'listen echo',
          '  bind 127.0.0.1:11001',
          `  server b ${topo.backendIP}:${backend.echo}`,
          '',
        ].join('\n'),
      );
      const d = await daemon(topo.nodeNs, ['haproxy', '-db', '-f', cfg], async () => {
        await waitListening(topo.nodeNs, 11000);
        await waitListening(topo.nodeNs, 11001);
      });
      if (!redirect) {
        return {
          bulk: { host: '127.0.0.1', port: 11000 },
          echo: { host: '127.0.0.1', port: 11001 },
          pid: d.pid,
          path: 'splice',
          stop: d.stop,
        };
      }
      const rules = [
        [String(backend.bulk), '11000'],
        [String(backend.echo), '11001'],
      ].map(([port, to]) => [
        '-p',
        'tcp',
        '-d',
        BENCH_VIP,
        '--dport',
        port!,
        '-j',
        'REDIRECT',
        '--to-ports',
        to!,
      ]);
      const iptables = (op: string, rule: string[]) =>
        exec(['iptables', '-t', 'nat', op, 'OUTPUT', ...rule], { ns: topo.nodeNs });
      // The same local VIP route the edgemesh interceptors install (modules.edgeProxy.localVipRoutes):
      // without it the client leg takes the 1500-MTU service route and HAProxy pays for MSS 1448.
      const vipRoute = (op: string) =>
        exec(['ip', 'route', op, 'local', `${BENCH_VIP}/32`, 'dev', 'lo', 'table', 'local'], {
          ns: topo.nodeNs,
        });
      try {
        for (const rule of rules) {
          const r = await iptables('-A', rule);
          if (r.code !== 0) throw new Error(`iptables: ${r.stderr.trim()}`);
        }
        const r = await vipRoute('add');
        if (r.code !== 0) throw new Error(`ip route: ${r.stderr.trim()}`);
      } catch (err) {
        // Undo whatever got in (deleting what is absent fails harmlessly).
        for (const rule of rules) await iptables('-D', rule);
        await vipRoute('del');
        await d.stop();
        throw err;
      }
      return {
        bulk: { host: BENCH_VIP, port: backend.bulk },
        echo: { host: BENCH_VIP, port: backend.echo },
        pid: d.pid,
        path: 'splice, iptables REDIRECT from the ClusterIP (local VIP route)',
        stop: async () => {
          for (const rule of rules) await iptables('-D', rule);
          await vipRoute('del');
          // Leave no nat table behind: the next contender must not pay for conntrack it did not ask for.
          await exec(['nft', 'delete', 'table', 'ip', 'nat'], { ns: topo.nodeNs });
          await d.stop();
        },
      };
    },
  };
}

/** HAProxy reached directly on 127.0.0.1. */
export const haproxy = haproxyContender(false);
/** HAProxy behind the same REDIRECT interception as the edgemesh planes. */
export const haproxyRedirect = haproxyContender(true);

/** socat: one forked process per connection, 128 KiB copy buffer. */
export const socat: Contender = {
  name: 'socat',
  unavailable: async () => ((await haveCommand('socat')) ? undefined : 'socat is not installed'),
  async start({ topo, backend }) {
    const one = (listen: number, port: number) =>
      `socat -b 131072 TCP-LISTEN:${listen},bind=127.0.0.1,fork,reuseaddr,backlog=4096 TCP:${topo.backendIP}:${port}`;
    // Both listeners under one shell, so one process tree holds everything socat forks.
    const script = `${one(12000, backend.bulk)} & ${one(12001, backend.echo)} & wait`;
    const d = await daemon(topo.nodeNs, ['sh', '-c', script], async () => {
      await waitListening(topo.nodeNs, 12000);
      await waitListening(topo.nodeNs, 12001);
    });
    return {
      bulk: { host: '127.0.0.1', port: 12000 },
      echo: { host: '127.0.0.1', port: 12001 },
      pid: d.pid,
      path: 'read/write (fork per connection)',
      stop: d.stop,
    };
  },
};

const nginxStreamModule = '/usr/lib/nginx/modules/ngx_stream_module.so';

/** nginx with the stream module (Debian: nginx + libnginx-mod-stream), one worker per core. */
export const nginx: Contender = {
  name: 'nginx',
  async unavailable() {
    if (!(await haveCommand('nginx')))
      return 'nginx is not installed (apt-get install nginx libnginx-mod-stream)';
    const r = await exec(['sh', '-c', `test -f ${nginxStreamModule} || nginx -V 2>&1 | grep -q with-stream`]);
    return r.code === 0 ? undefined : 'nginx has no stream module (apt-get install libnginx-mod-stream)';
  },
  async start({ topo, backend, workDir }) {
    const dir = path.join(workDir, 'nginx');
    mkdirSync(dir, { recursive: true });
    const conf = path.join(dir, 'nginx.conf');
    const load =
      (await exec(['test', '-f', nginxStreamModule])).code === 0 ? `load_module ${nginxStreamModule};` : '';
    writeFileSync(
      conf,
      [
        load,
        'daemon off;',
        'worker_processes auto;',
        'worker_rlimit_nofile 20000;',
        `pid ${dir}/nginx.pid;`,
        `error_log ${dir}/error.log warn;`,
        'events { worker_connections 19000; }',
        'stream {',
        `  server { listen 127.0.0.1:13000 reuseport backlog=4096; proxy_pass ${topo.backendIP}:${backend.bulk}; }`,
        `  server { listen 127.0.0.1:13001 reuseport backlog=4096; proxy_pass ${topo.backendIP}:${backend.echo}; }`,
        '}',
        '',
      ].join('\n'),
    );
    const d = await daemon(
      topo.nodeNs,
      ['nginx', '-p', dir, '-c', conf, '-e', `${dir}/error.log`],
      async () => {
        await waitListening(topo.nodeNs, 13000);
        await waitListening(topo.nodeNs, 13001);
      },
    );
    return {
      bulk: { host: '127.0.0.1', port: 13000 },
      echo: { host: '127.0.0.1', port: 13001 },
      pid: d.pid,
      path: 'read/write',
      stop: d.stop,
    };
  },
};

/** The ClusterIP the bench Service gets in the generated manifests. */
export const BENCH_VIP = '10.96.0.50';

/** The manifests an edgemesh agent serves for the bench: one Service, one Pod at the backend IP. */
export function benchManifests(backendIP: string, backend: BackendPorts): string {
  return `apiVersion: v1
kind: Service
metadata:
  name: bench
  namespace: default
spec:
  clusterIP: ${BENCH_VIP}
  selector:
    app: bench
  ports:
    - name: tcp-bulk
      port: ${backend.bulk}
      targetPort: ${backend.bulk}
    - name: tcp-echo
      port: ${backend.echo}
      targetPort: ${backend.echo}
---
apiVersion: v1
kind: Pod
metadata:
  name: bench-backend
  namespace: default
  labels:
    app: bench
spec:
  nodeName: bench-node
  containers:
    - name: backend
      image: none
status:
  phase: Running
  podIP: ${backendIP}
  hostIP: ${backendIP}
  conditions:
    - type: Ready
      status: "True"
`;
}

interface AgentStatusDoc {
  dataplane?: { mode?: string; reason?: string };
  intercept?: { mode?: string; reason?: string };
  services?: Array<{ key: string; ports: Array<{ endpoints: string[] }> }>;
}

let metricsPort = 14000;

/** Retries a 1-byte echo and a tiny iperf3 run through the ClusterIP until both work (10 s). */
async function probeVip(ns: Where, backend: BackendPorts): Promise<void> {
  const deadline = Date.now() + 10_000;
  const lg = await loadgenBinary();
  for (;;) {
    const echo = await exec([lg, 'rr', BENCH_VIP, String(backend.echo), '1', '1'], { ns, timeoutMs: 5_000 });
    const bulk =
      echo.code === 0
        ? await exec(['iperf3', '-c', BENCH_VIP, '-p', String(backend.bulk), '-n', '64K', '-J'], {
            ns,
            timeoutMs: 10_000,
          })
        : echo;
    if (bulk.code === 0) return;
    if (Date.now() > deadline) {
      throw new Error(
        `the ClusterIP ${BENCH_VIP} does not forward: ${bulk.stderr.trim() || bulk.stdout.slice(0, 300)}`,
      );
    }
    await delay(200);
  }
}

/** The host's cgroup v2 mount (unified root, or the `unified` mount of a hybrid layout), if any. */
function hostCgroup2Root(): string | undefined {
  const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n');
  return mounts.map((l) => l.split(' ')).find((f) => f[2] === 'cgroup2')?.[1];
}

let ebpfCounter = 0;

/**
 * The real `edgemesh agent` in the node namespace, serving generated manifests; clients use the
 * ClusterIP. 'ebpf' runs `--intercept ebpf` attached to a throwaway cgroup that the clients join
 * (cgroup hooks only see processes inside their cgroup): connects to the ClusterIP are rewritten
 * straight to the backend, so no proxy is in the path at all. 'native-ebpf' is the native plane
 * behind the same cgroup hooks with socket-LB off (ebpfSocketLb: false): connect4 sends every
 * connect to the proxy port, SO_ORIGINAL_DST comes from the maps, so no NAT and no conntrack rule.
 * 'native-ebpf-sockmap' is 'native-ebpf' plus the sk_msg shortcut (ebpfSockmap: true, the plane then
 * forwards read/write): both legs of a proxied connection go socket to socket when both ends are
 * local sockets in the cgroup. So its own iperf3 and echo backends run INSIDE that cgroup (in the
 * backend namespace), as on a real node where every pod sits below the root cgroup the programs
 * attach to; the shared backends (outside the cgroup) would leave the upstream leg on TCP/IP.
 */
export function edgemesh(
  dataplane: 'native' | 'ts' | 'ebpf' | 'native-ebpf' | 'native-ebpf-sockmap',
  intercept = 'iptables',
  // A/B experiments (bench/connrate-cpu.ts --variant): extra agent flags, and the name suffix
  // that tells the variant apart in the report.
  // `edgeProxy`: extra config keys (YAML lines under modules.edgeProxy, indented 4 spaces).
  variant?: { suffix: string; agentArgs: string[]; edgeProxy?: string },
): Contender {
  const proxied = dataplane === 'native-ebpf' || dataplane === 'native-ebpf-sockmap';
  const ebpf = dataplane === 'ebpf' || proxied;
  return {
    name: `edgemesh-${dataplane}${variant ? `-${variant.suffix}` : ''}`,
    async unavailable() {
      if (!ebpf) return undefined;
      return hostCgroup2Root() ? undefined : 'no cgroup v2 mounted on the host (needed for --intercept ebpf)';
    },
    async start({ topo, backend: shared, workDir }) {
      let backend = shared;
      const dir = path.join(workDir, `edgemesh-${dataplane}-${metricsPort}`);
      mkdirSync(path.join(dir, 'manifests'), { recursive: true });
      writeFileSync(path.join(dir, 'manifests', 'bench.yaml'), benchManifests(topo.backendIP, backend));
      const listen = `127.0.0.1:${metricsPort++}`;
      let status: AgentStatusDoc = {};
      const extraArgs: string[] = [];
      let clientPrefix: string[] | undefined;
      let removeCgroup = () => {};
      const ownBackends: Supervised[] = [];
      const stopOwnBackends = async () => {
        for (const b of ownBackends.splice(0)) await b.stop();
      };
      if (!ebpf && variant?.edgeProxy) {
        const config = path.join(dir, 'agent.yaml');
        writeFileSync(config, `modules:\n  edgeProxy:\n${variant.edgeProxy}`);
        extraArgs.push('--config', config);
      }
      if (ebpf) {
        // A child cgroup of our own (relative in the config: inside `ip netns exec` the agent
        // finds or mounts the same cgroup2 hierarchy elsewhere) and our own pin folder.
        const name = `emb${process.pid % 100000}e${ebpfCounter++}`;
        const cgroup = path.join(hostCgroup2Root()!, name);
        mkdirSync(cgroup, { recursive: true });
        const unregister = onCleanup(() => rmdirSync(cgroup));
        removeCgroup = () => unregister();
        const config = path.join(dir, 'agent.yaml');
        writeFileSync(
          config,
          `modules:\n  edgeProxy:\n    ebpfCgroup: ${name}\n    ebpfPinDir: /sys/fs/bpf/${name}\n${proxied ? '    ebpfSocketLb: false\n' : ''}${dataplane === 'native-ebpf-sockmap' ? '    ebpfSockmap: true\n' : ''}${variant?.edgeProxy ?? ''}`,
        );
        extraArgs.push('--config', config);
        // Join the cgroup on the host side first: `ip netns exec` mounts a fresh /sys without it.
        clientPrefix = [
          'sh',
          '-c',
          `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${topo.nodeNs} "$@"`,
          'sh',
        ];
        if (dataplane === 'native-ebpf-sockmap') {
          // Backends of our own inside the cgroup (see the doc comment), on ports of our own.
          const inCgroup = [
            'sh',
            '-c',
            `echo $$ > ${cgroup}/cgroup.procs && exec ip netns exec ${topo.backendNs} "$@"`,
            'sh',
          ];
          backend = { bulk: backend.bulk + 10, echo: backend.echo + 10 };
          const ports = backend;
          const lg = await loadgenBinary();
          ownBackends.push(
            await daemon(inCgroup, ['iperf3', '-s', '-p', String(ports.bulk)], () =>
              waitListening(topo.backendNs, ports.bulk),
            ),
            await daemon(inCgroup, [lg, 'serve', String(ports.echo)], () =>
              waitListening(topo.backendNs, ports.echo),
            ),
          );
          writeFileSync(path.join(dir, 'manifests', 'bench.yaml'), benchManifests(topo.backendIP, backend));
        }
      }
      const argv = [
        process.execPath,
        path.join(repoRoot, 'src/cli/bin.js'),
        'agent',
        ...extraArgs,
        '--manifests',
        path.join(dir, 'manifests'),
        '--dataplane',
        dataplane === 'ebpf' ? 'auto' : proxied ? 'native' : dataplane,
        '--intercept',
        ebpf ? 'ebpf' : intercept,
        '--no-dns',
        '--metrics-listen',
        listen,
        '--state-dir',
        path.join(dir, 'state'),
        '--node-name',
        'bench-node',
        '--log-level',
        'warn',
        ...(variant?.agentArgs ?? []),
      ];
      let d: Awaited<ReturnType<typeof daemon>>;
      try {
        // native-ebpf: the agent joins the cgroup too, so the getsockopt hook answers its
        // SO_ORIGINAL_DST (its own upstream connects are bypassed by pid and SO_MARK).
        const where = proxied && clientPrefix ? clientPrefix : topo.nodeNs;
        d = await daemon(where, argv, async () => {
          // Generous: on a loaded 2-core machine the agent's start (tsx, first snapshot) takes seconds.
          const deadline = Date.now() + 45_000;
          for (;;) {
            const r = await exec(['curl', '-sf', `http://${listen}/status`], {
              ns: topo.nodeNs,
              timeoutMs: 5_000,
            });
            if (r.code === 0) {
              try {
                status = JSON.parse(r.stdout) as AgentStatusDoc;
              } catch {
                status = {};
              }
              const svc = status.services?.find((s) => s.key === 'default/bench');
              if (svc?.ports.every((p) => p.endpoints.length > 0)) break;
            }
            if (Date.now() > deadline) {
              throw new Error(
                `edgemesh agent did not serve default/bench within 45 s (last /status: ${r.stdout.slice(0, 300)})`,
              );
            }
            await delay(100);
          }
          const wantPlane = proxied ? 'native' : dataplane;
          const wrong =
            (ebpf &&
              status.intercept?.mode !== 'ebpf' &&
              `interception '${status.intercept?.mode ?? 'none'}'${status.intercept?.reason ? ` (${status.intercept.reason})` : ''}`) ||
            (dataplane !== 'ebpf' &&
              status.dataplane?.mode !== wantPlane &&
              `data plane '${status.dataplane?.mode ?? 'none'}'${status.dataplane?.reason ? ` (${status.dataplane.reason})` : ''}`);
          if (wrong) throw new Error(`asked for ${dataplane} but the agent reports ${wrong}`);
          // /status can list the endpoints before the interception rules are in place: wait until
          // both ports really answer through the ClusterIP (an early iperf3 got EHOSTUNREACH).
          await probeVip(clientPrefix ?? topo.nodeNs, backend);
        });
      } catch (err) {
        await stopOwnBackends();
        removeCgroup();
        throw err;
      }
      return {
        bulk: { host: BENCH_VIP, port: backend.bulk },
        echo: { host: BENCH_VIP, port: backend.echo },
        pid: d.pid,
        path:
          (dataplane === 'ebpf'
            ? 'cgroup/connect4 socket-LB: connects go straight to the backend, no proxy'
            : dataplane === 'native-ebpf'
              ? 'native data plane, cgroup/connect4 to the proxy + SO_ORIGINAL_DST from BPF maps (no NAT)'
              : dataplane === 'native-ebpf-sockmap'
                ? 'native data plane (read/write), cgroup/connect4 to the proxy, sk_msg socket to socket on both legs (backends in the cgroup)'
                : `${status.dataplane?.mode ?? dataplane} data plane, ${status.intercept?.mode ?? intercept} interception`) +
          (variant ? `; ${[...variant.agentArgs, variant.edgeProxy?.trim() ?? ''].join(' ').trim()}` : ''),
        clientPrefix,
        stop: async () => {
          await d.stop();
          await stopOwnBackends();
          removeCgroup();
        },
      };
    },
  };
}

/** Every contender, in report column order. */
export function allContenders(): Contender[] {
  return [
    direct,
    edgemesh('ebpf'),
    edgemesh('native'),
    edgemesh('native-ebpf'),
    edgemesh('native-ebpf-sockmap'),
    // The same plane with its workers pinned one per CPU and SYNs steered to their CPU's worker
    // (modules.edgeProxy.nativeCpuAffinity, off by default).
    edgemesh('native-ebpf', 'iptables', {
      suffix: 'cpu',
      agentArgs: [],
      edgeProxy: '    nativeCpuAffinity: true\n',
    }),
    // Both opt-ins together: the sk_msg shortcut plus pinned workers.
    edgemesh('native-ebpf-sockmap', 'iptables', {
      suffix: 'cpu',
      agentArgs: [],
      edgeProxy: '    nativeCpuAffinity: true\n',
    }),
    edgemesh('ts'),
    haproxy,
    haproxyRedirect,
    nginx,
    socat,
  ];
}
