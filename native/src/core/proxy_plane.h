// One native proxy data plane: listeners on the proxy port (one SO_REUSEPORT socket per worker and
// address family: a worker serves one IPv4 and one IPv6 listener),
// the routing table shared by all workers (atomic shared_ptr swap), counters, session affinity and
// the stop/drain signal. Workers (RunWorker) block in an epoll loop on their own thread; the
// process-wide registry lets piscina worker threads (separate Node environments) find the plane
// the main thread created by its numeric id.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include <sys/socket.h>

#include "core/errno_error.h"
#include "core/ip_addr.h"
#include "core/routing_table.h"

namespace edgemesh {

struct PlaneOptions {
  uint32_t mark = 0x4567;             // SO_MARK on upstream sockets (0 = none); interceptors RETURN it
  uint32_t connect_timeout_ms = 5000;  // per attempt, unless the route sets its own
  uint32_t idle_timeout_ms = 0;        // 0 = never
  bool use_splice = true;              // false: read/write through buffers (sk_msg-accelerated sockets)
  uint32_t pipe_size = 1 << 20;        // F_SETPIPE_SZ for splice pipes
  uint32_t buffer_size = 256 << 10;    // read/write mode buffer per direction
  uint32_t max_attempts = 3;           // endpoints tried per connection (refused / timed out)
  uint32_t service_slots = 16384;      // per-service counter slots
  uint32_t spin_us = 0;                // after a busy batch, poll (epoll_wait 0) this long before blocking
  // Worker i runs only on the i-th CPU the process may use, and each new connection goes to the
  // listener of the CPU its SYN was handled on (a reuseport CBPF program): accept, forwarding and
  // the client's own work then share a CPU instead of waking a worker across cores. A pinned
  // worker starved on its CPU is let loose for a cool-down (affinity_escape.h) unless
  // affinity_escape is false (or the env EDGEMESH_AFFINITY_ESCAPE=off, an A/B experiment knob).
  bool cpu_affinity = false;
  bool affinity_escape = true;
};

// Counter order is part of the TS boundary (src/native/plane-counters.ts PLANE_COUNTER_NAMES).
enum PlaneCounter : int {
  kAccepted = 0,      // connections accepted on the proxy port
  kActive,            // connections open now
  kEstablished,       // upstream connects that succeeded
  kBytesUp,           // client -> endpoint bytes
  kBytesDown,         // endpoint -> client bytes
  kNoRoute,           // original destination not in the table
  kNoEndpoint,        // route without ready endpoints
  kOriginalDstError,  // SO_ORIGINAL_DST / getsockname failed
  kConnectRefused,    // an attempt refused (retried on another endpoint)
  kConnectTimeout,    // an attempt timed out
  kConnectError,      // an attempt failed otherwise (unreachable, mark not permitted ...)
  kUpstreamFailed,    // every attempt failed; client reset
  kResets,            // connections torn down by a reset on either side
  kAcceptErrors,      // accept() failures other than EAGAIN
  kIdleClosed,        // closed by the idle timeout
  kDrainForced,       // still open at the drain deadline, reset
  kWorkersRunning,    // workers inside their epoll loop now
  kHandedOff,         // accepted connections handed to TS (L7 routes)
  kSplicedBack,       // established pairs TS gave back after its L7 decision (AdoptPair)
  kAffinityReleased,  // pinned workers let loose from a CPU that starved them (affinity_escape.h)
  kAffinityRestored,  // ... and pinned again after the cool-down
  kCounterCount
};

// Per-service counter order (src/native/plane-counters.ts SERVICE_COUNTER_NAMES).
enum ServiceCounter : int { kSvcConnections = 0, kSvcActive, kSvcBytesUp, kSvcBytesDown, kSvcErrors, kSvcCounterCount };

struct alignas(64) WorkerCounters {
  std::atomic<uint64_t> v[kCounterCount] = {};
  void Add(PlaneCounter c, uint64_t n = 1) { v[c].fetch_add(n, std::memory_order_relaxed); }
  void Sub(PlaneCounter c, uint64_t n = 1) { v[c].fetch_sub(n, std::memory_order_relaxed); }
};

// ClientIP session affinity: client -> endpoint for each ClusterIP:port, with a timeout. Locked,
// but consulted only for routes that ask for affinity.
class AffinityCache {
 public:
  std::optional<Endpoint> Get(const AddrPort& route, const IpAddr& client, int64_t now_ms);
  void Put(const AddrPort& route, const IpAddr& client, const Endpoint& ep, int64_t expires_ms);
  size_t size();

 private:
  struct Entry {
    Endpoint ep;
    int64_t expires_ms;
  };
  std::mutex mu_;
  std::unordered_map<AddrPort, std::unordered_map<IpAddr, Entry, IpAddrHash>, AddrPortHash> by_route_;
  uint64_t puts_ = 0;
};

// An accepted connection on an L7 route, waiting for TS to take its fd.
struct Handoff {
  int fd = -1;
  IpAddr addr;        // original destination (tunnel routes: the chosen tunnel endpoint)
  uint16_t port = 0;  // host order
};

// An established client/upstream pair TS gives back once its L7 decision is made: the plane owns
// both fds from PushAdopted on. Bytes TS had already read but not yet sent go out first.
struct AdoptedPair {
  int client = -1;
  int upstream = -1;
  std::string to_upstream;  // read from the client by TS, not yet written upstream
  std::string to_client;    // read from the upstream by TS, not yet written to the client
};

class Plane {
 public:
  explicit Plane(const PlaneOptions& options);
  ~Plane();
  Plane(const Plane&) = delete;
  Plane& operator=(const Plane&) = delete;

  const PlaneOptions options;

  // Binds `count` SO_REUSEPORT listeners on address:port, once per address family (IPv6 ones are
  // IPV6_V6ONLY, so [::] and 0.0.0.0 share a port). Both families need the same count; port 0
  // after the first family means the port the first got. Before any worker runs.
  std::optional<SyscallError> Listen(const std::string& address, uint16_t port, uint32_t count);
  uint32_t listener_count() const { return listener_count_; }
  // Whether listeners of this family (AF_INET / AF_INET6) are bound.
  bool listening(int family) const { return group(family).count != 0; }
  // The port actually bound (resolves port 0).
  uint16_t bound_port() const { return bound_port_; }

  void SetTable(std::shared_ptr<const RoutingTable> table) { std::atomic_store(&table_, std::move(table)); }
  std::shared_ptr<const RoutingTable> table() const { return std::atomic_load(&table_); }

  // Runs worker `index` (its listener) until Stop() and the drain finish. Blocking.
  std::optional<SyscallError> RunWorker(uint32_t index);
  // Stop accepting; established connections get drain_ms to finish, then are reset. Non-blocking.
  void Stop(uint32_t drain_ms);
  bool stopping() const { return stop_deadline_ms_.load() != 0; }
  int64_t stop_deadline_ms() const { return stop_deadline_ms_.load(); }
  int stop_fd() const { return stop_fd_; }

  // Sum over workers.
  uint64_t Counter(PlaneCounter c) const;
  WorkerCounters& worker_counters(uint32_t index) { return *worker_counters_[index]; }
  // Per-service counters (slot < options.service_slots).
  std::atomic<uint64_t>* service(uint32_t slot) {
    return slot < options.service_slots ? &services_[static_cast<size_t>(slot) * kSvcCounterCount] : nullptr;
  }
  AffinityCache& affinity() { return affinity_; }
  // Takes listener `index` of `family` out of the plane (the worker closes it when it stops
  // accepting); -1 when that family does not listen.
  int TakeListener(uint32_t index, int family = AF_INET);
  // With options.cpu_affinity: the CPU worker `index` runs on (-1: no pinning).
  int WorkerCpu(uint32_t index) const;
  // With options.cpu_affinity: every CPU the plane's workers may use (where an escaping worker may go).
  const std::vector<int>& cpus() const { return cpus_; }

  // The hand-off consumer (the addon's thread-safe function): called from worker threads when the
  // queue turns non-empty. Empty = no consumer: L7 routes are then served as L4.
  void SetHandoffNotify(std::function<void()> notify);
  // Queues an accepted fd for TS; false (fd untouched) when there is no consumer.
  bool PushHandoff(const Handoff& h);
  // Everything queued; the caller owns the fds.
  std::vector<Handoff> TakeHandoffs();

  // Queues an established pair for a worker (any thread); false (fds untouched, still the
  // caller's) when the plane is stopping or no worker runs.
  bool PushAdopted(AdoptedPair&& pair);
  // Everything queued (workers call this when adopt_fd() turns readable); the caller owns the fds.
  std::vector<AdoptedPair> TakeAdopted();
  // Readable while adopted pairs wait; every worker watches it.
  int adopt_fd() const { return adopt_fd_; }

 private:
  struct ListenerGroup {
    std::unique_ptr<std::atomic<int>[]> fds;
    uint32_t count = 0;
  };
  ListenerGroup& group(int family) { return family == AF_INET6 ? v6_ : v4_; }
  const ListenerGroup& group(int family) const { return family == AF_INET6 ? v6_ : v4_; }
  std::shared_ptr<const RoutingTable> table_;
  ListenerGroup v4_, v6_;
  uint32_t listener_count_ = 0;
  uint16_t bound_port_ = 0;
  std::vector<int> cpus_;  // CPUs the process may use, when options.cpu_affinity (set by Listen)
  int stop_fd_ = -1;
  std::atomic<int64_t> stop_deadline_ms_{0};
  std::vector<std::unique_ptr<WorkerCounters>> worker_counters_;
  std::unique_ptr<std::atomic<uint64_t>[]> services_;
  AffinityCache affinity_;
  std::mutex handoff_mu_;
  std::function<void()> handoff_notify_;
  std::vector<Handoff> handoffs_;
  int adopt_fd_ = -1;
  std::mutex adopt_mu_;
  std::vector<AdoptedPair> adopted_;
};

int64_t MonotonicMs();

// Process-wide registry of planes by id, shared by every Node environment (thread) in the process.
uint32_t RegisterPlane(std::shared_ptr<Plane> plane);
std::shared_ptr<Plane> FindPlane(uint32_t id);
bool UnregisterPlane(uint32_t id);

}  // namespace edgemesh
