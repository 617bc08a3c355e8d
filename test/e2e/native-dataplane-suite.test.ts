// Runs the shared data-plane suite against the native plane (L4) split with the TS plane (ports
// whose protocol handler needs L7), in-process and without NAT: the adapter moves each ClusterIP
// a.b.c.d to 127.b.c.d on the plane's port, so a client connecting there reaches the plane with
// the socket's own address as the "original destination" — the same lookup REDIRECT feeds via
// SO_ORIGINAL_DST (the netns e2e in native-dataplane.test.ts covers real REDIRECT). Runs twice:
// L7 connections handed from the native plane to the TS plane (fd hand-off, the default) and
// redirected to TS listener ports by rule (the fallback). IPv6 has one loopback address: the
// IPv6 ClusterIP a client is about to reach becomes [::1]:<plane port> (the table is re-applied
// for it before the connect; every IPv6 ClusterIP still gets its target).
import net from 'node:net';
import type { ServiceTable, ServiceTableDiff } from '../../src/controller/types.ts';
import type { Dataplane } from '../../src/dataplane/dataplane.ts';
import { type HandoffTarget, NativeDataplane } from '../../src/dataplane/native/native-dataplane.ts';
import { type L7Path, SplitDataplane } from '../../src/dataplane/native/split-dataplane.ts';
import { TsDataplane } from '../../src/dataplane/ts/ts-dataplane.ts';
import type { InterceptTarget } from '../../src/proxier/interceptor.ts';
import { silentLogger } from '../../src/util/log.ts';
import { dataplaneSuite } from './dataplane-suite.ts';

const loopbackOf = (ip: string) => `127.${ip.split('.').slice(1).join('.')}`;

/** Serves ClusterIP:port at 127.x.y.z:<plane port> (one port per service, as the suite uses). */
class LoopbackVips implements Dataplane {
  readonly name = 'dataplane';
  readonly mode = 'native' as const;
  /** 127.x.y.z (and ::1) → the ClusterIP and port it stands for. */
  private original = new Map<string, { ip: string; port: number }>();
  private last: { table: ServiceTable; diff: ServiceTableDiff } | undefined;
  /** The IPv6 ClusterIP ::1 stands for now. */
  private active6: string | undefined;
  constructor(readonly plane: NativeDataplane) {}
  /** Makes ::1 stand for `clusterIP` (synchronously: NativeDataplane.apply swaps the table before its first await). */
  select6(clusterIP: string): void {
    if (this.active6 === clusterIP || !this.last) return;
    this.active6 = clusterIP;
    void this.render(this.last.table, this.last.diff);
  }
  /** Hand-offs arrive with the loopback stand-in as original destination: report the ClusterIP. */
  enableHandoff(target: HandoffTarget): void {
    this.plane.enableHandoff({
      ports: target.ports,
      take: (fd, ip, port) => {
        const o = this.original.get(ip);
        target.take(fd, o?.ip ?? ip, o?.port ?? port);
      },
    });
  }
  start() {
    return this.plane.start();
  }
  stop() {
    return this.plane.stop();
  }
  counters() {
    return this.plane.counters();
  }
  async apply(table: ServiceTable, diff: ServiceTableDiff): Promise<readonly InterceptTarget[]> {
    this.last = { table, diff };
    const v6 = [...table.services.values()].flatMap((svc) =>
      svc.clusterIPs.filter((ip) => net.isIPv6(ip)).map((ip) => ({ svc, ip })),
    );
    if (!v6.some((v) => v.ip === this.active6)) this.active6 = v6[0]?.ip;
    const targets = await this.render(table, diff);
    // Every IPv6 ClusterIP has a target (only the active one is in the plane's table right now).
    const six = v6
      .filter((v) => v.ip !== this.active6)
      .map(({ svc, ip }) => ({
        id: `${svc.key}:${svc.ports[0]!.name || svc.ports[0]!.port}`,
        clusterIP: ip,
        port: svc.ports[0]!.port,
        protocol: 'TCP' as const,
        toPort: this.plane.port,
      }));
    return [...targets, ...six];
  }
  private async render(table: ServiceTable, diff: ServiceTableDiff): Promise<readonly InterceptTarget[]> {
    const original = new Map<string, { ip: string; port: number }>();
    const services = new Map(
      [...table.services].map(([key, svc]) => {
        const port = svc.ports[0]!.port;
        const clusterIPs: string[] = [];
        for (const ip of svc.clusterIPs) {
          const stand = net.isIPv6(ip) ? (ip === this.active6 ? '::1' : undefined) : loopbackOf(ip);
          if (!stand) continue;
          original.set(stand, { ip, port });
          clusterIPs.push(stand);
        }
        return [key, { ...svc, clusterIPs, ports: svc.ports.map((p) => ({ ...p, port: this.plane.port })) }];
      }),
    );
    this.original = original;
    const targets = await this.plane.apply({ ...table, services }, diff);
    return targets.map((t) => ({
      ...t,
      clusterIP: original.get(t.clusterIP)!.ip,
      port: original.get(t.clusterIP)!.port,
    }));
  }
}

for (const path of ['handoff', 'rule'] as L7Path[]) {
  let nativePort = 0;
  let vips: LoopbackVips | undefined;
  dataplaneSuite(`native (L4) + ts (L7 handlers, ${path === 'handoff' ? 'fd hand-off' : 'by rule'})`, {
    make: (o) => {
      const plane = new NativeDataplane({
        log: silentLogger,
        proxyPort: 0,
        listenHost: '0.0.0.0',
        workers: 2,
        connectTimeoutMs: o.connectTimeoutMs,
        idleTimeoutMs: o.idleTimeoutMs,
        mark: 0,
        drainTimeoutMs: 500,
      });
      const l4 = new LoopbackVips(plane);
      vips = l4;
      const startL4 = l4.start.bind(l4);
      l4.start = async () => {
        await startL4();
        nativePort = plane.port;
      };
      const l7 = new TsDataplane({
        log: silentLogger,
        workers: 1,
        portRange: path === 'handoff' ? '39300-39349' : '39350-39399',
        listenHost: '127.0.0.1',
        nodeName: 'suite-node',
        ...o,
      });
      const split = new SplitDataplane(l4, l7, (_svc, port) => port.appProtocol === 'http', path);
      if (split.l7Path !== path) throw new Error(`asked for the ${path} path, got ${split.l7Path}`);
      return split;
    },
    handoff: path === 'handoff',
    connect: (t) => {
      if (t.toPort !== nativePort)
        return net.connect({ host: '127.0.0.1', port: t.toPort, allowHalfOpen: true });
      if (!net.isIPv6(t.clusterIP))
        return net.connect({ host: loopbackOf(t.clusterIP), port: nativePort, allowHalfOpen: true });
      vips!.select6(t.clusterIP);
      return net.connect({ host: '::1', port: nativePort, allowHalfOpen: true });
    },
  });
}
