//! Standing watches: programs from `[[watch]]` that run with no viewer, are shared with anyone
//! who asks for the same program, survive their viewers leaving, and come back when they fail.

mod support;

use std::time::Duration;

use serde_json::json;
use support::{bpf_ids, require_tracing, Server};

const SECOND: Duration = Duration::from_secs(1);

fn config(watches: &str) -> String {
    format!("{}\n{watches}", support::TEST_CONFIG)
}

#[test]
fn a_watch_runs_without_viewers_and_outlives_the_ones_it_gets() {
    require_tracing();
    let server = Server::start_with(
        &config("[[watch]]\nname = \"syscalls\"\npreset = \"syscall-latency\"\ntick_ms = 200\n"),
        &[],
        &[],
    );
    assert!(
        Server::eventually(10 * SECOND, || !bpf_ids(server.pid(), "prog_id:")
            .is_empty()),
        "the watch runs from start-up, with nobody watching"
    );
    let programs = bpf_ids(server.pid(), "prog_id:").len();
    let mut viewer = server.connect();
    let hello = viewer.expect("hello", 5 * SECOND);
    assert_eq!(hello["running"][0]["watch"], "syscalls", "{hello}");
    assert_eq!(hello["running"][0]["viewers"], 0, "{hello}");
    viewer.send(json!({"type": "start", "preset": "syscall-latency", "tick_ms": 200}));
    let started = viewer.expect("started", 10 * SECOND);
    assert_eq!(
        started["program"], hello["running"][0]["program"],
        "joined the watch"
    );
    assert!(
        started["first_seq"].as_u64().unwrap() == 1,
        "the watch's past comes as history: {started}"
    );
    assert_eq!(
        bpf_ids(server.pid(), "prog_id:").len(),
        programs,
        "no second program"
    );
    viewer.send(json!({"type": "stop"}));
    assert_eq!(viewer.expect("stopped", 5 * SECOND)["reason"], "client");
    std::thread::sleep(SECOND);
    assert_eq!(
        bpf_ids(server.pid(), "prog_id:").len(),
        programs,
        "leaving never stops a watch"
    );
    assert_eq!(
        server.metric("heat_programs_active{backend=\"ebpf\"}"),
        Some(1.0)
    );
}

#[test]
fn a_filtered_watch_is_joined_by_name_with_its_own_filter() {
    require_tracing();
    let server = Server::start_with(
        &config(
            "[[watch]]\nname = \"perl-only\"\npreset = \"syscall-latency\"\ncomm = \"perl\"\ntick_ms = 200\n",
        ),
        &[],
        &[],
    );
    assert!(
        Server::eventually(10 * SECOND, || !bpf_ids(server.pid(), "prog_id:")
            .is_empty()),
        "the watch runs from start-up"
    );
    let programs = bpf_ids(server.pid(), "prog_id:").len();
    let mut viewer = server.connect();
    let hello = viewer.expect("hello", 5 * SECOND);
    assert_eq!(hello["running"][0]["comm"], "perl", "{hello}");
    // The same preset without the watch's filter is another program; the name is the watch.
    viewer.send(json!({"type": "start", "watch": "perl-only"}));
    let started = viewer.expect("started", 10 * SECOND);
    assert_eq!(
        started["program"], hello["running"][0]["program"],
        "joined the watch, filter and all: {started}"
    );
    assert_eq!(
        bpf_ids(server.pid(), "prog_id:").len(),
        programs,
        "no second program"
    );
    viewer.send(json!({"type": "stop"}));
    assert_eq!(viewer.expect("stopped", 5 * SECOND)["reason"], "client");
    viewer.send(json!({"type": "start", "watch": "nope"}));
    let error = viewer.expect("error", 5 * SECOND);
    assert_eq!(error["code"], "bad_request", "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("perl-only"),
        "names the watches there are: {error}"
    );
    viewer.send(json!({"type": "start", "watch": "perl-only", "preset": "syscall-latency"}));
    let error = viewer.expect("error", 5 * SECOND);
    assert_eq!(error["code"], "bad_request", "{error}");
}

#[test]
fn a_watch_whose_tracer_dies_is_started_again_and_counted() {
    require_tracing();
    let server = Server::start_with(
        &config(
            "[[watch]]\nname = \"getppid\"\nlang = \"bpftrace\"\ntick_ms = 200\n\
             script = \"tracepoint:syscalls:sys_enter_getppid { @n = count(); }\"\n",
        ),
        &[],
        &[],
    );
    assert!(Server::eventually(30 * SECOND, || server
        .bpftrace_children()
        .len()
        == 1));
    assert_eq!(
        server.metric("heat_watch_restarts_total{watch=\"getppid\"}"),
        Some(0.0)
    );
    let first = server.bpftrace_children()[0];
    // SAFETY: kill takes integers only; the pid is the server's live bpftrace child.
    unsafe { libc::kill(first as libc::pid_t, libc::SIGKILL) };
    assert!(
        Server::eventually(30 * SECOND, || server
            .bpftrace_children()
            .iter()
            .any(|&p| p != first)),
        "a new tracer runs the watch: {}",
        server.log()
    );
    assert_eq!(
        server.metric("heat_watch_restarts_total{watch=\"getppid\"}"),
        Some(1.0)
    );
    assert!(server.log().contains("Watch failed; starting it again."));
}

#[test]
fn watches_are_checked_when_the_config_is_read() {
    for (watch, why) in [
        (
            "name = \"Bad Name\"\npreset = \"syscall-latency\"",
            "a name is",
        ),
        ("name = \"x\"", "give `preset`, or `script` with `lang`"),
        (
            "name = \"x\"\npreset = \"syscall-latency\"\ntick_ms = 5",
            "tick_ms 5",
        ),
        (
            "name = \"x\"\npreset = \"syscall-latency\"\nmax_bytes = 10",
            "max_bytes 10",
        ),
    ] {
        let text = config(&format!("[[watch]]\n{watch}\n"));
        let e = heat_actix::config::Config::parse(&text, std::path::Path::new("t.toml"))
            .expect_err(watch);
        assert!(e.to_string().contains(why), "{e}");
    }
    let twice = config(
        "[[watch]]\nname = \"a\"\npreset = \"syscall-latency\"\n\
         [[watch]]\nname = \"a\"\npreset = \"softirq-latency\"\n",
    );
    let e = heat_actix::config::Config::parse(&twice, std::path::Path::new("t.toml")).unwrap_err();
    assert!(e.to_string().contains("two watches are named"), "{e}");
}
