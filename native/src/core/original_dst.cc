#include "core/original_dst.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/netfilter_ipv4.h>
#include <netinet/in.h>
#include <sys/socket.h>

namespace edgemesh {

std::string OriginalDst::ToString() const {
  char buf[INET_ADDRSTRLEN] = {0};
  in_addr a{};
  a.s_addr = addr_be;
  inet_ntop(AF_INET, &a, buf, sizeof(buf));
  return buf;
}

OriginalDstResult GetOriginalDst(int fd) {
  OriginalDstResult result;
  sockaddr_in sa{};
  socklen_t len = sizeof(sa);
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &sa, &len) != 0) {
    result.error = SyscallError{"getsockopt(SO_ORIGINAL_DST)", errno};
    return result;
  }
  result.dst = OriginalDst{sa.sin_addr.s_addr, ntohs(sa.sin_port)};
  return result;
}

}  // namespace edgemesh
