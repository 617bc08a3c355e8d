// The tunnel frame codec: round trips, every malformed header/payload is a FrameError (never
// another exception, never a hang), and random or mutated byte streams never crash the parser.
import crypto from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ErrorCode } from '../../src/errors.ts';
import {
  decodeJson,
  decodeOpen,
  decodeWindow,
  encodeFrame,
  encodeOpen,
  encodeWindow,
  FrameDecoder,
  FrameError,
  FrameType,
  MAX_PAYLOAD,
} from '../../src/tunnel/frames.ts';
import { fuzzFrameStreams } from '../helpers/frame-fuzz.ts';
import { lcgRandom } from '../helpers/rng.ts';

describe('frame codec', () => {
  it('round-trips frames split at every byte boundary', () => {
    const open = encodeOpen({ node: 'node-b', src: 'node-a', ip: '10.2.0.5', port: 8080 });
    const wire = Buffer.concat([
      encodeFrame(FrameType.OPEN, 1, open),
      encodeFrame(FrameType.DATA, 1, Buffer.from('hello')),
      encodeFrame(FrameType.WINDOW, 1, encodeWindow(4096)),
      encodeFrame(FrameType.PING, 0, Buffer.alloc(8)),
      encodeFrame(FrameType.CLOSE, 1),
    ]);
    for (let cut = 0; cut <= wire.length; cut++) {
      const d = new FrameDecoder();
      const pieces = [...d.push(wire.subarray(0, cut)), ...d.push(wire.subarray(cut))];
      // DATA comes out in pieces as its bytes arrive: join consecutive pieces of one stream.
      const frames: typeof pieces = [];
      for (const f of pieces) {
        const last = frames.at(-1);
        if (f.type === FrameType.DATA && last?.type === FrameType.DATA && last.stream === f.stream)
          last.payload = Buffer.concat([last.payload, f.payload]);
        else frames.push({ ...f });
      }
      expect(pieces.every((f) => f.type !== FrameType.DATA || f.payload.length > 0)).toBe(true);
      expect(frames.map((f) => f.type)).toEqual([
        FrameType.OPEN,
        FrameType.DATA,
        FrameType.WINDOW,
        FrameType.PING,
        FrameType.CLOSE,
      ]);
      expect(decodeOpen(frames[0]!.payload)).toEqual({
        node: 'node-b',
        src: 'node-a',
        ip: '10.2.0.5',
        port: 8080,
      });
      expect(frames[1]!.payload.toString()).toBe('hello');
      expect(decodeWindow(frames[2]!.payload)).toBe(4096);
    }
  });

  it('rejects oversized, unknown and misplaced frames with the tunnel error code', () => {
    const big = Buffer.alloc(9);
    big.writeUInt32BE(MAX_PAYLOAD + 1, 0);
    big.writeUInt8(FrameType.DATA, 4);
    big.writeUInt32BE(1, 5);
    const cases = [
      big,
      encodeFrame(99 as never, 1),
      encodeFrame(FrameType.DATA, 0, Buffer.from('x')), // DATA on the connection stream
      encodeFrame(FrameType.HELLO, 3, Buffer.from('{}')), // HELLO on a stream
    ];
    for (const c of cases) {
      const err = (() => {
        try {
          new FrameDecoder().push(c);
        } catch (e) {
          return e;
        }
      })();
      expect(err).toBeInstanceOf(FrameError);
      expect((err as FrameError).code).toBe(ErrorCode.TUNNEL);
    }
  });

  it('rejects bad OPEN, WINDOW and JSON payloads', () => {
    const good = encodeOpen({ node: 'n', src: 's', ip: '1.2.3.4', port: 1 });
    for (const p of [
      good.subarray(0, good.length - 1),
      Buffer.concat([good, Buffer.from([0])]),
      Buffer.alloc(0),
    ])
      expect(() => decodeOpen(p)).toThrow(FrameError);
    expect(() => decodeOpen(encodeOpen({ node: 'n', src: 's', ip: '1.2.3.4', port: 0 }))).toThrow(FrameError);
    expect(() => decodeWindow(Buffer.alloc(3))).toThrow(FrameError);
    expect(() => decodeWindow(encodeWindow(0))).toThrow(FrameError);
    expect(() => decodeJson(Buffer.from('nope'))).toThrow(FrameError);
    expect(() => decodeJson(Buffer.from('[1]'))).toThrow(FrameError);
  });

  it('fuzz: random and mutated streams only ever yield frames or a FrameError', () => {
    const next = lcgRandom(12345);
    const valid = Buffer.concat([
      encodeFrame(FrameType.OPEN, 1, encodeOpen({ node: 'b', src: 'a', ip: '10.0.0.1', port: 80 })),
      encodeFrame(FrameType.DATA, 1, crypto.randomBytes(300)),
      encodeFrame(FrameType.WINDOW, 1, encodeWindow(300)),
      encodeFrame(FrameType.PEERS, 0, Buffer.from('{"peers":[]}')),
    ]);
    const { frames, streamErrors } = fuzzFrameStreams({
      next,
      valid,
      rounds: 3000,
      randomEveryOther: true,
      // Payload decoders must also fail only with FrameError.
      decodePayload: (f) => {
        if (f.type === FrameType.OPEN) decodeOpen(f.payload);
        if (f.type === FrameType.WINDOW) decodeWindow(f.payload);
        if (f.type === FrameType.PEERS || f.type === FrameType.HELLO) decodeJson(f.payload);
      },
    });
    expect(frames).toBeGreaterThan(100);
    expect(streamErrors).toBeGreaterThan(100);
  });
});
