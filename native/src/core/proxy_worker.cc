// One worker of the native plane: an epoll loop (edge-triggered sockets) that accepts on its own
// SO_REUSEPORT listener, resolves the original destination, picks an endpoint, connects without
// blocking (timeout, retry on refusal) and forwards both directions with splice(2) through a pipe
// per direction (or read/write through buffers). Small payloads (requests, replies, the first
// bytes of a connection) take one recv + one send instead of two splices through a pipe, and
// readiness is tracked per socket from the edge-triggered events, so no syscall is spent on a
// socket that has nothing to give or no room to take. Nothing here calls into JS.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "core/affinity_escape.h"
#include "core/original_dst.h"
#include "core/pipe_pool.h"
#include "core/proxy_plane.h"

namespace edgemesh {

namespace {

// epoll keys: a connection side is (generation << 32) | (slot << 1) | upstream with the
// generation below 2^31, so it never equals one of these.
constexpr uint64_t kListenKey = ~0ull;       // the IPv4 listener
constexpr uint64_t kStopKey = ~0ull - 1;
constexpr uint64_t kAdoptKey = ~0ull - 2;
constexpr uint64_t kListen6Key = ~0ull - 3;  // the IPv6 listener
constexpr uint32_t kDeadGen = 0x80000000u;  // a free slot's generation: matches no key

// Reads that fit in this many bytes are copied through the worker's scratch buffer (one recv, one
// send, no pipe); a read that fills it marks the direction bulk, and bulk moves by splice.
constexpr size_t kSmallPayload = 16 << 10;

// One forwarding direction. Pipes and buffers are taken from the worker's pools only while bytes
// are in flight, so idle connections hold two sockets and nothing else.
struct Direction {
  PipeFds pipe;
  size_t in_pipe = 0;  // bytes in the pipe (splice mode)
  char* buf = nullptr;
  size_t off = 0, len = 0;  // unsent bytes are buf[off, len) (read/write mode)
  std::string pre;          // bytes TS read before giving the pair back: sent before anything else
  size_t pre_off = 0;
  bool eof = false;         // source reached EOF
  bool shut = false;        // EOF passed on (shutdown(SHUT_WR) on the destination, or its close)
  // Edge-triggered readiness: set by events, cleared by EAGAIN, or by a recv that came back short
  // (the socket was drained then; a later byte or FIN raises a new event).
  bool src_ready = false;  // the source may have bytes or EOF to read
  bool src_hup = false;    // the source signalled EOF or an error: read on until 0, short or not
  bool dst_ready = false;  // the destination may take bytes
  bool bulk = false;       // the last read filled the small-payload buffer: splice from here on
  size_t pending() const { return in_pipe + (len - off) + (pre.size() - pre_off); }
};

struct Conn {
  int client = -1, upstream = -1;
  uint32_t slot = 0, gen = kDeadGen;  // its epoll keys (see kListenKey)
  bool established = false, connecting = false, closed = false;
  std::shared_ptr<const RoutingTable> table;  // kept only while connecting (for retries)
  const Route* route = nullptr;
  IpAddr vip, client_addr;
  uint16_t vport = 0;
  uint32_t first = 0, attempt = 0;
  Endpoint ep{};
  int64_t deadline_ms = 0, last_active_ms = 0;
  size_t connecting_pos = 0;
  std::atomic<uint64_t>* svc = nullptr;
  Direction up, down;  // up: client -> endpoint; down: endpoint -> client
  Conn* prev = nullptr;
  Conn* next = nullptr;
};

uint64_t Key(const Conn* c, bool upstream) {
  return (static_cast<uint64_t>(c->gen) << 32) | (static_cast<uint64_t>(c->slot) << 1) | (upstream ? 1u : 0u);
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

// Makes close() send RST instead of FIN: how a reset on one side is passed to the other.
void SetResetOnClose(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
}

// The service address a client connected to: SO_ORIGINAL_DST after REDIRECT (iptables/nft), else
// (no NAT: eBPF sk_lookup / connect rewriting) the accepted socket's local address. False (outputs
// untouched) when neither answers.
int64_t MonotonicUs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

// `family` is the listener's (AF_INET / AF_INET6), or 0 when unknown (pairs TS gives back).
bool ServiceAddress(int fd, int family, IpAddr& vip, uint16_t& vport) {
  auto od = family == 0 ? GetOriginalDst(fd) : GetOriginalDst(fd, family);
  if (od.dst) {
    vip = od.dst->addr;
    vport = od.dst->port;
    return true;
  }
  sockaddr_storage local{};
  socklen_t len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return false;
  return IpAddr::FromSockaddr(local, &vip, &vport);
}

// Feeds AffinityEscape for one pinned worker and applies what it decides. Reads nothing between
// windows: one pread of this thread's schedstat and one of /proc/stat per window (~250 ms of loop
// time), from fds opened once in the worker thread (/proc/thread-self resolves to it at open).
class EscapeWatch {
 public:
  EscapeWatch(int cpu, const std::vector<int>& cpus, WorkerCounters& counters)
      : cpu_(cpu), cpus_(cpus), c_(counters), ticks_(cpus.size()), prev_ticks_(cpus.size()) {
    int max_cpu = 0;
    for (int c : cpus_) max_cpu = std::max(max_cpu, c);
    // The per-CPU lines come first in /proc/stat; this covers them (numbers up to 20 digits).
    buf_.resize(static_cast<size_t>(max_cpu + 2) * 256 + 256);
  }
  ~EscapeWatch() {
    if (sched_fd_ >= 0) close(sched_fd_);
    if (stat_fd_ >= 0) close(stat_fd_);
  }

  // False when /proc cannot be read: the worker then just stays pinned.
  bool Open(int64_t now_ms) {
    sched_fd_ = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    stat_fd_ = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (sched_fd_ < 0 || stat_fd_ < 0) return false;
    return Baseline(now_ms);
  }

  // After a batch, with the monotonic time the loop already read.
  void Tick(int64_t now_ms) {
    if (escape_.released()) {
      if (escape_.Decide(now_ms, SchedWindow{}) == EscapeAction::kRestore) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu_, &one);
        sched_setaffinity(0, sizeof(one), &one);
        c_.Add(kAffinityRestored);
        Baseline(now_ms);
      }
      return;
    }
    if (now_ms - window_start_ms_ < escape_.params().window_ms) return;
    uint64_t run = 0, wait = 0, slices = 0;
    if (!ReadSched(run, wait, slices) || !ReadStat()) return;
    SchedWindow w;
    w.elapsed_ms = now_ms - window_start_ms_;
    w.run_ns = run - prev_run_;
    w.wait_ns = wait - prev_wait_;
    w.slices = slices - prev_slices_;
    for (size_t i = 0; i < cpus_.size(); ++i) {
      const CpuTicks d{ticks_[i].total - prev_ticks_[i].total, ticks_[i].idle - prev_ticks_[i].idle,
                       ticks_[i].steal - prev_ticks_[i].steal};
      if (cpus_[i] == cpu_) {
        w.cpu_total = d.total;
        w.cpu_idle = d.idle;
        w.cpu_steal = d.steal;
      } else if (d.total > 0 && (w.other_total == 0 || d.idle * w.other_total > w.other_idle * d.total)) {
        w.other_total = d.total;  // the idlest other CPU (largest idle share)
        w.other_idle = d.idle;
      }
    }
    prev_run_ = run;
    prev_wait_ = wait;
    prev_slices_ = slices;
    prev_ticks_ = ticks_;
    window_start_ms_ = now_ms;
    if (escape_.Decide(now_ms, w) == EscapeAction::kRelease) {
      // Any plane CPU: the scheduler moves the thread off the busy one. The reuseport steering
      // stays, so new SYNs handled on that CPU still come to this worker.
      cpu_set_t all;
      CPU_ZERO(&all);
      for (int c : cpus_) CPU_SET(c, &all);
      sched_setaffinity(0, sizeof(all), &all);
      c_.Add(kAffinityReleased);
    }
  }

 private:
  struct CpuTicks {
    uint64_t total = 0, idle = 0, steal = 0;
  };

  bool Baseline(int64_t now_ms) {
    window_start_ms_ = now_ms;
    if (!ReadSched(prev_run_, prev_wait_, prev_slices_) || !ReadStat()) return false;
    prev_ticks_ = ticks_;
    return true;
  }

  bool ReadSched(uint64_t& run, uint64_t& wait, uint64_t& slices) {
    char b[128];
    const ssize_t n = pread(sched_fd_, b, sizeof(b) - 1, 0);
    if (n <= 0) return false;
    b[n] = 0;
    unsigned long long r = 0, w = 0, s = 0;
    if (sscanf(b, "%llu %llu %llu", &r, &w, &s) != 3) return false;
    run = r;
    wait = w;
    slices = s;
    return true;
  }

  // Fills ticks_ from the "cpuN" lines of the plane's CPUs.
  bool ReadStat() {
    const ssize_t n = pread(stat_fd_, buf_.data(), buf_.size() - 1, 0);
    if (n <= 0) return false;
    buf_[static_cast<size_t>(n)] = 0;
    char* line = buf_.data();
    // Skip the aggregate "cpu " line; stop at the first line that is not a "cpuN" one.
    line = strchr(line, '\n');
    while (line != nullptr && strncmp(++line, "cpu", 3) == 0) {
      char* p = line + 3;
      const long cpu = strtol(p, &p, 10);
      uint64_t f[8] = {};
      for (uint64_t& v : f) v = strtoull(p, &p, 10);
      for (size_t i = 0; i < cpus_.size(); ++i) {
        if (cpus_[i] != cpu) continue;
        // user nice system idle iowait irq softirq steal
        ticks_[i].total = f[0] + f[1] + f[2] + f[3] + f[4] + f[5] + f[6] + f[7];
        ticks_[i].idle = f[3] + f[4];
        ticks_[i].steal = f[7];
      }
      line = strchr(line, '\n');
    }
    return true;
  }

  const int cpu_;
  const std::vector<int> cpus_;
  WorkerCounters& c_;
  AffinityEscape escape_;
  int sched_fd_ = -1;
  int stat_fd_ = -1;
  std::vector<char> buf_;
  int64_t window_start_ms_ = 0;
  uint64_t prev_run_ = 0, prev_wait_ = 0, prev_slices_ = 0;
  std::vector<CpuTicks> ticks_, prev_ticks_;
};

class Worker {
 public:
  Worker(Plane& plane, uint32_t index, int escape_cpu)
      : plane_(plane),
        index_(index),
        escape_cpu_(escape_cpu),
        c_(plane.worker_counters(index)),
        rng_(std::random_device{}() | 1ull),
        pipes_(plane.options.pipe_size, kPoolMax),
        scratch_(new char[kSmallPayload]) {}

  std::optional<SyscallError> Run();

 private:
  void AcceptAll(int which);
  void WatchListeners(bool on);
  void OnAccepted(int fd, int family, const IpAddr& client);
  bool HandToTunnel(int fd, const Route& route, const IpAddr& vip, uint16_t vport, const IpAddr& client);
  void AdoptAll();
  void Adopt(AdoptedPair& a);
  void OnEvent(uint64_t key, uint32_t events);
  void StartConnect(Conn* c);
  void OnConnectResult(Conn* c, uint32_t events);
  void FailAttempt(Conn* c, PlaneCounter why);
  void Established(Conn* c);
  void Pump(Conn* c);
  bool PumpDir(Conn* c, Direction& d, const Direction& other, int src, int dst, bool up);
  bool Fail(Conn* c);
  void CloseConn(Conn* c, bool reset);
  void BeginDrain();
  void CheckTimeouts(int64_t now);
  int NextTimeout(int64_t now) const;
  Conn* NewConn();
  void FreeClosed();
  void ReleasePipe(Direction& d);
  void ReleaseBuffer(Direction& d);
  void TrimPools();
  void AddConnecting(Conn* c);
  void RemoveConnecting(Conn* c);
  uint32_t Random() {
    rng_ ^= rng_ << 13;
    rng_ ^= rng_ >> 7;
    rng_ ^= rng_ << 17;
    return static_cast<uint32_t>(rng_ >> 16);
  }
  void SvcAdd(Conn* c, ServiceCounter k, int64_t n) {
    if (c->svc) c->svc[k].fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
  }

  static constexpr size_t kPoolMax = 128;
  Plane& plane_;
  const uint32_t index_;
  const int escape_cpu_;  // pinned to this CPU with the escape on; -1 otherwise
  std::unique_ptr<EscapeWatch> escape_;
  WorkerCounters& c_;
  uint64_t rng_;
  int ep_ = -1;
  int listeners_[2] = {-1, -1};  // [0] IPv4, [1] IPv6 (either may be absent)
  bool draining_ = false;
  Conn* head_ = nullptr;
  size_t conns_ = 0;
  std::vector<Conn*> connecting_;
  // Connections live in slots reused after close. An event whose key names another generation is
  // stale (its connection is gone) and is dropped, so closing needs no EPOLL_CTL_DEL even when a
  // child forked by the agent still holds the socket (the registration outlives our close then).
  std::vector<std::unique_ptr<Conn>> slots_;
  std::vector<uint32_t> free_slots_;
  std::vector<Conn*> graveyard_;  // closed this batch; their slots are reused after it
  uint32_t next_gen_ = 1;
  PipePool pipes_;
  std::vector<char*> buffers_;
  std::unique_ptr<char[]> scratch_;  // small payloads pass through here
  int64_t last_idle_scan_ms_ = 0;
  int64_t accept_paused_until_ms_ = 0;  // listener out of the epoll set until then (EMFILE ...)
  const bool spin_ = plane_.options.spin_us > 0;
  const int64_t spin_us_ = plane_.options.spin_us;
  int last_batch_ = 0;  // events in the last epoll_wait (spin only after a busy one)
};

std::optional<SyscallError> Worker::Run() {
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) return SyscallError{"epoll_create1", errno};
  listeners_[0] = plane_.TakeListener(index_, AF_INET);
  listeners_[1] = plane_.TakeListener(index_, AF_INET6);
  if (listeners_[0] < 0 && listeners_[1] < 0) {
    close(ep_);
    return SyscallError{"listener (worker index not listening or already running)", EBADF};
  }
  WatchListeners(true);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kStopKey;
  epoll_ctl(ep_, EPOLL_CTL_ADD, plane_.stop_fd(), &ev);
  // Pairs TS gives back: one worker wakes per push (EPOLLEXCLUSIVE) and takes the whole queue.
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.u64 = kAdoptKey;
  epoll_ctl(ep_, EPOLL_CTL_ADD, plane_.adopt_fd(), &ev);

  if (escape_cpu_ >= 0) {
    escape_ = std::make_unique<EscapeWatch>(escape_cpu_, plane_.cpus(), c_);
    if (!escape_->Open(MonotonicMs())) escape_.reset();
  }

  epoll_event events[256];
  c_.Add(kWorkersRunning);
  for (;;) {
    const int64_t now = MonotonicMs();
    if (accept_paused_until_ms_ != 0 && now >= accept_paused_until_ms_) {
      accept_paused_until_ms_ = 0;
      WatchListeners(true);
    }
    if (draining_ && conns_ == 0) break;
    if (draining_ && now >= plane_.stop_deadline_ms()) {
      // Drain deadline: whatever is still open is reset.
      while (head_ != nullptr) {
        c_.Add(kDrainForced);
        CloseConn(head_, true);
      }
      break;
    }
    // Optional bounded spin: right after a batch with events the peer is likely to answer within
    // microseconds (a request just went out); polling for a moment instead of sleeping saves the
    // wake-up (on a VM, an idle vCPU's wake-up is the slow part of a round trip). Costs CPU: off
    // unless configured.
    int n = 0;
    if (spin_ && last_batch_ > 0) {
      const int64_t until = MonotonicUs() + spin_us_;
      do {
        n = epoll_wait(ep_, events, 256, 0);
      } while (n == 0 && MonotonicUs() < until);
    }
    if (n == 0) n = epoll_wait(ep_, events, 256, NextTimeout(now));
    last_batch_ = n;
    if (n < 0) {
      if (errno == EINTR) continue;
      SyscallError e{"epoll_wait", errno};
      c_.Sub(kWorkersRunning);
      while (head_ != nullptr) CloseConn(head_, true);
      close(ep_);
      for (int& l : listeners_) {
        if (l >= 0) close(l);
      }
      return e;
    }
    if (n == 0 && conns_ == 0) TrimPools();
    for (int i = 0; i < n; ++i) {
      const uint64_t key = events[i].data.u64;
      if (key == kListenKey) {
        AcceptAll(0);
      } else if (key == kListen6Key) {
        AcceptAll(1);
      } else if (key == kStopKey) {
        BeginDrain();
      } else if (key == kAdoptKey) {
        AdoptAll();
      } else {
        OnEvent(key, events[i].events);
      }
    }
    FreeClosed();
    const int64_t after = MonotonicMs();
    CheckTimeouts(after);
    FreeClosed();
    if (escape_) escape_->Tick(after);
  }
  TrimPools();
  for (int& l : listeners_) {
    if (l >= 0) close(l);
  }
  close(ep_);
  c_.Sub(kWorkersRunning);
  // The last worker out takes pairs pushed before the stop was seen (nobody would serve them).
  if (plane_.Counter(kWorkersRunning) == 0) {
    for (AdoptedPair& a : plane_.TakeAdopted()) {
      SetResetOnClose(a.client);
      SetResetOnClose(a.upstream);
      close(a.client);
      close(a.upstream);
    }
  }
  return std::nullopt;
}

void Worker::TrimPools() {
  pipes_.Trim();
  for (char* b : buffers_) delete[] b;
  buffers_.clear();
  if (conns_ == 0 && graveyard_.empty()) {
    // A stale key now indexes past the end, or meets a newer generation: still dropped.
    slots_.clear();
    free_slots_.clear();
  }
}

Conn* Worker::NewConn() {
  uint32_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
    *slots_[slot] = Conn{};
  } else {
    slot = static_cast<uint32_t>(slots_.size());
    slots_.push_back(std::make_unique<Conn>());
  }
  Conn* c = slots_[slot].get();
  c->slot = slot;
  c->gen = next_gen_;
  next_gen_ = (next_gen_ + 1) & (kDeadGen - 1);
  return c;
}

// Closed connections give their slots back once no event of the batch can name them any more.
void Worker::FreeClosed() {
  for (Conn* c : graveyard_) {
    c->gen = kDeadGen;
    free_slots_.push_back(c->slot);
  }
  graveyard_.clear();
}

void Worker::OnEvent(uint64_t key, uint32_t events) {
  const uint32_t slot = static_cast<uint32_t>(key >> 1) & (kDeadGen - 1);
  if (slot >= slots_.size()) return;  // stale: the slots were trimmed since
  Conn* c = slots_[slot].get();
  if (c->gen != static_cast<uint32_t>(key >> 32) || c->closed) return;  // stale: closed connection
  const bool upstream = key & 1;
  // This socket is the source of one direction and the destination of the other.
  Direction& from = upstream ? c->down : c->up;
  Direction& to = upstream ? c->up : c->down;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) from.src_ready = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) from.src_hup = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) to.dst_ready = true;
  if (!c->established) {
    // Client readiness is only recorded while connecting: the first pump after connect uses it.
    if (upstream && c->connecting) OnConnectResult(c, events);
    return;
  }
  Pump(c);
}

int Worker::NextTimeout(int64_t now) const {
  int64_t until = -1;
  auto consider = [&](int64_t deadline) {
    int64_t d = deadline > now ? deadline - now : 0;
    if (until < 0 || d < until) until = d;
  };
  for (Conn* c : connecting_) consider(c->deadline_ms);
  if (draining_) consider(plane_.stop_deadline_ms());
  if (accept_paused_until_ms_ != 0) consider(accept_paused_until_ms_);
  if (plane_.options.idle_timeout_ms > 0) consider(now + 1000);
  // An idle worker gives its pooled pipes, buffers and slots back after a second (fds return to
  // baseline).
  if (conns_ == 0 && (pipes_.idle() > 0 || !buffers_.empty() || !slots_.empty())) consider(now + 1000);
  return until < 0 ? -1 : static_cast<int>(until + 1);
}

// Adds (or removes) the listeners this worker still has to its epoll set.
void Worker::WatchListeners(bool on) {
  for (int i = 0; i < 2; ++i) {
    if (listeners_[i] < 0) continue;
    if (!on) {
      epoll_ctl(ep_, EPOLL_CTL_DEL, listeners_[i], nullptr);
      continue;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i == 0 ? kListenKey : kListen6Key;
    epoll_ctl(ep_, EPOLL_CTL_ADD, listeners_[i], &ev);
  }
}

void Worker::AcceptAll(int which) {
  const int listener = listeners_[which];
  if (listener < 0) return;
  const int family = which == 0 ? AF_INET : AF_INET6;
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof(peer);
    int fd = accept4(listener, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN) return;
      c_.Add(kAcceptErrors);
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of fds or memory: the level-triggered listener would wake us in a tight loop. Stop
        // watching it for a moment; closing connections free fds meanwhile.
        if (accept_paused_until_ms_ == 0) WatchListeners(false);
        accept_paused_until_ms_ = MonotonicMs() + 100;
      }
      return;
    }
    c_.Add(kAccepted);
    IpAddr client;
    uint16_t client_port = 0;
    IpAddr::FromSockaddr(peer, &client, &client_port);
    OnAccepted(fd, family, client);
  }
}

void Worker::OnAccepted(int fd, int family, const IpAddr& client) {
  IpAddr vip;
  uint16_t vport = 0;
  if (!ServiceAddress(fd, family, vip, vport)) {
    c_.Add(kOriginalDstError);
    SetResetOnClose(fd);
    close(fd);
    return;
  }
  auto table = plane_.table();
  const Route* route = table ? table->Lookup(vip, vport) : nullptr;
  if (route != nullptr && (route->flags & kRouteFlagHandoff) &&
      plane_.PushHandoff(Handoff{fd, vip, vport})) {
    // L7 (HTTP routing, header hashing ...): TS runs the protocol handler on this fd, including
    // the answer when the route has no endpoint. Without a consumer the route is served as L4.
    c_.Add(kHandedOff);
    if (auto* svc = plane_.service(route->service_slot)) svc[kSvcConnections].fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (route != nullptr && (route->flags & kRouteFlagTunnel) && !route->endpoints.empty() &&
      HandToTunnel(fd, *route, vip, vport, client)) {
    return;
  }
  if (route == nullptr || route->endpoints.empty()) {
    c_.Add(route == nullptr ? kNoRoute : kNoEndpoint);
    if (route != nullptr) {
      if (auto* svc = plane_.service(route->service_slot)) svc[kSvcErrors].fetch_add(1, std::memory_order_relaxed);
    }
    // Reset, like kube-proxy's REJECT: the client fails at once instead of waiting.
    SetResetOnClose(fd);
    close(fd);
    return;
  }
  Conn* c = NewConn();
  c->client = fd;
  c->table = std::move(table);
  c->route = route;
  c->vip = vip;
  c->vport = vport;
  c->client_addr = client;
  c->svc = plane_.service(route->service_slot);
  c->last_active_ms = MonotonicMs();
  c->next = head_;
  if (head_) head_->prev = c;
  head_ = c;
  ++conns_;
  c_.Add(kActive);
  SvcAdd(c, kSvcConnections, 1);
  SvcAdd(c, kSvcActive, 1);
  // TCP_NODELAY comes from the listener. Bytes or a FIN already queued raise an event at once.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = Key(c, false);
  epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);

  c->first = PickEndpoint(*route, client, Random());
  if (route->flags & kRouteFlagAffinity) {
    if (auto ep = plane_.affinity().Get(AddrPort{vip, vport}, client, c->last_active_ms)) {
      for (uint32_t i = 0; i < route->endpoints.size(); ++i) {
        if (route->endpoints[i] == *ep) c->first = i;  // still an endpoint: stick to it
      }
    }
  }
  StartConnect(c);
}

// A tunnelled route's endpoints are loopback ports the agent's own tunnel listens on: rather than
// splice the client into a second loopback connection that the tunnel accepts, choose the endpoint
// here (same policy and affinity as a connect) and hand the client socket itself to TS with that
// endpoint as its destination, so the tunnel's pump reads the client directly. False: no consumer,
// forward as usual.
bool Worker::HandToTunnel(int fd, const Route& route, const IpAddr& vip, uint16_t vport, const IpAddr& client) {
  const int64_t now = MonotonicMs();
  uint32_t pick = PickEndpoint(route, client, Random());
  const bool affinity = route.flags & kRouteFlagAffinity;
  if (affinity) {
    if (auto ep = plane_.affinity().Get(AddrPort{vip, vport}, client, now)) {
      for (uint32_t i = 0; i < route.endpoints.size(); ++i) {
        if (route.endpoints[i] == *ep) pick = i;
      }
    }
  }
  const Endpoint& ep = route.endpoints[pick];
  if (!plane_.PushHandoff(Handoff{fd, ep.addr, ep.port})) return false;
  if (affinity) {
    plane_.affinity().Put(AddrPort{vip, vport}, client, ep, now + static_cast<int64_t>(route.affinity_timeout_s) * 1000);
  }
  c_.Add(kHandedOff);
  if (auto* svc = plane_.service(route.service_slot)) svc[kSvcConnections].fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Worker::AdoptAll() {
  for (AdoptedPair& a : plane_.TakeAdopted()) Adopt(a);
}

// An established pair back from TS: forwarded like a connection this worker connected itself.
void Worker::Adopt(AdoptedPair& a) {
  Conn* c = NewConn();
  c->client = a.client;
  c->upstream = a.upstream;
  c->established = true;
  // Nothing is known about these sockets yet: try everything once (EAGAIN clears what is not ready).
  for (Direction* d : {&c->up, &c->down}) d->src_ready = d->dst_ready = true;
  // Per-service counters: the route of the client's original destination (REDIRECT) or, without
  // NAT, of its local address; none when the route is gone (the pair is still served).
  IpAddr vip;
  uint16_t vport = 0;
  (void)ServiceAddress(a.client, 0, vip, vport);  // left :: / 0 when neither answers
  if (auto table = plane_.table()) {
    if (const Route* route = table->Lookup(vip, vport)) c->svc = plane_.service(route->service_slot);
  }
  c->up.pre = std::move(a.to_upstream);
  c->down.pre = std::move(a.to_client);
  c->last_active_ms = MonotonicMs();
  c->next = head_;
  if (head_) head_->prev = c;
  head_ = c;
  ++conns_;
  c_.Add(kActive);
  c_.Add(kSplicedBack);
  SvcAdd(c, kSvcActive, 1);
  SetNoDelay(c->client);
  SetNoDelay(c->upstream);
  for (auto [fd, upstream] : {std::pair<int, bool>{c->client, false}, {c->upstream, true}}) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = Key(c, upstream);
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
  Pump(c);
}

void Worker::StartConnect(Conn* c) {
  const Route& route = *c->route;
  const uint32_t n = static_cast<uint32_t>(route.endpoints.size());
  const uint32_t max_attempts = std::min<uint32_t>(n, plane_.options.max_attempts);
  while (c->attempt < max_attempts) {
    c->ep = route.endpoints[(c->first + c->attempt) % n];
    int fd = socket(c->ep.addr.Family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      c_.Add(kConnectError);
      break;
    }
    // The mark lets the interceptor's RETURN rule skip our own connects; without it they would
    // be redirected back into this proxy.
    if (plane_.options.mark != 0) {
      uint32_t mark = plane_.options.mark;
      if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0) {
        c_.Add(kConnectError);
        close(fd);
        break;  // not permitted: no endpoint would fare better
      }
    }
    SetNoDelay(fd);
    sockaddr_storage sa{};
    const socklen_t sa_len = c->ep.addr.ToSockaddr(c->ep.port, &sa);
    int r = connect(fd, reinterpret_cast<sockaddr*>(&sa), sa_len);
    if (r == 0 || errno == EINPROGRESS) {
      c->upstream = fd;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.u64 = Key(c, true);
      epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
      const uint32_t timeout = route.connect_timeout_ms ? route.connect_timeout_ms : plane_.options.connect_timeout_ms;
      c->deadline_ms = MonotonicMs() + timeout;
      AddConnecting(c);
      if (r == 0) OnConnectResult(c, EPOLLOUT);
      return;
    }
    c_.Add(errno == ECONNREFUSED ? kConnectRefused : kConnectError);
    close(fd);
    ++c->attempt;
  }
  c_.Add(kUpstreamFailed);
  SvcAdd(c, kSvcErrors, 1);
  CloseConn(c, true);
}

void Worker::AddConnecting(Conn* c) {
  c->connecting = true;
  c->connecting_pos = connecting_.size();
  connecting_.push_back(c);
}

void Worker::RemoveConnecting(Conn* c) {
  if (!c->connecting) return;
  c->connecting = false;
  Conn* last = connecting_.back();
  connecting_[c->connecting_pos] = last;
  last->connecting_pos = c->connecting_pos;
  connecting_.pop_back();
}

void Worker::OnConnectResult(Conn* c, uint32_t events) {
  if ((events & EPOLLOUT) && !(events & (EPOLLERR | EPOLLHUP))) {
    // A TCP socket polls writable only once it has left SYN_SENT: no SO_ERROR / getpeername.
    Established(c);
    return;
  }
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(c->upstream, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) {
    // No error code: established if it has a peer (the pump then sees any hang-up), else still
    // connecting (the timeout decides).
    sockaddr_storage peer{};
    socklen_t plen = sizeof(peer);
    if (getpeername(c->upstream, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) Established(c);
    return;
  }
  FailAttempt(c, err == ECONNREFUSED ? kConnectRefused : kConnectError);
}

void Worker::FailAttempt(Conn* c, PlaneCounter why) {
  c_.Add(why);
  RemoveConnecting(c);
  // Leave the epoll set explicitly: the next attempt's socket shares this connection's keys, and
  // a child forked by the agent (ip, ss, iptables-save ...) holding this one between fork and
  // exec would keep its registration alive after close(). Rare path: worth the syscall.
  epoll_ctl(ep_, EPOLL_CTL_DEL, c->upstream, nullptr);
  close(c->upstream);
  c->upstream = -1;
  // Readiness recorded for the failed socket means nothing for the next one.
  c->down.src_ready = c->down.src_hup = c->up.dst_ready = false;
  ++c->attempt;
  StartConnect(c);
}

void Worker::Established(Conn* c) {
  RemoveConnecting(c);
  c->established = true;
  c_.Add(kEstablished);
  if (c->route->flags & kRouteFlagAffinity) {
    plane_.affinity().Put(AddrPort{c->vip, c->vport}, c->client_addr, c->ep,
                          MonotonicMs() + static_cast<int64_t>(c->route->affinity_timeout_s) * 1000);
  }
  // The table is needed only for retries: do not keep old generations alive.
  c->route = nullptr;
  c->table.reset();
  // The upstream just polled writable; the client is assumed writable (EAGAIN would correct it).
  c->up.dst_ready = true;
  c->down.dst_ready = true;
  Pump(c);
}

// Moves whatever the recorded readiness allows, both ways.
void Worker::Pump(Conn* c) {
  if (!PumpDir(c, c->up, c->down, c->client, c->upstream, true)) return;
  PumpDir(c, c->down, c->up, c->upstream, c->client, false);
}

void Worker::ReleasePipe(Direction& d) {
  pipes_.Release(d.pipe, d.in_pipe == 0);
  d.in_pipe = 0;
}

void Worker::ReleaseBuffer(Direction& d) {
  if (d.buf == nullptr) return;
  if (buffers_.size() < kPoolMax / 4) {
    buffers_.push_back(d.buf);
  } else {
    delete[] d.buf;
  }
  d.buf = nullptr;
  d.off = d.len = 0;
}

// A reset (or error) on either side: both sides are reset.
bool Worker::Fail(Conn* c) {
  c_.Add(kResets);
  SvcAdd(c, kSvcErrors, 1);
  CloseConn(c, true);
  return false;
}

// False when the connection was closed (the caller must not touch it further).
bool Worker::PumpDir(Conn* c, Direction& d, const Direction& other, int src, int dst, bool up) {
  const bool splice_mode = plane_.options.use_splice;
  const size_t cap = splice_mode ? plane_.options.pipe_size : plane_.options.buffer_size;
  uint64_t moved = 0;
  for (;;) {
    bool progress = false;
    if (d.src_ready && !d.eof && d.pending() < cap) {
      ssize_t n;
      size_t want = 0;           // for recv: the size asked for (a shorter answer means drained)
      bool eagain_is_src = true;  // false when EAGAIN may come from a full pipe or buffer instead
      if (splice_mode && !d.bulk && d.pending() == 0) {
        // Small-payload path: one recv and one send through the scratch buffer, no pipe.
        want = kSmallPayload;
        n = recv(src, scratch_.get(), want, MSG_DONTWAIT);
        int deferred_err = 0;
        if (n > 0 && static_cast<size_t>(n) < want && d.src_hup) {
          // A FIN (or error) was signalled and this read came back short: the next read answers
          // it. Take that answer now, so the bytes and our FIN can leave in one segment.
          ssize_t more = recv(src, scratch_.get() + n, want - static_cast<size_t>(n), MSG_DONTWAIT);
          if (more > 0) {
            n += more;
          } else if (more == 0) {
            d.eof = true;
          } else if (errno != EAGAIN && errno != EINTR) {
            deferred_err = errno;  // a reset after the bytes: they go first, then the reset
          }
        }
        if (n > 0) {
          d.bulk = static_cast<size_t>(n) == want;
          size_t sent = 0;
          if (d.dst_ready) {
            // Before a FIN, MSG_MORE holds the segment until shutdown()/close() (in this same
            // call, below) tacks the FIN onto it: one packet instead of two.
            const int more = d.eof ? MSG_MORE : 0;
            ssize_t w = send(dst, scratch_.get(), static_cast<size_t>(n), MSG_DONTWAIT | MSG_NOSIGNAL | more);
            if (w > 0) {
              sent = static_cast<size_t>(w);
              moved += sent;
            } else if (w < 0 && errno == EAGAIN) {
              d.dst_ready = false;
            } else if (w < 0 && errno != EINTR) {
              return Fail(c);  // the destination went away (EPIPE / ECONNRESET)
            }
          }
          if (sent < static_cast<size_t>(n)) {
            // The destination is full: park the rest in a pipe (empty, so it takes all of it);
            // later bytes queue behind it and leave by splice.
            if (d.pipe.r < 0 && !pipes_.Acquire(d.pipe)) return Fail(c);
            const size_t rest = static_cast<size_t>(n) - sent;
            ssize_t w = write(d.pipe.w, scratch_.get() + sent, rest);
            if (w != static_cast<ssize_t>(rest)) return Fail(c);
            d.in_pipe += rest;
          }
          if (deferred_err != 0) {
            c->last_active_ms = MonotonicMs();
            c_.Add(up ? kBytesUp : kBytesDown, moved);
            SvcAdd(c, up ? kSvcBytesUp : kSvcBytesDown, static_cast<int64_t>(moved));
            return Fail(c);
          }
        }
      } else if (splice_mode) {
        if (d.pipe.r < 0 && !pipes_.Acquire(d.pipe)) return Fail(c);
        // A pipe with bytes in it may be full (its slots, or a refused F_SETPIPE_SZ): then EAGAIN
        // says nothing about the socket.
        eagain_is_src = d.in_pipe == 0;
        n = splice(src, nullptr, d.pipe.w, nullptr, cap - d.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
          d.in_pipe += static_cast<size_t>(n);
          d.bulk = static_cast<size_t>(n) >= kSmallPayload;
        }
      } else {
        if (d.buf == nullptr) {
          if (!buffers_.empty()) {
            d.buf = buffers_.back();
            buffers_.pop_back();
          } else {
            d.buf = new char[cap];
          }
        }
        if (d.off == d.len) d.off = d.len = 0;
        want = cap - d.len;
        if (d.len < cap) {
          n = recv(src, d.buf + d.len, want, MSG_DONTWAIT);
          if (n > 0) d.len += static_cast<size_t>(n);
        } else {
          n = -1;  // no room at the buffer's end until its unsent bytes are out
          errno = EAGAIN;
          eagain_is_src = false;
        }
      }
      if (n > 0) {
        progress = true;
        // Drained for now (edge-triggered: a later byte or FIN raises a new event), unless a
        // FIN or error was already signalled: then read on until 0.
        if (want > 0 && static_cast<size_t>(n) < want && !d.src_hup) d.src_ready = false;
      } else if (n == 0) {
        d.eof = true;
        progress = true;
      } else if (errno == EINTR) {
        progress = true;
      } else if (errno == EAGAIN) {
        if (eagain_is_src) d.src_ready = false;
      } else {
        return Fail(c);  // reset (or error) from the source side
      }
    }
    if (d.pending() > 0 && d.dst_ready) {
      ssize_t n;
      if (d.pre_off < d.pre.size()) {
        n = send(dst, d.pre.data() + d.pre_off, d.pre.size() - d.pre_off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) {
          d.pre_off += static_cast<size_t>(n);
          if (d.pre_off == d.pre.size()) {
            d.pre.clear();
            d.pre.shrink_to_fit();
            d.pre_off = 0;
          }
        }
      } else if (splice_mode) {
        n = splice(d.pipe.r, nullptr, dst, nullptr, d.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) d.in_pipe -= static_cast<size_t>(n);
      } else {
        n = send(dst, d.buf + d.off, d.len - d.off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) d.off += static_cast<size_t>(n);
      }
      if (n > 0) {
        moved += static_cast<uint64_t>(n);
        progress = true;
      } else if (n < 0 && errno == EINTR) {
        progress = true;
      } else if (n < 0 && errno == EAGAIN) {
        d.dst_ready = false;
      } else if (n < 0) {
        return Fail(c);  // the destination went away (EPIPE / ECONNRESET)
      }
    }
    if (!progress) break;
  }
  if (moved > 0) {
    c_.Add(up ? kBytesUp : kBytesDown, moved);
    SvcAdd(c, up ? kSvcBytesUp : kSvcBytesDown, static_cast<int64_t>(moved));
    c->last_active_ms = MonotonicMs();
  }
  if (d.pending() == 0) {
    if (splice_mode) {
      ReleasePipe(d);
    } else {
      ReleaseBuffer(d);
    }
  }
  // Half-close travels only after every byte before it is through.
  if (d.eof && d.pending() == 0 && !d.shut) {
    d.shut = true;
    if (other.shut) {
      // Both ways done and both sources drained to EOF: close() sends this FIN (no shutdown).
      CloseConn(c, false);
      return false;
    }
    shutdown(dst, SHUT_WR);
  }
  return true;
}

void Worker::CloseConn(Conn* c, bool reset) {
  if (c->closed) return;
  c->closed = true;
  RemoveConnecting(c);
  for (int fd : {c->client, c->upstream}) {
    if (fd < 0) continue;
    if (reset) SetResetOnClose(fd);
    // No EPOLL_CTL_DEL: the slot's generation changes, so any event still coming is dropped.
    close(fd);
  }
  for (Direction* d : {&c->up, &c->down}) {
    ReleasePipe(*d);
    ReleaseBuffer(*d);
    std::string().swap(d->pre);
  }
  if (c->prev) c->prev->next = c->next;
  if (c->next) c->next->prev = c->prev;
  if (head_ == c) head_ = c->next;
  --conns_;
  c_.Sub(kActive);
  SvcAdd(c, kSvcActive, -1);
  c->table.reset();
  graveyard_.push_back(c);
}

void Worker::BeginDrain() {
  if (draining_) return;
  draining_ = true;
  epoll_ctl(ep_, EPOLL_CTL_DEL, plane_.stop_fd(), nullptr);
  // Connections already in the backlogs were promised service.
  AcceptAll(0);
  AcceptAll(1);
  if (accept_paused_until_ms_ == 0) WatchListeners(false);
  accept_paused_until_ms_ = 0;
  for (int& l : listeners_) {
    if (l >= 0) close(l);
    l = -1;
  }
}

void Worker::CheckTimeouts(int64_t now) {
  for (size_t i = 0; i < connecting_.size();) {
    Conn* c = connecting_[i];
    if (c->deadline_ms <= now) {
      FailAttempt(c, kConnectTimeout);  // removes c from connecting_ (maybe re-adds at the end)
    } else {
      ++i;
    }
  }
  const uint32_t idle = plane_.options.idle_timeout_ms;
  if (idle > 0 && now - last_idle_scan_ms_ >= 1000) {
    last_idle_scan_ms_ = now;
    for (Conn* c = head_; c != nullptr;) {
      Conn* next = c->next;
      if (c->established && now - c->last_active_ms >= idle) {
        c_.Add(kIdleClosed);
        CloseConn(c, false);
      }
      c = next;
    }
  }
}

}  // namespace

std::optional<SyscallError> Plane::RunWorker(uint32_t index) {
  if (index >= listener_count_) return SyscallError{"run worker (no such listener index)", EINVAL};
  // Pinned for the run only: the thread (a piscina worker) may serve other tasks afterwards.
  cpu_set_t before;
  bool pinned = false;
  const int cpu = WorkerCpu(index);
  if (cpu >= 0 && sched_getaffinity(0, sizeof(before), &before) == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    pinned = sched_setaffinity(0, sizeof(one), &one) == 0;
  }
  // Escaping needs somewhere to go (another plane CPU).
  const char* env = getenv("EDGEMESH_AFFINITY_ESCAPE");
  const bool escape = pinned && options.affinity_escape && cpus_.size() > 1 && !(env && strcmp(env, "off") == 0);
  // Named for the run (top -H, tests find "em-worker-N" in /proc/<pid>/task/*/comm); the thread's
  // own name comes back after.
  char old_name[16] = {};
  const bool named = prctl(PR_GET_NAME, old_name) == 0;
  if (named) {
    char name[16];
    snprintf(name, sizeof(name), "em-worker-%u", index % 100000);
    prctl(PR_SET_NAME, name);
  }
  Worker worker(*this, index, escape ? cpu : -1);
  auto result = worker.Run();
  if (pinned) sched_setaffinity(0, sizeof(before), &before);
  if (named) prctl(PR_SET_NAME, old_name);
  return result;
}

}  // namespace edgemesh
