#include "core/murmur3.h"

#include <cstring>

namespace edgemesh {

namespace {
inline uint32_t Rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }
inline uint32_t MixK(uint32_t k) {
  k *= 0xcc9e2d51u;
  k = Rotl(k, 15);
  return k * 0x1b873593u;
}
}  // namespace

uint32_t Murmur3(const void* data, size_t len, uint32_t seed) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  uint32_t h = seed;
  const size_t blocks = len & ~static_cast<size_t>(3);
  for (size_t i = 0; i < blocks; i += 4) {
    // Little-endian load regardless of host order, as the TS twin reads it.
    uint32_t k = static_cast<uint32_t>(bytes[i]) | (static_cast<uint32_t>(bytes[i + 1]) << 8) |
                 (static_cast<uint32_t>(bytes[i + 2]) << 16) | (static_cast<uint32_t>(bytes[i + 3]) << 24);
    h ^= MixK(k);
    h = Rotl(h, 13);
    h = h * 5 + 0xe6546b64u;
  }
  uint32_t k = 0;
  switch (len & 3) {
    case 3:
      k ^= static_cast<uint32_t>(bytes[blocks + 2]) << 16;
      [[fallthrough]];
    case 2:
      k ^= static_cast<uint32_t>(bytes[blocks + 1]) << 8;
      [[fallthrough]];
    case 1:
      k ^= bytes[blocks];
      h ^= MixK(k);
  }
  h ^= static_cast<uint32_t>(len);
  h ^= h >> 16;
  h *= 0x85ebca6bu;
  h ^= h >> 13;
  h *= 0xc2b2ae35u;
  h ^= h >> 16;
  return h;
}

}  // namespace edgemesh
