// Builds routing-table buffers in the layout routing_table.h documents, for the native tests.
#pragma once
#include <arpa/inet.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/routing_table.h"

namespace edgemesh_test {

struct TestRoute {
  std::string vip;
  uint16_t port;
  uint8_t policy = 0;
  uint8_t flags = 0;
  uint32_t affinity_timeout_s = 0;
  uint32_t slot = 0;
  uint32_t connect_timeout_ms = 0;
  std::vector<std::pair<std::string, uint16_t>> endpoints;
};

inline void PutU16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(v & 0xff);
  b.push_back(v >> 8);
}
inline void PutU32(std::vector<uint8_t>& b, uint32_t v) {
  for (int i = 0; i < 4; ++i) b.push_back((v >> (8 * i)) & 0xff);
}
// 16 bytes: IPv6 as is, IPv4 as ::ffff:a.b.c.d.
inline void PutAddr(std::vector<uint8_t>& b, const std::string& ip) {
  edgemesh::IpAddr a;
  edgemesh::IpAddr::Parse(ip, &a);
  b.insert(b.end(), a.b, a.b + 16);
}

inline std::vector<uint8_t> BuildTable(uint32_t generation, const std::vector<TestRoute>& routes) {
  std::vector<uint8_t> b;
  PutU32(b, edgemesh::kRouteMagic);
  PutU32(b, generation);
  PutU32(b, static_cast<uint32_t>(routes.size()));
  PutU32(b, 0);
  for (const auto& r : routes) {
    PutAddr(b, r.vip);
    PutU16(b, r.port);
    b.push_back(r.policy);
    b.push_back(r.flags);
    PutU32(b, r.affinity_timeout_s);
    PutU32(b, r.slot);
    PutU32(b, r.connect_timeout_ms);
    PutU32(b, static_cast<uint32_t>(r.endpoints.size()));
    for (const auto& [ip, port] : r.endpoints) {
      PutAddr(b, ip);
      PutU16(b, port);
      PutU16(b, 0);
    }
  }
  return b;
}

inline edgemesh::IpAddr Addr(const std::string& ip) {
  edgemesh::IpAddr a;
  edgemesh::IpAddr::Parse(ip, &a);
  return a;
}

}  // namespace edgemesh_test
