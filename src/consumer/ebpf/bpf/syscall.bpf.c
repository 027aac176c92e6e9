/* syscall.bpf.c: the native syscall-latency presets. Raw tracepoints on sys_enter and
 * sys_exit; the entry time and syscall number live in task storage (no hash lookup keyed by
 * tid, which is what makes bpftrace's version costly); the histogram is a per-CPU array
 * indexed by syscall number, so the exit path is one array lookup and one add. */
#include "heat.h"

/* Syscall numbers measured: every number below this (x86_64 and the generic table end near
 * 470). Larger or negative numbers (x32, invalid calls) are not counted. */
#define HEAT_SYSCALL_SLOTS 512

struct heat_sys_entry {
	__u64 ts;
	__u64 id;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct heat_sys_entry);
} heat_sys_entry SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HEAT_SYSCALL_SLOTS);
	__type(key, __u32);
	__type(value, struct heat_hist);
} heat_sys_hist SEC(".maps");

/* sys_enter(struct pt_regs *regs, long id) */
SEC("raw_tp/sys_enter")
int heat_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	struct heat_sys_entry *e;

	if (!heat_current_wanted())
		return 0;
	e = bpf_task_storage_get(&heat_sys_entry, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!e)
		return 0;
	e->id = ctx->args[1];
	e->ts = bpf_ktime_get_ns();
	return 0;
}

/* sys_exit(struct pt_regs *regs, long ret) */
SEC("raw_tp/sys_exit")
int heat_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct heat_sys_entry *e;
	struct heat_hist *h;
	__u64 now = bpf_ktime_get_ns();
	__u32 id;

	e = bpf_task_storage_get(&heat_sys_entry, bpf_get_current_task_btf(), 0, 0);
	if (!e || !e->ts)
		return 0;
	id = e->id;
	if (e->id >= HEAT_SYSCALL_SLOTS) {
		e->ts = 0;
		return 0;
	}
	h = bpf_map_lookup_elem(&heat_sys_hist, &id);
	if (h)
		heat_count(h, now - e->ts);
	e->ts = 0;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
