// The pure-TS data plane: Node cannot read SO_ORIGINAL_DST, so (like kube-proxy's userspace mode)
// every proxied service port gets its own listener on an allocated local port and the interceptor
// REDIRECTs ClusterIP:port to it. Listeners live in piscina worker threads; this main-thread part
// only decides (ports, which worker owns what) and tells the workers by message.
import net from 'node:net';
import os from 'node:os';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { Counter, Gauge, type Registry } from 'prom-client';
import type {
  ServiceEntry,
  ServicePortEntry,
  ServiceTable,
  ServiceTableDiff,
} from '../../controller/types.ts';
import { ErrorCode } from '../../errors.ts';
import { registerWorkerProtocolMetrics } from '../../protocols/protocol-metrics.ts';
import type { InterceptTarget } from '../../proxier/interceptor.ts';
import type { Logger } from '../../util/log.ts';
import { familyOf } from '../../util/net.ts';
import type { Dataplane } from '../dataplane.ts';
import { COUNTER_NAMES, type CounterName, counterBuffer, sumCounters } from './counters.ts';
import { PROTOCOL_HANDLER_MODULES } from './handlers.ts';
import type { FromWorker, ListenerRoute, ToWorker, WorkerSettings, WorkerTask } from './messages.ts';
import { PortAllocator, parsePortRange } from './port-allocator.ts';

export interface TsDataplaneOptions {
  log: Logger;
  registry?: Registry;
  /** Worker threads; 0 = one per core. */
  workers: number;
  /** `FIRST-LAST` listener ports. */
  portRange: string;
  connectTimeoutMs: number;
  idleTimeoutMs: number;
  nodeName: string;
  listenHost?: string;
  maxConnectAttempts?: number;
  /** Protocol handler modules each worker loads (default: PROTOCOL_HANDLER_MODULES). */
  handlerModules?: readonly string[];
  /** Native plane id that takes tunnels back (set by SplitDataplane via spliceBackTo); 0 = none. */
  nativePlaneId?: number;
}

interface WorkerHandle {
  port: MessagePort;
  done: Promise<unknown>;
  listeners: number;
  pending: Map<number, (msg: Exclude<FromWorker, { type: 'ready' }>) => void>;
}

interface Placement {
  listenPort: number;
  worker: number;
  route: ListenerRoute;
}

/** A service port the TS plane can serve: TCP or UDP on a ClusterIP of a proxied, non-headless service. */
function servable(service: ServiceEntry, port: ServicePortEntry): boolean {
  return (
    service.proxied &&
    !service.headless &&
    service.type !== 'ExternalName' &&
    (port.protocol === 'TCP' || port.protocol === 'UDP') &&
    familiesOf(service).length > 0
  );
}

/** The families of a service's ClusterIPs (a dual-stack service has both: one listener each). */
function familiesOf(service: ServiceEntry): Array<4 | 6> {
  const out: Array<4 | 6> = [];
  if (service.clusterIPs.some((ip) => net.isIPv4(ip))) out.push(4);
  if (service.clusterIPs.some((ip) => net.isIPv6(ip))) out.push(6);
  return out;
}

/** The port with only the endpoints of `family`: a VIP's connections go to endpoints of its own family. */
function portOfFamily(port: ServicePortEntry, family: 4 | 6): ServicePortEntry {
  if (port.endpoints.every((e) => familyOf(e.ip) === family)) return port;
  return { ...port, endpoints: port.endpoints.filter((e) => familyOf(e.ip) === family) };
}

/** The pure-TS data plane (see file comment). */
export class TsDataplane implements Dataplane {
  readonly name = 'dataplane';
  readonly mode = 'ts' as const;
  private pool: Piscina | undefined;
  private workers: WorkerHandle[] = [];
  private spliceBackPlane = 0;
  private readonly counterMem: SharedArrayBuffer;
  private readonly allocator: PortAllocator;
  /** Placement per `namespace/name` → per `port/protocol`. */
  private readonly placements = new Map<string, Map<string, Placement>>();
  private nextId = 1;
  private readonly workerCount: number;

  constructor(private readonly options: TsDataplaneOptions) {
    const { first, last } = parsePortRange(options.portRange);
    this.allocator = new PortAllocator(first, last);
    this.spliceBackPlane = options.nativePlaneId ?? 0;
    this.workerCount = options.workers > 0 ? options.workers : Math.max(1, os.availableParallelism());
    this.counterMem = counterBuffer(this.workerCount);
    if (options.registry) {
      this.registerMetrics(options.registry);
      registerWorkerProtocolMetrics(options.registry, () => this.workerMetrics());
    }
  }

  /** Every worker's protocol metrics (getMetricsAsJSON()); a worker that does not answer in 2 s is left out. */
  private workerMetrics(): Promise<never[][]> {
    return Promise.all(
      this.workers.map(
        (w) =>
          new Promise<never[]>((resolve) => {
            const id = this.nextId++;
            const timer = setTimeout(() => {
              w.pending.delete(id);
              resolve([]);
            }, 2000);
            w.pending.set(id, (msg) => {
              w.pending.delete(id);
              clearTimeout(timer);
              resolve(msg.type === 'metrics' ? (msg.metrics as never[]) : []);
            });
            const msg: ToWorker = { type: 'metrics', id };
            w.port.postMessage(msg);
          }),
      ),
    );
  }

  /** Tunnels go back to native plane `planeId` (0 = stay in JS); takes effect at the next start(). */
  spliceBackTo(planeId: number): void {
    this.spliceBackPlane = planeId;
  }

  async start(): Promise<void> {
    const settings: WorkerSettings = {
      listenHost: this.options.listenHost ?? '0.0.0.0',
      connectTimeoutMs: this.options.connectTimeoutMs,
      idleTimeoutMs: this.options.idleTimeoutMs,
      nodeName: this.options.nodeName,
      maxConnectAttempts: this.options.maxConnectAttempts ?? 3,
      handlerModules: this.options.handlerModules ?? PROTOCOL_HANDLER_MODULES,
      nativePlaneId: this.spliceBackPlane,
    };
    const n = this.workerCount;
    // One long-running task per thread makes each thread the owner of its listeners; atomics off
    // so an idle thread never blocks its event loop in Atomics.wait.
    this.pool = new Piscina({
      filename: new URL('./worker-entry.mjs', import.meta.url).href,
      minThreads: n,
      maxThreads: n,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
      atomics: 'disabled',
    });
    const readies: Promise<void>[] = [];
    for (let index = 0; index < n; index++) {
      const { port1, port2 } = new MessageChannel();
      const task: WorkerTask = { index, port: port2, settings, counters: this.counterMem };
      const handle: WorkerHandle = {
        port: port1,
        listeners: 0,
        pending: new Map(),
        done: this.pool.run(task, { transferList: [port2] }),
      };
      readies.push(
        new Promise<void>((resolve, reject) => {
          handle.done.catch(reject);
          port1.on('message', (msg: FromWorker) => {
            if (msg.type === 'ready') resolve();
            else handle.pending.get(msg.id)?.(msg);
          });
        }),
      );
      this.workers.push(handle);
    }
    await Promise.all(readies);
    this.options.log.info({ workers: n }, 'ts data plane started');
  }

  async apply(table: ServiceTable, diff: ServiceTableDiff): Promise<readonly InterceptTarget[]> {
    const changed = new Set([...diff.added, ...diff.updated, ...diff.removed]);
    for (const key of this.placements.keys()) if (!table.services.has(key)) changed.add(key);
    for (const key of table.services.keys()) if (!this.placements.has(key)) changed.add(key);

    const upserts: ListenerRoute[][] = this.workers.map(() => []);
    const removes: number[][] = this.workers.map(() => []);
    for (const key of changed) {
      const service = table.services.get(key);
      const old = this.placements.get(key) ?? new Map<string, Placement>();
      const next = new Map<string, Placement>();
      const routes = (service?.ports ?? []).flatMap((port) =>
        service && servable(service, port) ? familiesOf(service).map((family) => ({ port, family })) : [],
      );
      for (const { port: servicePort, family } of routes) {
        if (!service) continue;
        const port = portOfFamily(servicePort, family);
        // IPv4 keeps its old key (no listener moves on upgrade); IPv6 routes get their own.
        const pk = `${port.port}/${port.protocol}${family === 6 ? '/6' : ''}`;
        const route: ListenerRoute = { listenPort: 0, service, port, family };
        const prev = old.get(pk);
        if (prev) {
          route.listenPort = prev.listenPort;
          next.set(pk, { ...prev, route });
          upserts[prev.worker]!.push(route);
          continue;
        }
        const listenPort = this.allocator.allocate();
        if (listenPort === undefined) {
          this.options.log.error(
            { service: key, port: port.port },
            'ts data plane: listener port range exhausted',
          );
          continue;
        }
        route.listenPort = listenPort;
        const worker = this.leastLoadedWorker();
        this.workers[worker]!.listeners++;
        next.set(pk, { listenPort, worker, route });
        upserts[worker]!.push(route);
      }
      for (const [pk, p] of old) {
        if (next.has(pk)) continue;
        removes[p.worker]!.push(p.listenPort);
        this.workers[p.worker]!.listeners--;
        this.allocator.release(p.listenPort);
      }
      if (next.size > 0) this.placements.set(key, next);
      else this.placements.delete(key);
    }
    await this.sendUpdates(upserts, removes);
    return this.targets();
  }

  /**
   * Serves `fd` (a connection the native plane accepted and handed over) as if accepted on
   * `listenPort`; false (fd untouched) when no listener has that port.
   */
  adopt(listenPort: number, fd: number): boolean {
    const p = this.findPlacement(listenPort);
    const w = p ? this.workers[p.worker] : undefined;
    if (!w) return false;
    const msg: ToWorker = { type: 'adopt', listenPort, fd };
    w.port.postMessage(msg);
    return true;
  }

  /** Every ClusterIP:port → listener port, for the interceptor. */
  targets(): InterceptTarget[] {
    const out: InterceptTarget[] = [];
    for (const [key, ports] of this.placements) {
      for (const p of ports.values()) {
        for (const ip of p.route.service.clusterIPs) {
          if (net.isIP(ip) === 0 || familyOf(ip) !== (p.route.family ?? 4)) continue;
          out.push({
            id: `${key}:${p.route.port.name || p.route.port.port}`,
            clusterIP: ip,
            port: p.route.port.port,
            protocol: p.route.port.protocol === 'UDP' ? 'UDP' : 'TCP',
            toPort: p.listenPort,
          });
        }
      }
    }
    return out;
  }

  counters(): Record<string, number> {
    return { ...sumCounters(this.counterMem), listeners: this.allocator.size };
  }

  async stop(): Promise<void> {
    const pool = this.pool;
    this.pool = undefined;
    if (!pool) return;
    const stop: ToWorker = { type: 'stop' };
    for (const w of this.workers) w.port.postMessage(stop);
    await Promise.allSettled(this.workers.map((w) => w.done));
    for (const w of this.workers) w.port.close();
    this.workers = [];
    await pool.destroy();
    this.placements.clear();
  }

  private leastLoadedWorker(): number {
    let best = 0;
    for (let i = 1; i < this.workers.length; i++) {
      if (this.workers[i]!.listeners < this.workers[best]!.listeners) best = i;
    }
    return best;
  }

  /** Sends each worker its changes and waits; a listener that failed to bind moves to another port once, then is dropped. */
  private async sendUpdates(upserts: ListenerRoute[][], removes: number[][]): Promise<void> {
    const results = await Promise.all(
      this.workers.map((w, i) =>
        upserts[i]!.length === 0 && removes[i]!.length === 0
          ? Promise.resolve([])
          : this.request(w, upserts[i]!, removes[i]!),
      ),
    );
    const retry: ListenerRoute[][] = this.workers.map(() => []);
    let retries = 0;
    results.forEach((failed, i) => {
      for (const f of failed) {
        const placement = this.findPlacement(f.listenPort);
        if (!placement) continue;
        // The failed port stays marked used: something else holds it, so it is not handed out again.
        const port = this.allocator.allocate();
        this.options.log.warn(
          { listenPort: f.listenPort, code: f.code, next: port, service: placement.route.service.key },
          'ts data plane: cannot listen, trying another port',
        );
        if (port === undefined) {
          this.options.log.error(
            { code: ErrorCode.LISTEN, service: placement.route.service.key },
            'ts data plane: no free listener port left; service port left unproxied',
          );
          this.dropPlacement(f.listenPort);
          continue;
        }
        placement.listenPort = port;
        placement.route = { ...placement.route, listenPort: port };
        retry[i]!.push(placement.route);
        retries++;
      }
    });
    if (retries === 0) return;
    const second = await Promise.all(
      this.workers.map((w, i) =>
        retry[i]!.length === 0 ? Promise.resolve([]) : this.request(w, retry[i]!, []),
      ),
    );
    const stillFailed = second.flat();
    // A service port that cannot get a listener is left out (no rule, so its clients get no
    // redirect rather than a dead port); everything else still syncs.
    for (const f of stillFailed) {
      const placement = this.findPlacement(f.listenPort);
      this.options.log.error(
        {
          code: ErrorCode.LISTEN,
          listenPort: f.listenPort,
          cause: f.code,
          service: placement?.route.service.key,
        },
        `ts data plane: cannot listen (${f.message}); service port left unproxied`,
      );
      this.dropPlacement(f.listenPort);
    }
  }

  private request(
    w: WorkerHandle,
    upserts: ListenerRoute[],
    removes: number[],
  ): Promise<Array<{ listenPort: number; code: string; message: string }>> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      w.pending.set(id, (msg) => {
        w.pending.delete(id);
        resolve(msg.type === 'updated' ? msg.failed : []);
      });
      const msg: ToWorker = { type: 'update', id, upserts, removes };
      w.port.postMessage(msg);
    });
  }

  private findPlacement(listenPort: number): Placement | undefined {
    for (const ports of this.placements.values()) {
      for (const p of ports.values()) if (p.listenPort === listenPort) return p;
    }
    return undefined;
  }

  private dropPlacement(listenPort: number): void {
    for (const [key, ports] of this.placements) {
      for (const [pk, p] of ports) {
        if (p.listenPort !== listenPort) continue;
        ports.delete(pk);
        this.workers[p.worker]!.listeners--;
        this.allocator.release(listenPort);
      }
      if (ports.size === 0) this.placements.delete(key);
    }
  }

  private registerMetrics(registry: Registry): void {
    const read = (name: CounterName) => sumCounters(this.counterMem)[name];
    const totals: CounterName[] = COUNTER_NAMES.filter((n) => n !== 'connections_active');
    for (const name of totals) {
      const metricName = `edgemesh_ts_dataplane_${name.replace(/_total$/, '')}_total`;
      let last = 0;
      new Counter({
        name: metricName,
        help: `TS data plane: ${name.replace(/_/g, ' ')}`,
        registers: [registry],
        collect() {
          const v = read(name);
          if (v > last) this.inc(v - last);
          last = v;
        },
      });
    }
    const allocator = this.allocator;
    new Gauge({
      name: 'edgemesh_ts_dataplane_connections_active',
      help: 'TS data plane: connections being forwarded now',
      registers: [registry],
      collect() {
        this.set(read('connections_active'));
      },
    });
    new Gauge({
      name: 'edgemesh_ts_dataplane_listeners',
      help: 'TS data plane: per-service-port listeners',
      registers: [registry],
      collect() {
        this.set(allocator.size);
      },
    });
  }
}
