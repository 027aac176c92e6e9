/* biosize.bpf.c: the native block-io-size preset. The block_rq_issue tracepoint, whose record
 * has the request's size in bytes and its rwbs string; the process filter applies there. The
 * histogram is a per-CPU hash keyed by rwbs (R, WS, ...), in log2 bytes. */
#include "heat.h"

/* rwbs strings seen during a session. */
#define HEAT_BIOSZ_KEYS 64
/* Bytes of rwbs kept in a key (RWBS_LEN is 8 or 10 depending on the kernel). */
#define HEAT_RWBS_LEN 16

/* The tracepoint record, only the fields read here; CO-RE finds their offsets. */
struct trace_event_raw_block_rq {
	unsigned int bytes;
	char rwbs[10]; /* RWBS_LEN on this kernel; an older one (8) fails to load and falls back */
} __attribute__((preserve_access_index));

struct heat_rwbs {
	char rwbs[HEAT_RWBS_LEN];
};

HEAT_HASH_HIST(heat_biosz_hist, struct heat_rwbs, HEAT_BIOSZ_KEYS);

SEC("tracepoint/block/block_rq_issue")
int heat_biosz_issued(struct trace_event_raw_block_rq *ctx)
{
	struct heat_rwbs key = {};

	if (!heat_current_wanted())
		return 0;
	/* Copied by helper, as in blockio.bpf.c: the verifier refuses byte loads from a moved ctx. */
	bpf_probe_read_kernel(key.rwbs, sizeof(ctx->rwbs), ctx->rwbs);
	heat_count_keyed(&heat_biosz_hist, &key, ctx->bytes);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
