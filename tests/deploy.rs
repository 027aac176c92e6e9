//! What `deploy/` ships is what runs: the systemd unit's ExecStart, User and capability lines
//! start the real server (through setpriv, as systemd would), which then runs a native preset,
//! a bpftrace preset, a custom script, a pid filter and a recorded watch with nothing but those
//! capabilities; the Grafana dashboard asks only for metrics the exporter's contract names; the
//! Prometheus scrape config parses.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value as Json};
use support::{require_tracing, Client, Server};

/// The unit, relative to the crate.
const UNIT: &str = "deploy/heat-actix.service";
/// Where the .deb installs the binary and the config (ExecStart must name these).
const INSTALLED_BINARY: &str = "/usr/bin/heat-actix";
const INSTALLED_CONFIG: &str = "/etc/heat-actix/heat.toml";
/// The drop-in that runs native presets only, as a dynamic user.
const NATIVE_ONLY: &str = "deploy/native-only.conf";
/// Who the test runs a `DynamicUser=yes` unit as (systemd would allocate a uid).
const DYNAMIC_USER_STAND_IN: &str = "nobody";
/// Walk interval of every program here: short, so frames come quickly.
const TICK_MS: u64 = 200;
/// How long a start may take (bpftrace compiles and attaches).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a started program has to send a frame (with `cost`, when asked).
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a recorded watch may take to have ticks in the store.
const RECORDED_WITHIN: Duration = Duration::from_secs(20);
/// Set to a comma list (`bpf,perfmon`) to run the unit's checks with other capabilities and
/// see which fail (how the unit's list was found); the CapEff check is then skipped.
const CAPS_OVERRIDE: &str = "HEAT_DEPLOY_CAPS";

/// The `[Service]` settings of a unit file, each key with its values in order.
fn service_section(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = String::new();
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        assert!(
            !line.ends_with('\\'),
            "{UNIT}: continuation lines are not read by this test: {line}"
        );
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{UNIT}: not key=value: {line}"));
        if section == "Service" {
            settings
                .entry(key.trim().to_owned())
                .or_default()
                .push(value.trim().to_owned());
        }
    }
    settings
}

/// How the unit runs the server.
#[derive(Debug)]
struct Unit {
    /// ExecStart's arguments after the binary.
    args: Vec<String>,
    user: String,
    /// Capabilities as setpriv names them (`bpf`, `sys_admin`), sorted.
    bounding: BTreeSet<String>,
    ambient: BTreeSet<String>,
    no_new_privileges: bool,
}

/// A capability list as systemd writes it (`CAP_BPF CAP_PERFMON`), in setpriv's names; an
/// empty assignment resets the list, as in systemd.
fn capabilities(values: &[String]) -> BTreeSet<String> {
    let mut caps = BTreeSet::new();
    for value in values {
        if value.is_empty() {
            caps.clear();
        }
        assert!(
            !value.starts_with('~'),
            "{UNIT}: an inverted capability list is not read by this test: {value}"
        );
        for cap in value.split_whitespace() {
            let name = cap
                .strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("{UNIT}: not a capability: {cap}"));
            caps.insert(name.to_ascii_lowercase());
        }
    }
    caps
}

/// The unit as systemd reads it with `drop_in` (relative to the crate) after it: a setting
/// assigned again takes the last value; capability lists add up until an empty assignment.
fn read_unit(drop_in: Option<&str>) -> Unit {
    let read = |file: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"))
    };
    let mut text = read(UNIT);
    if let Some(file) = drop_in {
        text.push('\n');
        text.push_str(&read(file));
    }
    let service = service_section(&text);
    let last = |key: &str| service.get(key).and_then(|v| v.last()).cloned();
    let yes = |key: &str| last(key).is_some_and(|v| v == "yes" || v == "true");
    let exec = last("ExecStart").expect("the unit has an ExecStart");
    let mut words = exec
        .trim_start_matches(['@', '-', ':', '+', '!'])
        .split_whitespace()
        .map(str::to_owned);
    assert_eq!(words.next().as_deref(), Some(INSTALLED_BINARY), "{exec}");
    let empty = Vec::new();
    Unit {
        args: words.collect(),
        // systemd allocates a fresh unprivileged uid: nobody stands in for it here.
        user: if yes("DynamicUser") {
            DYNAMIC_USER_STAND_IN.to_owned()
        } else {
            last("User").unwrap_or_else(|| "root".to_owned())
        },
        bounding: capabilities(service.get("CapabilityBoundingSet").unwrap_or(&empty)),
        ambient: capabilities(service.get("AmbientCapabilities").unwrap_or(&empty)),
        no_new_privileges: yes("NoNewPrivileges"),
    }
}

/// setpriv's form of a capability set: `-all,+bpf,+perfmon`.
fn setpriv_caps(caps: &BTreeSet<String>) -> String {
    std::iter::once("-all".to_owned())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The setpriv command that gives the server what the unit gives it: its user, its bounding
/// set (uid 0 then holds exactly that set), ambient capabilities for a non-root user, and
/// no_new_privs.
fn setpriv(unit: &Unit, caps: &BTreeSet<String>) -> Vec<String> {
    let mut wrapper = vec!["setpriv".to_owned()];
    if unit.user != "root" {
        let group = if unit.user == "nobody" {
            "nogroup"
        } else {
            &unit.user
        };
        wrapper.extend([
            format!("--reuid={}", unit.user),
            format!("--regid={group}"),
            "--clear-groups".to_owned(),
        ]);
    }
    wrapper.push(format!("--inh-caps={}", setpriv_caps(&unit.ambient)));
    if !unit.ambient.is_empty() {
        wrapper.push(format!("--ambient-caps={}", setpriv_caps(&unit.ambient)));
    }
    wrapper.push(format!("--bounding-set={}", setpriv_caps(caps)));
    if unit.no_new_privileges {
        wrapper.push("--no-new-privs".to_owned());
    }
    wrapper
}

/// The names of the capabilities in a `/proc/PID/status` mask line (`CapEff:\t...`).
fn capability_names(pid: u32, field: &str) -> BTreeSet<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim();
    let mask = u64::from_str_radix(hex, 16).unwrap();
    // setpriv --list-caps prints every capability by number, so bit N is line N.
    let listed = Command::new("setpriv").arg("--list-caps").output().unwrap();
    String::from_utf8(listed.stdout)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|&(bit, _)| mask & (1 << bit) != 0)
        .map(|(_, name)| name.to_owned())
        .collect()
}

/// A temporary store directory, removed on drop.
struct StoreDir(PathBuf);

impl StoreDir {
    /// A directory for test `name`, owned by `user`.
    fn new(name: &str, user: &str) -> StoreDir {
        let dir =
            std::env::temp_dir().join(format!("heat-actix-deploy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let owned = Command::new("chown").arg(user).arg(&dir).status();
        assert!(owned.unwrap().success(), "chown {user}");
        StoreDir(dir)
    }
}

impl Drop for StoreDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process of another user (nobody), for a pid filter; killed on drop.
struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(server: &Server) -> Client {
    let mut client = server.connect();
    client.expect("hello", Duration::from_secs(5));
    client
}

/// Starts `request`; Err says what went wrong instead of `started` and frames with events.
fn runs(server: &Server, request: Json, backend: &str, cost: bool) -> Result<(), String> {
    let mut client = client(server);
    client.send(request.clone());
    let started = loop {
        match client.recv(START_TIMEOUT) {
            support::Received::Json(m) if m["type"] == "started" => break m,
            support::Received::Json(m) if m["type"] == "error" => {
                return Err(format!("{request}: {m}"))
            }
            support::Received::Json(_) => {}
            other => return Err(format!("{request}: {other:?}")),
        }
    };
    if started["backend"] != backend || started.get("fallback").is_some() {
        return Err(format!("{request}: expected {backend}, got {started}"));
    }
    // The first frames may precede the first cost (it needs two readings).
    let deadline = std::time::Instant::now() + FRAME_TIMEOUT;
    let mut frames = 0;
    while std::time::Instant::now() < deadline {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client.recv(left) {
            support::Received::Json(m) if m["type"] == "frame" => {
                frames += 1;
                if !cost || !m["cost"].is_null() {
                    return Ok(());
                }
            }
            support::Received::Json(m) if m["type"] == "error" => {
                return Err(format!("{request}: {m}"))
            }
            support::Received::Json(_) => {}
            support::Received::Timeout => break,
            other => return Err(format!("{request}: {other:?}")),
        }
    }
    Err(match frames {
        0 => format!("{request}: no frames"),
        n => format!("{request}: none of {n} frames carries `cost`"),
    })
}

/// The watch recorded ticks to the store.
fn recorded(server: &Server) -> Result<(), String> {
    let found = Server::eventually(RECORDED_WITHIN, || {
        let answer = server.http(
            "GET",
            "/api/watches/w/frames?from=0&to=99999999999999",
            &[],
            "",
        );
        answer.status == 200
            && answer.json()["frames"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
    });
    found
        .then_some(())
        .ok_or_else(|| "the watch recorded nothing".to_owned())
}

#[test]
fn the_unit_runs_native_and_bpftrace_programs_with_its_capabilities_only() {
    require_tracing();
    let unit = read_unit(None);
    assert_eq!(
        unit.args,
        ["--config", INSTALLED_CONFIG],
        "{UNIT}: ExecStart's arguments (this test swaps in its own config for the installed one)"
    );
    let overridden = std::env::var(CAPS_OVERRIDE).ok();
    let mut run = read_unit(None);
    if let Some(list) = &overridden {
        run.bounding = list
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
    }
    let caps = run.bounding.clone();
    let store = StoreDir::new("unit", &run.user);
    // Costs measured on every program, a recorded watch: everything the server does with
    // privileges at once.
    let config = format!(
        "[policy]\ncustom_scripts = true\n[limits]\nstart_cooldown_ms = 0\nmeasure_cost = \"always\"\nmax_program_cpu_percent = 100000\n\
         [store]\npath = {:?}\n[[watch]]\nname = \"w\"\npreset = \"runqueue-latency\"\nbackend = \"bpftrace\"\ntick_ms = {TICK_MS}\nrecord = true\n",
        store.0.display().to_string()
    );
    let server = Server::start_wrapped(&config, &setpriv(&run, &caps), &[], &[], "info");

    let sleeper = Sleeper(
        Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "sleep",
                "60",
            ])
            .spawn()
            .unwrap(),
    );
    let others = sleeper.0.id();
    let checks: Vec<(&str, Result<(), String>)> = vec![
        (
            "native preset, with cost",
            runs(
                &server,
                json!({"type": "start", "preset": "syscall-latency", "tick_ms": TICK_MS, "backend": "ebpf"}),
                "ebpf",
                true,
            ),
        ),
        (
            "bpftrace preset, with cost",
            runs(
                &server,
                json!({"type": "start", "preset": "syscall-latency-log2", "tick_ms": TICK_MS, "backend": "bpftrace"}),
                "bpftrace",
                true,
            ),
        ),
        (
            "custom bpftrace script",
            runs(
                &server,
                json!({"type": "start", "lang": "bpftrace", "tick_ms": TICK_MS,
                       "script": "tracepoint:raw_syscalls:sys_enter { @calls = count(); }"}),
                "bpftrace",
                false,
            ),
        ),
        (
            "native preset, pid of another user",
            runs(
                &server,
                json!({"type": "start", "preset": "futex-wait", "tick_ms": TICK_MS, "backend": "ebpf", "pid": others}),
                "ebpf",
                false,
            ),
        ),
        (
            "bpftrace preset, pid of another user",
            runs(
                &server,
                json!({"type": "start", "preset": "futex-wait", "tick_ms": TICK_MS, "backend": "bpftrace", "pid": others}),
                "bpftrace",
                false,
            ),
        ),
        ("recorded watch", recorded(&server)),
    ];
    let effective = capability_names(server.pid(), "CapEff:");
    let tracer_caps: Vec<BTreeSet<String>> = server
        .bpftrace_children()
        .into_iter()
        .map(|pid| capability_names(pid, "CapEff:"))
        .collect();
    let log = server.log();
    drop(server);
    let failed: Vec<String> = checks
        .iter()
        .filter_map(|(what, result)| result.as_ref().err().map(|e| format!("{what}: {e}")))
        .collect();
    for (what, result) in &checks {
        eprintln!("caps {caps:?}: {what}: {result:?}");
    }
    assert!(failed.is_empty(), "{failed:#?}\nserver log:\n{log}");
    if overridden.is_some() {
        return;
    }
    assert_eq!(effective, unit.bounding, "the server's CapEff");
    assert!(!tracer_caps.is_empty(), "no bpftrace was running");
    for tracer in tracer_caps {
        assert_eq!(tracer, unit.bounding, "a bpftrace's CapEff");
    }
}

#[test]
fn the_native_only_drop_in_runs_native_presets_as_an_unprivileged_user() {
    require_tracing();
    let unit = read_unit(Some(NATIVE_ONLY));
    assert_ne!(unit.user, "root", "{NATIVE_ONLY}: not uid 0");
    let store = StoreDir::new("native-only", &unit.user);
    // As the drop-in says the config must be: the store in the state directory, no cost.
    let config = format!(
        "[limits]\nstart_cooldown_ms = 0\nmeasure_cost = \"never\"\n\
         [store]\npath = {:?}\n[[watch]]\nname = \"w\"\npreset = \"syscall-latency\"\ntick_ms = {TICK_MS}\nrecord = true\n",
        store.0.display().to_string()
    );
    let server = Server::start_wrapped(&config, &setpriv(&unit, &unit.bounding), &[], &[], "info");
    let native = runs(
        &server,
        json!({"type": "start", "preset": "runqueue-latency", "tick_ms": TICK_MS, "backend": "ebpf"}),
        "ebpf",
        false,
    );
    let bpftrace = runs(
        &server,
        json!({"type": "start", "preset": "runqueue-latency", "tick_ms": TICK_MS, "backend": "bpftrace"}),
        "bpftrace",
        false,
    );
    let watch = recorded(&server);
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let effective = capability_names(server.pid(), "CapEff:");
    let ambient = capability_names(server.pid(), "CapAmb:");
    let log = server.log();
    drop(server);
    assert_eq!(native, Ok(()), "{log}");
    assert_eq!(watch, Ok(()), "{log}");
    let refused = bpftrace.expect_err("bpftrace ran as a user other than root");
    assert!(refused.contains("root user"), "{refused}");
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid.split_whitespace().skip(1).all(|id| id != "0"),
        "not uid 0: {uid}"
    );
    assert_eq!(effective, unit.ambient, "the server's CapEff");
    assert_eq!(ambient, unit.ambient, "the server's CapAmb");
    assert!(unit.ambient.is_subset(&unit.bounding), "{NATIVE_ONLY}");
}

#[test]
fn systemd_accepts_the_unit_and_its_drop_in() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(crate_dir.join(UNIT)).unwrap();
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = std::env::temp_dir().join(format!("heat-actix-unit-{}", std::process::id()));
    let drop_ins = dir.join("heat-actix.service.d");
    std::fs::create_dir_all(&drop_ins).unwrap();
    let copy = dir.join("heat-actix.service");
    std::fs::write(
        &copy,
        text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_heat-actix")),
    )
    .unwrap();
    std::fs::copy(
        crate_dir.join(NATIVE_ONLY),
        drop_ins.join("native-only.conf"),
    )
    .unwrap();
    // The unit path (then the defaults, for the units it names) is where drop-ins are found.
    let verified = Command::new("systemd-analyze")
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .arg("verify")
        .arg(&copy)
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let verified =
        verified.expect("systemd-analyze (Debian's systemd package; scripts/deps installs it)");
    let complaints = String::from_utf8_lossy(&verified.stderr);
    // An unknown key or a bad value is only a warning: any output is a failure here.
    assert!(
        verified.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify {UNIT} with {NATIVE_ONLY}: {}\n{complaints}",
        verified.status
    );
}

/// The scrape config example, relative to the crate.
const SCRAPE_CONFIG: &str = "deploy/prometheus.yml";
/// The Grafana dashboard, relative to the crate.
const DASHBOARD: &str = "deploy/grafana-dashboard.json";
/// The metric names the exporter's contract defines: the info gauge names the families; a
/// family `heat_<watch>_<unit>` is its native histogram, and its classic form adds `_bucket`,
/// `_sum` and `_count`. The dashboard picks the family from the info gauge (`$family`).
const CONTRACT_METRICS: [&str; 5] = [
    "heat_watch_export_info",
    "$family",
    "${family}_bucket",
    "${family}_sum",
    "${family}_count",
];
/// What the Grafana variables stand for when promtool parses the expressions.
const VARIABLES: [(&str, &str); 5] = [
    ("${family}", "heat_syscalls_nanoseconds"),
    ("$family", "heat_syscalls_nanoseconds"),
    ("${key_label}", "syscall"),
    ("$instance", ".+"),
    ("$__rate_interval", "1m"),
];
/// PromQL words that are neither functions nor metrics.
const KEYWORDS: [&str; 14] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "atan2",
    "inf",
    "nan",
];

/// Every PromQL expression of a Grafana dashboard: panel targets' `expr` and query variables'
/// queries (`label_values(EXPR, label)` gives EXPR).
fn dashboard_queries(dashboard: &Json) -> Vec<String> {
    fn walk(value: &Json, found: &mut Vec<String>) {
        match value {
            Json::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr", Json::String(expr)) => found.push(expr.clone()),
                        ("definition", Json::String(query)) => {
                            let inner = query
                                .strip_prefix("label_values(")
                                .and_then(|q| q.strip_suffix(')'))
                                .and_then(|q| q.rsplit_once(','))
                                .map(|(expr, _label)| expr.trim());
                            found.push(inner.unwrap_or(query).to_owned());
                        }
                        _ => walk(value, found),
                    }
                }
            }
            Json::Array(items) => items.iter().for_each(|v| walk(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    walk(dashboard, &mut found);
    found
}

/// The index of the first `close` at or after `from` outside double quotes.
fn closing(chars: &[char], from: usize, close: char) -> usize {
    let mut quoted = false;
    (from..chars.len())
        .find(|&i| {
            quoted ^= chars[i] == '"';
            chars[i] == close && !quoted
        })
        .unwrap_or_else(|| panic!("no closing {close}"))
}

/// The metric names an expression selects: bare names in a selector's place, and
/// `__name__="…"` matchers. Functions and aggregations (a name before `(` or `by`), keywords,
/// label names (inside `{}` and `by (…)`), strings, numbers, durations and Grafana variables
/// are not metrics.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let word_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '{' {
            // Matchers: name op "value", ... (a value may hold a `}`: "${family}_bucket").
            let end = closing(&chars, i, '}');
            let body: String = chars[i + 1..end].iter().collect();
            for matcher in body.split(',') {
                if let Some(value) = matcher.trim().strip_prefix("__name__=") {
                    names.push(value.trim_matches('"').to_owned());
                }
            }
            i = end + 1;
        } else if c == '[' {
            i = closing(&chars, i, ']') + 1;
        } else if c == '"' {
            i = closing(&chars, i + 1, '"') + 1;
        } else if c == '$' {
            // A Grafana variable: $name or ${name}.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = closing(&chars, i, '}') + 1;
            } else {
                while i < chars.len() && word_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (word_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if word_char(c) {
            let start = i;
            while i < chars.len() && word_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let rest: String = chars[i..].iter().collect();
            let rest = rest.trim_start();
            let called = rest.starts_with('(')
                || rest.starts_with("by ")
                || rest.starts_with("by(")
                || rest.starts_with("without");
            if word == "by" || word == "without" {
                // The label list that follows.
                i = closing(&chars, i, ')') + 1;
            } else if !called && !KEYWORDS.contains(&word.as_str()) {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn the_metric_walker_finds_metrics_and_nothing_else() {
    assert_eq!(
        metric_names(r#"sum by (le, $x) (rate(foo_bucket{a="b", c=~"$d"}[5m])) or bar offset 1m"#),
        ["foo_bucket", "bar"]
    );
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, rate({__name__="${family}_bucket", x="y"}[$__rate_interval]))"#
        ),
        ["${family}_bucket"]
    );
    assert_eq!(metric_names("topk(10, x) > 1.5e3"), ["x"]);
}

#[test]
fn the_dashboard_asks_only_for_the_contracts_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Json =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    let queries = dashboard_queries(&dashboard);
    for query in &queries {
        let names = metric_names(query);
        assert!(!names.is_empty(), "{DASHBOARD}: selects no metric: {query}");
        for name in names {
            assert!(
                CONTRACT_METRICS.contains(&name.as_str()),
                "{DASHBOARD}: {name} is not a metric of the export contract: {query}"
            );
        }
    }
    let panels = dashboard["panels"].as_array().unwrap();
    let exprs = |kind: &str| -> Vec<String> {
        panels
            .iter()
            .filter(|p| p["type"] == kind)
            .flat_map(|p| p["targets"].as_array().unwrap().clone())
            .map(|t| t["expr"].as_str().unwrap().to_owned())
            .collect()
    };
    assert!(
        exprs("heatmap")
            .iter()
            .any(|e| e.contains(r#"rate({__name__="$family""#)),
        "a heatmap of the native histogram"
    );
    let series = exprs("timeseries");
    for wanted in [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "topk(",
    ] {
        assert!(
            series.iter().any(|e| e.contains(wanted)),
            "a panel with {wanted}"
        );
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for wanted in ["datasource", "family", "key_label", "instance"] {
        assert!(
            variables.contains(&wanted),
            "variable {wanted}: {variables:?}"
        );
    }

    // Prometheus's own parser: every expression, its variables filled in, as a recording rule.
    let rules: Vec<Json> = queries
        .iter()
        .enumerate()
        .map(|(n, query)| {
            let expr = VARIABLES
                .iter()
                .fold(query.clone(), |q, (var, value)| q.replace(var, value));
            json!({"record": format!("dashboard:query_{n}"), "expr": expr})
        })
        .collect();
    let file = std::env::temp_dir().join(format!(
        "heat-actix-dashboard-{}.rules.json",
        std::process::id()
    ));
    // YAML is a superset of JSON, so promtool reads this.
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let checked = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    let checked =
        checked.expect("promtool (Debian's prometheus package; scripts/deps installs it)");
    assert!(
        checked.status.success(),
        "promtool check rules on the dashboard's queries:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

#[test]
fn promtool_accepts_the_scrape_config() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(SCRAPE_CONFIG);
    let checked = Command::new("promtool")
        .arg("check")
        .arg("config")
        .arg(&path)
        .output()
        .expect("promtool (Debian's prometheus package; scripts/deps installs it)");
    assert!(
        checked.status.success(),
        "promtool check config {SCRAPE_CONFIG}:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}
