// sk_msg on edgemesh_sh_v1: a sendmsg() on one end of a local connection (socket-LB, or either leg
// of a proxied one) is queued straight onto the peer socket's receive queue, skipping the TCP/IP
// stack (loopback 13 -> ~40 Gbit/s measured here). A socket whose peer is not in the map passes
// through normally, and so does a writer whose peer has queued too much (edgemesh_fb_v1) until the
// peer has caught up.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "maps.h"

/* CO-RE views of the kernel fields the backpressure check reads (relocated against vmlinux BTF: the
 * ___em suffix is dropped when matching). */
struct sock___em {
	void *sk_user_data;
} __attribute__((preserve_access_index));
struct sk_psock___em {
	__u32 msg_tot_len;
} __attribute__((preserve_access_index));
struct tcp_sock___em {
	__u32 rcv_nxt;
	__u32 copied_seq;
	__u32 snd_una;
	__u32 write_seq;
} __attribute__((preserve_access_index));

static __always_inline void em_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&edgemesh_st_v3, &stat);
	if (v)
		*v += 1;
}

/* Address of the struct sock of the socket `key` names (recorded by sockops), 0 when unknown. */
static __always_inline __u64 em_sock_addr(const struct em_sock_key *key)
{
	__u64 *addr = bpf_map_lookup_elem(&edgemesh_sk_v1, key);
	return addr ? *addr : 0;
}

/* A u32 field of a kernel struct at `addr` (0 on a failed read). */
static __always_inline __u32 em_read_u32(__u64 addr, __u64 off)
{
	__u32 v = 0;
	bpf_probe_read_kernel(&v, sizeof(v), (void *)(addr + off));
	return v;
}

/* Bytes waiting on the sk_msg ingress list of the socket at `sk` (its psock's msg_tot_len). */
static __always_inline __u32 em_queued(__u64 sk)
{
	unsigned long psock = 0;
	bpf_probe_read_kernel(&psock, sizeof(psock),
			      (void *)(sk + bpf_core_field_offset(struct sock___em, sk_user_data)));
	/* sk_user_data holds the psock with flag bits in its low bits (SK_USER_DATA_PTRMASK). */
	psock &= ~7UL;
	return psock ? em_read_u32(psock, bpf_core_field_offset(struct sk_psock___em, msg_tot_len)) : 0;
}

/* True when no byte the writer sent over TCP/IP is still unacknowledged or unread by the reader:
 * redirecting again cannot let new bytes overtake old ones. */
static __always_inline int em_tcp_drained(__u64 writer, __u64 reader)
{
	return em_read_u32(writer, bpf_core_field_offset(struct tcp_sock___em, write_seq)) ==
		       em_read_u32(writer, bpf_core_field_offset(struct tcp_sock___em, snd_una)) &&
	       em_read_u32(reader, bpf_core_field_offset(struct tcp_sock___em, copied_seq)) ==
		       em_read_u32(reader, bpf_core_field_offset(struct tcp_sock___em, rcv_nxt));
}

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
	__u16 lport = (__u16)msg->local_port, rport = (__u16)bpf_ntohl(msg->remote_port);
	struct em_sock_key peer = {
		.local_ip4 = v6 ? r6 : r4,
		.remote_ip4 = v6 ? l6 : l4,
		.local_port = rport,
		.remote_port = lport,
	};
	struct em_sock_key self = {
		.local_ip4 = peer.remote_ip4,
		.remote_ip4 = peer.local_ip4,
		.local_port = lport,
		.remote_port = rport,
	};
	__u64 reader = em_sock_addr(&peer);
	if (!reader)
		return SK_PASS; /* no local peer in the sockhash */
	__u32 queued = em_queued(reader);
	if (bpf_map_lookup_elem(&edgemesh_fb_v1, &self)) {
		/* On TCP/IP since the reader fell behind: back to the shortcut once it caught up and
		 * every byte sent over TCP/IP has been read. */
		__u64 writer = em_sock_addr(&self);
		if (queued > EM_MSG_QUEUE_LIMIT / 2 || !writer || !em_tcp_drained(writer, reader))
			return SK_PASS;
		/* Counted only when this call removed the entry: two sendmsg()s racing here count once. */
		if (bpf_map_delete_elem(&edgemesh_fb_v1, &self) == 0)
			em_count(EM_STAT_MSG_RESUME);
	} else if (queued > EM_MSG_QUEUE_LIMIT) {
		__u32 one = 1;
		/* BPF_NOEXIST: a racing sendmsg() that also saw the queue full does not count twice. */
		if (bpf_map_update_elem(&edgemesh_fb_v1, &self, &one, BPF_NOEXIST) == 0)
			em_count(EM_STAT_MSG_FALLBACK);
		return SK_PASS;
	}
	/* On a failed lookup the helper leaves no redirect set, and SK_PASS delivers normally. */
	if (bpf_msg_redirect_hash(msg, &edgemesh_sh_v1, &peer, BPF_F_INGRESS) == SK_PASS)
		em_count(EM_STAT_MSG_REDIRECT);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "GPL";
