// Pure helpers the cgroup hooks share, free of BPF helpers and maps so the C++ unit test
// (native/test/bpf_lb_test.cc) can drive them on the host with the same inputs.
#ifndef EDGEMESH_BPF_LB_H
#define EDGEMESH_BPF_LB_H

#include "maps.h"

#ifndef EM_INLINE
#define EM_INLINE static __always_inline
#endif

/* Backend slot for one connect(): `rr` is the round-robin position before this connect, `rnd` a
 * random number, `source` an identity of the client (its network namespace cookie). Returns
 * -EINVAL-like -22 for a service with no backend. */
EM_INLINE int em_pick_slot(__u8 policy, __u32 count, __u32 rr, __u32 rnd, __u64 source)
{
	if (count == 0 || count > EM_MAX_BACKENDS)
		return -22;
	switch (policy) {
	case EM_POLICY_RANDOM:
		return (int)(rnd % count);
	case EM_POLICY_SOURCE: {
		/* Fold the 64-bit cookie and spread it (Knuth's multiplicative hash) so consecutive
		 * cookies do not land on consecutive slots. */
		__u32 h = (__u32)(source ^ (source >> 32)) * 2654435761u;
		return (int)(h % count);
	}
	default:
		return (int)(rr % count);
	}
}

/* True when the connecting process must be left alone: the agent itself, its bypass group, or a
 * socket carrying the bypass mark. Without this the proxy's own upstream connect would loop. */
EM_INLINE int em_is_bypassed(const struct em_config *cfg, __u32 tgid, __u32 gid, __u32 mark)
{
	if (!cfg)
		return 0;
	if (cfg->agent_tgid != 0 && cfg->agent_tgid == tgid)
		return 1;
	if (cfg->bypass_gid != 0 && cfg->bypass_gid == gid)
		return 1;
	if (cfg->bypass_mark != 0 && (cfg->bypass_mark & mark) == cfg->bypass_mark)
		return 1;
	return 0;
}

#endif /* EDGEMESH_BPF_LB_H */
