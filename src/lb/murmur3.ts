// MurmurHash3 x86 32-bit: the one hash every L4/L7 hashing decision uses. The native data plane
// mirrors it byte for byte (parity tests), so the function and its input encoding are a contract.

const encoder = new TextEncoder();

/** MurmurHash3 x86_32 of the UTF-8 bytes of `text` (or of raw `bytes`), as an unsigned 32-bit int. */
export function murmur3(input: string | Uint8Array, seed = 0): number {
  const data = typeof input === 'string' ? encoder.encode(input) : input;
  const len = data.length;
  const c1 = 0xcc9e2d51;
  const c2 = 0x1b873593;
  let h = seed >>> 0;
  const blocks = len & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  // Tail: the remaining 1..3 bytes, little-endian, mixed once.
  const rest = len & 3;
  if (rest > 0) {
    let k = 0;
    if (rest === 3) k ^= data[blocks + 2]! << 16;
    if (rest >= 2) k ^= data[blocks + 1]! << 8;
    k ^= data[blocks]!;
    k = Math.imul(k, c1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, c2);
    h ^= k;
  }
  h ^= len;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
