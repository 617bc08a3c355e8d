// Client and backend for the native plane's IPv6 e2e (test/e2e/native-v6.test.ts), run inside the
// test's namespaces. Prints one JSON line per client run.
//   node native-v6-tool.mjs serve ECHO_PORT RESET_PORT   dual-stack [::] listeners; prints "ready"
//     echo: echoes bytes and half-close
//     reset: sends 64 KiB, and once the client answers with one byte, resets the connection
//   echo HOST PORT BYTES        sends BYTES random bytes, half-closes, compares what comes back
//   reset HOST PORT             reads 64 KiB, answers, then reports how the connection ended
//   origdst VIP PORT LISTEN ADDON   connects VIP:PORT (redirected to LISTEN here) and prints the
//                                   addon's originalDst() of the accepted socket
import crypto from 'node:crypto';
import { createRequire } from 'node:module';
import net from 'node:net';

const [mode, ...args] = process.argv.slice(2);
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const RESET_BYTES = 64 * 1024;

function serve(echoPort, resetPort) {
  let pending = 2;
  const listening = () => {
    if (--pending === 0) process.stdout.write('ready\n');
  };
  net
    .createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      s.pipe(s);
    })
    .listen({ port: Number(echoPort), host: '::', ipv6Only: false }, listening);
  net
    .createServer((s) => {
      s.on('error', () => {});
      s.write(crypto.randomBytes(RESET_BYTES));
      // The reset leaves only after the client has read everything: it then arrives alone, never
      // together with the last data (where a reader may take it for EOF).
      s.once('data', () => s.resetAndDestroy());
    })
    .listen({ port: Number(resetPort), host: '::', ipv6Only: false }, listening);
}

async function echo(host, port, bytes) {
  const payload = crypto.randomBytes(Number(bytes));
  const start = process.hrtime.bigint();
  const got = await new Promise((resolve, reject) => {
    const chunks = [];
    const s = net.connect({ host, port: Number(port), allowHalfOpen: true }, () => s.end(payload));
    s.on('data', (d) => chunks.push(d));
    s.on('end', () => {
      s.destroy();
      resolve(Buffer.concat(chunks));
    });
    s.on('error', reject);
  });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  out({ ok: got.equals(payload), sent: payload.length, got: got.length, ms });
}

async function reset(host, port) {
  const s = net.connect({ host, port: Number(port) });
  let bytes = 0;
  const code = await new Promise((resolve) => {
    s.on('data', (d) => {
      bytes += d.length;
      if (bytes === RESET_BYTES) s.write('x');
    });
    s.on('error', (e) => resolve(e.code));
    s.on('end', () => resolve('EOF'));
  });
  s.destroy();
  out({ code, bytes });
}

async function origdst(vip, port, listen, addon) {
  const native = createRequire(import.meta.url)(addon);
  const server = net.createServer();
  await new Promise((r) => server.listen({ port: Number(listen), host: '::', ipv6Only: true }, r));
  const accepted = new Promise((r) => server.once('connection', r));
  const client = net.connect({ host: vip, port: Number(port) });
  client.on('error', () => {});
  const socket = await accepted;
  const dst = native.originalDst(socket._handle.fd);
  out({ ...dst, local: socket.localAddress });
  socket.destroy();
  client.destroy();
  server.close();
}

if (mode === 'serve') serve(...args);
else if (mode === 'echo') await echo(...args);
else if (mode === 'reset') await reset(...args);
else if (mode === 'origdst') await origdst(...args);
else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
