// sockops: (1) when a socket that connect4 sent to the proxy starts its handshake, record its local
// address:port (what the proxy will see as the peer of its accepted socket) -> the original service
// address, so cgroup/getsockopt can answer SO_ORIGINAL_DST without iptables or conntrack.
// (2) with EM_CFG_SOCKMAP, put both ends of a connection between local sockets into the sockhash
// that sk_msg.bpf.c redirects through: socket-LB connections (client -> backend), and both legs of a
// proxied one (client -> proxy, and the proxy's SO_MARKed upstream socket -> backend; the proxy
// must then read with read/recvmsg, never splice). (3) a socket connect4 rewrote or that entered
// the sockhash gets state callbacks; when it reaches TCP_CLOSE its cookie, tuple and sockmap entries
// are deleted, so the maps hold live sockets only (LRU eviction would otherwise start on every
// connect once 262,144 had been made).
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

static __always_inline void em_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&edgemesh_st_v3, &stat);
	if (v)
		*v += 1;
}

static __always_inline int em_record_proxied(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct em_orig *orig = bpf_map_lookup_elem(&edgemesh_ck_v1, &cookie);
	if (!orig)
		return -2;
	/* Closed sockets must leave the maps: ask for state changes (em_forget). Not for the TCP_CLOSE
	 * of a connect that never got here (unreachable ...): LRU eviction covers those few. */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	if (!(orig->flags & EM_ORIG_PROXIED))
		return -2;
	struct em_tuple_key key = {
		.ip4 = skops->local_ip4,
		.port = (__u16)skops->local_port, /* host byte order in sock_ops */
	};
	struct em_addr4 dst = { .ip4 = orig->ip4, .port = orig->port };
	return (int)bpf_map_update_elem(&edgemesh_tup_v1, &key, &dst, BPF_ANY);
}

/* A rewritten socket reached TCP_CLOSE (after its last FIN/ACK, a reset or a refused connect; a
 * closed-but-unaccepted connection stays until then, so the proxy can still ask SO_ORIGINAL_DST):
 * drop its cookie entry and, when it was sent to the proxy, its tuple entry. */
static __always_inline void em_forget(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct em_orig *orig = bpf_map_lookup_elem(&edgemesh_ck_v1, &cookie);
	if (!orig)
		return;
	if (orig->flags & EM_ORIG_PROXIED) {
		struct em_tuple_key key = {
			.ip4 = skops->local_ip4,
			.port = (__u16)skops->local_port,
		};
		bpf_map_delete_elem(&edgemesh_tup_v1, &key);
	}
	bpf_map_delete_elem(&edgemesh_ck_v1, &cookie);
}

/* True for an AF_INET6 socket whose both addresses are IPv4-mapped (::ffff:a.b.c.d): dual-stack
 * servers (iperf3, many runtimes) accept IPv4 clients on such sockets. */
static __always_inline int em_is_v4_mapped(struct bpf_sock_ops *skops)
{
	return skops->family == 10 /* AF_INET6 */ && skops->local_ip6[0] == 0 && skops->local_ip6[1] == 0 &&
	       skops->local_ip6[2] == bpf_htonl(0xffff) && skops->remote_ip6[0] == 0 &&
	       skops->remote_ip6[1] == 0 && skops->remote_ip6[2] == bpf_htonl(0xffff);
}

static __always_inline struct em_sock_key em_own_key(struct bpf_sock_ops *skops)
{
	int mapped = skops->family != 2;
	__u32 l4 = skops->local_ip4, r4 = skops->remote_ip4, l6 = skops->local_ip6[3], r6 = skops->remote_ip6[3];
	/* Force every load: otherwise clang selects between two ctx offsets and loads through the
	 * result, which the verifier rejects ("dereference of modified ctx ptr"). */
	asm volatile("" : "+r"(l4), "+r"(r4), "+r"(l6), "+r"(r6));
	struct em_sock_key key = {
		.local_ip4 = mapped ? l6 : l4,
		.remote_ip4 = mapped ? r6 : r4,
		.local_port = (__u16)skops->local_port,
		/* remote_port is the network-order port in the upper 16 bits of a u32 */
		.remote_port = (__u16)bpf_ntohl(skops->remote_port),
	};
	return key;
}

/* The agent's settings when the sk_msg shortcut is on, else NULL. */
static __always_inline struct em_config *em_sockmap_config(void)
{
	__u32 zero = 0;
	struct em_config *cfg = bpf_map_lookup_elem(&edgemesh_cfg_v2, &zero);
	return cfg && (cfg->flags & EM_CFG_SOCKMAP) ? cfg : 0;
}

/* Counts a socket that joined the sockhash and records its address for sk_msg's backpressure check. */
static __always_inline void em_joined(struct bpf_sock_ops *skops, struct em_sock_key *key)
{
	em_count(EM_STAT_SOCKMAP);
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	__u64 addr = (__u64)(unsigned long)sk;
	bpf_map_update_elem(&edgemesh_sk_v1, key, &addr, BPF_ANY);
}

/* True for the proxy's own upstream socket: it carries the bypass SO_MARK (the same mark that
 * keeps connect4 from sending it back into the proxy). A plain load of sk->mark, no helper call. */
static __always_inline int em_is_upstream(struct bpf_sock_ops *skops, const struct em_config *cfg)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk || cfg->bypass_mark == 0)
		return 0;
	return (sk->mark & cfg->bypass_mark) == cfg->bypass_mark;
}

/* Active end: a connection connect4 rewrote (balanced straight to a backend, or sent to the proxy),
 * or the proxy's upstream socket. Its edgemesh_sk_v1 entry (written before the handshake's last ACK
 * leaves) tells the accepting end, when it is a local socket in the cgroup too, to join
 * (em_add_passive); a remote peer never does, and the socket's sendmsg then only passes through
 * sk_msg. */
static __always_inline int em_add_active(struct bpf_sock_ops *skops, const struct em_config *cfg)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	if (!bpf_map_lookup_elem(&edgemesh_ck_v1, &cookie)) {
		if (!em_is_upstream(skops, cfg))
			return -2;
		/* Not a rewritten socket, so nobody asked for its state changes yet: TCP_CLOSE must
		 * delete its edgemesh_sk_v1 entry. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	}
	struct em_sock_key key = em_own_key(skops);
	long err = bpf_sock_hash_update(skops, &edgemesh_sh_v1, &key, BPF_NOEXIST);
	if (err == 0)
		em_joined(skops, &key);
	return (int)err;
}

/* Passive end: only when its peer is an active end that joined above (so both are local). Its
 * edgemesh_sk_v1 entry says so: a passive end's peer is always an active one, and the entry lives
 * until that socket's TCP_CLOSE, so a later connection on the same tuple finds only its own. (A
 * separate edgemesh_lbt_v1 map did this before: 2 LRU updates and 2 deletes more per proxied
 * connection, the LRU update being the costliest map operation measured in sockops.) */
static __always_inline int em_add_passive(struct bpf_sock_ops *skops)
{
	struct em_sock_key key = em_own_key(skops);
	struct em_sock_key peer = {
		.local_ip4 = key.remote_ip4,
		.remote_ip4 = key.local_ip4,
		.local_port = key.remote_port,
		.remote_port = key.local_port,
	};
	if (!bpf_map_lookup_elem(&edgemesh_sk_v1, &peer))
		return -2;
	/* TCP_CLOSE must delete its edgemesh_sk_v1 entry (and edgemesh_fb_v1, should it fall back). */
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	long err = bpf_sock_hash_update(skops, &edgemesh_sh_v1, &key, BPF_NOEXIST);
	if (err == 0)
		em_joined(skops, &key);
	return (int)err;
}

/* Named differently from its section: libbpf rejects a program named like its section ("sockops"). */
SEC("sockops")
int edgemesh_sockops(struct bpf_sock_ops *skops)
{
	if (skops->family != 2 /* AF_INET */ && !em_is_v4_mapped(skops))
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		if (skops->family != 2)
			break;
		/* Runs after the local port is chosen and before the SYN leaves, so the entry exists
		 * before the proxy can accept the connection. */
		em_record_proxied(skops);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		struct em_config *cfg = em_sockmap_config();
		if (cfg)
			em_add_active(skops, cfg);
		break;
	}
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (em_sockmap_config())
			em_add_passive(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] == BPF_TCP_CLOSE) {
			if (skops->family == 2)
				em_forget(skops);
			/* A writer that fell back to TCP/IP, a sockhash member's address. Each is looked
			 * up before it is deleted: the first is mostly a miss, and an LRU delete takes its
			 * bucket lock even to miss while a lookup takes none. Nothing else writes these keys
			 * once the socket is closing: sk_msg runs under the socket lock TCP_CLOSE holds. */
			struct em_sock_key key = em_own_key(skops);
			if (bpf_map_lookup_elem(&edgemesh_fb_v1, &key))
				bpf_map_delete_elem(&edgemesh_fb_v1, &key);
			if (bpf_map_lookup_elem(&edgemesh_sk_v1, &key))
				bpf_map_delete_elem(&edgemesh_sk_v1, &key);
		}
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
