/*
 * cpu-profile, D version (DTrace hosts without bpftrace): on-CPU samples, 99 a second on every
 * CPU, keyed by the command that was running, bucketed by when in the second they were taken:
 * the offset in milliseconds within the current second of DTrace's timestamp clock, in 50 rows
 * of 20 ms (FlameScope's subsecond-offset view). Idle CPUs (pid 0) are not sampled.
 */
profile-99
/pid != 0/
{
	@offset_ms[execname] = lquantize((timestamp % 1000000000) / 1000000, 0, 1000, 20);
}
