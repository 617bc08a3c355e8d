// The HTTP engine over real sockets: a frontend listener hands accepted connections to HttpProxy
// (as the TS data plane does), three real hostname backends on 127.0.0.11-13 answer. Proves the
// seed's load-balancing examples per request, affinity, ejection of a killed backend, and the
// HTTP/1.1 details (keep-alive, pipelining, chunked, 100-continue, upgrade, 400/503/504).
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type {
  Endpoint,
  LoadBalancerPolicy,
  OutlierDetectionPolicy,
  ServiceEntry,
  ServicePortEntry,
} from '../../src/controller/types.ts';
import { type BalancerOptions, createBalancer, type ServiceBalancer } from '../../src/lb/index.ts';
import { HttpProxy } from '../../src/protocols/index.ts';
import { eventually } from '../helpers/eventually.ts';
import { type HttpBackend, startHostnameBackends, startHttpBackend } from '../helpers/http-backends.ts';

function service(
  endpoints: Endpoint[],
  lb?: LoadBalancerPolicy,
  od?: OutlierDetectionPolicy,
): { svc: ServiceEntry; port: ServicePortEntry } {
  const port: ServicePortEntry = {
    name: 'http-0',
    port: 12345,
    protocol: 'TCP',
    appProtocol: 'http',
    targetPort: 8080,
    endpoints,
    trafficPolicy: { ...(lb ? { loadBalancer: lb } : {}), ...(od ? { outlierDetection: od } : {}) },
  };
  const svc: ServiceEntry = {
    namespace: 'default',
    name: 'hostname-lb-svc',
    key: 'default/hostname-lb-svc',
    clusterIPs: ['10.96.0.20'],
    headless: false,
    type: 'ClusterIP',
    ports: [port],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
  return { svc, port };
}

function endpointsOf(backends: HttpBackend[]): Endpoint[] {
  return backends.map((b) => ({ ip: b.ip, port: b.port, ready: true, serving: true, terminating: false }));
}

interface Frontend {
  port: number;
  balancer: ServiceBalancer;
  close(): Promise<void>;
}

const frontends: Frontend[] = [];
let proxy: HttpProxy;

/** A listener on 0.0.0.0:0 whose connections go to `proxy` with a balancer for `backends`. */
async function frontend(
  backends: HttpBackend[],
  lb?: LoadBalancerPolicy,
  od?: OutlierDetectionPolicy,
  opts: BalancerOptions = {},
  engine: HttpProxy = proxy,
): Promise<Frontend> {
  const { svc, port } = service(endpointsOf(backends), lb, od);
  const balancer = createBalancer(svc, port, opts);
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    engine.handle(client, svc, port, balancer);
  });
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', () => resolve()));
  const f: Frontend = {
    port: (server.address() as net.AddressInfo).port,
    balancer,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  frontends.push(f);
  return f;
}

interface Reply {
  status: number;
  body: string;
  headers: http.IncomingHttpHeaders;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });

function get(
  port: number,
  path = '/',
  options: { headers?: Record<string, string>; localAddress?: string; agent?: http.Agent | false } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        path,
        headers: options.headers,
        agent: options.agent ?? agent,
        ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode!, body, headers: res.headers }));
        res.on('error', reject);
      },
    );
    req.setTimeout(10_000, () => req.destroy(new Error('request hung')));
    req.on('error', reject);
    req.end();
  });
}

/** Runs `n` requests with `concurrency` in flight; returns the bodies. */
async function many(n: number, concurrency: number, one: (i: number) => Promise<Reply>): Promise<Reply[]> {
  const out: Reply[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await one(i);
      }
    }),
  );
  return out;
}

function tally(replies: Reply[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const r of replies) m.set(r.body.trim(), (m.get(r.body.trim()) ?? 0) + 1);
  return m;
}

let backends: HttpBackend[];

beforeAll(async () => {
  proxy = new HttpProxy({ requestTimeoutMs: 2000 });
  backends = await startHostnameBackends(3);
});

afterEach(async () => {
  await Promise.all(frontends.splice(0).map((f) => f.close()));
  agent.destroy();
});

afterAll(async () => {
  await proxy.close();
  await Promise.all(backends.map((b) => b.kill()));
});

describe('per-request load balancing (seed hostname-lb-svc examples)', () => {
  it('ROUND_ROBIN: exact rotation, even on one keep-alive connection', async () => {
    const f = await frontend(backends, { simple: 'ROUND_ROBIN' });
    const one = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const names: string[] = [];
    for (let i = 0; i < 9; i++) names.push((await get(f.port, '/', { agent: one })).body.trim());
    one.destroy();
    expect(names).toEqual([
      'backend-1',
      'backend-2',
      'backend-3',
      'backend-1',
      'backend-2',
      'backend-3',
      'backend-1',
      'backend-2',
      'backend-3',
    ]);
  });

  it('RANDOM: 1,000 requests, each backend 25-42 %', async () => {
    const f = await frontend(backends, { simple: 'RANDOM' });
    const replies = await many(1000, 16, () => get(f.port));
    expect(replies.every((r) => r.status === 200)).toBe(true);
    const counts = tally(replies);
    expect(counts.size).toBe(3);
    for (const c of counts.values()) {
      expect(c).toBeGreaterThanOrEqual(250);
      expect(c).toBeLessThanOrEqual(420);
    }
  });

  it('consistentHash on User-Agent: same UA → same backend, different UAs spread', async () => {
    const f = await frontend(backends, { consistentHash: { httpHeaderName: 'User-Agent' } });
    const same = await many(20, 4, () => get(f.port, '/', { headers: { 'user-agent': 'curl/8.5.0' } }));
    expect(tally(same).size).toBe(1);
    const spread = await many(60, 8, (i) => get(f.port, '/', { headers: { 'user-agent': `agent-${i}` } }));
    expect(tally(spread).size).toBe(3);
  });

  it('consistentHash on a cookie: sets it when absent, then sticks to one backend', async () => {
    const f = await frontend(backends, {
      consistentHash: { httpCookie: { name: 'edgemesh-affinity', path: '/', ttl: '3600s' } },
    });
    const first = await get(f.port);
    const setCookie = first.headers['set-cookie']?.[0] ?? '';
    expect(setCookie).toMatch(/^edgemesh-affinity=[0-9a-f]+; Path=\/; HttpOnly; Max-Age=3600$/);
    const cookie = setCookie.split(';')[0]!;
    const again = await many(15, 3, () => get(f.port, '/', { headers: { cookie: `a=b; ${cookie}` } }));
    for (const r of again) {
      expect(r.body).toBe(first.body);
      expect(r.headers['set-cookie']).toBeUndefined();
    }
    // New clients (no cookie) get fresh cookies that spread over the backends.
    const fresh = await many(40, 8, () => get(f.port));
    expect(tally(fresh).size).toBe(3);
  });

  it('source-IP affinity: 127.0.0.2 and 127.0.0.3 each stick to their backend (hash and ClientIP)', async () => {
    const f = await frontend(backends, { consistentHash: { useSourceIp: true } });
    for (const ip of ['127.0.0.2', '127.0.0.3']) {
      const replies = await many(10, 2, () => get(f.port, '/', { localAddress: ip, agent: false }));
      expect(tally(replies).size).toBe(1);
      // The hash uses the IP only: what the L4 reference says for that IP.
      const { ringHashPick } = await import('../../src/lb/index.ts');
      const want = ringHashPick(endpointsOf(backends), ip)!;
      expect(replies[0]!.body.trim()).toBe(backends.find((b) => b.port === want.port)!.name);
    }
  });

  it('LEAST_REQUEST: a slow backend gets clearly fewer requests', async () => {
    const slow = await startHttpBackend('slow', '127.0.0.14', 150);
    try {
      const f = await frontend([backends[0]!, backends[1]!, slow], { simple: 'LEAST_REQUEST' });
      const replies = await many(150, 12, () => get(f.port));
      const counts = tally(replies);
      const slowCount = counts.get('slow') ?? 0;
      expect(slowCount).toBeLessThan((counts.get('backend-1') ?? 0) / 2);
      expect(slowCount).toBeLessThan((counts.get('backend-2') ?? 0) / 2);
    } finally {
      await slow.kill();
    }
  });
});

describe('failures', () => {
  it('a backend killed during a run: in-flight requests get 502, new ones avoid it, none hang', async () => {
    const victim = await startHttpBackend('victim', '127.0.0.15', 300);
    const f = await frontend([backends[0]!, victim], { simple: 'ROUND_ROBIN' });
    // Two requests in flight on the victim (slow), then it dies.
    const inflight = [get(f.port), get(f.port), get(f.port), get(f.port)];
    // Round robin sends two of the four to the victim; kill it only once both arrived (a request
    // still in its socket buffer would also fail, and on a loaded machine 100 ms is not enough).
    await eventually(async () => victim.hits >= 2, 5000);
    await victim.kill();
    const reachedVictim = victim.hits;
    const early = await Promise.all(inflight);
    // Requests the victim had accepted fail with 502; any still queued are retried elsewhere.
    const failed = early.filter((r) => r.status !== 200);
    expect(reachedVictim).toBeGreaterThan(0);
    expect(failed.length).toBeGreaterThan(0);
    expect(failed.length).toBeLessThanOrEqual(reachedVictim);
    for (const r of failed) expect(r.status).toBe(502);
    // New requests: the first connect to the victim fails and is retried on backend-1; the victim
    // is ejected, so every later request goes straight to backend-1.
    const later = await many(30, 3, () => get(f.port));
    expect(later.every((r) => r.status === 200 && r.body === 'backend-1\n')).toBe(true);
    expect(f.balancer.ejections).toBe(1);
    expect(f.balancer.isEjected({ ip: victim.ip, port: victim.port } as Endpoint)).toBe(true);
  });

  it('no endpoint → 503 with a body naming the service', async () => {
    const f = await frontend([]);
    const r = await get(f.port);
    expect(r.status).toBe(503);
    expect(r.body).toContain('default/hostname-lb-svc:12345');
  });

  it('no endpoint reachable → 503; upstream timeout → 504', async () => {
    const dead = net.createServer();
    await new Promise<void>((resolve) => dead.listen(0, '127.0.0.16', () => resolve()));
    const deadPort = (dead.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => dead.close(() => resolve()));
    const f = await frontend([{ name: 'x', ip: '127.0.0.16', port: deadPort } as HttpBackend]);
    const r = await get(f.port);
    expect(r.status).toBe(503);
    expect(r.body).toContain('upstream connect error for service default/hostname-lb-svc');

    const hang = await startHttpBackend('hang', '127.0.0.17', Number.POSITIVE_INFINITY);
    try {
      const quick = new HttpProxy({ requestTimeoutMs: 300 });
      const g = await frontend([hang], undefined, undefined, {}, quick);
      const t0 = Date.now();
      const timedOut = await get(g.port, '/', { agent: false });
      expect(timedOut.status).toBe(504);
      expect(Date.now() - t0).toBeLessThan(3000);
      await quick.close();
    } finally {
      await hang.kill();
    }
  });

  it('malformed requests get 400 and the connection is closed', async () => {
    const f = await frontend(backends);
    for (const bad of [
      'GARBAGE\r\n\r\n',
      'GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n',
      'GET /\x00 HTTP/1.1\r\n\r\n',
    ]) {
      const s = net.connect(f.port, '127.0.0.1');
      let got = '';
      s.on('data', (d) => {
        got += d;
      });
      s.write(bad);
      await new Promise<void>((resolve) => s.on('close', () => resolve()));
      expect(got).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    }
  });
});

describe('HTTP/1.1 details', () => {
  it('pipelined requests are answered in order on one connection', async () => {
    const f = await frontend(backends, { simple: 'ROUND_ROBIN' });
    const s = net.connect(f.port, '127.0.0.1');
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d) => {
      got += d;
    });
    s.write(
      'GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n',
    );
    await new Promise<void>((resolve) => s.on('close', () => resolve()));
    // The hostname backends answer chunked: "a\r\nbackend-N\n\r\n0\r\n\r\n".
    const bodies = [...got.matchAll(/\r\na\r\n(backend-\d)\n\r\n/g)].map((m) => m[1]);
    expect(got.match(/^HTTP\/1\.1 200 OK\r\n/gm)).toHaveLength(3);
    expect(bodies).toEqual(['backend-1', 'backend-2', 'backend-3']);
  });

  it('streams a chunked 8 MiB upload back (echo) byte-exact, with Expect: 100-continue', async () => {
    const f = await frontend(backends);
    const data = randomBytes(8 * 1024 * 1024);
    const want = createHash('sha256').update(data).digest('hex');
    const result = await new Promise<{ status: number; hash: string; sawContinue: boolean }>(
      (resolve, reject) => {
        let sawContinue = false;
        const req = http.request({
          host: '127.0.0.1',
          port: f.port,
          path: '/echo',
          method: 'POST',
          agent: false,
          headers: { expect: '100-continue', 'transfer-encoding': 'chunked' },
        });
        req.on('continue', () => {
          sawContinue = true;
          for (let off = 0; off < data.length; off += 65536) req.write(data.subarray(off, off + 65536));
          req.end();
        });
        req.on('response', (res) => {
          const h = createHash('sha256');
          res.on('data', (d) => h.update(d));
          res.on('end', () => resolve({ status: res.statusCode!, hash: h.digest('hex'), sawContinue }));
        });
        req.on('error', reject);
        req.flushHeaders();
      },
    );
    expect(result.sawContinue).toBe(true);
    expect(result.status).toBe(200);
    expect(result.hash).toBe(want);
  });

  it('Upgrade: websocket switches the connection to a tunnel to one backend', async () => {
    const f = await frontend(backends, { simple: 'ROUND_ROBIN' });
    const ws = new WebSocket(`ws://127.0.0.1:${f.port}/chat`);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const echoes: string[] = [];
    for (const m of ['a', 'b', 'c']) {
      const reply = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())));
      ws.send(m);
      echoes.push(await reply);
    }
    ws.close();
    // Every message went to the same backend (one tunnel), which echoed with its name.
    const owner = echoes[0]!.split(':')[0];
    expect(echoes).toEqual(['a', 'b', 'c'].map((m) => `${owner}:${m}`));
  });
});
