//! The websocket session actor: one per browser connection. It is admitted by the supervisor,
//! owns at most one running program (a consumer on its own thread), turns its interval tick
//! into walks and frames, and frees the consumer when the program or the connection ends.

pub mod protocol;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws::{self, CloseCode, CloseReason};

use self::protocol::{ClientMessage, ProtocolError, ServerMessage, StartRequest, PROTOCOL_VERSION};
use crate::config::{Config, TICK_MS_RANGE};
use crate::consumer::{
    self, Backend, Begin, ConsumerActor, ConsumerError, Halt, KillSwitch, ProgramSpec, Walk,
};
use crate::presets::{self, KeyNames, Preset, ProcessFilter};
use crate::supervisor::{Admit, Leave, Supervisor};
use crate::telemetry::Event;

/// How often heartbeat pings are sent.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long a client may stay silent (no pong, no message) before it is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The backends a session can run, as announced in `hello`: `ebpf` only where the native
/// programs loaded at start-up (`consumer::ebpf::probe`).
fn backends() -> &'static [&'static str] {
    match consumer::ebpf::support() {
        Some(Err(_)) | None => &["bpftrace"],
        Some(Ok(())) => &["ebpf", "bpftrace"],
    }
}

static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// What every session shares: configuration and the supervisor.
pub struct Shared {
    pub config: Config,
    pub supervisor: Addr<Supervisor>,
}

/// One browser connection.
pub struct Session {
    id: String,
    peer: String,
    shared: Arc<Shared>,
    heartbeat: Instant,
    admitted: bool,
    /// Bumped by every start and stop, so late answers from a replaced consumer are ignored.
    generation: u64,
    run: Option<Run>,
    frames: u64,
}

/// A program this session runs (or is starting).
struct Run {
    generation: u64,
    consumer: Addr<ConsumerActor>,
    kill: Option<KillSwitch>,
    tick: Option<SpawnHandle>,
    seq: u64,
    walking: bool,
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
    pub fn new(shared: Arc<Shared>, peer: String) -> Session {
        Session {
            id: format!("s-{:x}", NEXT_SESSION.fetch_add(1, Ordering::Relaxed)),
            peer,
            shared,
            heartbeat: Instant::now(),
            admitted: false,
            generation: 0,
            run: None,
            frames: 0,
        }
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, message: ServerMessage<'_>) {
        ctx.text(message.to_text());
    }

    fn send_error(&self, ctx: &mut ws::WebsocketContext<Self>, code: &str, message: &str) {
        self.send(ctx, ServerMessage::Error { code, message });
    }

    fn hello(&self, ctx: &mut ws::WebsocketContext<Self>) {
        self.send(
            ctx,
            ServerMessage::Hello {
                protocol: PROTOCOL_VERSION,
                server: "heat-actix",
                version: env!("CARGO_PKG_VERSION"),
                session: &self.id,
                tick_ms: self.shared.config.tick_ms,
                tick_ms_range: [*TICK_MS_RANGE.start(), *TICK_MS_RANGE.end()],
                backends: backends(),
                presets: presets::PRESETS,
            },
        );
    }

    fn on_text(&mut self, text: &str, ctx: &mut ws::WebsocketContext<Self>) {
        match protocol::parse_client_message(text) {
            Ok(ClientMessage::Start(request)) => self.start(request, ctx),
            Ok(ClientMessage::Stop) => {
                self.stop_run(ctx);
                self.send(ctx, ServerMessage::Stopped { reason: "client" });
            }
            Err(e) => self.send_error(ctx, e.code(), &e.to_string()),
        }
    }

    fn start(&mut self, request: StartRequest, ctx: &mut ws::WebsocketContext<Self>) {
        let (program, preset) = match resolve(&request) {
            Ok(resolved) => resolved,
            Err((code, message)) => return self.send_error(ctx, code, &message),
        };
        let (backend, fallback) = match choose_backend(&self.id, request.backend.as_deref(), preset)
        {
            Ok(choice) => choice,
            Err(message) => return self.send_error(ctx, "unsupported", &message),
        };
        let tick_ms = request.tick_ms.unwrap_or(self.shared.config.tick_ms);
        if !TICK_MS_RANGE.contains(&tick_ms) {
            let message = format!(
                "tick_ms {tick_ms} is not in {}..={}",
                TICK_MS_RANGE.start(),
                TICK_MS_RANGE.end()
            );
            return self.send_error(ctx, "bad_request", &message);
        }

        if self.stop_run(ctx) {
            self.send(ctx, ServerMessage::Stopped { reason: "replaced" });
        }
        let generation = self.generation;
        let consumer = consumer::spawn(
            backend,
            fallback,
            self.id.clone(),
            program,
            &self.shared.config,
        );
        self.run = Some(Run {
            generation,
            consumer: consumer.clone(),
            kill: None,
            tick: None,
            seq: 0,
            walking: false,
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
        let (generation, seq) = (run.generation, run.seq);
        run.consumer
            .send(Walk { seq })
            .into_actor(self)
            .map(move |result, act, ctx| {
                let Some(run) = act.run.as_mut().filter(|r| r.generation == generation) else {
                    return;
                };
                run.walking = false;
                match result {
                    Ok(Ok(output)) => {
                        ctx.text(output.frame);
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
                        act.send(
                            ctx,
                            ServerMessage::Stopped {
                                reason: "tracer_exited",
                            },
                        );
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

    fn consumer_failed(&self, e: &ConsumerError, ctx: &mut ws::WebsocketContext<Self>) {
        Event::ConsumerFailed {
            kind: e.kind(),
            message: &e.to_string(),
        }
        .emit();
        let code = match e {
            ConsumerError::Compile(_) => "compile",
            _ => "tracer",
        };
        self.send_error(ctx, code, &e.to_string());
    }

    fn internal_error(&self, message: &str, ctx: &mut ws::WebsocketContext<Self>) {
        Event::ConsumerFailed {
            kind: "internal",
            message,
        }
        .emit();
        self.send_error(ctx, "internal", message);
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
}

/// The backend for a start request and whether it may fall back to bpftrace: a preset with
/// a native version runs natively unless bpftrace is asked for; a forced `ebpf` never falls
/// back. Errors name what this server cannot do.
fn choose_backend(
    session: &str,
    asked: Option<&str>,
    preset: Option<&'static Preset>,
) -> Result<(Backend, bool), String> {
    let native = preset.and_then(|p| consumer::ebpf::find(p.name));
    let support = consumer::ebpf::support();
    match asked {
        Some("bpftrace") => Ok((Backend::Bpftrace, false)),
        Some("ebpf") => match (preset, native, support) {
            (None, _, _) => {
                Err("the ebpf backend runs presets only; scripts run on bpftrace".into())
            }
            (Some(p), None, _) => Err(format!("preset {:?} has no native eBPF version", p.name)),
            (_, _, Some(Err(reason))) => Err(format!("the ebpf backend cannot run here: {reason}")),
            _ => Ok((Backend::Ebpf, false)),
        },
        None => match (native, support) {
            (None, _) => Ok((Backend::Bpftrace, false)),
            (Some(n), Some(Err(reason))) => {
                tracing::info!(%session, preset = n.preset, %reason, "Native eBPF unavailable; using bpftrace.");
                Ok((Backend::Bpftrace, false))
            }
            (Some(_), _) => Ok((Backend::Ebpf, true)),
        },
        Some(other) => Err(format!(
            "unknown backend {other:?}; this server has {:?}",
            backends()
        )),
    }
}

/// The program a start request names (text with any process filter applied, key naming,
/// preset), and its preset.
fn resolve(
    request: &StartRequest,
) -> Result<(ProgramSpec, Option<&'static Preset>), (&'static str, String)> {
    let filter = ProcessFilter {
        pid: request.pid,
        comm: request.comm.clone(),
    };
    if let Some(name) = &request.preset {
        let preset = presets::find(name).ok_or_else(|| {
            let known: Vec<&str> = presets::PRESETS.iter().map(|p| p.name).collect();
            (
                "unknown_preset",
                format!("no preset {name:?}; presets: {}", known.join(", ")),
            )
        })?;
        let script = preset
            .script_with(&filter)
            .map_err(|message| ("bad_request", message))?;
        let program = ProgramSpec {
            script,
            key_names: preset.key_names,
            preset: Some(preset),
            filter,
        };
        return Ok((program, Some(preset)));
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
        preset: None,
        filter: ProcessFilter::default(),
    };
    match request.lang.as_deref() {
        Some("bpftrace") => Ok((program(script), None)),
        Some("d") => Err((
            "unsupported",
            "D scripts need the DTrace backend, which this server does not have".into(),
        )),
        other => Err((
            "unsupported",
            format!("unknown lang {:?}; use \"bpftrace\"", other.unwrap_or("")),
        )),
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(HEARTBEAT_INTERVAL, |act, ctx| {
            if Instant::now().duration_since(act.heartbeat) > CLIENT_TIMEOUT {
                tracing::info!(session = %act.id, "Client timed out.");
                ctx.stop();
            } else {
                ctx.ping(b"");
            }
        });
        let admit = Admit {
            session: self.id.clone(),
            peer: self.peer.clone(),
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
                Ok(Err(rejection)) => {
                    ctx.close(Some(CloseReason {
                        code: CloseCode::Again,
                        description: Some(rejection.to_string()),
                    }));
                    ctx.stop();
                }
                Err(_) => {
                    ctx.close(Some(CloseReason {
                        code: CloseCode::Error,
                        description: Some("supervisor gone".into()),
                    }));
                    ctx.stop();
                }
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
                ctx.stop();
                return;
            }
        };
        self.heartbeat = Instant::now();
        match message {
            ws::Message::Text(text) => self.on_text(&text, ctx),
            ws::Message::Binary(_) => {
                let e = ProtocolError::BadRequest(
                    "binary frames are not part of the protocol; send JSON text".into(),
                );
                self.send_error(ctx, e.code(), &e.to_string());
            }
            ws::Message::Ping(bytes) => ctx.pong(&bytes),
            ws::Message::Pong(_) => {}
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            ws::Message::Continuation(_) | ws::Message::Nop => {}
        }
    }
}

impl Handler<Evict> for Session {
    type Result = ();

    fn handle(&mut self, _: Evict, ctx: &mut Self::Context) {
        ctx.close(Some(CloseReason {
            code: CloseCode::Away,
            description: Some("server shutting down".into()),
        }));
        ctx.stop();
    }
}
