// MurmurHash3 x86 32-bit: the hash of every L4 hashing decision. src/lb/murmur3.ts is its TS twin
// and parity tests hold the two byte-for-byte equal.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace edgemesh {

// MurmurHash3_x86_32 of `len` bytes at `data` with `seed`.
uint32_t Murmur3(const void* data, size_t len, uint32_t seed = 0);

// Murmur3 of the bytes of `text` (callers pass UTF-8; addresses are ASCII).
inline uint32_t Murmur3(std::string_view text, uint32_t seed = 0) { return Murmur3(text.data(), text.size(), seed); }

}  // namespace edgemesh
