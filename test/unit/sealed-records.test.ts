// The sealed record codec (spec-sealed): round trips, strict bounds and every refusal reason.
import { createCipheriv, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.ts';
import {
  MAX_PLAINTEXT,
  recordNonce,
  SealedDecoder,
  SealedEncoder,
  SealedStreamError,
} from '../../src/tunnel/sealed-records.ts';

const key = Buffer.alloc(32, 7);
const iv = Buffer.from('000102030405060708090a0b', 'hex');

function decodeAll(stream: Buffer, pieces = 1): { plain: Buffer; ended: boolean } {
  const dec = new SealedDecoder(key, iv);
  const out: Buffer[] = [];
  let ended = false;
  const step = Math.ceil(stream.length / pieces);
  for (let off = 0; off < stream.length; off += step) {
    const r = dec.push(stream.subarray(off, off + step));
    out.push(...r.plain);
    ended = r.ended;
  }
  return { plain: Buffer.concat(out), ended };
}

function failure(fn: () => unknown): SealedStreamError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SealedStreamError);
    expect((err as SealedStreamError).code).toBe(ErrorCode.TUNNEL);
    return err as SealedStreamError;
  }
  throw new Error('expected a SealedStreamError');
}

describe('sealed records', () => {
  it('derives the nonce as IV XOR seq in the last 8 bytes', () => {
    expect(recordNonce(iv, 0n).toString('hex')).toBe('000102030405060708090a0b');
    expect(recordNonce(iv, 1n).toString('hex')).toBe('000102030405060708090a0a');
    expect(recordNonce(iv, 0x0102030405060708n).toString('hex')).toBe('00010203050705030d0f0d03');
  });

  it('matches a record sealed by hand with node:crypto (header AAD, tag last)', () => {
    const enc = new SealedEncoder(key, iv);
    enc.seal(Buffer.from('first'));
    const rec = enc.seal(Buffer.from('hello'));
    const header = Buffer.from([0, 0, 0, 5 + 16]);
    const c = createCipheriv('aes-256-gcm', key, recordNonce(iv, 1n));
    c.setAAD(header);
    const body = Buffer.concat([c.update('hello'), c.final(), c.getAuthTag()]);
    expect(rec.equals(Buffer.concat([header, body]))).toBe(true);
  });

  it('round-trips any split of the stream, with 64 KiB records and the end record', () => {
    const data = randomBytes(3 * MAX_PLAINTEXT + 1234);
    const enc = new SealedEncoder(key, iv);
    const stream = Buffer.concat([enc.seal(data.subarray(0, 10)), enc.seal(data.subarray(10)), enc.end()]);
    expect(enc.records).toBe(6n); // 1 + 4 (split at 64 KiB) + end
    for (const pieces of [1, 7, 1000, stream.length]) {
      const r = decodeAll(stream, pieces);
      expect(r.ended).toBe(true);
      expect(r.plain.equals(data)).toBe(true);
    }
  });

  it('never returns the plaintext of a tampered record nor anything after it', () => {
    const enc = new SealedEncoder(key, iv);
    const good = enc.seal(Buffer.from('good'));
    const bad = enc.seal(Buffer.from('bad!'));
    const after = enc.seal(Buffer.from('after'));
    bad[bad.length - 20] = (bad[bad.length - 20] ?? 0) ^ 1;
    const dec = new SealedDecoder(key, iv);
    expect(Buffer.concat(dec.push(good).plain).toString()).toBe('good');
    expect(failure(() => dec.push(Buffer.concat([bad, after]))).reason).toBe('auth');
    // Stays failed.
    expect(failure(() => dec.push(Buffer.from('x'))).reason).toBe('auth');
  });

  it('refuses a reordered or replayed record (the nonce follows seq)', () => {
    const enc = new SealedEncoder(key, iv);
    const r0 = enc.seal(Buffer.from('zero'));
    const r1 = enc.seal(Buffer.from('one'));
    expect(failure(() => new SealedDecoder(key, iv).push(r1)).reason).toBe('auth');
    expect(failure(() => new SealedDecoder(key, iv).push(Buffer.concat([r0, r0]))).reason).toBe('auth');
  });

  it('refuses a header N out of range before buffering the body', () => {
    const big = Buffer.alloc(4);
    big.writeUInt32BE(MAX_PLAINTEXT + 17);
    expect(failure(() => new SealedDecoder(key, iv).push(big)).reason).toBe('length');
    expect(failure(() => new SealedDecoder(key, iv).push(Buffer.from([0, 0, 0, 15]))).reason).toBe('length');
    expect(failure(() => new SealedDecoder(key, iv).push(Buffer.from([0xff, 0xff, 0xff, 0xff]))).reason).toBe(
      'length',
    );
  });

  it('accepts the largest record (N = 65536 + 16)', () => {
    const enc = new SealedEncoder(key, iv);
    const data = randomBytes(MAX_PLAINTEXT);
    const rec = enc.seal(data);
    expect(rec.readUInt32BE(0)).toBe(MAX_PLAINTEXT + 16);
    expect(decodeAll(Buffer.concat([rec, enc.end()])).plain.equals(data)).toBe(true);
  });

  it('refuses any byte after the end record, and sealing after end', () => {
    const enc = new SealedEncoder(key, iv);
    const stream = Buffer.concat([enc.seal(Buffer.from('x')), enc.end()]);
    expect(failure(() => enc.seal(Buffer.from('y'))).reason).toBe('after-end');
    const dec = new SealedDecoder(key, iv);
    expect(dec.push(stream).ended).toBe(true);
    expect(failure(() => dec.push(Buffer.from([0]))).reason).toBe('after-end');
    // In the same chunk as the end record too.
    expect(
      failure(() => new SealedDecoder(key, iv).push(Buffer.concat([stream, Buffer.from([0])]))).reason,
    ).toBe('after-end');
  });

  it('calls EOF without an end record a truncation', () => {
    const enc = new SealedEncoder(key, iv);
    const rec = enc.seal(Buffer.from('hello'));
    const whole = new SealedDecoder(key, iv);
    whole.push(rec);
    expect(failure(() => whole.finish()).reason).toBe('truncated');
    const partial = new SealedDecoder(key, iv);
    expect(partial.push(rec.subarray(0, rec.length - 1)).plain).toEqual([]);
    expect(failure(() => partial.finish()).reason).toBe('truncated');
    const ok = new SealedDecoder(key, iv);
    ok.push(Buffer.concat([rec, enc.end()]));
    expect(() => ok.finish()).not.toThrow();
  });

  it('refuses keys of the wrong size with a clear error', () => {
    expect(() => new SealedEncoder(Buffer.alloc(16), iv)).toThrow(/32-byte key/);
    expect(() => new SealedDecoder(key, Buffer.alloc(8))).toThrow(/12-byte IV/);
  });
});
