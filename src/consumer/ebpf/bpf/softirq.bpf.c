/* softirq.bpf.c: the native softirq-latency preset. Raw tracepoints on softirq_entry and
 * softirq_exit (argument: the vector). Softirqs do not nest on a CPU, so the entry time is one
 * per-CPU slot; the histogram is a per-CPU array indexed by vector, in log2 microseconds. */
#include "heat.h"

/* NR_SOFTIRQS: hi, timer, net_tx, net_rx, block, irq_poll, tasklet, sched, hrtimer, rcu. */
#define HEAT_SOFTIRQS 10

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} heat_si_entry SEC(".maps");

HEAT_ARRAY_HIST(heat_si_hist, HEAT_SOFTIRQS);

/* softirq_entry(unsigned int vec_nr) */
SEC("raw_tp/softirq_entry")
int heat_si_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0;
	__u64 *ts = bpf_map_lookup_elem(&heat_si_entry, &zero);

	if (ts)
		*ts = bpf_ktime_get_ns();
	return 0;
}

/* softirq_exit(unsigned int vec_nr) */
SEC("raw_tp/softirq_exit")
int heat_si_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 zero = 0, vec = ctx->args[0];
	__u64 *ts = bpf_map_lookup_elem(&heat_si_entry, &zero);
	struct heat_hist *h;

	if (!ts || !*ts)
		return 0;
	h = bpf_map_lookup_elem(&heat_si_hist, &vec);
	if (h)
		heat_count(h, bpf_ktime_get_ns() - *ts);
	*ts = 0;
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
