#include "core/splice_copy.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

namespace edgemesh {

namespace {
// Non-blocking fds (Node's sockets are) answer EAGAIN; wait for readiness instead of failing.
// Returns false (errno set) on timeout or poll failure.
bool WaitReady(int fd, short events) {
  pollfd p{fd, events, 0};
  int r = poll(&p, 1, 10000);
  if (r == 0) errno = ETIMEDOUT;
  return r > 0;
}
}  // namespace

SpliceCopyResult SpliceCopy(int in_fd, int out_fd, int64_t max_bytes, size_t pipe_size) {
  SpliceCopyResult result;
  int pipe_fds[2];
  if (pipe2(pipe_fds, O_CLOEXEC) != 0) {
    result.error = SyscallError{"pipe2", errno};
    return result;
  }
  // A failed resize is not fatal: the default 64 KiB pipe still works, only slower.
  if (pipe_size > 0) fcntl(pipe_fds[1], F_SETPIPE_SZ, static_cast<int>(pipe_size));

  while (result.bytes < max_bytes) {
    const size_t want = static_cast<size_t>(max_bytes - result.bytes);
    ssize_t in = splice(in_fd, nullptr, pipe_fds[1], nullptr, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (in < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN && WaitReady(in_fd, POLLIN)) continue;
      result.error = SyscallError{"splice", errno};
      break;
    }
    if (in == 0) break;  // EOF on the source
    ssize_t left = in;
    while (left > 0) {
      ssize_t out = splice(pipe_fds[0], nullptr, out_fd, nullptr, static_cast<size_t>(left), SPLICE_F_MOVE);
      if (out < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN && WaitReady(out_fd, POLLOUT)) continue;
        result.error = SyscallError{"splice", errno};
        break;
      }
      left -= out;
    }
    if (result.error) break;
    result.bytes += in;
  }
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  return result;
}

}  // namespace edgemesh
