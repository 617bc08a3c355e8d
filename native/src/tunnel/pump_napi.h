// The sealed/splice pump functions of the flat native boundary (declared in src/native/binding.d.ts).
#pragma once
#include <napi.h>

namespace edgemesh::tunnel {

// Adds pumpSetDone, sealedPumpStart, splicePumpStart and pumpCounters to `exports`; the engine
// lives in per-environment state and is stopped with the environment.
void RegisterTunnel(Napi::Env env, Napi::Object exports);

}  // namespace edgemesh::tunnel
