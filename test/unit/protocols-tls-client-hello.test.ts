// The ClientHello parser against real ClientHellos (captured from node's TLS client, fragmented in
// every way) and against random and mutated input: it must never throw and never claim a wrong SNI.
import net from 'node:net';
import tls from 'node:tls';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseClientHello } from '../../src/protocols/index.ts';

/** The first bytes a real TLS client sends (its ClientHello records). */
async function captureHello(options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const got = new Promise<Buffer>((resolve) =>
    server.once('connection', (s) => {
      const chunks: Buffer[] = [];
      s.on('data', (d) => {
        chunks.push(d);
        const all = Buffer.concat(chunks);
        if (parseClientHello(all).status !== 'incomplete' || all.length > 65536) {
          resolve(all);
          s.destroy();
        }
      });
    }),
  );
  const c = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, ...options });
  c.on('error', () => {});
  const hello = await got;
  c.destroy();
  server.close();
  return hello;
}

/** Re-frames one handshake message into records of at most `size` bytes each. */
function refragment(hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let off = 0; off < body.length; off += size) {
    const part = body.subarray(off, off + size);
    const h = Buffer.from([0x16, 0x03, 0x01, 0, 0]);
    h.writeUInt16BE(part.length, 3);
    out.push(h, part);
  }
  return Buffer.concat(out);
}

let withSni: Buffer;
let withAlpn: Buffer;

beforeAll(async () => {
  withSni = await captureHello({ servername: 'Shop.Example.com' });
  withAlpn = await captureHello({ servername: 'api.example.com', ALPNProtocols: ['h2', 'http/1.1'] });
});

describe('parseClientHello', () => {
  it('reads SNI (lower-cased) and ALPN from real ClientHellos', () => {
    const a = parseClientHello(withSni);
    expect(a).toMatchObject({ status: 'complete', sni: 'shop.example.com', bytes: withSni.length });
    const b = parseClientHello(withAlpn);
    expect(b).toMatchObject({ status: 'complete', sni: 'api.example.com', alpn: ['h2', 'http/1.1'] });
  });

  it('says incomplete for every proper prefix, complete at the end', () => {
    for (let n = 0; n < withSni.length; n++)
      expect(parseClientHello(withSni.subarray(0, n)).status).toBe('incomplete');
  });

  it('reassembles a ClientHello split over many small records', () => {
    for (const size of [1, 7, 100, 512]) {
      const framed = refragment(withAlpn, size);
      expect(parseClientHello(framed)).toMatchObject({ status: 'complete', sni: 'api.example.com' });
      expect(parseClientHello(framed.subarray(0, framed.length - 1)).status).toBe('incomplete');
    }
  });

  it('rejects what is not TLS at once (HTTP, SSH banners)', () => {
    expect(parseClientHello(Buffer.from('GET / HTTP/1.1\r\n'))).toMatchObject({ status: 'invalid' });
    expect(parseClientHello(Buffer.from('SSH-2.0-OpenSSH\r\n'))).toMatchObject({ status: 'invalid' });
    expect(parseClientHello(Buffer.from([0x16]))).toEqual({ status: 'incomplete' });
  });

  it('fuzz: random and mutated input never throws and never yields a malformed SNI', () => {
    const iterations = Number(process.env.EDGEMESH_FUZZ_ITERATIONS ?? 3000);
    let seed = 12345;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const statuses = new Set<string>();
    for (let i = 0; i < iterations; i++) {
      let input: Buffer;
      if (i % 3 === 0) {
        input = Buffer.alloc(Math.floor(rand() * 600));
        for (let j = 0; j < input.length; j++) input[j] = Math.floor(rand() * 256);
        if (rand() < 0.5 && input.length > 5) input[0] = 0x16;
      } else {
        input = Buffer.from(i % 3 === 1 ? withSni : withAlpn);
        const flips = 1 + Math.floor(rand() * 4);
        for (let f = 0; f < flips; f++) input[Math.floor(rand() * input.length)] = Math.floor(rand() * 256);
        if (rand() < 0.2) input = input.subarray(0, Math.floor(rand() * input.length));
      }
      const r = parseClientHello(input);
      statuses.add(r.status);
      if (r.status === 'complete' && r.sni !== undefined) {
        expect(r.sni).toMatch(/^[a-z0-9_.-]+$/);
        expect(r.sni.length).toBeLessThanOrEqual(253);
      }
    }
    // The corpus exercised every outcome.
    expect(statuses).toEqual(new Set(['complete', 'incomplete', 'invalid']));
  });
});
