// The native sealed/splice pump engine (issue 12): a few epoll threads own dup'd socket fds and
// forward plain <-> sealed records (sealed_codec.h) or raw bytes (splice through a 1 MiB pipe),
// with no JS per byte. Each finished pump is reported once through the DoneFn; half-close and
// error rules follow spec-sealed: a bad record, a truncation or a reset resets the plain side
// (SO_LINGER 0) and aborts the sealed socket.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/errno_error.h"
#include "tunnel/sealed_codec.h"

namespace edgemesh::tunnel {

// Key material of one end: it seals with tx and opens with rx.
struct PumpKeys {
  uint8_t tx_key[kKeyBytes];
  uint8_t tx_iv[kIvBytes];
  uint8_t rx_key[kKeyBytes];
  uint8_t rx_iv[kIvBytes];
};

// Why a pump was closed from our side rather than by its sockets (both reset either way).
enum class PumpCause : uint8_t { kNone, kIdle, kAborted };

// How one pump ended. Sealed: a_to_b = plaintext plain -> sealed, b_to_a = sealed -> plain.
struct PumpDone {
  uint64_t id = 0;
  uint64_t a_to_b = 0;
  uint64_t b_to_a = 0;
  std::string error;  // empty: both directions ended cleanly
  PumpCause cause = PumpCause::kNone;
};

// Bytes a running pump has moved so far: stored by its thread once per turn (not per byte), read
// by anyone (metrics at scrape time). Shared: the reader may outlive the pump.
struct PumpProgress {
  std::atomic<uint64_t> a_to_b{0};
  std::atomic<uint64_t> b_to_a{0};
};

// Engine counters, in the order of src/tunnel/sealed-pump.ts PUMP_COUNTER_NAMES.
enum PumpCounter : int {
  kSealedStarted,
  kSpliceStarted,
  kPumpsFinished,
  kPumpsFailed,
  kPlainToSealedBytes,
  kSealedToPlainBytes,
  kRecordsSealed,
  kRecordsOpened,
  kAuthFailures,
  kLengthErrors,
  kTruncations,
  kAfterEndErrors,
  kSpliceBytes,
  kIdleCloses,  // both directions idle for the pump's idle timeout: both sockets reset
  kAborted,     // Abort/AbortAll: both sockets reset
  kPumpCounterCount,
};

struct PumpEngineOptions {
  int threads = 1;
  // Raw splice pipe capacity (F_SETPIPE_SZ), as the native plane.
  size_t pipe_size = 1 << 20;
  // Records sealed into one write buffer (and received per read buffer): fewer, larger syscalls.
  size_t batch_records = 4;
};

class PumpWorker;

class PumpEngine {
 public:
  // Called on an engine thread once per pump, after its fds are closed.
  using DoneFn = std::function<void(PumpDone&&)>;
  PumpEngine(const PumpEngineOptions& options, DoneFn done);
  ~PumpEngine();
  PumpEngine(const PumpEngine&) = delete;
  PumpEngine& operator=(const PumpEngine&) = delete;

  // Starts the threads (once); the error names the syscall that failed.
  std::optional<SyscallError> Start();
  // Takes ownership of both fds (closed on every path; when this fails, plainly, without a reset,
  // so the caller's sockets and the TS twin keep a normal close) and returns the pump id (> 0), or the
  // syscall that failed. idle_ms > 0: both directions idle that long -> both reset, cause kIdle.
  uint64_t AddSealed(int plain_fd, int sealed_fd, const PumpKeys& keys, std::vector<uint8_t> plain_head,
                     std::vector<uint8_t> sealed_head, std::optional<SyscallError>* error, uint32_t idle_ms = 0);
  uint64_t AddSplice(int a_fd, int b_fd, std::vector<uint8_t> a_head, std::vector<uint8_t> b_head,
                     std::optional<SyscallError>* error, uint32_t idle_ms = 0);
  // Resets pump `id` on its thread and reports it (cause kAborted); a no-op when it already ended
  // (ids are never reused, so a late abort cannot hit another pump). Any thread.
  void Abort(uint64_t id);
  // Aborts every pump added before this call. Any thread.
  void AbortAll();
  // Bytes pump `id` moved so far (its final counts once it ended, until Forget); false when unknown.
  bool Progress(uint64_t id, uint64_t* a_to_b, uint64_t* b_to_a) const;
  // Drops the progress cell of an ended pump: called once its PumpDone was delivered, so a reader
  // never sees a finished pump's bytes vanish before its done report arrived.
  void Forget(uint64_t id);
  // Stops the threads; every open pump is reset (no DoneFn for them). Idempotent.
  void Stop();

  uint64_t Counter(PumpCounter c) const { return counters_[c].load(std::memory_order_relaxed); }
  void Add(PumpCounter c, uint64_t v) { counters_[c].fetch_add(v, std::memory_order_relaxed); }
  const PumpEngineOptions& options() const { return options_; }
  void Report(PumpDone&& done);

 private:
  PumpWorker* NextWorker();
  // The progress cell of a new pump (dropped again by Report).
  std::shared_ptr<PumpProgress> Track(uint64_t id);

  PumpEngineOptions options_;
  DoneFn done_;
  std::vector<std::unique_ptr<PumpWorker>> workers_;
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> next_worker_{0};
  std::atomic<uint64_t> counters_[kPumpCounterCount] = {};
  bool started_ = false;
  mutable std::mutex progress_mu_;
  std::unordered_map<uint64_t, std::shared_ptr<PumpProgress>> progress_;
};

}  // namespace edgemesh::tunnel
