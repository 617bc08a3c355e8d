#include "dns/dns_responder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "dns/dns_wire.h"

namespace edgemesh::dns {
namespace {

// Largest datagram read: a UDP payload can be 64 KiB and the JS server sees it whole, so do we
// (pages of the buffers that never hold a big packet are never touched).
constexpr size_t kRecvSize = 65536;
// Our replies never exceed the EDNS limit (longer ones go to the JS server, which sets TC).
constexpr size_t kReplySize = kEdnsUdpLimit;

void PackAddr(const sockaddr_storage& ss, uint8_t* out) {
  std::memset(out, 0, kMissAddrSize);
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    out[0] = 4;
    std::memcpy(out + 1, &a->sin_port, 2);
    std::memcpy(out + 3, &a->sin_addr, 4);
  } else {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    out[0] = 6;
    std::memcpy(out + 1, &a->sin6_port, 2);
    std::memcpy(out + 3, &a->sin6_addr, 16);
  }
}

bool UnpackAddr(const uint8_t* in, size_t len, sockaddr_storage* ss, socklen_t* sl) {
  if (len != kMissAddrSize) return false;
  std::memset(ss, 0, sizeof(*ss));
  if (in[0] == 4) {
    auto* a = reinterpret_cast<sockaddr_in*>(ss);
    a->sin_family = AF_INET;
    std::memcpy(&a->sin_port, in + 1, 2);
    std::memcpy(&a->sin_addr, in + 3, 4);
    *sl = sizeof(sockaddr_in);
    return true;
  }
  if (in[0] == 6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(ss);
    a->sin6_family = AF_INET6;
    std::memcpy(&a->sin6_port, in + 1, 2);
    std::memcpy(&a->sin6_addr, in + 3, 16);
    *sl = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

}  // namespace

Responder::Responder(const ResponderOptions& options, MissSink sink)
    : options_(options), sink_(std::move(sink)), typed_(new std::atomic<uint64_t>[kTypeSlots * 2]) {
  if (options_.batch == 0 || options_.batch > 1024) options_.batch = 64;
  for (int i = 0; i < kTypeSlots * 2; ++i) typed_[i].store(0, std::memory_order_relaxed);
}

Responder::~Responder() { Stop(); }

std::optional<SyscallError> Responder::Bind(const std::string& address, uint16_t port, int rcvbuf) {
  if (fd_ >= 0) return SyscallError{"bind (already bound)", EALREADY};
  sockaddr_storage ss{};
  socklen_t sl = 0;
  auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, address.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    sl = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, address.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    sl = sizeof(sockaddr_in6);
  } else {
    return SyscallError{"inet_pton", EINVAL};
  }
  family_ = ss.ss_family;
  int fd = socket(family_, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return SyscallError{"socket", errno};
  if (family_ == AF_INET6) {
    int one = 1;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  }
  // Bursts (a node's pods all starting at once, dnsperf) overflow the default; capped by rmem_max.
  if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    int err = errno;
    close(fd);
    return SyscallError{"bind", err};
  }
  sockaddr_storage bound{};
  socklen_t bl = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bl);
  bound_port_ = ntohs(family_ == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                         : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  fd_ = fd;
  return std::nullopt;
}

std::optional<SyscallError> Responder::Start() {
  if (fd_ < 0) return SyscallError{"start (not bound)", EBADF};
  if (thread_.joinable()) return std::nullopt;
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (stop_fd_ < 0) return SyscallError{"eventfd", errno};
  thread_ = std::thread([this] { Run(); });
  return std::nullopt;
}

void Responder::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    (void)!write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (stop_fd_ >= 0) close(stop_fd_);
  stop_fd_ = -1;
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

std::optional<SyscallError> Responder::Send(const uint8_t* addr, size_t addr_len, const uint8_t* data, size_t len) {
  sockaddr_storage ss;
  socklen_t sl;
  if (!UnpackAddr(addr, addr_len, &ss, &sl)) return SyscallError{"sendto (bad address record)", EINVAL};
  int fd = fd_;
  if (fd < 0) return SyscallError{"sendto", EBADF};
  for (;;) {
    if (sendto(fd, data, len, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&ss), sl) >= 0) {
      Add(kSent);
      return std::nullopt;
    }
    if (errno == EINTR) continue;
    // A full socket buffer drops the reply as the kernel would drop a datagram: the client retries.
    Add(kSendErrors);
    return std::nullopt;
  }
}

void Responder::Run() {
  const uint32_t n = options_.batch;
  std::vector<uint8_t> in(static_cast<size_t>(n) * kRecvSize);
  std::vector<uint8_t> out(static_cast<size_t>(n) * kReplySize);
  std::vector<sockaddr_storage> from(n);
  std::vector<iovec> in_iov(n), out_iov(n);
  std::vector<mmsghdr> in_msgs(n), out_msgs(n);
  for (uint32_t i = 0; i < n; ++i) {
    in_iov[i] = {in.data() + static_cast<size_t>(i) * kRecvSize, kRecvSize};
  }
  SimpleQuery q;
  pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  for (;;) {
    int pr = poll(fds, 2, -1);
    if (pr < 0) {
      if (errno == EINTR) continue;
      Add(kRecvErrors);
      return;
    }
    if (fds[1].revents) return;
    // Drain what is queued in bounded rounds, then look at the stop signal again.
    for (int round = 0; round < 64; ++round) {
      for (uint32_t i = 0; i < n; ++i) {
        std::memset(&in_msgs[i], 0, sizeof(mmsghdr));
        in_msgs[i].msg_hdr.msg_name = &from[i];
        in_msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage);
        in_msgs[i].msg_hdr.msg_iov = &in_iov[i];
        in_msgs[i].msg_hdr.msg_iovlen = 1;
      }
      int got = recvmmsg(fd_, in_msgs.data(), n, MSG_DONTWAIT, nullptr);
      if (got < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) Add(kRecvErrors);
        break;
      }
      if (got == 0) break;
      Add(kBatches);
      Add(kReceived, got);
      auto table = std::atomic_load(&table_);
      uint32_t replies = 0;
      std::vector<uint8_t> misses;
      uint32_t miss_count = 0;
      for (int i = 0; i < got; ++i) {
        const uint8_t* pkt = static_cast<const uint8_t*>(in_iov[i].iov_base);
        size_t len = in_msgs[i].msg_len;
        size_t reply_len = 0;
        if (table && ParseSimpleQuery(pkt, len, &q)) {
          const TableAnswer* ans = nullptr;
          Verdict v = table->Lookup(q.name, q.name_len, q.qtype, &ans);
          uint8_t* dst = out.data() + static_cast<size_t>(replies) * kReplySize;
          if (v == Verdict::kAnswer) {
            const auto* soa = reinterpret_cast<const uint8_t*>(table->soa.data());
            reply_len = WriteReply(q, pkt, 0, ans->ancount, reinterpret_cast<const uint8_t*>(ans->an.data()),
                                   ans->an.size(), ans->soa ? 1 : 0, ans->soa ? soa : nullptr,
                                   ans->soa ? table->soa.size() : 0, dst, kReplySize);
          } else if (v == Verdict::kNxdomain) {
            reply_len = WriteReply(q, pkt, 3, 0, nullptr, 0, 1, reinterpret_cast<const uint8_t*>(table->soa.data()),
                                   table->soa.size(), dst, kReplySize);
          }
          if (reply_len > 0) {
            out_iov[replies] = {dst, reply_len};
            std::memset(&out_msgs[replies], 0, sizeof(mmsghdr));
            out_msgs[replies].msg_hdr.msg_name = &from[i];
            out_msgs[replies].msg_hdr.msg_namelen = in_msgs[i].msg_hdr.msg_namelen;
            out_msgs[replies].msg_hdr.msg_iov = &out_iov[replies];
            out_msgs[replies].msg_hdr.msg_iovlen = 1;
            ++replies;
            Add(kAnswered);
            int rslot = v == Verdict::kNxdomain ? 1 : 0;
            if (rslot) Add(kNxdomain);
            typed_[(q.qtype < kTypeSlots ? q.qtype : 0) * 2 + rslot].fetch_add(1, std::memory_order_relaxed);
            continue;
          }
        }
        // Everything else (including replies too long for the client: the JS server sets TC).
        size_t at = misses.size();
        misses.resize(at + kMissHeaderSize + len);
        PackAddr(from[i], misses.data() + at);
        misses[at + kMissAddrSize] = static_cast<uint8_t>(len >> 8);
        misses[at + kMissAddrSize + 1] = static_cast<uint8_t>(len);
        if (len) std::memcpy(misses.data() + at + kMissHeaderSize, pkt, len);
        ++miss_count;
      }
      uint32_t done = 0;
      while (done < replies) {
        int sent = sendmmsg(fd_, out_msgs.data() + done, replies - done, MSG_DONTWAIT);
        if (sent < 0) {
          if (errno == EINTR) continue;
          // Unreachable client or full buffer: skip that one reply, keep the rest.
          Add(kSendErrors);
          ++done;
          continue;
        }
        Add(kSent, sent);
        done += static_cast<uint32_t>(sent);
      }
      if (miss_count) {
        if (sink_ && sink_(std::move(misses), miss_count))
          Add(kPunted, miss_count);
        else
          Add(kPuntDropped, miss_count);
      }
      if (static_cast<uint32_t>(got) < n) break;
    }
  }
}

}  // namespace edgemesh::dns
