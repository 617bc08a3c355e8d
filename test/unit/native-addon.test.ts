import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Piscina } from 'piscina';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.ts';
import { addonCandidates, loadNative, requireNative } from '../../src/native/index.ts';
import { repoRoot } from '../helpers/cli.ts';
import { type SocketPair, socketFd, tcpPair } from '../helpers/sockets.ts';

const pairs: SocketPair[] = [];
afterEach(() => {
  for (const p of pairs.splice(0)) p.close();
});

/** Sends `payload` into a pair's client, splices it from the paused server side to a second pair. */
async function spliceThrough(run: (inFd: number, outFd: number, bytes: number) => Promise<number> | number) {
  const a = await tcpPair();
  const b = await tcpPair();
  pairs.push(a, b);
  const payload = crypto.randomBytes(3 * 1024 * 1024 + 17);
  const received: Buffer[] = [];
  let receivedBytes = 0;
  const done = new Promise<void>((resolve) =>
    b.server.on('data', (d: Buffer) => {
      received.push(d);
      receivedBytes += d.length;
      if (receivedBytes >= payload.length) resolve();
    }),
  );
  b.server.resume();
  a.client.write(payload);
  // a.server is paused: only native code reads it; b.client's fd is written natively.
  const moved = await run(socketFd(a.server), socketFd(b.client), payload.length);
  await done;
  expect(moved).toBe(payload.length);
  expect(Buffer.concat(received).equals(payload)).toBe(true);
}

describe('native addon', () => {
  it('both builds (node-gyp and cmake-js) produced a loadable addon', () => {
    const [gyp, cmake] = addonCandidates().slice(-2);
    for (const file of [gyp!, cmake!]) {
      expect(fs.existsSync(file), `${file} exists`).toBe(true);
      const probe = execFileSync(
        process.execPath,
        ['-e', `console.log(require(${JSON.stringify(file)}).version())`],
        { encoding: 'utf8' },
      );
      expect(probe.trim()).toBe('0.1.0');
    }
  });

  it('loads in the main thread and splices bytes between two sockets', async () => {
    const native = requireNative();
    expect(loadNative().path).toBeDefined();
    await spliceThrough((inFd, outFd, bytes) => native.spliceCopy(inFd, outFd, bytes, 1 << 20));
  });

  it('loads in a piscina worker thread and splices there', async () => {
    const pool = new Piscina({
      filename: path.join(repoRoot, 'test/helpers/native-worker.mjs'),
      maxThreads: 2,
    });
    try {
      await spliceThrough(async (inFd, outFd, bytes) => {
        const r = (await pool.run({ inFd, outFd, bytes })) as { version: string; moved: number };
        expect(r.version).toBe('0.1.0');
        return r.moved;
      });
    } finally {
      await pool.destroy();
    }
  });

  it('maps native failures to stable error codes', () => {
    const native = requireNative();
    expect(() => native.spliceCopy(-1, 1, 1, 0)).toThrow(
      expect.objectContaining({ code: ErrorCode.NATIVE_USAGE }),
    );
    try {
      native.originalDst(0x7fff);
      expect.unreachable();
    } catch (err) {
      expect(err).toMatchObject({
        code: ErrorCode.NATIVE_SYSCALL,
        syscall: 'getsockopt(SO_ORIGINAL_DST)',
        errno: 9,
      });
    }
  });

  it('native unit tests (cmake-js build) pass', () => {
    const bin = path.join(repoRoot, 'build/cmake/native_tests');
    const out = execFileSync(bin, { encoding: 'utf8' });
    expect(out).toMatch(/^\d+ passed, 0 failed$/m);
  });
});
