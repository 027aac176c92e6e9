//! The heat pipe end to end: a real server, real bpftrace, real syscalls, real websockets.

mod support;

use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{getppid_n, gettid, require_tracing, total_for_key, Received, Server};

/// Walk interval the tests ask for: short, so tests are quick, but still many syscalls a tick.
const TEST_TICK_MS: u64 = 200;

#[test]
fn syscall_latency_counts_every_getppid_under_its_name() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    let hello = client.expect("hello", Duration::from_secs(5));
    assert!(hello["presets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "syscall-latency"));

    let started = client.start_preset_on("syscall-latency", TEST_TICK_MS, "bpftrace");
    assert_eq!(started["backend"], "bpftrace");
    assert_eq!(started["unit"], "us");
    assert_eq!(started["aggregations"][0]["kind"], "lhist");

    const N: usize = 5000;
    getppid_n(N);
    let frames = client.frames_for(Duration::from_millis(6 * TEST_TICK_MS));
    assert!(
        frames.len() >= 3,
        "frames arrive once per tick: got {}",
        frames.len()
    );
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq counts up: {seqs:?}"
    );
    let counted = total_for_key(&frames, "@latency_us", &json!(["getppid"]));
    assert!(
        counted >= N as i64,
        "made {N} getppid calls, heatmap counted {counted}"
    );
    // Buckets are ascending, inclusive, 2 us wide, with an open top end.
    for frame in &frames {
        for series in frame["aggregations"][0]["series"].as_array().unwrap() {
            let buckets = series["buckets"].as_array().unwrap();
            for b in buckets {
                match (b[0].as_i64(), b[1].as_i64()) {
                    (Some(lo), Some(hi)) => assert_eq!((lo % 2, hi - lo), (0, 1), "{b}"),
                    (Some(lo), None) => assert_eq!(lo, 64, "{b}"),
                    other => panic!("unexpected bucket {other:?}"),
                }
            }
        }
    }
}

#[test]
fn a_custom_script_decodes_every_kind_exactly() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    let tid = gettid();
    let script = format!(
        "tracepoint:syscalls:sys_enter_getppid /tid == {tid}/ {{
            @n = count(); @s = sum(3); @h = hist(7); @l = lhist(5, 0, 10, 2);
            @k[comm, 42] = count(); @st[tid] = stats(10); @mx = max(9);
            @scratch[tid] = nsecs;
        }}"
    );
    let started = client.start_script(&script, TEST_TICK_MS);
    let names: Vec<&str> = started["aggregations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["@n", "@s", "@h", "@l", "@k", "@st", "@mx"],
        "state maps are not aggregations"
    );
    assert_eq!(
        started["aggregations"][3]["layout"],
        json!({"min": 0, "max": 10, "step": 2})
    );

    const N: usize = 100;
    getppid_n(N);
    let frames = client.frames_for(Duration::from_millis(5 * TEST_TICK_MS));
    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(total_for_key(&frames, "@n", &json!([])), N as i64);
    assert_eq!(total_for_key(&frames, "@s", &json!([])), 3 * N as i64);
    assert_eq!(total_for_key(&frames, "@k", &json!([comm, 42])), N as i64);

    let buckets_of = |name: &str| -> Vec<Json> {
        frames
            .iter()
            .flat_map(|f| f["aggregations"].as_array().unwrap().clone())
            .filter(|a| a["name"] == name)
            .flat_map(|a| a["series"].as_array().unwrap().clone())
            .flat_map(|s| s["buckets"].as_array().unwrap().clone())
            .collect()
    };
    let hist = buckets_of("@h");
    assert!(
        hist.iter().all(|b| b[0] == 4 && b[1] == 7),
        "7 falls in the log2 bucket [4, 7]: {hist:?}"
    );
    assert_eq!(
        hist.iter().map(|b| b[2].as_i64().unwrap()).sum::<i64>(),
        N as i64
    );
    let lhist = buckets_of("@l");
    assert!(
        lhist.iter().all(|b| b[0] == 4 && b[1] == 5),
        "5 falls in the linear bucket [4, 5]: {lhist:?}"
    );
    assert_eq!(
        lhist.iter().map(|b| b[2].as_i64().unwrap()).sum::<i64>(),
        N as i64
    );

    // Per-interval stats of one thread: counts add up to N, and every average is 10.
    let stats: Vec<Json> = frames
        .iter()
        .flat_map(|f| f["aggregations"][5]["series"].as_array().unwrap().clone())
        .collect();
    assert_eq!(
        stats
            .iter()
            .map(|s| s["count"].as_i64().unwrap())
            .sum::<i64>(),
        N as i64
    );
    assert!(
        stats
            .iter()
            .all(|s| s["value"] == 10 && s["key"] == json!([tid])),
        "{stats:?}"
    );
    // Every frame lists every aggregation, empty or not.
    assert!(frames
        .iter()
        .all(|f| f["aggregations"].as_array().unwrap().len() == 7));
}

#[test]
fn a_disconnect_kills_the_tracer_and_frees_its_thread_and_fds() {
    require_tracing();
    let server = Server::start(&[]);
    // Let the runtime settle before taking the baseline.
    let mut warmup = server.connect();
    warmup.expect("hello", Duration::from_secs(5));
    drop(warmup);
    assert!(Server::eventually(Duration::from_secs(2), || server
        .metric("heat_sessions_active")
        == Some(0.0)));
    let (threads, fds) = (server.threads(), server.fds());

    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.start_preset_on("syscall-latency", TEST_TICK_MS, "bpftrace");
    let first = server.bpftrace_children();
    assert_eq!(first.len(), 1, "one tracer for one program");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", first[0])).unwrap();
    let args: Vec<&[u8]> = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .collect();
    assert_eq!(
        args[1..],
        [&b"-f"[..], b"json", b"-"],
        "the script goes in on stdin, never on the command line"
    );
    // A new start replaces the program: the old tracer is gone, a new one runs.
    client.send(json!({"type": "start", "preset": "runqueue-latency", "tick_ms": TEST_TICK_MS, "backend": "bpftrace"}));
    assert_eq!(
        client.expect("stopped", Duration::from_secs(5))["reason"],
        "replaced"
    );
    client.expect("started", Duration::from_secs(30));
    assert!(Server::eventually(Duration::from_secs(2), || {
        let now = server.bpftrace_children();
        now.len() == 1 && now[0] != first[0]
    }));
    assert!(
        server.threads() > threads,
        "the consumer runs on threads of its own"
    );

    drop(client); // an abrupt TCP close, no websocket close frame
    assert!(
        Server::eventually(Duration::from_secs(2), || server
            .bpftrace_children()
            .is_empty()),
        "bpftrace still running after the client left: {:?}",
        server.bpftrace_children()
    );
    assert!(
        Server::eventually(Duration::from_secs(2), || server.threads() == threads
            && server.fds() <= fds),
        "threads {} (was {threads}), fds {} (was {fds})",
        server.threads(),
        server.fds()
    );
    assert_eq!(server.metric("heat_sessions_active"), Some(0.0));
}

#[test]
fn the_session_over_the_cap_is_closed_with_1013() {
    let server = Server::start(&["--max-sessions", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    a.expect("hello", Duration::from_secs(5));
    b.expect("hello", Duration::from_secs(5));
    let mut c = server.connect();
    match c.recv(Duration::from_secs(5)) {
        Received::Closed(Some((code, reason))) => {
            assert_eq!(u16::from(code), 1013);
            assert!(reason.contains("max_sessions = 2"), "{reason}");
        }
        other => panic!("expected a 1013 close, got {other:?}"),
    }
    assert_eq!(server.metric("heat_sessions_active"), Some(2.0));
    assert_eq!(
        server.metric("heat_sessions_rejected_total{reason=\"capacity\"}"),
        Some(1.0)
    );
    assert_eq!(server.metric("heat_sessions_started_total"), Some(2.0));
    // A slot freed is a slot reusable.
    drop(a);
    assert!(Server::eventually(Duration::from_secs(2), || server
        .metric("heat_sessions_active")
        == Some(1.0)));
    let mut d = server.connect();
    d.expect("hello", Duration::from_secs(5));
}

#[test]
fn bad_requests_get_errors_and_the_session_stays_usable() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    let cases = [
        ("{not json", "bad_request"),
        (r#"{"type":"dance"}"#, "bad_request"),
        (
            r#"{"type":"start","preset":"no-such-preset"}"#,
            "unknown_preset",
        ),
        (
            r#"{"type":"start","preset":"syscall-latency","tick_ms":5}"#,
            "bad_request",
        ),
        (
            r#"{"type":"start","lang":"cobol","script":"x"}"#,
            "unsupported",
        ),
    ];
    for (text, code) in cases {
        client.send_text(text);
        let error = client.expect("error", Duration::from_secs(5));
        assert_eq!(error["code"], code, "{text}: {error}");
    }
    client
        .ws
        .send(tungstenite::Message::binary(vec![1, 2, 3]))
        .unwrap();
    assert_eq!(
        client.expect("error", Duration::from_secs(5))["code"],
        "bad_request"
    );

    // A script bpftrace refuses: its own message comes back.
    client.send(json!({"type": "start", "lang": "bpftrace", "script": "tracepoint:raw_syscalls:sys_exit { @x = nope(1); }"}));
    let error = client.expect("error", Duration::from_secs(30));
    assert_eq!(error["code"], "compile");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("Unknown function: nope"), "{message}");
    assert!(
        message.contains("stdin:1:"),
        "bpftrace's position is kept: {message}"
    );
    assert!(
        !message.contains("RLIMIT_MEMLOCK"),
        "harmless warnings are not errors: {message}"
    );
    assert!(server.bpftrace_children().is_empty());
    // A probe that does not exist: also bpftrace's message.
    client.send(json!({"type": "start", "lang": "bpftrace", "script": "tracepoint:nosuch:thing { @x = count(); }"}));
    let error = client.expect("error", Duration::from_secs(30));
    assert!(
        error["message"].as_str().unwrap().contains("nosuch"),
        "{error}"
    );

    // Still usable.
    let started = client.start_preset("syscall-latency", TEST_TICK_MS);
    assert_eq!(started["preset"], "syscall-latency");
    assert!(!client
        .frames_for(Duration::from_millis(3 * TEST_TICK_MS))
        .is_empty());
    client.send(json!({"type": "stop"}));
    assert_eq!(
        client.expect("stopped", Duration::from_secs(5))["reason"],
        "client"
    );
    assert!(Server::eventually(Duration::from_secs(2), || server
        .bpftrace_children()
        .is_empty()));
}

#[test]
fn a_tracer_killed_from_outside_is_reported_and_released() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.start_preset_on("syscall-latency", TEST_TICK_MS, "bpftrace");
    let tracer = server.bpftrace_children()[0];
    // SAFETY: kill takes a pid and a signal; the pid is a live child of the server.
    unsafe { libc::kill(tracer as libc::pid_t, libc::SIGKILL) };
    let error = client.expect("error", Duration::from_secs(10));
    assert_eq!(error["code"], "tracer");
    assert_eq!(
        client.expect("stopped", Duration::from_secs(5))["reason"],
        "tracer_exited"
    );
    assert!(Server::eventually(Duration::from_secs(2), || server
        .bpftrace_children()
        .is_empty()));
    assert!(
        server
            .metric("heat_consumer_errors_total{kind=\"exited\"}")
            .unwrap()
            >= 1.0
    );
    // The session can start again.
    client.start_preset_on("syscall-latency", TEST_TICK_MS, "bpftrace");
}
