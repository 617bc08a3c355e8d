#include "dns/dns_wire.h"

#include <cstring>

namespace edgemesh::dns {
namespace {

inline uint16_t U16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

constexpr uint16_t kFlagQr = 0x8000;
constexpr uint16_t kFlagAa = 0x0400;
constexpr uint16_t kFlagRd = 0x0100;
constexpr uint16_t kFlagRa = 0x0080;

}  // namespace

bool ParseSimpleQuery(const uint8_t* pkt, size_t len, SimpleQuery* q) {
  if (len < kHeaderSize) return false;
  uint16_t flags = U16(pkt + 2);
  // A response, another opcode, TC/Z bits the JS server may judge: not ours.
  if (flags & kFlagQr) return false;
  if (((flags >> 11) & 0xf) != 0) return false;
  if (U16(pkt + 4) != 1 || U16(pkt + 6) != 0 || U16(pkt + 8) != 0) return false;
  uint16_t arcount = U16(pkt + 10);
  if (arcount > 1) return false;
  size_t pos = kHeaderSize;
  size_t out = 0;
  size_t total = 0;
  for (;;) {
    if (pos >= len) return false;
    uint8_t l = pkt[pos];
    if (l == 0) break;
    if (l > 63) return false;  // compression pointers and reserved label types
    size_t end = pos + 1 + l;
    if (end > len) return false;
    total += l + 1u;
    if (total > 254) return false;  // same limit as the JS parser (wire.ts readQuestionName)
    q->name[out++] = l;
    for (size_t i = pos + 1; i < end; ++i) {
      uint8_t c = pkt[i];
      // A '.' or '\' inside a label is escaped by the JS parser: leave such names to it.
      if (c == '.' || c == '\\') return false;
      if (c >= 'A' && c <= 'Z') c |= 0x20;
      q->name[out++] = c;
    }
    pos = end;
  }
  q->name[out++] = 0;
  q->name_len = out;
  pos += 1;
  if (pos + 4 > len) return false;
  q->qtype = U16(pkt + pos);
  if (U16(pkt + pos + 2) != kClassIn) return false;
  pos += 4;
  q->question_end = pos;
  q->id = U16(pkt);
  q->rd = (flags & kFlagRd) != 0;
  q->edns = false;
  q->dnssec_ok = false;
  q->udp_limit = kClassicUdpLimit;
  if (arcount == 1) {
    // Only an OPT owned by the root; its options are ignored exactly as the JS server ignores them.
    if (pos + kOptRecordSize > len || pkt[pos] != 0) return false;
    if (U16(pkt + pos + 1) != kTypeOpt) return false;
    uint16_t size = U16(pkt + pos + 3);
    uint8_t version = pkt[pos + 6];
    if (version != 0) return false;  // BADVERS is the JS server's answer
    uint16_t rdlen = U16(pkt + pos + 9);
    if (pos + kOptRecordSize + rdlen > len) return false;
    q->edns = true;
    q->dnssec_ok = (pkt[pos + 7] & 0x80) != 0;
    uint16_t limit = size < kClassicUdpLimit ? kClassicUdpLimit : size;
    q->udp_limit = limit > kEdnsUdpLimit ? kEdnsUdpLimit : limit;
  }
  return true;
}

size_t WriteReply(const SimpleQuery& q, const uint8_t* pkt, uint8_t rcode, uint16_t ancount, const uint8_t* an,
                  size_t an_len, uint16_t nscount, const uint8_t* ns, size_t ns_len, uint8_t* out, size_t cap) {
  size_t total = q.question_end + an_len + ns_len + (q.edns ? kOptRecordSize : 0);
  if (total > cap || total > q.udp_limit) return 0;
  PutU16(out, q.id);
  uint16_t flags = kFlagQr | kFlagAa | kFlagRa | (rcode & 0xf);
  if (q.rd) flags |= kFlagRd;
  PutU16(out + 2, flags);
  PutU16(out + 4, 1);
  PutU16(out + 6, ancount);
  PutU16(out + 8, nscount);
  PutU16(out + 10, q.edns ? 1 : 0);
  // The question in the client's letter case (resolvers using 0x20 randomization check it).
  std::memcpy(out + kHeaderSize, pkt + kHeaderSize, q.question_end - kHeaderSize);
  size_t pos = q.question_end;
  if (an_len) std::memcpy(out + pos, an, an_len);
  pos += an_len;
  if (ns_len) std::memcpy(out + pos, ns, ns_len);
  pos += ns_len;
  if (q.edns) {
    // Root owner, type OPT, our 1232-byte payload size, extended rcode 0, version 0, DO echoed.
    static const uint8_t kOpt[kOptRecordSize] = {0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0};
    std::memcpy(out + pos, kOpt, kOptRecordSize);
    if (q.dnssec_ok) out[pos + 7] = 0x80;
    pos += kOptRecordSize;
  }
  return pos;
}

}  // namespace edgemesh::dns
