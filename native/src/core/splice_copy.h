// Zero-copy transfer of a bounded number of bytes from one fd to another through a pipe.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>

#include "core/errno_error.h"

namespace edgemesh {

// Result of SpliceCopy: bytes moved, or the syscall that failed.
struct SpliceCopyResult {
  int64_t bytes = 0;
  std::optional<SyscallError> error;
};

// Moves up to max_bytes from in_fd to out_fd with splice(2) through a private pipe whose capacity is
// raised to pipe_size (F_SETPIPE_SZ; 1 MiB measured best on this project's machines). Blocking and
// non-blocking fds both work (EAGAIN waits in poll, 10 s limit); stops early at EOF on in_fd. The pipe is always closed before returning.
SpliceCopyResult SpliceCopy(int in_fd, int out_fd, int64_t max_bytes, size_t pipe_size);

}  // namespace edgemesh
