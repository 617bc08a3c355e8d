// N-API wrappers over bpf_loader: validate arguments first ("Usage: ..."), name the syscall and
// errno on failure. Handles are small integers into per-environment state (no mutable statics), so
// several worker threads can each hold their own.
#include "bpf/bpf_napi.h"

#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bpf/bpf_loader.h"
#include "napi_args.h"

#ifdef EDGEMESH_HAVE_LIBBPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace edgemesh::bpf {
namespace {

using napi::ThrowSyscall;
using napi::ThrowUsage;

struct BpfState {
  int next_handle = 1;
  std::map<int, std::unique_ptr<Loaded>> loaded;
};

BpfState* State(const Napi::CallbackInfo& info) { return static_cast<BpfState*>(info.Data()); }

Loaded* HandleArg(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowUsage(info.Env(), usage);
  auto it = State(info)->loaded.find(info[0].As<Napi::Number>().Int32Value());
  if (it == State(info)->loaded.end()) ThrowUsage(info.Env(), usage);
  return it->second.get();
}

MapInfo MapArg(const Napi::CallbackInfo& info, Loaded* loaded, const char* usage) {
  if (info.Length() < 2 || !info[1].IsString()) ThrowUsage(info.Env(), usage);
  auto map = loaded->Map(info[1].As<Napi::String>().Utf8Value());
  if (!map) ThrowUsage(info.Env(), usage);
  return *map;
}

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i, size_t unit, const char* usage) {
  if (info.Length() <= i || !info[i].IsBuffer()) ThrowUsage(info.Env(), usage);
  auto buf = info[i].As<Napi::Buffer<uint8_t>>();
  if (unit == 0 || buf.Length() % unit != 0) ThrowUsage(info.Env(), usage);
  return buf;
}

Napi::Value Support(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), edgemesh::bpf::Support()); }

// bpfOpen(objects, pinDir, cgroupPath, netnsPath?) -> handle
Napi::Value OpenFn(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage =
      "bpfOpen(objectPaths: string[], pinDir: string, cgroupPath: string, netnsPath?: string)";
  if (info.Length() < 3 || !info[0].IsArray() || !info[1].IsString() || !info[2].IsString())
    ThrowUsage(info.Env(), kUsage);
  if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsString()) ThrowUsage(info.Env(), kUsage);
  std::string netns = info.Length() > 3 && info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "";
  auto arr = info[0].As<Napi::Array>();
  std::vector<std::string> objects;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) ThrowUsage(info.Env(), kUsage);
    objects.push_back(v.As<Napi::String>().Utf8Value());
  }
  std::string pin_dir = info[1].As<Napi::String>().Utf8Value();
  std::string cgroup = info[2].As<Napi::String>().Utf8Value();
  if (objects.empty() || pin_dir.empty() || pin_dir[0] != '/' || cgroup.empty()) ThrowUsage(info.Env(), kUsage);
  OpenResult r = Open(objects, pin_dir, cgroup, netns);
  if (r.error) ThrowSyscall(info.Env(), r.error->syscall, r.error->err, r.detail);
  BpfState* st = State(info);
  int handle = st->next_handle++;
  st->loaded[handle] = std::move(r.loaded);
  return Napi::Number::New(info.Env(), handle);
}

// bpfClose(handle, unpin) -> undefined
Napi::Value CloseFn(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "bpfClose(handle: number, unpin: boolean)";
  Loaded* loaded = HandleArg(info, kUsage);
  if (info.Length() < 2 || !info[1].IsBoolean()) ThrowUsage(info.Env(), kUsage);
  loaded->Close(info[1].As<Napi::Boolean>().Value());
  State(info)->loaded.erase(info[0].As<Napi::Number>().Int32Value());
  return info.Env().Undefined();
}

Napi::Value ProgramsFn(const Napi::CallbackInfo& info) {
  Loaded* loaded = HandleArg(info, "bpfPrograms(handle: number)");
  auto names = loaded->Programs();
  Napi::Array out = Napi::Array::New(info.Env(), names.size());
  for (size_t i = 0; i < names.size(); i++) out.Set(static_cast<uint32_t>(i), names[i]);
  return out;
}

#ifdef EDGEMESH_HAVE_LIBBPF
size_t PerCpuValueSize(const MapInfo& m) {
  if (!m.per_cpu) return m.value_size;
  int cpus = libbpf_num_possible_cpus();
  return static_cast<size_t>(cpus > 0 ? cpus : 1) * ((m.value_size + 7) / 8 * 8);
}
#endif

// bpfMapUpdate(handle, map, keys, values) -> entries written. keys/values: fixed-size records back to back.
Napi::Value MapUpdateFn(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "bpfMapUpdate(handle: number, map: string, keys: Buffer, values: Buffer)";
  Loaded* loaded = HandleArg(info, kUsage);
  MapInfo m = MapArg(info, loaded, kUsage);
  if (m.per_cpu) ThrowUsage(info.Env(), kUsage);
  auto keys = BufferArg(info, 2, m.key_size, kUsage);
  auto values = BufferArg(info, 3, m.value_size, kUsage);
  size_t n = keys.Length() / m.key_size;
  if (values.Length() / m.value_size != n) ThrowUsage(info.Env(), kUsage);
#ifdef EDGEMESH_HAVE_LIBBPF
  for (size_t i = 0; i < n; i++) {
    if (bpf_map_update_elem(m.fd, keys.Data() + i * m.key_size, values.Data() + i * m.value_size, BPF_ANY) != 0)
      ThrowSyscall(info.Env(), "bpf(BPF_MAP_UPDATE_ELEM)", errno);
  }
#endif
  return Napi::Number::New(info.Env(), static_cast<double>(n));
}

// bpfMapDelete(handle, map, keys) -> entries deleted (missing keys are not an error).
Napi::Value MapDeleteFn(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "bpfMapDelete(handle: number, map: string, keys: Buffer)";
  Loaded* loaded = HandleArg(info, kUsage);
  MapInfo m = MapArg(info, loaded, kUsage);
  auto keys = BufferArg(info, 2, m.key_size, kUsage);
  (void)keys;  // unused without libbpf
  size_t deleted = 0;
#ifdef EDGEMESH_HAVE_LIBBPF
  for (size_t i = 0; i < keys.Length() / m.key_size; i++) {
    if (bpf_map_delete_elem(m.fd, keys.Data() + i * m.key_size) == 0)
      deleted++;
    else if (errno != ENOENT)
      ThrowSyscall(info.Env(), "bpf(BPF_MAP_DELETE_ELEM)", errno);
  }
#endif
  return Napi::Number::New(info.Env(), static_cast<double>(deleted));
}

// bpfMapLookup(handle, map, key) -> Buffer | null (per-CPU maps: one 8-byte-aligned value per CPU).
Napi::Value MapLookupFn(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "bpfMapLookup(handle: number, map: string, key: Buffer)";
  Loaded* loaded = HandleArg(info, kUsage);
  MapInfo m = MapArg(info, loaded, kUsage);
  auto key = BufferArg(info, 2, m.key_size, kUsage);
  if (key.Length() != m.key_size) ThrowUsage(info.Env(), kUsage);
#ifdef EDGEMESH_HAVE_LIBBPF
  std::vector<uint8_t> value(PerCpuValueSize(m));
  if (bpf_map_lookup_elem(m.fd, key.Data(), value.data()) != 0) {
    if (errno == ENOENT) return info.Env().Null();
    ThrowSyscall(info.Env(), "bpf(BPF_MAP_LOOKUP_ELEM)", errno);
  }
  return Napi::Buffer<uint8_t>::Copy(info.Env(), value.data(), value.size());
#else
  return info.Env().Null();
#endif
}

// bpfMapKeys(handle, map) -> Buffer of every key back to back.
Napi::Value MapKeysFn(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "bpfMapKeys(handle: number, map: string)";
  Loaded* loaded = HandleArg(info, kUsage);
  MapInfo m = MapArg(info, loaded, kUsage);
  (void)m;  // unused without libbpf
  std::vector<uint8_t> out;
#ifdef EDGEMESH_HAVE_LIBBPF
  std::vector<uint8_t> cur(m.key_size), next(m.key_size);
  const void* prev = nullptr;
  while (bpf_map_get_next_key(m.fd, prev, next.data()) == 0) {
    out.insert(out.end(), next.begin(), next.end());
    cur.swap(next);
    prev = cur.data();
    if (out.size() > (64u << 20)) break;  // bound: no map of ours is this large
  }
#endif
  return Napi::Buffer<uint8_t>::Copy(info.Env(), out.data(), out.size());
}

// bpfNetnsCookie(handle) -> bigint: cookie of the namespace sk_lookup is attached to (0n if unknown).
Napi::Value NetnsCookieFn(const Napi::CallbackInfo& info) {
  Loaded* loaded = HandleArg(info, "bpfNetnsCookie(handle: number)");
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(loaded->NetnsCookie()));
}

// bpfRepair(handle) -> string[] of what was re-attached or re-pinned.
Napi::Value RepairFn(const Napi::CallbackInfo& info) {
  Loaded* loaded = HandleArg(info, "bpfRepair(handle: number)");
  auto fixed = loaded->Repair();
  Napi::Array out = Napi::Array::New(info.Env(), fixed.size());
  for (size_t i = 0; i < fixed.size(); i++) out.Set(static_cast<uint32_t>(i), fixed[i]);
  return out;
}

// bpfSockmapAdd(handle, map, key, pid, fd): puts socket `fd` of process `pid` (this process too)
// into a sockmap/sockhash under `key`. The fd is duplicated with pidfd_getfd, so the owner (a data
// plane worker, another process) keeps its socket and the map only references it.
Napi::Value SockmapAddFn(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "bpfSockmapAdd(handle: number, map: string, key: Buffer, pid: number, fd: number)";
  Loaded* loaded = HandleArg(info, kUsage);
  MapInfo m = MapArg(info, loaded, kUsage);
  auto key = BufferArg(info, 2, m.key_size, kUsage);
  if (key.Length() != m.key_size || info.Length() < 5 || !info[3].IsNumber() || !info[4].IsNumber())
    ThrowUsage(info.Env(), kUsage);
  int pid = info[3].As<Napi::Number>().Int32Value();
  int fd = info[4].As<Napi::Number>().Int32Value();
  if (pid <= 0 || fd < 0 || (m.value_size != 4 && m.value_size != 8)) ThrowUsage(info.Env(), kUsage);
#ifdef EDGEMESH_HAVE_LIBBPF
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) ThrowSyscall(info.Env(), "pidfd_open", errno);
  int sfd = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
  int e = errno;
  close(pidfd);
  if (sfd < 0) ThrowSyscall(info.Env(), "pidfd_getfd", e);
  uint64_t value = static_cast<uint64_t>(sfd);
  int rc = bpf_map_update_elem(m.fd, key.Data(), &value, BPF_ANY);
  e = errno;
  close(sfd);
  if (rc != 0) ThrowSyscall(info.Env(), "bpf(BPF_MAP_UPDATE_ELEM)", e);
#endif
  return info.Env().Undefined();
}

}  // namespace

void RegisterBpf(Napi::Env env, Napi::Object exports) {
  auto* state = new BpfState();
  // Environment teardown (worker exit) closes fds but keeps pins: like an agent that died, the
  // programs stay attached until someone closes with unpin.
  env.AddCleanupHook([state]() { delete state; });
  auto add = [&](const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) {
    exports.Set(name, Napi::Function::New(env, fn, name, state));
  };
  add("bpfSupport", Support);
  add("bpfOpen", OpenFn);
  add("bpfClose", CloseFn);
  add("bpfPrograms", ProgramsFn);
  add("bpfMapUpdate", MapUpdateFn);
  add("bpfMapDelete", MapDeleteFn);
  add("bpfMapLookup", MapLookupFn);
  add("bpfMapKeys", MapKeysFn);
  add("bpfRepair", RepairFn);
  add("bpfNetnsCookie", NetnsCookieFn);
  add("bpfSockmapAdd", SockmapAddFn);
}

}  // namespace edgemesh::bpf
