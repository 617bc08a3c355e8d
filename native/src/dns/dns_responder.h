// The native DNS UDP responder: one thread owning the UDP socket on the DNS listen address. It
// reads batches with recvmmsg, answers the questions the answer table covers, sends those replies
// with sendmmsg, and hands every other packet (raw bytes + client address) to a miss sink in
// batches — the JS server, which answers them exactly as it always did and replies through Send().
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/errno_error.h"
#include "dns/dns_table.h"

namespace edgemesh::dns {

// Miss record in a batch: family u8 (4|6), port u16 BE, address 16 B (IPv4 in the first 4),
// length u16 BE, then the packet. The address part (19 B) is what Send() takes back.
constexpr size_t kMissAddrSize = 19;
constexpr size_t kMissHeaderSize = kMissAddrSize + 2;

// Counter order is part of the TS boundary (src/dns/native-responder.ts DNS_COUNTER_NAMES).
enum DnsCounter : int {
  kReceived = 0,    // packets read from the socket
  kAnswered,        // answered natively (any rcode)
  kNxdomain,        // of those, NXDOMAIN
  kPunted,          // handed to the JS server
  kPuntDropped,     // could not be handed over (JS queue full): dropped
  kSent,            // replies sent (native + JS)
  kSendErrors,      // sendmmsg/sendto failures
  kRecvErrors,      // recvmmsg failures other than EAGAIN/EINTR
  kBatches,         // recvmmsg calls that returned packets
  kDnsCounterCount
};
// Natively answered queries by qtype (0..255, larger types in slot 0) and rcode (0 NOERROR, 1 NXDOMAIN).
constexpr int kTypeSlots = 256;

struct ResponderOptions {
  uint32_t batch = 64;  // packets per recvmmsg
};

class Responder {
 public:
  using MissSink = std::function<bool(std::vector<uint8_t>&& batch, uint32_t count)>;

  Responder(const ResponderOptions& options, MissSink sink);
  ~Responder();
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;

  // Binds the UDP socket (address may be IPv4 or IPv6; port 0 picks one). Once.
  std::optional<SyscallError> Bind(const std::string& address, uint16_t port, int rcvbuf);
  uint16_t bound_port() const { return bound_port_; }
  // Starts the thread. Bind first.
  std::optional<SyscallError> Start();
  // Stops and joins the thread, closes the socket. Idempotent; call from any thread but the responder.
  void Stop();

  void SetTable(std::shared_ptr<const AnswerTable> table) { std::atomic_store(&table_, std::move(table)); }
  std::shared_ptr<const AnswerTable> table() const { return std::atomic_load(&table_); }

  // Sends one reply to the client address of a miss record (kMissAddrSize bytes). Thread-safe.
  std::optional<SyscallError> Send(const uint8_t* addr, size_t addr_len, const uint8_t* data, size_t len);

  uint64_t Counter(DnsCounter c) const { return counters_[c].load(std::memory_order_relaxed); }
  uint64_t Answered(uint16_t qtype_slot, int rcode_slot) const {
    return typed_[qtype_slot * 2 + rcode_slot].load(std::memory_order_relaxed);
  }

 private:
  void Run();
  void Add(DnsCounter c, uint64_t n = 1) { counters_[c].fetch_add(n, std::memory_order_relaxed); }

  ResponderOptions options_;
  MissSink sink_;
  int fd_ = -1;
  int stop_fd_ = -1;
  int family_ = 0;
  uint16_t bound_port_ = 0;
  std::thread thread_;
  std::shared_ptr<const AnswerTable> table_;
  std::atomic<uint64_t> counters_[kDnsCounterCount] = {};
  std::unique_ptr<std::atomic<uint64_t>[]> typed_;
};

}  // namespace edgemesh::dns
