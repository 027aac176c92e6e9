//! What a program costs, measured by the kernel (BPF run-time statistics) and carried on every
//! frame as `cost`, and the CPU budget that stops a program costing more than it may.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{getppid_n, require_tracing, Received, Server, BUDGET_TEST_CONFIG, TEST_CONFIG};

/// Walk interval the tests ask for.
const TEST_TICK_MS: u64 = 200;
/// A budget no test workload reaches, so that the cost tests are not stopped by it.
const NO_BUDGET: &str = "max_program_cpu_percent = 100000\nmeasure_cost = \"always\"\n";
/// The smallest budget: 1% of one CPU.
const TINY_BUDGET: &str = "max_program_cpu_percent = 1\n";
/// A program that is expensive on purpose: 100 map updates on every syscall of the machine.
const EXPENSIVE: &str =
    "tracepoint:raw_syscalls:sys_enter { $i = 0; while ($i < 100) { @m[$i] = count(); $i++; } }";
/// A program that costs next to nothing: ten runs a second.
const CHEAP: &str = "interval:ms:100 { @ticks = count(); }";

/// The frames' `cost`s, each with its interval.
fn costs(frames: &[Json]) -> Vec<(Json, u64)> {
    frames
        .iter()
        .filter(|f| !f["cost"].is_null())
        .map(|f| (f["cost"].clone(), f["interval_ms"].as_u64().unwrap()))
        .collect()
}

/// Starts syscall-latency on `backend`, makes getppid calls all through several ticks (the
/// statistics are on for part of each tick only, so a short burst could fall between their
/// windows), and checks the cost the frames report: every frame has one, sampled over part of
/// its tick, the estimated runs cover the calls, and the time per run is what a small BPF
/// program takes.
fn syscall_latency_reports_its_cost(backend: &str) {
    require_tracing();
    let server = Server::start_with(&format!("{BUDGET_TEST_CONFIG}{NO_BUDGET}"), &[], &[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.send(
        json!({"type": "start", "preset": "syscall-latency", "tick_ms": TEST_TICK_MS,
                       "backend": backend, "pid": std::process::id()}),
    );
    let started = client.expect("started", Duration::from_secs(60));
    assert_eq!(started["backend"], backend, "{started}");
    let storm = SyscallStorm::start();
    let frames = client.frames_for(Duration::from_millis(5 * TEST_TICK_MS));
    let calls = storm.stop();
    assert!(frames.len() >= 3, "{frames:?}");
    assert!(calls > 0);
    let costs = costs(&frames);
    assert_eq!(
        costs.len(),
        frames.len(),
        "every frame carries a cost: {frames:?}"
    );
    for (cost, _) in &costs {
        for field in ["events_per_s", "ns_per_event", "cpu_share"] {
            assert!(cost[field].as_f64().is_some_and(|x| x >= 0.0), "{cost}");
        }
        // Duty-cycled: counted over part of the tick, and the frame says over how much (all
        // of it when another process kept the statistics on meanwhile: other servers of this
        // test suite do).
        let sampled = cost["sampled"].as_f64();
        assert!(sampled.is_some_and(|x| x > 0.0 && x <= 1.0), "{cost}");
    }
    // Each getppid runs the entry and the exit program (other processes' syscalls run them
    // too: the pid filter is inside the programs): two runs a call, estimated from samples,
    // for the calls of the frames' ticks (most of the storm's; one run a call is the floor
    // that leaves room for the estimate's error and the calls after the last frame).
    let runs: f64 = costs
        .iter()
        .map(|(c, ms)| c["events_per_s"].as_f64().unwrap() * *ms as f64 / 1000.0)
        .sum();
    assert!(
        runs >= calls as f64,
        "{runs} runs for {calls} calls: {costs:?}"
    );
    let busiest = costs
        .iter()
        .map(|(c, _)| c)
        .max_by(|a, b| {
            a["events_per_s"]
                .as_f64()
                .partial_cmp(&b["events_per_s"].as_f64())
                .unwrap()
        })
        .unwrap();
    let ns = busiest["ns_per_event"].as_f64().unwrap();
    assert!((1.0..=100_000.0).contains(&ns), "ns per run: {busiest}");
    eprintln!("{backend}: busiest tick {busiest}");
    let share = busiest["cpu_share"].as_f64().unwrap();
    assert!(share > 0.0, "{busiest}");

    // The same runs and time, counted for the preset in /metrics.
    let events = server
        .metric("heat_program_events_total{program=\"syscall-latency\"}")
        .unwrap();
    assert!(events >= calls as f64, "{events} events for {calls} calls");
    let seconds = server
        .metric("heat_program_cpu_seconds_total{program=\"syscall-latency\"}")
        .unwrap();
    assert!(seconds > 0.0, "{seconds}");
    assert_eq!(
        server.metric("heat_program_events_total{program=\"block-io-latency\"}"),
        Some(0.0),
        "every preset's series exists from start-up"
    );
}

#[test]
fn a_native_syscall_latency_frame_carries_its_cost() {
    syscall_latency_reports_its_cost("ebpf");
}

#[test]
fn a_bpftrace_syscall_latency_frame_carries_its_cost() {
    syscall_latency_reports_its_cost("bpftrace");
}

/// Calls getppid in a loop on its own thread until stopped or dropped.
struct SyscallStorm(Arc<AtomicBool>, Option<std::thread::JoinHandle<usize>>);

impl SyscallStorm {
    fn start() -> SyscallStorm {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut calls = 0;
            while !flag.load(Ordering::Relaxed) {
                getppid_n(1000);
                calls += 1000;
            }
            calls
        });
        SyscallStorm(stop, Some(thread))
    }

    /// Stops the calls; how many were made.
    fn stop(mut self) -> usize {
        self.0.store(true, Ordering::Relaxed);
        self.1.take().map_or(0, |t| t.join().unwrap_or(0))
    }
}

impl Drop for SyscallStorm {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
        if let Some(t) = self.1.take() {
            let _ = t.join();
        }
    }
}

/// Whether process `pid` holds the kernel's BPF run-time statistics on: an open
/// `BPF_ENABLE_STATS` fd, an anonymous inode the kernel names `bpf-stats`.
fn holds_run_time_stats(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-stats")
    })
}

/// Looks at the server's fds this many times, 1 ms apart, at most: patience, not a threshold.
const STATS_LOOKS: usize = 20_000;

#[test]
fn a_measured_program_holds_the_statistics_in_windows_only() {
    require_tracing();
    let server = Server::start_with(&format!("{BUDGET_TEST_CONFIG}{NO_BUDGET}"), &[], &[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.start_preset_on("syscall-latency", TEST_TICK_MS, "ebpf");
    let frames = client.frames_for(Duration::from_millis(2 * TEST_TICK_MS));
    assert!(!frames.is_empty());
    // While the program runs the statistics are switched on and off: the fd is seen both open
    // (a window) and closed (between windows). Held all along, it would never be seen closed.
    let (mut on, mut off) = (false, false);
    for _ in 0..STATS_LOOKS {
        match holds_run_time_stats(server.pid()) {
            true => on = true,
            false => off = true,
        }
        if on && off {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        on,
        "the statistics were never on while a measured program ran"
    );
    assert!(
        off,
        "the statistics were held all the time (no duty cycling)"
    );
    // Stopped, the program lets go of them for good.
    client.send(json!({"type": "stop"}));
    client.expect("stopped", Duration::from_secs(10));
    assert!(!holds_run_time_stats(server.pid()));
    // Nothing of the measuring stays loaded either (its canary program goes with the last
    // measured program).
    assert!(
        Server::eventually(Duration::from_secs(10), || server.bpf_fds() == 0),
        "{} BPF fds left",
        server.bpf_fds()
    );
}

#[test]
fn a_program_over_the_cpu_budget_is_stopped_and_others_run_on() {
    require_tracing();
    let server = Server::start_with(&format!("{BUDGET_TEST_CONFIG}{TINY_BUDGET}"), &[], &[]);
    let mut cheap = server.connect();
    cheap.expect("hello", Duration::from_secs(5));
    cheap.start_script(CHEAP, TEST_TICK_MS);
    let mut costly = server.connect();
    costly.expect("hello", Duration::from_secs(5));
    costly.start_script(EXPENSIVE, TEST_TICK_MS);

    let storm = SyscallStorm::start();
    let error = costly.expect("error", Duration::from_secs(30));
    drop(storm);
    assert_eq!(error["code"], "budget", "{error}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("budget of 1%") && message.contains("limits.max_program_cpu_percent"),
        "names the limit: {message}"
    );
    // "… used 37.25% of a CPU …": the measured cost, over the limit.
    let measured: f64 = message
        .split("used ")
        .nth(1)
        .and_then(|rest| rest.split('%').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("names the measured cost: {message}"));
    assert!(measured > 1.0, "{message}");
    eprintln!("over budget: {message}");
    let stopped = costly.expect("stopped", Duration::from_secs(5));
    assert_eq!(stopped["reason"], "budget", "{stopped}");

    // The other session's program runs on, frame after frame, and its cost is within budget.
    let frames = cheap.frames_for(Duration::from_millis(4 * TEST_TICK_MS));
    assert!(frames.len() >= 2, "{frames:?}");
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "{seqs:?}");
    assert!(
        frames
            .iter()
            .all(|f| f["cost"]["cpu_share"].as_f64().is_some_and(|x| x < 0.01)),
        "{frames:?}"
    );
    assert_eq!(
        server.metric("heat_consumer_errors_total{kind=\"budget\"}"),
        Some(1.0)
    );
    // The stopped session may start again; the server serves on.
    costly.start_script(CHEAP, TEST_TICK_MS);
    assert!(
        matches!(costly.recv(Duration::from_secs(5)), Received::Json(m) if m["type"] == "frame")
    );
    assert!(server
        .http_get("/healthz")
        .is_some_and(|b| b.contains("ok")));
}

#[test]
fn presets_are_not_measured_by_default_and_scripts_are() {
    require_tracing();
    let server = Server::start_with(TEST_CONFIG, &[], &[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.start_preset_on("syscall-latency", 200, "ebpf");
    getppid_n(10_000);
    let frames = client.frames_for(Duration::from_secs(1));
    assert!(!frames.is_empty());
    assert!(
        frames.iter().all(|f| f.get("cost").is_none()),
        "a preset runs without the statistics' toll by default"
    );
    client.send(json!({"type": "stop"}));
    client.expect("stopped", Duration::from_secs(10));
    client.start_script("tracepoint:raw_syscalls:sys_enter { @n = count(); }", 200);
    getppid_n(10_000);
    let frames = client.frames_for(Duration::from_secs(1));
    assert!(
        frames.iter().any(|f| f.get("cost").is_some()),
        "a custom script is measured: {frames:?}"
    );
}
