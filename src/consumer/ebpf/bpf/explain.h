/* explain.h: what the native explain companions share (see src/consumer/ebpf/stacks.rs): the
 * stack map, the capture map user space walks, the key filter, and the band test.
 *
 * Cumulative semantics, as the histograms' (heat.h): a capture's count only grows, user space
 * reads it every tick and reports the difference from the previous walk. Nothing is reset, so
 * no capture falls between a read and a reset. A capture that finds its map full is counted
 * in heat_x_missed instead, so the loss is told, never silent.
 */
#ifndef HEAT_EXPLAIN_H
#define HEAT_EXPLAIN_H

#include "heat.h"

/* Modes of the scheduler companion (heat_config.mode). */
#define HEAT_X_MODE_OFFCPU 0   /* switch-out to switch-in: offcpu-time */
#define HEAT_X_MODE_RUNQUEUE 1 /* wakeup (or preemption) to switch-in: runqueue-latency */

/* Distinct captures (process, cgroup, stacks, waker) kept: past them, heat_x_missed counts. */
#define HEAT_X_CAPTURES 32768
/* Distinct stacks kept (kernel and user share the map); the kernel rounds the hash buckets up
 * to a power of two, and a stack whose bucket holds another is lost (-EEXIST), not replaced:
 * a replaced stack would give older captures the wrong frames. */
#define HEAT_X_STACKS 16384
/* Frames kept per stack: deeper stacks lose their outermost frames. */
#define HEAT_X_DEPTH 64
/* Keys a companion may be limited to (src/program/explain.rs MAX_KEYS). */
#define HEAT_X_KEYS 64
/* A stack id for "no stack here" (no waker, no switch-out seen): below every -errno. */
#define HEAT_X_NONE (-100000)

/* One capture: who, where (both stacks), and who woke it. Laid out without padding, since
 * the whole struct is a hash key (stacks.rs reads it at these offsets). */
struct heat_x_key {
	__u32 tgid;
	__s32 kstack; /* a heat_x_stacks id, or -errno, or HEAT_X_NONE */
	__s32 ustack;
	__s32 wkstack; /* the waker's kernel stack */
	__u64 cgroup;
	__u32 wtgid; /* the waker's process (0: none) */
	char comm[HEAT_COMM_LEN];
	char wcomm[HEAT_COMM_LEN];
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, HEAT_X_STACKS);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, HEAT_X_DEPTH * sizeof(__u64));
} heat_x_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HEAT_X_CAPTURES);
	__type(key, struct heat_x_key);
	__type(value, __u64);
} heat_x_captures SEC(".maps");

/* Captures lost to a full capture map, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} heat_x_missed SEC(".maps");

/* The keys (comm or rwbs, NUL-padded) captured when heat_config.keyed; written before attach. */
struct heat_x_name {
	char name[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HEAT_X_KEYS);
	__type(key, struct heat_x_name);
	__type(value, __u8);
} heat_x_keys SEC(".maps");

/* Whether a latency of ns falls in the band. */
static __always_inline int heat_x_in_band(__u64 ns)
{
	if (ns < heat_config.band_lo_ns)
		return 0;
	return !heat_config.band_hi_ns || ns < heat_config.band_hi_ns;
}

/* Whether a key (a comm or rwbs) is among those captured. */
static __always_inline int heat_x_key_wanted(const struct heat_x_name *name)
{
	return !heat_config.keyed || bpf_map_lookup_elem(&heat_x_keys, name);
}

/* Counts one capture; one that does not fit is counted as missed. */
static __always_inline void heat_x_count(const struct heat_x_key *key)
{
	__u64 one = 1, *n = bpf_map_lookup_elem(&heat_x_captures, key);
	__u32 zero = 0;

	if (n) {
		__sync_fetch_and_add(n, 1);
		return;
	}
	if (!bpf_map_update_elem(&heat_x_captures, key, &one, BPF_NOEXIST))
		return;
	/* Another CPU added it first, or the map is full. */
	n = bpf_map_lookup_elem(&heat_x_captures, key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return;
	}
	n = bpf_map_lookup_elem(&heat_x_missed, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

#endif
