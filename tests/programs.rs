//! Many viewers, one tracer: sessions that ask for the same program share it, joiners get its
//! recent past at once, a slow viewer fetches what it skipped, and the last one out frees it.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{bpf_ids, require_tracing, Client, Received, Server};

const SECOND: Duration = Duration::from_secs(1);
/// How long the last viewer's program may take to be gone.
const FREED_WITHIN: Duration = Duration::from_secs(2);

fn start(client: &mut Client, request: Json) -> Json {
    client.send(request);
    client.expect("started", Duration::from_secs(60))
}

fn preset(name: &str, tick_ms: u64) -> Json {
    json!({"type": "start", "preset": name, "tick_ms": tick_ms, "backend": "ebpf"})
}

/// Frames (live, and those inside `history` messages) by `seq`, for `duration`.
fn frames_by_seq(client: &mut Client, duration: Duration) -> BTreeMap<u64, Json> {
    let deadline = std::time::Instant::now() + duration;
    let mut frames = BTreeMap::new();
    while std::time::Instant::now() < deadline {
        if let Received::Json(m) = client.recv(deadline - std::time::Instant::now()) {
            let batch = match m["type"].as_str() {
                Some("frame") => vec![m],
                Some("history") => m["frames"].as_array().unwrap().clone(),
                _ => continue,
            };
            for frame in batch {
                let seq = frame["seq"].as_u64().unwrap();
                assert!(frames.insert(seq, frame).is_none(), "seq {seq} came twice");
            }
        }
    }
    frames
}

fn programs(server: &Server) -> usize {
    bpf_ids(server.pid(), "prog_id:").len()
}

#[test]
fn two_viewers_of_a_preset_share_one_program_until_the_last_leaves() {
    require_tracing();
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.expect("hello", 5 * SECOND);
    let started = start(&mut a, preset("syscall-latency", 200));
    assert_eq!(started["shared"], true);
    assert_eq!(started["viewers"], 1);
    let alone = programs(&server);
    assert!(alone > 0);

    let mut b = server.connect();
    b.expect("hello", 5 * SECOND);
    let joined = start(&mut b, preset("syscall-latency", 200));
    assert_eq!(joined["program"], started["program"], "one program");
    assert_eq!(joined["viewers"], 2);
    assert_eq!(programs(&server), alone, "no second set of BPF programs");
    assert_eq!(
        server.metric("heat_programs_active{backend=\"ebpf\"}"),
        Some(1.0)
    );

    // Both see the same frames: the same bytes, so the same JSON.
    let (fa, fb) = std::thread::scope(|s| {
        let fa = s.spawn(|| frames_by_seq(&mut a, 2 * SECOND));
        let fb = frames_by_seq(&mut b, 2 * SECOND);
        (fa.join().unwrap(), fb)
    });
    let common: Vec<u64> = fa.keys().filter(|s| fb.contains_key(s)).copied().collect();
    assert!(common.len() >= 5, "{common:?}");
    for seq in common {
        assert_eq!(fa[&seq], fb[&seq], "frame {seq}");
    }

    // The first leaves: it is told at once, the program runs on for the second.
    a.send(json!({"type": "stop"}));
    assert_eq!(a.expect("stopped", 5 * SECOND)["reason"], "client");
    let later = frames_by_seq(&mut b, SECOND);
    assert!(later.len() >= 3, "the second viewer keeps its frames");
    assert_eq!(programs(&server), alone);

    // The last leaves: the program and its BPF programs are gone.
    b.send(json!({"type": "stop"}));
    b.expect("stopped", 5 * SECOND);
    assert!(
        Server::eventually(FREED_WITHIN, || programs(&server) == 0),
        "the last viewer's program is freed"
    );
    assert_eq!(
        server.metric("heat_programs_active{backend=\"ebpf\"}"),
        Some(0.0)
    );
}

#[test]
fn other_parameters_are_other_programs() {
    require_tracing();
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.expect("hello", 5 * SECOND);
    let first = start(&mut a, preset("syscall-latency", 200));
    let mut b = server.connect();
    b.expect("hello", 5 * SECOND);
    let other_tick = start(&mut b, preset("syscall-latency", 300));
    let mut c = server.connect();
    c.expect("hello", 5 * SECOND);
    let other_pid = start(
        &mut c,
        json!({"type": "start", "preset": "syscall-latency", "tick_ms": 200, "backend": "ebpf",
               "pid": std::process::id()}),
    );
    let ids = [&first, &other_tick, &other_pid].map(|s| s["program"].clone());
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
        "{ids:?}"
    );
    assert_eq!(
        server.metric("heat_programs_active{backend=\"ebpf\"}"),
        Some(3.0)
    );
}

#[test]
fn scripts_are_private_unless_shared_and_then_only_with_the_same_text() {
    require_tracing();
    let server = Server::start(&[]);
    let script = |text: &str, share: bool| json!({"type": "start", "lang": "bpftrace", "script": text, "tick_ms": 500, "share": share});
    let text = "tracepoint:syscalls:sys_enter_getppid { @n = count(); }";
    let mut clients: Vec<Client> = (0..5)
        .map(|_| {
            let mut c = server.connect();
            c.expect("hello", 5 * SECOND);
            c
        })
        .collect();
    let private_a = start(&mut clients[0], script(text, false));
    let private_b = start(&mut clients[1], script(text, false));
    assert_ne!(private_a["program"], private_b["program"], "private");
    assert_eq!(private_a["shared"], false);
    let shared_a = start(&mut clients[2], script(text, true));
    let shared_b = start(&mut clients[3], script(text, true));
    assert_eq!(shared_a["program"], shared_b["program"], "shared");
    assert_eq!(shared_b["viewers"], 2);
    let other = start(
        &mut clients[4],
        script(
            "tracepoint:syscalls:sys_enter_getppid { @m = count(); }",
            true,
        ),
    );
    assert_ne!(other["program"], shared_a["program"], "other text");
    assert_eq!(server.bpftrace_children().len(), 4);
}

#[test]
fn a_joiner_gets_the_past_then_live_frames_without_gap_or_duplicate() {
    require_tracing();
    let server = Server::start(&[]);
    let mut a = server.connect();
    a.expect("hello", 5 * SECOND);
    start(&mut a, preset("syscall-latency", 100));
    // Ten ticks and more run before the second viewer comes.
    let seen = frames_by_seq(&mut a, Duration::from_millis(1500));
    assert!(seen.len() >= 10, "{}", seen.len());

    let mut b = server.connect();
    b.expect("hello", 5 * SECOND);
    let joined = start(&mut b, preset("syscall-latency", 100));
    let Received::Json(history) = b.recv(5 * SECOND) else {
        panic!("no history");
    };
    assert_eq!(history["type"], "history", "{history}");
    let past = history["frames"].as_array().unwrap();
    assert!(
        past.len() >= 10,
        "the ticks before the join: {}",
        past.len()
    );
    assert_eq!(past[0]["seq"], joined["first_seq"]);
    assert_eq!(past[0]["seq"], 1, "the whole run so far (ring of 600)");
    for frame in past {
        let seq = frame["seq"].as_u64().unwrap();
        if let Some(original) = seen.get(&seq) {
            assert_eq!(frame, original, "history is the frames as they were sent");
        }
    }
    let mut frames = frames_by_seq(&mut b, SECOND);
    for frame in past {
        frames.insert(frame["seq"].as_u64().unwrap(), frame.clone());
    }
    let seqs: Vec<u64> = frames.keys().copied().collect();
    let first = seqs[0];
    assert_eq!(
        seqs,
        (first..first + seqs.len() as u64).collect::<Vec<_>>(),
        "consecutive: history then live, no gap, no duplicate"
    );
}

#[test]
fn a_slow_viewer_fetches_exactly_what_it_skipped() {
    require_tracing();
    let server = Server::start(&[]);
    let mut reader = server.connect();
    reader.expect("hello", 5 * SECOND);
    start(&mut reader, preset("syscall-latency", 100));
    let mut slow = server.connect();
    slow.expect("hello", 5 * SECOND);
    start(&mut slow, preset("syscall-latency", 100));

    let (all, live) = std::thread::scope(|s| {
        let all = s.spawn(|| frames_by_seq(&mut reader, 6 * SECOND));
        // Read nothing (and answer no ping) for 3 s: about 30 ticks.
        std::thread::sleep(3 * SECOND);
        let live = frames_by_seq(&mut slow, 2 * SECOND);
        (all.join().unwrap(), live)
    });
    let seqs: Vec<u64> = live.keys().copied().collect();
    let missing: Vec<u64> = (seqs[0]..=*seqs.last().unwrap())
        .filter(|s| !live.contains_key(s))
        .collect();
    assert!(missing.len() >= 10, "skipped live: {seqs:?}");
    let (from, to) = (missing[0], *missing.last().unwrap());
    slow.send(json!({"type": "fetch", "from": from, "to": to}));
    let fetched = loop {
        match slow.recv(5 * SECOND) {
            Received::Json(m) if m["type"] == "history" => break m,
            Received::Json(_) => {}
            other => panic!("no history: {other:?}"),
        }
    };
    assert_eq!(
        (fetched["from"].as_u64(), fetched["to"].as_u64()),
        (Some(from), Some(to))
    );
    let got: BTreeMap<u64, Json> = fetched["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["seq"].as_u64().unwrap(), f.clone()))
        .filter(|(seq, _)| !live.contains_key(seq))
        .collect();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), missing);
    for (seq, frame) in &got {
        assert_eq!(
            Some(frame),
            all.get(seq),
            "frame {seq} has its original counts"
        );
    }
}

#[test]
fn max_programs_caps_tracers_not_viewers() {
    require_tracing();
    let config = format!("{}max_programs = 1\n", support::TEST_CONFIG);
    let server = Server::start_with(&config, &[], &[]);
    let mut a = server.connect();
    a.expect("hello", 5 * SECOND);
    start(&mut a, preset("syscall-latency", 200));
    let mut b = server.connect();
    b.expect("hello", 5 * SECOND);
    b.send(preset("softirq-latency", 200));
    let error = b.expect("error", 5 * SECOND);
    assert_eq!(error["code"], "max_programs");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_programs = 1"),
        "{error}"
    );
    assert_eq!(
        server.metric("heat_sessions_rejected_total{reason=\"max_programs\"}"),
        Some(1.0)
    );
    // Joining the running program needs no slot.
    let joined = start(&mut b, preset("syscall-latency", 200));
    assert_eq!(joined["viewers"], 2);
}

#[test]
fn a_thousand_joins_and_leaves_over_three_presets_leave_nothing_behind() {
    require_tracing();
    let config = format!("{}max_sessions_per_client = 16\n", support::TEST_CONFIG);
    let server = Server::start_with(&config, &[], &[]);
    let threads_before = server.threads();
    let fds_before = server.fds();
    const CLIENTS: usize = 10;
    const CYCLES: usize = 100;
    let presets = ["syscall-latency", "softirq-latency", "runqueue-latency"];
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let server = &server;
            s.spawn(move || {
                let mut client = server.connect();
                client.expect("hello", 5 * SECOND);
                for i in 0..CYCLES {
                    let name = presets[(c + i) % presets.len()];
                    start(&mut client, preset(name, 100));
                    client.send(json!({"type": "stop"}));
                    client.expect("stopped", 10 * SECOND);
                }
            });
        }
    });
    assert!(
        Server::eventually(5 * SECOND, || programs(&server) == 0
            && server.threads() <= threads_before
            && server.fds() <= fds_before),
        "programs {}, threads {} (before {threads_before}), fds {} (before {fds_before})",
        programs(&server),
        server.threads(),
        server.fds()
    );
    for backend in ["ebpf", "bpftrace", "dtrace"] {
        assert_eq!(
            server.metric(&format!("heat_programs_active{{backend=\"{backend}\"}}")),
            Some(0.0)
        );
    }
}

/// The next binary message, skipping text ones; panics after `timeout`.
fn next_binary(client: &mut Client, timeout: Duration) -> Vec<u8> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        match client.ws.read() {
            Ok(tungstenite::Message::Binary(bytes)) => return bytes.to_vec(),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("websocket error: {e}"),
        }
    }
    panic!("no binary message within {timeout:?}");
}

/// A compact frame's `seq`: the LEB128 number after the tag byte.
fn compact_seq(frame: &[u8]) -> u64 {
    let (mut seq, mut shift) = (0u64, 0);
    for &byte in &frame[1..] {
        seq |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    seq
}

#[test]
fn a_compact_joiner_gets_keys_history_and_frames_as_binary_and_smaller() {
    require_tracing();
    let server = Server::start(&[]);
    let mut json_viewer = server.connect();
    json_viewer.expect("hello", 5 * SECOND);
    start(&mut json_viewer, preset("syscall-latency", 100));
    let before = frames_by_seq(&mut json_viewer, SECOND);
    assert!(before.len() >= 5);

    let mut compact_viewer = server.connect();
    let hello = compact_viewer.expect("hello", 5 * SECOND);
    assert!(hello["encodings"]
        .as_array()
        .unwrap()
        .contains(&json!("compact")));
    assert_eq!(hello["running"][0]["preset"], "syscall-latency", "{hello}");
    let mut request = preset("syscall-latency", 100);
    request["encoding"] = json!("compact");
    let joined = start(&mut compact_viewer, request);
    assert!(joined["first_seq"].as_u64().unwrap() <= *before.keys().next().unwrap());
    // Keys first (tag 3), then the past (tag 2), then live frames (tag 1).
    assert_eq!(
        next_binary(&mut compact_viewer, 5 * SECOND)[0],
        3,
        "dictionary"
    );
    assert_eq!(
        next_binary(&mut compact_viewer, 5 * SECOND)[0],
        2,
        "history"
    );
    let (json_frames, compact_frames) = std::thread::scope(|s| {
        let json_frames = s.spawn(|| frames_by_seq(&mut json_viewer, 2 * SECOND));
        let mut compact_frames = BTreeMap::new();
        for _ in 0..8 {
            let frame = next_binary(&mut compact_viewer, 5 * SECOND);
            assert_eq!(frame[0], 1, "a frame");
            compact_frames.insert(compact_seq(&frame), frame.len());
        }
        (json_frames.join().unwrap(), compact_frames)
    });
    let mut compared = 0;
    for (seq, compact_len) in &compact_frames {
        if let Some(frame) = json_frames.get(seq) {
            let json_len = frame.to_string().len();
            assert!(
                *compact_len < json_len,
                "seq {seq}: {compact_len} vs {json_len}"
            );
            compared += 1;
        }
    }
    assert!(
        compared >= 3,
        "{compact_frames:?} vs {:?}",
        json_frames.keys()
    );
    assert!(
        server
            .metric("heat_frame_bytes_total{encoding=\"compact\"}")
            .unwrap()
            > 0.0
    );
}
