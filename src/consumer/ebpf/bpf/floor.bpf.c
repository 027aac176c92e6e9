/* floor.bpf.c: the cheapest possible syscall tracing, two raw tracepoint programs that do
 * nothing. benches/overhead.rs attaches it to measure what any syscall tracer must cost, the
 * floor that the native syscall-latency programs are compared with. Not used by the server. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("raw_tp/sys_enter")
int heat_floor_enter(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

SEC("raw_tp/sys_exit")
int heat_floor_exit(struct bpf_raw_tracepoint_args *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
