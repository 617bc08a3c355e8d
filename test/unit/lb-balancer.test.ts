// Every load-balancing policy against its contract: exact round-robin rotation, random and
// least-request distributions, consistent hashing, session affinity, endpoint preference,
// outlier ejection and return.
import { describe, expect, it } from 'vitest';
import type {
  Endpoint,
  LoadBalancerPolicy,
  OutlierDetectionPolicy,
  ServiceEntry,
  ServicePortEntry,
} from '../../src/controller/types.ts';
import { CONNECT_FAILURE, createBalancer, endpointKey } from '../../src/lb/index.ts';

function ep(ip: string, extra: Partial<Endpoint> = {}): Endpoint {
  return { ip, port: 8080, ready: true, serving: true, terminating: false, ...extra };
}

function svc(
  endpoints: Endpoint[],
  policy: { lb?: LoadBalancerPolicy; od?: OutlierDetectionPolicy; affinity?: number } = {},
): { service: ServiceEntry; port: ServicePortEntry } {
  const port: ServicePortEntry = {
    name: 'http',
    port: 80,
    protocol: 'TCP',
    appProtocol: 'http',
    targetPort: 8080,
    endpoints,
    ...(policy.lb || policy.od
      ? {
          trafficPolicy: {
            ...(policy.lb ? { loadBalancer: policy.lb } : {}),
            ...(policy.od ? { outlierDetection: policy.od } : {}),
          },
        }
      : {}),
  };
  const service: ServiceEntry = {
    namespace: 'default',
    name: 'hostname-lb-svc',
    key: 'default/hostname-lb-svc',
    clusterIPs: ['10.96.0.10'],
    headless: false,
    type: 'ClusterIP',
    ports: [port],
    sessionAffinity:
      policy.affinity !== undefined
        ? { type: 'ClientIP', timeoutSeconds: policy.affinity }
        : { type: 'None', timeoutSeconds: 0 },
    labels: {},
    proxied: true,
  };
  return { service, port };
}

/** Deterministic PRNG (mulberry32) so distribution tests cannot flake. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const three = () => [ep('10.0.0.1'), ep('10.0.0.2'), ep('10.0.0.3')];
const ctx = { clientIp: '192.168.1.5' };

function tally(pickIp: () => string, n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const ip = pickIp();
    m.set(ip, (m.get(ip) ?? 0) + 1);
  }
  return m;
}

describe('simple policies', () => {
  it('ROUND_ROBIN (the default) rotates exactly, in endpoint order', () => {
    const { service, port } = svc(three());
    const b = createBalancer(service, port);
    expect(b.kind).toBe('ROUND_ROBIN');
    const got = Array.from({ length: 9 }, () => b.pick(ctx)!.ip);
    expect(got).toEqual([1, 2, 3, 1, 2, 3, 1, 2, 3].map((i) => `10.0.0.${i}`));
  });

  it('ROUND_ROBIN skips excluded endpoints and returns undefined when all are excluded', () => {
    const { service, port } = svc(three());
    const b = createBalancer(service, port);
    const ex = new Set(['10.0.0.2:8080']);
    const got = Array.from({ length: 4 }, () => b.pick(ctx, ex)!.ip);
    expect(got).not.toContain('10.0.0.2');
    expect(b.pick(ctx, new Set(three().map(endpointKey)))).toBeUndefined();
  });

  it('RANDOM spreads 1,000 picks 25-42 % each over 3 endpoints', () => {
    const { service, port } = svc(three(), { lb: { simple: 'RANDOM' } });
    const b = createBalancer(service, port, { random: seeded(7) });
    const counts = tally(() => b.pick(ctx)!.ip, 1000);
    expect(counts.size).toBe(3);
    for (const c of counts.values()) {
      expect(c).toBeGreaterThanOrEqual(250);
      expect(c).toBeLessThanOrEqual(420);
    }
  });

  it('LEAST_REQUEST (power of two choices) sends clearly fewer requests to a slow endpoint', () => {
    const { service, port } = svc(three(), { lb: { simple: 'LEAST_REQUEST' } });
    const b = createBalancer(service, port, { random: seeded(3) });
    // Simulated time: .1 takes 10 ticks per request, the others 1; 6 requests arrive per tick.
    const pending: Array<{ ep: Endpoint; done: number }> = [];
    const counts = new Map<string, number>();
    for (let tick = 0; tick < 200; tick++) {
      for (let i = pending.length - 1; i >= 0; i--) {
        if (pending[i]!.done <= tick) {
          b.onResult(pending[i]!.ep, true, 200);
          pending.splice(i, 1);
        }
      }
      for (let r = 0; r < 6; r++) {
        const e = b.pick(ctx)!;
        counts.set(e.ip, (counts.get(e.ip) ?? 0) + 1);
        pending.push({ ep: e, done: tick + (e.ip === '10.0.0.1' ? 10 : 1) });
      }
    }
    const slow = counts.get('10.0.0.1')!;
    expect(slow).toBeGreaterThan(0);
    expect(slow).toBeLessThan(counts.get('10.0.0.2')! / 2);
    expect(slow).toBeLessThan(counts.get('10.0.0.3')! / 2);
    expect([...b.inFlight().values()].reduce((x, y) => x + y, 0)).toBe(pending.length);
  });

  it('LEAST_CONN is an alias of LEAST_REQUEST; PASSTHROUGH uses the original destination', () => {
    const lc = svc(three(), { lb: { simple: 'LEAST_CONN' } });
    expect(createBalancer(lc.service, lc.port).kind).toBe('LEAST_REQUEST');
    const pt = svc(three(), { lb: { simple: 'PASSTHROUGH' } });
    const b = createBalancer(pt.service, pt.port);
    for (let i = 0; i < 5; i++) expect(b.pick({ ...ctx, originalDst: '10.0.0.3:8080' })!.ip).toBe('10.0.0.3');
  });
});

describe('consistent hash', () => {
  it('same header value → same endpoint; different values spread over all', () => {
    const { service, port } = svc(three(), { lb: { consistentHash: { httpHeaderName: 'User-Agent' } } });
    const b = createBalancer(service, port);
    expect(b.kind).toBe('RING_HASH');
    expect(b.hashSource).toEqual({ kind: 'header', name: 'user-agent' });
    const first = b.pick({ ...ctx, hashKey: 'curl/8.0' })!.ip;
    for (let i = 0; i < 20; i++) expect(b.pick({ ...ctx, hashKey: 'curl/8.0' })!.ip).toBe(first);
    const spread = tally(() => b.pick({ ...ctx, hashKey: `agent-${Math.random()}` })!.ip, 600);
    expect(spread.size).toBe(3);
    for (const c of spread.values()) expect(c).toBeGreaterThan(100);
  });

  it('useSourceIp hashes the client IP only, and agrees with the L4 reference', async () => {
    const { ringHashPick } = await import('../../src/lb/index.ts');
    const { service, port } = svc(three(), { lb: { consistentHash: { useSourceIp: true } } });
    const b = createBalancer(service, port);
    const reference = three();
    for (let i = 0; i < 50; i++) {
      const ip = `172.16.${i}.9`;
      expect(b.pick({ clientIp: ip })!.ip).toBe(ringHashPick(reference, ip)!.ip);
    }
  });

  it('cookie, query and maglev sources are recognised; a missing key falls back to rotation', () => {
    const c = svc(three(), {
      lb: { consistentHash: { httpCookie: { name: 'sticky', path: '/', ttl: '1h' } } },
    });
    expect(createBalancer(c.service, c.port).hashSource).toEqual({
      kind: 'cookie',
      name: 'sticky',
      path: '/',
      ttlSeconds: 3600,
    });
    const q = svc(three(), { lb: { consistentHash: { httpQueryParameterName: 'user', maglev: {} } } });
    const b = createBalancer(q.service, q.port);
    expect(b.kind).toBe('MAGLEV');
    expect(b.hashSource).toEqual({ kind: 'query', name: 'user' });
    const one = b.pick({ ...ctx, hashKey: 'alice' })!.ip;
    for (let i = 0; i < 10; i++) expect(b.pick({ ...ctx, hashKey: 'alice' })!.ip).toBe(one);
    const noKey = Array.from({ length: 3 }, () => b.pick(ctx)!.ip);
    expect(new Set(noKey).size).toBe(3);
  });

  it('an ejected endpoint moves only its own keys, which come back when it returns', () => {
    let now = 1_000_000;
    const { service, port } = svc(three(), {
      lb: { consistentHash: { httpHeaderName: 'x-user' } },
      od: { consecutive5xxErrors: 1, baseEjectionTimeSeconds: 10, maxEjectionPercent: 100 },
    });
    const b = createBalancer(service, port, { now: () => now });
    const users = Array.from({ length: 300 }, (_, i) => `u${i}`);
    const before = users.map((u) => b.pick({ ...ctx, hashKey: u })!.ip);
    b.onResult(ep('10.0.0.2'), false, 500);
    expect(b.isEjected(ep('10.0.0.2'))).toBe(true);
    const during = users.map((u) => b.pick({ ...ctx, hashKey: u })!.ip);
    users.forEach((_, i) => {
      if (before[i] !== '10.0.0.2') expect(during[i]).toBe(before[i]);
      else expect(during[i]).not.toBe('10.0.0.2');
    });
    now += 10_001;
    expect(users.map((u) => b.pick({ ...ctx, hashKey: u })!.ip)).toEqual(before);
  });

  it('bounded load sends a hot key elsewhere once its owner exceeds factor × average', () => {
    const { service, port } = svc(three(), { lb: { consistentHash: { httpHeaderName: 'x' } } });
    const b = createBalancer(service, port, { hashBalanceFactor: 1.25 });
    const picks = Array.from({ length: 30 }, () => b.pick({ ...ctx, hashKey: 'hot' })!.ip);
    const counts = tally(() => picks.shift()!, 30);
    // Bound = ceil(1.25 × (in flight + 1) / 3) keeps every endpoint near 10 of 30.
    for (const c of counts.values()) expect(c).toBeLessThanOrEqual(13);
    expect(counts.size).toBe(3);
  });

  it('keeps assignments when endpoints are updated with the same set', () => {
    const { service, port } = svc(three(), { lb: { consistentHash: { httpHeaderName: 'x' } } });
    const b = createBalancer(service, port);
    const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
    const before = keys.map((k) => b.pick({ ...ctx, hashKey: k })!.ip);
    b.update(service, { ...port, endpoints: three().reverse() });
    expect(keys.map((k) => b.pick({ ...ctx, hashKey: k })!.ip)).toEqual(before);
  });
});

describe('session affinity ClientIP', () => {
  it('keeps a client on one endpoint until timeoutSeconds pass without traffic', () => {
    let now = 0;
    const { service, port } = svc(three(), { affinity: 30 });
    const b = createBalancer(service, port, { now: () => now });
    const a = b.pick({ clientIp: '10.1.1.1' })!.ip;
    const other = b.pick({ clientIp: '10.1.1.2' })!.ip;
    expect(other).not.toBe(a);
    for (let i = 0; i < 10; i++) {
      now += 20_000; // each use refreshes the 30 s timer
      expect(b.pick({ clientIp: '10.1.1.1' })!.ip).toBe(a);
    }
    now += 31_000;
    // Expired: the next pick follows round-robin (which has moved on), so it is a fresh choice.
    const picks = new Set(Array.from({ length: 3 }, (_, i) => b.pick({ clientIp: `10.9.9.${i}` })!.ip));
    expect(picks.size).toBe(3);
  });

  it('moves a client whose endpoint went away', () => {
    const { service, port } = svc(three(), { affinity: 100 });
    const b = createBalancer(service, port);
    const a = b.pick({ clientIp: '10.1.1.1' })!;
    b.update(service, { ...port, endpoints: three().filter((e) => e.ip !== a.ip) });
    const next = b.pick({ clientIp: '10.1.1.1' })!.ip;
    expect(next).not.toBe(a.ip);
    expect(b.pick({ clientIp: '10.1.1.1' })!.ip).toBe(next);
  });
});

describe('endpoint preference', () => {
  it('uses ready endpoints before serving terminating ones, and those before failing', () => {
    const eps = [ep('10.0.0.1', { ready: false, serving: true, terminating: true }), ep('10.0.0.2')];
    const { service, port } = svc(eps);
    const b = createBalancer(service, port);
    for (let i = 0; i < 4; i++) expect(b.pick(ctx)!.ip).toBe('10.0.0.2');
    b.update(service, { ...port, endpoints: [eps[0]!, ep('10.0.0.3', { ready: false, serving: false })] });
    expect(b.pick(ctx)!.ip).toBe('10.0.0.1');
    b.update(service, { ...port, endpoints: [ep('10.0.0.3', { ready: false, serving: false })] });
    expect(b.pick(ctx)).toBeUndefined();
  });

  it('prefers endpoints on this node, then falls back to others when they are ejected', () => {
    const eps = [ep('10.0.0.1', { nodeName: 'edge-a' }), ep('10.0.0.2', { nodeName: 'edge-b' })];
    const { service, port } = svc(eps);
    const b = createBalancer(service, port, { nodeName: 'edge-b' });
    for (let i = 0; i < 4; i++) {
      const e = b.pick(ctx)!;
      expect(e.ip).toBe('10.0.0.2');
      b.onResult(e, true);
    }
    const e = b.pick(ctx)!;
    b.onResult(e, false, CONNECT_FAILURE);
    expect(b.pick(ctx)!.ip).toBe('10.0.0.1');
  });
});

describe('outlier detection', () => {
  it('ejects after consecutive5xxErrors, respects maxEjectionPercent and returns after baseEjectionTime', () => {
    let now = 0;
    const { service, port } = svc(three(), {
      od: { consecutive5xxErrors: 3, baseEjectionTimeSeconds: 30, maxEjectionPercent: 34 },
    });
    const b = createBalancer(service, port, { now: () => now });
    const bad = ep('10.0.0.1');
    b.onResult(bad, false, 500);
    b.onResult(bad, false, 500);
    b.onResult(bad, true, 200); // a success resets the streak
    b.onResult(bad, false, 500);
    b.onResult(bad, false, 503);
    expect(b.isEjected(bad)).toBe(false);
    b.onResult(bad, false, 500);
    expect(b.isEjected(bad)).toBe(true);
    for (let i = 0; i < 6; i++) expect(b.pick(ctx)!.ip).not.toBe('10.0.0.1');
    // 1 of 3 ejected = 33 % is below the 34 % cap, so a second one may still be ejected...
    const second = ep('10.0.0.2');
    for (let i = 0; i < 3; i++) b.onResult(second, false, 500);
    expect(b.isEjected(second)).toBe(true);
    // ...but 2 of 3 (67 %) is at the cap: the third stays.
    const third = ep('10.0.0.3');
    for (let i = 0; i < 3; i++) b.onResult(third, false, 500);
    expect(b.isEjected(third)).toBe(false);
    now += 30_001;
    expect(b.isEjected(bad)).toBe(false);
    const back = new Set(Array.from({ length: 3 }, () => b.pick(ctx)!.ip));
    expect(back.has('10.0.0.1')).toBe(true);
  });

  it('counts only 502/503/504 and connect failures as gateway errors; ejection time grows', () => {
    let now = 0;
    const { service, port } = svc(three(), {
      od: {
        consecutive5xxErrors: 0,
        consecutiveGatewayErrors: 2,
        baseEjectionTimeSeconds: 10,
        maxEjectionPercent: 100,
      },
    });
    const b = createBalancer(service, port, { now: () => now });
    const e = ep('10.0.0.3');
    b.onResult(e, false, 500);
    b.onResult(e, false, 500);
    b.onResult(e, false, 500);
    expect(b.isEjected(e)).toBe(false);
    b.onResult(e, false, 502);
    b.onResult(e, false, CONNECT_FAILURE);
    expect(b.isEjected(e)).toBe(true);
    now += 10_001;
    expect(b.isEjected(e)).toBe(false);
    b.onResult(e, false, 504);
    b.onResult(e, false, 504);
    // Second ejection: 2 × base.
    now += 15_000;
    expect(b.isEjected(e)).toBe(true);
    now += 5_001;
    expect(b.isEjected(e)).toBe(false);
  });

  it('without a DestinationRule, one connect failure ejects briefly (passive), 5xx do not', () => {
    let now = 0;
    const { service, port } = svc(three());
    const b = createBalancer(service, port, { now: () => now });
    for (let i = 0; i < 10; i++) b.onResult(ep('10.0.0.1'), false, 500);
    expect(b.isEjected(ep('10.0.0.1'))).toBe(false);
    b.onResult(ep('10.0.0.2'), false, CONNECT_FAILURE);
    expect(b.isEjected(ep('10.0.0.2'))).toBe(true);
    const picks = Array.from({ length: 6 }, () => b.pick(ctx)!.ip);
    expect(picks).not.toContain('10.0.0.2');
    now += 5_001;
    expect(b.isEjected(ep('10.0.0.2'))).toBe(false);
  });

  it('panic mode: when every endpoint is ejected it still picks one', () => {
    const { service, port } = svc([ep('10.0.0.1')]);
    const b = createBalancer(service, port);
    b.onResult(ep('10.0.0.1'), false, CONNECT_FAILURE);
    expect(b.isEjected(ep('10.0.0.1'))).toBe(true);
    expect(b.pick(ctx)!.ip).toBe('10.0.0.1');
  });
});
