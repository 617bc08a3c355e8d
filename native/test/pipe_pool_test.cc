// The worker's splice pipe pool: reuse, return, the idle cap, trimming and fd exhaustion.
#include <errno.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <vector>

#include "core/pipe_pool.h"
#include "test_harness.h"

namespace {
bool IsOpen(int fd) { return fcntl(fd, F_GETFD) >= 0; }
}  // namespace

TEST(pipe_pool_reuses_a_returned_pipe_instead_of_creating_one) {
  edgemesh::PipePool pool(1 << 20, 4);
  edgemesh::PipeFds a;
  CHECK(pool.Acquire(a));
  CHECK(a.r >= 0 && a.w >= 0);
  CHECK_EQ(fcntl(a.w, F_GETPIPE_SZ), 1 << 20);  // resized (root, or under pipe-max-size)
  const edgemesh::PipeFds first = a;
  pool.Release(a, true);
  CHECK_EQ(a.r, -1);  // the caller's handle is cleared
  CHECK_EQ(pool.idle(), 1u);
  edgemesh::PipeFds b;
  CHECK(pool.Acquire(b));
  CHECK_EQ(b.r, first.r);
  CHECK_EQ(b.w, first.w);
  CHECK_EQ(pool.created(), 1u);
  CHECK_EQ(pool.idle(), 0u);
  pool.Release(b, true);
}

TEST(pipe_pool_closes_a_pipe_returned_with_bytes_in_it) {
  edgemesh::PipePool pool(0, 4);
  edgemesh::PipeFds a;
  CHECK(pool.Acquire(a));
  const edgemesh::PipeFds fds = a;
  CHECK_EQ(write(a.w, "left", 4), 4);
  pool.Release(a, false);
  CHECK_EQ(pool.idle(), 0u);
  CHECK(!IsOpen(fds.r));
  CHECK(!IsOpen(fds.w));
}

TEST(pipe_pool_keeps_at_most_max_idle_and_trim_closes_them) {
  edgemesh::PipePool pool(0, 2);
  std::vector<edgemesh::PipeFds> held(3);
  for (auto& p : held) CHECK(pool.Acquire(p));
  CHECK_EQ(pool.created(), 3u);
  const edgemesh::PipeFds third = held[2];
  for (auto& p : held) pool.Release(p, true);
  CHECK_EQ(pool.idle(), 2u);
  CHECK(!IsOpen(third.r));  // over the cap: closed, not pooled
  edgemesh::PipeFds x;
  CHECK(pool.Acquire(x));
  const edgemesh::PipeFds kept = x;
  pool.Release(x, true);
  pool.Trim();
  CHECK_EQ(pool.idle(), 0u);
  CHECK(!IsOpen(kept.r));
  CHECK(!IsOpen(kept.w));
}

TEST(pipe_pool_acquire_fails_cleanly_when_out_of_fds_and_recovers) {
  edgemesh::PipePool pool(0, 4);
  rlimit old{};
  CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
  // Fill every fd below a low limit, so pipe2 meets EMFILE.
  rlimit low = old;
  low.rlim_cur = 256;
  CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
  std::vector<int> fillers;
  for (int fd; (fd = dup(0)) >= 0;) fillers.push_back(fd);
  edgemesh::PipeFds p;
  errno = 0;
  const bool got = pool.Acquire(p);
  const int err = errno;
  for (int fd : fillers) close(fd);
  CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
  CHECK(!got);
  CHECK_EQ(err, EMFILE);
  CHECK_EQ(p.r, -1);  // untouched
  CHECK(pool.Acquire(p));  // fds free again: works
  pool.Release(p, true);
}
