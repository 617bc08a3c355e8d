// The byte-stream protocols over real sockets: TLS passthrough with SNI (certificates made with the
// openssl CLI, clients: node tls and `curl --resolve`), WebSocket ports with header hashing, UDP
// echo flows with idle timeout, and the TS data plane's workers dispatching http ports to our engine.
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type {
  Endpoint,
  LoadBalancerPolicy,
  ServiceEntry,
  ServicePortEntry,
  ServiceTable,
} from '../../src/controller/types.ts';
import { TsDataplane } from '../../src/dataplane/ts/ts-dataplane.ts';
import { type Balancer, createBalancer } from '../../src/lb/index.ts';
import { handleTlsPassthrough, handleWebsocket, UdpProxy } from '../../src/protocols/index.ts';
import { silentLogger } from '../../src/util/log.ts';
import { makeSelfSigned } from '../helpers/certs.ts';
import { type HttpBackend, startHostnameBackends } from '../helpers/http-backends.ts';

const run = promisify(execFile);

function service(
  endpoints: Endpoint[],
  appProtocol: ServicePortEntry['appProtocol'],
  lb?: LoadBalancerPolicy,
  protocol: ServicePortEntry['protocol'] = 'TCP',
): { svc: ServiceEntry; port: ServicePortEntry } {
  const port: ServicePortEntry = {
    name: appProtocol,
    port: 443,
    protocol,
    appProtocol,
    targetPort: 443,
    endpoints,
    ...(lb ? { trafficPolicy: { loadBalancer: lb } } : {}),
  };
  const svc: ServiceEntry = {
    namespace: 'default',
    name: `${appProtocol}-svc`,
    key: `default/${appProtocol}-svc`,
    clusterIPs: ['10.96.0.30'],
    headless: false,
    type: 'ClusterIP',
    ports: [port],
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
  return { svc, port };
}

const ep = (ip: string, port: number): Endpoint => ({
  ip,
  port,
  ready: true,
  serving: true,
  terminating: false,
});

const closers: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of closers.reverse()) await c();
});

/** A frontend on 127.0.0.1:0 handing each connection to `handle`. */
async function frontend(handle: (s: net.Socket) => void): Promise<number> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    handle(s);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  closers.push(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as net.AddressInfo).port;
}

describe('https: TLS passthrough with SNI', () => {
  let dir: string;
  let cert: Buffer;
  let tlsPorts: number[];
  let balancer: Balancer;
  let port: number;
  const sniSeen: Array<string | undefined> = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'em-tls-'));
    closers.push(() => rmSync(dir, { recursive: true, force: true }));
    makeSelfSigned(path.join(dir, 'cert.pem'), path.join(dir, 'key.pem'), '/CN=shop.example.com', [
      'shop.example.com',
      'api.example.com',
    ]);
    cert = readFileSync(path.join(dir, 'cert.pem'));
    const key = readFileSync(path.join(dir, 'key.pem'));
    tlsPorts = [];
    for (const name of ['tls-1', 'tls-2', 'tls-3']) {
      const server = tls.createServer({ cert, key }, (s) => {
        s.on('error', () => {});
        const sni = (s as tls.TLSSocket & { servername?: string }).servername;
        // Answers like an HTTP server would, so curl can talk to it too.
        s.once('data', () => {
          const body = `${name} ${sni}\n`;
          s.end(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
        });
      });
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.21', () => resolve()));
      tlsPorts.push((server.address() as net.AddressInfo).port);
      closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    }
    // Hash on "a header": for https that is the SNI (the only name visible without terminating TLS).
    const { svc, port: sp } = service(
      tlsPorts.map((p) => ep('127.0.0.21', p)),
      'https',
      { consistentHash: { httpHeaderName: 'host' } },
    );
    balancer = createBalancer(svc, sp);
    port = await frontend((s) => {
      void handleTlsPassthrough(s, balancer).then((sni) => sniSeen.push(sni));
    });
  });

  function hello(servername: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername, ca: cert }, () =>
        s.write('GET / HTTP/1.1\r\n\r\n'),
      );
      let got = '';
      s.setEncoding('utf8');
      s.on('data', (d) => {
        got += d;
      });
      s.on('end', () => resolve(got.split('\r\n\r\n')[1] ?? ''));
      s.on('error', reject);
    });
  }

  it('passes TLS through untouched (the client verifies the backend certificate) and reads the SNI', async () => {
    const body = await hello('shop.example.com');
    expect(body).toMatch(/^tls-\d shop\.example\.com\n$/);
    expect(sniSeen).toContain('shop.example.com');
  });

  it('the same SNI always lands on the same backend', async () => {
    const a = new Set<string>();
    const b = new Set<string>();
    for (let i = 0; i < 6; i++) {
      a.add((await hello('shop.example.com')).split(' ')[0]!);
      b.add((await hello('api.example.com')).split(' ')[0]!);
    }
    expect(a.size).toBe(1);
    expect(b.size).toBe(1);
  });

  it('curl --resolve with SNI goes through', async () => {
    const { stdout } = await run('curl', [
      '-s',
      '--max-time',
      '5',
      '--cacert',
      path.join(dir, 'cert.pem'),
      '--resolve',
      `api.example.com:${port}:127.0.0.1`,
      `https://api.example.com:${port}/`,
    ]);
    expect(stdout).toMatch(/^tls-\d api\.example\.com\n$/);
  });
});

describe('websocket port', () => {
  let backends: HttpBackend[];
  beforeAll(async () => {
    backends = await startHostnameBackends(3);
    closers.push(() => Promise.all(backends.map((b) => b.kill())).then(() => {}));
  });

  async function echoOnce(port: number, headers: Record<string, string>): Promise<string> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { headers });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const reply = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())));
    ws.send('ping');
    const r = await reply;
    ws.close();
    return r;
  }

  it('echoes through the tunnel; header hashing pins a user to one backend', async () => {
    const { svc, port: sp } = service(
      backends.map((b) => ep(b.ip, b.port)),
      'websocket',
      { consistentHash: { httpHeaderName: 'x-user' } },
    );
    const balancer = createBalancer(svc, sp);
    const port = await frontend((s) => void handleWebsocket(s, balancer));
    const alice = new Set<string>();
    for (let i = 0; i < 5; i++) alice.add(await echoOnce(port, { 'x-user': 'alice' }));
    expect(alice.size).toBe(1);
    expect([...alice][0]).toMatch(/^backend-\d:ping$/);
    const users = new Set<string>();
    for (let i = 0; i < 24; i++) users.add(await echoOnce(port, { 'x-user': `user-${i}` }));
    expect(users.size).toBe(3);
  });
});

describe('udp', () => {
  it('echoes per-client flows, ends idle flows, and moves off an endpoint that answers ICMP unreachable', async () => {
    const echoes: dgram.Socket[] = [];
    for (let i = 0; i < 2; i++) {
      const s = dgram.createSocket('udp4');
      s.on('message', (m, r) => s.send(Buffer.concat([Buffer.from(`echo-${i}:`), m]), r.port, r.address));
      await new Promise<void>((resolve) => s.bind(0, '127.0.0.31', () => resolve()));
      echoes.push(s);
      closers.push(() => new Promise<void>((resolve) => s.close(() => resolve())));
    }
    // A port with nothing bound: the kernel answers ICMP port unreachable.
    const gone = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => gone.bind(0, '127.0.0.31', () => resolve()));
    const gonePort = gone.address().port;
    await new Promise<void>((resolve) => gone.close(() => resolve()));

    const eps = [...echoes.map((s) => ep('127.0.0.31', s.address().port)), ep('127.0.0.31', gonePort)];
    const { svc, port: sp } = service(eps, 'udp', undefined, 'UDP');
    const balancer = createBalancer(svc, sp);
    const proxy = new UdpProxy(balancer, { host: '127.0.0.1', port: 0, idleTimeoutMs: 300, maxFlows: 100 });
    await proxy.start();
    closers.push(() => proxy.stop());
    const target = proxy.address();

    const client = async (localIp: string, payload: string): Promise<string | undefined> => {
      const c = dgram.createSocket('udp4');
      await new Promise<void>((resolve) => c.bind(0, localIp, () => resolve()));
      try {
        for (let attempt = 0; attempt < 3; attempt++) {
          const reply = new Promise<string | undefined>((resolve) => {
            const t = setTimeout(() => resolve(undefined), 400);
            c.once('message', (m) => {
              clearTimeout(t);
              resolve(m.toString());
            });
          });
          c.send(payload, target.port, target.address);
          const r = await reply;
          if (r !== undefined) return r;
        }
        return undefined;
      } finally {
        c.close();
      }
    };
    // Round robin over 3 endpoints, one dead: every client still gets an echo (the dead one's flow
    // ends on ICMP, it is ejected, and the client's retry goes elsewhere).
    const replies = [];
    for (let i = 0; i < 6; i++) replies.push(await client(`127.0.0.${40 + i}`, `hello-${i}`));
    for (const [i, r] of replies.entries()) expect(r).toMatch(new RegExp(`^echo-[01]:hello-${i}$`));
    expect(new Set(replies.map((r) => r!.split(':')[0])).size).toBe(2);
    expect(proxy.stats.flows).toBeGreaterThanOrEqual(6);
    // Idle flows go away.
    const t0 = Date.now();
    while (proxy.flowCount > 0 && Date.now() - t0 < 3000) await new Promise((r) => setTimeout(r, 50));
    expect(proxy.flowCount).toBe(0);
  });
});

describe('TS data plane workers use these handlers', () => {
  let dp: TsDataplane | undefined;
  afterAll(async () => {
    await dp?.stop();
  });

  it('an http-named port is served per request by the HTTP engine inside a listener worker', async () => {
    const backends = await startHostnameBackends(3);
    closers.push(() => Promise.all(backends.map((b) => b.kill())).then(() => {}));
    dp = new TsDataplane({
      log: silentLogger,
      workers: 1,
      portRange: '46100-46199',
      connectTimeoutMs: 1000,
      idleTimeoutMs: 0,
      nodeName: 'node-a',
      listenHost: '127.0.0.1',
    });
    await dp.start();
    const { svc } = service(
      backends.map((b) => ep(b.ip, b.port)),
      'http',
    );
    const empty = service([], 'http');
    const emptySvc: ServiceEntry = {
      ...empty.svc,
      name: 'empty',
      key: 'default/empty',
      clusterIPs: ['10.96.0.31'],
    };
    const table: ServiceTable = {
      generation: 1,
      services: new Map([
        [svc.key, svc],
        [emptySvc.key, emptySvc],
      ]),
      gateways: new Map(),
      virtualServices: new Map(),
      destinationRules: new Map(),
      secrets: new Map(),
    };
    const targets = await dp.apply(table, {
      added: [svc.key, emptySvc.key],
      updated: [],
      removed: [],
      istioChanged: false,
    });
    const main = targets.find((t) => t.clusterIP === '10.96.0.30')!;
    const none = targets.find((t) => t.clusterIP === '10.96.0.31')!;
    // Three requests on ONE connection reach three backends: per-request balancing, not per connection.
    const s = net.connect(main.toPort, '127.0.0.1');
    let got = '';
    s.setEncoding('utf8');
    s.on('data', (d) => {
      got += d;
    });
    for (let i = 0; i < 3; i++)
      s.write(`GET /${i} HTTP/1.1\r\nHost: x\r\n${i === 2 ? 'Connection: close\r\n' : ''}\r\n`);
    await new Promise<void>((resolve) => s.on('close', () => resolve()));
    expect(new Set([...got.matchAll(/x-backend: (backend-\d)/g)].map((m) => m[1])).size).toBe(3);
    const res = await fetch(`http://127.0.0.1:${none.toPort}/`);
    expect(res.status).toBe(503);
    expect(await res.text()).toContain('default/empty:443');
  });

  it('a UDP service port gets a UDP listener whose flows echo through an endpoint', async () => {
    const echo = dgram.createSocket('udp4');
    echo.on('message', (m, r) => echo.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
    await new Promise<void>((resolve) => echo.bind(0, '127.0.0.32', () => resolve()));
    closers.push(() => new Promise<void>((resolve) => echo.close(() => resolve())));
    const { svc } = service([ep('127.0.0.32', echo.address().port)], 'udp', undefined, 'UDP');
    const udpSvc: ServiceEntry = { ...svc, clusterIPs: ['10.96.0.33'] };
    const targets = await dp!.apply(
      {
        generation: 2,
        services: new Map([[udpSvc.key, udpSvc]]),
        gateways: new Map(),
        virtualServices: new Map(),
        destinationRules: new Map(),
        secrets: new Map(),
      },
      { added: [udpSvc.key], updated: [], removed: [], istioChanged: false },
    );
    const t = targets.find((x) => x.clusterIP === '10.96.0.33')!;
    expect(t.protocol).toBe('UDP');
    const c = dgram.createSocket('udp4');
    closers.push(() => {
      c.close();
    });
    await new Promise<void>((resolve) => c.bind(0, '127.0.0.1', () => resolve()));
    const reply = new Promise<string>((resolve) => c.once('message', (m) => resolve(m.toString())));
    c.send('ping', t.toPort, '127.0.0.1');
    expect(await reply).toBe('echo:ping');
  });
});
