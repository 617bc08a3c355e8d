// sockops: when a socket that connect4 sent to the proxy starts its handshake, record its local
// address:port (what the proxy will see as the peer of its accepted socket) -> the original service
// address, so cgroup/getsockopt can answer SO_ORIGINAL_DST without iptables or conntrack.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

static __always_inline int em_record_proxied(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_socket_cookie(skops);
	struct em_orig *orig = bpf_map_lookup_elem(&edgemesh_ck_v1, &cookie);
	if (!orig || !(orig->flags & EM_ORIG_PROXIED))
		return -2;
	struct em_tuple_key key = {
		.ip4 = skops->local_ip4,
		.port = (__u16)skops->local_port, /* host byte order in sock_ops */
	};
	struct em_addr4 dst = { .ip4 = orig->ip4, .port = orig->port };
	return (int)bpf_map_update_elem(&edgemesh_tup_v1, &key, &dst, BPF_ANY);
}

/* Named differently from its section: libbpf rejects a program named like its section ("sockops"). */
SEC("sockops")
int edgemesh_sockops(struct bpf_sock_ops *skops)
{
	/* TCP_CONNECT_CB runs after the local port is chosen and before the SYN leaves, so the entry
	 * exists before the proxy can accept the connection. */
	if (skops->op == BPF_SOCK_OPS_TCP_CONNECT_CB && skops->family == 2 /* AF_INET */)
		em_record_proxied(skops);
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
