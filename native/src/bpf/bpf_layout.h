// Compile-time guard that the C++ view of the shared BPF map structs (native/bpf/maps.h) has the
// exact sizes and offsets the TS encoder writes (src/proxier/ebpf/map-layout.ts). A mismatch fails
// the build instead of silently corrupting map entries.
#pragma once
#include <cstddef>

#include "../../bpf/maps.h"

static_assert(sizeof(struct em_svc_key) == 8, "em_svc_key size");
static_assert(offsetof(struct em_svc_key, ip4) == 0, "em_svc_key.ip4");
static_assert(offsetof(struct em_svc_key, port) == 4, "em_svc_key.port");
static_assert(offsetof(struct em_svc_key, proto) == 6, "em_svc_key.proto");
static_assert(offsetof(struct em_svc_key, pad) == 7, "em_svc_key.pad");

static_assert(sizeof(struct em_svc_value) == 16, "em_svc_value size");
static_assert(offsetof(struct em_svc_value, svc_id) == 0, "em_svc_value.svc_id");
static_assert(offsetof(struct em_svc_value, count) == 4, "em_svc_value.count");
static_assert(offsetof(struct em_svc_value, action) == 6, "em_svc_value.action");
static_assert(offsetof(struct em_svc_value, policy) == 7, "em_svc_value.policy");
static_assert(offsetof(struct em_svc_value, proxy_ip4) == 8, "em_svc_value.proxy_ip4");
static_assert(offsetof(struct em_svc_value, proxy_port) == 12, "em_svc_value.proxy_port");
static_assert(offsetof(struct em_svc_value, pad) == 14, "em_svc_value.pad");

static_assert(sizeof(struct em_be_key) == 8, "em_be_key size");
static_assert(offsetof(struct em_be_key, svc_id) == 0, "em_be_key.svc_id");
static_assert(offsetof(struct em_be_key, slot) == 4, "em_be_key.slot");

static_assert(sizeof(struct em_addr4) == 8, "em_addr4 size");
static_assert(offsetof(struct em_addr4, ip4) == 0, "em_addr4.ip4");
static_assert(offsetof(struct em_addr4, port) == 4, "em_addr4.port");

static_assert(sizeof(struct em_orig) == 8, "em_orig size");
static_assert(offsetof(struct em_orig, port) == 4, "em_orig.port");
static_assert(offsetof(struct em_orig, flags) == 6, "em_orig.flags");

static_assert(sizeof(struct em_tuple_key) == 8, "em_tuple_key size");
static_assert(offsetof(struct em_tuple_key, port) == 4, "em_tuple_key.port");

static_assert(sizeof(struct em_config) == 24, "em_config size");
static_assert(offsetof(struct em_config, agent_tgid) == 0, "em_config.agent_tgid");
static_assert(offsetof(struct em_config, bypass_mark) == 4, "em_config.bypass_mark");
static_assert(offsetof(struct em_config, bypass_gid) == 8, "em_config.bypass_gid");
static_assert(offsetof(struct em_config, flags) == 12, "em_config.flags");
static_assert(offsetof(struct em_config, netns_cookie) == 16, "em_config.netns_cookie");

static_assert(sizeof(struct em_sock_key) == 12, "em_sock_key size");
static_assert(offsetof(struct em_sock_key, remote_ip4) == 4, "em_sock_key.remote_ip4");
static_assert(offsetof(struct em_sock_key, local_port) == 8, "em_sock_key.local_port");
static_assert(offsetof(struct em_sock_key, remote_port) == 10, "em_sock_key.remote_port");
