// sk_lookup (attached to the agent's network namespace): a TCP SYN for a service address that
// arrives from another namespace or host (over a veth, bridge or NIC) is handed to the proxy's
// listening socket directly. No NAT and no conntrack: the accepted socket's local address stays the
// service VIP:port, which is where the data plane reads the original destination from. Needs the
// VIPs to be delivered locally (the agent adds `local` routes for them).
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

static __always_inline void em_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&edgemesh_st_v3, &stat);
	if (v)
		*v += 1;
}

SEC("sk_lookup")
int edgemesh_sk_lookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->family != 2 /* AF_INET */ || ctx->protocol != IPPROTO_TCP)
		return SK_PASS;
	/* Loopback (ifindex 1 in every namespace) carries local clients: the cgroup hooks own those, and
	 * only they know the agent's own sockets (bypass) — steering here would loop the proxy. */
	if (ctx->ingress_ifindex == 1)
		return SK_PASS;
	struct em_svc_key key = {
		.ip4 = ctx->local_ip4,
		.port = bpf_htons((__u16)ctx->local_port),
		.proto = IPPROTO_TCP,
	};
	struct em_svc_value *svc = bpf_map_lookup_elem(&edgemesh_svc_v1, &key);
	if (!svc || svc->proxy_port == 0)
		return SK_PASS;
	__u32 port = bpf_ntohs(svc->proxy_port);
	struct bpf_sock *sk = bpf_map_lookup_elem(&edgemesh_lst_v1, &port);
	if (!sk) {
		em_count(EM_STAT_SK_LOOKUP_MISS);
		return SK_PASS;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err == 0)
		em_count(EM_STAT_SK_LOOKUP);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
