/*
 * offcpu-time, D version (DTrace hosts without bpftrace): time a thread spends off CPU, from
 * being switched out (blocked, sleeping or preempted) to being switched in again, in
 * nanoseconds, keyed by the command that was off CPU, in power-of-two buckets. off-cpu runs in
 * the thread leaving the CPU, on-cpu in the thread coming back, so self-> joins the two.
 */
sched:::off-cpu
/pid != 0/
{
	self->heat_off = timestamp;
}

sched:::on-cpu
/self->heat_off/
{
	@offcpu_ns[execname] = quantize(timestamp - self->heat_off);
	self->heat_off = 0;
}
