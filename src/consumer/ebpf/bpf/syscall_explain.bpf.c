/* syscall_explain.bpf.c: the native explain companion of syscall-latency and
 * syscall-latency-log2. BTF tracepoints on sys_enter and sys_exit: the entry time and the
 * syscall number wait in the task's own storage (freed with the task, so a thread that exits
 * inside a syscall leaves nothing behind), and at the return a latency inside the band (and a
 * syscall among the keys) counts one capture of the process, its cgroup and the kernel and
 * user stacks at the return. The stacks are taken only for the calls in the band: outside it a
 * call costs the timing and one compare. */
#include "explain.h"
#include <bpf/bpf_tracing.h>

struct heat_x_call {
	__u64 since; /* 0: no call timed */
	__u64 nr;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct heat_x_call);
} heat_x_call SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(heat_x_enter, void *regs, long id)
{
	struct heat_x_call *call;

	if (!heat_current_wanted())
		return 0;
	call = bpf_task_storage_get(&heat_x_call, bpf_get_current_task_btf(), 0,
				    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (call) {
		call->since = bpf_ktime_get_ns();
		call->nr = id;
	}
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(heat_x_exit, void *regs, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct heat_x_key key = {};
	struct heat_x_name nr = {};
	struct heat_x_call *call;
	__u64 delta;

	call = bpf_task_storage_get(&heat_x_call, task, 0, 0);
	if (!call || !call->since)
		return 0;
	delta = bpf_ktime_get_ns() - call->since;
	call->since = 0;
	if (!heat_x_in_band(delta))
		return 0;
	/* A syscall key is its number, native-endian in the name's first four bytes. */
	*(__u32 *)nr.name = (__u32)call->nr;
	if (!heat_x_key_wanted(&nr))
		return 0;
	key.tgid = task->tgid;
	key.kstack = bpf_get_stackid(ctx, &heat_x_stacks, 0);
	key.ustack = bpf_get_stackid(ctx, &heat_x_stacks, BPF_F_USER_STACK);
	key.wkstack = HEAT_X_NONE;
	key.cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	heat_x_count(&key);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
