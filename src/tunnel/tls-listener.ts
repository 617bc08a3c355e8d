// Accepts tunnel connections (relay, or an agent's direct listener): TLS 1.3, then a server-side
// Session per connection. TLS-level rejections (untrusted certificate) are logged here, because
// they never reach the Session's own handshake. The same port takes sealed data connections: the
// first byte tells them apart (0x16 opens a TLS ClientHello, 'E' a data hello), so no second port
// has to be opened through firewalls and NAT.
import net from 'node:net';
import tls from 'node:tls';
import { EdgemeshError, ErrorCode, errorMessage } from '../errors.ts';
import type { Logger } from '../util/log.ts';
import { serverTlsOptions, type TunnelCredentials } from './credentials.ts';
import { DATA_MAGIC, TLS_HANDSHAKE_BYTE } from './data-hello.ts';
import type { DataTokens } from './data-tokens.ts';
import { type HelloInfo, Session } from './session.ts';

export interface TlsListenerOptions {
  host: string;
  port: number;
  creds: TunnelCredentials;
  hello: HelloInfo;
  log: Logger;
  /** Called for every accepted session (not yet authenticated: wait for its `ready`). */
  onSession: (session: Session) => void;
  /** Called when a peer fails TLS or authentication. */
  onAuthFailure?: () => void;
  pingMs?: number;
  /** Where data connections (first byte 'E') go; without it they are refused. */
  dataTokens?: DataTokens;
}

/** Listens and hands out sessions; close() stops accepting (sessions are closed by their owners). */
export class TlsListener {
  private server: net.Server | undefined;
  /** Sockets still being sniffed (destroyed on close: a server's close() waits for them). */
  private readonly sniffing = new Set<net.Socket>();

  constructor(private readonly o: TlsListenerOptions) {}

  /** Binds; rejects with a LISTEN error naming the address. */
  async listen(): Promise<{ host: string; port: number }> {
    const tlsServer = tls.createServer(serverTlsOptions(this.o.creds), (socket) => {
      const session = new Session({
        socket,
        role: 'server',
        creds: this.o.creds,
        hello: this.o.hello,
        log: this.o.log,
        ...(this.o.pingMs !== undefined ? { pingMs: this.o.pingMs } : {}),
      });
      session.on('authFailure', () => this.o.onAuthFailure?.());
      this.o.onSession(session);
    });
    tlsServer.on('tlsClientError', (err, socket) => {
      this.o.log.warn(
        {
          code: ErrorCode.TUNNEL,
          peer: `${socket.remoteAddress}:${socket.remotePort}`,
          err: errorMessage(err),
        },
        'tunnel peer rejected: TLS handshake failed (certificate not trusted or not TLS 1.3)',
      );
      this.o.onAuthFailure?.();
    });
    // noDelay: accepted data connections are spliced or pumped as they are (dup'd fds keep the
    // option), and Nagle would hold a second small record behind the first one's ACK.
    const server = net.createServer({ pauseOnConnect: true, noDelay: true }, (socket) =>
      this.sniff(socket, tlsServer),
    );
    this.server = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(
          new EdgemeshError(ErrorCode.LISTEN, `tunnel: cannot listen on ${this.o.host}:${this.o.port}`, {
            cause: err,
          }),
        ),
      );
      server.listen(this.o.port, this.o.host, () => resolve());
    });
    server.on('error', (err) => this.o.log.error({ err: errorMessage(err) }, 'tunnel listener error'));
    const addr = server.address();
    return typeof addr === 'object' && addr ? { host: addr.address, port: addr.port } : this.o;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    for (const c of this.sniffing) c.destroy();
    this.sniffing.clear();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  }

  /** Reads the first bytes of a connection and hands it to TLS or to the data tokens. */
  private sniff(socket: net.Socket, tlsServer: tls.Server): void {
    this.sniffing.add(socket);
    socket.on('error', () => {});
    const timer = setTimeout(() => socket.destroy(), 10_000);
    timer.unref();
    socket.once('close', () => {
      clearTimeout(timer);
      this.sniffing.delete(socket);
    });
    socket.once('data', (first: Buffer) => {
      socket.pause();
      clearTimeout(timer);
      this.sniffing.delete(socket);
      if (first[0] === TLS_HANDSHAKE_BYTE) {
        // TLS reads what was already taken off the socket first (tls.TLSSocket drains the buffer).
        socket.unshift(first);
        tlsServer.emit('connection', socket);
      } else if (first[0] === DATA_MAGIC[0] && this.o.dataTokens) {
        this.o.dataTokens.accept(socket, first);
      } else {
        this.o.log.warn(
          {
            code: ErrorCode.TUNNEL,
            peer: `${socket.remoteAddress}:${socket.remotePort}`,
            firstByte: first[0],
          },
          'tunnel: connection rejected: neither TLS nor a data hello',
        );
        socket.destroy();
      }
    });
    socket.resume();
  }
}

/** Dials a tunnel listener and resolves with the ready Session; rejects on timeout or auth failure. */
export function dialSession(o: {
  host: string;
  port: number;
  creds: TunnelCredentials;
  hello: HelloInfo;
  expectNode?: string;
  log: Logger;
  timeoutMs: number;
  pingMs?: number;
  clientOptions: tls.ConnectionOptions;
}): Promise<Session> {
  return new Promise((resolve, reject) => {
    let session: Session | undefined;
    const socket = tls.connect({ ...o.clientOptions, host: o.host, port: o.port });
    const timer = setTimeout(() => {
      const err = new EdgemeshError(
        ErrorCode.TUNNEL,
        `no tunnel answer from ${o.host}:${o.port} in ${o.timeoutMs} ms`,
      );
      if (session) session.close(err);
      else socket.destroy(err);
      reject(err);
    }, o.timeoutMs);
    timer.unref();
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('secureConnect', () => {
      session = new Session({
        socket,
        role: 'client',
        creds: o.creds,
        hello: o.hello,
        ...(o.expectNode !== undefined ? { expectNode: o.expectNode } : {}),
        log: o.log,
        dialed: { host: o.host, port: o.port },
        ...(o.pingMs !== undefined ? { pingMs: o.pingMs } : {}),
      });
      session.ready.then(
        () => {
          clearTimeout(timer);
          resolve(session!);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  });
}
