//! The bpf(2) calls behind run-time statistics, through libbpf: enable them, and read a
//! program's `run_cnt` and `run_time_ns`. Linux only; elsewhere enabling says it is
//! unsupported and frames carry no `cost`.

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    use libbpf_rs::libbpf_sys;

    use super::super::RunStats;

    /// libbpf returns a negative errno on failure (libbpf 1.0 semantics).
    fn check(rc: i32) -> std::io::Result<i32> {
        if rc < 0 {
            Err(std::io::Error::from_raw_os_error(-rc))
        } else {
            Ok(rc)
        }
    }

    /// `BPF_ENABLE_STATS` with `BPF_STATS_RUN_TIME`: run time is counted while the fd is open.
    pub fn enable_run_time_stats() -> std::io::Result<std::os::fd::OwnedFd> {
        // SAFETY: bpf_enable_stats takes an integer and returns a new fd or a negative errno.
        let fd = check(unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) })?;
        // SAFETY: the fd was just returned to us and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `BPF_OBJ_GET_INFO_BY_FD` on a program: its run count and run time so far.
    pub fn prog_stats(fd: BorrowedFd<'_>) -> std::io::Result<RunStats> {
        let mut info = libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
        // SAFETY: `info` is a zeroed bpf_prog_info of `len` bytes that lives across the call;
        // with every pointer field zero the kernel writes only into the struct itself.
        check(unsafe { libbpf_sys::bpf_prog_get_info_by_fd(fd.as_raw_fd(), &mut info, &mut len) })?;
        Ok(RunStats {
            run_cnt: info.run_cnt,
            run_time_ns: info.run_time_ns,
        })
    }

    /// `r0 = 0; exit`, as two raw instructions (opcode byte first, little-endian): a socket
    /// filter that drops everything and touches nothing.
    const CANARY_INSNS: [u64; 2] = [0xb7, 0x95];
    /// Bytes of packet a socket filter's test run is given (at least an Ethernet header).
    const CANARY_PACKET: usize = 64;

    /// A do-nothing BPF program of heat-actix's own, run on demand (`BPF_PROG_TEST_RUN`,
    /// attached to nothing) to see whether the kernel is counting run-time statistics right
    /// now: the kernel counts a test run like any run.
    pub struct Canary(OwnedFd);

    impl Canary {
        pub fn load() -> std::io::Result<Canary> {
            let insns = CANARY_INSNS;
            // SAFETY: the two instructions are bpf_insn's 8-byte layout and live across the
            // call; the names are NUL-terminated literals; null options are allowed.
            let fd = check(unsafe {
                libbpf_sys::bpf_prog_load(
                    libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER,
                    c"heat_canary".as_ptr(),
                    c"GPL".as_ptr(),
                    insns.as_ptr().cast::<libbpf_sys::bpf_insn>(),
                    insns.len() as _,
                    std::ptr::null_mut(),
                )
            })?;
            // SAFETY: the fd was just returned to us and nothing else owns it.
            Ok(Canary(unsafe { OwnedFd::from_raw_fd(fd) }))
        }

        /// Runs the program once; whether the kernel counted the run (statistics on).
        pub fn counts(&self) -> std::io::Result<bool> {
            let fd = self.0.as_fd();
            let before = prog_stats(fd)?.run_cnt;
            let packet = [0u8; CANARY_PACKET];
            let mut opts = libbpf_sys::bpf_test_run_opts {
                sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
                data_in: packet.as_ptr().cast(),
                data_size_in: CANARY_PACKET as u32,
                repeat: 1,
                ..Default::default()
            };
            // SAFETY: `opts` is a sized, zeroed-but-for-input options struct whose input
            // buffer lives across the call; no output buffers are given.
            check(unsafe { libbpf_sys::bpf_prog_test_run_opts(fd.as_raw_fd(), &mut opts) })?;
            Ok(prog_stats(fd)?.run_cnt > before)
        }
    }
}

#[cfg(target_os = "linux")]
pub use self::linux::{enable_run_time_stats, prog_stats, Canary};

/// Without BPF there is nothing to run: the statistics are never on.
#[cfg(not(target_os = "linux"))]
pub struct Canary;

#[cfg(not(target_os = "linux"))]
impl Canary {
    pub fn load() -> std::io::Result<Canary> {
        Err(std::io::ErrorKind::Unsupported.into())
    }

    pub fn counts(&self) -> std::io::Result<bool> {
        Ok(false)
    }
}

#[cfg(not(target_os = "linux"))]
pub fn enable_run_time_stats() -> std::io::Result<std::os::fd::OwnedFd> {
    Err(std::io::ErrorKind::Unsupported.into())
}
