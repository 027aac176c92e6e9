/*
 * syscall-latency, D version (DTrace hosts without bpftrace): time from entry to return of
 * every syscall, in microseconds, by syscall name. Linear 2 us buckets from 0 to 64 us, as the
 * 2011 Heat Tracer drew it; slower calls land in the open bucket [64, inf).
 */
syscall:::entry
{
	self->heat_entry = timestamp;
}

syscall:::return
/self->heat_entry/
{
	@latency_us[probefunc] = lquantize((timestamp - self->heat_entry) / 1000, 0, 64, 2);
	self->heat_entry = 0;
}
