//! Named, documented tracing recipes: what a browser can run without writing a script.
//!
//! Every preset uses tracepoints or raw tracepoints only (kprobes may be compiled out), and
//! says what it measures and in which unit. The `.bt` files beside this module are the
//! programs, each opening with a comment that documents it.

use std::sync::OnceLock;

use serde::Serialize;

/// How a preset's first key part is shown: the kernel gives numbers, people read names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyNames {
    /// Keys are shown as the tracer printed them.
    AsIs,
    /// The first key part is a syscall number, shown as the syscall's name.
    Syscall,
    /// The first key part is a softirq vector, shown as its name (`net_rx`, `timer`, ...).
    Softirq,
}

/// A named recipe.
#[derive(Debug, Clone, Serialize)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    /// Unit of the values bucketed by the preset's histogram.
    pub unit: &'static str,
    /// The language of `script`.
    pub lang: &'static str,
    #[serde(skip)]
    pub script: &'static str,
    #[serde(skip)]
    pub key_names: KeyNames,
    /// What the key is, as the label an exported watch puts it under (`syscall`, `op`, `comm`,
    /// ...); `comm` keys name processes and are exported only when the watch asks.
    #[serde(skip)]
    pub key_label: &'static str,
    /// Where the preset takes a [`ProcessFilter`]: the probe (as written in its `.bt`) whose
    /// block, the first with that probe, gets the filter as a predicate. That probe runs in the
    /// measured task's context (syscall entry, block I/O issue, switch-out, connect, sample),
    /// so `pid` and `comm` there name the right process. `hello` says only whether there is
    /// one: `"filters": ["pid", "comm"]`, or `[]`.
    #[serde(rename = "filters", serialize_with = "filters_taken")]
    pub filter_site: Option<&'static str>,
    /// The same recipe in D, for DTrace hosts that have libdtrace but no bpftrace (the `.d`
    /// file beside the `.bt`); its frames carry DTrace's kinds (`lquantize`, `quantize`) with
    /// the same buckets.
    #[serde(skip)]
    pub d: Option<&'static str>,
}

/// The start fields a preset with a filter site takes, as `hello` lists them.
const FILTER_FIELDS: [&str; 2] = ["pid", "comm"];

fn filters_taken<S: serde::Serializer>(
    site: &Option<&'static str>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let fields: &[&str] = if site.is_some() { &FILTER_FIELDS } else { &[] };
    serializer.collect_seq(fields)
}

/// Every preset, in the order the browser lists them.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "syscall-latency",
        description:
            "Latency of every syscall, by syscall name, in 2 us linear buckets from 0 to 64 us \
                      (the 2011 Heat Tracer view); slower calls land in the top bucket.",
        unit: "us",
        lang: "bpftrace",
        script: include_str!("syscall-latency.bt"),
        key_names: KeyNames::Syscall,
        key_label: "syscall",
        filter_site: Some("tracepoint:raw_syscalls:sys_enter"),
        d: Some(include_str!("syscall-latency.d")),
    },
    Preset {
        name: "syscall-latency-log2",
        description:
            "Latency of every syscall, by syscall name, in power-of-two nanosecond buckets: \
                      sub-microsecond calls and multi-second sleeps in one view.",
        unit: "ns",
        lang: "bpftrace",
        script: include_str!("syscall-latency-log2.bt"),
        key_names: KeyNames::Syscall,
        key_label: "syscall",
        filter_site: Some("tracepoint:raw_syscalls:sys_enter"),
        d: Some(include_str!("syscall-latency-log2.d")),
    },
    Preset {
        name: "block-io-latency",
        description:
            "Block I/O latency from issue to completion, by operation (R, W, with S sync, \
                      M metadata, F flush flags), in power-of-two microsecond buckets.",
        unit: "us",
        lang: "bpftrace",
        script: include_str!("block-io-latency.bt"),
        key_names: KeyNames::AsIs,
        key_label: "op",
        filter_site: Some("tracepoint:block:block_rq_issue"),
        d: None,
    },
    Preset {
        name: "runqueue-latency",
        description: "Scheduler run-queue latency: how long a runnable thread waited for a CPU, \
                      by command, in power-of-two microsecond buckets.",
        unit: "us",
        lang: "bpftrace",
        script: include_str!("runqueue-latency.bt"),
        key_names: KeyNames::AsIs,
        key_label: "comm",
        filter_site: None,
        d: None,
    },
    Preset {
        name: "softirq-latency",
        description:
            "Time spent in each softirq handler (net_rx, timer, rcu, ...), by softirq, in \
                      power-of-two microsecond buckets: time taken from whatever ran on that CPU.",
        unit: "us",
        lang: "bpftrace",
        script: include_str!("softirq-latency.bt"),
        key_names: KeyNames::Softirq,
        key_label: "softirq",
        filter_site: None,
        d: None,
    },
    Preset {
        name: "offcpu-time",
        description: "Off-CPU time: how long a thread was away from the CPU (blocked, sleeping \
                      or preempted), from being switched out to being switched in again, by \
                      command, in power-of-two nanosecond buckets. Takes pid/comm filters.",
        unit: "ns",
        lang: "bpftrace",
        script: include_str!("offcpu-time.bt"),
        key_names: KeyNames::AsIs,
        key_label: "comm",
        filter_site: Some("tracepoint:sched:sched_switch"),
        d: Some(include_str!("offcpu-time.d")),
    },
    Preset {
        name: "hardirq-latency",
        description: "Time spent in each hard interrupt handler, by IRQ name (virtio1-req.0, \
                      eth0, ...), in power-of-two nanosecond buckets: time taken from whatever \
                      ran on that CPU.",
        unit: "ns",
        lang: "bpftrace",
        script: include_str!("hardirq-latency.bt"),
        key_names: KeyNames::AsIs,
        key_label: "irq",
        filter_site: None,
        d: None,
    },
    Preset {
        name: "tcp-connect-latency",
        description: "Active TCP connect latency, SYN_SENT to ESTABLISHED (the handshake, with \
                      any SYN retransmissions), by remote port, in power-of-two microsecond \
                      buckets. Takes pid/comm filters (the connecting process).",
        unit: "us",
        lang: "bpftrace",
        script: include_str!("tcp-connect-latency.bt"),
        key_names: KeyNames::AsIs,
        key_label: "port",
        filter_site: Some("tracepoint:sock:inet_sock_set_state"),
        d: Some(include_str!("tcp-connect-latency.d")),
    },
    Preset {
        name: "futex-wait",
        description: "Time blocked in futex(2) waits (contended mutexes, condition variables, \
                      joins: FUTEX_WAIT, WAIT_BITSET, WAIT_REQUEUE_PI, LOCK_PI, LOCK_PI2), by \
                      command, in power-of-two nanosecond buckets. Takes pid/comm filters.",
        unit: "ns",
        lang: "bpftrace",
        script: include_str!("futex-wait.bt"),
        key_names: KeyNames::AsIs,
        key_label: "comm",
        filter_site: Some("tracepoint:syscalls:sys_enter_futex"),
        d: None,
    },
    Preset {
        name: "block-io-size",
        description: "Size of each block I/O request at issue, by operation (R, W, with S \
                      sync, M metadata, F flush flags), in power-of-two byte buckets; \
                      flushes count as 0 bytes. Takes pid/comm filters (the issuing task).",
        unit: "bytes",
        lang: "bpftrace",
        script: include_str!("block-io-size.bt"),
        key_names: KeyNames::AsIs,
        key_label: "op",
        filter_site: Some("tracepoint:block:block_rq_issue"),
        d: Some(include_str!("block-io-size.d")),
    },
    Preset {
        name: "cpu-profile",
        description: "On-CPU samples, 99 a second per CPU, by command, as a subsecond-offset \
                      map: each column one second, rows the sample's offset within that second \
                      of the monotonic clock, in 20 ms rows from 0 to 1000 ms (FlameScope's \
                      view; rows are time, not latency). Idle is not sampled. Takes pid/comm \
                      filters.",
        unit: "ms-offset",
        lang: "bpftrace",
        script: include_str!("cpu-profile.bt"),
        key_names: KeyNames::AsIs,
        key_label: "comm",
        filter_site: Some("profile:hz:99"),
        d: Some(include_str!("cpu-profile.d")),
    },
];

/// The preset called `name`.
pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// The presets that leave heat-actix out of their picture unless a start asks `include_self`,
/// at their `filter_site` probe. On an idle machine heat-actix's own map reads (`bpf`, hundreds
/// a second) and its tracers' syscalls would otherwise be a good part of a syscall heatmap.
/// Block I/O is not among them: heat-actix does no disk I/O while it traces, and requests are
/// often issued by kernel threads for others, so a process exclusion would not say much; the
/// runqueue preset keys by command (heat-actix and bpftrace are keys of their own) and the
/// softirq one by vector (no process at all).
const SELF_EXCLUDING: &[&str] = &["syscall-latency", "syscall-latency-log2"];

/// A process left out of a preset's picture, and possibly the processes it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exclusion {
    /// The process (thread group id) left out.
    pub pid: u32,
    /// Whether every process whose parent is `pid` is left out too (heat-actix's bpftrace and
    /// DTrace consumer processes). Reading a task's parent needs the kernel's BTF.
    pub children: bool,
}

impl Exclusion {
    /// heat-actix itself, with the tracers it runs wherever the kernel has BTF.
    pub fn this_server() -> Exclusion {
        Exclusion {
            pid: std::process::id(),
            children: kernel_btf(),
        }
    }
}

/// Whether the running kernel describes its types in BTF (`/sys/kernel/btf/vmlinux`), which
/// bpftrace needs to follow `curtask->real_parent` (the native backend needs it anyway).
pub fn kernel_btf() -> bool {
    static BTF: OnceLock<bool> = OnceLock::new();
    *BTF.get_or_init(|| std::path::Path::new("/sys/kernel/btf/vmlinux").exists())
}

/// What a program leaves out, as `started.excluded` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Excluded {
    /// One process: `{"pid": 1234, "why": "…"}`.
    Process { pid: u32, why: &'static str },
    /// Every process whose parent is `ppid`: `{"ppid": 1234, "why": "…"}`.
    Children { ppid: u32, why: &'static str },
}

/// Restricts a preset to one process and/or one command name (start fields `pid`, `comm`), and
/// leaves heat-actix out of it (unless the start asks `include_self`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFilter {
    /// Process id (thread group id, as `pid` in bpftrace).
    pub pid: Option<u32>,
    /// Command name (`comm`), at most 15 bytes.
    pub comm: Option<String>,
    /// What is left out whatever the filter lets through.
    pub exclude: Option<Exclusion>,
}

impl ProcessFilter {
    pub fn is_empty(&self) -> bool {
        self.pid.is_none() && self.comm.is_none() && self.exclude.is_none()
    }

    /// What the filter leaves out, for `started` (empty: nothing).
    pub fn excluded(&self) -> Vec<Excluded> {
        let Some(exclusion) = self.exclude else {
            return Vec::new();
        };
        let mut out = vec![Excluded::Process {
            pid: exclusion.pid,
            why: "heat-actix itself",
        }];
        if exclusion.children {
            out.push(Excluded::Children {
                ppid: exclusion.pid,
                why: "the tracers heat-actix runs",
            });
        }
        out
    }

    /// The comm as the kernel stores it: NUL-padded to 16 bytes (empty: no filter).
    pub fn comm_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        if let Some(comm) = &self.comm {
            let n = comm.len().min(15);
            out[..n].copy_from_slice(&comm.as_bytes()[..n]);
        }
        out
    }

    /// The filter as a bpftrace predicate expression; the protocol only admits comm text
    /// without quotes or backslashes, so it can be quoted as is.
    fn predicate(&self) -> String {
        let mut parts = Vec::new();
        if let Some(pid) = self.pid {
            parts.push(format!("pid == {pid}"));
        }
        if let Some(comm) = &self.comm {
            parts.push(format!("comm == \"{comm}\""));
        }
        if let Some(Exclusion { pid, children }) = self.exclude {
            parts.push(format!("pid != {pid}"));
            if children {
                parts.push(format!("curtask->real_parent->tgid != {pid}"));
            }
        }
        parts.join(" && ")
    }
}

impl Preset {
    /// What this preset leaves out of its picture by default: heat-actix itself for the presets
    /// in `SELF_EXCLUDING`, unless `include_self`.
    pub fn exclusion(&self, include_self: bool) -> Option<Exclusion> {
        (!include_self && SELF_EXCLUDING.contains(&self.name)).then(Exclusion::this_server)
    }

    /// The preset's bpftrace program restricted by `filter`: the filter becomes (part of) the
    /// predicate of the first block of the probe named in `filter_site`. Errors when the preset
    /// cannot be filtered.
    pub fn script_with(&self, filter: &ProcessFilter) -> Result<String, String> {
        if filter.is_empty() {
            return Ok(self.script.to_owned());
        }
        let no_filter = || {
            let takes: Vec<&str> = PRESETS
                .iter()
                .filter(|p| p.filter_site.is_some())
                .map(|p| p.name)
                .collect();
            format!(
                "preset {:?} cannot be filtered by process; these can: {}",
                self.name,
                takes.join(", ")
            )
        };
        let site = self.filter_site.ok_or_else(no_filter)?;
        let predicate = filter.predicate();
        let mut out = String::with_capacity(self.script.len() + predicate.len() + 8);
        let mut lines = self.script.lines().peekable();
        let mut found = false;
        while let Some(line) = lines.next() {
            out.push_str(line);
            out.push('\n');
            // Only the first block: a later one on the same probe runs for another task (the
            // one switched in, a connect completing in softirq context).
            if found || line.trim_end() != site {
                continue;
            }
            found = true;
            match lines.peek().map(|l| l.trim()) {
                Some(next) if next.starts_with('/') && next.ends_with('/') && next.len() > 1 => {
                    let inner = &next[1..next.len() - 1];
                    out.push_str(&format!("/({inner}) && {predicate}/\n"));
                    lines.next();
                }
                _ => out.push_str(&format!("/{predicate}/\n")),
            }
        }
        if found {
            Ok(out)
        } else {
            Err(no_filter())
        }
    }
}

/// Softirq vector names, by vector number (`include/linux/interrupt.h`).
const SOFTIRQ_NAMES: [&str; 10] = [
    "hi", "timer", "net_tx", "net_rx", "block", "irq_poll", "tasklet", "sched", "hrtimer", "rcu",
];

impl KeyNames {
    /// Applies the naming to every series of a snapshot.
    pub fn apply(self, snapshot: &mut crate::aggregation::Snapshot) {
        use crate::aggregation::KeyPart;
        if self == KeyNames::AsIs {
            return;
        }
        for agg in &mut snapshot.aggregations {
            for series in &mut agg.series {
                if let Some(KeyPart::Int(n)) = series.key.first().cloned() {
                    let name = match self {
                        KeyNames::Syscall => crate::syscalls::name(n).into_owned(),
                        KeyNames::Softirq => usize::try_from(n)
                            .ok()
                            .and_then(|i| SOFTIRQ_NAMES.get(i))
                            .map_or_else(|| format!("softirq_{n}"), |s| (*s).to_owned()),
                        KeyNames::AsIs => unreachable!("returned above"),
                    };
                    series.key[0] = KeyPart::Str(name);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::{AggKind, KeyPart, Series, Snapshot, Value};
    use crate::consumer::bpftrace::program::aggregation_maps;

    #[test]
    fn every_preset_documents_itself_and_aggregates_something() {
        for p in PRESETS {
            assert!(
                p.script
                    .trim_start()
                    .starts_with(&format!("// {}:", p.name)),
                "{} opens with its doc",
                p.name
            );
            assert!(!p.description.is_empty() && !p.unit.is_empty());
            let maps = aggregation_maps(p.script);
            assert_eq!(maps.len(), 1, "{} has one heatmap aggregation", p.name);
            assert!(maps[0].info.kind.is_histogram());
            assert!(
                !p.script.contains("kprobe"),
                "{} must use tracepoints only",
                p.name
            );
        }
    }

    /// The presets whose D version stock Linux runs too, through the D front end (the others
    /// use providers it does not have: `tcp`, the io provider's `b_flags`).
    const D_RUNS_ON_LINUX: [&str; 4] = [
        "syscall-latency",
        "syscall-latency-log2",
        "offcpu-time",
        "cpu-profile",
    ];

    #[test]
    fn d_versions_are_the_same_recipe_in_d() {
        use crate::consumer::dtrace::script;
        let with_d: Vec<&Preset> = PRESETS.iter().filter(|p| p.d.is_some()).collect();
        let names: Vec<&str> = with_d.iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "syscall-latency",
                "syscall-latency-log2",
                "offcpu-time",
                "tcp-connect-latency",
                "block-io-size",
                "cpu-profile"
            ]
        );
        for preset in with_d {
            let d = preset.d.unwrap();
            script::check_not_destructive(d).unwrap();
            let announced = script::aggregations(d);
            let bpftrace = aggregation_maps(preset.script).remove(0).info;
            assert_eq!(announced.len(), 1, "{}", preset.name);
            assert_eq!(announced[0].name, bpftrace.name, "{}", preset.name);
            // DTrace's kind for the same buckets: lquantize for lhist, quantize for hist.
            let kind = match bpftrace.kind {
                AggKind::Lhist => AggKind::Lquantize,
                AggKind::Hist => AggKind::Quantize,
                other => panic!("{other:?}"),
            };
            assert_eq!(announced[0].kind, kind, "{}", preset.name);
            assert_eq!(announced[0].layout, bpftrace.layout, "{}", preset.name);
            // Every one is D the front end's parser reads; those inside the subset stock Linux
            // runs translate too (tests/dlang.rs and tests/presets.rs run them), and the others
            // are refused by the translator, not the parser.
            crate::dlang::parser::parse(d).unwrap_or_else(|e| panic!("{}: {e}", preset.name));
            let translated = crate::dlang::compile(d);
            assert_eq!(
                translated.is_ok(),
                D_RUNS_ON_LINUX.contains(&preset.name),
                "{}: {:?}",
                preset.name,
                translated.err()
            );
        }
    }

    #[test]
    fn filters_become_predicates_at_their_probe() {
        let filter = ProcessFilter {
            pid: Some(42),
            comm: Some("cat".into()),
            exclude: None,
        };
        for preset in PRESETS {
            let (name, Some(site)) = (preset.name, preset.filter_site) else {
                continue;
            };
            let script = preset.script_with(&filter).unwrap();
            let at = script.find(site).expect("the site is in the script");
            let next = script[at..].lines().nth(1).unwrap();
            assert!(
                next == "/pid == 42 && comm == \"cat\"/"
                    || next.ends_with(") && pid == 42 && comm == \"cat\"/"),
                "{name}: {next}"
            );
            assert_eq!(aggregation_maps(&script).len(), 1);
            // Only the first block of the site's probe is filtered.
            assert_eq!(script.matches("pid == 42").count(), 1, "{name}: {script}");
        }
        let plain = find("syscall-latency").unwrap();
        assert_eq!(
            plain.script_with(&ProcessFilter::default()).unwrap(),
            plain.script
        );
        let only_pid = ProcessFilter {
            pid: Some(7),
            ..Default::default()
        };
        let err = find("softirq-latency").unwrap().script_with(&only_pid);
        assert!(err.unwrap_err().contains("cannot be filtered"));
        let comm = ProcessFilter {
            comm: Some("a-very-long-command-name".into()),
            ..Default::default()
        };
        assert_eq!(&comm.comm_bytes()[..15], b"a-very-long-com");
        assert_eq!(comm.comm_bytes()[15], 0);
    }

    #[test]
    fn the_exclusion_joins_the_predicate_at_the_filter_site() {
        let exclude = |children| {
            Some(Exclusion {
                pid: 1234,
                children,
            })
        };
        for name in SELF_EXCLUDING {
            let site = find(name).unwrap().filter_site.unwrap();
            let line_after_site = |filter: &ProcessFilter| {
                let script = find(name).unwrap().script_with(filter).unwrap();
                assert_eq!(aggregation_maps(&script).len(), 1, "{name}");
                // Only the entry probe is filtered: the exit finds no entry time for a task
                // left out, so nothing else needs to change.
                assert_eq!(script.matches("pid != 1234").count(), 1, "{name}: {script}");
                let at = script.find(site).expect("the site is in the script");
                script[at..].lines().nth(1).unwrap().to_owned()
            };
            let alone = ProcessFilter {
                exclude: exclude(true),
                ..Default::default()
            };
            assert_eq!(
                line_after_site(&alone),
                "/pid != 1234 && curtask->real_parent->tgid != 1234/"
            );
            let without_btf = ProcessFilter {
                exclude: exclude(false),
                ..Default::default()
            };
            assert_eq!(line_after_site(&without_btf), "/pid != 1234/");
            let with_comm = ProcessFilter {
                comm: Some("cat".into()),
                exclude: exclude(true),
                ..Default::default()
            };
            assert_eq!(
                line_after_site(&with_comm),
                "/comm == \"cat\" && pid != 1234 && curtask->real_parent->tgid != 1234/"
            );
        }
    }

    #[test]
    fn only_the_syscall_presets_leave_heat_actix_out_and_only_by_default() {
        for preset in PRESETS {
            let syscalls = preset.name.starts_with("syscall-");
            let expected = syscalls.then(|| Exclusion {
                pid: std::process::id(),
                children: kernel_btf(),
            });
            assert_eq!(preset.exclusion(false), expected, "{}", preset.name);
            assert_eq!(preset.exclusion(true), None, "{}", preset.name);
            if syscalls {
                assert!(preset.filter_site.is_some());
            }
        }
    }

    #[test]
    fn started_names_what_is_left_out() {
        let mut filter = ProcessFilter {
            pid: Some(7),
            ..Default::default()
        };
        assert!(
            filter.excluded().is_empty(),
            "a filter alone leaves out nothing"
        );
        filter.exclude = Some(Exclusion {
            pid: 1234,
            children: true,
        });
        assert_eq!(
            serde_json::to_value(filter.excluded()).unwrap(),
            serde_json::json!([
                {"pid": 1234, "why": "heat-actix itself"},
                {"ppid": 1234, "why": "the tracers heat-actix runs"}
            ])
        );
        filter.exclude = Some(Exclusion {
            pid: 1234,
            children: false,
        });
        assert_eq!(
            serde_json::to_value(filter.excluded()).unwrap(),
            serde_json::json!([{"pid": 1234, "why": "heat-actix itself"}])
        );
    }

    #[test]
    fn hello_says_which_presets_take_filters() {
        let listed = serde_json::to_value(PRESETS).unwrap();
        for (preset, json) in PRESETS.iter().zip(listed.as_array().unwrap()) {
            let expected = if preset.filter_site.is_some() {
                serde_json::json!(["pid", "comm"])
            } else {
                serde_json::json!([])
            };
            assert_eq!(json["filters"], expected, "{}", preset.name);
            assert!(json.get("filter_site").is_none());
        }
        let cpu = find("cpu-profile").unwrap();
        assert_eq!(serde_json::to_value(cpu).unwrap()["unit"], "ms-offset");
        assert!(find("hardirq-latency").unwrap().filter_site.is_none());
    }

    #[test]
    fn names_are_unique() {
        for (i, p) in PRESETS.iter().enumerate() {
            assert!(PRESETS[i + 1..].iter().all(|q| q.name != p.name));
        }
        assert!(find("syscall-latency").is_some());
        assert!(find("nope").is_none());
    }

    #[test]
    fn syscall_and_softirq_keys_are_named() {
        let series = |n| Series {
            key: vec![KeyPart::Int(n)],
            value: Value::Scalar(1),
            sum: None,
        };
        let mut snap = Snapshot {
            aggregations: vec![crate::aggregation::Aggregation {
                name: "@x".into(),
                kind: AggKind::Count,
                series: vec![series(3), series(99)],
                folded: 0,
            }],
            output: vec![],
            ..Default::default()
        };
        KeyNames::Softirq.apply(&mut snap);
        assert_eq!(
            snap.aggregations[0].series[0].key,
            vec![KeyPart::Str("net_rx".into())]
        );
        assert_eq!(
            snap.aggregations[0].series[1].key,
            vec![KeyPart::Str("softirq_99".into())]
        );
    }
}
