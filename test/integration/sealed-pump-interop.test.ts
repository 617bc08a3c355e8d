// Native sealed pump vs its TS twin over real loopback TCP (spec-sealed): byte-exact interop both
// ways (native seals, TS opens and back), half-close, a tampering and a truncating relay in the
// middle (the receiving end resets its plain side and never writes a byte past the damage), fuzzed
// streams into both decoders (same verdict, no crash), and 1,000 short pumps leaving no fd behind.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  mirrorKeys,
  newSealedKeys,
  type PumpResult,
  type SealedKeys,
  sealedPumpMode,
  startSealedPump,
  startSplicePump,
} from '../../src/tunnel/sealed-pump.ts';
import { SealedDecoder, SealedEncoder, SealedStreamError } from '../../src/tunnel/sealed-records.ts';
import { type Collected, collect, tcpPair } from '../helpers/sockets.ts';

type Impl = 'native' | 'ts';
const prevMode = process.env.EDGEMESH_SEALED_PUMP;

/** Starts one pump with the chosen implementation (the facade reads the mode per call). */
function pumpWith(impl: Impl, plain: net.Socket, sealed: net.Socket, keys: SealedKeys): Promise<PumpResult> {
  if (impl === 'ts') process.env.EDGEMESH_SEALED_PUMP = 'ts';
  else delete process.env.EDGEMESH_SEALED_PUMP;
  try {
    return startSealedPump(plain, sealed, keys);
  } finally {
    if (prevMode === undefined) delete process.env.EDGEMESH_SEALED_PUMP;
    else process.env.EDGEMESH_SEALED_PUMP = prevMode;
  }
}

/**
 * An app on B's plain side that tells a reset from a FIN. A Node socket cannot: after a partial
 * read libuv turns the EPOLLHUP of a reset into a clean 'end'. A blocking recv() gets ECONNRESET.
 */
const READER = `
import hashlib, json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
h = hashlib.sha256(); n = 0; end = "eof"
while True:
    try:
        b = s.recv(1 << 20)
    except ConnectionResetError:
        end = "reset"; break
    if not b: break
    h.update(b); n += len(b)
print(json.dumps({"bytes": n, "sha": h.hexdigest(), "end": end}))
`;

interface ReaderResult {
  bytes: number;
  sha: string;
  end: 'eof' | 'reset';
}

/** Starts the reader against a fresh listener; resolves its accepted (paused) socket and its verdict. */
async function readerApp(): Promise<{ plain: net.Socket; verdict: Promise<ReaderResult> }> {
  const server = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const child = spawn('python3', ['-c', READER, String((server.address() as net.AddressInfo).port)], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  cleanups.push(() => child.kill());
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const verdict = new Promise<ReaderResult>((resolve, reject) =>
    child.on('close', () => {
      try {
        resolve(JSON.parse(out) as ReaderResult);
      } catch {
        reject(new Error(`reader printed ${JSON.stringify(out)}`));
      }
    }),
  );
  const plain = await accepted;
  server.close();
  return { plain, verdict };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});
afterAll(() => {
  if (prevMode === undefined) delete process.env.EDGEMESH_SEALED_PUMP;
  else process.env.EDGEMESH_SEALED_PUMP = prevMode;
});

beforeAll(() => {
  // The interop half of this file needs the native pump (the addon is built in CI).
  delete process.env.EDGEMESH_SEALED_PUMP;
  expect(sealedPumpMode().mode).toBe('native');
});

/**
 * appA <-> [pump A] <-> sealed wire <-> [pump B] <-> appB. `relay` (optional) sits on the wire
 * A -> B and may rewrite or cut what passes.
 */
async function chain(
  a: Impl,
  b: Impl,
  relay?: (chunk: Buffer, out: net.Socket, from: net.Socket) => void,
  reader?: { plain: net.Socket },
) {
  const pa = await tcpPair();
  const pb = await tcpPair();
  const w1 = await tcpPair();
  cleanups.push(pa.close, pb.close, w1.close);
  let sealedB = w1.server;
  if (relay) {
    const w2 = await tcpPair();
    cleanups.push(w2.close);
    const relayIn = w1.server;
    const relayOut = w2.client;
    sealedB = w2.server;
    relayIn.on('error', () => {});
    relayOut.on('error', () => {});
    relayIn.on('data', (c: Buffer) => relay(c, relayOut, relayIn));
    relayIn.on('end', () => relayOut.end());
    relayOut.on('data', (c: Buffer) => relayIn.write(c));
    relayOut.on('end', () => relayIn.end());
    relayIn.on('close', () => relayOut.destroy());
    relayOut.on('close', () => relayIn.destroy());
    relayIn.resume();
  }
  const keys = newSealedKeys();
  const pumpA = pumpWith(a, pa.server, w1.client, keys);
  const pumpB = pumpWith(b, reader?.plain ?? pb.client, sealedB, mirrorKeys(keys));
  return { appA: pa.client, appB: pb.server, pumpA, pumpB };
}

const pairs: Array<[Impl, Impl]> = [
  ['native', 'ts'],
  ['ts', 'native'],
  ['native', 'native'],
];

describe('sealed pump interop', () => {
  it.each(pairs)('%s -> %s: 16 MiB up and 8 MiB down byte-exact, half-close both ways', async (a, b) => {
    const { appA, appB, pumpA, pumpB } = await chain(a, b);
    appA.allowHalfOpen = true;
    appB.allowHalfOpen = true;
    const up = randomBytes(16 * 1024 * 1024 + 3);
    const down = randomBytes(8 * 1024 * 1024 + 1);
    const gotB = collect(appB);
    const gotA = collect(appA);
    appA.end(up);
    // B answers only after A's FIN arrived: the other direction keeps working half-closed.
    appB.on('end', () => appB.end(down));
    const [rb, ra, resA, resB] = await Promise.all([gotB, gotA, pumpA, pumpB]);
    expect(rb.ended && ra.ended).toBe(true);
    expect(sha(rb.data)).toBe(sha(up));
    expect(sha(ra.data)).toBe(sha(down));
    expect(resA).toEqual({ plainToSealed: up.length, sealedToPlain: down.length });
    expect(resB).toEqual({ plainToSealed: down.length, sealedToPlain: up.length });
  });

  it.each(pairs)(
    '%s -> %s: a byte flipped by the relay resets B and nothing past the damage arrives',
    async (a, b) => {
      const flipAt = 4 * 1024 * 1024 + 333;
      let seen = 0;
      const app = await readerApp();
      const { appA, pumpA, pumpB } = await chain(
        a,
        b,
        (chunk, out) => {
          if (seen <= flipAt && flipAt < seen + chunk.length) {
            chunk = Buffer.from(chunk);
            chunk[flipAt - seen] = (chunk[flipAt - seen] ?? 0) ^ 0x20;
          }
          seen += chunk.length;
          out.write(chunk);
        },
        app,
      );
      appA.on('error', () => {});
      const up = randomBytes(8 * 1024 * 1024);
      appA.write(up);
      const [rb, resA, resB] = await Promise.all([app.verdict, pumpA, pumpB]);
      expect(rb.end).toBe('reset');
      // Only whole authenticated records before the damaged one: a strict prefix, below the flip.
      expect(rb.bytes).toBeLessThan(flipAt);
      expect(rb.sha).toBe(sha(up.subarray(0, rb.bytes)));
      expect(resB.error).toMatch(/authentication/);
      expect(resA.error).toBeDefined();
    },
  );

  it.each(pairs)('%s -> %s: a relay cutting the stream (FIN, no end record) resets B', async (a, b) => {
    const cutAt = 2 * 1024 * 1024 + 77;
    let seen = 0;
    const app = await readerApp();
    const { appA, pumpA, pumpB } = await chain(
      a,
      b,
      (chunk, out, from) => {
        if (seen >= cutAt) return;
        const take = chunk.subarray(0, Math.min(chunk.length, cutAt - seen));
        seen += take.length;
        out.write(take);
        if (seen >= cutAt) {
          out.end();
          from.pause();
        }
      },
      app,
    );
    appA.on('error', () => {});
    const up = randomBytes(4 * 1024 * 1024);
    appA.write(up);
    const [rb, resB] = await Promise.all([app.verdict, pumpB]);
    expect(rb.end).toBe('reset');
    expect(rb.bytes).toBeLessThan(cutAt);
    expect(rb.sha).toBe(sha(up.subarray(0, rb.bytes)));
    expect(resB.error).toMatch(/EOF/);
    appA.destroy();
    await pumpA;
  });
});

/** Sends `stream` as the sealed side of a pump and returns what its plain side saw, and the result. */
async function feed(
  impl: Impl,
  keys: SealedKeys,
  stream: Buffer,
): Promise<{ got: Collected; res: PumpResult }> {
  const p = await tcpPair();
  const w = await tcpPair();
  cleanups.push(p.close, w.close);
  const pump = pumpWith(impl, p.client, w.server, keys);
  const raw = w.client;
  raw.on('error', () => {});
  raw.resume();
  p.server.end(); // the plain side has nothing to say
  const got = collect(p.server);
  raw.end(stream);
  const [g, res] = await Promise.all([got, pump]);
  raw.destroy();
  return { got: g, res };
}

describe('sealed decoders under fuzzed streams', () => {
  it('agree with each other: the same verdict, only authenticated plaintext, never a crash', async () => {
    const keys = newSealedKeys();
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const cases = 120;
    let refused = 0;
    for (let i = 0; i < cases; i++) {
      const enc = new SealedEncoder(keys.rxKey, keys.rxIv);
      const sent = [randomBytes(1 + rand(3000)), randomBytes(1 + rand(70000))];
      // What the sender meant: every byte a pump writes must be a prefix of this.
      let intended = Buffer.concat(sent);
      const parts = sent.map((p) => enc.seal(p));
      if (rand(4) !== 0) parts.push(enc.end());
      let stream = Buffer.concat(parts);
      switch (rand(5)) {
        case 0: // flip one bit
          stream = Buffer.from(stream);
          stream[rand(stream.length)] ^= 1 << rand(8);
          break;
        case 1: // cut anywhere
          stream = stream.subarray(0, rand(stream.length));
          break;
        case 2: // random garbage of random length
          stream = randomBytes(rand(200));
          intended = Buffer.alloc(0);
          break;
        case 3: // trailing junk after the stream
          stream = Buffer.concat([stream, randomBytes(1 + rand(40))]);
          break;
        default: // left intact
      }
      // The reference verdict from the TS decoder alone.
      const dec = new SealedDecoder(keys.rxKey, keys.rxIv);
      const expected: Buffer[] = [];
      let verdict = 'ok';
      try {
        expected.push(...dec.push(stream).plain);
        dec.finish();
      } catch (err) {
        expect(err).toBeInstanceOf(SealedStreamError);
        verdict = (err as SealedStreamError).reason;
      }
      const all = Buffer.concat(expected);
      for (const impl of ['native', 'ts'] as const) {
        const { got, res } = await feed(impl, keys, stream);
        // Only authenticated plaintext, in order (a pump may drop good records that shared a read
        // with the bad one, and writes nothing after it).
        expect(intended.subarray(0, got.data.length).equals(got.data), `${impl} case ${i}`).toBe(true);
        if (verdict === 'ok') {
          expect(res.error, `${impl} case ${i}`).toBeUndefined();
          expect(got.ended).toBe(true);
          expect(got.data.length).toBe(all.length);
        } else {
          // Reset vs FIN is asserted above with a reader that can tell them apart (a Node socket
          // may report a reset as 'end'); here the pump's own verdict must match.
          expect(res.error, `${impl} case ${i} (${verdict})`).toBeDefined();
        }
      }
      if (verdict !== 'ok') refused++;
    }
    expect(refused).toBeGreaterThan(cases / 3);
  });
});

/** A worker thread that runs two native pumps and streams through them until terminated. */
const WORKER = `
import { register } from 'tsx/esm/api';
import { parentPort, workerData } from 'node:worker_threads';
register();
const { tcpPair } = await import(workerData.sockets);
const { startSealedPump, newSealedKeys, mirrorKeys, sealedPumpMode } = await import(workerData.pump);
const pa = await tcpPair(), pb = await tcpPair(), w = await tcpPair();
const keys = newSealedKeys();
startSealedPump(pa.server, w.client, keys);
startSealedPump(pb.client, w.server, mirrorKeys(keys));
let got = 0, told = false;
pb.server.on('data', (d) => {
  got += d.length;
  if (!told && got >= 4 << 20) { told = true; parentPort.postMessage({ mode: sealedPumpMode().mode, got }); }
});
pb.server.resume();
const buf = Buffer.alloc(1 << 20, 1);
const write = () => { while (pa.client.write(buf)); pa.client.once('drain', write); };
write();
`;

function openFds(): number {
  return fs.readdirSync('/proc/self/fd').length;
}

describe('sealed pump resources', () => {
  it('runs in worker threads (engine per thread); terminating one mid-stream leaves the process intact', async () => {
    const workerData = {
      sockets: new URL('../helpers/sockets.ts', import.meta.url).href,
      pump: new URL('../../src/tunnel/sealed-pump.ts', import.meta.url).href,
    };
    for (let i = 0; i < 2; i++) {
      const w = new Worker(WORKER, { eval: true, workerData });
      const said = await new Promise<{ mode: string; got: number }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
      });
      expect(said.mode).toBe('native');
      expect(said.got).toBeGreaterThanOrEqual(4 << 20);
      // Streams still flowing: the environment's cleanup hook stops its engine threads.
      await w.terminate();
    }
    // This thread's own pumps still work afterwards.
    const { appA, appB, pumpA, pumpB } = await chain('native', 'native');
    const gotB = collect(appB);
    appA.end('after workers');
    appB.on('end', () => appB.end());
    const [rb] = await Promise.all([gotB, pumpA, pumpB]);
    expect(rb.data.toString()).toBe('after workers');
  });

  it('1,000 short native pumps (sealed and splice) leave the fd count where it was', async () => {
    const server = net.createServer({ pauseOnConnect: true });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
    cleanups.push(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    const accepted: net.Socket[] = [];
    const waiters: Array<(s: net.Socket) => void> = [];
    server.on('connection', (s) => {
      const w = waiters.shift();
      if (w) w(s);
      else accepted.push(s);
    });
    const pair = async () => {
      const got = new Promise<net.Socket>((resolve) => {
        const s = accepted.shift();
        if (s) resolve(s);
        else waiters.push(resolve);
      });
      const client = net.connect(port, '127.0.0.1');
      await new Promise<void>((resolve) => client.once('connect', () => resolve()));
      return { client, server: await got };
    };
    const one = async (i: number) => {
      const p = await pair();
      const w = await pair();
      const keys = newSealedKeys();
      if (i % 2 === 0) {
        const res = startSealedPump(p.server, w.server, keys);
        const enc = new SealedEncoder(keys.rxKey, keys.rxIv);
        const app = collect(p.client);
        const raw = collect(w.client);
        w.client.end(Buffer.concat([enc.seal(Buffer.from(`hi ${i}`)), enc.end()]));
        p.client.end('x');
        const [g, r] = await Promise.all([app, raw, res]);
        expect(g.data.toString()).toBe(`hi ${i}`);
        expect(r.error).toBeUndefined();
      } else {
        const res = startSplicePump(p.server, w.server);
        const app = collect(p.client);
        const other = collect(w.client);
        p.client.end('ping');
        w.client.end('pong');
        const [g, o, r] = await Promise.all([app, other, res]);
        expect(g.data.toString() + o.data.toString()).toBe('pongping');
        expect(r.error).toBeUndefined();
      }
    };
    await one(0); // warm up: the engine threads and their epoll/eventfd exist from here on
    await one(1);
    const before = openFds();
    for (let batch = 0; batch < 1000; batch += 50) {
      await Promise.all(Array.from({ length: 50 }, (_, k) => one(batch + k)));
    }
    expect(openFds()).toBe(before);
  }, 60_000);
});
