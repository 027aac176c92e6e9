//! The flight recorder end to end: a watch records every tick to the real store, the API reads
//! back exactly what viewers saw live, a kill -9 loses no completed tick, and a full disk stops
//! recording (not viewing) until space returns.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{require_tracing, Received, Server};

const SECOND: Duration = Duration::from_secs(1);
const TICK_MS: u64 = 200;

/// A fresh store directory under /tmp, removed on drop.
struct StoreDir(PathBuf);

impl StoreDir {
    fn new(name: &str) -> StoreDir {
        let dir = std::env::temp_dir().join(format!(
            "heat-actix-recording-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        StoreDir(dir)
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn config(store: &std::path::Path) -> String {
    format!(
        "{}\n[store]\npath = {:?}\n\n[[watch]]\nname = \"syscalls\"\npreset = \"syscall-latency\"\ntick_ms = {TICK_MS}\n",
        support::TEST_CONFIG,
        store.display().to_string()
    )
}

fn get(server: &Server, path: &str) -> Json {
    let answer = server.http("GET", path, &[], "");
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// Recorded frames of the watch by seq, for the run `run` (all runs when None).
fn recorded(server: &Server, from: u64, to: u64) -> Vec<Json> {
    let body = get(
        server,
        &format!("/api/watches/syscalls/frames?from={from}&to={to}"),
    );
    body["frames"].as_array().unwrap().clone()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Total events of `@latency_us` in one frame.
fn events(frame: &Json) -> i64 {
    frame["aggregations"][0]["series"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["buckets"].as_array().unwrap().clone())
        .map(|b| b[2].as_i64().unwrap())
        .sum()
}

#[test]
fn the_store_reads_back_exactly_what_viewers_saw_live() {
    require_tracing();
    let store = StoreDir::new("readback");
    let server = Server::start_with(&config(&store.0), &[], &[]);
    let mut viewer = server.connect();
    viewer.expect("hello", 5 * SECOND);
    viewer.send(json!({"type": "start", "preset": "syscall-latency", "tick_ms": TICK_MS}));
    viewer.expect("started", 10 * SECOND);
    // Everything the viewer got: the watch's history, then live frames.
    let mut live: BTreeMap<u64, Json> = BTreeMap::new();
    let deadline = std::time::Instant::now() + 3 * SECOND;
    while std::time::Instant::now() < deadline {
        if let Received::Json(m) = viewer.recv(SECOND) {
            let frames = match m["type"].as_str() {
                Some("frame") => vec![m],
                Some("history") => m["frames"].as_array().unwrap().clone(),
                _ => continue,
            };
            for f in frames {
                live.insert(f["seq"].as_u64().unwrap(), f);
            }
        }
    }
    assert!(live.len() >= 10, "{}", live.len());
    // Writes are off the tick path: give the recorder a moment for the last one.
    std::thread::sleep(SECOND);
    let frames = recorded(&server, 0, now_ms() + 1000);
    let stored: BTreeMap<u64, &Json> = frames
        .iter()
        .map(|f| (f["seq"].as_u64().unwrap(), f))
        .collect();
    let mut compared = 0;
    for (seq, frame) in &live {
        let Some(s) = stored.get(seq) else {
            panic!(
                "tick {seq} seen live is not in the store: {:?}",
                stored.keys()
            );
        };
        assert_eq!(s["aggregations"], frame["aggregations"], "tick {seq}");
        assert_eq!(s["ts_ms"], frame["ts_ms"], "tick {seq}");
        compared += 1;
    }
    assert!(compared >= 10);

    // Downsampled into 3 columns: the same counts, summed.
    let (from, to) = (
        frames.first().unwrap()["ts_ms"].as_u64().unwrap() - 1,
        frames.last().unwrap()["ts_ms"].as_u64().unwrap() + 1,
    );
    let full: i64 = recorded(&server, from, to).iter().map(events).sum();
    let body = get(
        &server,
        &format!("/api/watches/syscalls/frames?from={from}&to={to}&columns=3"),
    );
    let columns = body["frames"].as_array().unwrap();
    assert!(
        !columns.is_empty() && columns.len() <= 3,
        "{}",
        columns.len()
    );
    assert_eq!(columns.iter().map(events).sum::<i64>(), full);
    assert_eq!(body["runs"][0]["aggregations"][0]["name"], "@latency_us");

    let watches = get(&server, "/api/watches");
    let watch = &watches["watches"][0];
    assert_eq!(watch["name"], "syscalls");
    assert!(
        watch["recorded"]["ticks"].as_u64().unwrap() >= 10,
        "{watch}"
    );
    assert!(server.metric("heat_store_writes_total").unwrap() >= 10.0);

    // Export: a header line, then every tick as a frame.
    let export = server.http(
        "GET",
        &format!("/api/watches/syscalls/export?from={from}&to={to}"),
        &[],
        "",
    );
    assert_eq!(export.status, 200);
    let lines: Vec<Json> = export
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "export");
    assert_eq!(lines.len() - 1, frames.len().min(lines.len() - 1));
    assert_eq!(lines[1..].iter().map(events).sum::<i64>(), full);
}

#[test]
fn a_kill_9_loses_no_completed_tick_and_recording_resumes_after_a_gap() {
    require_tracing();
    let store = StoreDir::new("kill9");
    let mut first = Server::start_with(&config(&store.0), &[], &[]);
    std::thread::sleep(3 * SECOND);
    let before = recorded(&first, 0, now_ms() + 1000);
    assert!(before.len() >= 8, "{}", before.len());
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let killed_at = now_ms();
    std::thread::sleep(SECOND);

    let second = Server::start_with(&config(&store.0), &[], &[]);
    std::thread::sleep(2 * SECOND);
    let after = recorded(&second, 0, now_ms() + 1000);
    // Every tick read before the kill is still there, unchanged.
    for frame in &before {
        let seq = frame["seq"].as_u64().unwrap();
        let run = &frame["run"];
        let same = after.iter().find(|f| f["seq"] == seq && &f["run"] == run);
        assert_eq!(
            same.map(|f| &f["aggregations"]),
            Some(&frame["aggregations"]),
            "tick {seq}"
        );
    }
    // Recording resumed as a new run, after a gap in time.
    let runs: Vec<u64> = after.iter().map(|f| f["run"].as_u64().unwrap()).collect();
    assert!(runs.windows(2).all(|w| w[0] <= w[1]), "{runs:?}");
    let resumed: Vec<&Json> = after
        .iter()
        .filter(|f| f["ts_ms"].as_u64().unwrap() > killed_at)
        .collect();
    assert!(resumed.len() >= 3, "recording resumed: {}", resumed.len());
    assert_ne!(resumed[0]["run"], before[0]["run"], "a new run");
}

#[test]
fn a_full_disk_stops_recording_not_viewing_and_recording_resumes() {
    require_tracing();
    let store = StoreDir::new("full");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&store.0)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a small tmpfs (needs root)");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(store.0.clone());
    let server = Server::start_with(&config(&store.0), &[], &[]);
    let mut viewer = server.connect();
    viewer.expect("hello", 5 * SECOND);
    viewer.send(json!({"type": "start", "preset": "syscall-latency", "tick_ms": TICK_MS}));
    viewer.expect("started", 10 * SECOND);
    std::thread::sleep(SECOND);
    // Fill the disk.
    let filler = store.0.join("filler");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k", "count=1000"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    assert!(
        Server::eventually(20 * SECOND, || server
            .metric("heat_store_write_errors_total")
            .unwrap_or(0.0)
            > 0.0),
        "writes fail on a full disk: {}",
        server.log()
    );
    assert!(
        server.log().contains("Recording stopped"),
        "{}",
        server.log()
    );
    // Live viewing goes on.
    let frames = viewer.frames_for(SECOND);
    assert!(frames.len() >= 3, "{}", frames.len());
    // Space returns: recording resumes.
    std::fs::remove_file(&filler).unwrap();
    assert!(
        Server::eventually(20 * SECOND, || server.log().contains("Recording resumed.")),
        "{}",
        server.log()
    );
    let errors = server.metric("heat_store_write_errors_total").unwrap();
    let writes = server.metric("heat_store_writes_total").unwrap();
    std::thread::sleep(SECOND);
    assert_eq!(
        server.metric("heat_store_write_errors_total").unwrap(),
        errors
    );
    assert!(server.metric("heat_store_writes_total").unwrap() > writes);
}

#[test]
fn the_recording_api_takes_the_websocket_tokens() {
    let store = StoreDir::new("tokens");
    let hash = support::hash_token("reader-token");
    let text = format!(
        "{}\n[[auth.tokens]]\nname = \"reader\"\nrole = \"viewer\"\nsha256 = \"{hash}\"\n",
        config(&store.0)
    );
    let server = Server::start_with(&text, &[], &[]);
    assert_eq!(server.http("GET", "/api/watches", &[], "").status, 401);
    let ok = server.http(
        "GET",
        "/api/watches",
        &[("Authorization", "Bearer reader-token")],
        "",
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    let bad = server.http(
        "GET",
        "/api/watches/syscalls/frames?from=10&to=5&token=reader-token",
        &[],
        "",
    );
    assert_eq!(bad.status, 400, "{}", bad.body);
    let unknown = server.http(
        "GET",
        "/api/watches/nope/frames?token=reader-token",
        &[],
        "",
    );
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

#[test]
fn a_session_may_record_its_own_program() {
    require_tracing();
    let store = StoreDir::new("session");
    let text = format!(
        "{}\n[store]\npath = {:?}\n",
        support::TEST_CONFIG,
        store.0.display().to_string()
    );
    let server = Server::start_with(&text, &[], &[]);
    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    client.send(
        json!({"type": "start", "preset": "syscall-latency", "tick_ms": TICK_MS,
                       "record": true}),
    );
    let started = client.expect("started", 10 * SECOND);
    let name = started["recording"]
        .as_str()
        .expect("started names the recording")
        .to_owned();
    let live = client.frames_for(2 * SECOND);
    std::thread::sleep(SECOND);
    let body = get(
        &server,
        &format!("/api/watches/{name}/frames?from=0&to={}", now_ms() + 1000),
    );
    let stored = body["frames"].as_array().unwrap();
    for frame in &live {
        let same = stored.iter().find(|f| f["seq"] == frame["seq"]);
        assert_eq!(
            same.map(|f| &f["aggregations"]),
            Some(&frame["aggregations"]),
            "tick {}",
            frame["seq"]
        );
    }
    // A second viewer of the same preset joins the recorded program.
    let mut second = server.connect();
    second.expect("hello", 5 * SECOND);
    second.send(json!({"type": "start", "preset": "syscall-latency", "tick_ms": TICK_MS}));
    assert_eq!(second.expect("started", 10 * SECOND)["recording"], name);
}

#[test]
fn a_damaged_store_stops_start_up_naming_the_file_and_what_to_do() {
    let store = StoreDir::new("damaged");
    let file = store.0.join("heat-actix.sqlite");
    // A file that is not a store at all (as a disk error or a stray copy leaves one).
    std::fs::write(&file, vec![0x5a_u8; 64 * 1024]).unwrap();
    let config_path = store.0.join("heat.toml");
    std::fs::write(&config_path, config(&store.0)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heat-actix"))
        .args(["--config"])
        .arg(&config_path)
        .args(["--bind", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the server refuses to start on a damaged store"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&file.display().to_string()) && stderr.contains("move it aside"),
        "{stderr}"
    );
}
