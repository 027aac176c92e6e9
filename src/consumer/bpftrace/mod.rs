//! The bpftrace backend: one bpftrace child process per running program, fed the script on
//! stdin (never on the command line, so `ps` does not show it), read as JSON.
//!
//! Two reader threads drain the child's stdout (decoded into [`output::Event`]s) and stderr
//! (kept as the error text); both end when the child's pipes close, and `stop` joins them.
//! Walks are driven from outside through the walk probe (see [`program`]).

pub mod output;
pub mod program;

/// Whether `path` names a bpftrace this server can run: the file itself when it has a
/// directory part, else the first match in `PATH`. DTrace hosts have none, and run the D
/// versions of presets instead.
pub fn installed(path: &std::path::Path) -> bool {
    if path.components().count() > 1 {
        return path.is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|dirs| std::env::split_paths(&dirs).any(|dir| dir.join(path).is_file()))
}

/// Why the configured bpftrace cannot run, naming the configured path (`bpftrace.path`); None
/// when it is installed.
pub fn missing(path: &std::path::Path) -> Option<String> {
    if installed(path) {
        return None;
    }
    let why = if path.components().count() > 1 {
        "names no file"
    } else {
        "is not in PATH"
    };
    Some(format!(
        "bpftrace is not installed: bpftrace.path = {:?} {why}; install bpftrace (apt-get install \
         bpftrace) or point bpftrace.path at it",
        path.display().to_string()
    ))
}

use std::io::{BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use self::output::{decode_map, Event};
use self::program::{heat_actix_walk_trigger, Program, SumCarry};
use super::{cost, process, Backend, Consumer, ConsumerError, KillSwitch, ProgramSpec};
use crate::aggregation::{AggregationInfo, Snapshot};
use crate::config::BpftraceConfig;
use crate::telemetry;

/// How long a walk waits for bpftrace to print the walk's end marker.
const WALK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a final walk waits for bpftrace to run `END`, print its maps and exit.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long each attach check waits for the walk probe to answer before firing it again.
const ATTACH_POLL: Duration = Duration::from_millis(20);
/// The longest wait between two attach checks: each unanswered check doubles the wait, so a
/// program whose prints are slow (stacks to symbolise) is not sent a print per poll.
const ATTACH_POLL_MAX: Duration = Duration::from_millis(640);
/// The window over which the output budget is counted.
const BUDGET_WINDOW: Duration = Duration::from_secs(1);
/// Most error text kept from bpftrace's stderr.
const STDERR_LIMIT: usize = 64 * 1024;
/// Most `printf` lines forwarded per frame; the rest are counted, not kept.
const OUTPUT_LINES_PER_WALK: usize = 256;

/// Lines bpftrace prints on stderr that are not errors on hosts like ours.
const HARMLESS_STDERR: &[&str] = &["couldn't set RLIMIT_MEMLOCK"];

/// Cookies distinguish the walk probes of every program of every heat-actix process: a uprobe
/// fires in every process that maps the binary, so the pid is part of it.
static NEXT_COOKIE: AtomicU64 = AtomicU64::new(1);

enum Message {
    Event(Event),
    /// stdout closed: bpftrace exited.
    Closed,
}

/// A running (or ready-to-run) bpftrace program.
pub struct BpftraceConsumer {
    config: BpftraceConfig,
    cookie: u64,
    program: Option<Program>,
    child: Option<Child>,
    kill_switch: Option<KillSwitch>,
    events: Option<Receiver<Message>>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    walks: u64,
    /// What bpftrace printed that no frame has carried yet: the attach walk's findings
    /// (`BEGIN` included) until the first frame, and a timed-out walk's late output until the
    /// next one. Each walk's print-and-clear is a delta, so adding them loses and doubles nothing.
    pending: Snapshot,
    /// Histogram sums read without their key's counts, for the next walk (see
    /// [`Program::attach_sums`]).
    sum_carry: SumCarry,
    /// Most bytes bpftrace may print per second.
    budget: u64,
    /// The output rate that tripped the budget (0 while within it), set by the stdout reader.
    over_budget: Arc<AtomicU64>,
    /// `BPFTRACE_MAP_KEYS_MAX` for the child; `None`: bpftrace's default.
    map_keys_max: Option<u32>,
}

impl BpftraceConsumer {
    pub fn new(config: BpftraceConfig, budget: u64) -> BpftraceConsumer {
        let cookie =
            (u64::from(std::process::id()) << 32) | NEXT_COOKIE.fetch_add(1, Ordering::Relaxed);
        BpftraceConsumer {
            config,
            cookie,
            program: None,
            child: None,
            kill_switch: None,
            events: None,
            readers: Vec::new(),
            stderr: Arc::default(),
            walks: 0,
            pending: Snapshot::default(),
            sum_carry: SumCarry::new(),
            budget,
            over_budget: Arc::default(),
            map_keys_max: None,
        }
    }

    /// Runs bpftrace with maps of `keys` keys each (`None`: bpftrace's default, 4096).
    pub fn with_map_keys_max(mut self, keys: Option<u32>) -> BpftraceConsumer {
        self.map_keys_max = keys;
        self
    }

    /// The tracer's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// bpftrace's error text, without the lines that are not errors.
    fn error_text(&self) -> String {
        let text = self.stderr.lock();
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| !HARMLESS_STDERR.iter().any(|h| l.contains(h)))
            .collect();
        kept.join("\n").trim().to_owned()
    }

    /// The error for a tracer whose output ended: over budget, or exited on its own.
    fn ended(&mut self) -> ConsumerError {
        let text = self.reap();
        match self.over_budget.load(Ordering::Relaxed) {
            0 => ConsumerError::Exited(text),
            rate => ConsumerError::OverBudget {
                rate,
                budget: self.budget,
            },
        }
    }

    /// Waits for the child to exit, joins the readers, and says how it ended.
    fn reap(&mut self) -> String {
        let status = self.child.take().and_then(|mut c| c.wait().ok());
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.events = None;
        let text = self.error_text();
        // Warnings alone do not explain an exit; the status (a signal, a crash) does.
        let explained = text.lines().any(|l| l.contains("ERROR"));
        match (text.is_empty(), status) {
            (false, Some(s)) if !explained => format!("{text}\nbpftrace ended ({s})"),
            (false, _) => text,
            (true, Some(s)) => format!("bpftrace ended ({s}) without a message"),
            (true, None) => "bpftrace ended without a message".to_owned(),
        }
    }

    /// Fires the walk probe and adds what it prints to `pending`, until its end marker. Output
    /// of an earlier walk that timed out arrives first and is kept: it belongs to no frame yet.
    fn walk_once(&mut self, timeout: Duration) -> Result<(), ConsumerError> {
        self.walk_until(timeout, false)
    }

    /// Fires a walk and waits for its end marker, or, with `any`, for the end marker of any
    /// walk fired so far (while attaching: an answer to an earlier poll proves the attach as
    /// well, and when each print takes longer than the poll, the latest would never answer).
    fn walk_until(&mut self, timeout: Duration, any: bool) -> Result<(), ConsumerError> {
        if self.program.is_none() || self.events.is_none() {
            return Err(ConsumerError::State("not running"));
        }
        self.walks += 1;
        let walk = self.walks;
        heat_actix_walk_trigger(self.cookie, walk);
        let deadline = Instant::now() + timeout;
        loop {
            match self.next_event(deadline)? {
                Some(Event::WalkDone(n)) if n == walk || (any && n < walk) => return Ok(()),
                Some(event) => self.absorb(event),
                None => return Err(ConsumerError::WalkTimeout(timeout)),
            }
        }
    }

    /// The next event from bpftrace's stdout, or `None` at `deadline`; its end is an error.
    fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>, ConsumerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(events) = self.events.as_ref() else {
            return Err(ConsumerError::State("not running"));
        };
        match events.recv_timeout(left) {
            Ok(Message::Event(event)) => Ok(Some(event)),
            Ok(Message::Closed) | Err(RecvTimeoutError::Disconnected) => Err(self.ended()),
            Err(RecvTimeoutError::Timeout) => Ok(None),
        }
    }

    /// Adds one printed map or line to `pending`. Maps that only hold state are not
    /// aggregations and are skipped; a map that cannot be decoded is counted and skipped.
    fn absorb(&mut self, event: Event) {
        match event {
            Event::Map { name, value } => {
                let Some(spec) = self.program.as_ref().and_then(|p| p.spec(&name)) else {
                    return;
                };
                match decode_map(spec, &value) {
                    Ok(aggregation) => {
                        // A cumulative map's latest print holds everything: it replaces the
                        // previous one rather than adding to it (a late print, then the next).
                        if name.starts_with(program::CUMULATIVE_PREFIX) {
                            self.pending.aggregations.retain(|a| a.name != name);
                        }
                        self.pending.absorb(Snapshot {
                            aggregations: vec![aggregation],
                            ..Default::default()
                        })
                    }
                    Err(e) => telemetry::Event::ConsumerFailed {
                        kind: telemetry::Failure::Decode,
                        message: &e.to_string(),
                    }
                    .emit(),
                }
            }
            Event::Text(text) if self.pending.output.len() < OUTPUT_LINES_PER_WALK => {
                self.pending.output.push(text)
            }
            _ => {}
        }
    }

    /// What `pending` holds, leaving it empty with every aggregation present.
    fn take_pending(&mut self) -> Snapshot {
        let empty = self
            .program
            .as_ref()
            .map_or_else(Snapshot::default, |p| Snapshot::empty(&p.infos()));
        let mut snapshot = std::mem::replace(&mut self.pending, empty);
        if let Some(program) = &self.program {
            program.attach_sums(&mut snapshot, &mut self.sum_carry);
        }
        snapshot
    }

    fn spawn(&mut self, program: &Program) -> Result<(), ConsumerError> {
        let mut command = Command::new(&self.config.path);
        command
            .args(["-f", "json", "-"])
            .env("BPFTRACE_MAX_PROBES", "1024")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(keys) = self.map_keys_max {
            command.env("BPFTRACE_MAP_KEYS_MAX", keys.to_string());
        }
        process::tie_to_owner(&mut command);
        let mut child = command.spawn().map_err(|source| ConsumerError::Spawn {
            program: self.config.path.display().to_string(),
            source,
        })?;
        self.kill_switch = KillSwitch::for_child(child.id()).ok();

        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let sink = self.stderr.clone();
        let stdout = Metered {
            inner: stdout,
            budget: self.budget,
            window: Instant::now(),
            bytes: 0,
            kill: self.kill_switch.clone(),
            tripped: self.over_budget.clone(),
        };
        self.readers
            .push(process::reader("bpftrace-stdout", move || {
                read_events(stdout, tx)
            }));
        self.readers
            .push(process::reader("bpftrace-stderr", move || {
                process::collect_lines(stderr, &sink, STDERR_LIMIT)
            }));
        self.child = Some(child);
        self.events = Some(rx);
        // The script goes in on stdin; closing it tells bpftrace the program is complete. A
        // write error means bpftrace already exited, which the attach wait reports.
        let _ = stdin.write_all(program.instrumented.as_bytes());
        drop(stdin);
        Ok(())
    }
}

/// bpftrace's stdout, counted: past the output budget the tracer is killed and the stream ends.
struct Metered<R> {
    inner: R,
    budget: u64,
    window: Instant,
    bytes: u64,
    kill: Option<KillSwitch>,
    tripped: Arc<AtomicU64>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.tripped.load(Ordering::Relaxed) != 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        let elapsed = self.window.elapsed();
        if elapsed >= BUDGET_WINDOW {
            self.window = Instant::now();
            self.bytes = 0;
        }
        self.bytes += n as u64;
        if self.bytes > self.budget {
            self.tripped.store(self.bytes, Ordering::Relaxed);
            if let Some(kill) = &self.kill {
                kill.kill();
            }
            return Ok(0);
        }
        Ok(n)
    }
}

fn read_events(stdout: impl Read, tx: mpsc::Sender<Message>) {
    for event in output::events(BufReader::new(stdout)) {
        if tx.send(Message::Event(event)).is_err() {
            return;
        }
    }
    let _ = tx.send(Message::Closed);
}

impl Consumer for BpftraceConsumer {
    fn backend(&self) -> Backend {
        Backend::Bpftrace
    }

    fn compile(&mut self, spec: &ProgramSpec) -> Result<Vec<AggregationInfo>, ConsumerError> {
        let exe = std::env::current_exe()
            .map_err(|e| ConsumerError::Compile(format!("cannot find own binary: {e}")))?;
        let program = Program::prepare(&spec.script, &exe, self.cookie);
        let infos = program.infos();
        self.pending = Snapshot::empty(&infos);
        self.sum_carry.clear();
        self.program = Some(program);
        Ok(infos)
    }

    fn go(&mut self) -> Result<(), ConsumerError> {
        let program = self
            .program
            .take()
            .ok_or(ConsumerError::State("not compiled"))?;
        self.spawn(&program)?;
        self.program = Some(program);
        let deadline = Instant::now() + self.config.start_timeout();
        loop {
            let events = self
                .events
                .as_ref()
                .ok_or(ConsumerError::State("not running"))?;
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(Message::Event(Event::Attached { .. })) => break,
                Ok(Message::Event(_)) => {}
                Ok(Message::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(match self.ended() {
                        ConsumerError::Exited(text) => ConsumerError::Compile(text),
                        other => other,
                    });
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.stop();
                    return Err(ConsumerError::StartTimeout(self.config.start_timeout()));
                }
            }
        }
        // bpftrace announces the probes before it attaches them. The walk probe comes last in
        // the program and is attached last, so the first walk that answers proves everything
        // is attached. What it found (`BEGIN`'s aggregations among it) stays in `pending` and
        // goes out in the first frame, as DTrace's first aggwalk returns it.
        let mut poll = ATTACH_POLL;
        while Instant::now() < deadline {
            match self.walk_until(poll, true) {
                Ok(_) => return Ok(()),
                Err(ConsumerError::WalkTimeout(_)) => poll = (poll * 2).min(ATTACH_POLL_MAX),
                Err(e) => return Err(e),
            }
        }
        self.stop();
        Err(ConsumerError::StartTimeout(self.config.start_timeout()))
    }

    fn walk(&mut self) -> Result<Snapshot, ConsumerError> {
        self.walk_once(WALK_TIMEOUT)?;
        Ok(self.take_pending())
    }

    /// SIGINT, as `dtrace`'s and bpftrace's own Ctrl-C: bpftrace runs `END`, prints every
    /// map (what was aggregated since the last walk, and what `END` aggregated) and exits.
    #[cfg(unix)]
    fn finish(&mut self) -> Result<Snapshot, ConsumerError> {
        let Some(child) = self.child.as_ref() else {
            return Err(ConsumerError::State("not running"));
        };
        // SAFETY: kill(2) takes only integers; the child has not been reaped (we own it and
        // wait for it only in `reap`), so its pid cannot name another process yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGINT);
        }
        let deadline = Instant::now() + FINISH_TIMEOUT;
        let result = loop {
            match self.next_event(deadline) {
                Ok(Some(event)) => self.absorb(event),
                Ok(None) => break Err(ConsumerError::WalkTimeout(FINISH_TIMEOUT)),
                // The output ended: bpftrace printed its maps and exited, as asked.
                Err(ConsumerError::Exited(_)) => break Ok(self.take_pending()),
                Err(e) => break Err(e),
            }
        };
        self.stop();
        result
    }

    fn stop(&mut self) {
        if let Some(kill) = &self.kill_switch {
            kill.kill();
        }
        if self.child.is_some() {
            self.reap();
        }
        self.kill_switch = None;
        self.program = None;
    }

    fn kill_switch(&self) -> Option<KillSwitch> {
        self.kill_switch.clone()
    }

    /// The child's programs' counts, from its fdinfo (it holds an fd to each program it loaded).
    fn run_stats(&mut self) -> Option<cost::RunStats> {
        cost::stats_of_process(self.pid()?)
    }
}

impl Drop for BpftraceConsumer {
    fn drop(&mut self) {
        self.stop();
    }
}
