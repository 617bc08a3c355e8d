// Pump lifecycle (issue 12): the idle timeout closes idle pumps and spares busy ones, Abort and
// AbortAll reset pumps mid-transfer and free their fds, an abort racing a pump that ends by itself
// reports each pump exactly once, and Progress moves while bytes flow.
#include <dirent.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_harness.h"
#include "tunnel/pump_engine.h"

using namespace edgemesh::tunnel;
using Clock = std::chrono::steady_clock;

namespace {

int OpenFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (dirent* e = readdir(d))
    if (e->d_name[0] != '.') ++n;
  closedir(d);
  return n - 1;  // the DIR's own fd
}

struct Log {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<PumpDone> done;
  std::map<uint64_t, int> per_id;
  void Add(PumpDone&& d) {
    std::lock_guard<std::mutex> lock(mu);
    per_id[d.id]++;
    done.push_back(std::move(d));
    cv.notify_all();
  }
  bool WaitFor(size_t n, int ms = 5000) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return done.size() >= n; });
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mu);
    return done.size();
  }
  PumpDone Of(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& d : done)
      if (d.id == id) return d;
    return PumpDone{};
  }
};

// True when `fd` reads EOF or an error within `ms` (the pump closed its end).
bool PeerClosed(int fd, int ms) {
  char buf[65536];
  auto until = Clock::now() + std::chrono::milliseconds(ms);
  while (Clock::now() < until) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n <= 0) return true;
  }
  return false;
}

// Reads whatever is there without blocking (the wire side of a lone sealed pump).
void Drain(int fd) {
  char buf[65536];
  while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) {
  }
}

struct Pair {
  int fd[2] = {-1, -1};
  Pair() { socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fd); }
};

int64_t MsSince(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

}  // namespace

TEST(pump_idle_timeout_closes_idle_pump_and_spares_busy_one) {
  Log log;
  PumpEngine engine(PumpEngineOptions{}, [&](PumpDone&& d) { log.Add(std::move(d)); });
  CHECK(!engine.Start());
  Pair idle_app, idle_wire, busy_app, busy_wire;
  PumpKeys k{};
  std::optional<edgemesh::SyscallError> err;
  auto t0 = Clock::now();
  uint64_t idle = engine.AddSealed(idle_app.fd[1], idle_wire.fd[1], k, {}, {}, &err, 200);
  uint64_t busy = engine.AddSealed(busy_app.fd[1], busy_wire.fd[1], k, {}, {}, &err, 200);
  CHECK(idle > 0 && busy > 0);
  // The busy pump gets a few bytes every 40 ms for 600 ms: three timeouts' worth.
  auto last_write = t0;
  while (MsSince(t0) < 600) {
    CHECK(write(busy_app.fd[0], "x", 1) == 1);
    last_write = Clock::now();
    Drain(busy_wire.fd[0]);
    std::this_thread::sleep_for(std::chrono::milliseconds(40));
  }
  CHECK(log.WaitFor(1, 100));
  PumpDone d = log.Of(idle);
  CHECK_EQ(d.id, idle);
  CHECK(d.cause == PumpCause::kIdle);
  CHECK(d.error.find("idle for 200 ms") != std::string::npos);
  CHECK_EQ(log.Count(), size_t{1});  // the busy one is still running
  CHECK(PeerClosed(idle_app.fd[0], 500) && PeerClosed(idle_wire.fd[0], 500));
  // Once quiet, the busy one times out too, no earlier than its timeout.
  CHECK(log.WaitFor(2, 3000));
  CHECK(MsSince(last_write) >= 190);  // a coarse-clock tick of slack
  CHECK(log.Of(busy).cause == PumpCause::kIdle);
  CHECK(log.Of(busy).a_to_b >= 10);
  CHECK_EQ(engine.Counter(kIdleCloses), uint64_t{2});
  CHECK_EQ(engine.Counter(kPumpsFailed), uint64_t{0});
  for (Pair* p : {&idle_app, &idle_wire, &busy_app, &busy_wire}) close(p->fd[0]);
}

TEST(pump_idle_timeout_applies_to_splice_and_zero_means_never) {
  Log log;
  PumpEngineOptions opts;
  opts.threads = 2;
  PumpEngine engine(opts, [&](PumpDone&& d) { log.Add(std::move(d)); });
  CHECK(!engine.Start());
  Pair a, b, c, e;
  std::optional<edgemesh::SyscallError> err;
  auto t0 = Clock::now();
  uint64_t timed = engine.AddSplice(a.fd[1], b.fd[1], {}, {}, &err, 100);
  uint64_t forever = engine.AddSplice(c.fd[1], e.fd[1], {}, {}, &err, 0);
  CHECK(log.WaitFor(1, 2000));
  CHECK(MsSince(t0) >= 90);
  CHECK(log.Of(timed).cause == PumpCause::kIdle);
  CHECK(PeerClosed(a.fd[0], 500) && PeerClosed(b.fd[0], 500));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  CHECK_EQ(log.Count(), size_t{1});
  // The untimed one still carries bytes, then ends normally.
  CHECK(write(c.fd[0], "hi", 2) == 2);
  char buf[4];
  pollfd p{e.fd[0], POLLIN, 0};
  CHECK(poll(&p, 1, 2000) == 1);
  CHECK(read(e.fd[0], buf, sizeof(buf)) == 2);
  shutdown(c.fd[0], SHUT_WR);
  shutdown(e.fd[0], SHUT_WR);
  CHECK(log.WaitFor(2, 2000));
  CHECK(log.Of(forever).cause == PumpCause::kNone && log.Of(forever).error.empty());
  for (Pair* x : {&a, &b, &c, &e}) close(x->fd[0]);
}

TEST(pump_abort_mid_transfer_resets_both_sides_and_frees_fds) {
  int before = OpenFds();
  {
    Log log;
    PumpEngine engine(PumpEngineOptions{}, [&](PumpDone&& d) { log.Add(std::move(d)); });
    CHECK(!engine.Start());
    int engine_fds = OpenFds();
    Pair app, wire;
    PumpKeys k{};
    std::optional<edgemesh::SyscallError> err;
    uint64_t id = engine.AddSealed(app.fd[1], wire.fd[1], k, {}, {}, &err, 0);
    CHECK(id > 0);
    std::atomic<bool> stop{false};
    std::thread writer([&] {
      std::string chunk(65536, 'w');
      while (!stop.load()) {
        if (send(app.fd[0], chunk.data(), chunk.size(), MSG_NOSIGNAL) < 0) break;
      }
    });
    std::thread reader([&] {
      char buf[65536];
      while (!stop.load()) {
        if (read(wire.fd[0], buf, sizeof(buf)) <= 0) break;
      }
    });
    // Mid-transfer: progress is live before the abort.
    uint64_t a = 0, b = 0;
    auto t0 = Clock::now();
    while (MsSince(t0) < 3000 && (!engine.Progress(id, &a, &b) || a < (1u << 20)))
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    CHECK(a >= (1u << 20));
    engine.Abort(id);
    CHECK(log.WaitFor(1));
    stop.store(true);
    writer.join();  // the reset ends its send (EPIPE/ECONNRESET)
    reader.join();  // and the wire reader's read (EOF/ECONNRESET)
    PumpDone d = log.Of(id);
    CHECK(d.cause == PumpCause::kAborted);
    CHECK(d.a_to_b >= a);
    // The final counts stay readable until the done report was delivered (Forget).
    CHECK(engine.Progress(id, &a, &b));
    CHECK_EQ(a, d.a_to_b);
    engine.Forget(id);
    CHECK(!engine.Progress(id, &a, &b));
    CHECK_EQ(engine.Counter(kAborted), uint64_t{1});
    close(app.fd[0]);
    close(wire.fd[0]);
    CHECK_EQ(OpenFds(), engine_fds);  // the pump's fds (its socket ends) are gone
    engine.Abort(id);  // late abort of an ended pump: nothing
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK_EQ(log.Count(), size_t{1});
  }
  CHECK_EQ(OpenFds(), before);
}

TEST(pump_abort_racing_self_end_reports_each_pump_once) {
  int before = OpenFds();
  {
    Log log;
    PumpEngineOptions opts;
    opts.threads = 2;
    PumpEngine engine(opts, [&](PumpDone&& d) { log.Add(std::move(d)); });
    CHECK(!engine.Start());
    constexpr int kPumps = 300;
    std::vector<uint64_t> ids;
    std::vector<int> outer;
    for (int i = 0; i < kPumps; ++i) {
      Pair x, y;
      std::optional<edgemesh::SyscallError> err;
      uint64_t id = engine.AddSplice(x.fd[1], y.fd[1], {'h'}, {}, &err, i % 3 == 0 ? 1 : 0);
      CHECK(id > 0);
      ids.push_back(id);
      outer.push_back(x.fd[0]);
      outer.push_back(y.fd[0]);
    }
    // Each pump ends by itself (both outer ends shut down) while an abort for it is on its way.
    std::thread ender([&] {
      for (int i = 0; i < kPumps; ++i) {
        shutdown(outer[2 * i], SHUT_WR);
        shutdown(outer[2 * i + 1], SHUT_WR);
      }
    });
    for (int i = kPumps - 1; i >= 0; --i) engine.Abort(ids[i]);
    ender.join();
    CHECK(log.WaitFor(kPumps, 10000));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    CHECK_EQ(log.Count(), size_t{kPumps});
    for (uint64_t id : ids) CHECK_EQ(log.per_id[id], 1);
    uint64_t ended = engine.Counter(kPumpsFinished) + engine.Counter(kPumpsFailed) + engine.Counter(kAborted) +
                     engine.Counter(kIdleCloses);
    CHECK_EQ(ended, uint64_t{kPumps});
    CHECK(engine.Counter(kAborted) > 0);
    for (int fd : outer) close(fd);
  }
  CHECK_EQ(OpenFds(), before);
}

TEST(pump_abort_all_takes_pumps_started_before_it_only) {
  Log log;
  PumpEngineOptions opts;
  opts.threads = 2;
  PumpEngine engine(opts, [&](PumpDone&& d) { log.Add(std::move(d)); });
  CHECK(!engine.Start());
  std::vector<Pair> pairs(8);
  std::optional<edgemesh::SyscallError> err;
  std::vector<uint64_t> old_ids;
  for (int i = 0; i < 3; ++i) old_ids.push_back(engine.AddSplice(pairs[2 * i].fd[1], pairs[2 * i + 1].fd[1], {}, {}, &err));
  engine.AbortAll();
  uint64_t later = engine.AddSplice(pairs[6].fd[1], pairs[7].fd[1], {}, {}, &err);
  CHECK(log.WaitFor(3));
  for (uint64_t id : old_ids) CHECK(log.Of(id).cause == PumpCause::kAborted);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK_EQ(log.Count(), size_t{3});
  uint64_t a = 0, b = 0;
  CHECK(engine.Progress(later, &a, &b));
  shutdown(pairs[6].fd[0], SHUT_WR);
  shutdown(pairs[7].fd[0], SHUT_WR);
  CHECK(log.WaitFor(4));
  CHECK(log.Of(later).cause == PumpCause::kNone);
  for (Pair& p : pairs) close(p.fd[0]);
}
