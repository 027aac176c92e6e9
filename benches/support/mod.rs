//! What the benches share: the cost of a syscall as this thread pays it, the way figures are
//! reduced and labelled, and (from `tests/support`) the real server process and what /proc
//! says about it.
// Each bench uses a part of this module.
#![allow(dead_code)]

use std::time::Duration;

/// The integration tests' server harness: the real binary on a free port, its children,
/// threads and BPF objects.
#[path = "../../tests/support/mod.rs"]
pub mod server;

/// This thread's CPU time (user + system). Time spent descheduled is not in it, so the
/// figures hold on a machine that is busy with other work; BPF programs that run in this
/// thread's syscalls are.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// CPU ns per getppid over `calls` calls from this thread.
pub fn ns_per_getppid(calls: u32) -> f64 {
    let began = thread_cpu_time();
    for _ in 0..calls {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    (thread_cpu_time() - began).as_nanos() as f64 / f64::from(calls)
}

/// The fastest of `rounds` getppid measurements: other work on the machine (above all other
/// people's syscall tracers, whose programs run in our syscalls too) only ever adds time, so
/// the fastest round is the least disturbed one.
pub fn fastest_ns_per_getppid(calls: u32, rounds: usize) -> f64 {
    fastest((0..rounds).map(|_| ns_per_getppid(calls)).collect())
}

pub fn fastest(values: Vec<f64>) -> f64 {
    values.into_iter().fold(f64::INFINITY, f64::min)
}

/// How a figure compares with its target, as printed next to it.
pub fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

/// Whether this process runs as root (BPF programs and tracers need it); says why not when not.
pub fn running_as_root(bench: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("{bench}: needs root to load BPF programs and run tracers; skipped");
    }
    root
}

/// Whether `cargo bench` runs us (it passes `--bench`); `cargo test --benches` only checks
/// that we build and start.
pub fn run_by_cargo_bench(bench: &str) -> bool {
    let bench_run = std::env::args().any(|a| a == "--bench");
    if !bench_run {
        println!("{bench}: run with `cargo bench --bench {bench}`");
    }
    bench_run
}
