//! What watching costs the watched machine: ns per getppid(2) from this process with no
//! tracing, with an empty raw tracepoint pair on sys_enter/sys_exit (the floor any syscall
//! tracer pays), with a pair that only reads the clock at entry and exit (the floor any syscall
//! latency tracer pays), with a native `syscall-latency` session (as started by default, leaving
//! heat-actix out; and with `include_self`, which leaves nothing out, to show what the exclusion
//! costs) and with a bpftrace one, all run by a real heat-actix server. Prints the added cost of
//! each, the two ratios the native backend is held to, and the time from a start request to the
//! first frame for both backends. Next to each session's measured ns per syscall it prints
//! what the session's own frames reported (`cost.ns_per_event`, the kernel's run-time
//! statistics, duty-cycled) for the ticks of the calls, so the two can be compared; and what
//! those statistics cost (the empty pair again, with them held on, and duty-cycled as the
//! server does).
//!
//! With `-- --presets` it measures something else: every preset, natively and with bpftrace,
//! under a workload that fires it, and prints the `cost` its frames reported (ns per event,
//! events per second): the README's preset table. With `-- --explain`, each explainable
//! preset natively with an explain companion (the syscall presets with each of their two), and
//! what the companion's `explain` messages reported beside the program's frames.
//!
//! Run as root: `cargo bench --bench overhead` (`-- --presets`; `HEAT_OVERHEAD_ROUNDS=N` for
//! fewer rounds). Figures, not assertions: nothing here fails because a machine is slow.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heat_actix::consumer::cost::{StatsEnabled, STATS_PERIOD, STATS_WINDOW};

use libbpf_rs::ObjectBuilder;
use serde_json::{json, Value as Json};
use tungstenite::{Message, WebSocket};

mod support;
use support::{fastest, verdict};

/// getppid calls per measurement.
const CALLS: u32 = 200_000;
/// getppid calls per measurement while statistics are duty-cycled (a session's, or the
/// bench's own): about half a second, five periods of the statistics, so that each
/// measurement pays their usual share and the sessions' costs cover many windows.
const SAMPLED_CALLS: u32 = 2_000_000;
/// Rounds; each measures every configuration once, in turn. Each configuration's fastest
/// round is reported: other work on the machine (above all other people's syscall tracers,
/// whose programs run in our syscalls too) only ever adds time, so the fastest round is the
/// least disturbed one.
const ROUNDS: usize = 15;
/// Walk interval of the measured sessions: the server's default, what people run.
const SESSION_TICK_MS: u64 = 1000;
/// Walk interval of the start-to-first-frame measurement.
const FIRST_FRAME_TICK_MS: u64 = 100;
/// How often to look whether a stopped session's tracer is gone.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// How long to wait for the server, a `started` or a frame.
const PATIENCE: Duration = Duration::from_secs(60);
/// Targets from the issue: native added / floor added, native added / bpftrace added, and
/// start to first frame beyond one tick.
const TARGET_VS_FLOOR: f64 = 1.5;
const TARGET_VS_BPFTRACE: f64 = 0.3;
const TARGET_FIRST_FRAME_MS: u64 = 100;

/// The empty raw tracepoint pair, built by build.rs from `src/consumer/ebpf/bpf/floor.bpf.c`.
const FLOOR_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));
/// The clock-only pair, from `src/consumer/ebpf/bpf/clock_floor.bpf.c`.
const CLOCK_FLOOR_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/clock_floor.bpf.o"));

/// A heat-actix server child on a free loopback port.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Every program measured (not only scripts, the default), so sessions report `cost`
        // to set beside what this bench measures; the statistics' own toll is measured apart.
        let config = std::env::temp_dir().join(format!("heat-actix-overhead-{port}.toml"));
        // No CPU budget: the getppid loops are a storm no budget should stop mid-measurement.
        std::fs::write(
            &config,
            "[limits]\nmeasure_cost = \"always\"\nmax_program_cpu_percent = 100000\n",
        )
        .expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_heat-actix"))
            .arg("--config")
            .arg(&config)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(
                    std::env::temp_dir().join(format!("heat-actix-overhead-{port}.log")),
                )
                .map_or(Stdio::null(), Stdio::from),
            )
            .spawn()
            .expect("spawn heat-actix");
        let server = Server { child, port };
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = write!(
                    s,
                    "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                );
                let mut body = String::new();
                let _ = s.read_to_string(&mut body);
                if body.contains("ok") {
                    return server;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("heat-actix did not start");
    }

    /// Waits until the server holds no BPF program and has no child process (bpftrace).
    fn wait_until_idle(&self) {
        let pid = self.child.id();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if !holds_bpf_programs(pid) && !has_children(pid) {
                return;
            }
            std::thread::sleep(IDLE_POLL);
        }
        panic!("the server kept its tracer after the session ended");
    }

    fn connect(&self) -> WebSocket<TcpStream> {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let (mut ws, _) =
            tungstenite::client(format!("ws://127.0.0.1:{}/ws", self.port), stream).unwrap();
        next_of(&mut ws, "hello");
        ws
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill takes a pid and a signal; the child is ours and not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Whether process `pid` has a BPF program open (`prog_id` in an fdinfo).
fn holds_bpf_programs(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_to_string(fd.path()).is_ok_and(|info| info.contains("prog_id:")))
}

/// Whether process `pid` has a child (its bpftrace), whichever of its threads started it.
fn has_children(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|task| {
        std::fs::read_to_string(task.path().join("children")).is_ok_and(|c| !c.trim().is_empty())
    })
}

/// The next message of type `kind`; panics on an error message.
fn next_of(ws: &mut WebSocket<TcpStream>, kind: &str) -> Json {
    loop {
        let message = match ws.read() {
            // A read with a timeout fails so after a stop and continue (signal(7)); retry.
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue
            }
            other => other.expect("server message"),
        };
        if let Message::Text(text) = message {
            let m: Json = serde_json::from_str(&text).unwrap();
            if m["type"] == kind {
                return m;
            }
            assert_ne!(m["type"], "error", "{m}");
        }
    }
}

/// Starts `syscall-latency` on `backend` (with heat-actix included when `include_self`);
/// returns the session and the time to its first frame.
fn start_session(
    server: &Server,
    backend: &str,
    tick_ms: u64,
    include_self: bool,
) -> (WebSocket<TcpStream>, Duration) {
    let mut ws = server.connect();
    let began = Instant::now();
    let start = json!({"type": "start", "preset": "syscall-latency", "backend": backend, "tick_ms": tick_ms, "include_self": include_self});
    ws.send(Message::text(start.to_string())).unwrap();
    let started = next_of(&mut ws, "started");
    assert_eq!(started["backend"], backend);
    next_of(&mut ws, "frame");
    (ws, began.elapsed())
}

/// BPF program runs per getppid for `syscall-latency`: its sys_enter and its sys_exit program.
const RUNS_PER_SYSCALL: f64 = 2.0;

/// Milliseconds since the epoch, as frames' `ts_ms` are.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// What some frames' `cost`s add up to: the events the programs ran (estimated from the
/// sampled counts) and the CPU time those took.
#[derive(Debug, Clone, Copy, Default)]
struct Counted {
    events: f64,
    run_ns: f64,
    wall_ms: f64,
    /// Frames that carried a cost; the smallest `sampled` among them.
    frames: usize,
    sampled: f64,
}

impl Counted {
    fn of<'a>(frames: impl IntoIterator<Item = &'a Json>) -> Counted {
        let mut sum = Counted {
            sampled: 1.0,
            ..Counted::default()
        };
        for frame in frames {
            let cost = &frame["cost"];
            let ms = frame["interval_ms"].as_f64().unwrap_or(0.0);
            let Some(per_s) = cost["events_per_s"].as_f64() else {
                continue;
            };
            let events = per_s * ms / 1000.0;
            sum.events += events;
            sum.run_ns += events * cost["ns_per_event"].as_f64().unwrap_or(0.0);
            sum.wall_ms += ms;
            sum.frames += 1;
            sum.sampled = sum.sampled.min(cost["sampled"].as_f64().unwrap_or(1.0));
        }
        sum
    }

    /// Mean ns per event, weighted by events.
    fn ns_per_event(&self) -> Option<f64> {
        (self.events > 0.0).then(|| self.run_ns / self.events)
    }

    fn events_per_s(&self) -> f64 {
        match self.wall_ms {
            0.0 => 0.0,
            ms => self.events * 1000.0 / ms,
        }
    }
}

/// Measures getppid while a `syscall-latency` session runs on `backend`; returns once the
/// session's tracer is gone again, so the next measurement does not pay for it. With the ns
/// per call comes what the frames whose ticks held the calls reported, summed.
fn with_session(server: &Server, backend: &str, include_self: bool) -> (f64, Counted) {
    let (mut ws, _) = start_session(server, backend, SESSION_TICK_MS, include_self);
    // The calls run on their own thread (its CPU time is what is measured) while this one
    // reads frames, so the session answers the server's pings however long the calls take.
    let (ns, frames) = std::thread::scope(|s| {
        let calls = s.spawn(|| (support::ns_per_getppid(SAMPLED_CALLS), now_ms()));
        let mut frames = vec![next_of(&mut ws, "frame")];
        while !calls.is_finished() {
            frames.push(next_of(&mut ws, "frame"));
        }
        let (ns, ended) = calls.join().expect("the calls ran");
        // Up to the frame whose tick holds the last calls.
        while frames
            .last()
            .is_some_and(|f| f["ts_ms"].as_u64().unwrap_or(u64::MAX) < ended)
        {
            frames.push(next_of(&mut ws, "frame"));
        }
        (ns, frames)
    });
    drop(ws);
    server.wait_until_idle();
    (ns, Counted::of(&frames))
}

/// Whether a process other than this one and `server` holds the kernel's BPF run-time
/// statistics on (an fd the kernel names `anon_inode:bpf-stats`): the kernel then counts
/// between the server's windows too, and its sampled costs read too high.
fn others_hold_stats(server: u32) -> bool {
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            return false;
        };
        if pid == me || pid == server {
            return false;
        }
        std::fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
            fds.flatten().any(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|l| l.to_string_lossy() == "anon_inode:bpf-stats")
            })
        })
    })
}

/// Rounds, `ROUNDS` unless `HEAT_OVERHEAD_ROUNDS` says otherwise (a quicker look).
fn rounds() -> usize {
    std::env::var("HEAT_OVERHEAD_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS)
}

/// The median of some figures (`None` for none).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Holds the kernel's BPF run-time statistics on, as a running server does, until dropped.
struct RunTimeStats {
    _held: std::os::fd::OwnedFd,
}

impl RunTimeStats {
    fn enable() -> RunTimeStats {
        use std::os::fd::FromRawFd;
        // SAFETY: bpf_enable_stats takes an integer and returns a new fd or a negative errno.
        let fd = unsafe {
            libbpf_rs::libbpf_sys::bpf_enable_stats(libbpf_rs::libbpf_sys::BPF_STATS_RUN_TIME)
        };
        assert!(
            fd >= 0,
            "BPF_ENABLE_STATS: {}",
            std::io::Error::from_raw_os_error(-fd)
        );
        // SAFETY: the fd was just returned to us and nothing else owns it.
        RunTimeStats {
            _held: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        }
    }
}

/// The configurations measured, in the order of each round.
const CONFIGS: [&str; 8] = [
    "no tracing",
    "empty raw tracepoint pair",
    "clock-only raw tracepoint pair",
    "native syscall-latency (ebpf)",
    "bpftrace syscall-latency",
    "native, include_self",
    "empty pair, run-time stats held",
    "empty pair, stats duty-cycled",
];

/// Loads one of the floor objects, which are not the server's.
fn load_floor(name: &str, object: &[u8]) -> libbpf_rs::Object {
    ObjectBuilder::default()
        .name(name)
        .and_then(|b| b.open_memory(object))
        .and_then(|o| o.load())
        .unwrap_or_else(|e| panic!("load {name}: {e}"))
}

/// ns per getppid over `calls` calls with every program of `object` attached.
fn with_programs(object: &mut libbpf_rs::Object, calls: u32) -> f64 {
    let links: Vec<_> = object
        .progs_mut()
        .map(|p| p.attach().expect("attach a floor program"))
        .collect();
    let ns = support::ns_per_getppid(calls);
    drop(links);
    ns
}

fn main() {
    if !support::running_as_root("overhead") || !support::run_by_cargo_bench("overhead") {
        return;
    }
    if std::env::args().any(|a| a == "--presets") {
        presets::run();
        return;
    }
    if std::env::args().any(|a| a == "--explain") {
        presets::explain();
        return;
    }

    let mut floor = load_floor("heat_floor", FLOOR_OBJECT);
    assert_eq!(floor.maps().count(), 0, "the floor has no maps");
    let mut clock_floor = load_floor("heat_clock_floor", CLOCK_FLOOR_OBJECT);
    let server = Server::start();

    // ns per call of each configuration, round by round; ns per run the sessions reported.
    let mut ns: [Vec<f64>; 8] = Default::default();
    let (mut native_cost, mut bpftrace_cost) = (Vec::new(), Vec::new());
    let mut sampled = f64::INFINITY;
    // Rounds during which another process held the statistics on: kept (on a shared machine
    // there may be no other kind), counted and said.
    let mut disturbed = 0;
    for _ in 0..rounds() {
        let foreign_before = others_hold_stats(server.child.id());
        let (native, native_said) = with_session(&server, "ebpf", false);
        let (bpftrace, bpftrace_said) = with_session(&server, "bpftrace", false);
        let stats = RunTimeStats::enable();
        let floor_with_stats = with_programs(&mut floor, CALLS);
        drop(stats);
        // The server's own duty cycle, in this process: a window opens at once, then one
        // every period.
        let duty = StatsEnabled::acquire().expect("BPF_ENABLE_STATS");
        let floor_duty_cycled = with_programs(&mut floor, SAMPLED_CALLS);
        drop(duty);
        let round = [
            support::ns_per_getppid(CALLS),
            with_programs(&mut floor, CALLS),
            with_programs(&mut clock_floor, CALLS),
            native,
            bpftrace,
            with_session(&server, "ebpf", true).0,
            floor_with_stats,
            floor_duty_cycled,
        ];
        if foreign_before || others_hold_stats(server.child.id()) {
            disturbed += 1;
        }
        for (i, value) in round.into_iter().enumerate() {
            ns[i].push(value);
        }
        native_cost.extend(native_said.ns_per_event());
        bpftrace_cost.extend(bpftrace_said.ns_per_event());
        sampled = sampled.min(native_said.sampled).min(bpftrace_said.sampled);
    }
    let (_, native_first) = start_session(&server, "ebpf", FIRST_FRAME_TICK_MS, false);
    let (_, bpftrace_first) = start_session(&server, "bpftrace", FIRST_FRAME_TICK_MS, false);
    drop(server);
    let rounds = ns[0].len();
    let ns = ns.map(fastest);
    let added = ns.map(|v| v - ns[0]);

    println!("getppid loop, {CALLS} calls ({SAMPLED_CALLS} while statistics are duty-cycled) x {rounds} interleaved rounds, fastest round, thread CPU ns per syscall ({disturbed} of them while another process held the statistics on):");
    for (i, what) in CONFIGS.iter().enumerate() {
        if i == 0 {
            println!("  {what:<31} {:8.1} ns", ns[i]);
        } else {
            println!("  {what:<31} {:8.1} ns   added {:8.1} ns", ns[i], added[i]);
        }
    }
    let vs_floor = added[3] / added[1];
    let vs_bpftrace = added[3] / added[4];
    let clock_vs_floor = added[2] / added[1];
    let vs_clock = added[3] / added[2];
    println!(
        "native added / floor added     = {vs_floor:.2}  (target <= {TARGET_VS_FLOOR}: {})",
        verdict(vs_floor <= TARGET_VS_FLOOR)
    );
    println!(
        "native added / bpftrace added  = {vs_bpftrace:.2}  (target <= {TARGET_VS_BPFTRACE}: {})",
        verdict(vs_bpftrace <= TARGET_VS_BPFTRACE)
    );
    println!(
        "clock-only added / floor added = {clock_vs_floor:.2}  (two clock reads and nothing else: the least any latency tracer adds)"
    );
    println!("native added / clock-only added = {vs_clock:.2}  (what the native program costs beyond its clock reads)");
    println!(
        "native - native include_self  = {:+.1} ns  (leaving heat-actix out: a task pointer, its parent's tgid, two compares)",
        ns[3] - ns[5]
    );
    let held_added = ns[6] - ns[1];
    let stats_added = ns[7] - ns[1];
    println!(
        "run-time stats held, empty pair = {held_added:+.1} ns per syscall  (the statistics on all the time: two clock reads per program run)"
    );
    println!(
        "stats duty-cycled, empty pair   = {stats_added:+.1} ns per syscall  (on {} ms of every {} ms, as the server holds them; the frames said sampled >= {sampled:.3})",
        STATS_WINDOW.as_millis(),
        STATS_PERIOD.as_millis()
    );
    println!("cost reported by the session's own frames (median of {rounds} rounds, ns per program run x {RUNS_PER_SYSCALL} runs per syscall) vs measured added:");
    for (what, reported, measured) in [
        ("native  ", &native_cost, added[3]),
        ("bpftrace", &bpftrace_cost, added[4]),
    ] {
        match median(reported.clone()) {
            Some(per_run) => {
                let per_syscall = per_run * RUNS_PER_SYSCALL;
                // The statistics' own clock reads (in their windows) are outside the run time
                // they count.
                let without_stats = measured - stats_added;
                println!(
                    "  {what}: cost {per_run:7.1} ns/event = {per_syscall:7.1} ns/syscall; measured added {measured:7.1} (cost/measured = {:.2}), {without_stats:7.1} without the duty-cycled statistics' own {stats_added:.1} (cost/that = {:.2}); {} rounds reported",
                    per_syscall / measured,
                    per_syscall / without_stats,
                    reported.len()
                );
            }
            None => println!("  {what}: no frame reported a cost"),
        }
    }
    for (backend, took) in [("ebpf", native_first), ("bpftrace", bpftrace_first)] {
        let beyond_tick = took.as_millis() as i64 - FIRST_FRAME_TICK_MS as i64;
        println!(
            "start request -> first frame, {backend:<8}: {:5} ms (tick {FIRST_FRAME_TICK_MS} ms; {beyond_tick} ms beyond it, target <= {TARGET_FIRST_FRAME_MS} for ebpf)",
            took.as_millis()
        );
    }
}

/// `-- --presets`: what each preset's `cost` says an event costs, on both backends, under a
/// workload that fires it.
mod presets {
    use super::*;

    /// Walk interval of the preset sessions.
    const TICK_MS: u64 = 1000;
    /// Frames read while the workload runs, after the first (which covers the start-up).
    const FRAMES: usize = 3;
    /// Bytes per write of the block workload, and what it writes before each fsync.
    const BLOCK_BYTES: usize = 64 << 10;
    /// Sleep of the scheduler workload's threads: a wakeup and two switches each.
    const NAP: Duration = Duration::from_micros(200);
    /// Threads of the scheduler workload.
    const NAPPERS: usize = 2;
    /// Bytes per write of the loopback TCP workload.
    const TCP_CHUNK: usize = 64 << 10;

    /// Something that makes a preset's probes fire until `stop` is set.
    type Workload = fn(&AtomicBool);

    /// Each preset with the workload that fires it.
    const PRESETS: [(&str, Workload); 11] = [
        ("syscall-latency", syscalls),
        ("syscall-latency-log2", syscalls),
        ("block-io-latency", block_io),
        ("runqueue-latency", naps),
        ("softirq-latency", loopback_tcp),
        ("offcpu-time", naps),
        ("hardirq-latency", block_io),
        ("tcp-connect-latency", connects),
        ("futex-wait", futex_ping_pong),
        ("block-io-size", block_io),
        ("cpu-profile", burn),
    ];

    fn syscalls(stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            support::ns_per_getppid(10_000);
        }
    }

    /// Writes and fsyncs a file beside the build's: block requests and their device
    /// interrupts (virtio on our VMs).
    fn block_io(stop: &AtomicBool) {
        let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("heat-bench-block");
        let data = vec![7u8; BLOCK_BYTES];
        while !stop.load(Ordering::Relaxed) {
            let mut file = std::fs::File::create(&path).expect("create the block file");
            file.write_all(&data).expect("write the block file");
            file.sync_all().expect("fsync the block file");
        }
        let _ = std::fs::remove_file(&path);
    }

    /// Threads that sleep a little in a loop: wakeups, switches out and in.
    fn naps(stop: &AtomicBool) {
        std::thread::scope(|s| {
            for _ in 0..NAPPERS {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(NAP);
                    }
                });
            }
        });
    }

    /// Streams bytes over loopback TCP: `net_rx` softirqs.
    fn loopback_tcp(stop: &AtomicBool) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let (mut peer, _) = listener.accept().unwrap();
                let mut buf = vec![0u8; TCP_CHUNK];
                while peer.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
            let mut out = TcpStream::connect(addr).unwrap();
            let chunk = vec![1u8; TCP_CHUNK];
            while !stop.load(Ordering::Relaxed) {
                out.write_all(&chunk).unwrap();
            }
        });
    }

    /// Connects to a loopback listener again and again.
    fn connects(stop: &AtomicBool) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let _client = TcpStream::connect(addr).unwrap();
            while listener.accept().is_ok() {}
        }
    }

    /// Two threads handing a turn to each other through a mutex and a condition variable:
    /// each hand-over is a futex wait.
    fn futex_ping_pong(stop: &AtomicBool) {
        let turn = Arc::new((Mutex::new(false), Condvar::new()));
        std::thread::scope(|s| {
            for me in [false, true] {
                let turn = turn.clone();
                s.spawn(move || {
                    let (lock, cv) = &*turn;
                    let mut whose = lock.lock().unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        if *whose == me {
                            *whose = !me;
                            cv.notify_one();
                        }
                        whose = cv.wait_timeout(whose, NAP).unwrap().0;
                    }
                });
            }
        });
    }

    /// Keeps a CPU busy: the profile samples it rather than idle.
    fn burn(stop: &AtomicBool) {
        let mut x = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for i in 0..100_000u64 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
            }
        }
    }

    /// Starts `preset` on `backend`, runs `workload` for [`FRAMES`] ticks, and sums the
    /// frames' costs.
    fn measure(server: &Server, preset: &str, backend: &str, workload: Workload) -> Counted {
        let mut ws = server.connect();
        let start =
            json!({"type": "start", "preset": preset, "backend": backend, "tick_ms": TICK_MS});
        ws.send(Message::text(start.to_string())).unwrap();
        let started = next_of(&mut ws, "started");
        assert_eq!(started["backend"], backend, "{preset}");
        let stop = AtomicBool::new(false);
        let frames = std::thread::scope(|s| {
            s.spawn(|| workload(&stop));
            next_of(&mut ws, "frame");
            let frames: Vec<Json> = (0..FRAMES).map(|_| next_of(&mut ws, "frame")).collect();
            stop.store(true, Ordering::Relaxed);
            frames
        });
        drop(ws);
        server.wait_until_idle();
        Counted::of(&frames)
    }

    /// Each explainable preset with the workload that fires it and the band explained: the
    /// whole range where a stack per event is affordable (the companion's dearest case), and
    /// for the syscall presets a band the workload's getppid calls are below (a stack on every
    /// syscall of the machine is no band anyone selects): what an event outside it costs.
    const EXPLAINED: [(&str, Workload, u64, &str); 8] = [
        ("syscall-latency", syscalls, 64, "ebpf"),
        ("syscall-latency", syscalls, 64, "bpftrace"),
        ("syscall-latency-log2", syscalls, 1 << 16, "ebpf"),
        ("syscall-latency-log2", syscalls, 1 << 16, "bpftrace"),
        ("cpu-profile", burn, 0, "bpftrace"),
        ("offcpu-time", naps, 0, "ebpf"),
        ("runqueue-latency", naps, 0, "ebpf"),
        ("block-io-latency", block_io, 0, "ebpf"),
    ];

    /// Runs `preset` natively with an explain of the band from `lo` up on `backend` under
    /// `workload`; returns the program's and the companion's costs over [`FRAMES`] ticks after
    /// the first.
    fn measure_explain(
        server: &Server,
        preset: &str,
        workload: Workload,
        lo: u64,
        backend: &str,
    ) -> (Counted, Counted) {
        let mut ws = server.connect();
        let start =
            json!({"type": "start", "preset": preset, "backend": "ebpf", "tick_ms": TICK_MS});
        ws.send(Message::text(start.to_string())).unwrap();
        let program = next_of(&mut ws, "started")["program"].clone();
        let explain = json!({"type": "explain", "program": program, "band": {"lo": lo},
                             "max_cpu_percent": 100, "backend": backend});
        ws.send(Message::text(explain.to_string())).unwrap();
        next_of(&mut ws, "explain_started");
        let stop = AtomicBool::new(false);
        let (frames, explains) = std::thread::scope(|s| {
            s.spawn(|| workload(&stop));
            next_of(&mut ws, "explain");
            let (mut frames, mut explains) = (Vec::new(), Vec::new());
            while explains.len() < FRAMES {
                let frame = next_of(&mut ws, "frame");
                let mut tick = next_of(&mut ws, "explain");
                // An explain message has no interval of its own: its program's frame's.
                tick["interval_ms"] = frame["interval_ms"].clone();
                frames.push(frame);
                explains.push(tick);
            }
            stop.store(true, Ordering::Relaxed);
            (frames, explains)
        });
        drop(ws);
        server.wait_until_idle();
        (Counted::of(&frames), Counted::of(&explains))
    }

    /// `-- --explain`: what an explain companion costs beside its program.
    pub fn explain() {
        let server = Server::start();
        println!(
            "explain companions' cost (`cost` of the `explain` messages), {FRAMES} ticks of {TICK_MS} ms, program native:"
        );
        println!(
            "  {:<22} {:>10} {:>16} {:>12}   {:>9} {:>18} {:>12}",
            "preset",
            "band from",
            "program ns/ev",
            "events/s",
            "companion",
            "companion ns/run",
            "runs/s"
        );
        for (preset, workload, lo, backend) in EXPLAINED {
            let (program, companion) = measure_explain(&server, preset, workload, lo, backend);
            let ns = |c: &Counted| {
                c.ns_per_event()
                    .map_or("-".to_string(), |n| format!("{n:.0}"))
            };
            println!(
                "  {preset:<22} {lo:>10} {:>16} {:>12.0}   {backend:>9} {:>18} {:>12.0}",
                ns(&program),
                program.events_per_s(),
                ns(&companion),
                companion.events_per_s()
            );
        }
    }

    pub fn run() {
        let server = Server::start();
        println!(
            "cost per event each preset reported (frames' `cost`, statistics on {} ms of every {} ms), {FRAMES} ticks of {TICK_MS} ms under a workload that fires it:",
            STATS_WINDOW.as_millis(),
            STATS_PERIOD.as_millis()
        );
        println!(
            "  {:<22} {:>14} {:>14}   {:>14} {:>14}",
            "preset", "native ns/ev", "events/s", "bpftrace ns/ev", "events/s"
        );
        for (preset, workload) in PRESETS {
            let native = measure(&server, preset, "ebpf", workload);
            let bpftrace = measure(&server, preset, "bpftrace", workload);
            let ns = |c: &Counted| {
                c.ns_per_event()
                    .map_or("-".to_string(), |n| format!("{n:.0}"))
            };
            println!(
                "  {preset:<22} {:>14} {:>14.0}   {:>14} {:>14.0}",
                ns(&native),
                native.events_per_s(),
                ns(&bpftrace),
                bpftrace.events_per_s()
            );
        }
    }
}
