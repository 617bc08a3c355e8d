// Sealed records (issue 12, spec-sealed): the byte format of a tunnel data connection, one
// direction. record = u32 BE N, then N bytes = AES-256-GCM(plaintext) || 16-byte tag, AAD = the
// 4 header bytes, nonce = IV XOR seq (u64 BE in the last 8 bytes), seq = 0, 1, ... An empty
// plaintext (N = 16) ends the stream. This is the TS twin of native/src/tunnel: the fallback when
// the addon is missing and the parity reference for the native pump.
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { EdgemeshError, ErrorCode } from '../errors.ts';

/** Bytes of a record header (the big-endian body length N). */
export const HEADER_BYTES = 4;
/** Bytes of the GCM tag at the end of every body. */
export const TAG_BYTES = 16;
/** Largest plaintext one record carries. */
export const MAX_PLAINTEXT = 65536;
/** Largest valid body length N. */
export const MAX_BODY = MAX_PLAINTEXT + TAG_BYTES;
/** AES-256 key length. */
export const KEY_BYTES = 32;
/** GCM IV length. */
export const IV_BYTES = 12;

/** Why a sealed stream was refused; `reason` is stable for tests and counters. */
export type SealedFailure = 'auth' | 'length' | 'after-end' | 'truncated';

/** A refused sealed stream: never accompanied by the plaintext of the bad record. */
export class SealedStreamError extends EdgemeshError {
  readonly reason: SealedFailure;
  constructor(reason: SealedFailure, message: string) {
    super(ErrorCode.TUNNEL, `sealed stream: ${message}`);
    this.name = 'SealedStreamError';
    this.reason = reason;
  }
}

function checkKey(key: Buffer, iv: Buffer): void {
  if (key.length !== KEY_BYTES || iv.length !== IV_BYTES) {
    throw new EdgemeshError(
      ErrorCode.TUNNEL,
      `sealed keys: need a ${KEY_BYTES}-byte key and ${IV_BYTES}-byte IV`,
    );
  }
}

/** The nonce of record `seq`: the IV with its last 8 bytes XORed with seq (big-endian). */
export function recordNonce(iv: Buffer, seq: bigint): Buffer {
  const nonce = Buffer.from(iv);
  const low = nonce.readBigUInt64BE(4) ^ BigInt.asUintN(64, seq);
  nonce.writeBigUInt64BE(low, 4);
  return nonce;
}

/** Seals plaintext into records for one direction (seq counts up from 0). */
export class SealedEncoder {
  private seq = 0n;
  private ended = false;
  constructor(
    private readonly key: Buffer,
    private readonly iv: Buffer,
  ) {
    checkKey(key, iv);
  }

  /** Records sealed so far (the next record's sequence number). */
  get records(): bigint {
    return this.seq;
  }

  /** Seals `plain` as one or more records of at most MAX_PLAINTEXT; empty input gives nothing. */
  seal(plain: Buffer): Buffer {
    if (this.ended) throw new SealedStreamError('after-end', 'seal after end of stream');
    if (plain.length === 0) return Buffer.alloc(0);
    const parts: Buffer[] = [];
    for (let off = 0; off < plain.length; off += MAX_PLAINTEXT) {
      parts.push(this.record(plain.subarray(off, Math.min(plain.length, off + MAX_PLAINTEXT))));
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }

  /** The end-of-stream record (empty plaintext); nothing may be sealed after it. */
  end(): Buffer {
    if (this.ended) throw new SealedStreamError('after-end', 'end after end of stream');
    const rec = this.record(Buffer.alloc(0));
    this.ended = true;
    return rec;
  }

  private record(plain: Buffer): Buffer {
    const out = Buffer.allocUnsafe(HEADER_BYTES + plain.length + TAG_BYTES);
    out.writeUInt32BE(plain.length + TAG_BYTES, 0);
    const cipher = createCipheriv('aes-256-gcm', this.key, recordNonce(this.iv, this.seq));
    this.seq += 1n;
    cipher.setAAD(out.subarray(0, HEADER_BYTES));
    let n = HEADER_BYTES;
    n += cipher.update(plain).copy(out, n);
    n += cipher.final().copy(out, n);
    cipher.getAuthTag().copy(out, n);
    return out;
  }
}

/** What one push into the decoder yields: authenticated plaintext pieces, and whether the end record came. */
export interface DecodeStep {
  plain: Buffer[];
  ended: boolean;
}

/**
 * Streaming record decoder for one direction with strict bounds: it buffers at most one record,
 * and throws SealedStreamError (never returning the bad record's plaintext, nor any later bytes).
 * After a throw the decoder stays failed.
 */
export class SealedDecoder {
  private seq = 0n;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private ended = false;
  private failed: SealedStreamError | undefined;
  constructor(
    private readonly key: Buffer,
    private readonly iv: Buffer,
  ) {
    checkKey(key, iv);
  }

  /** Records opened so far (including the end record). */
  get records(): bigint {
    return this.seq;
  }

  /** True once the end-of-stream record was opened. */
  get isEnded(): boolean {
    return this.ended;
  }

  /** Feeds received bytes; returns the plaintext of every complete record in them. */
  push(chunk: Buffer): DecodeStep {
    if (this.failed) throw this.failed;
    const plain: Buffer[] = [];
    if (chunk.length === 0) return { plain, ended: this.ended };
    if (this.ended) this.fail('after-end', 'bytes after the end-of-stream record');
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    for (;;) {
      if (this.pendingBytes < HEADER_BYTES) break;
      const head = this.peek(HEADER_BYTES);
      const n = head.readUInt32BE(0);
      if (n < TAG_BYTES || n > MAX_BODY) this.fail('length', `record length ${n} out of range`);
      if (this.pendingBytes < HEADER_BYTES + n) break;
      const rec = this.take(HEADER_BYTES + n);
      const body = rec.subarray(HEADER_BYTES, HEADER_BYTES + n - TAG_BYTES);
      const tag = rec.subarray(HEADER_BYTES + n - TAG_BYTES);
      let opened: Buffer;
      try {
        const d = createDecipheriv('aes-256-gcm', this.key, recordNonce(this.iv, this.seq));
        d.setAAD(rec.subarray(0, HEADER_BYTES));
        d.setAuthTag(tag);
        const a = d.update(body);
        const b = d.final();
        opened = b.length === 0 ? a : Buffer.concat([a, b]);
      } catch {
        this.fail('auth', `record ${this.seq} failed authentication`);
      }
      this.seq += 1n;
      if (opened.length === 0) {
        this.ended = true;
        if (this.pendingBytes > 0) this.fail('after-end', 'bytes after the end-of-stream record');
        break;
      }
      plain.push(opened);
    }
    return { plain, ended: this.ended };
  }

  /** The sealed stream hit EOF: throws 'truncated' unless the end record came. */
  finish(): void {
    if (this.failed) throw this.failed;
    if (!this.ended) {
      this.fail(
        'truncated',
        this.pendingBytes > 0 ? 'EOF inside a record' : 'EOF without an end-of-stream record',
      );
    }
  }

  private fail(reason: SealedFailure, message: string): never {
    this.pending = [];
    this.pendingBytes = 0;
    this.failed = new SealedStreamError(reason, message);
    throw this.failed;
  }

  /** The first `n` pending bytes, without consuming them (copies only when they span chunks). */
  private peek(n: number): Buffer {
    const first = this.pending[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const joined = Buffer.concat(this.pending);
    this.pending = [joined];
    return joined.subarray(0, n);
  }

  /** Consumes the first `n` pending bytes. */
  private take(n: number): Buffer {
    let first = this.pending[0]!;
    if (first.length < n) {
      first = Buffer.concat(this.pending);
      this.pending = [first];
    }
    const out = first.subarray(0, n);
    if (first.length === n) this.pending.shift();
    else this.pending[0] = first.subarray(n);
    this.pendingBytes -= n;
    return out;
  }
}
