// The N-API boundary: a flat set of functions taking primitives, validated first, each declared
// in src/native/binding.d.ts. Per-environment state lives in the Addon instance (never in
// mutable statics) so the addon loads in several worker threads at once.
#include <napi.h>

#include <cstring>
#include <string>

#include "core/original_dst.h"
#include "core/splice_copy.h"

namespace {

constexpr const char* kAddonVersion = "0.1.0";

// Throws a JS Error carrying the syscall and errno; src/native/index.ts maps it to an
// EdgemeshError with a stable code.
[[noreturn]] void ThrowSyscall(Napi::Env env, const edgemesh::SyscallError& e) {
  Napi::Error err = Napi::Error::New(env, e.syscall + " failed: " + std::strerror(e.err));
  err.Set("syscall", Napi::String::New(env, e.syscall));
  err.Set("errno", Napi::Number::New(env, e.err));
  throw err;
}

[[noreturn]] void ThrowUsage(Napi::Env env, const char* usage) {
  throw Napi::TypeError::New(env, std::string("Usage: ") + usage);
}

int32_t FdArg(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowUsage(info.Env(), usage);
  int32_t fd = info[i].As<Napi::Number>().Int32Value();
  if (fd < 0) ThrowUsage(info.Env(), usage);
  return fd;
}

class EdgemeshAddon : public Napi::Addon<EdgemeshAddon> {
 public:
  EdgemeshAddon(Napi::Env env, Napi::Object exports) {
    DefineAddon(exports, {
                             InstanceMethod("version", &EdgemeshAddon::Version),
                             InstanceMethod("spliceCopy", &EdgemeshAddon::SpliceCopy),
                             InstanceMethod("originalDst", &EdgemeshAddon::OriginalDst),
                         });
  }

 private:
  Napi::Value Version(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), kAddonVersion); }

  // spliceCopy(inFd, outFd, maxBytes, pipeSize) -> bytes moved. Blocking; for tests and probes.
  Napi::Value SpliceCopy(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "spliceCopy(inFd: number, outFd: number, maxBytes: number, pipeSize: number)";
    int32_t in_fd = FdArg(info, 0, kUsage);
    int32_t out_fd = FdArg(info, 1, kUsage);
    if (info.Length() < 4 || !info[2].IsNumber() || !info[3].IsNumber()) ThrowUsage(info.Env(), kUsage);
    int64_t max_bytes = info[2].As<Napi::Number>().Int64Value();
    int64_t pipe_size = info[3].As<Napi::Number>().Int64Value();
    if (max_bytes < 0 || pipe_size < 0) ThrowUsage(info.Env(), kUsage);
    auto r = edgemesh::SpliceCopy(in_fd, out_fd, max_bytes, static_cast<size_t>(pipe_size));
    if (r.error) ThrowSyscall(info.Env(), *r.error);
    return Napi::Number::New(info.Env(), static_cast<double>(r.bytes));
  }

  // originalDst(fd) -> { address, port }: the pre-REDIRECT destination of an accepted socket.
  Napi::Value OriginalDst(const Napi::CallbackInfo& info) {
    int32_t fd = FdArg(info, 0, "originalDst(fd: number)");
    auto r = edgemesh::GetOriginalDst(fd);
    if (r.error) ThrowSyscall(info.Env(), *r.error);
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("address", r.dst->ToString());
    out.Set("port", r.dst->port);
    return out;
  }
};

}  // namespace

NODE_API_ADDON(EdgemeshAddon)
