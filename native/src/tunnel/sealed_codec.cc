#include "tunnel/sealed_codec.h"

#include <openssl/evp.h>

#include <cstring>

namespace edgemesh::tunnel {

void RecordNonce(const uint8_t* iv, uint64_t seq, uint8_t* out) {
  std::memcpy(out, iv, kIvBytes);
  for (int i = 0; i < 8; ++i) out[kIvBytes - 1 - i] ^= static_cast<uint8_t>(seq >> (8 * i));
}

namespace {

void WriteHeader(uint8_t* rec, uint32_t n) {
  rec[0] = static_cast<uint8_t>(n >> 24);
  rec[1] = static_cast<uint8_t>(n >> 16);
  rec[2] = static_cast<uint8_t>(n >> 8);
  rec[3] = static_cast<uint8_t>(n);
}

}  // namespace

RecordSealer::RecordSealer() : ctx_(EVP_CIPHER_CTX_new()) {}
RecordSealer::~RecordSealer() { EVP_CIPHER_CTX_free(ctx_); }

bool RecordSealer::Init(const uint8_t* key, const uint8_t* iv) {
  std::memcpy(iv_, iv, kIvBytes);
  seq_ = 0;
  // The key schedule is computed once here; each record then only sets its nonce.
  return ctx_ != nullptr && EVP_EncryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kIvBytes), nullptr) == 1 &&
         EVP_EncryptInit_ex(ctx_, nullptr, nullptr, key, nullptr) == 1;
}

size_t RecordSealer::SealInPlace(uint8_t* rec, size_t n) {
  if (n > kMaxPlaintext) return 0;
  uint8_t nonce[kIvBytes];
  RecordNonce(iv_, seq_, nonce);
  WriteHeader(rec, static_cast<uint32_t>(n + kTagBytes));
  uint8_t* body = rec + kHeaderBytes;
  int len = 0;
  int fin = 0;
  if (EVP_EncryptInit_ex(ctx_, nullptr, nullptr, nullptr, nonce) != 1 ||
      EVP_EncryptUpdate(ctx_, nullptr, &len, rec, static_cast<int>(kHeaderBytes)) != 1)
    return 0;
  if (n > 0 && EVP_EncryptUpdate(ctx_, body, &len, body, static_cast<int>(n)) != 1) return 0;
  if (EVP_EncryptFinal_ex(ctx_, body + n, &fin) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_GET_TAG, static_cast<int>(kTagBytes), body + n) != 1)
    return 0;
  ++seq_;
  return kHeaderBytes + n + kTagBytes;
}

RecordOpener::RecordOpener() : ctx_(EVP_CIPHER_CTX_new()) {}
RecordOpener::~RecordOpener() { EVP_CIPHER_CTX_free(ctx_); }

bool RecordOpener::Init(const uint8_t* key, const uint8_t* iv) {
  std::memcpy(iv_, iv, kIvBytes);
  seq_ = 0;
  return ctx_ != nullptr && EVP_DecryptInit_ex(ctx_, EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(kIvBytes), nullptr) == 1 &&
         EVP_DecryptInit_ex(ctx_, nullptr, nullptr, key, nullptr) == 1;
}

bool RecordOpener::OpenInPlace(uint8_t* rec, size_t body_len) {
  if (body_len < kTagBytes || body_len > kMaxBody) return false;
  size_t n = body_len - kTagBytes;
  uint8_t nonce[kIvBytes];
  RecordNonce(iv_, seq_, nonce);
  uint8_t* body = rec + kHeaderBytes;
  int len = 0;
  int fin = 0;
  if (EVP_DecryptInit_ex(ctx_, nullptr, nullptr, nullptr, nonce) != 1 ||
      EVP_DecryptUpdate(ctx_, nullptr, &len, rec, static_cast<int>(kHeaderBytes)) != 1)
    return false;
  if (n > 0 && EVP_DecryptUpdate(ctx_, body, &len, body, static_cast<int>(n)) != 1) return false;
  if (EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_GCM_SET_TAG, static_cast<int>(kTagBytes), body + n) != 1 ||
      EVP_DecryptFinal_ex(ctx_, body + n, &fin) != 1)
    return false;
  ++seq_;
  return true;
}

}  // namespace edgemesh::tunnel
