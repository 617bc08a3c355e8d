// Client side of test/e2e/ebpf-socket-lb.test.ts, run inside the test's netns AND cgroup (the
// cgroup hooks only see processes inside it). Modes (argv[2]):
//   connect IP PORT N   N sequential connects; prints one JSON line per connect {data, peer}
//   proxy PORT          listens on 127.0.0.1:PORT, answers each connection with its SO_ORIGINAL_DST
//                       (read through the native addon, EDGEMESH_NATIVE_ADDON); prints "ready"
//   transfer IP PORT MB sends MB MiB to an echo service in two halves, waiting for a "go" line on
//                       stdin in between; prints {ok, sent, received, peer}
// EBPF_TEST_GID set: switch to that gid first (to prove the bypass group is not redirected).
import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';
import net from 'node:net';
import readline from 'node:readline';

if (process.env.EBPF_TEST_GID) process.setgid(Number(process.env.EBPF_TEST_GID));
const [mode, a, b, c] = process.argv.slice(2);

function connectOnce(ip, port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: ip, port: Number(port) });
    let data = '';
    let peer = '';
    s.on('connect', () => {
      peer = `${s.remoteAddress}:${s.remotePort}`;
    });
    s.on('data', (d) => {
      data += d;
    });
    s.on('error', (err) => resolve({ error: err.code ?? err.message }));
    s.on('close', () => resolve({ data: data.trim(), peer }));
  });
}

if (mode === 'connect') {
  for (let i = 0; i < Number(c); i++) console.log(JSON.stringify(await connectOnce(a, b)));
} else if (mode === 'proxy') {
  const addon = createRequire(import.meta.url)(process.env.EDGEMESH_NATIVE_ADDON);
  const server = net.createServer((s) => {
    let reply;
    try {
      const d = addon.originalDst(s._handle.fd);
      reply = `${d.address}:${d.port}`;
    } catch (err) {
      reply = `error ${err.message}`;
    }
    s.end(`${reply}\n`);
  });
  server.listen(Number(a), '127.0.0.1', () => console.log('ready'));
} else if (mode === 'transfer') {
  const total = Number(c) * 1024 * 1024;
  const payload = randomBytes(total);
  const sentHash = createHash('sha256').update(payload).digest('hex');
  const got = createHash('sha256');
  let received = 0;
  const s = net.connect({ host: a, port: Number(b), allowHalfOpen: true });
  s.on('data', (d) => {
    received += d.length;
    got.update(d);
  });
  await new Promise((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  const peer = `${s.remoteAddress}:${s.remotePort}`;
  s.write(payload.subarray(0, total / 2));
  console.log('half');
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) if (line === 'go') break;
  rl.close();
  s.end(payload.subarray(total / 2));
  await new Promise((resolve) => s.on('end', resolve));
  console.log(JSON.stringify({ ok: got.digest('hex') === sentHash, sent: total, received, peer }));
  s.destroy();
}
