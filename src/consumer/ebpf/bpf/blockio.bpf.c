/* blockio.bpf.c: the native block-io-latency preset. Tracepoints block_rq_issue and
 * block_rq_complete; the issue time is kept per request (device, sector), as the bpftrace
 * version does; the histogram is a per-CPU hash keyed by the completion's rwbs string
 * (R, WS, ...), in log2 microseconds. The process filter applies at issue. */
#include "block.h"

/* rwbs strings seen during a session. */
#define HEAT_BIO_KEYS 64

struct heat_rwbs {
	char rwbs[HEAT_RWBS_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HEAT_BIO_INFLIGHT);
	__type(key, struct heat_bio_req);
	__type(value, __u64);
} heat_bio_issue SEC(".maps");

HEAT_HASH_HIST(heat_bio_hist, struct heat_rwbs, HEAT_BIO_KEYS);

SEC("tracepoint/block/block_rq_issue")
int heat_bio_issued(struct trace_event_raw_block_rq *ctx)
{
	struct heat_bio_req req = HEAT_BIO_REQ(ctx);
	__u64 now = bpf_ktime_get_ns();

	if (!heat_current_wanted())
		return 0;
	bpf_map_update_elem(&heat_bio_issue, &req, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int heat_bio_done(struct trace_event_raw_block_rq_completion *ctx)
{
	struct heat_bio_req req = HEAT_BIO_REQ(ctx);
	struct heat_rwbs key = {};
	__u64 *ts, delta;

	ts = bpf_map_lookup_elem(&heat_bio_issue, &req);
	if (!ts)
		return 0;
	delta = bpf_ktime_get_ns() - *ts;
	bpf_map_delete_elem(&heat_bio_issue, &req);
	heat_bio_rwbs(ctx, key.rwbs);
	heat_count_keyed(&heat_bio_hist, &key, delta);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
