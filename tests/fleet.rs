//! The fleet proxy against a real Prometheus: two heat-actix servers export a watch
//! (syscall-latency-log2, each filtered to its own perl sleeper: 1.5 ms and 20 ms sleeps),
//! Debian's Prometheus scrapes both with native histograms, and a third server with `[fleet]`
//! and a token answers `/api/fleet/...`: two instance keys, each sleeper's events in its own
//! bucket, a key filter that only ever matches a label value, and clear errors.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value as Json;
use support::prometheus::Prometheus;
use support::{require_tracing, Server, TEST_CONFIG};

const WATCH: &str = "sleepers";
const TOKEN: &str = "fleet-test-token";
/// Prometheus scrapes every second; columns are two scrapes wide.
const SCRAPE: Duration = Duration::from_secs(1);
const MIN_STEP_MS: u64 = 2000;
/// The range the checks read: the last 40 s, ending a few scrapes ago.
const SPAN_MS: u64 = 40_000;
const SETTLE_MS: u64 = 3000;
/// Columns (of 20) each host must fill before the checks: the range is then mostly data.
const FILLED: usize = 18;
/// How long the servers and Prometheus get to gather both hosts' data.
const DATA_TIMEOUT: Duration = Duration::from_secs(90);
/// 1.5 ms sleeps land in [2^20, 2^21) ns, 20 ms sleeps in [2^24, 2^25) ns, whatever the
/// timer slack and scheduling add on a busy machine (well under the next power of two).
const A_SLEEP_US: u64 = 1500;
const B_SLEEP_US: u64 = 20_000;
const A_BUCKET: i64 = 1 << 20;
const B_BUCKET: i64 = 1 << 24;

/// A perl process named `comm` sleeping `us` in a loop; killed on drop.
struct Sleeper(Child);

impl Sleeper {
    fn start(comm: &str, us: u64) -> Sleeper {
        let script = format!("$0 = \"{comm}\"; usleep({us}) while 1");
        Sleeper(
            Command::new("perl")
                .args(["-MTime::HiRes=usleep", "-e", &script])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn perl"),
        )
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exporter(comm: &str) -> Server {
    let config = format!(
        "{TEST_CONFIG}[[watch]]\nname = \"{WATCH}\"\npreset = \"syscall-latency-log2\"\n\
         comm = \"{comm}\"\nrecord = false\nexport = true\n"
    );
    Server::start_with(&config, &[], &[])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn get(server: &Server, path: &str) -> support::HttpAnswer {
    server.http(
        "GET",
        path,
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
}

/// {instance → {bucket lo → count}} over an answer's frames.
fn by_instance(
    body: &Json,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<i64, u64>> {
    let mut out: std::collections::BTreeMap<String, std::collections::BTreeMap<i64, u64>> =
        Default::default();
    for frame in body["frames"].as_array().unwrap() {
        for agg in frame["aggregations"].as_array().unwrap() {
            for series in agg["series"].as_array().unwrap() {
                let host = series["key"][0].as_str().unwrap().to_owned();
                for b in series["buckets"].as_array().unwrap() {
                    *out.entry(host.clone())
                        .or_default()
                        .entry(b[0].as_i64().unwrap_or(i64::MIN))
                        .or_default() += b[2].as_u64().unwrap();
                }
            }
        }
    }
    out
}

/// The bucket holding most of a host's events.
fn busiest(buckets: &std::collections::BTreeMap<i64, u64>) -> i64 {
    *buckets.iter().max_by_key(|(_, n)| **n).unwrap().0
}

#[test]
fn the_proxy_reads_two_hosts_from_prometheus_as_two_keys_in_their_own_buckets() {
    require_tracing();
    let _a_work = Sleeper::start("fleet-a", A_SLEEP_US);
    let _b_work = Sleeper::start("fleet-b", B_SLEEP_US);
    let a = exporter("fleet-a");
    let b = exporter("fleet-b");
    let (ia, ib) = (
        format!("127.0.0.1:{}", a.port),
        format!("127.0.0.1:{}", b.port),
    );
    let prometheus = Prometheus::start(&[ia.clone(), ib.clone()], SCRAPE);
    let proxy_config = format!(
        "[fleet]\nprometheus_url = \"http://127.0.0.1:{}\"\nmin_step_ms = {MIN_STEP_MS}\n\
         [[auth.tokens]]\nname = \"viewer\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
        prometheus.port,
        support::hash_token(TOKEN)
    );
    let proxy = Server::start_with(&proxy_config, &[], &[]);

    // Tokens apply: none is a 401; other methods a 405.
    let refused = proxy.http("GET", "/api/fleet/watches", &[], "");
    assert_eq!(refused.status, 401, "{}", refused.body);
    let post = proxy.http(
        "POST",
        "/api/fleet/watches",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    );
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET"));
    // The servers say whether they have a fleet (the page's cue).
    assert_eq!(get(&proxy, "/api/watches").json()["fleet"], true);
    assert_eq!(
        a.http("GET", "/api/watches", &[], "").json()["fleet"],
        false
    );
    assert_eq!(a.http("GET", "/api/fleet/watches", &[], "").status, 404);

    // Both hosts list the watch, then both have data in Prometheus.
    let (mut listed, mut body) = (Json::Null, Json::Null);
    let (mut from, mut to, mut b_columns) = (0, 0, 0);
    let ready = Server::eventually(DATA_TIMEOUT, || {
        let answer = get(&proxy, "/api/fleet/watches");
        if answer.status != 200 {
            return false;
        }
        listed = answer.json();
        to = now_ms() - SETTLE_MS;
        from = to - SPAN_MS;
        let path = format!("/api/fleet/watches/{WATCH}/frames?from={from}&to={to}&columns=20");
        let answer = get(&proxy, &path);
        body = answer.json();
        if answer.status != 200 {
            return false; // the watch is not listed yet (its program announces it first)
        }
        let by = by_instance(&body);
        // The range filled: at least 18 of its 20 columns hold each host.
        let columns = |host: &str| {
            body["frames"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| {
                    f["aggregations"][0]["series"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|s| s["key"][0] == host)
                })
                .count()
        };
        b_columns = columns(&ib);
        by.len() == 2 && columns(&ia) >= FILLED && b_columns >= FILLED
    });
    assert!(
        ready,
        "no data of both hosts: {listed}\n{body}\nprometheus targets {:?}\n{}",
        prometheus.targets(),
        prometheus.log()
    );
    let watch = listed["watches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == WATCH)
        .unwrap_or_else(|| panic!("{listed}"))
        .clone();
    assert_eq!(watch["family"], "heat_sleepers_nanoseconds");
    assert_eq!(watch["kind"], "hist");
    assert_eq!(watch["unit"], "ns");
    assert_eq!(watch["key_label"], "syscall");
    let mut hosts = vec![ia.clone(), ib.clone()];
    hosts.sort();
    assert_eq!(watch["instances"], serde_json::json!(hosts));

    // The answer has the shape of /api/watches/{name}/frames, hosts as keys.
    assert_eq!(body["slices"]["width"], MIN_STEP_MS);
    assert_eq!(body["slices"]["count"], SPAN_MS / MIN_STEP_MS);
    assert_eq!(body["runs"][0]["aggregations"][0]["kind"], "hist");
    for frame in body["frames"].as_array().unwrap() {
        let slice = frame["slice"].as_u64().unwrap();
        let ts = frame["ts_ms"].as_u64().unwrap();
        assert_eq!(
            (ts - from) / MIN_STEP_MS,
            slice,
            "ts_ms in its slice: {frame}"
        );
        assert_eq!(frame["seq"], slice + 1);
    }
    let by = by_instance(&body);
    assert_eq!(by.keys().cloned().collect::<Vec<_>>(), hosts);
    assert_eq!(
        busiest(&by[&ia]),
        A_BUCKET,
        "host A's sleeps: {:?}",
        by[&ia]
    );
    assert_eq!(
        busiest(&by[&ib]),
        B_BUCKET,
        "host B's sleeps: {:?}",
        by[&ib]
    );
    // Most of each host's events are its sleeper's (a loaded machine delays a few).
    for (host, bucket) in [(&ia, A_BUCKET), (&ib, B_BUCKET)] {
        let total: u64 = by[host].values().sum();
        assert!(by[host][&bucket] * 2 > total, "{host}: {:?}", by[host]);
    }
    // B sleeps about 48 times a second: its columns hold about that many events a second
    // (Prometheus's increase is an estimate, so only the order of magnitude is checked).
    let b_events = by[&ib][&B_BUCKET];
    let per_s = 1_000_000 / (B_SLEEP_US + 1000);
    let expected = b_columns as u64 * MIN_STEP_MS / 1000 * per_s;
    assert!(
        b_events > expected / 2 && b_events < expected * 2,
        "host B: {b_events} sleeps in {b_columns} columns of {MIN_STEP_MS} ms, about {expected} expected"
    );

    // A key filter: the sleepers' syscall keeps their buckets; a key with quotes and braces is
    // one literal that matches nothing, never a query of its own.
    let key_path = |key: &str| {
        let key: String = key
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        format!("/api/fleet/watches/{WATCH}/frames?from={from}&to={to}&columns=20&key={key}")
    };
    let nanosleep = get(&proxy, &key_path("clock_nanosleep")).json();
    let by_key = by_instance(&nanosleep);
    assert_eq!(busiest(&by_key[&ia]), A_BUCKET);
    assert_eq!(busiest(&by_key[&ib]), B_BUCKET);
    for evil in [
        "clock_nanosleep\"} or heat_sleepers_nanoseconds{syscall=~\".+",
        "x\"}[1s])) or vector(1) #",
        "\\\"",
        "a\nb",
    ] {
        let answer = get(&proxy, &key_path(evil));
        assert_eq!(answer.status, 200, "{evil:?}: {}", answer.body);
        let answer = answer.json();
        assert_eq!(
            answer["frames"],
            serde_json::json!([]),
            "{evil:?} matched something: {}",
            answer["fleet"]["query"]
        );
    }

    // Clear errors: an unknown watch, a bad range, a range over the limit.
    let path = format!("/api/fleet/watches/nope/frames?from={from}&to={to}");
    let unknown = get(&proxy, &path);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"]["code"], "unknown_watch");
    let path = format!("/api/fleet/watches/{WATCH}/frames?from={to}&to={from}");
    assert_eq!(get(&proxy, &path).status, 400);
    let path = format!("/api/fleet/watches/{WATCH}/frames?from=0&to={to}");
    let long = get(&proxy, &path);
    assert_eq!(long.status, 400);
    assert!(long.body.contains("max_range_s"), "{}", long.body);
    assert!(
        proxy
            .metric("heat_fleet_queries_total{outcome=\"ok\"}")
            .unwrap()
            >= 4.0
    );
}

#[test]
fn a_prometheus_that_is_down_is_a_clear_counted_error() {
    let port = support::free_port(); // nobody listens there
    let config = format!("{TEST_CONFIG}[fleet]\nprometheus_url = \"http://127.0.0.1:{port}\"\n");
    let server = Server::start_with(&config, &[], &[]);
    for path in [
        "/api/fleet/watches".to_owned(),
        format!("/api/fleet/watches/{WATCH}/frames"),
    ] {
        let answer = server.http("GET", &path, &[], "");
        assert_eq!(answer.status, 502, "{path}: {}", answer.body);
        assert_eq!(answer.json()["error"]["code"], "prometheus_unreachable");
    }
    assert_eq!(
        server.metric("heat_fleet_queries_total{outcome=\"unreachable\"}"),
        Some(2.0)
    );
}

/// `fleet-secret-pw`, bcrypt (cost 4) for Prometheus's `--web.config.file`.
const PROMETHEUS_PASSWORD_HASH: &str =
    "$2b$04$6Vu4zh9FwI/EGQ5Y4U34bORY5Y4aV4MgW8.TLRaVahgbOazFQmg36";
/// `Basic base64(fleet:fleet-secret-pw)`.
const PROMETHEUS_BASIC: &str = "Basic ZmxlZXQ6ZmxlZXQtc2VjcmV0LXB3";
/// How long a password-protected Prometheus may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(60);

/// Prometheus behind basic auth (no targets), killed on drop.
struct GuardedPrometheus {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl GuardedPrometheus {
    fn start() -> GuardedPrometheus {
        let port = support::free_port();
        let dir =
            std::env::temp_dir().join(format!("heat-fleet-auth-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            "global:\n  scrape_interval: 1s\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("web.yml"),
            format!("basic_auth_users:\n  fleet: {PROMETHEUS_PASSWORD_HASH}\n"),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--web.config.file={}",
                dir.join("web.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn prometheus");
        let ready = Server::eventually(LISTEN_TIMEOUT, || {
            let out = Command::new("curl")
                .args(["-sf", "-H", &format!("Authorization: {PROMETHEUS_BASIC}")])
                .arg(format!("http://127.0.0.1:{port}/-/ready"))
                .output();
            out.is_ok_and(|o| o.status.success())
        });
        assert!(ready, "prometheus with basic auth did not get ready");
        GuardedPrometheus { child, port, dir }
    }
}

impl Drop for GuardedPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn the_auth_header_from_its_file_is_sent_and_never_logged() {
    let prometheus = GuardedPrometheus::start();
    let url = format!("http://127.0.0.1:{}", prometheus.port);
    let file = prometheus.dir.join("auth-header");
    std::fs::write(&file, format!("Authorization: {PROMETHEUS_BASIC}\n")).unwrap();
    let with = Server::start_with(
        &format!(
            "{TEST_CONFIG}[fleet]\nprometheus_url = \"{url}\"\nauth_header_file = \"{}\"\n",
            file.display()
        ),
        &[],
        &[],
    );
    let without = Server::start_with(
        &format!("{TEST_CONFIG}[fleet]\nprometheus_url = \"{url}\"\n"),
        &[],
        &[],
    );
    let ok = with.http("GET", "/api/fleet/watches", &[], "");
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(ok.json()["watches"], serde_json::json!([]));
    // Without the header Prometheus refuses, and the page is told so.
    let refused = without.http("GET", "/api/fleet/watches", &[], "");
    assert_eq!(refused.status, 502, "{}", refused.body);
    let error = &refused.json()["error"];
    assert_eq!(error["code"], "prometheus_error");
    assert!(
        error["message"].as_str().unwrap().contains("401"),
        "{error}"
    );
    assert_eq!(
        without.metric("heat_fleet_queries_total{outcome=\"error\"}"),
        Some(1.0)
    );
    // The secret is in no log, even at debug.
    let secret = PROMETHEUS_BASIC.trim_start_matches("Basic ");
    for server in [&with, &without] {
        let log = server.log();
        assert!(log.contains("Fleet query"), "the queries are logged: {log}");
        assert!(!log.contains(secret), "{log}");
    }

    // A file that is not one `Name: value` line stops start-up, naming the file, not the value.
    std::fs::write(&file, "just-a-token-value\n").unwrap();
    let config = std::env::temp_dir().join(format!("heat-fleet-bad-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!(
            "[fleet]\nprometheus_url = \"{url}\"\nauth_header_file = \"{}\"\n",
            file.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_heat-actix"))
        .args([
            "--config",
            &config.display().to_string(),
            "--bind",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("fleet auth header"), "{stderr}");
    assert!(!stderr.contains("just-a-token-value"), "{stderr}");
}
