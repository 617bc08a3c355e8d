// Reads the first bytes of a connection without consuming them for good: the handler inspects
// them (HTTP upgrade headers, TLS ClientHello) and then replays them to the upstream.
import type net from 'node:net';

/**
 * Collects data from `socket` until `enough(buffer)` says stop, `maxBytes` arrived, the peer
 * ended, or `timeoutMs` passed. Leaves the socket paused with no listeners of its own.
 */
export function peek(
  socket: net.Socket,
  enough: (data: Buffer) => boolean,
  maxBytes: number,
  timeoutMs: number,
): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = () => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', finish);
      socket.off('close', finish);
      socket.pause();
      resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= maxBytes || enough(chunks.length === 1 ? chunk : Buffer.concat(chunks, size))) finish();
    };
    const timer = setTimeout(finish, timeoutMs);
    socket.on('data', onData);
    socket.once('end', finish);
    socket.once('close', finish);
    socket.resume();
  });
}
