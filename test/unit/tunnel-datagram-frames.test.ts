// The datagram frames (DGRAM_OPEN 13, DGRAM 14): a DGRAM always comes out whole however its bytes
// are split (datagram boundaries survive TLS record and read boundaries), the largest UDP payload
// fits and nothing larger can be framed, both are stream frames only, and random or mutated
// streams of them yield only frames or a FrameError.
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.ts';
import {
  decodeOpen,
  encodeFrame,
  encodeOpen,
  FrameDecoder,
  FrameError,
  FrameType,
  MAX_PAYLOAD,
} from '../../src/tunnel/frames.ts';
import { fuzzFrameStreams } from '../helpers/frame-fuzz.ts';
import { lcgRandom } from '../helpers/rng.ts';

const target = { node: 'node-b', src: 'node-a', ip: '10.2.0.2', port: 5353 };

describe('datagram frames', () => {
  it('DGRAM_OPEN and DGRAM round-trip whole, split at every byte boundary', () => {
    const datagrams = [Buffer.alloc(0), Buffer.from('x'), crypto.randomBytes(1472), crypto.randomBytes(3000)];
    const wire = Buffer.concat([
      encodeFrame(FrameType.DGRAM_OPEN, 3, encodeOpen(target)),
      ...datagrams.map((d) => encodeFrame(FrameType.DGRAM, 3, d)),
    ]);
    // Every cut through the headers and the small frames, then every 61st byte.
    for (let cut = 1; cut < wire.length; cut += cut < 160 ? 1 : 61) {
      const d = new FrameDecoder();
      const frames = [...d.push(wire.subarray(0, cut)), ...d.push(wire.subarray(cut))];
      expect(frames.map((f) => f.type)).toEqual([
        FrameType.DGRAM_OPEN,
        ...datagrams.map(() => FrameType.DGRAM),
      ]);
      expect(decodeOpen(frames[0]!.payload)).toEqual(target);
      // One frame per datagram, never pieces (unlike DATA).
      frames.slice(1).forEach((f, i) => {
        expect(f.stream).toBe(3);
        expect(f.payload.equals(datagrams[i]!)).toBe(true);
      });
    }
  });

  it('the largest UDP payload fits in one DGRAM; a larger frame is a FrameError', () => {
    const max = crypto.randomBytes(65_507);
    const one = new FrameDecoder().push(encodeFrame(FrameType.DGRAM, 5, max));
    expect(one).toHaveLength(1);
    expect(one[0]!.payload.equals(max)).toBe(true);
    expect(new FrameDecoder().push(encodeFrame(FrameType.DGRAM, 5, Buffer.alloc(MAX_PAYLOAD)))).toHaveLength(
      1,
    );
    const tooBig = encodeFrame(FrameType.DGRAM, 5, undefined, MAX_PAYLOAD + 1);
    expect(() => new FrameDecoder().push(tooBig)).toThrow(FrameError);
  });

  it('DGRAM and DGRAM_OPEN on the connection stream (0) are malformed, with the tunnel error code', () => {
    for (const type of [FrameType.DGRAM, FrameType.DGRAM_OPEN]) {
      let err: unknown;
      try {
        new FrameDecoder().push(encodeFrame(type, 0, Buffer.from('x')));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(FrameError);
      expect((err as FrameError).code).toBe(ErrorCode.TUNNEL);
    }
    // A DGRAM_OPEN target is an OPEN target: truncated or port 0 is malformed.
    expect(() => decodeOpen(encodeOpen(target).subarray(0, 5))).toThrow(FrameError);
    expect(() => decodeOpen(encodeOpen({ ...target, port: 0 }))).toThrow(FrameError);
  });

  it('fuzz: random and mutated datagram streams only ever yield frames or a FrameError', () => {
    const next = lcgRandom(4242);
    const valid = Buffer.concat([
      encodeFrame(FrameType.DGRAM_OPEN, 1, encodeOpen(target)),
      encodeFrame(FrameType.DGRAM, 1, crypto.randomBytes(200)),
      encodeFrame(FrameType.DGRAM, 1, Buffer.alloc(0)),
      encodeFrame(FrameType.RESET, 1, Buffer.from('idle')),
    ]);
    const { frames, streamErrors, payloadErrors } = fuzzFrameStreams({
      next,
      valid,
      rounds: 3000,
      decodePayload: (f) => {
        if (f.type === FrameType.DGRAM_OPEN) decodeOpen(f.payload);
      },
    });
    // Both outcomes happen: the fuzzer reaches the payload decoders and the header checks.
    expect(frames).toBeGreaterThan(1000);
    expect(streamErrors + payloadErrors).toBeGreaterThan(100);
  });
});
