//! Which presets have a native version, and how each one's maps read: the BPF object, the
//! histogram map, what its keys are, and the bucket shape (mirroring the bpftrace version's
//! `lhist`/`hist`, so both backends send identical buckets).

use crate::consumer::bpftrace::output::HIST_TOP;

/// Counter slots per histogram value (`HEAT_SLOTS` in `bpf/heat.h`).
pub const SLOTS: usize = 65;
/// u64 words per histogram value: the slots, then the sum (`struct heat_hist`).
pub const WORDS: usize = SLOTS + 1;
/// Nanoseconds in a microsecond: the µs shapes' sums are kept in ns.
const NS_PER_US: i128 = 1000;

/// How a histogram map's keys read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// An array index that is the key itself (syscall number, softirq vector).
    Index,
    /// A NUL-padded string of this many bytes (comm, rwbs).
    Text(usize),
    /// A hash key that is a `u32` number (a TCP port).
    Number,
}

/// How a native program's BPF programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Each program where its section says (tracepoints, raw and BTF tracepoints).
    Declared,
    /// One software cpu-clock perf event per online CPU, sampling `hz` times a second (as
    /// bpftrace's `profile:hz:N`); the object's one program is attached to each.
    CpuClock { hz: u64 },
}

/// The bucket layout of a histogram, as the BPF side counts it (`HEAT_SHAPE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// bpftrace `lhist(us, 0, 64, 2)`.
    LinearUs0To64By2,
    /// bpftrace `hist(ns)`: the value counted as it is (also bytes).
    Log2Ns,
    /// bpftrace `hist(us)`.
    Log2Us,
    /// bpftrace `lhist((nsecs % 1000000000) / 1000000, 0, 1000, 20)`: a sample's millisecond
    /// offset within its second, in 20 ms rows.
    LinearMsOffset,
}

/// The linear layout of [`Shape::LinearUs0To64By2`]: min, max, step.
const LINEAR: (i64, i64, i64) = (0, 64, 2);
/// The linear layout of [`Shape::LinearMsOffset`]: min, max, step (ms).
const OFFSET_ROWS: (i64, i64, i64) = (0, 1000, 20);

/// Inclusive bounds of a slot of an `lhist(v, min, max, step)`: slot 0 below `min`, then one
/// slot a step, then the open top from `max`.
fn linear_bounds((min, max, step): (i64, i64, i64), slot: usize) -> (Option<i64>, Option<i64>) {
    let inner = ((max - min) / step) as usize;
    match slot {
        0 => (None, Some(min - 1)),
        s if s <= inner => {
            let lo = min + (s as i64 - 1) * step;
            (Some(lo), Some(lo + step - 1))
        }
        _ => (Some(max), None),
    }
}

impl Shape {
    /// The value of `heat_config.shape` that selects this shape.
    pub fn code(self) -> u32 {
        match self {
            Shape::LinearUs0To64By2 => 0,
            Shape::Log2Ns => 1,
            Shape::Log2Us => 2,
            Shape::LinearMsOffset => 3,
        }
    }

    /// The sum of the values counted, in the histogram's unit, from the sum the BPF side kept
    /// (in ns, or bytes); `None` for the profile's ms offsets, which it does not sum. The µs
    /// shapes divide the total once, where bpftrace truncates every value: their sums agree
    /// to within one µs per event, this one being the exact one.
    pub fn sum(self, kept: u64) -> Option<i128> {
        match self {
            Shape::Log2Ns => Some(i128::from(kept)),
            Shape::Log2Us | Shape::LinearUs0To64By2 => Some(i128::from(kept) / NS_PER_US),
            Shape::LinearMsOffset => None,
        }
    }

    /// Inclusive bounds of a slot, `None` for an open end.
    pub fn bounds(self, slot: usize) -> (Option<i64>, Option<i64>) {
        match self {
            Shape::LinearUs0To64By2 => linear_bounds(LINEAR, slot),
            Shape::LinearMsOffset => linear_bounds(OFFSET_ROWS, slot),
            // bpftrace 0.17's hist() stops at 2^31 (see `HIST_TOP`); the slots above it are
            // counted exactly but sent as its one open top bucket, so both backends agree.
            Shape::Log2Ns | Shape::Log2Us => match slot {
                0 => (Some(0), Some(0)),
                s => match 1i64 << (s - 1).min(31) {
                    HIST_TOP => (Some(HIST_TOP), None),
                    lo => (Some(lo), Some(lo * 2 - 1)),
                },
            },
        }
    }
}

/// A preset that runs natively.
#[derive(Debug)]
pub struct Native {
    /// The preset's name (as in `presets::PRESETS`).
    pub preset: &'static str,
    /// libbpf's object name: prefixes the internal maps (`heat_sys.rodata`), so they are ours
    /// to recognise in `bpftool map list`.
    pub object_name: &'static str,
    /// The compiled BPF object.
    pub object: &'static [u8],
    /// The per-CPU histogram map walks read.
    pub hist_map: &'static str,
    pub key: KeyKind,
    pub shape: Shape,
    pub attach: Attach,
}

/// The syscall object, shared by both syscall presets (the shape is set in `.rodata`).
const SYSCALL_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/syscall.bpf.o"));

/// The other presets' objects, one each.
const SOFTIRQ_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/softirq.bpf.o"));
const RUNQUEUE_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runqueue.bpf.o"));
const BLOCKIO_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/blockio.bpf.o"));
const OFFCPU_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/offcpu.bpf.o"));
const HARDIRQ_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hardirq.bpf.o"));
const TCPCONNECT_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/tcpconnect.bpf.o"));
const FUTEX_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/futex.bpf.o"));
const BIOSIZE_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/biosize.bpf.o"));
const PROFILE_OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/profile.bpf.o"));

/// cpu-profile's sampling rate per CPU: bpftrace's `profile:hz:99` (99, not 100, so samples
/// do not run in lockstep with timer-driven work).
pub const PROFILE_HZ: u64 = 99;

/// Bytes of an IRQ name key (`HEAT_HI_NAME_LEN`): bpftrace's `str()` length, so long names
/// are cut alike.
const IRQ_NAME_LEN: usize = 64;

/// Every native preset.
pub const NATIVE: &[Native] = &[
    Native {
        preset: "syscall-latency",
        object_name: "heat_syscall",
        object: SYSCALL_OBJECT,
        hist_map: "heat_sys_hist",
        key: KeyKind::Index,
        shape: Shape::LinearUs0To64By2,
        attach: Attach::Declared,
    },
    Native {
        preset: "syscall-latency-log2",
        object_name: "heat_syscall",
        object: SYSCALL_OBJECT,
        hist_map: "heat_sys_hist",
        key: KeyKind::Index,
        shape: Shape::Log2Ns,
        attach: Attach::Declared,
    },
    Native {
        preset: "block-io-latency",
        object_name: "heat_blockio",
        object: BLOCKIO_OBJECT,
        hist_map: "heat_bio_hist",
        key: KeyKind::Text(16),
        shape: Shape::Log2Us,
        attach: Attach::Declared,
    },
    Native {
        preset: "runqueue-latency",
        object_name: "heat_runqueue",
        object: RUNQUEUE_OBJECT,
        hist_map: "heat_rq_hist",
        key: KeyKind::Text(16),
        shape: Shape::Log2Us,
        attach: Attach::Declared,
    },
    Native {
        preset: "softirq-latency",
        object_name: "heat_softirq",
        object: SOFTIRQ_OBJECT,
        hist_map: "heat_si_hist",
        key: KeyKind::Index,
        shape: Shape::Log2Us,
        attach: Attach::Declared,
    },
    Native {
        preset: "offcpu-time",
        object_name: "heat_offcpu",
        object: OFFCPU_OBJECT,
        hist_map: "heat_off_hist",
        key: KeyKind::Text(16),
        shape: Shape::Log2Ns,
        attach: Attach::Declared,
    },
    Native {
        preset: "hardirq-latency",
        object_name: "heat_hardirq",
        object: HARDIRQ_OBJECT,
        hist_map: "heat_hi_hist",
        key: KeyKind::Text(IRQ_NAME_LEN),
        shape: Shape::Log2Ns,
        attach: Attach::Declared,
    },
    Native {
        preset: "tcp-connect-latency",
        object_name: "heat_tcpconn",
        object: TCPCONNECT_OBJECT,
        hist_map: "heat_tcp_hist",
        key: KeyKind::Number,
        shape: Shape::Log2Us,
        attach: Attach::Declared,
    },
    Native {
        preset: "futex-wait",
        object_name: "heat_futex",
        object: FUTEX_OBJECT,
        hist_map: "heat_futex_hist",
        key: KeyKind::Text(16),
        shape: Shape::Log2Ns,
        attach: Attach::Declared,
    },
    Native {
        preset: "block-io-size",
        object_name: "heat_biosize",
        object: BIOSIZE_OBJECT,
        hist_map: "heat_biosz_hist",
        key: KeyKind::Text(16),
        shape: Shape::Log2Ns,
        attach: Attach::Declared,
    },
    Native {
        preset: "cpu-profile",
        object_name: "heat_profile",
        object: PROFILE_OBJECT,
        hist_map: "heat_prof_hist",
        key: KeyKind::Text(16),
        shape: Shape::LinearMsOffset,
        attach: Attach::CpuClock { hz: PROFILE_HZ },
    },
];

/// The native version of preset `name`.
pub fn find(name: &str) -> Option<&'static Native> {
    NATIVE.iter().find(|n| n.preset == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_slots_are_bpftraces_lhist_buckets() {
        let s = Shape::LinearUs0To64By2;
        assert_eq!(s.bounds(0), (None, Some(-1)));
        assert_eq!(s.bounds(1), (Some(0), Some(1)));
        assert_eq!(s.bounds(2), (Some(2), Some(3)));
        assert_eq!(s.bounds(32), (Some(62), Some(63)));
        assert_eq!(s.bounds(33), (Some(64), None));
    }

    #[test]
    fn log2_slots_are_bpftraces_hist_buckets() {
        let s = Shape::Log2Ns;
        assert_eq!(s.bounds(0), (Some(0), Some(0)));
        assert_eq!(s.bounds(1), (Some(1), Some(1)));
        assert_eq!(s.bounds(2), (Some(2), Some(3)));
        assert_eq!(s.bounds(3), (Some(4), Some(7)));
        assert_eq!(s.bounds(31), (Some(1 << 30), Some((1 << 31) - 1)));
        assert_eq!(s.bounds(32), (Some(1 << 31), None));
        assert_eq!(s.bounds(64), (Some(1 << 31), None));
    }

    /// The constant after `#define NAME` in `bpf/heat.h`.
    fn heat_h_constant(name: &str) -> u64 {
        let header = include_str!("bpf/heat.h");
        let line = header
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("{name} in heat.h"));
        line.trim().trim_end_matches("ULL").parse().unwrap()
    }

    #[test]
    fn the_bpf_side_divides_by_2000_exactly_with_a_multiplication() {
        let mul = heat_h_constant("HEAT_DIV_2000_MUL");
        let top = heat_h_constant("HEAT_LHIST_TOP_NS");
        assert_eq!(top, (LINEAR.1 * 1000) as u64);
        for ns in 0..top {
            assert_eq!((ns * mul) >> 32, ns / 2000, "{ns}");
        }
    }

    #[test]
    fn every_native_preset_exists_and_embeds_an_object() {
        for n in NATIVE {
            assert!(crate::presets::find(n.preset).is_some(), "{}", n.preset);
            assert!(n.object.starts_with(b"\x7fELF"), "{}", n.preset);
            assert!(n.object_name.starts_with("heat_"));
        }
    }
}
