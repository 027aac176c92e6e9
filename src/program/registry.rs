//! The program registry: "what runs" (a shared program's [`ProgramKey`], or a private
//! program's id) → the running [`Program`], its members, and `max_programs`. Being one actor,
//! it sees joins and leaves one at a time, so "the last member left" is decided in one place
//! and a program that is ending is never handed to a new member.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{
    AddMember, FinishProgram, HaltProgram, Member, Plan, Program, ProgramId, ProgramKey,
    RemoveMember,
};
use crate::config::{Config, Role};
use crate::consumer::Backend;
use crate::telemetry::{metrics, Event};

/// The first wait before a failed watch is started again; it doubles with each failure.
const WATCH_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two starts of a failing watch.
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often recorded watches get their retention applied (roll-ups, age, size).
const RETENTION_INTERVAL: Duration = Duration::from_secs(60);
/// The first retention pass after start-up, once the watches have started.
const RETENTION_FIRST: Duration = Duration::from_secs(5);
/// A watch that ran this long before failing starts again after the first wait.
const WATCH_HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A running program, as the registry knows it.
struct Entry {
    key: Option<ProgramKey>,
    addr: Addr<Program>,
    backend: Backend,
    /// `preset` name or `script`: the label of `heat_program_viewers`.
    kind: &'static str,
    members: BTreeSet<String>,
    /// The watch this program is: it keeps running without members.
    watch: Option<String>,
    /// The name its ticks are recorded under, if they are.
    recording: Option<String>,
}

/// How a watch has been doing, for its restart backoff.
#[derive(Debug, Default)]
struct WatchState {
    failures: u32,
    started: Option<Instant>,
}

/// Why a program was not started for a session.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramRefusal {
    /// `limits.max_programs` programs run already, and this start joins none of them.
    #[error(
        "{running} programs are running, the most this server runs at once \
         (limits.max_programs = {max}); join a running one (same preset and parameters) or \
         try again later"
    )]
    Capacity { running: usize, max: usize },
    /// `record` was asked for and the store cannot be opened.
    #[error("cannot record: {0}")]
    NoStore(String),
    /// A watch was joined by name while its program is down (between restarts).
    #[error("watch {watch} is not running now: its program failed and is restarted with backoff; try again shortly")]
    WatchDown { watch: String },
}

/// Every running program.
pub struct Programs {
    config: Arc<Config>,
    /// The store's writer, when watches record.
    recorder: Option<Addr<super::recorder::Recorder>>,
    next_id: ProgramId,
    running: HashMap<ProgramId, Entry>,
    shared: HashMap<ProgramKey, ProgramId>,
    /// The program each session watches (at most one).
    watching: HashMap<String, ProgramId>,
    watch_states: HashMap<String, WatchState>,
    /// Names sessions' recordings were made under (for retention).
    session_recordings: BTreeSet<String>,
    /// Explain companions running, by session: the program that owns each, and its id.
    explains: HashMap<String, (ProgramId, u64)>,
}

impl Programs {
    pub fn new(config: Arc<Config>, recorder: Option<Addr<super::recorder::Recorder>>) -> Programs {
        crate::export::exports().configure(&config);
        for backend in Backend::ALL {
            metrics()
                .programs_active
                .with_label_values(&[backend.as_str()])
                .set(0);
        }
        Programs {
            config,
            recorder,
            next_id: 1,
            running: HashMap::new(),
            shared: HashMap::new(),
            watching: HashMap::new(),
            watch_states: HashMap::new(),
            session_recordings: BTreeSet::new(),
            explains: HashMap::new(),
        }
    }

    /// Starts watch `name` as a pinned, shared program. A watch that cannot even be planned
    /// (its backend is missing, say) is retried like one that failed.
    fn start_watch(&mut self, name: &str, ctx: &mut Context<Self>) {
        let Some(watch) = self.config.watches.iter().find(|w| w.name == name) else {
            return;
        };
        let request = watch.start_request(self.config.tick_ms);
        let planned = super::plan::plan(name, &request, &self.config, Role::Operator);
        self.watch_states
            .entry(name.to_owned())
            .or_default()
            .started = Some(Instant::now());
        match planned {
            Ok(mut plan) => {
                plan.watch = Some(name.to_owned());
                if let Err(e) = self.launch(plan, None, ctx) {
                    self.watch_failed(name, &e.to_string(), ctx);
                }
            }
            Err(e) => {
                let message = match e {
                    super::plan::PlanError::Refused(_, m) | super::plan::PlanError::Compile(m) => m,
                };
                self.watch_failed(name, &message, ctx);
            }
        }
    }

    /// The store's writer, started on first need when no watch records.
    fn recorder(&mut self) -> Result<Addr<super::recorder::Recorder>, ProgramRefusal> {
        if let Some(recorder) = &self.recorder {
            return Ok(recorder.clone());
        }
        let path = self
            .config
            .store
            .resolve(None)
            .join(crate::store::FILE_NAME);
        let store =
            crate::store::Store::open(&path).map_err(|e| ProgramRefusal::NoStore(e.to_string()))?;
        let recorder = super::recorder::Recorder::start(store);
        self.recorder = Some(recorder.clone());
        Ok(recorder)
    }

    /// Applies every recorded watch's retention, on the recorder's thread.
    fn enforce_retention(&mut self, ctx: &mut Context<Self>) {
        let Some(recorder) = &self.recorder else {
            return;
        };
        // Watches keep what their config says; sessions' recordings the defaults.
        let mut recorded: Vec<(String, crate::store::Retention)> = self
            .config
            .watches
            .iter()
            .filter(|w| w.record)
            .map(|w| (w.name.clone(), w.retention()))
            .collect();
        for name in &self.session_recordings {
            recorded.push((name.clone(), crate::store::Retention::default()));
        }
        for (name, retention) in recorded {
            let enforce = super::recorder::Enforce {
                watch: name.clone(),
                retention,
                now_ms: super::now_ms(),
            };
            recorder
                .send(enforce)
                .into_actor(self)
                .map(move |result, _, _| match result {
                    Ok(Ok(report)) => tracing::debug!(watch = %name, ?report, "Retention applied."),
                    Ok(Err(e)) => tracing::warn!(watch = %name, error = %e, "Retention failed."),
                    Err(e) => tracing::warn!(watch = %name, error = %e, "Recorder gone."),
                })
                .spawn(ctx);
        }
    }

    /// A watch's program failed (or could not start): counted, logged, started again later.
    fn watch_failed(&mut self, name: &str, why: &str, ctx: &mut Context<Self>) {
        let state = self.watch_states.entry(name.to_owned()).or_default();
        if state
            .started
            .is_some_and(|t| t.elapsed() >= WATCH_HEALTHY_AFTER)
        {
            state.failures = 0;
        }
        let wait = WATCH_BACKOFF_FIRST
            .saturating_mul(1 << state.failures.min(16))
            .min(WATCH_BACKOFF_MAX);
        state.failures += 1;
        Event::WatchRestarting {
            watch: name,
            why,
            wait,
        }
        .emit();
        let name = name.to_owned();
        ctx.run_later(wait, move |act, ctx| act.start_watch(&name, ctx));
    }

    /// Starts a program for `plan`, with `member` as its first viewer (none for a watch).
    fn launch(
        &mut self,
        plan: Plan,
        member: Option<Member>,
        ctx: &mut Context<Self>,
    ) -> Result<Joined, ProgramRefusal> {
        let program = self.next_id;
        self.next_id += 1;
        let kind = plan.preset.map_or("script", |p| p.name);
        let backend = plan.backend;
        let key = plan.key.clone();
        let watch = plan.watch.clone();
        let recording = if let Some(name) = watch.as_deref() {
            let records = self
                .config
                .watches
                .iter()
                .any(|w| w.name == name && w.record);
            records
                .then(|| self.recorder.clone().map(|r| (name.to_owned(), r)))
                .flatten()
        } else if plan.record {
            let name = format!("{kind}-p{program}");
            self.session_recordings.insert(name.clone());
            Some((name, self.recorder()?))
        } else {
            None
        };
        let recording_name = recording.as_ref().map(|(n, _)| n.clone());
        let addr = Program::new(
            program,
            Arc::new(plan),
            self.config.clone(),
            ctx.address(),
            recording,
        )
        .start();
        let mut members = BTreeSet::new();
        if let Some(member) = member {
            members.insert(member.session.clone());
            self.watching.insert(member.session.clone(), program);
            addr.do_send(AddMember(member));
        }
        if let Some(key) = &key {
            self.shared.insert(key.clone(), program);
        }
        self.running.insert(
            program,
            Entry {
                key,
                addr: addr.clone(),
                backend,
                kind,
                members,
                watch,
                recording: recording_name,
            },
        );
        self.gauges();
        Ok(Joined {
            program,
            addr,
            existing: false,
        })
    }

    /// Keeps the program gauges true after any change.
    fn gauges(&self) {
        let m = metrics();
        for backend in Backend::ALL {
            let n = self
                .running
                .values()
                .filter(|e| e.backend == backend)
                .count();
            m.programs_active
                .with_label_values(&[backend.as_str()])
                .set(n as i64);
        }
        let mut viewers: HashMap<&str, usize> = HashMap::new();
        for entry in self.running.values() {
            *viewers.entry(entry.kind).or_default() += entry.members.len();
        }
        m.program_viewers.reset();
        for (kind, n) in viewers {
            m.program_viewers.with_label_values(&[kind]).set(n as i64);
        }
    }

    fn remove(&mut self, program: ProgramId) -> Option<Entry> {
        let entry = self.running.remove(&program)?;
        for session in &entry.members {
            self.watching.remove(session);
        }
        // The program's companions end with it.
        self.explains.retain(|_, (p, _)| *p != program);
        if let Some(key) = &entry.key {
            if self.shared.get(key) == Some(&program) {
                self.shared.remove(key);
            }
        }
        Some(entry)
    }
}

impl Actor for Programs {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Every trigger's series exists from start-up, so alerts see its first firing.
        for watch in &self.config.watches {
            for trigger in &watch.triggers {
                let labels = [watch.name.as_str(), trigger.name.as_str()];
                metrics().trigger_fired.with_label_values(&labels);
                metrics()
                    .trigger_webhook_failures
                    .with_label_values(&labels);
            }
        }
        let names: Vec<String> = self.config.watches.iter().map(|w| w.name.clone()).collect();
        for name in names {
            metrics().watch_restarts.with_label_values(&[&name]);
            metrics().store_bytes.with_label_values(&[&name]);
            self.start_watch(&name, ctx);
        }
        ctx.run_later(RETENTION_FIRST, |act, ctx| act.enforce_retention(ctx));
        ctx.run_interval(RETENTION_INTERVAL, |act, ctx| act.enforce_retention(ctx));
    }
}

/// Join the program `plan` names, starting it when none runs (or when it is private).
#[derive(Message)]
#[rtype(result = "Result<Joined, ProgramRefusal>")]
pub struct Join {
    pub plan: Plan,
    pub member: Member,
}

/// A session's place in a program.
#[derive(Debug, Clone)]
pub struct Joined {
    pub program: ProgramId,
    pub addr: Addr<Program>,
    /// Whether the session joined a program that was already running.
    pub existing: bool,
}

/// Leave the program this session watches. With `flush`, a last member gets the final frame
/// (stop, replace, polite close); without it (the connection is gone) the program ends at once.
/// By session, not program: a session gone before its join was answered still leaves.
#[derive(Message)]
#[rtype(result = "Left")]
pub struct Leave {
    pub session: String,
    pub flush: bool,
}

/// What leaving did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub enum Left {
    /// Others still watch: the program runs on, and no final frame comes.
    Continues,
    /// This was the last member: the program ends; with `flush`, a `Final` event follows.
    Ending,
    /// The program had ended already.
    Gone,
}

/// A program ended on its own (its tracer died or could not start).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ended {
    pub program: ProgramId,
    /// What the tracer said.
    pub why: String,
}

impl Handler<Join> for Programs {
    type Result = Result<Joined, ProgramRefusal>;

    fn handle(&mut self, join: Join, ctx: &mut Context<Self>) -> Self::Result {
        let session = join.member.session.clone();
        // One program per session: a join replaces whatever it still watched.
        self.leave(&session, false);
        if let Some(&program) = join.plan.key.as_ref().and_then(|k| self.shared.get(k)) {
            if join.plan.record
                && self
                    .running
                    .get(&program)
                    .is_some_and(|e| e.recording.is_none())
            {
                let recorder = self.recorder()?;
                let entry = self
                    .running
                    .get_mut(&program)
                    .expect("shared ids are running");
                let name = format!("{}-p{program}", entry.kind);
                self.session_recordings.insert(name.clone());
                entry.recording = Some(name.clone());
                // Before the member is added, so its `started` names the recording.
                entry.addr.do_send(super::StartRecording { name, recorder });
            }
            let entry = self
                .running
                .get_mut(&program)
                .expect("shared ids are running");
            entry.members.insert(session.clone());
            entry.addr.do_send(AddMember(join.member));
            self.watching.insert(session, program);
            let joined = Joined {
                program,
                addr: entry.addr.clone(),
                existing: true,
            };
            self.gauges();
            return Ok(joined);
        }
        if let Some(watch) = join.plan.watch.clone() {
            // Only the registry starts a watch (pinned, restarted with backoff): a viewer
            // joins it or hears that it is down.
            return Err(ProgramRefusal::WatchDown { watch });
        }
        // Watches run outside the cap: they are the operator's own.
        let running = self.running.values().filter(|e| e.watch.is_none()).count();
        let max = self.config.limits.max_programs;
        if running >= max {
            return Err(ProgramRefusal::Capacity { running, max });
        }
        self.launch(join.plan, Some(join.member), ctx)
    }
}

impl Programs {
    fn leave(&mut self, session: &str, flush: bool) -> Left {
        // The program drops a leaving member's companion.
        self.explains.remove(session);
        let Some(program) = self.watching.remove(session) else {
            return Left::Gone;
        };
        let Some(entry) = self.running.get_mut(&program) else {
            return Left::Gone;
        };
        entry.members.remove(session);
        // A watch runs on without viewers: it records.
        if !entry.members.is_empty() || entry.watch.is_some() {
            entry.addr.do_send(RemoveMember(session.to_owned()));
            self.gauges();
            return Left::Continues;
        }
        let entry = self.remove(program).expect("found above");
        if flush {
            entry.addr.do_send(FinishProgram {
                to: Some(session.to_owned()),
            });
        } else {
            entry.addr.do_send(HaltProgram);
        }
        self.gauges();
        Left::Ending
    }
}

impl Handler<Leave> for Programs {
    type Result = Left;

    fn handle(&mut self, leave: Leave, _: &mut Context<Self>) -> Left {
        self.leave(&leave.session, leave.flush)
    }
}

impl Handler<Ended> for Programs {
    type Result = ();

    fn handle(&mut self, ended: Ended, ctx: &mut Context<Self>) {
        let Some(entry) = self.remove(ended.program) else {
            return;
        };
        self.gauges();
        if let Some(watch) = entry.watch {
            self.watch_failed(&watch, &ended.why, ctx);
        }
    }
}

/// The shared preset programs running now, for `hello` (scripts are not listed: their text
/// is their owners').
#[derive(Message)]
#[rtype(result = "Vec<RunningProgram>")]
pub struct ListRunning;

/// One running shared preset program, as `hello.running` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunningProgram {
    pub program: ProgramId,
    pub preset: &'static str,
    pub backend: &'static str,
    pub tick_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub viewers: usize,
    /// The watch this program is, if it is one (it runs and records without viewers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<String>,
}

impl Handler<ListRunning> for Programs {
    type Result = MessageResult<ListRunning>;

    fn handle(&mut self, _: ListRunning, _: &mut Context<Self>) -> Self::Result {
        let mut running: Vec<RunningProgram> = self
            .running
            .iter()
            .filter_map(|(&program, entry)| match &entry.key {
                Some(ProgramKey::Preset {
                    name,
                    pid,
                    comm,
                    tick_ms,
                    backend,
                    ..
                }) => Some(RunningProgram {
                    program,
                    preset: name,
                    backend: backend.as_str(),
                    tick_ms: *tick_ms,
                    pid: *pid,
                    comm: comm.clone(),
                    viewers: entry.members.len(),
                    watch: entry.watch.clone(),
                }),
                _ => None,
            })
            .collect();
        running.sort_by_key(|r| r.program);
        MessageResult(running)
    }
}

/// The store's reader for the HTTP API: the running recorder, or, when nothing records yet
/// but the store file exists (recordings of earlier runs), one opened for it.
#[derive(Message)]
#[rtype(result = "Option<Addr<super::recorder::Recorder>>")]
pub struct GetRecorder;

impl Handler<GetRecorder> for Programs {
    type Result = Option<Addr<super::recorder::Recorder>>;

    fn handle(&mut self, _: GetRecorder, _: &mut Context<Self>) -> Self::Result {
        if self.recorder.is_none() {
            let path = self
                .config
                .store
                .resolve(None)
                .join(crate::store::FILE_NAME);
            if !path.exists() {
                return None;
            }
        }
        self.recorder().ok()
    }
}

/// Ends every program now (server shutdown).
#[derive(Message)]
#[rtype(result = "()")]
pub struct HaltAll;

impl Handler<HaltAll> for Programs {
    type Result = ();

    fn handle(&mut self, _: HaltAll, _: &mut Context<Self>) {
        let ids: Vec<ProgramId> = self.running.keys().copied().collect();
        for id in ids {
            if let Some(entry) = self.remove(id) {
                entry.addr.do_send(HaltProgram);
            }
        }
        self.gauges();
    }
}

/// Start (or replace) the explain companion of `session` on the program it watches.
#[derive(Message)]
#[rtype(result = "Result<u64, (crate::telemetry::Refusal, String)>")]
pub struct Explain {
    pub session: String,
    pub role: Role,
    pub request: crate::session::protocol::ExplainRequest,
}

/// Stop the explain companion of `session`; answers its id, if it had one.
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct ExplainStop {
    pub session: String,
}

/// A companion ended on its own (failed, or its member left before it started).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ExplainEnded {
    pub session: String,
    pub id: u64,
}

impl Handler<Explain> for Programs {
    type Result = Result<u64, (crate::telemetry::Refusal, String)>;

    fn handle(&mut self, explain: Explain, _: &mut Context<Self>) -> Self::Result {
        use crate::telemetry::Refusal;
        let request = explain.request;
        let program = request.program;
        let entry = self
            .watching
            .get(&explain.session)
            .filter(|&&p| p == program)
            .and_then(|p| self.running.get(p))
            .ok_or_else(|| {
                (
                    Refusal::BadRequest,
                    format!("explain: this session does not watch program {program}"),
                )
            })?;
        if explain.role < Role::Operator {
            return Err((
                Refusal::Forbidden,
                "explain needs an operator token: it captures the stacks, commands and cgroups \
                 of every process in the band"
                    .into(),
            ));
        }
        if super::explain::find(entry.kind).is_none() {
            let preset = (entry.kind != "script").then_some(entry.kind);
            return Err((
                Refusal::Unsupported,
                super::explain::unsupported_message(preset),
            ));
        }
        let budget_request = crate::session::protocol::StartRequest {
            max_cpu_percent: request.max_cpu_percent,
            ..Default::default()
        };
        let max_cpu_percent = super::plan::cpu_budget(&budget_request, &self.config, explain.role)
            .map_err(|m| (Refusal::Forbidden, format!("explain: {m}")))?;
        let bpftrace = &self.config.bpftrace.path;
        if !crate::consumer::bpftrace::installed(bpftrace) {
            return Err((
                Refusal::Unsupported,
                format!(
                    "explain runs on bpftrace, and {} is not installed (bpftrace.path)",
                    bpftrace.display()
                ),
            ));
        }
        let running = self
            .explains
            .keys()
            .filter(|s| **s != explain.session)
            .count();
        let max = self.config.limits.max_explains;
        if running >= max {
            return Err((
                Refusal::MaxPrograms,
                format!(
                    "{running} explain companions are running, the most this server runs at \
                     once (limits.max_explains = {max}); try again later"
                ),
            ));
        }
        let addr = entry.addr.clone();
        let id = super::explain::next_id();
        self.explains.insert(explain.session.clone(), (program, id));
        addr.do_send(super::StartExplain {
            session: explain.session,
            plan: super::explain::ExplainPlan {
                id,
                band: request.band,
                keys: request.keys,
                max_cpu_percent,
                backend: request.backend,
            },
        });
        Ok(id)
    }
}

impl Handler<ExplainStop> for Programs {
    type Result = Option<u64>;

    fn handle(&mut self, stop: ExplainStop, _: &mut Context<Self>) -> Option<u64> {
        let (program, id) = self.explains.remove(&stop.session)?;
        if let Some(entry) = self.running.get(&program) {
            entry.addr.do_send(super::StopExplain {
                session: stop.session,
                id: Some(id),
                reason: "client",
            });
        }
        Some(id)
    }
}

impl Handler<ExplainEnded> for Programs {
    type Result = ();

    fn handle(&mut self, ended: ExplainEnded, _: &mut Context<Self>) {
        if self
            .explains
            .get(&ended.session)
            .is_some_and(|&(_, id)| id == ended.id)
        {
            self.explains.remove(&ended.session);
        }
    }
}
