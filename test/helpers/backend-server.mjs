// A tiny backend for e2e tests, run inside a pod namespace:
//   node backend-server.mjs --name NAME [--http PORT]... [--echo PORT]... [--text PORT:TEXT]...
// --http answers every request with "NAME\n" (the hostname-server the seed examples use),
// --echo echoes TCP bytes (and propagates half-close), --text writes TEXT and closes,
// --ws echoes WebSocket messages as "NAME:message", --https PORT:DIR answers "NAME\n" over TLS
// with DIR/server.crt + DIR/server.key, --udp echoes datagrams as "NAME:datagram".
// Prints "ready" on stdout once every listener is bound.
import dgram from 'node:dgram';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';

const args = process.argv.slice(2);
let name = 'backend';
const listens = [];
for (let i = 0; i < args.length; i += 2) {
  const [flag, value] = [args[i], args[i + 1]];
  if (flag === '--name') name = value;
  else if (flag === '--http')
    listens.push([
      Number(value),
      http.createServer((req, res) => {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/plain' }).end(`${name}\n`);
      }),
    ]);
  else if (flag === '--echo')
    listens.push([
      Number(value),
      net.createServer({ allowHalfOpen: true }, (s) => {
        s.on('error', () => {});
        s.pipe(s);
      }),
    ]);
  else if (flag === '--text') {
    const [port, ...text] = value.split(':');
    listens.push([
      Number(port),
      net.createServer((s) => {
        s.on('error', () => {});
        s.end(`${text.join(':')}\n`);
      }),
    ]);
  } else if (flag === '--ws') {
    const { WebSocketServer } = await import('ws');
    const server = http.createServer((_req, res) => res.writeHead(426).end());
    new WebSocketServer({ server }).on('connection', (ws) =>
      ws.on('message', (data) => ws.send(`${name}:${data.toString()}`)),
    );
    listens.push([Number(value), server]);
  } else if (flag === '--https') {
    const [port, dir] = value.split(':');
    const tlsOptions = {
      cert: fs.readFileSync(`${dir}/server.crt`),
      key: fs.readFileSync(`${dir}/server.key`),
    };
    listens.push([
      Number(port),
      https.createServer(tlsOptions, (req, res) => {
        req.resume();
        res.writeHead(200, { 'content-type': 'text/plain' }).end(`${name}\n`);
      }),
    ]);
  } else if (flag === '--udp') {
    const socket = dgram.createSocket('udp4');
    socket.on('message', (m, r) => socket.send(`${name}:${m.toString()}`, r.port, r.address));
    // dgram has bind(port, host, cb), not listen(): adapt it to the listen loop below.
    listens.push([Number(value), { once() {}, listen: (p, h, cb) => socket.bind(p, h, cb) }]);
  } else {
    process.stderr.write(`backend-server: unknown flag ${flag}\n`);
    process.exit(2);
  }
}
await Promise.all(
  listens.map(
    ([port, server]) =>
      new Promise((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '0.0.0.0', resolve);
      }),
  ),
);
process.stdout.write('ready\n');
process.on('SIGTERM', () => process.exit(0));
