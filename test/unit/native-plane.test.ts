// The native data plane from TS: the routing-table encoder (byte layout), native-vs-TS parity of
// the L4 hash, and a real NativeDataplane (piscina workers blocking in the C++ epoll loop) serving
// loopback connections. Without NAT the accepted socket's own address is the original
// destination, so a service whose ClusterIP:port is 127.0.0.1:<proxy port> routes here.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { parseConfigText } from '../../src/config/load.ts';
import type { Endpoint, ServiceEntry, ServicePortEntry } from '../../src/controller/types.ts';
import { NativeDataplane } from '../../src/dataplane/native/native-dataplane.ts';
import {
  encodeRoutes,
  LbPolicyCode,
  nativePolicy,
  ROUTE_ENTRY_SIZE,
  ROUTE_FLAG_AFFINITY,
  ROUTE_FLAG_HANDOFF,
  ROUTE_FLAGS_OFFSET,
  ROUTE_HEADER_SIZE,
  ServiceSlots,
  tableRoutes,
} from '../../src/dataplane/native/route-encoder.ts';
import { HANDLED_APP_PROTOCOLS, needsL7Policy } from '../../src/dataplane/native/split-dataplane.ts';
import { ErrorCode } from '../../src/errors.ts';
import { murmur3, ringHashPick } from '../../src/lb/index.ts';
import { requireNative } from '../../src/native/index.ts';
import { handlers } from '../../src/protocols/index.ts';
import { repoRoot } from '../helpers/cli.ts';
import { svc, table } from '../helpers/dns.ts';
import { loopbackPlane, nativeRoute, routeToEcho } from '../helpers/native-plane.ts';

const log = pino({ level: 'silent' });
const diff = { added: [], updated: [], removed: [], istioChanged: false };

const route = nativeRoute;

describe('route encoder', () => {
  it('writes the documented little-endian layout', () => {
    const buf = encodeRoutes(7, [
      route({
        vip: '10.96.1.2',
        port: 8080,
        policy: 2,
        affinityTimeoutS: 30,
        slot: 5,
        connectTimeoutMs: 250,
        endpoints: [{ ip: '10.1.2.3', port: 9090 }],
      }),
    ]);
    expect(buf.length).toBe(ROUTE_HEADER_SIZE + ROUTE_ENTRY_SIZE + 20);
    expect(buf.readUInt32LE(0)).toBe(0x32524d45); // "EMR2"
    expect(buf.readUInt32LE(4)).toBe(7);
    expect(buf.readUInt32LE(8)).toBe(1);
    const r = ROUTE_HEADER_SIZE;
    // IPv4 as IPv4-mapped ::ffff:a.b.c.d in 16 bytes.
    expect([...buf.subarray(r, r + 16)]).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 10, 96, 1, 2]);
    expect(buf.readUInt16LE(r + 16)).toBe(8080);
    expect(buf.readUInt8(r + 18)).toBe(2);
    expect(buf.readUInt8(r + ROUTE_FLAGS_OFFSET)).toBe(1); // affinity flag
    expect(buf.readUInt32LE(r + 20)).toBe(30);
    expect(buf.readUInt32LE(r + 24)).toBe(5);
    expect(buf.readUInt32LE(r + 28)).toBe(250);
    expect(buf.readUInt32LE(r + 32)).toBe(1);
    const e = r + ROUTE_ENTRY_SIZE;
    expect([...buf.subarray(e + 10, e + 16)]).toEqual([255, 255, 10, 1, 2, 3]);
    expect(buf.readUInt16LE(e + 16)).toBe(9090);
    // The native decoder accepts exactly this buffer.
    expect(requireNative().routePick(buf, '10.96.1.2', 8080, '1.2.3.4')).toBe('10.1.2.3:9090');
  });

  it('routes proxied TCP ports on each ClusterIP with ready endpoints of its family and the right policy', () => {
    const slots = new ServiceSlots(4);
    const routes = tableRoutes(
      table([
        svc('ns', 'web', {
          clusterIPs: ['10.96.0.10', 'fd00::10'],
          sessionAffinity: { type: 'ClientIP', timeoutSeconds: 0 },
          ports: [
            {
              name: 'http',
              port: 80,
              endpoints: [
                { ip: '10.1.0.2' },
                { ip: '10.1.0.3', ready: false, serving: false },
                { ip: '10.1.0.2' },
              ],
              trafficPolicy: { loadBalancer: { consistentHash: { httpHeaderName: 'x-user' } } },
            },
            { name: 'dns', port: 53, protocol: 'UDP', endpoints: [{ ip: '10.1.0.2' }] },
            { name: 'rnd', port: 81, endpoints: [], trafficPolicy: { loadBalancer: { simple: 'RANDOM' } } },
          ],
        }),
        svc('ns', 'opted-out', { clusterIPs: ['10.96.0.11'], proxied: false, ports: [{ port: 80 }] }),
        svc('ns', 'headless', { clusterIPs: ['10.96.0.12'], headless: true, ports: [{ port: 80 }] }),
        svc('ns', 'dup', {
          clusterIPs: ['10.96.0.10'],
          ports: [{ port: 80, endpoints: [{ ip: '10.9.9.9' }] }],
        }),
      ]),
      slots,
    );
    const web = routes.filter((r) => r.serviceKey === 'ns/web' && r.vip === '10.96.0.10');
    expect(web.map((r) => `${r.vip}:${r.port}`)).toEqual(['10.96.0.10:80', '10.96.0.10:81']);
    // The IPv6 ClusterIP gets its own routes, with IPv6 endpoints only (none here).
    const web6 = routes.filter((r) => r.serviceKey === 'ns/web' && r.vip === 'fd00::10');
    expect(web6.map((r) => [r.port, r.endpoints])).toEqual([
      [80, []],
      [81, []],
    ]);
    expect(web[0]).toMatchObject({
      policy: LbPolicyCode.SOURCE_IP_HASH,
      needsL7: true,
      affinityTimeoutS: 10_800,
      endpoints: [{ ip: '10.1.0.2', port: 8080 }],
    });
    expect(web[1]).toMatchObject({ policy: LbPolicyCode.RANDOM, endpoints: [] });
    const hashed = (consistentHash: object) =>
      nativePolicy({ trafficPolicy: { loadBalancer: { consistentHash } } } as unknown as ServicePortEntry);
    expect(hashed({ useSourceIp: true })).toEqual({ policy: LbPolicyCode.SOURCE_IP_HASH, needsL7: false });
    expect(hashed({ useSourceIp: true, ringHash: { minimumRingSize: 4096 } }).needsL7).toBe(true);
    expect(hashed({ useSourceIp: true, maglev: {} }).needsL7).toBe(true);
    // The duplicate ClusterIP:port of another service is dropped (first wins), other services skipped.
    expect(routes.some((r) => r.serviceKey !== 'ns/web' && r.vip === '10.96.0.10' && r.port === 80)).toBe(
      false,
    );
    expect(routes.some((r) => r.serviceKey === 'ns/opted-out' || r.serviceKey === 'ns/headless')).toBe(false);
    // Service slots are stable and freed when a service goes away.
    expect(slots.assign('ns/web')).toBe(web[0]!.slot);
    tableRoutes(table([]), slots);
    expect([...slots.entries()]).toEqual([]);
  });
});

describe('L7 split', () => {
  it('sends to TS exactly the ports with a TS protocol handler, a request-reading hash, or UDP', () => {
    expect([...HANDLED_APP_PROTOCOLS].sort()).toEqual(Object.keys(handlers).sort());
    const port = (fields: object) => ({ appProtocol: 'tcp', ...fields }) as unknown as ServicePortEntry;
    const s = {} as ServiceEntry;
    expect(needsL7Policy(s, port({ appProtocol: 'http' }))).toBe(true);
    expect(needsL7Policy(s, port({ appProtocol: 'https' }))).toBe(true);
    expect(needsL7Policy(s, port({}))).toBe(false);
    expect(needsL7Policy(s, port({ protocol: 'TCP' }))).toBe(false);
    expect(needsL7Policy(s, port({ protocol: 'UDP' }))).toBe(true);
    const cookie = { loadBalancer: { consistentHash: { httpCookie: { name: 'c' } } } };
    expect(needsL7Policy(s, port({ trafficPolicy: cookie }))).toBe(true);
    // The hand-off flag is bit 1 of the route's flags byte, beside affinity (bit 0).
    const buf = encodeRoutes(1, [route({ endpoints: [], handoff: true, affinityTimeoutS: 5 })]);
    expect(buf.readUInt8(ROUTE_HEADER_SIZE + ROUTE_FLAGS_OFFSET)).toBe(
      ROUTE_FLAG_AFFINITY | ROUTE_FLAG_HANDOFF,
    );
  });
});

describe('native vs TS parity', () => {
  it('murmur3 agrees on random inputs', () => {
    const native = requireNative();
    for (let i = 0; i < 500; i++) {
      const data = crypto.randomBytes(i % 67);
      expect(native.murmur3(data, 0)).toBe(murmur3(data));
    }
  });

  it('source-IP ring hash picks the same endpoint as src/lb ringHashPick', () => {
    const native = requireNative();
    const rand = (n: number) => crypto.randomInt(n);
    for (let round = 0; round < 30; round++) {
      const n = 1 + rand(12);
      const endpoints: Endpoint[] = [];
      for (let i = 0; i < n; i++)
        endpoints.push({
          ip: `10.${rand(256)}.${rand(256)}.${rand(256)}`,
          port: 1 + rand(65535),
          ready: true,
          serving: true,
          terminating: false,
        });
      const buf = encodeRoutes(1, [route({ policy: LbPolicyCode.SOURCE_IP_HASH, endpoints })]);
      for (let c = 0; c < 20; c++) {
        const client = `${1 + rand(223)}.${rand(256)}.${rand(256)}.${rand(256)}`;
        const ts = ringHashPick(endpoints, client)!;
        expect(native.routePick(buf, '10.96.0.10', 80, client)).toBe(`${ts.ip}:${ts.port}`);
      }
    }
  });
});

describe('NativeDataplane on loopback', () => {
  const cleanups: Array<() => Promise<void> | void> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function echoServer(): Promise<net.Server> {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
    return server;
  }

  function roundTrip(port: number, payload: Buffer): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => s.end(payload));
      s.on('data', (d) => chunks.push(d));
      s.on('end', () => {
        s.destroy();
        resolve(Buffer.concat(chunks));
      });
      s.on('error', reject);
    });
  }

  it('serves a service through piscina workers, counts it, and drains on stop', async () => {
    const backend = await echoServer();
    const registry = new Registry();
    const dp = loopbackPlane({ registry });
    await dp.start();
    cleanups.push(() => dp.stop());
    const targets = await routeToEcho(dp, backend);
    expect(targets).toEqual([
      { id: `ns/echo:${dp.port}`, clusterIP: '127.0.0.1', port: dp.port, protocol: 'TCP', toPort: dp.port },
    ]);
    const payload = crypto.randomBytes(2 * 1024 * 1024 + 3);
    const results = await Promise.all(Array.from({ length: 8 }, () => roundTrip(dp.port, payload)));
    for (const r of results) expect(r.equals(payload)).toBe(true);
    await expect.poll(() => dp.counters().active).toBe(0);
    const c = dp.counters();
    expect(c.accepted).toBe(8);
    expect(c.bytes_up).toBe(8 * payload.length);
    expect(c.bytes_down).toBe(8 * payload.length);
    expect(dp.serviceCounters().get('ns/echo')).toMatchObject({
      connections: 8,
      active: 0,
      bytes_down: 8 * payload.length,
    });
    const text = await registry.metrics();
    expect(text).toContain('edgemesh_native_accepted_total 8');
    expect(text).toContain(`edgemesh_native_service_bytes_up_total{service="ns/echo"} ${8 * payload.length}`);

    // A new snapshot without the service: connections are reset and counted as no route.
    await dp.apply(table([], 2), diff);
    await expect(roundTrip(dp.port, Buffer.from('x'))).rejects.toThrow(/ECONNRESET|socket hang up/);
    expect(dp.counters().no_route).toBe(1);

    await dp.stop();
    await expect(roundTrip(dp.port, Buffer.from('x'))).rejects.toThrow(/ECONNREFUSED/);
  });

  it('spinning workers (spinUs) keep round trips, bulk, half-close and counters exact, and stop', async () => {
    const backend = await echoServer();
    const dp = loopbackPlane({ workers: 1, spinUs: 200 });
    await dp.start();
    cleanups.push(() => dp.stop());
    await routeToEcho(dp, backend);
    // Request/response on one connection: every reply comes back whole while the worker spins.
    const s = net.connect({ port: dp.port, host: '127.0.0.1' });
    cleanups.push(() => void s.destroy());
    await new Promise<void>((r, j) => s.once('connect', r).once('error', j));
    let pending = Buffer.alloc(0);
    const replies: Array<(b: Buffer) => void> = [];
    s.on('data', (d) => {
      pending = Buffer.concat([pending, d]);
      if (pending.length >= 1024) {
        const b = pending.subarray(0, 1024);
        pending = pending.subarray(1024);
        replies.shift()?.(b);
      }
    });
    for (let i = 0; i < 200; i++) {
      const req = crypto.randomBytes(1024);
      const got = new Promise<Buffer>((r) => replies.push(r));
      s.write(req);
      expect((await got).equals(req)).toBe(true);
    }
    s.end();
    await new Promise<void>((r) => s.once('close', () => r()));
    const payload = crypto.randomBytes(1024 * 1024 + 7);
    expect((await roundTrip(dp.port, payload)).equals(payload)).toBe(true);
    await expect.poll(() => dp.counters().active).toBe(0);
    expect(dp.counters().bytes_up).toBe(200 * 1024 + payload.length);
    expect(dp.counters().bytes_down).toBe(200 * 1024 + payload.length);
    await dp.stop();
    await expect(roundTrip(dp.port, Buffer.from('x'))).rejects.toThrow(/ECONNREFUSED/);
    // The spin is bounded: over a second is refused at the boundary.
    expect(() => requireNative().planeCreate(0, 1000, 0, true, 1 << 20, 256 << 10, 3, 16, 1_000_001)).toThrow(
      /spinUs/,
    );
  });

  it('pinned workers (cpuAffinity) run one per CPU, keep connections byte-exact, and unpin at stop', async () => {
    // Threads of this process allowed on exactly one CPU (the pinned workers), as CPU numbers.
    const pinned = () =>
      fs
        .readdirSync('/proc/self/task')
        .map((t) => {
          try {
            return /Cpus_allowed_list:\s+(\S+)/.exec(
              fs.readFileSync(`/proc/self/task/${t}/status`, 'utf8'),
            )?.[1];
          } catch {
            return undefined; // thread gone meanwhile
          }
        })
        .filter((l): l is string => l !== undefined && /^\d+$/.test(l))
        .sort();
    const before = pinned();
    const cpus = os.availableParallelism();
    const backend = await echoServer();
    const dp = loopbackPlane({ workers: cpus, cpuAffinity: true });
    await dp.start();
    cleanups.push(() => dp.stop());
    await routeToEcho(dp, backend);
    // One worker thread on each CPU this process may use.
    const allowed = /Cpus_allowed_list:\s+(\S+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]!;
    const expected = allowed.split(',').flatMap((r) => {
      const [a, b] = r.split('-').map(Number);
      return Array.from({ length: (b ?? a!) - a! + 1 }, (_, i) => String(a! + i));
    });
    // (On a single allowed CPU every thread reads as pinned: nothing to tell apart.)
    if (expected.length > 1) expect(pinned()).toEqual([...before, ...expected.slice(0, cpus)].sort());
    // Connections whose SYNs the CBPF steers: every byte through, whichever worker took them.
    const payloads = Array.from({ length: 40 }, (_, i) => crypto.randomBytes(1 + i * 997));
    const echoed = await Promise.all(payloads.map((p) => roundTrip(dp.port, p)));
    expect(echoed.map((e, i) => e.equals(payloads[i]!))).toEqual(payloads.map(() => true));
    const bulk = crypto.randomBytes(2 * 1024 * 1024 + 3);
    expect((await roundTrip(dp.port, bulk)).equals(bulk)).toBe(true);
    await expect.poll(() => dp.counters().active).toBe(0);
    const total = payloads.reduce((n, p) => n + p.length, 0) + bulk.length;
    expect(dp.counters().accepted).toBe(41);
    expect(dp.counters().bytes_up).toBe(total);
    expect(dp.counters().bytes_down).toBe(total);
    await dp.stop();
    await expect(roundTrip(dp.port, Buffer.from('x'))).rejects.toThrow(/ECONNREFUSED/);
    // The threads go back to every CPU (piscina may reuse them).
    expect(pinned()).toEqual(before);
    // Not a boolean: refused at the boundary.
    expect(() =>
      requireNative().planeCreate(0, 1000, 0, true, 1 << 20, 256 << 10, 3, 16, 0, 1 as unknown as boolean),
    ).toThrow(/cpuAffinity/);
    // The config key: a boolean, off unless asked for.
    expect(parseConfigText('', 'a.yaml').modules.edgeProxy.nativeCpuAffinity).toBe(false);
    expect(
      parseConfigText('modules:\n  edgeProxy:\n    nativeCpuAffinity: true\n', 'a.yaml').modules.edgeProxy
        .nativeCpuAffinity,
    ).toBe(true);
    expect(() => parseConfigText('modules:\n  edgeProxy:\n    nativeCpuAffinity: 2\n', 'a.yaml')).toThrow(
      /a\.yaml:3.*nativeCpuAffinity/,
    );
  });

  it('lets the process exit without stop() (workers blocked in native code are woken)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'emnx-'));
    cleanups.push(() => fs.rmSync(dir, { recursive: true, force: true }));
    const script = path.join(dir, 'exit.mts');
    fs.writeFileSync(
      script,
      `import { NativeDataplane } from ${JSON.stringify(path.join(repoRoot, 'src/dataplane/native/native-dataplane.ts'))};
import { silentLogger } from ${JSON.stringify(path.join(repoRoot, 'src/util/log.ts'))};
const dp = new NativeDataplane({ log: silentLogger, proxyPort: 0, listenHost: '127.0.0.1', workers: 2, connectTimeoutMs: 1000, idleTimeoutMs: 0, mark: 0 });
await dp.start();
process.exit(3);
`,
    );
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], {
      cwd: repoRoot,
      timeout: 30_000,
      encoding: 'utf8',
    });
    expect(r.signal, r.stderr).toBeNull();
    expect(r.status, r.stderr).toBe(3);
  });

  it('reports a taken proxy port as EDGEMESH_ERR_LISTEN', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => blocker.close(() => r())));
    const port = (blocker.address() as net.AddressInfo).port;
    const dp = new NativeDataplane({
      log,
      proxyPort: port,
      listenHost: '127.0.0.1',
      workers: 1,
      connectTimeoutMs: 1000,
      idleTimeoutMs: 0,
      mark: 0,
    });
    await expect(dp.start()).rejects.toMatchObject({ code: ErrorCode.LISTEN, syscall: 'bind' });
  });
});
