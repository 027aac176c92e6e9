//! The bpf(2) calls behind run-time statistics, through libbpf: enable them, and read a
//! program's `run_cnt` and `run_time_ns`. Linux only; elsewhere enabling says it is
//! unsupported and frames carry no `cost`.

#[cfg(target_os = "linux")]
mod linux {
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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
}

#[cfg(target_os = "linux")]
pub use self::linux::{enable_run_time_stats, prog_stats};

#[cfg(not(target_os = "linux"))]
pub fn enable_run_time_stats() -> std::io::Result<std::os::fd::OwnedFd> {
    Err(std::io::ErrorKind::Unsupported.into())
}
