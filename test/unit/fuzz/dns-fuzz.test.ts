// Fuzzing the DNS server's packet handling: random bytes and mutations of valid queries (bit
// flips, truncation, inserted bytes, compression pointers, count fields) must never throw, and
// every reply must be a well-formed response to the same id. Iterations: EDGEMESH_FUZZ_ITERATIONS
// (`npm run fuzz` runs 2,000,000), default 100,000. The seed is printed so failures reproduce.
import dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AnswerCache } from '../../../src/dns/answer-cache.ts';
import { DnsServer } from '../../../src/dns/dns-server.ts';
import { walkMessage } from '../../../src/dns/wire.ts';
import { dig, dnsServerOptions, query, svc, table, udpExchange } from '../../helpers/dns.ts';

const ITERATIONS = Number(process.env.EDGEMESH_FUZZ_ITERATIONS ?? 100_000);
/** `npm run fuzz` takes minutes on 2 busy cores: scale the per-test timeout with the work. */
const TIMEOUT_MS = Math.max(60_000, ITERATIONS / 5);
const SEED = Number(process.env.EDGEMESH_FUZZ_SEED ?? Date.now() % 2 ** 31);

/** xorshift32: fast, seedable, good enough to pick mutations. */
function rng(seed: number) {
  let x = seed || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

const seeds: Buffer[] = [
  query('web.default.svc.cluster.local'),
  query('web.default', 'AAAA'),
  query('_http._tcp.web.default.svc.cluster.local', 'SRV'),
  query('10.0.96.10.in-addr.arpa', 'PTR'),
  query('nope.svc.cluster.local', 'ANY' as 'A'),
  query('web.default.svc.cluster.local.corp.example'),
  dnsPacket.encode({
    type: 'query',
    id: 7,
    questions: [{ type: 'A', name: 'pg.db.svc.cluster.local' }],
    additionals: [
      { type: 'OPT', name: '.', udpPayloadSize: 4096, flags: dnsPacket.DNSSEC_OK } as dnsPacket.Answer,
    ],
  }),
];

const answerSeeds: Buffer[] = [
  dnsPacket.encode({
    type: 'response',
    id: 1,
    questions: [{ type: 'A', name: 'a.example' }],
    answers: [{ type: 'A', name: 'a.example', ttl: 30, data: '192.0.2.1' }],
  }),
  dnsPacket.encode({
    type: 'response',
    id: 2,
    flags: 3,
    questions: [{ type: 'A', name: 'b.example' }],
    authorities: [
      {
        type: 'SOA',
        name: 'example',
        ttl: 60,
        data: { mname: 'ns', rname: 'h', serial: 1, refresh: 1, retry: 1, expire: 1, minimum: 9 },
      },
    ],
  }),
];

function mutate(r: ReturnType<typeof rng>, base: Buffer): Buffer {
  let b = Buffer.from(base);
  const rounds = 1 + r.int(4);
  for (let i = 0; i < rounds; i++) {
    switch (r.int(7)) {
      case 0: // bit flip
        if (b.length) b[r.int(b.length)]! ^= 1 << r.int(8);
        break;
      case 1: // truncate
        b = b.subarray(0, r.int(b.length + 1));
        break;
      case 2: // insert random bytes
        {
          const at = r.int(b.length + 1);
          const ins = Buffer.from(Array.from({ length: 1 + r.int(8) }, () => r.int(256)));
          b = Buffer.concat([b.subarray(0, at), ins, b.subarray(at)]);
        }
        break;
      case 3: // compression pointer (often a loop) somewhere
        if (b.length > 13) {
          const at = 12 + r.int(b.length - 13);
          b[at] = 0xc0 | r.int(64);
          b[at + 1] = r.int(256);
        }
        break;
      case 4: // count fields
        if (b.length >= 12) b.writeUInt16BE(r.int(4) === 0 ? r.int(65536) : r.int(3), 4 + 2 * r.int(4));
        break;
      case 5: // label length byte
        if (b.length > 12) b[12 + r.int(b.length - 12)] = r.int(256);
        break;
      default: // append garbage
        b = Buffer.concat([b, Buffer.from(Array.from({ length: r.int(32) }, () => r.int(256)))]);
    }
  }
  return b;
}

let server: DnsServer;

beforeAll(async () => {
  // No upstreams at all: forwarded names resolve to SERVFAIL at once, without sockets.
  server = new DnsServer(dnsServerOptions());
  await server.start();
  await server.apply(
    table([
      svc('default', 'web', {
        clusterIPs: ['10.96.0.10'],
        ports: [{ name: 'http', endpoints: [{ ip: '10.1.1.1' }] }],
      }),
      svc('db', 'pg', { headless: true, ports: [{ endpoints: [{ ip: '10.2.2.2', hostname: 'pg-0' }] }] }),
    ]),
  );
});

afterAll(async () => {
  await server?.stop();
});

describe(`dns fuzz (seed ${SEED}, ${ITERATIONS} iterations)`, () => {
  it(
    'never throws on random and mutated queries; every reply is a well-formed response',
    async () => {
      const r = rng(SEED);
      let replies = 0;
      let forwarded = 0;
      const pending: Promise<unknown>[] = [];
      const check = (msg: Buffer, reply: Buffer) => {
        // Plain checks: expect() per iteration would dominate the run time.
        if (reply.length < 12 || reply.readUInt16BE(0) !== msg.readUInt16BE(0) || (reply[2]! & 0x80) === 0) {
          throw new Error(`bad reply ${reply.toString('hex')} to ${msg.toString('hex')}`);
        }
        // The reply must decode (dns-packet is an independent parser).
        dnsPacket.decode(reply);
        replies++;
      };
      for (let i = 0; i < ITERATIONS; i++) {
        const msg =
          r.int(4) === 0
            ? Buffer.from(Array.from({ length: r.int(64) }, () => r.int(256)))
            : mutate(r, seeds[r.int(seeds.length)]!);
        const out = server.answer(msg, r.int(2) === 0 ? 'udp' : 'tcp');
        if (Buffer.isBuffer(out)) check(msg, out);
        else if (out) {
          forwarded++;
          // Forwarded names fail fast; bounded batches keep memory flat.
          if (forwarded % 64 === 0) {
            pending.push(out.then((o) => o && check(msg, o)));
            if (pending.length >= 256) await Promise.all(pending.splice(0));
          }
        }
      }
      await Promise.all(pending);
      expect(replies).toBeGreaterThan(ITERATIONS / 10);
    },
    TIMEOUT_MS,
  );

  it(
    'the upstream-answer walker and cache never throw on mutated answers',
    () => {
      const r = rng(SEED ^ 0x5a5a5a5a);
      const cache = new AnswerCache({ maxEntries: 50, maxTtl: 3600, maxNegativeTtl: 600, staleWindow: 60 });
      const q = query('a.example');
      for (let i = 0; i < Math.max(1000, ITERATIONS / 4); i++) {
        const msg = mutate(r, answerSeeds[r.int(answerSeeds.length)]!);
        walkMessage(msg);
        if (cache.put(`k${i % 64}`, msg)) {
          const hit = cache.get(`k${i % 64}`);
          if (hit) cache.render(hit.entry, q, Math.min(q.length, hit.entry.message.length), false);
        }
      }
      expect(cache.size).toBeLessThanOrEqual(50);
    },
    TIMEOUT_MS,
  );

  it('keeps answering real clients while garbage arrives on its socket', async () => {
    const r = rng(SEED ^ 0x1234);
    const port = server.address()!.port;
    const junk = Array.from({ length: 2000 }, () => mutate(r, seeds[r.int(seeds.length)]!));
    await Promise.all(junk.map((j) => udpExchange(port, j, 50)));
    const ok = await dig('127.0.0.1', port, ['web.default.svc.cluster.local']);
    expect(ok.answers[0]?.[3]).toBe('10.96.0.10');
  });
});
