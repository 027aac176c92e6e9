//! The DTrace backend: D scripts run by libdtrace itself, in a child process (`heat-actix
//! __dtrace-consumer`, see [`child`]) that this consumer spawns, drives over JSON lines
//! ([`wire`]), and kills when the session ends.
//!
//! Only the FFI ([`sys`], `ffi`) needs libdtrace and the `dtrace` feature; script checks
//! ([`script`]), the pipe protocol and the buffer decoders ([`layout`]) are plain Rust, built
//! and tested everywhere.

pub mod child;
pub mod layout;
pub mod script;
pub mod wire;

#[cfg(feature = "dtrace")]
mod ffi;
#[cfg(feature = "dtrace")]
pub mod sys;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use self::wire::{Reply, Request, Stage, CHILD_SUBCOMMAND};
use super::{process, Backend, Consumer, ConsumerError, KillSwitch, ProgramSpec};
use crate::aggregation::{Aggregation, AggregationInfo, Snapshot};
use crate::telemetry::Event;

/// The engine `started` names for D scripts this backend runs.
pub const ENGINE: &str = "libdtrace";
/// How long compiling, or enabling, a program may take (the D compiler reads every provider's
/// probes, which takes seconds on a large system).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a walk waits for the child's answer.
const WALK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `stop` lets the child disable its probes and exit before killing it.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// Most stderr text kept from the child.
const STDERR_LIMIT: usize = 64 * 1024;

/// True when this binary can run D scripts through libdtrace (built with the `dtrace` feature,
/// which links it). The session runs `lang: "d"` on this backend when true, and otherwise on
/// the D → bpftrace translator where there is one.
pub fn available() -> bool {
    cfg!(feature = "dtrace")
}

/// A line from the child's stdout.
enum Message {
    Reply(Reply),
    /// A line that is not a reply: the child is broken.
    Garbage(String),
    /// stdout closed: the child exited.
    Closed,
}

/// A D program in a libdtrace child process.
pub struct DtraceConsumer {
    /// The program to run as the child; heat-actix's own binary unless a test says otherwise.
    program: std::path::PathBuf,
    infos: Vec<AggregationInfo>,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    replies: Option<Receiver<Message>>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    kill_switch: Option<KillSwitch>,
    /// Replies still owed for requests whose wait timed out; they are skipped when they come,
    /// except a late walk's, whose data goes into `late`.
    owed: usize,
    /// What timed-out walks returned late: no frame has carried it yet, so the next walk does.
    late: Option<Snapshot>,
}

impl DtraceConsumer {
    /// A consumer whose child is this very binary.
    pub fn new() -> DtraceConsumer {
        let program = std::env::current_exe().unwrap_or_else(|_| "heat-actix".into());
        DtraceConsumer::with_program(program)
    }

    /// A consumer whose child is `program` (which must speak [`wire`] after the subcommand).
    pub fn with_program(program: impl Into<std::path::PathBuf>) -> DtraceConsumer {
        DtraceConsumer {
            program: program.into(),
            infos: Vec::new(),
            child: None,
            stdin: None,
            replies: None,
            readers: Vec::new(),
            stderr: Arc::default(),
            kill_switch: None,
            owed: 0,
            late: None,
        }
    }

    /// The child's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) -> Result<(), ConsumerError> {
        let mut command = Command::new(&self.program);
        command
            .arg(CHILD_SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        process::tie_to_owner(&mut command);
        let mut child = command.spawn().map_err(|source| ConsumerError::Spawn {
            program: self.program.display().to_string(),
            source,
        })?;
        self.kill_switch = KillSwitch::for_child(child.id()).ok();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = self.stderr.clone();
        self.readers.push(process::reader("dtrace-stdout", move || {
            read_replies(stdout, tx)
        }));
        self.readers.push(process::reader("dtrace-stderr", move || {
            process::collect_lines(stderr, &sink, STDERR_LIMIT)
        }));
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.replies = Some(rx);
        Ok(())
    }

    /// Sends `request` and waits for its reply.
    fn ask(&mut self, request: &Request, timeout: Duration) -> Result<Reply, ConsumerError> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or(ConsumerError::State("not running"))?;
        if stdin
            .write_all(wire::to_line(request).as_bytes())
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return Err(ConsumerError::Exited(self.reap()));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let replies = self
                .replies
                .as_ref()
                .ok_or(ConsumerError::State("not running"))?;
            match replies.recv_timeout(left) {
                Ok(Message::Reply(reply)) if self.owed > 0 => {
                    self.owed -= 1;
                    if matches!(reply, Reply::Walked { .. }) {
                        let walked = self.snapshot(reply)?;
                        match self.late.as_mut() {
                            None => self.late = Some(walked),
                            Some(earlier) => earlier.absorb(walked),
                        }
                    }
                }
                Ok(Message::Reply(reply)) => return Ok(reply),
                Ok(Message::Garbage(line)) => {
                    if let Some(kill) = &self.kill_switch {
                        kill.kill();
                    }
                    self.reap();
                    return Err(ConsumerError::Exited(format!(
                        "the DTrace consumer process wrote a line that is not a reply: {line:.200}"
                    )));
                }
                Ok(Message::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(ConsumerError::Exited(self.reap()));
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.owed += 1;
                    return Err(ConsumerError::WalkTimeout(timeout));
                }
            }
        }
    }

    /// Waits for the child to exit, joins the readers, and says how it ended.
    fn reap(&mut self) -> String {
        self.stdin = None;
        let status = self.child.take().and_then(|mut c| c.wait().ok());
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        self.replies = None;
        let text = self.stderr.lock().trim().to_owned();
        match (text.is_empty(), status) {
            (false, _) => text,
            (true, Some(s)) => format!("the DTrace consumer process ended ({s})"),
            (true, None) => "the DTrace consumer process ended".to_owned(),
        }
    }

    /// A walk's reply with whatever timed-out walks returned late added in front of it.
    fn with_late(&mut self, reply: Reply) -> Result<Snapshot, ConsumerError> {
        let walked = self.snapshot(reply)?;
        Ok(match self.late.take() {
            Some(mut late) => {
                late.absorb(walked);
                late
            }
            None => walked,
        })
    }

    /// The walk's aggregations in program order (announced ones first, then any the script
    /// reading missed), each present even when empty.
    fn snapshot(&mut self, reply: Reply) -> Result<Snapshot, ConsumerError> {
        let Reply::Walked {
            aggregations,
            output,
            drops,
            errors,
        } = reply
        else {
            return Err(unexpected(reply));
        };
        let mut found: Vec<Aggregation> = aggregations.into_iter().map(Aggregation::from).collect();
        for a in &found {
            if !self.infos.iter().any(|i| i.name == a.name) {
                self.infos.push(AggregationInfo {
                    name: a.name.clone(),
                    kind: a.kind,
                    layout: None,
                });
            }
        }
        let aggregations = self
            .infos
            .iter()
            .map(
                |info| match found.iter().position(|a| a.name == info.name) {
                    Some(i) => found.swap_remove(i),
                    None => Aggregation::empty(info),
                },
            )
            .collect();
        for message in &drops {
            Event::TracerReported {
                kind: "drop",
                message,
            }
            .emit();
        }
        for message in &errors {
            Event::TracerReported {
                kind: "error",
                message,
            }
            .emit();
        }
        Ok(Snapshot {
            aggregations,
            output,
            drops,
            errors,
        })
    }
}

impl Default for DtraceConsumer {
    fn default() -> DtraceConsumer {
        DtraceConsumer::new()
    }
}

/// A reply that does not answer the request: the child is broken.
fn unexpected(reply: Reply) -> ConsumerError {
    match reply {
        Reply::Failed {
            stage: Stage::Compile,
            message,
        } => ConsumerError::Compile(message),
        Reply::Failed { message, .. } => ConsumerError::Exited(message),
        other => ConsumerError::Exited(format!(
            "the DTrace consumer process answered out of turn: {other:?}"
        )),
    }
}

fn read_replies(stdout: impl Read, tx: mpsc::Sender<Message>) {
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let message = match serde_json::from_str::<Reply>(&line) {
            Ok(reply) => Message::Reply(reply),
            Err(_) => Message::Garbage(line),
        };
        if tx.send(message).is_err() {
            return;
        }
    }
    let _ = tx.send(Message::Closed);
}

impl Consumer for DtraceConsumer {
    fn backend(&self) -> Backend {
        Backend::Dtrace
    }

    fn compile(&mut self, spec: &ProgramSpec) -> Result<Vec<AggregationInfo>, ConsumerError> {
        // Refused here, before any process or libdtrace is involved.
        script::check_not_destructive(&spec.script)
            .map_err(|e| ConsumerError::Compile(e.to_string()))?;
        self.stop();
        self.spawn()?;
        let request = Request::Compile {
            script: spec.script.clone(),
        };
        match self.ask(&request, START_TIMEOUT) {
            Ok(Reply::Compiled) => {}
            Ok(other) => {
                self.stop();
                return Err(unexpected(other));
            }
            Err(ConsumerError::WalkTimeout(_)) => {
                self.stop();
                return Err(ConsumerError::StartTimeout(START_TIMEOUT));
            }
            Err(e) => return Err(e),
        }
        self.infos = script::aggregations(&spec.script);
        Ok(self.infos.clone())
    }

    fn go(&mut self) -> Result<(), ConsumerError> {
        match self.ask(&Request::Go, START_TIMEOUT) {
            Ok(Reply::Running) => Ok(()),
            Ok(other) => {
                self.stop();
                Err(unexpected(other))
            }
            Err(ConsumerError::WalkTimeout(_)) => {
                self.stop();
                Err(ConsumerError::StartTimeout(START_TIMEOUT))
            }
            Err(e) => Err(e),
        }
    }

    fn walk(&mut self) -> Result<Snapshot, ConsumerError> {
        let reply = self.ask(&Request::Walk, WALK_TIMEOUT)?;
        self.with_late(reply)
    }

    /// `dtrace_stop` (which fires `END`), then a last walk, then the child exits.
    fn finish(&mut self) -> Result<Snapshot, ConsumerError> {
        let result = self
            .ask(&Request::Finish, WALK_TIMEOUT)
            .and_then(|reply| self.with_late(reply));
        self.stop();
        result
    }

    fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // A polite stop lets libdtrace disable its probes; a child that does not answer in
        // time is killed (its probes go with its handle).
        if self.owed == 0 && self.ask(&Request::Stop, STOP_GRACE).is_err() {
            tracing::debug!(pid = ?self.pid(), "DTrace consumer did not stop in time; killing it.");
        }
        if let Some(kill) = &self.kill_switch {
            kill.kill();
        }
        if self.child.is_some() {
            self.reap();
        }
        self.kill_switch = None;
        self.owed = 0;
    }

    fn kill_switch(&self) -> Option<KillSwitch> {
        self.kill_switch.clone()
    }
}

impl Drop for DtraceConsumer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::KeyNames;

    fn spec(script: &str) -> ProgramSpec {
        ProgramSpec {
            script: script.into(),
            key_names: KeyNames::AsIs,
            rewrite: None,
            preset: None,
            filter: crate::presets::ProcessFilter::default(),
            capture: None,
        }
    }

    #[test]
    fn destructive_scripts_are_refused_before_any_process_starts() {
        // A program that does not exist: reaching the spawn would fail differently.
        let mut consumer = DtraceConsumer::with_program("/nonexistent/heat-actix");
        let err = consumer
            .compile(&spec("#pragma D option destructive\nBEGIN { x = 1; }"))
            .unwrap_err();
        assert!(
            matches!(&err, ConsumerError::Compile(m) if m.contains("destructive")),
            "{err}"
        );
        assert_eq!(consumer.pid(), None);
        let err = consumer
            .compile(&spec("syscall::read:entry { panic(); }"))
            .unwrap_err();
        assert!(
            matches!(&err, ConsumerError::Compile(m) if m.contains("panic()")),
            "{err}"
        );
        // A harmless script does get as far as the spawn.
        let err = consumer.compile(&spec("BEGIN { trace(1); }")).unwrap_err();
        assert!(matches!(err, ConsumerError::Spawn { .. }), "{err}");
    }

    /// A stand-in consumer process: a shell script answering with canned lines.
    fn fake_child(name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!(
            "heat-actix-fake-dtrace-{}-{name}.sh",
            std::process::id()
        ));
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn walks_come_back_in_program_order_with_drops_and_errors() {
        let child = fake_child(
            "walk",
            concat!(
                "read l; echo '{\"reply\":\"compiled\"}'\n",
                "read l; echo '{\"reply\":\"running\"}'\n",
                "read l; echo '{\"reply\":\"walked\",\"aggregations\":[",
                "{\"name\":\"@extra\",\"kind\":\"count\",\"series\":[{\"key\":[\"x\"],\"value\":{\"scalar\":3}}]}],",
                "\"drops\":[\"5 dynamic variable drops\"],\"errors\":[\"invalid address (0x0)\"]}'\n",
                "read l; echo '{\"reply\":\"stopped\"}'\n",
            ),
        );
        let mut consumer = DtraceConsumer::with_program(&child);
        let infos = consumer
            .compile(&spec(
                "syscall:::return { @time[probefunc] = lquantize(arg0, 0, 63, 2); }",
            ))
            .unwrap();
        assert_eq!(infos.len(), 1);
        consumer.go().unwrap();
        let drops_before = crate::telemetry::metrics()
            .tracer_reports
            .with_label_values(&["drop"])
            .get();
        let snapshot = consumer.walk().unwrap();
        let names: Vec<&str> = snapshot
            .aggregations
            .iter()
            .map(|a| a.name.as_str())
            .collect();
        // The announced aggregation first (empty this interval), then the one found.
        assert_eq!(names, ["@time", "@extra"]);
        assert!(snapshot.aggregations[0].series.is_empty());
        assert_eq!(
            snapshot.aggregations[1].series[0].value,
            crate::aggregation::Value::Scalar(3)
        );
        assert_eq!(snapshot.drops, ["5 dynamic variable drops"]);
        assert_eq!(snapshot.errors, ["invalid address (0x0)"]);
        assert!(
            crate::telemetry::metrics()
                .tracer_reports
                .with_label_values(&["drop"])
                .get()
                > drops_before
        );
        consumer.stop();
        assert_eq!(consumer.pid(), None);
        let _ = std::fs::remove_file(child);
    }

    #[test]
    fn compile_errors_and_dead_children_are_reported_in_their_words() {
        let child = fake_child(
            "compile",
            "read l; echo '{\"reply\":\"failed\",\"stage\":\"compile\",\"message\":\"probe description syscall::nope:entry does not match any probes\"}'\nread l\n",
        );
        let mut consumer = DtraceConsumer::with_program(&child);
        let err = consumer
            .compile(&spec("syscall::nope:entry {}"))
            .unwrap_err();
        assert!(
            matches!(&err, ConsumerError::Compile(m) if m.contains("does not match any probes")),
            "{err}"
        );
        assert_eq!(consumer.pid(), None);
        let _ = std::fs::remove_file(child);

        let child = fake_child(
            "dies",
            "echo 'libdtrace: cannot open /dev/dtrace' >&2\nexit 3\n",
        );
        let mut consumer = DtraceConsumer::with_program(&child);
        let err = consumer.compile(&spec("BEGIN {}")).unwrap_err();
        assert!(
            matches!(&err, ConsumerError::Exited(m) if m.contains("cannot open /dev/dtrace")),
            "{err}"
        );
        assert_eq!(consumer.pid(), None);
        let _ = std::fs::remove_file(child);
    }

    #[test]
    fn availability_follows_the_feature() {
        assert_eq!(available(), cfg!(feature = "dtrace"));
    }
}
