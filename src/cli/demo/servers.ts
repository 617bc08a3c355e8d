// The demo's built-in workloads, standing in for the example images: an HTTP server answering its
// pod name (serve_hostname), a TCP echo server, and a WebSocket echo server (which also answers
// plain HTTP GETs with its pod name, so `curl` works against it too).
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import { WebSocketServer } from 'ws';

/** Which workload a demo pod runs. */
export type WorkloadKind = 'hostname' | 'tcp-echo' | 'websocket';

/** A started workload server. */
export interface WorkloadServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Starts the `kind` workload for pod `podName` on host:port (port 0 = any). */
export async function startWorkload(
  kind: WorkloadKind,
  podName: string,
  host: string,
  port: number,
): Promise<WorkloadServer> {
  switch (kind) {
    case 'hostname':
      return listen(hostnameServer(podName), host, port);
    case 'tcp-echo':
      return listen(tcpEchoServer(), host, port);
    case 'websocket':
      return websocketEchoServer(podName, host, port);
  }
}

function hostnameServer(podName: string): http.Server {
  return http.createServer((req, res) => {
    // Drain the body so keep-alive clients can send the next request.
    req.resume();
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`${podName}\n`);
  });
}

function tcpEchoServer(): net.Server {
  return net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => socket.destroy());
    // pipe() ends our side when the client half-closes, so `echo hi | socat - TCP:...` returns.
    socket.pipe(socket);
  });
}

async function websocketEchoServer(podName: string, host: string, port: number): Promise<WorkloadServer> {
  const server = hostnameServer(podName);
  const wss = new WebSocketServer({ server });
  wss.on('connection', (ws) => {
    ws.on('error', () => ws.terminate());
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
  const started = await listen(server, host, port);
  return {
    port: started.port,
    async close() {
      for (const c of wss.clients) c.terminate();
      wss.close();
      await started.close();
    },
  };
}

async function listen(server: net.Server, host: string, port: number): Promise<WorkloadServer> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
