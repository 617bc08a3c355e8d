// Fuzzes the HTTP engine's client side through real sockets: random bytes and mutated valid
// requests. The engine must never crash or hang: every connection ends, garbage gets a 400, and a
// valid request after all of it is still served.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ServiceEntry, ServicePortEntry } from '../../../src/controller/types.ts';
import { createBalancer } from '../../../src/lb/index.ts';
import { HttpProxy } from '../../../src/protocols/index.ts';
import { type HttpBackend, startHttpBackend } from '../../helpers/http-backends.ts';

const iterations = Math.min(Number(process.env.EDGEMESH_FUZZ_ITERATIONS ?? 400), 20_000);

let backend: HttpBackend;
let proxy: HttpProxy;
let server: net.Server;
let port: number;

beforeAll(async () => {
  backend = await startHttpBackend('fuzz-backend', '127.0.0.51');
  const sp: ServicePortEntry = {
    name: 'http',
    port: 80,
    protocol: 'TCP',
    appProtocol: 'http',
    targetPort: backend.port,
    endpoints: [{ ip: backend.ip, port: backend.port, ready: true, serving: true, terminating: false }],
  };
  const svc: ServiceEntry = {
    namespace: 'default',
    name: 'fuzz',
    key: 'default/fuzz',
    clusterIPs: ['10.96.0.50'],
    headless: false,
    type: 'ClusterIP',
    ports: [sp],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
  proxy = new HttpProxy({ requestTimeoutMs: 1000 });
  const balancer = createBalancer(svc, sp);
  server = net.createServer({ allowHalfOpen: true }, (c) => proxy.handle(c, svc, sp, balancer));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  port = (server.address() as net.AddressInfo).port;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await proxy.close();
  await backend.kill();
});

/** Sends `bytes`, half-closes, and collects the answer until the proxy closes (or 3 s pass). */
function exchange(bytes: Buffer): Promise<{ reply: string; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let reply = '';
    s.setEncoding('latin1');
    s.on('data', (d) => {
      reply += d;
    });
    s.on('error', () => {});
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ reply, closed: false });
    }, 3000);
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ reply, closed: true });
    });
    s.end(bytes);
  });
}

const VALID = [
  'GET / HTTP/1.1\r\nHost: svc\r\nUser-Agent: fuzz\r\n\r\n',
  'POST /echo HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\n\r\nhello',
  'POST /echo HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
  'GET /a?b=c HTTP/1.0\r\n\r\n',
  'GET / HTTP/1.1\r\nHost: svc\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n',
];

describe('HTTP fuzz', () => {
  it(`survives ${iterations} random and mutated requests; garbage gets 400 and a close`, async () => {
    let seed = 987654321;
    const rand = () => {
      seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
      return seed / 2 ** 32;
    };
    let badRequests = 0;
    const batch = 8;
    for (let i = 0; i < iterations; i += batch) {
      const inputs: Array<{ bytes: Buffer; garbage: boolean }> = [];
      for (let j = 0; j < batch && i + j < iterations; j++) {
        if ((i + j) % 2 === 0) {
          // Pure garbage whose first byte is no token character: can never be a request line.
          const b = Buffer.alloc(1 + Math.floor(rand() * 300));
          for (let k = 0; k < b.length; k++) b[k] = Math.floor(rand() * 256);
          b[0] = [0x00, 0x01, 0x7f, 0xff, 0x20, 0x0d, 0x3a][Math.floor(rand() * 7)]!;
          inputs.push({ bytes: b, garbage: true });
        } else {
          const b = Buffer.from(VALID[Math.floor(rand() * VALID.length)]!, 'latin1');
          const ops = 1 + Math.floor(rand() * 3);
          let m = b;
          for (let o = 0; o < ops; o++) {
            const at = Math.floor(rand() * m.length);
            const r = rand();
            if (r < 0.4) m[at] = Math.floor(rand() * 256);
            else if (r < 0.7) m = Buffer.concat([m.subarray(0, at), m.subarray(at + 1)]);
            else
              m = Buffer.concat([m.subarray(0, at), Buffer.from([Math.floor(rand() * 256)]), m.subarray(at)]);
          }
          inputs.push({ bytes: m, garbage: false });
        }
      }
      const results = await Promise.all(inputs.map((x) => exchange(x.bytes)));
      results.forEach((r, k) => {
        // Every connection ends: the engine never leaves a client hanging.
        expect(r.closed).toBe(true);
        if (inputs[k]!.garbage) {
          expect(r.reply).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
          badRequests++;
        } else if (r.reply.length > 0) {
          expect(r.reply).toMatch(/^HTTP\/1\.[01] \d{3} /);
        }
      });
    }
    expect(badRequests).toBeGreaterThan(0);
    // Still healthy afterwards.
    const after = await exchange(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
    expect(after.reply).toMatch(/^HTTP\/1\.1 200 OK\r\n[\s\S]*fuzz-backend\n/);
  }, 120_000);

  it('garbage after valid pipelined requests: the valid ones are answered in order, then 400 and close', async () => {
    const good = 'GET / HTTP/1.1\r\nHost: svc\r\n\r\n';
    for (const junk of [
      '\x00\x01\x02',
      'GET / HTTP/9.9\r\n\r\n',
      'POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n',
    ]) {
      const r = await exchange(Buffer.from(good + good + junk, 'latin1'));
      expect(r.closed).toBe(true);
      const statuses = [...r.reply.matchAll(/^HTTP\/1\.1 (\d{3})/gm)].map((m) => m[1]);
      expect(statuses).toEqual(['200', '200', '400']);
    }
  });
});
