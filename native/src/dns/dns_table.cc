#include "dns/dns_table.h"

#include <cstring>

#include "dns/dns_wire.h"

namespace edgemesh::dns {
namespace {

struct Reader {
  const uint8_t* p;
  size_t len;
  size_t pos = 0;
  bool ok = true;
  bool Need(size_t n) {
    if (!ok || len - pos < n) ok = false;
    return ok;
  }
  uint8_t U8() { return Need(1) ? p[pos++] : 0; }
  uint16_t U16() {
    if (!Need(2)) return 0;
    uint16_t v = static_cast<uint16_t>(p[pos] | (p[pos + 1] << 8));
    pos += 2;
    return v;
  }
  uint32_t U32() {
    if (!Need(4)) return 0;
    uint32_t v = p[pos] | (p[pos + 1] << 8) | (p[pos + 2] << 16) | (static_cast<uint32_t>(p[pos + 3]) << 24);
    pos += 4;
    return v;
  }
  std::string Bytes(size_t n) {
    if (!Need(n)) return {};
    std::string s(reinterpret_cast<const char*>(p + pos), n);
    pos += n;
    return s;
  }
};

}  // namespace

bool ValidWireName(const uint8_t* name, size_t len) {
  size_t pos = 0;
  while (pos < len) {
    uint8_t l = name[pos];
    if (l == 0) return pos + 1 == len && len <= kMaxWireName;
    if (l > 63 || pos + 1 + l >= len) return false;
    pos += 1 + l;
  }
  return false;
}

std::shared_ptr<const AnswerTable> AnswerTable::Decode(const uint8_t* data, size_t len, std::string* error) {
  Reader r{data, len};
  auto fail = [&](const char* why) -> std::shared_ptr<const AnswerTable> {
    *error = why;
    return nullptr;
  };
  if (r.U32() != kTableMagic) return fail("bad magic (not an EMD1 answer table)");
  auto table = std::make_shared<AnswerTable>();
  table->generation = r.U32();
  uint32_t count = r.U32();
  uint16_t zone_len = r.U16();
  uint16_t soa_len = r.U16();
  table->zone = r.Bytes(zone_len);
  table->soa = r.Bytes(soa_len);
  if (!r.ok) return fail("truncated header");
  // An empty zone means "synthesize no NXDOMAIN" (a table that only answers listed names).
  if (!table->zone.empty() && !ValidWireName(reinterpret_cast<const uint8_t*>(table->zone.data()), table->zone.size()))
    return fail("bad zone name");
  // Each name takes at least 3 bytes: a count beyond that is a lie, not a reason to reserve memory.
  if (count > (len - r.pos) / 3) return fail("name count larger than the table");
  table->names_.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    uint8_t name_len = r.U8();
    std::string name = r.Bytes(name_len);
    uint8_t answers = r.U8();
    if (!r.ok) return fail("truncated name");
    if (!ValidWireName(reinterpret_cast<const uint8_t*>(name.data()), name.size())) return fail("bad name");
    std::vector<TableAnswer> list;
    list.reserve(answers);
    for (uint8_t a = 0; a < answers; ++a) {
      TableAnswer ans;
      ans.qtype = r.U16();
      uint8_t flags = r.U8();
      r.U8();
      ans.soa = (flags & kAnswerFlagSoa) != 0;
      ans.collapsed = (flags & kAnswerFlagCollapsed) != 0;
      ans.ancount = r.U16();
      uint16_t an_len = r.U16();
      ans.an = r.Bytes(an_len);
      if (!r.ok) return fail("truncated answer");
      if (ans.ancount == 0 && !ans.an.empty()) return fail("answer bytes without records");
      list.push_back(std::move(ans));
    }
    if (!table->names_.emplace(std::move(name), std::move(list)).second) return fail("duplicate name");
  }
  if (r.pos != len) return fail("trailing bytes");
  if (!table->zone.empty()) table->marker_ = std::string("\x03svc", 4) + table->zone.substr(0, table->zone.size() - 1);
  return table;
}

bool AnswerTable::InZone(const uint8_t* name, size_t name_len) const {
  // Walk the labels: the zone must be the suffix starting at a label boundary.
  size_t zlen = zone.size();
  if (zlen == 0) return false;
  size_t pos = 0;
  while (pos < name_len) {
    if (name_len - pos == zlen) return std::memcmp(name + pos, zone.data(), zlen) == 0;
    if (name_len - pos < zlen || name[pos] == 0) return false;
    pos += 1 + name[pos];
  }
  return false;
}

const TableAnswer* AnswerTable::Find(const std::string& key, uint16_t qtype, bool collapsed) const {
  auto it = names_.find(key);
  if (it == names_.end()) return nullptr;
  for (const auto& a : it->second)
    if (a.qtype == qtype && a.collapsed == collapsed) return &a;
  return nullptr;
}

Verdict AnswerTable::Lookup(const uint8_t* name, size_t name_len, uint16_t qtype, const TableAnswer** answer) const {
  // One key string per thread: its buffer is reused, so a lookup does not allocate.
  thread_local std::string key;
  key.assign(reinterpret_cast<const char*>(name), name_len);
  auto it = names_.find(key);
  if (it != names_.end()) {
    for (const auto& a : it->second) {
      if (a.qtype == qtype && !a.collapsed) {
        *answer = &a;
        return Verdict::kAnswer;
      }
    }
    return Verdict::kPunt;
  }
  if (InZone(name, name_len)) return Verdict::kNxdomain;
  return Collapse(name, name_len, qtype, answer);
}

Verdict AnswerTable::Collapse(const uint8_t* name, size_t name_len, uint16_t qtype, const TableAnswer** answer) const {
  // `<x>.svc.<zone>.<more>`: the first `.svc.<zone>.` after at least one label (as the JS index).
  size_t mlen = marker_.size();
  if (mlen == 0) return Verdict::kPunt;
  size_t pos = name[0] + 1u;
  while (pos < name_len && name[pos] != 0) {
    if (name_len - pos > mlen + 1 && std::memcmp(name + pos, marker_.data(), mlen) == 0 && name[pos + mlen] != 0) {
      thread_local std::string canonical;
      canonical.assign(reinterpret_cast<const char*>(name), pos + mlen);
      canonical.push_back('\0');
      const TableAnswer* a = Find(canonical, qtype, true);
      if (a == nullptr) return Verdict::kPunt;
      *answer = a;
      return Verdict::kAnswer;
    }
    pos += 1u + name[pos];
  }
  return Verdict::kPunt;
}

}  // namespace edgemesh::dns
