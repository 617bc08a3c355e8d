// The DNS server on real sockets, asked by `dig` (dnsutils) over UDP and TCP: every record type of
// cluster names, NXDOMAIN vs NODATA, search-path collapse, the short form, and bad packets.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsServer } from '../../src/dns/dns-server.ts';
import { dig, dnsServerOptions, query, svc, table, udpExchange } from '../helpers/dns.ts';

const services = [
  svc('default', 'web', {
    clusterIPs: ['10.96.0.10', 'fd00:96::10'],
    ports: [
      { name: 'http', port: 80, endpoints: [{ ip: '10.244.1.5' }] },
      { name: 'dns-udp', port: 53, protocol: 'UDP', endpoints: [{ ip: '10.244.1.5', port: 53 }] },
    ],
  }),
  svc('db', 'pg', {
    headless: true,
    ports: [
      {
        name: 'postgres',
        port: 5432,
        endpoints: [
          { ip: '10.244.2.1', port: 5432, hostname: 'pg-0' },
          { ip: '10.244.2.2', port: 5432 },
          { ip: '10.244.2.3', port: 5432, ready: false, hostname: 'pg-2' },
        ],
      },
    ],
  }),
  svc('default', 'ext', { type: 'ExternalName', externalName: 'example.org' }),
];

let server: DnsServer;
let port: number;

beforeAll(async () => {
  server = new DnsServer(
    dnsServerOptions({ upstreams: ['127.0.0.1:9'], attemptTimeoutMs: 200, deadlineMs: 500 }),
  );
  await server.start();
  await server.apply(table(services));
  port = server.address()!.port;
});

afterAll(async () => {
  await server?.stop();
});

describe('cluster names', () => {
  it('answers A for <svc>.<ns>.svc.<domain> with the ClusterIP, authoritative, TTL from config', async () => {
    const r = await dig('127.0.0.1', port, ['web.default.svc.cluster.local', 'A']);
    expect(r.status).toBe('NOERROR');
    expect(r.flags).toContain('aa');
    expect(r.answers).toEqual([['web.default.svc.cluster.local.', 5, 'A', '10.96.0.10']]);
  });

  it('answers AAAA with the IPv6 ClusterIP, over TCP too', async () => {
    const r = await dig('127.0.0.1', port, ['+tcp', 'web.default.svc.cluster.local', 'AAAA']);
    expect(r.answers).toEqual([['web.default.svc.cluster.local.', 5, 'AAAA', 'fd00:96::10']]);
  });

  it('answers the short form <svc>.<ns> and keeps the client letter case', async () => {
    const r = await dig('127.0.0.1', port, ['Web.Default', 'A']);
    expect(r.status).toBe('NOERROR');
    expect(r.answers).toEqual([['Web.Default.', 5, 'A', '10.96.0.10']]);
  });

  it('answers headless services with the ready endpoint IPs only', async () => {
    const r = await dig('127.0.0.1', port, ['pg.db.svc.cluster.local', 'A']);
    expect(r.answers.map((a) => a[3]).sort()).toEqual(['10.244.2.1', '10.244.2.2']);
  });

  it('answers <hostname>.<svc>.<ns>.svc.<domain> for endpoints with hostnames', async () => {
    const r = await dig('127.0.0.1', port, ['pg-0.pg.db.svc.cluster.local', 'A']);
    expect(r.answers).toEqual([['pg-0.pg.db.svc.cluster.local.', 5, 'A', '10.244.2.1']]);
    const notReady = await dig('127.0.0.1', port, ['pg-2.pg.db.svc.cluster.local', 'A']);
    expect(notReady.status).toBe('NXDOMAIN');
  });

  it('answers SRV for named ports: ClusterIP service → service name, headless → each endpoint', async () => {
    const r = await dig('127.0.0.1', port, ['_http._tcp.web.default.svc.cluster.local', 'SRV']);
    expect(r.answers).toEqual([
      ['_http._tcp.web.default.svc.cluster.local.', 5, 'SRV', '0 100 80 web.default.svc.cluster.local.'],
    ]);
    const udp = await dig('127.0.0.1', port, ['_dns-udp._udp.web.default.svc.cluster.local', 'SRV']);
    expect(udp.answers[0]?.[3]).toBe('0 100 53 web.default.svc.cluster.local.');
    const headless = await dig('127.0.0.1', port, ['_postgres._tcp.pg.db.svc.cluster.local', 'SRV']);
    expect(headless.answers.map((a) => a[3]).sort()).toEqual([
      '0 50 5432 10-244-2-2.pg.db.svc.cluster.local.',
      '0 50 5432 pg-0.pg.db.svc.cluster.local.',
    ]);
    // The SRV target names resolve.
    const target = await dig('127.0.0.1', port, ['10-244-2-2.pg.db.svc.cluster.local', 'A']);
    expect(target.answers[0]?.[3]).toBe('10.244.2.2');
  });

  it('answers PTR for ClusterIPs (IPv4 and IPv6)', async () => {
    const r = await dig('127.0.0.1', port, ['-x', '10.96.0.10']);
    expect(r.answers).toEqual([['10.0.96.10.in-addr.arpa.', 5, 'PTR', 'web.default.svc.cluster.local.']]);
    const v6 = await dig('127.0.0.1', port, ['-x', 'fd00:96::10']);
    expect(v6.answers[0]?.[3]).toBe('web.default.svc.cluster.local.');
  });

  it('answers ExternalName services with a CNAME', async () => {
    const r = await dig('127.0.0.1', port, ['ext.default.svc.cluster.local', 'A']);
    expect(r.answers).toEqual([['ext.default.svc.cluster.local.', 5, 'CNAME', 'example.org.']]);
  });

  it('says NODATA (NOERROR, no answer, SOA) for a known name without the asked type', async () => {
    const r = await dig('127.0.0.1', port, ['pg.db.svc.cluster.local', 'AAAA']);
    expect(r.status).toBe('NOERROR');
    expect(r.answers).toEqual([]);
    expect(r.authority).toEqual(['SOA']);
    // Empty non-terminals exist too.
    const ent = await dig('127.0.0.1', port, ['db.svc.cluster.local', 'A']);
    expect(ent.status).toBe('NOERROR');
  });

  it('says NXDOMAIN with an SOA for unknown names inside the cluster domain', async () => {
    const r = await dig('127.0.0.1', port, ['nope.default.svc.cluster.local', 'A']);
    expect(r.status).toBe('NXDOMAIN');
    expect(r.authority).toEqual(['SOA']);
    expect(r.flags).toContain('aa');
  });

  it('collapses search-path names into the cluster name (CNAME + records)', async () => {
    const r = await dig('127.0.0.1', port, ['web.default.svc.cluster.local.corp.example', 'A']);
    expect(r.status).toBe('NOERROR');
    expect(r.answers).toEqual([
      ['web.default.svc.cluster.local.corp.example.', 5, 'CNAME', 'web.default.svc.cluster.local.'],
      ['web.default.svc.cluster.local.', 5, 'A', '10.96.0.10'],
    ]);
  });

  it('follows a new snapshot: removed names become NXDOMAIN, new ones appear', async () => {
    await server.apply(table([...services, svc('default', 'late', { clusterIPs: ['10.96.0.99'] })], 2));
    expect((await dig('127.0.0.1', port, ['late.default.svc.cluster.local'])).answers[0]?.[3]).toBe(
      '10.96.0.99',
    );
    await server.apply(table(services, 3));
    expect((await dig('127.0.0.1', port, ['late.default.svc.cluster.local'])).status).toBe('NXDOMAIN');
  });

  it('sets TC for UDP answers larger than the client allows, and answers in full over TCP', async () => {
    const many = Array.from({ length: 60 }, (_, i) => ({ ip: `10.245.0.${i + 1}` }));
    await server.apply(
      table([...services, svc('default', 'wide', { headless: true, ports: [{ endpoints: many }] })], 4),
    );
    const udp = await dig('127.0.0.1', port, ['+noedns', '+ignore', 'wide.default.svc.cluster.local']);
    expect(udp.flags).toContain('tc');
    const tcp = await dig('127.0.0.1', port, ['+tcp', 'wide.default.svc.cluster.local']);
    expect(tcp.answers).toHaveLength(60);
    await server.apply(table(services, 5));
  });
});

describe('bad input', () => {
  it('answers FORMERR to qdcount != 1 and drops packets shorter than a header', async () => {
    const two = query('web.default.svc.cluster.local');
    two.writeUInt16BE(2, 4);
    const r = await udpExchange(port, two);
    expect(r).toBeDefined();
    expect(r!.readUInt16BE(0)).toBe(0x1234);
    expect(r!.readUInt16BE(2) & 0xf).toBe(1);
    expect(await udpExchange(port, Buffer.from([1, 2, 3]), 300)).toBeUndefined();
    expect(server.metrics.snapshot().dropped['short-header']).toBeGreaterThanOrEqual(1);
  });

  it('answers FORMERR to a compression pointer (loop) in the question', async () => {
    const loop = Buffer.from([0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c, 0, 1, 0, 1]);
    const r = await udpExchange(port, loop);
    expect(r!.readUInt16BE(2) & 0xf).toBe(1);
  });

  it('closes a TCP connection announcing an oversized frame, and keeps serving others', async () => {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()));
    const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
    sock.on('error', () => {});
    sock.write(Buffer.from([0xff, 0xff, 0, 0, 0]));
    await closed;
    expect(server.metrics.snapshot().dropped['oversized-tcp-frame']).toBe(1);
    const r = await dig('127.0.0.1', port, ['+tcp', 'web.default.svc.cluster.local']);
    expect(r.answers[0]?.[3]).toBe('10.96.0.10');
  });

  it('a slow TCP client sending half a frame does not stall UDP or other TCP clients', async () => {
    const slow = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve) => slow.once('connect', () => resolve()));
    slow.write(Buffer.from([0, 40, 1, 2]));
    const r = await dig('127.0.0.1', port, ['+tcp', 'web.default']);
    expect(r.status).toBe('NOERROR');
    slow.destroy();
  });

  it('answers NOTIMP to other opcodes and never answers responses', async () => {
    const notify = query('web.default');
    notify.writeUInt16BE((4 << 11) | 0x0100, 2);
    const r = await udpExchange(port, notify);
    expect(r!.readUInt16BE(2) & 0xf).toBe(4);
    const response = query('web.default');
    response.writeUInt16BE(0x8000, 2);
    expect(await udpExchange(port, response, 300)).toBeUndefined();
  });
});
