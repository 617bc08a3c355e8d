#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "core/splice_copy.h"
#include "test_harness.h"

TEST(splice_copy_moves_exact_bytes_between_socketpairs) {
  int a[2], b[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0);
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0);
  std::string payload(100000, 'x');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>('a' + i % 26);
  CHECK(write(a[0], payload.data(), payload.size()) == static_cast<ssize_t>(payload.size()));
  shutdown(a[0], SHUT_WR);
  auto r = edgemesh::SpliceCopy(a[1], b[0], 1 << 30, 1 << 20);
  CHECK(!r.error);
  CHECK_EQ(r.bytes, static_cast<int64_t>(payload.size()));
  shutdown(b[0], SHUT_WR);
  std::string got;
  char buf[65536];
  ssize_t n;
  while ((n = read(b[1], buf, sizeof(buf))) > 0) got.append(buf, static_cast<size_t>(n));
  CHECK(got == payload);
  for (int fd : {a[0], a[1], b[0], b[1]}) close(fd);
}

TEST(splice_copy_reports_bad_fd_with_syscall_name) {
  auto r = edgemesh::SpliceCopy(-1, -1, 10, 0);
  CHECK(r.error.has_value());
  CHECK_EQ(r.error->syscall, std::string("splice"));
}
