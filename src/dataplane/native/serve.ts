// Runs the native data plane standalone, without controller or interceptor: for e2e tests and
// benchmarks that install their own interception. Usage:
//   node --import tsx src/dataplane/native/serve.ts [--port 40001] [--host 0.0.0.0] [--host6 ::|off]
//     [--workers N]
//     [--mode splice|readwrite] [--mark 0x4567|0] [--gid GID] [--drain-ms 2000]
//     [--pipe-size BYTES] [--buffer-size BYTES]
//     --route VIP:PORT=IP:PORT[,IP:PORT...][/rr|random|hash|affinity] ...   (IPv6 as [fd00::1]:80)
// Prints one line `ready {"port":..,"pid":..,"targets":[...]}` when serving; SIGUSR2 prints
// `counters {...}` then `services {"serve/route-N": {...}}`; SIGTERM/SIGINT drain and exit 0 after printing the final counters.
import pino from 'pino';
import type { ServiceEntry } from '../../controller/types.ts';
import { NATIVE_PROXY_MARK, NativeDataplane } from './native-dataplane.ts';

interface Args {
  port: number;
  host: string;
  host6: string | false;
  workers: number;
  mode: 'splice' | 'readwrite';
  mark: number;
  gid?: number;
  drainMs: number;
  pipeSize?: number;
  bufferSize?: number;
  routes: string[];
}

function parse(argv: string[]): Args {
  const a: Args = {
    port: 40001,
    host: '0.0.0.0',
    host6: '::',
    workers: 0,
    mode: 'splice',
    mark: NATIVE_PROXY_MARK,
    drainMs: 2000,
    routes: [],
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1] ?? ''];
    if (flag === '--port') a.port = Number(value);
    else if (flag === '--host') a.host = value;
    else if (flag === '--host6') a.host6 = value === 'off' ? false : value;
    else if (flag === '--workers') a.workers = Number(value);
    else if (flag === '--mode') a.mode = value === 'readwrite' ? 'readwrite' : 'splice';
    else if (flag === '--mark') a.mark = Number(value);
    else if (flag === '--gid') a.gid = Number(value);
    else if (flag === '--drain-ms') a.drainMs = Number(value);
    else if (flag === '--pipe-size') a.pipeSize = Number(value);
    else if (flag === '--buffer-size') a.bufferSize = Number(value);
    else if (flag === '--route') a.routes.push(value);
    else throw new Error(`unknown flag ${flag}`);
  }
  return a;
}

/** `host:port` or `[v6]:port` split at the last colon. */
function hostPort(text: string): [string, string] {
  const at = text.lastIndexOf(':');
  return [text.slice(0, at).replace(/^\[(.*)\]$/, '$1'), text.slice(at + 1)];
}

/** `VIP:PORT=IP:PORT,...[/policy]` as a one-port Service (IPv6 as `[fd00::1]:80`). */
function routeService(spec: string, n: number): ServiceEntry {
  const [front, policy = 'rr'] = spec.split('/');
  const [vipPort, eps = ''] = front!.split('=');
  const [vip, port] = hostPort(vipPort!);
  return {
    namespace: 'serve',
    name: `route-${n}`,
    key: `serve/route-${n}`,
    clusterIPs: [vip!],
    headless: false,
    type: 'ClusterIP',
    sessionAffinity: { type: policy === 'affinity' ? 'ClientIP' : 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
    ports: [
      {
        name: '',
        port: Number(port),
        protocol: 'TCP',
        appProtocol: 'tcp',
        targetPort: 0,
        endpoints: eps
          .split(',')
          .filter(Boolean)
          .map((e) => {
            const [ip, p] = hostPort(e);
            return { ip: ip!, port: Number(p), ready: true, serving: true, terminating: false };
          }),
        trafficPolicy:
          policy === 'random'
            ? { loadBalancer: { simple: 'RANDOM' } }
            : policy === 'hash'
              ? { loadBalancer: { consistentHash: { useSourceIp: true } } }
              : undefined,
      },
    ],
  };
}

const args = parse(process.argv.slice(2));
// The interceptor's OUTPUT jump skips this group: set before any socket or thread exists.
if (args.gid !== undefined) process.setgid?.(args.gid);
const dp = new NativeDataplane({
  log: pino({ level: process.env.EDGEMESH_LOG_LEVEL ?? 'warn' }, pino.destination(2)),
  proxyPort: args.port,
  listenHost: args.host,
  listenHost6: args.host6,
  workers: args.workers,
  connectTimeoutMs: 3000,
  idleTimeoutMs: 0,
  mark: args.mark,
  forwardMode: args.mode,
  drainTimeoutMs: args.drainMs,
  pipeSize: args.pipeSize,
  bufferSize: args.bufferSize,
});
await dp.start();
const services = args.routes.map(routeService);
const targets = await dp.apply(
  {
    generation: 1,
    services: new Map(services.map((s) => [s.key, s])),
    gateways: new Map(),
    virtualServices: new Map(),
    destinationRules: new Map(),
    secrets: new Map(),
  },
  { added: services.map((s) => s.key), updated: [], removed: [], istioChanged: false },
);
process.stdout.write(`ready ${JSON.stringify({ port: dp.port, pid: process.pid, targets })}\n`);
process.on('SIGUSR2', () => {
  process.stdout.write(`counters ${JSON.stringify(dp.counters())}\n`);
  process.stdout.write(`services ${JSON.stringify(Object.fromEntries(dp.serviceCounters()))}\n`);
});
let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  const before = dp.counters();
  await dp.stop();
  process.stdout.write(`stopped ${JSON.stringify(before)}\n`);
  process.exit(0);
};
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
