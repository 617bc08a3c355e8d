// The proxy loop end to end on loopback: a real plane worker thread, real backends. Without NAT the
// accepted socket's own address is the "original destination", so the route is 127.0.0.1:<proxy>.
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "core/proxy_plane.h"
#include "route_builder.h"
#include "test_harness.h"

using edgemesh_test::BuildTable;
using edgemesh_test::TestRoute;

namespace {

// The loopback address of `family` (127.0.0.1 or ::1) with `port`, in `ss`; returns its length.
socklen_t LoopbackAddr(int family, uint16_t port, sockaddr_storage* ss) {
  *ss = {};
  if (family == AF_INET6) {
    auto* sa = reinterpret_cast<sockaddr_in6*>(ss);
    sa->sin6_family = AF_INET6;
    sa->sin6_addr = in6addr_loopback;
    sa->sin6_port = htons(port);
    return sizeof(sockaddr_in6);
  }
  auto* sa = reinterpret_cast<sockaddr_in*>(ss);
  sa->sin_family = AF_INET;
  sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sa->sin_port = htons(port);
  return sizeof(sockaddr_in);
}

// A listener on the loopback address of `family` on an ephemeral port (written to *port).
int ListenLoopbackOn(int family, uint16_t* port) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage ss;
  socklen_t len = LoopbackAddr(family, 0, &ss);
  bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  listen(fd, 128);
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  *port = ntohs(family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                   : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  return fd;
}

// A client connected to the loopback address of `family` on `port`, or -1.
int ConnectOn(int family, uint16_t port) {
  int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_storage ss;
  const socklen_t len = LoopbackAddr(family, port, &ss);
  timeval tv{5, 0};  // a hung proxy fails the test instead of hanging it
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int ListenLoopback(uint16_t* port) { return ListenLoopbackOn(AF_INET, port); }
int ListenLoopback6(uint16_t* port) { return ListenLoopbackOn(AF_INET6, port); }
int Connect(uint16_t port) { return ConnectOn(AF_INET, port); }
int Connect6(uint16_t port) { return ConnectOn(AF_INET6, port); }

// Reads until EOF; returns bytes read, or -errno on error.
long ReadAll(int fd, std::string* out) {
  char buf[65536];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0) return static_cast<long>(out->size());
    if (n < 0) return -errno;
    out->append(buf, static_cast<size_t>(n));
  }
}

// One client exchange through the plane: a fresh connection from `connect(port)` sends `msg`,
// half-closes and reads until EOF; returns what ReadAll returns (bytes read, or -errno), the
// bytes in *got.
long ExchangeOnce(int (*connect)(uint16_t), uint16_t port, const std::string& msg, std::string* got) {
  int c = connect(port);
  CHECK(c >= 0);
  if (!msg.empty()) CHECK_EQ(write(c, msg.data(), msg.size()), static_cast<ssize_t>(msg.size()));
  shutdown(c, SHUT_WR);
  const long n = ReadAll(c, got);
  close(c);
  return n;
}

// A backend serving `handler` for each accepted connection (one thread per connection).
struct Backend {
  uint16_t port = 0;
  int fd = -1;
  std::thread acceptor;
  std::vector<std::thread> conns;
  // On 127.0.0.1, or on [::1] with `v6`.
  explicit Backend(std::function<void(int)> handler, bool v6 = false) {
    fd = v6 ? ListenLoopback6(&port) : ListenLoopback(&port);
    acceptor = std::thread([this, handler] {
      for (;;) {
        int c = accept(fd, nullptr, nullptr);
        if (c < 0) return;
        conns.emplace_back([handler, c] { handler(c); });
      }
    });
  }
  ~Backend() {
    shutdown(fd, SHUT_RDWR);
    close(fd);
    acceptor.join();
    for (auto& t : conns) t.join();
  }
};

void Echo(int c) {
  char buf[65536];
  ssize_t n;
  while ((n = read(c, buf, sizeof(buf))) > 0) {
    for (ssize_t off = 0; off < n;) {
      ssize_t w = write(c, buf + off, static_cast<size_t>(n - off));
      if (w <= 0) break;
      off += w;
    }
  }
  shutdown(c, SHUT_WR);
  close(c);
}

// A plane with one worker running on its own thread.
struct RunningPlane {
  std::shared_ptr<edgemesh::Plane> plane;
  std::thread worker;
  std::atomic<bool> done{false};
  explicit RunningPlane(edgemesh::PlaneOptions o = {}) {
    o.mark = 0;  // no interceptor here, and no CAP_NET_ADMIN needed
    o.connect_timeout_ms = 1000;
    plane = std::make_shared<edgemesh::Plane>(o);
    CHECK(!plane->Listen("127.0.0.1", 0, 1));
  }
  void Routes(std::vector<TestRoute> routes) {
    auto b = BuildTable(1, routes);
    std::string error;
    plane->SetTable(edgemesh::RoutingTable::Decode(b.data(), b.size(), &error));
  }
  void Start() {
    worker = std::thread([this] {
      CHECK(!plane->RunWorker(0));
      done = true;
    });
  }
  uint16_t port() const { return plane->bound_port(); }
  uint64_t Counter(edgemesh::PlaneCounter c) const { return plane->Counter(c); }
  ~RunningPlane() {
    plane->Stop(0);
    if (worker.joinable()) worker.join();
  }
};

// Waits (up to ~2 s) until the plane has no open connection; the last count.
uint64_t WaitIdle(RunningPlane& p) {
  for (int i = 0; i < 200 && p.Counter(edgemesh::kActive) != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return p.Counter(edgemesh::kActive);
}

// Waits until the worker is inside its loop (tests that push pairs need a running worker).
void WaitRunning(RunningPlane& p) {
  for (int i = 0; i < 200 && p.Counter(edgemesh::kWorkersRunning) == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
}

// The common set-up: a running plane whose one route (127.0.0.1:<proxy port>, service slot `slot`)
// leads to one backend serving `handler`. The plane stops before the backend goes away.
struct PlaneToBackend {
  Backend backend;
  RunningPlane p;
  explicit PlaneToBackend(std::function<void(int)> handler = Echo, edgemesh::PlaneOptions o = {}, uint32_t slot = 0,
                          uint8_t flags = 0)
      : backend(std::move(handler)), p(o) {
    p.Routes({TestRoute{"127.0.0.1", p.port(), 0, flags, 0, slot, 0, {{"127.0.0.1", backend.port}}}});
    p.Start();
  }
};

// Writes all of `data` (blocking); false on error.
bool WriteAll(int fd, const std::string& data) {
  for (size_t off = 0; off < data.size();) {
    ssize_t w = write(fd, data.data() + off, data.size() - off);
    if (w <= 0) return false;
    off += static_cast<size_t>(w);
  }
  return true;
}

// Reads exactly n bytes (blocking); false on EOF or error first.
bool ReadExactly(int fd, size_t n, std::string* out) {
  out->resize(n);
  for (size_t off = 0; off < n;) {
    ssize_t r = read(fd, &(*out)[off], n - off);
    if (r <= 0) return false;
    off += static_cast<size_t>(r);
  }
  return true;
}

std::string Payload(size_t n) {
  std::string s(n, '\0');
  uint32_t x = 2463534242u;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x);
  }
  return s;
}

void EchoRoundTrip(bool use_splice) {
  edgemesh::PlaneOptions o;
  o.use_splice = use_splice;
  PlaneToBackend f(Echo, o, 5);
  RunningPlane& p = f.p;
  const std::string payload = Payload(8 << 20);
  int c = Connect(p.port());
  CHECK(c >= 0);
  std::thread writer([&] {
    WriteAll(c, payload);
    shutdown(c, SHUT_WR);  // half-close: the echo must still come back in full
  });
  std::string got;
  long r = ReadAll(c, &got);
  writer.join();
  close(c);
  CHECK_EQ(r, static_cast<long>(payload.size()));
  CHECK(got == payload);
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.Counter(edgemesh::kBytesUp), static_cast<uint64_t>(payload.size()));
  CHECK_EQ(p.Counter(edgemesh::kBytesDown), static_cast<uint64_t>(payload.size()));
  auto* svc = p.plane->service(5);
  CHECK_EQ(svc[edgemesh::kSvcConnections].load(), 1u);
  CHECK_EQ(svc[edgemesh::kSvcBytesDown].load(), static_cast<uint64_t>(payload.size()));
}

}  // namespace

TEST(plane_splices_8_mib_both_ways_byte_exact_with_half_close) { EchoRoundTrip(true); }

TEST(plane_read_write_mode_is_byte_exact_too) { EchoRoundTrip(false); }

TEST(plane_retries_a_refusing_endpoint) {
  Backend backend(Echo);
  uint16_t dead_port = 0;
  close(ListenLoopback(&dead_port));  // a port nobody listens on: connect is refused
  RunningPlane p;
  p.Routes({TestRoute{"127.0.0.1", p.port(), 0, 0, 0, 0, 0, {{"127.0.0.1", dead_port}, {"127.0.0.1", backend.port}}}});
  p.Start();
  for (int i = 0; i < 4; ++i) {
    std::string got;
    CHECK_EQ(ExchangeOnce(Connect, p.port(), "ping", &got), 4L);
  }
  CHECK(p.Counter(edgemesh::kConnectRefused) >= 2);
  CHECK_EQ(p.Counter(edgemesh::kUpstreamFailed), 0u);
}

TEST(plane_resets_clients_without_route_or_endpoint) {
  RunningPlane p;
  p.Routes({});
  p.Start();
  int c = Connect(p.port());
  CHECK(c >= 0);
  std::string got;
  long r = ReadAll(c, &got);
  close(c);
  CHECK(r == -ECONNRESET || r == 0);
  CHECK_EQ(p.Counter(edgemesh::kNoRoute), 1u);
}

TEST(plane_passes_a_backend_reset_to_the_client) {
  PlaneToBackend f([](int c) {
    std::string half = Payload(100000);
    (void)!write(c, half.data(), half.size());
    char b[16];
    (void)!read(c, b, sizeof(b));  // wait for the client's byte, so the reset lands mid-stream
    linger l{1, 0};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(c);
  });
  RunningPlane& p = f.p;
  int c = Connect(p.port());
  CHECK(c >= 0);
  CHECK_EQ(write(c, "x", 1), 1);
  std::string got;
  long r = ReadAll(c, &got);
  close(c);
  CHECK_EQ(r, static_cast<long>(-ECONNRESET));
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.Counter(edgemesh::kResets), 1u);
}

TEST(plane_drain_lets_open_connections_finish_then_forces_the_rest) {
  PlaneToBackend f;
  RunningPlane& p = f.p;
  int c = Connect(p.port());
  CHECK(c >= 0);
  CHECK_EQ(write(c, "a", 1), 1);
  char b;
  CHECK_EQ(read(c, &b, 1), 1);  // established and forwarding
  const auto t0 = std::chrono::steady_clock::now();
  p.plane->Stop(300);
  // Still served during the drain.
  CHECK_EQ(write(c, "b", 1), 1);
  CHECK_EQ(read(c, &b, 1), 1);
  CHECK_EQ(b, 'b');
  // New connections are refused once the listener is closed.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  int late = Connect(p.port());
  CHECK(late < 0);
  p.worker.join();
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(waited >= std::chrono::milliseconds(250));
  CHECK(waited < std::chrono::milliseconds(3000));
  CHECK_EQ(p.Counter(edgemesh::kDrainForced), 1u);
  std::string rest;
  CHECK_EQ(ReadAll(c, &rest), static_cast<long>(-ECONNRESET));
  close(c);
}

TEST(plane_drain_returns_early_when_connections_close) {
  PlaneToBackend f;
  RunningPlane& p = f.p;
  int c = Connect(p.port());
  CHECK(c >= 0);
  CHECK_EQ(write(c, "a", 1), 1);
  char b;
  CHECK_EQ(read(c, &b, 1), 1);
  const auto t0 = std::chrono::steady_clock::now();
  p.plane->Stop(10000);
  shutdown(c, SHUT_WR);
  std::string rest;
  CHECK_EQ(ReadAll(c, &rest), 0L);
  close(c);
  p.worker.join();
  CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(2000));
  CHECK_EQ(p.Counter(edgemesh::kDrainForced), 0u);
}

TEST(plane_session_affinity_sticks_to_one_endpoint) {
  std::atomic<int> hits_a{0}, hits_b{0};
  Backend a([&](int c) { ++hits_a; Echo(c); });
  Backend b([&](int c) { ++hits_b; Echo(c); });
  RunningPlane p;
  p.Routes({TestRoute{"127.0.0.1", p.port(), 0, edgemesh::kRouteFlagAffinity, 60, 0, 0,
                      {{"127.0.0.1", a.port}, {"127.0.0.1", b.port}}}});
  p.Start();
  for (int i = 0; i < 6; ++i) {
    std::string got;
    CHECK_EQ(ExchangeOnce(Connect, p.port(), "", &got), 0L);
  }
  CHECK((hits_a == 6 && hits_b == 0) || (hits_a == 0 && hits_b == 6));
}

TEST(plane_hands_l7_routes_to_the_consumer_with_their_original_destination) {
  RunningPlane p;
  std::atomic<int> notified{0};
  p.plane->SetHandoffNotify([&] { notified++; });
  p.Routes({TestRoute{"127.0.0.1", p.port(), 0, edgemesh::kRouteFlagHandoff, 0, 3, 0, {}}});
  p.Start();
  int c = Connect(p.port());
  CHECK(c >= 0);
  std::vector<edgemesh::Handoff> got;
  for (int i = 0; i < 200 && got.empty(); ++i) {
    got = p.plane->TakeHandoffs();
    if (got.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK_EQ(got.size(), 1u);
  CHECK(notified.load() >= 1);
  CHECK(got[0].addr == edgemesh::IpAddr::FromV4Be(htonl(INADDR_LOOPBACK)));
  CHECK_EQ(got[0].addr.ToString(), std::string("127.0.0.1"));
  CHECK_EQ(got[0].port, p.port());
  // The consumer owns a live connection: bytes written on it reach the client.
  CHECK_EQ(write(got[0].fd, "l7", 2), 2);
  close(got[0].fd);
  std::string echo;
  CHECK_EQ(ReadAll(c, &echo), 2L);
  CHECK(echo == "l7");
  close(c);
  CHECK_EQ(p.Counter(edgemesh::kHandedOff), 1u);
  CHECK_EQ(p.Counter(edgemesh::kActive), 0u);
  CHECK_EQ(p.plane->service(3)[edgemesh::kSvcConnections].load(), 1u);
  p.plane->SetHandoffNotify(nullptr);  // `notified` goes out of scope before the plane
}

TEST(plane_serves_hand_off_routes_as_l4_without_a_consumer) {
  PlaneToBackend f(Echo, {}, 0, edgemesh::kRouteFlagHandoff);
  RunningPlane& p = f.p;
  int c = Connect(p.port());
  CHECK(c >= 0);
  CHECK_EQ(write(c, "ping", 4), 4);
  shutdown(c, SHUT_WR);
  std::string got;
  CHECK_EQ(ReadAll(c, &got), 4L);
  close(c);
  CHECK_EQ(p.Counter(edgemesh::kHandedOff), 0u);
  CHECK_EQ(p.Counter(edgemesh::kEstablished), 1u);
}

namespace {

// A connected loopback pair: *a is the connecting side, *b the accepted side.
void LoopbackPair(int* a, int* b) {
  uint16_t port = 0;
  int l = ListenLoopback(&port);
  *a = Connect(port);
  *b = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  close(l);
}

size_t OpenFds() {
  size_t n = 0;
  for (int fd = 0; fd < 4096; ++fd) n += fcntl(fd, F_GETFD) >= 0 ? 1 : 0;
  return n;
}

// What TS does on the way back: both sides established elsewhere (here: plain socket pairs), some
// bytes already read by "TS", then the pair is given to the plane mid-stream.
void AdoptRoundTrip(bool use_splice) {
  edgemesh::PlaneOptions o;
  o.use_splice = use_splice;
  RunningPlane p(o);
  p.Routes({});
  p.Start();
  WaitRunning(p);
  const size_t fds_before = OpenFds();
  int client = -1, proxy_client = -1, backend = -1, proxy_upstream = -1;
  LoopbackPair(&client, &proxy_client);
  LoopbackPair(&proxy_upstream, &backend);
  // Bytes in flight on both sides before the hand-back stay in the sockets and are forwarded.
  CHECK_EQ(write(client, "early-up|", 9), 9);
  CHECK_EQ(write(backend, "early-down|", 11), 11);
  edgemesh::AdoptedPair pair;
  pair.client = dup(proxy_client);
  pair.upstream = dup(proxy_upstream);
  pair.to_upstream = "read-by-ts-up|";
  pair.to_client = "read-by-ts-down|";
  CHECK(p.plane->PushAdopted(std::move(pair)));
  // The caller's own fds close without a FIN: the plane holds the sockets.
  close(proxy_client);
  close(proxy_upstream);

  const std::string payload = Payload(4 << 20);
  std::thread echo([&] { Echo(backend); });
  std::thread writer([&] {
    WriteAll(client, payload);
    shutdown(client, SHUT_WR);
  });
  std::string got;
  long r = ReadAll(client, &got);
  writer.join();
  echo.join();
  close(client);
  // The backend sent "early-down|" before echoing; the echo returns what reached it, in order.
  const std::string want = std::string("read-by-ts-down|early-down|") + "read-by-ts-up|early-up|" + payload;
  CHECK_EQ(r, static_cast<long>(want.size()));
  CHECK(got == want);
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.Counter(edgemesh::kSplicedBack), 1u);
  CHECK_EQ(p.Counter(edgemesh::kBytesUp), static_cast<uint64_t>(14 + 9 + payload.size()));
  // Both dups closed, pipes back to the pool then trimmed after an idle second.
  for (int i = 0; i < 300 && OpenFds() != fds_before; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK_EQ(OpenFds(), fds_before);
}

}  // namespace

TEST(plane_adopts_an_established_pair_mid_stream_splice) { AdoptRoundTrip(true); }
TEST(plane_adopts_an_established_pair_mid_stream_read_write) { AdoptRoundTrip(false); }

TEST(plane_refuses_pairs_when_stopping) {
  RunningPlane p;
  p.Routes({});
  p.Start();
  WaitRunning(p);
  p.plane->Stop(0);
  p.worker.join();
  int a = -1, b = -1;
  LoopbackPair(&a, &b);
  edgemesh::AdoptedPair pair;
  pair.client = a;
  pair.upstream = b;
  CHECK(!p.plane->PushAdopted(std::move(pair)));
  CHECK(fcntl(a, F_GETFD) >= 0);  // still the caller's
  close(a);
  close(b);
}

// Small payloads go through one recv + send, bulk by splice; a direction can switch both ways.
// Round trips of many sizes on one connection, then a half-close the backend answers after.
TEST(plane_small_payloads_are_byte_exact_and_switch_to_splice_and_back) {
  PlaneToBackend f([](int c) {
    // Echo until the client's EOF, then one last message: it must travel after the half-close.
    char buf[65536];
    ssize_t n;
    while ((n = read(c, buf, sizeof(buf))) > 0) {
      if (!WriteAll(c, std::string(buf, static_cast<size_t>(n)))) break;
    }
    WriteAll(c, "bye after your FIN");
    shutdown(c, SHUT_WR);
    close(c);
  });
  RunningPlane& p = f.p;
  int c = Connect(p.port());
  CHECK(c >= 0);
  uint64_t total = 0;
  // 1 B .. 16 KiB (the small-payload limit and one past it), then bulk (4 MiB), then small again.
  for (size_t size : {1ul, 7ul, 1024ul, 4096ul, 16383ul, 16384ul, 16385ul, 4ul << 20, 100ul, 1ul}) {
    const std::string msg = Payload(size);
    std::string got;
    std::thread writer([&] { WriteAll(c, msg); });
    CHECK(ReadExactly(c, size, &got));
    writer.join();
    CHECK(got == msg);
    total += size;
  }
  for (int i = 0; i < 200; ++i) {  // request/response: the latency path
    const std::string msg = Payload(1 + static_cast<size_t>(i) * 37);
    std::string got;
    CHECK(WriteAll(c, msg));
    CHECK(ReadExactly(c, msg.size(), &got));
    CHECK(got == msg);
    total += msg.size();
  }
  shutdown(c, SHUT_WR);
  std::string tail;
  CHECK_EQ(ReadAll(c, &tail), 18L);
  CHECK(tail == "bye after your FIN");
  close(c);
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.Counter(edgemesh::kBytesUp), total);
  CHECK_EQ(p.Counter(edgemesh::kBytesDown), total + 18);
  CHECK_EQ(p.Counter(edgemesh::kResets), 0u);
}

// A reply and the backend's FIN arriving together (connect, 1-byte request, reply, close: the
// connection-rate workload) reach the client complete, for many connections in a row.
TEST(plane_short_connections_get_reply_then_eof) {
  PlaneToBackend f([](int c) {
    char b;
    if (read(c, &b, 1) == 1) WriteAll(c, std::string("reply:") + b);
    close(c);
  });
  RunningPlane& p = f.p;
  for (int i = 0; i < 200; ++i) {
    int c = Connect(p.port());
    CHECK(c >= 0);
    const char req = static_cast<char>('a' + i % 26);
    CHECK_EQ(write(c, &req, 1), 1);
    std::string got;
    CHECK_EQ(ReadAll(c, &got), 7L);
    CHECK(got == std::string("reply:") + req);
    close(c);
  }
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.Counter(edgemesh::kEstablished), 200u);
  CHECK_EQ(p.Counter(edgemesh::kBytesDown), 200u * 7);
  CHECK_EQ(p.Counter(edgemesh::kResets), 0u);
}

// A client that does not read while the backend sends many small writes: the plane's sends to it
// fail (EAGAIN) mid-payload, the rest is parked in a pipe, and everything arrives in order.
TEST(plane_parks_small_payloads_for_a_slow_reader_in_order) {
  const std::string payload = Payload(6 << 20);
  PlaneToBackend f([&payload](int c) {
    for (size_t off = 0; off < payload.size(); off += 1000) {
      if (!WriteAll(c, payload.substr(off, 1000))) break;
    }
    shutdown(c, SHUT_WR);
    char b[16];
    while (read(c, b, sizeof(b)) > 0) {
    }
    close(c);
  });
  RunningPlane& p = f.p;
  int c = Connect(p.port());
  CHECK(c >= 0);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let the client's buffers fill
  std::string got;
  CHECK_EQ(ReadAll(c, &got), static_cast<long>(payload.size()));
  CHECK(got == payload);
  close(c);
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.Counter(edgemesh::kBytesDown), static_cast<uint64_t>(payload.size()));
}

// Closing needs no EPOLL_CTL_DEL because events carry the connection's generation. A child forked
// while connections are open (the agent forks ip, ss, iptables-save ...) keeps their sockets, and
// so their epoll registrations, alive after the plane closed them: the late events they raise must
// be dropped, not pumped into the new connections that reuse the slots and fd numbers.
TEST(plane_drops_events_of_closed_sockets_a_forked_child_still_holds) {
  PlaneToBackend f;
  RunningPlane& p = f.p;
  std::vector<int> first;
  for (int i = 0; i < 8; ++i) {
    int c = Connect(p.port());
    CHECK(c >= 0);
    std::string got;
    CHECK(WriteAll(c, "x") && ReadExactly(c, 1, &got));
    first.push_back(c);
  }
  pid_t child = fork();
  if (child == 0) {
    timespec t{0, 400 * 1000 * 1000};
    nanosleep(&t, nullptr);  // holds a copy of every fd meanwhile
    _exit(0);
  }
  CHECK(child > 0);
  // The plane closes its sides of these (the child's copies keep the sockets and their
  // registrations); the backend's close then raises events on them.
  for (int c : first) {
    shutdown(c, SHUT_WR);
    std::string rest;
    CHECK_EQ(ReadAll(c, &rest), 0L);
    close(c);
  }
  // New connections reuse the slots (and likely the fd numbers) while those events arrive.
  for (int i = 0; i < 40; ++i) {
    int c = Connect(p.port());
    CHECK(c >= 0);
    const std::string msg = Payload(100 + static_cast<size_t>(i));
    std::string got;
    CHECK(WriteAll(c, msg) && ReadExactly(c, msg.size(), &got));
    CHECK(got == msg);
    shutdown(c, SHUT_WR);
    std::string rest;
    CHECK_EQ(ReadAll(c, &rest), 0L);
    close(c);
  }
  int status = 0;
  CHECK_EQ(waitpid(child, &status, 0), child);
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.Counter(edgemesh::kEstablished), 48u);
  CHECK_EQ(p.Counter(edgemesh::kResets), 0u);
}

// cpu_affinity: a SYN handled on CPU k lands in the accept queue of listener k (the worker pinned
// to CPU k), so each worker accepts what its own CPU's clients connect. A loopback connect runs
// the whole handshake on the connecting thread's CPU, so pinning the client picks the CPU.
TEST(plane_cpu_affinity_steers_each_connection_to_the_listener_of_its_cpu) {
  cpu_set_t allowed;
  CHECK(sched_getaffinity(0, sizeof(allowed), &allowed) == 0);
  std::vector<int> cpus;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) cpus.push_back(cpu);
  }
  if (cpus.size() < 2) return;  // one CPU: nothing to steer between
  edgemesh::PlaneOptions o;
  o.mark = 0;
  o.cpu_affinity = true;
  auto plane = std::make_shared<edgemesh::Plane>(o);
  const uint32_t n = static_cast<uint32_t>(cpus.size());
  CHECK(!plane->Listen("127.0.0.1", 0, n));
  for (uint32_t i = 0; i < n; ++i) CHECK_EQ(plane->WorkerCpu(i), cpus[i]);
  std::vector<int> listeners;
  for (uint32_t i = 0; i < n; ++i) listeners.push_back(plane->TakeListener(i));
  for (uint32_t round = 0; round < 3; ++round) {
    for (uint32_t i = 0; i < n; ++i) {
      int client = -1;
      std::thread t([&] {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpus[i], &one);
        if (sched_setaffinity(0, sizeof(one), &one) == 0) client = Connect(plane->bound_port());
      });
      t.join();
      CHECK(client >= 0);
      // Exactly listener i holds it.
      for (uint32_t j = 0; j < n; ++j) {
        int fd = accept4(listeners[j], nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        CHECK_EQ(fd >= 0, j == i);
        if (fd >= 0) close(fd);
      }
      close(client);
    }
  }
  for (int fd : listeners) close(fd);
}

TEST(plane_serves_ipv6_and_ipv4_listeners_on_one_port_per_worker) {
  // Without NAT the accepted socket's own address is the destination: [::1]:<proxy port> routes to
  // an IPv6 backend, 127.0.0.1:<proxy port> to an IPv4 one, through the same worker.
  uint16_t b6_port = 0;
  int b6 = ListenLoopback6(&b6_port);
  std::thread b6_thread([b6] {
    int c = accept(b6, nullptr, nullptr);
    if (c >= 0) Echo(c);
  });
  Backend b4(Echo);
  RunningPlane p;
  CHECK(!p.plane->Listen("::", 0, 1));  // joins the IPv4 group's port
  CHECK(p.plane->listening(AF_INET6));
  // A second IPv6 group, or one with another worker count, is refused.
  CHECK(p.plane->Listen("::1", 0, 1).has_value());
  p.Routes({TestRoute{"::1", p.port(), 2, 0, 0, 7, 0, {{"::1", b6_port}}},
            TestRoute{"127.0.0.1", p.port(), 0, 0, 0, 8, 0, {{"127.0.0.1", b4.port}}}});
  p.Start();
  const std::string payload = Payload(300 * 1024 + 5);
  int c6 = Connect6(p.port());
  int c4 = Connect(p.port());
  CHECK(c6 >= 0);
  CHECK(c4 >= 0);
  CHECK(WriteAll(c6, payload));
  CHECK(WriteAll(c4, "four"));
  shutdown(c6, SHUT_WR);
  shutdown(c4, SHUT_WR);
  std::string got6, got4;
  CHECK_EQ(ReadAll(c6, &got6), static_cast<long>(payload.size()));
  CHECK(got6 == payload);
  CHECK_EQ(ReadAll(c4, &got4), 4L);
  close(c6);
  close(c4);
  b6_thread.join();
  close(b6);
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.plane->service(7)[edgemesh::kSvcConnections].load(), 1u);
  CHECK_EQ(p.plane->service(7)[edgemesh::kSvcBytesUp].load(), static_cast<uint64_t>(payload.size()));
  CHECK_EQ(p.plane->service(8)[edgemesh::kSvcConnections].load(), 1u);
  CHECK_EQ(p.Counter(edgemesh::kAccepted), 2u);
}

TEST(plane_hands_off_ipv6_connections_with_their_ipv6_destination) {
  RunningPlane p;
  CHECK(!p.plane->Listen("::1", 0, 1));
  std::atomic<int> notified{0};
  p.plane->SetHandoffNotify([&] { notified++; });
  p.Routes({TestRoute{"::1", p.port(), 0, edgemesh::kRouteFlagHandoff, 0, 3, 0, {}}});
  p.Start();
  int c = Connect6(p.port());
  CHECK(c >= 0);
  std::vector<edgemesh::Handoff> got;
  for (int i = 0; i < 200 && got.empty(); ++i) {
    got = p.plane->TakeHandoffs();
    if (got.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK_EQ(got.size(), 1u);
  CHECK_EQ(got[0].addr.ToString(), std::string("::1"));
  CHECK_EQ(got[0].port, p.port());
  close(got[0].fd);
  close(c);
  p.plane->SetHandoffNotify(nullptr);
}

TEST(plane_session_affinity_sticks_ipv6_clients_to_one_ipv6_endpoint) {
  std::atomic<int> hits_a{0}, hits_b{0};
  Backend a([&](int c) { ++hits_a; Echo(c); }, true);
  Backend b([&](int c) { ++hits_b; Echo(c); }, true);
  RunningPlane p;
  CHECK(!p.plane->Listen("::1", 0, 1));
  p.Routes({TestRoute{"::1", p.port(), 0, edgemesh::kRouteFlagAffinity, 60, 0, 0, {{"::1", a.port}, {"::1", b.port}}}});
  p.Start();
  for (int i = 0; i < 6; ++i) {
    std::string got;
    CHECK_EQ(ExchangeOnce(Connect6, p.port(), "", &got), 0L);
  }
  CHECK((hits_a == 6 && hits_b == 0) || (hits_a == 0 && hits_b == 6));
  CHECK_EQ(p.plane->affinity().size(), 1u);
}

TEST(plane_adopts_an_ipv6_pair_and_counts_it_under_its_route) {
  RunningPlane p;
  p.Start();
  WaitRunning(p);
  // The client side was accepted on [::1]:port; without NAT that is its service address.
  uint16_t port = 0;
  int l = ListenLoopback6(&port);
  p.Routes({TestRoute{"::1", port, 0, 0, 0, 11, 0, {}}});
  int client = Connect6(port);
  int proxy_client = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  close(l);
  uint16_t bport = 0;
  int bl = ListenLoopback6(&bport);
  int proxy_upstream = Connect6(bport);
  int backend = accept4(bl, nullptr, nullptr, SOCK_CLOEXEC);
  close(bl);
  edgemesh::AdoptedPair pair;
  pair.client = proxy_client;
  pair.upstream = proxy_upstream;
  pair.to_upstream = "ts|";
  CHECK(p.plane->PushAdopted(std::move(pair)));
  CHECK(WriteAll(client, "six"));
  shutdown(client, SHUT_WR);
  std::string up;
  CHECK_EQ(ReadAll(backend, &up), 6L);
  CHECK(up == "ts|six");
  CHECK(WriteAll(backend, "back"));
  shutdown(backend, SHUT_WR);
  std::string down;
  CHECK_EQ(ReadAll(client, &down), 4L);
  close(client);
  close(backend);
  CHECK_EQ(WaitIdle(p), 0u);
  CHECK_EQ(p.plane->service(11)[edgemesh::kSvcBytesUp].load(), 6u);
  CHECK_EQ(p.plane->service(11)[edgemesh::kSvcBytesDown].load(), 4u);
}

TEST(plane_retries_a_refusing_ipv6_endpoint_and_resets_ipv6_clients_without_one) {
  Backend backend(Echo, true);
  uint16_t dead_port = 0;
  close(ListenLoopback6(&dead_port));  // nobody listens on [::1]:dead_port: refused
  RunningPlane p;
  CHECK(!p.plane->Listen("::1", 0, 1));
  p.Routes({TestRoute{"::1", p.port(), 0, 0, 0, 0, 0, {{"::1", dead_port}, {"::1", backend.port}}}});
  p.Start();
  for (int i = 0; i < 4; ++i) {
    std::string got;
    CHECK_EQ(ExchangeOnce(Connect6, p.port(), "ping", &got), 4L);
  }
  CHECK(p.Counter(edgemesh::kConnectRefused) >= 2);
  CHECK_EQ(p.Counter(edgemesh::kUpstreamFailed), 0u);
  // Only refusing endpoints: every attempt fails and the IPv6 client is reset.
  p.Routes({TestRoute{"::1", p.port(), 0, 0, 0, 0, 0, {{"::1", dead_port}}}});
  int c = Connect6(p.port());
  CHECK(c >= 0);
  std::string got;
  const long r = ReadAll(c, &got);
  close(c);
  CHECK(r == -ECONNRESET || r == 0);
  CHECK_EQ(p.Counter(edgemesh::kUpstreamFailed), 1u);
}
