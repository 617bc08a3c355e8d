// Connected TCP socket pairs on loopback for tests that hand raw fds to native code.
import net from 'node:net';

/** A connected pair: `client` (Node-managed) and `server`, accepted paused so Node never reads it. */
export interface SocketPair {
  client: net.Socket;
  server: net.Socket;
  close(): void;
}

/** Creates a loopback TCP connection whose accepted side is paused (safe to read from natively). */
export async function tcpPair(): Promise<SocketPair> {
  const listener = net.createServer({ pauseOnConnect: true });
  await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', () => resolve()));
  const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
  const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  const server = await accepted;
  listener.close();
  return {
    client,
    server,
    close() {
      client.destroy();
      server.destroy();
    },
  };
}

/** The OS file descriptor behind a connected net.Socket. */
export function socketFd(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no fd');
  return fd;
}

/** What a socket received until it closed, whether a FIN ('end') came, and the error code if any. */
export interface Collected {
  data: Buffer;
  ended: boolean;
  error?: string;
}

/** Collects everything `s` receives until it closes (resumes it: accepted sockets may start paused). */
export function collect(s: net.Socket): Promise<Collected> {
  const chunks: Buffer[] = [];
  let ended = false;
  let error: string | undefined;
  s.on('data', (c: Buffer) => chunks.push(c));
  s.on('end', () => {
    ended = true;
  });
  s.on('error', (e: NodeJS.ErrnoException) => {
    error = e.code ?? e.message;
  });
  s.resume();
  return new Promise((resolve) =>
    s.on('close', () => resolve({ data: Buffer.concat(chunks), ended, error })),
  );
}
