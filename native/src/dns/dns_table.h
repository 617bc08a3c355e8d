// The answer table TS pushes on every snapshot (encoder: src/dns/answer-table.ts): the cluster
// names the native responder answers, with pre-encoded answer sections per query type. Decoded
// once, immutable afterwards, published to the responder thread by an atomic shared_ptr swap.
//
// Layout (integers little-endian; names in DNS wire form, lower-case, ending with the 0 label):
//   header 16 B: magic u32 = 0x31444d45 ("EMD1"), generation u32, nameCount u32,
//                zoneLen u16, soaLen u16
//   zone name   zoneLen bytes (wire form): names under it that are not in the table are NXDOMAIN
//               (zoneLen 0: no zone, nothing is NXDOMAIN)
//   soa record  soaLen bytes: the zone's SOA record (authority section of NXDOMAIN / NODATA)
//   per name:   nameLen u8, name bytes, answerCount u8, then per answer:
//               qtype u16, flags u8 (bit 0: append the SOA as authority; bit 1: the answer to
//               `<name>.<anything>` outside the zone, the search-path collapse), reserved u8,
//               ancount u16, anLen u16, an bytes (records; owner pointers point at offset 12)
// A name in the table with no answer for the asked type is left to the JS server. A name outside
// the zone containing `.svc.<zone>.` is looked up as its prefix up to the zone (first occurrence),
// among the collapse answers.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace edgemesh::dns {

constexpr uint32_t kTableMagic = 0x31444d45u;
constexpr size_t kTableHeaderSize = 16;
constexpr uint8_t kAnswerFlagSoa = 1;
constexpr uint8_t kAnswerFlagCollapsed = 2;

struct TableAnswer {
  uint16_t qtype = 0;
  bool soa = false;
  bool collapsed = false;
  uint16_t ancount = 0;
  std::string an;
};

// What the table says about one question.
enum class Verdict {
  kAnswer,    // *answer is the reply (NOERROR)
  kNxdomain,  // under the zone and unknown: NXDOMAIN with the SOA
  kPunt,      // not ours to decide: the JS server answers
};

class AnswerTable {
 public:
  uint32_t generation = 0;
  std::string zone;  // wire form
  std::string soa;   // one SOA record

  // Decodes a table; on failure returns nullptr and sets *error.
  static std::shared_ptr<const AnswerTable> Decode(const uint8_t* data, size_t len, std::string* error);
  // Looks up a lower-case wire-form name (with its 0 label) and qtype.
  Verdict Lookup(const uint8_t* name, size_t name_len, uint16_t qtype, const TableAnswer** answer) const;
  size_t size() const { return names_.size(); }

 private:
  bool InZone(const uint8_t* name, size_t name_len) const;
  const TableAnswer* Find(const std::string& key, uint16_t qtype, bool collapsed) const;
  Verdict Collapse(const uint8_t* name, size_t name_len, uint16_t qtype, const TableAnswer** answer) const;
  std::string marker_;  // wire labels `svc` + zone, without the final zero
  std::unordered_map<std::string, std::vector<TableAnswer>> names_;
};

// True when `name` (len bytes) is exactly one well-formed wire-form name.
bool ValidWireName(const uint8_t* name, size_t len);

}  // namespace edgemesh::dns
