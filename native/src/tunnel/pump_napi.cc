// N-API wrappers over the pump engine: arguments validated first ("Usage: ..."), fds dup'd here
// (the caller then destroys its JS sockets without a FIN), finished pumps handed to JS in batches
// through one thread-safe function per environment (one call per batch, never per byte).
#include "tunnel/pump_napi.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tunnel/pump_engine.h"
#include "napi_args.h"

namespace edgemesh::tunnel {
namespace {

using napi::ThrowSyscall;
using napi::ThrowUsage;

struct TunnelState;

void CallJs(Napi::Env env, Napi::Function callback, TunnelState* state, std::nullptr_t*);

using DoneFn = Napi::TypedThreadSafeFunction<TunnelState, std::nullptr_t, CallJs>;

struct TunnelState {
  std::unique_ptr<PumpEngine> engine;
  DoneFn tsfn;
  bool has_tsfn = false;
  // Pumps started and not yet reported to JS; the thread-safe function holds the event loop
  // open only while this is non-zero (touched on the JS thread only).
  uint64_t active = 0;
  std::mutex mu;
  std::vector<PumpDone> finished;  // filled by engine threads, drained by CallJs
};

void CallJs(Napi::Env env, Napi::Function callback, TunnelState* state, std::nullptr_t*) {
  if (env == nullptr || state == nullptr) return;
  std::vector<PumpDone> batch;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    batch.swap(state->finished);
  }
  if (batch.empty()) return;
  // Their final counts stay readable until here: the callback below settles them in JS.
  if (state->engine)
    for (const PumpDone& d : batch) state->engine->Forget(d.id);
  state->active = state->active > batch.size() ? state->active - batch.size() : 0;
  if (state->active == 0) state->tsfn.Unref(env);
  if (callback.IsEmpty()) return;
  try {
    Napi::Array out = Napi::Array::New(env, batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("id", Napi::Number::New(env, static_cast<double>(batch[i].id)));
      o.Set("aToB", Napi::Number::New(env, static_cast<double>(batch[i].a_to_b)));
      o.Set("bToA", Napi::Number::New(env, static_cast<double>(batch[i].b_to_a)));
      if (!batch[i].error.empty()) o.Set("error", Napi::String::New(env, batch[i].error));
      if (batch[i].cause == PumpCause::kIdle) o.Set("cause", Napi::String::New(env, "idle"));
      if (batch[i].cause == PumpCause::kAborted) o.Set("cause", Napi::String::New(env, "aborted"));
      out.Set(static_cast<uint32_t>(i), o);
    }
    callback.Call({out});
  } catch (const Napi::Error& e) {
    // A throwing handler must not take the process down from a libuv callback.
    napi_throw(env, e.Value());
  } catch (...) {
  }
}

TunnelState* State(const Napi::CallbackInfo& info) { return static_cast<TunnelState*>(info.Data()); }

int Fd(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || !info[i].IsNumber()) ThrowUsage(info.Env(), usage);
  int64_t fd = info[i].As<Napi::Number>().Int64Value();
  if (fd < 0 || fd > 0x7fffffff) ThrowUsage(info.Env(), usage);
  return static_cast<int>(fd);
}

// An optional Buffer argument (undefined/null: empty).
std::vector<uint8_t> Head(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return {};
  if (!info[i].IsBuffer()) ThrowUsage(info.Env(), usage);
  auto b = info[i].As<Napi::Buffer<uint8_t>>();
  return std::vector<uint8_t>(b.Data(), b.Data() + b.Length());
}

// An optional idle timeout in ms (undefined/null/0: none).
uint32_t IdleMs(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return 0;
  if (!info[i].IsNumber()) ThrowUsage(info.Env(), usage);
  double ms = info[i].As<Napi::Number>().DoubleValue();
  if (!(ms >= 0 && ms <= 86400000)) ThrowUsage(info.Env(), usage);
  return static_cast<uint32_t>(ms);
}

// A pump id argument (> 0).
uint64_t PumpId(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowUsage(info.Env(), usage);
  double id = info[0].As<Napi::Number>().DoubleValue();
  if (!(id >= 1 && id <= 9007199254740991.0)) ThrowUsage(info.Env(), usage);
  return static_cast<uint64_t>(id);
}

// Our own descriptors for the caller's two sockets; both or neither.
void DupPair(Napi::Env env, int a, int b, int* da, int* db) {
  *da = fcntl(a, F_DUPFD_CLOEXEC, 0);
  if (*da < 0) ThrowSyscall(env, SyscallError{"dup", errno});
  *db = fcntl(b, F_DUPFD_CLOEXEC, 0);
  if (*db < 0) {
    int err = errno;
    close(*da);
    ThrowSyscall(env, SyscallError{"dup", err});
  }
}

// pumpSetDone(onDone, threads): installs the batch callback and starts the engine threads (once).
Napi::Value SetDone(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage =
      "pumpSetDone(onDone: (done: {id, aToB, bToA, error?}[]) => void, threads: number)";
  if (info.Length() < 2 || !info[0].IsFunction() || !info[1].IsNumber()) ThrowUsage(info.Env(), kUsage);
  int threads = info[1].As<Napi::Number>().Int32Value();
  if (threads < 1 || threads > 64) ThrowUsage(info.Env(), kUsage);
  TunnelState* state = State(info);
  if (state->has_tsfn) throw Napi::Error::New(info.Env(), "pumpSetDone: already set for this thread");
  state->tsfn = DoneFn::New(info.Env(), info[0].As<Napi::Function>(), "edgemesh-pump-done", 0, 1, state);
  state->tsfn.Unref(info.Env());
  state->has_tsfn = true;
  PumpEngineOptions options;
  options.threads = threads;
  state->engine = std::make_unique<PumpEngine>(options, [state](PumpDone&& done) {
    bool first;
    {
      std::lock_guard<std::mutex> lock(state->mu);
      first = state->finished.empty();
      state->finished.push_back(std::move(done));
    }
    // One call per batch: a call already queued will take this one too.
    if (first) state->tsfn.NonBlockingCall(nullptr);
  });
  if (auto err = state->engine->Start()) {
    state->engine.reset();
    ThrowSyscall(info.Env(), *err);
  }
  return info.Env().Undefined();
}

PumpEngine& EngineOf(const Napi::CallbackInfo& info) {
  TunnelState* state = State(info);
  if (!state->engine) throw Napi::Error::New(info.Env(), "pump engine not started (call pumpSetDone first)");
  return *state->engine;
}

void Started(const Napi::CallbackInfo& info) {
  TunnelState* state = State(info);
  if (state->active++ == 0) state->tsfn.Ref(info.Env());
}

// sealedPumpStart(plainFd, sealedFd, keys, plainHead?, sealedHead?, idleMs?) -> id. keys = txKey(32)
// txIv(12) rxKey(32) rxIv(12). Both fds are dup'd: the caller then destroys its sockets without a FIN.
Napi::Value SealedStart(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage =
      "sealedPumpStart(plainFd: number, sealedFd: number, keys: Buffer(88), plainHead?: Buffer, sealedHead?: Buffer, "
      "idleMs?: number)";
  int plain = Fd(info, 0, kUsage);
  int sealed = Fd(info, 1, kUsage);
  if (info.Length() < 3 || !info[2].IsBuffer()) ThrowUsage(info.Env(), kUsage);
  auto kb = info[2].As<Napi::Buffer<uint8_t>>();
  if (kb.Length() != sizeof(PumpKeys) || plain == sealed) ThrowUsage(info.Env(), kUsage);
  PumpKeys keys;
  std::memcpy(&keys, kb.Data(), sizeof(keys));
  auto plain_head = Head(info, 3, kUsage);
  auto sealed_head = Head(info, 4, kUsage);
  uint32_t idle_ms = IdleMs(info, 5, kUsage);
  PumpEngine& engine = EngineOf(info);
  int dp, ds;
  DupPair(info.Env(), plain, sealed, &dp, &ds);
  std::optional<SyscallError> err;
  uint64_t id = engine.AddSealed(dp, ds, keys, std::move(plain_head), std::move(sealed_head), &err, idle_ms);
  if (id == 0) ThrowSyscall(info.Env(), err.value_or(SyscallError{"sealedPumpStart", EINVAL}));
  Started(info);
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

// splicePumpStart(aFd, bFd, aHead?, bHead?, idleMs?) -> id.
Napi::Value SpliceStart(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage =
      "splicePumpStart(aFd: number, bFd: number, aHead?: Buffer, bHead?: Buffer, idleMs?: number)";
  int a = Fd(info, 0, kUsage);
  int b = Fd(info, 1, kUsage);
  if (a == b) ThrowUsage(info.Env(), kUsage);
  auto a_head = Head(info, 2, kUsage);
  auto b_head = Head(info, 3, kUsage);
  uint32_t idle_ms = IdleMs(info, 4, kUsage);
  PumpEngine& engine = EngineOf(info);
  int da, db;
  DupPair(info.Env(), a, b, &da, &db);
  std::optional<SyscallError> err;
  uint64_t id = engine.AddSplice(da, db, std::move(a_head), std::move(b_head), &err, idle_ms);
  if (id == 0) ThrowSyscall(info.Env(), err.value_or(SyscallError{"splicePumpStart", EINVAL}));
  Started(info);
  return Napi::Number::New(info.Env(), static_cast<double>(id));
}

// pumpCounters() -> Float64Array in PumpCounter order (zeros before pumpSetDone).
Napi::Value Counters(const Napi::CallbackInfo& info) {
  auto out = Napi::Float64Array::New(info.Env(), kPumpCounterCount);
  TunnelState* state = State(info);
  for (int i = 0; i < kPumpCounterCount; ++i)
    out[i] = state->engine ? static_cast<double>(state->engine->Counter(static_cast<PumpCounter>(i))) : 0;
  return out;
}

// pumpAbort(id): resets pump `id` (its done reports cause 'aborted'); a no-op once it ended.
Napi::Value AbortOne(const Napi::CallbackInfo& info) {
  uint64_t id = PumpId(info, "pumpAbort(id: number)");
  TunnelState* state = State(info);
  if (state->engine) state->engine->Abort(id);
  return info.Env().Undefined();
}

// pumpAbortAll(): aborts every pump of this thread's engine started before the call.
Napi::Value AbortAll(const Napi::CallbackInfo& info) {
  TunnelState* state = State(info);
  if (state->engine) state->engine->AbortAll();
  return info.Env().Undefined();
}

// pumpProgress(id) -> Float64Array [aToB, bToA] so far, or undefined once the pump ended.
Napi::Value Progress(const Napi::CallbackInfo& info) {
  uint64_t id = PumpId(info, "pumpProgress(id: number)");
  TunnelState* state = State(info);
  uint64_t a = 0, b = 0;
  if (!state->engine || !state->engine->Progress(id, &a, &b)) return info.Env().Undefined();
  auto out = Napi::Float64Array::New(info.Env(), 2);
  out[0] = static_cast<double>(a);
  out[1] = static_cast<double>(b);
  return out;
}

}  // namespace

void RegisterTunnel(Napi::Env env, Napi::Object exports) {
  auto* state = new TunnelState();
  env.AddCleanupHook([state]() {
    // Joins the engine threads first: no engine callback can touch the state after this.
    if (state->engine) state->engine->Stop();
    if (state->has_tsfn) state->tsfn.Release();
    delete state;
  });
  auto add = [&](const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) {
    exports.Set(name, Napi::Function::New(env, fn, name, state));
  };
  add("pumpSetDone", SetDone);
  add("sealedPumpStart", SealedStart);
  add("splicePumpStart", SpliceStart);
  add("pumpCounters", Counters);
  add("pumpAbort", AbortOne);
  add("pumpAbortAll", AbortAll);
  add("pumpProgress", Progress);
}

}  // namespace edgemesh::tunnel
