// DNS test helpers: a ServiceTable builder, `dig` runner, and a small scriptable upstream DNS
// server (UDP + TCP, dns-packet) that counts queries and can truncate, go silent or refuse.
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { promisify } from 'node:util';
import dnsPacket from 'dns-packet';
import type { Endpoint, ServiceEntry, ServicePortEntry, ServiceTable } from '../../src/controller/types.ts';
import type { DnsServerOptions } from '../../src/dns/dns-server.ts';
import { silentLogger } from '../../src/util/log.ts';

const exec = promisify(execFile);

/**
 * DnsServer options for tests on 127.0.0.1 (any port), offline by default: no upstreams and no resolv.conf, so
 * forwarded names get SERVFAIL at once without sockets; `extra` overrides (upstreams, timeouts, listen, ...).
 */
export function dnsServerOptions(extra: Partial<DnsServerOptions> = {}): DnsServerOptions {
  return {
    listen: { host: '127.0.0.1', port: 0 },
    domain: 'cluster.local',
    ttl: 5,
    upstreams: [],
    resolvConf: '/nonexistent/resolv.conf',
    cacheSize: 100,
    serveStale: true,
    log: silentLogger,
    attemptTimeoutMs: 50,
    deadlineMs: 100,
    ...extra,
  };
}

/** A Service for tests with defaults filled in. */
export function svc(
  namespace: string,
  name: string,
  fields: Partial<Omit<ServiceEntry, 'ports'>> & {
    ports?: Array<
      Partial<Omit<ServicePortEntry, 'endpoints'>> & { endpoints?: Array<Partial<Endpoint> & { ip: string }> }
    >;
  } = {},
): ServiceEntry {
  const { ports = [], ...rest } = fields;
  return {
    namespace,
    name,
    key: `${namespace}/${name}`,
    clusterIPs: [],
    headless: false,
    type: 'ClusterIP',
    sessionAffinity: { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
    ...rest,
    ports: ports.map((p) => ({
      name: '',
      port: 80,
      protocol: 'TCP',
      appProtocol: 'tcp',
      targetPort: 80,
      ...p,
      endpoints: (p.endpoints ?? []).map((e) => ({
        port: 8080,
        ready: true,
        serving: true,
        terminating: false,
        ...e,
      })),
    })),
  };
}

/** A ServiceTable holding `services`. */
export function table(services: ServiceEntry[], generation = 1): ServiceTable {
  return {
    generation,
    services: new Map(services.map((s) => [s.key, s])),
    gateways: new Map(),
    virtualServices: new Map(),
    destinationRules: new Map(),
    secrets: new Map(),
  };
}

/** Result of one `dig` run, with the parts tests assert on. */
export interface DigResult {
  stdout: string;
  status: string;
  flags: string[];
  /** Answer section lines as [name, ttl, type, data]. */
  answers: Array<[string, number, string, string]>;
  /** Authority section record types. */
  authority: string[];
}

/** Runs `dig @server -p port ...args` and parses status, flags and sections. */
export async function dig(server: string, port: number, args: string[]): Promise<DigResult> {
  const { stdout } = await exec('dig', [`@${server}`, '-p', String(port), '+tries=1', '+time=4', ...args], {
    timeout: 20_000,
  });
  const status = /status: ([A-Z]+)/.exec(stdout)?.[1] ?? '';
  const flags = (/;; flags: ([^;]*);/.exec(stdout)?.[1] ?? '').trim().split(/\s+/);
  const section = (title: string) => {
    const m = new RegExp(`;; ${title} SECTION:\\n([\\s\\S]*?)(?:\\n\\n|$)`).exec(stdout);
    return m ? m[1]!.split('\n').filter((l) => l && !l.startsWith(';')) : [];
  };
  const answers = section('ANSWER').map((l) => {
    const [name, ttl, , type, ...data] = l.split(/\s+/);
    return [name!, Number(ttl), type!, data.join(' ')] as [string, number, string, string];
  });
  const authority = section('AUTHORITY').map((l) => l.split(/\s+/)[3]!);
  return { stdout, status, flags, answers, authority };
}

/** How the fake upstream behaves right now. */
export type UpstreamMode = 'answer' | 'silent';

/** A scriptable upstream DNS server on 127.0.0.1 (same port for UDP and TCP). */
export interface FakeUpstream {
  port: number;
  /** Queries received, by transport. */
  queries: { udp: number; tcp: number };
  /** Questions seen (lower-case name + type), in order. */
  seen: Array<{ name: string; type: string; transport: 'udp' | 'tcp'; edns: boolean }>;
  mode: UpstreamMode;
  close(): Promise<void>;
}

/**
 * Answers: `records[name]` (A records with `ttl`), a `big.<anything>` TXT answer larger than
 * 512 bytes (truncated over UDP without EDNS), and NXDOMAIN + SOA (minimum `negativeTtl`) otherwise.
 */
export async function startFakeUpstream(
  options: { records?: Record<string, string[]>; ttl?: number; negativeTtl?: number; port?: number } = {},
): Promise<FakeUpstream> {
  const records = options.records ?? {};
  const ttl = options.ttl ?? 60;
  const negativeTtl = options.negativeTtl ?? 30;
  const state: FakeUpstream = {
    port: 0,
    queries: { udp: 0, tcp: 0 },
    seen: [],
    mode: 'answer',
    close: async () => {},
  };
  const respond = (msg: Buffer, transport: 'udp' | 'tcp'): Buffer | undefined => {
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return undefined;
    }
    const question = q.questions?.[0];
    if (!question) return undefined;
    const opt = q.additionals?.find((a) => a.type === 'OPT') as dnsPacket.OptAnswer | undefined;
    state.seen.push({ name: question.name.toLowerCase(), type: question.type, transport, edns: !!opt });
    state.queries[transport]++;
    if (state.mode === 'silent') return undefined;
    const name = question.name.toLowerCase();
    const base = {
      type: 'response' as const,
      id: q.id,
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE,
      questions: [question],
      additionals: opt
        ? [{ type: 'OPT', name: '.', udpPayloadSize: 1232, flags: 0 } as dnsPacket.Answer]
        : [],
    };
    const limit = opt ? opt.udpPayloadSize : 512;
    if (name.startsWith('big.') && question.type === 'TXT') {
      const answers = Array.from({ length: 6 }, (_, i) => ({
        type: 'TXT' as const,
        name: question.name,
        ttl,
        data: [`${i}`.padEnd(200, 'x')],
      }));
      const full = dnsPacket.encode({ ...base, answers });
      if (transport === 'udp' && full.length > limit) {
        return dnsPacket.encode({ ...base, flags: base.flags | dnsPacket.TRUNCATED_RESPONSE, answers: [] });
      }
      return full;
    }
    const ips = records[name];
    if (ips) {
      const answers =
        question.type === 'A'
          ? ips.map((ip) => ({ type: 'A' as const, name: question.name, ttl, data: ip }))
          : [];
      return dnsPacket.encode({ ...base, answers, authorities: answers.length ? [] : [soa(negativeTtl)] });
    }
    return dnsPacket.encode({ ...base, flags: base.flags | 3, authorities: [soa(negativeTtl)] });
  };

  // UDP and TCP must share one port number, and a random free UDP port may be taken for TCP by a
  // parallel test: retry with a fresh UDP port on EADDRINUSE (an unhandled listen error used to
  // hang the test's set-up).
  const sockets = new Set<net.Socket>();
  let udp!: dgram.Socket;
  let tcp!: net.Server;
  for (let attempt = 0; ; attempt++) {
    udp = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(options.port ?? 0, '127.0.0.1', () => resolve());
    });
    state.port = udp.address().port;
    tcp = net.createServer((socket) => serveTcp(socket));
    const listened = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      tcp.once('error', (err: NodeJS.ErrnoException) => resolve(err));
      tcp.listen(state.port, '127.0.0.1', () => resolve(undefined));
    });
    if (!listened) break;
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    if (listened.code !== 'EADDRINUSE' || options.port !== undefined || attempt >= 20) throw listened;
  }
  udp.on('message', (msg, rinfo) => {
    const r = respond(msg, 'udp');
    if (r) udp.send(r, rinfo.port, rinfo.address);
  });
  function serveTcp(socket: net.Socket): void {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = Buffer.alloc(0);
    socket.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        const r = respond(Buffer.from(msg), 'tcp');
        if (r) {
          const len = Buffer.alloc(2);
          len.writeUInt16BE(r.length);
          socket.write(Buffer.concat([len, r]));
        }
      }
    });
  }
  let closed = false;
  state.close = async () => {
    if (closed) return;
    closed = true;
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => udp.close(() => resolve()));
    await new Promise<void>((resolve) => tcp.close(() => resolve()));
  };
  return state;
}

function soa(minimum: number): dnsPacket.Answer {
  return {
    type: 'SOA',
    name: 'test',
    ttl: minimum,
    data: { mname: 'ns.test', rname: 'admin.test', serial: 1, refresh: 60, retry: 60, expire: 600, minimum },
  };
}

/** Sends raw bytes over UDP and waits up to `timeoutMs` for one reply (undefined if none). */
export function udpExchange(port: number, payload: Buffer, timeoutMs = 1000): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      resolve(undefined);
    }, timeoutMs);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(m);
    });
    s.send(payload, port, '127.0.0.1');
  });
}

/** Encodes a query for `name`/`type` with dns-packet. */
export function query(name: string, type: dnsPacket.RecordType = 'A', id = 0x1234): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name, class: 'IN' }],
  });
}
