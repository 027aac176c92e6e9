/*
 * tcp-connect-latency, D version (DTrace hosts without bpftrace): time an active TCP connect
 * takes, from sending the SYN (connect-request) to ESTABLISHED (connect-established, the
 * handshake round trip and any SYN retransmissions), in microseconds, keyed by remote port, in
 * power-of-two buckets. The SYN-ACK arrives in whatever context receives it, so the start time
 * waits under the connection (tcps_addr), not in self->; a refused connect is forgotten.
 */
tcp:::connect-request
{
	heat_syn[args[3]->tcps_addr] = timestamp;
}

tcp:::connect-established
/heat_syn[args[3]->tcps_addr]/
{
	@latency_us[args[3]->tcps_rport] = quantize((timestamp - heat_syn[args[3]->tcps_addr]) / 1000);
	heat_syn[args[3]->tcps_addr] = 0;
}

tcp:::connect-refused
{
	heat_syn[args[3]->tcps_addr] = 0;
}
