#include "core/routing_table.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cstring>

#include "core/murmur3.h"

namespace edgemesh {

namespace {
uint16_t U16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t U32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}
IpAddr RawAddr(const uint8_t* p) {
  IpAddr a;
  std::memcpy(a.b, p, 16);  // already network order
  return a;
}
}  // namespace

std::string EndpointString(const Endpoint& e) { return e.addr.ToString() + ":" + std::to_string(e.port); }

HashRing BuildRing(const std::vector<Endpoint>& sorted_endpoints) {
  HashRing ring;
  const size_t n = sorted_endpoints.size();
  if (n == 0) return ring;
  const size_t vnodes = kRingPointsPerEndpoint;
  ring.points.reserve(n * vnodes);
  for (size_t e = 0; e < n; ++e) {
    const std::string base = EndpointString(sorted_endpoints[e]) + "#";
    for (size_t i = 0; i < vnodes; ++i) {
      const std::string label = base + std::to_string(i);
      ring.points.push_back((static_cast<uint64_t>(Murmur3(label)) << 32) | e);
    }
  }
  std::sort(ring.points.begin(), ring.points.end());
  return ring;
}

uint32_t HashRing::Pick(uint32_t hash) const {
  auto it = std::lower_bound(points.begin(), points.end(), static_cast<uint64_t>(hash) << 32);
  if (it == points.end()) it = points.begin();
  return static_cast<uint32_t>(*it & 0xffffffffu);
}

uint32_t PickEndpoint(const Route& route, const IpAddr& client, uint32_t random) {
  const uint32_t n = static_cast<uint32_t>(route.endpoints.size());
  if (n == 0) return 0;
  uint32_t first;
  switch (route.policy) {
    case LbPolicy::kSourceIpHash: {
      if (client.IsV4()) {
        // The IPv4 hot path as before: no std::string.
        char buf[INET_ADDRSTRLEN] = {0};
        in_addr a{};
        a.s_addr = client.V4Be();
        inet_ntop(AF_INET, &a, buf, sizeof(buf));
        first = route.ring.Pick(Murmur3(std::string_view(buf)));
      } else {
        first = route.ring.Pick(Murmur3(std::string_view(client.ToString())));
      }
      break;
    }
    case LbPolicy::kRandom:
      first = random % n;
      break;
    case LbPolicy::kRoundRobin:
    default:
      first = route.rr.fetch_add(1, std::memory_order_relaxed) % n;
      break;
  }
  return first;
}

std::shared_ptr<const RoutingTable> RoutingTable::Decode(const uint8_t* data, size_t len, std::string* error) {
  auto fail = [&](const std::string& what) {
    *error = "routing table: " + what;
    return nullptr;
  };
  if (len < kRouteHeaderSize) return fail("shorter than its 16-byte header");
  if (U32(data) == kRouteMagicV1)
    return fail("old format EMR1 (IPv4-only, version 1); this addon decodes EMR2 (rebuild the addon or update the TS encoder)");
  if (U32(data) != kRouteMagic) return fail("bad magic (not an EMR2 table)");
  auto table = std::make_shared<RoutingTable>();
  table->generation = U32(data + 4);
  const uint32_t count = U32(data + 8);
  size_t off = kRouteHeaderSize;
  table->routes_.reserve(count);
  for (uint32_t r = 0; r < count; ++r) {
    if (len - off < kRouteEntrySize) return fail("truncated at route " + std::to_string(r));
    const uint8_t* p = data + off;
    auto route = std::make_unique<Route>();
    route->vip = RawAddr(p);
    route->port = U16(p + 16);
    const uint8_t policy = p[18];
    if (policy > static_cast<uint8_t>(LbPolicy::kSourceIpHash))
      return fail("route " + std::to_string(r) + ": unknown policy " + std::to_string(policy));
    route->policy = static_cast<LbPolicy>(policy);
    route->flags = p[19];
    route->affinity_timeout_s = U32(p + 20);
    route->service_slot = U32(p + 24);
    route->connect_timeout_ms = U32(p + 28);
    const uint32_t eps = U32(p + 32);
    off += kRouteEntrySize;
    if ((len - off) / kRouteEndpointSize < eps) return fail("route " + std::to_string(r) + ": endpoints truncated");
    route->endpoints.reserve(eps);
    for (uint32_t e = 0; e < eps; ++e) {
      const uint8_t* q = data + off + e * kRouteEndpointSize;
      // The encoder gives a ClusterIP endpoints of its own family (plus the tunnel's loopback
      // ports); the upstream socket takes each endpoint's family, so a mix would still connect.
      route->endpoints.push_back(Endpoint{RawAddr(q), U16(q + 16)});
    }
    off += eps * kRouteEndpointSize;
    // Ring order is the string order of "ip:port"; sort here so the encoder's order never matters.
    std::vector<std::pair<std::string, Endpoint>> keyed;
    keyed.reserve(eps);
    for (const auto& ep : route->endpoints) keyed.emplace_back(EndpointString(ep), ep);
    std::sort(keyed.begin(), keyed.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    for (size_t i = 0; i < keyed.size(); ++i) route->endpoints[i] = keyed[i].second;
    if (route->policy == LbPolicy::kSourceIpHash) route->ring = BuildRing(route->endpoints);
    const AddrPort key{route->vip, route->port};
    if (table->index_.count(key) != 0) return fail("route " + std::to_string(r) + ": duplicate ClusterIP:port");
    table->index_.emplace(key, route.get());
    table->routes_.push_back(std::move(route));
  }
  if (off != len) return fail("trailing bytes after the last route");
  return table;
}

const Route* RoutingTable::Lookup(const IpAddr& vip, uint16_t port) const {
  auto it = index_.find(AddrPort{vip, port});
  return it == index_.end() ? nullptr : it->second;
}

}  // namespace edgemesh
