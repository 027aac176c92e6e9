/* futex.bpf.c: the native futex-wait preset. The syscalls:sys_enter_futex and sys_exit_futex
 * tracepoints (only futex(2) calls run them); entry keeps the time of a wait operation per
 * thread (process filter applied there), exit counts it. The histogram is a per-CPU hash keyed
 * by command, in log2 nanoseconds. */
#include "heat.h"

/* Threads waiting at once that can be timed. */
#define HEAT_FUTEX_INFLIGHT 10240
/* Distinct commands seen during a session. */
#define HEAT_FUTEX_KEYS 10240
/* include/uapi/linux/futex.h: the operation without FUTEX_PRIVATE_FLAG and
 * FUTEX_CLOCK_REALTIME, and the operations that block. */
#define HEAT_FUTEX_CMD_MASK 0x7f
#define HEAT_FUTEX_WAIT 0
#define HEAT_FUTEX_LOCK_PI 6
#define HEAT_FUTEX_WAIT_BITSET 9
#define HEAT_FUTEX_WAIT_REQUEUE_PI 11
#define HEAT_FUTEX_LOCK_PI2 13

/* The syscall tracepoints' record (kernel/trace/trace.h): the syscall number, then its
 * arguments; futex's op is the second. */
struct syscall_trace_enter {
	int nr;
	unsigned long args[6];
} __attribute__((preserve_access_index));

struct heat_comm {
	char comm[HEAT_COMM_LEN];
};

/* LRU: a thread killed while it waits (the other threads of an exiting process) never
 * returns, and its entry must not hold a slot for ever; the least recent entries go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HEAT_FUTEX_INFLIGHT);
	__type(key, __u32);
	__type(value, __u64);
} heat_futex_entry SEC(".maps");

HEAT_HASH_HIST(heat_futex_hist, struct heat_comm, HEAT_FUTEX_KEYS);

SEC("tracepoint/syscalls/sys_enter_futex")
int heat_futex_enter(struct syscall_trace_enter *ctx)
{
	__u32 op = ctx->args[1] & HEAT_FUTEX_CMD_MASK, tid = (__u32)bpf_get_current_pid_tgid();
	__u64 now;

	if (op != HEAT_FUTEX_WAIT && op != HEAT_FUTEX_WAIT_BITSET &&
	    op != HEAT_FUTEX_WAIT_REQUEUE_PI && op != HEAT_FUTEX_LOCK_PI &&
	    op != HEAT_FUTEX_LOCK_PI2)
		return 0;
	if (!heat_current_wanted())
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&heat_futex_entry, &tid, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_futex")
int heat_futex_exit(void *ctx)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct heat_comm key = {};
	__u64 *ts, delta;

	ts = bpf_map_lookup_elem(&heat_futex_entry, &tid);
	if (!ts)
		return 0;
	delta = bpf_ktime_get_ns() - *ts;
	bpf_map_delete_elem(&heat_futex_entry, &tid);
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	heat_count_keyed(&heat_futex_hist, &key, delta);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
