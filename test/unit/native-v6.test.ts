// IPv6 in the native plane from TS: the EMR2 routing table (16-byte addresses) agrees with the TS
// twin for IPv6 ClusterIPs, endpoints and clients (ring hash on source IP, endpoint text), refuses
// old-format and malformed tables with a clear error, and a real NativeDataplane serves IPv4 and
// IPv6 clients at once on one port ([::1] and 127.0.0.1 without NAT: the accepted socket's own
// address is the original destination), counting both per service and handing IPv6 connections
// off with their IPv6 destination.
import crypto from 'node:crypto';
import net from 'node:net';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import type { Endpoint } from '../../src/controller/types.ts';
import type { NativeDataplane } from '../../src/dataplane/native/native-dataplane.ts';
import {
  encodeRoutes,
  ipv6Bytes,
  LbPolicyCode,
  type NativeRoute,
  ROUTE_FLAG_TUNNEL,
  ROUTE_FLAGS_OFFSET,
  ROUTE_HEADER_SIZE,
  ROUTE_MAGIC_V1,
  routeTargets,
  ServiceSlots,
  tableRoutes,
} from '../../src/dataplane/native/route-encoder.ts';
import { ErrorCode } from '../../src/errors.ts';
import { ringHashPick } from '../../src/lb/index.ts';
import { mapNativeError, requireNative } from '../../src/native/index.ts';
import { registerLoopbackTaker } from '../../src/util/loopback-takers.ts';
import { canonicalIp } from '../../src/util/net.ts';
import { svc, table } from '../helpers/dns.ts';
import { loopbackPlane, nativeRoute } from '../helpers/native-plane.ts';

const diff = { added: [], updated: [], removed: [], istioChanged: false };
const rand = (n: number) => crypto.randomInt(n);

/** A random IPv6 address in full uncompressed form, with zero runs now and then (so `::` appears). */
function randomV6(): string {
  const words = Array.from({ length: 8 }, () => (rand(3) === 0 ? 0 : rand(0x10000)));
  if (rand(2) === 0) words.fill(0, 2, 2 + rand(5));
  return words.map((w) => w.toString(16).padStart(rand(2) === 0 ? 4 : 1, '0')).join(':');
}

const ep = (ip: string, port: number): Endpoint => ({
  ip,
  port,
  ready: true,
  serving: true,
  terminating: false,
});

/** A route on [fd00::10]:80 unless `fields` say otherwise. */
function route(fields: Partial<NativeRoute> & Pick<NativeRoute, 'endpoints'>): NativeRoute {
  return nativeRoute({ vip: 'fd00::10', ...fields });
}

describe('IPv6 routing table (EMR2)', () => {
  it('encodes IPv6 literals to the bytes the addon decodes, whatever their spelling', () => {
    expect([...ipv6Bytes('fd00::10')]).toEqual([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10]);
    expect([...ipv6Bytes('::ffff:10.1.2.3')].slice(10)).toEqual([255, 255, 10, 1, 2, 3]);
    expect([...ipv6Bytes('1:2:3:4:5:6:7:8')]).toEqual([0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 6, 0, 7, 0, 8]);
    expect(() => ipv6Bytes('10.1.2.3')).toThrow(RangeError);
    const native = requireNative();
    for (let i = 0; i < 200; i++) {
      const vip = randomV6();
      const buf = encodeRoutes(1, [route({ vip, endpoints: [{ ip: '::1', port: 9 }] })]);
      // The addon parses the same text with inet_pton: found means the same 16 bytes.
      expect(native.routePick(buf, vip, 80, '::2'), vip).toBe('::1:9');
      expect(native.routePick(buf, canonicalIp(vip), 80, '::2'), vip).toBe('::1:9');
    }
    // The IPv4-mapped key of an IPv4 route is not an IPv6 route's key.
    const both = encodeRoutes(1, [
      route({ vip: '10.96.0.10', endpoints: [{ ip: '10.1.0.1', port: 1 }] }),
      route({ vip: 'fd00::10', endpoints: [{ ip: 'fd01::1', port: 2 }] }),
    ]);
    expect(native.routePick(both, '10.96.0.10', 80, '1.2.3.4')).toBe('10.1.0.1:1');
    expect(native.routePick(both, 'fd00::10', 80, 'fd02::1')).toBe('fd01::1:2');
    expect(native.routePick(both, '::10.96.0.10', 80, 'fd02::1')).toBeNull();
    expect(native.routePick(both, 'fd00::11', 80, 'fd02::1')).toBeNull();
  });

  it('native and TS pick the same endpoint for IPv6 clients and endpoints (ring hash on source IP)', () => {
    const native = requireNative();
    for (let round = 0; round < 25; round++) {
      const n = 1 + rand(10);
      // Canonical text, as the encoder emits it (ring points hash "ip:port#i").
      const endpoints = Array.from({ length: n }, () => ep(canonicalIp(randomV6()), 1 + rand(65535)));
      const buf = encodeRoutes(1, [route({ policy: LbPolicyCode.SOURCE_IP_HASH, endpoints })]);
      for (let c = 0; c < 20; c++) {
        const raw = randomV6();
        // The TS plane hashes the socket's remoteAddress, which Node prints canonically.
        const ts = ringHashPick(endpoints, canonicalIp(raw))!;
        expect(native.routePick(buf, 'fd00::10', 80, raw)).toBe(`${ts.ip}:${ts.port}`);
      }
    }
    // IPv4 clients keep their picks: the same ring over IPv4 endpoints, the same dotted-quad key.
    const v4 = Array.from({ length: 6 }, (_, i) => ep(`10.1.0.${i + 1}`, 8080));
    const buf4 = encodeRoutes(1, [
      route({ vip: '10.96.0.10', policy: LbPolicyCode.SOURCE_IP_HASH, endpoints: v4 }),
    ]);
    for (let c = 0; c < 50; c++) {
      const client = `${1 + rand(223)}.${rand(256)}.${rand(256)}.${rand(256)}`;
      const ts = ringHashPick(v4, client)!;
      expect(native.routePick(buf4, '10.96.0.10', 80, client)).toBe(`${ts.ip}:${ts.port}`);
    }
  });

  it('originalDst on an IPv6 socket that was not redirected names the IPv6 option', async () => {
    const server = net.createServer();
    await new Promise<void>((r) => server.listen({ port: 0, host: '::1', ipv6Only: true }, () => r()));
    const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
    const client = net.connect({ host: '::1', port: (server.address() as net.AddressInfo).port });
    const socket = await accepted;
    try {
      const fd = (socket as unknown as { _handle: { fd: number } })._handle.fd;
      requireNative().originalDst(fd);
      expect.unreachable();
    } catch (err) {
      // No conntrack entry: ENOENT, from the IPv6 getsockopt (not the IPv4 one).
      expect(err).toMatchObject({
        code: ErrorCode.NATIVE_SYSCALL,
        syscall: 'getsockopt(IP6T_SO_ORIGINAL_DST)',
        errno: 2,
      });
    } finally {
      socket.destroy();
      client.destroy();
      server.close();
    }
  });

  it('refuses an old-format (EMR1) or malformed table with a clear error', () => {
    const native = requireNative();
    const good = encodeRoutes(1, [route({ endpoints: [{ ip: 'fd01::1', port: 80 }] })]);
    const old = Buffer.from(good);
    old.writeUInt32LE(ROUTE_MAGIC_V1, 0);
    expect(() => native.routePick(old, 'fd00::10', 80, '::1')).toThrow(/old format EMR1/);
    try {
      native.routePick(old, 'fd00::10', 80, '::1');
    } catch (err) {
      expect(mapNativeError(err).code).toBe(ErrorCode.NATIVE_USAGE);
    }
    expect(() => native.routePick(good.subarray(0, good.length - 4), 'fd00::10', 80, '::1')).toThrow(
      /truncated/,
    );
    expect(() => native.routePick(good.subarray(0, ROUTE_HEADER_SIZE - 1), 'fd00::10', 80, '::1')).toThrow(
      /header/,
    );
    // Neither address family parses: a usage error, not a miss.
    expect(() => native.routePick(good, 'fd00::zz', 80, '::1')).toThrow(/Usage: routePick/);
  });

  it('gives each ClusterIP of a dual-stack service the endpoints of its family, and targets both', () => {
    const routes = tableRoutes(
      table([
        svc('ns', 'dual', {
          clusterIPs: ['10.96.0.20', 'FD00:0:0::0020'],
          ports: [
            {
              port: 80,
              endpoints: [
                { ip: '10.1.0.2', port: 8080 },
                { ip: 'fd01:0::2', port: 8080 },
                { ip: 'fd01::3', port: 8080, ready: false, serving: false },
              ],
            },
          ],
        }),
      ]),
      new ServiceSlots(4),
    );
    expect(routes.map((r) => [r.vip, r.endpoints.map((e) => `${e.ip}:${e.port}`)])).toEqual([
      ['10.96.0.20', ['10.1.0.2:8080']],
      ['fd00::20', ['fd01::2:8080']],
    ]);
    expect(routes[0]!.slot).toBe(routes[1]!.slot); // one service, one set of counters
    expect(routeTargets(routes, 40001).map((t) => t.clusterIP)).toEqual(['10.96.0.20', 'fd00::20']);
  });

  it('hands an IPv6 ClusterIP whose endpoints sit behind the tunnel to it (loopback tunnel ports serve either family)', () => {
    const unregister = registerLoopbackTaker(41061, () => {});
    try {
      const [r6] = tableRoutes(
        table([
          svc('ns', 'far', {
            clusterIPs: ['fd00::61'],
            ports: [
              {
                port: 80,
                endpoints: [{ ip: '127.0.0.1', port: 41061, tunnelPath: 'direct', nodeName: 'b' }],
              },
            ],
          }),
        ]),
        new ServiceSlots(2),
      );
      expect(r6).toMatchObject({
        vip: 'fd00::61',
        tunnel: true,
        endpoints: [{ ip: '127.0.0.1', port: 41061 }],
      });
      const buf = encodeRoutes(1, [r6!]);
      expect(buf.readUInt8(ROUTE_HEADER_SIZE + ROUTE_FLAGS_OFFSET) & ROUTE_FLAG_TUNNEL).toBe(
        ROUTE_FLAG_TUNNEL,
      );
      // The addon takes the mixed-family route (the plane hands the fd off, it never connects).
      expect(requireNative().routePick(buf, 'fd00::61', 80, 'fd02::9')).toBe('127.0.0.1:41061');
    } finally {
      unregister();
    }
  });
});

describe('NativeDataplane with IPv6 listeners', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function echo(host: string): Promise<number> {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((r) => server.listen({ port: 0, host, ipv6Only: host.includes(':') }, () => r()));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    return (server.address() as net.AddressInfo).port;
  }

  function roundTrip(host: string, port: number, payload: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const s = net.connect({ port, host, allowHalfOpen: true }, () => s.end(payload));
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => {
        s.destroy();
        resolve(Buffer.concat(chunks));
      });
      s.on('error', reject);
    });
  }

  async function plane(extra: Partial<ConstructorParameters<typeof NativeDataplane>[0]> = {}) {
    const dp = loopbackPlane({ listenHost6: '::1', ...extra });
    cleanups.push(() => dp.stop());
    return dp;
  }

  it('serves IPv4 and IPv6 clients at once on one port, byte-exact, counted per service', async () => {
    const b4 = await echo('127.0.0.1');
    const b6 = await echo('::1');
    const dp = await plane();
    await dp.start();
    expect(dp.ipv6Listener).toEqual({ on: true });
    const targets = await dp.apply(
      table([
        svc('ns', 'four', {
          clusterIPs: ['127.0.0.1'],
          ports: [{ port: dp.port, endpoints: [{ ip: '127.0.0.1', port: b4 }] }],
        }),
        svc('ns', 'six', {
          clusterIPs: ['::1'],
          ports: [{ port: dp.port, endpoints: [{ ip: '::1', port: b6 }] }],
        }),
      ]),
      diff,
    );
    expect(targets.map((t) => `${t.clusterIP}:${t.port}->${t.toPort}`).sort()).toEqual(
      [`127.0.0.1:${dp.port}->${dp.port}`, `::1:${dp.port}->${dp.port}`].sort(),
    );
    const payload = crypto.randomBytes(1024 * 1024 + 11);
    const [r4, r6a, r6b] = await Promise.all([
      roundTrip('127.0.0.1', dp.port, payload),
      roundTrip('::1', dp.port, payload),
      roundTrip('::1', dp.port, payload),
    ]);
    expect([r4, r6a, r6b].map((r) => r.equals(payload))).toEqual([true, true, true]);
    await expect.poll(() => dp.counters().active).toBe(0);
    expect(dp.serviceCounters().get('ns/six')).toMatchObject({
      connections: 2,
      active: 0,
      bytes_up: 2 * payload.length,
      bytes_down: 2 * payload.length,
    });
    expect(dp.serviceCounters().get('ns/four')).toMatchObject({ connections: 1, bytes_up: payload.length });
    expect(dp.counters()).toMatchObject({ accepted: 3, listeners_ipv4: 2, listeners_ipv6: 2 });
  });

  it('steers IPv6 connections by CPU too (cpuAffinity), byte-exact whichever worker takes them', async () => {
    const b6 = await echo('::1');
    const dp = await plane({ workers: os.availableParallelism(), cpuAffinity: true });
    await dp.start();
    await dp.apply(
      table([
        svc('ns', 'six', {
          clusterIPs: ['::1'],
          ports: [{ port: dp.port, endpoints: [{ ip: '::1', port: b6 }] }],
        }),
      ]),
      diff,
    );
    const payloads = Array.from({ length: 24 }, (_, i) => crypto.randomBytes(1 + i * 4099));
    const echoed = await Promise.all(payloads.map((p) => roundTrip('::1', dp.port, p)));
    expect(echoed.map((e, i) => e.equals(payloads[i]!))).toEqual(payloads.map(() => true));
    await expect.poll(() => dp.counters().active).toBe(0);
    expect(dp.serviceCounters().get('ns/six')?.connections).toBe(24);
  });

  it('hands IPv6 connections off with their IPv6 original destination', async () => {
    const dp = await plane({ workers: 1 });
    const taken: Array<{ fd: number; clusterIP: string; port: number }> = [];
    dp.enableHandoff({
      ports: () => true,
      take: (fd, clusterIP, port) => taken.push({ fd, clusterIP, port }),
    });
    await dp.start();
    await dp.apply(
      table([svc('ns', 'l7', { clusterIPs: ['::1'], ports: [{ port: dp.port, endpoints: [] }] })]),
      diff,
    );
    const s = net.connect({ host: '::1', port: dp.port });
    cleanups.push(() => void s.destroy());
    const closed = new Promise<void>((r) => s.on('close', () => r()));
    s.on('error', () => {});
    await expect.poll(() => taken.length).toBe(1);
    expect(taken[0]).toMatchObject({ clusterIP: '::1', port: dp.port });
    // The taker owns a live socket: closing it ends the client's connection.
    new net.Socket({ fd: taken[0]!.fd }).destroy();
    await closed;
  });

  it('serves IPv4 only, and routes no IPv6 ClusterIP, when the IPv6 listener is off', async () => {
    const dp = await plane({ workers: 1, listenHost6: false });
    await dp.start();
    expect(dp.ipv6Listener).toEqual({ on: false, reason: 'listenHost6 is false' });
    const targets = await dp.apply(
      table([
        svc('ns', 'dual', { clusterIPs: ['10.96.0.30', 'fd00::30'], ports: [{ port: 80, endpoints: [] }] }),
      ]),
      diff,
    );
    expect(targets.map((t) => t.clusterIP)).toEqual(['10.96.0.30']);
    expect(dp.counters().listeners_ipv6).toBe(0);
    await expect(roundTrip('::1', dp.port, Buffer.from('x'))).rejects.toThrow(/ECONNREFUSED/);
  });
});
