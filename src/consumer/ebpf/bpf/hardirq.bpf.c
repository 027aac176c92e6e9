/* hardirq.bpf.c: the native hardirq-latency preset. BTF tracepoints on irq_handler_entry and
 * irq_handler_exit, whose arguments include the handler's struct irqaction, so the exit reads
 * the IRQ name itself. Hard interrupts do not nest on a CPU, so the entry time is one per-CPU
 * slot; the histogram is a per-CPU hash keyed by IRQ name, in log2 nanoseconds. */
#include "heat.h"
#include <bpf/bpf_tracing.h>

/* Keys kept: distinct IRQ names seen during a session. */
#define HEAT_HI_KEYS 1024
/* Bytes of an IRQ name kept, with its NUL: bpftrace's default str() length, so the two
 * backends truncate long names alike. */
#define HEAT_HI_NAME_LEN 64

/* Only the field read here; CO-RE finds its offset. */
struct irqaction {
	const char *name;
} __attribute__((preserve_access_index));

struct heat_irq_name {
	char name[HEAT_HI_NAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} heat_hi_entry SEC(".maps");

HEAT_HASH_HIST(heat_hi_hist, struct heat_irq_name, HEAT_HI_KEYS);

SEC("tp_btf/irq_handler_entry")
int BPF_PROG(heat_hi_enter, int irq, struct irqaction *action)
{
	__u32 zero = 0;
	__u64 *ts = bpf_map_lookup_elem(&heat_hi_entry, &zero);

	if (ts)
		*ts = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/irq_handler_exit")
int BPF_PROG(heat_hi_exit, int irq, struct irqaction *action, int ret)
{
	struct heat_irq_name key = {};
	__u32 zero = 0;
	__u64 *ts = bpf_map_lookup_elem(&heat_hi_entry, &zero), delta;

	if (!ts || !*ts)
		return 0;
	delta = bpf_ktime_get_ns() - *ts;
	*ts = 0;
	bpf_probe_read_kernel_str(key.name, sizeof(key.name), action->name);
	heat_count_keyed(&heat_hi_hist, &key, delta);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
