// The sealed tunnel's control wire: SEALED_OPEN and DATA_POOL payloads round-trip and refuse bad
// lengths; the data hello parses, checks its proof in constant time, and refuses bad magic or
// versions; the token registry hands a connection over once, holds an early one until its token
// is registered, and refuses a bad proof without using the token up.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import {
  checkDataProof,
  DATA_HELLO_BYTES,
  DATA_VERSION,
  encodeDataHello,
  newToken,
  parseDataHello,
} from '../../src/tunnel/data-hello.ts';
import { DataTokens } from '../../src/tunnel/data-tokens.ts';
import {
  decodeDataPool,
  decodeSealedOpen,
  encodeDataPool,
  encodeSealedOpen,
  FrameError,
} from '../../src/tunnel/frames.ts';
import { newSealedKeys } from '../../src/tunnel/sealed-pump.ts';
import { memLogger } from '../helpers/tunnel-fixture.ts';

describe('sealed tunnel wire', () => {
  it('SEALED_OPEN and DATA_POOL round-trip and refuse bad lengths', () => {
    const open = {
      target: { node: 'b1', src: 'a1', ip: '10.0.0.7', port: 8080 },
      token: newToken(),
      keys: newSealedKeys(),
    };
    const back = decodeSealedOpen(encodeSealedOpen(open));
    expect(back.target).toEqual(open.target);
    expect(back.token.equals(open.token)).toBe(true);
    expect(back.keys.txKey.equals(open.keys.txKey) && back.keys.rxIv.equals(open.keys.rxIv)).toBe(true);
    const bytes = encodeSealedOpen(open);
    expect(() => decodeSealedOpen(bytes.subarray(0, bytes.length - 1))).toThrow(FrameError);
    expect(() => decodeSealedOpen(Buffer.concat([bytes, Buffer.alloc(1)]))).toThrow(FrameError);

    const pool = {
      picker: 'client' as const,
      proofKey: Buffer.alloc(32, 9),
      tokens: [newToken(), newToken()],
    };
    const p = decodeDataPool(encodeDataPool(pool));
    expect(p.picker).toBe('client');
    expect(p.tokens.map((t) => t.toString('hex'))).toEqual(pool.tokens.map((t) => t.toString('hex')));
    expect(decodeDataPool(encodeDataPool({ ...pool, picker: 'server' })).picker).toBe('server');
    const enc = encodeDataPool(pool);
    expect(() => decodeDataPool(enc.subarray(0, enc.length - 3))).toThrow(FrameError);
    expect(() => decodeDataPool(Buffer.concat([Buffer.from([7]), enc.subarray(1)]))).toThrow(FrameError);
  });

  it('data hello: parses, proves with the dialer key, refuses bad magic and versions', () => {
    const token = newToken();
    const key = Buffer.alloc(32, 1);
    const hello = encodeDataHello(token, key);
    expect(hello.length).toBe(DATA_HELLO_BYTES);
    const parsed = parseDataHello(hello);
    if ('error' in parsed) throw new Error(parsed.error);
    expect(parsed.token.equals(token)).toBe(true);
    expect(checkDataProof(token, parsed.proof, key)).toBe(true);
    expect(checkDataProof(token, parsed.proof, Buffer.alloc(32, 2))).toBe(false);
    expect(checkDataProof(newToken(), parsed.proof, key)).toBe(false);
    const badMagic = Buffer.from(hello);
    badMagic[0] = 0x46;
    expect(parseDataHello(badMagic)).toEqual({ error: 'not a data hello (bad magic)' });
    const badVersion = Buffer.from(hello);
    badVersion[4] = DATA_VERSION + 1;
    expect(parseDataHello(badVersion)).toMatchObject({ error: expect.stringMatching(/version 2/) });
    expect(parseDataHello(hello.subarray(0, 20))).toEqual({ error: 'data hello truncated' });
  });

  it('tokens: an early connection waits for its token, a bad proof keeps the token, a token works once', async () => {
    const mem = memLogger();
    const tokens = new DataTokens({ log: mem.log, ttlMs: 2000, waitMs: 1000 });
    const server = net.createServer({ pauseOnConnect: true }, (s) =>
      s
        .once('data', (first: Buffer) => {
          s.pause();
          tokens.accept(s, first);
        })
        .resume(),
    );
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as net.AddressInfo).port;
    const send = (hello: Buffer, extra = '') => {
      const c = net.connect(port, '127.0.0.1');
      c.on('error', () => {});
      c.write(Buffer.concat([hello, Buffer.from(extra)]));
      return c;
    };
    try {
      const token = newToken();
      const key = Buffer.alloc(32, 5);
      // The real dialer arrives before its token is registered, with a record right behind the hello.
      const early = send(encodeDataHello(token, key), 'first record');
      await new Promise((r) => setTimeout(r, 100));
      const s = await new Promise<net.Socket>((resolve) => tokens.expect(token, key, resolve, () => {}));
      // The bytes after the hello stay in the socket's read buffer for the pump.
      await new Promise((r) => setTimeout(r, 50));
      expect((s.read() as Buffer).toString()).toBe('first record');

      // A bad proof is refused and does not use the token up: the real dialer still gets through.
      const token2 = newToken();
      const claimed = new Promise<net.Socket>((resolve) => tokens.expect(token2, key, resolve, () => {}));
      const bad = send(encodeDataHello(token2, Buffer.alloc(32, 6)));
      await new Promise((r) => bad.once('close', r));
      expect(mem.lines.find((l) => l.includes('data connection rejected'))).toMatch(/bad proof/);
      const good = send(encodeDataHello(token2, key));
      const s2 = await claimed;
      expect(tokens.stats).toMatchObject({ claimed: 2, rejected: 1 });

      // Used once: the same hello again waits, then is refused as unknown.
      const again = send(encodeDataHello(token, key));
      await new Promise((r) => again.once('close', r));
      expect(mem.lines.join('')).toMatch(/unknown or expired token/);
      for (const x of [s, s2, early, good]) x.destroy();
    } finally {
      tokens.close();
      server.close();
    }
  });
});
