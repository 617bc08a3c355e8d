// A minimal test harness for the native unit tests: register with TEST(name), assert with CHECK.
// The runner prints "N passed, N failed" (the line CI reads) and exits non-zero on any failure.
#pragma once
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace edgemesh_test {

struct TestCase {
  const char* name;
  std::function<void()> fn;
};

std::vector<TestCase>& Registry();
struct Failure {
  std::string what;
};

struct Registrar {
  Registrar(const char* name, std::function<void()> fn) { Registry().push_back({name, std::move(fn)}); }
};

}  // namespace edgemesh_test

#define EM_CONCAT2(a, b) a##b
#define EM_CONCAT(a, b) EM_CONCAT2(a, b)
#define TEST(name)                                                                           \
  static void name();                                                                        \
  static edgemesh_test::Registrar EM_CONCAT(registrar_, name)(#name, name);                  \
  static void name()
#define CHECK(cond)                                                                          \
  do {                                                                                       \
    if (!(cond)) throw edgemesh_test::Failure{std::string(__FILE__) + ":" +                  \
                                              std::to_string(__LINE__) + ": CHECK(" #cond ")"}; \
  } while (0)
#define CHECK_EQ(a, b)                                                                       \
  do {                                                                                       \
    auto va = (a);                                                                           \
    auto vb = (b);                                                                           \
    if (!(va == vb))                                                                         \
      throw edgemesh_test::Failure{std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                                   ": CHECK_EQ(" #a ", " #b ")"};                            \
  } while (0)
