/* profile.bpf.c: the native cpu-profile preset. A perf_event program that user space attaches
 * to one software cpu-clock event per online CPU, sampling at 99 Hz as bpftrace's
 * profile:hz:99 does. Each sample of a non-idle task counts under its command, in the row of
 * its millisecond offset within the current second of the monotonic clock (the same clock as
 * bpftrace's nsecs). The process filter applies to the sampled task (it is current). */
#include "heat.h"
#include <linux/bpf_perf_event.h>

/* Distinct commands seen during a session. */
#define HEAT_PROF_KEYS 10240

struct heat_comm {
	char comm[HEAT_COMM_LEN];
};

HEAT_HASH_HIST(heat_prof_hist, struct heat_comm, HEAT_PROF_KEYS);

SEC("perf_event")
int heat_prof_sample(struct bpf_perf_event_data *ctx)
{
	struct heat_comm key = {};

	/* The idle tasks (thread group 0) are not on-CPU work. */
	if (!(bpf_get_current_pid_tgid() >> 32) || !heat_current_wanted())
		return 0;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	heat_count_keyed(&heat_prof_hist, &key, bpf_ktime_get_ns());
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
