// Consistent-hash ring ("ketama" style) — the L4 hash reference the native data plane mirrors.
// Spec (agreed with the native engineer; change only together with native/ and the lead):
//   - members: the ready endpoints, named `ip:port`, de-duplicated, sorted (plain string order);
//   - each member gets vnodes = pointsPerEndpoint(ringSize) = ceil(ringSize / 4) points
//     murmur3(`${ip}:${port}#${i}`), i < vnodes, ringSize = 1024 (256 points) unless a minimum ring
//     size is configured. The count depends only on ringSize, never on the number of members, so
//     adding or removing a member moves only the keys that member gains or owned (the ring holds
//     >= ringSize points from 4 members on);
//   - points are ordered by hash, ties by member order;
//   - pick(key) = owner of the first point with hash >= murmur3(key), wrapping to the first point.
import type { Endpoint } from '../controller/types.ts';
import { sortedMembers } from './endpoint-key.ts';
import { murmur3 } from './murmur3.ts';

/** Default ring size (the L4 contract uses this): 256 points per member. */
export const DEFAULT_RING_SIZE = 1024;

/** Points each member gets on a ring of `ringSize` (independent of the member count). */
export function pointsPerEndpoint(ringSize: number): number {
  return Math.max(1, Math.ceil(ringSize / 4));
}

/** An immutable ring over a set of endpoints. */
export class HashRing {
  /** Members in ring order (sorted by key). */
  readonly members: readonly Endpoint[];
  private readonly hashes: Uint32Array;
  private readonly owners: Uint32Array;

  constructor(endpoints: readonly Endpoint[], ringSize = DEFAULT_RING_SIZE) {
    const { keys, members } = sortedMembers(endpoints);
    this.members = members;
    const n = keys.length;
    const vnodes = pointsPerEndpoint(ringSize);
    const points: Array<[number, number]> = [];
    for (let m = 0; m < n; m++) {
      for (let i = 0; i < vnodes; i++) points.push([murmur3(`${keys[m]}#${i}`), m]);
    }
    points.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    this.hashes = Uint32Array.from(points, (p) => p[0]);
    this.owners = Uint32Array.from(points, (p) => p[1]);
  }

  /** Index of the first point whose hash is >= `hash` (wrapping to 0). */
  private pointIndex(hash: number): number {
    let lo = 0;
    let hi = this.hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.hashes[mid]! < hash) lo = mid + 1;
      else hi = mid;
    }
    return lo === this.hashes.length ? 0 : lo;
  }

  /** The member owning `hash`, undefined for an empty ring. */
  pickHash(hash: number): Endpoint | undefined {
    if (this.hashes.length === 0) return undefined;
    return this.members[this.owners[this.pointIndex(hash)]!];
  }

  /** The member owning murmur3(key). */
  pick(key: string): Endpoint | undefined {
    return this.pickHash(murmur3(key));
  }

  /**
   * Distinct members in ring order starting at `hash`: the first is pickHash(hash), the rest are
   * the fallbacks a bounded-load or exclusion walk visits (each member at most once).
   */
  *walk(hash: number): Generator<Endpoint> {
    const total = this.hashes.length;
    if (total === 0) return;
    const seen = new Uint8Array(this.members.length);
    let left = this.members.length;
    const start = this.pointIndex(hash);
    for (let i = 0; i < total && left > 0; i++) {
      const owner = this.owners[(start + i) % total]!;
      if (seen[owner]) continue;
      seen[owner] = 1;
      left--;
      yield this.members[owner]!;
    }
  }
}

const ringCache = new WeakMap<readonly Endpoint[], HashRing>();

/**
 * L4 hash reference: the ready endpoint (of `endpoints`) that owns `key` on the default ring.
 * The native data plane must return the same endpoint for the same input (parity tests).
 */
export function ringHashPick(endpoints: readonly Endpoint[], key: string): Endpoint | undefined {
  let ring = ringCache.get(endpoints);
  if (!ring) {
    ring = new HashRing(endpoints.filter((e) => e.ready));
    ringCache.set(endpoints, ring);
  }
  return ring.pick(key);
}
