#include "core/proxy_plane.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <map>

namespace edgemesh {

int64_t MonotonicMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

std::optional<Endpoint> AffinityCache::Get(const AddrPort& route, const IpAddr& client, int64_t now_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto r = by_route_.find(route);
  if (r == by_route_.end()) return std::nullopt;
  auto c = r->second.find(client);
  if (c == r->second.end()) return std::nullopt;
  if (c->second.expires_ms <= now_ms) {
    r->second.erase(c);
    return std::nullopt;
  }
  return c->second.ep;
}

void AffinityCache::Put(const AddrPort& route_key, const IpAddr& client, const Endpoint& ep, int64_t expires_ms) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& route = by_route_[route_key];
  route[client] = Entry{ep, expires_ms};
  // Sweep expired entries now and then so clients that never return do not pile up.
  if (++puts_ % 4096 == 0) {
    const int64_t now = MonotonicMs();
    for (auto& [key, clients] : by_route_) {
      for (auto it = clients.begin(); it != clients.end();) it = it->second.expires_ms <= now ? clients.erase(it) : ++it;
    }
  }
}

size_t AffinityCache::size() {
  std::lock_guard<std::mutex> lock(mu_);
  size_t n = 0;
  for (auto& [key, clients] : by_route_) n += clients.size();
  return n;
}

Plane::Plane(const PlaneOptions& opts)
    : options(opts), services_(new std::atomic<uint64_t>[static_cast<size_t>(opts.service_slots) * kSvcCounterCount]) {
  for (size_t i = 0; i < static_cast<size_t>(opts.service_slots) * kSvcCounterCount; ++i) services_[i] = 0;
  // One eventfd for all workers: written once at Stop(), it stays readable and wakes every epoll.
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  adopt_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

Plane::~Plane() {
  for (ListenerGroup* g : {&v4_, &v6_}) {
    for (uint32_t i = 0; i < g->count; ++i) {
      int fd = g->fds[i].exchange(-1);
      if (fd >= 0) close(fd);
    }
  }
  if (stop_fd_ >= 0) close(stop_fd_);
  // Hand-offs TS never took: nobody else will close them.
  for (const Handoff& h : handoffs_) close(h.fd);
  if (adopt_fd_ >= 0) close(adopt_fd_);
  // Pairs pushed while the last worker was leaving: nobody else will close them.
  for (const AdoptedPair& a : adopted_) {
    close(a.client);
    close(a.upstream);
  }
}

bool Plane::PushAdopted(AdoptedPair&& pair) {
  if (adopt_fd_ < 0 || stopping() || Counter(kWorkersRunning) == 0) return false;
  {
    std::lock_guard<std::mutex> lock(adopt_mu_);
    adopted_.push_back(std::move(pair));
  }
  uint64_t one = 1;
  ssize_t w = write(adopt_fd_, &one, sizeof(one));
  (void)w;
  return true;
}

std::vector<AdoptedPair> Plane::TakeAdopted() {
  uint64_t count = 0;
  // Reset the eventfd before taking: a push after this read re-arms it, so nothing is missed.
  ssize_t r = read(adopt_fd_, &count, sizeof(count));
  (void)r;
  std::lock_guard<std::mutex> lock(adopt_mu_);
  std::vector<AdoptedPair> out;
  out.swap(adopted_);
  return out;
}

void Plane::SetHandoffNotify(std::function<void()> notify) {
  std::lock_guard<std::mutex> lock(handoff_mu_);
  handoff_notify_ = std::move(notify);
}

bool Plane::PushHandoff(const Handoff& h) {
  std::lock_guard<std::mutex> lock(handoff_mu_);
  if (!handoff_notify_) return false;
  handoffs_.push_back(h);
  // One wake-up per batch: TS drains the whole queue each time it runs.
  if (handoffs_.size() == 1) handoff_notify_();
  return true;
}

std::vector<Handoff> Plane::TakeHandoffs() {
  std::lock_guard<std::mutex> lock(handoff_mu_);
  std::vector<Handoff> out;
  out.swap(handoffs_);
  return out;
}

std::optional<SyscallError> Plane::Listen(const std::string& address, uint16_t port, uint32_t count) {
  IpAddr addr;
  if (!IpAddr::Parse(address, &addr)) return SyscallError{"inet_pton", EINVAL};
  const int family = addr.Family();
  if (group(family).count != 0) return SyscallError{"listen (plane already listening on this family)", EALREADY};
  if (listener_count_ != 0 && count != listener_count_)
    return SyscallError{"listen (both families need one listener per worker)", EINVAL};
  // The second family joins the port the first got (port 0 in tests).
  if (port == 0 && bound_port_ != 0) port = bound_port_;
  sockaddr_storage sa{};
  const socklen_t sa_len = addr.ToSockaddr(port, &sa);
  std::vector<int> fds;
  auto fail = [&](const char* syscall) {
    SyscallError e{syscall, errno};
    for (int fd : fds) close(fd);
    return e;
  };
  for (uint32_t i = 0; i < count; ++i) {
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail("socket");
    fds.push_back(fd);
    int one = 1;
    // IPv4 clients have their own listener: an IPv6 one that also took them would see them as
    // ::ffff:a.b.c.d and collide with 0.0.0.0 on the same port.
    if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
      return fail("setsockopt(IPV6_V6ONLY)");
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) return fail("setsockopt(SO_REUSEADDR)");
    // One listener per worker: the kernel spreads new connections over them, no shared accept queue.
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) return fail("setsockopt(SO_REUSEPORT)");
    // Accepted sockets inherit TCP_NODELAY from their listener: one setsockopt here instead of one
    // per connection (small requests and replies must not wait for Nagle).
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0) return fail("setsockopt(TCP_NODELAY)");
    if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sa_len) != 0) return fail("bind");
    if (listen(fd, 4096) != 0) return fail("listen");
    if (i == 0 && port == 0) {
      // Port 0 (tests): every further listener must join the group on the port the first got.
      sockaddr_storage bound{};
      socklen_t len = sizeof(bound);
      if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len) != 0) return fail("getsockname");
      IpAddr ignored;
      IpAddr::FromSockaddr(bound, &ignored, &port);
      addr.ToSockaddr(port, &sa);
    }
  }
  if (options.cpu_affinity) {
    if (cpus_.empty()) {
      cpu_set_t set;
      CPU_ZERO(&set);
      if (sched_getaffinity(0, sizeof(set), &set) != 0) return fail("sched_getaffinity");
      for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
        if (CPU_ISSET(cpu, &set)) cpus_.push_back(cpu);
      }
    }
    // Steer each SYN to the listener of the worker pinned to the CPU handling it: listener i is
    // the i-th of the reuseport group (the order they were listened in). A CPU without a worker
    // (more CPUs than workers) returns an index past the group: the kernel then falls back to
    // its hash.
    std::vector<sock_filter> code;
    code.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(SKF_AD_OFF + SKF_AD_CPU)));
    const size_t steered = std::min<size_t>(cpus_.size(), count);
    for (size_t i = 0; i < steered; ++i) {
      code.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(cpus_[i]), 0, 1));
      code.push_back(BPF_STMT(BPF_RET | BPF_K, static_cast<uint32_t>(i)));
    }
    code.push_back(BPF_STMT(BPF_RET | BPF_K, 0xffffffffu));
    sock_fprog prog{static_cast<unsigned short>(code.size()), code.data()};
    if (setsockopt(fds[0], SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog)) != 0)
      return fail("setsockopt(SO_ATTACH_REUSEPORT_CBPF)");
  }
  bound_port_ = port;
  ListenerGroup& g = group(family);
  g.fds.reset(new std::atomic<int>[count]);
  for (uint32_t i = 0; i < count; ++i) g.fds[i] = fds[i];
  g.count = count;
  if (listener_count_ == 0) {
    for (uint32_t i = 0; i < count; ++i) worker_counters_.push_back(std::make_unique<WorkerCounters>());
    listener_count_ = count;
  }
  return std::nullopt;
}

int Plane::WorkerCpu(uint32_t index) const {
  if (!options.cpu_affinity || cpus_.empty()) return -1;
  return cpus_[index % cpus_.size()];
}

int Plane::TakeListener(uint32_t index, int family) {
  ListenerGroup& g = group(family);
  return index < g.count ? g.fds[index].exchange(-1) : -1;
}

void Plane::Stop(uint32_t drain_ms) {
  int64_t expected = 0;
  // Deadline 0 means "running"; never store 0 as a deadline.
  if (stop_deadline_ms_.compare_exchange_strong(expected, MonotonicMs() + drain_ms + 1)) {
    uint64_t one = 1;
    ssize_t w = write(stop_fd_, &one, sizeof(one));
    (void)w;
  }
}

uint64_t Plane::Counter(PlaneCounter c) const {
  uint64_t sum = 0;
  for (auto& w : worker_counters_) sum += w->v[c].load(std::memory_order_relaxed);
  return sum;
}

namespace {
std::mutex g_registry_mu;
std::map<uint32_t, std::shared_ptr<Plane>> g_registry;
uint32_t g_next_id = 1;
}  // namespace

uint32_t RegisterPlane(std::shared_ptr<Plane> plane) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  uint32_t id = g_next_id++;
  g_registry.emplace(id, std::move(plane));
  return id;
}

std::shared_ptr<Plane> FindPlane(uint32_t id) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  auto it = g_registry.find(id);
  return it == g_registry.end() ? nullptr : it->second;
}

bool UnregisterPlane(uint32_t id) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  return g_registry.erase(id) > 0;
}

}  // namespace edgemesh
