//! The presets of issue 15 on the real kernel: each one runs on both backends at once (native
//! eBPF and bpftrace, two sessions of one server) while a workload it must see runs, and both
//! must put that workload under the right key in the right buckets, the same ones.

mod support;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{require_tracing, Server};

/// Walk interval the tests ask for.
const TEST_TICK_MS: u64 = 200;
/// How long frames are still read after a workload ends: its last events reach a frame.
const SETTLE: Duration = Duration::from_millis(4 * TEST_TICK_MS);
/// Both backends, as `start.backend` names them.
const BACKENDS: [&str; 2] = ["ebpf", "bpftrace"];

/// A sleep in the middle of the log2 bucket [2^24, 2^25 - 1] ns (16.8 ms to 33.6 ms).
const SLEEP: Duration = Duration::from_millis(22);
const SLEEP_BUCKET: (i64, i64) = (1 << 24, (1 << 25) - 1);

/// Bucket counts of one key, summed over frames: (lo, hi) → count, open ends as i64 limits.
type Buckets = BTreeMap<(i64, i64), i64>;

fn buckets_for(frames: &[Json], key: &Json) -> Buckets {
    let mut found = Buckets::new();
    for frame in frames {
        for series in frame["aggregations"][0]["series"].as_array().unwrap() {
            if series["key"] == json!([key]) {
                for b in series["buckets"].as_array().unwrap() {
                    let edges = (
                        b[0].as_i64().unwrap_or(i64::MIN),
                        b[1].as_i64().unwrap_or(i64::MAX),
                    );
                    *found.entry(edges).or_insert(0) += b[2].as_i64().unwrap();
                }
            }
        }
    }
    found
}

/// Every key seen, with its buckets.
fn every_key(frames: &[Json]) -> BTreeMap<String, Buckets> {
    let mut keys = BTreeMap::new();
    for frame in frames {
        for series in frame["aggregations"][0]["series"].as_array().unwrap() {
            let key = series["key"][0].clone();
            let name = key.as_str().map_or_else(|| key.to_string(), str::to_owned);
            keys.entry(name)
                .or_insert_with(|| buckets_for(frames, &key));
        }
    }
    keys
}

/// True when (lo, hi) is a bpftrace `hist` bucket: [0, 0], [2^k, 2^(k+1) - 1] or hist's open
/// top from 2^31.
fn is_log2(&(lo, hi): &(i64, i64)) -> bool {
    (lo, hi) == (0, 0) || (lo > 0 && lo.count_ones() == 1 && (hi == 2 * lo - 1 || hi == i64::MAX))
}

/// Starts `preset` with `extra` start fields on both backends of `server`, runs `workload`
/// on its own thread (so both sockets are read the whole time), reads frames for `window`, and
/// returns each backend's frames with the `started` message.
fn on_both_backends(
    server: &Server,
    preset: &str,
    extra: Json,
    window: Duration,
    workload: impl FnOnce() + Send + 'static,
) -> Vec<(&'static str, Json, Vec<Json>)> {
    let mut clients: Vec<_> = BACKENDS
        .into_iter()
        .map(|backend| {
            let mut client = server.connect();
            client.expect("hello", Duration::from_secs(5));
            let mut start = json!({"type": "start", "preset": preset, "tick_ms": TEST_TICK_MS,
                "backend": backend});
            for (k, v) in extra.as_object().unwrap() {
                start[k] = v.clone();
            }
            client.send(start);
            let started = client.expect("started", Duration::from_secs(60));
            assert_eq!(started["backend"], backend, "{started}");
            (backend, started, client)
        })
        .collect();
    let worker = std::thread::spawn(workload);
    let frames: Vec<Vec<Json>> = std::thread::scope(|scope| {
        let readers: Vec<_> = clients
            .iter_mut()
            .map(|(_, _, client)| scope.spawn(move || client.frames_for(window)))
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    worker.join().expect("the workload ran");
    clients
        .into_iter()
        .zip(frames)
        .map(|((backend, started, _), frames)| (backend, started, frames))
        .collect()
}

/// Names the calling thread (its `comm`) with prctl(PR_SET_NAME).
fn set_comm(name: &str) {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which we own.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
    assert_eq!(rc, 0, "prctl(PR_SET_NAME)");
}

fn own_pid() -> u32 {
    std::process::id()
}

#[test]
fn offcpu_time_puts_known_sleeps_in_their_bucket_under_the_threads_comm() {
    require_tracing();
    let server = Server::start(&[]);
    const COMM: &str = "heat-offcpu";
    const SLEEPS: i64 = 4;
    let window = SLEEP * SLEEPS as u32 + Duration::from_millis(300) + SETTLE;
    let runs = on_both_backends(
        &server,
        "offcpu-time",
        json!({"comm": COMM}),
        window,
        || {
            set_comm(COMM);
            for _ in 0..SLEEPS {
                std::thread::sleep(SLEEP);
            }
        },
    );
    let mut seen = Vec::new();
    for (backend, started, frames) in &runs {
        assert_eq!(
            started["aggregations"],
            json!([{"name": "@offcpu_ns", "kind": "hist"}]),
            "{backend}"
        );
        let keys = every_key(frames);
        assert_eq!(
            keys.keys().collect::<Vec<_>>(),
            vec![COMM],
            "{backend}: the comm filter holds"
        );
        let buckets = &keys[COMM];
        assert!(buckets.keys().all(is_log2), "{backend}: {buckets:?}");
        assert_eq!(
            buckets.get(&SLEEP_BUCKET),
            Some(&SLEEPS),
            "{backend}: every sleep off CPU in its bucket: {buckets:?}"
        );
        seen.push(buckets.get(&SLEEP_BUCKET).copied());
    }
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn hardirq_latency_names_the_interrupts_of_this_machine() {
    require_tracing();
    let server = Server::start(&[]);
    // Block I/O completes by a device interrupt (virtio's request queue on our VMs).
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("heat-hardirq");
    let runs = on_both_backends(
        &server,
        "hardirq-latency",
        json!({}),
        Duration::from_millis(300) + SETTLE,
        move || {
            for _ in 0..4 {
                std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
                std::fs::File::open(&path).unwrap().sync_all().unwrap();
            }
            std::fs::remove_file(&path).unwrap();
        },
    );
    let interrupts = std::fs::read_to_string("/proc/interrupts").unwrap();
    let mut key_sets = Vec::new();
    for (backend, started, frames) in &runs {
        assert_eq!(
            started["aggregations"],
            json!([{"name": "@latency_ns", "kind": "hist"}]),
            "{backend}"
        );
        let keys = every_key(frames);
        assert!(!keys.is_empty(), "{backend}: no interrupt seen");
        for (name, buckets) in &keys {
            // An IRQ action's name, as /proc/interrupts lists it at the end of its line.
            assert!(
                interrupts.contains(name.as_str()),
                "{backend}: {name} is not an IRQ here"
            );
            assert!(buckets.keys().all(is_log2), "{backend}: {name} {buckets:?}");
            assert!(buckets.values().sum::<i64>() > 0);
        }
        key_sets.push(keys.into_keys().collect::<Vec<_>>());
    }
    assert!(
        key_sets[0].iter().any(|k| key_sets[1].contains(k)),
        "both backends see the same interrupts: {key_sets:?}"
    );
}

/// Sets a listening socket's backlog to 0: one connection fits its accept queue, and the SYN of
/// the next is dropped (and retransmitted by the client after its 1 s initial timeout) while
/// that one is not accepted.
fn listen_backlog_zero(listener: &TcpListener) {
    // SAFETY: listen on a socket we own; calling it again on a listening socket sets its
    // backlog.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), 0) };
    assert_eq!(rc, 0, "listen(0)");
}

/// The log2 µs bucket of a connect whose first SYN was dropped: about 1.01 s (the initial
/// retransmission timeout, TCP_TIMEOUT_INIT), in [2^19, 2^20 - 1] µs.
const RETRANSMITTED_CONNECT_BUCKET: (i64, i64) = (1 << 19, (1 << 20) - 1);
/// How long the queue stays full before the first connection is accepted: under the SYN's
/// 1 s retransmission timeout, so the second connect's first SYN is surely dropped.
const QUEUE_FULL_FOR: Duration = Duration::from_millis(300);

#[test]
fn tcp_connect_latency_keys_by_remote_port_and_sees_a_syn_retransmission() {
    require_tracing();
    let server = Server::start(&[]);
    const FAST: i64 = 5;
    let fast = TcpListener::bind("127.0.0.1:0").unwrap();
    let slow = TcpListener::bind("127.0.0.1:0").unwrap();
    listen_backlog_zero(&slow);
    let (fast_port, slow_port) = (
        fast.local_addr().unwrap().port(),
        slow.local_addr().unwrap().port(),
    );
    let window = Duration::from_millis(1500) + SETTLE;
    let runs = on_both_backends(
        &server,
        "tcp-connect-latency",
        json!({"pid": own_pid()}),
        window,
        move || {
            let _kept: Vec<TcpStream> = (0..FAST)
                .map(|_| TcpStream::connect(("127.0.0.1", fast_port)).unwrap())
                .collect();
            let first = TcpStream::connect(("127.0.0.1", slow_port)).unwrap();
            let second =
                std::thread::spawn(move || TcpStream::connect(("127.0.0.1", slow_port)).unwrap());
            std::thread::sleep(QUEUE_FULL_FOR);
            let accepted = slow.accept().unwrap();
            let _second = second.join().unwrap();
            drop((first, accepted, fast));
        },
    );
    let mut slow_seen = Vec::new();
    for (backend, started, frames) in &runs {
        assert_eq!(
            started["aggregations"],
            json!([{"name": "@latency_us", "kind": "hist"}]),
            "{backend}"
        );
        let fast = buckets_for(frames, &json!(fast_port));
        assert_eq!(
            fast.values().sum::<i64>(),
            FAST,
            "{backend}: every connect to port {fast_port} once: {fast:?}"
        );
        assert!(fast.keys().all(is_log2), "{backend}: {fast:?}");
        let slow = buckets_for(frames, &json!(slow_port));
        assert_eq!(
            slow.get(&RETRANSMITTED_CONNECT_BUCKET),
            Some(&1),
            "{backend}: the retransmitted connect took about 1 s: {slow:?}"
        );
        assert_eq!(slow.values().sum::<i64>(), 2, "{backend}: {slow:?}");
        slow_seen.push(slow.get(&RETRANSMITTED_CONNECT_BUCKET).copied());
        // Keys are port numbers (the pid filter lets this process's other connects through:
        // the other tests' websockets).
        for series in frames
            .iter()
            .flat_map(|f| f["aggregations"][0]["series"].as_array().unwrap())
        {
            assert!(series["key"][0].is_u64(), "{backend}: {series}");
        }
    }
    assert_eq!(slow_seen[0], slow_seen[1]);
}

/// How long the holder keeps the mutex, and when in that time the waiter asks for it: the
/// waiter blocks for about the difference, 50 ms, in [2^25, 2^26 - 1] ns (33.6 to 67.1 ms).
const HOLD: Duration = Duration::from_millis(80);
const ASK_AFTER: Duration = Duration::from_millis(30);
const CONTENDED_BUCKET: (i64, i64) = (1 << 25, (1 << 26) - 1);
/// How often a thread polls a flag (with nanosleep, not a futex, so it adds no waits).
const POLL: Duration = Duration::from_millis(1);

#[test]
fn futex_wait_times_a_contended_mutex_under_the_waiters_comm() {
    require_tracing();
    let server = Server::start(&[]);
    const COMM: &str = "heat-futex";
    const ROUNDS: i64 = 3;
    let window = (HOLD + Duration::from_millis(20)) * ROUNDS as u32 + SETTLE;
    let runs = on_both_backends(&server, "futex-wait", json!({"comm": COMM}), window, || {
        let lock = Arc::new(Mutex::new(()));
        let held = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let waiter = {
            let (lock, held, done) = (lock.clone(), held.clone(), done.clone());
            std::thread::spawn(move || {
                set_comm(COMM);
                for _ in 0..ROUNDS {
                    while !held.swap(false, Ordering::SeqCst) {
                        std::thread::sleep(POLL);
                    }
                    std::thread::sleep(ASK_AFTER);
                    drop(lock.lock().unwrap());
                    done.store(true, Ordering::SeqCst);
                }
            })
        };
        for _ in 0..ROUNDS {
            let guard = lock.lock().unwrap();
            held.store(true, Ordering::SeqCst);
            std::thread::sleep(HOLD);
            drop(guard);
            while !done.swap(false, Ordering::SeqCst) {
                std::thread::sleep(POLL);
            }
        }
        waiter.join().unwrap();
    });
    let mut seen = Vec::new();
    for (backend, started, frames) in &runs {
        assert_eq!(
            started["aggregations"],
            json!([{"name": "@latency_ns", "kind": "hist"}]),
            "{backend}"
        );
        let keys = every_key(frames);
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec![COMM], "{backend}");
        let buckets = &keys[COMM];
        assert!(buckets.keys().all(is_log2), "{backend}: {buckets:?}");
        assert_eq!(
            buckets.get(&CONTENDED_BUCKET),
            Some(&ROUNDS),
            "{backend}: each contended lock waited about 50 ms: {buckets:?}"
        );
        seen.push(buckets.clone());
    }
    assert_eq!(seen[0], seen[1], "both backends time the same waits alike");
}

/// dd's block size for the block-io-size test, and the log2 byte bucket it lands in.
const DD_BLOCK: i64 = 64 * 1024;
const DD_BUCKET: (i64, i64) = (DD_BLOCK, 2 * DD_BLOCK - 1);

#[test]
fn block_io_size_buckets_dds_direct_writes_by_their_size() {
    require_tracing();
    let server = Server::start(&[]);
    const BLOCKS: i64 = 16;
    // Beside the build's files, on the root filesystem (not tmpfs).
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("heat-dd");
    let of = format!("of={}", path.display());
    let runs = on_both_backends(
        &server,
        "block-io-size",
        json!({"comm": "dd"}),
        Duration::from_millis(500) + SETTLE,
        move || {
            let status = std::process::Command::new("dd")
                .args([
                    "if=/dev/zero",
                    of.as_str(),
                    &format!("bs={DD_BLOCK}"),
                    &format!("count={BLOCKS}"),
                    "oflag=direct",
                    "status=none",
                ])
                .status()
                .expect("run dd");
            assert!(status.success());
            std::fs::remove_file(&path).unwrap();
        },
    );
    let mut seen = Vec::new();
    for (backend, started, frames) in &runs {
        assert_eq!(
            started["aggregations"],
            json!([{"name": "@size_bytes", "kind": "hist"}]),
            "{backend}"
        );
        let keys = every_key(frames);
        let writes: i64 = keys
            .iter()
            .filter(|(op, _)| op.starts_with('W'))
            .map(|(_, b)| b.get(&DD_BUCKET).copied().unwrap_or(0))
            .sum();
        assert_eq!(
            writes, BLOCKS,
            "{backend}: every {DD_BLOCK}-byte direct write under a W key: {keys:?}"
        );
        for buckets in keys.values() {
            assert!(buckets.keys().all(is_log2), "{backend}: {keys:?}");
        }
        seen.push(keys);
    }
    assert_eq!(seen[0], seen[1], "both backends see dd's requests alike");
}

/// The CPU burner's share of every second: it spins from the start of each second of the
/// monotonic clock for this long, then sleeps to the next second.
const BURN: Duration = Duration::from_millis(150);
/// cpu-profile's rows below this offset (ms) are the burner's: the first rows of 20 ms that
/// `BURN` covers, and one more for a sample taken as the burner stops.
const BURN_ROWS_END_MS: i64 = 200;
/// Seconds the burner runs.
const BURN_SECONDS: u32 = 3;

/// Nanoseconds of the monotonic clock (bpftrace's `nsecs`, BPF's `bpf_ktime_get_ns`).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn cpu_profile_puts_a_burner_at_the_start_of_each_second_in_the_first_rows() {
    require_tracing();
    let server = Server::start(&[]);
    const COMM: &str = "heat-burn";
    let window = Duration::from_secs(u64::from(BURN_SECONDS) + 1) + SETTLE;
    let runs = on_both_backends(
        &server,
        "cpu-profile",
        json!({"comm": COMM}),
        window,
        || {
            set_comm(COMM);
            let second_ns = 1_000_000_000u64;
            let end = monotonic_ns() + u64::from(BURN_SECONDS) * second_ns;
            let mut spins = 0u64;
            while monotonic_ns() < end {
                let offset = monotonic_ns() % second_ns;
                if offset < BURN.as_nanos() as u64 {
                    spins = std::hint::black_box(spins.wrapping_add(1));
                } else {
                    std::thread::sleep(Duration::from_nanos(second_ns - offset));
                }
            }
        },
    );
    for (backend, started, frames) in &runs {
        assert_eq!(
            started["aggregations"],
            json!([{"name": "@offset_ms", "kind": "lhist",
                "layout": {"min": 0, "max": 1000, "step": 20}}]),
            "{backend}"
        );
        assert_eq!(started["unit"], "ms-offset", "{backend}");
        let keys = every_key(frames);
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec![COMM], "{backend}");
        let rows = &keys[COMM];
        assert!(
            rows.values().sum::<i64>() > 0,
            "{backend}: the burner was sampled"
        );
        for &(lo, hi) in rows.keys() {
            assert!(
                lo >= 0 && lo % 20 == 0 && hi == lo + 19 && hi < BURN_ROWS_END_MS,
                "{backend}: a sample outside the burner's first rows: {rows:?}"
            );
        }
    }
    // The sessions are gone: the per-CPU perf events went with the native program's links.
    let perf_events = || {
        std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|t| t.to_string_lossy().contains("perf_event"))
            .count()
    };
    assert!(
        Server::eventually(Duration::from_secs(10), || perf_events() == 0
            && server.bpf_fds() == 0),
        "perf events or BPF objects left: {} perf events, {} BPF fds",
        perf_events(),
        server.bpf_fds()
    );
}

#[test]
fn hello_lists_the_new_presets_with_units_and_filters() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    let hello = client.expect("hello", Duration::from_secs(5));
    let presets: BTreeMap<String, Json> = hello["presets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p.clone()))
        .collect();
    for (name, unit, filters) in [
        ("offcpu-time", "ns", true),
        ("hardirq-latency", "ns", false),
        ("tcp-connect-latency", "us", true),
        ("futex-wait", "ns", true),
        ("block-io-size", "bytes", true),
        ("cpu-profile", "ms-offset", true),
        ("softirq-latency", "us", false),
        ("syscall-latency", "us", true),
    ] {
        let preset = &presets[name];
        assert_eq!(preset["unit"], unit, "{name}");
        let expected = if filters {
            json!(["pid", "comm"])
        } else {
            json!([])
        };
        assert_eq!(preset["filters"], expected, "{name}");
    }
}

/// Runs `preset`'s D version (as a D script: stock Linux translates it to bpftrace) while
/// `workload` runs, and returns its `started` and frames.
fn d_version(
    server: &Server,
    preset: &str,
    window: Duration,
    workload: impl FnOnce() + Send + 'static,
) -> (Json, Vec<Json>) {
    let d = heat_actix::presets::find(preset)
        .unwrap()
        .d
        .expect("a D version");
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.send(json!({"type": "start", "lang": "d", "script": d, "tick_ms": TEST_TICK_MS}));
    let started = client.expect("started", Duration::from_secs(60));
    assert_eq!(started["engine"], "d-to-bpftrace", "{started}");
    let worker = std::thread::spawn(workload);
    let frames = client.frames_for(window);
    worker.join().expect("the workload ran");
    (started, frames)
}

#[test]
fn offcpu_times_d_version_puts_known_sleeps_in_the_same_bucket() {
    require_tracing();
    let server = Server::start(&[]);
    const COMM: &str = "heat-offcpu-d";
    const SLEEPS: i64 = 4;
    let window = SLEEP * SLEEPS as u32 + Duration::from_millis(300) + SETTLE;
    let (started, frames) = d_version(&server, "offcpu-time", window, || {
        set_comm(COMM);
        for _ in 0..SLEEPS {
            std::thread::sleep(SLEEP);
        }
    });
    assert_eq!(
        started["aggregations"],
        json!([{"name": "@offcpu_ns", "kind": "quantize"}])
    );
    // No comm filter in a D script: the whole machine is there, our thread under its name.
    let buckets = buckets_for(&frames, &json!(COMM));
    assert!(buckets.keys().all(is_log2), "{buckets:?}");
    assert_eq!(
        buckets.get(&SLEEP_BUCKET),
        Some(&SLEEPS),
        "every sleep off CPU in the bucket the .bt puts it in: {buckets:?}"
    );
}

#[test]
fn cpu_profiles_d_version_puts_a_burner_in_the_first_rows() {
    require_tracing();
    let server = Server::start(&[]);
    const COMM: &str = "heat-burn-d";
    let window = Duration::from_secs(u64::from(BURN_SECONDS) + 1) + SETTLE;
    let (started, frames) = d_version(&server, "cpu-profile", window, || {
        set_comm(COMM);
        let second_ns = 1_000_000_000u64;
        let end = monotonic_ns() + u64::from(BURN_SECONDS) * second_ns;
        let mut spins = 0u64;
        while monotonic_ns() < end {
            let offset = monotonic_ns() % second_ns;
            if offset < BURN.as_nanos() as u64 {
                spins = std::hint::black_box(spins.wrapping_add(1));
            } else {
                std::thread::sleep(Duration::from_nanos(second_ns - offset));
            }
        }
    });
    // DTrace's lquantize(x, 0, 1000, 20): the .bt's lhist rows.
    assert_eq!(
        started["aggregations"],
        json!([{"name": "@offset_ms", "kind": "lquantize",
            "layout": {"min": 0, "max": 1000, "step": 20}}])
    );
    let rows = buckets_for(&frames, &json!(COMM));
    assert!(rows.values().sum::<i64>() > 0, "the burner was sampled");
    for &(lo, hi) in rows.keys() {
        assert!(
            lo >= 0 && lo % 20 == 0 && hi == lo + 19 && hi < BURN_ROWS_END_MS,
            "a sample outside the burner's first rows: {rows:?}"
        );
    }
}
