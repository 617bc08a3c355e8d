// Connects to HOST PORT and, while the connection is up, prints the client socket's TCP segment
// sizes as `ss -ti` reports them, as one JSON line: {"mss":N,"advmss":N,"local":"ip:port"}.
// Run it where the client must be (`ip netns exec NS node client-mss.mjs HOST PORT`): ss and the
// socket then share the namespace. Exits 1 with the error when the connect fails.
//   node client-mss.mjs HOST PORT
import { execFileSync } from 'node:child_process';
import net from 'node:net';

const [host, port] = process.argv.slice(2);
if (!host || !port) {
  console.error('Usage: client-mss.mjs HOST PORT');
  process.exit(2);
}
const socket = net.connect(Number(port), host, () => {
  // The client socket is the one whose local port is ours (the accepted side has the server port);
  // any state: a server that writes and closes at once leaves it in CLOSE-WAIT by now.
  const out = execFileSync('ss', ['-tinH', 'sport', '=', `:${socket.localPort}`], {
    encoding: 'utf8',
  });
  const num = (key) => Number(new RegExp(`\\b${key}:(\\d+)`).exec(out)?.[1] ?? 0);
  process.stdout.write(
    `${JSON.stringify({ mss: num('mss'), advmss: num('advmss'), local: `${socket.localAddress}:${socket.localPort}` })}\n`,
  );
  socket.destroy();
});
socket.setTimeout(5_000, () => {
  console.error(`connect to ${host}:${port} timed out`);
  process.exit(1);
});
socket.on('error', (err) => {
  console.error(err.message);
  process.exit(1);
});
