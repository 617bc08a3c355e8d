// The routing table TS pushes on every snapshot: ClusterIP:port -> endpoints + L4 policy. Decoded
// once from a flat little-endian buffer (encoder: src/dataplane/native/route-encoder.ts), immutable
// afterwards, and published to the worker threads by an atomic shared_ptr swap (no lock on lookup).
//
// Layout (all integers little-endian; addresses are 16 raw bytes in network order, IPv6 as is,
// IPv4 as IPv4-mapped ::ffff:a.b.c.d):
//   header   16 B: magic u32 = 0x32524d45 ("EMR2"), generation u32, routeCount u32, reserved u32
//   route    36 B: vip[16], port u16, policy u8, flags u8, affinityTimeoutS u32, serviceSlot u32,
//                  connectTimeoutMs u32 (0 = plane default), endpointCount u32
//   endpoint 20 B: ip[16], port u16, reserved u16     (endpointCount of them after their route)
// Version 1 ("EMR1": 4-byte IPv4 addresses, 24-byte routes, 8-byte endpoints) is refused by name,
// so a TS encoder and an addon from different builds fail loudly instead of misreading.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/ip_addr.h"

namespace edgemesh {

constexpr uint32_t kRouteMagic = 0x32524d45u;      // "EMR2"
constexpr uint32_t kRouteMagicV1 = 0x31524d45u;    // "EMR1", the IPv4-only layout (refused)
constexpr size_t kRouteHeaderSize = 16;
constexpr size_t kRouteEntrySize = 36;
constexpr size_t kRouteEndpointSize = 20;
constexpr uint32_t kNoServiceSlot = 0xffffffffu;

// L4 endpoint choice of one service port.
enum class LbPolicy : uint8_t { kRoundRobin = 0, kRandom = 1, kSourceIpHash = 2 };
constexpr uint8_t kRouteFlagAffinity = 1;  // sessionAffinity: ClientIP
constexpr uint8_t kRouteFlagHandoff = 2;   // needs L7: the accepted fd goes to TS (Plane::PushHandoff)
constexpr uint8_t kRouteFlagTunnel = 4;    // endpoints are the agent's own tunnel ports: the fd goes to TS with the chosen one

struct Endpoint {
  IpAddr addr;
  uint16_t port = 0;  // host order
  bool operator==(const Endpoint& o) const { return addr == o.addr && port == o.port; }
};

// "a.b.c.d:port" / "fd00::1:port" (no brackets), the form the hash ring is built from (and the TS
// twin, src/lb/endpoint-key.ts, uses).
std::string EndpointString(const Endpoint& e);

// A consistent-hash ring: for endpoints sorted by their "ip:port" string, kRingPointsPerEndpoint
// points per endpoint at murmur3("ip:port#i"); points ordered by (hash, endpoint index). The count
// never depends on how many endpoints there are, so a membership change moves only the keys of the
// endpoint that came or went (src/lb/ring-hash.ts pointsPerEndpoint(1024) is the TS twin).
constexpr size_t kRingPointsPerEndpoint = 256;
struct HashRing {
  std::vector<uint64_t> points;  // (hash << 32) | endpoint index, ascending
  // Index of the endpoint owning the first point >= hash (wrapping to the first point).
  uint32_t Pick(uint32_t hash) const;
};
HashRing BuildRing(const std::vector<Endpoint>& sorted_endpoints);

struct Route {
  IpAddr vip;
  uint16_t port = 0;
  LbPolicy policy = LbPolicy::kRoundRobin;
  uint8_t flags = 0;
  uint32_t affinity_timeout_s = 0;
  uint32_t service_slot = kNoServiceSlot;
  uint32_t connect_timeout_ms = 0;
  std::vector<Endpoint> endpoints;  // sorted by EndpointString (ring order)
  HashRing ring;                    // built only for kSourceIpHash
  mutable std::atomic<uint32_t> rr{0};
};

// Chooses the endpoint index for a new connection from `client` (callers retry a refusing
// endpoint with (first + attempt) % n). `random` is a per-thread random value (used by kRandom).
// Source-IP hashing hashes the client's text form (IPv4 dotted quad, IPv6 RFC 5952), like the TS twin.
uint32_t PickEndpoint(const Route& route, const IpAddr& client, uint32_t random);

class RoutingTable {
 public:
  uint32_t generation = 0;
  // Decodes a table; on failure returns nullptr and sets *error.
  static std::shared_ptr<const RoutingTable> Decode(const uint8_t* data, size_t len, std::string* error);
  const Route* Lookup(const IpAddr& vip, uint16_t port) const;
  size_t size() const { return routes_.size(); }

 private:
  std::vector<std::unique_ptr<Route>> routes_;
  std::unordered_map<AddrPort, const Route*, AddrPortHash> index_;
};

}  // namespace edgemesh
