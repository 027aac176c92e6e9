//! The native eBPF backend end to end: a real server loading real BPF programs into this
//! kernel. Tests here share one process and run in parallel, so each one uses a syscall no
//! other test here makes (getppid, a raw nanosleep), filtered to this process.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{
    bpf_ids, bpftool_names, bpftool_show, getppid_n, require_tracing, total_for_key, Server,
    TEST_CONFIG,
};

/// Walk interval the tests ask for.
const TEST_TICK_MS: u64 = 200;
/// Length of the sleeps both backends must bucket alike: in the middle of the log2 bucket
/// [2^24, 2^25 - 1] ns (16.8 ms to 33.6 ms), far from both edges.
const SLEEP: Duration = Duration::from_millis(22);
/// A sleep past 2^31 ns, where bpftrace 0.17's hist() puts everything in one open bucket.
const LONG_SLEEP: Duration = Duration::from_millis(2300);
/// The log2 bucket that [`SLEEP`] falls in (unless wake-up is delayed by over 11 ms).
const SLEEP_BUCKET: (i64, i64) = (1 << 24, (1 << 25) - 1);

fn own_pid() -> u32 {
    std::process::id()
}

/// One nanosleep(2) of `d`, as the syscall itself (glibc's nanosleep is clock_nanosleep).
fn raw_nanosleep(d: Duration) {
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: nanosleep reads one timespec we own and may write the null remainder pointer.
    unsafe {
        libc::syscall(
            libc::SYS_nanosleep,
            &ts,
            std::ptr::null_mut::<libc::timespec>(),
        )
    };
}

/// Every (lo, hi) → count of one key's buckets across frames.
fn buckets_for(frames: &[Json], key: &str) -> Vec<(i64, i64, i64)> {
    let mut found = Vec::new();
    for frame in frames {
        for series in frame["aggregations"][0]["series"].as_array().unwrap() {
            if series["key"] == json!([key]) {
                for b in series["buckets"].as_array().unwrap() {
                    found.push((
                        b[0].as_i64().unwrap_or(i64::MIN),
                        b[1].as_i64().unwrap_or(i64::MAX),
                        b[2].as_i64().unwrap(),
                    ));
                }
            }
        }
    }
    found
}

#[test]
fn native_syscall_latency_counts_exactly_n_getppid() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    let hello = client.expect("hello", Duration::from_secs(5));
    assert_eq!(hello["backends"], json!(["ebpf", "bpftrace"]), "{hello}");

    // No `backend`: a preset with a native version runs natively.
    client.send(json!({"type": "start", "preset": "syscall-latency", "tick_ms": TEST_TICK_MS, "pid": own_pid()}));
    let started = client.expect("started", Duration::from_secs(30));
    assert_eq!(started["backend"], "ebpf", "{started}");
    assert_eq!(
        started["aggregations"],
        json!([{"name": "@latency_us", "kind": "lhist", "layout": {"min": 0, "max": 64, "step": 2}}]),
        "the same aggregation as the bpftrace version"
    );

    const N: usize = 5000;
    getppid_n(N);
    let frames = client.frames_for(Duration::from_millis(5 * TEST_TICK_MS));
    assert!(frames.len() >= 3, "one frame a tick: {}", frames.len());
    assert_eq!(
        total_for_key(&frames, "@latency_us", &json!(["getppid"])),
        N as i64,
        "every getppid exactly once"
    );
    // The filter holds: only this process's syscalls, and every frame the bpftrace shape.
    for frame in &frames {
        for series in frame["aggregations"][0]["series"].as_array().unwrap() {
            for b in series["buckets"].as_array().unwrap() {
                match (b[0].as_i64(), b[1].as_i64()) {
                    (Some(lo), Some(hi)) => assert_eq!((lo % 2, hi - lo), (0, 1), "{b}"),
                    (Some(lo), None) => assert_eq!(lo, 64, "{b}"),
                    other => panic!("unexpected bucket {other:?}"),
                }
                assert!(b[2].as_i64().unwrap() > 0, "no empty buckets: {b}");
            }
        }
    }
}

#[test]
fn native_and_bpftrace_put_the_same_sleeps_in_the_same_bucket() {
    require_tracing();
    let server = Server::start(&[]);
    const SLEEPS: i64 = 4;
    // Both backends run at once and see the very same sleeps.
    let mut clients: Vec<_> = ["ebpf", "bpftrace"]
        .into_iter()
        .map(|backend| {
            let mut client = server.connect();
            client.expect("hello", Duration::from_secs(5));
            client.send(json!({"type": "start", "preset": "syscall-latency-log2",
                "tick_ms": TEST_TICK_MS, "backend": backend, "pid": own_pid()}));
            let started = client.expect("started", Duration::from_secs(60));
            assert_eq!(started["backend"], backend);
            (backend, client)
        })
        .collect();
    // The sleeps run on their own thread so that both sockets are read (and their flow-control
    // pings answered) the whole time, also through the long sleep.
    let sleeper = std::thread::spawn(|| {
        for _ in 0..SLEEPS {
            raw_nanosleep(SLEEP);
        }
        raw_nanosleep(LONG_SLEEP);
    });
    let window = LONG_SLEEP + SLEEP * SLEEPS as u32 + Duration::from_millis(4 * TEST_TICK_MS);
    let frames: Vec<(&str, Vec<Json>)> = std::thread::scope(|scope| {
        let readers: Vec<_> = clients
            .iter_mut()
            .map(|(backend, client)| scope.spawn(move || (*backend, client.frames_for(window))))
            .collect();
        readers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    sleeper.join().unwrap();
    let mut seen = Vec::new();
    for (backend, frames) in &frames {
        let buckets = buckets_for(frames, "nanosleep");
        let total: i64 = buckets.iter().map(|b| b.2).sum();
        assert_eq!(
            total,
            SLEEPS + 1,
            "{backend}: every sleep counted once: {buckets:?}"
        );
        let mut by_edges = BTreeMap::new();
        for (lo, hi, n) in buckets {
            *by_edges.entry((lo, hi)).or_insert(0) += n;
        }
        assert_eq!(
            by_edges.get(&(1 << 31, i64::MAX)),
            Some(&1),
            "{backend}: the long sleep is in hist's open top bucket: {by_edges:?}"
        );
        seen.push(by_edges);
    }
    assert_eq!(
        seen[0], seen[1],
        "ebpf and bpftrace bucket the same sleeps differently"
    );
    // A sleep never ends early: nothing below the sleep's own bucket.
    assert!(
        seen[0].keys().all(|&(lo, _)| lo >= SLEEP_BUCKET.0),
        "{:?}",
        seen[0]
    );
}

#[test]
fn a_disconnect_frees_every_bpf_program_and_map() {
    require_tracing();
    let server = Server::start(&[]);
    assert!(
        bpf_ids(server.pid(), "prog_id:").is_empty(),
        "the start-up probe freed what it loaded"
    );
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    let started = client.start_preset_on("syscall-latency", TEST_TICK_MS, "ebpf");
    assert_eq!(started["backend"], "ebpf");
    assert!(server.bpftrace_children().is_empty(), "no bpftrace process");

    let progs = bpf_ids(server.pid(), "prog_id:");
    let maps = bpf_ids(server.pid(), "map_id:");
    let names: BTreeSet<String> = bpftool_names("prog", &progs).into_iter().collect();
    assert_eq!(
        names,
        BTreeSet::from(["heat_sys_enter", "heat_sys_exit", "heat_sys_switch"].map(String::from))
    );
    let map_names = bpftool_names("map", &maps);
    assert!(
        !map_names.is_empty() && map_names.iter().all(|n| n.starts_with("heat_")),
        "our maps are named heat_*: {map_names:?}"
    );

    drop(client); // an abrupt TCP close
    assert!(
        Server::eventually(Duration::from_secs(5), || {
            bpf_ids(server.pid(), "prog_id:").is_empty()
                && bpf_ids(server.pid(), "map_id:").is_empty()
        }),
        "the server still holds BPF objects after the client left"
    );
    assert!(
        Server::eventually(Duration::from_secs(5), || {
            progs.iter().all(|&id| bpftool_show("prog", id).is_none())
                && maps.iter().all(|&id| bpftool_show("map", id).is_none())
        }),
        "programs {progs:?} or maps {maps:?} are still loaded in the kernel"
    );
}

#[test]
fn forcing_and_refusing_backends() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    // A script never runs natively.
    client.send(
        json!({"type": "start", "lang": "bpftrace", "backend": "ebpf",
        "script": "tracepoint:raw_syscalls:sys_exit { @n = count(); }"}),
    );
    assert_eq!(
        client.expect("error", Duration::from_secs(5))["code"],
        "unsupported"
    );
    // A preset without a process filter site refuses one, on any backend.
    client.send(json!({"type": "start", "preset": "softirq-latency", "pid": own_pid()}));
    let error = client.expect("error", Duration::from_secs(5));
    assert_eq!(error["code"], "bad_request", "{error}");
    // Forced bpftrace runs bpftrace even for a preset with a native version.
    let started = client.start_preset_on("syscall-latency", TEST_TICK_MS, "bpftrace");
    assert_eq!(started["backend"], "bpftrace");
    assert_eq!(server.bpftrace_children().len(), 1);
    client.send(json!({"type": "stop"}));
    client.expect("stopped", Duration::from_secs(5));
}

/// Starts `syscall-latency` with no backend asked for; the `started` message and one frame.
fn start_unforced(server: &Server) -> (Json, Json) {
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.send(json!({"type": "start", "preset": "syscall-latency", "tick_ms": TEST_TICK_MS}));
    let started = client.expect("started", Duration::from_secs(60));
    let frame = client.expect("frame", Duration::from_secs(10));
    (started, frame)
}

#[test]
fn a_native_program_that_fails_to_load_falls_back_to_bpftrace_and_says_why() {
    require_tracing();
    let server = Server::start_with(TEST_CONFIG, &[], &[("HEAT_ACTIX_FAULT", "ebpf_load")]);
    let (started, frame) = start_unforced(&server);
    assert_eq!(started["backend"], "bpftrace", "{started}");
    let why = started["fallback"].as_str().unwrap_or_default();
    assert!(
        why.starts_with("ebpf could not start it: the native program failed to load"),
        "{started}"
    );
    assert_eq!(frame["aggregations"][0]["name"], "@latency_us");
    assert!(server.log().contains("Falling back to another backend."));
    // Asked for by name, the native backend does not fall back: the error says why.
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.send(json!({"type": "start", "preset": "syscall-latency", "backend": "ebpf"}));
    let error = client.expect("error", Duration::from_secs(10));
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("the native program failed to load"),
        "{error}"
    );
}

#[test]
fn without_native_support_presets_run_on_bpftrace_and_say_why() {
    require_tracing();
    let server = Server::start_with(TEST_CONFIG, &[], &[("HEAT_ACTIX_FAULT", "ebpf_probe")]);
    assert!(server
        .log()
        .contains("Native eBPF presets unavailable: presets run on bpftrace."));
    let (started, frame) = start_unforced(&server);
    assert_eq!(started["backend"], "bpftrace", "{started}");
    assert!(
        started["fallback"]
            .as_str()
            .unwrap_or_default()
            .starts_with("ebpf cannot run here: native programs refused at start-up"),
        "{started}"
    );
    assert_eq!(frame["aggregations"][0]["name"], "@latency_us");
    assert!(
        bpf_ids(server.pid(), "prog_id:").is_empty(),
        "nothing native loaded"
    );
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.send(json!({"type": "start", "preset": "syscall-latency", "backend": "ebpf"}));
    let error = client.expect("error", Duration::from_secs(10));
    assert_eq!(error["code"], "unsupported", "{error}");
}

#[test]
fn without_bpftrace_hello_says_so_and_presets_still_run_natively() {
    require_tracing();
    let config = format!("{TEST_CONFIG}[bpftrace]\npath = \"/nonexistent/bpftrace\"\n");
    let server = Server::start_with(&config, &[], &[]);
    let mut client = server.connect();
    let hello = client.expect("hello", Duration::from_secs(5));
    assert_eq!(hello["backends"], json!(["ebpf"]), "{hello}");
    let started = client.start_preset("syscall-latency", TEST_TICK_MS);
    assert_eq!(started["backend"], "ebpf", "{started}");
    client.expect("frame", Duration::from_secs(10));
    // A script needs bpftrace: refused as unsupported, naming the configured path, and the
    // native program keeps running.
    client.send(json!({"type": "start", "lang": "bpftrace", "script": "BEGIN { @n = count(); }"}));
    let error = client.expect("error", Duration::from_secs(10));
    assert_eq!(error["code"], "unsupported", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("/nonexistent/bpftrace"),
        "{error}"
    );
    client.expect("frame", Duration::from_secs(10));
}

/// True when `b` is a bpftrace `hist` bucket: [0, 0] or [2^k, 2^(k+1) - 1].
fn is_log2_bucket(b: &Json) -> bool {
    match (b[0].as_i64(), b[1].as_i64()) {
        (Some(0), Some(0)) => true,
        (Some(lo), Some(hi)) => lo > 0 && lo.count_ones() == 1 && hi == 2 * lo - 1,
        _ => false,
    }
}

#[test]
fn the_other_presets_run_natively_with_named_keys_and_log2_buckets() {
    require_tracing();
    let server = Server::start(&[]);
    let softirqs = [
        "hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched", "hrtimer",
        "rcu",
    ];
    for preset in ["runqueue-latency", "softirq-latency", "block-io-latency"] {
        let mut client = server.connect();
        client.expect("hello", Duration::from_secs(5));
        let started = client.start_preset_on(preset, TEST_TICK_MS, "ebpf");
        assert_eq!(started["backend"], "ebpf", "{preset}");
        assert_eq!(
            started["aggregations"],
            json!([{"name": "@latency_us", "kind": "hist"}]),
            "{preset}"
        );
        if preset == "block-io-latency" {
            // Some I/O to see: a synced write beside the build's files (not on tmpfs).
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("heat-bio");
            std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
            std::fs::File::open(&path).unwrap().sync_all().unwrap();
            std::fs::remove_file(&path).unwrap();
        }
        let frames = client.frames_for(Duration::from_millis(5 * TEST_TICK_MS));
        let series: Vec<Json> = frames
            .iter()
            .flat_map(|f| f["aggregations"][0]["series"].as_array().unwrap().clone())
            .collect();
        assert!(
            !series.is_empty(),
            "{preset}: nothing measured in {} frames",
            frames.len()
        );
        for s in &series {
            let key = s["key"][0].as_str().unwrap_or_default();
            assert!(!key.is_empty() && !key.contains('\0'), "{preset}: key {s}");
            if preset == "softirq-latency" {
                assert!(softirqs.contains(&key), "softirq named: {key}");
            }
            let buckets = s["buckets"].as_array().unwrap();
            assert!(!buckets.is_empty());
            assert!(buckets.iter().all(is_log2_bucket), "{preset}: {s}");
        }
    }
}
