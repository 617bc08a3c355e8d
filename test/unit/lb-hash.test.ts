// The hash contract (murmur3 + ring) the native data plane mirrors, and Maglev: balance and
// minimal remapping when endpoints come and go.
import { describe, expect, it } from 'vitest';
import type { Endpoint } from '../../src/controller/types.ts';
import { HashRing, MaglevTable, murmur3, nextPrime, ringHashPick } from '../../src/lb/index.ts';

function ep(ip: string, port = 80, extra: Partial<Endpoint> = {}): Endpoint {
  return { ip, port, ready: true, serving: true, terminating: false, ...extra };
}

function eps(n: number): Endpoint[] {
  return Array.from({ length: n }, (_, i) => ep(`10.0.${i >> 8}.${i & 255}`, 8080));
}

const keys = Array.from({ length: 20_000 }, (_, i) => `client-${i}`);

describe('murmur3 x86_32', () => {
  it('matches the published test vectors (seed 0 unless given)', () => {
    expect(murmur3('')).toBe(0);
    expect(murmur3('', 1)).toBe(0x514e28b7);
    expect(murmur3('a')).toBe(0x3c2569b2);
    expect(murmur3('abc')).toBe(0xb3dd93fa);
    expect(murmur3('hello')).toBe(0x248bfa47);
    expect(murmur3('The quick brown fox jumps over the lazy dog')).toBe(0x2e4ff723);
    // UTF-8 encoding of the input is part of the contract.
    expect(murmur3('é')).toBe(murmur3(new Uint8Array([0xc3, 0xa9])));
  });
});

describe('ring hash (L4 reference)', () => {
  it('follows the agreed spec: ceil(1024/n) points per ready endpoint, first point >= hash(key)', () => {
    const endpoints = [ep('10.0.0.3'), ep('10.0.0.1'), ep('10.0.0.2')];
    // Independent re-implementation of the spec, written the naive way.
    const points: Array<{ h: number; key: string }> = [];
    const members = ['10.0.0.1:80', '10.0.0.2:80', '10.0.0.3:80'];
    for (const m of members)
      for (let i = 0; i < Math.ceil(1024 / 3); i++) points.push({ h: murmur3(`${m}#${i}`), key: m });
    points.sort((a, b) => a.h - b.h || members.indexOf(a.key) - members.indexOf(b.key));
    for (const k of keys.slice(0, 2000)) {
      const h = murmur3(k);
      const want = (points.find((p) => p.h >= h) ?? points[0]!).key;
      const got = ringHashPick(endpoints, k)!;
      expect(`${got.ip}:${got.port}`).toBe(want);
    }
  });

  it('ignores endpoints that are not ready and returns undefined when none is', () => {
    const a = ep('10.0.0.1');
    const b = ep('10.0.0.2', 80, { ready: false });
    for (const k of keys.slice(0, 200)) expect(ringHashPick([a, b], k)).toBe(a);
    expect(ringHashPick([b], 'x')).toBeUndefined();
    expect(ringHashPick([], 'x')).toBeUndefined();
  });

  it('spreads keys within bounds of a fair share', () => {
    const ring = new HashRing(eps(5));
    const counts = new Map<string, number>();
    for (const k of keys) {
      const e = ring.pick(k)!;
      counts.set(e.ip, (counts.get(e.ip) ?? 0) + 1);
    }
    expect(counts.size).toBe(5);
    for (const c of counts.values()) {
      expect(c / keys.length).toBeGreaterThan(0.12);
      expect(c / keys.length).toBeLessThan(0.28);
    }
  });

  it('moves all keys of a removed endpoint and few others; few keys when one is added', () => {
    // vnodes = ceil(1024 / n) changes with n, so a few keys of surviving members move too (each
    // member gains or loses a handful of points); the bound below is what the spec delivers.
    const before = new HashRing(eps(10));
    const after = new HashRing(eps(10).filter((_, i) => i !== 4));
    let moved = 0;
    let disturbed = 0;
    for (const k of keys) {
      const a = before.pick(k)!;
      const b = after.pick(k)!;
      expect(b.ip).not.toBe('10.0.0.4');
      if (a.ip === '10.0.0.4') moved++;
      else if (a.ip !== b.ip) disturbed++;
    }
    expect(moved / keys.length).toBeLessThan(0.2);
    expect(disturbed / keys.length).toBeLessThan(0.08);
    const grown = new HashRing(eps(11));
    let changed = 0;
    for (const k of keys) if (before.pick(k)!.ip !== grown.pick(k)!.ip) changed++;
    // Ideal is 1/11 ≈ 9 %; allow ring variance and the vnode-count change.
    expect(changed / keys.length).toBeLessThan(0.22);
  });

  it("with a fixed point count per member, removal moves only the removed member's keys", () => {
    // ringSize = n * 100 for both rings gives every member exactly 100 points both times.
    const before = new HashRing(eps(10), 1000);
    const after = new HashRing(
      eps(10).filter((_, i) => i !== 4),
      900,
    );
    for (const k of keys) {
      const a = before.pick(k)!;
      const b = after.pick(k)!;
      if (a.ip !== '10.0.0.4') expect(b.ip).toBe(a.ip);
    }
  });

  it('walk() visits every member once, starting at the owner', () => {
    const ring = new HashRing(eps(4));
    const h = murmur3('abc');
    const walked = [...ring.walk(h)];
    expect(walked).toHaveLength(4);
    expect(walked[0]).toBe(ring.pickHash(h));
    expect(new Set(walked.map((e) => e.ip)).size).toBe(4);
  });
});

describe('maglev', () => {
  it('rounds the table to a prime and balances within a few percent', () => {
    expect(nextPrime(65536)).toBe(65537);
    expect(nextPrime(100)).toBe(101);
    const table = new MaglevTable(eps(7), 1000);
    expect(table.size).toBe(1009);
    const counts = new Map<string, number>();
    for (const k of keys) {
      const e = table.pickHash(murmur3(k))!;
      counts.set(e.ip, (counts.get(e.ip) ?? 0) + 1);
    }
    for (const c of counts.values()) expect(Math.abs(c / keys.length - 1 / 7)).toBeLessThan(0.03);
  });

  it('moves few keys of surviving endpoints when one is removed', () => {
    const before = new MaglevTable(eps(10));
    const after = new MaglevTable(eps(10).filter((_, i) => i !== 2));
    let disturbed = 0;
    for (const k of keys) {
      const a = before.pickHash(murmur3(k))!;
      const b = after.pickHash(murmur3(k))!;
      if (a.ip === '10.0.0.2') expect(b.ip).not.toBe('10.0.0.2');
      else if (a.ip !== b.ip) disturbed++;
    }
    // Maglev trades a little disruption for balance; the paper reports a few percent.
    expect(disturbed / keys.length).toBeLessThan(0.05);
  });
});
