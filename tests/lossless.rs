//! Nothing aggregated is lost: the first frame carries what `BEGIN` and the attach window
//! aggregated, stopping (or replacing, or closing) flushes a final frame with `END`'s data,
//! a walk that times out hands its data to the next frame, and the 2011 dialect still works.

mod support;

use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{getppid_n, gettid, require_tracing, total_for_key, Client, Received, Server};

/// A tick far longer than any test's workload, so stopping lands inside one interval.
const LONG_TICK_MS: u64 = 10_000;
/// How long a test waits for the final frame and `stopped` after asking for them.
const FLUSH_WAIT: Duration = Duration::from_secs(15);

/// A server and a client past its `hello`.
fn connected() -> (Server, Client) {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    (server, client)
}

/// A script counting this thread's getppid calls in `@n`.
fn getppid_counter() -> String {
    let tid = gettid();
    format!("tracepoint:syscalls:sys_enter_getppid /tid == {tid}/ {{ @n = count(); }}")
}

/// Frames until `stopped`; panics on anything else (an `error` included) or a timeout.
fn frames_until_stopped(client: &mut Client) -> (Vec<Json>, Json) {
    let mut frames = Vec::new();
    loop {
        match client.recv(FLUSH_WAIT) {
            Received::Json(m) if m["type"] == "frame" => frames.push(m),
            Received::Json(m) if m["type"] == "stopped" => return (frames, m),
            other => panic!("expected frames then stopped, got {other:?} after {frames:?}"),
        }
    }
}

/// The last frame is the final one, and only it.
fn assert_final_last(frames: &[Json]) {
    let finals: Vec<bool> = frames.iter().map(|f| f["final"] == true).collect();
    assert_eq!(
        finals.last(),
        Some(&true),
        "the last frame is final: {frames:?}"
    );
    assert_eq!(finals.iter().filter(|f| **f).count(), 1, "{frames:?}");
}

#[test]
fn begin_aggregations_arrive_whole_in_the_first_frame() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client.start_script(
        r#"BEGIN { @n = count(); @s = sum(7); @h = hist(5); @l = lhist(2, 0, 100, 10);
                   @k["a", 1] = count(); @k["a", 1] = count(); @k["b", 2] = count(); }"#,
        1000,
    );
    let Received::Json(first) = client.recv(Duration::from_secs(5)) else {
        panic!("no first frame");
    };
    assert_eq!(first["seq"], 1, "{first}");
    let one = std::slice::from_ref(&first);
    assert_eq!(total_for_key(one, "@n", &json!([])), 1, "{first}");
    assert_eq!(total_for_key(one, "@s", &json!([])), 7, "{first}");
    assert_eq!(total_for_key(one, "@k", &json!(["a", 1])), 2, "{first}");
    assert_eq!(total_for_key(one, "@k", &json!(["b", 2])), 1, "{first}");
    let buckets = |name: &str| {
        first["aggregations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()["series"][0]["buckets"]
            .clone()
    };
    assert_eq!(buckets("@h"), json!([[4, 7, 1]]), "{first}");
    assert_eq!(buckets("@l"), json!([[0, 9, 1]]), "{first}");
    // Later frames hold later intervals only: nothing of BEGIN twice.
    let Received::Json(second) = client.recv(Duration::from_secs(5)) else {
        panic!("no second frame");
    };
    assert_eq!(
        total_for_key(std::slice::from_ref(&second), "@n", &json!([])),
        0,
        "{second}"
    );
}

/// Starts `request`, makes exactly `n` getppid calls on this thread, sends `then`, and returns
/// the frames up to `stopped` with it.
fn n_events_then(client: &mut Client, request: Json, n: usize, then: Json) -> (Vec<Json>, Json) {
    client.send(request);
    client.expect("started", Duration::from_secs(60));
    getppid_n(n);
    client.send(then);
    frames_until_stopped(client)
}

#[test]
fn a_stop_inside_one_tick_flushes_every_event_on_bpftrace() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    let tid = gettid();
    let script = format!(
        "tracepoint:syscalls:sys_enter_getppid /tid == {tid}/ {{ @n = count(); @h = hist(3); }}
         END {{ @e = count(); }}"
    );
    const N: usize = 777;
    let start =
        json!({"type": "start", "lang": "bpftrace", "script": script, "tick_ms": LONG_TICK_MS});
    let (frames, stopped) = n_events_then(&mut client, start.clone(), N, json!({"type": "stop"}));
    assert_eq!(stopped["reason"], "client");
    assert_final_last(&frames);
    assert_eq!(total_for_key(&frames, "@n", &json!([])), N as i64);
    assert_eq!(total_for_key(&frames, "@h", &json!([])), N as i64);
    assert_eq!(
        total_for_key(&frames[frames.len() - 1..], "@e", &json!([])),
        1,
        "END's aggregation is in the final frame: {frames:?}"
    );

    // A start that replaces the program flushes it the same way, before the new `started`.
    let (frames, stopped) = n_events_then(&mut client, start.clone(), N, start);
    assert_eq!(stopped["reason"], "replaced");
    assert_final_last(&frames);
    assert_eq!(total_for_key(&frames, "@n", &json!([])), N as i64);
    client.expect("started", Duration::from_secs(60));
}

#[test]
fn a_stop_inside_one_tick_flushes_every_event_natively() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    let hello = client.expect("hello", Duration::from_secs(5));
    if !hello["backends"]
        .as_array()
        .unwrap()
        .contains(&json!("ebpf"))
    {
        panic!("native eBPF is not available here: {hello}");
    }
    // Its own command name, so that no other thread of this test binary is counted.
    let comm = "heat-lossless";
    let (frames, stopped) = std::thread::scope(|s| {
        s.spawn(|| {
            set_thread_comm(comm);
            let start = json!({"type": "start", "preset": "syscall-latency", "comm": comm,
                               "backend": "ebpf", "tick_ms": LONG_TICK_MS});
            n_events_then(&mut client, start, 1234, json!({"type": "stop"}))
        })
        .join()
        .unwrap()
    });
    assert_eq!(stopped["reason"], "client");
    assert_final_last(&frames);
    assert_eq!(
        total_for_key(&frames, "@latency_us", &json!(["getppid"])),
        1234
    );
}

#[test]
fn d_begin_and_a_stop_lose_nothing_through_the_translator() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    let tid = gettid();
    let script = format!(
        "BEGIN {{ @a = count(); }} syscall::getppid:entry /tid == {tid}/ {{ @c = count(); }}"
    );
    const N: usize = 321;
    let start = json!({"type": "start", "lang": "d", "script": script, "tick_ms": LONG_TICK_MS});
    let (frames, _) = n_events_then(&mut client, start, N, json!({"type": "stop"}));
    assert_final_last(&frames);
    assert_eq!(total_for_key(&frames, "@a", &json!([])), 1, "{frames:?}");
    assert_eq!(total_for_key(&frames, "@c", &json!([])), N as i64);
}

#[test]
fn a_polite_close_gets_the_final_frame_first() {
    require_tracing();
    let (server, mut client) = connected();
    let script = getppid_counter();
    client.start_script(&script, LONG_TICK_MS);
    getppid_n(55);
    client.ws.close(None).expect("close");
    let (frames, _) = frames_until_stopped(&mut client);
    assert_final_last(&frames);
    assert_eq!(total_for_key(&frames, "@n", &json!([])), 55);
    assert!(matches!(client.recv(FLUSH_WAIT), Received::Closed(_)));
    assert!(
        support::Server::eventually(Duration::from_secs(10), || server
            .bpftrace_children()
            .is_empty()),
        "the tracer is gone after the close"
    );
}

#[test]
fn a_walk_that_times_out_hands_its_events_to_the_next_frame() {
    require_tracing();
    let (server, mut client) = connected();
    let script = getppid_counter();
    client.start_script(&script, 1000);
    const N: usize = 4321;
    getppid_n(N);
    // A stopped bpftrace answers no walk: the walk after this times out (5 s), leaving a gap.
    let tracer = server.bpftrace_children()[0] as libc::pid_t;
    // SAFETY: kill takes integers only; the pid is the server's live bpftrace child.
    unsafe { libc::kill(tracer, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_millis(6500));
    // SAFETY: as above.
    unsafe { libc::kill(tracer, libc::SIGCONT) };
    let mut frames = client.frames_for(Duration::from_millis(2500));
    client.send(json!({"type": "stop"}));
    let (rest, _) = frames_until_stopped(&mut client);
    frames.extend(rest);
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    let contiguous: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_ne!(seqs, contiguous, "the timed-out walk leaves a gap in seq");
    assert_eq!(
        total_for_key(&frames, "@n", &json!([])),
        N as i64,
        "counted once, in the frame after the gap"
    );
}

/// The seed's script, as Heat Tracer's page sent it.
const SEED_DSCRIPT: &str = "syscall:::entry\n{\nself->syscall_entry_ts[probefunc] = vtimestamp;\n}\nsyscall:::return\n/self->syscall_entry_ts[probefunc]/\n{\n\n@time[probefunc] = lquantize((vtimestamp - self->syscall_entry_ts[probefunc] ) / 1000, 0, 63, 2);\nself->syscall_entry_ts[probefunc] = 0;\n}";

/// 2011 objects (no `type`) for `duration`; panics on anything else.
fn objects_for(client: &mut Client, duration: Duration) -> Vec<Json> {
    let deadline = std::time::Instant::now() + duration;
    let mut objects = Vec::new();
    while std::time::Instant::now() < deadline {
        match client.recv(deadline.saturating_duration_since(std::time::Instant::now())) {
            Received::Json(m) => {
                assert!(m.get("type").is_none() && m.get("error").is_none(), "{m}");
                objects.push(m);
            }
            Received::Timeout => {}
            Received::Closed(c) => panic!("closed: {c:?}"),
        }
    }
    objects
}

/// Reads 2011 objects until one has `key` (any object when `key` is empty); returns them.
fn until_key(client: &mut Client, key: &str) -> Vec<Json> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut objects = Vec::new();
    while std::time::Instant::now() < deadline {
        if let Received::Json(m) = client.recv(Duration::from_secs(1)) {
            assert!(m.get("error").is_none(), "{m}");
            let found = key.is_empty() || m.get(key).is_some();
            objects.push(m);
            if found {
                return objects;
            }
        }
    }
    panic!("no object with key {key:?} within a minute: {objects:?}");
}

fn getppid_count_2011(objects: &[Json]) -> i64 {
    objects
        .iter()
        .filter_map(|o| o["getppid"].as_array())
        .flatten()
        .map(|pair| {
            let [range, count] = pair.as_array().unwrap().as_slice() else {
                panic!("not a [[lo, hi], count] pair: {pair}")
            };
            let range = range.as_array().unwrap();
            assert!(
                range[0].as_i64().unwrap() <= range[1].as_i64().unwrap(),
                "{pair}"
            );
            count.as_i64().unwrap()
        })
        .sum()
}

#[test]
fn the_2011_clients_work_unchanged() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = Client::connect_with(server.port, "format=2011", &[]).unwrap();
    // dowboy: the D program as a bare text message; no hello, only ticks.
    client.send_text(SEED_DSCRIPT);
    // The first tick says the program is attached (the 2011 dialect has no `started`).
    objects_for(&mut client, Duration::from_millis(100));
    assert!(!until_key(&mut client, "").is_empty());
    getppid_n(3000);
    let objects = objects_for(&mut client, Duration::from_millis(4500));
    assert!(!objects.is_empty(), "ticks arrive");
    assert!(
        getppid_count_2011(&objects) >= 3000,
        "getppid counted under its name: {:?}",
        objects.last()
    );
    // The open top bucket as DTrace prints lquantize's: up to INT64_MAX.
    let text = objects.iter().map(Json::to_string).collect::<String>();
    for pair in objects.iter().flat_map(|o| o.as_object().unwrap().values()) {
        for bucket in pair.as_array().unwrap() {
            let hi = &bucket[0][1];
            assert!(
                hi.as_i64().unwrap() <= 62 || hi == &json!(i64::MAX),
                "{bucket}"
            );
        }
    }
    assert!(!text.contains("null"), "no null ends in the 2011 dialect");

    // Heat Tracer: {"dscript": …} replaces the running program.
    // BEGIN's key marks the replacement's first tick.
    let replacement = format!("{SEED_DSCRIPT}\nBEGIN {{ @ready[\"replaced\"] = count(); }}");
    client.send(json!({ "dscript": replacement }));
    until_key(&mut client, "replaced");
    getppid_n(2000);
    let objects = objects_for(&mut client, Duration::from_millis(4500));
    assert!(getppid_count_2011(&objects) >= 2000);

    // Errors come as {"error": …}.
    client.send(json!({"nonsense": 1}));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match client.recv(deadline.saturating_duration_since(std::time::Instant::now())) {
            Received::Json(m) if m.get("error").is_some() => {
                assert!(m["error"].as_str().unwrap().contains("dscript"), "{m}");
                break;
            }
            Received::Json(_) => {}
            other => panic!("expected an error object, got {other:?}"),
        }
    }
    client.send_text("this is not D at all {");
    loop {
        match client.recv(deadline.saturating_duration_since(std::time::Instant::now())) {
            Received::Json(m) if m.get("error").is_some() => break,
            Received::Json(_) => {}
            other => panic!("expected a compile error object, got {other:?}"),
        }
    }
}

/// Names the calling thread (its `comm`), so a preset's `comm` filter picks out its syscalls.
fn set_thread_comm(name: &str) {
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes, which `name` is.
    let rc = unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    assert_eq!(rc, 0);
}

/// More processes than bpftrace keeps keys per map (4096): each exits inside exit_group, a
/// syscall that never returns.
const EXITS: usize = 4600;

#[test]
fn a_bpftrace_syscall_preset_still_measures_after_thousands_of_processes_exited_inside_a_syscall() {
    require_tracing();
    let (server, mut client) = connected();
    let started = client.start_preset_on("syscall-latency-log2", 200, "bpftrace");
    let aggregation = started["aggregations"][0]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..EXITS {
        let status = std::process::Command::new("/bin/true")
            .status()
            .expect("run /bin/true");
        assert!(status.success());
    }
    // A thread born after them: with their entries left behind, the map would be full and
    // its syscalls never timed.
    const N: usize = 500;
    std::thread::spawn(|| getppid_n(N)).join().unwrap();
    let frames = client.frames_for(Duration::from_millis(1500));
    let counted = total_for_key(&frames, &aggregation, &json!(["getppid"]));
    assert!(
        counted >= N as i64,
        "{counted} of {N} getppid calls counted after {EXITS} processes exited"
    );
    // The entry map holds the syscalls in flight, not the exited: a map full of those leaves
    // a few free slots that every thread's syscalls compete for, so counts fall short only
    // on a busy machine; its size is what says so every time.
    let tracer = support::children(server.pid())
        .into_iter()
        .find(|&pid| support::comm(pid).as_deref() == Some("bpftrace"))
        .expect("the preset's bpftrace runs");
    let entries: Vec<usize> = support::bpf_ids(tracer, "map_id:")
        .into_iter()
        .filter(|&id| {
            support::bpftool_show("map", id)
                .and_then(|m| m["name"].as_str().map(|n| n.contains("heat_entry")))
                .unwrap_or(false)
        })
        .map(|id| {
            let out = std::process::Command::new("/usr/sbin/bpftool")
                .args(["-j", "map", "dump", "id", &id.to_string()])
                .output()
                .expect("bpftool");
            serde_json::from_slice::<Json>(&out.stdout)
                .ok()
                .and_then(|d| d.as_array().map(Vec::len))
                .unwrap_or(0)
        })
        .collect();
    assert_eq!(entries.len(), 1, "one entry map: {entries:?}");
    assert!(
        entries[0] < EXITS / 4,
        "{} entries left in the entry map after {EXITS} processes exited",
        entries[0]
    );
}
