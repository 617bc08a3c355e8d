#include <csignal>
#include <cstring>

#include "test_harness.h"

namespace edgemesh_test {
std::vector<TestCase>& Registry() {
  static std::vector<TestCase> tests;
  return tests;
}
}  // namespace edgemesh_test

// Runs every registered test, or only those whose name contains argv[1].
int main(int argc, char** argv) {
  // Node ignores SIGPIPE; the proxy code relies on EPIPE instead, so the tests do the same.
  std::signal(SIGPIPE, SIG_IGN);
  int passed = 0, failed = 0;
  for (auto& t : edgemesh_test::Registry()) {
    if (argc > 1 && std::strstr(t.name, argv[1]) == nullptr) continue;
    try {
      t.fn();
      ++passed;
      std::printf("ok   %s\n", t.name);
    } catch (const edgemesh_test::Failure& f) {
      ++failed;
      std::printf("FAIL %s: %s\n", t.name, f.what.c_str());
    } catch (const std::exception& e) {
      ++failed;
      std::printf("FAIL %s: exception %s\n", t.name, e.what());
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}
