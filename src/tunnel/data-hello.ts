// The first bytes of a sealed data connection, sent by its dialer on the tunnel listen port (which
// tells it from TLS by the first byte: a ClientHello starts with 0x16, this with 'E'):
//   magic "EMD1" | version u8 (1) | token (16 bytes) | proof = HMAC-SHA256(dialer's txKey, label | token)
// The token was handed out over an authenticated TLS session and is single-use; the proof shows
// the dialer holds the stream's keys, so a token read off the wire or a log is useless alone.
import crypto from 'node:crypto';
import net from 'node:net';
import { EdgemeshError, ErrorCode } from '../errors.ts';
import { TOKEN_BYTES } from './frames.ts';

/** The magic that opens a data hello. */
export const DATA_MAGIC = Buffer.from('EMD1', 'latin1');
/** The data hello version this code speaks. */
export const DATA_VERSION = 1;
/** Bytes of a whole data hello. */
export const DATA_HELLO_BYTES = DATA_MAGIC.length + 1 + TOKEN_BYTES + 32;
/** First byte of every TLS handshake record (a ClientHello). */
export const TLS_HANDSHAKE_BYTE = 0x16;

const LABEL = Buffer.from('edgemesh-data-v1|', 'latin1');

/** The proof for `token`: HMAC-SHA256 keyed by the key the dialer seals with. */
export function dataProof(token: Buffer, dialerTxKey: Buffer): Buffer {
  return crypto.createHmac('sha256', dialerTxKey).update(LABEL).update(token).digest();
}

/** A fresh random single-use token. */
export function newToken(): Buffer {
  return crypto.randomBytes(TOKEN_BYTES);
}

/** The data hello for `token`, proven with the dialer's txKey. */
export function encodeDataHello(token: Buffer, dialerTxKey: Buffer): Buffer {
  return Buffer.concat([DATA_MAGIC, Buffer.from([DATA_VERSION]), token, dataProof(token, dialerTxKey)]);
}

/** A parsed data hello, or why it is not one. */
export type ParsedDataHello = { token: Buffer; proof: Buffer } | { error: string };

/** Parses the first DATA_HELLO_BYTES bytes of a data connection. */
export function parseDataHello(b: Buffer): ParsedDataHello {
  if (b.length < DATA_HELLO_BYTES) return { error: 'data hello truncated' };
  if (!b.subarray(0, DATA_MAGIC.length).equals(DATA_MAGIC)) return { error: 'not a data hello (bad magic)' };
  const version = b[DATA_MAGIC.length]!;
  if (version !== DATA_VERSION) return { error: `data hello version ${version} is not supported` };
  const off = DATA_MAGIC.length + 1;
  return {
    token: Buffer.from(b.subarray(off, off + TOKEN_BYTES)),
    proof: Buffer.from(b.subarray(off + TOKEN_BYTES, DATA_HELLO_BYTES)),
  };
}

/** True when `proof` is the right proof for `token` under `dialerTxKey` (constant time). */
export function checkDataProof(token: Buffer, proof: Buffer, dialerTxKey: Buffer): boolean {
  const want = dataProof(token, dialerTxKey);
  return proof.length === want.length && crypto.timingSafeEqual(proof, want);
}

/**
 * Dials a data connection to host:port and sends its hello; resolves with the socket paused and
 * nothing read (ready for the pump) once the hello is with the kernel, rejects on error or timeout.
 */
export function dialData(
  host: string,
  port: number,
  token: Buffer,
  dialerTxKey: Buffer,
  timeoutMs: number,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = new net.Socket({ allowHalfOpen: true });
    // Paused before connect: a socket that is not paused starts reading into JS at connect.
    s.pause();
    s.on('error', () => {});
    const fail = (err: Error) => {
      clearTimeout(timer);
      s.destroy();
      reject(err);
    };
    const timer = setTimeout(
      () =>
        fail(
          new EdgemeshError(
            ErrorCode.TUNNEL,
            `data connection to ${host}:${port}: no answer in ${timeoutMs} ms`,
          ),
        ),
      timeoutMs,
    );
    timer.unref();
    s.once('error', fail);
    s.connect(port, host, () => {
      s.setNoDelay(true);
      s.write(encodeDataHello(token, dialerTxKey), (err) => {
        if (err) return fail(err);
        clearTimeout(timer);
        s.off('error', fail);
        resolve(s);
      });
    });
  });
}
