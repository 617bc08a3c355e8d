// In-process HTTP backends for protocol/LB tests: "hostname" servers that answer their name, count
// requests, and can be slowed, made to hang, echo bodies, accept WebSocket echo, or be killed.
import http from 'node:http';
import type net from 'node:net';
import { WebSocketServer } from 'ws';

/** One backend server. */
export interface HttpBackend {
  name: string;
  ip: string;
  port: number;
  /** Requests received so far. */
  hits: number;
  /** Delay before answering (ms); Infinity = never answer. */
  delayMs: number;
  server: http.Server;
  /** Closes the listener and resets every open connection (a crashed backend). */
  kill(): Promise<void>;
}

/**
 * Starts a backend on `ip` (127.0.0.x), port 0. Paths: `/echo` streams the request body back,
 * anything else answers `name\n` after `delayMs`. WebSocket upgrades echo messages.
 */
export async function startHttpBackend(name: string, ip: string, delayMs = 0): Promise<HttpBackend> {
  const sockets = new Set<net.Socket>();
  const server = http.createServer((req, res) => {
    backend.hits++;
    if (req.url?.startsWith('/echo')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-backend': name });
      req.pipe(res);
      return;
    }
    req.resume();
    const answer = () => {
      if (!res.destroyed)
        res.writeHead(200, { 'content-type': 'text/plain', 'x-backend': name }).end(`${name}\n`);
    };
    if (backend.delayMs === Number.POSITIVE_INFINITY) return;
    if (backend.delayMs > 0) setTimeout(answer, backend.delayMs);
    else answer();
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(isBinary ? data : `${name}:${data.toString()}`));
  });
  await new Promise<void>((resolve) => server.listen(0, ip, () => resolve()));
  const backend: HttpBackend = {
    name,
    ip,
    port: (server.address() as net.AddressInfo).port,
    hits: 0,
    delayMs,
    server,
    async kill() {
      wss.close();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.resetAndDestroy();
      await closed;
    },
  };
  return backend;
}

/** Starts `n` hostname backends `backend-1..n` on 127.0.0.11.. */
export function startHostnameBackends(n: number, delayMs = 0): Promise<HttpBackend[]> {
  return Promise.all(
    Array.from({ length: n }, (_, i) => startHttpBackend(`backend-${i + 1}`, `127.0.0.${11 + i}`, delayMs)),
  );
}
