// Maglev consistent hashing (Eisenbud et al., NSDI '16): a lookup table of prime size where each
// member fills slots in its own permutation order, giving near-perfect balance and small remapping.
import type { Endpoint } from '../controller/types.ts';
import { sortedMembers } from './endpoint-key.ts';
import { murmur3 } from './murmur3.ts';

/** Istio's default Maglev table size (a prime). */
export const DEFAULT_MAGLEV_TABLE_SIZE = 65537;

function isPrime(n: number): boolean {
  if (n < 2) return false;
  if (n % 2 === 0) return n === 2;
  for (let d = 3; d * d <= n; d += 2) if (n % d === 0) return false;
  return true;
}

/** The smallest prime >= n (the permutation scheme needs a prime table size). */
export function nextPrime(n: number): number {
  let p = Math.max(2, Math.ceil(n));
  while (!isPrime(p)) p++;
  return p;
}

/** An immutable Maglev table over a set of endpoints. */
export class MaglevTable {
  /** Members sorted by key. */
  readonly members: readonly Endpoint[];
  /** Table size (prime). */
  readonly size: number;
  private readonly table: Int32Array;

  constructor(endpoints: readonly Endpoint[], tableSize = DEFAULT_MAGLEV_TABLE_SIZE) {
    const { keys, members } = sortedMembers(endpoints);
    this.members = members;
    const m = nextPrime(Math.max(tableSize, keys.length, 7));
    this.size = m;
    this.table = new Int32Array(m).fill(-1);
    const n = keys.length;
    if (n === 0) return;
    const offset = keys.map((k) => murmur3(k, 0) % m);
    const skip = keys.map((k) => (murmur3(k, 1) % (m - 1)) + 1);
    const next = new Uint32Array(n);
    let filled = 0;
    // Members take turns claiming their next unclaimed preferred slot until the table is full.
    while (filled < m) {
      for (let i = 0; i < n && filled < m; i++) {
        let slot = (offset[i]! + next[i]! * skip[i]!) % m;
        while (this.table[slot]! >= 0) {
          next[i] = next[i]! + 1;
          slot = (offset[i]! + next[i]! * skip[i]!) % m;
        }
        this.table[slot] = i;
        next[i] = next[i]! + 1;
        filled++;
      }
    }
  }

  /** The member owning `hash`, undefined for an empty table. */
  pickHash(hash: number): Endpoint | undefined {
    if (this.members.length === 0) return undefined;
    return this.members[this.table[hash % this.size]!];
  }

  /** Distinct members starting at the owner of `hash`, then following table slots (fallbacks). */
  *walk(hash: number): Generator<Endpoint> {
    if (this.members.length === 0) return;
    const seen = new Uint8Array(this.members.length);
    let left = this.members.length;
    const start = hash % this.size;
    for (let i = 0; i < this.size && left > 0; i++) {
      const owner = this.table[(start + i) % this.size]!;
      if (seen[owner]) continue;
      seen[owner] = 1;
      left--;
      yield this.members[owner]!;
    }
  }
}
