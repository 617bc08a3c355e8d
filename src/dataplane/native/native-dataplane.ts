// The native data plane: a C++ proxy plane listening on the proxy port (one SO_REUSEPORT listener
// per worker), each worker an epoll loop that blocks its own piscina thread. TS only pushes a new
// routing table per snapshot and reads counters; no per-connection work crosses into JS.
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { Piscina } from 'piscina';
import { Counter, Gauge, type Registry } from 'prom-client';
import type {
  ServiceEntry,
  ServicePortEntry,
  ServiceTable,
  ServiceTableDiff,
} from '../../controller/types.ts';
import { EdgemeshError, ErrorCode, errorMessage } from '../../errors.ts';
import {
  loadNative,
  mapNativeError,
  type NativeBinding,
  PLANE_COUNTER_NAMES,
  SERVICE_COUNTER_NAMES,
  type ServiceCounterName,
} from '../../native/index.ts';
import { type InterceptTarget, PROXY_MARK } from '../../proxier/interceptor.ts';
import type { Logger } from '../../util/log.ts';
import type { Dataplane } from '../dataplane.ts';
import { encodeRoutes, type NativeRoute, routeTargets, ServiceSlots, tableRoutes } from './route-encoder.ts';

/** SO_MARK the native plane puts on its upstream sockets (PROXY_MARK, shared with the interceptors). */
export const NATIVE_PROXY_MARK = PROXY_MARK;

/** How bytes move between the two sockets of a connection. */
export type ForwardMode = 'splice' | 'readwrite';

export interface NativeDataplaneOptions {
  log: Logger;
  registry?: Registry;
  /** Proxy port every intercepted connection is redirected to (0 = any, for tests). */
  proxyPort: number;
  /** Listen address (default 0.0.0.0: REDIRECT from PREROUTING targets the incoming interface's address). */
  listenHost?: string;
  /**
   * IPv6 listen address, the twin of listenHost (default `::`, `::1` when listenHost is
   * 127.0.0.1; IPV6_V6ONLY, same port and workers);
   * false: IPv4 only. When the host has no usable IPv6 the plane logs why once and serves IPv4 only.
   */
  listenHost6?: string | false;
  /** Worker threads (one listener + epoll loop each); 0 = number of cores. */
  workers: number;
  connectTimeoutMs: number;
  /** Close connections idle this long; 0 = never. */
  idleTimeoutMs: number;
  /** SO_MARK of upstream sockets (default NATIVE_PROXY_MARK); 0 = do not mark. */
  mark?: number;
  /** splice (default) or read/write (required when eBPF sk_msg accelerates the sockets). */
  forwardMode?: ForwardMode;
  /** How long stop() lets open connections finish before resetting them (default 5000). */
  drainTimeoutMs?: number;
  /** Endpoints tried per connection when connects are refused or time out (default 3). */
  maxConnectAttempts?: number;
  /** Per-service counter slots (default 16384). */
  serviceSlots?: number;
  /** Splice pipe size per direction in bytes (default PIPE_SIZE). */
  pipeSize?: number;
  /** Read/write buffer per direction in bytes (default RW_BUFFER_SIZE). */
  bufferSize?: number;
  /** After a busy epoll batch, workers poll without sleeping this many µs (default 0 = off; costs CPU). */
  spinUs?: number;
  /** Pin worker i to the i-th CPU and steer new connections to the worker of their CPU (default off). */
  cpuAffinity?: boolean;
}

/** Where accepted connections on hand-off ports go: `take` owns the fd from then on. */
export interface HandoffTarget {
  /** Which service ports are handed off (the rest is forwarded natively). */
  ports: (service: ServiceEntry, port: ServicePortEntry) => boolean;
  /** Called on the main thread with the accepted socket's fd and its original destination. */
  take: (fd: number, clusterIP: string, port: number) => void;
}

interface WorkerResult {
  ok: boolean;
  message?: string;
  syscall?: string;
  errno?: number;
}

/** Whether the IPv6 listeners run, and why not when they do not (for logs, counters and tests). */
export interface Ipv6ListenerState {
  on: boolean;
  reason?: string;
}

/** Why this host cannot serve IPv6 (undefined when it can, as far as the kernel switch says). */
function ipv6Unavailable(): string | undefined {
  let text: string;
  try {
    text = fs.readFileSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', 'utf8');
  } catch {
    return 'kernel without IPv6 (/proc/sys/net/ipv6 missing)';
  }
  return text.trim() === '0' ? undefined : 'net.ipv6.conf.all.disable_ipv6 is set';
}

const PIPE_SIZE = 1 << 20; // measured best on this project's machines (shared/notes/kernel.md)
const RW_BUFFER_SIZE = 256 << 10;

/** The native plane as a Dataplane: start() binds and spawns workers, apply() swaps the routing table. */
export class NativeDataplane implements Dataplane {
  readonly name = 'dataplane';
  readonly mode = 'native' as const;
  private binding: NativeBinding | undefined;
  private planeId = 0;
  /** setForwardMode()'s choice (overrides options.forwardMode). */
  private forwardChoice: ForwardMode | undefined;
  private boundPort = 0;
  private pool: Piscina | undefined;
  private tasks: Promise<void>[] = [];
  private readonly slots: ServiceSlots;
  private routes: NativeRoute[] = [];
  private readonly warnedL7 = new Set<string>();
  private readonly workerCount: number;
  /** Counter values of freed service slots at the time they were freed (subtracted on reuse). */
  private readonly slotBaseline = new Map<number, Float64Array>();
  private exitHook: (() => void) | undefined;
  private handoff: HandoffTarget | undefined;
  private ipv6: Ipv6ListenerState = { on: false, reason: 'not started' };

  constructor(private readonly options: NativeDataplaneOptions) {
    this.workerCount = options.workers > 0 ? options.workers : Math.max(1, os.availableParallelism());
    this.slots = new ServiceSlots(options.serviceSlots ?? 16_384);
    if (options.registry) this.registerMetrics(options.registry);
  }

  /** The plane's id in the process-wide registry while started (0 otherwise): TS gives tunnels back to it. */
  get nativePlaneId(): number {
    return this.planeId;
  }

  /** The port the listeners are bound to (resolves proxyPort 0). */
  get port(): number {
    return this.boundPort;
  }

  /**
   * Hands the connections of the ports `target.ports` selects to `target.take` (the L7 path:
   * the worker accepts, reads the original destination, TS runs the protocol handler on the fd).
   * Call before start(); applies from the next apply().
   */
  enableHandoff(target: HandoffTarget): void {
    this.handoff = target;
  }

  /** Whether the IPv6 listeners run (decided at start()); IPv6 ClusterIPs are routed only then. */
  get ipv6Listener(): Ipv6ListenerState {
    return this.ipv6;
  }

  /** The routes of the last applied snapshot (for /status and tests). */
  get currentRoutes(): readonly NativeRoute[] {
    return this.routes;
  }

  /**
   * Switches how bytes move, before start(): the agent picks read/write when the eBPF sk_msg
   * shortcut may put this plane's sockets into the sockhash (splice() never sees redirected bytes).
   */
  setForwardMode(mode: ForwardMode): void {
    if (this.binding) throw new Error('setForwardMode() after start()');
    this.forwardChoice = mode;
  }

  /** How bytes move (fixed once started). */
  get forwardMode(): ForwardMode {
    return this.forwardChoice ?? this.options.forwardMode ?? 'splice';
  }

  async start(): Promise<void> {
    const loaded = loadNative();
    if (!loaded.binding || !loaded.path)
      throw new EdgemeshError(ErrorCode.NATIVE_LOAD, `native addon unavailable: ${loaded.reason}`);
    const native = loaded.binding;
    const o = this.options;
    const mark = o.mark ?? NATIVE_PROXY_MARK;
    if (mark !== 0) {
      const errno = native.probeMark(mark);
      if (errno !== 0)
        throw new EdgemeshError(
          ErrorCode.NATIVE_SYSCALL,
          `setsockopt(SO_MARK) is not permitted (errno ${errno}); the native plane needs CAP_NET_ADMIN`,
          { syscall: 'setsockopt(SO_MARK)', errno },
        );
    }
    const id = native.planeCreate(
      mark,
      o.connectTimeoutMs,
      o.idleTimeoutMs,
      this.forwardMode === 'splice',
      o.pipeSize ?? PIPE_SIZE,
      o.bufferSize ?? RW_BUFFER_SIZE,
      o.maxConnectAttempts ?? 3,
      this.slots.capacity,
      o.spinUs ?? 0,
      o.cpuAffinity ?? false,
    );
    const host = o.listenHost ?? '0.0.0.0';
    try {
      this.boundPort = native.planeListen(id, host, o.proxyPort, this.workerCount);
    } catch (err) {
      native.planeDestroy(id);
      const e = mapNativeError(err);
      throw new EdgemeshError(
        ErrorCode.LISTEN,
        `native plane cannot listen on ${host}:${o.proxyPort}: ${e.message}`,
        {
          cause: e,
          syscall: e.syscall,
          errno: e.errno,
        },
      );
    }
    this.ipv6 = this.listenIpv6(native, id);
    this.binding = native;
    this.planeId = id;
    if (this.handoff) native.planeSetHandoff(id, () => this.takeHandoffs());
    // A worker blocked in native code cannot be terminated, and Node joins worker threads at exit:
    // without this, process.exit() (or a crash) would hang until someone called stop().
    this.exitHook = () => native.planeStop(id, 0);
    process.once('exit', this.exitHook);
    native.planeSetRoutes(id, encodeRoutes(0, []));
    // One long-running task per thread: each thread becomes the owner of one listener's epoll loop.
    this.pool = new Piscina({
      filename: new URL('./plane-worker.mjs', import.meta.url).href,
      minThreads: this.workerCount,
      maxThreads: this.workerCount,
      concurrentTasksPerWorker: 1,
      idleTimeout: Number.POSITIVE_INFINITY,
      atomics: 'disabled',
      // The worker is plain JS: parent flags (--input-type, loaders) would only break or slow it.
      execArgv: [],
    });
    this.pool.on('error', (err: unknown) =>
      o.log.error({ err: errorMessage(err) }, 'native worker pool error'),
    );
    for (let index = 0; index < this.workerCount; index++) {
      const task = this.pool.run({ addonPath: loaded.path, planeId: id, index }) as Promise<WorkerResult>;
      this.tasks.push(
        task.then(
          (r) => {
            if (!r.ok)
              o.log.error(
                { worker: index, syscall: r.syscall, errno: r.errno },
                `native worker failed: ${r.message}`,
              );
          },
          (err) => o.log.error({ worker: index, err: errorMessage(err) }, 'native worker thread failed'),
        ),
      );
    }
    // Serving means every worker is in its loop (its listener is accepted from, its fds exist).
    const deadline = Date.now() + 10_000;
    while ((this.counters().workers_running ?? 0) < this.workerCount) {
      if (Date.now() > deadline) {
        await this.stop();
        throw new EdgemeshError(ErrorCode.NATIVE_SYSCALL, 'native plane workers did not start within 10 s');
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    o.log.info(
      {
        port: this.boundPort,
        workers: this.workerCount,
        forward: this.forwardMode,
        mark,
        cpuAffinity: o.cpuAffinity ?? false,
        ipv6: this.ipv6.on,
      },
      'native data plane started',
    );
  }

  /**
   * The IPv6 listeners beside the IPv4 ones (same port, one per worker); off, logged once with
   * the reason, when not asked for or the host cannot (IPv6 disabled, no [::] bind).
   */
  private listenIpv6(native: NativeBinding, id: number): Ipv6ListenerState {
    // A loopback-only IPv4 listener (tests, benchmarks) gets a loopback-only IPv6 twin.
    const host6 = this.options.listenHost6 ?? (this.options.listenHost === '127.0.0.1' ? '::1' : '::');
    let state: Ipv6ListenerState;
    if (host6 === false) {
      state = { on: false, reason: 'listenHost6 is false' };
    } else {
      const why = ipv6Unavailable();
      if (why !== undefined) {
        state = { on: false, reason: why };
      } else {
        try {
          native.planeListen(id, host6, this.boundPort, this.workerCount);
          state = { on: true };
        } catch (err) {
          state = {
            on: false,
            reason: `cannot listen on [${host6}]:${this.boundPort}: ${mapNativeError(err).message}`,
          };
        }
      }
    }
    if (!state.on) this.options.log.warn({ reason: state.reason }, `IPv6 listener off: ${state.reason}`);
    return state;
  }

  async apply(table: ServiceTable, _diff: ServiceTableDiff): Promise<readonly InterceptTarget[]> {
    const native = this.requireStarted();
    const before = new Set(this.slots.entries());
    // Without IPv6 listeners an IPv6 ClusterIP redirected here would be refused: no route, no target.
    const routes = tableRoutes(table, this.slots, this.handoff?.ports).filter(
      (r) => this.ipv6.on || !net.isIPv6(r.vip),
    );
    // Slots freed by this snapshot restart from their current native values.
    const live = new Set([...this.slots.entries()].map(([, s]) => s));
    const freed = [...before].map(([, s]) => s).filter((s) => !live.has(s));
    if (freed.length > 0) {
      const values = native.planeServiceCounters(this.planeId, this.slots.used);
      const width = SERVICE_COUNTER_NAMES.length;
      for (const s of freed) this.slotBaseline.set(s, values.slice(s * width, (s + 1) * width));
    }
    try {
      native.planeSetRoutes(this.planeId, encodeRoutes(table.generation, routes));
    } catch (err) {
      throw mapNativeError(err);
    }
    this.routes = routes;
    for (const r of routes) {
      if (r.needsL7 && !r.handoff && !this.warnedL7.has(r.id)) {
        this.warnedL7.add(r.id);
        this.options.log.warn(
          { route: r.id },
          'this port needs the TS plane (L7 hash key, Maglev or a custom ring size); the native plane hashes the client IP on its default ring instead',
        );
      }
    }
    return routeTargets(routes, this.boundPort);
  }

  counters(): Record<string, number> {
    if (!this.binding || this.planeId === 0) return {};
    const values = this.binding.planeCounters(this.planeId);
    const out: Record<string, number> = {};
    PLANE_COUNTER_NAMES.forEach((name, i) => {
      out[name] = values[i] ?? 0;
    });
    // The TS plane's names too, so `edgemesh status` and the shared suite read either plane alike.
    out.connections_total = out.accepted ?? 0;
    out.connections_active = out.active ?? 0;
    out.bytes_from_clients = out.bytes_up ?? 0;
    out.bytes_to_clients = out.bytes_down ?? 0;
    out.connect_errors =
      (out.connect_refused ?? 0) + (out.connect_timeouts ?? 0) + (out.connect_other_errors ?? 0);
    out.idle_timeouts = out.idle_closed ?? 0;
    // Listeners per family (each worker has one of each): `edgemesh status` shows IPv6 on or off.
    out.listeners_ipv4 = this.workerCount;
    out.listeners_ipv6 = this.ipv6.on ? this.workerCount : 0;
    return out;
  }

  /** Per-service counters by `namespace/name` (services of the current snapshot). */
  serviceCounters(): Map<string, Record<ServiceCounterName, number>> {
    const out = new Map<string, Record<ServiceCounterName, number>>();
    if (!this.binding || this.planeId === 0) return out;
    const values = this.binding.planeServiceCounters(this.planeId, this.slots.used);
    const width = SERVICE_COUNTER_NAMES.length;
    for (const [key, slot] of this.slots.entries()) {
      const base = this.slotBaseline.get(slot);
      const rec = {} as Record<ServiceCounterName, number>;
      SERVICE_COUNTER_NAMES.forEach((name, i) => {
        const v = values[slot * width + i] ?? 0;
        rec[name] = name === 'active' || !base ? v : v - (base[i] ?? 0);
      });
      out.set(key, rec);
    }
    return out;
  }

  async stop(): Promise<void> {
    const native = this.binding;
    if (!native || this.planeId === 0) return;
    const drainMs = this.options.drainTimeoutMs ?? 5_000;
    native.planeStop(this.planeId, drainMs);
    await Promise.all(this.tasks);
    this.tasks = [];
    await this.pool?.destroy();
    this.pool = undefined;
    const final = this.counters();
    const id = this.planeId;
    if (this.handoff) {
      native.planeSetHandoff(id, null);
      this.takeHandoffs();
    }
    if (this.exitHook) process.off('exit', this.exitHook);
    this.exitHook = undefined;
    this.planeId = 0;
    this.binding = undefined;
    native.planeDestroy(id);
    this.options.log.info(final, 'native data plane stopped');
  }

  /** Runs on the main thread once per batch the workers queued. */
  private takeHandoffs(): void {
    const native = this.binding;
    const take = this.handoff?.take;
    if (!native || this.planeId === 0 || !take) return;
    for (const { fd, address: vip, port } of native.planeTakeHandoffs(this.planeId)) {
      try {
        take(fd, vip, port);
      } catch (err) {
        // The taker failed before owning the fd: close it so the client is not left hanging.
        this.options.log.warn({ err: errorMessage(err), clusterIP: vip }, 'hand-off to TS failed');
        try {
          fs.closeSync(fd);
        } catch {
          // already closed by the taker
        }
      }
    }
  }

  private requireStarted(): NativeBinding {
    if (!this.binding || this.planeId === 0)
      throw new EdgemeshError(ErrorCode.NATIVE_USAGE, 'native data plane used before start()');
    return this.binding;
  }

  private registerMetrics(registry: Registry): void {
    const self = this;
    for (const name of PLANE_COUNTER_NAMES) {
      if (name === 'active' || name === 'workers_running') continue;
      new Counter({
        name: `edgemesh_native_${name}_total`,
        help: `Native data plane: ${name.replace(/_/g, ' ')}`,
        registers: [registry],
        collect() {
          this.reset();
          this.inc(self.counters()[name] ?? 0);
        },
      });
    }
    new Gauge({
      name: 'edgemesh_native_connections_active',
      help: 'Native data plane: connections open now',
      registers: [registry],
      collect() {
        this.set(self.counters().active ?? 0);
      },
    });
    for (const name of SERVICE_COUNTER_NAMES) {
      const labelNames = ['service'] as const;
      const collect = (metric: Counter<'service'> | Gauge<'service'>) => {
        metric.reset();
        for (const [service, rec] of self.serviceCounters()) {
          if (metric instanceof Gauge) metric.set({ service }, rec[name]);
          else metric.inc({ service }, rec[name]);
        }
      };
      if (name === 'active') {
        new Gauge({
          name: 'edgemesh_native_service_connections_active',
          help: 'Native data plane: open connections per service',
          labelNames,
          registers: [registry],
          collect() {
            collect(this);
          },
        });
      } else {
        new Counter({
          name: `edgemesh_native_service_${name}_total`,
          help: `Native data plane: ${name.replace(/_/g, ' ')} per service`,
          labelNames,
          registers: [registry],
          collect() {
            collect(this);
          },
        });
      }
    }
  }
}
