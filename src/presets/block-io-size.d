/*
 * block-io-size, D version (DTrace hosts without bpftrace): size of each block I/O request
 * when it is started, in bytes, keyed by operation (R read, W write: the io provider's b_flags
 * has no sync or metadata flags to add as Linux's rwbs does), in power-of-two buckets.
 */
io:::start
{
	@size_bytes[args[0]->b_flags & B_READ ? "R" : "W"] = quantize(args[0]->b_bcount);
}
