//! Shared helpers for integration tests: a real heat-actix server process on a free loopback
//! port, a websocket client, and process inspection (children, threads, fds).
#![allow(dead_code)]
// Tests match on the handshake error (e.g. a 403 response); boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

pub mod prometheus;

/// How long a websocket handshake may take (the server may be busy starting tracers).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one socket read blocks before a test's own deadline is checked again.
const READ_POLL: Duration = Duration::from_millis(100);
/// How long a test waits for a server to answer its health check.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(15);

/// Fails the test, with the reason, unless it can run real tracers.
pub fn require_tracing() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs real tracers and needs root (CI runs as root)"
    );
    let found = Command::new("bpftrace").arg("--version").output();
    assert!(
        found.map(|o| o.status.success()).unwrap_or(false),
        "this test runs bpftrace, which is not installed (apt-get install bpftrace)"
    );
}

/// A heat-actix server process, stopped (SIGTERM, then reaped) on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    log: PathBuf,
    /// The config file written for this server; removed with it.
    config: PathBuf,
    /// The store directory given to a config that names none (never the machine's own
    /// `/var/lib/heat-actix`); removed with the server.
    store: Option<PathBuf>,
    tls: bool,
}

/// The config tests run with unless they need another: custom scripts allowed (loopback, no
/// tokens), no cooldown between starts, and a CPU budget that a machine-wide syscall script
/// on a busy test machine cannot trip (the budget's own tests use `BUDGET_TEST_CONFIG`).
pub const TEST_CONFIG: &str = "[policy]\ncustom_scripts = true\n[limits]\nstart_cooldown_ms = 0\nmax_program_cpu_percent = 100\n";

/// `TEST_CONFIG` without its CPU budget, for tests that set `limits.max_program_cpu_percent`.
#[allow(dead_code)]
pub const BUDGET_TEST_CONFIG: &str =
    "[policy]\ncustom_scripts = true\n[limits]\nstart_cooldown_ms = 0\n";

impl Server {
    /// Starts the real binary on a free port with extra flags and the test config: custom
    /// scripts on and no start cooldown, so tests can drive it quickly. Waits until it serves.
    pub fn start(extra: &[&str]) -> Server {
        Server::start_with(TEST_CONFIG, extra, &[])
    }

    /// Starts the real binary with this config text, extra flags and environment.
    pub fn start_with(config: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_logged(config, extra, env, "debug")
    }

    /// As `start_with`, with the log filter `filter` (benches log less, so logging is not
    /// what they measure).
    pub fn start_logged(
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        filter: &str,
    ) -> Server {
        Server::start_wrapped(config, &[], extra, env, filter)
    }

    /// As `start_logged`, on this port (a restart of a server that served there).
    pub fn start_at(
        port: u16,
        config: &str,
        extra: &[&str],
        env: &[(&str, &str)],
        filter: &str,
    ) -> Server {
        Server::start_on(port, config, &[], extra, env, filter)
    }

    /// As `start_logged`, run through `wrapper` (a program and its arguments that exec what
    /// follows them, e.g. `setpriv …`), so the server's pid is the wrapper's.
    pub fn start_wrapped(
        config: &str,
        wrapper: &[String],
        extra: &[&str],
        env: &[(&str, &str)],
        filter: &str,
    ) -> Server {
        Server::start_on(free_port(), config, wrapper, extra, env, filter)
    }

    fn start_on(
        port: u16,
        config: &str,
        wrapper: &[String],
        extra: &[&str],
        env: &[(&str, &str)],
        filter: &str,
    ) -> Server {
        let log =
            std::env::temp_dir().join(format!("heat-actix-test-{}-{port}.log", std::process::id()));
        let config_path = std::env::temp_dir().join(format!(
            "heat-actix-test-{}-{port}.toml",
            std::process::id()
        ));
        // A config without `[store]` would record into the machine's default store, shared
        // with every other test and older builds: each server gets its own.
        let store = (!config.contains("[store]")).then(|| {
            std::env::temp_dir().join(format!(
                "heat-actix-test-{}-{port}-store",
                std::process::id()
            ))
        });
        let text = match &store {
            Some(dir) => format!(
                "{config}\n[store]\npath = {:?}\n",
                dir.display().to_string()
            ),
            None => config.to_owned(),
        };
        std::fs::write(&config_path, text).expect("write test config");
        let log_file = std::fs::File::create(&log).expect("create server log");
        let mut args = vec![
            "--config".to_owned(),
            config_path.display().to_string(),
            "--bind".to_owned(),
            format!("127.0.0.1:{port}"),
            "--log".to_owned(),
            filter.to_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let binary = env!("CARGO_BIN_EXE_heat-actix");
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let child = command
            .args(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn heat-actix");
        let tls = config.contains("[tls]");
        let mut server = Server {
            child,
            port,
            log,
            config: config_path,
            store,
            tls,
        };
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("server exited at start ({status}):\n{}", server.log());
            }
            if server.healthy() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not start:\n{}", server.log());
    }

    fn healthy(&self) -> bool {
        if self.tls {
            let url = format!("https://127.0.0.1:{}/healthz", self.port);
            return Command::new("curl")
                .args(["-sk", "--max-time", "2", &url])
                .output()
                .is_ok_and(|o| o.stdout == b"ok\n");
        }
        self.http_get("/healthz")
            .map(|b| b.contains("ok"))
            .unwrap_or(false)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a path; the body, when the status is 200.
    pub fn http_get(&self, path: &str) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
    }

    /// Any HTTP request; the answer whatever its status.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> HttpAnswer {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(body);
        stream
            .write_all(request.as_bytes())
            .expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("read the answer");
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP answer");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        HttpAnswer {
            status,
            head: head.to_owned(),
            body: body.to_owned(),
        }
    }

    /// GET a path with request headers: the head and the body as bytes (a binary answer).
    pub fn http_bytes(&self, path: &str, headers: &[(&str, &str)]) -> (String, Vec<u8>) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .expect("send the request");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).expect("read the answer");
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("an HTTP answer");
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        (head, response[split + 4..].to_vec())
    }

    /// Every series of one metric family in /metrics, as (labels, value).
    pub fn metric_family(&self, name: &str) -> Vec<(String, f64)> {
        let text = self.http_get("/metrics").expect("/metrics answers");
        text.lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?;
                if !rest.starts_with(['{', ' ']) {
                    return None; // another family that shares the prefix
                }
                let (labels, value) = rest.rsplit_once(' ')?;
                Some((labels.to_owned(), value.parse().ok()?))
            })
            .collect()
    }

    /// The value of one metric line (`name{labels}`) in /metrics.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let text = self.http_get("/metrics")?;
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    pub fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    /// Opens a websocket to `/ws?QUERY` with extra request headers.
    pub fn connect_with(
        &self,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        Client::connect_with(self.port, query, headers)
    }

    /// bpftrace processes this server started and that still exist.
    pub fn bpftrace_children(&self) -> Vec<u32> {
        children(self.pid())
            .into_iter()
            .filter(|&pid| comm(pid).as_deref() == Some("bpftrace"))
            .collect()
    }

    pub fn threads(&self) -> usize {
        count_dir(&format!("/proc/{}/task", self.pid()))
    }

    /// BPF objects (programs, maps, links) the server process holds open.
    pub fn bpf_fds(&self) -> usize {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) else {
            return 0;
        };
        dir.flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("anon_inode:bpf"))
            })
            .count()
    }

    pub fn fds(&self) -> usize {
        count_dir(&format!("/proc/{}/fd", self.pid()))
    }

    /// Polls `check` until it holds or `timeout` passes; returns whether it held.
    pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if check() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
        if let Some(store) = &self.store {
            let _ = std::fs::remove_dir_all(store);
        }
        // SAFETY: kill takes a pid and a signal; the child is ours and not yet reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What an HTTP request got back.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    /// The status line and headers.
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as JSON; panics (saying what came) when it is not.
    pub fn json(&self) -> Json {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // The comm field may hold spaces and parentheses: read after its closing paren.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid)
            && fields.first() != Some(&"Z")
        {
            found.push(child);
        }
    }
    found
}

pub fn comm(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn count_dir(path: &str) -> usize {
    std::fs::read_dir(path).map(|d| d.count()).unwrap_or(0)
}

/// A websocket client speaking the heat-actix protocol.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
}

/// What `recv` can find on the socket.
#[derive(Debug)]
pub enum Received {
    Json(Json),
    Closed(Option<(CloseCode, String)>),
    Timeout,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        Client::connect_with(port, "", &[]).expect("websocket handshake")
    }

    pub fn connect_with(
        port: u16,
        query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Client, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        // The handshake blocks (bounded); reads after it poll, so tests can time out.
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).unwrap();
        let url = if query.is_empty() {
            format!("ws://127.0.0.1:{port}/ws")
        } else {
            format!("ws://127.0.0.1:{port}/ws?{query}")
        };
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                tungstenite::http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let (ws, _) = tungstenite::client(request, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => {
                panic!("no handshake answer within {HANDSHAKE_TIMEOUT:?}")
            }
        })?;
        ws.get_ref().set_read_timeout(Some(READ_POLL)).unwrap();
        Ok(Client { ws })
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    pub fn send(&mut self, json: Json) {
        self.send_text(&json.to_string());
    }

    /// The next JSON message, a close, or a timeout.
    pub fn recv(&mut self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    return Received::Json(serde_json::from_str(&text).expect("server sent JSON"))
                }
                Ok(Message::Close(frame)) => {
                    return Received::Closed(frame.map(|f| (f.code, f.reason.to_string())));
                }
                Ok(_) => {}
                // EINTR too: a read with SO_RCVTIMEO fails so after the process is stopped and
                // continued, even without a signal handler (signal(7)).
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Received::Timeout;
                    }
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Received::Closed(None)
                }
                // The server went away while a pong was being flushed.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                    ) =>
                {
                    return Received::Closed(None)
                }
                Err(e) => panic!("websocket error: {e}"),
            }
        }
    }

    /// The next message of type `kind`, skipping frames; panics on anything else or timeout.
    pub fn expect(&mut self, kind: &str, timeout: Duration) -> Json {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Received::Json(m) if m["type"] == kind => return m,
                // Frames, the history before them and viewer counts come whenever they come.
                Received::Json(m)
                    if ["frame", "history", "viewers"]
                        .contains(&m["type"].as_str().unwrap_or("")) => {}
                other => panic!("expected {kind}, got {other:?}"),
            }
        }
    }

    /// Frames received during `duration`.
    pub fn frames_for(&mut self, duration: Duration) -> Vec<Json> {
        let deadline = Instant::now() + duration;
        let mut frames = Vec::new();
        while Instant::now() < deadline {
            if let Received::Json(m) = self.recv(deadline.saturating_duration_since(Instant::now()))
            {
                if m["type"] == "frame" {
                    frames.push(m);
                }
            }
        }
        frames
    }

    /// Starts a preset and returns the `started` message.
    pub fn start_preset(&mut self, preset: &str, tick_ms: u64) -> Json {
        self.send(serde_json::json!({"type": "start", "preset": preset, "tick_ms": tick_ms}));
        self.expect("started", Duration::from_secs(60))
    }

    /// Starts a preset on the given backend (`"bpftrace"`, `"ebpf"`) and returns `started`.
    pub fn start_preset_on(&mut self, preset: &str, tick_ms: u64, backend: &str) -> Json {
        self.send(serde_json::json!({"type": "start", "preset": preset, "tick_ms": tick_ms, "backend": backend}));
        self.expect("started", Duration::from_secs(60))
    }

    /// Starts a bpftrace script and returns the `started` message.
    pub fn start_script(&mut self, script: &str, tick_ms: u64) -> Json {
        self.send(serde_json::json!({"type": "start", "lang": "bpftrace", "script": script, "tick_ms": tick_ms}));
        self.expect("started", Duration::from_secs(60))
    }
}

/// Sum of one aggregation's counts for `key` across frames (bucket counts, or scalar values).
pub fn total_for_key(frames: &[Json], aggregation: &str, key: &Json) -> i64 {
    let mut total = 0;
    for frame in frames {
        for agg in frame["aggregations"].as_array().unwrap() {
            if agg["name"] != aggregation {
                continue;
            }
            for series in agg["series"].as_array().unwrap() {
                if &series["key"] != key {
                    continue;
                }
                if let Some(buckets) = series["buckets"].as_array() {
                    total += buckets.iter().map(|b| b[2].as_i64().unwrap()).sum::<i64>();
                } else {
                    total += series["value"].as_i64().unwrap();
                }
            }
        }
    }
    total
}

/// How many BPF programs the kernel has loaded, system-wide (BPF_PROG_GET_NEXT_ID walk).
pub fn bpf_programs() -> usize {
    const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
    #[repr(C)]
    struct NextId {
        start_id: u32,
        next_id: u32,
        open_flags: u32,
    }
    let mut count = 0;
    let mut attr = NextId {
        start_id: 0,
        next_id: 0,
        open_flags: 0,
    };
    loop {
        // SAFETY: the attr struct is the layout the kernel expects for this command, and lives
        // for the duration of the call; the size passed is its size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_GET_NEXT_ID,
                &mut attr as *mut NextId,
                std::mem::size_of::<NextId>(),
            )
        };
        if rc != 0 {
            return count;
        }
        count += 1;
        attr.start_id = attr.next_id;
    }
}

/// Calls getppid(2) `n` times from this thread.
pub fn getppid_n(n: usize) {
    for _ in 0..n {
        // SAFETY: getppid has no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
}

/// This thread's kernel thread id.
pub fn gettid() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

/// BPF object ids (`prog_id` or `map_id`) the process holds open, from /proc/PID/fdinfo.
pub fn bpf_ids(pid: u32, field: &str) -> std::collections::BTreeSet<u64> {
    let mut ids = std::collections::BTreeSet::new();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return ids;
    };
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        for line in info.lines() {
            if let Some(id) = line.strip_prefix(field).and_then(|r| r.trim().parse().ok()) {
                ids.insert(id);
            }
        }
    }
    ids
}

/// What bpftool says about one object (`prog` or `map`), or None when it does not exist.
pub fn bpftool_show(kind: &str, id: u64) -> Option<serde_json::Value> {
    // Debian puts bpftool in /usr/sbin, which a sudo PATH may lack.
    let bpftool = ["/usr/sbin/bpftool", "bpftool"]
        .into_iter()
        .find(|p| !p.starts_with('/') || std::path::Path::new(p).exists())
        .unwrap();
    let out = std::process::Command::new(bpftool)
        .args(["-j", kind, "show", "id", &id.to_string()])
        .output()
        .expect("bpftool is installed (apt-get install bpftool)");
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The names bpftool gives the objects `ids` of `kind` that exist.
pub fn bpftool_names(kind: &str, ids: &std::collections::BTreeSet<u64>) -> Vec<String> {
    ids.iter()
        .filter_map(|&id| bpftool_show(kind, id))
        .map(|o| o["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The `sha256` of a token as `heat-actix hash-token` computes it (the binary itself runs).
pub fn hash_token(token: &str) -> String {
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
