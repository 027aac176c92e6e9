/* heat.h: what every heat-actix BPF program shares: the histogram value, the two bucket
 * shapes (bpftrace's lhist and hist, so native frames carry the very same buckets), and the
 * process filter and exclusion that user space writes into .rodata before load.
 *
 * Delta semantics: histogram slots are per-CPU counters that only ever grow. User space never
 * resets them; each walk reads every CPU's counters, sums them and sends the difference from
 * the previous walk's sums. Each slot is a naturally aligned u64 copied whole by the kernel, so
 * an increment is either in this walk's reading or in the next one: no event is lost between
 * a read and a reset (there is no reset) and none is counted twice.
 */
#ifndef HEAT_H
#define HEAT_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* The lhist top bucket starts at 64 us. */
#define HEAT_LHIST_TOP_NS 64000ULL
/* ceil(2^32 / 2000): (x * this) >> 32 == x / 2000 for every x < HEAT_LHIST_TOP_NS (a division
 * is the dearest instruction on the hot path; the Rust tests check the identity exhaustively). */
#define HEAT_DIV_2000_MUL 2147484ULL

/* Slots per histogram: enough for log2 of a u64 (value 0, then 64 powers of two). */
#define HEAT_SLOTS 65
/* Length of a task's comm, with its NUL (TASK_COMM_LEN). */
#define HEAT_COMM_LEN 16

/* Bucket shapes, chosen per preset through heat_config.shape. */
#define HEAT_SHAPE_LHIST_US_0_64_2 0 /* bpftrace lhist(us, 0, 64, 2) */
#define HEAT_SHAPE_LOG2_NS 1         /* bpftrace hist(ns) */
#define HEAT_SHAPE_LOG2_US 2         /* bpftrace hist(us) */
/* bpftrace lhist((nsecs % 1000000000) / 1000000, 0, 1000, 20): the value is a timestamp, and
 * the slot its millisecond offset within the second, in 20 ms rows (cpu-profile). */
#define HEAT_SHAPE_LHIST_MS_OFFSET 3

/* Nanoseconds in a second and in a millisecond, and the offset rows' width in ms. */
#define HEAT_NS_PER_S 1000000000ULL
#define HEAT_NS_PER_MS 1000000ULL
#define HEAT_OFFSET_ROW_MS 20

/* The counts, then the sum of the values counted, in nanoseconds before any unit change (user
 * space divides for the microsecond shapes): the exact `_sum` of the Prometheus export. Like the
 * slots it only grows (wrapping after 584 years of nanoseconds), and is read as a delta. */
struct heat_hist {
	__u64 slots[HEAT_SLOTS];
	__u64 sum;
};

/* Set by user space before load (the verifier then prunes the branches not taken). It must
 * stay the only read-only datum: user space writes it at offset 0 of .rodata. */
struct heat_config {
	__u32 shape; /* HEAT_SHAPE_* */
	__u32 pid;   /* only this process (thread group id); 0 measures every process */
	char comm[HEAT_COMM_LEN]; /* only tasks with this comm; empty measures every task */
	/* Leaves out this process (heat-actix itself, so the picture is not of its own map reads);
	 * 0 leaves out nothing. */
	__u32 exclude_tgid;
	/* Non-zero: also leaves out every process whose parent is exclude_tgid (its tracers). */
	__u32 exclude_children;
	/* The explain companions' band (explain.h), in ns: lo inclusive, hi exclusive (0: none).
	 * Presets leave them zero and never read them. */
	__u64 band_lo_ns;
	__u64 band_hi_ns;
	/* An explain companion's mode (HEAT_X_MODE_*), and non-zero when only the keys in its
	 * key map are captured. */
	__u32 mode;
	__u32 keyed;
};

const volatile struct heat_config heat_config = {};

/* Only the fields read here; libbpf finds their offsets in the running kernel's BTF (CO-RE). */
struct task_struct {
	int pid;
	int tgid;
	char comm[HEAT_COMM_LEN];
	struct task_struct *real_parent;
} __attribute__((preserve_access_index));

/* Index of the highest set bit of a non-zero v (floor(log2 v)), without loops. */
static __always_inline __u32 heat_log2(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xffffffffULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xffffULL) << 4; v >>= shift; r |= shift;
	shift = (v > 0xffULL) << 3; v >>= shift; r |= shift;
	shift = (v > 0xfULL) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3ULL) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r;
}

/* The slot of a latency of ns nanoseconds under heat_config.shape. Slot layouts, which user space
 * turns back into bucket bounds:
 *  lhist 0..64 step 2: slot 0 below 0 (never used, latencies are not negative), slot 1 + i
 *    for [2i, 2i + 1], slot 33 for 64 and up;
 *  log2: slot 0 for the value 0, slot 1 + k for [2^k, 2^(k+1) - 1];
 *  ms offset: slot 1 + i for offsets [20i, 20i + 19] ms, i < 50 (slot 0, below 0, and slot
 *    51, 1000 ms and up, stay empty: an offset within a second is neither). */
static __always_inline __u32 heat_slot(__u64 ns)
{
	__u64 v;

	if (heat_config.shape == HEAT_SHAPE_LHIST_US_0_64_2) {
		if (ns >= HEAT_LHIST_TOP_NS)
			return 33;
		/* 1 + ns / 2000 without a division: exact for every ns below the top bucket. */
		return 1 + (__u32)((ns * HEAT_DIV_2000_MUL) >> 32);
	}
	/* Divisions by constants: only the 99 Hz profile takes this branch. */
	if (heat_config.shape == HEAT_SHAPE_LHIST_MS_OFFSET)
		return 1 + (__u32)((ns % HEAT_NS_PER_S) / HEAT_NS_PER_MS / HEAT_OFFSET_ROW_MS);
	v = heat_config.shape == HEAT_SHAPE_LOG2_US ? ns / 1000 : ns;
	return v == 0 ? 0 : 1 + heat_log2(v);
}

/* Counts one latency into a histogram and adds it to the sum. The adds are atomic: tracing
 * programs run with migration disabled but may be preempted, so two tasks can share a CPU's
 * slot. The sum is one more atomic add per event; the profile's ms offset (a point in time, not
 * a measure) has no sum, and the verifier prunes the add there. */
static __always_inline void heat_count(struct heat_hist *h, __u64 ns)
{
	__u32 slot = heat_slot(ns);

	/* clang knows the slot is in range and would drop the check the verifier needs. */
	asm volatile("" : "+r"(slot));
	if (slot < HEAT_SLOTS) {
		__sync_fetch_and_add(&h->slots[slot], 1);
		if (heat_config.shape != HEAT_SHAPE_LHIST_MS_OFFSET)
			__sync_fetch_and_add(&h->sum, ns);
	}
}

/* A per-CPU histogram array indexed by a small number (syscall number, softirq vector). */
#define HEAT_ARRAY_HIST(name, entries)                         \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);       \
		__uint(max_entries, entries);                  \
		__type(key, __u32);                            \
		__type(value, struct heat_hist);               \
	} name SEC(".maps")

/* A per-CPU histogram hash keyed by key_type (a comm, an rwbs string). */
#define HEAT_HASH_HIST(name, key_type, entries)                \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);        \
		__uint(max_entries, entries);                  \
		__type(key, key_type);                         \
		__type(value, struct heat_hist);               \
	} name SEC(".maps")

/* A new key's first value. In .bss, not .rodata (which holds only heat_config), and too big
 * for the stack; unused (and dropped) in objects whose histograms are arrays. */
static struct heat_hist heat_zero_hist;

/* Counts one latency under `key` of a per-CPU hash histogram, adding the key when it is new.
 * A key that does not fit (the map is full) is not counted. */
static __always_inline void heat_count_keyed(void *map, const void *key, __u64 ns)
{
	struct heat_hist *h = bpf_map_lookup_elem(map, key);

	if (!h) {
		bpf_map_update_elem(map, key, &heat_zero_hist, BPF_NOEXIST);
		h = bpf_map_lookup_elem(map, key);
		if (!h)
			return;
	}
	heat_count(h, ns);
}

/* True when the current task passes the process filter and is not left out. The task is read
 * through its BTF pointer (plain loads, one helper), and only when a filter or an exclusion
 * asks for it: with neither, the verifier prunes all of it. */
static __always_inline int heat_current_wanted(void)
{
	char comm[HEAT_COMM_LEN];
	struct task_struct *task;
	__u32 tgid;

	if (heat_config.pid || heat_config.exclude_tgid) {
		task = bpf_get_current_task_btf();
		tgid = task->tgid;
		if (heat_config.pid && tgid != heat_config.pid)
			return 0;
		if (heat_config.exclude_tgid) {
			if (tgid == heat_config.exclude_tgid)
				return 0;
			if (heat_config.exclude_children &&
			    task->real_parent->tgid == heat_config.exclude_tgid)
				return 0;
		}
	}
	if (!heat_config.comm[0])
		return 1;
	bpf_get_current_comm(comm, sizeof(comm));
#pragma unroll
	for (int i = 0; i < HEAT_COMM_LEN; i++) {
		if (comm[i] != heat_config.comm[i])
			return 0;
		if (!comm[i])
			break;
	}
	return 1;
}

#endif
