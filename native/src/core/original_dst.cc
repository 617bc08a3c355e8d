#include "core/original_dst.h"

#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <sys/socket.h>

// linux/netfilter_ipv6/ip6_tables.h defines IP6T_SO_ORIGINAL_DST (80, the same number as the IPv4
// option) but pulls in x_tables headers that do not build as C++; the value is ABI.
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80
#endif

namespace edgemesh {

OriginalDstResult GetOriginalDst(int fd, int family) {
  OriginalDstResult result;
  if (family == AF_INET6) {
    sockaddr_in6 sa{};
    socklen_t len = sizeof(sa);
    if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &sa, &len) != 0) {
      result.error = SyscallError{"getsockopt(IP6T_SO_ORIGINAL_DST)", errno};
      return result;
    }
    result.dst = OriginalDst{IpAddr::FromV6(sa.sin6_addr), ntohs(sa.sin6_port)};
    return result;
  }
  sockaddr_in sa{};
  socklen_t len = sizeof(sa);
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0) {
    result.error = SyscallError{"getsockopt(SO_ORIGINAL_DST)", errno};
    return result;
  }
  result.dst = OriginalDst{IpAddr::FromV4Be(sa.sin_addr.s_addr), ntohs(sa.sin_port)};
  return result;
}

OriginalDstResult GetOriginalDst(int fd) {
  int domain = AF_INET;
  socklen_t len = sizeof(domain);
  if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) {
    OriginalDstResult result;
    result.error = SyscallError{"getsockopt(SO_ORIGINAL_DST)", errno};  // EBADF / ENOTSOCK, as before
    return result;
  }
  return GetOriginalDst(fd, domain);
}

}  // namespace edgemesh
