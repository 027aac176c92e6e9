/* tcpconnect.bpf.c: the native tcp-connect-latency preset. The sock:inet_sock_set_state
 * tracepoint: SYN_SENT (set by connect(2), in the connecting process, where the process filter
 * applies) starts a socket's clock, keyed by the socket's address as the bpftrace version
 * keys it; leaving SYN_SENT stops it, and only ESTABLISHED is counted. The histogram is a
 * per-CPU hash keyed by remote port, in log2 microseconds. */
#include "heat.h"

/* Connects in flight at once that can be timed. */
#define HEAT_TCP_INFLIGHT 10240
/* Remote ports seen during a session. */
#define HEAT_TCP_KEYS 10240
/* include/net/tcp_states.h, and IPPROTO_TCP. */
#define HEAT_TCP_ESTABLISHED 1
#define HEAT_TCP_SYN_SENT 2
#define HEAT_IPPROTO_TCP 6

/* The tracepoint record, only the fields read here; CO-RE finds their offsets. */
struct trace_event_raw_inet_sock_set_state {
	const void *skaddr;
	int oldstate;
	int newstate;
	__u16 dport;
	__u16 protocol;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, HEAT_TCP_INFLIGHT);
	__type(key, __u64);
	__type(value, __u64);
} heat_tcp_syn SEC(".maps");

HEAT_HASH_HIST(heat_tcp_hist, __u32, HEAT_TCP_KEYS);

SEC("tracepoint/sock/inet_sock_set_state")
int heat_tcp_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	__u64 sk = (__u64)ctx->skaddr, now = bpf_ktime_get_ns(), *ts;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	__u32 port;

	if (newstate == HEAT_TCP_SYN_SENT) {
		if (ctx->protocol == HEAT_IPPROTO_TCP && heat_current_wanted())
			bpf_map_update_elem(&heat_tcp_syn, &sk, &now, BPF_ANY);
		return 0;
	}
	if (oldstate != HEAT_TCP_SYN_SENT)
		return 0;
	ts = bpf_map_lookup_elem(&heat_tcp_syn, &sk);
	if (!ts)
		return 0;
	now -= *ts;
	bpf_map_delete_elem(&heat_tcp_syn, &sk);
	if (newstate != HEAT_TCP_ESTABLISHED)
		return 0;
	port = ctx->dport;
	heat_count_keyed(&heat_tcp_hist, &port, now);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
