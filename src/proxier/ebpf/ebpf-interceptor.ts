// The `ebpf` Interceptor: cgroup/connect4 socket-level LB plus proxy redirection with
// SO_ORIGINAL_DST from the maps for processes in one cgroup v2, and sk_lookup in the network
// namespace for clients elsewhere (other namespaces, other hosts). sync()/apply() only record the
// latest targets/snapshot; one render writes the complete desired map state in one batch.
import { mkdir, readdir, rm, rmdir } from 'node:fs/promises';
import path from 'node:path';
import type { Registry } from 'prom-client';
import { Gauge } from 'prom-client';
import { EMPTY_TABLE, type ServiceTable } from '../../controller/types.ts';
import { EdgemeshError, ErrorCode, errorMessage } from '../../errors.ts';
import type { NativeBinding } from '../../native/index.ts';
import type { Logger } from '../../util/log.ts';
import { familyOf } from '../../util/net.ts';
import type { Interceptor, InterceptTarget, Ipv6Interception } from '../interceptor.ts';
import type { RuleInterceptor } from '../rule-interceptor.ts';
import type { CommandPrefix } from '../run-command.ts';
import { endpointAddresses } from '../vip-routes.ts';
import { chooseIpv6Delegate } from './ipv6-delegate.ts';
import {
  Action,
  ConfigFlag,
  decodeSvcValue,
  encodeAddr4,
  encodeBackendKey,
  encodeConfig,
  encodeSvcKey,
  encodeSvcValue,
  encodeU32,
  Layout,
  MapName,
  STAT_NAMES,
  sumPerCpu,
} from './map-layout.ts';
import { type EbpfServiceEntry, renderSocketLb } from './render-socket-lb.ts';
import { SkLookupSteering } from './sk-lookup-steering.ts';

export interface EbpfInterceptorOptions {
  log: Logger;
  binding: NativeBinding;
  /** Paths of the BPF objects (probe.ts findBpfObjects). */
  objects: readonly string[];
  /** cgroup v2 folder the programs attach to (processes inside it and below are covered). */
  cgroupPath: string;
  /** bpffs folder for pinned maps and links (default /sys/fs/bpf/edgemesh). */
  pinDir: string;
  /** Network namespace sk_lookup attaches to ('' or absent = this process's), e.g. /run/netns/x. */
  netnsPath?: string;
  /** Runs `ip`/`ss` in that namespace (tests: `ip netns exec x`); [] = this process's. */
  commandPrefix?: CommandPrefix;
  nodeName: string;
  /** Endpoints on other nodes may be in other LANs (tunnel enabled): only local ones are direct. */
  localEndpointsOnly: boolean;
  /** Processes with this gid are never redirected (the proxy's upstream sockets). */
  bypassGid?: number;
  /** Sockets with this SO_MARK are never redirected. */
  bypassMark?: number;
  /**
   * sk_msg socket-to-socket forwarding between local sockets in the cgroup: socket-LB connections,
   * and both legs of proxied ones (client <-> proxy, the proxy's SO_MARKed upstream <-> backend).
   * Opt-in: whoever splice()s such sockets sees no data (the native plane then forwards read/write).
   */
  sockmap?: boolean;
  /** False: every TCP service goes through the proxy (EM_ACTION_PROXY, no socket-LB). Default true. */
  socketLb?: boolean;
  /** Local /128 routes for the IPv6 VIPs its IPv6 delegate catches (default true). */
  localVipRoutes?: boolean;
  registry?: Registry;
}

/** Counters of the BPF hooks (summed over CPUs), by name. */
export type EbpfCounters = Record<(typeof STAT_NAMES)[number], number>;

/** Socket-LB and proxy redirection in cgroup BPF hooks; see README "eBPF acceleration". */
export class EbpfInterceptor implements Interceptor {
  readonly mode = 'ebpf' as const;
  readonly name = 'ebpf-interceptor';
  private handle: number | undefined;
  private table: ServiceTable = EMPTY_TABLE;
  private targets: readonly InterceptTarget[] = [];
  /** svc key hex -> svc id, kept stable across syncs (and adopted from pinned maps on restart). */
  private readonly ids = new Map<string, number>();
  private nextId = 1;
  /** What the maps hold now: svc key hex -> encoded value hex; svc id -> backend count. */
  private written = new Map<string, string>();
  private backendCounts = new Map<number, number>();
  private rendered: EbpfServiceEntry[] = [];
  private readonly gauge: Gauge | undefined;
  private readonly steering: SkLookupSteering;
  /** The agent's namespace (where 127.0.0.1 is the proxy); read once the programs are loaded. */
  private netnsCookie = 0n;
  /** The rule interceptor IPv6 targets go to (the BPF programs are IPv4 only), chosen at start. */
  private v6Delegate: RuleInterceptor | undefined;
  private v6: Ipv6Interception = { intercepted: false, detail: 'not started' };
  private v6SkipWarned = false;
  /** True once the delegate got a sync (it installs nothing before the first IPv6 target). */
  private v6Synced = false;

  constructor(private readonly opts: EbpfInterceptorOptions) {
    this.steering = new SkLookupSteering({
      log: opts.log,
      binding: opts.binding,
      commandPrefix: opts.commandPrefix ?? [],
    });
    if (opts.registry) {
      const self = this;
      this.gauge = new Gauge({
        name: 'edgemesh_ebpf_events',
        help: 'Events counted by the eBPF hooks since their maps were created (lbConnect: connect() sent straight to an endpoint; proxyConnect: sent to the proxy; ...)',
        labelNames: ['event'],
        registers: [opts.registry],
        collect() {
          for (const [event, v] of Object.entries(self.counters())) this.set({ event }, v);
        },
      });
    }
  }

  async start(): Promise<void> {
    const { binding, log } = this.opts;
    // Not recursive: Node's recursive mkdir spins forever on sysfs (EPERM) when the path is not in a
    // cgroup2 mount, e.g. under `ip netns exec`, which mounts a fresh /sys.
    await mkdir(this.opts.cgroupPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST')
        throw new EdgemeshError(
          ErrorCode.ATTACH,
          `cannot create cgroup ${this.opts.cgroupPath} (is it inside a cgroup v2 mount?): ${err.message}`,
          { cause: err, syscall: 'mkdir', errno: err.errno },
        );
    });
    try {
      this.handle = binding.bpfOpen(
        [...this.opts.objects],
        this.opts.pinDir,
        this.opts.cgroupPath,
        this.opts.netnsPath ?? '',
      );
    } catch (err) {
      throw new EdgemeshError(ErrorCode.ATTACH, `eBPF load/attach failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    this.netnsCookie = binding.bpfNetnsCookie(this.handle);
    binding.bpfMapUpdate(this.handle, MapName.config, encodeU32(0), this.config());
    this.adoptPinnedState();
    log.info(
      { cgroup: this.opts.cgroupPath, pinDir: this.opts.pinDir, programs: binding.bpfPrograms(this.handle) },
      'eBPF programs attached',
    );
    await this.startIpv6();
  }

  /** IPv6 interception state: which rule interceptor serves it and why, or why nothing does. */
  get ipv6(): Ipv6Interception {
    return this.v6;
  }

  /** Chooses and starts the IPv6 delegate; IPv6 trouble never stops the IPv4 programs. */
  private async startIpv6(): Promise<void> {
    const { log } = this.opts;
    this.v6SkipWarned = false;
    this.v6Synced = false;
    try {
      const choice = await chooseIpv6Delegate({
        log,
        commandPrefix: this.opts.commandPrefix ?? [],
        bypassGid: this.opts.bypassGid,
        localVipRoutes: this.opts.localVipRoutes,
      });
      if (!choice.interceptor) {
        this.v6 = { intercepted: false, detail: choice.reason };
        log.warn({ reason: choice.reason }, 'eBPF: IPv6 ClusterIPs will not be intercepted');
        return;
      }
      await choice.interceptor.start();
      this.v6Delegate = choice.interceptor;
      const d = choice.interceptor.ipv6;
      this.v6 = {
        intercepted: d.intercepted,
        detail: d.intercepted ? `${choice.interceptor.mode} (${d.detail}): ${choice.reason}` : d.detail,
      };
      log.info({ ipv6: this.v6.detail }, 'eBPF: IPv6 ClusterIPs handed to a rule interceptor');
    } catch (err) {
      this.v6 = { intercepted: false, detail: errorMessage(err) };
      log.warn({ err: errorMessage(err) }, 'eBPF: IPv6 interception failed to start');
    }
  }

  /** Detaches the programs and removes every pin (a clean shutdown leaves nothing behind). */
  async stop(): Promise<void> {
    if (this.handle === undefined) return;
    const handle = this.handle;
    this.handle = undefined;
    this.opts.binding.bpfClose(handle, true);
    await removeRetiredPins(this.opts.pinDir);
    await this.steering.clear();
    const delegate = this.v6Delegate;
    this.v6Delegate = undefined;
    await delegate?.stop();
    if (this.gauge) this.opts.registry?.removeSingleMetric('edgemesh_ebpf_events');
    this.opts.log.info({ pinDir: this.opts.pinDir }, 'eBPF programs detached and unpinned');
  }

  /** Leaves programs attached and maps pinned (for a restart that must not disturb live flows). */
  async detachKeepPinned(): Promise<void> {
    if (this.handle === undefined) return;
    this.opts.binding.bpfClose(this.handle, false);
    this.handle = undefined;
  }

  /** Records the interception targets (proxy-bound services) and renders. */
  async sync(targets: readonly InterceptTarget[]): Promise<void> {
    this.targets = targets;
    this.render();
    await this.steer();
    await this.syncIpv6(targets);
  }

  /** Hands the IPv6 targets to the delegate (it ignores IPv4 ones); warns once when there is none. */
  private async syncIpv6(targets: readonly InterceptTarget[]): Promise<void> {
    const v6 = targets.filter((t) => familyOf(t.clusterIP) === 6);
    if (this.v6Delegate) {
      // No netfilter state at all until there is an IPv6 ClusterIP (an IPv4-only node keeps a
      // ruleset without edgemesh tables); once synced, every sync goes through (removals too).
      if (v6.length === 0 && !this.v6Synced) return;
      this.v6Synced = true;
      return this.v6Delegate.sync(v6);
    }
    const skipped = v6;
    if (skipped.length === 0 || this.v6SkipWarned) return;
    this.v6SkipWarned = true;
    this.opts.log.warn({ skipped: skipped.length, reason: this.v6.detail }, 'eBPF: skipping IPv6 ClusterIPs');
  }

  /** Records the snapshot for the next sync() (the proxier calls this before sync). */
  observe(table: ServiceTable): void {
    this.table = table;
    this.v6Delegate?.observe(table);
  }

  /** Records the snapshot (socket-LB needs the endpoints) and renders. */
  async apply(table: ServiceTable): Promise<void> {
    this.table = table;
    this.v6Delegate?.observe(table);
    this.render();
    await this.steer();
  }

  /**
   * Drift repair (run on the resync period): re-attaches links someone detached, re-pins removed
   * pins, rewrites service/backend/config map entries someone changed or deleted, and restores VIP
   * routes and proxy listeners sk_lookup needs. True when anything was repaired.
   */
  async repair(): Promise<boolean> {
    const handle = this.handle;
    if (handle === undefined) return false;
    const { binding, log } = this.opts;
    const links = binding.bpfRepair(handle);
    const maps = this.mapsDrifted(handle);
    if (maps) {
      // Forget what we believe is written: the render then rewrites every entry.
      this.written = new Map();
      this.backendCounts = new Map();
      binding.bpfMapUpdate(handle, MapName.config, encodeU32(0), this.config());
      this.render();
    }
    const steering = await this.steering.reconcile(handle);
    const ipv6 = (await this.v6Delegate?.repair()) ?? false;
    if (links.length > 0 || maps || steering || ipv6) {
      log.warn({ links, maps, steering, ipv6 }, 'eBPF state drifted; repaired');
      return true;
    }
    return false;
  }

  /** The entries last written (for /status and tests). */
  entries(): readonly EbpfServiceEntry[] {
    return this.rendered;
  }

  /** Attached programs as `name@attach-type`. */
  programs(): string[] {
    return this.handle === undefined ? [] : this.opts.binding.bpfPrograms(this.handle);
  }

  /** Hook counters summed over CPUs. */
  counters(): EbpfCounters {
    const out = Object.fromEntries(STAT_NAMES.map((n) => [n, 0])) as EbpfCounters;
    if (this.handle === undefined) return out;
    STAT_NAMES.forEach((name, i) => {
      const v = this.opts.binding.bpfMapLookup(this.handle!, MapName.stats, encodeU32(i));
      if (v) out[name] = sumPerCpu(v);
    });
    return out;
  }

  /** Value of edgemesh_cfg_v2[0] for this agent. */
  private config(): Buffer {
    return encodeConfig({
      agentTgid: process.pid,
      bypassMark: this.opts.bypassMark ?? 0,
      bypassGid: this.opts.bypassGid ?? 0,
      flags: this.opts.sockmap ? ConfigFlag.sockmap : 0,
      netnsCookie: this.netnsCookie,
    });
  }

  /** True when the service, backend or config map no longer holds exactly what we wrote. */
  private mapsDrifted(handle: number): boolean {
    const { binding } = this.opts;
    const cfg = binding.bpfMapLookup(handle, MapName.config, encodeU32(0));
    if (!cfg?.equals(this.config())) return true;
    const keys = binding.bpfMapKeys(handle, MapName.svc);
    if (keys.length / Layout.svcKey.size !== this.written.size) return true;
    for (const [hex, value] of this.written) {
      if (binding.bpfMapLookup(handle, MapName.svc, Buffer.from(hex, 'hex'))?.toString('hex') !== value)
        return true;
    }
    let slots = 0;
    for (const n of this.backendCounts.values()) slots += n;
    return binding.bpfMapKeys(handle, MapName.backend).length / Layout.backendKey.size !== slots;
  }

  /**
   * Routes and listeners for sk_lookup: every VIP:port with a proxy port. A VIP that is also an
   * endpoint address gets no local route: the proxy's own connection to it would otherwise be
   * delivered locally (to sk_lookup's steering back into the proxy, or to nothing); without the
   * route it leaves the node for the machine that owns the address.
   */
  private async steer(): Promise<void> {
    if (this.handle === undefined) return;
    const steered = this.rendered.filter((e) => e.proxyPort > 0);
    const endpoints = endpointAddresses(this.table);
    await this.steering.sync(
      this.handle,
      new Set(steered.map((e) => e.clusterIP).filter((ip) => !endpoints.has(ip))),
      new Set(steered.map((e) => e.proxyPort)),
    );
  }

  /** After a restart the pinned maps still hold the old services: keep their ids so slots stay consistent. */
  private adoptPinnedState(): void {
    const { binding } = this.opts;
    const keys = binding.bpfMapKeys(this.handle!, MapName.svc);
    for (let off = 0; off < keys.length; off += Layout.svcKey.size) {
      const key = keys.subarray(off, off + Layout.svcKey.size);
      const value = binding.bpfMapLookup(this.handle!, MapName.svc, key);
      if (!value) continue;
      const v = decodeSvcValue(value);
      const hex = key.toString('hex');
      this.ids.set(hex, v.svcId);
      this.written.set(hex, value.toString('hex'));
      this.backendCounts.set(v.svcId, v.action === Action.lb ? v.count : 0);
      this.nextId = Math.max(this.nextId, v.svcId + 1);
    }
  }

  /**
   * Writes the complete desired state: backends first, then service entries (so a connect never
   * sees a count whose slots are not written yet), then deletes what is gone.
   */
  private render(): void {
    const handle = this.handle;
    if (handle === undefined) return;
    const { binding } = this.opts;
    const desired = renderSocketLb(this.table, this.targets, {
      nodeName: this.opts.nodeName,
      localEndpointsOnly: this.opts.localEndpointsOnly,
      socketLb: this.opts.socketLb,
    });
    const svcKeys: Buffer[] = [];
    const svcValues: Buffer[] = [];
    const beKeys: Buffer[] = [];
    const beValues: Buffer[] = [];
    const rrKeys: Buffer[] = [];
    const wanted = new Map<string, string>();
    const counts = new Map<number, number>();
    for (const e of desired) {
      const key = encodeSvcKey(e.clusterIP, e.port, 'TCP');
      const hex = key.toString('hex');
      let id = this.ids.get(hex);
      if (id === undefined) {
        id = this.nextId++;
        this.ids.set(hex, id);
        rrKeys.push(encodeU32(id));
      }
      const value = encodeSvcValue({
        svcId: id,
        count: e.backends.length,
        action: e.action,
        policy: e.policy,
        proxyIp: e.action === Action.proxy ? '127.0.0.1' : undefined,
        proxyPort: e.proxyPort,
      });
      counts.set(id, e.backends.length);
      e.backends.forEach((b, slot) => {
        beKeys.push(encodeBackendKey(id, slot));
        beValues.push(encodeAddr4(b.ip, b.port));
      });
      wanted.set(hex, value.toString('hex'));
      if (this.written.get(hex) !== value.toString('hex')) {
        svcKeys.push(key);
        svcValues.push(value);
      }
    }
    const staleSvc = [...this.written.keys()].filter((hex) => !wanted.has(hex));
    const staleBe: Buffer[] = [];
    for (const [id, n] of this.backendCounts) {
      for (let slot = counts.get(id) ?? 0; slot < n; slot++) staleBe.push(encodeBackendKey(id, slot));
    }
    const staleIds = staleSvc.map((hex) => this.ids.get(hex)).filter((id): id is number => id !== undefined);
    try {
      if (beKeys.length > 0)
        binding.bpfMapUpdate(handle, MapName.backend, Buffer.concat(beKeys), Buffer.concat(beValues));
      if (rrKeys.length > 0)
        binding.bpfMapUpdate(
          handle,
          MapName.roundRobin,
          Buffer.concat(rrKeys),
          Buffer.concat(rrKeys.map(() => encodeU32(0))),
        );
      if (svcKeys.length > 0)
        binding.bpfMapUpdate(handle, MapName.svc, Buffer.concat(svcKeys), Buffer.concat(svcValues));
      if (staleSvc.length > 0)
        binding.bpfMapDelete(handle, MapName.svc, Buffer.concat(staleSvc.map((h) => Buffer.from(h, 'hex'))));
      if (staleBe.length > 0) binding.bpfMapDelete(handle, MapName.backend, Buffer.concat(staleBe));
      if (staleIds.length > 0)
        binding.bpfMapDelete(handle, MapName.roundRobin, Buffer.concat(staleIds.map((id) => encodeU32(id))));
    } catch (err) {
      // Forget what we believe is written so the next render rewrites everything.
      this.written = new Map();
      this.backendCounts = new Map();
      throw new EdgemeshError(ErrorCode.ATTACH, `eBPF map update failed: ${errorMessage(err)}`, {
        cause: err,
      });
    }
    for (const hex of staleSvc) this.ids.delete(hex);
    this.written = wanted;
    this.backendCounts = counts;
    this.rendered = desired;
    this.opts.log.debug(
      { services: desired.length, changed: svcKeys.length, removed: staleSvc.length },
      'eBPF maps synced',
    );
  }
}

/** Default bpffs folder for edgemesh's pinned maps and links. */
export const DEFAULT_PIN_DIR = '/sys/fs/bpf/edgemesh';
/** Where a cgroup v2 hierarchy is mounted when the host has none. */
export const DEFAULT_CGROUP_FALLBACK = '/run/edgemesh/cgroup2';

/** Joins a configured cgroup (relative to the unified root, or absolute) with the root. */
export function resolveCgroupPath(root: string, configured: string): string {
  if (!configured) return root;
  return path.isAbsolute(configured) ? configured : path.join(root, configured);
}

/**
 * Removes what an earlier edgemesh left in our pin folder under names this version no longer uses
 * (a map renamed when its layout changed, like edgemesh_st_v2 -> _v3, or dropped, like
 * edgemesh_lbt_v1), then the folder. Called after our own pins are gone, at a clean stop only:
 * such a pin holds a map nothing reads any more, but it kept the folder from being removed.
 * Anything not named edgemesh_* is not ours and stays (and so does the folder).
 */
async function removeRetiredPins(pinDir: string): Promise<void> {
  const names = await readdir(pinDir).catch(() => [] as string[]); // usually gone already
  for (const name of names) {
    if (name.startsWith('edgemesh_')) await rm(path.join(pinDir, name), { force: true });
  }
  if (names.length > 0) await rmdir(pinDir).catch(() => {});
}
