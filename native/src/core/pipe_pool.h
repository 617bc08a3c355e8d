// A worker's pool of splice pipes: connections take a pipe only while bytes are in flight and give
// it back empty, so pipe2 + F_SETPIPE_SZ are paid once per pool slot, not once per connection.
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace edgemesh {

// One pipe: read end, write end (-1 = none).
struct PipeFds {
  int r = -1;
  int w = -1;
};

// Not thread-safe: one pool per worker thread.
class PipePool {
 public:
  // pipe_size: F_SETPIPE_SZ for new pipes (0 = kernel default); max_idle: pipes kept for reuse.
  PipePool(uint32_t pipe_size, size_t max_idle) : pipe_size_(pipe_size), max_idle_(max_idle) {}
  ~PipePool() { Trim(); }
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // A pooled pipe, else a new one; false (errno set, out untouched) when pipe2 fails (EMFILE ...).
  bool Acquire(PipeFds& out);
  // Takes the pipe back; `empty` = nothing left in it (only empty pipes are reused: a pipe with
  // bytes would leak them into the next connection). Closed when not reusable or the pool is full.
  void Release(PipeFds& p, bool empty);
  // Closes every idle pipe (an idle worker gives its fds back).
  void Trim();
  size_t idle() const { return idle_.size(); }
  // Pipes created so far (pipe2 calls that succeeded).
  uint64_t created() const { return created_; }

 private:
  const uint32_t pipe_size_;
  const size_t max_idle_;
  std::vector<PipeFds> idle_;
  uint64_t created_ = 0;
};

}  // namespace edgemesh
