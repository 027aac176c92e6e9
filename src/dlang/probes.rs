//! D probe descriptions and what they become on Linux: the bpftrace probe, a filter, and the
//! meaning of the probe-dependent builtins (`probefunc`, `argN`, `args[N]`, whose thread it is).

use super::ast::Pos;
use super::DError;

/// The value type of a translated expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    Int,
    /// An unsigned 64-bit integer (D's `uint64_t` timestamps and what is computed from them),
    /// for which division and shifts need no sign handling.
    UInt,
    Str,
    /// An integer that is a syscall number: keys of this type are shown as syscall names.
    Syscall,
}

impl Ty {
    /// Both are integers in bpftrace, so they can share a key position or a variable.
    pub fn compatible(self, other: Ty) -> bool {
        (self == Ty::Str) == (other == Ty::Str)
    }
}

/// One D probe description as bpftrace sees it.
#[derive(Debug, Clone)]
pub struct ProbeCtx {
    /// The bpftrace probe.
    pub probe: String,
    /// A bpftrace condition that narrows the probe to what D named (syscall numbers).
    pub filter: Option<String>,
    pub provider: &'static str,
    pub name: String,
    /// `probefunc`.
    pub func: (String, Ty),
    /// The thread the probe runs for, which `self->` variables are keyed by.
    pub tid: &'static str,
    /// `execname` when the probe is about another thread than the current one.
    pub execname: Option<&'static str>,
    /// Why `pid`, `ppid` and `uid` are unavailable, if they are.
    pub no_process: Option<&'static str>,
    /// `argN` / `args[N]` / `args[N]->member` → bpftrace expression.
    pub args: &'static [Arg],
    /// What the translation approximates, for the `started` notes.
    pub note: Option<String>,
}

/// One probe argument: index, member (`None` for `argN` / `args[N]`), bpftrace text, type.
pub type Arg = (i64, Option<&'static str>, &'static str, Ty);

// D's argN are int64_t; raw_syscalls gives unsigned longs.
const SYSCALL_ENTRY_ARGS: &[Arg] = &[
    (0, None, "(int64)args->args[0]", Ty::Int),
    (1, None, "(int64)args->args[1]", Ty::Int),
    (2, None, "(int64)args->args[2]", Ty::Int),
    (3, None, "(int64)args->args[3]", Ty::Int),
    (4, None, "(int64)args->args[4]", Ty::Int),
    (5, None, "(int64)args->args[5]", Ty::Int),
];
// DTrace gives the return value in both arg0 and arg1.
const SYSCALL_RETURN_ARGS: &[Arg] = &[
    (0, None, "args->ret", Ty::Int),
    (1, None, "args->ret", Ty::Int),
];

/// A provider probe backed by a tracepoint: (provider, name, tracepoint, args, note).
type Tracepoint = (
    &'static str,
    &'static str,
    &'static str,
    &'static [Arg],
    Option<&'static str>,
);

const TRACEPOINTS: &[Tracepoint] = &[
    ("proc", "exec", "sys_enter_execve", &[(0, None, "str(args->filename)", Ty::Str)],
     Some("proc:::exec is the execve(2) entry tracepoint (execveat(2) is not included)")),
    ("proc", "exec-success", "sched:sched_process_exec", &[], None),
    ("proc", "exit", "sched:sched_process_exit", &[],
     Some("proc:::exit is sched_process_exit, which fires for every exiting thread, not once per process")),
    ("proc", "create", "sched:sched_process_fork", &[
        (0, Some("pr_pid"), "args->child_pid", Ty::Int),
        (0, Some("pr_fname"), "args->child_comm", Ty::Str),
    ], Some("proc:::create is sched_process_fork, which also fires for new threads")),
    ("proc", "signal-send", "signal:signal_generate", &[
        (1, Some("pr_pid"), "args->pid", Ty::Int),
        (1, Some("pr_fname"), "args->comm", Ty::Str),
        (2, None, "args->sig", Ty::Int),
    ], None),
    ("sched", "off-cpu", "sched:sched_switch", &[
        (0, Some("pr_lwpid"), "args->next_pid", Ty::Int),
        (1, Some("pr_fname"), "args->next_comm", Ty::Str),
    ], None),
    ("sched", "wakeup", "sched:sched_wakeup", &[
        (0, Some("pr_lwpid"), "args->pid", Ty::Int),
        (1, Some("pr_fname"), "args->comm", Ty::Str),
    ], None),
    ("sched", "enqueue", "sched:sched_wakeup", &[
        (0, Some("pr_lwpid"), "args->pid", Ty::Int),
        (1, Some("pr_fname"), "args->comm", Ty::Str),
    ], Some("sched:::enqueue is sched_wakeup: it fires when a thread is woken, not when a preempted thread is put back on a run queue")),
    ("io", "start", "block:block_rq_issue", &[
        (0, Some("b_bcount"), "(args->nr_sector * 512)", Ty::Int),
        (0, Some("b_blkno"), "args->sector", Ty::Int),
        (0, Some("b_edev"), "args->dev", Ty::Int),
    ], Some("io:::start is block_rq_issue; args[0]->b_blkno is the 512-byte sector, b_bcount is sectors * 512")),
    ("io", "done", "block:block_rq_complete", &[
        (0, Some("b_bcount"), "(args->nr_sector * 512)", Ty::Int),
        (0, Some("b_blkno"), "args->sector", Ty::Int),
        (0, Some("b_edev"), "args->dev", Ty::Int),
    ], Some("io:::done is block_rq_complete, which runs in whatever context completes the request")),
];

/// The descriptions one probe description stands for: a syscall description with an empty or
/// `*` name means both `entry` and `return`, as DTrace matches it.
pub fn expand(text: &str) -> Vec<String> {
    let parts: Vec<&str> = text.split(':').collect();
    match parts.as_slice() {
        ["syscall", module, function, "" | "*"] => ["entry", "return"]
            .iter()
            .map(|name| format!("syscall:{module}:{function}:{name}"))
            .collect(),
        _ => vec![text.to_owned()],
    }
}

/// Reads one probe description (`syscall::read:entry`, `tick-1s`, `BEGIN`, …).
pub fn probe(text: &str, pos: Pos) -> Result<ProbeCtx, DError> {
    if let Some(on_cpu) = on_cpu(pos, text) {
        return on_cpu;
    }
    let err = |m: String| DError::at(pos, m);
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() > 4 {
        return Err(err(format!("`{text}` has more than four fields")));
    }
    // Fields are right-aligned: `entry` is a name, `read:entry` function and name, …
    let mut fields = ["", "", "", ""];
    fields[4 - parts.len()..].copy_from_slice(&parts);
    let [provider, module, function, name] = fields;
    let plain = |provider: &'static str, probe: &str, name: &str| ProbeCtx {
        probe: probe.to_owned(),
        filter: None,
        provider,
        name: name.to_owned(),
        func: (String::new(), Ty::Str),
        tid: "tid",
        execname: None,
        no_process: None,
        args: &[],
        note: None,
    };
    if provider.contains(['*', '?']) {
        return Err(err(format!(
            "`{text}`: the provider must be named exactly, not matched by a pattern"
        )));
    }
    match (provider, name) {
        ("" | "dtrace", "BEGIN") => return Ok(plain("dtrace", "BEGIN", "BEGIN")),
        ("" | "dtrace", "END") => return Ok(plain("dtrace", "END", "END")),
        ("" | "dtrace", "ERROR") => {
            return Err(err("the ERROR probe has no Linux equivalent".into()))
        }
        ("" | "profile", _) if name.starts_with("tick-") || name.starts_with("profile-") => {
            let (kind, rate) = name.split_once('-').expect("checked above");
            let (unit, n) = rate_unit(rate).ok_or_else(|| {
                err(format!(
                    "`{name}`: expected a rate such as {kind}-1s, {kind}-10ms, {kind}-997 or {kind}-100hz"
                ))
            })?;
            let bpf = if kind == "tick" {
                "interval"
            } else {
                "profile"
            };
            return Ok(plain("profile", &format!("{bpf}:{unit}:{n}"), name));
        }
        ("syscall", _) => return syscall(text, module, function, name, pos),
        _ => {}
    }
    if !module.is_empty() || !function.is_empty() {
        if !TRACEPOINTS.iter().any(|t| t.0 == provider) {
            return Err(err(format!(
                "probe `{text}` is not supported: providers are syscall, proc, sched, io, profile \
                 (tick-, profile-) and BEGIN/END"
            )));
        }
        return Err(err(format!(
            "`{text}`: only the provider and name fields can be given for {provider} probes"
        )));
    }
    let Some((prov, _, tp, args, note)) = TRACEPOINTS
        .iter()
        .find(|(p, n, ..)| *p == provider && *n == name)
    else {
        let known: Vec<String> = TRACEPOINTS
            .iter()
            .filter(|t| t.0 == provider)
            .map(|t| format!("{}:::{}", t.0, t.1))
            .collect();
        return Err(err(if known.is_empty() {
            format!(
                "probe `{text}` is not supported: providers are syscall, proc, sched, io, profile \
                 (tick-, profile-) and BEGIN/END"
            )
        } else {
            format!(
                "probe `{text}` has no Linux tracepoint here; supported: {}",
                known.join(", ")
            )
        }));
    };
    let tracepoint = if tp.contains(':') {
        format!("tracepoint:{tp}")
    } else {
        format!("tracepoint:syscalls:{tp}")
    };
    let func = tracepoint.rsplit(':').next().unwrap_or_default().to_owned();
    let mut ctx = plain(prov, &tracepoint, name);
    ctx.func = (func.clone(), Ty::Str);
    ctx.args = args;
    ctx.note = Some(match note {
        Some(n) => format!("{n}; probefunc is the tracepoint name `{func}`"),
        None => format!("{text} is the {func} tracepoint; probefunc is `{func}`"),
    });
    Ok(ctx)
}

/// `sched:::on-cpu` is special: sched_switch runs in the thread leaving the CPU, so the
/// thread going on-CPU (whose `self->` variables and `tid` the clause means) is `next_pid`.
fn on_cpu(pos: Pos, text: &str) -> Option<Result<ProbeCtx, DError>> {
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 4 || parts[0] != "sched" || parts[3] != "on-cpu" {
        return None;
    }
    if !parts[1].is_empty() || !parts[2].is_empty() {
        return Some(Err(DError::at(
            pos,
            "only the provider and name fields can be given for sched probes",
        )));
    }
    Some(Ok(ProbeCtx {
        probe: "tracepoint:sched:sched_switch".into(),
        filter: None,
        provider: "sched",
        name: "on-cpu".into(),
        func: ("sched_switch".into(), Ty::Str),
        tid: "args->next_pid",
        execname: Some("args->next_comm"),
        no_process: Some(
            "sched:::on-cpu runs on sched_switch in the thread leaving the CPU, which knows only \
             the next thread's tid and execname",
        ),
        args: &[],
        note: Some(
            "sched:::on-cpu is sched_switch seen from the next thread: tid, execname and self-> \
             are the thread going on-CPU"
                .into(),
        ),
    }))
}

fn syscall(
    text: &str,
    module: &str,
    function: &str,
    name: &str,
    pos: Pos,
) -> Result<ProbeCtx, DError> {
    let err = |m: String| DError::at(pos, m);
    if !module.is_empty() && module != "*" {
        return Err(err(format!(
            "`{text}`: syscall probes have no module on Linux; leave the field empty"
        )));
    }
    let (tracepoint, args) = match name {
        "entry" => ("sys_enter", SYSCALL_ENTRY_ARGS),
        "return" => ("sys_exit", SYSCALL_RETURN_ARGS),
        _ => {
            return Err(err(format!(
                "`{text}`: the syscall probe name must be `entry` or `return`"
            )))
        }
    };
    let filter = if function.is_empty() || function == "*" {
        None
    } else {
        let numbers: Vec<String> = crate::syscalls::all()
            .filter(|(_, n)| glob(function, n))
            .map(|(nr, _)| format!("args->id == {nr}"))
            .collect();
        if numbers.is_empty() {
            return Err(err(format!(
                "`{text}`: no syscall on this system matches `{function}`"
            )));
        }
        Some(numbers.join(" || "))
    };
    Ok(ProbeCtx {
        // raw_syscalls gives every syscall's number and arguments the same way, so one
        // translation serves names, patterns and the empty function field alike.
        probe: format!("tracepoint:raw_syscalls:{tracepoint}"),
        filter,
        provider: "syscall",
        name: name.to_owned(),
        func: ("args->id".into(), Ty::Syscall),
        tid: "tid",
        execname: None,
        no_process: None,
        args,
        note: None,
    })
}

/// `1s` → (`s`, 1); `997` → (`hz`, 997). bpftrace 0.17 has s, ms, us and hz.
fn rate_unit(rate: &str) -> Option<(&'static str, u64)> {
    let digits = rate
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rate.len());
    let n: u64 = rate[..digits].parse().ok().filter(|n| *n > 0)?;
    Some(match &rate[digits..] {
        "" | "hz" => ("hz", n),
        "s" | "sec" => ("s", n),
        "ms" | "msec" => ("ms", n),
        "us" | "usec" => ("us", n),
        "ns" | "nsec" if n.is_multiple_of(1000) => ("us", n / 1000),
        "m" | "min" => ("s", n * 60),
        "h" | "hour" => ("s", n * 3600),
        "d" | "day" => ("s", n * 86400),
        _ => return None,
    })
}

/// D's probe-field patterns: `*` any run, `?` any one character, everything else itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Pos = Pos { line: 1, col: 1 };

    #[test]
    fn globs_match_like_dtrace_probe_fields() {
        assert!(glob("read*", "readv"));
        assert!(glob("read*", "read"));
        assert!(!glob("read*", "pread64"));
        assert!(glob("*read*", "pread64"));
        assert!(glob("?etppid", "getppid"));
        assert!(!glob("get", "getppid"));
    }

    #[test]
    fn probes_map_to_linux_tracing() {
        let p = probe("syscall:::entry", AT).unwrap();
        assert_eq!(p.probe, "tracepoint:raw_syscalls:sys_enter");
        assert_eq!(p.filter, None);
        let p = probe("syscall::getppid:return", AT).unwrap();
        assert_eq!(p.probe, "tracepoint:raw_syscalls:sys_exit");
        assert_eq!(
            p.filter,
            Some(format!(
                "args->id == {}",
                crate::syscalls::number("getppid").unwrap()
            ))
        );
        assert!(probe("syscall::read*:entry", AT)
            .unwrap()
            .filter
            .unwrap()
            .contains(" || "));
        assert_eq!(probe("BEGIN", AT).unwrap().probe, "BEGIN");
        assert_eq!(probe("tick-1s", AT).unwrap().probe, "interval:s:1");
        assert_eq!(probe("tick-100ms", AT).unwrap().probe, "interval:ms:100");
        assert_eq!(
            probe("profile:::profile-997", AT).unwrap().probe,
            "profile:hz:997"
        );
        assert_eq!(probe("tick-5000nsec", AT).unwrap().probe, "interval:us:5");
        assert_eq!(
            probe("proc:::exec-success", AT).unwrap().probe,
            "tracepoint:sched:sched_process_exec"
        );
        assert_eq!(
            probe("io:::start", AT).unwrap().probe,
            "tracepoint:block:block_rq_issue"
        );
    }

    #[test]
    fn an_empty_syscall_name_means_entry_and_return() {
        assert_eq!(
            expand("syscall::read:"),
            ["syscall::read:entry", "syscall::read:return"]
        );
        assert_eq!(expand("syscall:::*").len(), 2);
        assert_eq!(expand("syscall:::entry"), ["syscall:::entry"]);
        assert_eq!(expand("tick-1s"), ["tick-1s"]);
    }

    #[test]
    fn unsupported_probes_say_why() {
        let cases = [
            ("fbt::vfs_read:entry", "not supported"),
            ("syscall::nosuchcall:entry", "no syscall"),
            ("syscall::read:probe", "`entry` or `return`"),
            ("sched:::sleep", "sched:::off-cpu"),
            ("sys*:::entry", "exactly"),
            ("tick-fast", "expected a rate"),
            ("a:b:c:d:e", "four fields"),
        ];
        for (text, expected) in cases {
            let e = probe(text, Pos { line: 3, col: 9 }).unwrap_err();
            assert_eq!((e.line, e.column), (3, 9));
            assert!(e.message.contains(expected), "{text}: {e}");
        }
    }
}
