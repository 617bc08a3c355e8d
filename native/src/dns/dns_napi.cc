// N-API wrappers over the native DNS responder: arguments validated first ("Usage: ..."),
// syscall failures name the syscall and errno. Misses reach JS through one thread-safe function
// per responder, one call per recvmmsg batch (never one per packet).
#include "dns/dns_napi.h"

#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "dns/dns_responder.h"
#include "dns/dns_table.h"
#include "napi_args.h"

namespace edgemesh::dns {
namespace {

using napi::ThrowSyscall;
using napi::ThrowUsage;
using napi::U32Arg;

struct MissBatch {
  std::vector<uint8_t> bytes;
  uint32_t count;
};

void CallJs(Napi::Env env, Napi::Function callback, std::nullptr_t*, MissBatch* batch) {
  std::unique_ptr<MissBatch> owned(batch);
  if (env == nullptr || callback.IsEmpty()) return;  // environment going away: drop
  try {
    callback.Call({Napi::Buffer<uint8_t>::Copy(env, owned->bytes.data(), owned->bytes.size()),
                   Napi::Number::New(env, owned->count)});
  } catch (const Napi::Error& e) {
    // A throwing handler must not take the process down from a libuv callback: hand the error
    // back to JS as a pending exception (reported as uncaught). The plain C call never throws
    // in C++: while the environment shuts down it fails, and there is nobody left to tell.
    napi_throw(env, e.Value());
  } catch (...) {
    // Nothing else may cross into libuv either.
  }
}

using MissFn = Napi::TypedThreadSafeFunction<std::nullptr_t, MissBatch, CallJs>;

struct Entry {
  std::unique_ptr<Responder> responder;
  MissFn tsfn;
};

struct DnsState {
  int next_handle = 1;
  std::map<int, Entry> entries;
};

DnsState* State(const Napi::CallbackInfo& info) { return static_cast<DnsState*>(info.Data()); }

Entry* HandleArg(const Napi::CallbackInfo& info, const char* usage) {
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowUsage(info.Env(), usage);
  auto it = State(info)->entries.find(info[0].As<Napi::Number>().Int32Value());
  if (it == State(info)->entries.end())
    throw Napi::Error::New(info.Env(), "no native DNS responder with that handle (closed?)");
  return &it->second;
}

void CloseEntry(Entry& e) {
  e.responder->Stop();  // joins the thread: no NonBlockingCall after this
  e.tsfn.Release();
}

// dnsListen(address, port, rcvbuf, batch, onMisses) -> handle. Binds and starts the thread.
Napi::Value Listen(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage =
      "dnsListen(address: string, port: number, rcvbuf: number, batch: number, onMisses: (batch: Buffer, count: "
      "number) => void)";
  if (info.Length() < 5 || !info[0].IsString() || !info[4].IsFunction()) ThrowUsage(info.Env(), kUsage);
  std::string address = info[0].As<Napi::String>().Utf8Value();
  uint32_t port = U32Arg(info, 1, kUsage);
  uint32_t rcvbuf = U32Arg(info, 2, kUsage);
  uint32_t batch = U32Arg(info, 3, kUsage);
  if (port > 65535 || batch == 0 || batch > 1024 || rcvbuf > (1u << 30)) ThrowUsage(info.Env(), kUsage);
  Entry entry;
  entry.tsfn = MissFn::New(info.Env(), info[4].As<Napi::Function>(), "edgemesh-dns-misses", 1024, 1);
  // The responder keeps the process alive only through the JS server's TCP listener.
  entry.tsfn.Unref(info.Env());
  MissFn tsfn = entry.tsfn;
  ResponderOptions options;
  options.batch = batch;
  entry.responder = std::make_unique<Responder>(options, [tsfn](std::vector<uint8_t>&& bytes, uint32_t count) mutable {
    auto* b = new MissBatch{std::move(bytes), count};
    if (tsfn.NonBlockingCall(b) == napi_ok) return true;
    delete b;
    return false;
  });
  if (auto err = entry.responder->Bind(address, static_cast<uint16_t>(port), static_cast<int>(rcvbuf))) {
    entry.tsfn.Release();
    ThrowSyscall(info.Env(), *err);
  }
  if (auto err = entry.responder->Start()) {
    entry.tsfn.Release();
    ThrowSyscall(info.Env(), *err);
  }
  DnsState* state = State(info);
  int handle = state->next_handle++;
  state->entries.emplace(handle, std::move(entry));
  return Napi::Number::New(info.Env(), handle);
}

Napi::Value BoundPort(const Napi::CallbackInfo& info) {
  Entry* e = HandleArg(info, "dnsBoundPort(handle: number)");
  return Napi::Number::New(info.Env(), e->responder->bound_port());
}

// dnsSetTable(handle, table) -> generation: decodes and atomically publishes an answer table.
Napi::Value SetTable(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "dnsSetTable(handle: number, table: Buffer)";
  Entry* e = HandleArg(info, kUsage);
  if (info.Length() < 2 || !info[1].IsBuffer()) ThrowUsage(info.Env(), kUsage);
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  std::string error;
  auto table = AnswerTable::Decode(buf.Data(), buf.Length(), &error);
  if (!table) ThrowUsage(info.Env(), (std::string(kUsage) + ": " + error).c_str());
  uint32_t generation = table->generation;
  e->responder->SetTable(std::move(table));
  return Napi::Number::New(info.Env(), generation);
}

// dnsSend(handle, addr, reply): replies to the client of a miss record.
Napi::Value Send(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "dnsSend(handle: number, addr: Buffer, reply: Buffer)";
  Entry* e = HandleArg(info, kUsage);
  if (info.Length() < 3 || !info[1].IsBuffer() || !info[2].IsBuffer()) ThrowUsage(info.Env(), kUsage);
  auto addr = info[1].As<Napi::Buffer<uint8_t>>();
  auto reply = info[2].As<Napi::Buffer<uint8_t>>();
  if (addr.Length() != kMissAddrSize) ThrowUsage(info.Env(), kUsage);
  if (auto err = e->responder->Send(addr.Data(), addr.Length(), reply.Data(), reply.Length()))
    ThrowSyscall(info.Env(), *err);
  return info.Env().Undefined();
}

// dnsCounters(handle) -> Float64Array: DnsCounter order, then 256 x 2 answered-by-(qtype, rcode).
Napi::Value Counters(const Napi::CallbackInfo& info) {
  Entry* e = HandleArg(info, "dnsCounters(handle: number)");
  auto out = Napi::Float64Array::New(info.Env(), kDnsCounterCount + kTypeSlots * 2);
  for (int i = 0; i < kDnsCounterCount; ++i)
    out[i] = static_cast<double>(e->responder->Counter(static_cast<DnsCounter>(i)));
  for (int t = 0; t < kTypeSlots; ++t)
    for (int r = 0; r < 2; ++r)
      out[kDnsCounterCount + t * 2 + r] = static_cast<double>(e->responder->Answered(static_cast<uint16_t>(t), r));
  return out;
}

// dnsClose(handle) -> whether it existed. Stops the thread and closes the socket.
Napi::Value Close(const Napi::CallbackInfo& info) {
  static constexpr const char* kUsage = "dnsClose(handle: number)";
  if (info.Length() < 1 || !info[0].IsNumber()) ThrowUsage(info.Env(), kUsage);
  auto& entries = State(info)->entries;
  auto it = entries.find(info[0].As<Napi::Number>().Int32Value());
  if (it == entries.end()) return Napi::Boolean::New(info.Env(), false);
  CloseEntry(it->second);
  entries.erase(it);
  return Napi::Boolean::New(info.Env(), true);
}

}  // namespace

void RegisterDns(Napi::Env env, Napi::Object exports) {
  auto* state = new DnsState();
  env.AddCleanupHook([state]() {
    for (auto& [handle, entry] : state->entries) entry.responder->Stop();
    delete state;
  });
  auto add = [&](const char* name, Napi::Value (*fn)(const Napi::CallbackInfo&)) {
    exports.Set(name, Napi::Function::New(env, fn, name, state));
  };
  add("dnsListen", Listen);
  add("dnsBoundPort", BoundPort);
  add("dnsSetTable", SetTable);
  add("dnsSend", Send);
  add("dnsCounters", Counters);
  add("dnsClose", Close);
}

}  // namespace edgemesh::dns
