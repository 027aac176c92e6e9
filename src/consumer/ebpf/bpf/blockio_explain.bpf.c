/* blockio_explain.bpf.c: the native explain companion of block-io-latency. The same requests
 * and interval as blockio.bpf.c (block_rq_issue to block_rq_complete, per device and sector);
 * at issue, the issuing task (current) has its pid, comm, cgroup and kernel and user stacks
 * kept with the request; at completion, a latency inside the band (and an rwbs among the keys)
 * counts one capture of them. The issuer is often a kernel worker or the block layer's plug
 * flush rather than the process that wrote: its stack says which. */
#include "explain.h"
#include "block.h"

struct heat_x_issue {
	__u64 ts;
	__u64 cgroup;
	__u32 tgid;
	__s32 kstack;
	__s32 ustack;
	char comm[HEAT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HEAT_BIO_INFLIGHT);
	__type(key, struct heat_bio_req);
	__type(value, struct heat_x_issue);
} heat_x_issued SEC(".maps");

SEC("tracepoint/block/block_rq_issue")
int heat_x_issue(struct trace_event_raw_block_rq *ctx)
{
	struct heat_bio_req req = HEAT_BIO_REQ(ctx);
	struct heat_x_issue io = {};

	if (!heat_current_wanted())
		return 0;
	io.ts = bpf_ktime_get_ns();
	io.cgroup = bpf_get_current_cgroup_id();
	io.tgid = bpf_get_current_pid_tgid() >> 32;
	io.kstack = bpf_get_stackid(ctx, &heat_x_stacks, 0);
	io.ustack = bpf_get_stackid(ctx, &heat_x_stacks, BPF_F_USER_STACK);
	bpf_get_current_comm(io.comm, sizeof(io.comm));
	bpf_map_update_elem(&heat_x_issued, &req, &io, BPF_ANY);
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int heat_x_complete(struct trace_event_raw_block_rq_completion *ctx)
{
	struct heat_bio_req req = HEAT_BIO_REQ(ctx);
	struct heat_x_name rwbs = {};
	struct heat_x_key key = {};
	struct heat_x_issue *io;
	__u64 delta;

	io = bpf_map_lookup_elem(&heat_x_issued, &req);
	if (!io)
		return 0;
	delta = bpf_ktime_get_ns() - io->ts;
	key.tgid = io->tgid;
	key.cgroup = io->cgroup;
	key.kstack = io->kstack;
	key.ustack = io->ustack;
	key.wkstack = HEAT_X_NONE;
	__builtin_memcpy(key.comm, io->comm, sizeof(key.comm));
	bpf_map_delete_elem(&heat_x_issued, &req);
	if (!heat_x_in_band(delta))
		return 0;
	heat_bio_rwbs(ctx, rwbs.name);
	if (!heat_x_key_wanted(&rwbs))
		return 0;
	heat_x_count(&key);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
