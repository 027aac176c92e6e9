//! The websocket session actor: one per browser connection. It is admitted by the supervisor,
//! speaks the protocol (v1 JSON, v1.1 compact frames, or the 2011 dialect), enforces the
//! per-session limits and per-viewer flow control, and watches at most one program at a time,
//! which it joins and leaves through the program registry (`crate::program`): the tracer, its
//! tick and its frames belong to the program, not to the session.

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
use crate::consumer::{self, EncodedFrame, Encoding};
use crate::presets;
use crate::program::plan::{self, Plan, PlanError};
use crate::program::registry::{self, Join, Left, ProgramRefusal, Programs};
use crate::program::{FetchFrames, Member, Program, ToViewer, ViewerEvent};
use crate::supervisor::{Admit, Leave, Supervisor};
use crate::telemetry::{Event, Failure, Refusal};

/// How often heartbeat pings are sent.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a client may stay silent (no pong, no message) before it is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most frames sent but not yet acknowledged by the browser's pong; past it frames are skipped
/// (they stay in the program's ring, where `fetch` finds them).
const MAX_FRAMES_IN_FLIGHT: u64 = 4;
/// Close code for a connection refused for want of a valid token (4000–4999 are ours).
const CLOSE_UNAUTHORIZED: u16 = 4401;
/// How actix words the end of a connection in the middle of a websocket frame (its
/// `PayloadError::Incomplete`), which is how a dropped connection shows up.
const PAYLOAD_EOF: &str = "payload reached EOF";
/// Close code for a client that answered no ping within `CLIENT_TIMEOUT`.
const CLOSE_CLIENT_TIMEOUT: u16 = 4408;

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What every session shares: configuration, the supervisor and the program registry.
pub struct Shared {
    pub config: Config,
    pub supervisor: Addr<Supervisor>,
    pub programs: Addr<Programs>,
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
    /// Bumped by every join and leave, so events of a program this session left are ignored.
    generation: u64,
    watch: Option<Watch>,
    /// A start that waits for the watched program's final frame, which goes first.
    queued: Option<(Plan, Encoding)>,
    /// How this connection speaks: protocol v1, or the 2011 dialect.
    dialect: Encoding,
    frames: u64,
}

/// What happens once a finishing program's final frame is out.
enum AfterFinish {
    /// Nothing more (a `stop`, or a `start` that is queued).
    Stay,
    /// Close the socket, as the client asked.
    Close(Option<CloseReason>),
}

/// The program this session watches (or is joining), and this viewer's flow control.
struct Watch {
    generation: u64,
    /// Known once the registry answered the join.
    program: Option<Addr<Program>>,
    encoding: Encoding,
    /// `started` was sent: the program runs.
    started: bool,
    /// Frames sent so far; the ping after each frame carries this count.
    sent: u64,
    /// The highest count the browser acknowledged (its pong to the ping after a frame).
    acked: u64,
    /// Set once this session asked to leave politely: the `stopped` reason, and what then.
    finishing: Option<(&'static str, AfterFinish)>,
}

/// Asks a session to end (server shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Evict;

impl Session {
    pub fn new(shared: Arc<Shared>, peer: Peer, dialect: Encoding) -> Session {
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
            watch: None,
            queued: None,
            dialect,
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
        match (self.dialect, message) {
            (Encoding::Legacy2011, ServerMessage::Error { message, .. }) => {
                ctx.text(serde_json::json!({ "error": message }).to_string())
            }
            // The 2011 clients draw every object they get: they hear only errors and ticks.
            (Encoding::Legacy2011, _) => {}
            (_, message) => ctx.text(message.to_text()),
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

    fn hello(&self, ctx: &mut ws::WebsocketContext<Self>, running: &[registry::RunningProgram]) {
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
                backends: &plan::backends(consumer::bpftrace::installed(
                    &self.config().bpftrace.path,
                )),
                presets: presets::PRESETS,
                user: &identity.name,
                role: identity.role,
                custom_scripts: identity.may_run_custom_scripts(self.config()).is_ok(),
                max_script_bytes: self.config().limits.max_script_bytes,
                encodings: ["json", "compact"],
                running,
            },
        );
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        self.activity = Instant::now();
        let parsed = match self.dialect {
            Encoding::Legacy2011 => protocol::parse_2011_message(text),
            _ => protocol::parse_client_message(text),
        };
        match parsed {
            Ok(ClientMessage::Start(request)) => self.start(request, ctx),
            Ok(ClientMessage::Stop) => self.leave(ctx, "client", AfterFinish::Stay),
            Ok(ClientMessage::Fetch { from, to }) => self.fetch(from, to, ctx),
            Ok(ClientMessage::Explain(request)) => self.explain(request, ctx),
            Ok(ClientMessage::ExplainStop) => self.explain_stop(ctx),
            Err(e) => self.refuse(ctx, refusal_of(&e), &e.to_string()),
        }
    }

    /// Checks a start request against the session's own limits and the script policy.
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
        if let Some(script) = &request.script {
            self.identity()
                .may_run_custom_scripts(config)
                .map_err(|m| (Refusal::Forbidden, m.to_owned()))?;
            if request.record && self.identity().role != crate::config::Role::Operator {
                return Err((
                    Refusal::Forbidden,
                    "recording a script needs an operator token".into(),
                ));
            }
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
        if let Some(name) = request.watch.clone() {
            return self.join_watch(&name, request.compact, ctx);
        }
        let planned = plan::plan(&self.id, &request, self.config(), self.identity().role);
        let plan = match planned {
            Ok(plan) => plan,
            Err(PlanError::Refused(reason, message)) => return self.refuse(ctx, reason, &message),
            Err(PlanError::Compile(message)) => {
                Event::ConsumerFailed {
                    kind: Failure::Compile,
                    message: &message,
                }
                .emit();
                return self.send_error(ctx, "compile", &message);
            }
        };
        self.replace_with(plan, request.compact, ctx);
    }

    /// Runs `plan` in this session's encoding, after the program it watches has finished.
    fn replace_with(&mut self, plan: Plan, compact: bool, ctx: &mut ws::WebsocketContext<Self>) {
        let encoding = match (self.dialect, compact) {
            (Encoding::Legacy2011, _) => Encoding::Legacy2011,
            (_, true) => Encoding::Compact,
            (_, false) => Encoding::V1,
        };
        self.last_start = Some(Instant::now());
        if self.watch.is_some() {
            // The watched program's final frame and `stopped` go out before this one starts.
            self.queued = Some((plan, encoding));
            return self.leave(ctx, "replaced", AfterFinish::Stay);
        }
        self.join(plan, encoding, ctx);
    }

    /// Joins a configured watch's program by name, with the watch's own parameters (planned as
    /// the operator who configured it: joining is viewing, whatever the session's role).
    fn join_watch(&mut self, name: &str, compact: bool, ctx: &mut ws::WebsocketContext<Self>) {
        let config = self.config();
        let Some(watch) = config.watches.iter().find(|w| w.name == name) else {
            let names: Vec<&str> = config.watches.iter().map(|w| w.name.as_str()).collect();
            let message = format!("no watch {name:?}; watches: {}", names.join(", "));
            return self.refuse(ctx, Refusal::BadRequest, &message);
        };
        let request = watch.start_request(config.tick_ms);
        let mut plan = match plan::plan(&self.id, &request, config, crate::config::Role::Operator) {
            Ok(plan) => plan,
            Err(PlanError::Refused(_, message) | PlanError::Compile(message)) => {
                return self.send_error(ctx, "tracer", &format!("watch {name}: {message}"));
            }
        };
        plan.watch = Some(name.to_owned());
        self.replace_with(plan, compact, ctx);
    }

    /// Joins the program `plan` names (the registry starts it when none runs); `started`
    /// comes from the program once it runs.
    fn join(&mut self, plan: Plan, encoding: Encoding, ctx: &mut ws::WebsocketContext<Self>) {
        self.generation += 1;
        let generation = self.generation;
        self.watch = Some(Watch {
            generation,
            program: None,
            encoding,
            started: false,
            sent: 0,
            acked: 0,
            finishing: None,
        });
        let member = Member {
            session: self.id.clone(),
            generation,
            recipient: ctx.address().recipient(),
            encoding,
        };
        self.shared
            .programs
            .send(Join { plan, member })
            .into_actor(self)
            .map(move |result, act, ctx| {
                let Some(watch) = act.watch.as_mut().filter(|w| w.generation == generation) else {
                    return; // left meanwhile; the registry had the leave after the join
                };
                match result {
                    Ok(Ok(joined)) => watch.program = Some(joined.addr),
                    Ok(Err(refusal @ ProgramRefusal::Capacity { .. })) => {
                        act.watch = None;
                        act.refuse(ctx, Refusal::MaxPrograms, &refusal.to_string());
                    }
                    Ok(Err(refusal @ ProgramRefusal::NoStore(_))) => {
                        act.watch = None;
                        act.refuse(ctx, Refusal::Unsupported, &refusal.to_string());
                    }
                    Ok(Err(refusal @ ProgramRefusal::WatchDown { .. })) => {
                        act.watch = None;
                        act.send_error(ctx, "tracer", &refusal.to_string());
                    }
                    Err(e) => {
                        act.watch = None;
                        act.internal_error(&format!("program registry lost: {e}"), ctx);
                    }
                }
            })
            .spawn(ctx);
    }

    /// Leaves the watched program. A last viewer's program is flushed: its final frame comes
    /// (bpftrace and DTrace run `END`), then `stopped`, then `after`. A program others still
    /// watch runs on: `stopped` comes at once. Nothing watched: `stopped` (for `stop`).
    fn leave(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reason: &'static str,
        after: AfterFinish,
    ) {
        if reason == "client" {
            self.queued = None; // a stop also cancels a start that waited for the flush
        }
        let Some(watch) = self.watch.as_mut() else {
            if matches!(after, AfterFinish::Stay) {
                self.send(ctx, ServerMessage::Stopped { reason });
            }
            return self.after_finish(ctx, after);
        };
        if let Some((pending, pending_after)) = &mut watch.finishing {
            // Already leaving: the latest reason is the one the client hears; a close wins.
            *pending = reason;
            if let AfterFinish::Close(_) = after {
                *pending_after = after;
            }
            return;
        }
        watch.finishing = Some((reason, after));
        let generation = watch.generation;
        self.shared
            .programs
            .send(registry::Leave {
                session: self.id.clone(),
                flush: true,
            })
            .into_actor(self)
            .map(move |result, act, ctx| {
                if !act.watches(generation) {
                    return; // the final frame came first and ended the watch
                }
                match result {
                    // The program had no other viewer: its `Final` event ends the watch.
                    Ok(Left::Ending) => {}
                    Ok(Left::Continues | Left::Gone) | Err(_) => act.end_watch(ctx),
                }
            })
            .spawn(ctx);
    }

    /// Whether the watch of join number `generation` is still this session's.
    fn watches(&self, generation: u64) -> bool {
        self.watch
            .as_ref()
            .is_some_and(|w| w.generation == generation)
    }

    /// The watch is over: `stopped` with the reason asked for, then whatever was to follow.
    fn end_watch(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        self.generation += 1;
        let Some(watch) = self.watch.take() else {
            return;
        };
        let (reason, after) = watch.finishing.unwrap_or(("client", AfterFinish::Stay));
        Event::ProgramLeft {
            session: &self.id,
            reason,
        }
        .emit();
        self.send(ctx, ServerMessage::Stopped { reason });
        self.after_finish(ctx, after);
    }

    fn after_finish(&mut self, ctx: &mut ws::WebsocketContext<Self>, after: AfterFinish) {
        match after {
            AfterFinish::Close(reason) => {
                self.queued = None;
                ctx.close(reason);
                ctx.stop();
            }
            AfterFinish::Stay => {
                if let Some((plan, encoding)) = self.queued.take() {
                    self.join(plan, encoding, ctx);
                }
            }
        }
    }

    /// Starts (or replaces) the explain companion on the watched program; `explain_started`
    /// comes from the program once it runs.
    fn explain(&mut self, request: protocol::ExplainRequest, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.watch.as_ref().is_some_and(|w| w.started) {
            return self.refuse(
                ctx,
                Refusal::BadRequest,
                "explain: nothing is running; start (or join) a program first",
            );
        }
        let explain = registry::Explain {
            session: self.id.clone(),
            role: self.identity().role,
            request,
        };
        self.shared
            .programs
            .send(explain)
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(Ok(_)) => {}
                Ok(Err((reason, message))) => act.refuse(ctx, reason, &message),
                Err(e) => act.internal_error(&format!("program registry lost: {e}"), ctx),
            })
            .spawn(ctx);
    }

    /// Stops the explain companion; `explain_stopped` comes from the program, or at once when
    /// none ran.
    fn explain_stop(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let stop = registry::ExplainStop {
            session: self.id.clone(),
        };
        self.shared
            .programs
            .send(stop)
            .into_actor(self)
            .map(|result, act, ctx| {
                if !matches!(result, Ok(Some(_))) {
                    let message = ServerMessage::ExplainStopped {
                        explain: None,
                        reason: "client",
                    };
                    act.send(ctx, message);
                }
            })
            .spawn(ctx);
    }

    /// Frames `from..=to` again from the program's ring, as one `history` message.
    fn fetch(&mut self, from: u64, to: u64, ctx: &mut ws::WebsocketContext<Self>) {
        let Some((program, generation, encoding)) = self
            .watch
            .as_ref()
            .and_then(|w| Some((w.program.clone()?, w.generation, w.encoding)))
        else {
            return self.refuse(ctx, Refusal::BadRequest, "fetch: nothing is running");
        };
        program
            .send(FetchFrames { from, to })
            .into_actor(self)
            .map(move |result, act, ctx| {
                if !act.watches(generation) {
                    return;
                }
                if let Ok(frames) = result {
                    act.send_history(ctx, encoding, from, to, &frames);
                }
            })
            .spawn(ctx);
    }

    fn send_history(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        encoding: Encoding,
        from: u64,
        to: u64,
        frames: &[Arc<EncodedFrame>],
    ) {
        let bytes = if encoding == Encoding::Compact {
            let parts: Vec<&[u8]> = frames.iter().filter_map(|f| f.compact.as_deref()).collect();
            let message = compact::history(&parts);
            let n = message.len();
            ctx.binary(message);
            n
        } else {
            let text =
                protocol::encode_history(from, to, frames.iter().filter_map(|f| f.json.as_deref()));
            let n = text.len();
            ctx.text(text);
            n
        };
        Event::FrameSent {
            encoding: encoding_label(encoding),
            bytes,
        }
        .emit();
    }

    /// Sends one frame in this viewer's encoding, unless it is behind.
    fn deliver(&mut self, frame: &EncodedFrame, ctx: &mut ws::WebsocketContext<Self>, last: bool) {
        let Some(watch) = self.watch.as_mut() else {
            return;
        };
        // A browser that has not read the last frames gets no more until it catches up:
        // memory stays bounded, and the frames it missed stay in the program's ring. The
        // final frame goes out regardless: it is the last.
        if !last && watch.sent.saturating_sub(watch.acked) >= MAX_FRAMES_IN_FLIGHT {
            Event::FrameDropped { session: &self.id }.emit();
            return;
        }
        let encoding = watch.encoding;
        let bytes = match (encoding, &frame.compact, &frame.json, &frame.legacy) {
            (Encoding::Compact, Some(bytes), _, _) => {
                let n = bytes.len();
                ctx.binary(bytes.clone());
                n
            }
            (Encoding::Legacy2011, _, _, Some(text)) => {
                let n = text.len();
                ctx.text(text.clone());
                n
            }
            (_, _, Some(text), _) => {
                let n = text.len();
                ctx.text(text.clone());
                n
            }
            _ => return,
        };
        watch.sent += 1;
        ctx.ping(&watch.sent.to_be_bytes());
        self.frames += 1;
        Event::FrameSent {
            encoding: encoding_label(encoding),
            bytes,
        }
        .emit();
    }

    /// The browser answered the ping sent after its n-th frame: it has read that far.
    fn acknowledge(&mut self, payload: &[u8]) {
        let (Ok(bytes), Some(watch)) = (<[u8; 8]>::try_from(payload), self.watch.as_mut()) else {
            return;
        };
        watch.acked = watch.acked.max(u64::from_be_bytes(bytes));
    }

    fn internal_error(&self, message: &str, ctx: &mut ws::WebsocketContext<Self>) {
        Event::ConsumerFailed {
            kind: Failure::Internal,
            message,
        }
        .emit();
        self.send_error(ctx, "internal", message);
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

/// The `encoding` label of `heat_frame_bytes_total`.
fn encoding_label(encoding: Encoding) -> &'static str {
    match encoding {
        Encoding::V1 => "json",
        Encoding::Compact => "compact",
        Encoding::Legacy2011 => "legacy",
    }
}

impl Handler<ToViewer> for Session {
    type Result = ();

    fn handle(&mut self, message: ToViewer, ctx: &mut Self::Context) {
        let Some(watch) = self
            .watch
            .as_mut()
            .filter(|w| w.generation == message.generation)
        else {
            return; // from a program this session left
        };
        match message.event {
            ViewerEvent::Started {
                info,
                history,
                viewers,
                next_seq,
                recording,
                dictionary,
            } => {
                watch.started = true;
                let encoding = watch.encoding;
                let excluded = info.excluded.as_slice();
                self.send(
                    ctx,
                    ServerMessage::Started {
                        session: &self.id,
                        backend: info.backend.as_str(),
                        tick_ms: info.tick_ms,
                        preset: info.preset,
                        unit: info.unit,
                        startup_ms: info.startup.as_millis() as u64,
                        aggregations: &info.aggregations,
                        engine: info.engine.as_ref().map(|e| e.0),
                        notes: info.engine.as_ref().map(|e| e.1.as_slice()),
                        fallback: info.fallback.as_deref(),
                        excluded: (!excluded.is_empty()).then_some(excluded),
                        program: message.program,
                        shared: info.shared,
                        viewers,
                        first_seq: history.first().map_or(next_seq, |f| f.seq),
                        recording: recording.as_deref(),
                    },
                );
                // A compact viewer learns every key before any frame that uses one.
                if let (Encoding::Compact, Some(dictionary)) = (encoding, dictionary) {
                    ctx.binary(dictionary);
                }
                if let (Some(first), Some(last)) = (history.first(), history.last()) {
                    let (from, to) = (first.seq, last.seq);
                    self.send_history(ctx, encoding, from, to, &history);
                }
            }
            ViewerEvent::Frame(frame) => self.deliver(&frame, ctx, false),
            ViewerEvent::Viewers(count) => self.send(ctx, ServerMessage::Viewers { count }),
            ViewerEvent::Explain(event) => self.explain_event(message.program, event, ctx),
            ViewerEvent::Final(result) => {
                match result {
                    Ok(Some(frame)) => self.deliver(&frame, ctx, true),
                    Ok(None) => {}
                    Err(failure) => self.send_error(ctx, failure.code, &failure.message),
                }
                self.end_watch(ctx);
            }
            ViewerEvent::Failed(failure) => {
                let started = watch.started;
                self.send_error(ctx, failure.code, &failure.message);
                if started {
                    if let Some(w) = self.watch.as_mut() {
                        w.finishing = Some((failure.reason, AfterFinish::Stay));
                    }
                    self.end_watch(ctx);
                } else {
                    self.generation += 1;
                    self.watch = None;
                    if let Some((plan, encoding)) = self.queued.take() {
                        self.join(plan, encoding, ctx);
                    }
                }
            }
        }
    }
}

impl Session {
    fn explain_event(
        &mut self,
        program: u64,
        event: crate::program::explain::ExplainEvent,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        use crate::program::explain::ExplainEvent;
        match event {
            ExplainEvent::Started {
                id,
                preset,
                captures,
                band,
                keys,
                backend,
            } => self.send(
                ctx,
                ServerMessage::ExplainStarted {
                    explain: id,
                    program,
                    preset,
                    backend: backend.as_str(),
                    band,
                    keys: &keys,
                    captures,
                },
            ),
            ExplainEvent::Tick(text) => {
                if self.dialect != Encoding::Legacy2011 {
                    ctx.text(text.to_string());
                }
            }
            ExplainEvent::Failed {
                id,
                code,
                message,
                reason,
            } => {
                self.send_error(ctx, code, &message);
                let stopped = ServerMessage::ExplainStopped {
                    explain: Some(id),
                    reason,
                };
                self.send(ctx, stopped);
            }
            ExplainEvent::Stopped { id, reason } => {
                let stopped = ServerMessage::ExplainStopped {
                    explain: Some(id),
                    reason,
                };
                self.send(ctx, stopped);
            }
        }
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
        _ if ms.is_multiple_of(1000) => format!("{} s", ms / 1000),
        _ => format!("{:.1} s", ms as f64 / 1000.0),
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
            } else if act.watch.is_none() && act.activity.elapsed() > idle_limit {
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
                    act.shared
                        .programs
                        .send(registry::ListRunning)
                        .into_actor(act)
                        .map(|running, act, ctx| act.hello(ctx, &running.unwrap_or_default()))
                        .wait(ctx);
                }
                Ok(Err(rejection)) => act.close(ctx, CloseCode::Again, rejection.to_string()),
                Err(_) => act.close(ctx, CloseCode::Error, "supervisor gone".into()),
            })
            .wait(ctx);
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if self.watch.take().is_some() {
            // The connection is gone: a program nobody else watches ends now, unflushed.
            self.shared.programs.do_send(registry::Leave {
                session: self.id.clone(),
                flush: false,
            });
        }
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
            ws::Message::Close(reason) => self.leave(ctx, "client", AfterFinish::Close(reason)),
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
}
