// libbpf-backed loader; compiled without libbpf it only reports why eBPF is unavailable.
#include "bpf/bpf_loader.h"

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#ifdef EDGEMESH_HAVE_LIBBPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#endif

// Layout static_asserts run in every build, with or without libbpf.
#include "bpf/bpf_layout.h"

namespace edgemesh::bpf {

#ifndef EDGEMESH_HAVE_LIBBPF

std::string Support() { return "the addon was built without libbpf (pkg-config libbpf not found at build time)"; }

struct Loaded::Impl {};
Loaded::~Loaded() = default;
std::optional<MapInfo> Loaded::Map(const std::string&) const { return std::nullopt; }
std::vector<std::string> Loaded::Programs() const { return {}; }
uint64_t Loaded::NetnsCookie() const { return 0; }
void Loaded::Close(bool) {}
std::vector<std::string> Loaded::Repair() { return {}; }

OpenResult Open(const std::vector<std::string>&, const std::string&, const std::string&, const std::string&) {
  OpenResult r;
  r.error = SyscallError{"bpf", ENOSYS};
  r.detail = Support();
  return r;
}

#else

std::string Support() { return ""; }

namespace {

// libbpf's print callback is process-wide; collect its output per thread so an open failure can
// carry the verifier log of exactly that attempt.
thread_local std::string* t_log = nullptr;

int CollectLog(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (t_log == nullptr || level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  if (n > 0 && t_log->size() < 16384) t_log->append(buf, static_cast<size_t>(n) < sizeof(buf) ? n : sizeof(buf) - 1);
  return 0;
}

bool IsBpffs(const std::string& dir) {
  struct statfs st {};
  return statfs(dir.c_str(), &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

std::string Parent(const std::string& path) {
  auto slash = path.find_last_of('/');
  return slash == std::string::npos || slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

// What one attached program needs to be attached again (drift repair).
struct LinkSpec {
  int prog_fd = -1;    // owned by the bpf_object
  int target_fd = -1;  // cgroup, netns or sockhash fd (owned by Impl / the bpf_object)
  bpf_attach_type type = BPF_CGROUP_INET4_CONNECT;
};

struct Loaded::Impl {
  std::string pin_dir;
  std::vector<bpf_object*> objects;
  std::vector<int> link_fds;
  std::vector<std::string> link_pins;
  std::vector<LinkSpec> link_specs;
  std::vector<std::string> programs;
  int cgroup_fd = -1;
  int netns_fd = -1;

  void Release() {
    for (int fd : link_fds) close(fd);
    link_fds.clear();
    for (auto* obj : objects) bpf_object__close(obj);
    objects.clear();
    if (cgroup_fd >= 0) close(cgroup_fd);
    cgroup_fd = -1;
    if (netns_fd >= 0) close(netns_fd);
    netns_fd = -1;
  }
};

namespace {

// True when the link still has its target: `bpftool link detach` (BPF_LINK_DETACH) clears it while
// the link object, its fd and its pin live on. The first field of the per-type union is the target
// (cgroup id, netns inode, sockhash map id), so one read covers every link type we create.
bool LinkAttached(int link_fd) {
  bpf_link_info info{};
  __u32 len = sizeof(info);
  if (bpf_obj_get_info_by_fd(link_fd, &info, &len) != 0) return false;
  if (info.type == BPF_LINK_TYPE_CGROUP) return info.cgroup.cgroup_id != 0;
  return info.netns.netns_ino != 0;
}

__u32 LinkId(int link_fd) {
  bpf_link_info info{};
  __u32 len = sizeof(info);
  return bpf_obj_get_info_by_fd(link_fd, &info, &len) == 0 ? info.id : 0;
}

}  // namespace

std::vector<std::string> Loaded::Repair() {
  std::vector<std::string> repaired;
  if (!impl_) return repaired;
  for (size_t i = 0; i < impl_->link_fds.size(); i++) {
    const std::string& pin = impl_->link_pins[i];
    if (!LinkAttached(impl_->link_fds[i])) {
      const LinkSpec& spec = impl_->link_specs[i];
      int fd = bpf_link_create(spec.prog_fd, spec.target_fd, spec.type, nullptr);
      if (fd < 0) continue;  // reported again on the next repair
      unlink(pin.c_str());
      if (bpf_obj_pin(fd, pin.c_str()) != 0) {
        close(fd);
        continue;
      }
      close(impl_->link_fds[i]);
      impl_->link_fds[i] = fd;
      repaired.push_back(impl_->programs[i] + " (detached)");
      continue;
    }
    int pinned = bpf_obj_get(pin.c_str());
    bool same = pinned >= 0 && LinkId(pinned) == LinkId(impl_->link_fds[i]);
    if (pinned >= 0) close(pinned);
    if (!same) {
      unlink(pin.c_str());
      if (bpf_obj_pin(impl_->link_fds[i], pin.c_str()) == 0) repaired.push_back(impl_->programs[i] + " (unpinned)");
    }
  }
  return repaired;
}

Loaded::~Loaded() {
  if (impl_) impl_->Release();
}

std::optional<MapInfo> Loaded::Map(const std::string& name) const {
  for (auto* obj : impl_->objects) {
    bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
    if (map == nullptr) continue;
    MapInfo info;
    info.fd = bpf_map__fd(map);
    info.key_size = bpf_map__key_size(map);
    info.value_size = bpf_map__value_size(map);
    auto type = bpf_map__type(map);
    info.per_cpu = type == BPF_MAP_TYPE_PERCPU_ARRAY || type == BPF_MAP_TYPE_PERCPU_HASH ||
                   type == BPF_MAP_TYPE_LRU_PERCPU_HASH;
    return info;
  }
  return std::nullopt;
}

std::vector<std::string> Loaded::Programs() const { return impl_->programs; }

uint64_t Loaded::NetnsCookie() const {
  // SO_NETNS_COOKIE answers for the socket's namespace: make the socket inside the target one by
  // switching this thread there for the socket() call only.
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) return 0;
  uint64_t cookie = 0;
  if (setns(impl_->netns_fd, CLONE_NEWNET) == 0) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    setns(self, CLONE_NEWNET);
    if (s >= 0) {
      socklen_t len = sizeof(cookie);
      if (getsockopt(s, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0) cookie = 0;
      close(s);
    }
  }
  close(self);
  return cookie;
}

void Loaded::Close(bool unpin) {
  if (!impl_) return;
  if (unpin) {
    // Removing the link pins and closing the last fds detaches the programs; removing the map pins
    // frees the maps once no program holds them.
    for (const auto& pin : impl_->link_pins) unlink(pin.c_str());
    for (auto* obj : impl_->objects) {
      bpf_map* map;
      bpf_object__for_each_map(map, obj) { bpf_map__unpin(map, nullptr); }
    }
  }
  impl_->Release();
  if (unpin) rmdir(impl_->pin_dir.c_str());
}

OpenResult Open(const std::vector<std::string>& objects, const std::string& pin_dir,
                const std::string& cgroup_path, const std::string& netns_path) {
  OpenResult r;
  std::string log;
  t_log = &log;
  libbpf_set_print(CollectLog);
  auto impl = std::make_unique<Loaded::Impl>();
  impl->pin_dir = pin_dir;
  bool created_dir = false;
  auto fail = [&](const char* syscall, int err) {
    if (created_dir) {
      // Nothing of ours was there before: leave nothing behind (a failed probe must not litter).
      for (const auto& pin : impl->link_pins) unlink(pin.c_str());
      for (auto* obj : impl->objects) {
        bpf_map* map;
        bpf_object__for_each_map(map, obj) { bpf_map__unpin(map, nullptr); }
      }
    }
    impl->Release();
    if (created_dir) rmdir(pin_dir.c_str());
    t_log = nullptr;
    r.error = SyscallError{syscall, err};
    r.detail = log;
    return std::move(r);
  };

  // Pins need a bpffs; most hosts mount it at /sys/fs/bpf, containers often do not.
  std::string root = Parent(pin_dir);
  if (!IsBpffs(root) && !IsBpffs(pin_dir)) {
    mkdir(root.c_str(), 0700);
    if (mount("bpf", root.c_str(), "bpf", 0, nullptr) != 0) return fail("mount(bpffs)", errno);
  }
  if (mkdir(pin_dir.c_str(), 0700) == 0)
    created_dir = true;
  else if (errno != EEXIST)
    return fail("mkdir(pin dir)", errno);

  impl->cgroup_fd = open(cgroup_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (impl->cgroup_fd < 0) return fail("open(cgroup)", errno);
  std::string netns = netns_path.empty() ? "/proc/self/ns/net" : netns_path;
  impl->netns_fd = open(netns.c_str(), O_RDONLY | O_CLOEXEC);
  if (impl->netns_fd < 0) return fail("open(netns)", errno);

  for (const auto& path : objects) {
    LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_dir.c_str());
    bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
    if (obj == nullptr) return fail("bpf_object__open_file", errno);
    impl->objects.push_back(obj);
    int err = bpf_object__load(obj);
    if (err != 0) return fail("bpf_object__load", -err);
  }

  for (auto* obj : impl->objects) {
    bpf_program* prog;
    bpf_object__for_each_program(prog, obj) {
      std::string name = bpf_program__name(prog);
      std::string pin = pin_dir + "/link_" + name;
      int link_fd = bpf_obj_get(pin.c_str());
      if (link_fd >= 0) {
        // A previous agent left this link attached: swap its program in place, so connects keep
        // being rewritten across the restart with no window where they are not.
        if (bpf_link_update(link_fd, bpf_program__fd(prog), nullptr) != 0) {
          int e = errno;
          close(link_fd);
          unlink(pin.c_str());
          link_fd = -1;
          errno = e;
        }
      }
      // Where this program attaches: sk_msg to the sockhash (a bpf_link since kernel 6.10), sk_lookup
      // to the network namespace, the rest to the cgroup.
      LinkSpec spec;
      spec.prog_fd = bpf_program__fd(prog);
      spec.type = bpf_program__expected_attach_type(prog);
      if (bpf_program__type(prog) == BPF_PROG_TYPE_SK_MSG) {
        bpf_map* sockhash = bpf_object__find_map_by_name(obj, "edgemesh_sh_v1");
        if (sockhash == nullptr) return fail("bpf_object__find_map_by_name(edgemesh_sh_v1)", ENOENT);
        spec.target_fd = bpf_map__fd(sockhash);
        spec.type = BPF_SK_MSG_VERDICT;
      } else if (bpf_program__type(prog) == BPF_PROG_TYPE_SK_LOOKUP) {
        spec.target_fd = impl->netns_fd;
        spec.type = BPF_SK_LOOKUP;
      } else {
        spec.target_fd = impl->cgroup_fd;
      }
      if (link_fd < 0) {
        link_fd = bpf_link_create(spec.prog_fd, spec.target_fd, spec.type, nullptr);
        if (link_fd < 0) return fail("bpf_link_create", errno);
        if (bpf_obj_pin(link_fd, pin.c_str()) != 0) {
          int e = errno;
          close(link_fd);
          return fail("bpf_obj_pin(link)", e);
        }
      }
      impl->link_specs.push_back(spec);
      impl->link_fds.push_back(link_fd);
      impl->link_pins.push_back(pin);
      const char* attach = libbpf_bpf_attach_type_str(bpf_program__expected_attach_type(prog));
      impl->programs.push_back(name + "@" + (attach ? attach : "?"));
    }
  }
  t_log = nullptr;
  r.loaded.reset(new Loaded());
  r.loaded->impl_ = std::move(impl);
  return r;
}

#endif

}  // namespace edgemesh::bpf
