// The tunnel frame fuzzer shared by the frame and datagram-frame tests: mutated (and optionally
// purely random) byte streams fed to fresh FrameDecoders in random chunks.
import { type Frame, FrameDecoder, FrameError } from '../../src/tunnel/frames.ts';

export interface FrameFuzzResult {
  /** Frames the decoders yielded. */
  frames: number;
  /** Inputs the decoder itself refused (FrameError from push). */
  streamErrors: number;
  /** Yielded frames whose payload decoder refused them (FrameError from `decodePayload`). */
  payloadErrors: number;
}

/**
 * Runs `rounds` inputs through fresh FrameDecoders, each pushed in chunks of 1–64 bytes: `valid`
 * with 1–4 random bytes overwritten, or (with `randomEveryOther`, on even rounds) up to 200 random
 * bytes. Every yielded frame goes to `decodePayload`. Only FrameError may come out of the decoder
 * or the payload decoders; anything else is rethrown and fails the test.
 */
export function fuzzFrameStreams(opts: {
  next: () => number;
  valid: Buffer;
  rounds: number;
  randomEveryOther?: boolean;
  decodePayload: (frame: Frame) => void;
}): FrameFuzzResult {
  const { next, valid } = opts;
  const result: FrameFuzzResult = { frames: 0, streamErrors: 0, payloadErrors: 0 };
  for (let i = 0; i < opts.rounds; i++) {
    let input: Buffer;
    if (opts.randomEveryOther && i % 2 === 0) {
      input = Buffer.alloc(Math.floor(next() * 200));
      for (let j = 0; j < input.length; j++) input[j] = Math.floor(next() * 256);
    } else {
      input = Buffer.from(valid);
      const flips = 1 + Math.floor(next() * 4);
      for (let j = 0; j < flips; j++) input[Math.floor(next() * input.length)] = Math.floor(next() * 256);
    }
    const d = new FrameDecoder();
    try {
      let off = 0;
      while (off < input.length) {
        const n = 1 + Math.floor(next() * 64);
        for (const f of d.push(input.subarray(off, off + n))) {
          result.frames++;
          try {
            opts.decodePayload(f);
          } catch (e) {
            if (!(e instanceof FrameError)) throw e;
            result.payloadErrors++;
          }
        }
        off += n;
      }
    } catch (e) {
      if (!(e instanceof FrameError)) throw e;
      result.streamErrors++;
    }
  }
  return result;
}
