//! Who owns a running program: one [`Program`] actor per distinct running tracing program,
//! holding its consumer (on the consumer's own thread), its tick, the ring of its recent frames
//! and its members. Sessions never touch a consumer: they join a program through the
//! [`registry::Programs`] actor, get `started`, the ring as history and then every frame, and
//! leave. The registry decides when a program ends (its last member left); the program only
//! does what it is told and reports how it ended.

pub mod explain;
pub mod plan;
pub mod recorder;
pub mod registry;
pub mod trigger;
pub mod webhook;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;

use crate::aggregation::AggregationInfo;
use crate::consumer::{
    self, cost, Begin, ConsumerActor, ConsumerError, EncodedFrame, Encoding, Encodings, Finish,
    Halt, KillSwitch, Walk,
};
use crate::telemetry::{Event, Failure};

pub use self::plan::{Plan, ProgramKey};

/// The wall clock in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A program's identity for the lifetime of the server (never reused).
pub type ProgramId = u64;

/// What a viewer is told when a program started (or when it joins one already running).
#[derive(Debug)]
pub struct StartedInfo {
    pub backend: consumer::Backend,
    pub tick_ms: u64,
    pub preset: Option<&'static str>,
    pub unit: Option<&'static str>,
    pub startup: Duration,
    pub aggregations: Vec<AggregationInfo>,
    /// For D scripts: the engine that runs them and its notes on approximations.
    pub engine: Option<(&'static str, Vec<String>)>,
    /// Why a preset runs on bpftrace when its native version was the first choice.
    pub fallback: Option<String>,
    /// Whether other sessions may join this program.
    pub shared: bool,
    /// What the program leaves out of its picture (heat-actix itself).
    pub excluded: Vec<crate::presets::Excluded>,
}

/// Why a program could not start or stopped running: the wire code, the metric kind, and
/// the tracer's words.
#[derive(Debug, Clone)]
pub struct ProgramFailure {
    pub code: &'static str,
    pub kind: Failure,
    pub message: String,
    /// The `stopped` reason when the program was running.
    pub reason: &'static str,
}

impl ProgramFailure {
    fn from_consumer(e: &ConsumerError) -> ProgramFailure {
        let (code, reason) = match e {
            ConsumerError::Compile(_) => ("compile", "tracer_exited"),
            ConsumerError::OverBudget { .. } => ("budget", "budget"),
            _ => ("tracer", "tracer_exited"),
        };
        ProgramFailure {
            code,
            kind: e.kind(),
            message: e.to_string(),
            reason,
        }
    }

    /// The program's BPF programs used more CPU than its budget.
    fn over_budget(over: cost::OverBudget) -> ProgramFailure {
        ProgramFailure {
            code: "budget",
            kind: Failure::Budget,
            message: over.to_string(),
            reason: "budget",
        }
    }

    fn internal(message: String) -> ProgramFailure {
        ProgramFailure {
            code: "internal",
            kind: Failure::Internal,
            message,
            reason: "tracer_exited",
        }
    }
}

/// What a program tells one of its viewers.
#[derive(Debug, Clone)]
pub enum ViewerEvent {
    /// The program runs; `history` holds its recent frames (oldest first, consecutive `seq`s,
    /// possibly none), sent before any later frame.
    Started {
        info: Arc<StartedInfo>,
        history: Vec<Arc<EncodedFrame>>,
        viewers: usize,
        /// The `seq` of the next live frame.
        next_seq: u64,
        /// The name this program's ticks are recorded under, if they are.
        recording: Option<String>,
        /// The compact key dictionary so far, for a compact viewer (before its history).
        dictionary: Option<Bytes>,
    },
    /// One tick's frame, the same bytes for every viewer.
    Frame(Arc<EncodedFrame>),
    /// The number of viewers changed since the last tick.
    Viewers(usize),
    /// The last frame, after `Finish` (none when the program had not started yet, so had
    /// nothing to flush); `stopped` follows at the viewer's end.
    Final(Result<Option<Arc<EncodedFrame>>, ProgramFailure>),
    /// The program could not start, or died: an error, then `stopped` (when it had started).
    Failed(ProgramFailure),
    /// About this viewer's explain companion.
    Explain(explain::ExplainEvent),
}

/// An event from program `program` to a viewer, for the viewer's join number `generation`.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct ToViewer {
    pub program: ProgramId,
    pub generation: u64,
    pub event: ViewerEvent,
}

/// A session watching a program.
#[derive(Clone)]
pub struct Member {
    pub session: String,
    /// The session's join number: events it gets carry it, so a session that left and joined
    /// again ignores the old program's.
    pub generation: u64,
    pub recipient: Recipient<ToViewer>,
    pub encoding: Encoding,
}

/// Add a viewer (from the registry, which counts members).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AddMember(pub Member);

/// Remove a viewer that leaves while others stay (from the registry).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoveMember(pub String);

/// End the program politely (its last member left): walk one last time and hand the final
/// frame to `to`, if that member still wants it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FinishProgram {
    pub to: Option<String>,
}

/// Record this program's ticks under `name` from now on (a session asked to record it).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartRecording {
    pub name: String,
    pub recorder: Addr<recorder::Recorder>,
}

/// End the program now (its last member went away), without a final walk.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HaltProgram;

/// Frames `from..=to` of the ring, for a viewer that skipped them.
#[derive(Message)]
#[rtype(result = "Vec<Arc<EncodedFrame>>")]
pub struct FetchFrames {
    pub from: u64,
    pub to: u64,
}

/// Start (or replace) the explain companion of member `session` (from the registry, which
/// checked the role, the budget and `limits.max_explains`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StartExplain {
    pub session: String,
    pub plan: explain::ExplainPlan,
}

/// Stop the explain companion of member `session`, if it is `id` (any, when `None`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct StopExplain {
    pub session: String,
    pub id: Option<u64>,
    pub reason: &'static str,
}

/// Where a program is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    Running,
    Finishing,
}

/// One running program.
pub struct Program {
    id: ProgramId,
    plan: Arc<Plan>,
    registry: Addr<registry::Programs>,
    /// Where this program's ticks are recorded: the name they go under (a watch's name, or
    /// one made for a session that asked to record) and the recorder.
    recording: Option<(String, Addr<recorder::Recorder>)>,
    /// Frames kept for joiners and for `fetch` (`limits.channel_history_ticks`).
    ring_capacity: usize,
    config: Arc<crate::config::Config>,
    state: State,
    consumer: Option<Addr<ConsumerActor>>,
    kill: Option<KillSwitch>,
    tick: Option<SpawnHandle>,
    info: Option<Arc<StartedInfo>>,
    members: HashMap<String, Member>,
    ring: VecDeque<Arc<EncodedFrame>>,
    /// The latest compact key dictionary (every key the ring's compact frames use).
    dictionary: Option<Bytes>,
    /// The last frame number walked.
    seq: u64,
    walking: bool,
    /// The viewer count changed since viewers were last told.
    viewers_changed: bool,
    /// A watch's tail triggers, fed every published tick.
    triggers: Vec<WatchTrigger>,
    /// The CPU its BPF programs may use (`plan.max_cpu_percent`), over its last few ticks.
    budget: cost::Budget,
    /// The watch whose ticks go to `/metrics` (`export = true`).
    export: Option<String>,
    /// Members' explain companions, by session.
    companions: HashMap<String, explain::Companion>,
}

/// One `[[watch.trigger]]` of the watch a program is.
struct WatchTrigger {
    state: trigger::Trigger,
    config: crate::config::TriggerConfig,
    /// False when the program has no aggregation it can read (told once, at start).
    usable: bool,
}

impl Program {
    pub fn new(
        id: ProgramId,
        plan: Arc<Plan>,
        config: Arc<crate::config::Config>,
        registry: Addr<registry::Programs>,
        recording: Option<(String, Addr<recorder::Recorder>)>,
    ) -> Program {
        let triggers = plan
            .watch
            .as_deref()
            .and_then(|name| config.watches.iter().find(|w| w.name == name))
            .map(|w| {
                w.triggers
                    .iter()
                    .map(|t| WatchTrigger {
                        state: trigger::Trigger::from_config(t),
                        config: t.clone(),
                        usable: true,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let export = plan
            .watch
            .clone()
            .filter(|w| crate::export::exports().exports(w));
        Program {
            id,
            export,
            budget: cost::Budget::new(plan.max_cpu_percent),
            plan,
            registry,
            recording,
            ring_capacity: config.limits.channel_history_ticks,
            config,
            state: State::Starting,
            consumer: None,
            kill: None,
            tick: None,
            info: None,
            members: HashMap::new(),
            ring: VecDeque::new(),
            dictionary: None,
            seq: 0,
            walking: false,
            viewers_changed: false,
            triggers,
            companions: HashMap::new(),
        }
    }

    /// The `program` label of this program's metrics: its preset's name, or `script`.
    fn label(&self) -> &'static str {
        self.plan.preset.map_or("script", |p| p.name)
    }

    /// Counts what the frame's tick cost in the metrics.
    fn count_cost(&self, frame: &EncodedFrame) {
        if let Some(sample) = frame.cost {
            let program = self.label();
            Event::ProgramCost { program, sample }.emit();
        }
    }

    /// Counts what the frame's tick cost and checks the CPU budget.
    fn account(&mut self, frame: &EncodedFrame) -> Result<(), cost::OverBudget> {
        self.count_cost(frame);
        let Some(sample) = frame.cost else {
            return Ok(());
        };
        let program = self.label();
        self.budget.observe(sample).inspect_err(|&over| {
            Event::ProgramOverBudget { program, over }.emit();
        })
    }

    /// JSON always (the ring serves joiners of either kind; compact frames are always made),
    /// the 2011 object only while a 2011 client watches.
    fn encodings(&self) -> Encodings {
        let encodings = self
            .members
            .values()
            .fold(Encodings::default().with(Encoding::V1), |e, m| {
                e.with(m.encoding)
            });
        Encodings {
            // The recorder stores typed ticks; triggers, the export and explain companions read them.
            typed: self.recording.is_some()
                || !self.triggers.is_empty()
                || self.export.is_some()
                || !self.companions.is_empty(),
            ..encodings
        }
    }

    fn tell(&self, member: &Member, event: ViewerEvent) {
        member.recipient.do_send(ToViewer {
            program: self.id,
            generation: member.generation,
            event,
        });
    }

    /// Sends `event` to every member; the fan-out is timed.
    fn broadcast(&self, event: ViewerEvent) {
        let began = Instant::now();
        for member in self.members.values() {
            self.tell(member, event.clone());
        }
        Event::FannedOut {
            viewers: self.members.len(),
            elapsed: began.elapsed(),
        }
        .emit();
    }

    fn joined(&self, member: &Member) {
        let Some(info) = &self.info else {
            return; // told with everyone once the program has started
        };
        // The 2011 dialect has no history; the ring holds no frames in its encoding.
        let history = match member.encoding {
            Encoding::Legacy2011 => Vec::new(),
            _ => self.ring.iter().cloned().collect(),
        };
        self.tell(
            member,
            ViewerEvent::Started {
                info: info.clone(),
                history,
                viewers: self.members.len(),
                next_seq: self.seq + 1,
                recording: self.recording.as_ref().map(|(name, _)| name.clone()),
                dictionary: self.dictionary.clone(),
            },
        );
    }

    /// The program died or could not start: members are told, the registry forgets it.
    fn fail(&mut self, failure: ProgramFailure, ctx: &mut Context<Self>) {
        Event::ConsumerFailed {
            kind: failure.kind,
            message: &failure.message,
        }
        .emit();
        let why = failure.message.clone();
        self.broadcast(ViewerEvent::Failed(failure));
        self.members.clear();
        self.registry.do_send(registry::Ended {
            program: self.id,
            why,
        });
        ctx.stop();
    }

    fn begin(&mut self, ctx: &mut Context<Self>) {
        let plan = self.plan.clone();
        let consumer = consumer::spawn(
            plan.backend,
            plan.fallback,
            format!("p-{:x}", self.id),
            plan.program.clone(),
            &self.config,
        );
        self.consumer = Some(consumer.clone());
        consumer
            .send(Begin)
            .into_actor(self)
            .map(move |result, act, ctx| {
                if act.state != State::Starting {
                    return; // halted meanwhile; dropping the consumer's address freed it
                }
                match result {
                    Ok(Ok(started)) => {
                        act.kill = started.kill_switch;
                        act.state = State::Running;
                        let tick = Duration::from_millis(plan.tick_ms);
                        act.tick = Some(ctx.run_interval(tick, |act, ctx| act.walk(ctx)));
                        let preset = plan.preset.map(|p| p.name);
                        Event::ProgramStarted {
                            program: act.id,
                            backend: started.backend,
                            preset,
                            startup: started.startup,
                        }
                        .emit();
                        act.info = Some(Arc::new(StartedInfo {
                            backend: started.backend,
                            tick_ms: plan.tick_ms,
                            preset,
                            unit: plan.preset.map(|p| p.unit),
                            startup: started.startup,
                            aggregations: started.aggregations,
                            engine: plan.engine.clone(),
                            fallback: started.fallback.or_else(|| plan.why_not_native.clone()),
                            shared: plan.key.is_some(),
                            excluded: plan.program.filter.excluded(),
                        }));
                        act.begin_run();
                        act.resolve_triggers();
                        if let (Some(watch), Some(info)) = (&act.export, &act.info) {
                            crate::export::exports().announce(watch, info.unit, &info.aggregations);
                        }
                        for member in act.members.values() {
                            act.joined(member);
                        }
                        // `started` told everyone the count.
                        act.viewers_changed = false;
                    }
                    Ok(Err(e)) => act.fail(ProgramFailure::from_consumer(&e), ctx),
                    Err(e) => act.fail(
                        ProgramFailure::internal(format!("consumer thread lost: {e}")),
                        ctx,
                    ),
                }
            })
            .spawn(ctx);
    }

    fn walk(&mut self, ctx: &mut Context<Self>) {
        let Some(consumer) = &self.consumer else {
            return;
        };
        if self.walking || self.state != State::Running {
            return; // the previous walk is still running; this tick is skipped, not queued
        }
        if std::mem::take(&mut self.viewers_changed) {
            self.broadcast(ViewerEvent::Viewers(self.members.len()));
        }
        self.walking = true;
        self.seq += 1;
        let seq = self.seq;
        consumer
            .send(Walk {
                seq,
                encodings: self.encodings(),
            })
            .into_actor(self)
            .map(|result, act, ctx| {
                act.walking = false;
                if act.state != State::Running {
                    // Finishing: this frame still goes out, before the final one.
                    if let (State::Finishing, Ok(Ok(frame))) = (act.state, result) {
                        act.count_cost(&frame);
                        act.publish(frame);
                    }
                    return;
                }
                match result {
                    Ok(Ok(frame)) => {
                        let within = act.account(&frame);
                        let snapshot = frame.snapshot.clone();
                        let seq = frame.seq;
                        // The frame that shows the cost goes out before the error that cites it.
                        act.publish(frame);
                        if let Err(over) = within {
                            act.fail(ProgramFailure::over_budget(over), ctx);
                        } else if let Some(snapshot) = snapshot {
                            act.explain_tick(seq, &snapshot, ctx);
                        }
                    }
                    // A slow tracer leaves a gap in `seq`; what it found goes into the next frame.
                    Ok(Err(e @ ConsumerError::WalkTimeout(_))) => Event::ConsumerFailed {
                        kind: e.kind(),
                        message: &e.to_string(),
                    }
                    .emit(),
                    Ok(Err(e)) => act.fail(ProgramFailure::from_consumer(&e), ctx),
                    Err(e) => act.fail(
                        ProgramFailure::internal(format!("consumer thread lost: {e}")),
                        ctx,
                    ),
                }
            })
            .spawn(ctx);
    }

    fn publish(&mut self, mut frame: EncodedFrame) {
        // The typed snapshot is for the triggers and the recorder only: it leaves the frame
        // before the frame is shared, so the ring holds wire bytes alone and the recorder gets
        // the one reference (no copy).
        let snapshot = frame.snapshot.take();
        if frame.resets_dictionary {
            // Older compact frames use ids that now name other keys: a joiner cannot read them.
            self.ring.clear();
        }
        if let Some(dictionary) = &frame.dictionary {
            self.dictionary = Some(dictionary.clone());
        }
        if let Some(snapshot) = &snapshot {
            self.observe_triggers(snapshot, frame.ts_ms);
            if let Some(watch) = &self.export {
                crate::export::exports().observe(watch, snapshot);
            }
        }
        if let (Some((watch, recorder)), Some(snapshot)) = (&self.recording, snapshot) {
            // Off the tick path: the recorder's own thread writes it.
            recorder.do_send(recorder::Record {
                watch: watch.clone(),
                seq: frame.seq,
                ts_ms: frame.ts_ms,
                interval_ms: frame.interval_ms,
                snapshot,
            });
        }
        let frame = Arc::new(frame);
        if self.ring_capacity > 0 {
            if self.ring.len() >= self.ring_capacity {
                self.ring.pop_front();
            }
            self.ring.push_back(frame.clone());
        }
        self.broadcast(ViewerEvent::Frame(frame));
    }

    /// Tells the recorder that this program's ticks from now on are a new run.
    fn begin_run(&self) {
        if let (Some((name, recorder)), Some(info)) = (&self.recording, &self.info) {
            recorder.do_send(recorder::BeginRun {
                watch: name.clone(),
                infos: info.aggregations.clone(),
                started_ms: now_ms(),
            });
        }
    }

    /// Settles which aggregation each trigger reads, now that the program announced them.
    fn resolve_triggers(&mut self) {
        let (Some(info), Some(watch)) = (&self.info, &self.plan.watch) else {
            return;
        };
        for t in &mut self.triggers {
            let announced = info
                .aggregations
                .iter()
                .map(|a| (a.name.as_str(), a.kind.is_histogram()));
            match t.state.resolve(announced) {
                Ok(()) => t.usable = true,
                Err(why) => {
                    t.usable = false;
                    Event::TriggerUnusable {
                        watch,
                        trigger: t.state.name(),
                        why: &why,
                    }
                    .emit();
                }
            }
        }
    }

    /// Feeds one tick to every trigger and acts on those that fire: pin, count, log, webhook.
    fn observe_triggers(&mut self, snapshot: &crate::aggregation::Snapshot, ts_ms: u64) {
        let Some(watch) = self.plan.watch.clone() else {
            return;
        };
        let fired: Vec<(trigger::Fired, crate::config::TriggerConfig)> = self
            .triggers
            .iter_mut()
            .filter(|t| t.usable)
            .filter_map(|t| Some((t.state.observe(snapshot, ts_ms)?, t.config.clone())))
            .collect();
        for (fired, config) in fired {
            self.fire(&watch, fired, &config);
        }
    }

    fn fire(&self, watch: &str, fired: trigger::Fired, config: &crate::config::TriggerConfig) {
        let from_ms = fired
            .fired_ms
            .saturating_sub(config.pin_before_s.saturating_mul(1000));
        let to_ms = fired
            .fired_ms
            .saturating_add(config.pin_after_s.saturating_mul(1000));
        Event::TriggerFired {
            watch,
            trigger: &fired.trigger,
            value: fired.value,
            fired_ms: fired.fired_ms,
            from_ms,
            to_ms,
        }
        .emit();
        if let Some((_, recorder)) = &self.recording {
            let pin = recorder.send(recorder::Pin {
                watch: watch.to_owned(),
                from_ms,
                // Retention keeps every row whose interval meets the range, so the tick
                // ending at `to_ms` stays too.
                to_ms,
                until_ms: fired
                    .fired_ms
                    .saturating_add(config.keep_s.saturating_mul(1000)),
                label: fired.trigger.clone(),
            });
            let (watch, trigger) = (watch.to_owned(), fired.trigger.clone());
            actix::spawn(async move {
                let error = match pin.await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => format!("recorder gone: {e}"),
                };
                Event::TriggerPinFailed {
                    watch: &watch,
                    trigger: &trigger,
                    error: &error,
                }
                .emit();
            });
        }
        if let Some(url) = &config.webhook {
            let payload = webhook::Payload {
                watch: watch.to_owned(),
                trigger: fired.trigger.clone(),
                fired_ms: fired.fired_ms,
                from_ms,
                to_ms,
                value: fired.value,
                permalink: format!(
                    "{}/?watch={watch}&from={from_ms}&to={to_ms}",
                    self.config.public_url()
                ),
            };
            let delivery = webhook::Delivery {
                url: url.clone(),
                timeout: Duration::from_millis(config.webhook_timeout_ms),
                retries: config.webhook_retries,
            };
            // A task of its own: a slow endpoint never holds up a tick.
            actix::spawn(webhook::deliver(delivery, payload));
        }
    }

    fn stop_consumer(&mut self) {
        if let Some(kill) = self.kill.take() {
            kill.kill();
        }
        if let Some(consumer) = self.consumer.take() {
            consumer.do_send(Halt);
        }
    }
}

impl Actor for Program {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.begin(ctx);
    }

    fn stopping(&mut self, _: &mut Context<Self>) -> Running {
        // Dropping a companion ends its tracer.
        self.companions.clear();
        self.stop_consumer();
        Event::ProgramStopped { program: self.id }.emit();
        Running::Stop
    }
}

impl Handler<AddMember> for Program {
    type Result = ();

    fn handle(&mut self, AddMember(member): AddMember, _: &mut Context<Self>) {
        // The others learn the new count at the next tick; the joiner from `started`.
        self.viewers_changed |= self.info.is_some();
        self.members.insert(member.session.clone(), member.clone());
        self.joined(&member);
    }
}

impl Handler<RemoveMember> for Program {
    type Result = ();

    fn handle(&mut self, RemoveMember(session): RemoveMember, _: &mut Context<Self>) {
        self.companions.remove(&session);
        self.viewers_changed |= self.members.remove(&session).is_some();
    }
}

impl Handler<FinishProgram> for Program {
    type Result = ();

    fn handle(&mut self, finish: FinishProgram, ctx: &mut Context<Self>) {
        let to = finish.to.and_then(|s| self.members.remove(&s));
        self.members.clear();
        self.companions.clear();
        let (State::Running, Some(consumer)) = (self.state, self.consumer.clone()) else {
            // Nothing was walked yet, so there is nothing to flush.
            if let Some(member) = &to {
                self.tell(member, ViewerEvent::Final(Ok(None)));
            }
            return ctx.stop();
        };
        self.state = State::Finishing;
        if let Some(tick) = self.tick.take() {
            ctx.cancel_future(tick);
        }
        // The member that asked gets the final frame, in the encoding it reads.
        let encodings = to.as_ref().map_or(Encodings::default(), |m| {
            Encodings::default().with(m.encoding)
        });
        if let Some(member) = &to {
            self.members.insert(member.session.clone(), member.clone());
        }
        let seq = self.seq + 1;
        consumer
            .send(Finish { seq, encodings })
            .into_actor(self)
            .map(move |result, act, ctx| {
                let last = match result {
                    Ok(Ok(frame)) => {
                        act.count_cost(&frame);
                        Ok(Some(Arc::new(frame)))
                    }
                    Ok(Err(e)) => {
                        let failure = ProgramFailure::from_consumer(&e);
                        Event::ConsumerFailed {
                            kind: failure.kind,
                            message: &failure.message,
                        }
                        .emit();
                        Err(failure)
                    }
                    Err(e) => Err(ProgramFailure::internal(format!(
                        "consumer thread lost: {e}"
                    ))),
                };
                if let Some(member) = &to {
                    act.tell(member, ViewerEvent::Final(last));
                }
                ctx.stop();
            })
            .spawn(ctx);
    }
}

impl Handler<StartRecording> for Program {
    type Result = ();

    fn handle(&mut self, start: StartRecording, _: &mut Context<Self>) {
        if self.recording.is_none() {
            self.recording = Some((start.name, start.recorder));
            self.begin_run(); // at once when running; else once it starts
        }
    }
}

impl Handler<HaltProgram> for Program {
    type Result = ();

    fn handle(&mut self, _: HaltProgram, ctx: &mut Context<Self>) {
        self.members.clear();
        self.companions.clear();
        self.state = State::Finishing;
        ctx.stop();
    }
}

impl Handler<FetchFrames> for Program {
    type Result = MessageResult<FetchFrames>;

    fn handle(&mut self, fetch: FetchFrames, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.ring
                .iter()
                .filter(|f| (fetch.from..=fetch.to).contains(&f.seq))
                .cloned()
                .collect(),
        )
    }
}
