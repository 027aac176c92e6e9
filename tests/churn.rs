//! Churn: a thousand sessions come and go — some drop the TCP connection mid-start, some after
//! the program attached, some close politely — and afterwards the server holds exactly what it
//! held before: no tracer, no thread, no fd, no BPF program.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{bpf_programs, require_tracing, Received, Server};

/// Sessions in the whole test.
const CYCLES: usize = 1000;
/// Clients churning at once.
const PARALLEL: usize = 4;

#[test]
fn a_thousand_sessions_leave_nothing_behind() {
    require_tracing();
    let server = Server::start_with(support::TEST_CONFIG, &["--max-sessions", "64"], &[]);
    let mut warm = server.connect();
    warm.expect("hello", Duration::from_secs(5));
    drop(warm);
    assert!(Server::eventually(Duration::from_secs(2), || server
        .metric("heat_sessions_active")
        == Some(0.0)));
    let (threads, fds, programs) = (server.threads(), server.fds(), bpf_programs());

    let began = Instant::now();
    let began = &began;
    let mut kinds = [0usize; 4];
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..PARALLEL)
            .map(|w| {
                let server = &server;
                scope.spawn(move || {
                    let mut kinds = [0usize; 4];
                    for i in (w..CYCLES).step_by(PARALLEL) {
                        let mut client = server.connect();
                        client.expect("hello", Duration::from_secs(10));
                        // Every other session runs on bpftrace, the rest natively where the
                        // kernel allows (in-process BPF programs and maps).
                        let backend = if (i / PARALLEL / 4).is_multiple_of(2) { "bpftrace" } else { "auto" };
                        let mut start = json!({"type": "start", "preset": "syscall-latency", "tick_ms": 100});
                        if backend == "bpftrace" {
                            start["backend"] = json!("bpftrace");
                        }
                        client.send(start);
                        let kind = (i / PARALLEL) % 4;
                        kinds[kind] += 1;
                        match kind {
                            // Abrupt TCP drop while bpftrace is still starting.
                            0 => {}
                            // Abrupt drop once attached.
                            1 => {
                                client.expect("started", Duration::from_secs(60));
                            }
                            // Abrupt drop after the first frame.
                            2 => {
                                client.expect("started", Duration::from_secs(60));
                                while !matches!(client.recv(Duration::from_secs(10)), Received::Json(ref m) if m["type"] == "frame") {}
                            }
                            // A polite websocket close after the start.
                            _ => {
                                client.expect("started", Duration::from_secs(60));
                                let _ = client.ws.close(None);
                                let _ = client.ws.flush();
                            }
                        }
                        drop(client);
                        if i % 100 < PARALLEL {
                            println!("churn: session {i} at {:.1?}", began.elapsed());
                        }
                    }
                    kinds
                })
            })
            .collect();
        for worker in workers {
            for (total, n) in kinds.iter_mut().zip(worker.join().unwrap()) {
                *total += n;
            }
        }
    });

    // A BPF program lives while some fd or link holds it: ours are held by bpftrace children
    // (none may remain) or by the server itself (none may remain). The system-wide count is
    // printed too; on a shared machine other tools may load programs meanwhile.
    let settled = Server::eventually(Duration::from_secs(10), || {
        server.bpftrace_children().is_empty()
            && server.metric("heat_sessions_active") == Some(0.0)
            && server.threads() == threads
            && server.fds() <= fds
            && server.bpf_fds() == 0
    });
    let (tracers, threads_now, fds_now, programs_now) = (
        server.bpftrace_children().len(),
        server.threads(),
        server.fds(),
        bpf_programs(),
    );
    println!(
        "churn: {CYCLES} sessions in {:.1?} (drop while starting {}, drop attached {}, drop after a frame {}, close {}); \
         after: bpftrace {tracers}, threads {threads_now} (before {threads}), fds {fds_now} (before {fds}), \
         BPF objects held by the server {}, BPF programs system-wide {programs_now} (before {programs})",
        began.elapsed(),
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3],
        server.bpf_fds(),
    );
    assert!(settled, "something outlived its session");
    assert_eq!(
        server.metric("heat_sessions_started_total"),
        Some((CYCLES + 1) as f64)
    );
}
