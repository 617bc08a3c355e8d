// The native DNS fast path (native/src/dns + src/dns/native-responder.ts) on real sockets: it
// answers cluster names itself (its counters move), hands everything else to the JS server (which
// answers exactly as before), sends byte-identical replies to those of the JS-only server for the
// same queries — including mutated garbage — and falls back to JS with a reason when it cannot run.
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatStatus } from '../../src/cli/status.ts';
import { compileAnswerTable, wireName } from '../../src/dns/answer-table.ts';
import { DnsServer } from '../../src/dns/dns-server.ts';
import { NameIndex } from '../../src/dns/name-index.ts';
import { ErrorCode } from '../../src/errors.ts';
import { loadNative, type NativeBinding, requireNative } from '../../src/native/index.ts';
import { dig, dnsServerOptions, query, svc, table, udpExchange } from '../helpers/dns.ts';

const exec = promisify(execFile);

const services = [
  svc('default', 'web', {
    clusterIPs: ['10.96.0.10', 'fd00:96::10'],
    ports: [{ name: 'http', port: 80, endpoints: [{ ip: '10.244.1.5' }] }],
  }),
  svc('default', 'v4only', { clusterIPs: ['10.96.0.11'] }),
  svc('db', 'pg', {
    headless: true,
    ports: [
      {
        name: 'postgres',
        port: 5432,
        endpoints: [
          { ip: '10.244.2.1', port: 5432, hostname: 'pg-0' },
          { ip: '10.244.2.2', port: 5432 },
        ],
      },
    ],
  }),
  svc('default', 'ext', { type: 'ExternalName', externalName: 'example.org' }),
  svc('default', 'wide', {
    headless: true,
    ports: [{ endpoints: Array.from({ length: 60 }, (_, i) => ({ ip: `10.245.0.${i + 1}` })) }],
  }),
];

let native: DnsServer;
let js: DnsServer;

beforeAll(async () => {
  native = new DnsServer(dnsServerOptions());
  js = new DnsServer(dnsServerOptions({ nativeFastPath: false }));
  await native.start();
  await js.start();
  await native.apply(table(services));
  await js.apply(table(services));
});

afterAll(async () => {
  await native?.stop();
  await js?.stop();
});

function withEdns(name: string, type: dnsPacket.RecordType, dnssec: boolean, size = 4096): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: 0x7777,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
    additionals: [
      {
        type: 'OPT',
        name: '.',
        udpPayloadSize: size,
        flags: dnssec ? dnsPacket.DNSSEC_OK : 0,
        options: [{ code: 10, data: Buffer.alloc(8, 1) }],
      } as unknown as dnsPacket.Answer,
    ],
  });
}

describe('native DNS fast path', () => {
  it('serves UDP natively and says so (also in `edgemesh status`)', () => {
    expect(native.mode).toBe('native');
    expect(native.status().mode).toBe('native');
    const text = formatStatus({
      nodeName: 'n',
      generation: 1,
      intercept: { mode: 'none' },
      dataplane: { mode: 'none' },
      services: [],
      dns: native.status(),
    });
    expect(text).toMatch(/^dns: +127\.0\.0\.1:\d+ native, \d+ names$/m);
    expect(text).toMatch(/^dns\.native\.answered: \d+$/m);
    expect(js.mode).toBe('js');
    expect(js.status().reason).toMatch(/nativeFastPath/);
  });

  it('answers cluster names itself: the native counter moves, the JS path is not asked', async () => {
    const before = native.status().counters;
    const r = await dig('127.0.0.1', native.address()!.port, ['web.default.svc.cluster.local', 'A']);
    expect(r.answers).toEqual([['web.default.svc.cluster.local.', 5, 'A', '10.96.0.10']]);
    const short = await dig('127.0.0.1', native.address()!.port, ['WEB.default', 'AAAA']);
    expect(short.answers).toEqual([['WEB.default.', 5, 'AAAA', 'fd00:96::10']]);
    const nx = await dig('127.0.0.1', native.address()!.port, ['nope.default.svc.cluster.local']);
    expect(nx.status).toBe('NXDOMAIN');
    // Search-path collapse: CNAME to the cluster name plus its records.
    const collapsed = await dig('127.0.0.1', native.address()!.port, ['web.default.svc.cluster.local.corp']);
    expect(collapsed.answers).toEqual([
      ['web.default.svc.cluster.local.corp.', 5, 'CNAME', 'web.default.svc.cluster.local.'],
      ['web.default.svc.cluster.local.', 5, 'A', '10.96.0.10'],
    ]);
    const after = native.status().counters;
    expect(after['native.answered']! - before['native.answered']!).toBe(4);
    expect(after['native.nxdomain']! - before['native.nxdomain']!).toBe(1);
    expect(after['native.punted']).toBe(before['native.punted']);
    // Metrics count native answers (pulled from native counters), by type and rcode.
    const q = native.metrics.snapshot().queries;
    expect(q['A|NOERROR|cluster']).toBeGreaterThanOrEqual(1);
    expect(q['AAAA|NOERROR|cluster']).toBeGreaterThanOrEqual(1);
    expect(q['A|NXDOMAIN|cluster']).toBeGreaterThanOrEqual(1);
  });

  it('hands other queries to the JS server (SRV, PTR, forwarded names, FORMERR), which answers them', async () => {
    const port = native.address()!.port;
    const before = native.status().counters['native.punted']!;
    const srv = await dig('127.0.0.1', port, ['_http._tcp.web.default.svc.cluster.local', 'SRV']);
    expect(srv.answers[0]?.[3]).toBe('0 100 80 web.default.svc.cluster.local.');
    const ptr = await dig('127.0.0.1', port, ['-x', '10.96.0.10']);
    expect(ptr.answers[0]?.[3]).toBe('web.default.svc.cluster.local.');
    const ext = await dig('127.0.0.1', port, ['www.example.test']);
    expect(ext.status).toBe('SERVFAIL');
    const two = query('web.default.svc.cluster.local');
    two.writeUInt16BE(2, 4);
    const formerr = await udpExchange(port, two);
    expect(formerr!.readUInt16BE(2) & 0xf).toBe(1);
    expect(native.status().counters['native.punted']! - before).toBe(4);
  });

  it('sends the same bytes as the JS-only server for every kind of query', async () => {
    const cases: Buffer[] = [
      query('web.default.svc.cluster.local'),
      query('Web.Default.Svc.Cluster.Local', 'AAAA'),
      query('web.default'),
      query('v4only.default.svc.cluster.local', 'AAAA'),
      query('pg.db.svc.cluster.local'),
      query('pg-0.pg.db.svc.cluster.local'),
      query('10-244-2-2.pg.db.svc.cluster.local'),
      query('db.svc.cluster.local'),
      query('cluster.local'),
      query('cluster.local', 'SOA'),
      query('nope.svc.cluster.local'),
      query('ext.default.svc.cluster.local', 'TXT'),
      query('wide.default.svc.cluster.local'),
      query('web.default.svc.cluster.local.corp.example'),
      query('WEB.default.svc.cluster.local.corp.example', 'AAAA'),
      query('v4only.default.svc.cluster.local.corp', 'AAAA'),
      query('pg-0.pg.db.svc.cluster.local.corp'),
      query('ext.default.svc.cluster.local.corp'),
      query('nope.default.svc.cluster.local.corp'),
      query('db.svc.cluster.local.corp'),
      query('a.web.default.svc.cluster.local.svc.cluster.local.x'),
      query('svc.cluster.local.corp'),
      query('_postgres._tcp.pg.db.svc.cluster.local', 'SRV'),
      query('_postgres._tcp.pg.db.svc.cluster.local'),
      query('unknown.example'),
      withEdns('web.default.svc.cluster.local', 'A', true),
      withEdns('nope.default.svc.cluster.local', 'AAAA', false, 100),
      withEdns('wide.default.svc.cluster.local', 'A', false, 1232),
    ];
    for (const q of cases) {
      const [a, b] = await Promise.all([
        udpExchange(native.address()!.port, q),
        udpExchange(js.address()!.port, q),
      ]);
      expect(a, q.toString('hex')).toBeDefined();
      expect({ q: q.toString('hex'), reply: a?.toString('hex') }).toEqual({
        q: q.toString('hex'),
        reply: b?.toString('hex'),
      });
    }
  });

  it('survives mutated garbage with the same replies (or the same silence) as the JS server', async () => {
    let x = Number(process.env.EDGEMESH_FUZZ_SEED ?? Date.now() % 2 ** 31) || 1;
    const rand = (n: number) => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return (x >>> 0) % n;
    };
    const seeds = [
      query('web.default.svc.cluster.local'),
      query('web.default', 'AAAA'),
      query('nope.default.svc.cluster.local'),
      withEdns('pg.db.svc.cluster.local', 'A', true),
    ];
    const packets = Array.from({ length: 1500 }, () => {
      const b = Buffer.from(seeds[rand(seeds.length)]!);
      const at = rand(b.length);
      switch (rand(4)) {
        case 0:
          b[at]! ^= 1 << rand(8);
          return b;
        case 1:
          return b.subarray(0, at);
        case 2:
          b[at] = rand(256);
          return b;
        default:
          return Buffer.concat([b, Buffer.from([rand(256), rand(256)])]);
      }
    });
    let compared = 0;
    const nativePort = native.address()!.port;
    const jsPort = js.address()!.port;
    for (let i = 0; i < packets.length; i += 150) {
      const chunk = packets.slice(i, i + 150);
      const replies = await Promise.all(
        chunk.map((p) => Promise.all([udpExchange(nativePort, p, 300), udpExchange(jsPort, p, 300)])),
      );
      for (let k = 0; k < chunk.length; k++) {
        let [a, b] = replies[k]!;
        if (a?.toString('hex') !== b?.toString('hex') && (a === undefined || b === undefined)) {
          // A reply lost to a busy machine (UDP, 300 ms): ask both again, one at a time.
          [a, b] = [
            await udpExchange(nativePort, chunk[k]!, 2000),
            await udpExchange(jsPort, chunk[k]!, 2000),
          ];
        }
        if (a?.toString('hex') !== b?.toString('hex'))
          throw new Error(
            `differs for ${chunk[k]!.toString('hex')}: ${a?.toString('hex')} vs ${b?.toString('hex')}`,
          );
        if (a) compared++;
      }
    }
    expect(compared).toBeGreaterThan(500);
    const ok = await dig('127.0.0.1', native.address()!.port, ['web.default.svc.cluster.local']);
    expect(ok.answers[0]?.[3]).toBe('10.96.0.10');
  });

  it('follows new snapshots and answers nothing natively before the first one', async () => {
    const fresh = new DnsServer(dnsServerOptions());
    await fresh.start();
    try {
      const port = fresh.address()!.port;
      // Before any snapshot the JS server says SERVFAIL (never an NXDOMAIN clients would cache).
      expect((await dig('127.0.0.1', port, ['web.default.svc.cluster.local'])).status).toBe('SERVFAIL');
      expect(fresh.status().counters['native.answered']).toBe(0);
      await fresh.apply(table([svc('default', 'late', { clusterIPs: ['10.96.0.99'] })], 2));
      expect((await dig('127.0.0.1', port, ['late.default'])).answers[0]?.[3]).toBe('10.96.0.99');
      await fresh.apply(table([], 3));
      expect((await dig('127.0.0.1', port, ['late.default.svc.cluster.local'])).status).toBe('NXDOMAIN');
      expect(fresh.status().counters['native.answered']).toBe(2);
    } finally {
      await fresh.stop();
    }
  });
});

describe('IPv6', () => {
  it('listens on ::1: cluster names answered natively, misses answered by JS to the IPv6 client', async () => {
    const s6 = new DnsServer(dnsServerOptions({ listen: { host: '::1', port: 0 } }));
    await s6.start();
    try {
      await s6.apply(table(services));
      const port = s6.address()!.port;
      expect(s6.mode).toBe('native');
      const a = await dig('::1', port, ['web.default.svc.cluster.local', 'AAAA']);
      expect(a.answers[0]?.[3]).toBe('fd00:96::10');
      const srv = await dig('::1', port, ['_http._tcp.web.default.svc.cluster.local', 'SRV']);
      expect(srv.answers[0]?.[3]).toBe('0 100 80 web.default.svc.cluster.local.');
      const c = s6.status().counters;
      expect(c['native.answered']).toBe(1);
      expect(c['native.punted']).toBe(1);
      expect(c['native.sent']).toBe(2);
    } finally {
      await s6.stop();
    }
  });
});

describe('fallback to the JS UDP path', () => {
  it('runs on JS with the reason when the addon lacks the responder or it fails to start', async () => {
    const real = requireNative();
    const noDns = { ...real, dnsListen: undefined } as unknown as NativeBinding;
    const failing = {
      ...real,
      dnsListen: () => {
        throw Object.assign(new Error('socket failed: Operation not permitted'), {
          syscall: 'socket',
          errno: 1,
        });
      },
    } as unknown as NativeBinding;
    for (const [binding, reason] of [
      [noDns, /unavailable/],
      [failing, /failed to start.*socket/],
    ] as const) {
      const s = new DnsServer(dnsServerOptions({ native: binding }));
      await s.start();
      try {
        expect(s.mode).toBe('js');
        expect(s.status().reason).toMatch(reason);
        await s.apply(table(services));
        const r = await dig('127.0.0.1', s.address()!.port, ['web.default.svc.cluster.local']);
        expect(r.answers[0]?.[3]).toBe('10.96.0.10');
      } finally {
        await s.stop();
      }
    }
  });

  it('a port in use is a listen error, not a silent fallback', async () => {
    const s = new DnsServer(
      dnsServerOptions({ listen: { host: '127.0.0.1', port: native.address()!.port } }),
    );
    await expect(s.start()).rejects.toMatchObject({ code: ErrorCode.LISTEN });
  });
});

describe('miss hand-over', () => {
  it('a throwing miss handler neither crashes the process nor stops the responder', async () => {
    const addon = loadNative().path!;
    // Node 20 reports an exception thrown in an N-API callback as a warning (or, with
    // --force-node-api-uncaught-exceptions-policy, as uncaughtException); it must not abort.
    const script = `
      const b = require(${JSON.stringify(addon)});
      const dgram = require('node:dgram');
      let calls = 0;
      const c = dgram.createSocket('udp4');
      const send = () => c.send(Buffer.from('not dns'), b.dnsBoundPort(h), '127.0.0.1');
      const h = b.dnsListen('127.0.0.1', 0, 0, 8, () => {
        calls++;
        if (calls === 2) { console.log('alive after a throw'); b.dnsClose(h); process.exit(0); }
        setTimeout(send, 10);
        throw new Error('handler bug');
      });
      send();
      setTimeout(() => { console.log('stuck at ' + calls); process.exit(3); }, 5000);
    `;
    const r = await exec(process.execPath, ['-e', script], { timeout: 20_000 });
    expect(r.stdout.trim()).toBe('alive after a throw');
  });
});

describe('shutdown', () => {
  it('a miss still queued when the responder closes and the process exits does not abort it', async () => {
    const addon = loadNative().path!;
    // dig runs synchronously, so the miss it causes waits in the queue until after dnsClose; the
    // handler then throws (closed handle) while the environment shuts down. That used to abort.
    const script = `
      const b = require(${JSON.stringify(addon)});
      const { spawnSync } = require('node:child_process');
      const h = b.dnsListen('127.0.0.1', 0, 0, 8, (batch) => b.dnsSend(h, batch.subarray(0, 19), Buffer.alloc(12)));
      spawnSync('dig', ['@127.0.0.1', '-p', String(b.dnsBoundPort(h)), '+tries=1', '+time=1', 'example.org']);
      b.dnsClose(h);
      console.log('closed');
    `;
    const r = await exec(process.execPath, ['-e', script], { timeout: 20_000 });
    expect(r.stdout.trim()).toBe('closed');
  });
});

describe('per-environment state', () => {
  it('a worker thread runs its own responder; terminating the worker stops it and frees the port', async () => {
    const addon = loadNative().path!;
    const code = `
      const { parentPort } = require('node:worker_threads');
      const b = require(${JSON.stringify(addon)});
      const h = b.dnsListen('127.0.0.1', 0, 0, 8, () => {});
      parentPort.postMessage(b.dnsBoundPort(h));
    `;
    const worker = new Worker(code, { eval: true });
    const port = await new Promise<number>((resolve, reject) => {
      worker.once('message', resolve);
      worker.once('error', reject);
    });
    // The main thread's responders are unaffected, and the worker's answers nothing (empty table:
    // everything is a miss, handed to the worker's no-op handler).
    expect(native.mode).toBe('native');
    await worker.terminate();
    // The environment cleanup stopped the thread and closed the socket: the port binds again.
    const sock = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(port, '127.0.0.1', () => resolve());
    });
    sock.close();
    const ok = await dig('127.0.0.1', native.address()!.port, ['web.default.svc.cluster.local']);
    expect(ok.answers[0]?.[3]).toBe('10.96.0.10');
  });
});

describe('answer table', () => {
  it('encodes names in wire form and rejects what the native side never sees', () => {
    expect(wireName('a.bc')).toEqual(Buffer.from([1, 0x61, 2, 0x62, 0x63, 0]));
    expect(wireName('a\\.b.c')).toBeUndefined();
    expect(wireName('A.b')).toBeUndefined();
    expect(wireName('x'.repeat(64))).toBeUndefined();
  });

  it('is accepted by the addon and carries every owned name', () => {
    const index = new NameIndex(table(services, 9), { domain: 'cluster.local', ttl: 5 });
    const buf = compileAnswerTable(index);
    const binding = requireNative();
    const handle = binding.dnsListen('127.0.0.1', 0, 0, 8, () => {});
    try {
      expect(binding.dnsSetTable(handle, buf)).toBe(9);
      expect(() => binding.dnsSetTable(handle, buf.subarray(0, buf.length - 1))).toThrow(
        /Usage: dnsSetTable/,
      );
    } finally {
      binding.dnsClose(handle);
    }
    expect(buf.readUInt32LE(8)).toBeGreaterThan(services.length);
  });
});
