/*
 * syscall-latency-log2, D version (DTrace hosts without bpftrace): time from entry to return
 * of every syscall, in nanoseconds, by syscall name, in power-of-two buckets.
 */
syscall:::entry
{
	self->heat_entry = timestamp;
}

syscall:::return
/self->heat_entry/
{
	@latency_ns[probefunc] = quantize(timestamp - self->heat_entry);
	self->heat_entry = 0;
}
