//! Safe to expose: tokens and roles, the origin check, the script policy, every limit, bad
//! input, slow clients, faults, shutdown and TLS, each against the real server and tracer.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{require_tracing, Client, Received, Server};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

const SECOND: Duration = Duration::from_secs(1);

fn auth_config() -> String {
    format!(
        "[policy]\ncustom_scripts = true\n[limits]\nstart_cooldown_ms = 0\n\
         [[auth.tokens]]\nname = \"vic\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [[auth.tokens]]\nname = \"ops\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
        support::hash_token("view-token"),
        support::hash_token("operator-token")
    )
}

fn expect_close(client: &mut Client, code: u16) -> String {
    let deadline = Instant::now() + 5 * SECOND;
    loop {
        match client.recv(deadline.saturating_duration_since(Instant::now())) {
            Received::Closed(Some((c, reason))) => {
                assert_eq!(u16::from(c), code, "close code ({reason})");
                return reason;
            }
            Received::Json(_) => {}
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

#[test]
fn tokens_decide_who_may_do_what() {
    require_tracing();
    let server = Server::start_with(&auth_config(), &[], &[]);
    let script = json!({"type": "start", "lang": "bpftrace", "script": "tracepoint:raw_syscalls:sys_exit { @n = count(); }"});

    // No token, a wrong token: told why, closed with 4401, counted.
    for query in ["", "token=guess"] {
        let mut client = server.connect_with(query, &[]).unwrap();
        let error = client.expect("error", 5 * SECOND);
        assert_eq!(error["code"], "unauthorized", "{query}: {error}");
        expect_close(&mut client, 4401);
    }
    assert_eq!(
        server.metric("heat_sessions_rejected_total{reason=\"auth\"}"),
        Some(2.0)
    );
    assert_eq!(server.metric("heat_sessions_active"), Some(0.0));

    // A viewer runs presets but not scripts.
    let mut viewer = server.connect_with("token=view-token", &[]).unwrap();
    let hello = viewer.expect("hello", 5 * SECOND);
    assert_eq!(
        (
            hello["user"].as_str(),
            hello["role"].as_str(),
            hello["custom_scripts"].as_bool()
        ),
        (Some("vic"), Some("viewer"), Some(false))
    );
    viewer.send(script.clone());
    let error = viewer.expect("error", 5 * SECOND);
    assert_eq!(error["code"], "forbidden");
    assert!(
        error["message"].as_str().unwrap().contains("operator"),
        "{error}"
    );
    assert!(
        server.bpftrace_children().is_empty(),
        "a refused script never reaches the tracer"
    );
    viewer.start_preset("syscall-latency", 200);

    // An operator, token in a subprotocol, runs a script.
    let mut operator = server
        .connect_with(
            "",
            &[(
                "Sec-WebSocket-Protocol",
                "heat-actix.v1, token.operator-token",
            )],
        )
        .unwrap();
    assert_eq!(operator.expect("hello", 5 * SECOND)["role"], "operator");
    operator.send(script);
    operator.expect("started", 30 * SECOND);
    assert!(
        server
            .log()
            .lines()
            .all(|l| !l.contains("operator-token") && !l.contains("view-token")),
        "tokens are never logged"
    );
}

#[test]
fn custom_scripts_are_off_by_default() {
    let server = Server::start_with("", &[], &[]);
    let mut client = server.connect();
    assert_eq!(client.expect("hello", 5 * SECOND)["custom_scripts"], false);
    client.send(json!({"type": "start", "lang": "bpftrace", "script": "BEGIN { @n = count(); }"}));
    let error = client.expect("error", 5 * SECOND);
    assert_eq!(error["code"], "forbidden");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("policy.custom_scripts"),
        "{error}"
    );
    assert_eq!(
        server.metric("heat_sessions_rejected_total{reason=\"forbidden\"}"),
        Some(1.0)
    );
}

#[test]
fn a_cross_origin_upgrade_is_refused() {
    let server = Server::start(&[]);
    let evil = server.connect_with("", &[("Origin", "http://evil.example")]);
    match evil {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected a 403, got {:?}", other.map(|_| "a websocket")),
    }
    assert_eq!(
        server.metric("heat_sessions_rejected_total{reason=\"origin\"}"),
        Some(1.0)
    );
    let own = format!("http://127.0.0.1:{}", server.port);
    let mut same = server.connect_with("", &[("Origin", &own)]).unwrap();
    same.expect("hello", 5 * SECOND);
}

#[test]
fn a_non_loopback_bind_without_tokens_does_not_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heat-actix"))
        .args(["--bind", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("auth.tokens"),
        "{stderr}"
    );
}

#[test]
fn bad_input_gets_clear_errors_and_harms_no_one_else() {
    require_tracing();
    let config = "[policy]\ncustom_scripts = true\n[limits]\nstart_cooldown_ms = 0\nmax_script_bytes = 4096\n";
    let server = Server::start_with(config, &[], &[]);
    // A bystander session keeps receiving frames throughout.
    let mut bystander = server.connect();
    bystander.expect("hello", 5 * SECOND);
    bystander.start_preset("syscall-latency", 200);

    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    let nested = "[".repeat(10_000) + &"]".repeat(10_000);
    client.send_text(&nested);
    assert_eq!(client.expect("error", 5 * SECOND)["code"], "bad_request");
    client.send(json!({"type": "start", "lang": "bpftrace", "script": "x".repeat(5000)}));
    let error = client.expect("error", 5 * SECOND);
    assert_eq!(error["code"], "too_large", "{error}");
    client
        .send(json!({"type": "start", "lang": "bpftrace", "script": "BEGIN { system(\"id\"); }"}));
    let error = client.expect("error", 30 * SECOND);
    assert_eq!(error["code"], "compile");
    assert!(
        error["message"].as_str().unwrap().contains("unsafe"),
        "bpftrace's own refusal: {error}"
    );

    // 10 MB in one message: told, then closed with 1009.
    client.send_text(&format!(
        "{{\"type\":\"start\",\"preset\":\"{}\"}}",
        "x".repeat(10 * 1024 * 1024)
    ));
    let error = client.expect("error", 10 * SECOND);
    assert_eq!(error["code"], "too_large");
    expect_close(&mut client, 1009);

    // Invalid UTF-8 in a text frame: told, then closed with 1007.
    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    let frame = Frame::message(vec![b'{', 0xff, 0xfe, b'}'], OpCode::Data(Data::Text), true);
    client.ws.write(tungstenite::Message::Frame(frame)).unwrap();
    client.ws.flush().unwrap();
    assert_eq!(client.expect("error", 5 * SECOND)["code"], "bad_request");
    expect_close(&mut client, 1007);

    assert!(
        !bystander.frames_for(SECOND).is_empty(),
        "the other session is unaffected"
    );
    assert!(server.http_get("/healthz").is_some());
}

#[test]
fn a_script_that_prints_without_bound_is_killed_over_budget() {
    require_tracing();
    let config = "[policy]\ncustom_scripts = true\n[limits]\noutput_budget_bytes_per_s = 65536\n";
    let server = Server::start_with(config, &[], &[]);
    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    // Only this test's thread makes it print, so it attaches quietly and floods on cue.
    let spam = format!(
        "tracepoint:raw_syscalls:sys_enter /tid == {}/ {{ printf(\"%s %d spam spam spam spam spam spam\\n\", comm, tid); }}",
        support::gettid()
    );
    client.send(json!({"type": "start", "lang": "bpftrace", "script": spam, "tick_ms": 200}));
    client.expect("started", 30 * SECOND);
    support::getppid_n(100_000);
    let error = client.expect("error", 10 * SECOND);
    assert_eq!(error["code"], "budget", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("65536"),
        "{error}"
    );
    assert_eq!(client.expect("stopped", 5 * SECOND)["reason"], "budget");
    assert!(Server::eventually(2 * SECOND, || server
        .bpftrace_children()
        .is_empty()));
    assert_eq!(
        server.metric("heat_consumer_errors_total{kind=\"budget\"}"),
        Some(1.0)
    );
}

#[test]
fn limits_on_keys_starts_and_sessions_per_client() {
    require_tracing();
    let config = "[policy]\ncustom_scripts = true\n[limits]\nmax_keys_per_aggregation = 5\n\
                  start_cooldown_ms = 60000\nmax_sessions_per_client = 2\n";
    let server = Server::start_with(config, &[], &[]);
    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    client.start_script(
        "tracepoint:raw_syscalls:sys_enter { @c[args->id] = count(); }",
        200,
    );
    // Many different syscalls from this test, so there are more than 5 keys.
    for _ in 0..20 {
        support::getppid_n(1);
        // SAFETY: plain syscalls without pointers.
        unsafe {
            libc::getuid();
            libc::getgid();
            libc::geteuid();
            libc::getegid();
            libc::getpgrp();
            libc::sched_yield();
        }
    }
    let frames = client.frames_for(SECOND);
    let folded = frames
        .iter()
        .map(|f| &f["aggregations"][0])
        .find(|a| a["folded"].as_u64().unwrap_or(0) > 0);
    let folded = folded.expect("some frame had more than 5 keys");
    let series = folded["series"].as_array().unwrap();
    assert!(series.len() <= 5, "{series:?}");
    assert!(series.iter().any(|s| s["key"] == json!(["other"])));

    // A second start within the cooldown is refused; the running program is untouched.
    client.send(json!({"type": "start", "preset": "syscall-latency"}));
    assert_eq!(client.expect("error", 5 * SECOND)["code"], "rate_limited");
    assert!(!client.frames_for(Duration::from_millis(500)).is_empty());

    // A third session from the same address is turned away.
    let mut second = server.connect();
    second.expect("hello", 5 * SECOND);
    let mut third = server.connect();
    let reason = expect_close(&mut third, 1013);
    assert!(reason.contains("max_sessions_per_client = 2"), "{reason}");
    assert_eq!(
        server.metric("heat_sessions_rejected_total{reason=\"per_client\"}"),
        Some(1.0)
    );
}

#[test]
fn a_client_that_stops_reading_loses_frames_not_memory() {
    require_tracing();
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    client.start_preset("syscall-latency", 100);
    assert!(!client.frames_for(Duration::from_millis(500)).is_empty());
    // Stop reading (no pongs either) for 3 s: 30 ticks.
    std::thread::sleep(3 * SECOND);
    let frames = client.frames_for(2 * SECOND);
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    let skipped: u64 = seqs.windows(2).map(|w| w[1] - w[0] - 1).sum();
    assert!(
        skipped >= 10,
        "frames beyond the in-flight window were skipped, leaving gaps in seq: {seqs:?}"
    );
    assert!(server.metric("heat_frames_dropped_total").unwrap() >= skipped as f64);
}

#[test]
fn a_panic_in_a_consumer_thread_does_not_take_the_server_down() {
    require_tracing();
    let server = Server::start_with(
        support::TEST_CONFIG,
        &[],
        &[("HEAT_ACTIX_FAULT", "consumer_panic")],
    );
    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    client.start_preset("syscall-latency", 200);
    let error = client.expect("error", 10 * SECOND);
    assert_eq!(error["code"], "internal", "{error}");
    assert_eq!(
        client.expect("stopped", 5 * SECOND)["reason"],
        "tracer_exited"
    );
    assert!(
        Server::eventually(2 * SECOND, || server.bpftrace_children().is_empty()),
        "the tracer died with its thread"
    );
    let mut other = server.connect();
    other.expect("hello", 5 * SECOND);
    assert!(server.http_get("/healthz").is_some());
}

#[test]
fn sigterm_stops_every_tracer_before_exit() {
    require_tracing();
    let mut server = Server::start(&[]);
    let mut clients: Vec<Client> = (0..2).map(|_| server.connect()).collect();
    // One program on bpftrace (a child process), one natively where the kernel allows it
    // (BPF programs held by the server itself).
    for (client, backend) in clients.iter_mut().zip([json!("bpftrace"), json!(null)]) {
        client.expect("hello", 5 * SECOND);
        let mut start = json!({"type": "start", "preset": "syscall-latency", "tick_ms": 200});
        if !backend.is_null() {
            start["backend"] = backend;
        }
        client.send(start);
        client.expect("started", 30 * SECOND);
    }
    let tracers = server.bpftrace_children();
    assert_eq!(tracers.len(), 1);
    let programs = support::bpf_ids(server.pid(), "prog_id:");
    // SAFETY: kill takes a pid and a signal; the server is our child.
    unsafe { libc::kill(server.pid() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + 10 * SECOND;
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    for pid in tracers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "tracer {pid} outlived the server"
        );
    }
    for id in programs {
        assert!(
            support::bpftool_show("prog", id).is_none(),
            "BPF program {id} outlived the server"
        );
    }
    let log = server.log();
    assert!(
        log.contains("Sessions stopped.") && log.contains("sessions=2 left=0"),
        "{log}"
    );
}

#[test]
fn an_idle_session_is_closed() {
    let server = Server::start_with("[limits]\nidle_timeout_s = 1\n", &[], &[]);
    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    let deadline = Instant::now() + 15 * SECOND;
    loop {
        match client.recv(deadline.saturating_duration_since(Instant::now())) {
            Received::Closed(Some((code, reason))) => {
                assert_eq!(u16::from(code), 1000);
                assert!(reason.contains("idle"), "{reason}");
                break;
            }
            Received::Json(_) => {}
            other => panic!("expected an idle close, got {other:?}"),
        }
    }
}

#[test]
fn tls_serves_https() {
    let dir = std::env::temp_dir().join(format!("heat-actix-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is installed");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let config = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let server = Server::start_with(&config, &[], &[]);
    let https = format!("https://127.0.0.1:{}/", server.port);
    let page = std::process::Command::new("curl")
        .args(["-sk", &https])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&page.stdout).contains("heat-actix"),
        "the page over https"
    );
    assert!(
        server.http_get("/healthz").is_none(),
        "plain HTTP is not served on a TLS port"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every `reason` of `heat_sessions_rejected_total` the README lists.
const REASONS: [&str; 11] = [
    "capacity",
    "per_client",
    "auth",
    "origin",
    "forbidden",
    "too_large",
    "rate_limited",
    "bad_request",
    "unknown_preset",
    "unsupported",
    "max_programs",
];

/// Every `kind` of `heat_consumer_errors_total` the README lists.
const KINDS: [&str; 9] = [
    "compile",
    "spawn",
    "start_timeout",
    "exited",
    "walk_timeout",
    "budget",
    "state",
    "decode",
    "internal",
];

fn rejected(server: &Server) -> std::collections::BTreeMap<String, f64> {
    server
        .metric_family("heat_sessions_rejected_total")
        .into_iter()
        .collect()
}

/// Runs `provoke` and checks that it raised `reason` by exactly one and nothing else.
fn raises_exactly_one(server: &Server, reason: &str, what: &str, provoke: impl FnOnce()) {
    let before = rejected(server);
    provoke();
    let label = format!("{{reason=\"{reason}\"}}");
    let expected = before.get(&label).copied().unwrap_or(0.0) + 1.0;
    // Refusals are counted before the client is told, but a close may reach the test first.
    Server::eventually(2 * SECOND, || {
        rejected(server).get(&label) == Some(&expected)
    });
    let after = rejected(server);
    for (series, value) in &after {
        let want = if *series == label {
            expected
        } else {
            before.get(series).copied().unwrap_or(0.0)
        };
        assert_eq!(
            *value,
            want,
            "{what}: {series} went from {before:?} to {after:?}; refusals logged:\n{}",
            server
                .log()
                .lines()
                .filter(|l| l.contains("refused") || l.contains("rejected") || l.contains("error"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn every_reason_and_kind_is_exported_at_zero_from_start_up() {
    let server = Server::start(&[]);
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for reason in REASONS {
        let series = format!("heat_sessions_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(server.metric(&series), Some(0.0), "{series}");
        assert!(
            readme.contains(&format!("`{reason}`")),
            "README lists {reason}"
        );
    }
    for kind in KINDS {
        let series = format!("heat_consumer_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(server.metric(&series), Some(0.0), "{series}");
        assert!(readme.contains(&format!("`{kind}`")), "README lists {kind}");
    }
    // And nothing beyond them: a new reason must be added to the README and to these lists.
    assert_eq!(rejected(&server).len(), REASONS.len());
    assert_eq!(
        server.metric_family("heat_consumer_errors_total").len(),
        KINDS.len()
    );
    // Every exported family is described in the README's metrics section.
    let text = server.http_get("/metrics").unwrap();
    for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let name = family.split_whitespace().next().unwrap();
        assert!(
            readme.contains(&format!("`{name}")),
            "README documents {name}"
        );
    }
}

#[test]
fn every_request_refusal_counts_once_under_its_reason() {
    require_tracing();
    let config = format!(
        "[policy]\ncustom_scripts = true\n\
         [limits]\nstart_cooldown_ms = 60000\nmax_script_bytes = 100\nmax_message_bytes = 4096\n\
         [[auth.tokens]]\nname = \"vic\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [[auth.tokens]]\nname = \"ops\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
        support::hash_token("view-token"),
        support::hash_token("operator-token")
    );
    let server = Server::start_with(&config, &[], &[]);
    let mut op = server.connect_with("token=operator-token", &[]).unwrap();
    op.expect("hello", 5 * SECOND);
    let mut refused = |reason: &str, what: &str, message: &str| {
        raises_exactly_one(&server, reason, what, || {
            op.send_text(message);
            let error = op.expect("error", 5 * SECOND);
            assert_eq!(error["code"], reason, "{what}: {error}");
        });
    };
    let gone = i32::MAX; // above any pid_max
    for (reason, what, message) in [
        ("bad_request", "malformed JSON", "{nope".to_owned()),
        (
            "bad_request",
            "unknown type",
            json!({"type": "dance"}).to_string(),
        ),
        (
            "bad_request",
            "unknown field",
            json!({"type": "start", "preset": "syscall-latency", "colour": 1}).to_string(),
        ),
        (
            "bad_request",
            "tick_ms out of range",
            json!({"type": "start", "preset": "syscall-latency", "tick_ms": 5}).to_string(),
        ),
        (
            "bad_request",
            "a filter on a script",
            json!({"type": "start", "lang": "bpftrace", "script": "BEGIN {}", "pid": 1})
                .to_string(),
        ),
        (
            "bad_request",
            "a pid naming no process",
            json!({"type": "start", "preset": "syscall-latency", "pid": gone}).to_string(),
        ),
        (
            "unknown_preset",
            "unknown preset",
            json!({"type": "start", "preset": "nope"}).to_string(),
        ),
        (
            "unsupported",
            "ebpf for a script",
            json!({"type": "start", "lang": "bpftrace", "script": "BEGIN {}", "backend": "ebpf"})
                .to_string(),
        ),
        (
            "unsupported",
            "unknown backend",
            json!({"type": "start", "preset": "syscall-latency", "backend": "nope"}).to_string(),
        ),
        (
            "unsupported",
            "unknown lang",
            json!({"type": "start", "lang": "cobol", "script": "x"}).to_string(),
        ),
        (
            "too_large",
            "a script over max_script_bytes",
            json!({"type": "start", "lang": "bpftrace", "script": "x".repeat(101)}).to_string(),
        ),
    ] {
        refused(reason, what, &message);
    }
    op.send(json!({"type": "start", "preset": "syscall-latency", "pid": gone}));
    let error = op.expect("error", 5 * SECOND);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&format!("no process {gone}")),
        "{error}"
    );

    raises_exactly_one(&server, "bad_request", "binary frame", || {
        op.ws
            .send(tungstenite::Message::binary(vec![1u8, 2, 3]))
            .unwrap();
        assert_eq!(op.expect("error", 5 * SECOND)["code"], "bad_request");
    });
    raises_exactly_one(&server, "forbidden", "a viewer's script", || {
        let mut viewer = server.connect_with("token=view-token", &[]).unwrap();
        viewer.expect("hello", 5 * SECOND);
        viewer.send(json!({"type": "start", "lang": "bpftrace", "script": "BEGIN {}"}));
        assert_eq!(viewer.expect("error", 5 * SECOND)["code"], "forbidden");
    });
    raises_exactly_one(&server, "auth", "no token", || {
        let mut anonymous = server.connect_with("", &[]).unwrap();
        expect_close(&mut anonymous, 4401);
    });
    raises_exactly_one(&server, "origin", "another site's page", || {
        let evil = server.connect_with("token=view-token", &[("Origin", "http://evil.example")]);
        assert!(matches!(evil, Err(tungstenite::Error::Http(r)) if r.status() == 403));
    });
    raises_exactly_one(&server, "rate_limited", "a second start at once", || {
        let mut client = server.connect_with("token=operator-token", &[]).unwrap();
        client.expect("hello", 5 * SECOND);
        client.start_preset("syscall-latency", 200);
        client.send(json!({"type": "start", "preset": "syscall-latency"}));
        let error = client.expect("error", 5 * SECOND);
        assert_eq!(error["code"], "rate_limited");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("one per 60 s") && message.ends_with(" s"),
            "a wait people read: {message}"
        );
    });
    raises_exactly_one(
        &server,
        "too_large",
        "a message over max_message_bytes",
        || {
            op.send_text(&format!(
                "{{\"type\":\"start\",\"preset\":\"{}\"}}",
                "x".repeat(8192)
            ));
            assert_eq!(op.expect("error", 5 * SECOND)["code"], "too_large");
            expect_close(&mut op, 1009);
        },
    );
    let script = "syscall:::entry { @[probefunc] = count(); }";
    raises_exactly_one(&server, "auth", "/api/translate without a token", || {
        assert_eq!(
            server.http("POST", "/api/translate", &[], script).status,
            401
        );
    });
    raises_exactly_one(
        &server,
        "too_large",
        "/api/translate over the limit",
        || {
            let long = format!("{script}\n/* {} */", "x".repeat(200));
            let auth = [("Authorization", "Bearer view-token")];
            assert_eq!(
                server.http("POST", "/api/translate", &auth, &long).status,
                413
            );
        },
    );
}

#[test]
fn admission_refusals_count_once_under_their_reason() {
    let full = Server::start_with("max_sessions = 1\n", &[], &[]);
    let mut first = full.connect();
    first.expect("hello", 5 * SECOND);
    raises_exactly_one(&full, "capacity", "the server is full", || {
        let mut second = full.connect();
        expect_close(&mut second, 1013);
    });
    let crowded = Server::start_with("[limits]\nmax_sessions_per_client = 1\n", &[], &[]);
    let mut first = crowded.connect();
    first.expect("hello", 5 * SECOND);
    raises_exactly_one(&crowded, "per_client", "one address's share", || {
        let mut second = crowded.connect();
        expect_close(&mut second, 1013);
    });
}

#[test]
fn translate_takes_the_websocket_token_and_limit_and_answers_json() {
    let config = format!(
        "[limits]\nmax_script_bytes = 200\n\
         [[auth.tokens]]\nname = \"vic\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
        support::hash_token("view-token")
    );
    let server = Server::start_with(&config, &[], &[]);
    let script = "syscall:::entry { @[probefunc] = count(); }";

    let answer = server.http("POST", "/api/translate", &[], script);
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "unauthorized");
    assert!(answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    let wrong = [("Authorization", "Bearer guess")];
    assert_eq!(
        server.http("POST", "/api/translate", &wrong, script).status,
        401
    );

    // A viewer may translate (nothing runs); by header or query parameter.
    let bearer = [("Authorization", "Bearer view-token")];
    let answer = server.http("POST", "/api/translate", &bearer, script);
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["engine"], "d-to-bpftrace");
    let answer = server.http("POST", "/api/translate?token=view-token", &[], script);
    assert_eq!(answer.status, 200, "{answer:?}");

    // 323 bytes against a 200-byte limit.
    let long = format!("{script}\n/* {} */", "x".repeat(323 - script.len() - 7));
    assert_eq!(long.len(), 323);
    let answer = server.http("POST", "/api/translate", &bearer, &long);
    assert_eq!(answer.status, 413, "{answer:?}");
    assert_eq!(answer.json()["error"]["code"], "too_large");
    assert!(answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("limits.max_script_bytes"));

    let answer = server.http(
        "POST",
        "/api/translate",
        &bearer,
        "BEGIN {\n  @a = stddev(1);\n}",
    );
    assert_eq!(answer.status, 422, "{answer:?}");
    let error = &answer.json()["error"];
    assert_eq!(
        (error["code"].as_str(), error["line"].as_u64()),
        (Some("compile"), Some(2))
    );

    for method in ["GET", "PUT", "DELETE"] {
        let answer = server.http(method, "/api/translate", &bearer, "");
        assert_eq!(answer.status, 405, "{method}: {answer:?}");
        assert_eq!(answer.header("allow"), Some("POST"), "{answer:?}");
        assert_eq!(answer.json()["error"]["code"], "method_not_allowed");
    }
}

#[test]
fn a_missing_bpftrace_is_warned_at_start_up_and_refused_as_unsupported() {
    let config = "[policy]\ncustom_scripts = true\n[limits]\nstart_cooldown_ms = 0\n\
                  [bpftrace]\npath = \"/nonexistent/bpftrace\"\n";
    let server = Server::start_with(config, &[], &[]);
    let warnings = server
        .log()
        .lines()
        .filter(|l| l.contains("bpftrace not found") && l.contains("/nonexistent/bpftrace"))
        .count();
    assert_eq!(warnings, 1, "{}", server.log());
    let mut client = server.connect();
    let hello = client.expect("hello", 5 * SECOND);
    assert!(
        !hello["backends"]
            .as_array()
            .unwrap()
            .contains(&json!("bpftrace")),
        "{hello}"
    );
    for start in [
        json!({"type": "start", "preset": "syscall-latency", "backend": "bpftrace"}),
        json!({"type": "start", "lang": "bpftrace", "script": "BEGIN { @n = count(); }"}),
    ] {
        raises_exactly_one(&server, "unsupported", &start.to_string(), || {
            client.send(start.clone());
            let error = client.expect("error", 5 * SECOND);
            assert_eq!(error["code"], "unsupported", "{error}");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("/nonexistent/bpftrace"),
                "{error}"
            );
        });
    }
}

#[test]
fn a_client_that_answers_no_ping_is_closed_with_4408() {
    use std::io::Read;
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.expect("hello", 5 * SECOND);
    // Read the raw socket from here on: tungstenite would answer the pings it reads, and the
    // point is a client that never does. Nothing is written, so the server's close frame
    // is not lost to a reset.
    let stream = client.ws.get_mut();
    stream.set_read_timeout(Some(30 * SECOND)).unwrap();
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("the server closes the connection");
    // The server's last frame is a close (0x88, unmasked), its code 4408 and a reason.
    let close = bytes
        .windows(2)
        .rposition(|w| w[0] == 0x88 && usize::from(w[1]) < 126)
        .expect("a close frame before the connection ended");
    let len = usize::from(bytes[close + 1]);
    let payload = &bytes[close + 2..close + 2 + len];
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 4408);
    let reason = String::from_utf8_lossy(&payload[2..]);
    assert!(reason.contains("ping"), "{reason}");
}
