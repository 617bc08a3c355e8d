// The native DNS fast path's wire handling: a strict query parser that accepts only the simple
// queries the native responder may answer (everything else goes to the JS server unchanged, which
// owns FORMERR/NOTIMP/BADVERS semantics), and the reply writer. Bounds-checked on every byte.
#pragma once
#include <cstddef>
#include <cstdint>

namespace edgemesh::dns {

constexpr size_t kHeaderSize = 12;
constexpr size_t kMaxNameWire = 255;
constexpr size_t kMaxWireName = kMaxNameWire;
constexpr uint16_t kClassIn = 1;
constexpr uint16_t kTypeOpt = 41;
constexpr uint16_t kClassicUdpLimit = 512;
constexpr uint16_t kEdnsUdpLimit = 1232;
constexpr size_t kOptRecordSize = 11;

// A query the fast path may answer: one question, class IN, no compression, at most one OPT
// (owned by the root, version 0). Offsets refer to the original packet.
struct SimpleQuery {
  uint16_t id = 0;
  bool rd = false;
  uint16_t qtype = 0;
  // Lower-cased question name in wire form (labels + terminating zero), name_len bytes.
  uint8_t name[kMaxNameWire + 1] = {};
  size_t name_len = 0;
  // Offset just past the question: the question bytes are [12, question_end).
  size_t question_end = 0;
  bool edns = false;
  bool dnssec_ok = false;
  uint16_t udp_limit = kClassicUdpLimit;
};

// True when `pkt` is a query the fast path may answer; false means "give it to the JS server"
// (malformed, unusual or simply not ours to decide). Never reads outside [pkt, pkt+len).
bool ParseSimpleQuery(const uint8_t* pkt, size_t len, SimpleQuery* q);

// Writes a reply to `q` into out (capacity cap): header (QR, AA, RA, RD copied, rcode), the
// question copied from `pkt`, `an` (ancount records), `ns` (nscount records), then our OPT when
// the query had one. Returns the length, or 0 when it would exceed cap or the client's UDP limit.
size_t WriteReply(const SimpleQuery& q, const uint8_t* pkt, uint8_t rcode, uint16_t ancount, const uint8_t* an,
                  size_t an_len, uint16_t nscount, const uint8_t* ns, size_t ns_len, uint8_t* out, size_t cap);

}  // namespace edgemesh::dns
