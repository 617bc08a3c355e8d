// A syscall failure carried out of the core as a value, so the binding can name the syscall and
// errno in the JS error (errors.ts maps it to a stable code).
#pragma once
#include <string>

namespace edgemesh {

struct SyscallError {
  std::string syscall;  // e.g. "splice", "getsockopt(SO_ORIGINAL_DST)"
  int err = 0;          // errno value at the failure
};

}  // namespace edgemesh
