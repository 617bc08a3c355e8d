// Seeded pseudo-random generators for fuzz and property tests: a failing case replays from its seed.

/** Linear congruential generator: floats in [0, 1). */
export function lcgRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** xorshift32: integers in [0, n) (seed 0 counts as 1: xorshift never leaves 0). */
export function xorshiftInt(seed: number): (n: number) => number {
  let x = seed || 1;
  return (n: number) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
}
