/* block.h: what the block-io-latency objects share (blockio.bpf.c, the preset; and
 * blockio_explain.bpf.c, its explain companion): the block_rq tracepoint records they read,
 * and a request's identity from issue to completion, as the bpftrace version keys it. */
#ifndef HEAT_BLOCK_H
#define HEAT_BLOCK_H

#include "heat.h"

/* Requests in flight at once that can be timed. */
#define HEAT_BIO_INFLIGHT 10240
/* Bytes of rwbs kept in a key (RWBS_LEN is 8 or 10 depending on the kernel). */
#define HEAT_RWBS_LEN 16

/* Tracepoint records, only the fields read here; CO-RE finds their offsets. */
struct trace_event_raw_block_rq {
	__u32 dev;
	__u64 sector;
} __attribute__((preserve_access_index));

struct trace_event_raw_block_rq_completion {
	__u32 dev;
	__u64 sector;
	char rwbs[10]; /* RWBS_LEN on this kernel; an older one (8) fails to load and falls back */
} __attribute__((preserve_access_index));

/* A request in flight: its device and first sector. */
struct heat_bio_req {
	__u64 dev;
	__u64 sector;
};

/* The request a block_rq record is about. */
#define HEAT_BIO_REQ(ctx) ((struct heat_bio_req){ .dev = (ctx)->dev, .sector = (ctx)->sector })

/* Copies a completion's rwbs into out (HEAT_RWBS_LEN bytes, zeroed by the caller) by helper:
 * clang would turn byte loads into loads from a moved ctx pointer, which the verifier refuses.
 * rwbs is NUL-terminated within its array. */
static __always_inline void heat_bio_rwbs(struct trace_event_raw_block_rq_completion *ctx, char *out)
{
	bpf_probe_read_kernel(out, sizeof(ctx->rwbs), ctx->rwbs);
}

#endif
