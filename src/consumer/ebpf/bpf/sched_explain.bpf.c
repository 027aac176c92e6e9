/* sched_explain.bpf.c: the native explain companion of offcpu-time (heat_config.mode
 * HEAT_X_MODE_OFFCPU) and runqueue-latency (HEAT_X_MODE_RUNQUEUE). BTF tracepoints, as the
 * presets' native versions (offcpu.bpf.c, runqueue.bpf.c), timing the same intervals:
 *
 *  - at a switch-out, the task leaving (still current) has its kernel and user stacks and its
 *    cgroup taken into its own storage: where it blocked, or where it was preempted;
 *  - at a wakeup, the waker (current) has its kernel stack, pid and comm taken into the woken
 *    task's storage: who woke it, from where (a timer's interrupt, a lock's release, ...);
 *  - at the switch-in that closes the interval, a latency inside the band (and a comm among
 *    the keys) counts one capture of what the task's storage holds.
 *
 * The stacks are taken at every switch-out the process filter passes (the band is only known
 * at the switch-in), which is this companion's cost, shown as any program's is. */
#include "explain.h"
#include <bpf/bpf_tracing.h>

/* TASK_RUNNING: a task switched out in this state is still on a run queue. */
#define HEAT_TASK_RUNNING 0
/* What a task's storage holds besides the interval's start. */
#define HEAT_X_HAS_STACKS 1
#define HEAT_X_HAS_WAKER 2

struct heat_x_task {
	__u64 since; /* the open interval's start (0: none) */
	__u64 cgroup;
	__s32 kstack;
	__s32 ustack;
	__s32 wkstack;
	__u32 wtgid;
	__u32 has; /* HEAT_X_HAS_* */
	char wcomm[HEAT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct heat_x_task);
} heat_x_task SEC(".maps");

static __always_inline void heat_x_woken(void *ctx, struct task_struct *p, int runqueue)
{
	struct task_struct *waker = bpf_get_current_task_btf();
	struct heat_x_task *t;

	t = bpf_task_storage_get(&heat_x_task, p, 0, runqueue ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
	if (!t)
		return;
	if (runqueue)
		t->since = bpf_ktime_get_ns();
	else if (!t->since)
		return; /* not timed: its switch-out was filtered out */
	t->wkstack = bpf_get_stackid(ctx, &heat_x_stacks, 0);
	t->wtgid = waker->tgid;
	bpf_get_current_comm(t->wcomm, sizeof(t->wcomm));
	t->has |= HEAT_X_HAS_WAKER;
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(heat_x_wakeup, struct task_struct *p)
{
	heat_x_woken(ctx, p, heat_config.mode == HEAT_X_MODE_RUNQUEUE);
	return 0;
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(heat_x_wakenew, struct task_struct *p)
{
	struct heat_x_task *t;

	if (heat_config.mode != HEAT_X_MODE_RUNQUEUE)
		return 0;
	/* A new task has no switch-out yet: its stacks are unknown until it has run once. */
	t = bpf_task_storage_get(&heat_x_task, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (t) {
		t->since = bpf_ktime_get_ns();
		t->has = 0;
	}
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(heat_x_switch, _Bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	struct heat_x_key key = {};
	struct heat_x_name name = {};
	struct heat_x_task *t;
	__u64 now = bpf_ktime_get_ns(), delta;
	int runqueue = heat_config.mode == HEAT_X_MODE_RUNQUEUE;

	/* The idle tasks (pid 0) are never off CPU in any sense worth a row. */
	if (prev->pid != 0 && heat_current_wanted()) {
		t = bpf_task_storage_get(&heat_x_task, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (t) {
			t->kstack = bpf_get_stackid(ctx, &heat_x_stacks, 0);
			t->ustack = bpf_get_stackid(ctx, &heat_x_stacks, BPF_F_USER_STACK);
			t->cgroup = bpf_get_current_cgroup_id();
			t->has = HEAT_X_HAS_STACKS;
			if (!runqueue || preempt || prev_state == HEAT_TASK_RUNNING)
				t->since = now;
			else
				t->since = 0; /* blocked: it queues from its wakeup */
		}
	}
	t = bpf_task_storage_get(&heat_x_task, next, 0, 0);
	if (!t || !t->since)
		return 0;
	delta = now - t->since;
	t->since = 0;
	if (!heat_x_in_band(delta))
		return 0;
	bpf_probe_read_kernel_str(name.name, sizeof(name.name), next->comm);
	if (!heat_x_key_wanted(&name))
		return 0;
	key.tgid = next->tgid;
	__builtin_memcpy(key.comm, name.name, sizeof(key.comm));
	key.cgroup = t->cgroup;
	key.kstack = HEAT_X_NONE;
	key.ustack = HEAT_X_NONE;
	key.wkstack = HEAT_X_NONE;
	if (t->has & HEAT_X_HAS_STACKS) {
		key.kstack = t->kstack;
		key.ustack = t->ustack;
	}
	if (t->has & HEAT_X_HAS_WAKER) {
		key.wkstack = t->wkstack;
		key.wtgid = t->wtgid;
		__builtin_memcpy(key.wcomm, t->wcomm, sizeof(key.wcomm));
	}
	heat_x_count(&key);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
