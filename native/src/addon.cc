// The N-API boundary: a flat set of functions taking primitives, validated first, each declared
// in src/native/binding.d.ts. Per-environment state lives in the Addon instance (never in
// mutable statics) so the addon loads in several worker threads at once.
#include <napi.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <string>

#include "core/murmur3.h"
#include "core/original_dst.h"
#include "core/proxy_plane.h"
#include "core/routing_table.h"
#include "core/splice_copy.h"
#include "bpf/bpf_napi.h"
#include "dns/dns_napi.h"
#include "tunnel/pump_napi.h"
#include "napi_args.h"

namespace {

using edgemesh::napi::ThrowSyscall;
using edgemesh::napi::ThrowUsage;
using edgemesh::napi::U32Arg;

constexpr const char* kAddonVersion = "0.1.0";

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || !info[i].IsString()) ThrowUsage(info.Env(), usage);
  return info[i].As<Napi::String>().Utf8Value();
}

Napi::Buffer<uint8_t> BufferArg(const Napi::CallbackInfo& info, size_t i, const char* usage) {
  if (info.Length() <= i || !info[i].IsBuffer()) ThrowUsage(info.Env(), usage);
  return info[i].As<Napi::Buffer<uint8_t>>();
}

std::shared_ptr<edgemesh::Plane> PlaneArg(const Napi::CallbackInfo& info, const char* usage) {
  uint32_t id = U32Arg(info, 0, usage);
  auto plane = edgemesh::FindPlane(id);
  if (!plane) throw Napi::Error::New(info.Env(), "no native plane with id " + std::to_string(id));
  return plane;
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
                             InstanceMethod("murmur3", &EdgemeshAddon::Murmur3),
                             InstanceMethod("routePick", &EdgemeshAddon::RoutePick),
                             InstanceMethod("probeMark", &EdgemeshAddon::ProbeMark),
                             InstanceMethod("planeCreate", &EdgemeshAddon::PlaneCreate),
                             InstanceMethod("planeListen", &EdgemeshAddon::PlaneListen),
                             InstanceMethod("planeSetRoutes", &EdgemeshAddon::PlaneSetRoutes),
                             InstanceMethod("planeRun", &EdgemeshAddon::PlaneRun),
                             InstanceMethod("planeStop", &EdgemeshAddon::PlaneStop),
                             InstanceMethod("planeCounters", &EdgemeshAddon::PlaneCounters),
                             InstanceMethod("planeServiceCounters", &EdgemeshAddon::PlaneServiceCounters),
                             InstanceMethod("planeDestroy", &EdgemeshAddon::PlaneDestroy),
                             InstanceMethod("planeSetHandoff", &EdgemeshAddon::PlaneSetHandoff),
                             InstanceMethod("planeTakeHandoffs", &EdgemeshAddon::PlaneTakeHandoffs),
                             InstanceMethod("planeSplicePair", &EdgemeshAddon::PlaneSplicePair),
                         });
    edgemesh::bpf::RegisterBpf(env, exports);  // eBPF loader functions (native/src/bpf)
    edgemesh::dns::RegisterDns(env, exports);  // native DNS responder (native/src/dns)
    edgemesh::tunnel::RegisterTunnel(env, exports);  // sealed/splice pumps (native/src/tunnel)
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

  // murmur3(data, seed) -> u32: the L4 hash (parity with src/lb/murmur3.ts).
  Napi::Value Murmur3(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "murmur3(data: Buffer, seed: number)";
    auto buf = BufferArg(info, 0, kUsage);
    uint32_t seed = U32Arg(info, 1, kUsage);
    return Napi::Number::New(info.Env(), edgemesh::Murmur3(buf.Data(), buf.Length(), seed));
  }

  // routePick(table, vip, port, clientIp) -> "ip:port": the endpoint a new connection from clientIp
  // to vip:port gets (the first route pick; round robin advances). For parity tests and status.
  Napi::Value RoutePick(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "routePick(table: Buffer, vip: string, port: number, clientIp: string)";
    auto buf = BufferArg(info, 0, kUsage);
    std::string vip = StringArg(info, 1, kUsage);
    uint32_t port = U32Arg(info, 2, kUsage);
    std::string client = StringArg(info, 3, kUsage);
    edgemesh::IpAddr vip_a, client_a;  // either family
    if (port > 65535 || !edgemesh::IpAddr::Parse(vip, &vip_a) || !edgemesh::IpAddr::Parse(client, &client_a))
      ThrowUsage(info.Env(), kUsage);
    std::string error;
    auto table = edgemesh::RoutingTable::Decode(buf.Data(), buf.Length(), &error);
    if (!table) ThrowUsage(info.Env(), (std::string(kUsage) + ": " + error).c_str());
    const edgemesh::Route* route = table->Lookup(vip_a, static_cast<uint16_t>(port));
    if (route == nullptr || route->endpoints.empty()) return info.Env().Null();
    uint32_t idx = edgemesh::PickEndpoint(*route, client_a, 0);
    return Napi::String::New(info.Env(), edgemesh::EndpointString(route->endpoints[idx]));
  }

  // probeMark(mark) -> errno of setsockopt(SO_MARK) on a fresh socket (0 = permitted).
  Napi::Value ProbeMark(const Napi::CallbackInfo& info) {
    uint32_t mark = U32Arg(info, 0, "probeMark(mark: number)");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return Napi::Number::New(info.Env(), errno);
    int err = setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) == 0 ? 0 : errno;
    close(fd);
    return Napi::Number::New(info.Env(), err);
  }

  // planeCreate(mark, connectTimeoutMs, idleTimeoutMs, useSplice, pipeSize, bufferSize, maxAttempts,
  // serviceSlots, spinUs?, cpuAffinity?) -> plane id. The plane lives in a process-wide registry so
  // piscina worker threads (other Node environments) can run it; planeDestroy releases it.
  Napi::Value PlaneCreate(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage =
        "planeCreate(mark: number, connectTimeoutMs: number, idleTimeoutMs: number, useSplice: boolean, "
        "pipeSize: number, bufferSize: number, maxAttempts: number, serviceSlots: number, spinUs?: number, "
        "cpuAffinity?: boolean)";
    if (info.Length() < 8 || !info[3].IsBoolean()) ThrowUsage(info.Env(), kUsage);
    edgemesh::PlaneOptions o;
    o.mark = U32Arg(info, 0, kUsage);
    o.connect_timeout_ms = U32Arg(info, 1, kUsage);
    o.idle_timeout_ms = U32Arg(info, 2, kUsage);
    o.use_splice = info[3].As<Napi::Boolean>().Value();
    o.pipe_size = U32Arg(info, 4, kUsage);
    o.buffer_size = U32Arg(info, 5, kUsage);
    o.max_attempts = U32Arg(info, 6, kUsage);
    o.service_slots = U32Arg(info, 7, kUsage);
    if (info.Length() > 8 && !info[8].IsUndefined()) o.spin_us = U32Arg(info, 8, kUsage);
    if (info.Length() > 9 && !info[9].IsUndefined()) {
      if (!info[9].IsBoolean()) ThrowUsage(info.Env(), kUsage);
      o.cpu_affinity = info[9].As<Napi::Boolean>().Value();
    }
    if (o.pipe_size < 4096 || o.buffer_size < 4096 || o.max_attempts == 0 || o.service_slots > (1u << 20) ||
        o.connect_timeout_ms == 0 || o.spin_us > 1000000)
      ThrowUsage(info.Env(), kUsage);
    return Napi::Number::New(info.Env(), edgemesh::RegisterPlane(std::make_shared<edgemesh::Plane>(o)));
  }

  // planeListen(id, address, port, count) -> bound port: `count` SO_REUSEPORT listeners on an IPv4
  // or IPv6 (V6ONLY) address; call once per family, with the same count.
  Napi::Value PlaneListen(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "planeListen(id: number, address: string, port: number, count: number)";
    auto plane = PlaneArg(info, kUsage);
    std::string address = StringArg(info, 1, kUsage);
    uint32_t port = U32Arg(info, 2, kUsage);
    uint32_t count = U32Arg(info, 3, kUsage);
    if (port > 65535 || count == 0 || count > 256) ThrowUsage(info.Env(), kUsage);
    if (auto err = plane->Listen(address, static_cast<uint16_t>(port), count)) ThrowSyscall(info.Env(), *err);
    return Napi::Number::New(info.Env(), plane->bound_port());
  }

  // planeSetRoutes(id, table) -> generation: decodes and atomically publishes a routing table.
  Napi::Value PlaneSetRoutes(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "planeSetRoutes(id: number, table: Buffer)";
    auto plane = PlaneArg(info, kUsage);
    auto buf = BufferArg(info, 1, kUsage);
    std::string error;
    auto table = edgemesh::RoutingTable::Decode(buf.Data(), buf.Length(), &error);
    if (!table) ThrowUsage(info.Env(), (std::string(kUsage) + ": " + error).c_str());
    uint32_t generation = table->generation;
    plane->SetTable(std::move(table));
    return Napi::Number::New(info.Env(), generation);
  }

  // planeRun(id, index): runs worker `index` on this thread until planeStop and its drain finish.
  // Blocking by design: it is called from a piscina worker thread that it owns.
  Napi::Value PlaneRun(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "planeRun(id: number, index: number)";
    auto plane = PlaneArg(info, kUsage);
    uint32_t index = U32Arg(info, 1, kUsage);
    if (index >= plane->listener_count()) ThrowUsage(info.Env(), kUsage);
    if (auto err = plane->RunWorker(index)) ThrowSyscall(info.Env(), *err);
    return info.Env().Undefined();
  }

  // planeStop(id, drainMs): stop accepting; open connections get drainMs, then are reset.
  Napi::Value PlaneStop(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "planeStop(id: number, drainMs: number)";
    auto plane = PlaneArg(info, kUsage);
    plane->Stop(U32Arg(info, 1, kUsage));
    return info.Env().Undefined();
  }

  // planeCounters(id) -> Float64Array in PlaneCounter order (binding.d.ts PLANE_COUNTER_NAMES).
  Napi::Value PlaneCounters(const Napi::CallbackInfo& info) {
    auto plane = PlaneArg(info, "planeCounters(id: number)");
    auto out = Napi::Float64Array::New(info.Env(), edgemesh::kCounterCount);
    for (int i = 0; i < edgemesh::kCounterCount; ++i)
      out[i] = static_cast<double>(plane->Counter(static_cast<edgemesh::PlaneCounter>(i)));
    return out;
  }

  // planeServiceCounters(id, slots) -> Float64Array of slots x 5 (binding.d.ts SERVICE_COUNTER_NAMES).
  Napi::Value PlaneServiceCounters(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "planeServiceCounters(id: number, slots: number)";
    auto plane = PlaneArg(info, kUsage);
    uint32_t slots = U32Arg(info, 1, kUsage);
    if (slots > plane->options.service_slots) ThrowUsage(info.Env(), kUsage);
    auto out = Napi::Float64Array::New(info.Env(), static_cast<size_t>(slots) * edgemesh::kSvcCounterCount);
    for (uint32_t s = 0; s < slots; ++s) {
      auto* c = plane->service(s);
      for (int k = 0; k < edgemesh::kSvcCounterCount; ++k)
        out[static_cast<size_t>(s) * edgemesh::kSvcCounterCount + k] =
            static_cast<double>(c[k].load(std::memory_order_relaxed));
    }
    return out;
  }

  // planeDestroy(id) -> whether it existed. Running workers keep their plane until they return.
  Napi::Value PlaneDestroy(const Napi::CallbackInfo& info) {
    uint32_t id = U32Arg(info, 0, "planeDestroy(id: number)");
    if (auto plane = edgemesh::FindPlane(id)) ReleaseHandoff(id, *plane);
    return Napi::Boolean::New(info.Env(), edgemesh::UnregisterPlane(id));
  }

  // planeSetHandoff(id, callback | null): accepted connections on L7 routes are queued for this
  // environment and `callback()` runs (on this thread, once per batch) to take them with
  // planeTakeHandoffs. null: no consumer (L7 routes are served as L4). Does not keep Node alive.
  Napi::Value PlaneSetHandoff(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage = "planeSetHandoff(id: number, callback: (() => void) | null)";
    auto plane = PlaneArg(info, kUsage);
    if (info.Length() < 2 || !(info[1].IsFunction() || info[1].IsNull())) ThrowUsage(info.Env(), kUsage);
    uint32_t id = info[0].As<Napi::Number>().Uint32Value();
    ReleaseHandoff(id, *plane);
    if (info[1].IsNull()) return info.Env().Undefined();
    auto tsfn = Napi::ThreadSafeFunction::New(info.Env(), info[1].As<Napi::Function>(), "edgemeshHandoff", 0, 1);
    tsfn.Unref(info.Env());
    handoff_fns_.emplace(id, tsfn);
    plane->SetHandoffNotify([tsfn]() { tsfn.NonBlockingCall(); });
    return info.Env().Undefined();
  }

  // planeTakeHandoffs(id) -> [{ fd, address, port }, ...]: address is the original destination
  // as text (dotted quad or RFC 5952 IPv6); the caller owns the fds.
  Napi::Value PlaneTakeHandoffs(const Napi::CallbackInfo& info) {
    auto plane = PlaneArg(info, "planeTakeHandoffs(id: number)");
    auto list = plane->TakeHandoffs();
    auto out = Napi::Array::New(info.Env(), list.size());
    for (size_t i = 0; i < list.size(); ++i) {
      Napi::Object h = Napi::Object::New(info.Env());
      h.Set("fd", Napi::Number::New(info.Env(), list[i].fd));
      h.Set("address", Napi::String::New(info.Env(), list[i].addr.ToString()));
      h.Set("port", Napi::Number::New(info.Env(), list[i].port));
      out.Set(static_cast<uint32_t>(i), h);
    }
    return out;
  }

  // planeSplicePair(id, clientFd, upstreamFd, toUpstream?, toClient?) -> whether a worker took the
  // pair. The plane forwards dup()s of both fds (the caller closes its own without a FIN reaching
  // anyone); the buffers are bytes already read that go out first. false: nothing was kept.
  Napi::Value PlaneSplicePair(const Napi::CallbackInfo& info) {
    static constexpr const char* kUsage =
        "planeSplicePair(id: number, clientFd: number, upstreamFd: number, toUpstream?: Buffer, toClient?: Buffer)";
    auto plane = PlaneArg(info, kUsage);
    const int client = FdArg(info, 1, kUsage);
    const int upstream = FdArg(info, 2, kUsage);
    edgemesh::AdoptedPair pair;
    for (size_t i : {3, 4}) {
      if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) continue;
      auto b = BufferArg(info, i, kUsage);
      (i == 3 ? pair.to_upstream : pair.to_client).assign(reinterpret_cast<const char*>(b.Data()), b.Length());
    }
    pair.client = fcntl(client, F_DUPFD_CLOEXEC, 3);
    if (pair.client < 0) ThrowSyscall(info.Env(), edgemesh::SyscallError{"fcntl(F_DUPFD_CLOEXEC)", errno});
    pair.upstream = fcntl(upstream, F_DUPFD_CLOEXEC, 3);
    if (pair.upstream < 0) {
      const int err = errno;
      close(pair.client);
      ThrowSyscall(info.Env(), edgemesh::SyscallError{"fcntl(F_DUPFD_CLOEXEC)", err});
    }
    const int dup_client = pair.client, dup_upstream = pair.upstream;
    if (!plane->PushAdopted(std::move(pair))) {
      close(dup_client);
      close(dup_upstream);
      return Napi::Boolean::New(info.Env(), false);
    }
    return Napi::Boolean::New(info.Env(), true);
  }

 private:
  // Workers stop calling the old function before it is released.
  void ReleaseHandoff(uint32_t id, edgemesh::Plane& plane) {
    auto it = handoff_fns_.find(id);
    if (it == handoff_fns_.end()) return;
    plane.SetHandoffNotify(nullptr);
    it->second.Release();
    handoff_fns_.erase(it);
  }

  std::map<uint32_t, Napi::ThreadSafeFunction> handoff_fns_;
};

}  // namespace

NODE_API_ADDON(EdgemeshAddon)
