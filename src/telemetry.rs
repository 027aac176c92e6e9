//! Telemetry as types: each [`Event`] logs and bumps its Prometheus series in one place, and
//! `/metrics` renders the one registry (self-metrics and exported watches) as text or protobuf.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::{prometheus_protobuf, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use tracing::{debug, info, warn};

/// A counter of whole things.
pub type IntCounter = Counter<u64>;
/// A counter of fractional amounts (seconds).
pub type FloatCounter = Counter<f64, AtomicU64>;
/// A gauge of whole things.
pub type IntGauge = Gauge<i64>;
/// One series' labels, in the order the family names them.
type Labels = Vec<(&'static str, String)>;

/// A family of series told apart by fixed label names, addressed by label values in that order.
pub struct Labelled<M> {
    names: &'static [&'static str],
    family: Family<Labels, M>,
}

impl<M: Default + Clone> Labelled<M> {
    fn new(names: &'static [&'static str]) -> Labelled<M> {
        Labelled {
            names,
            family: Family::default(),
        }
    }

    /// The series with these label values (created at zero if new); a handle that stays live.
    pub fn with_label_values(&self, values: &[&str]) -> M {
        debug_assert_eq!(values.len(), self.names.len(), "one value per label");
        let labels: Labels = self
            .names
            .iter()
            .zip(values)
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect();
        self.family.get_or_create_owned(&labels)
    }

    /// Drops every series (for gauges whose label sets come and go).
    pub fn reset(&self) {
        self.family.clear();
    }
}

pub type IntCounterVec = Labelled<IntCounter>;
pub type FloatCounterVec = Labelled<FloatCounter>;
pub type IntGaugeVec = Labelled<IntGauge>;

/// The `Content-Type` of the Prometheus text format.
pub const TEXT_CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// The `Content-Type` of length-delimited Prometheus protobuf (native histograms need it).
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

/// Whether a scraper's `Accept` header asks for delimited protobuf before (or instead of) text.
pub fn wants_protobuf(accept: &str) -> bool {
    let mut best_protobuf = 0.0f32;
    let mut best_text = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut proto_ok = true;
        let mut delimited = true;
        for param in parts {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "q" => q = v.trim().parse().unwrap_or(0.0),
                "proto" => proto_ok = v.trim() == "io.prometheus.client.MetricFamily",
                "encoding" => delimited = v.trim() == "delimited",
                _ => {}
            }
        }
        match media.as_str() {
            "application/vnd.google.protobuf" if proto_ok && delimited => {
                best_protobuf = best_protobuf.max(q)
            }
            "text/plain" | "text/*" | "*/*" | "application/openmetrics-text" => {
                best_text = best_text.max(q)
            }
            _ => {}
        }
    }
    best_protobuf > 0.0 && best_protobuf >= best_text
}

/// The self-metrics' family names as registered (counters without `_total`), so that an
/// exported watch's family cannot take one of them.
pub const SELF_FAMILIES: [&str; 24] = [
    "heat_sessions_active",
    "heat_program_cpu_seconds",
    "heat_program_events",
    "heat_trigger_fired",
    "heat_trigger_webhook_failures",
    "heat_watch_restarts",
    "heat_store_bytes",
    "heat_store_writes",
    "heat_store_write_errors",
    "heat_store_write_duration_seconds",
    "heat_programs_active",
    "heat_program_viewers",
    "heat_frame_bytes",
    "heat_fanout_duration_seconds",
    "heat_sessions_max",
    "heat_sessions_started",
    "heat_sessions_rejected",
    "heat_programs_started",
    "heat_frames_sent",
    "heat_frames_dropped",
    "heat_walk_duration_seconds",
    "heat_consumer_errors",
    "heat_tracer_reports",
    "heat_fleet_queries",
];

/// Every series heat-actix exports.
pub struct Metrics {
    registry: Registry,
    pub sessions_active: IntGauge,
    pub sessions_max: IntGauge,
    pub sessions_started: IntCounter,
    pub sessions_rejected: IntCounterVec,
    pub programs_started: IntCounterVec,
    pub frames_sent: IntCounter,
    pub frames_dropped: IntCounter,
    pub walk_duration: Histogram,
    pub consumer_errors: IntCounterVec,
    pub tracer_reports: IntCounterVec,
    pub programs_active: IntGaugeVec,
    pub program_viewers: IntGaugeVec,
    pub frame_bytes: IntCounterVec,
    pub fanout_duration: Histogram,
    pub watch_restarts: IntCounterVec,
    pub store_bytes: IntGaugeVec,
    pub store_writes: IntCounter,
    pub store_write_errors: IntCounter,
    pub store_write_duration: Histogram,
    pub trigger_fired: IntCounterVec,
    pub trigger_webhook_failures: IntCounterVec,
    pub program_cpu_seconds: FloatCounterVec,
    pub program_events: IntCounterVec,
    pub fleet_queries: IntCounterVec,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            sessions_active: IntGauge::default(),
            sessions_max: IntGauge::default(),
            sessions_started: IntCounter::default(),
            sessions_rejected: Labelled::new(&["reason"]),
            programs_started: Labelled::new(&["backend"]),
            frames_sent: IntCounter::default(),
            frames_dropped: IntCounter::default(),
            walk_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            consumer_errors: Labelled::new(&["kind"]),
            tracer_reports: Labelled::new(&["kind"]),
            programs_active: Labelled::new(&["backend"]),
            program_viewers: Labelled::new(&["program"]),
            frame_bytes: Labelled::new(&["encoding"]),
            fanout_duration: Histogram::new(exponential_buckets(0.00001, 2.0, 16)),
            watch_restarts: Labelled::new(&["watch"]),
            store_bytes: Labelled::new(&["watch"]),
            store_writes: IntCounter::default(),
            store_write_errors: IntCounter::default(),
            store_write_duration: Histogram::new(exponential_buckets(0.00005, 2.0, 16)),
            trigger_fired: Labelled::new(&["watch", "trigger"]),
            trigger_webhook_failures: Labelled::new(&["watch", "trigger"]),
            program_cpu_seconds: Labelled::new(&["program"]),
            program_events: Labelled::new(&["program"]),
            fleet_queries: Labelled::new(&["outcome"]),
            registry: Registry::default(),
        };
        // Counters are registered without `_total`: the encoders add it.
        let r = &mut registry;
        r.register(
            "heat_sessions_active",
            "Websocket sessions open now",
            m.sessions_active.clone(),
        );
        r.register("heat_program_cpu_seconds", "CPU time the kernel counted running programs' BPF programs, by program (preset name, or script)", m.program_cpu_seconds.family.clone());
        r.register(
            "heat_program_events",
            "Runs of programs' BPF programs (probe firings), by program (preset name, or script)",
            m.program_events.family.clone(),
        );
        r.register(
            "heat_trigger_fired",
            "Times a watch's tail trigger fired (its range pinned), by watch and trigger",
            m.trigger_fired.family.clone(),
        );
        r.register(
            "heat_trigger_webhook_failures",
            "Trigger webhooks not delivered after all their retries, by watch and trigger",
            m.trigger_webhook_failures.family.clone(),
        );
        r.register(
            "heat_watch_restarts",
            "Times a watch's program failed and was started again, by watch",
            m.watch_restarts.family.clone(),
        );
        r.register("heat_store_bytes", "Bytes a watch's recording takes in the store, by watch (after the last retention pass)", m.store_bytes.family.clone());
        r.register(
            "heat_store_writes",
            "Ticks and runs written to the store",
            m.store_writes.clone(),
        );
        r.register(
            "heat_store_write_errors",
            "Writes to the store that failed (disk full, unwritable): those ticks are not recorded",
            m.store_write_errors.clone(),
        );
        r.register(
            "heat_store_write_duration_seconds",
            "Time to write one tick to the store (on the recorder's thread, off the tick path)",
            m.store_write_duration.clone(),
        );
        r.register(
            "heat_programs_active",
            "Tracing programs running now (each shared by all its viewers), by backend",
            m.programs_active.family.clone(),
        );
        r.register(
            "heat_program_viewers",
            "Sessions watching running programs, by program (preset name, or script)",
            m.program_viewers.family.clone(),
        );
        r.register(
            "heat_frame_bytes",
            "Bytes of frames and history written to sockets, by encoding",
            m.frame_bytes.family.clone(),
        );
        r.register(
            "heat_fanout_duration_seconds",
            "Time a program takes to hand one frame to all its viewers",
            m.fanout_duration.clone(),
        );
        r.register(
            "heat_sessions_max",
            "Most sessions admitted at once (max_sessions)",
            m.sessions_max.clone(),
        );
        r.register(
            "heat_sessions_started",
            "Sessions admitted",
            m.sessions_started.clone(),
        );
        r.register(
            "heat_sessions_rejected",
            "Connections and requests refused, by reason",
            m.sessions_rejected.family.clone(),
        );
        r.register(
            "heat_programs_started",
            "Tracing programs started, by backend",
            m.programs_started.family.clone(),
        );
        r.register(
            "heat_frames_sent",
            "Frames sent to browsers",
            m.frames_sent.clone(),
        );
        r.register(
            "heat_frames_dropped",
            "Frames not sent because the browser had not read the previous ones",
            m.frames_dropped.clone(),
        );
        r.register(
            "heat_walk_duration_seconds",
            "Time to walk a program's aggregations and encode a frame",
            m.walk_duration.clone(),
        );
        r.register(
            "heat_consumer_errors",
            "Tracer failures, by kind",
            m.consumer_errors.family.clone(),
        );
        r.register("heat_tracer_reports", "Drops and errors the tracer reported while running (DTrace drop and error handlers), by kind", m.tracer_reports.family.clone());
        r.register(
            "heat_fleet_queries",
            "Queries the fleet view sent to Prometheus, by outcome",
            m.fleet_queries.family.clone(),
        );
        r.register_collector(Box::new(crate::export::ExportCollector));
        // Every labelled series exists from start-up, so `rate()` and alerts see the first event.
        for reason in Refusal::ALL {
            m.sessions_rejected.with_label_values(&[reason.as_str()]);
        }
        for kind in Failure::ALL {
            m.consumer_errors.with_label_values(&[kind.as_str()]);
        }
        for backend in crate::consumer::Backend::ALL {
            m.programs_started.with_label_values(&[backend.as_str()]);
        }
        for kind in ["drop", "error"] {
            m.tracer_reports.with_label_values(&[kind]);
        }
        for outcome in FleetOutcome::ALL {
            m.fleet_queries.with_label_values(&[outcome.as_str()]);
        }
        for backend in crate::consumer::Backend::ALL {
            m.programs_active.with_label_values(&[backend.as_str()]);
        }
        for encoding in ["json", "compact", "legacy"] {
            m.frame_bytes.with_label_values(&[encoding]);
        }
        for program in crate::presets::PRESETS
            .iter()
            .map(|p| p.name)
            .chain(["script"])
        {
            m.program_cpu_seconds.with_label_values(&[program]);
            m.program_events.with_label_values(&[program]);
        }
        Metrics { registry, ..m }
    }

    /// The registry in Prometheus text format (native histograms as their classic buckets).
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_text::encode(&mut out, &self.registry).expect("text encoding cannot fail");
        out
    }

    /// The registry as length-delimited Prometheus protobuf, native histograms included.
    pub fn render_protobuf(&self) -> Vec<u8> {
        prometheus_protobuf::encode_to_vec(&self.registry)
            .expect("protobuf encoding of in-memory metrics cannot fail")
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// Why a connection or a request was refused: the `reason` label of
/// `heat_sessions_rejected_total`, and for request refusals the wire error code too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_sessions` sessions were open.
    Capacity,
    /// The client address had `max_sessions_per_client` sessions open.
    PerClient,
    /// No valid token (websocket, or `/api/translate`).
    Auth,
    /// A browser page on another origin.
    Origin,
    /// A custom script from someone who may not run one.
    Forbidden,
    /// A script or message over its size limit.
    TooLarge,
    /// A start sooner than `limits.start_cooldown_ms` after the previous one.
    RateLimited,
    /// Malformed JSON, an unknown `type`, bad or conflicting fields, a binary frame.
    BadRequest,
    /// A preset this server does not have.
    UnknownPreset,
    /// A language or backend this server cannot run.
    Unsupported,
    /// A new program while `limits.max_programs` run.
    MaxPrograms,
}

impl Refusal {
    /// Every reason, so each series is exported from start-up.
    pub const ALL: [Refusal; 11] = [
        Refusal::Capacity,
        Refusal::PerClient,
        Refusal::Auth,
        Refusal::Origin,
        Refusal::Forbidden,
        Refusal::TooLarge,
        Refusal::RateLimited,
        Refusal::BadRequest,
        Refusal::UnknownPreset,
        Refusal::Unsupported,
        Refusal::MaxPrograms,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Capacity => "capacity",
            Refusal::PerClient => "per_client",
            Refusal::Auth => "auth",
            Refusal::Origin => "origin",
            Refusal::Forbidden => "forbidden",
            Refusal::TooLarge => "too_large",
            Refusal::RateLimited => "rate_limited",
            Refusal::BadRequest => "bad_request",
            Refusal::UnknownPreset => "unknown_preset",
            Refusal::Unsupported => "unsupported",
            Refusal::MaxPrograms => "max_programs",
        }
    }
}

/// How a tracer failed: the `kind` label of `heat_consumer_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The tracer (or the D translator) refused the program.
    Compile,
    /// The tracer could not be started at all.
    Spawn,
    /// The tracer neither attached nor failed within `bpftrace.start_timeout_ms`.
    StartTimeout,
    /// The tracer ended while its program ran.
    Exited,
    /// A walk was not answered in time (the frame is skipped, the program keeps running).
    WalkTimeout,
    /// The program printed more than `limits.output_budget_bytes_per_s` and was killed.
    Budget,
    /// The consumer was asked for something in the wrong state.
    State,
    /// Tracer output that could not be decoded.
    Decode,
    /// A consumer thread was lost (a bug in heat-actix).
    Internal,
}

impl Failure {
    /// Every kind, so each series is exported from start-up.
    pub const ALL: [Failure; 9] = [
        Failure::Compile,
        Failure::Spawn,
        Failure::StartTimeout,
        Failure::Exited,
        Failure::WalkTimeout,
        Failure::Budget,
        Failure::State,
        Failure::Decode,
        Failure::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Compile => "compile",
            Failure::Spawn => "spawn",
            Failure::StartTimeout => "start_timeout",
            Failure::Exited => "exited",
            Failure::WalkTimeout => "walk_timeout",
            Failure::Budget => "budget",
            Failure::State => "state",
            Failure::Decode => "decode",
            Failure::Internal => "internal",
        }
    }
}

/// What became of one query the fleet view sent to Prometheus: the `outcome` label of
/// `heat_fleet_queries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FleetOutcome {
    /// Answered and understood.
    Ok,
    /// No connection (refused, no route, DNS).
    Unreachable,
    /// No answer within `fleet.query_timeout_ms`.
    Timeout,
    /// Prometheus answered with an error (its status and message).
    Error,
    /// An answer that is not what Prometheus's API documents.
    BadAnswer,
}

impl FleetOutcome {
    pub const ALL: [FleetOutcome; 5] = [
        FleetOutcome::Ok,
        FleetOutcome::Unreachable,
        FleetOutcome::Timeout,
        FleetOutcome::Error,
        FleetOutcome::BadAnswer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FleetOutcome::Ok => "ok",
            FleetOutcome::Unreachable => "unreachable",
            FleetOutcome::Timeout => "timeout",
            FleetOutcome::Error => "error",
            FleetOutcome::BadAnswer => "bad_answer",
        }
    }
}

/// Something worth counting happened.
pub enum Event<'a> {
    /// The fleet view asked Prometheus something (`what`: `watches` or `frames`); `detail` is
    /// why it failed (never the auth header).
    FleetQueried {
        what: &'static str,
        outcome: FleetOutcome,
        elapsed: Duration,
        detail: &'a str,
    },
    /// A session was admitted; `active` is the count including it.
    SessionAdmitted {
        session: &'a str,
        peer: &'a str,
        active: usize,
    },
    /// A connection was refused.
    SessionRejected {
        reason: Refusal,
        peer: &'a str,
        detail: &'a str,
    },
    /// A session ended; `active` is the count without it.
    SessionEnded {
        session: &'a str,
        frames: u64,
        active: usize,
    },
    /// A program attached and frames will follow.
    ProgramStarted {
        program: u64,
        backend: crate::consumer::Backend,
        preset: Option<&'a str>,
        startup: Duration,
    },
    /// A session stopped watching a program (which may run on for others).
    ProgramLeft {
        session: &'a str,
        reason: &'static str,
    },
    /// A program stopped (its last viewer left, or its tracer ended).
    ProgramStopped { program: u64 },
    /// An explain companion started or ended (`what`: `starting`, `failed: …`).
    Explain {
        session: &'a str,
        explain: u64,
        preset: Option<&'a str>,
        what: &'a str,
    },
    /// A frame (or a history of frames) went out on a socket.
    FrameSent {
        encoding: &'static str,
        bytes: usize,
    },
    /// A tick (or a run) was written to the store.
    StoreWritten { elapsed: Duration },
    /// A write to the store failed; `first` when the watch had been recording fine until now.
    StoreWriteFailed {
        watch: &'a str,
        error: &'a str,
        first: bool,
    },
    /// A watch records again after writes had failed.
    RecordingResumed { watch: &'a str, after: &'a str },
    /// A retention pass left a watch's recording this big.
    StoreSized { watch: &'a str, bytes: u64 },
    /// A watch's program failed; it starts again after `wait`.
    WatchRestarting {
        watch: &'a str,
        why: &'a str,
        wait: Duration,
    },
    /// A watch's tail trigger fired: `[from_ms, to_ms]` is pinned.
    TriggerFired {
        watch: &'a str,
        trigger: &'a str,
        value: f64,
        fired_ms: u64,
        from_ms: u64,
        to_ms: u64,
    },
    /// A trigger cannot be evaluated on its watch's program (no such histogram); it stays
    /// idle until the program starts again.
    TriggerUnusable {
        watch: &'a str,
        trigger: &'a str,
        why: &'a str,
    },
    /// A trigger's range could not be pinned (the store refused).
    TriggerPinFailed {
        watch: &'a str,
        trigger: &'a str,
        error: &'a str,
    },
    /// One webhook attempt failed; `last` when no retry is left (the delivery is given up).
    TriggerWebhookFailed {
        watch: &'a str,
        trigger: &'a str,
        attempt: u32,
        error: &'a str,
        last: bool,
    },
    /// A trigger's webhook was delivered.
    TriggerWebhookDelivered {
        watch: &'a str,
        trigger: &'a str,
        attempt: u32,
    },
    /// A program handed one frame to all its viewers.
    FannedOut { viewers: usize, elapsed: Duration },
    /// A frame was not sent: the browser had not read the previous ones.
    FrameDropped { session: &'a str },
    /// A request was refused by policy or a limit (the session stays open).
    RequestRefused {
        session: &'a str,
        reason: Refusal,
        detail: &'a str,
    },
    /// A walk finished on a consumer thread.
    Walked { elapsed: Duration },
    /// A running tracer reported dropped data (`drop`) or a fault in the program (`error`).
    TracerReported {
        kind: &'static str,
        message: &'a str,
    },
    /// A tracer failed (compile error, death, timeout, undecodable output, …).
    ConsumerFailed { kind: Failure, message: &'a str },
    /// What a program's BPF programs cost over one tick; `program` is a preset name or `script`.
    ProgramCost {
        program: &'a str,
        sample: crate::consumer::cost::Sample,
    },
    /// An exported watch's program has no histogram: nothing of it is exported.
    ExportUnusable { watch: &'a str },
    /// A program used more CPU than its budget and is being stopped.
    ProgramOverBudget {
        program: &'a str,
        over: crate::consumer::cost::OverBudget,
    },
}

impl Event<'_> {
    /// Logs the event and updates its metrics.
    pub fn emit(self) {
        let m = metrics();
        match self {
            Event::SessionAdmitted {
                session,
                peer,
                active,
            } => {
                m.sessions_started.inc();
                m.sessions_active.set(active as i64);
                info!(%session, peer, active, "Session admitted.");
            }
            Event::SessionRejected {
                reason,
                peer,
                detail,
            } => {
                let reason = reason.as_str();
                m.sessions_rejected.with_label_values(&[reason]).inc();
                warn!(reason, peer, detail, "Session rejected.");
            }
            Event::SessionEnded {
                session,
                frames,
                active,
            } => {
                m.sessions_active.set(active as i64);
                info!(%session, frames, active, "Session ended.");
            }
            Event::ProgramStarted {
                program,
                backend,
                preset,
                startup,
            } => {
                let backend = backend.as_str();
                m.programs_started.with_label_values(&[backend]).inc();
                info!(
                    program,
                    backend,
                    preset,
                    startup_ms = startup.as_millis() as u64,
                    "Program started."
                );
            }
            Event::ProgramLeft { session, reason } => {
                info!(%session, reason, "Left the program.");
            }
            Event::ProgramStopped { program } => {
                info!(program, "Program stopped.");
            }
            Event::Explain {
                session,
                explain,
                preset,
                what,
            } => {
                info!(%session, explain, preset, what, "Explain companion.");
            }
            Event::FrameSent { encoding, bytes } => {
                m.frames_sent.inc();
                m.frame_bytes
                    .with_label_values(&[encoding])
                    .inc_by(bytes as u64);
            }
            Event::StoreWritten { elapsed } => {
                m.store_writes.inc();
                m.store_write_duration.observe(elapsed.as_secs_f64());
            }
            Event::StoreWriteFailed {
                watch,
                error,
                first,
            } => {
                m.store_write_errors.inc();
                if first {
                    warn!(
                        watch,
                        error,
                        "Recording stopped: the store refused a write; live viewing goes on."
                    );
                } else {
                    debug!(watch, error, "Store write failed again.");
                }
            }
            Event::RecordingResumed { watch, after } => {
                info!(watch, after, "Recording resumed.");
            }
            Event::StoreSized { watch, bytes } => {
                m.store_bytes.with_label_values(&[watch]).set(bytes as i64);
            }
            Event::WatchRestarting { watch, why, wait } => {
                m.watch_restarts.with_label_values(&[watch]).inc();
                warn!(
                    watch,
                    why,
                    wait_ms = wait.as_millis() as u64,
                    "Watch failed; starting it again."
                );
            }
            Event::TriggerFired {
                watch,
                trigger,
                value,
                fired_ms,
                from_ms,
                to_ms,
            } => {
                m.trigger_fired.with_label_values(&[watch, trigger]).inc();
                warn!(
                    watch,
                    trigger, value, fired_ms, from_ms, to_ms, "Trigger fired: its range is pinned."
                );
            }
            Event::TriggerUnusable {
                watch,
                trigger,
                why,
            } => {
                warn!(
                    watch,
                    trigger, why, "Trigger cannot be evaluated on this program; it stays idle."
                );
            }
            Event::TriggerPinFailed {
                watch,
                trigger,
                error,
            } => {
                warn!(
                    watch,
                    trigger, error, "Trigger fired but its range could not be pinned."
                );
            }
            Event::TriggerWebhookFailed {
                watch,
                trigger,
                attempt,
                error,
                last,
            } => {
                if last {
                    m.trigger_webhook_failures
                        .with_label_values(&[watch, trigger])
                        .inc();
                    warn!(
                        watch,
                        trigger, attempt, error, "Trigger webhook failed; giving up."
                    );
                } else {
                    info!(
                        watch,
                        trigger, attempt, error, "Trigger webhook failed; retrying."
                    );
                }
            }
            Event::FleetQueried {
                what,
                outcome,
                elapsed,
                detail,
            } => {
                m.fleet_queries.with_label_values(&[outcome.as_str()]).inc();
                let elapsed_ms = elapsed.as_millis() as u64;
                if outcome == FleetOutcome::Ok {
                    debug!(what, elapsed_ms, "Fleet query answered.");
                } else {
                    warn!(
                        what,
                        outcome = outcome.as_str(),
                        elapsed_ms,
                        detail,
                        "Fleet query failed."
                    );
                }
            }
            Event::TriggerWebhookDelivered {
                watch,
                trigger,
                attempt,
            } => {
                info!(watch, trigger, attempt, "Trigger webhook delivered.");
            }
            Event::FannedOut { viewers, elapsed } => {
                m.fanout_duration.observe(elapsed.as_secs_f64());
                debug!(
                    viewers,
                    elapsed_us = elapsed.as_micros() as u64,
                    "Fanned out."
                );
            }
            Event::FrameDropped { session } => {
                m.frames_dropped.inc();
                debug!(%session, "Frame dropped: the browser is behind.");
            }
            Event::RequestRefused {
                session,
                reason,
                detail,
            } => {
                let reason = reason.as_str();
                m.sessions_rejected.with_label_values(&[reason]).inc();
                info!(%session, reason, detail, "Request refused.");
            }
            Event::Walked { elapsed } => {
                m.walk_duration.observe(elapsed.as_secs_f64());
                debug!(elapsed_us = elapsed.as_micros() as u64, "Walked.");
            }
            Event::TracerReported { kind, message } => {
                m.tracer_reports.with_label_values(&[kind]).inc();
                warn!(kind, message, "Tracer reported a problem.");
            }
            Event::ProgramCost { program, sample } => {
                m.program_cpu_seconds
                    .with_label_values(&[program])
                    .inc_by(sample.run_time_ns as f64 / 1e9);
                m.program_events
                    .with_label_values(&[program])
                    .inc_by(sample.events);
            }
            Event::ExportUnusable { watch } => {
                warn!(
                    watch,
                    "Watch has export = true but its program has no histogram; nothing exported."
                );
            }
            Event::ProgramOverBudget { program, over } => {
                warn!(
                    program,
                    measured_percent = over.measured_percent,
                    limit_percent = over.limit_percent,
                    "Program over its CPU budget; stopping it."
                );
            }
            Event::ConsumerFailed { kind, message } => {
                let kind = kind.as_str();
                m.consumer_errors.with_label_values(&[kind]).inc();
                warn!(kind, message, "Consumer failed.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_exported_before_its_first_event() {
        let text = metrics().render();
        for reason in Refusal::ALL {
            let series = format!(
                "heat_sessions_rejected_total{{reason=\"{}\"}}",
                reason.as_str()
            );
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        for kind in Failure::ALL {
            let series = format!("heat_consumer_errors_total{{kind=\"{}\"}}", kind.as_str());
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
        for program in crate::presets::PRESETS
            .iter()
            .map(|p| p.name)
            .chain(["script"])
        {
            for metric in [
                "heat_program_cpu_seconds_total",
                "heat_program_events_total",
            ] {
                let series = format!("{metric}{{program=\"{program}\"}} 0");
                assert!(text.contains(&series), "{series} missing:\n{text}");
            }
        }
    }

    #[test]
    fn self_families_lists_every_registered_family() {
        let text = metrics().render();
        let registered: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .map(|name| name.strip_suffix("_total").unwrap_or(name))
            .filter(|name| {
                !name.starts_with("heat_watch_export") && !name.starts_with("heat_export")
            })
            .collect();
        // Families without a series yet (a labelled gauge before its first watch) are not
        // rendered; every rendered one must be listed.
        for name in &registered {
            assert!(
                SELF_FAMILIES.contains(name),
                "{name} missing from SELF_FAMILIES"
            );
        }
        assert!(registered.len() >= 15, "{registered:?}");
    }

    #[test]
    fn protobuf_only_when_the_scraper_prefers_it() {
        // What Prometheus 2.42 sends with native histograms enabled.
        assert!(wants_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;\
             encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3,*/*;q=0.1"
        ));
        // And without: text first.
        assert!(!wants_protobuf(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
             version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_protobuf(""));
        assert!(!wants_protobuf("*/*"));
        // Another protobuf message, or the text encoding of it, is not ours.
        assert!(!wants_protobuf(
            "application/vnd.google.protobuf;proto=other.Message;encoding=delimited"
        ));
        assert!(!wants_protobuf(
            "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
        ));
    }

    #[test]
    fn protobuf_holds_the_same_families_as_text() {
        let bytes = metrics().render_protobuf();
        let text = metrics().render();
        // Length-delimited MetricFamily messages: every family name is in the bytes.
        for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = family.split_whitespace().next().unwrap();
            assert!(
                bytes.windows(name.len()).any(|w| w == name.as_bytes()),
                "{name} missing from protobuf"
            );
        }
    }
}
