// Argument checks and error throws shared by every binding file (addon, dns, bpf, tunnel), so JS
// sees one shape: a TypeError "Usage: ..." for bad arguments, an Error with .syscall and .errno
// for a failed syscall (src/native/index.ts maps it to an EdgemeshError with a stable code).
#pragma once
#include <napi.h>

#include <cstdint>
#include <cstring>
#include <string>

#include "core/errno_error.h"

namespace edgemesh::napi {

[[noreturn]] inline void ThrowUsage(Napi::Env env, const char* usage) {
  throw Napi::TypeError::New(env, std::string("Usage: ") + usage);
}

// `detail` (e.g. the BPF verifier log) goes on its own lines after the errno text.
[[noreturn]] inline void ThrowSyscall(Napi::Env env, const std::string& syscall, int err,
                                      const std::string& detail = "") {
  std::string msg = syscall + " failed: " + std::strerror(err);
  if (!detail.empty()) msg += "\n" + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("syscall", Napi::String::New(env, syscall));
  e.Set("errno", Napi::Number::New(env, err));
  throw e;
}

[[noreturn]] inline void ThrowSyscall(Napi::Env env, const SyscallError& e) {
  ThrowSyscall(env, e.syscall, e.err);
}

// Argument i as an unsigned 32-bit integer, else a usage error.
inline uint32_t U32Arg(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowUsage(info.Env(), usage);
  int64_t v = info[i].As<Napi::Number>().Int64Value();
  if (v < 0 || v > 0xffffffffLL) ThrowUsage(info.Env(), usage);
  return static_cast<uint32_t>(v);
}

}  // namespace edgemesh::napi
