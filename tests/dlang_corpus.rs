//! The D corpus (`tests/fixtures/d/*.d`): classic one-liners and short heatmap scripts, each
//! run through a real server and real bpftrace while a workload exercises what they trace.
//!
//! Each file opens with what it must do:
//! - `// expect: run`, then `// agg: @name kind` per aggregation in program order (a trailing
//!   `?` when the workload cannot promise data, e.g. block I/O on a tmpfs-only host), and
//!   `// has-key: @name ["key", …]` for keys that must appear, and
//!   `// values-within: @name LO HI` for values (or whole buckets) that must lie in `LO..=HI`
//!   (`NOW` is the Unix time in seconds, so `NOW-60`);
//! - `// expect: refused LINE:COL text`: a `compile` error at that position containing text.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use heat_actix::dlang::buckets::quantize_edges;
use serde_json::{json, Value as Json};
use support::{getppid_n, require_tracing, Client, Received, Server};

const TEST_TICK_MS: u64 = 200;

enum Expect {
    Run {
        aggs: Vec<(String, String, bool)>,
        keys: Vec<(String, Json)>,
        ranges: Vec<(String, i64, i64)>,
    },
    Refused {
        at: String,
        text: String,
    },
}

fn expectation(source: &str) -> Expect {
    let mut aggs = Vec::new();
    let mut keys = Vec::new();
    let mut ranges = Vec::new();
    let mut refused = None;
    for line in source.lines() {
        let Some(rest) = line.strip_prefix("// ") else {
            continue;
        };
        if let Some(r) = rest.strip_prefix("expect: refused ") {
            let (at, text) = r.split_once(' ').unwrap();
            refused = Some(Expect::Refused {
                at: at.to_owned(),
                text: text.to_owned(),
            });
        } else if let Some(a) = rest.strip_prefix("agg: ") {
            let parts: Vec<&str> = a.split_whitespace().collect();
            aggs.push((
                parts[0].to_owned(),
                parts[1].to_owned(),
                parts.get(2) != Some(&"?"),
            ));
        } else if let Some(r) = rest.strip_prefix("values-within: ") {
            let parts: Vec<&str> = r.split_whitespace().collect();
            ranges.push((parts[0].to_owned(), bound(parts[1]), bound(parts[2])));
        } else if let Some(k) = rest.strip_prefix("has-key: ") {
            let (name, key) = k.split_once(' ').unwrap();
            keys.push((name.to_owned(), serde_json::from_str(key).unwrap()));
        }
    }
    refused.unwrap_or(Expect::Run { aggs, keys, ranges })
}

/// `123`, `NOW`, `NOW-60`, `NOW+60`.
fn bound(text: &str) -> i64 {
    let Some(offset) = text.strip_prefix("NOW") else {
        return text.parse().unwrap();
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    now + if offset.is_empty() {
        0
    } else {
        offset.parse::<i64>().unwrap()
    }
}

/// The values of one series that fall outside `lo..=hi`, if any.
fn out_of_range(series: &Json, lo: i64, hi: i64) -> Option<String> {
    if let Some(buckets) = series["buckets"].as_array() {
        return buckets
            .iter()
            .find(|b| b[0].as_i64().is_none_or(|l| l < lo) || b[1].as_i64().is_none_or(|h| h > hi))
            .map(|b| format!("bucket {b} outside {lo}..={hi}"));
    }
    let v = series["value"].as_i64()?;
    (!(lo..=hi).contains(&v)).then(|| format!("value {v} outside {lo}..={hi}"))
}

/// Everything the corpus traces: syscalls (some failing), reads, writes, processes that
/// start, fork, exit and get signalled, sleeps, and a synced file write for block I/O.
fn workload(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("d-corpus-io");
        while !stop.load(Ordering::Relaxed) {
            getppid_n(200);
            for _ in 0..20 {
                let _ = std::fs::read("/proc/self/stat");
                let _ = std::fs::File::open("/nonexistent/heat-actix");
            }
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .and_then(|mut f| f.write_all(b"heat"));
            let _ = Command::new("true").status();
            if let Ok(mut sleeper) = Command::new("sleep").arg("5").stdin(Stdio::null()).spawn() {
                // SAFETY: kill takes a pid and a signal; the child is ours and not yet reaped.
                unsafe { libc::kill(sleeper.id() as libc::pid_t, libc::SIGTERM) };
                let _ = sleeper.wait();
            }
            if let Ok(mut f) = std::fs::File::create(&scratch) {
                let _ = f.write_all(&[7u8; 64 * 1024]);
                let _ = f.sync_all();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

/// Checks that a frame's buckets have the edges their kind promises; the reason if not.
fn bad_buckets(kind: &str, layout: &Json, series: &Json) -> Option<String> {
    let buckets = series["buckets"].as_array()?;
    let mut previous: Option<i64> = None;
    for b in buckets {
        let (lo, hi) = (b[0].as_i64(), b[1].as_i64());
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo > hi {
                return Some(format!("bucket {b} is upside down"));
            }
        }
        if let (Some(p), Some(lo)) = (previous, lo) {
            if lo <= p {
                return Some(format!("bucket {b} overlaps or is out of order"));
            }
        }
        previous = hi;
        match kind {
            "quantize" => {
                let lo = lo?;
                if quantize_edges(lo) != (Some(lo), hi) {
                    return Some(format!("{b} is not a DTrace quantize bucket"));
                }
            }
            "lquantize" => {
                let (min, max, step) = (
                    layout["min"].as_i64()?,
                    layout["max"].as_i64()?,
                    layout["step"].as_i64()?,
                );
                let ok = match (lo, hi) {
                    (None, Some(hi)) => hi == min - 1,
                    (Some(lo), None) => lo == max,
                    (Some(lo), Some(hi)) => {
                        lo >= min && lo < max && (lo - min) % step == 0 && hi == lo + step - 1
                    }
                    _ => false,
                };
                if !ok {
                    return Some(format!("{b} is not a bucket of {layout}"));
                }
            }
            _ => {}
        }
    }
    None
}

/// Runs one script; `Ok(())` when its frames are right, `Err(reason)` when not.
fn run(
    client: &mut Client,
    aggs: &[(String, String, bool)],
    keys: &[(String, Json)],
    ranges: &[(String, i64, i64)],
    source: &str,
) -> Result<(), String> {
    client.send(json!({"type": "start", "lang": "d", "script": source, "tick_ms": TEST_TICK_MS}));
    let started = loop {
        match client.recv(Duration::from_secs(60)) {
            Received::Json(m) if m["type"] == "started" => break m,
            Received::Json(m) if m["type"] == "stopped" || m["type"] == "frame" => {}
            other => return Err(format!("expected started, got {other:?}")),
        }
    };
    let announced: Vec<(String, String)> = started["aggregations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_owned(),
                a["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let wanted: Vec<(String, String)> = aggs
        .iter()
        .map(|(n, k, _)| (n.clone(), k.clone()))
        .collect();
    if announced != wanted {
        return Err(format!("announced {announced:?}, expected {wanted:?}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload(stop.clone());
    let frames = client.frames_for(Duration::from_millis(8 * TEST_TICK_MS));
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    if frames.len() < 3 {
        return Err(format!("only {} frames", frames.len()));
    }
    for (i, (name, kind, must)) in aggs.iter().enumerate() {
        let layout = &started["aggregations"][i]["layout"];
        let mut series_seen = 0;
        for frame in &frames {
            let agg = &frame["aggregations"][i];
            if agg["name"] != name.as_str() || agg["kind"] != kind.as_str() {
                return Err(format!("frame has {} {} at {i}", agg["name"], agg["kind"]));
            }
            for series in agg["series"].as_array().unwrap() {
                series_seen += 1;
                if let Some(why) = bad_buckets(kind, layout, series) {
                    return Err(format!("{name}: {why}"));
                }
                if kind == "count" && series["value"].as_i64().is_none_or(|v| v <= 0) {
                    return Err(format!("{name}: count {series}"));
                }
            }
        }
        if *must && series_seen == 0 {
            return Err(format!("{name} stayed empty under the workload"));
        }
    }
    for (name, key) in keys {
        let found = frames.iter().any(|f| {
            f["aggregations"].as_array().unwrap().iter().any(|a| {
                a["name"] == name.as_str()
                    && a["series"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| &s["key"] == key)
            })
        });
        if !found {
            return Err(format!("{name} never had key {key}"));
        }
    }
    for (name, lo, hi) in ranges {
        for frame in &frames {
            for agg in frame["aggregations"].as_array().unwrap() {
                if agg["name"] != name.as_str() {
                    continue;
                }
                for series in agg["series"].as_array().unwrap() {
                    if let Some(why) = out_of_range(series, *lo, *hi) {
                        return Err(format!("{name}: {why}"));
                    }
                }
            }
        }
    }
    client.send(json!({"type": "stop"}));
    client.expect("stopped", Duration::from_secs(10));
    Ok(())
}

#[test]
fn the_d_corpus_runs_or_is_refused_precisely() {
    require_tracing();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/d");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "d"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "the corpus has {} scripts", files.len());

    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    let (mut ran, mut refused, mut failures) = (0, Vec::new(), Vec::new());
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(path).unwrap();
        match expectation(&source) {
            Expect::Run { aggs, keys, ranges } => {
                match run(&mut client, &aggs, &keys, &ranges, &source) {
                    Ok(()) => ran += 1,
                    Err(why) => failures.push(format!("{name}: {why}")),
                }
            }
            Expect::Refused { at, text } => {
                client.send(json!({"type": "start", "lang": "d", "script": source}));
                let error = client.expect("error", Duration::from_secs(10));
                let message = error["message"].as_str().unwrap_or_default().to_owned();
                let (line, col) = at.split_once(':').unwrap();
                let position = format!("line {line}, column {col}: ");
                if error["code"] == "compile"
                    && message.starts_with(&position)
                    && message.contains(&text)
                {
                    refused.push(format!("{name}: {message}"));
                } else {
                    failures.push(format!(
                        "{name}: expected a compile error at {at} with {text:?}, got {error}"
                    ));
                }
            }
        }
    }
    eprintln!(
        "D corpus: {} scripts, {ran} ran with correct frames, {} refused:",
        files.len(),
        refused.len()
    );
    for r in &refused {
        eprintln!("  refused {r}");
    }
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
    assert!(Server::eventually(Duration::from_secs(5), || server
        .bpftrace_children()
        .is_empty()));
}
