// Load and correctness tool for data-plane e2e tests, run inside a namespace with `ip netns exec`.
// Servers (print "ready" once listening; run until killed):
//   node stream-tool.mjs serve [--sink PORT] [--echo PORT] [--reset PORT]
//     sink: replies with the sha256 hex of everything received, after the client's EOF
//     echo: echoes bytes and half-close;  reset: sends 256 KiB, then resets the connection
// Clients (print one JSON line and exit 0; bounded in count and time):
//   bulk IP PORT BYTES             streams BYTES pseudo-random bytes to a sink, compares sha256
//   concurrent IP PORT N           holds N echo connections open at once, then verifies each
//   short IP PORT N CONC MAX_MS    up to N one-byte echo connections, CONC at a time, for MAX_MS
//   reset IP PORT                  reads until the connection ends; reports the error code
import crypto from 'node:crypto';
import net from 'node:net';

const [mode, ...rest] = process.argv.slice(2);
const out = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

function serve(args) {
  let pending = 0;
  const listening = () => {
    if (--pending === 0) process.stdout.write('ready\n');
  };
  for (let i = 0; i < args.length; i += 2) {
    const [flag, port] = [args[i], Number(args[i + 1])];
    pending++;
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      if (flag === '--sink') {
        const hash = crypto.createHash('sha256');
        s.on('data', (d) => hash.update(d));
        s.on('end', () => s.end(`${hash.digest('hex')}\n`));
      } else if (flag === '--echo') {
        s.pipe(s);
      } else if (flag === '--reset') {
        s.write(crypto.randomBytes(256 * 1024), () => setTimeout(() => s.resetAndDestroy(), 50));
      }
    });
    server.listen(port, '0.0.0.0', listening);
  }
}

function connect(ip, port) {
  return net.connect({ host: ip, port: Number(port), allowHalfOpen: true });
}

async function bulk(ip, port, bytes) {
  const total = Number(bytes);
  const hash = crypto.createHash('sha256');
  const start = process.hrtime.bigint();
  const s = connect(ip, port);
  let reply = '';
  s.setEncoding('utf8');
  s.on('data', (d) => {
    reply += d;
  });
  const ended = new Promise((resolve, reject) => {
    s.on('end', resolve);
    s.on('error', reject);
  });
  await new Promise((resolve, reject) => {
    s.once('connect', resolve);
    s.once('error', reject);
  });
  // A 4 MiB random block, varied per chunk by its index, so the stream never repeats itself.
  const block = crypto.randomBytes(4 << 20);
  let sent = 0;
  let n = 0;
  while (sent < total) {
    const chunk = Buffer.from(block.subarray(0, Math.min(block.length, total - sent)));
    chunk.writeUInt32LE(n++, 0);
    hash.update(chunk);
    sent += chunk.length;
    if (!s.write(chunk)) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  await ended;
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const expected = hash.digest('hex');
  out({
    ok: reply.trim() === expected,
    bytes: sent,
    ms,
    gbps: (sent * 8) / ms / 1e6,
    expected,
    got: reply.trim(),
  });
}

async function concurrent(ip, port, count) {
  const n = Number(count);
  const sockets = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise((resolve) => {
          const s = connect(ip, port);
          s.once('connect', () => resolve(s));
          s.once('error', () => resolve(undefined));
        }),
    ),
  );
  const open = sockets.filter(Boolean);
  let ok = 0;
  await Promise.all(
    open.map(
      (s, i) =>
        new Promise((resolve) => {
          const msg = `hello ${i} `.repeat(10);
          let got = '';
          s.setEncoding('utf8');
          s.on('data', (d) => {
            got += d;
          });
          s.on('end', () => {
            if (got === msg) ok++;
            s.destroy();
            resolve();
          });
          s.on('error', () => resolve());
          s.end(msg);
        }),
    ),
  );
  out({ connected: open.length, ok, failed: n - ok });
}

async function short(ip, port, count, conc, maxMs) {
  const n = Number(count);
  const deadline = Date.now() + Number(maxMs);
  let started = 0;
  let done = 0;
  let failed = 0;
  const one = () =>
    new Promise((resolve) => {
      const s = connect(ip, port);
      let got = '';
      s.on('data', (d) => {
        got += d;
      });
      s.on('connect', () => s.end('x'));
      s.on('end', () => {
        if (got === 'x') done++;
        else failed++;
        s.destroy();
        resolve();
      });
      s.on('error', () => {
        failed++;
        resolve();
      });
    });
  const start = Date.now();
  await Promise.all(
    Array.from({ length: Number(conc) }, async () => {
      while (started < n && Date.now() < deadline) {
        started++;
        await one();
      }
    }),
  );
  out({ done, failed, ms: Date.now() - start });
}

async function reset(ip, port) {
  const s = connect(ip, port);
  let bytes = 0;
  s.on('data', (d) => {
    bytes += d.length;
  });
  const code = await new Promise((resolve) => {
    s.on('error', (e) => resolve(e.code));
    s.on('end', () => resolve('EOF'));
  });
  out({ code, bytes });
}

if (mode === 'serve') serve(rest);
else if (mode === 'bulk') await bulk(...rest);
else if (mode === 'concurrent') await concurrent(...rest);
else if (mode === 'short') await short(...rest);
else if (mode === 'reset') await reset(...rest);
else {
  process.stderr.write(`unknown mode ${mode}\n`);
  process.exit(2);
}
