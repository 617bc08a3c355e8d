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

/** Incremental decoder: feed it bytes as they arrive, get whole frames out; throws FrameError. */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** Appends `data` and returns every frame now complete (in order). */
  push(data: Buffer): Frame[] {
    this.chunks.push(data);
    this.buffered += data.length;
    const frames: Frame[] = [];
    while (this.buffered >= HEADER_SIZE) {
      const head = this.peek(HEADER_SIZE);
      const length = head.readUInt32BE(0);
      const type = head.readUInt8(4);
      const stream = head.readUInt32BE(5);
      if (length > MAX_PAYLOAD) throw new FrameError(`payload of ${length} bytes exceeds ${MAX_PAYLOAD}`);
      if (!validTypes.has(type)) throw new FrameError(`unknown frame type ${type}`);
      if (connectionTypes.has(type) !== (stream === 0))
        throw new FrameError(`frame type ${type} on stream ${stream}`);
      if (this.buffered < HEADER_SIZE + length) break;
      const whole = this.take(HEADER_SIZE + length);
      frames.push({ type: type as FrameTypeValue, stream, payload: whole.subarray(HEADER_SIZE) });
    }
    return frames;
  }

  /** The first chunk, merged with just enough following chunks to hold `n` bytes. */
  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    // Joining only what is needed keeps decoding linear when many chunks are buffered.
    let count = 0;
    let have = 0;
    while (have < n) have += this.chunks[count++]!.length;
    const joined = Buffer.concat(this.chunks.slice(0, count), have);
    this.chunks.splice(0, count, joined);
    return joined;
  }

  private take(n: number): Buffer {
    const first = this.peek(n);
    const out = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
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
