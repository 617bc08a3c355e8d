// The way back (issue 6): websocket and https passthrough connections are handed from the native
// plane to the TS handlers, and once the handler has connected upstream the pair returns to the
// native splice. In-process and without NAT: each service's ClusterIP is a 127.0.0.x address on the
// plane's own port, so the accepted socket's local address is its "original destination".
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { NativeDataplane } from '../../src/dataplane/native/native-dataplane.ts';
import { SplitDataplane } from '../../src/dataplane/native/split-dataplane.ts';
import { TsDataplane } from '../../src/dataplane/ts/ts-dataplane.ts';
import { loadNative } from '../../src/native/index.ts';
import { silentLogger } from '../../src/util/log.ts';
import { makeCerts } from '../helpers/certs.ts';
import { type HttpBackend, startHttpBackend } from '../helpers/http-backends.ts';
import { TableBuilder, testService } from './dataplane-suite.ts';

const skip = !loadNative().binding;

const openFds = () => fs.readdirSync('/proc/self/fd').length;

/** One-worker native and TS planes for a SplitDataplane; the TS plane listens on `portRange`. */
function newPlanes(portRange: string): { native: NativeDataplane; ts: TsDataplane } {
  const native = new NativeDataplane({
    log: silentLogger,
    proxyPort: 0,
    workers: 1,
    connectTimeoutMs: 1000,
    idleTimeoutMs: 0,
    mark: 0,
  });
  const ts = new TsDataplane({
    log: silentLogger,
    workers: 1,
    portRange,
    connectTimeoutMs: 1000,
    idleTimeoutMs: 0,
    nodeName: 'node-a',
    listenHost: '127.0.0.1',
  });
  return { native, ts };
}

function wsOpen(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { maxPayload: 256 << 20 });
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function wsClose(ws: WebSocket): Promise<void> {
  return new Promise((resolve) => {
    ws.once('close', () => resolve());
    ws.close();
  });
}

/** Sends `total` bytes in 1 MiB binary messages and returns the sha256 of what came back. */
async function wsEchoDigest(ws: WebSocket, total: number): Promise<{ sent: string; got: string }> {
  const sent = crypto.createHash('sha256');
  const got = crypto.createHash('sha256');
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    ws.on('message', (data: Buffer) => {
      got.update(data);
      received += data.length;
      if (received >= total) resolve();
    });
    ws.once('close', () => reject(new Error(`closed after ${received} of ${total} bytes`)));
  });
  const chunk = 1 << 20;
  for (let off = 0; off < total; off += chunk) {
    const b = crypto.randomBytes(Math.min(chunk, total - off));
    sent.update(b);
    // Bounded buffering on the client: wait while a few MiB are still queued.
    while (ws.bufferedAmount > 8 << 20) await new Promise((r) => setTimeout(r, 2));
    ws.send(b, { binary: true });
  }
  await done;
  return { sent: sent.digest('hex'), got: got.digest('hex') };
}

describe.skipIf(skip)('native plane: L7 tunnels go back to the native splice', () => {
  let native: NativeDataplane;
  let dp: SplitDataplane;
  let backend: HttpBackend;
  let tlsServer: tls.Server;
  let tlsPort = 0;
  let dir = '';
  const tables = new TableBuilder();

  beforeAll(async () => {
    backend = await startHttpBackend('ws-0', '127.0.0.1');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-spliceback-'));
    makeCerts(dir, 'spliceback');
    tlsServer = tls.createServer(
      {
        cert: fs.readFileSync(path.join(dir, 'server.crt')),
        key: fs.readFileSync(path.join(dir, 'server.key')),
      },
      (s) => {
        s.on('error', () => {});
        s.pipe(s); // TLS echo
      },
    );
    await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', () => r()));
    tlsPort = (tlsServer.address() as net.AddressInfo).port;
    const planes = newPlanes('42100-42199');
    native = planes.native;
    const ts = planes.ts;
    dp = new SplitDataplane(native, ts);
    await dp.start();
    await dp.apply(
      ...tables.next([
        testService('ws', '127.0.0.41', native.port, [{ ip: '127.0.0.1', port: backend.port }], 'websocket'),
        testService('tls', '127.0.0.42', native.port, [{ ip: '127.0.0.1', port: tlsPort }], 'https'),
        testService('web', '127.0.0.43', native.port, [{ ip: '127.0.0.1', port: backend.port }], 'http'),
      ]),
    );
  }, 30_000);

  afterAll(async () => {
    await dp?.stop();
    await backend?.kill();
    await new Promise<void>((r) => (tlsServer ? tlsServer.close(() => r()) : r()));
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('websocket: the upgrade goes through TS, then 64 MiB over the native splice, byte-exact', async () => {
    const before = dp.counters();
    const ws = await wsOpen(`ws://127.0.0.41:${native.port}/`);
    const { sent, got } = await wsEchoDigest(ws, 64 << 20);
    expect(got).toBe(sent);
    await wsClose(ws);
    const after = dp.counters();
    expect(after.handed_off! - before.handed_off!).toBe(1);
    expect(after.spliced_back! - before.spliced_back!).toBe(1);
    expect(after.handed_back! - before.handed_back!).toBe(1);
    expect(after.hand_back_fallbacks).toBe(before.hand_back_fallbacks);
    // The 64 MiB went through the native plane's counters, both ways.
    expect(after.bytes_up! - before.bytes_up!).toBeGreaterThanOrEqual(64 << 20);
    expect(after.bytes_down! - before.bytes_down!).toBeGreaterThanOrEqual(64 << 20);
  }, 60_000);

  it('http port: plain requests stay in the HTTP engine, a websocket upgrade goes back to native', async () => {
    const before = dp.counters().spliced_back!;
    const res = await fetch(`http://127.0.0.43:${native.port}/`);
    expect(await res.text()).toBe('ws-0\n');
    expect(dp.counters().spliced_back).toBe(before);
    const ws = await wsOpen(`ws://127.0.0.43:${native.port}/chat`);
    const { sent, got } = await wsEchoDigest(ws, 4 << 20);
    expect(got).toBe(sent);
    await wsClose(ws);
    expect(dp.counters().spliced_back! - before).toBe(1);
  }, 30_000);

  it('https passthrough: after the ClientHello the TLS session runs over the native splice', async () => {
    const before = dp.counters().spliced_back!;
    const payload = crypto.randomBytes(1 << 20);
    const echoed = await new Promise<Buffer>((resolve, reject) => {
      const s = tls.connect(
        { host: '127.0.0.42', port: native.port, servername: 'svc.example', rejectUnauthorized: false },
        () => {
          s.write(payload);
        },
      );
      const parts: Buffer[] = [];
      let n = 0;
      s.on('data', (d: Buffer) => {
        parts.push(d);
        n += d.length;
        if (n >= payload.length) {
          s.end();
          resolve(Buffer.concat(parts));
        }
      });
      s.on('error', reject);
    });
    expect(echoed.equals(payload)).toBe(true);
    expect(dp.counters().spliced_back! - before).toBe(1);
  }, 30_000);

  it('plain tcp port handed to TS for its Maglev hash: the forwarder goes back to native too', async () => {
    const echo = net.createServer({ allowHalfOpen: true }, (c) => {
      c.on('error', () => {});
      c.pipe(c);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    try {
      const svc = testService('mg', '127.0.0.47', native.port, [
        { ip: '127.0.0.1', port: (echo.address() as net.AddressInfo).port },
      ]);
      svc.ports[0]!.trafficPolicy = { loadBalancer: { consistentHash: { useSourceIp: true, maglev: {} } } };
      await dp.apply(
        ...tables.next([
          testService(
            'ws',
            '127.0.0.41',
            native.port,
            [{ ip: '127.0.0.1', port: backend.port }],
            'websocket',
          ),
          testService('tls', '127.0.0.42', native.port, [{ ip: '127.0.0.1', port: tlsPort }], 'https'),
          testService('web', '127.0.0.43', native.port, [{ ip: '127.0.0.1', port: backend.port }], 'http'),
          svc,
        ]),
      );
      const before = dp.counters();
      const payload = crypto.randomBytes(8 << 20);
      const got = await new Promise<Buffer>((resolve, reject) => {
        const c = net.connect({ host: '127.0.0.47', port: native.port, allowHalfOpen: true }, () =>
          c.end(payload),
        );
        const parts: Buffer[] = [];
        c.on('data', (d: Buffer) => parts.push(d));
        c.on('end', () => resolve(Buffer.concat(parts)));
        c.on('error', reject);
      });
      expect(got.equals(payload)).toBe(true);
      const after = dp.counters();
      expect(after.handed_off! - before.handed_off!).toBe(1);
      expect(after.spliced_back! - before.spliced_back!).toBe(1);
    } finally {
      await new Promise<void>((r) => echo.close(() => r()));
    }
  }, 30_000);

  it('releases every fd: 40 websocket connections later the count is back to the baseline', async () => {
    // Settle first: pooled pipes are trimmed after an idle second.
    const settle = async (target?: number) => {
      let n = openFds();
      for (let i = 0; i < 60 && (target === undefined ? i < 15 : n > target); i++) {
        await new Promise((r) => setTimeout(r, 100));
        n = openFds();
      }
      return n;
    };
    const baseline = await settle();
    const before = dp.counters().spliced_back!;
    for (let i = 0; i < 40; i++) {
      const ws = await wsOpen(`ws://127.0.0.41:${native.port}/`);
      const msg = new Promise<string>((r) => ws.once('message', (d: Buffer) => r(d.toString())));
      ws.send(`hi ${i}`);
      expect(await msg).toBe(`ws-0:hi ${i}`);
      await wsClose(ws);
    }
    expect(dp.counters().spliced_back! - before).toBe(40);
    // The close handshake ends on the backend's FIN, passed on by the plane a moment later.
    for (let i = 0; i < 100 && dp.counters().active !== 0; i++) await new Promise((r) => setTimeout(r, 20));
    expect(dp.counters().active).toBe(0);
    expect(await settle(baseline)).toBeLessThanOrEqual(baseline);
  }, 60_000);
});

describe.skipIf(skip)('native plane with spliceBack off', () => {
  it('keeps the websocket tunnel in TS (handed off, never spliced back)', async () => {
    const backend = await startHttpBackend('ws-1', '127.0.0.1');
    const { native, ts } = newPlanes('42200-42299');
    const dp = new SplitDataplane(native, ts, undefined, 'handoff', false);
    try {
      await dp.start();
      await dp.apply(
        ...new TableBuilder().next([
          testService(
            'ws',
            '127.0.0.44',
            native.port,
            [{ ip: '127.0.0.1', port: backend.port }],
            'websocket',
          ),
        ]),
      );
      const ws = await wsOpen(`ws://127.0.0.44:${native.port}/`);
      const { sent, got } = await wsEchoDigest(ws, 1 << 20);
      expect(got).toBe(sent);
      await wsClose(ws);
      expect(dp.counters().handed_off).toBe(1);
      expect(dp.counters().spliced_back).toBe(0);
      expect(dp.counters().handed_back).toBe(0);
    } finally {
      await dp.stop();
      await backend.kill();
    }
  }, 30_000);
});
