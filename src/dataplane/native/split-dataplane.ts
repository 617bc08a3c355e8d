// The native plane for L4 ports and the TS plane for the ports that need L7 (header/cookie/query
// hashing, protocol handlers): one Dataplane to the proxier. The TS plane starts only when the
// first such port appears, so a cluster without L7 policies runs native only.
//
// Two ways to get an L7 connection to TS:
//  - 'handoff' (the default when both planes can): every port is redirected to the native plane;
//    a worker accepts, reads the original destination, and hands the fd to the TS listener that
//    serves that ClusterIP:port, which runs the protocol handler on it. No interception rule
//    points at a TS port.
//  - 'rule' (fallback): L7 ports are redirected to their TS listener ports by the interceptor.
import fs from 'node:fs';
import type {
  ServiceEntry,
  ServicePortEntry,
  ServiceTable,
  ServiceTableDiff,
} from '../../controller/types.ts';
import type { InterceptTarget } from '../../proxier/interceptor.ts';
import { takeLoopbackFd } from '../../util/loopback-takers.ts';
import { canonicalIp } from '../../util/net.ts';
import type { Dataplane } from '../dataplane.ts';
import type { HandoffTarget } from './native-dataplane.ts';
import { nativePolicy } from './route-encoder.ts';

/** Whether a service port must go through the TS plane. */
export type NeedsL7 = (service: ServiceEntry, port: ServicePortEntry) => boolean;

/** appProtocols the TS plane runs a protocol handler for (src/protocols/index.ts `handlers`; a unit test keeps them equal). */
export const HANDLED_APP_PROTOCOLS: ReadonlySet<string> = new Set(['http', 'websocket', 'https']);

/**
 * Default split: ports with a TS protocol handler (HTTP routing, retries, websocket, TLS
 * passthrough: what the TS plane does for them), ports whose consistentHash reads the request
 * (header, cookie, query) or is not the default ring, and UDP ports (the native plane forwards TCP
 * only; the TS plane's UDP flows serve them).
 */
export const needsL7Policy: NeedsL7 = (_svc, port) =>
  port.protocol === 'UDP' || HANDLED_APP_PROTOCOLS.has(port.appProtocol) || nativePolicy(port).needsL7;

/** A plane that can give accepted connections away (NativeDataplane). */
export interface HandoffSource extends Dataplane {
  enableHandoff(target: HandoffTarget): void;
}

/** A plane that can serve an accepted socket on one of its listener ports (TsDataplane). */
export interface SocketAdopter extends Dataplane {
  /** Serves `fd` as a connection accepted on `listenPort`; false (fd untouched) if no such listener. */
  adopt(listenPort: number, fd: number): boolean;
}

/** A plane that forwards tunnels TS gives back (NativeDataplane). */
export interface SpliceBackSource extends Dataplane {
  readonly nativePlaneId: number;
}

/** A plane whose byte tunnels can go back to a native plane (TsDataplane). */
export interface SpliceBackTarget extends Dataplane {
  spliceBackTo(planeId: number): void;
}

/** How L7 connections reach the TS plane. */
export type L7Path = 'handoff' | 'rule';

function canHandoff(l4: Dataplane, l7: Dataplane): boolean {
  return (
    typeof (l4 as Partial<HandoffSource>).enableHandoff === 'function' &&
    typeof (l7 as Partial<SocketAdopter>).adopt === 'function'
  );
}

/** Native L4 + TS L7 behind one Dataplane (mode 'native'). */
export class SplitDataplane implements Dataplane {
  readonly name = 'dataplane';
  readonly mode = 'native' as const;
  /** The path in use: 'handoff' when both planes support it and it was not refused. */
  readonly l7Path: L7Path;
  private l7Started = false;
  /** `clusterIP:port` → TS listener port, from the TS plane's last targets. */
  private l7Ports = new Map<string, number>();

  constructor(
    private readonly l4: Dataplane,
    private readonly l7: Dataplane,
    private readonly needsL7: NeedsL7 = needsL7Policy,
    path: L7Path = 'handoff',
    /** Whether byte tunnels go back to the native plane after the L7 decision. */
    private readonly spliceBack = true,
  ) {
    this.l7Path = path === 'handoff' && canHandoff(l4, l7) ? 'handoff' : 'rule';
    if (this.l7Path === 'handoff') {
      (l4 as HandoffSource).enableHandoff({
        ports: needsL7,
        take: (fd, clusterIP, port) => this.take(fd, clusterIP, port),
      });
    }
  }

  async start(): Promise<void> {
    await this.l4.start();
  }

  async apply(table: ServiceTable, diff: ServiceTableDiff): Promise<readonly InterceptTarget[]> {
    const l4 = new Map<string, ServiceEntry>();
    const l7 = new Map<string, ServiceEntry>();
    for (const [key, svc] of table.services) {
      const l7Ports = svc.ports.filter((p) => this.needsL7(svc, p));
      const l4Ports = svc.ports.filter((p) => !l7Ports.includes(p));
      if (l4Ports.length > 0)
        l4.set(key, l4Ports.length === svc.ports.length ? svc : { ...svc, ports: l4Ports });
      if (l7Ports.length > 0) l7.set(key, { ...svc, ports: l7Ports });
    }
    if (l7.size > 0 && !this.l7Started) {
      // The way back: tunnels the TS handlers open after their decision return to the native splice.
      const planeId = (this.l4 as Partial<SpliceBackSource>).nativePlaneId ?? 0;
      if (this.spliceBack && planeId > 0) (this.l7 as Partial<SpliceBackTarget>).spliceBackTo?.(planeId);
      await this.l7.start();
      this.l7Started = true;
    }
    // TS listeners first: a hand-off arriving right after the native table swap finds its port.
    const l7Targets = this.l7Started ? await this.l7.apply({ ...table, services: l7 }, diff) : [];
    if (this.l7Path === 'handoff') {
      // Keyed by the canonical text the native plane hands off with (IPv6 in RFC 5952 form).
      this.l7Ports = new Map(l7Targets.map((t) => [`${canonicalIp(t.clusterIP)}:${t.port}`, t.toPort]));
      // The native plane routes every TCP port (L7 ones marked for hand-off). Datagrams cannot be
      // handed off, so UDP ports keep their redirect to the TS plane's UDP listener.
      const udpTargets = l7Targets.filter((t) => t.protocol === 'UDP');
      return [...(await this.l4.apply(table, diff)), ...udpTargets];
    }
    return [...(await this.l4.apply({ ...table, services: l4 }, diff)), ...l7Targets];
  }

  counters(): Record<string, number> {
    const out: Record<string, number> = { ...this.l4.counters() };
    if (this.l7Started) {
      for (const [k, v] of Object.entries(this.l7.counters())) out[k] = (out[k] ?? 0) + v;
    }
    return out;
  }

  async stop(): Promise<void> {
    try {
      await this.l4.stop();
    } finally {
      if (this.l7Started) await this.l7.stop();
      this.l7Started = false;
    }
  }

  /**
   * A handed-off connection: to the in-process owner of its loopback destination (a tunnel port,
   * src/util/loopback-takers.ts), else to the TS listener serving its original destination, else closed.
   */
  private take(fd: number, clusterIP: string, port: number): void {
    if (clusterIP === '127.0.0.1' && takeLoopbackFd(port, fd)) return;
    const listenPort = this.l7Ports.get(`${clusterIP}:${port}`);
    if (listenPort !== undefined && this.l7Started && (this.l7 as SocketAdopter).adopt(listenPort, fd))
      return;
    // No TS listener (the port stopped needing L7 a moment ago, or UDP-only): the client gets a
    // close rather than a hang; its next connection follows the new table.
    fs.closeSync(fd);
  }
}
