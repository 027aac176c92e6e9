/* offcpu.bpf.c: the native offcpu-time preset. One BTF tracepoint on sched_switch, whose
 * arguments are typed task pointers: the time a task leaves the CPU lives in its own storage
 * (no pid-keyed hash), and the task switched in closes its interval. The process filter
 * applies to the task leaving (it is still current). The histogram is a per-CPU hash keyed by
 * the command that was off CPU, in log2 nanoseconds. */
#include "heat.h"
#include <bpf/bpf_tracing.h>

/* Keys kept: distinct commands seen during a session. */
#define HEAT_OFF_KEYS 10240

struct heat_comm {
	char comm[HEAT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} heat_off_since SEC(".maps");

HEAT_HASH_HIST(heat_off_hist, struct heat_comm, HEAT_OFF_KEYS);

SEC("tp_btf/sched_switch")
int BPF_PROG(heat_off_switch, _Bool preempt, struct task_struct *prev, struct task_struct *next)
{
	struct heat_comm key = {};
	__u64 now = bpf_ktime_get_ns(), *ts;

	/* The idle tasks (pid 0) are never off CPU in any sense worth a row. */
	if (prev->pid != 0 && heat_current_wanted()) {
		ts = bpf_task_storage_get(&heat_off_since, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (ts)
			*ts = now;
	}
	ts = bpf_task_storage_get(&heat_off_since, next, 0, 0);
	if (!ts || !*ts)
		return 0;
	now -= *ts;
	*ts = 0;
	bpf_probe_read_kernel_str(key.comm, sizeof(key.comm), next->comm);
	heat_count_keyed(&heat_off_hist, &key, now);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
