//! The watcher is not in its own picture: the syscall presets leave out heat-actix's process and
//! the bpftrace processes it runs, on both backends, unless a start asks `include_self`; every
//! other process stays in.
//!
//! A machine shared with other tests has other `bpf` callers, so the proof narrows the picture
//! to one of our processes at a time with `pid` (the exclusion holds under any filter): by
//! default that process's picture is empty; with `include_self: true` the same start shows its
//! `bpf` calls. So the exclusion, and nothing else, is what took them out.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value as Json};
use support::{getppid_n, require_tracing, total_for_key, Client, Received, Server};

/// Walk interval of every session here: the shortest there is, so map reads are frequent.
const TICK_MS: u64 = 100;
/// Ticks of frames each check reads.
const TICKS: u64 = 6;
/// How long a start may take (bpftrace compiles and attaches).
const START_TIMEOUT: Duration = Duration::from_secs(60);
const BACKENDS: [&str; 2] = ["ebpf", "bpftrace"];

/// A connected client past its `hello`.
fn client(server: &Server) -> Client {
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client
}

/// Starts `syscall-latency` on `backend` with the extra start fields in `fields`.
fn start(client: &mut Client, backend: &str, fields: Json) -> Json {
    let mut request = json!({"type": "start", "preset": "syscall-latency", "tick_ms": TICK_MS, "backend": backend});
    for (field, value) in fields.as_object().unwrap() {
        request[field] = value.clone();
    }
    client.send(request);
    // A start that replaces a running program is answered `stopped` (replaced) first, and
    // frames of the replaced program may still be on the way.
    let deadline = Instant::now() + START_TIMEOUT;
    let started = loop {
        match client.recv(deadline.saturating_duration_since(Instant::now())) {
            Received::Json(m) if m["type"] == "started" => break m,
            Received::Json(m) if m["type"] == "frame" => {}
            Received::Json(m) if m["type"] == "stopped" && m["reason"] == "replaced" => {}
            other => panic!("expected started, got {other:?}"),
        }
    };
    assert_eq!(started["backend"], backend, "{started}");
    started
}

/// Events per syscall name over `frames`.
fn by_syscall(frames: &[Json]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for frame in frames {
        for series in frame["aggregations"][0]["series"].as_array().unwrap() {
            let count: i64 = series["buckets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b[2].as_i64().unwrap())
                .sum();
            *totals
                .entry(series["key"][0].as_str().unwrap().to_owned())
                .or_insert(0) += count;
        }
    }
    totals
}

/// Frames of the running session, at least three of them.
fn frames(client: &mut Client) -> Vec<Json> {
    let frames = client.frames_for(Duration::from_millis(TICKS * TICK_MS));
    assert!(frames.len() >= 3, "one frame a tick: {}", frames.len());
    frames
}

/// What `started.excluded` says for a server with this pid on this kernel.
fn excluded(server: u32) -> Json {
    let mut list = vec![json!({"pid": server, "why": "heat-actix itself"})];
    if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        list.push(json!({"ppid": server, "why": "the tracers heat-actix runs"}));
    }
    Json::Array(list)
}

#[test]
fn the_server_and_its_tracers_are_left_out_unless_a_start_asks_for_them() {
    require_tracing();
    let server = Server::start(&[]);
    // Two sessions that keep our processes calling bpf(2) every tick: a native one (the server
    // reads its maps) and a bpftrace one (its bpftrace child prints and clears its maps).
    let mut native = client(&server);
    start(&mut native, "ebpf", json!({}));
    let mut traced = client(&server);
    start(&mut traced, "bpftrace", json!({}));
    let tracers = server.bpftrace_children();
    assert_eq!(tracers.len(), 1, "one bpftrace child: {tracers:?}");
    let ours = [
        ("heat-actix", server.pid()),
        ("heat-actix's bpftrace", tracers[0]),
    ];

    let mut measuring = client(&server);
    for backend in BACKENDS {
        for (who, pid) in ours {
            let started = start(&mut measuring, backend, json!({"pid": pid}));
            assert_eq!(started["excluded"], excluded(server.pid()), "{started}");
            let left_out = by_syscall(&frames(&mut measuring));
            assert!(
                left_out.is_empty(),
                "by default nothing of {who} (pid {pid}) on {backend}: {left_out:?}"
            );

            let started = start(
                &mut measuring,
                backend,
                json!({"pid": pid, "include_self": true}),
            );
            assert!(started.get("excluded").is_none(), "{started}");
            let included = by_syscall(&frames(&mut measuring));
            assert!(
                included.get("bpf").is_some_and(|&n| n > 0),
                "with include_self, {who}'s map reads (pid {pid}) on {backend}: {included:?}"
            );
        }
    }
    // Both background sessions ran throughout: what was left out was there to be seen.
    assert!(!by_syscall(&frames(&mut native)).is_empty());
    assert!(!by_syscall(&frames(&mut traced)).is_empty());
}

#[test]
fn other_processes_stay_in_the_picture() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = client(&server);
    const N: usize = 5000;
    for backend in BACKENDS {
        let started = start(&mut client, backend, json!({}));
        assert_eq!(started["excluded"], excluded(server.pid()), "{started}");
        getppid_n(N);
        let frames = frames(&mut client);
        let counted = total_for_key(&frames, "@latency_us", &json!(["getppid"]));
        // At least this test's calls: other processes may call getppid too.
        assert!(
            counted >= N as i64,
            "this process's {N} getppid calls on {backend}: {counted}"
        );
    }
}

#[test]
fn include_self_is_for_presets() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = client(&server);
    client.send(json!({"type": "start", "lang": "bpftrace", "script": "BEGIN { exit(); }", "include_self": true}));
    let error = client.expect("error", Duration::from_secs(5));
    assert_eq!(error["code"], "bad_request", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("include_self"),
        "{error}"
    );
    client.send(json!({"type": "start", "preset": "syscall-latency", "include_self": "yes"}));
    let error = client.expect("error", Duration::from_secs(5));
    assert_eq!(error["code"], "bad_request", "{error}");
    // A preset that leaves nothing out accepts the field and says nothing is excluded.
    client.send(json!({"type": "start", "preset": "softirq-latency", "include_self": false}));
    let started = client.expect("started", START_TIMEOUT);
    assert!(started.get("excluded").is_none(), "{started}");
}
