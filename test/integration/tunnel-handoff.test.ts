// Tunnel endpoints behind the native plane (issue 12): a route whose endpoints are the agent's own
// tunnel ports is not spliced into a second loopback connection; the plane picks the endpoint and
// hands the client socket itself to the tunnel, whose sealed pump reads the client directly. In
// process and without NAT (the ClusterIP is a 127.0.0.x address on the plane's own port, so the
// accepted socket's local address is its "original destination"): real native plane, real relay
// and agent tunnels, real sockets. Proves byte-exact transfers on the hand-off path (sealed, and
// framed when sealedData is off), the old loopback path when no hand-off consumer is there, and no
// fd left behind.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceTable } from '../../src/controller/types.ts';
import { NativeDataplane } from '../../src/dataplane/native/native-dataplane.ts';
import { SplitDataplane } from '../../src/dataplane/native/split-dataplane.ts';
import { TsDataplane } from '../../src/dataplane/ts/ts-dataplane.ts';
import { loadNative } from '../../src/native/index.ts';
import { silentLogger } from '../../src/util/log.ts';
import { hasLoopbackTaker } from '../../src/util/loopback-takers.ts';
import { eventually } from '../helpers/eventually.ts';
import { ep, exchange, localPort, metric, TunnelFixture, table } from '../helpers/tunnel-fixture.ts';

const skip = !loadNative().binding;
const MiB = 1 << 20;
const openFds = () => fs.readdirSync('/proc/self/fd').length;

function nativePlane(): NativeDataplane {
  return new NativeDataplane({
    log: silentLogger,
    proxyPort: 0,
    workers: 1,
    connectTimeoutMs: 1000,
    idleTimeoutMs: 0,
    mark: 0,
  });
}

/** `snap` with its one service on `vip`:`port` (the plane's own port: no NAT needed). */
function onPlane(snap: ServiceTable, vip: string, port: number): ServiceTable {
  const svc = snap.services.get('default/echo')!;
  const ports = svc.ports.map((p) => ({ ...p, port }));
  return { ...snap, services: new Map([[svc.key, { ...svc, clusterIPs: [vip], ports }]]) };
}

const noDiff = { added: [], updated: [], removed: [], istioChanged: false };

describe.skipIf(skip)('native plane → tunnel: client fd handed to the tunnel (no loopback hop)', () => {
  let fx: TunnelFixture;
  let echoPort = 0;
  let a: Awaited<ReturnType<TunnelFixture['agent']>>;
  let rewritten: ServiceTable;
  let relays: Array<{ name: string; addr: string }>;
  const planes: Array<{ stop(): Promise<void> }> = [];

  beforeAll(async () => {
    fx = new TunnelFixture();
    const echo = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    fx.onStop(() => new Promise<void>((r) => echo.close(() => r())));
    echoPort = (echo.address() as net.AddressInfo).port;
    const relay = await fx.relay('relay-h');
    relays = [{ name: 'relay-h', addr: relay.addr }];
    const b = await fx.agent('node-hb', relays, { advertise: ['127.0.0.1:1'] });
    a = await fx.agent('node-ha', relays, { advertise: ['127.0.0.1:1'] });
    const snap = table([ep(echoPort, 'node-hb')]);
    await b.t.applyTable(snap);
    rewritten = await a.t.applyTable(snap);
    await eventually(async () => a.t.pathTo('node-hb') === 'relay' && b.t.status().relays[0]!.connected);
    // PEERS must have told a that b takes sealed streams (straight to the tunnel port, no plane).
    await eventually(async () => {
      await exchange(localPort(rewritten), 'probe');
      return (await metric(a.registry, 'edgemesh_tunnel_sealed_streams_total', { path: 'relay' })) > 0;
    });
  });

  afterAll(async () => {
    for (const p of planes.reverse()) await p.stop().catch(() => {});
    await fx?.stopAll();
  });

  it('the route is marked tunnel and the tunnel port has a taker', () => {
    expect(hasLoopbackTaker(localPort(rewritten))).toBe(true);
  });

  it('16 MiB echoed byte-exact through the hand-off, sealed over the relay; no upstream connect, no fd left', async () => {
    const native = nativePlane();
    const ts = new TsDataplane({
      log: silentLogger,
      workers: 1,
      portRange: '42200-42299',
      connectTimeoutMs: 1000,
      idleTimeoutMs: 0,
      nodeName: 'node-ha',
      listenHost: '127.0.0.1',
    });
    const dp = new SplitDataplane(native, ts);
    planes.push(dp);
    await dp.start();
    const vip = '127.0.0.62';
    await dp.apply(onPlane(rewritten, vip, native.port), noDiff);
    const route = native.currentRoutes.find((r) => r.vip === vip);
    expect(route?.tunnel).toBe(true);

    // Starting the plane's workers can stall this loaded event loop past the session's ping timeout.
    await eventually(async () => a.t.status().relays[0]!.connected);
    const sealedOut = () => metric(a.registry, 'edgemesh_tunnel_sealed_streams_total', { side: 'out' });
    const before = { sealed: await sealedOut(), plane: dp.counters() };
    const payload = crypto.randomBytes(16 * MiB);
    expect((await exchange(native.port, payload, vip)).equals(payload)).toBe(true);
    // Half-close both ways with a reply after the FIN still works (the echo ends after our end).
    expect((await exchange(native.port, 'tail', vip)).toString()).toBe('tail');
    const after = dp.counters();
    expect((after.handed_off ?? 0) - (before.plane.handed_off ?? 0)).toBe(2);
    // The plane connected nothing itself: the tunnel's pump read the client socket.
    expect(after.established ?? 0).toBe(before.plane.established ?? 0);
    expect(await sealedOut()).toBe(before.sealed + 2);

    // No descriptor is left behind by hand-offs (data pools may refill meanwhile: settle first).
    const base = openFds();
    for (let i = 0; i < 20; i++) expect((await exchange(native.port, `n${i}`, vip)).toString()).toBe(`n${i}`);
    await eventually(async () => openFds() <= base, 5000);
  });

  it('without a hand-off consumer the plane still connects to the tunnel port (the loopback path)', async () => {
    const native = nativePlane();
    planes.push(native);
    await native.start();
    const vip = '127.0.0.63';
    await native.apply(onPlane(rewritten, vip, native.port), noDiff);
    expect(native.currentRoutes.find((r) => r.vip === vip)?.tunnel).toBe(true);
    const payload = crypto.randomBytes(4 * MiB);
    expect((await exchange(native.port, payload, vip)).equals(payload)).toBe(true);
    const c = native.counters();
    expect(c.handed_off ?? 0).toBe(0);
    expect(c.established ?? 0).toBeGreaterThanOrEqual(1);
  });

  it('framed streams (sealedData off) take the handed-off socket too', async () => {
    const fb = await fx.agent('node-fb', relays, { advertise: ['127.0.0.1:1'] });
    const fa = await fx.agent('node-fa', relays, {
      advertise: ['127.0.0.1:1'],
      files: { sealedData: false },
    });
    const snap = table([ep(echoPort, 'node-fb')]);
    await fb.t.applyTable(snap);
    const rw = await fa.t.applyTable(snap);
    await eventually(async () => fa.t.pathTo('node-fb') === 'relay' && fb.t.status().relays[0]!.connected);
    const native = nativePlane();
    const dp = new SplitDataplane(
      native,
      new TsDataplane({
        log: silentLogger,
        workers: 1,
        portRange: '42300-42399',
        connectTimeoutMs: 1000,
        idleTimeoutMs: 0,
        nodeName: 'node-fa',
        listenHost: '127.0.0.1',
      }),
    );
    planes.push(dp);
    await dp.start();
    const vip = '127.0.0.64';
    await dp.apply(onPlane(rw, vip, native.port), noDiff);
    const payload = crypto.randomBytes(4 * MiB);
    expect((await exchange(native.port, payload, vip)).equals(payload)).toBe(true);
    expect(dp.counters().handed_off).toBe(1);
    expect(await metric(fa.registry, 'edgemesh_tunnel_streams_total', { path: 'relay' })).toBe(1);
    expect(await metric(fa.registry, 'edgemesh_tunnel_sealed_streams_total')).toBe(0);
  });
});
