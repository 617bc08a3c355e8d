// An IP address of either family in 16 bytes: IPv6 as is, IPv4 as IPv4-mapped ::ffff:a.b.c.d, so
// routes, endpoints, clients and hand-offs carry one type whatever the family. Header-only: the hot
// path (route lookup, affinity) inlines the compare and hash.
#pragma once
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <string>

namespace edgemesh {

struct IpAddr {
  uint8_t b[16] = {0};

  static IpAddr FromV4Be(uint32_t addr_be) {
    IpAddr a;
    a.b[10] = 0xff;
    a.b[11] = 0xff;
    std::memcpy(a.b + 12, &addr_be, 4);
    return a;
  }
  static IpAddr FromV6(const in6_addr& in6) {
    IpAddr a;
    std::memcpy(a.b, in6.s6_addr, 16);
    return a;
  }
  // From a sockaddr of either family; false (out untouched) for any other family.
  static bool FromSockaddr(const sockaddr_storage& ss, IpAddr* out, uint16_t* port) {
    if (ss.ss_family == AF_INET) {
      const auto& sa = reinterpret_cast<const sockaddr_in&>(ss);
      *out = FromV4Be(sa.sin_addr.s_addr);
      *port = ntohs(sa.sin_port);
      return true;
    }
    if (ss.ss_family == AF_INET6) {
      const auto& sa = reinterpret_cast<const sockaddr_in6&>(ss);
      *out = FromV6(sa.sin6_addr);
      *port = ntohs(sa.sin6_port);
      return true;
    }
    return false;
  }
  // "a.b.c.d" or an IPv6 literal; false on anything else.
  static bool Parse(const std::string& text, IpAddr* out) {
    in_addr v4{};
    if (inet_pton(AF_INET, text.c_str(), &v4) == 1) {
      *out = FromV4Be(v4.s_addr);
      return true;
    }
    in6_addr v6{};
    if (inet_pton(AF_INET6, text.c_str(), &v6) == 1) {
      *out = FromV6(v6);
      return true;
    }
    return false;
  }

  // IPv4-mapped: the address of an IPv4 socket (an IPv6 socket never sees one: listeners are V6ONLY).
  bool IsV4() const {
    static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(b, kMapped, 12) == 0;
  }
  uint32_t V4Be() const {
    uint32_t v;
    std::memcpy(&v, b + 12, 4);
    return v;
  }
  int Family() const { return IsV4() ? AF_INET : AF_INET6; }

  // Dotted quad for IPv4, RFC 5952 text (inet_ntop, what Node's net.SocketAddress prints) for IPv6:
  // the form ring points, client hashes and hand-offs use, the same as the TS twin's.
  std::string ToString() const {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (IsV4()) {
      in_addr a{};
      a.s_addr = V4Be();
      inet_ntop(AF_INET, &a, buf, sizeof(buf));
    } else {
      in6_addr a{};
      std::memcpy(a.s6_addr, b, 16);
      inet_ntop(AF_INET6, &a, buf, sizeof(buf));
    }
    return buf;
  }

  // Fills a sockaddr for connect(); returns its length.
  socklen_t ToSockaddr(uint16_t port, sockaddr_storage* ss) const {
    std::memset(ss, 0, sizeof(*ss));
    if (IsV4()) {
      auto* sa = reinterpret_cast<sockaddr_in*>(ss);
      sa->sin_family = AF_INET;
      sa->sin_addr.s_addr = V4Be();
      sa->sin_port = htons(port);
      return sizeof(sockaddr_in);
    }
    auto* sa = reinterpret_cast<sockaddr_in6*>(ss);
    sa->sin6_family = AF_INET6;
    std::memcpy(sa->sin6_addr.s6_addr, b, 16);
    sa->sin6_port = htons(port);
    return sizeof(sockaddr_in6);
  }

  uint64_t Hash() const {
    uint64_t hi, lo;
    std::memcpy(&hi, b, 8);
    std::memcpy(&lo, b + 8, 8);
    // Cheap 64-bit mix (splitmix finaliser) of both halves: table and affinity keys.
    uint64_t x = hi * 0x9e3779b97f4a7c15ull ^ lo;
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    return x;
  }
  bool operator==(const IpAddr& o) const { return std::memcmp(b, o.b, 16) == 0; }
  bool operator!=(const IpAddr& o) const { return !(*this == o); }
};

// ClusterIP:port (or client address) as a hash-map key.
struct AddrPort {
  IpAddr addr;
  uint16_t port = 0;
  bool operator==(const AddrPort& o) const { return port == o.port && addr == o.addr; }
};
struct AddrPortHash {
  size_t operator()(const AddrPort& k) const { return static_cast<size_t>(k.addr.Hash() ^ (k.port * 0x100000001b3ull)); }
};
struct IpAddrHash {
  size_t operator()(const IpAddr& a) const { return static_cast<size_t>(a.Hash()); }
};

}  // namespace edgemesh
