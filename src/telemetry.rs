//! Telemetry as types: each [`Event`] logs and bumps its Prometheus series in one place, and
//! `/metrics` renders the registry.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing::{debug, info, warn};

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
    pub program_cpu_seconds: CounterVec,
    pub program_events: IntCounterVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let sessions_active =
            IntGauge::new("heat_sessions_active", "Websocket sessions open now").unwrap();
        let sessions_max = IntGauge::new(
            "heat_sessions_max",
            "Most sessions admitted at once (max_sessions)",
        )
        .unwrap();
        let sessions_started =
            IntCounter::new("heat_sessions_started_total", "Sessions admitted").unwrap();
        let sessions_rejected = IntCounterVec::new(
            Opts::new(
                "heat_sessions_rejected_total",
                "Connections and requests refused, by reason",
            ),
            &["reason"],
        )
        .unwrap();
        let programs_started = IntCounterVec::new(
            Opts::new(
                "heat_programs_started_total",
                "Tracing programs started, by backend",
            ),
            &["backend"],
        )
        .unwrap();
        let frames_sent =
            IntCounter::new("heat_frames_sent_total", "Frames sent to browsers").unwrap();
        let frames_dropped = IntCounter::new(
            "heat_frames_dropped_total",
            "Frames not sent because the browser had not read the previous ones",
        )
        .unwrap();
        let walk_duration = Histogram::with_opts(
            HistogramOpts::new(
                "heat_walk_duration_seconds",
                "Time to walk a program's aggregations and encode a frame",
            )
            .buckets(prometheus::exponential_buckets(0.0001, 2.0, 16).unwrap()),
        )
        .unwrap();
        let consumer_errors = IntCounterVec::new(
            Opts::new("heat_consumer_errors_total", "Tracer failures, by kind"),
            &["kind"],
        )
        .unwrap();
        let tracer_reports = IntCounterVec::new(
            Opts::new(
                "heat_tracer_reports_total",
                "Drops and errors the tracer reported while running (DTrace drop and error handlers), by kind",
            ),
            &["kind"],
        )
        .unwrap();
        let programs_active = IntGaugeVec::new(
            Opts::new(
                "heat_programs_active",
                "Tracing programs running now (each shared by all its viewers), by backend",
            ),
            &["backend"],
        )
        .unwrap();
        let program_viewers = IntGaugeVec::new(
            Opts::new(
                "heat_program_viewers",
                "Sessions watching running programs, by program (preset name, or script)",
            ),
            &["program"],
        )
        .unwrap();
        let frame_bytes = IntCounterVec::new(
            Opts::new(
                "heat_frame_bytes_total",
                "Bytes of frames and history written to sockets, by encoding",
            ),
            &["encoding"],
        )
        .unwrap();
        let fanout_duration = Histogram::with_opts(
            HistogramOpts::new(
                "heat_fanout_duration_seconds",
                "Time a program takes to hand one frame to all its viewers",
            )
            .buckets(prometheus::exponential_buckets(0.00001, 2.0, 16).unwrap()),
        )
        .unwrap();
        let watch_restarts = IntCounterVec::new(
            Opts::new(
                "heat_watch_restarts_total",
                "Times a watch's program failed and was started again, by watch",
            ),
            &["watch"],
        )
        .unwrap();
        let store_bytes = IntGaugeVec::new(
            Opts::new(
                "heat_store_bytes",
                "Bytes a watch's recording takes in the store, by watch (after the last retention pass)",
            ),
            &["watch"],
        )
        .unwrap();
        let store_writes = IntCounter::new(
            "heat_store_writes_total",
            "Ticks and runs written to the store",
        )
        .unwrap();
        let store_write_errors = IntCounter::new(
            "heat_store_write_errors_total",
            "Writes to the store that failed (disk full, unwritable): those ticks are not recorded",
        )
        .unwrap();
        let store_write_duration = Histogram::with_opts(
            HistogramOpts::new(
                "heat_store_write_duration_seconds",
                "Time to write one tick to the store (on the recorder's thread, off the tick path)",
            )
            .buckets(prometheus::exponential_buckets(0.00005, 2.0, 16).unwrap()),
        )
        .unwrap();
        let trigger_fired = IntCounterVec::new(
            Opts::new(
                "heat_trigger_fired_total",
                "Times a watch's tail trigger fired (its range pinned), by watch and trigger",
            ),
            &["watch", "trigger"],
        )
        .unwrap();
        let trigger_webhook_failures = IntCounterVec::new(
            Opts::new(
                "heat_trigger_webhook_failures_total",
                "Trigger webhooks not delivered after all their retries, by watch and trigger",
            ),
            &["watch", "trigger"],
        )
        .unwrap();
        let program_cpu_seconds = CounterVec::new(
            Opts::new(
                "heat_program_cpu_seconds_total",
                "CPU time the kernel counted running programs' BPF programs, by program (preset name, or script)",
            ),
            &["program"],
        )
        .unwrap();
        let program_events = IntCounterVec::new(
            Opts::new(
                "heat_program_events_total",
                "Runs of programs' BPF programs (probe firings), by program (preset name, or script)",
            ),
            &["program"],
        )
        .unwrap();
        for c in [
            Box::new(sessions_active.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(program_cpu_seconds.clone()),
            Box::new(program_events.clone()),
            Box::new(trigger_fired.clone()),
            Box::new(trigger_webhook_failures.clone()),
            Box::new(watch_restarts.clone()),
            Box::new(store_bytes.clone()),
            Box::new(store_writes.clone()),
            Box::new(store_write_errors.clone()),
            Box::new(store_write_duration.clone()),
            Box::new(programs_active.clone()),
            Box::new(program_viewers.clone()),
            Box::new(frame_bytes.clone()),
            Box::new(fanout_duration.clone()),
            Box::new(sessions_max.clone()),
            Box::new(sessions_started.clone()),
            Box::new(sessions_rejected.clone()),
            Box::new(programs_started.clone()),
            Box::new(frames_sent.clone()),
            Box::new(frames_dropped.clone()),
            Box::new(walk_duration.clone()),
            Box::new(consumer_errors.clone()),
            Box::new(tracer_reports.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        // Every labelled series exists from start-up, so `rate()` and alerts see the first event.
        for reason in Refusal::ALL {
            sessions_rejected.with_label_values(&[reason.as_str()]);
        }
        for kind in Failure::ALL {
            consumer_errors.with_label_values(&[kind.as_str()]);
        }
        for backend in crate::consumer::Backend::ALL {
            programs_started.with_label_values(&[backend.as_str()]);
        }
        for kind in ["drop", "error"] {
            tracer_reports.with_label_values(&[kind]);
        }
        for backend in crate::consumer::Backend::ALL {
            programs_active.with_label_values(&[backend.as_str()]);
        }
        for encoding in ["json", "compact", "legacy"] {
            frame_bytes.with_label_values(&[encoding]);
        }
        for program in crate::presets::PRESETS
            .iter()
            .map(|p| p.name)
            .chain(["script"])
        {
            program_cpu_seconds.with_label_values(&[program]);
            program_events.with_label_values(&[program]);
        }
        Metrics {
            registry,
            sessions_active,
            sessions_max,
            sessions_started,
            sessions_rejected,
            programs_started,
            frames_sent,
            frames_dropped,
            walk_duration,
            consumer_errors,
            tracer_reports,
            programs_active,
            program_viewers,
            frame_bytes,
            fanout_duration,
            watch_restarts,
            store_bytes,
            store_writes,
            store_write_errors,
            store_write_duration,
            trigger_fired,
            trigger_webhook_failures,
            program_cpu_seconds,
            program_events,
        }
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
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

/// Something worth counting happened.
pub enum Event<'a> {
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
}
