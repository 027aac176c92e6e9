//! The websocket session actor: one per browser connection. It is admitted by the supervisor,
//! owns at most one running program (a consumer on its own thread), turns its interval tick
//! into walks and frames, enforces the per-session limits, and frees the consumer when the
//! program or the connection ends.

pub mod compact;
pub mod protocol;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason};

use self::protocol::{ClientMessage, ProtocolError, ServerMessage, StartRequest, PROTOCOL_VERSION};
use crate::auth::{AuthError, Identity};
use crate::config::{Config, TICK_MS_RANGE};
use crate::consumer::{
    self, Backend, Begin, ConsumerActor, ConsumerError, Encoding, Finish, Halt, KillSwitch,
    ProgramSpec, Walk,
};
use crate::dlang;
use crate::presets::{self, KeyNames, Preset, ProcessFilter};
use crate::supervisor::{Admit, Leave, Supervisor};
use crate::telemetry::{Event, Failure, Refusal};

/// How often heartbeat pings are sent.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a client may stay silent (no pong, no message) before it is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most frames sent but not yet acknowledged by the browser's pong; past it frames are dropped.
const MAX_FRAMES_IN_FLIGHT: u64 = 4;
/// Close code for a connection refused for want of a valid token (4000–4999 are ours).
const CLOSE_UNAUTHORIZED: u16 = 4401;
/// How actix words the end of a connection in the middle of a websocket frame (its
/// `PayloadError::Incomplete`), which is how a dropped connection shows up.
const PAYLOAD_EOF: &str = "payload reached EOF";
/// Close code for a client that answered no ping within `CLIENT_TIMEOUT`.
const CLOSE_CLIENT_TIMEOUT: u16 = 4408;

/// The backends a session can run, as announced in `hello`: `ebpf` only where the native
/// programs loaded at start-up (`consumer::ebpf::probe`), `bpftrace` only where it is installed,
/// `dtrace` only in a build with libdtrace.
fn backends(bpftrace: bool) -> Vec<&'static str> {
    let native = matches!(consumer::ebpf::support(), Some(Ok(())));
    [
        (native, "ebpf"),
        (bpftrace, "bpftrace"),
        (consumer::dtrace::available(), "dtrace"),
    ]
    .into_iter()
    .filter_map(|(present, name)| present.then_some(name))
    .collect()
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What every session shares: configuration and the supervisor.
pub struct Shared {
    pub config: Config,
    pub supervisor: Addr<Supervisor>,
}

/// Where a connection comes from and who holds it, as the HTTP handler found out.
pub struct Peer {
    pub addr: String,
    pub ip: Option<IpAddr>,
    pub identity: Result<Identity, AuthError>,
}

/// One browser connection.
pub struct Session {
    id: String,
    peer: Peer,
    shared: Arc<Shared>,
    /// Last sign of life from the client (any frame, pongs included).
    heartbeat: Instant,
    /// Last message from the client (pongs excluded), for the idle timeout.
    activity: Instant,
    last_start: Option<Instant>,
    admitted: bool,
    /// Bumped by every start and stop, so late answers from a replaced consumer are ignored.
    generation: u64,
    run: Option<Run>,
    /// A start that waits for the running program's final frame, which goes first.
    queued: Option<Launch>,
    /// How frames and messages are written: protocol v1, or the 2011 dialect.
    encoding: Encoding,
    frames: u64,
}

/// A validated start, ready to run.
struct Launch {
    backend: Backend,
    fallback: bool,
    why_not_native: Option<String>,
    resolved: Resolved,
    tick_ms: u64,
}

/// What happens once a finishing program's final frame is out.
enum AfterFinish {
    /// Nothing more (a `stop`, or a `start` that is queued).
    Stay,
    /// Close the socket, as the client asked.
    Close(Option<CloseReason>),
}

/// A program this session runs (or is starting).
struct Run {
    generation: u64,
    consumer: Addr<ConsumerActor>,
    kill: Option<KillSwitch>,
    tick: Option<SpawnHandle>,
    /// The last frame number walked.
    seq: u64,
    /// Frames sent so far; the ping after each frame carries this count.
    sent: u64,
    /// The highest count the browser acknowledged (its pong to the ping after a frame).
    acked: u64,
    /// Frames not sent because the browser was behind, since the last frame that was sent.
    dropped: u64,
    walking: bool,
    /// Set once the final walk was asked for: the `stopped` reason to send after it.
    finishing: Option<&'static str>,
}

impl Drop for Run {
    /// Whatever ends a run, its tracer dies now; the consumer thread reaps it.
    fn drop(&mut self) {
        if let Some(kill) = &self.kill {
            kill.kill();
        }
        self.consumer.do_send(Halt);
    }
}

/// Asks a session to end (server shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict;

impl Session {
    pub fn new(shared: Arc<Shared>, peer: Peer, encoding: Encoding) -> Session {
        let now = Instant::now();
        Session {
            id: format!("s-{:x}", NEXT_SESSION.fetch_add(1, Ordering::Relaxed)),
            peer,
            shared,
            heartbeat: now,
            activity: now,
            last_start: None,
            admitted: false,
            generation: 0,
            run: None,
            queued: None,
            encoding,
            frames: 0,
        }
    }

    fn config(&self) -> &Config {
        &self.shared.config
    }

    fn identity(&self) -> &Identity {
        self.peer
            .identity
            .as_ref()
            .expect("only admitted sessions handle requests")
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, message: ServerMessage<'_>) {
        match (self.encoding, message) {
            (Encoding::V1, message) => ctx.text(message.to_text()),
            // The 2011 clients draw every object they get: they hear only errors and ticks.
            (Encoding::Legacy2011, ServerMessage::Error { message, .. }) => {
                ctx.text(serde_json::json!({ "error": message }).to_string())
            }
            (Encoding::Legacy2011, _) => {}
        }
    }

    fn send_error(&self, ctx: &mut ws::WebsocketContext<Self>, code: &str, message: &str) {
        self.send(ctx, ServerMessage::Error { code, message });
    }

    /// Refuses a request for a policy reason: counted, told, and the session stays usable.
    fn refuse(&self, ctx: &mut ws::WebsocketContext<Self>, reason: Refusal, message: &str) {
        Event::RequestRefused {
            session: &self.id,
            reason,
            detail: message,
        }
        .emit();
        self.send_error(ctx, reason.as_str(), message);
    }

    fn hello(&self, ctx: &mut ws::WebsocketContext<Self>) {
        let identity = self.identity();
        self.send(
            ctx,
            ServerMessage::Hello {
                protocol: PROTOCOL_VERSION,
                server: "heat-actix",
                version: env!("CARGO_PKG_VERSION"),
                session: &self.id,
                tick_ms: self.config().tick_ms,
                tick_ms_range: [*TICK_MS_RANGE.start(), *TICK_MS_RANGE.end()],
                backends: &backends(consumer::bpftrace::installed(&self.config().bpftrace.path)),
                presets: presets::PRESETS,
                user: &identity.name,
                role: identity.role,
                custom_scripts: identity.may_run_custom_scripts(self.config()).is_ok(),
                max_script_bytes: self.config().limits.max_script_bytes,
            },
        );
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        self.activity = Instant::now();
        let parsed = match self.encoding {
            Encoding::V1 => protocol::parse_client_message(text),
            Encoding::Legacy2011 => protocol::parse_2011_message(text),
        };
        match parsed {
            Ok(ClientMessage::Start(request)) => self.start(request, ctx),
            Ok(ClientMessage::Stop) => self.finish_run(ctx, "client", AfterFinish::Stay),
            Err(e) => self.refuse(ctx, refusal_of(&e), &e.to_string()),
        }
    }

    /// Checks a start request against the policy and limits; the refusal reason when it fails.
    fn admit_start(&self, request: &StartRequest) -> Result<(), (Refusal, String)> {
        let config = self.config();
        let cooldown = Duration::from_millis(config.limits.start_cooldown_ms);
        if let Some(last) = self.last_start.filter(|t| t.elapsed() < cooldown) {
            let wait = cooldown.saturating_sub(last.elapsed());
            return Err((
                Refusal::RateLimited,
                format!(
                    "starts are limited to one per {}; retry in {}",
                    human(cooldown),
                    human(wait)
                ),
            ));
        }
        if let Some(pid) = request.pid.filter(|&pid| !process_exists(pid)) {
            return Err((
                Refusal::BadRequest,
                format!("no process {pid}: `pid` must name a running process"),
            ));
        }
        if let Some(script) = &request.script {
            self.identity()
                .may_run_custom_scripts(config)
                .map_err(|m| (Refusal::Forbidden, m.to_owned()))?;
            let max = config.limits.max_script_bytes;
            if script.len() > max {
                return Err((
                    Refusal::TooLarge,
                    format!("the script has {} bytes; the limit is {max}", script.len()),
                ));
            }
        }
        Ok(())
    }

    fn start(&mut self, request: StartRequest, ctx: &mut ws::WebsocketContext<Self>) {
        if let Err((reason, message)) = self.admit_start(&request) {
            return self.refuse(ctx, reason, &message);
        }
        let preset = match request
            .preset
            .as_deref()
            .map(|name| (name, presets::find(name)))
        {
            None => None,
            Some((_, Some(preset))) => Some(preset),
            Some((name, None)) => {
                let known: Vec<&str> = presets::PRESETS.iter().map(|p| p.name).collect();
                let message = format!("no preset {name:?}; presets: {}", known.join(", "));
                return self.refuse(ctx, Refusal::UnknownPreset, &message);
            }
        };
        let Choice {
            backend,
            fallback,
            why_not_native,
        } = match choose_backend(
            &self.id,
            &request,
            preset,
            consumer::bpftrace::installed(&self.config().bpftrace.path),
        )
        .and_then(|choice| needs_bpftrace(choice, &self.config().bpftrace.path))
        {
            Ok(choice) => choice,
            Err(message) => return self.refuse(ctx, Refusal::Unsupported, &message),
        };
        let resolved = match resolve(&request, preset, backend) {
            Ok(resolved) => resolved,
            Err(("compile", message)) => {
                Event::ConsumerFailed {
                    kind: Failure::Compile,
                    message: &message,
                }
                .emit();
                return self.send_error(ctx, "compile", &message);
            }
            Err(("unsupported", message)) => {
                return self.refuse(ctx, Refusal::Unsupported, &message)
            }
            Err((_, message)) => return self.refuse(ctx, Refusal::BadRequest, &message),
        };
        let tick_ms = request.tick_ms.unwrap_or(self.config().tick_ms);
        if !TICK_MS_RANGE.contains(&tick_ms) {
            let message = format!(
                "tick_ms {tick_ms} is not in {}..={}",
                TICK_MS_RANGE.start(),
                TICK_MS_RANGE.end()
            );
            return self.refuse(ctx, Refusal::BadRequest, &message);
        }

        self.last_start = Some(Instant::now());
        let launch = Launch {
            backend,
            fallback,
            why_not_native,
            resolved,
            tick_ms,
        };
        if self.run.is_some() {
            // The running program's final frame and `stopped` go out before this one starts.
            self.queued = Some(launch);
            return self.finish_run(ctx, "replaced", AfterFinish::Stay);
        }
        self.launch(launch, ctx);
    }

    /// Starts a validated program on its own consumer thread; `started` follows once attached.
    fn launch(&mut self, launch: Launch, ctx: &mut ws::WebsocketContext<Self>) {
        let Launch {
            backend,
            fallback,
            why_not_native,
            resolved:
                Resolved {
                    program,
                    preset,
                    engine,
                },
            tick_ms,
        } = launch;
        self.generation += 1;
        let generation = self.generation;
        let consumer = consumer::spawn(backend, fallback, self.id.clone(), program, self.config());
        self.run = Some(Run {
            generation,
            consumer: consumer.clone(),
            kill: None,
            tick: None,
            seq: 0,
            sent: 0,
            acked: 0,
            dropped: 0,
            walking: false,
            finishing: None,
        });

        // Not `wait`: pings, stops and closes are handled while the tracer compiles.
        consumer
            .send(Begin)
            .into_actor(self)
            .map(move |result, act, ctx| {
                if act.run.as_ref().is_none_or(|r| r.generation != generation) {
                    return; // replaced or stopped meanwhile; dropping its address freed it
                }
                match result {
                    Ok(Ok(started)) => {
                        let tick = ctx
                            .run_interval(Duration::from_millis(tick_ms), |act, ctx| act.tick(ctx));
                        let run = act.run.as_mut().expect("checked above");
                        run.kill = started.kill_switch;
                        run.tick = Some(tick);
                        let preset_name = preset.map(|p| p.name);
                        Event::ProgramStarted {
                            session: &act.id,
                            backend: started.backend.as_str(),
                            preset: preset_name,
                            startup: started.startup,
                        }
                        .emit();
                        act.send(
                            ctx,
                            ServerMessage::Started {
                                session: &act.id,
                                backend: started.backend.as_str(),
                                tick_ms,
                                preset: preset_name,
                                unit: preset.map(|p| p.unit),
                                startup_ms: started.startup.as_millis() as u64,
                                aggregations: &started.aggregations,
                                engine: engine.as_ref().map(|e| e.0),
                                notes: engine.as_ref().map(|e| e.1.as_slice()),
                                fallback: started.fallback.as_deref().or(why_not_native.as_deref()),
                            },
                        );
                    }
                    Ok(Err(e)) => {
                        act.run = None;
                        act.consumer_failed(&e, ctx);
                    }
                    Err(e) => {
                        act.run = None;
                        act.internal_error(&format!("consumer thread lost: {e}"), ctx);
                    }
                }
            })
            .spawn(ctx);
    }

    fn tick(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let Some(run) = self.run.as_mut() else { return };
        if run.walking {
            return; // the previous walk is still running; this tick is skipped, not queued
        }
        run.walking = true;
        run.seq += 1;
        let (generation, seq, dropped) = (run.generation, run.seq, run.dropped);
        let encoding = self.encoding;
        run.consumer
            .send(Walk {
                seq,
                dropped,
                encoding,
            })
            .into_actor(self)
            .map(move |result, act, ctx| {
                let Some(run) = act.run.as_mut().filter(|r| r.generation == generation) else {
                    return;
                };
                run.walking = false;
                match result {
                    Ok(Ok(output)) => {
                        // A browser that has not read the last frames gets no more until it
                        // catches up: memory stays bounded, and it learns how many it missed.
                        if run.sent.saturating_sub(run.acked) >= MAX_FRAMES_IN_FLIGHT {
                            run.dropped += 1;
                            Event::FrameDropped { session: &act.id }.emit();
                            return;
                        }
                        run.dropped = 0;
                        run.sent += 1;
                        ctx.text(output.frame);
                        ctx.ping(&run.sent.to_be_bytes());
                        act.frames += 1;
                        Event::FrameSent.emit();
                    }
                    // A slow tracer loses a frame (a gap in `seq`) but keeps running.
                    Ok(Err(e @ ConsumerError::WalkTimeout(_))) => {
                        Event::ConsumerFailed {
                            kind: e.kind(),
                            message: &e.to_string(),
                        }
                        .emit();
                    }
                    Ok(Err(e)) => {
                        act.stop_run(ctx);
                        act.consumer_failed(&e, ctx);
                        let reason = match e {
                            ConsumerError::OverBudget { .. } => "budget",
                            _ => "tracer_exited",
                        };
                        act.send(ctx, ServerMessage::Stopped { reason });
                    }
                    Err(e) => {
                        act.stop_run(ctx);
                        act.internal_error(&format!("consumer thread lost: {e}"), ctx);
                        act.send(
                            ctx,
                            ServerMessage::Stopped {
                                reason: "tracer_exited",
                            },
                        );
                    }
                }
            })
            .spawn(ctx);
    }

    /// The browser answered the ping sent after its n-th frame: it has read that far.
    fn acknowledge(&mut self, payload: &[u8]) {
        let (Ok(bytes), Some(run)) = (<[u8; 8]>::try_from(payload), self.run.as_mut()) else {
            return;
        };
        run.acked = run.acked.max(u64::from_be_bytes(bytes));
    }

    fn consumer_failed(&self, e: &ConsumerError, ctx: &mut ws::WebsocketContext<Self>) {
        Event::ConsumerFailed {
            kind: e.kind(),
            message: &e.to_string(),
        }
        .emit();
        let code = match e {
            ConsumerError::Compile(_) => "compile",
            ConsumerError::OverBudget { .. } => "budget",
            _ => "tracer",
        };
        self.send_error(ctx, code, &e.to_string());
    }

    fn internal_error(&self, message: &str, ctx: &mut ws::WebsocketContext<Self>) {
        Event::ConsumerFailed {
            kind: Failure::Internal,
            message,
        }
        .emit();
        self.send_error(ctx, "internal", message);
    }

    /// Ends the running program politely: its tick stops, the consumer walks one last time
    /// (bpftrace and DTrace run `END`), the final frame and `stopped` go out, then `after`.
    /// A program still starting has nothing to flush and stops at once.
    fn finish_run(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reason: &'static str,
        after: AfterFinish,
    ) {
        if reason == "client" {
            self.queued = None; // a stop also cancels a start that waited for the flush
        }
        let encoding = self.encoding;
        let Some(run) = self.run.as_mut() else {
            if matches!(after, AfterFinish::Stay) {
                self.send(ctx, ServerMessage::Stopped { reason });
            }
            return self.after_finish(ctx, after);
        };
        if run.finishing.is_some() {
            // Already flushing: the latest reason is the one the client hears.
            run.finishing = Some(reason);
            if let AfterFinish::Close(close) = after {
                self.after_finish(ctx, AfterFinish::Close(close));
            }
            return;
        }
        let Some(tick) = run.tick.take() else {
            self.stop_run(ctx);
            self.send(ctx, ServerMessage::Stopped { reason });
            return self.after_finish(ctx, after);
        };
        ctx.cancel_future(tick);
        run.finishing = Some(reason);
        let (generation, seq, dropped) = (run.generation, run.seq + 1, run.dropped);
        run.consumer
            .send(Finish {
                seq,
                dropped,
                encoding,
            })
            .into_actor(self)
            .map(move |result, act, ctx| {
                let Some(run) = act.run.as_mut().filter(|r| r.generation == generation) else {
                    return; // the connection went meanwhile; dropping the run freed the tracer
                };
                run.seq = seq;
                let reason = run.finishing.unwrap_or("client");
                match result {
                    // The final frame goes out even to a browser that is behind: it is the last.
                    Ok(Ok(output)) => {
                        ctx.text(output.frame);
                        act.frames += 1;
                        Event::FrameSent.emit();
                    }
                    Ok(Err(e)) => act.consumer_failed(&e, ctx),
                    Err(e) => act.internal_error(&format!("consumer thread lost: {e}"), ctx),
                }
                act.stop_run(ctx);
                act.send(ctx, ServerMessage::Stopped { reason });
                act.after_finish(ctx, after);
            })
            .spawn(ctx);
    }

    fn after_finish(&mut self, ctx: &mut ws::WebsocketContext<Self>, after: AfterFinish) {
        match after {
            AfterFinish::Close(reason) => {
                self.queued = None;
                ctx.close(reason);
                ctx.stop();
            }
            AfterFinish::Stay => {
                if let Some(launch) = self.queued.take() {
                    self.launch(launch, ctx);
                }
            }
        }
    }

    /// Stops the running program, if any; true when there was one.
    fn stop_run(&mut self, ctx: &mut ws::WebsocketContext<Self>) -> bool {
        self.generation += 1;
        let Some(mut run) = self.run.take() else {
            return false;
        };
        if let Some(tick) = run.tick.take() {
            ctx.cancel_future(tick);
        }
        Event::ProgramStopped {
            session: &self.id,
            reason: "stopped",
        }
        .emit();
        drop(run);
        true
    }

    fn close(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: CloseCode, reason: String) {
        ctx.close(Some(CloseReason {
            code,
            description: Some(reason),
        }));
        ctx.stop();
    }

    /// Ends a connection that broke the websocket protocol, saying why when the socket allows.
    fn protocol_error(&mut self, e: ws::ProtocolError, ctx: &mut ws::WebsocketContext<Self>) {
        // A client that drops the connection without a close frame (a killed tab, a lost
        // network) broke no rule: it is gone, not refused.
        if matches!(&e, ws::ProtocolError::Io(io) if io.to_string().contains(PAYLOAD_EOF)) {
            tracing::info!(session = %self.id, "Client went away without a close frame.");
            return ctx.stop();
        }
        let (reason, code, message) = match &e {
            ws::ProtocolError::Overflow => (
                Refusal::TooLarge,
                CloseCode::Size,
                format!(
                    "message too large: the limit is {} bytes",
                    self.config().limits.max_message_bytes
                ),
            ),
            ws::ProtocolError::Io(io) if io.to_string().to_lowercase().contains("utf-8") => (
                Refusal::BadRequest,
                CloseCode::Invalid,
                "text frames must be valid UTF-8".to_owned(),
            ),
            other => (
                Refusal::BadRequest,
                CloseCode::Protocol,
                format!("websocket protocol error: {other}"),
            ),
        };
        Event::RequestRefused {
            session: &self.id,
            reason,
            detail: &message,
        }
        .emit();
        self.send_error(ctx, reason.as_str(), &message);
        self.close(ctx, code, message);
    }
}

/// The metrics reason of a message that could not be parsed (also its wire code).
fn refusal_of(e: &ProtocolError) -> Refusal {
    match e {
        ProtocolError::BadRequest(_) => Refusal::BadRequest,
        ProtocolError::Unsupported(_) => Refusal::Unsupported,
    }
}

/// A duration as people read it: `994 ms`, `2 s`, `2.5 s` (rounded up to the millisecond, so
/// a wait is never shown as 0 ms).
fn human(d: Duration) -> String {
    let ms = d.as_nanos().div_ceil(1_000_000);
    match ms {
        0..=999 => format!("{ms} ms"),
        _ if ms % 1000 == 0 => format!("{} s", ms / 1000),
        _ => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

/// Whether a process with this id exists (a `pid` filter naming none would give empty frames
/// forever).
fn process_exists(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        // EPERM: it exists, but belongs to someone we may not signal.
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// Refuses a choice of bpftrace where the configured bpftrace is not installed, naming the
/// configured path (not a spawn failure later), and keeps a native preset from falling back to
/// a bpftrace that is not there.
fn needs_bpftrace(choice: Choice, path: &std::path::Path) -> Result<Choice, String> {
    let missing = consumer::bpftrace::missing(path);
    if choice.backend == Backend::Bpftrace {
        if let Some(why) = missing {
            return Err(why);
        }
    }
    Ok(Choice {
        fallback: choice.fallback && missing.is_none(),
        ..choice
    })
}

/// D for libdtrace (a script, or a preset's D version): as written, bar what this libdtrace
/// lacks, which `started.notes` then names.
fn on_libdtrace(d: &str, preset: Option<&'static Preset>) -> Resolved {
    let (script, notes) =
        consumer::dtrace::script::adapt(d, consumer::dtrace::script::HAS_VTIMESTAMP);
    Resolved {
        program: ProgramSpec {
            script,
            key_names: KeyNames::AsIs,
            rewrite: None,
            preset,
            filter: ProcessFilter::default(),
        },
        preset,
        engine: Some((consumer::dtrace::ENGINE, notes)),
    }
}

/// The program a start request names.
struct Resolved {
    program: ProgramSpec,
    preset: Option<&'static Preset>,
    /// For D scripts: the engine that runs them and its notes on approximations.
    engine: Option<(&'static str, Vec<String>)>,
}

/// Where a start request runs.
struct Choice {
    backend: Backend,
    /// Whether a native program that cannot start may run on bpftrace instead.
    fallback: bool,
    /// Why a preset with a native version runs on bpftrace although nobody asked for it.
    why_not_native: Option<String>,
}

impl Choice {
    fn on(backend: Backend) -> Choice {
        Choice {
            backend,
            fallback: false,
            why_not_native: None,
        }
    }
}

/// The backend for a start request and whether it may fall back to bpftrace. A preset with a
/// native version runs natively unless bpftrace is asked for (a forced `ebpf` never falls
/// back); on a host with libdtrace and no bpftrace, a preset with a D version runs that on
/// libdtrace (as it does when `dtrace` is asked for); D scripts run on libdtrace when this
/// binary has it ([`consumer::dtrace::available`]), otherwise through the D → bpftrace
/// translator; everything else on bpftrace. Errors name what this server cannot do.
fn choose_backend(
    session: &str,
    request: &StartRequest,
    preset: Option<&'static Preset>,
    bpftrace: bool,
) -> Result<Choice, String> {
    let d = request.lang.as_deref() == Some("d") && preset.is_none();
    let libdtrace = consumer::dtrace::available();
    let d_preset = libdtrace && preset.is_some_and(|p| p.d.is_some());
    let native = preset.and_then(|p| consumer::ebpf::find(p.name));
    let support = consumer::ebpf::support();
    match request.backend.as_deref() {
        None if d && libdtrace => Ok(Choice::on(Backend::Dtrace)),
        Some("dtrace") if (d && libdtrace) || d_preset => Ok(Choice::on(Backend::Dtrace)),
        Some("dtrace") if libdtrace => match preset {
            Some(p) => Err(format!(
                "preset {:?} has no D version; these have: {}",
                p.name,
                presets::PRESETS
                    .iter()
                    .filter(|p| p.d.is_some())
                    .map(|p| p.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            None => Err("the dtrace backend runs D scripts (`lang: \"d\"`) and presets".into()),
        },
        Some("dtrace") => Err(format!(
            "the dtrace backend runs D scripts with libdtrace{}",
            if libdtrace {
                ""
            } else {
                ", which needs a build with `--features dtrace` on a DTrace host"
            }
        )),
        Some("bpftrace") => Ok(Choice::on(Backend::Bpftrace)),
        Some("ebpf") => match (preset, native, support) {
            (None, _, _) => {
                Err("the ebpf backend runs presets only; scripts run on bpftrace".into())
            }
            (Some(p), None, _) => Err(format!("preset {:?} has no native eBPF version", p.name)),
            (_, _, Some(Err(reason))) => Err(format!("the ebpf backend cannot run here: {reason}")),
            _ => Ok(Choice::on(Backend::Ebpf)),
        },
        None if d_preset && !bpftrace && !matches!(support, Some(Ok(()))) => {
            Ok(Choice::on(Backend::Dtrace))
        }
        None => match (native, support) {
            (None, _) => Ok(Choice::on(Backend::Bpftrace)),
            (Some(n), Some(Err(reason))) => {
                tracing::info!(%session, preset = n.preset, %reason, "Native eBPF unavailable; using bpftrace.");
                Ok(Choice {
                    why_not_native: Some(format!("ebpf cannot run here: {reason}")),
                    ..Choice::on(Backend::Bpftrace)
                })
            }
            (Some(_), _) => Ok(Choice {
                fallback: true,
                ..Choice::on(Backend::Ebpf)
            }),
        },
        Some(other) => Err(format!(
            "unknown backend {other:?}; this server has {:?}",
            backends(bpftrace)
        )),
    }
}

/// The program a start request names (text with any process filter applied, key naming,
/// preset), for the backend that will run it.
fn resolve(
    request: &StartRequest,
    preset: Option<&'static Preset>,
    backend: Backend,
) -> Result<Resolved, (&'static str, String)> {
    let filter = ProcessFilter {
        pid: request.pid,
        comm: request.comm.clone(),
    };
    if let (Some(preset), Backend::Dtrace) = (preset, backend) {
        if !filter.is_empty() {
            return Err((
                "bad_request",
                "`pid` and `comm` filter presets on bpftrace and ebpf; the D versions do not take them".into(),
            ));
        }
        let d = preset
            .d
            .expect("choose_backend picks dtrace only for presets with a D version");
        return Ok(on_libdtrace(d, Some(preset)));
    }
    if let Some(preset) = preset {
        let script = preset
            .script_with(&filter)
            .map_err(|message| ("bad_request", message))?;
        let program = ProgramSpec {
            script,
            key_names: preset.key_names,
            rewrite: None,
            preset: Some(preset),
            filter,
        };
        return Ok(Resolved {
            program,
            preset: Some(preset),
            engine: None,
        });
    }
    if !filter.is_empty() {
        return Err((
            "bad_request",
            "`pid` and `comm` filter presets; a script filters with its own predicates".into(),
        ));
    }
    let script = request.script.clone().unwrap_or_default();
    let program = |script| ProgramSpec {
        script,
        key_names: KeyNames::AsIs,
        rewrite: None,
        preset: None,
        filter: ProcessFilter::default(),
    };
    match request.lang.as_deref() {
        Some("bpftrace") => Ok(Resolved {
            program: program(script),
            preset: None,
            engine: None,
        }),
        // libdtrace, where this binary has it, takes D as written, bar what it lacks.
        Some("d") if backend == Backend::Dtrace => Ok(on_libdtrace(&script, None)),
        // Elsewhere D is translated to bpftrace.
        Some("d") => {
            let compiled = dlang::compile(&script).map_err(|e| ("compile", e.to_string()))?;
            Ok(Resolved {
                program: compiled.spec,
                preset: None,
                engine: Some((dlang::ENGINE, compiled.notes)),
            })
        }
        other => Err((
            "unsupported",
            format!(
                "unknown lang {:?}; use \"bpftrace\" or \"d\"",
                other.unwrap_or("")
            ),
        )),
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Err(e) = &self.peer.identity {
            let message = e.to_string();
            Event::SessionRejected {
                reason: Refusal::Auth,
                peer: &self.peer.addr,
                detail: &message,
            }
            .emit();
            self.send_error(ctx, "unauthorized", &message);
            return self.close(ctx, CloseCode::Other(CLOSE_UNAUTHORIZED), message);
        }
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            let idle_limit = Duration::from_secs(act.config().limits.idle_timeout_s);
            if act.heartbeat.elapsed() > CLIENT_TIMEOUT {
                tracing::info!(session = %act.id, "Client timed out.");
                let reason = format!("no answer to pings for {}", human(CLIENT_TIMEOUT));
                act.close(ctx, CloseCode::Other(CLOSE_CLIENT_TIMEOUT), reason);
            } else if act.run.is_none() && act.activity.elapsed() > idle_limit {
                tracing::info!(session = %act.id, idle_s = idle_limit.as_secs(), "Idle session closed.");
                act.close(ctx, CloseCode::Normal, format!("idle for {}s with nothing running", idle_limit.as_secs()));
            } else {
                ctx.ping(b"");
            }
        });
        let admit = Admit {
            session: self.id.clone(),
            peer: self.peer.addr.clone(),
            ip: self.peer.ip,
            addr: ctx.address().recipient(),
        };
        self.shared
            .supervisor
            .send(admit)
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(Ok(())) => {
                    act.admitted = true;
                    act.hello(ctx);
                }
                Ok(Err(rejection)) => act.close(ctx, CloseCode::Again, rejection.to_string()),
                Err(_) => act.close(ctx, CloseCode::Error, "supervisor gone".into()),
            })
            .wait(ctx);
    }

    fn stopping(&mut self, ctx: &mut Self::Context) -> Running {
        self.stop_run(ctx);
        if self.admitted {
            self.shared.supervisor.do_send(Leave {
                session: self.id.clone(),
                frames: self.frames,
            });
            self.admitted = false;
        }
        Running::Stop
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, message: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::info!(session = %self.id, error = %e, "Websocket protocol error.");
                return self.protocol_error(e, ctx);
            }
        };
        self.heartbeat = Instant::now();
        if !self.admitted {
            return; // not admitted (yet, or ever): nothing a client says matters
        }
        match message {
            ws::Message::Text(text) => self.on_text(&text, ctx),
            ws::Message::Binary(_) => {
                self.activity = Instant::now();
                self.refuse(
                    ctx,
                    Refusal::BadRequest,
                    "binary frames are not part of the protocol; send JSON text",
                );
            }
            ws::Message::Ping(bytes) => ctx.pong(&bytes),
            ws::Message::Pong(bytes) => self.acknowledge(&bytes),
            // A polite close flushes the running program first, as `stop` does.
            ws::Message::Close(reason) => {
                self.finish_run(ctx, "client", AfterFinish::Close(reason))
            }
            ws::Message::Continuation(_) | ws::Message::Nop => {}
        }
    }
}

impl Handler<Evict> for Session {
    type Result = ();

    fn handle(&mut self, _: Evict, ctx: &mut Self::Context) {
        self.close(ctx, CloseCode::Away, "server shutting down".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_read_as_people_write_them() {
        assert_eq!(human(Duration::from_nanos(993_942_931)), "994 ms");
        assert_eq!(human(Duration::from_nanos(1)), "1 ms");
        assert_eq!(human(Duration::from_millis(500)), "500 ms");
        assert_eq!(human(Duration::from_secs(2)), "2 s");
        assert_eq!(human(Duration::from_millis(2500)), "2.5 s");
    }

    #[test]
    fn only_existing_processes_pass_the_pid_check() {
        assert!(process_exists(std::process::id()));
        // Above the kernel's pid_max limit (4194304), so never a process.
        assert!(!process_exists(i32::MAX as u32));
    }
}
