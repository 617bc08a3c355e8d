// Forwards a query to the upstream servers: UDP first with a fresh socket and random id per
// attempt (so off-path spoofing must guess both), the next upstream on timeout or refusal, TCP
// when the UDP answer is truncated. Always settles within the deadline so the client gets an
// answer (EdgeMesh's 5-second stalls came from queries that never got one).
import { randomFillSync } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import type { HostPort } from '../util/net.ts';
import { Rcode, readQuestion } from './wire.ts';

/** Why an attempt failed (metrics label). */
export type AttemptFailure = 'timeout' | 'refused' | 'error' | 'servfail' | 'mismatch';

/** Timing of forwarding and the hooks metrics use. */
export interface ForwarderOptions {
  upstreams: () => readonly HostPort[];
  /** One UDP (or TCP) attempt waits this long before trying the next upstream. */
  attemptTimeoutMs: number;
  /** The whole forward gives up after this long. */
  deadlineMs: number;
  onAttempt?: (transport: 'udp' | 'tcp', seconds: number, failure?: AttemptFailure) => void;
}

/** Largest upstream message we accept over TCP. */
const MAX_TCP_MESSAGE = 65535;

class AttemptError extends Error {
  constructor(readonly failure: AttemptFailure) {
    super(failure);
  }
}

/** Sends queries upstream; `forward` resolves with the answer or undefined when all failed. */
export class Forwarder {
  /** Index of the upstream that answered last: a dead first server costs one timeout, not one per query. */
  private preferred = 0;
  private readonly ids = Buffer.alloc(2048);
  private idPos = this.ids.length;

  constructor(private readonly options: ForwarderOptions) {}

  /** Forwards `query` (name/type/class given for answer matching); undefined when no upstream answered. */
  async forward(query: Buffer, question: [string, number, number]): Promise<Buffer | undefined> {
    const servers = this.options.upstreams();
    if (servers.length === 0) return undefined;
    const deadline = Date.now() + this.options.deadlineMs;
    const n = servers.length;
    const start = this.preferred % n;
    // Every upstream once, and a single upstream twice (one lost UDP packet is no outage).
    const attempts = Math.max(n, 2);
    for (let i = 0; i < attempts; i++) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) break;
      const index = (start + i) % n;
      const server = servers[index]!;
      const timeout = Math.min(this.options.attemptTimeoutMs, remaining);
      const out = Buffer.from(query);
      const id = this.randomId();
      out.writeUInt16BE(id, 0);
      try {
        let answer = await this.timed('udp', () => udpExchange(server, out, timeout, id, question));
        if ((answer.readUInt16BE(2) & 0x0200) !== 0) {
          const left = Math.max(deadline - Date.now(), 1);
          answer = await this.timed('tcp', () =>
            tcpExchange(server, out, Math.min(this.options.attemptTimeoutMs * 2, left), id, question),
          );
        }
        this.preferred = index;
        return answer;
      } catch {
        // Counted in timed(); try the next upstream.
      }
    }
    return undefined;
  }

  private async timed(transport: 'udp' | 'tcp', fn: () => Promise<Buffer>): Promise<Buffer> {
    const t0 = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - t0) / 1e9;
    try {
      const answer = await fn();
      const rcode = answer.readUInt16BE(2) & 0xf;
      if (rcode === Rcode.SERVFAIL || rcode === Rcode.REFUSED) throw new AttemptError('servfail');
      this.options.onAttempt?.(transport, seconds());
      return answer;
    } catch (err) {
      this.options.onAttempt?.(transport, seconds(), err instanceof AttemptError ? err.failure : 'error');
      throw err;
    }
  }

  private randomId(): number {
    if (this.idPos + 2 > this.ids.length) {
      randomFillSync(this.ids);
      this.idPos = 0;
    }
    const id = this.ids.readUInt16BE(this.idPos);
    this.idPos += 2;
    return id;
  }
}

/** True when `answer` is the reply to our query: a response, our id, our question. */
function matches(answer: Buffer, id: number, question: [string, number, number]): boolean {
  if (answer.length < 12 || answer.readUInt16BE(0) !== id || (answer[2]! & 0x80) === 0) return false;
  const q = readQuestion(answer);
  return q !== undefined && q[0] === question[0] && q[1] === question[1] && q[2] === question[2];
}

/**
 * The settle-once end of one exchange: the first outcome (answer, socket error, timeout) wins,
 * clears the timer and releases the socket. `onError` maps a socket error to its failure kind.
 */
function settleOnce(
  timeoutMs: number,
  release: () => void,
  resolve: (answer: Buffer) => void,
  reject: (err: AttemptError) => void,
): {
  finish: (err: AttemptError | undefined, answer?: Buffer) => void;
  onError: (err: NodeJS.ErrnoException) => void;
  isDone: () => boolean;
} {
  let done = false;
  const finish = (err: AttemptError | undefined, answer?: Buffer) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    release();
    if (err) reject(err);
    else resolve(answer!);
  };
  const timer = setTimeout(() => finish(new AttemptError('timeout')), timeoutMs);
  timer.unref();
  const onError = (err: NodeJS.ErrnoException) =>
    finish(new AttemptError(err.code === 'ECONNREFUSED' ? 'refused' : 'error'));
  return { finish, onError, isDone: () => done };
}

function udpExchange(
  server: HostPort,
  query: Buffer,
  timeoutMs: number,
  id: number,
  question: [string, number, number],
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(net.isIPv6(server.host.split('%')[0]!) ? 'udp6' : 'udp4');
    const { finish, onError, isDone } = settleOnce(timeoutMs, () => socket.close(), resolve, reject);
    // A connected socket receives ICMP port-unreachable as ECONNREFUSED: a stopped upstream
    // fails over at once instead of after a timeout.
    socket.on('error', onError);
    socket.on('message', (msg) => {
      // Anything else (late answers to an old id, spoofing attempts) is ignored, not fatal.
      if (matches(msg, id, question)) finish(undefined, msg);
    });
    socket.connect(server.port, server.host, () => {
      if (!isDone()) socket.send(query, (err) => err && finish(new AttemptError('error')));
    });
  });
}

function tcpExchange(
  server: HostPort,
  query: Buffer,
  timeoutMs: number,
  id: number,
  question: [string, number, number],
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: server.host, port: server.port });
    let buffered = Buffer.alloc(0);
    const { finish, onError } = settleOnce(timeoutMs, () => socket.destroy(), resolve, reject);
    socket.on('error', onError);
    socket.on('close', () => finish(new AttemptError('error')));
    socket.on('connect', () => {
      const frame = Buffer.allocUnsafe(2 + query.length);
      frame.writeUInt16BE(query.length, 0);
      query.copy(frame, 2);
      socket.write(frame);
    });
    socket.on('data', (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length > MAX_TCP_MESSAGE + 2) return finish(new AttemptError('error'));
      if (buffered.length < 2) return;
      const len = buffered.readUInt16BE(0);
      if (buffered.length < 2 + len) return;
      const msg = buffered.subarray(2, 2 + len);
      if (matches(msg, id, question)) finish(undefined, Buffer.from(msg));
      else finish(new AttemptError('mismatch'));
    });
  });
}
