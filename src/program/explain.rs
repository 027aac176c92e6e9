//! Who runs the explain companion for a session: the stack-capturing bpftrace program that a
//! viewer of a preset program starts for a selected latency band (and keys), generated from
//! the preset's companion template (`explain/*.bt`), filtered in the probe to the band, ticked
//! with its main program and owned by it (see [`super::Program`]), and turned every tick into
//! an `explain` message: folded stacks, top processes and cgroups, and how many of the band's
//! events it explained.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use serde::Serialize;

use crate::aggregation::{Bucket, KeyPart, Snapshot, Value};
use crate::consumer::{self, cost, Backend, CaptureKind, ConsumerActor, KillSwitch, ProgramSpec};
use crate::presets::{KeyNames, Preset, ProcessFilter};

/// How many processes and cgroups an `explain` message lists (the busiest).
pub const TOP_ENTRIES: usize = 20;
/// How many folded stacks an `explain` message carries at most (the busiest; the rest are
/// summed into one `[other]` stack so the counts still add up).
pub const MAX_STACKS: usize = 2000;
/// Most keys an `explain` may isolate.
pub const MAX_KEYS: usize = 64;
/// Walk timeouts in a row after which a companion's tracer is replaced by a fresh one. A
/// companion that stops answering its walk probe (seen on a loaded machine: the tracer idle,
/// its uprobe no longer firing) would otherwise never tick again; its counts are cumulative,
/// so a late answer is never lost, but no answer at all is. One: a walk already waits 5 s.
pub const RESPAWN_AFTER_TIMEOUTS: u32 = 1;
/// Most tracers one explain may run in turn (its first and its replacements): past them the
/// explain ends with the walk timeout as its error, rather than respawn forever.
pub const MAX_RESPAWNS: u32 = 5;
/// How long a replaced tracer's teardown is given, once it is reaped, before its replacement
/// attaches (see `respawn_companion`).
const RESPAWN_SETTLE: std::time::Duration = std::time::Duration::from_millis(500);
/// The timeout an injected walk fault (`HEAT_ACTIX_FAULT=explain_walk_timeout`) reports.
const FAULT_WALK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Keys of each map of a companion's bpftrace (`BPFTRACE_MAP_KEYS_MAX`; bpftrace's default is
/// 4096). The capture map's key holds the pid, so a busy machine whose short-lived processes
/// land in the band fills 4096 keys in seconds, and a full bpftrace map drops new keys without
/// a word. Measured with bpftrace 0.17 on 2 CPUs: at 65536 keys the capture map (per-CPU hash)
/// takes 8.9 MB and the entry map 5.2 MB, against 0.6 and 0.3 MB at 4096; the stack map
/// (131072 stacks, 136 MB) is the same either way. Main programs keep bpftrace's default.
pub const COMPANION_MAP_KEYS: u32 = 65536;
/// The share of the map (percent) past which a companion's tracer is replaced by a fresh one
/// with an empty map (see [`Crowding`]): every walk prints the whole cumulative map, so the
/// print and bpftrace's symbolising of it grow with its keys; the other half is room for the
/// keys that come before the fresh tracer takes over.
const ROTATE_AT_MAP_PERCENT: usize = 50;
/// The share of `limits.output_budget_bytes_per_s` (percent) that a companion's prints may
/// reach before its tracer is replaced by a fresh one: past the budget it would be killed.
const ROTATE_AT_BUDGET_PERCENT: u64 = 50;
/// What bpftrace prints for a capture key besides its text (the count, JSON punctuation).
const PRINT_BYTES_PER_KEY: u64 = 24;

static NEXT_EXPLAIN: AtomicU64 = AtomicU64::new(1);

/// A fresh explain id (never reused while the server runs).
pub fn next_id() -> u64 {
    NEXT_EXPLAIN.fetch_add(1, Ordering::Relaxed)
}

/// What a preset's key is, for filtering the companion to the isolated keys in the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyField {
    /// The syscall number (`args->id`); keys are syscall names.
    Syscall,
    /// The command name (`comm`) of the task the probe runs for.
    Comm,
}

/// Longest `comm` the kernel keeps (TASK_COMM_LEN without its NUL).
const COMM_MAX: usize = 15;

/// A bpftrace companion: a program from a template (`explain/*.bt`) whose stack is taken and
/// counted at one probe, so bpftrace's own maps hold it.
#[derive(Debug, Clone, Copy)]
struct BpftraceCompanion {
    template: &'static str,
    key: KeyField,
}

/// Which backend runs a companion, as an `explain` asks (`backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CompanionBackend {
    /// Native where the preset has a native companion and this kernel runs them, else bpftrace.
    #[default]
    Auto,
    Ebpf,
    Bpftrace,
}

impl CompanionBackend {
    /// The wire name (`auto`, `ebpf`, `bpftrace`), parsed.
    pub fn parse(name: &str) -> Option<CompanionBackend> {
        match name {
            "auto" => Some(CompanionBackend::Auto),
            "ebpf" => Some(CompanionBackend::Ebpf),
            "bpftrace" => Some(CompanionBackend::Bpftrace),
            _ => None,
        }
    }
}

/// A preset's explain companion: a bpftrace one, a native one (`consumer::ebpf::StackConsumer`:
/// the stack taken where the interval begins or ends, kept as a stack id), or both.
#[derive(Debug)]
pub struct Explainer {
    pub preset: &'static str,
    /// What is captured, for `explain_started` and the README.
    pub captures: &'static str,
    bpftrace: Option<BpftraceCompanion>,
    native: Option<CaptureKind>,
}

/// Every preset that has an explainer.
pub const EXPLAINERS: &[Explainer] = &[
    Explainer {
        preset: "syscall-latency",
        captures: "per syscall in the band: comm, pid, cgroup, user and kernel stack at the syscall's return",
        bpftrace: Some(BpftraceCompanion {
            template: include_str!("explain/syscall-latency.bt"),
            key: KeyField::Syscall,
        }),
        native: Some(CaptureKind::Syscall),
    },
    Explainer {
        preset: "syscall-latency-log2",
        captures: "per syscall in the band: comm, pid, cgroup, user and kernel stack at the syscall's return",
        bpftrace: Some(BpftraceCompanion {
            template: include_str!("explain/syscall-latency-log2.bt"),
            key: KeyField::Syscall,
        }),
        native: Some(CaptureKind::Syscall),
    },
    Explainer {
        preset: "cpu-profile",
        captures: "per on-CPU sample at an offset in the band: comm, pid, cgroup, user and kernel stack at the sample",
        bpftrace: Some(BpftraceCompanion {
            template: include_str!("explain/cpu-profile.bt"),
            key: KeyField::Comm,
        }),
        native: None,
    },
    Explainer {
        preset: "offcpu-time",
        captures: "per off-CPU interval in the band: comm, pid, cgroup, user and kernel stack at the switch-out, and the waker's comm and kernel stack at the wakeup (after `--`)",
        bpftrace: None,
        native: Some(CaptureKind::OffCpu),
    },
    Explainer {
        preset: "runqueue-latency",
        captures: "per run-queue wait in the band: comm, pid, cgroup, user and kernel stack at the task's last switch-out (where it blocked or was preempted), and the waker's comm and kernel stack at the wakeup (after `--`)",
        bpftrace: None,
        native: Some(CaptureKind::RunQueue),
    },
    Explainer {
        preset: "block-io-latency",
        captures: "per request in the band: the issuing task's comm, pid, cgroup, user and kernel stack at block_rq_issue",
        bpftrace: None,
        native: Some(CaptureKind::BlockIo),
    },
];

/// The explainer of preset `name`, if it has one.
pub fn find(name: &str) -> Option<&'static Explainer> {
    EXPLAINERS.iter().find(|e| e.preset == name)
}

/// A latency band in the program's unit: `lo` inclusive, `hi` exclusive (`None`: no upper
/// bound, the open top bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Band {
    pub lo: u64,
    pub hi: Option<u64>,
}

impl Band {
    /// Whether bucket `b` (inclusive bounds, `None` open) lies wholly inside the band.
    fn holds(&self, b: &Bucket) -> bool {
        let lo_in = b.lo.is_some_and(|lo| lo >= 0 && lo as u64 >= self.lo);
        let hi_in = match (self.hi, b.hi) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(hi), Some(bhi)) => bhi < 0 || (bhi as u64) < hi,
        };
        lo_in && hi_in
    }
}

/// Why an explain cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// The preset has no explainer (or the program is a script).
    #[error("{0}")]
    Unsupported(String),
    /// A key or band the preset cannot filter on.
    #[error("{0}")]
    BadRequest(String),
}

impl Explainer {
    /// The companion as a consumer runs it, on `backend`: a bpftrace program (keys shown as
    /// bpftrace prints them), or a native capture with the main program's process filter.
    pub fn spec(
        &self,
        preset: &Preset,
        filter: &ProcessFilter,
        band: Band,
        keys: &[String],
        backend: CompanionBackend,
    ) -> Result<ProgramSpec, ExplainError> {
        let native_refusal = match consumer::ebpf::support() {
            Some(Err(why)) => Some(format!("native eBPF programs cannot run here: {why}")),
            _ => None,
        };
        let native = match (backend, self.native, self.bpftrace) {
            (CompanionBackend::Bpftrace, _, Some(_)) => false,
            (CompanionBackend::Bpftrace, _, None) => {
                return Err(ExplainError::Unsupported(format!(
                    "explain: {}'s explainer is native only (no bpftrace version)",
                    self.preset
                )))
            }
            (CompanionBackend::Ebpf, None, _) => {
                return Err(ExplainError::Unsupported(format!(
                    "explain: {}'s explainer runs on bpftrace only",
                    self.preset
                )))
            }
            (_, Some(_), bpftrace) => match (&native_refusal, bpftrace) {
                (None, _) => true,
                // Auto falls back to bpftrace where the kernel runs no native program.
                (Some(_), Some(_)) if backend == CompanionBackend::Auto => false,
                (Some(why), _) => {
                    return Err(ExplainError::Unsupported(format!(
                        "explain: {}'s explainer runs natively, and {why}",
                        self.preset
                    )))
                }
            },
            (_, None, _) => false,
        };
        if !native {
            let BpftraceCompanion { template, key } = self
                .bpftrace
                .expect("an explainer has a bpftrace or a native companion");
            return Ok(ProgramSpec {
                script: bpftrace_script(template, key, preset, filter, band, keys)?,
                key_names: KeyNames::AsIs,
                rewrite: None,
                preset: None,
                filter: ProcessFilter::default(),
                capture: None,
            });
        }
        let kind = self.native.expect("chosen only when there is one");
        let keys = match kind {
            // The program compares numbers: each name becomes its syscall's.
            CaptureKind::Syscall => keys
                .iter()
                .map(|k| syscall_number(k).map(|nr| nr.to_string()))
                .collect::<Result<Vec<_>, _>>()?,
            _ => {
                for key in keys {
                    check_name(key)?;
                }
                keys.to_vec()
            }
        };
        let ns = ns_per_unit(preset.unit);
        let capture = consumer::Capture {
            kind,
            lo_ns: band.lo.saturating_mul(ns),
            hi_ns: band.hi.map(|hi| hi.saturating_mul(ns)),
            keys,
        };
        Ok(ProgramSpec {
            script: format!("native explain of {}", self.preset),
            key_names: KeyNames::AsIs,
            rewrite: None,
            preset: None,
            filter: filter.clone(),
            capture: Some(capture),
        })
    }
}

/// The number of syscall `key` (a name this host knows, or `syscall_N`).
fn syscall_number(key: &str) -> Result<u64, ExplainError> {
    crate::syscalls::number(key)
        .and_then(|n| u64::try_from(n).ok())
        .or_else(|| key.strip_prefix("syscall_")?.parse().ok())
        .ok_or_else(|| {
            ExplainError::BadRequest(format!("explain: {key:?} is not a syscall this host knows"))
        })
}

/// Nanoseconds in one of a preset's units.
fn ns_per_unit(unit: &str) -> u64 {
    match unit {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        _ => 1,
    }
}

/// A key that is a command name or an rwbs string: what a BPF program compares whole.
fn check_name(key: &str) -> Result<(), ExplainError> {
    let ok = !key.is_empty()
        && key.len() <= COMM_MAX
        && key
            .chars()
            .all(|c| c != '"' && c != '\\' && !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(ExplainError::BadRequest(format!(
            "explain: key {key:?} is not a command name (1..={COMM_MAX} bytes, no quotes or backslashes)"
        )))
    }
}

/// A bpftrace companion's program: the template with the main program's process filter at the
/// same probe, and the band (and keys) as the condition of the capture.
fn bpftrace_script(
    template: &'static str,
    key: KeyField,
    preset: &Preset,
    filter: &ProcessFilter,
    band: Band,
    keys: &[String],
) -> Result<String, ExplainError> {
    let templated = Preset {
        script: template,
        ..preset.clone()
    };
    let filtered = templated
        .script_with(filter)
        .map_err(ExplainError::BadRequest)?;
    let mut condition = format!("$v >= {}", band.lo);
    if let Some(hi) = band.hi {
        condition.push_str(&format!(" && $v < {hi}"));
    }
    if !keys.is_empty() {
        let parts = keys
            .iter()
            .map(|k| key_test(key, k))
            .collect::<Result<Vec<_>, _>>()?;
        condition.push_str(&format!(" && ({})", parts.join(" || ")));
    }
    Ok(filtered.replace("HEAT_IN_BAND", &condition))
}

fn key_test(field: KeyField, key: &str) -> Result<String, ExplainError> {
    match field {
        KeyField::Syscall => Ok(format!("args->id == {}", syscall_number(key)?)),
        KeyField::Comm => {
            check_name(key)?;
            Ok(format!("comm == \"{key}\""))
        }
    }
}

/// Events of `snapshot`'s histograms in buckets wholly inside `band`, of the `keys` (all when
/// empty). A bucket straddling the band's edge is not counted: the page selects whole buckets.
pub fn events_in_band(snapshot: &Snapshot, band: Band, keys: &[String]) -> u64 {
    let mut total = 0;
    for agg in &snapshot.aggregations {
        for series in &agg.series {
            if !keys.is_empty() {
                let name = series.key.first().map(key_text).unwrap_or_default();
                if !keys.contains(&name) {
                    continue;
                }
            }
            if let Value::Buckets(buckets) = &series.value {
                total += buckets
                    .iter()
                    .filter(|b| band.holds(b))
                    .map(|b| b.count)
                    .sum::<u64>();
            }
        }
    }
    total
}

fn key_text(part: &KeyPart) -> String {
    match part {
        KeyPart::Int(n) => n.to_string(),
        KeyPart::Str(s) => s.clone(),
    }
}

/// One frame of a stack as bpftrace prints it (`func+off`, `func`, or a bare address) as a
/// folded frame: the function, or `[unknown]`.
fn frame_name(line: &str) -> Option<String> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    if line.starts_with("0x") || line.starts_with("[unknown]") {
        return Some("[unknown]".into());
    }
    let func = match line.rfind('+') {
        Some(i) if line[i + 1..].chars().all(|c| c.is_ascii_digit()) && i > 0 => &line[..i],
        _ => line,
    };
    // `;` separates frames in the folded format; a symbol never has one, but be safe.
    Some(func.replace(';', ":"))
}

/// A stack printed leaf first, as folded frames root first.
fn root_first(stack: &str) -> Vec<String> {
    let mut frames: Vec<String> = stack.lines().filter_map(frame_name).collect();
    frames.reverse();
    frames
}

/// The folded stack (Brendan Gregg's format: root first, `;`-joined) of one capture: the user
/// stack, then the kernel stack (frames suffixed `_[k]`, as `stackcollapse` marks them).
pub fn folded(ustack: &str, kstack: &str) -> String {
    let mut frames = root_first(ustack);
    frames.extend(root_first(kstack).into_iter().map(|f| format!("{f}_[k]")));
    if frames.is_empty() {
        return "[no stack]".into();
    }
    frames.join(";")
}

/// A target's folded stack with its waker's above it, as offwaketime folds them: the target
/// root first, `--`, then the waker's kernel frames leaf first and its command on top (so the
/// two stacks meet at the wakeup). Without a waker, the target alone.
pub fn with_waker(target: String, waker_comm: &str, waker_kstack: &str) -> String {
    if waker_comm.is_empty() && waker_kstack.trim().is_empty() {
        return target;
    }
    let mut frames = vec![target, "--".to_owned()];
    frames.extend(
        waker_kstack
            .lines()
            .filter_map(frame_name)
            .map(|f| format!("{f}_[k]")),
    );
    frames.push(if waker_comm.is_empty() {
        "[unknown]".to_owned()
    } else {
        waker_comm.replace(';', ":")
    });
    frames.join(";")
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What a companion captured in one tick.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct Tally {
    pub explained: u64,
    /// In-band events a native companion counted but could not keep (its capture map full):
    /// they are in `events_in_band` and not in `explained`.
    #[serde(skip_serializing_if = "is_zero")]
    pub missed: u64,
    pub stacks: BTreeMap<String, u64>,
    pub processes: Vec<ProcessCount>,
    pub cgroups: Vec<CgroupCount>,
    /// The capture map reached its size by this walk: events of keys it had no room for were
    /// dropped by bpftrace, so `explained` may fall short (see [`Crowding::Full`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub capture_full: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessCount {
    pub comm: String,
    pub pid: i64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupCount {
    pub cgroup: i64,
    pub count: u64,
}

/// Reads a companion's walk: `@cumulative_explain[pid, cgroup, comm, kstack, ustack]` (the
/// user stack last: bpftrace joins key parts with commas, and C++ symbols have them).
pub fn tally(snapshot: &Snapshot) -> Tally {
    let mut stacks: HashMap<String, u64> = HashMap::new();
    let mut processes: HashMap<(String, i64), u64> = HashMap::new();
    let mut cgroups: HashMap<i64, u64> = HashMap::new();
    let mut explained = 0;
    let mut missed = 0;
    for agg in &snapshot.aggregations {
        for series in &agg.series {
            let count = match series.value {
                Value::Scalar(n) if n > 0 => n as u64,
                _ => continue,
            };
            if agg.name == consumer::MISSED_AGGREGATION {
                missed += count;
                continue;
            }
            explained += count;
            let int = |i: usize| match series.key.get(i) {
                Some(KeyPart::Int(n)) => *n,
                _ => 0,
            };
            let text = |i: usize| series.key.get(i).map(key_text).unwrap_or_default();
            let stack = match series.key.len() {
                5 => folded(&text(4), &text(3)),
                7 => with_waker(folded(&text(4), &text(3)), &text(5), &text(6)),
                // Keys folded into `other` (limits.max_keys_per_aggregation).
                _ => "[other]".into(),
            };
            *stacks.entry(stack).or_default() += count;
            if series.key.len() >= 5 {
                *processes.entry((text(2), int(0))).or_default() += count;
                *cgroups.entry(int(1)).or_default() += count;
            }
        }
    }
    let mut stacks: Vec<(String, u64)> = stacks.into_iter().collect();
    stacks.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rest: u64 = stacks.iter().skip(MAX_STACKS).map(|s| s.1).sum();
    stacks.truncate(MAX_STACKS);
    let mut stacks: BTreeMap<String, u64> = stacks.into_iter().collect();
    if rest > 0 {
        *stacks.entry("[other]".into()).or_default() += rest;
    }
    let mut processes: Vec<ProcessCount> = processes
        .into_iter()
        .map(|((comm, pid), count)| ProcessCount { comm, pid, count })
        .collect();
    processes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.pid.cmp(&b.pid)));
    processes.truncate(TOP_ENTRIES);
    let mut cgroups: Vec<CgroupCount> = cgroups
        .into_iter()
        .map(|(cgroup, count)| CgroupCount { cgroup, count })
        .collect();
    cgroups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.cgroup.cmp(&b.cgroup)));
    cgroups.truncate(TOP_ENTRIES);
    Tally {
        explained,
        missed,
        stacks,
        processes,
        cgroups,
        capture_full: false,
    }
}

/// How full a companion's capture map is after a walk (see [`crowding`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crowding {
    /// Room to go on.
    Room,
    /// Half the map, or prints near the output budget: a fresh tracer takes over.
    Crowded,
    /// The map is full: bpftrace may have dropped events since it filled. Told in the tick's
    /// `capture_full`, and a fresh tracer takes over.
    Full,
}

/// Keys in a walk's capture map and about how many bytes bpftrace printed for them.
pub fn capture_size(snapshot: &Snapshot) -> (usize, u64) {
    let mut keys = 0;
    let mut bytes = 0;
    for series in snapshot.aggregations.iter().flat_map(|a| &a.series) {
        keys += 1;
        bytes += PRINT_BYTES_PER_KEY
            + series
                .key
                .iter()
                .map(|k| match k {
                    KeyPart::Str(s) => s.len() as u64,
                    KeyPart::Int(_) => 20,
                })
                .sum::<u64>();
    }
    (keys, bytes)
}

/// How crowded a capture map of `keys` keys (of `map_keys` at most) is, printed in `bytes`
/// every `tick_ms` against an output budget of `budget` bytes a second.
pub fn crowding(keys: usize, map_keys: u32, bytes: u64, tick_ms: u64, budget: u64) -> Crowding {
    let map_keys = map_keys as usize;
    let prints_per_s = (1000 / tick_ms.max(1)).max(1);
    if keys >= map_keys {
        Crowding::Full
    } else if keys * 100 >= map_keys * ROTATE_AT_MAP_PERCENT
        || bytes.saturating_mul(prints_per_s) * 100 >= budget * ROTATE_AT_BUDGET_PERCENT
    {
        Crowding::Crowded
    } else {
        Crowding::Room
    }
}

/// The size of a companion's maps: [`COMPANION_MAP_KEYS`], or the fault's small one.
fn companion_map_keys() -> u32 {
    if consumer::fault_injected("explain_small_map") {
        consumer::FAULT_CAPTURES
    } else {
        COMPANION_MAP_KEYS
    }
}

/// How a companion's consumer runs: large maps, and every key sent (`Companion::delta` diffs
/// the cumulative map key by key).
fn companion_tuning() -> consumer::Tuning {
    consumer::Tuning {
        map_keys_max: Some(companion_map_keys()),
        all_keys: true,
    }
}

/// One `explain` message.
#[derive(Debug, Serialize)]
struct Tick<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    explain: u64,
    tick: u64,
    band: Band,
    events_in_band: u64,
    #[serde(flatten)]
    tally: &'a Tally,
    #[serde(skip_serializing_if = "Gap::is_none")]
    gap: Gap,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost: Option<cost::Cost>,
}

/// Ticks before this message whose stacks were not captured (the companion's walk timed out
/// and its tracer was replaced, whose first walk only lines its counts up): their band's
/// events are counted here, apart from `events_in_band`, so `explained` of `events_in_band`
/// stays an honest ratio and nothing is silently dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Main-program ticks without stacks.
    pub ticks: u64,
    /// The band's events in those ticks.
    pub events_in_band: u64,
}

impl Gap {
    fn is_none(&self) -> bool {
        self.ticks == 0 && self.events_in_band == 0
    }
}

/// The text of one `explain` message.
pub fn tick_message(
    explain: u64,
    tick: u64,
    band: Band,
    events_in_band: u64,
    tally: &Tally,
    gap: Gap,
    cost: Option<cost::Cost>,
) -> String {
    serde_json::to_string(&Tick {
        kind: "explain",
        explain,
        tick,
        band,
        events_in_band,
        tally,
        gap,
        cost,
    })
    .expect("explain messages always serialise")
}

/// What a session asked to explain, checked by the registry (role, budget, cap).
#[derive(Debug, Clone)]
pub struct ExplainPlan {
    pub id: u64,
    pub band: Band,
    pub keys: Vec<String>,
    pub max_cpu_percent: u32,
    pub backend: CompanionBackend,
}

/// A running (or starting) companion, owned by the main program for one of its members.
/// Dropping it ends the tracer: the kill switch, then the consumer thread's end reaps it.
pub struct Companion {
    pub plan: ExplainPlan,
    pub consumer: Option<Addr<ConsumerActor>>,
    pub kill: Option<KillSwitch>,
    pub running: bool,
    pub walking: bool,
    /// The band's events in the main program's frames since this companion's last walk.
    pub pending_in_band: u64,
    /// Main-program ticks in `pending_in_band`.
    pub pending_ticks: u64,
    /// Ticks (and their band's events) whose stacks are lost: told in the next message.
    pub gap: Gap,
    /// Walk timeouts in a row.
    pub timeouts: u32,
    /// Walks the current tracer answered (its first, lining-up walk included).
    pub answered: u32,
    /// Tracers started for this explain so far.
    pub tracers: u32,
    /// Of those, the ones that replaced a tracer whose capture map was crowded (see
    /// [`Crowding`]), which [`MAX_RESPAWNS`] does not count: only unanswering tracers do.
    pub rotations: u32,
    /// What the tracer runs, to start a fresh one (see [`RESPAWN_AFTER_TIMEOUTS`]).
    pub spec: Option<ProgramSpec>,
    pub budget: cost::Budget,
    /// The capture map's counts at the last walk: it is cumulative (never cleared, see
    /// `CUMULATIVE_PREFIX`), and each tick reports the difference.
    pub seen: HashMap<Vec<KeyPart>, i64>,
    /// The first walk after the attach was done: it only lines the companion's counts up with
    /// the main program's ticks (it holds what came between the attach and that tick).
    pub synced: bool,
}

impl Companion {
    /// What the capture map gained since the previous walk.
    pub fn delta(&mut self, snapshot: &Snapshot) -> Snapshot {
        let mut seen = HashMap::with_capacity(self.seen.len());
        let mut out = Snapshot::default();
        // A user stack is symbolised when printed (see `folded`): once its process exits,
        // bpftrace prints the same stack as bare addresses, a new key. Its process, cgroup,
        // comm and kernel stack are taken in the probe and never change, so the counts of keys
        // that vanished are credited against the new keys with the same four, not counted again.
        let present: HashSet<&[KeyPart]> = snapshot
            .aggregations
            .iter()
            .flat_map(|a| &a.series)
            .map(|s| s.key.as_slice())
            .collect();
        let mut credit: HashMap<&[KeyPart], i64> = HashMap::new();
        for (key, before) in &self.seen {
            if key.len() == 5 && !present.contains(key.as_slice()) {
                *credit.entry(&key[..4]).or_default() += before;
            }
        }
        for agg in &snapshot.aggregations {
            let mut series = Vec::new();
            for s in &agg.series {
                let Value::Scalar(now) = s.value else {
                    continue;
                };
                let mut before = self.seen.get(&s.key).copied().unwrap_or(0);
                if s.key.len() == 5 && !self.seen.contains_key(&s.key) {
                    if let Some(left) = credit.get_mut(&s.key[..4]) {
                        before = (*left).min(now);
                        *left -= before;
                    }
                }
                // Keys folded into `other` change membership: never a negative count.
                if now > before {
                    series.push(crate::aggregation::Series {
                        sum: None,
                        key: s.key.clone(),
                        value: Value::Scalar(now - before),
                    });
                }
                seen.insert(s.key.clone(), now);
            }
            out.aggregations.push(crate::aggregation::Aggregation {
                name: agg.name.clone(),
                kind: agg.kind,
                series,
                folded: agg.folded,
            });
        }
        self.seen = seen;
        out
    }
}

/// The backend that runs a companion's spec.
fn backend_of(spec: &ProgramSpec) -> Backend {
    if spec.capture.is_some() {
        Backend::Ebpf
    } else {
        Backend::Bpftrace
    }
}

impl Companion {
    /// Spawns the companion's consumer (bpftrace, on its own thread); `Begin` is the caller's.
    pub fn spawn(
        plan: ExplainPlan,
        spec: ProgramSpec,
        config: &crate::config::Config,
    ) -> Companion {
        let consumer = consumer::spawn_tuned(
            backend_of(&spec),
            false,
            format!("x-{:x}", plan.id),
            spec.clone(),
            config,
            companion_tuning(),
        );
        Companion {
            budget: cost::Budget::new(plan.max_cpu_percent),
            plan,
            consumer: Some(consumer),
            kill: None,
            running: false,
            walking: false,
            pending_in_band: 0,
            pending_ticks: 0,
            gap: Gap::default(),
            timeouts: 0,
            answered: 0,
            tracers: 1,
            rotations: 0,
            spec: Some(spec),
            seen: HashMap::new(),
            synced: false,
        }
    }

    /// Ends the tracer of a companion that stopped answering, returning its consumer to be
    /// halted (which reaps it) before a fresh one starts (see [`Companion::restart`]). The
    /// ticks since the last answered walk have no stacks, and neither will the new tracer's
    /// first walk: they become the gap.
    fn retire(&mut self) -> Option<Addr<ConsumerActor>> {
        self.spec.as_ref()?;
        if let Some(kill) = self.kill.take() {
            kill.kill();
        }
        self.gap.ticks += std::mem::take(&mut self.pending_ticks);
        self.gap.events_in_band += std::mem::take(&mut self.pending_in_band);
        self.tracers += 1;
        self.running = false;
        self.walking = false;
        self.timeouts = 0;
        self.answered = 0;
        self.seen.clear();
        self.synced = false;
        self.consumer.take()
    }

    /// A companion without a tracer: one refused, or waiting for the tracer it replaces to go.
    fn placeholder(plan: ExplainPlan) -> Companion {
        Companion {
            budget: cost::Budget::new(plan.max_cpu_percent),
            plan,
            consumer: None,
            kill: None,
            running: false,
            walking: false,
            pending_in_band: 0,
            pending_ticks: 0,
            gap: Gap::default(),
            timeouts: 0,
            answered: 0,
            tracers: 0,
            rotations: 0,
            spec: None,
            seen: HashMap::new(),
            synced: false,
        }
    }

    /// Starts the fresh tracer of a retired companion; `Begin` is the caller's.
    fn restart(&mut self, config: &crate::config::Config) -> Option<Addr<ConsumerActor>> {
        let spec = self.spec.clone()?;
        let consumer = consumer::spawn_tuned(
            backend_of(&spec),
            false,
            format!("x-{:x}-{}", self.plan.id, self.tracers),
            spec,
            config,
            companion_tuning(),
        );
        self.consumer = Some(consumer.clone());
        Some(consumer)
    }
}

impl Drop for Companion {
    fn drop(&mut self) {
        if let Some(kill) = self.kill.take() {
            kill.kill();
        }
        if let Some(consumer) = self.consumer.take() {
            consumer.do_send(consumer::Halt);
        }
    }
}

/// What the explain of a member tells it (through [`super::ViewerEvent::Explain`]).
#[derive(Debug, Clone)]
pub enum ExplainEvent {
    /// The companion runs.
    Started {
        id: u64,
        preset: &'static str,
        captures: &'static str,
        band: Band,
        keys: Arc<Vec<String>>,
        /// What runs the companion.
        backend: Backend,
    },
    /// One tick's `explain` message, as text.
    Tick(Arc<str>),
    /// The companion could not start or failed: an error (`code`, `message`), then
    /// `explain_stopped` with `reason`.
    Failed {
        id: u64,
        code: &'static str,
        message: String,
        reason: &'static str,
    },
    /// The companion was stopped (`client`, `replaced`).
    Stopped { id: u64, reason: &'static str },
}

/// The companion's end as its member hears it: an error, then `explain_stopped`.
struct CompanionFailure {
    code: &'static str,
    message: String,
    reason: &'static str,
}

impl CompanionFailure {
    fn from_consumer(e: &consumer::ConsumerError) -> CompanionFailure {
        let failure = super::ProgramFailure::from_consumer(e);
        CompanionFailure {
            code: failure.code,
            message: format!("explain: {}", failure.message),
            reason: failure.reason,
        }
    }

    fn internal(message: String) -> CompanionFailure {
        CompanionFailure {
            code: "internal",
            message,
            reason: "tracer_exited",
        }
    }
}

impl super::Program {
    fn tell_explain(&self, session: &str, event: ExplainEvent) {
        if let Some(member) = self.members.get(session) {
            self.tell(member, super::ViewerEvent::Explain(event));
        }
    }

    /// Ends companion `id` of `session` on a failure: its member is told, the registry frees
    /// its slot, and dropping it ends its tracer.
    fn end_companion(&mut self, session: &str, id: u64, failure: CompanionFailure) {
        if self.companions.get(session).is_none_or(|c| c.plan.id != id) {
            return;
        }
        self.companions.remove(session);
        crate::telemetry::Event::Explain {
            session,
            explain: id,
            preset: self.plan.preset.map(|p| p.name),
            what: &failure.message,
        }
        .emit();
        self.tell_explain(
            session,
            ExplainEvent::Failed {
                id,
                code: failure.code,
                message: failure.message,
                reason: failure.reason,
            },
        );
        self.registry.do_send(super::registry::ExplainEnded {
            session: session.to_owned(),
            id,
        });
    }

    /// Replaces the tracer of companion `id` of `session`, which stopped answering its walks
    /// (or whose capture map is crowded: `why` says which), by a fresh one: the same program,
    /// slot and budget; the ticks without stacks are told as the next message's `gap`.
    fn respawn_companion(
        &mut self,
        session: &str,
        id: u64,
        why: &'static str,
        ctx: &mut Context<Self>,
    ) {
        let Some(c) = self.companions.get_mut(session).filter(|c| c.plan.id == id) else {
            return;
        };
        let Some(old) = c.retire() else {
            return;
        };
        let tracer = c.tracers;
        crate::telemetry::Event::Explain {
            session,
            explain: id,
            preset: self.plan.preset.map(|p| p.name),
            what: why,
        }
        .emit();
        let session = session.to_owned();
        // The old tracer is reaped (Halt) and given RESPAWN_SETTLE before the new one attaches
        // its walk probe to the same function: a new bpftrace attaching while the killed one's
        // probes are being torn down was seen to answer one walk and then never again.
        old.send(consumer::Halt)
            .into_actor(self)
            .map(move |_, _, ctx| {
                ctx.run_later(RESPAWN_SETTLE, move |act, ctx| {
                    act.begin_replacement(session, id, tracer, ctx)
                });
            })
            .spawn(ctx);
    }

    /// Starts replacement tracer number `tracer` of companion `id`, unless it was stopped or
    /// replaced meanwhile.
    fn begin_replacement(
        &mut self,
        session: String,
        id: u64,
        tracer: u32,
        ctx: &mut Context<Self>,
    ) {
        let config = self.config.clone();
        let Some(c) = self
            .companions
            .get_mut(&session)
            .filter(|c| c.plan.id == id && c.tracers == tracer)
        else {
            return;
        };
        let Some(consumer) = c.restart(&config) else {
            return;
        };
        consumer
            .send(consumer::Begin)
            .into_actor(self)
            .map(move |result, act, _| {
                let Some(c) = act
                    .companions
                    .get_mut(&session)
                    .filter(|c| c.plan.id == id && c.tracers == tracer)
                else {
                    return; // stopped or replaced meanwhile
                };
                match result {
                    Ok(Ok(started)) => {
                        c.kill = started.kill_switch;
                        c.running = true;
                    }
                    Ok(Err(e)) => {
                        act.end_companion(&session, id, CompanionFailure::from_consumer(&e))
                    }
                    Err(e) => act.end_companion(
                        &session,
                        id,
                        CompanionFailure::internal(format!("explain consumer lost: {e}")),
                    ),
                }
            })
            .spawn(ctx);
    }

    /// After a published frame: every running companion is walked for the same tick, and its
    /// capture sent with the band's count from `snapshot` (the main program's frame).
    pub(super) fn explain_tick(&mut self, seq: u64, snapshot: &Snapshot, ctx: &mut Context<Self>) {
        let sessions: Vec<String> = self.companions.keys().cloned().collect();
        for session in sessions {
            let Some(c) = self.companions.get_mut(&session) else {
                continue;
            };
            let tick_in_band = events_in_band(snapshot, c.plan.band, &c.plan.keys);
            if !c.running {
                // A replacement tracer attaching: this tick has no stacks.
                if c.tracers > 1 {
                    c.gap.ticks += 1;
                    c.gap.events_in_band += tick_in_band;
                }
                continue;
            }
            c.pending_in_band += tick_in_band;
            c.pending_ticks += 1;
            let (Some(consumer), false) = (c.consumer.clone(), c.walking) else {
                continue; // a slow walk: this tick's count goes with the next one
            };
            c.walking = true;
            let in_band = std::mem::take(&mut c.pending_in_band);
            let ticks = std::mem::take(&mut c.pending_ticks);
            let (id, band) = (c.plan.id, c.plan.band);
            let walk = consumer::Walk {
                seq,
                encodings: consumer::Encodings {
                    typed: true,
                    ..consumer::Encodings::default()
                },
            };
            consumer
                .send(walk)
                .into_actor(self)
                .map(move |result, act, ctx| {
                    let Some(c) = act.companions.get_mut(&session).filter(|c| c.plan.id == id)
                    else {
                        return;
                    };
                    c.walking = false;
                    // Tests: the first tracer's third answered walk is taken as unanswered,
                    // as a tracer whose walk probe stopped firing would leave it.
                    let result = match result {
                        Ok(Ok(_))
                            if c.tracers == 1
                                && c.synced
                                && c.answered == 2
                                && consumer::fault_injected("explain_walk_timeout") =>
                        {
                            Ok(Err(consumer::ConsumerError::WalkTimeout(
                                FAULT_WALK_TIMEOUT,
                            )))
                        }
                        other => other,
                    };
                    if matches!(result, Ok(Ok(_))) {
                        c.answered += 1;
                    }
                    if !matches!(result, Ok(Err(consumer::ConsumerError::WalkTimeout(_)))) {
                        c.timeouts = 0;
                    }
                    match result {
                        Ok(Ok(frame)) if !c.synced => {
                            c.synced = true;
                            if let Some(snapshot) = frame.snapshot.as_deref() {
                                c.delta(snapshot);
                            }
                            // Counts before the first walk are not this tick's alone; after a
                            // replaced tracer, they are the gap's.
                            if c.tracers > 1 {
                                c.gap.ticks += ticks;
                                c.gap.events_in_band += in_band;
                            }
                        }
                        Ok(Ok(frame)) => {
                            let (keys, bytes) =
                                frame.snapshot.as_deref().map_or((0, 0), capture_size);
                            // A native companion prints nothing, and its map has its own size
                            // (what overflows it is counted as `missed`).
                            let native = c.spec.as_ref().is_some_and(|s| s.capture.is_some());
                            let (map_keys, bytes) = if native {
                                (consumer::native_captures(), 0)
                            } else {
                                (companion_map_keys(), bytes)
                            };
                            let crowding = crowding(
                                keys,
                                map_keys,
                                bytes,
                                act.plan.tick_ms,
                                act.config.limits.output_budget_bytes_per_s,
                            );
                            let mut tally = frame
                                .snapshot
                                .as_deref()
                                .map(|s| tally(&c.delta(s)))
                                .unwrap_or_default();
                            tally.capture_full = crowding == Crowding::Full;
                            if crowding != Crowding::Room {
                                c.rotations += 1; // replaced below, unless over its budget
                            }
                            let within = frame.cost.map_or(Ok(()), |s| c.budget.observe(s));
                            let cost = frame.cost.and_then(|s| s.cost());
                            let gap = std::mem::take(&mut c.gap);
                            let text = tick_message(id, seq, band, in_band, &tally, gap, cost);
                            act.tell_explain(&session, ExplainEvent::Tick(text.into()));
                            if let Err(over) = within {
                                let failure = CompanionFailure {
                                    code: "budget",
                                    message: format!("explain: {over}"),
                                    reason: "budget",
                                };
                                act.end_companion(&session, id, failure);
                            } else if crowding != Crowding::Room {
                                // A fresh tracer with an empty map; its first ticks are the gap.
                                let why = match crowding {
                                    Crowding::Full => "tracer replaced: its capture map is full",
                                    _ => "tracer replaced: its capture map is crowded",
                                };
                                act.respawn_companion(&session, id, why, ctx);
                            }
                        }
                        // A slow walk: its answer is tagged with its walk number, and the map is
                        // cumulative, so what it found arrives with the next one. A tracer that
                        // stops answering altogether is replaced (see RESPAWN_AFTER_TIMEOUTS).
                        Ok(Err(e @ consumer::ConsumerError::WalkTimeout(_))) => {
                            c.pending_in_band += in_band;
                            c.pending_ticks += ticks;
                            c.timeouts += 1;
                            crate::telemetry::Event::ConsumerFailed {
                                kind: e.kind(),
                                message: &format!("explain {id}: {e}"),
                            }
                            .emit();
                            if c.timeouts >= RESPAWN_AFTER_TIMEOUTS {
                                if c.tracers - c.rotations >= MAX_RESPAWNS {
                                    act.end_companion(
                                        &session,
                                        id,
                                        CompanionFailure::from_consumer(&e),
                                    );
                                } else {
                                    act.respawn_companion(
                                        &session,
                                        id,
                                        "tracer replaced: it did not answer its walk",
                                        ctx,
                                    );
                                }
                            }
                        }
                        Ok(Err(e)) => {
                            act.end_companion(&session, id, CompanionFailure::from_consumer(&e))
                        }
                        Err(e) => act.end_companion(
                            &session,
                            id,
                            CompanionFailure::internal(format!("explain consumer lost: {e}")),
                        ),
                    }
                })
                .spawn(ctx);
        }
    }
}

impl Handler<super::StartExplain> for super::Program {
    type Result = ();

    fn handle(&mut self, start: super::StartExplain, ctx: &mut Context<Self>) {
        let super::StartExplain { session, plan } = start;
        let id = plan.id;
        if !self.members.contains_key(&session) {
            // Left meanwhile: nothing to start, the slot goes back.
            self.registry
                .do_send(super::registry::ExplainEnded { session, id });
            return;
        }
        let mut old_tracer = None;
        if let Some(mut old) = self.companions.remove(&session) {
            let old_id = old.plan.id;
            if old_id == id {
                // Back after the replaced tracer was reaped: the placeholder goes.
                drop(old);
            } else {
                if let Some(kill) = old.kill.take() {
                    kill.kill();
                }
                old_tracer = old.consumer.take();
                drop(old);
                self.tell_explain(
                    &session,
                    ExplainEvent::Stopped {
                        id: old_id,
                        reason: "replaced",
                    },
                );
            }
        }
        if let Some(old) = old_tracer {
            // As for a tracer that stopped answering (`respawn_companion`): the new one
            // attaches once the old one is reaped and RESPAWN_SETTLE has passed. A placeholder
            // holds the session's place, so that an `explain_stop` meanwhile is not undone.
            self.companions
                .insert(session.clone(), Companion::placeholder(plan.clone()));
            old.send(consumer::Halt)
                .into_actor(self)
                .map(move |_, _, ctx| {
                    ctx.run_later(RESPAWN_SETTLE, move |act, ctx| {
                        let waiting = act
                            .companions
                            .get(&session)
                            .is_some_and(|c| c.plan.id == id && c.consumer.is_none());
                        if waiting {
                            act.handle(super::StartExplain { session, plan }, ctx);
                        }
                    });
                })
                .spawn(ctx);
            return;
        }
        let preset = self.plan.preset;
        let explainer = preset.and_then(|p| find(p.name).map(|e| (p, e)));
        let spec = match explainer {
            None => Err(ExplainError::Unsupported(unsupported_message(
                preset.map(|p| p.name),
            ))),
            Some((preset, explainer)) => explainer
                .spec(
                    preset,
                    &self.plan.program.filter,
                    plan.band,
                    &plan.keys,
                    plan.backend,
                )
                .map(|spec| (explainer, spec)),
        };
        let (explainer, spec) = match spec {
            Ok(ok) => ok,
            Err(e) => {
                let code = match e {
                    ExplainError::Unsupported(_) => "unsupported",
                    ExplainError::BadRequest(_) => "bad_request",
                };
                // Registered so that `end_companion` finds it.
                self.companions
                    .insert(session.clone(), Companion::placeholder(plan));
                let failure = CompanionFailure {
                    code,
                    message: e.to_string(),
                    reason: "refused",
                };
                return self.end_companion(&session, id, failure);
            }
        };
        crate::telemetry::Event::Explain {
            session: &session,
            explain: id,
            preset: Some(explainer.preset),
            what: "starting",
        }
        .emit();
        let band = plan.band;
        let keys = Arc::new(plan.keys.clone());
        let backend = backend_of(&spec);
        let companion = Companion::spawn(plan, spec, &self.config);
        let consumer = companion.consumer.clone().expect("just spawned");
        self.companions.insert(session.clone(), companion);
        consumer
            .send(consumer::Begin)
            .into_actor(self)
            .map(move |result, act, _| {
                let Some(c) = act.companions.get_mut(&session).filter(|c| c.plan.id == id) else {
                    return; // stopped meanwhile; dropping it ended the tracer
                };
                match result {
                    Ok(Ok(started)) => {
                        c.kill = started.kill_switch;
                        c.running = true;
                        act.tell_explain(
                            &session,
                            ExplainEvent::Started {
                                id,
                                preset: explainer.preset,
                                captures: explainer.captures,
                                band,
                                keys,
                                backend,
                            },
                        );
                    }
                    Ok(Err(e)) => {
                        act.end_companion(&session, id, CompanionFailure::from_consumer(&e))
                    }
                    Err(e) => act.end_companion(
                        &session,
                        id,
                        CompanionFailure::internal(format!("explain consumer lost: {e}")),
                    ),
                }
            })
            .spawn(ctx);
    }
}

impl Handler<super::StopExplain> for super::Program {
    type Result = ();

    fn handle(&mut self, stop: super::StopExplain, _: &mut Context<Self>) {
        let Some(c) = self.companions.get(&stop.session) else {
            return;
        };
        if stop.id.is_some_and(|id| id != c.plan.id) {
            return;
        }
        let id = c.plan.id;
        self.companions.remove(&stop.session);
        self.tell_explain(
            &stop.session,
            ExplainEvent::Stopped {
                id,
                reason: stop.reason,
            },
        );
    }
}

/// Why a program cannot be explained, naming those that can.
pub fn unsupported_message(preset: Option<&str>) -> String {
    let can: Vec<&str> = EXPLAINERS.iter().map(|e| e.preset).collect();
    match preset {
        Some(name) => format!(
            "explain: preset {name:?} has no explainer; these have: {}",
            can.join(", ")
        ),
        None => format!(
            "explain: a custom script has no explainer; these presets have: {}",
            can.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::{AggKind, Aggregation, Series};
    use crate::presets;

    const AUTO: CompanionBackend = CompanionBackend::Auto;
    const BPFTRACE: CompanionBackend = CompanionBackend::Bpftrace;

    #[test]
    fn frames_fold_root_first_with_offsets_stripped() {
        let u = "\n    __clock_nanosleep+67\n    0x7f00aa\n    main+12\n";
        let k = "\n    syscall_exit_work+188\n    do_syscall_64+558\n";
        assert_eq!(
            folded(u, k),
            "main;[unknown];__clock_nanosleep;do_syscall_64_[k];syscall_exit_work_[k]"
        );
        assert_eq!(folded("", ""), "[no stack]");
        // A C++ symbol with `+` inside keeps it; only a numeric offset goes.
        assert_eq!(frame_name("operator+ +4"), Some("operator+ ".into()));
    }

    #[test]
    fn a_waker_folds_above_the_target_and_misses_are_apart() {
        let key = |comm: &str, waker: &str| {
            vec![
                KeyPart::Int(42),
                KeyPart::Int(1),
                KeyPart::Str(comm.into()),
                KeyPart::Str("__schedule\ndo_nanosleep".into()),
                KeyPart::Str("clock_nanosleep".into()),
                KeyPart::Str(waker.into()),
                KeyPart::Str(
                    if waker.is_empty() {
                        ""
                    } else {
                        "hrtimer_wakeup\n__hrtimer_run_queues"
                    }
                    .into(),
                ),
            ]
        };
        let series = |key, n| Series {
            key,
            value: Value::Scalar(n),
            sum: None,
        };
        let s = Snapshot {
            aggregations: vec![
                Aggregation {
                    name: consumer::CAPTURE_AGGREGATION.into(),
                    kind: AggKind::Count,
                    series: vec![
                        series(key("perl", "swapper/0"), 5),
                        series(key("perl", ""), 2),
                    ],
                    folded: 0,
                },
                Aggregation {
                    name: consumer::MISSED_AGGREGATION.into(),
                    kind: AggKind::Count,
                    series: vec![series(Vec::new(), 3)],
                    folded: 0,
                },
            ],
            ..Snapshot::default()
        };
        let t = tally(&s);
        assert_eq!((t.explained, t.missed), (7, 3));
        assert_eq!(
            t.stacks[
                "clock_nanosleep;do_nanosleep_[k];__schedule_[k];--;hrtimer_wakeup_[k];__hrtimer_run_queues_[k];swapper/0"
            ],
            5
        );
        assert_eq!(
            t.stacks["clock_nanosleep;do_nanosleep_[k];__schedule_[k]"],
            2
        );
        assert_eq!(t.processes[0].count, 7, "misses are no process's");
        let text = tick_message(1, 2, Band { lo: 0, hi: None }, 10, &t, Gap::default(), None);
        assert!(text.contains("\"missed\":3"), "{text}");
        let none = tick_message(
            1,
            2,
            Band { lo: 0, hi: None },
            10,
            &Tally::default(),
            Gap::default(),
            None,
        );
        assert!(!none.contains("missed"), "{none}");
    }

    #[test]
    fn bands_hold_whole_buckets_only() {
        let band = Band {
            lo: 2048,
            hi: Some(4096),
        };
        let b = |lo: Option<i64>, hi: Option<i64>| Bucket { lo, hi, count: 1 };
        assert!(band.holds(&b(Some(2048), Some(4095))));
        assert!(!band.holds(&b(Some(1024), Some(2047))));
        assert!(!band.holds(&b(Some(4096), Some(8191))));
        assert!(!band.holds(&b(Some(2048), None)));
        let open = Band { lo: 64, hi: None };
        assert!(open.holds(&b(Some(64), None)));
        assert!(!open.holds(&b(None, Some(-1))));
    }

    fn snapshot(series: Vec<Series>, kind: AggKind) -> Snapshot {
        Snapshot {
            aggregations: vec![Aggregation {
                name: "@x".into(),
                kind,
                series,
                folded: 0,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn events_in_band_sum_the_isolated_keys() {
        let hist = |key: &str, lo, hi, count| Series {
            sum: None,
            key: vec![KeyPart::Str(key.into())],
            value: Value::Buckets(vec![Bucket {
                lo: Some(lo),
                hi: Some(hi),
                count,
            }]),
        };
        let s = snapshot(
            vec![
                hist("clock_nanosleep", 2048, 4095, 7),
                hist("read", 2048, 4095, 3),
                hist("read", 4096, 8191, 100),
            ],
            AggKind::Hist,
        );
        let band = Band {
            lo: 2048,
            hi: Some(4096),
        };
        assert_eq!(events_in_band(&s, band, &[]), 10);
        assert_eq!(events_in_band(&s, band, &["read".into()]), 3);
    }

    #[test]
    fn a_walk_tallies_into_stacks_processes_and_cgroups() {
        let cap = |pid, comm: &str, u: &str, n| Series {
            sum: None,
            key: vec![
                KeyPart::Int(pid),
                KeyPart::Int(7),
                KeyPart::Str(comm.into()),
                KeyPart::Str("\n    k+1\n".into()),
                KeyPart::Str(u.into()),
            ],
            value: Value::Scalar(n),
        };
        let s = snapshot(
            vec![
                cap(10, "perl", "\n    nanosleep+3\n", 5),
                cap(10, "perl", "\n    read+3\n", 2),
                cap(11, "dd", "\n    read+3\n", 1),
            ],
            AggKind::Count,
        );
        let t = tally(&s);
        assert_eq!(t.explained, 8);
        assert_eq!(t.stacks["nanosleep;k_[k]"], 5);
        assert_eq!(t.stacks["read;k_[k]"], 3);
        assert_eq!(t.processes[0].comm, "perl");
        assert_eq!(t.processes[0].count, 7);
        assert_eq!(
            t.cgroups,
            vec![CgroupCount {
                cgroup: 7,
                count: 8
            }]
        );
    }

    #[test]
    fn scripts_filter_to_the_band_keys_and_process() {
        let preset = presets::find("syscall-latency-log2").unwrap();
        let e = find(preset.name).unwrap();
        let filter = ProcessFilter {
            pid: Some(42),
            ..ProcessFilter::default()
        };
        let band = Band {
            lo: 2048,
            hi: Some(4096),
        };
        let script = e
            .spec(preset, &filter, band, &["clock_nanosleep".into()], BPFTRACE)
            .unwrap()
            .script;
        let nr = crate::syscalls::number("clock_nanosleep").unwrap();
        assert!(script.contains(&format!(
            "if ($v >= 2048 && $v < 4096 && (args->id == {nr}))"
        )));
        assert!(script.contains("/pid == 42/"), "{script}");
        assert!(!script.contains("HEAT_IN_BAND"));
        assert!(e
            .spec(preset, &filter, band, &["nope".into()], BPFTRACE)
            .is_err());
        let profile = presets::find("cpu-profile").unwrap();
        let burner = find("cpu-profile").unwrap();
        let band = Band {
            lo: 0,
            hi: Some(200),
        };
        let none = ProcessFilter::default();
        let s = burner
            .spec(profile, &none, band, &["burn".into()], AUTO)
            .unwrap()
            .script;
        assert!(
            s.contains("if ($v >= 0 && $v < 200 && (comm == \"burn\"))"),
            "{s}"
        );
        assert!(burner
            .spec(profile, &none, band, &["a\"b".into()], AUTO)
            .is_err());
        for explainer in EXPLAINERS {
            assert!(presets::find(explainer.preset).is_some());
            if let Some(BpftraceCompanion { template, .. }) = explainer.bpftrace {
                let maps = crate::consumer::bpftrace::program::aggregation_maps(template);
                assert_eq!(maps.len(), 1, "{} has one capture map", explainer.preset);
            }
        }
    }

    #[test]
    fn native_captures_take_the_band_in_ns_and_the_main_programs_filter() {
        let preset = presets::find("runqueue-latency").unwrap();
        let e = find(preset.name).unwrap();
        let filter = ProcessFilter {
            pid: Some(42),
            ..ProcessFilter::default()
        };
        let band = Band {
            lo: 2048,
            hi: Some(4096),
        };
        let spec = e
            .spec(preset, &filter, band, &["perl".into()], AUTO)
            .unwrap();
        assert_eq!(spec.filter, filter);
        assert_eq!(
            spec.capture,
            Some(consumer::Capture {
                kind: CaptureKind::RunQueue,
                lo_ns: 2_048_000,
                hi_ns: Some(4_096_000),
                keys: vec!["perl".into()],
            })
        );
        let offcpu = presets::find("offcpu-time").unwrap();
        let open = Band {
            lo: 1 << 20,
            hi: None,
        };
        let spec = find("offcpu-time")
            .unwrap()
            .spec(offcpu, &ProcessFilter::default(), open, &[], AUTO)
            .unwrap();
        let capture = spec.capture.unwrap();
        assert_eq!((capture.lo_ns, capture.hi_ns), (1 << 20, None), "ns as is");
        let blockio = presets::find("block-io-latency").unwrap();
        let e = find("block-io-latency").unwrap();
        assert!(e.spec(blockio, &filter, band, &["WS".into()], AUTO).is_ok());
        assert!(e.spec(blockio, &filter, band, &["".into()], AUTO).is_err());
        assert!(e
            .spec(blockio, &filter, band, &["0123456789abcdef".into()], AUTO)
            .is_err());
    }

    #[test]
    fn the_backend_asked_is_the_one_that_runs_or_a_clear_refusal() {
        let syscalls = presets::find("syscall-latency").unwrap();
        let e = find(syscalls.name).unwrap();
        let none = ProcessFilter::default();
        let band = Band { lo: 64, hi: None };
        let keys = ["clock_nanosleep".to_owned()];
        let native = e
            .spec(syscalls, &none, band, &keys, CompanionBackend::Ebpf)
            .unwrap();
        let nr = crate::syscalls::number("clock_nanosleep").unwrap();
        let capture = native.capture.unwrap();
        assert_eq!(capture.kind, CaptureKind::Syscall);
        assert_eq!(
            capture.keys,
            vec![nr.to_string()],
            "syscall keys go as numbers"
        );
        assert_eq!((capture.lo_ns, capture.hi_ns), (64_000, None), "us to ns");
        let traced = e.spec(syscalls, &none, band, &keys, BPFTRACE).unwrap();
        assert!(traced.capture.is_none() && !traced.script.contains("HEAT_IN_BAND"));
        let offcpu = presets::find("offcpu-time").unwrap();
        let refused = find("offcpu-time")
            .unwrap()
            .spec(offcpu, &none, band, &[], BPFTRACE)
            .unwrap_err();
        assert!(matches!(refused, ExplainError::Unsupported(ref m) if m.contains("native only")));
        let profile = presets::find("cpu-profile").unwrap();
        let refused = find("cpu-profile")
            .unwrap()
            .spec(profile, &none, band, &[], CompanionBackend::Ebpf)
            .unwrap_err();
        assert!(matches!(refused, ExplainError::Unsupported(ref m) if m.contains("bpftrace only")));
        assert_eq!(
            CompanionBackend::parse("ebpf"),
            Some(CompanionBackend::Ebpf)
        );
        assert_eq!(CompanionBackend::parse("dtrace"), None);
    }

    #[test]
    fn a_capture_map_is_crowded_at_half_its_keys_or_budget_and_full_at_its_size() {
        let map = 1000;
        let budget = 4 * 1024 * 1024;
        assert_eq!(crowding(0, map, 0, 1000, budget), Crowding::Room);
        assert_eq!(crowding(499, map, 100_000, 1000, budget), Crowding::Room);
        assert_eq!(crowding(500, map, 100_000, 1000, budget), Crowding::Crowded);
        assert_eq!(crowding(1000, map, 100_000, 1000, budget), Crowding::Full);
        // Prints of 2 MiB a second: every second, or 200 KiB ten times a second.
        assert_eq!(crowding(10, map, 2 << 20, 1000, budget), Crowding::Crowded);
        assert_eq!(crowding(10, map, 2 << 20, 5000, budget), Crowding::Crowded);
        assert_eq!(crowding(10, map, 200 << 10, 1000, budget), Crowding::Room);
        assert_eq!(crowding(10, map, 210 << 10, 100, budget), Crowding::Crowded);
        let cap = |pid, u: &str| Series {
            sum: None,
            key: vec![
                KeyPart::Int(pid),
                KeyPart::Int(7),
                KeyPart::Str("perl".into()),
                KeyPart::Str("k".into()),
                KeyPart::Str(u.into()),
            ],
            value: Value::Scalar(1),
        };
        let s = snapshot(vec![cap(1, "ab"), cap(2, "abcd")], AggKind::Count);
        assert_eq!(
            capture_size(&s),
            (2, 2 * (PRINT_BYTES_PER_KEY + 40 + 4 + 1) + 2 + 4)
        );
    }

    #[test]
    fn a_stack_printed_anew_after_its_process_exits_is_not_counted_again() {
        let cap = |pid, u: &str, n| Series {
            sum: None,
            key: vec![
                KeyPart::Int(pid),
                KeyPart::Int(7),
                KeyPart::Str("perl".into()),
                KeyPart::Str("\n    k+1\n".into()),
                KeyPart::Str(u.into()),
            ],
            value: Value::Scalar(n),
        };
        let mut c = Companion::placeholder(ExplainPlan {
            id: 1,
            band: Band { lo: 0, hi: None },
            keys: Vec::new(),
            max_cpu_percent: 1,
            backend: AUTO,
        });
        let walk = |c: &mut Companion, series| tally(&c.delta(&snapshot(series, AggKind::Count)));
        let first = walk(
            &mut c,
            vec![
                cap(10, "\n    nanosleep+3\n", 10),
                cap(11, "\n    read+3\n", 4),
            ],
        );
        assert_eq!(first.explained, 14);
        // Process 10 exited: its stack comes back as an address, 2 more events since.
        let second = walk(
            &mut c,
            vec![
                cap(10, "\n    0x7f00aa\n", 12),
                cap(11, "\n    read+3\n", 5),
            ],
        );
        assert_eq!(second.explained, 3, "{second:?}");
        assert_eq!(second.stacks["[unknown];k_[k]"], 2);
        // A stack new to the walk is counted whole.
        let third = walk(
            &mut c,
            vec![
                cap(10, "\n    0x7f00aa\n", 12),
                cap(11, "\n    read+3\n", 5),
                cap(11, "\n    write+3\n", 6),
            ],
        );
        assert_eq!(third.explained, 6);
    }

    #[test]
    fn a_full_capture_is_told() {
        let band = Band { lo: 64, hi: None };
        let mut t = Tally::default();
        let quiet: serde_json::Value =
            serde_json::from_str(&tick_message(1, 5, band, 10, &t, Gap::default(), None)).unwrap();
        assert!(quiet.get("capture_full").is_none(), "{quiet}");
        t.capture_full = true;
        let full: serde_json::Value =
            serde_json::from_str(&tick_message(1, 5, band, 10, &t, Gap::default(), None)).unwrap();
        assert_eq!(full["capture_full"], true);
    }

    #[test]
    fn a_gap_is_told_only_when_ticks_had_no_stacks() {
        let band = Band { lo: 64, hi: None };
        let t = Tally::default();
        let plain: serde_json::Value =
            serde_json::from_str(&tick_message(1, 5, band, 10, &t, Gap::default(), None)).unwrap();
        assert!(plain.get("gap").is_none(), "{plain}");
        let gap = Gap {
            ticks: 3,
            events_in_band: 905,
        };
        let told: serde_json::Value =
            serde_json::from_str(&tick_message(1, 9, band, 10, &t, gap, None)).unwrap();
        assert_eq!(
            told["gap"],
            serde_json::json!({"ticks": 3, "events_in_band": 905})
        );
        assert_eq!(
            told["events_in_band"], 10,
            "the gap is apart from the tick's count"
        );
    }

    #[test]
    fn explain_messages_parse_strictly() {
        use crate::session::protocol::{parse_client_message, ClientMessage};
        let parsed = parse_client_message(
            r#"{"type":"explain","program":3,"band":{"lo":2048,"hi":4096},"keys":["read"]}"#,
        );
        let Ok(ClientMessage::Explain(request)) = parsed else {
            panic!("{parsed:?}");
        };
        assert_eq!(request.program, 3);
        assert_eq!(
            request.band,
            Band {
                lo: 2048,
                hi: Some(4096)
            }
        );
        assert_eq!(request.keys, vec!["read".to_owned()]);
        let open = parse_client_message(r#"{"type":"explain","program":3,"band":{"lo":64}}"#);
        assert!(
            matches!(open, Ok(ClientMessage::Explain(r)) if r.band.hi.is_none() && r.keys.is_empty())
        );
        assert_eq!(
            parse_client_message(r#"{"type":"explain_stop"}"#),
            Ok(ClientMessage::ExplainStop)
        );
        for bad in [
            r#"{"type":"explain","band":{"lo":1}}"#,
            r#"{"type":"explain","program":1}"#,
            r#"{"type":"explain","program":1,"band":{"lo":4,"hi":4}}"#,
            r#"{"type":"explain","program":1,"band":{"lo":-1}}"#,
            r#"{"type":"explain","program":1,"band":{"lo":1,"mid":2}}"#,
            r#"{"type":"explain","program":1,"band":{"lo":1},"keys":[null]}"#,
            r#"{"type":"explain","program":1,"band":{"lo":1},"colour":"red"}"#,
            r#"{"type":"explain_stop","now":true}"#,
        ] {
            let e = parse_client_message(bad).unwrap_err();
            assert_eq!(e.code(), "bad_request", "{bad}");
        }
    }
}
