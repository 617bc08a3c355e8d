// The native DNS functions of the flat native boundary (declared in src/native/binding.d.ts).
#pragma once
#include <napi.h>

namespace edgemesh::dns {

// Adds dnsListen, dnsBoundPort, dnsSetTable, dnsSend, dnsCounters and dnsClose to `exports`;
// responders live in per-environment state and are stopped with the environment.
void RegisterDns(Napi::Env env, Napi::Object exports);

}  // namespace edgemesh::dns
