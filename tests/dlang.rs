//! D scripts end to end on stock Linux: the seed's `{"dscript": …}` message, DTrace's bucket
//! edges in real frames, compile errors with positions, and `POST /api/translate`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{getppid_n, gettid, require_tracing, total_for_key, Server};

const TEST_TICK_MS: u64 = 200;

const SEED: &str = "syscall:::entry { self->syscall_entry_ts[probefunc] = vtimestamp; }
syscall:::return /self->syscall_entry_ts[probefunc]/ {
  @time[probefunc] = lquantize((vtimestamp - self->syscall_entry_ts[probefunc]) / 1000, 0, 63, 2);
  self->syscall_entry_ts[probefunc] = 0;
}
";

/// A server and a client that has had its `hello`.
fn greeted() -> (Server, support::Client) {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    (server, client)
}

#[test]
fn the_seed_dscript_message_draws_the_seed_heatmap() {
    require_tracing();
    let (_server, mut client) = greeted();
    client.send(json!({ "dscript": SEED, "tick_ms": TEST_TICK_MS }));
    let started = client.expect("started", Duration::from_secs(60));
    assert_eq!(started["engine"], "d-to-bpftrace");
    assert_eq!(started["backend"], "bpftrace");
    let notes = started["notes"].as_array().unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.as_str().unwrap().contains("vtimestamp")),
        "{notes:?}"
    );
    assert_eq!(
        started["aggregations"],
        json!([{"name": "@time", "kind": "lquantize", "layout": {"min": 0, "max": 62, "step": 2}}])
    );

    const N: usize = 5000;
    getppid_n(N);
    let frames = client.frames_for(Duration::from_millis(6 * TEST_TICK_MS));
    assert!(frames.len() >= 3, "got {} frames", frames.len());
    let counted = total_for_key(&frames, "@time", &json!(["getppid"]));
    assert!(
        counted >= N as i64,
        "made {N} getppid calls, the heatmap counted {counted}"
    );
    // DTrace's lquantize(x, 0, 63, 2): below 0, [0,1] … [60,61], and 62 up.
    let mut keys = 0;
    for frame in &frames {
        let agg = &frame["aggregations"][0];
        assert_eq!(agg["kind"], "lquantize");
        for series in agg["series"].as_array().unwrap() {
            keys += 1;
            let key = series["key"][0].as_str().unwrap();
            assert!(
                !key.chars().all(|c| c.is_ascii_digit()),
                "keys are syscall names: {key}"
            );
            for b in series["buckets"].as_array().unwrap() {
                match (b[0].as_i64(), b[1].as_i64()) {
                    (Some(lo), Some(hi)) => {
                        assert!((0..=60).contains(&lo) && lo % 2 == 0 && hi == lo + 1, "{b}")
                    }
                    (Some(lo), None) => assert_eq!(lo, 62, "{b}"),
                    (None, Some(hi)) => assert_eq!(hi, -1, "{b}"),
                    other => panic!("unexpected bucket {other:?}"),
                }
            }
        }
    }
    assert!(keys > 0);
}

fn buckets_of(frames: &[Json], index: usize) -> Vec<(Option<i64>, Option<i64>, i64)> {
    let mut found: Vec<(Option<i64>, Option<i64>, i64)> = Vec::new();
    for frame in frames {
        for series in frame["aggregations"][index]["series"].as_array().unwrap() {
            for b in series["buckets"].as_array().unwrap() {
                let edges = (b[0].as_i64(), b[1].as_i64());
                match found.iter_mut().find(|f| (f.0, f.1) == edges) {
                    Some(f) => f.2 += b[2].as_i64().unwrap(),
                    None => found.push((edges.0, edges.1, b[2].as_i64().unwrap())),
                }
            }
        }
    }
    found
}

#[test]
fn d_aggregations_carry_dtrace_kinds_and_bucket_edges() {
    require_tracing();
    let (_server, mut client) = greeted();
    let tid = gettid();
    let script = format!(
        "syscall::getppid:entry /tid == {tid}/ {{
            @q = quantize(-3); @z = quantize(0); @l = lquantize(7, 0, 63, 2);
            @ll = llquantize(1234, 10, 0, 6, 10); @neg = lquantize(-3, -10, 10, 5);
            @c[probefunc] = count(); @s = sum(4); @mx = max(11); @nmx = max(-5);
            @div = sum(-7 / 2); @rem = sum(-7 % 2); @shr = sum(-7 >> 1); @q7 = sum(7 / -2);
            @cpu = sum(cpu - 100);
            @qbig = quantize(5000000000); @qneg = quantize(-5000000000);
            @qmin = quantize(-9223372036854775807 - 1); @qmax = quantize(9223372036854775807);
        }}"
    );
    client.send(json!({"type": "start", "lang": "d", "script": script, "tick_ms": TEST_TICK_MS}));
    let started = client.expect("started", Duration::from_secs(60));
    let kinds: Vec<&str> = started["aggregations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "quantize",
            "quantize",
            "lquantize",
            "llquantize",
            "lquantize",
            "count",
            "sum",
            "max",
            "max",
            "sum",
            "sum",
            "sum",
            "sum",
            "sum",
            "quantize",
            "quantize",
            "quantize",
            "quantize"
        ]
    );
    const N: usize = 300;
    getppid_n(N);
    let frames = client.frames_for(Duration::from_millis(5 * TEST_TICK_MS));
    let n = N as i64;
    assert_eq!(
        buckets_of(&frames, 0),
        [(Some(-3), Some(-2), n)],
        "quantize(-3)"
    );
    assert_eq!(
        buckets_of(&frames, 1),
        [(Some(0), Some(0), n)],
        "quantize(0)"
    );
    assert_eq!(
        buckets_of(&frames, 2),
        [(Some(6), Some(7), n)],
        "lquantize(7)"
    );
    assert_eq!(
        buckets_of(&frames, 3),
        [(Some(1000), Some(1999), n)],
        "llquantize(1234, 10, 0, 6, 10)"
    );
    assert_eq!(
        buckets_of(&frames, 4),
        [(Some(-5), Some(-1), n)],
        "lquantize(-3, -10, 10, 5)"
    );
    assert_eq!(total_for_key(&frames, "@c", &json!(["getppid"])), n);
    assert_eq!(total_for_key(&frames, "@s", &json!([])), 4 * n);
    let maxima: Vec<i64> = frames
        .iter()
        .flat_map(|f| f["aggregations"][7]["series"].as_array().unwrap().clone())
        .map(|s| s["value"].as_i64().unwrap())
        .collect();
    assert!(
        !maxima.is_empty() && maxima.iter().all(|m| *m == 11),
        "{maxima:?}"
    );
    // Beyond 32 bits, where bpftrace 0.17's own hist() stops telling buckets apart.
    for (index, edges, what) in [
        (14, (1 << 32, (1 << 33) - 1), "quantize(5000000000)"),
        (15, (-((1 << 33) - 1), -(1 << 32)), "quantize(-5000000000)"),
        (16, (i64::MIN, -(1 << 62)), "quantize(INT64_MIN)"),
        (17, (1 << 62, i64::MAX), "quantize(INT64_MAX)"),
    ] {
        assert_eq!(
            buckets_of(&frames, index),
            [(Some(edges.0), Some(edges.1), n)],
            "{what}"
        );
    }
}

#[test]
fn d_outside_the_subset_is_a_positioned_compile_error() {
    let (server, mut client) = greeted();
    client.send(json!({"dscript": "syscall:::entry\n{\n  trace(probefunc);\n}"}));
    let error = client.expect("error", Duration::from_secs(5));
    assert_eq!(error["code"], "compile");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("line 3, column 3: `trace()` is not supported"),
        "{message}"
    );
    assert!(server.bpftrace_children().is_empty());
}

/// POSTs `body` to `path`; the status code and the body of the answer.
fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn the_translate_endpoint_shows_the_bpftrace_program_or_the_error() {
    let server = Server::start(&[]);
    let (status, body) = http_post(server.port, "/api/translate", SEED);
    assert_eq!(status, 200, "{body}");
    let answer: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["engine"], "d-to-bpftrace");
    let program = answer["bpftrace"].as_str().unwrap();
    assert!(
        program.contains("tracepoint:raw_syscalls:sys_exit"),
        "{program}"
    );
    assert!(program.contains("lhist("), "{program}");
    assert!(!answer["notes"].as_array().unwrap().is_empty());

    let (status, body) = http_post(
        server.port,
        "/api/translate",
        "BEGIN {\n  @a = stddev(1);\n}",
    );
    assert_eq!(status, 422, "{body}");
    let answer: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error"]["line"], 2);
    assert_eq!(answer["error"]["column"], 8);
    assert!(answer["error"]["message"]
        .as_str()
        .unwrap()
        .contains("stddev"));
}

#[test]
fn the_presets_d_versions_run_here_through_the_translator() {
    require_tracing();
    let (_server, mut client) = greeted();
    const N: i64 = 300;
    // The syscall presets' (tests/presets.rs runs the others that translate).
    for preset in heat_actix::presets::PRESETS
        .iter()
        .filter(|p| p.d.is_some() && p.name.starts_with("syscall-"))
    {
        let script = preset.d.unwrap();
        client
            .send(json!({"type": "start", "lang": "d", "script": script, "tick_ms": TEST_TICK_MS}));
        let started = client.expect("started", Duration::from_secs(60));
        assert_eq!(started["engine"], "d-to-bpftrace", "{started}");
        let name = started["aggregations"][0]["name"]
            .as_str()
            .unwrap()
            .to_owned();
        getppid_n(N as usize);
        let frames = client.frames_for(Duration::from_millis(3 * TEST_TICK_MS));
        let total = total_for_key(&frames, &name, &json!(["getppid"]));
        assert!(total >= N, "{}: {total} getppid under {name}", preset.name);
        client.send(json!({"type": "stop"}));
        client.expect("stopped", Duration::from_secs(10));
    }
}
