#include "tunnel/pump_engine.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>

namespace edgemesh::tunnel {

namespace {

constexpr int kPlain = 0;   // sealed pump: fd 0 is the plain socket, fd 1 the sealed one
constexpr int kSealed = 1;  // splice pump: fd 0 is a, fd 1 is b
// Progress-loop rounds per wake-up before a busy pump yields to the others on its thread.
constexpr int kRoundsPerTurn = 32;
// Idle record buffers a worker keeps for reuse (each 4 records: 256 KiB).
constexpr size_t kPooledBuffers = 16;

// Abortive close: RST instead of FIN, so the peer cannot take a cut stream for a complete one.
void ResetClose(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  close(fd);
}

std::string Describe(const char* what, int err) { return std::string(what) + ": " + std::strerror(err); }

// Milliseconds on the coarse monotonic clock (a vDSO read, tick resolution): read once per
// epoll wake-up; the idle timeout needs no better.
int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// How often a worker looks for idle pumps: a quarter of the shortest idle timeout, so a pump is
// closed between 1x and 1.25x its timeout (plus a tick), and never more than once a second.
int64_t ScanPeriodMs(uint32_t idle_ms) { return std::clamp<int64_t>(idle_ms / 4, 5, 1000); }

}  // namespace

// Record buffers kept by one worker thread for its pumps: an idle pump hands its buffers back, so
// 10,000 idle streams cost no buffer memory, and a busy one does not malloc per wake-up.
class BufferPool {
 public:
  BufferPool(size_t size, size_t max_cached) : size_(size), max_cached_(max_cached) {}
  size_t size() const { return size_; }
  std::unique_ptr<uint8_t[]> Take() {
    if (free_.empty()) return std::unique_ptr<uint8_t[]>(new uint8_t[size_]);  // no zeroing: always written first
    auto b = std::move(free_.back());
    free_.pop_back();
    return b;
  }
  void Give(std::unique_ptr<uint8_t[]> b, size_t size) {
    if (b && size == size_ && free_.size() < max_cached_) free_.push_back(std::move(b));
  }

 private:
  size_t size_;
  size_t max_cached_;
  std::vector<std::unique_ptr<uint8_t[]>> free_;
};

// One pump: two fds owned by one worker thread, driven by a progress loop after each epoll edge.
class Pump {
 public:
  Pump(PumpEngine& engine, uint64_t id, int fd0, int fd1) : engine_(engine), id_(id) {
    fd_[0] = fd0;
    fd_[1] = fd1;
  }
  virtual ~Pump() {
    // Only reached on engine stop with the pump still open, or after Finish/Fail closed the fds.
    Detach();
    ResetClose(fd_[0]);
    ResetClose(fd_[1]);
  }
  // Runs until no direction can progress or the turn is used up; true: wants another turn. A turn
  // that moved anything stamps `now_ms` (idle timeout) and publishes the byte counts (live metrics):
  // once per turn, nothing per byte.
  bool Run(int64_t now_ms) {
    bool moved = false;
    bool more = Turn(&moved);
    if (moved) {
      last_active_ms_ = now_ms;
      Publish();
    }
    return more;
  }
  // Idle timeout (0: none) and the shared progress cell, set before the pump is handed to a worker.
  void Lifecycle(uint32_t idle_ms, std::shared_ptr<PumpProgress> progress) {
    idle_ms_ = idle_ms;
    progress_ = std::move(progress);
  }
  uint32_t idle_ms() const { return idle_ms_; }
  int64_t last_active_ms() const { return last_active_ms_; }
  void Stamp(int64_t now_ms) { last_active_ms_ = now_ms; }
  // Resets both sockets and reports the pump as closed by us (idle timeout or abort).
  void Close(PumpCause cause, std::string why) {
    if (done_) return;
    uint64_t a = 0, b = 0;
    Totals(&a, &b);
    Fail(a, b, std::move(why), cause);
  }
  // Records an epoll edge for fd `side`.
  void Mark(int side, uint32_t events) {
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) rd_[side] = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) wr_[side] = true;
  }
  bool done() const { return done_; }
  // Closes our dups without touching the socket (no SO_LINGER): used when the pump never started,
  // so the caller's own fds (and the TS twin that takes over) keep a normal close.
  void Abandon() {
    for (int& fd : fd_) {
      if (fd >= 0) close(fd);
      fd = -1;
    }
  }
  // The epoll set the fds are in (DEL'd before closing: a JS dup may still hold the file open),
  // and the worker's buffer pool.
  void Watch(int epfd, BufferPool* pool) {
    epfd_ = epfd;
    pool_ = pool;
  }
  int fd(int side) const { return fd_[side]; }
  uint64_t id() const { return id_; }

 private:
  bool Turn(bool* moved) {
    for (int round = 0; round < kRoundsPerTurn; ++round) {
      if (done_) return false;
      if (!Step()) {
        if (!done_) Idle();
        return false;
      }
      *moved = true;
    }
    return !done_;
  }
  void Publish() {
    if (!progress_) return;
    uint64_t a = 0, b = 0;
    Totals(&a, &b);
    progress_->a_to_b.store(a, std::memory_order_relaxed);
    progress_->b_to_a.store(b, std::memory_order_relaxed);
  }

 public:
  // epoll data for fd `side`: the pump pointer with the side in its low bit.
  uint64_t Tag(int side) { return reinterpret_cast<uintptr_t>(this) | static_cast<uintptr_t>(side); }

 protected:
  // One pass over both directions; true when anything moved.
  virtual bool Step() = 0;
  // Bytes moved so far each way (the PumpDone a_to_b / b_to_a).
  virtual void Totals(uint64_t* a_to_b, uint64_t* b_to_a) const = 0;
  // Waiting for epoll: give back what an idle pump does not need.
  virtual void Idle() {}

  // Leaves the epoll set: a closed fd leaves it by itself only when no other fd (JS's, until it
  // is destroyed) refers to the same socket, and a late event would name a deleted pump.
  void Detach() {
    if (epfd_ < 0) return;
    for (int fd : fd_)
      if (fd >= 0) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
    epfd_ = -1;
  }
  // Both directions ended cleanly: close with FINs already sent, report.
  void Finish(uint64_t a_to_b, uint64_t b_to_a) {
    Detach();
    close(fd_[0]);
    close(fd_[1]);
    fd_[0] = fd_[1] = -1;
    done_ = true;
    engine_.Add(kPumpsFinished, 1);
    engine_.Report(PumpDone{id_, a_to_b, b_to_a, {}});
  }
  // Reset both sockets and report `why` (counted as failed, idle close or abort by `cause`).
  void Fail(uint64_t a_to_b, uint64_t b_to_a, std::string why, PumpCause cause = PumpCause::kNone) {
    Detach();
    ResetClose(fd_[0]);
    ResetClose(fd_[1]);
    fd_[0] = fd_[1] = -1;
    done_ = true;
    engine_.Add(cause == PumpCause::kIdle ? kIdleCloses : cause == PumpCause::kAborted ? kAborted : kPumpsFailed, 1);
    engine_.Report(PumpDone{id_, a_to_b, b_to_a, std::move(why), cause});
  }

  PumpEngine& engine_;
  uint64_t id_;
  int fd_[2];
  uint32_t idle_ms_ = 0;
  int64_t last_active_ms_ = 0;
  std::shared_ptr<PumpProgress> progress_;
  int epfd_ = -1;
  BufferPool* pool_ = nullptr;
  // "May be readable/writable": set by epoll edges; cleared by EAGAIN, and for writes also by a
  // short write (edge-triggered: the next edge comes when room frees up).
  bool rd_[2] = {true, true};
  bool wr_[2] = {true, true};
  bool done_ = false;
};

namespace {

// plain <-> sealed records.
class SealedPump final : public Pump {
 public:
  SealedPump(PumpEngine& engine, uint64_t id, int plain_fd, int sealed_fd) : Pump(engine, id, plain_fd, sealed_fd) {}

  bool Init(const PumpKeys& keys, const std::vector<uint8_t>& plain_head, const std::vector<uint8_t>& sealed_head) {
    if (!sealer_.Init(keys.tx_key, keys.tx_iv) || !opener_.Init(keys.rx_key, keys.rx_iv)) return false;
    size_t batch = std::max<size_t>(2, engine_.options().batch_records);
    size_t head_records = (plain_head.size() + kMaxPlaintext - 1) / kMaxPlaintext;
    up_cap_ = (std::max(batch, head_records + 1)) * kMaxRecord;
    if (!plain_head.empty()) up_.reset(new uint8_t[up_cap_]);
    for (size_t off = 0; off < plain_head.size(); off += kMaxPlaintext) {
      size_t n = std::min(kMaxPlaintext, plain_head.size() - off);
      std::memcpy(up_.get() + up_end_ + kHeaderBytes, plain_head.data() + off, n);
      if (!SealOne(n)) return false;
    }
    plain_to_sealed_ = plain_head.size();
    engine_.Add(kPlainToSealedBytes, plain_head.size());
    // The sealed head must fit with room for one more whole record after it.
    down_cap_ = std::max(batch * kMaxRecord, sealed_head.size() + kMaxRecord);
    if (!sealed_head.empty()) {
      down_.reset(new uint8_t[down_cap_]);
      std::memcpy(down_.get(), sealed_head.data(), sealed_head.size());
    }
    down_end_ = sealed_head.size();
    parse_pending_ = !sealed_head.empty();
    return true;
  }

 protected:
  bool Step() override {
    bool moved = false;
    if (parse_pending_) {
      parse_pending_ = false;
      if (!Parse()) return false;
      moved = true;
    }
    moved |= ReadPlain();
    if (done_) return false;
    moved |= WriteSealed();
    if (done_) return false;
    moved |= ReadSealed();
    if (done_) return false;
    moved |= WritePlain();
    if (done_) return false;
    if (up_shut_ && down_shut_) {
      Finish(plain_to_sealed_, sealed_to_plain_);
      return false;
    }
    return moved;
  }

 private:
  void Totals(uint64_t* a_to_b, uint64_t* b_to_a) const override {
    *a_to_b = plain_to_sealed_;
    *b_to_a = sealed_to_plain_;
  }

  void Idle() override {
    if (up_ && up_start_ == up_end_) {
      pool_->Give(std::move(up_), up_cap_);
      up_start_ = up_end_ = 0;
    }
    if (down_ && segs_.empty() && parse_off_ == down_end_) {
      pool_->Give(std::move(down_), down_cap_);
      parse_off_ = down_end_ = 0;
    }
  }

  // This direction's buffer, from the worker's pool when it has the standard size.
  std::unique_ptr<uint8_t[]> Buffer(size_t cap) {
    if (cap == pool_->size()) return pool_->Take();
    return std::unique_ptr<uint8_t[]>(new uint8_t[cap]);
  }

  bool SealOne(size_t n) {
    size_t rec = sealer_.SealInPlace(up_.get() + up_end_, n);
    if (rec == 0) return false;
    up_end_ += rec;
    engine_.Add(kRecordsSealed, 1);
    return true;
  }

  void FailPlain(const char* what, int err) {
    Fail(plain_to_sealed_, sealed_to_plain_, Describe(what, err));
  }

  // plain -> up buffer: one readv fills several record slots, each sealed in place.
  bool ReadPlain() {
    if (plain_eof_ || !rd_[kPlain]) return false;
    if (!up_) up_ = Buffer(up_cap_);
    if (up_cap_ - up_end_ < kMaxRecord && up_start_ > 0) {
      std::memmove(up_.get(), up_.get() + up_start_, up_end_ - up_start_);
      up_end_ -= up_start_;
      up_start_ = 0;
    }
    size_t slots = std::min<size_t>((up_cap_ - up_end_) / kMaxRecord, 8);
    if (slots == 0) return false;  // backpressure: the sealed socket has not drained the batch
    iovec iov[8];
    for (size_t i = 0; i < slots; ++i) {
      iov[i].iov_base = up_.get() + up_end_ + i * kMaxRecord + kHeaderBytes;
      iov[i].iov_len = kMaxPlaintext;
    }
    ssize_t n = readv(fd_[kPlain], iov, static_cast<int>(slots));
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        rd_[kPlain] = false;
        return false;
      }
      if (errno == EINTR) return true;
      FailPlain("plain side read", errno);
      return false;
    }
    if (n == 0) {
      // The plain peer half-closed: the empty record tells the far end to do the same.
      plain_eof_ = true;
      if (!SealOne(0)) FailPlain("seal", EIO);
      return true;
    }
    // A short read does not prove the socket drained: a FIN queued behind the data raises no new
    // edge, so only EAGAIN clears the flag (else a half-close could be missed for good).
    size_t got = static_cast<size_t>(n);
    plain_to_sealed_ += got;
    engine_.Add(kPlainToSealedBytes, got);
    while (got > 0) {
      size_t m = std::min(got, kMaxPlaintext);
      // Slot i starts at up_end_ because every earlier slot was a full record of kMaxRecord.
      if (!SealOne(m)) {
        FailPlain("seal", EIO);
        return false;
      }
      got -= m;
    }
    return true;
  }

  bool WriteSealed() {
    if (up_end_ == up_start_) {
      if (plain_eof_ && !up_shut_) {
        // Every record, the end record included, is in the kernel: FIN after it.
        shutdown(fd_[kSealed], SHUT_WR);
        up_shut_ = true;
        return true;
      }
      return false;
    }
    if (!wr_[kSealed]) return false;
    size_t want = up_end_ - up_start_;
    ssize_t n = send(fd_[kSealed], up_.get() + up_start_, want, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wr_[kSealed] = false;
        return false;
      }
      if (errno == EINTR) return true;
      FailPlain("sealed side write", errno);
      return false;
    }
    up_start_ += static_cast<size_t>(n);
    if (static_cast<size_t>(n) < want) wr_[kSealed] = false;
    if (up_start_ == up_end_) up_start_ = up_end_ = 0;
    return true;
  }

  // sealed -> down buffer, then Parse opens every whole record in place.
  bool ReadSealed() {
    if (!rd_[kSealed] || sealed_eof_) return false;
    if (!down_) down_ = Buffer(down_cap_);
    if (segs_.empty() && parse_off_ > 0 && down_cap_ - down_end_ < kMaxRecord) {
      // Only the unparsed tail (less than one record) is live: move it to the front.
      std::memmove(down_.get(), down_.get() + parse_off_, down_end_ - parse_off_);
      down_end_ -= parse_off_;
      parse_off_ = 0;
    }
    size_t room = down_cap_ - down_end_;
    if (room == 0) return false;  // backpressure: the plain socket has not taken the plaintext
    ssize_t n = recv(fd_[kSealed], down_.get() + down_end_, room, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        rd_[kSealed] = false;
        return false;
      }
      if (errno == EINTR) return true;
      FailPlain("sealed side read", errno);
      return false;
    }
    if (n == 0) {
      sealed_eof_ = true;
      if (!ended_) {
        engine_.Add(kTruncations, 1);
        Fail(plain_to_sealed_, sealed_to_plain_,
             down_end_ > parse_off_ ? "sealed stream: EOF inside a record"
                                    : "sealed stream: EOF without an end-of-stream record");
        return false;
      }
      return true;
    }
    if (ended_) {
      engine_.Add(kAfterEndErrors, 1);
      Fail(plain_to_sealed_, sealed_to_plain_, "sealed stream: bytes after the end-of-stream record");
      return false;
    }
    down_end_ += static_cast<size_t>(n);
    return Parse();
  }

  // Opens every whole record between parse_off_ and down_end_; false when the stream failed.
  bool Parse() {
    while (down_end_ - parse_off_ >= kHeaderBytes) {
      uint8_t* rec = down_.get() + parse_off_;
      uint32_t body = RecordBodyLength(rec);
      if (body < kTagBytes || body > kMaxBody) {
        engine_.Add(kLengthErrors, 1);
        Fail(plain_to_sealed_, sealed_to_plain_, "sealed stream: record length " + std::to_string(body) + " out of range");
        return false;
      }
      if (down_end_ - parse_off_ < kHeaderBytes + body) break;
      if (!opener_.OpenInPlace(rec, body)) {
        engine_.Add(kAuthFailures, 1);
        Fail(plain_to_sealed_, sealed_to_plain_,
             "sealed stream: record " + std::to_string(opener_.seq()) + " failed authentication");
        return false;
      }
      engine_.Add(kRecordsOpened, 1);
      size_t plain = body - kTagBytes;
      if (plain == 0) {
        ended_ = true;
        parse_off_ += kHeaderBytes + body;
        if (parse_off_ != down_end_) {
          engine_.Add(kAfterEndErrors, 1);
          Fail(plain_to_sealed_, sealed_to_plain_, "sealed stream: bytes after the end-of-stream record");
          return false;
        }
        return true;
      }
      segs_.push_back({parse_off_ + kHeaderBytes, plain});
      parse_off_ += kHeaderBytes + body;
    }
    return true;
  }

  // Opened plaintext -> plain socket, several records per sendmsg.
  bool WritePlain() {
    if (segs_.empty()) {
      if (parse_off_ == down_end_) parse_off_ = down_end_ = 0;
      if (ended_ && !down_shut_) {
        shutdown(fd_[kPlain], SHUT_WR);
        down_shut_ = true;
        return true;
      }
      return false;
    }
    if (!wr_[kPlain]) return false;
    iovec iov[16];
    int count = 0;
    size_t want = 0;
    for (auto it = segs_.begin(); it != segs_.end() && count < 16; ++it, ++count) {
      iov[count].iov_base = down_.get() + it->off;
      iov[count].iov_len = it->len;
      want += it->len;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(count);
    ssize_t n = sendmsg(fd_[kPlain], &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        wr_[kPlain] = false;
        return false;
      }
      if (errno == EINTR) return true;
      FailPlain("plain side write", errno);
      return false;
    }
    size_t sent = static_cast<size_t>(n);
    if (sent < want) wr_[kPlain] = false;
    sealed_to_plain_ += sent;
    engine_.Add(kSealedToPlainBytes, sent);
    while (sent > 0) {
      Seg& s = segs_.front();
      size_t m = std::min(sent, s.len);
      s.off += m;
      s.len -= m;
      sent -= m;
      if (s.len == 0) segs_.pop_front();
    }
    return true;
  }

  struct Seg {
    size_t off;
    size_t len;
  };

  RecordSealer sealer_;
  RecordOpener opener_;
  std::unique_ptr<uint8_t[]> up_;  // sealed records waiting for the sealed socket
  size_t up_cap_ = 0, up_start_ = 0, up_end_ = 0;
  bool plain_eof_ = false, up_shut_ = false;
  std::unique_ptr<uint8_t[]> down_;  // received records, opened in place
  size_t down_cap_ = 0, down_end_ = 0, parse_off_ = 0;
  std::deque<Seg> segs_;  // opened plaintext not yet written to the plain socket
  bool sealed_eof_ = false, ended_ = false, down_shut_ = false, parse_pending_ = false;
  uint64_t plain_to_sealed_ = 0, sealed_to_plain_ = 0;
};

// Raw bytes both ways through a pipe per direction (the relay: no crypto).
class SplicePump final : public Pump {
 public:
  SplicePump(PumpEngine& engine, uint64_t id, int a_fd, int b_fd) : Pump(engine, id, a_fd, b_fd) {}
  ~SplicePump() override {
    for (Dir& d : dir_) {
      if (d.pipe_r >= 0) close(d.pipe_r);
      if (d.pipe_w >= 0) close(d.pipe_w);
    }
  }

  std::optional<SyscallError> Init(std::vector<uint8_t> a_head, std::vector<uint8_t> b_head) {
    dir_[0].head = std::move(a_head);  // a -> b
    dir_[1].head = std::move(b_head);
    for (Dir& d : dir_) {
      int p[2];
      if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return SyscallError{"pipe2", errno};
      d.pipe_r = p[0];
      d.pipe_w = p[1];
      // A larger pipe moves more per splice; fcntl reports the size actually granted.
      int granted = fcntl(p[1], F_SETPIPE_SZ, static_cast<int>(engine_.options().pipe_size));
      if (granted <= 0) granted = fcntl(p[1], F_GETPIPE_SZ);
      d.pipe_cap = granted > 0 ? static_cast<size_t>(granted) : 65536;
    }
    return std::nullopt;
  }

 protected:
  bool Step() override {
    bool moved = Move(0, 0, 1);
    if (done_) return false;
    moved |= Move(1, 1, 0);
    if (done_) return false;
    if (dir_[0].shut && dir_[1].shut) {
      Finish(dir_[0].bytes, dir_[1].bytes);
      return false;
    }
    return moved;
  }

 private:
  void Totals(uint64_t* a_to_b, uint64_t* b_to_a) const override {
    *a_to_b = dir_[0].bytes;
    *b_to_a = dir_[1].bytes;
  }

  struct Dir {
    std::vector<uint8_t> head;
    size_t head_off = 0;
    int pipe_r = -1, pipe_w = -1;
    size_t pipe_cap = 0, in_pipe = 0;
    bool eof = false, shut = false;
    uint64_t bytes = 0;
  };

  bool Move(int which, int in, int out) {
    Dir& d = dir_[which];
    bool moved = false;
    if (d.head_off < d.head.size()) {
      if (!wr_[out]) return false;
      ssize_t n = send(fd_[out], d.head.data() + d.head_off, d.head.size() - d.head_off, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          wr_[out] = false;
          return false;
        }
        FailDir("write", errno);
        return false;
      }
      d.head_off += static_cast<size_t>(n);
      d.bytes += static_cast<uint64_t>(n);
      engine_.Add(kSpliceBytes, static_cast<uint64_t>(n));
      if (d.head_off < d.head.size()) {
        wr_[out] = false;
        return true;
      }
      moved = true;
    }
    if (!d.eof && rd_[in] && d.in_pipe < d.pipe_cap) {
      ssize_t n = splice(fd_[in], nullptr, d.pipe_w, nullptr, d.pipe_cap - d.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d.in_pipe += static_cast<size_t>(n);
        d.bytes += static_cast<uint64_t>(n);
        engine_.Add(kSpliceBytes, static_cast<uint64_t>(n));
        moved = true;
      } else if (n == 0) {
        d.eof = true;
        moved = true;
      } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
        // EAGAIN also means "pipe out of slots" while it holds bytes: only an empty pipe proves
        // the socket empty (else the edge-triggered read would never be retried).
        if (d.in_pipe == 0) rd_[in] = false;
      } else if (errno != EINTR) {
        FailDir("splice in", errno);
        return false;
      }
    }
    if (d.in_pipe > 0 && wr_[out]) {
      ssize_t n = splice(d.pipe_r, nullptr, fd_[out], nullptr, d.in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d.in_pipe -= static_cast<size_t>(n);
        moved = true;
      } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        wr_[out] = false;
      } else if (n < 0 && errno != EINTR) {
        FailDir("splice out", errno);
        return false;
      }
    }
    if (d.eof && d.in_pipe == 0 && !d.shut) {
      shutdown(fd_[out], SHUT_WR);
      d.shut = true;
      moved = true;
    }
    return moved;
  }

  void FailDir(const char* what, int err) { Fail(dir_[0].bytes, dir_[1].bytes, Describe(what, err)); }

  Dir dir_[2];
};

}  // namespace

// One epoll thread and the pumps it owns.
class PumpWorker {
 public:
  explicit PumpWorker(PumpEngine& engine)
      : engine_(engine),
        pool_(std::max<size_t>(2, engine.options().batch_records) * kMaxRecord, kPooledBuffers) {}
  ~PumpWorker() { Stop(); }

  std::optional<SyscallError> Start() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) return SyscallError{"epoll_create1", errno};
    evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (evfd_ < 0) return SyscallError{"eventfd", errno};
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev) != 0) return SyscallError{"epoll_ctl", errno};
    thread_ = std::thread([this] { Loop(); });
    // Named so per-thread CPU (top -H, /proc/PID/task, bench/lib/cpu-budget.ts) tells pumps apart.
    pthread_setname_np(thread_.native_handle(), "em-pump");
    return std::nullopt;
  }

  void Stop() {
    if (thread_.joinable()) {
      stop_.store(true);
      Wake();
      thread_.join();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      incoming_.clear();
    }
    for (Pump* p : pumps_) delete p;  // resets whatever is still open
    pumps_.clear();
    if (evfd_ >= 0) close(evfd_);
    if (epfd_ >= 0) close(epfd_);
    evfd_ = epfd_ = -1;
  }

  void Hand(std::unique_ptr<Pump> pump) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      incoming_.push_back(std::move(pump));
    }
    Wake();
  }

  // all = false: abort pump `id` if this worker owns it; all = true: every pump with an id below `id`.
  void RequestAbort(uint64_t id, bool all) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      aborts_.push_back({id, all});
    }
    Wake();
  }

 private:
  void Wake() {
    uint64_t one = 1;
    ssize_t n = write(evfd_, &one, sizeof(one));
    (void)n;
  }

  void Adopt() {
    std::vector<std::unique_ptr<Pump>> batch;
    std::vector<AbortRequest> aborts;
    {
      std::lock_guard<std::mutex> lock(mu_);
      batch.swap(incoming_);
      aborts.swap(aborts_);
    }
    for (auto& owned : batch) {
      Pump* p = owned.release();
      pumps_.insert(p);
      p->Watch(epfd_, &pool_);
      p->Stamp(now_ms_);
      if (p->idle_ms() > 0) {
        ++idle_pumps_;
        next_scan_ms_ = std::min(next_scan_ms_, now_ms_ + ScanPeriodMs(p->idle_ms()));
      }
      bool ok = true;
      for (int side = 0; side < 2 && ok; ++side) {
        epoll_event ev{};
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        ev.data.u64 = p->Tag(side);
        ok = epoll_ctl(epfd_, EPOLL_CTL_ADD, p->fd(side), &ev) == 0;
      }
      if (!ok) {
        // Cannot watch it: reset both sides rather than leave a stream hanging.
        Drop(p);
        continue;
      }
      ready_.push_back(p);
    }
    // After the adoptions: an abort can only name a pump handed over before it was asked for.
    if (!aborts.empty()) ApplyAborts(aborts);
  }

  struct AbortRequest {
    uint64_t id;
    bool all;
  };

  void ApplyAborts(const std::vector<AbortRequest>& aborts) {
    std::vector<Pump*> doomed;
    for (Pump* p : pumps_)
      for (const AbortRequest& a : aborts)
        if (a.all ? p->id() < a.id : p->id() == a.id) {
          doomed.push_back(p);
          break;
        }
    for (Pump* p : doomed) Kill(p, PumpCause::kAborted, "aborted");
  }

  // Closes pumps idle for their timeout; runs every ScanPeriodMs of the shortest timeout left.
  void ScanIdle() {
    std::vector<Pump*> idle;
    uint32_t shortest = 0;
    idle_pumps_ = 0;
    for (Pump* p : pumps_) {
      uint32_t ms = p->idle_ms();
      if (ms == 0) continue;
      if (now_ms_ - p->last_active_ms() >= ms) {
        idle.push_back(p);
        continue;
      }
      ++idle_pumps_;
      if (shortest == 0 || ms < shortest) shortest = ms;
    }
    for (Pump* p : idle) Kill(p, PumpCause::kIdle, "idle for " + std::to_string(p->idle_ms()) + " ms");
    next_scan_ms_ = shortest > 0 ? now_ms_ + ScanPeriodMs(shortest) : INT64_MAX;
  }

  // Closes a pump from our side (reset both sockets, report) and forgets it.
  void Kill(Pump* p, PumpCause cause, std::string why) {
    p->Close(cause, std::move(why));
    pumps_.erase(p);
    ready_.erase(std::remove(ready_.begin(), ready_.end(), p), ready_.end());
    touched_.erase(std::remove(touched_.begin(), touched_.end(), p), touched_.end());
    delete p;
  }

  // Removes a pump that never got going (epoll refused it).
  void Drop(Pump* p) {
    pumps_.erase(p);
    delete p;
  }

  void Turn(Pump* p) {
    if (p->Run(now_ms_)) {
      ready_.push_back(p);  // still busy: others get their turn first
    } else if (p->done()) {
      // Closing the fds removed them from the epoll set already.
      pumps_.erase(p);
      delete p;
    }
  }

  void Loop() {
    epoll_event events[64];
    while (!stop_.load()) {
      int timeout = -1;
      if (!ready_.empty()) {
        timeout = 0;
      } else if (idle_pumps_ > 0) {
        // +1: the coarse clock may read a tick early.
        timeout = static_cast<int>(std::clamp<int64_t>(next_scan_ms_ - now_ms_ + 1, 0, 1000));
      }
      int n = epoll_wait(epfd_, events, 64, timeout);
      if (n < 0 && errno != EINTR) break;
      now_ms_ = NowMs();
      for (int i = 0; i < n; ++i) {
        uint64_t tag = events[i].data.u64;
        if (tag == 0) {
          uint64_t v;
          ssize_t r = read(evfd_, &v, sizeof(v));
          (void)r;
          Adopt();
          continue;
        }
        Pump* p = reinterpret_cast<Pump*>(tag & ~uint64_t{1});
        if (pumps_.count(p) == 0) continue;  // finished earlier in this batch
        p->Mark(static_cast<int>(tag & 1), events[i].events);
        touched_.push_back(p);
      }
      // Each pump runs once per wake-up however many of its fds fired.
      std::vector<Pump*> run;
      run.swap(ready_);
      for (Pump* p : touched_) run.push_back(p);
      touched_.clear();
      std::unordered_set<Pump*> seen;
      for (Pump* p : run) {
        if (!seen.insert(p).second || pumps_.count(p) == 0) continue;
        Turn(p);
      }
      // After the turns: a pump that just moved bytes is not idle.
      if (idle_pumps_ > 0 && now_ms_ >= next_scan_ms_) ScanIdle();
    }
  }

  PumpEngine& engine_;
  int epfd_ = -1;
  int evfd_ = -1;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<std::unique_ptr<Pump>> incoming_;
  std::vector<AbortRequest> aborts_;  // under mu_
  std::unordered_set<Pump*> pumps_;  // owned; only the worker thread touches these
  int64_t now_ms_ = NowMs();
  // Pumps with an idle timeout (as of the last scan, plus those adopted since) and the next scan.
  size_t idle_pumps_ = 0;
  int64_t next_scan_ms_ = INT64_MAX;
  std::vector<Pump*> ready_;
  std::vector<Pump*> touched_;
  BufferPool pool_;  // declared last: destroyed after the pumps that hand buffers back
};

PumpEngine::PumpEngine(const PumpEngineOptions& options, DoneFn done) : options_(options), done_(std::move(done)) {
  if (options_.threads < 1) options_.threads = 1;
}

PumpEngine::~PumpEngine() { Stop(); }

std::optional<SyscallError> PumpEngine::Start() {
  if (started_) return std::nullopt;
  for (int i = 0; i < options_.threads; ++i) {
    auto w = std::make_unique<PumpWorker>(*this);
    if (auto err = w->Start()) {
      Stop();
      return err;
    }
    workers_.push_back(std::move(w));
  }
  started_ = true;
  return std::nullopt;
}

void PumpEngine::Stop() {
  for (auto& w : workers_) w->Stop();
  workers_.clear();
  started_ = false;
  std::lock_guard<std::mutex> lock(progress_mu_);
  progress_.clear();
}

void PumpEngine::Report(PumpDone&& done) {
  {
    std::lock_guard<std::mutex> lock(progress_mu_);
    auto it = progress_.find(done.id);
    if (it != progress_.end()) {
      it->second->a_to_b.store(done.a_to_b, std::memory_order_relaxed);
      it->second->b_to_a.store(done.b_to_a, std::memory_order_relaxed);
    }
  }
  if (done_) done_(std::move(done));
}

void PumpEngine::Forget(uint64_t id) {
  std::lock_guard<std::mutex> lock(progress_mu_);
  progress_.erase(id);
}

std::shared_ptr<PumpProgress> PumpEngine::Track(uint64_t id) {
  auto cell = std::make_shared<PumpProgress>();
  std::lock_guard<std::mutex> lock(progress_mu_);
  progress_[id] = cell;
  return cell;
}

bool PumpEngine::Progress(uint64_t id, uint64_t* a_to_b, uint64_t* b_to_a) const {
  std::lock_guard<std::mutex> lock(progress_mu_);
  auto it = progress_.find(id);
  if (it == progress_.end()) return false;
  *a_to_b = it->second->a_to_b.load(std::memory_order_relaxed);
  *b_to_a = it->second->b_to_a.load(std::memory_order_relaxed);
  return true;
}

// Sent to every worker: an abort is rare (a stop, a drain deadline), and only the owner finds the id.
void PumpEngine::Abort(uint64_t id) {
  for (auto& w : workers_) w->RequestAbort(id, false);
}

void PumpEngine::AbortAll() {
  uint64_t below = next_id_.load();
  for (auto& w : workers_) w->RequestAbort(below, true);
}

PumpWorker* PumpEngine::NextWorker() {
  if (workers_.empty()) return nullptr;
  return workers_[next_worker_.fetch_add(1) % workers_.size()].get();
}

namespace {

std::optional<SyscallError> NonBlocking(int fd) {
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return SyscallError{"fcntl(O_NONBLOCK)", errno};
  return std::nullopt;
}

}  // namespace

uint64_t PumpEngine::AddSealed(int plain_fd, int sealed_fd, const PumpKeys& keys, std::vector<uint8_t> plain_head,
                               std::vector<uint8_t> sealed_head, std::optional<SyscallError>* error,
                               uint32_t idle_ms) {
  uint64_t id = next_id_.fetch_add(1);
  auto pump = std::make_unique<SealedPump>(*this, id, plain_fd, sealed_fd);  // owns the fds now
  PumpWorker* w = NextWorker();
  if (!w) {
    *error = SyscallError{"sealedPumpStart (engine not started)", ESHUTDOWN};
    pump->Abandon();
    return 0;
  }
  if (auto e = NonBlocking(plain_fd)) {
    *error = e;
    pump->Abandon();
    return 0;
  }
  if (auto e = NonBlocking(sealed_fd)) {
    *error = e;
    pump->Abandon();
    return 0;
  }
  if (!pump->Init(keys, plain_head, sealed_head)) {
    *error = SyscallError{"EVP_CIPHER_CTX (AES-256-GCM setup)", ENOMEM};
    pump->Abandon();
    return 0;
  }
  Add(kSealedStarted, 1);
  pump->Lifecycle(idle_ms, Track(id));
  w->Hand(std::move(pump));
  return id;
}

uint64_t PumpEngine::AddSplice(int a_fd, int b_fd, std::vector<uint8_t> a_head, std::vector<uint8_t> b_head,
                               std::optional<SyscallError>* error, uint32_t idle_ms) {
  uint64_t id = next_id_.fetch_add(1);
  auto pump = std::make_unique<SplicePump>(*this, id, a_fd, b_fd);
  PumpWorker* w = NextWorker();
  if (!w) {
    *error = SyscallError{"splicePumpStart (engine not started)", ESHUTDOWN};
    pump->Abandon();
    return 0;
  }
  for (int fd : {a_fd, b_fd}) {
    if (auto e = NonBlocking(fd)) {
      *error = e;
      pump->Abandon();
      return 0;
    }
  }
  if (auto e = pump->Init(std::move(a_head), std::move(b_head))) {
    *error = e;
    pump->Abandon();
    return 0;
  }
  Add(kSpliceStarted, 1);
  pump->Lifecycle(idle_ms, Track(id));
  w->Hand(std::move(pump));
  return id;
}

}  // namespace edgemesh::tunnel
