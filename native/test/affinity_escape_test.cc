// The pinned worker's escape decision (core/affinity_escape.h) on synthetic window deltas: which
// windows count as starved, the cool-down, its doubling on consecutive releases and its reset.
#include "core/affinity_escape.h"
#include "test_harness.h"

using edgemesh::AffinityEscape;
using edgemesh::EscapeAction;
using edgemesh::SchedWindow;

namespace {
// A 250 ms window (25 ticks at USER_HZ 100) on a calm machine: the worker ran 20 ms in 1000 short
// slices waiting 5 µs each, its CPU half idle, the other CPU 80 % idle, no steal.
SchedWindow Calm() {
  SchedWindow w;
  w.elapsed_ms = 250;
  w.run_ns = 20000000;
  w.wait_ns = 5000000;
  w.slices = 1000;
  w.cpu_total = 25;
  w.cpu_idle = 12;
  w.cpu_steal = 0;
  w.other_total = 25;
  w.other_idle = 20;
  return w;
}
// A hog on the worker's CPU: never idle, the worker waited 30 % of the window.
SchedWindow Hogged() {
  SchedWindow w = Calm();
  w.cpu_idle = 0;
  w.wait_ns = 75000000;
  return w;
}
}  // namespace

TEST(escape_calm_windows_are_not_starved) {
  AffinityEscape e;
  CHECK(!e.Starved(Calm()));
  // A saturated CPU on which the worker hardly waits: staying is fine.
  SchedWindow busy = Calm();
  busy.cpu_idle = 0;
  busy.wait_ns = 20000000;  // 8 % of the window
  CHECK(!e.Starved(busy));
  // Waiting a lot while its CPU still has idle time: the wait is not one CPU's fault.
  SchedWindow idle_cpu = Calm();
  idle_cpu.wait_ns = 100000000;
  CHECK(!e.Starved(idle_cpu));
  CHECK(e.Decide(0, Calm()) == EscapeAction::kNone);
  CHECK(!e.released());
}

TEST(escape_starved_needs_room_elsewhere_unless_stolen) {
  AffinityEscape e;
  CHECK(e.Starved(Hogged()));
  // Long mean waits per slice on their own (above 200 µs).
  SchedWindow long_waits = Calm();
  long_waits.slices = 100;
  long_waits.wait_ns = 100 * 250000;
  CHECK(e.Starved(long_waits));
  long_waits.wait_ns = 100 * 150000;
  CHECK(!e.Starved(long_waits));
  // Every other CPU as busy as this one: moving cannot help.
  SchedWindow everywhere = Hogged();
  everywhere.other_idle = 1;  // 4 %
  CHECK(!e.Starved(everywhere));
  SchedWindow single = Hogged();
  single.other_total = 0;
  single.other_idle = 0;
  CHECK(!e.Starved(single));
  // Steal above 5 % of the CPU's ticks: starved whatever else.
  SchedWindow stolen = everywhere;
  stolen.wait_ns = 0;
  stolen.cpu_steal = 2;  // 8 %
  CHECK(e.Starved(stolen));
  stolen.cpu_steal = 1;  // 4 %
  CHECK(!e.Starved(stolen));
}

TEST(escape_releases_then_restores_after_the_cool_down) {
  AffinityEscape e;
  CHECK(e.Decide(1000, Hogged()) == EscapeAction::kRelease);
  CHECK(e.released());
  CHECK_EQ(e.release_until_ms(), int64_t{2000});
  CHECK(e.Decide(1500, SchedWindow{}) == EscapeAction::kNone);
  CHECK(e.Decide(1999, SchedWindow{}) == EscapeAction::kNone);
  CHECK(e.Decide(2000, SchedWindow{}) == EscapeAction::kRestore);
  CHECK(!e.released());
}

TEST(escape_cool_down_doubles_on_consecutive_releases_up_to_30_s) {
  AffinityEscape e;
  int64_t now = 0;
  const int64_t expected[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
  for (int64_t cooldown : expected) {
    CHECK(e.Decide(now, Hogged()) == EscapeAction::kRelease);
    CHECK_EQ(e.release_until_ms() - now, cooldown);
    now = e.release_until_ms();
    CHECK(e.Decide(now, SchedWindow{}) == EscapeAction::kRestore);
    now += 250;  // the first re-pinned window is starved again
  }
}

TEST(escape_a_calm_re_pinned_window_resets_the_cool_down) {
  AffinityEscape e;
  CHECK(e.Decide(0, Hogged()) == EscapeAction::kRelease);
  CHECK(e.Decide(1000, SchedWindow{}) == EscapeAction::kRestore);
  CHECK(e.Decide(1250, Hogged()) == EscapeAction::kRelease);
  CHECK_EQ(e.cooldown_ms(), int64_t{2000});
  CHECK(e.Decide(3250, SchedWindow{}) == EscapeAction::kRestore);
  CHECK(e.Decide(3500, Calm()) == EscapeAction::kNone);
  CHECK_EQ(e.cooldown_ms(), int64_t{1000});
  // A release after calm windows is a fresh one: the short cool-down again.
  CHECK(e.Decide(3750, Calm()) == EscapeAction::kNone);
  CHECK(e.Decide(4000, Hogged()) == EscapeAction::kRelease);
  CHECK_EQ(e.release_until_ms(), int64_t{5000});
}
