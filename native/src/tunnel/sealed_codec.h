// Sealed records (issue 12, spec-sealed), one direction: record = u32 BE N, then N bytes of
// AES-256-GCM ciphertext followed by the 16-byte tag; AAD = the 4 header bytes; nonce = IV XOR seq
// (u64 BE in the last 8 bytes). Sealing and opening work in place so the pump never copies a
// record. Uses the OpenSSL the node binary exports (the addon resolves the symbols from node).
#pragma once
#include <cstddef>
#include <cstdint>

struct evp_cipher_ctx_st;

namespace edgemesh::tunnel {

constexpr size_t kHeaderBytes = 4;
constexpr size_t kTagBytes = 16;
constexpr size_t kMaxPlaintext = 65536;
constexpr size_t kMaxBody = kMaxPlaintext + kTagBytes;
constexpr size_t kMaxRecord = kHeaderBytes + kMaxBody;
constexpr size_t kKeyBytes = 32;
constexpr size_t kIvBytes = 12;

// The nonce of record `seq`: iv with its last 8 bytes XORed with seq (big-endian).
void RecordNonce(const uint8_t* iv, uint64_t seq, uint8_t* out);

// Seals records with one key/IV; the cipher context is set up once and reused for every record.
class RecordSealer {
 public:
  RecordSealer();
  ~RecordSealer();
  RecordSealer(const RecordSealer&) = delete;
  RecordSealer& operator=(const RecordSealer&) = delete;
  // False when OpenSSL refuses the key (out of memory); key is kKeyBytes, iv kIvBytes.
  bool Init(const uint8_t* key, const uint8_t* iv);
  // The plaintext of length n (<= kMaxPlaintext) sits at rec + kHeaderBytes: writes the header,
  // encrypts in place and appends the tag. Returns the record size (n + 20), 0 on failure.
  size_t SealInPlace(uint8_t* rec, size_t n);
  uint64_t seq() const { return seq_; }

 private:
  evp_cipher_ctx_st* ctx_;
  uint8_t iv_[kIvBytes] = {};
  uint64_t seq_ = 0;
};

// Opens records with one key/IV, in place.
class RecordOpener {
 public:
  RecordOpener();
  ~RecordOpener();
  RecordOpener(const RecordOpener&) = delete;
  RecordOpener& operator=(const RecordOpener&) = delete;
  bool Init(const uint8_t* key, const uint8_t* iv);
  // rec holds a whole record whose header N (kTagBytes <= N <= kMaxBody, checked by the caller)
  // was read: decrypts in place (plaintext at rec + kHeaderBytes, N - 16 bytes) and checks the tag.
  // False: authentication failed, and the bytes at rec are garbage that must never be written.
  bool OpenInPlace(uint8_t* rec, size_t body_len);
  uint64_t seq() const { return seq_; }

 private:
  evp_cipher_ctx_st* ctx_;
  uint8_t iv_[kIvBytes] = {};
  uint64_t seq_ = 0;
};

// The body length N in a record header.
inline uint32_t RecordBodyLength(const uint8_t* header) {
  return (uint32_t{header[0]} << 24) | (uint32_t{header[1]} << 16) | (uint32_t{header[2]} << 8) | header[3];
}

}  // namespace edgemesh::tunnel
