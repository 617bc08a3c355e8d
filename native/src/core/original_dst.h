// The destination a client dialled before iptables/nftables REDIRECT rewrote it.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "core/errno_error.h"

namespace edgemesh {

struct OriginalDst {
  uint32_t addr_be = 0;  // IPv4 address, network byte order
  uint16_t port = 0;     // host byte order
  std::string ToString() const;  // dotted quad
};

struct OriginalDstResult {
  std::optional<OriginalDst> dst;
  std::optional<SyscallError> error;
};

// getsockopt(SOL_IP, SO_ORIGINAL_DST) on an accepted IPv4 socket. ENOENT means the connection was
// not redirected (no conntrack entry), which callers treat as "not for us".
OriginalDstResult GetOriginalDst(int fd);

}  // namespace edgemesh
