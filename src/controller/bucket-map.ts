// An immutable string-keyed map whose versions share structure: keys are spread over 256 hash
// buckets and a new version copies only the buckets it changes. Copying a plain 10k-entry Map
// costs milliseconds; a one-Service snapshot must cost far less (the sync budget is 5 ms).

const BUCKETS = 256;

/** FNV-1a of a string, reduced to a bucket index. */
function bucketOf(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % BUCKETS;
}

/** A persistent ReadonlyMap: withChanges() returns a new version, the old one stays valid. */
export class BucketMap<V> implements ReadonlyMap<string, V> {
  readonly [Symbol.toStringTag] = 'BucketMap';

  private constructor(
    private readonly buckets: readonly (ReadonlyMap<string, V> | undefined)[],
    readonly size: number,
  ) {}

  /** The empty map. */
  static empty<V>(): BucketMap<V> {
    return new BucketMap<V>(new Array(BUCKETS).fill(undefined), 0);
  }

  /** A BucketMap with the entries of any map (returned as is when it already is one). */
  static from<V>(map: ReadonlyMap<string, V>): BucketMap<V> {
    if (map instanceof BucketMap) return map as BucketMap<V>;
    return BucketMap.empty<V>().withChanges(map, []);
  }

  get(key: string): V | undefined {
    return this.buckets[bucketOf(key)]?.get(key);
  }

  has(key: string): boolean {
    return this.buckets[bucketOf(key)]?.has(key) ?? false;
  }

  /** A new version with `sets` stored and `deletes` removed; untouched buckets are shared. */
  withChanges(sets: Iterable<[string, V]>, deletes: Iterable<string>): BucketMap<V> {
    const buckets = this.buckets.slice();
    const copied = new Set<number>();
    let size = this.size;
    const writable = (b: number): Map<string, V> => {
      if (!copied.has(b)) {
        copied.add(b);
        buckets[b] = new Map(buckets[b] ?? []);
      }
      return buckets[b] as Map<string, V>;
    };
    for (const key of deletes) {
      const b = bucketOf(key);
      if (!buckets[b]?.has(key)) continue;
      writable(b).delete(key);
      size--;
    }
    for (const [key, value] of sets) {
      const bucket = writable(bucketOf(key));
      if (!bucket.has(key)) size++;
      bucket.set(key, value);
    }
    return new BucketMap(buckets, size);
  }

  *entries(): MapIterator<[string, V]> {
    for (const bucket of this.buckets) if (bucket) yield* bucket.entries();
  }

  *keys(): MapIterator<string> {
    for (const bucket of this.buckets) if (bucket) yield* bucket.keys();
  }

  *values(): MapIterator<V> {
    for (const bucket of this.buckets) if (bucket) yield* bucket.values();
  }

  [Symbol.iterator](): MapIterator<[string, V]> {
    return this.entries();
  }

  forEach(fn: (value: V, key: string, map: ReadonlyMap<string, V>) => void, thisArg?: unknown): void {
    for (const [k, v] of this.entries()) fn.call(thisArg, v, k, this);
  }
}
