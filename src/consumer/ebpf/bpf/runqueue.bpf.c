/* runqueue.bpf.c: the native runqueue-latency preset. BTF tracepoints (tp_btf) on
 * sched_wakeup, sched_wakeup_new and sched_switch, whose arguments are typed task pointers, so
 * the time a task became runnable lives in that task's own storage (no pid-keyed hash). The
 * histogram is a per-CPU hash keyed by the command that waited, in log2 microseconds. */
#include "heat.h"
#include <bpf/bpf_tracing.h>

/* Keys kept: distinct commands seen during a session. */
#define HEAT_RQ_KEYS 10240
/* TASK_RUNNING: a task switched out in this state is still on a run queue. */
#define HEAT_TASK_RUNNING 0

struct heat_comm {
	char comm[HEAT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} heat_rq_queued SEC(".maps");

HEAT_HASH_HIST(heat_rq_hist, struct heat_comm, HEAT_RQ_KEYS);

static __always_inline void heat_queued(struct task_struct *p)
{
	__u64 *ts = bpf_task_storage_get(&heat_rq_queued, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (ts)
		*ts = bpf_ktime_get_ns();
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(heat_rq_wakeup, struct task_struct *p)
{
	heat_queued(p);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(heat_rq_wakenew, struct task_struct *p)
{
	heat_queued(p);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(heat_rq_switch, _Bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct heat_comm key = {};
	__u64 *ts, delta;

	/* Preempted, or yielding while runnable: it waits on a run queue again from now. */
	if (preempt || prev_state == HEAT_TASK_RUNNING)
		heat_queued(prev);
	ts = bpf_task_storage_get(&heat_rq_queued, next, 0, 0);
	if (!ts || !*ts)
		return 0;
	delta = bpf_ktime_get_ns() - *ts;
	*ts = 0;
	bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), next->comm);
	heat_count_keyed(&heat_rq_hist, &key, delta);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
