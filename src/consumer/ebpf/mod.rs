//! The native eBPF backend: preset programs written in BPF C (`bpf/*.bpf.c`, compiled by
//! `build.rs` with clang and embedded in the binary), loaded in-process with libbpf-rs, on the
//! session's consumer thread. No bpftrace process, no script compiler, no JSON.
//!
//! Why libbpf-rs rather than aya: libbpf is the kernel's reference loader, so task storage,
//! CO-RE relocations, `.rodata` constants and raw tracepoint links behave exactly as the kernel
//! documents them; the BPF side is plain C built by the clang that Debian ships.
//!
//! Delta semantics (see `bpf/heat.h`): the kernel only ever adds to per-CPU counters; each
//! walk sums every CPU's counters and reports the difference from the previous walk's sums.
//! Nothing is reset, so no event can fall between a read and a reset, and none is counted twice.

mod native;
mod stacks;

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use libbpf_rs::{Link, MapCore, MapFlags, Object, ObjectBuilder};

pub use self::native::{find, Native, NATIVE};
use self::native::{Attach, KeyKind, Shape};
pub use self::stacks::StackConsumer;
use super::cost::{self, RunStats};
use super::{Backend, Consumer, ConsumerError, ProgramSpec};
use crate::aggregation::{Aggregation, AggregationInfo, KeyPart, Series, Snapshot};
use crate::presets::ProcessFilter;

/// Why the native backend cannot run a program.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The preset has no native version.
    #[error("preset {0:?} has no native eBPF version")]
    NoNative(String),
    /// A custom script was sent; only presets run natively.
    #[error("the eBPF backend runs presets only; scripts need bpftrace")]
    NotPreset,
    /// libbpf could not open, load (verify) or attach the object; `log` is libbpf's own text.
    #[error("{step} {object}: {source}{log}")]
    Libbpf {
        step: &'static str,
        object: &'static str,
        source: libbpf_rs::Error,
        log: String,
    },
    /// A test asked for this failure (`HEAT_ACTIX_FAULT`), to exercise the fallback paths.
    #[error("{0} (HEAT_ACTIX_FAULT test hook)")]
    Injected(&'static str),
    /// A sampling perf event could not be opened (on `cpu`, or the online CPUs not read).
    #[error("open a cpu-clock perf event for {object}{}: {source}", cpu.map(|c| format!(" on CPU {c}")).unwrap_or_default())]
    PerfEvent {
        object: &'static str,
        cpu: Option<u32>,
        source: std::io::Error,
    },
    /// The object does not look like the program this build expects (a build problem).
    #[error("{object}: {what}")]
    Layout {
        object: &'static str,
        what: &'static str,
    },
}

impl From<EbpfError> for ConsumerError {
    fn from(e: EbpfError) -> ConsumerError {
        ConsumerError::Compile(e.to_string())
    }
}

/// The `.rodata` of every heat object: `struct heat_config` in `bpf/heat.h`.
#[repr(C)]
struct HeatConfig {
    shape: u32,
    pid: u32,
    comm: [u8; 16],
    exclude_tgid: u32,
    exclude_children: u32,
    /// The explain companions' band and mode (`bpf/explain.h`); zero for presets.
    band_lo_ns: u64,
    band_hi_ns: u64,
    mode: u32,
    keyed: u32,
}

/// Bytes of `struct heat_config`.
const HEAT_CONFIG_LEN: usize = 56;

impl HeatConfig {
    fn new(native: &Native, filter: &ProcessFilter) -> HeatConfig {
        HeatConfig::filtered(native.shape.code(), filter)
    }

    /// A config with only the process filter (and `shape`) set.
    fn filtered(shape: u32, filter: &ProcessFilter) -> HeatConfig {
        HeatConfig {
            shape,
            pid: filter.pid.unwrap_or(0),
            comm: filter.comm_bytes(),
            exclude_tgid: filter.exclude.map_or(0, |e| e.pid),
            exclude_children: filter.exclude.map_or(0, |e| u32::from(e.children)),
            band_lo_ns: 0,
            band_hi_ns: 0,
            mode: 0,
            keyed: 0,
        }
    }

    fn bytes(&self) -> [u8; HEAT_CONFIG_LEN] {
        let mut out = [0u8; HEAT_CONFIG_LEN];
        out[0..4].copy_from_slice(&self.shape.to_ne_bytes());
        out[4..8].copy_from_slice(&self.pid.to_ne_bytes());
        out[8..24].copy_from_slice(&self.comm);
        out[24..28].copy_from_slice(&self.exclude_tgid.to_ne_bytes());
        out[28..32].copy_from_slice(&self.exclude_children.to_ne_bytes());
        out[32..40].copy_from_slice(&self.band_lo_ns.to_ne_bytes());
        out[40..48].copy_from_slice(&self.band_hi_ns.to_ne_bytes());
        out[48..52].copy_from_slice(&self.mode.to_ne_bytes());
        out[52..56].copy_from_slice(&self.keyed.to_ne_bytes());
        out
    }
}

/// Whether this kernel runs the native programs, found once at start-up by [`probe`].
static SUPPORT: OnceLock<Result<(), String>> = OnceLock::new();

/// Loads and attaches the syscall program once, then frees it: proves BPF, BTF, task storage
/// and raw tracepoints all work here, with heat-actix left out as a default start leaves it
/// out (so the task reads that takes pass the verifier too). Call it at start-up, off any
/// async arbiter.
pub fn probe() -> &'static Result<(), String> {
    SUPPORT.get_or_init(|| {
        if crate::consumer::fault_injected("ebpf_probe") {
            return Err(EbpfError::Injected("native programs refused at start-up").to_string());
        }
        let native = find("syscall-latency").expect("syscall-latency is native");
        let filter = ProcessFilter {
            exclude: Some(crate::presets::Exclusion::this_server()),
            ..ProcessFilter::default()
        };
        Loaded::load(native, &filter)
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// What [`probe`] found, or `None` before it ran (then a start tries, and falls back).
pub fn support() -> Option<&'static Result<(), String>> {
    SUPPORT.get()
}

thread_local! {
    /// libbpf's messages while this thread loads an object, so an error can quote the verifier.
    static LIBBPF_LOG: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Most bytes of libbpf's text kept for one error message.
const LIBBPF_LOG_LIMIT: usize = 16 * 1024;

fn libbpf_print(level: libbpf_rs::PrintLevel, message: String) {
    let captured = LIBBPF_LOG.with(|log| {
        let mut log = log.borrow_mut();
        match log.as_mut() {
            Some(text) if text.len() + message.len() < LIBBPF_LOG_LIMIT => {
                text.push_str(&message);
                true
            }
            Some(_) => true,
            None => false,
        }
    });
    if !captured {
        tracing::debug!(?level, message = message.trim_end(), "libbpf.");
    }
}

/// Runs `f` with libbpf's messages captured; returns them with `f`'s result.
fn with_libbpf_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Warn, libbpf_print)));
    });
    LIBBPF_LOG.with(|log| *log.borrow_mut() = Some(String::new()));
    let result = f();
    let text = LIBBPF_LOG
        .with(|log| log.borrow_mut().take())
        .unwrap_or_default();
    (result, text)
}

/// One loaded, attached native program. Dropping it detaches the links, then closes every
/// program and map fd: nothing of ours stays in the kernel.
/// An [`EbpfError::Libbpf`] maker for `step` of `object`, with libbpf's log of that step.
fn libbpf_error(
    object: &'static str,
    step: &'static str,
    log: &str,
) -> impl FnOnce(libbpf_rs::Error) -> EbpfError {
    let log = if log.trim().is_empty() {
        String::new()
    } else {
        format!("\n{}", log.trim_end())
    };
    move |source| EbpfError::Libbpf {
        step,
        object,
        source,
        log,
    }
}

/// Opens a heat object from its embedded bytes, writes `config` as its `.rodata`, gives the maps
/// named in `sizes` those entries, and loads it (the verifier runs here); attaching is the
/// caller's.
fn open_and_load(
    name: &'static str,
    bytes: &'static [u8],
    config: &HeatConfig,
    sizes: &[(&str, u32)],
) -> Result<Object, EbpfError> {
    let (opened, log) = with_libbpf_log(|| {
        let mut builder = ObjectBuilder::default();
        builder.name(name).and_then(|b| b.open_memory(bytes))
    });
    let mut opened = opened.map_err(libbpf_error(name, "open", &log))?;
    let mut rodata = opened
        .maps_mut()
        .find(|m| m.name().to_string_lossy().ends_with(".rodata"))
        .ok_or(EbpfError::Layout {
            object: name,
            what: "no .rodata",
        })?;
    let initial = rodata.initial_value_mut().ok_or(EbpfError::Layout {
        object: name,
        what: "no .rodata contents",
    })?;
    // heat.h keeps struct heat_config the only read-only datum, so it sits at offset 0.
    if initial.len() != HEAT_CONFIG_LEN {
        return Err(EbpfError::Layout {
            object: name,
            what: ".rodata is not exactly struct heat_config",
        });
    }
    initial.copy_from_slice(&config.bytes());
    for (map, entries) in sizes {
        opened
            .maps_mut()
            .find(|m| m.name().to_string_lossy() == *map)
            .ok_or(EbpfError::Layout {
                object: name,
                what: "a map to size is not in the object",
            })?
            .set_max_entries(*entries)
            .map_err(libbpf_error(name, "size a map of", ""))?;
    }
    let (object, log) = with_libbpf_log(|| opened.load());
    object.map_err(libbpf_error(name, "load", &log))
}

struct Loaded {
    native: &'static Native,
    // Field order is drop order: links first (detach), then the object (programs, maps).
    _links: Vec<Link>,
    object: Object,
    /// Each key's counter sums at the previous walk, to report differences.
    previous: HashMap<Vec<u8>, Vec<u64>>,
}

impl Loaded {
    fn load(native: &'static Native, filter: &ProcessFilter) -> Result<Loaded, EbpfError> {
        let object = open_and_load(
            native.object_name,
            native.object,
            &HeatConfig::new(native, filter),
            &[],
        )?;
        let mut links = Vec::new();
        for program in object.progs_mut() {
            match native.attach {
                Attach::Declared => {
                    let (link, log) = with_libbpf_log(|| program.attach());
                    links.push(link.map_err(libbpf_error(native.object_name, "attach", &log))?);
                }
                Attach::CpuClock { hz } => {
                    for cpu in online_cpus().map_err(|e| EbpfError::PerfEvent {
                        object: native.object_name,
                        cpu: None,
                        source: e,
                    })? {
                        let event = cpu_clock_event(cpu, hz).map_err(|e| EbpfError::PerfEvent {
                            object: native.object_name,
                            cpu: Some(cpu),
                            source: e,
                        })?;
                        let (link, log) =
                            with_libbpf_log(|| program.attach_perf_event(event.as_raw_fd()));
                        links.push(link.map_err(libbpf_error(
                            native.object_name,
                            "attach",
                            &log,
                        ))?);
                        // The link owns the event now: libbpf disables and closes it when the
                        // link is destroyed.
                        let _ = event.into_raw_fd();
                    }
                }
            }
        }
        Ok(Loaded {
            native,
            _links: links,
            object,
            previous: HashMap::new(),
        })
    }

    /// Sums every CPU's counters per key and returns what was added since the previous walk.
    fn walk(&mut self, info: &AggregationInfo) -> Result<Aggregation, EbpfError> {
        let native = self.native;
        let map = self
            .object
            .maps()
            .find(|m| m.name() == native.hist_map)
            .ok_or(EbpfError::Layout {
                object: native.object_name,
                what: "histogram map missing",
            })?;
        let keys: Vec<Vec<u8>> = match native.key {
            KeyKind::Index => (0..map.max_entries())
                .map(|i| i.to_ne_bytes().to_vec())
                .collect(),
            KeyKind::Text(_) | KeyKind::Number => map.keys().collect(),
        };
        let mut series = Vec::new();
        for key in keys {
            let per_cpu =
                map.lookup_percpu(&key, MapFlags::ANY)
                    .map_err(|source| EbpfError::Libbpf {
                        step: "read",
                        object: native.object_name,
                        source,
                        log: String::new(),
                    })?;
            let Some(per_cpu) = per_cpu else { continue };
            let totals = sum_cpus(&per_cpu);
            let before = self.previous.get(&key);
            // The counts and the sum come from the same read of every CPU's value, so a walk's
            // sum is that of exactly the events it counts (up to an add in flight between a
            // slot and the sum, which the next walk then has).
            let delta: Vec<u64> = totals
                .iter()
                .enumerate()
                .map(|(i, now)| {
                    let was = before.map_or(0, |b| b[i]);
                    if i == native::SLOTS {
                        // The sum wraps (u64 of ns); its delta is still right modulo 2^64.
                        now.wrapping_sub(was)
                    } else {
                        now.saturating_sub(was)
                    }
                })
                .collect();
            let (counts, sum) = delta.split_at(native::SLOTS);
            if counts.iter().any(|&n| n > 0) {
                let mut s =
                    Series::histogram(native.key.decode(&key), native.shape.buckets(counts));
                s.sum = native.shape.sum(sum[0]);
                series.push(s);
                self.previous.insert(key, totals);
            }
        }
        series.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Aggregation {
            name: info.name.clone(),
            kind: info.kind,
            series,
            folded: 0,
        })
    }
}

/// Adds every CPU's `struct heat_hist` word by word: the slots, then the sum.
fn sum_cpus(per_cpu: &[Vec<u8>]) -> Vec<u64> {
    let mut totals = vec![0u64; native::WORDS];
    for cpu in per_cpu {
        for (word, chunk) in totals.iter_mut().zip(cpu.chunks_exact(8)) {
            *word = word.wrapping_add(u64::from_ne_bytes(chunk.try_into().expect("8 bytes")));
        }
    }
    totals
}

/// A native preset running in this process, on its session's consumer thread.
#[derive(Default)]
pub struct EbpfConsumer {
    program: Option<(&'static Native, ProcessFilter, AggregationInfo)>,
    loaded: Option<Loaded>,
}

impl EbpfConsumer {
    pub fn new() -> EbpfConsumer {
        EbpfConsumer::default()
    }
}

impl Consumer for EbpfConsumer {
    fn backend(&self) -> Backend {
        Backend::Ebpf
    }

    fn compile(&mut self, spec: &ProgramSpec) -> Result<Vec<AggregationInfo>, ConsumerError> {
        let preset = spec.preset.ok_or(EbpfError::NotPreset)?;
        let native = find(preset.name).ok_or_else(|| EbpfError::NoNative(preset.name.into()))?;
        // The bpftrace version's own aggregation, so `started` is the same for both backends.
        let info = crate::consumer::bpftrace::program::aggregation_maps(preset.script)
            .into_iter()
            .next()
            .map(|m| m.info)
            .ok_or(EbpfError::Layout {
                object: native.object_name,
                what: "the preset's bpftrace version has no aggregation",
            })?;
        self.program = Some((native, spec.filter.clone(), info.clone()));
        Ok(vec![info])
    }

    fn go(&mut self) -> Result<(), ConsumerError> {
        let (native, filter, _) = self
            .program
            .as_ref()
            .ok_or(ConsumerError::State("not compiled"))?;
        if crate::consumer::fault_injected("ebpf_load") {
            return Err(EbpfError::Injected("the native program failed to load").into());
        }
        self.loaded = Some(Loaded::load(native, filter)?);
        Ok(())
    }

    fn walk(&mut self) -> Result<Snapshot, ConsumerError> {
        let (Some((_, _, info)), Some(loaded)) = (self.program.as_ref(), self.loaded.as_mut())
        else {
            return Err(ConsumerError::State("not running"));
        };
        let aggregation = loaded
            .walk(info)
            .map_err(|e| ConsumerError::Exited(e.to_string()))?;
        Ok(Snapshot {
            aggregations: vec![aggregation],
            ..Snapshot::default()
        })
    }

    fn stop(&mut self) {
        self.loaded = None;
    }

    fn run_stats(&mut self) -> Option<RunStats> {
        object_run_stats(&self.loaded.as_ref()?.object)
    }
}

/// The kernel's run-time statistics of every program of `object`, added up.
fn object_run_stats(object: &Object) -> Option<RunStats> {
    object.progs().try_fold(RunStats::default(), |sum, p| {
        Some(sum.plus(cost::prog_stats(p.as_fd()).ok()?))
    })
}

/// `/sys/devices/system/cpu/online`: the CPUs a per-CPU perf event can be opened on.
const ONLINE_CPUS: &str = "/sys/devices/system/cpu/online";

/// The online CPUs.
fn online_cpus() -> std::io::Result<Vec<u32>> {
    parse_cpu_list(&std::fs::read_to_string(ONLINE_CPUS)?).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("cannot read {ONLINE_CPUS}"),
        )
    })
}

/// A kernel CPU list (`0-3,5,7-8`).
fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((lo, hi)) => cpus.extend(lo.parse::<u32>().ok()?..=hi.parse::<u32>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// The first 64 bytes of `struct perf_event_attr` (`PERF_ATTR_SIZE_VER0`, which every kernel
/// with BPF accepts): enough for a sampling software event.
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_freq: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
}

/// `PERF_TYPE_SOFTWARE`, `PERF_COUNT_SW_CPU_CLOCK` and the `freq` flag bit
/// (`include/uapi/linux/perf_event.h`): what bpftrace's `profile:hz:N` opens.
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_SW_CPU_CLOCK: u64 = 0;
const PERF_ATTR_FLAG_FREQ: u64 = 1 << 10;
/// `PERF_FLAG_FD_CLOEXEC`.
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 1 << 3;

/// Opens a cpu-clock event sampling `hz` times a second on `cpu`, for every task there.
fn cpu_clock_event(cpu: u32, hz: u64) -> std::io::Result<OwnedFd> {
    let attr = PerfEventAttr {
        kind: PERF_TYPE_SOFTWARE,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config: PERF_COUNT_SW_CPU_CLOCK,
        sample_freq: hz,
        flags: PERF_ATTR_FLAG_FREQ,
        ..PerfEventAttr::default()
    };
    // SAFETY: perf_event_open reads `attr` (ours, with its own size in `size`) and returns a
    // new fd or -1; pid -1 with a cpu measures every task on that CPU, no group fd.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            -1 as libc::pid_t,
            cpu as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the syscall just returned this fd, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

impl KeyKind {
    /// The key part a map key stands for.
    fn decode(self, key: &[u8]) -> Vec<KeyPart> {
        match self {
            KeyKind::Index | KeyKind::Number => {
                let n = u32::from_ne_bytes(key[..4].try_into().expect("u32 key"));
                vec![KeyPart::Int(i64::from(n))]
            }
            KeyKind::Text(_) => {
                let end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
                vec![KeyPart::Str(
                    String::from_utf8_lossy(&key[..end]).into_owned(),
                )]
            }
        }
    }
}

impl Shape {
    /// Bucket bounds of each slot, as bpftrace prints them for the same function; slots that
    /// share one bucket (the log2 top) are summed into it.
    fn buckets(self, counts: &[u64]) -> Vec<crate::aggregation::Bucket> {
        let mut buckets: Vec<crate::aggregation::Bucket> = Vec::new();
        for (slot, &count) in counts.iter().enumerate().filter(|(_, &n)| n > 0) {
            let (lo, hi) = self.bounds(slot);
            match buckets.last_mut() {
                Some(last) if (last.lo, last.hi) == (lo, hi) => last.count += count,
                _ => buckets.push(crate::aggregation::Bucket { lo, hi, count }),
            }
        }
        buckets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::Bucket;
    use crate::presets::Exclusion;

    #[test]
    fn keys_read_as_numbers_or_nul_padded_text() {
        assert_eq!(
            KeyKind::Index.decode(&110u32.to_ne_bytes()),
            vec![KeyPart::Int(110)]
        );
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"bash");
        assert_eq!(
            KeyKind::Text(16).decode(&comm),
            vec![KeyPart::Str("bash".into())]
        );
    }

    #[test]
    fn cpu_lists_read_as_the_kernel_writes_them() {
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(
            parse_cpu_list("0-3,5,7-8\n"),
            Some(vec![0, 1, 2, 3, 5, 7, 8])
        );
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(
            std::mem::size_of::<PerfEventAttr>(),
            64,
            "PERF_ATTR_SIZE_VER0"
        );
    }

    #[test]
    fn every_cpu_adds_its_counts_and_its_sum() {
        let value = |slot: usize, count: u64, sum: u64| {
            let mut words = vec![0u64; native::WORDS];
            words[slot] = count;
            words[native::SLOTS] = sum;
            words
                .iter()
                .flat_map(|w| w.to_ne_bytes())
                .collect::<Vec<u8>>()
        };
        let totals = sum_cpus(&[value(3, 2, 9_000), value(3, 1, 5_500), value(4, 1, 8)]);
        assert_eq!(totals.len(), native::WORDS);
        assert_eq!((totals[3], totals[4]), (3, 1));
        assert_eq!(totals[native::SLOTS], 14_508);
        // ns kept; the µs shapes report µs, the ms offsets nothing.
        assert_eq!(Shape::Log2Ns.sum(14_508), Some(14_508));
        assert_eq!(Shape::Log2Us.sum(14_508), Some(14));
        assert_eq!(Shape::LinearUs0To64By2.sum(1_999), Some(1));
        assert_eq!(Shape::LinearMsOffset.sum(14_508), None);
        // A sum that wrapped past 2^64 still sums (modulo 2^64), as its walk deltas do.
        let wrapped = sum_cpus(&[value(1, 1, u64::MAX), value(1, 1, 2)]);
        assert_eq!(wrapped[native::SLOTS], 1);
    }

    #[test]
    fn counts_become_only_their_non_empty_buckets() {
        let mut counts = vec![0u64; native::SLOTS];
        counts[1] = 5; // [0, 1] us
        counts[33] = 2; // [64, inf) us
        assert_eq!(
            Shape::LinearUs0To64By2.buckets(&counts),
            vec![
                Bucket {
                    lo: Some(0),
                    hi: Some(1),
                    count: 5
                },
                Bucket {
                    lo: Some(64),
                    hi: None,
                    count: 2
                },
            ]
        );
    }

    #[test]
    fn log2_slots_from_2_to_the_31_sum_into_the_open_top_bucket() {
        let mut counts = vec![0u64; native::SLOTS];
        counts[31] = 1; // [2^30, 2^31 - 1]
        counts[32] = 2; // from 2^31
        counts[40] = 3;
        counts[64] = 4;
        assert_eq!(
            Shape::Log2Ns.buckets(&counts),
            vec![
                Bucket {
                    lo: Some(1 << 30),
                    hi: Some((1 << 31) - 1),
                    count: 1
                },
                Bucket {
                    lo: Some(1 << 31),
                    hi: None,
                    count: 9
                },
            ]
        );
    }

    #[test]
    fn the_config_is_laid_out_as_in_heat_h() {
        let filter = ProcessFilter {
            pid: Some(7),
            comm: Some("cat".into()),
            exclude: Some(Exclusion {
                pid: 1234,
                children: true,
            }),
        };
        let config = HeatConfig::new(find("syscall-latency-log2").unwrap(), &filter);
        let bytes = config.bytes();
        assert_eq!(bytes.len(), std::mem::size_of::<HeatConfig>());
        assert_eq!(&bytes[0..8], &[1, 0, 0, 0, 7, 0, 0, 0]);
        assert_eq!(&bytes[8..11], b"cat");
        assert_eq!(&bytes[24..32], &[0xd2, 0x04, 0, 0, 1, 0, 0, 0]);
        assert_eq!(
            &bytes[32..56],
            &[0; 24],
            "presets leave the explain band zero"
        );
        let nothing = HeatConfig::new(find("block-io-latency").unwrap(), &Default::default());
        assert_eq!(&nothing.bytes()[4..], &[0; 52]);
        let mut band = HeatConfig::filtered(0, &Default::default());
        band.band_lo_ns = 2_000_000;
        band.band_hi_ns = 4_000_000;
        band.mode = 1;
        band.keyed = 1;
        let bytes = band.bytes();
        assert_eq!(&bytes[32..40], &2_000_000u64.to_ne_bytes());
        assert_eq!(&bytes[40..48], &4_000_000u64.to_ne_bytes());
        assert_eq!(&bytes[48..56], &[1, 0, 0, 0, 1, 0, 0, 0]);
    }
}
