// Pre-dialled data connections, so a sealed stream does not wait for a TCP connect and a hello on
// its critical path (time to first byte). The client end of a session (the agent that dialed a
// relay or a direct peer) keeps a few idle data connections open to the address it dialed; it
// announces their tokens first (DATA_POOL, with the key that proves them). Either end then names
// an idle connection's token in SEALED_OPEN instead of a fresh one, and both ends use that
// connection at once. Each connection has one picker (the client for its own streams, or the
// server for streams toward the client), so the two ends never take the same one at once. Pools
// live and die with their session.
import crypto from 'node:crypto';
import type net from 'node:net';
import type { Logger } from '../util/log.ts';
import { dialData, newToken } from './data-hello.ts';
import type { DataTokens } from './data-tokens.ts';
import { type DataPoolAnnouncement, encodeDataPool, FrameType } from './frames.ts';
import type { Session } from './session.ts';

/** Idle connections a client keeps per session and picker (each costs one socket at both ends). */
export const POOL_SIZE = 2;
/** How long an announced pooled connection may take to arrive (ms). */
const POOL_ARRIVAL_MS = 30_000;

/** The idle data connections this end dialed over one session (it is the session's client). */
export class ClientDataPool {
  /** Idle connections by picker: `client` ones we name, `server` ones the far end names. */
  private readonly idle = { client: new Map<string, net.Socket>(), server: new Map<string, net.Socket>() };
  private readonly pending = { client: 0, server: 0 };
  private readonly refillTimer: Record<'client' | 'server', NodeJS.Immediate | undefined> = {
    client: undefined,
    server: undefined,
  };
  private closed = false;
  private readonly proofKey = crypto.randomBytes(32);

  constructor(
    private readonly session: Session,
    private readonly host: string,
    private readonly port: number,
    private readonly log: Logger,
    private readonly timeoutMs: number,
    private readonly size = POOL_SIZE,
  ) {}

  /** Dials connections until `size` per picker are idle or on their way (announced first). */
  fill(): void {
    for (const picker of ['client', 'server'] as const) this.fillFor(picker);
  }

  private fillFor(picker: 'client' | 'server'): void {
    if (this.closed || !this.session.isReady) return;
    const idle = this.idle[picker];
    const want = this.size - idle.size - this.pending[picker];
    if (want <= 0) return;
    const tokens = Array.from({ length: want }, () => newToken());
    this.session.send(FrameType.DATA_POOL, 0, encodeDataPool({ picker, proofKey: this.proofKey, tokens }));
    for (const token of tokens) {
      this.pending[picker]++;
      dialData(this.host, this.port, token, this.proofKey, this.timeoutMs).then(
        (s) => {
          this.pending[picker]--;
          if (this.closed) {
            s.destroy();
            return;
          }
          // Idle for a while behind NAT: keepalives keep the mapping (and notice a dead peer).
          s.setKeepAlive(true, 30_000);
          const key = token.toString('hex');
          idle.set(key, s);
          s.once('close', () => {
            if (idle.get(key) === s) idle.delete(key);
          });
        },
        (err: unknown) => {
          this.pending[picker]--;
          this.log.debug(
            { peer: this.session.peer?.node, err: String(err) },
            'tunnel: pooled data connection failed',
          );
        },
      );
    }
  }

  /**
   * Refills after this turn of the event loop: the stream that just took a connection sends its
   * SEALED_OPEN first (DATA_POOL and the new connects must not queue ahead of it), and streams
   * opened back to back still find the pool full.
   */
  private refillSoon(picker: 'client' | 'server'): void {
    if (this.refillTimer[picker]) return;
    this.refillTimer[picker] = setImmediate(() => {
      this.refillTimer[picker] = undefined;
      this.fillFor(picker);
    });
  }

  /** Takes an idle connection we pick (its token goes in SEALED_OPEN); refills in the background. */
  takeAny(): { token: Buffer; socket: net.Socket } | undefined {
    for (const [key, socket] of this.idle.client) {
      this.idle.client.delete(key);
      this.refillSoon('client');
      if (!socket.destroyed) return { token: Buffer.from(key, 'hex'), socket };
    }
    return undefined;
  }

  /**
   * Takes the idle connection named `token` (the far end picked it), if it is one of ours. The
   * caller calls refill() once its stream is set up (or failed): refilling here put a DATA_POOL,
   * two connects and their hellos on this event loop between the stream's pod connect and its
   * completion, i.e. on the critical path to the first byte (~0.2 ms and more under load).
   */
  take(token: Buffer): net.Socket | undefined {
    const key = token.toString('hex');
    const socket = this.idle.server.get(key);
    if (!socket) return undefined;
    this.idle.server.delete(key);
    return socket.destroyed ? undefined : socket;
  }

  /** Tops up the connections the far end picks (after take(); harmless when nothing is missing). */
  refill(): void {
    this.refillSoon('server');
  }

  /** Closes every idle connection (the session is gone). */
  close(): void {
    this.closed = true;
    clearImmediate(this.refillTimer.client);
    clearImmediate(this.refillTimer.server);
    for (const idle of [this.idle.client, this.idle.server]) {
      for (const s of idle.values()) s.destroy();
      idle.clear();
    }
  }
}

/** The idle data connections the client of one session dialed to this end (its server). */
export class ServerDataPool {
  /** Arrived idle connections by picker (`server`: ours to name; `client`: it will name them). */
  private readonly idle = { client: new Map<string, net.Socket>(), server: new Map<string, net.Socket>() };
  /** Announced, not arrived yet: cancel functions of their token registrations. */
  private readonly announced = new Map<string, () => void>();
  /** Announced tokens the client will name (only those may be claimed). */
  private readonly clientPicks = new Set<string>();
  /** Announced connections a stream already asked for (it gets them on arrival). */
  private readonly wanted = new Map<string, (s: net.Socket | undefined) => void>();
  private closed = false;

  constructor(private readonly tokens: DataTokens) {}

  /** Registers the tokens a DATA_POOL announced (at most 64 idle or announced at once). */
  announce(a: DataPoolAnnouncement): void {
    const idle = this.idle[a.picker];
    for (const token of a.tokens) {
      const key = token.toString('hex');
      const held = this.idle.client.size + this.idle.server.size + this.announced.size;
      if (this.closed || held >= 64 || this.announced.has(key)) continue;
      const cancel = this.tokens.expect(
        token,
        a.proofKey,
        (s) => {
          this.announced.delete(key);
          const w = this.wanted.get(key);
          this.wanted.delete(key);
          if (this.closed) s.destroy();
          else if (w) w(s);
          else {
            idle.set(key, s);
            s.once('close', () => {
              if (idle.get(key) !== s) return;
              idle.delete(key);
              this.clientPicks.delete(key);
            });
          }
        },
        () => {
          this.announced.delete(key);
          this.clientPicks.delete(key);
          const w = this.wanted.get(key);
          this.wanted.delete(key);
          w?.(undefined);
        },
        POOL_ARRIVAL_MS,
      );
      this.announced.set(key, cancel);
      if (a.picker === 'client') this.clientPicks.add(key);
    }
  }

  /**
   * Hands the pooled connection named `token` to `use`: at once when it is idle here, on arrival
   * when it is announced (undefined if it never comes). False when `token` is not from this pool.
   */
  claim(token: Buffer, use: (s: net.Socket | undefined) => void): boolean {
    const key = token.toString('hex');
    if (!this.clientPicks.has(key)) return false;
    const s = this.idle.client.get(key);
    if (s) {
      this.idle.client.delete(key);
      this.clientPicks.delete(key);
      use(s.destroyed ? undefined : s);
      return true;
    }
    if (!this.announced.has(key) || this.wanted.has(key)) return false;
    this.clientPicks.delete(key);
    this.wanted.set(key, use);
    return true;
  }

  /** Takes an idle connection this end picks (its token goes in SEALED_OPEN to the client). */
  takeAny(): { token: Buffer; socket: net.Socket } | undefined {
    for (const [key, socket] of this.idle.server) {
      this.idle.server.delete(key);
      if (!socket.destroyed) return { token: Buffer.from(key, 'hex'), socket };
    }
    return undefined;
  }

  /** Drops everything (the session is gone). */
  close(): void {
    this.closed = true;
    for (const cancel of this.announced.values()) cancel();
    this.announced.clear();
    for (const w of this.wanted.values()) w(undefined);
    this.wanted.clear();
    for (const idle of [this.idle.client, this.idle.server]) {
      for (const s of idle.values()) s.destroy();
      idle.clear();
    }
    this.clientPicks.clear();
  }
}
