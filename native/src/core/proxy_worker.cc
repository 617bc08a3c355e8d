// One worker of the native plane: an epoll loop (edge-triggered sockets) that accepts on its own
// SO_REUSEPORT listener, resolves the original destination, picks an endpoint, connects without
// blocking (timeout, retry on refusal) and forwards both directions with splice(2) through a pipe
// per direction (or read/write through buffers). Nothing here calls into JS.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <vector>

#include "core/original_dst.h"
#include "core/proxy_plane.h"

namespace edgemesh {

namespace {

struct Conn;

// What an epoll event points at: one side of a connection (or, with conn == nullptr, the
// listener or the stop eventfd).
struct Tag {
  Conn* conn;
  bool upstream;
};

// One forwarding direction. Pipes and buffers are taken from the worker's pool only while bytes
// are in flight, so idle connections hold two sockets and nothing else.
struct Direction {
  int pipe_r = -1, pipe_w = -1;
  size_t in_pipe = 0;  // bytes in the pipe (splice mode)
  char* buf = nullptr;
  size_t off = 0, len = 0;  // unsent bytes are buf[off, len) (read/write mode)
  std::string pre;          // bytes TS read before giving the pair back: sent before anything else
  size_t pre_off = 0;
  bool eof = false;         // source reached EOF
  bool shut = false;        // EOF passed on (shutdown(SHUT_WR) on the destination)
  size_t pending() const { return in_pipe + (len - off) + (pre.size() - pre_off); }
};

struct Conn {
  int client = -1, upstream = -1;
  Tag ctag{}, utag{};
  bool established = false, connecting = false, closed = false;
  std::shared_ptr<const RoutingTable> table;  // kept only while connecting (for retries)
  const Route* route = nullptr;
  uint32_t vip_be = 0, client_be = 0;
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
bool ServiceAddress(int fd, uint32_t& vip_be, uint16_t& vport) {
  auto od = GetOriginalDst(fd);
  if (od.dst) {
    vip_be = od.dst->addr_be;
    vport = od.dst->port;
    return true;
  }
  sockaddr_in local{};
  socklen_t len = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) return false;
  vip_be = local.sin_addr.s_addr;
  vport = ntohs(local.sin_port);
  return true;
}

class Worker {
 public:
  Worker(Plane& plane, uint32_t index)
      : plane_(plane), index_(index), c_(plane.worker_counters(index)), rng_(std::random_device{}() | 1ull) {}

  std::optional<SyscallError> Run();

 private:
  void AcceptAll();
  void OnAccepted(int fd, const sockaddr_in& peer);
  void AdoptAll();
  void Adopt(AdoptedPair& a);
  void StartConnect(Conn* c);
  void OnConnectResult(Conn* c);
  void FailAttempt(Conn* c, PlaneCounter why);
  void Established(Conn* c);
  void Pump(Conn* c, bool up = true, bool down = true);
  bool PumpDir(Conn* c, Direction& d, int src, int dst, bool up);
  void CloseConn(Conn* c, bool reset);
  void BeginDrain();
  void CheckTimeouts(int64_t now);
  int NextTimeout(int64_t now) const;
  bool AcquirePipe(Direction& d);
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

  Plane& plane_;
  const uint32_t index_;
  WorkerCounters& c_;
  uint64_t rng_;
  int ep_ = -1;
  int listener_ = -1;
  bool draining_ = false;
  Tag listen_tag_{nullptr, false};
  Tag stop_tag_{nullptr, true};
  Tag adopt_tag_{nullptr, true};
  Conn* head_ = nullptr;
  size_t conns_ = 0;
  std::vector<Conn*> connecting_;
  std::vector<Conn*> graveyard_;  // closed this batch; freed after it (later events may name them)
  std::vector<std::pair<int, int>> pipes_;
  std::vector<char*> buffers_;
  int64_t last_idle_scan_ms_ = 0;
  int64_t accept_paused_until_ms_ = 0;  // listener out of the epoll set until then (EMFILE ...)
  static constexpr size_t kPoolMax = 128;
};

std::optional<SyscallError> Worker::Run() {
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) return SyscallError{"epoll_create1", errno};
  listener_ = plane_.TakeListener(index_);
  if (listener_ < 0) {
    close(ep_);
    return SyscallError{"listener (worker index not listening or already running)", EBADF};
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = &listen_tag_;
  epoll_ctl(ep_, EPOLL_CTL_ADD, listener_, &ev);
  ev.data.ptr = &stop_tag_;
  epoll_ctl(ep_, EPOLL_CTL_ADD, plane_.stop_fd(), &ev);
  // Pairs TS gives back: one worker wakes per push (EPOLLEXCLUSIVE) and takes the whole queue.
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.ptr = &adopt_tag_;
  epoll_ctl(ep_, EPOLL_CTL_ADD, plane_.adopt_fd(), &ev);

  epoll_event events[256];
  c_.Add(kWorkersRunning);
  for (;;) {
    const int64_t now = MonotonicMs();
    if (accept_paused_until_ms_ != 0 && now >= accept_paused_until_ms_ && listener_ >= 0) {
      accept_paused_until_ms_ = 0;
      epoll_event lev{};
      lev.events = EPOLLIN;
      lev.data.ptr = &listen_tag_;
      epoll_ctl(ep_, EPOLL_CTL_ADD, listener_, &lev);
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
    int n = epoll_wait(ep_, events, 256, NextTimeout(now));
    if (n < 0) {
      if (errno == EINTR) continue;
      SyscallError e{"epoll_wait", errno};
      c_.Sub(kWorkersRunning);
      while (head_ != nullptr) CloseConn(head_, true);
      for (Conn* c : graveyard_) delete c;
      graveyard_.clear();
      close(ep_);
      if (listener_ >= 0) close(listener_);
      return e;
    }
    if (n == 0 && conns_ == 0) TrimPools();
    for (int i = 0; i < n; ++i) {
      Tag* tag = static_cast<Tag*>(events[i].data.ptr);
      if (tag == &listen_tag_) {
        AcceptAll();
      } else if (tag == &stop_tag_) {
        BeginDrain();
      } else if (tag == &adopt_tag_) {
        AdoptAll();
      } else {
        Conn* c = tag->conn;
        if (c->closed) continue;
        if (!c->established) {
          // Client events while connecting are ignored: the first pump after connect reads all.
          if (tag->upstream && c->connecting) OnConnectResult(c);
          continue;
        }
        // Pump only the directions this event can move: readable source or writable destination.
        const uint32_t ev = events[i].events;
        const bool readable = ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
        const bool writable = ev & (EPOLLOUT | EPOLLHUP | EPOLLERR);
        const bool up = tag->upstream ? writable : readable;
        const bool down = tag->upstream ? readable : writable;
        Pump(c, up, down);
      }
    }
    for (Conn* c : graveyard_) delete c;
    graveyard_.clear();
    CheckTimeouts(MonotonicMs());
    for (Conn* c : graveyard_) delete c;
    graveyard_.clear();
  }
  TrimPools();
  if (listener_ >= 0) close(listener_);
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
  for (auto& p : pipes_) {
    close(p.first);
    close(p.second);
  }
  pipes_.clear();
  for (char* b : buffers_) delete[] b;
  buffers_.clear();
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
  // An idle worker gives its pooled pipes and buffers back after a second (fds return to baseline).
  if (conns_ == 0 && (!pipes_.empty() || !buffers_.empty())) consider(now + 1000);
  return until < 0 ? -1 : static_cast<int>(until + 1);
}

void Worker::AcceptAll() {
  for (;;) {
    sockaddr_in peer{};
    socklen_t len = sizeof(peer);
    int fd = accept4(listener_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN) return;
      c_.Add(kAcceptErrors);
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of fds or memory: the level-triggered listener would wake us in a tight loop. Stop
        // watching it for a moment; closing connections free fds meanwhile.
        epoll_ctl(ep_, EPOLL_CTL_DEL, listener_, nullptr);
        accept_paused_until_ms_ = MonotonicMs() + 100;
      }
      return;
    }
    c_.Add(kAccepted);
    OnAccepted(fd, peer);
  }
}

void Worker::OnAccepted(int fd, const sockaddr_in& peer) {
  uint32_t vip_be = 0;
  uint16_t vport = 0;
  if (!ServiceAddress(fd, vip_be, vport)) {
    c_.Add(kOriginalDstError);
    SetResetOnClose(fd);
    close(fd);
    return;
  }
  auto table = plane_.table();
  const Route* route = table ? table->Lookup(vip_be, vport) : nullptr;
  if (route != nullptr && (route->flags & kRouteFlagHandoff) &&
      plane_.PushHandoff(Handoff{fd, vip_be, vport})) {
    // L7 (HTTP routing, header hashing ...): TS runs the protocol handler on this fd, including
    // the answer when the route has no endpoint. Without a consumer the route is served as L4.
    c_.Add(kHandedOff);
    if (auto* svc = plane_.service(route->service_slot)) svc[kSvcConnections].fetch_add(1, std::memory_order_relaxed);
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
  Conn* c = new Conn();
  c->client = fd;
  c->ctag = Tag{c, false};
  c->utag = Tag{c, true};
  c->table = std::move(table);
  c->route = route;
  c->vip_be = vip_be;
  c->vport = vport;
  c->client_be = peer.sin_addr.s_addr;
  c->svc = plane_.service(route->service_slot);
  c->last_active_ms = MonotonicMs();
  c->next = head_;
  if (head_) head_->prev = c;
  head_ = c;
  ++conns_;
  c_.Add(kActive);
  SvcAdd(c, kSvcConnections, 1);
  SvcAdd(c, kSvcActive, 1);
  SetNoDelay(fd);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = &c->ctag;
  epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);

  c->first = PickEndpoint(*route, c->client_be, Random());
  if (route->flags & kRouteFlagAffinity) {
    if (auto ep = plane_.affinity().Get(vip_be, vport, c->client_be, c->last_active_ms)) {
      for (uint32_t i = 0; i < route->endpoints.size(); ++i) {
        if (route->endpoints[i] == *ep) c->first = i;  // still an endpoint: stick to it
      }
    }
  }
  StartConnect(c);
}

void Worker::AdoptAll() {
  for (AdoptedPair& a : plane_.TakeAdopted()) Adopt(a);
}

// An established pair back from TS: forwarded like a connection this worker connected itself.
void Worker::Adopt(AdoptedPair& a) {
  Conn* c = new Conn();
  c->client = a.client;
  c->upstream = a.upstream;
  c->ctag = Tag{c, false};
  c->utag = Tag{c, true};
  c->established = true;
  // Per-service counters: the route of the client's original destination (REDIRECT) or, without
  // NAT, of its local address; none when the route is gone (the pair is still served).
  uint32_t vip_be = 0;
  uint16_t vport = 0;
  (void)ServiceAddress(a.client, vip_be, vport);  // left 0 when neither answers
  if (auto table = plane_.table()) {
    if (const Route* route = table->Lookup(vip_be, vport)) c->svc = plane_.service(route->service_slot);
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
  for (auto [fd, tag] : {std::pair<int, Tag*>{c->client, &c->ctag}, {c->upstream, &c->utag}}) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = tag;
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
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
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
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = c->ep.addr_be;
    sa.sin_port = htons(c->ep.port);
    int r = connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
    if (r == 0 || errno == EINPROGRESS) {
      c->upstream = fd;
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.ptr = &c->utag;
      epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
      const uint32_t timeout = route.connect_timeout_ms ? route.connect_timeout_ms : plane_.options.connect_timeout_ms;
      c->deadline_ms = MonotonicMs() + timeout;
      AddConnecting(c);
      if (r == 0) OnConnectResult(c);
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

void Worker::OnConnectResult(Conn* c) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(c->upstream, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) {
    // EPOLLOUT can fire before the handshake finishes on some paths; a connected socket has a peer.
    sockaddr_in peer{};
    socklen_t plen = sizeof(peer);
    if (getpeername(c->upstream, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) return;
    Established(c);
    return;
  }
  FailAttempt(c, err == ECONNREFUSED ? kConnectRefused : kConnectError);
}

void Worker::FailAttempt(Conn* c, PlaneCounter why) {
  c_.Add(why);
  RemoveConnecting(c);
  // Leave the epoll set explicitly: close() removes the registration only when this was the last
  // reference to the socket, and a child forked by the agent (ip, ss, iptables-save ...) can hold
  // one between fork and exec; a later event would then point at a Conn that is gone.
  epoll_ctl(ep_, EPOLL_CTL_DEL, c->upstream, nullptr);
  close(c->upstream);
  c->upstream = -1;
  ++c->attempt;
  StartConnect(c);
}

void Worker::Established(Conn* c) {
  RemoveConnecting(c);
  c->established = true;
  c_.Add(kEstablished);
  if (c->route->flags & kRouteFlagAffinity) {
    plane_.affinity().Put(c->vip_be, c->vport, c->client_be, c->ep,
                          MonotonicMs() + static_cast<int64_t>(c->route->affinity_timeout_s) * 1000);
  }
  // The table is needed only for retries: do not keep old generations alive.
  c->route = nullptr;
  c->table.reset();
  Pump(c);
}

void Worker::Pump(Conn* c, bool up, bool down) {
  if (up && !PumpDir(c, c->up, c->client, c->upstream, true)) return;
  if (down && !PumpDir(c, c->down, c->upstream, c->client, false)) return;
  if (c->up.shut && c->down.shut) CloseConn(c, false);
}

bool Worker::AcquirePipe(Direction& d) {
  if (!pipes_.empty()) {
    d.pipe_r = pipes_.back().first;
    d.pipe_w = pipes_.back().second;
    pipes_.pop_back();
    return true;
  }
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return false;
  // Bigger pipes move more per syscall (1 MiB measured best); a refused resize only costs speed.
  if (plane_.options.pipe_size > 0) fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(plane_.options.pipe_size));
  d.pipe_r = p[0];
  d.pipe_w = p[1];
  return true;
}

void Worker::ReleasePipe(Direction& d) {
  if (d.pipe_r < 0) return;
  if (d.in_pipe == 0 && pipes_.size() < kPoolMax) {
    pipes_.emplace_back(d.pipe_r, d.pipe_w);
  } else {
    close(d.pipe_r);
    close(d.pipe_w);
  }
  d.pipe_r = d.pipe_w = -1;
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

bool Worker::PumpDir(Conn* c, Direction& d, int src, int dst, bool up) {
  const bool splice_mode = plane_.options.use_splice;
  const size_t cap = splice_mode ? plane_.options.pipe_size : plane_.options.buffer_size;
  auto fail = [&]() {
    c_.Add(kResets);
    SvcAdd(c, kSvcErrors, 1);
    CloseConn(c, true);
    return false;
  };
  uint64_t moved = 0;
  for (;;) {
    bool progress = false;
    if (!d.eof && d.pending() < cap) {
      ssize_t n;
      if (splice_mode) {
        if (d.pipe_r < 0 && !AcquirePipe(d)) return fail();
        n = splice(src, nullptr, d.pipe_w, nullptr, cap - d.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) d.in_pipe += static_cast<size_t>(n);
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
        n = d.len < cap ? recv(src, d.buf + d.len, cap - d.len, MSG_DONTWAIT) : -1;
        if (n > 0) d.len += static_cast<size_t>(n);
        if (d.len >= cap && n < 0) errno = EAGAIN;
      }
      if (n > 0) {
        progress = true;
      } else if (n == 0) {
        d.eof = true;
        progress = true;
      } else if (errno == EINTR) {
        progress = true;
      } else if (errno != EAGAIN) {
        return fail();  // reset (or error) from the source side
      }
    }
    if (d.pending() > 0) {
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
        n = splice(d.pipe_r, nullptr, dst, nullptr, d.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
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
      } else if (n < 0 && errno != EAGAIN) {
        return fail();  // the destination went away (EPIPE / ECONNRESET)
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
    shutdown(dst, SHUT_WR);
    d.shut = true;
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
    epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);  // see FailAttempt: a forked child may share the socket
    close(fd);
  }
  for (Direction* d : {&c->up, &c->down}) {
    ReleasePipe(*d);
    ReleaseBuffer(*d);
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
  if (listener_ >= 0) {
    AcceptAll();  // connections already in the backlog were promised service
    if (accept_paused_until_ms_ == 0) epoll_ctl(ep_, EPOLL_CTL_DEL, listener_, nullptr);
    accept_paused_until_ms_ = 0;
    close(listener_);
    listener_ = -1;
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
  Worker worker(*this, index);
  return worker.Run();
}

}  // namespace edgemesh
