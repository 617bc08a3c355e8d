// The tunnel's wire format: length-prefixed frames multiplexing many streams over one TLS
// connection. Header: u32 payload length, u8 type, u32 stream id (big endian), then the payload.
// Anything that does not parse is a FrameError: the caller closes that one tunnel and counts it.
import { EdgemeshError, ErrorCode } from '../errors.ts';

/** Frame types. Stream 0 carries the connection-level frames (HELLO, PEERS, PING, AUTH_FAIL). */
export const FrameType = {
  HELLO: 1,
  OPEN: 2,
  DATA: 3,
  WINDOW: 4,
  CLOSE: 5,
  RESET: 6,
  PING: 7,
  PONG: 8,
  PEERS: 9,
  AUTH_FAIL: 10,
  /** Opens a stream whose bytes go over its own sealed data connection (only to `sealed-v1` peers). */
  SEALED_OPEN: 11,
  /** A client announces idle data connections it is about to dial (tokens + their proof key). */
  DATA_POOL: 12,
  /** Opens a datagram flow toward an OPEN target (only to `dgram-v1` peers); it ends with RESET. */
  DGRAM_OPEN: 13,
  /** One whole datagram of a flow: never split, at most MAX_PAYLOAD bytes (UDP's 65,507 fit). */
  DGRAM: 14,
} as const;

export type FrameTypeValue = (typeof FrameType)[keyof typeof FrameType];

/** Header bytes before every payload. */
export const HEADER_SIZE = 9;
/** Largest payload a receiver accepts (control frames are small; DATA at most MAX_DATA). */
export const MAX_PAYLOAD = 64 * 1024;
/** Largest DATA payload a sender produces: as large as receivers accept, fewer frames per byte. */
export const MAX_DATA = MAX_PAYLOAD;

/** One decoded frame. */
export interface Frame {
  type: FrameTypeValue;
  stream: number;
  payload: Buffer;
}

/** Where an OPEN asks the far end to connect: an endpoint on node `node`, requested by `src`. */
export interface OpenTarget {
  node: string;
  src: string;
  ip: string;
  port: number;
}

/** A malformed frame; the tunnel it came from is closed. */
export class FrameError extends EdgemeshError {
  constructor(message: string) {
    super(ErrorCode.TUNNEL, `malformed tunnel frame: ${message}`);
    this.name = 'FrameError';
  }
}

const validTypes = new Set<number>(Object.values(FrameType));
/** Stream ids that carry control frames only. */
const connectionTypes = new Set<number>([
  FrameType.HELLO,
  FrameType.PING,
  FrameType.PONG,
  FrameType.PEERS,
  FrameType.AUTH_FAIL,
  FrameType.DATA_POOL,
]);

/** Encodes one frame (header + payload) into a single buffer. */
export function encodeFrame(
  type: FrameTypeValue,
  stream: number,
  payload: Buffer = EMPTY,
  /** With no payload given: write only the header of a frame whose payload has this length. */
  headerOnlyLength?: number,
): Buffer {
  const out = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  out.writeUInt32BE(headerOnlyLength ?? payload.length, 0);
  out.writeUInt8(type, 4);
  out.writeUInt32BE(stream >>> 0, 5);
  payload.copy(out, HEADER_SIZE);
  return out;
}

const EMPTY = Buffer.alloc(0);

/**
 * Incremental decoder: feed it bytes as they arrive, get frames out; throws FrameError. A DATA
 * frame's payload is handed out in pieces as its bytes arrive (slices of the input, never copied:
 * a 64 KiB frame spans several TLS records); every other frame comes out whole.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Payload bytes still to come of the DATA frame being passed through, and its stream. */
  private dataLeft = 0;
  private dataStream = 0;

  /** Appends `data` and returns every frame (or DATA piece) now available, in order. */
  push(data: Buffer): Frame[] {
    if (data.length > 0) {
      this.chunks.push(data);
      this.buffered += data.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.dataLeft > 0) {
        if (this.buffered === 0) break;
        const first = this.chunks[0]!;
        const n = Math.min(this.dataLeft, first.length);
        frames.push({ type: FrameType.DATA, stream: this.dataStream, payload: first.subarray(0, n) });
        this.consume(n);
        this.dataLeft -= n;
        continue;
      }
      if (this.buffered < HEADER_SIZE) break;
      const head = this.header();
      const length = head.readUInt32BE(0);
      const type = head.readUInt8(4);
      const stream = head.readUInt32BE(5);
      if (length > MAX_PAYLOAD) throw new FrameError(`payload of ${length} bytes exceeds ${MAX_PAYLOAD}`);
      if (!validTypes.has(type)) throw new FrameError(`unknown frame type ${type}`);
      if (connectionTypes.has(type) !== (stream === 0))
        throw new FrameError(`frame type ${type} on stream ${stream}`);
      if (type === FrameType.DATA && length > 0) {
        this.consume(HEADER_SIZE);
        this.dataLeft = length;
        this.dataStream = stream;
        continue;
      }
      if (this.buffered < HEADER_SIZE + length) break;
      this.consume(HEADER_SIZE);
      frames.push({ type: type as FrameTypeValue, stream, payload: this.take(length) });
    }
    return frames;
  }

  /** The next 9 bytes (copied only when they span chunks). */
  private header(): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= HEADER_SIZE) return first;
    const out = Buffer.allocUnsafe(HEADER_SIZE);
    let have = 0;
    for (let i = 0; have < HEADER_SIZE; i++) have += this.chunks[i]!.copy(out, have, 0);
    return out;
  }

  /** Drops `n` buffered bytes. */
  private consume(n: number): void {
    this.buffered -= n;
    while (n > 0) {
      const first = this.chunks[0]!;
      if (first.length <= n) {
        n -= first.length;
        this.chunks.shift();
      } else {
        this.chunks[0] = first.subarray(n);
        n = 0;
      }
    }
  }

  /** The next `n` bytes as one buffer (control frames: small), consumed. */
  private take(n: number): Buffer {
    if (n === 0) return EMPTY;
    const first = this.chunks[0]!;
    let out: Buffer;
    if (first.length >= n) out = first.subarray(0, n);
    else {
      out = Buffer.allocUnsafe(n);
      let have = 0;
      for (let i = 0; have < n; i++)
        have += this.chunks[i]!.copy(out, have, 0, Math.min(this.chunks[i]!.length, n - have));
    }
    this.consume(n);
    return out;
  }
}

/** OPEN payload: four length-prefixed fields (node, src, ip as u8-length strings; port u16). */
export function encodeOpen(t: OpenTarget): Buffer {
  const parts: Buffer[] = [];
  for (const s of [t.node, t.src, t.ip]) {
    const b = Buffer.from(s, 'utf8');
    if (b.length > 255) throw new FrameError('OPEN field longer than 255 bytes');
    parts.push(Buffer.from([b.length]), b);
  }
  const port = Buffer.alloc(2);
  port.writeUInt16BE(t.port);
  parts.push(port);
  return Buffer.concat(parts);
}

/** Parses an OPEN payload; throws FrameError when it is truncated, padded or out of range. */
export function decodeOpen(p: Buffer): OpenTarget {
  let off = 0;
  const str = (): string => {
    if (off >= p.length) throw new FrameError('OPEN truncated');
    const n = p[off]!;
    if (off + 1 + n > p.length) throw new FrameError('OPEN truncated');
    const s = p.toString('utf8', off + 1, off + 1 + n);
    off += 1 + n;
    return s;
  };
  const node = str();
  const src = str();
  const ip = str();
  if (off + 2 !== p.length) throw new FrameError('OPEN has a bad length');
  const port = p.readUInt16BE(off);
  if (port === 0 || node === '' || ip === '') throw new FrameError('OPEN without node, ip or port');
  return { node, src, ip, port };
}

/** WINDOW payload: a u32 credit increment (> 0). */
export function encodeWindow(increment: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(increment);
  return b;
}

/** Parses a WINDOW payload; throws FrameError unless it is 4 bytes holding a positive number. */
export function decodeWindow(p: Buffer): number {
  if (p.length !== 4) throw new FrameError('WINDOW payload is not 4 bytes');
  const n = p.readUInt32BE(0);
  if (n === 0) throw new FrameError('WINDOW of 0');
  return n;
}

/** Parses a JSON control payload (HELLO, PEERS) into an object; throws FrameError otherwise. */
export function decodeJson(p: Buffer): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(p.toString('utf8'));
  } catch {
    throw new FrameError('control payload is not JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new FrameError('control payload is not an object');
  return v as Record<string, unknown>;
}

/** Bytes of the single-use token that names a sealed stream's data connection. */
export const TOKEN_BYTES = 16;
const SEALED_KEYS_BYTES = 2 * (32 + 12);

/**
 * SEALED_OPEN payload: where to connect, the data connection's token, and the stream's keys as the
 * RECEIVER of this frame uses them (it sends with tx, opens with rx).
 */
export interface SealedOpen {
  target: OpenTarget;
  token: Buffer;
  keys: { txKey: Buffer; txIv: Buffer; rxKey: Buffer; rxIv: Buffer };
}

/** SEALED_OPEN payload: u16 length + OPEN payload, token, txKey, txIv, rxKey, rxIv. */
export function encodeSealedOpen(o: SealedOpen): Buffer {
  const open = encodeOpen(o.target);
  const len = Buffer.alloc(2);
  len.writeUInt16BE(open.length);
  const { txKey, txIv, rxKey, rxIv } = o.keys;
  return Buffer.concat([len, open, o.token, txKey, txIv, rxKey, rxIv]);
}

/** Parses a SEALED_OPEN payload; throws FrameError when a field is missing or the length is off. */
export function decodeSealedOpen(p: Buffer): SealedOpen {
  if (p.length < 2) throw new FrameError('SEALED_OPEN truncated');
  const n = p.readUInt16BE(0);
  if (p.length !== 2 + n + TOKEN_BYTES + SEALED_KEYS_BYTES)
    throw new FrameError('SEALED_OPEN has a bad length');
  const target = decodeOpen(p.subarray(2, 2 + n));
  let off = 2 + n;
  // Copies: the payload may be a slice of a larger receive buffer that is reused.
  const take = (len: number) => {
    const b = Buffer.from(p.subarray(off, off + len));
    off += len;
    return b;
  };
  const token = take(TOKEN_BYTES);
  return { target, token, keys: { txKey: take(32), txIv: take(12), rxKey: take(32), rxIv: take(12) } };
}

/**
 * DATA_POOL payload: which end may name these connections in a SEALED_OPEN (u8: 0 = the server,
 * for streams toward the client; 1 = the client, for its own streams — never both, so the two
 * ends cannot pick the same one at once), the 32-byte key that proves them, then 1..64 tokens.
 */
export interface DataPoolAnnouncement {
  picker: 'server' | 'client';
  proofKey: Buffer;
  tokens: Buffer[];
}

/** Encodes a DATA_POOL payload. */
export function encodeDataPool(a: DataPoolAnnouncement): Buffer {
  return Buffer.concat([Buffer.from([a.picker === 'server' ? 0 : 1]), a.proofKey, ...a.tokens]);
}

/** Parses a DATA_POOL payload; throws FrameError unless it is a picker, a key and 1..64 whole tokens. */
export function decodeDataPool(p: Buffer): DataPoolAnnouncement {
  const n = (p.length - 33) / TOKEN_BYTES;
  if (p.length < 33 + TOKEN_BYTES || !Number.isInteger(n) || n > 64 || p[0]! > 1)
    throw new FrameError('DATA_POOL has a bad length or picker');
  const tokens: Buffer[] = [];
  for (let i = 0; i < n; i++)
    tokens.push(Buffer.from(p.subarray(33 + i * TOKEN_BYTES, 33 + (i + 1) * TOKEN_BYTES)));
  return { picker: p[0] === 0 ? 'server' : 'client', proofKey: Buffer.from(p.subarray(1, 33)), tokens };
}
