// The eBPF functions of the flat native boundary (declared in src/native/binding.d.ts).
#pragma once
#include <napi.h>

namespace edgemesh::bpf {

// Adds bpfSupport, bpfOpen, bpfClose, bpfPrograms, bpfMapUpdate, bpfMapDelete, bpfMapLookup,
// bpfMapKeys, bpfRepair, bpfSockmapAdd and bpfNetnsCookie to `exports`; their state lives in per-environment data freed with the environment.
void RegisterBpf(Napi::Env env, Napi::Object exports);

}  // namespace edgemesh::bpf
