//! Tracing consumers: the [`Consumer`] abstraction every backend implements (compile → go →
//! walk → stop, as libdtrace's consumer API has it), and the actor that owns one consumer on
//! its own thread so that no tracer call ever runs on an HTTP worker.

pub mod bpftrace;
pub mod cost;
pub mod dtrace;
#[cfg(target_os = "linux")]
pub mod ebpf;
#[cfg(not(target_os = "linux"))]
#[path = "ebpf_elsewhere.rs"]
pub mod ebpf;
pub mod process;

#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;
use bytestring::ByteString;

use crate::aggregation::{AggregationInfo, Snapshot};
use crate::presets::{KeyNames, Preset, ProcessFilter};
use crate::session::compact::{self, CompactEncoder};
use crate::session::protocol;
use crate::telemetry::{Event, Failure};

/// The tracing backends heat-actix knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// bpftrace in a child process, JSON output.
    Bpftrace,
    /// libdtrace in a child process (`heat-actix __dtrace-consumer`); D scripts.
    Dtrace,
    /// Native BPF programs for presets, loaded in-process with libbpf.
    Ebpf,
}

impl Backend {
    /// Every backend, so each `heat_programs_started_total` series is exported from start-up.
    pub const ALL: [Backend; 3] = [Backend::Bpftrace, Backend::Dtrace, Backend::Ebpf];

    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Bpftrace => "bpftrace",
            Backend::Dtrace => "dtrace",
            Backend::Ebpf => "ebpf",
        }
    }
}

/// What a consumer is asked to run.
#[derive(Debug, Clone)]
pub struct ProgramSpec {
    /// Program text in the backend's language.
    pub script: String,
    /// How keys are named for people (syscall numbers → names, …).
    pub key_names: KeyNames,
    /// What a program written in another language (D) needs done to the backend's output so
    /// that frames say what that language means (kinds, bucket edges, key names).
    pub rewrite: Option<Arc<dyn SnapshotRewrite>>,
    /// The preset this program is, if any (native backends run presets by name).
    pub preset: Option<&'static Preset>,
    /// The process filter of a preset (already part of `script` for bpftrace).
    pub filter: ProcessFilter,
    /// A native explain companion's capture (then `script` is only its description).
    pub capture: Option<Capture>,
}

/// What a native explain companion (`ebpf::StackConsumer`) times, and which of those intervals
/// it captures stacks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub kind: CaptureKind,
    /// The band in nanoseconds: `lo_ns` inclusive, `hi_ns` exclusive (`None`: no bound).
    pub lo_ns: u64,
    pub hi_ns: Option<u64>,
    /// Only intervals of these keys (commands, rwbs strings, or for [`CaptureKind::Syscall`]
    /// syscall numbers in decimal); all when empty.
    pub keys: Vec<String>,
}

/// The interval a native explain companion times: the same as its preset's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureKind {
    /// `syscall-latency`, `syscall-latency-log2`: entry to return, keyed by the syscall.
    Syscall,
    /// `offcpu-time`: switch-out to switch-in, keyed by the command.
    OffCpu,
    /// `runqueue-latency`: wakeup or preemption to switch-in, keyed by the command.
    RunQueue,
    /// `block-io-latency`: issue to completion, keyed by the rwbs string.
    BlockIo,
}

/// Captures a native companion's map holds (`HEAT_X_CAPTURES` in `ebpf/bpf/explain.h`).
pub const NATIVE_CAPTURES: u32 = 32768;
/// A companion's capture map under `HEAT_ACTIX_FAULT=explain_small_map`, bpftrace's or native,
/// small enough for a test to fill.
pub const FAULT_CAPTURES: u32 = 1024;

/// The captures a native companion's map holds here: [`NATIVE_CAPTURES`], or the fault's.
pub fn native_captures() -> u32 {
    if fault_injected("explain_small_map") {
        FAULT_CAPTURES
    } else {
        NATIVE_CAPTURES
    }
}

/// The aggregation a companion reports its captures in: one scalar count per (pid, cgroup,
/// comm, kernel stack, user stack[, waker comm, waker kernel stack]), cumulative.
pub const CAPTURE_AGGREGATION: &str = "cumulative_explain";
/// The aggregation a native companion reports, as one key-less cumulative scalar, the captures
/// it lost to a full capture map.
pub const MISSED_AGGREGATION: &str = "cumulative_explain_missed";

/// Reshapes what a backend reports, on the consumer thread, before anything is sent.
pub trait SnapshotRewrite: std::fmt::Debug + Send + Sync {
    /// Relabels the aggregations announced in `started`.
    fn infos(&self, infos: &mut [AggregationInfo]);
    /// Relabels one walk's data.
    fn snapshot(&self, snapshot: &mut Snapshot);
}

/// Why a consumer could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// The tracer refused the program; the text is the tracer's own message.
    #[error("{0}")]
    Compile(String),
    /// The tracer could not be started at all (not installed, not executable, …).
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    /// The tracer neither attached nor failed within the start timeout.
    #[error("the tracer did not attach within {0:?}")]
    StartTimeout(Duration),
    /// The tracer ended while the program was running.
    #[error("the tracer exited: {0}")]
    Exited(String),
    /// A walk found no end marker in time.
    #[error("the tracer did not answer a walk within {0:?}")]
    WalkTimeout(Duration),
    /// The tracer printed more than its output budget and was killed.
    #[error("the program printed {rate} bytes within one second, over the budget of {budget} bytes/s (limits.output_budget_bytes_per_s); it was stopped")]
    OverBudget { rate: u64, budget: u64 },
    /// The consumer was asked for something in the wrong state (walk before go, …).
    #[error("consumer is {0}")]
    State(&'static str),
}

impl ConsumerError {
    /// The `kind` label of `heat_consumer_errors_total`.
    pub fn kind(&self) -> Failure {
        match self {
            ConsumerError::Compile(_) => Failure::Compile,
            ConsumerError::Spawn { .. } => Failure::Spawn,
            ConsumerError::StartTimeout(_) => Failure::StartTimeout,
            ConsumerError::Exited(_) => Failure::Exited,
            ConsumerError::WalkTimeout(_) => Failure::WalkTimeout,
            ConsumerError::OverBudget { .. } => Failure::Budget,
            ConsumerError::State(_) => Failure::State,
        }
    }
}

/// A tracing consumer, in libdtrace's shape. Implementations are not `Send`: each is built on,
/// and only touched from, its session's consumer thread.
pub trait Consumer {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Prepares the program and reports the aggregations it will produce.
    fn compile(&mut self, program: &ProgramSpec) -> Result<Vec<AggregationInfo>, ConsumerError>;
    /// Enables the instrumentation; returns once the program is attached.
    fn go(&mut self) -> Result<(), ConsumerError>;
    /// Everything aggregated since the previous walk (or since `go`), removed as it is read.
    /// What a walk that failed with [`ConsumerError::WalkTimeout`] finds later is in the next.
    fn walk(&mut self) -> Result<Snapshot, ConsumerError>;
    /// Ends the program and returns what no walk has returned yet: the last partial interval
    /// and whatever `END` clauses aggregate. The consumer is stopped afterwards, whatever the
    /// result.
    fn finish(&mut self) -> Result<Snapshot, ConsumerError> {
        let last = self.walk();
        self.stop();
        last
    }
    /// Disables the instrumentation and frees everything it holds. Idempotent.
    fn stop(&mut self);
    /// A handle that can end the tracer from another thread, if the tracer is a process.
    fn kill_switch(&self) -> Option<KillSwitch> {
        None
    }
    /// What the kernel counted for the program's BPF programs so far (runs and run time),
    /// while it runs; `None` where that cannot be measured (DTrace).
    fn run_stats(&mut self) -> Option<cost::RunStats> {
        None
    }
}

/// Ends a tracer process from any thread, without racing pid reuse: it holds a pidfd, which
/// names that one process even after it is reaped.
#[derive(Debug, Clone)]
pub struct KillSwitch(
    #[cfg(target_os = "linux")] Arc<OwnedFd>,
    /// Without pidfds there is no kill switch: this cannot be built.
    #[cfg(not(target_os = "linux"))]
    std::convert::Infallible,
);

impl KillSwitch {
    /// A kill switch for the child `pid`, which must not have been reaped yet.
    #[cfg(target_os = "linux")]
    pub fn for_child(pid: u32) -> std::io::Result<KillSwitch> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no memory is shared.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the syscall returned a fresh fd that nothing else owns.
        Ok(KillSwitch(Arc::new(unsafe {
            OwnedFd::from_raw_fd(fd as i32)
        })))
    }

    /// Without pidfds (illumos, FreeBSD, macOS) a signal by pid could reach a process that
    /// reused the pid after the owner thread reaped the tracer; there is no kill switch there,
    /// and the owner thread stops its tracer (which also dies when its stdin closes).
    #[cfg(not(target_os = "linux"))]
    pub fn for_child(_pid: u32) -> std::io::Result<KillSwitch> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    /// Sends SIGKILL; harmless when the process is already gone.
    #[cfg(target_os = "linux")]
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal reads only its integer arguments; a null siginfo is allowed.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.0.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }

    /// No kill switch exists without pidfds (see `for_child`).
    #[cfg(not(target_os = "linux"))]
    pub fn kill(&self) {
        match self.0 {}
    }
}

/// What a successful start reports back to the session.
#[derive(Debug, Clone)]
pub struct Started {
    pub backend: Backend,
    /// Why the program runs on `backend` and not the backend first chosen, when it fell back.
    pub fallback: Option<String>,
    pub aggregations: Vec<AggregationInfo>,
    pub kill_switch: Option<KillSwitch>,
    pub startup: Duration,
}

/// One frame, encoded on the consumer thread once per encoding its viewers asked for, so that
/// every viewer is sent the same bytes (cloning them only counts a reference).
#[derive(Debug, Default)]
pub struct EncodedFrame {
    pub seq: u64,
    /// The program's last frame.
    pub last: bool,
    pub json: Option<ByteString>,
    pub compact: Option<Bytes>,
    pub legacy: Option<ByteString>,
    /// The compact key dictionary after this frame, when this frame changed it.
    pub dictionary: Option<Bytes>,
    /// This frame reset the compact key dictionary: older compact frames use other ids.
    pub resets_dictionary: bool,
    /// The frame as data, when asked for (recording, triggers): never wire text.
    pub snapshot: Option<Arc<Snapshot>>,
    pub ts_ms: u64,
    pub interval_ms: u64,
    /// Series in the frame, after key folding.
    pub series: usize,
    /// What the program cost over the frame's interval, where it was measured.
    pub cost: Option<cost::Sample>,
}

/// How a viewer wants its frames written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Protocol v1 `frame` messages (JSON text).
    V1,
    /// Protocol v1.1 compact frames (binary, a per-program key dictionary).
    Compact,
    /// The 2011 Heat Tracer / dowboy object: `{key: [[[lo, hi], count], …]}`.
    Legacy2011,
}

/// The encodings a walk must produce: those of the program's viewers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encodings {
    pub json: bool,
    pub compact: bool,
    pub legacy: bool,
    /// The typed snapshot too (for the recorder and triggers).
    pub typed: bool,
}

impl Encodings {
    pub fn with(mut self, encoding: Encoding) -> Encodings {
        match encoding {
            Encoding::V1 => self.json = true,
            Encoding::Compact => self.compact = true,
            Encoding::Legacy2011 => self.legacy = true,
        }
        self
    }
}

/// Owns one [`Consumer`] on a dedicated thread (`SyncArbiter::start(1, …)`).
///
/// It never stops itself: a `SyncArbiter` would build a fresh actor from the factory. It ends
/// when the session drops its address; `stopped` then stops the consumer.
pub struct ConsumerActor {
    session: String,
    consumer: Box<dyn Consumer>,
    /// Runs the program instead when `consumer` cannot start it (native → bpftrace).
    fallback: Option<Box<dyn Consumer>>,
    program: ProgramSpec,
    max_keys: usize,
    last_walk: Option<Instant>,
    /// The program's compact encoder (its key dictionary), made once the aggregations are known.
    compact: Option<CompactEncoder>,
    /// Keeps the kernel's BPF run-time statistics on while the program runs.
    stats: Option<cost::StatsEnabled>,
    /// Whether this program runs with the statistics on (`limits.measure_cost`).
    measure: bool,
    /// The program's run statistics at the previous walk (or at its start).
    last_stats: Option<cost::Reading>,
}

impl ConsumerActor {
    pub fn new(
        session: String,
        consumer: Box<dyn Consumer>,
        program: ProgramSpec,
        max_keys: usize,
    ) -> ConsumerActor {
        ConsumerActor {
            session,
            consumer,
            fallback: None,
            program,
            max_keys,
            last_walk: None,
            compact: None,
            stats: None,
            measure: false,
            last_stats: None,
        }
    }

    /// Runs the program with `fallback` when the first consumer cannot start it.
    pub fn with_fallback(mut self, fallback: Box<dyn Consumer>) -> ConsumerActor {
        self.fallback = Some(fallback);
        self
    }

    fn begin(&mut self) -> Result<Vec<AggregationInfo>, ConsumerError> {
        let aggregations = self.consumer.compile(&self.program)?;
        self.consumer.go()?;
        Ok(aggregations)
    }

    /// Stops the tracer and lets go of the statistics.
    fn release(&mut self) {
        self.consumer.stop();
        self.stats = None;
        self.last_stats = None;
    }

    /// What the program cost since the previous reading, `interval` ago.
    fn cost_since(
        &mut self,
        now: Option<cost::Reading>,
        interval: Duration,
    ) -> Option<cost::Sample> {
        let before = self.last_stats?;
        let now = now?;
        self.last_stats = Some(now);
        Some(cost::Sample::between(before, now, interval))
    }
}

/// Test hooks, a comma-separated list in `HEAT_ACTIX_FAULT` (unset in production), so tests can
/// reach failures a healthy machine never shows: `consumer_panic` makes every consumer thread
/// panic on its second walk; `ebpf_probe` makes the start-up probe find no native support;
/// `ebpf_load` makes every native program fail to load (after a good probe);
/// `explain_small_map` gives explain companions [`FAULT_CAPTURES`] captures.
pub(crate) fn fault_injected(name: &str) -> bool {
    std::env::var("HEAT_ACTIX_FAULT").is_ok_and(|v| v.split(',').any(|f| f == name))
}

impl Actor for ConsumerActor {
    type Context = SyncContext<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.release();
        tracing::debug!(session = %self.session, "Consumer thread released its tracer.");
    }
}

/// Compile the program and enable it.
#[derive(Message)]
#[rtype(result = "Result<Started, ConsumerError>")]
pub struct Begin;

/// Walk the aggregations and encode frame number `seq`.
#[derive(Message)]
#[rtype(result = "Result<EncodedFrame, ConsumerError>")]
pub struct Walk {
    pub seq: u64,
    pub encodings: Encodings,
}

/// End the program, walking one last time: the final frame, number `seq`.
#[derive(Message)]
#[rtype(result = "Result<EncodedFrame, ConsumerError>")]
pub struct Finish {
    pub seq: u64,
    pub encodings: Encodings,
}

/// Stop tracing now; the thread ends when the session drops its address.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Halt;

impl Handler<Begin> for ConsumerActor {
    type Result = Result<Started, ConsumerError>;

    fn handle(&mut self, _: Begin, _: &mut Self::Context) -> Self::Result {
        let began = Instant::now();
        // Enabled before the program attaches, so its first frame counts its first tick.
        self.stats = match self.measure.then(cost::StatsEnabled::acquire) {
            None => None,
            Some(Ok(held)) => Some(held),
            Some(Err(e)) => {
                tracing::warn!(session = %self.session, error = %e, "BPF run-time statistics unavailable; frames carry no cost.");
                None
            }
        };
        let mut fell_back = None;
        let mut aggregations = match (self.begin(), self.fallback.take()) {
            (Ok(aggregations), _) => aggregations,
            (Err(e), Some(fallback)) => {
                fell_back = Some(format!(
                    "{} could not start it: {e}",
                    self.consumer.backend().as_str()
                ));
                tracing::warn!(
                    session = %self.session,
                    from = self.consumer.backend().as_str(),
                    to = fallback.backend().as_str(),
                    reason = %e,
                    "Falling back to another backend."
                );
                self.consumer.stop();
                self.consumer = fallback;
                self.begin()?
            }
            (Err(e), None) => return Err(e),
        };
        if let Some(rewrite) = &self.program.rewrite {
            rewrite.infos(&mut aggregations);
        }
        self.last_walk = Some(Instant::now());
        self.last_stats = match self.stats {
            Some(_) => self.reading(),
            None => None,
        };
        self.compact = Some(CompactEncoder::new(&aggregations));
        Ok(Started {
            backend: self.consumer.backend(),
            fallback: fell_back,
            aggregations,
            kill_switch: self.consumer.kill_switch(),
            startup: began.elapsed(),
        })
    }
}

impl ConsumerActor {
    /// The program's counts now, with the time the statistics have been on.
    fn reading(&mut self) -> Option<cost::Reading> {
        self.consumer.run_stats().map(cost::Reading::now)
    }

    /// Names keys, applies the language's rewrite and the key limit, and encodes the frame.
    fn frame(
        &mut self,
        mut snapshot: Snapshot,
        stats: Option<cost::Reading>,
        seq: u64,
        encodings: Encodings,
        last: bool,
    ) -> EncodedFrame {
        self.program.key_names.apply(&mut snapshot);
        if let Some(rewrite) = &self.program.rewrite {
            rewrite.snapshot(&mut snapshot);
        }
        for aggregation in &mut snapshot.aggregations {
            aggregation.fold_keys(self.max_keys);
        }
        let now = Instant::now();
        let interval = self.last_walk.map_or(Duration::ZERO, |t| now - t);
        self.last_walk = Some(now);
        let sample = self.cost_since(stats, interval);
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let header = protocol::FrameHeader {
            seq,
            ts_ms,
            interval_ms: interval.as_millis() as u64,
            dropped: 0,
            last,
            cost: sample.and_then(|s| s.cost()),
        };
        // Compact frames are always made (a late joiner may ask for them, and the dictionary
        // must see every frame); they cost a fraction of the JSON.
        let (compact, dictionary, resets_dictionary) = match self.compact.as_mut() {
            Some(encoder) => {
                let keys = encoder.keys();
                let bytes = encoder.frame(&header, &snapshot);
                let resets = compact::resets_dictionary(&bytes);
                let changed = resets || encoder.keys() != keys;
                let dictionary = changed.then(|| Bytes::from(encoder.dictionary()));
                (Some(Bytes::from(bytes)), dictionary, resets)
            }
            None => (None, None, false),
        };
        EncodedFrame {
            seq,
            last,
            json: encodings
                .json
                .then(|| protocol::encode_frame(&header, &snapshot).into()),
            compact,
            dictionary,
            resets_dictionary,
            ts_ms,
            interval_ms: header.interval_ms,
            legacy: encodings
                .legacy
                .then(|| protocol::encode_2011(&snapshot).into()),
            series: snapshot.aggregations.iter().map(|a| a.series.len()).sum(),
            snapshot: encodings.typed.then(|| Arc::new(snapshot)),
            cost: sample,
        }
    }
}

impl Handler<Walk> for ConsumerActor {
    type Result = Result<EncodedFrame, ConsumerError>;

    fn handle(&mut self, walk: Walk, _: &mut Self::Context) -> Self::Result {
        let began = Instant::now();
        if walk.seq == 2 && fault_injected("consumer_panic") {
            panic!("injected fault: consumer_panic");
        }
        let snapshot = self.consumer.walk()?;
        let stats = self.reading();
        let frame = self.frame(snapshot, stats, walk.seq, walk.encodings, false);
        Event::Walked {
            elapsed: began.elapsed(),
        }
        .emit();
        Ok(frame)
    }
}

impl Handler<Finish> for ConsumerActor {
    type Result = Result<EncodedFrame, ConsumerError>;

    fn handle(&mut self, finish: Finish, _: &mut Self::Context) -> Self::Result {
        // Read while the programs still run: `finish` unloads them.
        let stats = self.reading();
        let snapshot = self.consumer.finish();
        self.stats = None;
        Ok(self.frame(snapshot?, stats, finish.seq, finish.encodings, true))
    }
}

impl Handler<Halt> for ConsumerActor {
    type Result = ();

    fn handle(&mut self, _: Halt, _: &mut Self::Context) {
        self.release();
    }
}

/// How a consumer runs its program beyond the program itself. Main programs run with the
/// default; the explain companion asks for more (see `program::explain`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning {
    /// The size of every bpftrace map (`BPFTRACE_MAP_KEYS_MAX`); `None`: bpftrace's own (4096).
    pub map_keys_max: Option<u32>,
    /// Every key goes out in every frame, none folded into `other` past
    /// `limits.max_keys_per_aggregation`: a reader that diffs a cumulative map key by key
    /// needs each key's own count (folding changes `other`'s membership between walks).
    pub all_keys: bool,
}

/// Starts a consumer thread for `backend` running `program`, for session `session`. With
/// `fallback`, a native program that cannot start runs on bpftrace instead.
pub fn spawn(
    backend: Backend,
    fallback: bool,
    session: String,
    program: ProgramSpec,
    config: &crate::config::Config,
) -> Addr<ConsumerActor> {
    spawn_tuned(
        backend,
        fallback,
        session,
        program,
        config,
        Tuning::default(),
    )
}

/// As [`spawn`], with `tuning`.
pub fn spawn_tuned(
    backend: Backend,
    fallback: bool,
    session: String,
    program: ProgramSpec,
    config: &crate::config::Config,
    tuning: Tuning,
) -> Addr<ConsumerActor> {
    let bpftrace = config.bpftrace.clone();
    let budget = config.limits.output_budget_bytes_per_s;
    let max_keys = if tuning.all_keys {
        usize::MAX
    } else {
        config.limits.max_keys_per_aggregation
    };
    let measure = match config.limits.measure_cost {
        crate::config::MeasureCost::Always => true,
        crate::config::MeasureCost::Scripts => program.preset.is_none(),
        crate::config::MeasureCost::Never => false,
    };
    let capture = program.capture.is_some();
    SyncArbiter::start(1, move || {
        let make = |backend| -> Box<dyn Consumer> {
            match backend {
                Backend::Bpftrace => Box::new(
                    bpftrace::BpftraceConsumer::new(bpftrace.clone(), budget)
                        .with_map_keys_max(tuning.map_keys_max),
                ),
                Backend::Dtrace => Box::new(dtrace::DtraceConsumer::new()),
                Backend::Ebpf if capture => Box::new(ebpf::StackConsumer::new()),
                Backend::Ebpf => Box::new(ebpf::EbpfConsumer::new()),
            }
        };
        let mut actor =
            ConsumerActor::new(session.clone(), make(backend), program.clone(), max_keys);
        actor.measure = measure;
        match (backend, fallback) {
            (Backend::Ebpf, true) => actor.with_fallback(make(Backend::Bpftrace)),
            _ => actor,
        }
    })
}
