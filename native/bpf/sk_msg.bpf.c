// sk_msg on edgemesh_sh_v1: a sendmsg() on one end of a local socket-LB connection is queued
// straight onto the peer socket's receive queue, skipping the TCP/IP stack (loopback 13 -> ~40
// Gbit/s measured here). A socket whose peer is not in the map passes through normally.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps.h"

SEC("sk_msg")
int edgemesh_sk_msg(struct sk_msg_md *msg)
{
	/* Dual-stack sockets carry IPv4 clients as ::ffff:a.b.c.d; the last word is the IPv4 address
	 * (sockops keyed them the same way). */
	int v6 = msg->family == 10;
	__u32 r4 = msg->remote_ip4, l4 = msg->local_ip4, r6 = msg->remote_ip6[3], l6 = msg->local_ip6[3];
	/* Force every load: otherwise clang selects between two ctx offsets and loads through the
	 * result, which the verifier rejects ("dereference of modified ctx ptr"). */
	asm volatile("" : "+r"(r4), "+r"(l4), "+r"(r6), "+r"(l6));
	struct em_sock_key peer = {
		.local_ip4 = v6 ? r6 : r4,
		.remote_ip4 = v6 ? l6 : l4,
		.local_port = (__u16)bpf_ntohl(msg->remote_port),
		.remote_port = (__u16)msg->local_port,
	};
	/* On a failed lookup the helper leaves no redirect set, and SK_PASS delivers normally. */
	if (bpf_msg_redirect_hash(msg, &edgemesh_sh_v1, &peer, BPF_F_INGRESS) == SK_PASS) {
		__u32 stat = EM_STAT_MSG_REDIRECT;
		__u64 *v = bpf_map_lookup_elem(&edgemesh_st_v2, &stat);
		if (v)
			*v += 1;
	}
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
