//! Planning a program: what a start request asks for, checked and resolved against this host
//! (backends present, presets, the D translator) into a [`Plan`] that a [`super::Program`]
//! runs, and the [`ProgramKey`] under which sessions share it. No session or socket here, so
//! every rule is testable on its own.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use crate::config::{Config, Role, TICK_MS_RANGE};
use crate::consumer::{self, Backend, ProgramSpec};
use crate::dlang;
use crate::presets::{self, KeyNames, Preset, ProcessFilter};
use crate::session::protocol::StartRequest;
use crate::telemetry::Refusal;

/// What sessions that share a program all asked for. Two equal keys are one program.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ProgramKey {
    Preset {
        name: &'static str,
        pid: Option<u32>,
        comm: Option<String>,
        include_self: bool,
        tick_ms: u64,
        backend: Backend,
    },
    /// A script whose start said `"share": true`: the same text, language and parameters,
    /// from the same role.
    Script {
        /// A hash of the text, with the text kept to rule out collisions.
        digest: u64,
        text: String,
        lang: String,
        role: Role,
        tick_ms: u64,
        backend: Backend,
    },
}

/// A start request made ready to run.
#[derive(Debug)]
pub struct Plan {
    pub backend: Backend,
    /// Whether a native program that cannot start may run on bpftrace instead.
    pub fallback: bool,
    /// Why a preset with a native version runs on bpftrace although nobody asked for it.
    pub why_not_native: Option<String>,
    pub program: ProgramSpec,
    pub preset: Option<&'static Preset>,
    /// For D scripts: the engine that runs them and its notes on approximations.
    pub engine: Option<(&'static str, Vec<String>)>,
    pub tick_ms: u64,
    /// Sessions with equal keys share the program; `None`: private to its session.
    pub key: Option<ProgramKey>,
    /// The watch this program is (`[[watch]]`): pinned, restarted when it fails, recorded.
    pub watch: Option<String>,
    /// The session asked for its program to be recorded (`"record": true`).
    pub record: bool,
    /// The program's CPU budget, in percent of one CPU: the start's `max_cpu_percent`, else
    /// `limits.max_program_cpu_percent`. A shared program keeps its starter's.
    pub max_cpu_percent: u32,
}

/// Why a start request cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanError {
    /// Refused for a reason counted in `heat_sessions_rejected_total`.
    Refused(Refusal, String),
    /// The program does not compile (the D translator said so before any tracer ran).
    Compile(String),
}

/// Plans `request` for a session of `role` on this host.
pub fn plan(
    session: &str,
    request: &StartRequest,
    config: &Config,
    role: Role,
) -> Result<Plan, PlanError> {
    let refused = |reason, message| PlanError::Refused(reason, message);
    if let Some(pid) = request.pid.filter(|&pid| !process_exists(pid)) {
        return Err(refused(
            Refusal::BadRequest,
            format!("no process {pid}: `pid` must name a running process"),
        ));
    }
    let preset = match request.preset.as_deref() {
        None => None,
        Some(name) => Some(presets::find(name).ok_or_else(|| {
            let known: Vec<&str> = presets::PRESETS.iter().map(|p| p.name).collect();
            refused(
                Refusal::UnknownPreset,
                format!("no preset {name:?}; presets: {}", known.join(", ")),
            )
        })?),
    };
    let bpftrace = &config.bpftrace.path;
    let Choice {
        backend,
        fallback,
        why_not_native,
    } = choose_backend(
        session,
        request,
        preset,
        consumer::bpftrace::installed(bpftrace),
    )
    .and_then(|choice| needs_bpftrace(choice, bpftrace))
    .map_err(|message| refused(Refusal::Unsupported, message))?;
    let Resolved {
        program,
        preset,
        engine,
    } = resolve(request, preset, backend).map_err(|(code, message)| match code {
        "compile" => PlanError::Compile(message),
        "unsupported" => refused(Refusal::Unsupported, message),
        _ => refused(Refusal::BadRequest, message),
    })?;
    let tick_ms = request.tick_ms.unwrap_or(config.tick_ms);
    if !TICK_MS_RANGE.contains(&tick_ms) {
        let message = format!(
            "tick_ms {tick_ms} is not in {}..={}",
            TICK_MS_RANGE.start(),
            TICK_MS_RANGE.end()
        );
        return Err(refused(Refusal::BadRequest, message));
    }
    let max_cpu_percent =
        cpu_budget(request, config, role).map_err(|m| refused(Refusal::Forbidden, m))?;
    let key = match (preset, &request.script) {
        (Some(preset), _) => Some(ProgramKey::Preset {
            name: preset.name,
            pid: request.pid,
            comm: request.comm.clone(),
            include_self: request.include_self == Some(true),
            tick_ms,
            backend,
        }),
        (None, Some(text)) if request.share => Some(ProgramKey::Script {
            digest: {
                let mut hasher = DefaultHasher::new();
                text.hash(&mut hasher);
                hasher.finish()
            },
            text: text.clone(),
            lang: request.lang.clone().unwrap_or_default(),
            role,
            tick_ms,
            backend,
        }),
        _ => None,
    };
    Ok(Plan {
        backend,
        fallback,
        why_not_native,
        program,
        preset,
        engine,
        tick_ms,
        key,
        watch: None,
        record: request.record,
        max_cpu_percent,
    })
}

/// The CPU budget a start asks for, within what its role may ask for: anyone may lower the
/// configured budget, only an operator may raise it (to `limits.max_program_cpu_percent_operator`).
pub(crate) fn cpu_budget(
    request: &StartRequest,
    config: &Config,
    role: Role,
) -> Result<u32, String> {
    let limits = &config.limits;
    let Some(asked) = request.max_cpu_percent else {
        return Ok(limits.max_program_cpu_percent);
    };
    let most = limits.max_cpu_percent_for(role);
    if asked <= most {
        return Ok(asked);
    }
    Err(match role {
        Role::Viewer => format!(
            "max_cpu_percent {asked} is over this server's budget of {most}%              (limits.max_program_cpu_percent); only an operator may raise it"
        ),
        Role::Operator => format!(
            "max_cpu_percent {asked} is over the operators' limit of {most}%              (limits.max_program_cpu_percent_operator)"
        ),
    })
}

/// The backends a session can run, as announced in `hello`: `ebpf` only where the native
/// programs loaded at start-up (`consumer::ebpf::probe`), `bpftrace` only where it is installed,
/// `dtrace` only in a build with libdtrace.
pub fn backends(bpftrace: bool) -> Vec<&'static str> {
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
            capture: None,
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
    let mut filter = ProcessFilter {
        pid: request.pid,
        comm: request.comm.clone(),
        exclude: None,
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
        filter.exclude = preset.exclusion(request.include_self == Some(true));
        let script = preset
            .script_with(&filter)
            .map_err(|message| ("bad_request", message))?;
        let program = ProgramSpec {
            script,
            key_names: preset.key_names,
            rewrite: None,
            preset: Some(preset),
            filter,
            capture: None,
        };
        return Ok(Resolved {
            program,
            preset: Some(preset),
            engine: None,
        });
    }
    if !filter.is_empty() || request.include_self.is_some() {
        return Err((
            "bad_request",
            "`pid`, `comm` and `include_self` apply to presets; a script filters with its own predicates".into(),
        ));
    }
    let script = request.script.clone().unwrap_or_default();
    let program = |script| ProgramSpec {
        script,
        key_names: KeyNames::AsIs,
        rewrite: None,
        preset: None,
        filter: ProcessFilter::default(),
        capture: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_existing_processes_pass_the_pid_check() {
        assert!(process_exists(std::process::id()));
        // Above the kernel's pid_max limit (4194304), so never a process.
        assert!(!process_exists(i32::MAX as u32));
    }

    fn planned(request: StartRequest, role: Role) -> Plan {
        plan("s-test", &request, &Config::default(), role).expect("plans")
    }

    #[test]
    fn presets_with_the_same_parameters_share_and_others_do_not() {
        let preset = |tick_ms, comm: Option<&str>| StartRequest {
            preset: Some("syscall-latency".into()),
            tick_ms: Some(tick_ms),
            comm: comm.map(str::to_owned),
            ..Default::default()
        };
        let a = planned(preset(1000, None), Role::Viewer).key;
        assert!(a.is_some());
        assert_eq!(a, planned(preset(1000, None), Role::Operator).key);
        assert_ne!(a, planned(preset(500, None), Role::Viewer).key);
        assert_ne!(a, planned(preset(1000, Some("sshd")), Role::Viewer).key);
    }

    #[test]
    fn a_start_may_lower_the_cpu_budget_and_only_an_operator_may_raise_it() {
        let asking = |percent| StartRequest {
            preset: Some("syscall-latency".into()),
            max_cpu_percent: percent,
            ..Default::default()
        };
        let config = Config::default();
        let budget = |percent, role| {
            plan("s-test", &asking(percent), &config, role).map(|p| p.max_cpu_percent)
        };
        assert_eq!(budget(None, Role::Viewer), Ok(10));
        assert_eq!(budget(Some(2), Role::Viewer), Ok(2));
        assert!(matches!(
            budget(Some(11), Role::Viewer),
            Err(PlanError::Refused(Refusal::Forbidden, m)) if m.contains("only an operator")
        ));
        assert_eq!(budget(Some(100), Role::Operator), Ok(100));
        assert!(matches!(
            budget(Some(101), Role::Operator),
            Err(PlanError::Refused(Refusal::Forbidden, m))
                if m.contains("limits.max_program_cpu_percent_operator")
        ));
    }

    #[test]
    fn scripts_are_private_unless_shared_and_then_keyed_by_text_and_role() {
        let script = |text: &str, share| StartRequest {
            lang: Some("bpftrace".into()),
            script: Some(text.into()),
            share,
            ..Default::default()
        };
        let text = "BEGIN { @n = count(); }";
        assert_eq!(planned(script(text, false), Role::Operator).key, None);
        let shared = planned(script(text, true), Role::Operator).key;
        assert!(shared.is_some());
        assert_eq!(shared, planned(script(text, true), Role::Operator).key);
        assert_ne!(shared, planned(script(text, true), Role::Viewer).key);
        assert_ne!(
            shared,
            planned(script("BEGIN { @m = count(); }", true), Role::Operator).key
        );
    }
}
