//! Safe to expose: tokens and roles, the origin check, the script policy, every limit, bad
//! input, slow clients, faults, shutdown and TLS, each against the real server and tracer.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{require_tracing, Client, Received, Server};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

const SECOND: Duration = Duration::from_secs(1);

fn hash(token: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_heat-actix"))
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(token.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    line.trim()
        .strip_prefix("sha256 = \"")
        .and_then(|l| l.strip_suffix('"'))
        .expect("hash-token prints a config line")
        .to_owned()
}

fn auth_config() -> String {
    format!(
        "[policy]\ncustom_scripts = true\n[limits]\nstart_cooldown_ms = 0\n\
         [[auth.tokens]]\nname = \"vic\"\nrole = \"viewer\"\nsha256 = \"{}\"\n\
         [[auth.tokens]]\nname = \"ops\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
        hash("view-token"),
        hash("operator-token")
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
    let dropped: u64 = frames.iter().filter_map(|f| f["dropped"].as_u64()).sum();
    assert!(
        dropped >= 10,
        "frames beyond the in-flight window were dropped and reported: {dropped}"
    );
    assert!(server.metric("heat_frames_dropped_total").unwrap() >= dropped as f64);
    let seqs: Vec<u64> = frames.iter().map(|f| f["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).any(|w| w[1] > w[0] + 1),
        "the gap shows in seq too: {seqs:?}"
    );
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
