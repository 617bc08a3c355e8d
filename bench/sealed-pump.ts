// Sealed pump throughput (issue 12): one stream over loopback, source and sink in a child process,
// through two pumps joined by a TCP "wire" in this process: plain -> pump A -> wire -> pump B ->
// plain. Contenders, interleaved round by round so machine noise hits all alike:
//   direct        the child talks to its own sink (the loopback ceiling, no pump process work)
//   splice        native splice pumps on both hops (raw bytes, no crypto: the relay's path)
//   sealed-native native sealed pumps (AES-256-GCM records, epoll threads)
//   sealed-ts     the TS twin (node:crypto on the event loop)
//   tls-node      Node TLS on the wire with JS pipes either side (today's tunnel hop shape)
// Reports Gbit/s and this process's CPU seconds per GB (getrusage: every thread, native included).
// --iperf: iperf3 is the source and sink instead (a C source: the JS child tops out first).
// Usage: npx tsx bench/sealed-pump.ts [--mib 256] [--rounds 3] [--only a,b] [--iperf]
import { execFile, execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { mirrorKeys, newSealedKeys, startSealedPump, startSplicePump } from '../src/tunnel/sealed-pump.ts';

const CHILD = `
const net = require('node:net');
const sink = net.createServer((s) => {
  let n = 0;
  s.on('data', (d) => { n += d.length; });
  s.on('end', () => { process.send({ type: 'sunk', n }); s.end(); });
  s.on('error', () => {});
});
sink.listen(0, '127.0.0.1', () => process.send({ type: 'sink', port: sink.address().port }));
const buf = Buffer.alloc(1 << 20, 7);
process.on('message', (m) => {
  if (m.type === 'exit') process.exit(0);
  const c = net.connect(m.port, '127.0.0.1', () => {
    let left = m.mib;
    const write = () => {
      while (left > 0) { left--; if (!c.write(buf)) { c.once('drain', write); return; } }
      c.end();
    };
    write();
  });
  c.on('error', () => {});
  c.resume();
});
`;

type Name = 'direct' | 'splice' | 'sealed-native' | 'sealed-ts' | 'tls-node';
const ALL: Name[] = ['direct', 'splice', 'sealed-native', 'sealed-ts', 'tls-node'];

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? (process.argv[i + 1] as string) : def;
}

function listen(onConn: (s: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer({ pauseOnConnect: true, allowHalfOpen: true }, onConn);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

function portOf(s: net.Server): number {
  return (s.address() as net.AddressInfo).port;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    c.once('connect', () => {
      c.pause();
      resolve(c);
    });
    c.once('error', reject);
  });
}

/** A TCP wire between two sockets of this process: [a end, b end], both paused. */
async function wire(): Promise<[net.Socket, net.Socket]> {
  let accepted!: (s: net.Socket) => void;
  const got = new Promise<net.Socket>((r) => {
    accepted = r;
  });
  const server = await listen((s) => accepted(s));
  const a = await connect(portOf(server));
  const b = await got;
  server.close();
  return [a, b];
}

function selfSigned(): { key: string; cert: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'em-sealed-bench-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-nodes',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-keyout',
        'k.pem',
      ].concat(['-out', 'c.pem', '-days', '1', '-subj', '/CN=bench']),
      { cwd: dir, stdio: 'ignore' },
    );
    return {
      key: fs.readFileSync(path.join(dir, 'k.pem'), 'utf8'),
      cert: fs.readFileSync(path.join(dir, 'c.pem'), 'utf8'),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Pipes a -> b and b -> a in JS with half-close. */
function jsPipe(a: net.Socket, b: net.Socket): void {
  a.pipe(b);
  b.pipe(a);
  a.on('error', () => b.destroy());
  b.on('error', () => a.destroy());
  a.resume();
  b.resume();
}

async function main(): Promise<void> {
  const mib = Number(arg('mib', '256'));
  const rounds = Number(arg('rounds', '3'));
  const only = arg('only', '');
  const names = only ? (only.split(',') as Name[]) : ALL;
  const child = spawn(process.execPath, ['-e', CHILD], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const messages: Array<(m: { type: string; port?: number; n?: number }) => void> = [];
  child.on('message', (m: { type: string }) => messages.shift()?.(m));
  const next = () => new Promise<{ type: string; port?: number; n?: number }>((r) => messages.push(r));
  const iperf = process.argv.includes('--iperf');
  let sinkPort = (await next()).port as number;
  if (iperf) {
    const probe = await listen(() => {});
    sinkPort = portOf(probe);
    probe.close();
    const server = spawn('iperf3', ['-s', '-p', String(sinkPort)], { stdio: 'ignore' });
    process.on('exit', () => server.kill());
    await new Promise((r) => setTimeout(r, 300));
  }
  /** One iperf3 transfer of `mib` MiB through `port`: bytes received by the server. */
  const iperfRun = (port: number) =>
    new Promise<number>((resolve, reject) =>
      execFile('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-n', `${mib}M`, '-J'], (err, stdout) => {
        if (err) reject(err);
        else
          resolve(
            Number(
              (JSON.parse(stdout) as { end: { sum_received: { bytes: number } } }).end.sum_received.bytes,
            ),
          );
      }),
    );
  const creds = selfSigned();

  /** Sets up the contender's entry port; every accepted stream is forwarded to the child's sink. */
  const entry = async (name: Name): Promise<{ port: number; close: () => void }> => {
    if (name === 'direct') return { port: sinkPort, close: () => {} };
    let server: net.Server;
    if (name === 'tls-node') {
      // B end: TLS server -> plain to the sink.
      const tlsServer = tls.createServer({ ...creds, allowHalfOpen: true }, async (t) => {
        const out = await connect(sinkPort);
        jsPipe(t, out);
      });
      await new Promise<void>((r) => tlsServer.listen(0, '127.0.0.1', () => r()));
      const tlsPort = (tlsServer.address() as net.AddressInfo).port;
      server = await listen((plain) => {
        const t = tls.connect({
          port: tlsPort,
          host: '127.0.0.1',
          rejectUnauthorized: false,
        });
        t.once('secureConnect', () => jsPipe(plain, t));
      });
      return {
        port: portOf(server),
        close: () => {
          server.close();
          tlsServer.close();
        },
      };
    }
    server = await listen(async (plain) => {
      const [wa, wb] = await wire();
      const out = await connect(sinkPort);
      if (name === 'splice') {
        void startSplicePump(plain, wa);
        void startSplicePump(wb, out);
        return;
      }
      if (name === 'sealed-ts') process.env.EDGEMESH_SEALED_PUMP = 'ts';
      else delete process.env.EDGEMESH_SEALED_PUMP;
      const keys = newSealedKeys();
      void startSealedPump(plain, wa, keys);
      void startSealedPump(out, wb, mirrorKeys(keys));
    });
    return { port: portOf(server), close: () => server.close() };
  };

  const results = new Map<Name, Array<{ gbps: number; cpuPerGB: number }>>();
  for (let round = 0; round < rounds; round++) {
    for (const name of names) {
      const e = await entry(name);
      const cpu0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      let bytes: number;
      if (iperf) {
        bytes = await iperfRun(e.port);
      } else {
        const sunk = next();
        child.send({ type: 'send', port: e.port, mib });
        bytes = (await sunk).n ?? 0;
        if (bytes !== mib * 1024 * 1024) throw new Error(`${name}: sink got ${bytes} bytes, sent ${mib} MiB`);
      }
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      const cpu = process.cpuUsage(cpu0);
      e.close();
      const gb = bytes / 1e9;
      const row = { gbps: (bytes * 8) / secs / 1e9, cpuPerGB: (cpu.user + cpu.system) / 1e6 / gb };
      results.set(name, [...(results.get(name) ?? []), row]);
      process.stderr.write(
        `round ${round + 1} ${name}: ${row.gbps.toFixed(2)} Gbit/s, ${row.cpuPerGB.toFixed(2)} cpu-s/GB\n`,
      );
    }
  }
  child.send({ type: 'exit' });
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const base = median((results.get('sealed-native') ?? []).map((r) => r.gbps));
  console.log(
    `\n${mib} MiB per stream, ${rounds} interleaved rounds, load average ${os.loadavg()[0]?.toFixed(2)}`,
  );
  console.log('contender       Gbit/s (median)  pump-process cpu-s/GB  vs sealed-native');
  for (const name of names) {
    const rows = results.get(name) ?? [];
    const g = median(rows.map((r) => r.gbps));
    const c = median(rows.map((r) => r.cpuPerGB));
    console.log(
      `${name.padEnd(15)} ${g.toFixed(2).padStart(15)}  ${c.toFixed(2).padStart(21)}  ${base ? (g / base).toFixed(2) : '-'}x`,
    );
  }
  console.log(JSON.stringify({ bench: 'sealed-pump', mib, rounds, results: Object.fromEntries(results) }));
}

void main().catch((err) => {
  console.error(err);
  process.exit(1);
});
