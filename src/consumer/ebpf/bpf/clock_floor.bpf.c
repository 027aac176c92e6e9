/* clock_floor.bpf.c: the least a syscall *latency* tracer can do, two raw tracepoint programs
 * that read the clock at entry and at exit and keep the difference, with no owner check, no
 * atomics and no histogram. benches/overhead.rs attaches it beside the empty pair (floor.bpf.c)
 * to show what the two clock reads alone cost. Not used by the server. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} heat_clock_floor SEC(".maps");

SEC("raw_tp/sys_enter")
int heat_clock_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 entry = 0;
	__u64 *ts = bpf_map_lookup_elem(&heat_clock_floor, &entry);

	if (ts)
		*ts = bpf_ktime_get_ns();
	return 0;
}

SEC("raw_tp/sys_exit")
int heat_clock_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 now = bpf_ktime_get_ns();
	__u32 entry = 0, total = 1;
	__u64 *ts = bpf_map_lookup_elem(&heat_clock_floor, &entry);
	__u64 *sum = bpf_map_lookup_elem(&heat_clock_floor, &total);

	if (ts && sum)
		*sum += now - *ts;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
