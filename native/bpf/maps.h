// Every map the edgemesh BPF programs share, defined once. The same structs are compiled into the
// C++ loader (native/src/bpf/bpf_layout.h static_asserts their sizes and offsets) and written byte
// by byte by the TS encoder (src/proxier/ebpf/map-layout.ts, checked by test/unit/ebpf-layout.test.ts),
// so any layout drift fails CI. Rules: explicit padding, no bitfields, a comment per field, and a
// version suffix in every map name (a layout change means a new name, so a restarted agent never
// reuses a pinned map of the old shape). Map names stay within 15 characters (BPF_OBJ_NAME_LEN).
#ifndef EDGEMESH_BPF_MAPS_H
#define EDGEMESH_BPF_MAPS_H

#ifdef __bpf__
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#else
#include <linux/types.h>
#endif

/* Most backends one service port may have in the socket-LB table (slots 0..count-1). */
#define EM_MAX_BACKENDS 1024
#define EM_MAX_SERVICES 65536
#define EM_MAX_BACKEND_ENTRIES 262144
#define EM_MAX_SOCKETS 262144

/* svc value `action`: what connect() to the service address turns into. */
#define EM_ACTION_LB 0    /* connect straight to a chosen endpoint (socket-level LB) */
#define EM_ACTION_PROXY 1 /* connect to the local proxy; SO_ORIGINAL_DST answered from the maps */

/* svc value `policy`: how socket-LB picks a slot. */
#define EM_POLICY_ROUND_ROBIN 0
#define EM_POLICY_RANDOM 1
#define EM_POLICY_SOURCE 2 /* same client network namespace -> same backend */

/* Bytes a reader may have queued by sk_msg before its writer falls back to TCP/IP (edgemesh_fb_v1). */
#define EM_MSG_QUEUE_LIMIT (4u << 20)

/* orig value `flags`. */
#define EM_ORIG_PROXIED 1 /* the socket was sent to the proxy (sockops records its tuple) */

/* Indexes into edgemesh_st_v3 (counters; v3 added the two EM_STAT_MSG_FALLBACK* slots). */
#define EM_STAT_LB_CONNECT 0     /* connect() rewritten to an endpoint */
#define EM_STAT_PROXY_CONNECT 1  /* connect() rewritten to the proxy */
#define EM_STAT_NO_BACKEND 2     /* service known but no backend: left untouched */
#define EM_STAT_BYPASS 3         /* connect() by the agent itself: left untouched */
#define EM_STAT_PEERNAME 4       /* getpeername() answered with the service address */
#define EM_STAT_ORIGINAL_DST 5   /* getsockopt(SO_ORIGINAL_DST) answered from the maps */
#define EM_STAT_SOCKMAP 6        /* socket added to the sk_msg sockhash (local<->local shortcut) */
#define EM_STAT_MSG_REDIRECT 7   /* sendmsg() moved straight onto the peer socket by sk_msg */
#define EM_STAT_SK_LOOKUP 8      /* SYN to a service address from another host/namespace steered to the proxy */
#define EM_STAT_SK_LOOKUP_MISS 9 /* ... but no proxy listener for its port in edgemesh_lst_v1: left alone */
#define EM_STAT_OTHER_NETNS 10   /* proxied service connect() from another netns: left to sk_lookup */
#define EM_STAT_MSG_FALLBACK 11  /* sk_msg writer switched to TCP/IP: its reader queued > EM_MSG_QUEUE_LIMIT */
#define EM_STAT_MSG_RESUME 12    /* ... and back onto the shortcut once the reader caught up */
#define EM_STAT_COUNT 13

/* Key of edgemesh_svc_v1: one service address. */
struct em_svc_key {
	__u32 ip4;   /* service IPv4 address, network byte order */
	__u16 port;  /* service port, network byte order */
	__u8 proto;  /* IPPROTO_TCP (6) or IPPROTO_UDP (17) */
	__u8 pad;    /* zero */
};

/* Value of edgemesh_svc_v1. */
struct em_svc_value {
	__u32 svc_id;     /* id shared by this service's backend slots and round-robin counter */
	__u16 count;      /* backends in slots 0..count-1; 0 = leave connect() untouched */
	__u8 action;      /* EM_ACTION_* */
	__u8 policy;      /* EM_POLICY_* */
	__u32 proxy_ip4;  /* EM_ACTION_PROXY: proxy IPv4 address, network byte order */
	__u16 proxy_port; /* proxy port, network byte order: connect4's target for EM_ACTION_PROXY, and
	                   * (any action) sk_lookup's for clients outside the cgroup; 0 = none */
	__u16 pad;        /* zero */
};

/* Key of edgemesh_be_v1: one backend slot of one service. */
struct em_be_key {
	__u32 svc_id; /* em_svc_value.svc_id */
	__u32 slot;   /* 0..count-1 */
};

/* Value of edgemesh_be_v1 (also the value of edgemesh_tup_v1: an IPv4 address and port). */
struct em_addr4 {
	__u32 ip4;  /* IPv4 address, network byte order */
	__u16 port; /* port, network byte order */
	__u16 pad;  /* zero */
};

/* Value of edgemesh_ck_v1: what a rewritten socket originally connected to. */
struct em_orig {
	__u32 ip4;   /* service IPv4 address, network byte order */
	__u16 port;  /* service port, network byte order */
	__u8 flags;  /* EM_ORIG_* */
	__u8 pad;    /* zero */
};

/* Key of edgemesh_tup_v1: the client end of a connection sent to the proxy, as the proxy's accepted
 * socket sees its peer. */
struct em_tuple_key {
	__u32 ip4;  /* client IPv4 address, network byte order */
	__u16 port; /* client port, host byte order */
	__u16 pad;  /* zero */
};

/* Value of edgemesh_cfg_v2[0]: runtime settings the agent writes at start. A map rather than
 * `const volatile` data because pinned maps outlive the programs: an agent restarted with a new pid
 * must update the exclusion without a reload window. */
struct em_config {
	__u32 agent_tgid;  /* connect() from this process is never rewritten (0 = none) */
	__u32 bypass_mark; /* sockets with this SO_MARK are never rewritten (0 = none) */
	__u32 bypass_gid;  /* processes running with this gid are never rewritten (0 = none) */
	__u32 flags;       /* EM_CFG_* */
	__u64 netns_cookie; /* the agent's network namespace: connect() to a proxied service is sent to
	                     * 127.0.0.1 only from here (elsewhere, e.g. a pod, 127.0.0.1 is not the
	                     * proxy; the SYN reaches the node and sk_lookup steers it); 0 = any */
};

/* em_config.flags */
#define EM_CFG_SOCKMAP 1 /* put socket-LB connections between local sockets into edgemesh_sh_v1 */

/* Key of edgemesh_sh_v1, edgemesh_sk_v1 and edgemesh_fb_v1: one end of a TCP connection, as that socket sees it. */
struct em_sock_key {
	__u32 local_ip4;   /* network byte order */
	__u32 remote_ip4;  /* network byte order */
	__u16 local_port;  /* host byte order */
	__u16 remote_port; /* host byte order */
};

#ifdef __bpf__
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EM_MAX_SERVICES);
	__type(key, struct em_svc_key);
	__type(value, struct em_svc_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_svc_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EM_MAX_BACKEND_ENTRIES);
	__type(key, struct em_be_key);
	__type(value, struct em_addr4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_be_v1 SEC(".maps");

/* Round-robin position per svc_id (shared by all CPUs: atomically incremented). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EM_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_rr_v1 SEC(".maps");

/* Socket cookie -> original service address (getpeername, and the proxy's SO_ORIGINAL_DST). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, EM_MAX_SOCKETS);
	__type(key, __u64);
	__type(value, struct em_orig);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_ck_v1 SEC(".maps");

/* Client address:port of a proxied connection -> original service address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, EM_MAX_SOCKETS);
	__type(key, struct em_tuple_key);
	__type(value, struct em_addr4);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_tup_v1 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct em_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_cfg_v2 SEC(".maps");

/* Counters (EM_STAT_*), summed over CPUs by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EM_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_st_v3 SEC(".maps");
/* Sockets of local<->local socket-LB connections: sk_msg moves bytes socket to socket. Readers of
 * these sockets must use read/recvmsg: splice() does not see redirected data. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct em_sock_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_sh_v1 SEC(".maps");

/* Writers whose peer's sk_msg queue outgrew EM_MSG_QUEUE_LIMIT (key: the writer's own em_sock_key):
 * their sendmsg()s take TCP/IP, whose window applies backpressure, until the reader has read every
 * byte sent that way and its queue is below half the limit. sk_msg redirection queues on the reader
 * without looking at its receive buffer, so without this a reader slower than its writer (or one
 * that stopped reading) lets kernel memory grow without bound. Deleted at TCP_CLOSE. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct em_sock_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_fb_v1 SEC(".maps");

/* Address of each sockhash member's struct sock (key: its em_sock_key), written by sockops when it
 * joins, deleted at TCP_CLOSE. sk_msg reads the reader's queued bytes through it with
 * bpf_probe_read_kernel (a sockhash lookup from sk_msg would take a reference it cannot release);
 * a stale address only reads garbage, never faults, and garbage can only cause a fallback. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct em_sock_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_sk_v1 SEC(".maps");


/* Proxy listeners by port (host byte order) for sk_lookup: the agent inserts each listening socket
 * (value: its fd on update, its cookie on lookup). A closed listener drops out by itself. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} edgemesh_lst_v1 SEC(".maps");
#endif /* __bpf__ */

#endif /* EDGEMESH_BPF_MAPS_H */
