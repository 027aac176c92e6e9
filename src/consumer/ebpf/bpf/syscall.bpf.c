/* syscall.bpf.c: the native syscall-latency presets. Raw tracepoints on sys_enter and
 * sys_exit, and a BTF tracepoint on sched_switch.
 *
 * Where the entry time waits for the exit:
 *  - fast path: a per-CPU slot holding the one syscall in flight on this CPU (owner, entry
 *    time, number). The owner is the task's saved user registers, which both raw tracepoints
 *    get as their first argument: a free, unique name for the task. A syscall that returns
 *    without leaving its CPU (nearly all of them: no sleep, no preemption) finds its entry
 *    there, with no helper beyond the clock;
 *  - slow path: when a task is switched out with its entry still in the slot (it sleeps in the
 *    syscall or is preempted), sched_switch moves the entry into that task's own storage
 *    (task storage, no tid-keyed hash), where its exit finds it on whatever CPU it returns.
 * The slot is claimed back at exit with compare-and-swap, so an entry is used at most once even
 * if the exit program is preempted between reading the slot and clearing it.
 *
 * The histogram is a per-CPU array indexed by syscall number: one array lookup and one add. */
#include "heat.h"
#include <bpf/bpf_tracing.h>

/* Syscall numbers measured: every number below this (x86_64 and the generic table end near
 * 470). Larger or negative numbers (x32, invalid calls) are not counted. */
#define HEAT_SYSCALL_SLOTS 512

/* A syscall in flight. In the per-CPU slot `owner` says whose it is (the address of the
 * task's pt_regs; 0: nobody's); it is written last at entry, so a slot that names a task holds
 * that task's time and number. */
struct heat_sys_entry {
	__u64 owner;
	__u64 ts;
	__u64 id;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct heat_sys_entry);
} heat_sys_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct heat_sys_entry);
} heat_sys_task SEC(".maps");

HEAT_ARRAY_HIST(heat_sys_hist, HEAT_SYSCALL_SLOTS);

/* sys_enter(struct pt_regs *regs, long id) */
SEC("raw_tp/sys_enter")
int heat_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	struct heat_sys_entry *slot;

	if (!heat_current_wanted())
		return 0;
	slot = bpf_map_lookup_elem(&heat_sys_cpu, &zero);
	if (!slot)
		return 0;
	slot->ts = bpf_ktime_get_ns();
	slot->id = ctx->args[1];
	slot->owner = ctx->args[0];
	return 0;
}

/* sys_exit(struct pt_regs *regs, long ret) */
SEC("raw_tp/sys_exit")
int heat_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 owner = ctx->args[0];
	struct heat_sys_entry *slot, *e;
	struct heat_hist *h;
	__u64 ts, id;
	__u32 zero = 0, key;

	slot = bpf_map_lookup_elem(&heat_sys_cpu, &zero);
	if (!slot)
		return 0;
	ts = slot->ts;
	id = slot->id;
	if (slot->owner != owner || __sync_val_compare_and_swap(&slot->owner, owner, 0) != owner) {
		/* Not in the slot: the task left its CPU during the syscall. */
		e = bpf_task_storage_get(&heat_sys_task, bpf_get_current_task_btf(), 0, 0);
		if (!e || !e->ts)
			return 0;
		ts = e->ts;
		id = e->id;
		e->ts = 0;
	}
	if (id >= HEAT_SYSCALL_SLOTS)
		return 0;
	key = id;
	h = bpf_map_lookup_elem(&heat_sys_hist, &key);
	if (h)
		heat_count(h, now - ts);
	return 0;
}

/* sched_switch(bool preempt, struct task_struct *prev, struct task_struct *next,
 *              unsigned int prev_state) */
SEC("tp_btf/sched_switch")
int BPF_PROG(heat_sys_switch, _Bool preempt, struct task_struct *prev)
{
	__u32 zero = 0;
	struct heat_sys_entry *slot, *e;
	__u64 owner;

	slot = bpf_map_lookup_elem(&heat_sys_cpu, &zero);
	if (!slot || !slot->owner)
		return 0;
	owner = (__u64)bpf_task_pt_regs(prev);
	if (slot->owner != owner)
		return 0;
	e = bpf_task_storage_get(&heat_sys_task, prev, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (e) {
		e->id = slot->id;
		e->ts = slot->ts;
	}
	__sync_val_compare_and_swap(&slot->owner, owner, 0);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
