// Forwarding against a real upstream DNS server on loopback (test/helpers/dns.ts): caching with
// TTLs, negative caching (RFC 2308), UDP retry on the next upstream, truncation → TCP, EDNS0
// passed through, serve-stale (RFC 8767) while upstreams are down, SERVFAIL instead of silence.
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { DnsServer, type DnsServerOptions } from '../../src/dns/dns-server.ts';
import { dig, dnsServerOptions, type FakeUpstream, startFakeUpstream, svc, table } from '../helpers/dns.ts';
import { freePort } from '../helpers/ports.ts';

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function upstream(options: Parameters<typeof startFakeUpstream>[0] = {}): Promise<FakeUpstream> {
  const u = await startFakeUpstream({ records: { 'www.example.test': ['192.0.2.7'] }, ...options });
  cleanups.push(() => u.close());
  return u;
}

async function server(upstreams: string[], extra: Partial<DnsServerOptions> = {}): Promise<DnsServer> {
  const s = new DnsServer(
    dnsServerOptions({ upstreams, cacheSize: 1000, attemptTimeoutMs: 300, deadlineMs: 1500, ...extra }),
  );
  await s.start();
  cleanups.push(() => s.stop());
  return s;
}

/** The server's metrics in Prometheus text. */
async function registryText(s: DnsServer): Promise<string> {
  const registry = new Registry();
  registry.registerMetric(s.metrics.upstreamSeconds);
  return registry.metrics();
}

/** A clock tests move by hand. */
function manualClock() {
  let t = Date.now();
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('forwarding', () => {
  it('forwards names outside the cluster and caches the answer for its TTL', async () => {
    const up = await upstream({ ttl: 60 });
    const clock = manualClock();
    const s = await server([`127.0.0.1:${up.port}`], { now: clock.now });
    const port = s.address()!.port;
    const first = await dig('127.0.0.1', port, ['www.example.test', 'A']);
    expect(first.status).toBe('NOERROR');
    expect(first.answers).toEqual([['www.example.test.', 60, 'A', '192.0.2.7']]);
    clock.advance(10_000);
    const second = await dig('127.0.0.1', port, ['WWW.example.test', 'A']);
    // Cached records keep the owner spelling they were stored with; the question echoes the client's.
    expect(second.answers).toEqual([['www.example.test.', 50, 'A', '192.0.2.7']]);
    expect(second.stdout).toContain(';WWW.example.test.');
    expect(up.queries.udp).toBe(1);
    clock.advance(51_000);
    await dig('127.0.0.1', port, ['www.example.test', 'A']);
    expect(up.queries.udp).toBe(2);
    expect(s.metrics.snapshot().cache.hit).toBe(1);
  });

  it('caches NXDOMAIN for the SOA minimum (negative cache)', async () => {
    const up = await upstream({ negativeTtl: 30 });
    const clock = manualClock();
    const s = await server([`127.0.0.1:${up.port}`], { now: clock.now });
    const port = s.address()!.port;
    const first = await dig('127.0.0.1', port, ['missing.example.test', 'A']);
    expect(first.status).toBe('NXDOMAIN');
    expect(first.authority).toEqual(['SOA']);
    clock.advance(20_000);
    const second = await dig('127.0.0.1', port, ['missing.example.test', 'A']);
    expect(second.status).toBe('NXDOMAIN');
    expect(up.queries.udp).toBe(1);
    clock.advance(11_000);
    await dig('127.0.0.1', port, ['missing.example.test', 'A']);
    expect(up.queries.udp).toBe(2);
  });

  it('passes EDNS0 through to the upstream (and its absence)', async () => {
    const up = await upstream();
    const s = await server([`127.0.0.1:${up.port}`]);
    const port = s.address()!.port;
    await dig('127.0.0.1', port, ['www.example.test', 'A']);
    await dig('127.0.0.1', port, ['+noedns', 'www.example.test', 'A']);
    expect(up.seen.map((q) => q.edns)).toEqual([true, false]);
  });

  it('retries over TCP when the upstream truncates, and makes a small-buffer client retry over TCP', async () => {
    const up = await upstream();
    const s = await server([`127.0.0.1:${up.port}`]);
    const port = s.address()!.port;
    const udpOnly = await dig('127.0.0.1', port, ['+noedns', '+ignore', 'big.example.test', 'TXT']);
    expect(udpOnly.flags).toContain('tc');
    expect(up.seen.map((q) => q.transport)).toEqual(['udp', 'tcp']);
    // dig then retries over TCP by itself and gets everything, from our cache.
    const full = await dig('127.0.0.1', port, ['+noedns', 'big.example.test', 'TXT']);
    expect(full.answers).toHaveLength(6);
    expect(up.queries.tcp).toBe(1);
  });

  it('tries the next upstream when one refuses (port closed) or stays silent', async () => {
    const closedPort = await freePort();
    const silent = await upstream();
    silent.mode = 'silent';
    const good = await upstream();
    const s = await server([`127.0.0.1:${closedPort}`, `127.0.0.1:${silent.port}`, `127.0.0.1:${good.port}`]);
    const r = await dig('127.0.0.1', s.address()!.port, ['www.example.test', 'A']);
    expect(r.answers[0]?.[3]).toBe('192.0.2.7');
    expect(silent.queries.udp).toBe(1);
    // The refusing server cost no timeout (ICMP port unreachable), the silent one one timeout.
    const text = await registryText(s);
    expect(text).toMatch(/outcome="refused"\} 1/);
    expect(text).toMatch(/outcome="timeout"\} 1/);
    // The server remembers the one that answered: the next query goes there first.
    await dig('127.0.0.1', s.address()!.port, ['other.example.test', 'A']);
    expect(silent.queries.udp).toBe(1);
    expect(good.queries.udp).toBe(2);
  });

  it('answers SERVFAIL (never silence) when every upstream is down and nothing is cached', async () => {
    const closedPort = await freePort();
    const s = await server([`127.0.0.1:${closedPort}`]);
    // dig runs with +tries=1 +time=4: a status at all means an answer within 4 s.
    const r = await dig('127.0.0.1', s.address()!.port, ['www.example.test', 'A']);
    expect(r.status).toBe('SERVFAIL');
  });

  it('answers SERVFAIL within the deadline when upstreams are silent', async () => {
    const silent = await upstream();
    silent.mode = 'silent';
    const s = await server([`127.0.0.1:${silent.port}`], { deadlineMs: 700 });
    const r = await dig('127.0.0.1', s.address()!.port, ['www.example.test', 'A']);
    expect(r.status).toBe('SERVFAIL');
  });

  it('serves stale answers (TTL 30) while the upstream is down, fresh ones when it is back', async () => {
    const up = await upstream({ ttl: 10 });
    const upPort = up.port;
    const clock = manualClock();
    const s = await server([`127.0.0.1:${upPort}`], { now: clock.now });
    const port = s.address()!.port;
    expect((await dig('127.0.0.1', port, ['www.example.test'])).answers[0]?.[1]).toBe(10);
    await up.close();
    clock.advance(60_000);
    const stale = await dig('127.0.0.1', port, ['www.example.test']);
    expect(stale.status).toBe('NOERROR');
    expect(stale.answers).toEqual([['www.example.test.', 30, 'A', '192.0.2.7']]);
    expect(s.metrics.snapshot().cache.stale).toBe(1);
    // Back up (same port): the next query refreshes the entry.
    const back = await startFakeUpstream({
      records: { 'www.example.test': ['192.0.2.8'] },
      ttl: 10,
      port: upPort,
    });
    cleanups.push(() => back.close());
    const fresh = await dig('127.0.0.1', port, ['www.example.test']);
    expect(fresh.answers).toEqual([['www.example.test.', 10, 'A', '192.0.2.8']]);
  });

  it('serves stale after the client-response timer when the upstream is silent', async () => {
    const up = await upstream({ ttl: 10 });
    const clock = manualClock();
    // Upstream attempts outlast dig's 4 s timeout: only the stale timer can answer in time.
    const s = await server([`127.0.0.1:${up.port}`], {
      now: clock.now,
      staleAnswerTimeoutMs: 200,
      attemptTimeoutMs: 8000,
      deadlineMs: 10_000,
    });
    const port = s.address()!.port;
    await dig('127.0.0.1', port, ['www.example.test']);
    up.mode = 'silent';
    clock.advance(60_000);
    const stale = await dig('127.0.0.1', port, ['www.example.test']);
    expect(stale.answers[0]?.[1]).toBe(30);
  });

  it('chases ExternalName targets: CNAME plus the target addresses from upstream', async () => {
    const up = await upstream();
    const s = await server([`127.0.0.1:${up.port}`]);
    await s.apply(table([svc('default', 'ext', { type: 'ExternalName', externalName: 'www.example.test' })]));
    const r = await dig('127.0.0.1', s.address()!.port, ['ext.default.svc.cluster.local', 'A']);
    expect(r.answers).toEqual([
      ['ext.default.svc.cluster.local.', 5, 'CNAME', 'www.example.test.'],
      ['www.example.test.', 5, 'A', '192.0.2.7'],
    ]);
  });

  it('exports query, cache and upstream-latency metrics', async () => {
    const up = await upstream();
    const registry = new Registry();
    const s = await server([`127.0.0.1:${up.port}`], { registry });
    const port = s.address()!.port;
    await dig('127.0.0.1', port, ['www.example.test']);
    await dig('127.0.0.1', port, ['www.example.test']);
    await dig('127.0.0.1', port, ['nope.svc.cluster.local']);
    const text = await registry.metrics();
    expect(text).toMatch(/edgemesh_dns_queries_total\{type="A",rcode="NOERROR",source="upstream"\} 1/);
    expect(text).toMatch(/edgemesh_dns_queries_total\{type="A",rcode="NOERROR",source="cache"\} 1/);
    expect(text).toMatch(/edgemesh_dns_cache_lookups_total\{result="hit"\} 1/);
    expect(text).toMatch(/edgemesh_dns_upstream_duration_seconds_count\{transport="udp",outcome="ok"\} 1/);
    // Scraping twice does not double-count.
    expect(await registry.metrics()).toMatch(/edgemesh_dns_cache_lookups_total\{result="hit"\} 1/);
  });
});
