// The destination a client dialled before iptables/nftables (or ip6tables) REDIRECT rewrote it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "core/errno_error.h"
#include "core/ip_addr.h"

namespace edgemesh {

struct OriginalDst {
  IpAddr addr;               // IPv4 as IPv4-mapped
  uint16_t port = 0;         // host byte order
  std::string ToString() const { return addr.ToString(); }  // dotted quad or RFC 5952 IPv6
};

struct OriginalDstResult {
  std::optional<OriginalDst> dst;
  std::optional<SyscallError> error;
};

// getsockopt(SOL_IP, SO_ORIGINAL_DST) on an accepted IPv4 socket (family AF_INET), or
// getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST) on an IPv6 one (AF_INET6). ENOENT means the
// connection was not redirected (no conntrack entry), which callers treat as "not for us".
OriginalDstResult GetOriginalDst(int fd, int family);
// The same for a socket of unknown family (asks the socket: SO_DOMAIN).
OriginalDstResult GetOriginalDst(int fd);

}  // namespace edgemesh
