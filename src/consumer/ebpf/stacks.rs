//! The native explain companions: BPF objects (`bpf/syscall_explain.bpf.c`,
//! `bpf/sched_explain.bpf.c`, `bpf/blockio_explain.bpf.c`) that time the same intervals as
//! their presets and, for those inside a band, count the process, cgroup and stacks (at the
//! syscall's return; at the switch-out and the waker; at the issue); and their walk, which
//! symbolises the stacks with blazesym and reports them in the shape the bpftrace companions
//! print theirs.
//!
//! Why native: for the scheduler and block presets the stack is taken at one probe and
//! counted at another, so it must be kept as a stack id in between; bpftrace 0.17 keeps its
//! stack maps machine-wide and small, and overflowed on a whole machine's context switches.
//! For the syscall presets bpftrace can do it, but prints (and symbolises) its whole map every
//! walk and caps it at its map size. Here the stack map, the capture map and their sizes are
//! ours, the walk reads ids and symbolises each stack once, and a capture that does not fit is
//! counted as missed, not lost.
//!
//! Why blazesym: it is the symbolizer the libbpf project keeps for exactly this (kernel
//! addresses through kallsyms, user addresses through the process's maps and ELF symbols,
//! Rust and C++ demangled), with no C dependency.

use std::collections::HashMap;

use blazesym::symbolize::source::{Kernel, Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::{MaybeDefault, Pid};
use libbpf_rs::{Link, MapCore, MapFlags, Object};

use super::{object_run_stats, open_and_load, with_libbpf_log, EbpfError, HeatConfig};
use crate::aggregation::{AggKind, Aggregation, AggregationInfo, KeyPart, Series, Snapshot, Value};
use crate::consumer::cost::RunStats;
use crate::consumer::{
    Backend, Capture, CaptureKind, Consumer, ConsumerError, ProgramSpec, CAPTURE_AGGREGATION,
    MISSED_AGGREGATION,
};

const SYSCALL_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/syscall_explain.bpf.o"));
const SCHED_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sched_explain.bpf.o"));
const BLOCKIO_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/blockio_explain.bpf.o"));

/// `HEAT_X_MODE_*` in `bpf/explain.h`.
const MODE_OFFCPU: u32 = 0;
const MODE_RUNQUEUE: u32 = 1;
/// `HEAT_X_NONE`: no stack was taken there.
const NO_STACK: i32 = -100_000;
/// `-EFAULT` from `bpf_get_stackid`: no stack of that kind (a kernel thread's user stack).
const NO_FRAMES: i32 = -libc::EFAULT;
/// Bytes of `struct heat_x_key`, and of a key name in `heat_x_keys`.
const KEY_LEN: usize = 64;
const NAME_LEN: usize = 16;

/// The object and mode that time `kind`'s interval.
fn object_of(kind: CaptureKind) -> (&'static str, &'static [u8], u32) {
    match kind {
        CaptureKind::Syscall => ("heat_x_syscall", SYSCALL_OBJECT, 0),
        CaptureKind::OffCpu => ("heat_x_sched", SCHED_OBJECT, MODE_OFFCPU),
        CaptureKind::RunQueue => ("heat_x_sched", SCHED_OBJECT, MODE_RUNQUEUE),
        CaptureKind::BlockIo => ("heat_x_blockio", BLOCKIO_OBJECT, 0),
    }
}

/// A key name as the BPF side compares it: NUL-padded, at most 15 bytes kept.
fn name_bytes(name: &str) -> [u8; NAME_LEN] {
    let mut out = [0u8; NAME_LEN];
    let n = name.len().min(NAME_LEN - 1);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// A key as `kind`'s program compares it: a name, or a syscall number native-endian in the
/// first four bytes (`None`: not a number).
fn key_bytes(kind: CaptureKind, key: &str) -> Option<[u8; NAME_LEN]> {
    match kind {
        CaptureKind::Syscall => {
            let mut out = [0u8; NAME_LEN];
            out[..4].copy_from_slice(&key.parse::<u32>().ok()?.to_ne_bytes());
            Some(out)
        }
        _ => Some(name_bytes(key)),
    }
}

/// One `struct heat_x_key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CaptureKey {
    tgid: u32,
    kstack: i32,
    ustack: i32,
    wkstack: i32,
    cgroup: u64,
    comm: String,
    wcomm: String,
}

fn nul_text(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

impl CaptureKey {
    fn decode(bytes: &[u8]) -> Option<CaptureKey> {
        if bytes.len() != KEY_LEN {
            return None;
        }
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
        Some(CaptureKey {
            tgid: u32_at(0),
            kstack: u32_at(4) as i32,
            ustack: u32_at(8) as i32,
            wkstack: u32_at(12) as i32,
            cgroup: u64::from_ne_bytes(bytes[16..24].try_into().expect("8 bytes")),
            comm: nul_text(&bytes[28..44]),
            wcomm: nul_text(&bytes[44..60]),
        })
    }
}

/// What stands for stack `id` when it is not a stack: nothing (none was taken, or there are
/// no frames of that kind), or why it was lost; `None` for a real stack id.
fn placeholder(id: i32) -> Option<String> {
    match id {
        NO_STACK | NO_FRAMES => Some(String::new()),
        id if id < 0 => Some(format!(
            "[lost stack: {}]",
            std::io::Error::from_raw_os_error(-id)
        )),
        _ => None,
    }
}

/// A loaded companion object.
struct LoadedCapture {
    name: &'static str,
    // Field order is drop order: links first (detach), then the object (programs, maps).
    _links: Vec<Link>,
    object: Object,
}

impl LoadedCapture {
    fn load(capture: &Capture, filter: &crate::presets::ProcessFilter) -> Result<Self, EbpfError> {
        let (name, bytes, mode) = object_of(capture.kind);
        let mut config = HeatConfig::filtered(0, filter);
        config.band_lo_ns = capture.lo_ns;
        config.band_hi_ns = capture.hi_ns.unwrap_or(0);
        config.mode = mode;
        config.keyed = u32::from(!capture.keys.is_empty());
        if capture.hi_ns == Some(0) {
            // An empty band: 0 means "no upper bound" to the BPF side.
            config.band_lo_ns = u64::MAX;
        }
        // Only the capture map: a full one is what `missed` counts, and what a test fills.
        let captures = crate::consumer::native_captures();
        let sizes: &[(&str, u32)] = if captures == crate::consumer::NATIVE_CAPTURES {
            &[]
        } else {
            &[("heat_x_captures", captures)]
        };
        let object = open_and_load(name, bytes, &config, sizes)?;
        let keys = find_map(&object, name, "heat_x_keys")?;
        for key in &capture.keys {
            let bytes = key_bytes(capture.kind, key).ok_or(EbpfError::Layout {
                object: name,
                what: "a syscall key is not a number",
            })?;
            keys.update(&bytes, &[1u8], MapFlags::ANY)
                .map_err(|source| EbpfError::Libbpf {
                    step: "write the keys of",
                    object: name,
                    source,
                    log: String::new(),
                })?;
        }
        let mut links = Vec::new();
        for program in object.progs_mut() {
            let (link, log) = with_libbpf_log(|| program.attach());
            links.push(link.map_err(super::libbpf_error(name, "attach", &log))?);
        }
        Ok(LoadedCapture {
            name,
            _links: links,
            object,
        })
    }
}

fn find_map<'o>(
    object: &'o Object,
    object_name: &'static str,
    map: &'static str,
) -> Result<libbpf_rs::Map<'o>, EbpfError> {
    object
        .maps()
        .find(|m| m.name() == map)
        .ok_or(EbpfError::Layout {
            object: object_name,
            what: "an explain map is missing",
        })
}

/// Stacks as text, leaf first, one frame a line (as bpftrace prints them), cached: a stack id
/// means the same addresses for as long as the object lives (ids are never reused: a colliding
/// stack is refused, not replaced), and a user stack's symbols are those of its process.
#[derive(Default)]
struct Stacks {
    symbolizer: Option<Symbolizer>,
    kernel: HashMap<i32, String>,
    user: HashMap<(u32, i32), String>,
}

impl Stacks {
    fn symbolizer(&mut self) -> &Symbolizer {
        self.symbolizer.get_or_insert_with(Symbolizer::new)
    }

    /// The text of stack `id` (kernel, or of process `tgid`'s user space).
    fn text(&mut self, object: &Object, name: &'static str, id: i32, user: Option<u32>) -> String {
        if let Some(text) = match user {
            None => self.kernel.get(&id),
            Some(tgid) => self.user.get(&(tgid, id)),
        } {
            return text.clone();
        }
        let text = match placeholder(id) {
            Some(text) => text,
            None => {
                let addrs = find_map(object, name, "heat_x_stacks")
                    .ok()
                    .and_then(|m| m.lookup(&(id as u32).to_ne_bytes(), MapFlags::ANY).ok())
                    .flatten()
                    .map(|v| {
                        v.chunks_exact(8)
                            .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
                            .take_while(|&a| a != 0)
                            .collect::<Vec<u64>>()
                    })
                    .unwrap_or_default();
                self.symbolise(&addrs, user)
            }
        };
        match user {
            None => self.kernel.insert(id, text.clone()),
            Some(tgid) => self.user.insert((tgid, id), text.clone()),
        };
        text
    }

    /// Names for `addrs`; an address that does not resolve (or a process gone before its first
    /// walk) is `[unknown]`.
    fn symbolise(&mut self, addrs: &[u64], user: Option<u32>) -> String {
        if addrs.is_empty() {
            return String::new();
        }
        let source = match user {
            None => Source::Kernel(Kernel {
                // kallsyms only: a vmlinux search reads the disk and finds none on Debian.
                vmlinux: MaybeDefault::None,
                debug_syms: false,
                ..Kernel::default()
            }),
            Some(tgid) => Source::Process(Process {
                debug_syms: false,
                ..Process::new(Pid::from(tgid))
            }),
        };
        let mut names: Vec<String> =
            match self.symbolizer().symbolize(&source, Input::AbsAddr(addrs)) {
                Ok(symbols) => symbols
                    .iter()
                    .map(|s| match s {
                        Symbolized::Sym(sym) => sym.name.to_string(),
                        Symbolized::Unknown(_) => "[unknown]".to_owned(),
                    })
                    .collect(),
                Err(_) => vec!["[unknown]".to_owned(); addrs.len()],
            };
        if user.is_none() {
            // A BTF tracepoint's kernel stack starts inside the tracing that ran this program:
            // its frames say nothing about the task, and would top every flame.
            let machinery = names.iter().take_while(|n| is_tracing_frame(n)).count();
            names.drain(..machinery);
        }
        names.join("\n")
    }
}

/// A frame of the tracing that runs a BPF program (the program itself, the tracepoint's
/// iterator and its BPF trampoline), leaf first.
fn is_tracing_frame(name: &str) -> bool {
    name.starts_with("bpf_prog_")
        || name.starts_with("bpf_trace_run")
        || name.starts_with("__traceiter_")
        || name.starts_with("__bpf_trace_")
}

/// A native explain companion, on its consumer thread.
#[derive(Default)]
pub struct StackConsumer {
    program: Option<(Capture, crate::presets::ProcessFilter)>,
    loaded: Option<LoadedCapture>,
    stacks: Stacks,
}

impl StackConsumer {
    pub fn new() -> StackConsumer {
        StackConsumer::default()
    }

    fn walk_captures(&mut self) -> Result<Snapshot, EbpfError> {
        let loaded = self.loaded.as_ref().ok_or(EbpfError::Layout {
            object: "explain",
            what: "not loaded",
        })?;
        let read = |source| EbpfError::Libbpf {
            step: "read",
            object: loaded.name,
            source,
            log: String::new(),
        };
        // The counters first, all of them, then the symbolising (slow: files, kallsyms): so
        // the walk reads them at one moment, right after its program's walk, and a tick's
        // counts line up with the program's. Events in between are the next walk's.
        let captures = find_map(&loaded.object, loaded.name, "heat_x_captures")?;
        let mut raw = Vec::new();
        for bytes in captures.keys() {
            let Some(value) = captures.lookup(&bytes, MapFlags::ANY).map_err(read)? else {
                continue;
            };
            let count = u64::from_ne_bytes(value[..8].try_into().expect("a u64 count"));
            raw.push((bytes, count));
        }
        let missed = find_map(&loaded.object, loaded.name, "heat_x_missed")?
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(read)?
            .map_or(0, |cpus| {
                cpus.iter()
                    .map(|v| u64::from_ne_bytes(v[..8].try_into().expect("a u64 count")))
                    .sum::<u64>()
            });
        // Several captures can read the same once symbolised (offsets dropped, waker pids
        // not shown): their counts are added, so each key is reported once.
        let mut counts: HashMap<Vec<KeyPart>, i64> = HashMap::new();
        for (bytes, count) in raw {
            let Some(key) = CaptureKey::decode(&bytes) else {
                continue;
            };
            let object = &loaded.object;
            let kstack = self.stacks.text(object, loaded.name, key.kstack, None);
            let ustack = self
                .stacks
                .text(object, loaded.name, key.ustack, Some(key.tgid));
            let wkstack = self.stacks.text(object, loaded.name, key.wkstack, None);
            let parts = vec![
                KeyPart::Int(i64::from(key.tgid)),
                KeyPart::Int(key.cgroup as i64),
                KeyPart::Str(key.comm),
                KeyPart::Str(kstack),
                KeyPart::Str(ustack),
                KeyPart::Str(key.wcomm),
                KeyPart::Str(wkstack),
            ];
            *counts.entry(parts).or_default() += count as i64;
        }
        let mut series: Vec<Series> = counts
            .into_iter()
            .map(|(key, n)| Series {
                key,
                value: Value::Scalar(n),
                sum: None,
            })
            .collect();
        series.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Snapshot {
            aggregations: vec![
                Aggregation {
                    name: CAPTURE_AGGREGATION.into(),
                    kind: AggKind::Count,
                    series,
                    folded: 0,
                },
                Aggregation {
                    name: MISSED_AGGREGATION.into(),
                    kind: AggKind::Count,
                    series: vec![Series {
                        key: Vec::new(),
                        value: Value::Scalar(missed as i64),
                        sum: None,
                    }],
                    folded: 0,
                },
            ],
            ..Snapshot::default()
        })
    }
}

impl Consumer for StackConsumer {
    fn backend(&self) -> Backend {
        Backend::Ebpf
    }

    fn compile(&mut self, spec: &ProgramSpec) -> Result<Vec<AggregationInfo>, ConsumerError> {
        let capture = spec.capture.clone().ok_or(EbpfError::NotPreset)?;
        self.program = Some((capture, spec.filter.clone()));
        Ok([CAPTURE_AGGREGATION, MISSED_AGGREGATION]
            .into_iter()
            .map(|name| AggregationInfo {
                name: name.into(),
                kind: AggKind::Count,
                layout: None,
            })
            .collect())
    }

    fn go(&mut self) -> Result<(), ConsumerError> {
        let (capture, filter) = self
            .program
            .as_ref()
            .ok_or(ConsumerError::State("not compiled"))?;
        if crate::consumer::fault_injected("ebpf_load") {
            return Err(EbpfError::Injected("the native program failed to load").into());
        }
        self.loaded = Some(LoadedCapture::load(capture, filter)?);
        Ok(())
    }

    fn walk(&mut self) -> Result<Snapshot, ConsumerError> {
        if self.loaded.is_none() {
            return Err(ConsumerError::State("not running"));
        }
        self.walk_captures()
            .map_err(|e| ConsumerError::Exited(e.to_string()))
    }

    fn stop(&mut self) {
        self.loaded = None;
    }

    fn run_stats(&mut self) -> Option<RunStats> {
        object_run_stats(&self.loaded.as_ref()?.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_capture_key_reads_at_the_offsets_of_explain_h() {
        let mut bytes = [0u8; KEY_LEN];
        bytes[0..4].copy_from_slice(&4242u32.to_ne_bytes());
        bytes[4..8].copy_from_slice(&7i32.to_ne_bytes());
        bytes[8..12].copy_from_slice(&(-14i32).to_ne_bytes());
        bytes[12..16].copy_from_slice(&NO_STACK.to_ne_bytes());
        bytes[16..24].copy_from_slice(&99u64.to_ne_bytes());
        bytes[24..28].copy_from_slice(&1u32.to_ne_bytes());
        bytes[28..33].copy_from_slice(b"perl\0");
        bytes[44..51].copy_from_slice(b"swapper");
        let key = CaptureKey::decode(&bytes).unwrap();
        assert_eq!(
            key,
            CaptureKey {
                tgid: 4242,
                kstack: 7,
                ustack: NO_FRAMES,
                wkstack: NO_STACK,
                cgroup: 99,
                comm: "perl".into(),
                wcomm: "swapper".into(),
            }
        );
        assert_eq!(CaptureKey::decode(&bytes[..63]), None);
    }

    #[test]
    fn the_capture_maps_are_as_large_as_the_server_thinks() {
        for kind in [
            CaptureKind::Syscall,
            CaptureKind::OffCpu,
            CaptureKind::BlockIo,
        ] {
            let (name, bytes, _) = object_of(kind);
            let mut builder = libbpf_rs::ObjectBuilder::default();
            let opened = builder.name(name).unwrap().open_memory(bytes).unwrap();
            let captures = opened
                .maps()
                .find(|m| m.name() == "heat_x_captures")
                .unwrap();
            assert_eq!(captures.max_entries(), crate::consumer::NATIVE_CAPTURES);
            let key = opened.maps().find(|m| m.name() == "heat_x_keys").unwrap();
            assert_eq!(
                key.max_entries() as usize,
                crate::program::explain::MAX_KEYS
            );
        }
    }

    #[test]
    fn key_names_are_nul_padded_and_cut_at_15_bytes() {
        assert_eq!(&name_bytes("WS")[..3], b"WS\0");
        let nr = key_bytes(CaptureKind::Syscall, "230").unwrap();
        assert_eq!(&nr[..4], &230u32.to_ne_bytes());
        assert_eq!(&nr[4..], &[0; 12]);
        assert_eq!(key_bytes(CaptureKind::Syscall, "read"), None);
        assert_eq!(
            key_bytes(CaptureKind::OffCpu, "read"),
            Some(name_bytes("read"))
        );
        let long = name_bytes("a-very-long-command-name");
        assert_eq!(&long[..15], b"a-very-long-com");
        assert_eq!(long[15], 0);
    }

    #[test]
    fn kernel_and_user_addresses_symbolise_to_their_functions() {
        let mut stacks = Stacks::default();
        assert_eq!(stacks.symbolise(&[], None), "");
        // A kernel function's address as kallsyms lists it (root sees real addresses).
        let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap();
        let schedule = kallsyms
            .lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (addr, _, name) = (f.next()?, f.next()?, f.next()?);
                (name == "schedule").then(|| u64::from_str_radix(addr, 16).ok())?
            })
            .unwrap();
        assert_ne!(
            schedule, 0,
            "kallsyms hides addresses: run the tests as root"
        );
        assert_eq!(stacks.symbolise(&[schedule + 1], None), "schedule");
        // A libc function's address in this very process.
        let getpid = libc::getpid as *const () as usize as u64;
        let name = stacks.symbolise(&[getpid], Some(std::process::id()));
        assert!(name.ends_with("getpid"), "{name}");
        assert_eq!(
            stacks.symbolise(&[8], Some(std::process::id())),
            "[unknown]"
        );
    }

    #[test]
    fn the_tracings_own_frames_are_not_part_of_a_stack() {
        for f in [
            "bpf_prog_f3215fb72a7bf631_heat_x_switch",
            "bpf_trace_run4",
            "__traceiter_sched_switch",
        ] {
            assert!(is_tracing_frame(f), "{f}");
        }
        assert!(!is_tracing_frame("__schedule"));
        assert!(!is_tracing_frame("bpf_map_lookup_elem"));
    }

    #[test]
    fn ids_without_a_stack_read_empty_and_lost_ones_say_why() {
        assert_eq!(placeholder(NO_STACK).as_deref(), Some(""));
        assert_eq!(placeholder(NO_FRAMES).as_deref(), Some(""));
        let lost = placeholder(-libc::EEXIST).unwrap();
        assert!(lost.starts_with("[lost stack: "), "{lost}");
        assert_eq!(placeholder(3), None);
    }
}
