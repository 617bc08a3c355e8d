// The escape of a pinned plane worker (PlaneOptions::cpu_affinity): a worker pinned to one CPU
// cannot move when something else keeps that CPU busy (a CPU hog, hypervisor steal), so every
// window it looks at how long it waited on its runqueue and how busy/stolen its CPU was, and when
// it is starved and another allowed CPU has room, its affinity is widened to every plane CPU for a
// cool-down (1 s, doubling while releases follow each other, up to 30 s), then it is pinned again.
// This file holds the pure decision (window deltas in, action out) so it is testable without a
// real hog; the worker (proxy_worker.cc) reads the deltas and applies the action.
#pragma once
#include <algorithm>
#include <cstdint>

namespace edgemesh {

// What one window measured (all deltas over the window).
struct SchedWindow {
  int64_t elapsed_ms = 0;   // loop time the window covered
  uint64_t run_ns = 0;      // this thread on a CPU (/proc/thread-self/schedstat field 1)
  uint64_t wait_ns = 0;     // this thread runnable but waiting on a runqueue (field 2)
  uint64_t slices = 0;      // times it got the CPU (field 3)
  uint64_t cpu_total = 0;   // ticks of its CPU's /proc/stat line (user .. steal)
  uint64_t cpu_idle = 0;    // idle + iowait ticks of its CPU
  uint64_t cpu_steal = 0;   // steal ticks of its CPU
  uint64_t other_total = 0;  // ticks of the idlest other plane CPU (0: none)
  uint64_t other_idle = 0;   // idle + iowait ticks of that CPU
};

// Thresholds and cool-downs of the escape.
struct EscapeParams {
  int64_t window_ms = 250;
  uint64_t wait_per_slice_ns = 200000;  // mean runqueue wait per timeslice above this: starved
  uint32_t wait_pct = 10;               // or waited this share of the window on a saturated CPU
  uint32_t saturated_idle_pct = 5;      // "saturated": its CPU idle below this share
  uint32_t room_idle_pct = 10;          // another CPU idle at least this share: moving can help
  uint32_t steal_pct = 5;               // its CPU's steal above this share: starved whatever else
  int64_t cooldown_min_ms = 1000;
  int64_t cooldown_max_ms = 30000;
};

enum class EscapeAction { kNone, kRelease, kRestore };

// Pinned / released state of one worker; Decide is called once per window (pinned) or per batch
// (released, cheap: no window needed there).
class AffinityEscape {
 public:
  explicit AffinityEscape(const EscapeParams& p = EscapeParams{}) : p_(p), cooldown_ms_(p.cooldown_min_ms) {}

  // Whether a window says the worker is starved on its CPU and could do better elsewhere.
  bool Starved(const SchedWindow& w) const {
    if (w.cpu_total > 0 && w.cpu_steal * 100 > w.cpu_total * p_.steal_pct) return true;
    const bool room = w.other_total > 0 && w.other_idle * 100 >= w.other_total * p_.room_idle_pct;
    if (!room) return false;
    if (w.slices > 0 && w.wait_ns / w.slices > p_.wait_per_slice_ns) return true;
    const uint64_t window_ns = static_cast<uint64_t>(std::max<int64_t>(w.elapsed_ms, 1)) * 1000000;
    const bool saturated = w.cpu_total > 0 && w.cpu_idle * 100 < w.cpu_total * p_.saturated_idle_pct;
    return saturated && w.wait_ns * 100 >= window_ns * p_.wait_pct;
  }

  // Pinned: a full window's deltas. Released: `w` is ignored; restores once the cool-down ends.
  EscapeAction Decide(int64_t now_ms, const SchedWindow& w) {
    if (released_) {
      if (now_ms < release_until_ms_) return EscapeAction::kNone;
      released_ = false;
      just_restored_ = true;
      return EscapeAction::kRestore;
    }
    if (!Starved(w)) {
      // A calm window after a re-pin: the trouble is over, the next release starts short again.
      if (just_restored_) cooldown_ms_ = p_.cooldown_min_ms;
      just_restored_ = false;
      return EscapeAction::kNone;
    }
    // Starved again right after a re-pin: the trouble persists, stay away longer this time.
    if (just_restored_) cooldown_ms_ = std::min(cooldown_ms_ * 2, p_.cooldown_max_ms);
    just_restored_ = false;
    released_ = true;
    release_until_ms_ = now_ms + cooldown_ms_;
    return EscapeAction::kRelease;
  }

  bool released() const { return released_; }
  // The cool-down of the current (or next) release.
  int64_t cooldown_ms() const { return cooldown_ms_; }
  int64_t release_until_ms() const { return release_until_ms_; }
  const EscapeParams& params() const { return p_; }

 private:
  EscapeParams p_;
  int64_t cooldown_ms_;
  bool released_ = false;
  bool just_restored_ = false;
  int64_t release_until_ms_ = 0;
};

}  // namespace edgemesh
