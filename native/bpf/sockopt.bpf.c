// cgroup/getsockopt: answers getsockopt(SOL_IP, SO_ORIGINAL_DST) on the proxy's accepted socket from
// the tuple sockops recorded, so the data plane works unchanged without a NAT rule behind it.
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

#define EM_SOL_IP 0
#define EM_SO_ORIGINAL_DST 80

static __always_inline int em_original_dst(struct bpf_sockopt *ctx)
{
	if (ctx->level != EM_SOL_IP || ctx->optname != EM_SO_ORIGINAL_DST)
		return -2;
	struct bpf_sock *sk = ctx->sk;
	if (!sk || sk->family != 2 /* AF_INET */)
		return -2;
	struct em_tuple_key key = {
		.ip4 = sk->dst_ip4,
		.port = bpf_ntohs(sk->dst_port),
	};
	struct em_addr4 *dst = bpf_map_lookup_elem(&edgemesh_tup_v1, &key);
	if (!dst)
		return -2; /* not ours: the kernel's answer (a real NAT entry, or ENOENT) stands */
	struct sockaddr_in *sa = ctx->optval;
	if ((void *)(sa + 1) > ctx->optval_end)
		return -22;
	sa->sin_family = 2;
	sa->sin_port = dst->port;
	sa->sin_addr.s_addr = dst->ip4;
	/* Two separate volatile 4-byte stores: clang 14 merges plain adjacent stores into one 8-byte
	 * store the verifier rejects ("invalid bpf_context access off=32 size=8"). */
	*(volatile __s32 *)&ctx->optlen = sizeof(*sa);
	*(volatile __s32 *)&ctx->retval = 0;
	return 0;
}

SEC("cgroup/getsockopt")
int edgemesh_getsockopt(struct bpf_sockopt *ctx)
{
	if (em_original_dst(ctx) == 0) {
		__u32 stat = EM_STAT_ORIGINAL_DST;
		__u64 *v = bpf_map_lookup_elem(&edgemesh_st_v3, &stat);
		if (v)
			*v += 1;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
