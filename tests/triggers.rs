//! Tail triggers and import end to end, on a real server and store: a trigger fires on a
//! sleeper workload (and not before it), pins its range with a mark, counts, and POSTs its
//! webhook (retried after a 500); an exported range imported with the CLI into another store
//! reads back as the same frames.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{require_tracing, Server};

const SECOND: Duration = Duration::from_secs(1);
const TICK_MS: u64 = 200;
/// The sleeper's thread name: the watch's `comm` filter sees only its syscalls.
const SLEEPER: &str = "heat-sleeper";
/// The trigger's threshold: 1 ms, in the preset's nanoseconds.
const P99_ABOVE_NS: u64 = 1_000_000;
/// The sleeper's sleep once slow: its p99 lands in the [4194304, 8388607] ns bucket.
const SLOW_SLEEP: Duration = Duration::from_millis(5);
/// Fast calls per short sleep while fast: the sleeps are 0.2% of the calls, so the p99 is a
/// getppid whatever the sleeps take.
const FAST_CALLS_PER_SLEEP: usize = 500;
const SHORT_SLEEP: Duration = Duration::from_micros(100);
const PIN_S: u64 = 60;

/// A fresh directory under /tmp, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("heat-actix-triggers-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn get(server: &Server, path: &str) -> Json {
    let answer = server.http("GET", path, &[], "");
    assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    serde_json::from_str(&answer.body).unwrap()
}

/// The value of a series of `family` whose labels include every one of `labels`.
fn metric(server: &Server, family: &str, labels: &[&str]) -> Option<f64> {
    server
        .metric_family(family)
        .into_iter()
        .find(|(l, _)| labels.iter().all(|want| l.contains(want)))
        .map(|(_, v)| v)
}

/// Waits until the watch's program runs.
fn wait_for_watch(server: &Server, name: &str) {
    let running = Server::eventually(30 * SECOND, || {
        get(server, "/api/watches")["watches"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == name && w["program"].is_u64())
    });
    assert!(running, "watch {name} did not start:\n{}", server.log());
}

/// One HTTP request read off `stream`: its head and body (by Content-Length).
fn read_request(stream: &mut std::net::TcpStream) -> (String, String) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (head, String::from_utf8(body).unwrap())
}

/// A webhook receiver on loopback: answers the first POST with 500 (so the server retries),
/// the next with 200, and hands every request (head, body) to the test.
fn webhook_receiver() -> (u16, mpsc::Receiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            stream.set_read_timeout(Some(10 * SECOND)).unwrap();
            let request = read_request(&mut stream);
            let status = if n == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            if tx.send(request).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// What the sleeper thread does.
const FAST: u8 = 0;
const SLOW: u8 = 1;
const STOP: u8 = 2;

/// A thread named [`SLEEPER`]: many fast syscalls with rare short sleeps while `FAST`, 5 ms
/// sleeps while `SLOW`, gone at `STOP`.
fn sleeper(phase: Arc<AtomicU8>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name(SLEEPER.into())
        .spawn(move || loop {
            match phase.load(Ordering::Relaxed) {
                FAST => {
                    support::getppid_n(FAST_CALLS_PER_SLEEP);
                    std::thread::sleep(SHORT_SLEEP);
                }
                SLOW => std::thread::sleep(SLOW_SLEEP),
                _ => return,
            }
        })
        .unwrap()
}

/// Stops the sleeper when the test ends, however it ends.
struct Stop(Arc<AtomicU8>);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.store(STOP, Ordering::Relaxed);
    }
}

/// Events in the frames of a `/frames` answer.
fn events(body: &Json) -> u64 {
    body["frames"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["aggregations"].as_array().unwrap().clone())
        .flat_map(|a| a["series"].as_array().unwrap().clone())
        .flat_map(|s| s["buckets"].as_array().cloned().unwrap_or_default())
        .map(|b| b[2].as_u64().unwrap())
        .sum()
}

#[test]
fn a_trigger_fires_on_a_sleeper_pins_its_range_and_calls_its_webhook() {
    require_tracing();
    let store = TempDir::new("fire");
    let (hook_port, hooks) = webhook_receiver();
    let config = format!(
        "public_url = \"http://heat.test:1234/\"\n{}\n[store]\npath = {:?}\n\n\
         [[watch]]\nname = \"sleepy\"\npreset = \"syscall-latency-log2\"\ntick_ms = {TICK_MS}\n\
         comm = \"{SLEEPER}\"\n\
         [[watch.trigger]]\nname = \"slow-sleeps\"\np99_above = {P99_ABOVE_NS}\nticks = 3\n\
         pin_before_s = {PIN_S}\npin_after_s = {PIN_S}\nkeep_s = 3600\n\
         webhook = \"http://127.0.0.1:{hook_port}/hook\"\nwebhook_timeout_ms = 5000\n\
         webhook_retries = 2\n",
        support::TEST_CONFIG,
        store.0.display().to_string()
    );
    let server = Server::start_with(&config, &[], &[]);
    let labels = ["watch=\"sleepy\"", "trigger=\"slow-sleeps\""];
    assert_eq!(
        metric(&server, "heat_trigger_fired_total", &labels),
        Some(0.0),
        "exported at 0 from start-up"
    );
    assert_eq!(
        metric(&server, "heat_trigger_webhook_failures_total", &labels),
        Some(0.0)
    );
    wait_for_watch(&server, "sleepy");
    assert_eq!(
        get(&server, "/api/watches")["watches"][0]["triggers"],
        json!(["slow-sleeps"])
    );

    // Fast: the watch sees the sleeper's calls, and the trigger stays quiet.
    let phase = Arc::new(AtomicU8::new(FAST));
    let _stop = Stop(phase.clone());
    let thread = sleeper(phase.clone());
    let fast_from = now_ms();
    std::thread::sleep(2 * SECOND);
    let fast = get(
        &server,
        &format!(
            "/api/watches/sleepy/frames?from={fast_from}&to={}",
            now_ms()
        ),
    );
    assert!(events(&fast) > 1000, "the watch sees the sleeper: {fast}");
    assert_eq!(
        metric(&server, "heat_trigger_fired_total", &labels),
        Some(0.0),
        "fast calls do not fire it:\n{}",
        server.log()
    );

    // Slow: it fires once, however long the sleeps go on.
    phase.store(SLOW, Ordering::Relaxed);
    let fired = Server::eventually(20 * SECOND, || {
        metric(&server, "heat_trigger_fired_total", &labels) == Some(1.0)
    });
    assert!(fired, "the trigger did not fire:\n{}", server.log());
    let (first_head, first_body) = hooks.recv_timeout(20 * SECOND).expect("a webhook POST");
    let (head, body) = hooks
        .recv_timeout(20 * SECOND)
        .expect("the retry after a 500");
    assert!(head.starts_with("POST /hook HTTP/1.1"), "{head}");
    assert!(first_head.starts_with("POST /hook "), "{first_head}");
    assert_eq!(first_body, body, "a retry sends the same body");
    let hook: Json = serde_json::from_str(&body).unwrap();
    let fired_ms = hook["fired_ms"].as_u64().unwrap();
    let (from, to) = (fired_ms - PIN_S * 1000, fired_ms + PIN_S * 1000);
    assert_eq!(
        hook,
        json!({
            "watch": "sleepy",
            "trigger": "slow-sleeps",
            "fired_ms": fired_ms,
            "from_ms": from,
            "to_ms": to,
            "value": hook["value"],
            "permalink": format!("http://heat.test:1234/?watch=sleepy&from={from}&to={to}"),
        })
    );
    let value = hook["value"].as_f64().unwrap();
    assert!(
        value > P99_ABOVE_NS as f64,
        "the p99 bucket's lower bound: {value}"
    );
    assert!(fired_ms > fast_from && fired_ms <= now_ms(), "{fired_ms}");

    // Still slow for many more ticks: no second firing (it re-arms only after a false tick).
    std::thread::sleep(2 * SECOND);
    assert_eq!(
        metric(&server, "heat_trigger_fired_total", &labels),
        Some(1.0)
    );
    assert_eq!(
        metric(&server, "heat_trigger_webhook_failures_total", &labels),
        Some(0.0),
        "delivered on the retry"
    );
    assert!(
        hooks.try_recv().is_err(),
        "one firing, one delivery (two attempts)"
    );

    let range = get(
        &server,
        &format!(
            "/api/watches/sleepy/frames?from={}&to={}",
            fired_ms - 1000,
            fired_ms + 1000
        ),
    );
    let marks = range["marks"].as_array().unwrap();
    assert!(
        marks
            .iter()
            .any(|m| m["label"] == "slow-sleeps" && m["from"] == from && m["to"] == to),
        "{marks:?}"
    );
    let log = server.log();
    assert!(
        log.contains("Trigger fired") && log.contains("slow-sleeps"),
        "{log}"
    );
    phase.store(STOP, Ordering::Relaxed);
    thread.join().unwrap();
}

/// Runs `heat-actix import FILE --watch NAME --config CONFIG`: (success, stdout, stderr).
fn import(file: &Path, watch: &str, config: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heat-actix"))
        .arg("import")
        .arg(file)
        .args(["--watch", watch, "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_exported_range_imported_with_the_cli_reads_back_as_the_same_frames() {
    require_tracing();
    let store = TempDir::new("export");
    let config = format!(
        "{}\n[store]\npath = {:?}\n\n[[watch]]\nname = \"syscalls\"\npreset = \"syscall-latency\"\ntick_ms = {TICK_MS}\n",
        support::TEST_CONFIG,
        store.0.display().to_string()
    );
    let server = Server::start_with(&config, &[], &[]);
    wait_for_watch(&server, "syscalls");
    let from = now_ms();
    std::thread::sleep(2 * SECOND);
    let to = now_ms();
    let answer = server.http(
        "GET",
        &format!("/api/watches/syscalls/export?from={from}&to={to}"),
        &[],
        "",
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    let lines: Vec<Json> = answer
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 6, "a header and ticks: {}", lines.len());

    let target = TempDir::new("import");
    let file = target.0.join("export.ndjson");
    std::fs::write(&file, &answer.body).unwrap();
    let import_config = target.0.join("heat.toml");
    let store_dir = target.0.join("store");
    std::fs::write(
        &import_config,
        format!("[store]\npath = {:?}\n", store_dir.display().to_string()),
    )
    .unwrap();

    // A malformed line is named, and nothing is written.
    let bad = target.0.join("bad.ndjson");
    let mut text: Vec<&str> = answer.body.lines().collect();
    text[2] = "{\"type\":\"frame\",\"seq\":";
    std::fs::write(&bad, text.join("\n")).unwrap();
    let (ok, _, stderr) = import(&bad, "copy", &import_config);
    assert!(!ok, "a malformed file is refused");
    assert!(
        stderr.contains("line 3") && stderr.contains("nothing was imported"),
        "{stderr}"
    );

    let (ok, stdout, stderr) = import(&file, "copy", &import_config);
    assert!(ok, "{stderr}");
    let ticks = lines.len() - 1;
    assert!(
        stdout.contains(&format!("Imported {ticks} ticks")),
        "{stdout}"
    );

    // Read back from the imported store: the same frames, filed under run 1 (the only run: the
    // refused file wrote none), with the header's aggregations.
    let imported =
        heat_actix::store::Store::open(&store_dir.join(heat_actix::store::FILE_NAME)).unwrap();
    let stored = imported.read("copy", 0, now_ms() + 60_000, None).unwrap();
    assert_eq!(stored.len(), ticks);
    let header = &lines[0];
    assert_eq!(header["runs"].as_array().unwrap().len(), 1);
    let infos = imported.infos("copy", 1).unwrap();
    assert_eq!(
        serde_json::to_value(&infos).unwrap(),
        header["runs"][0]["aggregations"]
    );
    for (tick, line) in stored.iter().zip(&lines[1..]) {
        assert_eq!(tick.run, 1);
        let header = heat_actix::session::protocol::FrameHeader {
            seq: tick.seq,
            ts_ms: tick.ts_ms,
            interval_ms: tick.interval_ms,
            dropped: 0,
            last: false,
            cost: None,
        };
        let mut frame: Json = serde_json::from_str(&heat_actix::session::protocol::encode_frame(
            &header,
            &tick.snapshot,
        ))
        .unwrap();
        let mut exported = line.clone();
        exported.as_object_mut().unwrap().remove("run");
        frame.as_object_mut().unwrap().remove("run");
        assert_eq!(frame, exported, "tick {}", tick.seq);
    }
    assert!(
        stored
            .iter()
            .any(|t| !t.snapshot.aggregations[0].series.is_empty()),
        "the range held events"
    );

    // A watch this config records is refused (a running server writes it).
    let (ok, _, stderr) = import(&file, "syscalls", &server_config(&store.0, &target.0));
    assert!(
        !ok && stderr.contains("import under another name"),
        "{stderr}"
    );
}

/// A config file recording watch `syscalls` into `store`, written into `dir`.
fn server_config(store: &Path, dir: &Path) -> PathBuf {
    let path = dir.join("recording.toml");
    std::fs::write(
        &path,
        format!(
            "[store]\npath = {:?}\n[[watch]]\nname = \"syscalls\"\npreset = \"syscall-latency\"\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    path
}
