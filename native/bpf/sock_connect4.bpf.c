// cgroup/connect4 + cgroup/getpeername4: connect-time load balancing. A connect() to a service
// address becomes a connect() to one endpoint (socket-level LB: no proxy, no NAT, no conntrack) or
// to the local proxy (services that need L7). The original address is remembered per socket cookie
// so getpeername() still returns the service address and the proxy can ask SO_ORIGINAL_DST.
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"
#include "lb.h"

static __always_inline void em_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&edgemesh_st_v3, &stat);
	if (v)
		*v += 1; /* per-CPU slot: no atomics needed */
}

/* Rewrites ctx to the chosen destination; returns 0 when rewritten, -errno when left untouched. */
static __always_inline int em_connect4(struct bpf_sock_addr *ctx)
{
	struct em_svc_key key = {
		.ip4 = ctx->user_ip4,
		.port = (__u16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	struct em_svc_value *svc = bpf_map_lookup_elem(&edgemesh_svc_v1, &key);
	if (!svc)
		return -2; /* -ENOENT: not a service address */

	__u32 zero = 0;
	struct em_config *cfg = bpf_map_lookup_elem(&edgemesh_cfg_v2, &zero);
	__u32 mark = 0;
	struct bpf_sock *sk = ctx->sk;
	if (sk)
		mark = sk->mark;
	if (em_is_bypassed(cfg, (__u32)(bpf_get_current_pid_tgid() >> 32),
			   (__u32)(bpf_get_current_uid_gid() >> 32), mark)) {
		em_count(EM_STAT_BYPASS);
		return -1; /* -EPERM: the agent's own socket */
	}

	struct em_orig orig = { .ip4 = key.ip4, .port = key.port };
	__u32 new_ip4;
	__u16 new_port;
	if (svc->action == EM_ACTION_PROXY) {
		if (cfg && cfg->netns_cookie != 0 && cfg->netns_cookie != bpf_get_netns_cookie(ctx)) {
			em_count(EM_STAT_OTHER_NETNS);
			return -1;
		}
		new_ip4 = svc->proxy_ip4;
		new_port = svc->proxy_port;
		orig.flags = EM_ORIG_PROXIED;
	} else {
		__u32 svc_id = svc->svc_id;
		__u32 rr = 0;
		if (svc->policy == EM_POLICY_ROUND_ROBIN) {
			__u32 *pos = bpf_map_lookup_elem(&edgemesh_rr_v1, &svc_id);
			if (pos)
				rr = __sync_fetch_and_add(pos, 1);
		}
		int slot = em_pick_slot(svc->policy, svc->count, rr, bpf_get_prandom_u32(),
					bpf_get_netns_cookie(ctx));
		if (slot < 0) {
			em_count(EM_STAT_NO_BACKEND);
			return slot;
		}
		struct em_be_key bkey = { .svc_id = svc_id, .slot = (__u32)slot };
		struct em_addr4 *be = bpf_map_lookup_elem(&edgemesh_be_v1, &bkey);
		if (!be) {
			/* The agent is mid-update (count raised before slots written): leave it alone. */
			em_count(EM_STAT_NO_BACKEND);
			return -2;
		}
		new_ip4 = be->ip4;
		new_port = be->port;
	}

	__u64 cookie = bpf_get_socket_cookie(ctx);
	bpf_map_update_elem(&edgemesh_ck_v1, &cookie, &orig, BPF_ANY);
	ctx->user_ip4 = new_ip4;
	ctx->user_port = new_port;
	em_count(orig.flags & EM_ORIG_PROXIED ? EM_STAT_PROXY_CONNECT : EM_STAT_LB_CONNECT);
	return 0;
}

SEC("cgroup/connect4")
int edgemesh_connect4(struct bpf_sock_addr *ctx)
{
	if (ctx->protocol == IPPROTO_TCP)
		em_connect4(ctx);
	return 1; /* always allow: an untouched connect() goes wherever it was going */
}

SEC("cgroup/getpeername4")
int edgemesh_getpeername4(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct em_orig *orig = bpf_map_lookup_elem(&edgemesh_ck_v1, &cookie);
	if (orig) {
		ctx->user_ip4 = orig->ip4;
		ctx->user_port = orig->port;
		em_count(EM_STAT_PEERNAME);
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
