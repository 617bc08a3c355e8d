// Loads edgemesh's BPF objects with libbpf, pins their maps by name under one bpffs folder, attaches
// every program to one cgroup v2 through pinned links (so programs and maps survive an agent that
// dies), and detaches/unpins all of it on a clean close. Plain C++: no Node-API here.
#pragma once
#include <memory>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/errno_error.h"

namespace edgemesh::bpf {

// Empty when this build has libbpf; otherwise why eBPF is unavailable.
std::string Support();

// Information about one map: its fd and sizes (value_size is per CPU for per-CPU maps).
struct MapInfo {
  int fd = -1;
  unsigned key_size = 0;
  unsigned value_size = 0;
  bool per_cpu = false;
};

class Loaded;

struct OpenResult {
  std::unique_ptr<Loaded> loaded;
  std::optional<SyscallError> error;
  std::string detail;  // libbpf's log (verifier output) when loading failed
};

// Opens, loads and attaches `objects` (paths of *.bpf.o) to the cgroup at `cgroup_path` (sk_lookup
// programs: to the network namespace at `netns_path`, "" = the caller's), pinning maps and links
// under `pin_dir` (reusing maps and replacing programs of links already pinned there).
OpenResult Open(const std::vector<std::string>& objects, const std::string& pin_dir,
                const std::string& cgroup_path, const std::string& netns_path = "");

class Loaded {
 public:
  ~Loaded();
  // The map named `name` (shared by all objects through pinning), or nullopt.
  std::optional<MapInfo> Map(const std::string& name) const;
  // "program@attach-type" for every attached program.
  std::vector<std::string> Programs() const;
  // Cookie of the network namespace sk_lookup is attached to (SO_NETNS_COOKIE), 0 if unknown.
  uint64_t NetnsCookie() const;
  // Closes everything; with unpin, also removes the pins (detaching the programs) and pin_dir.
  void Close(bool unpin);
  // Drift repair: re-creates every link someone detached (bpftool link detach) and re-pins every link
  // whose pin was removed. Returns what it repaired ("program@attach-type (detached|unpinned)").
  std::vector<std::string> Repair();

 private:
  friend OpenResult Open(const std::vector<std::string>&, const std::string&, const std::string&,
                         const std::string&);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace edgemesh::bpf
