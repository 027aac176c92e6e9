//! Making sure tracefs is mounted: bpftrace reads tracepoint formats from it and reports
//! "tracepoint not found" when it is missing, which is the state of a freshly booted VM.

use std::path::Path;

/// Where tracefs lives on current kernels.
const TRACEFS: &str = "/sys/kernel/tracing";

/// Why tracefs is not usable.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// It is not mounted and we are not root, so we cannot mount it.
    #[error("tracefs is not mounted at {TRACEFS} and heat-actix is not root, so it cannot mount it; run heat-actix with sudo, or `sudo mount -t tracefs nodev {TRACEFS}` first")]
    NotRoot,
    /// It is mounted, but this user may not read it (the kernel mounts it mode 0700).
    #[error("tracefs is mounted at {TRACEFS} but not readable by this user (uid {uid}); run heat-actix as root (sudo), or with the capabilities tracing needs: CAP_SYS_ADMIN (or CAP_BPF and CAP_PERFMON) plus CAP_DAC_READ_SEARCH to read tracefs")]
    Unreadable { uid: u32 },
    /// mount(2) failed.
    #[error("tracefs is not mounted at {TRACEFS} and mounting it failed: {0}")]
    Mount(std::io::Error),
}

/// What start-up found.
#[derive(Debug, PartialEq, Eq)]
pub enum Tracefs {
    AlreadyMounted,
    MountedNow,
}

fn mounted() -> bool {
    Path::new(TRACEFS).join("events").is_dir()
}

/// Whether a mount table (`/proc/self/mounts`) has tracefs at [`TRACEFS`]: it can be mounted
/// and still invisible to a user who may not search it.
fn listed(mounts: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(TRACEFS) && fields.next() == Some("tracefs")
    })
}

/// Mounts tracefs when it is missing.
pub fn ensure_mounted() -> Result<Tracefs, TracefsError> {
    if mounted() {
        return Ok(Tracefs::AlreadyMounted);
    }
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        return Err(if listed(&mounts) {
            TracefsError::Unreadable { uid }
        } else {
            TracefsError::NotRoot
        });
    }
    let source = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all three are NUL-terminated strings that outlive the call; data may be null.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        // Another process (a second server starting beside us) may have just mounted it.
        if mounted() {
            return Ok(Tracefs::AlreadyMounted);
        }
        return Err(TracefsError::Mount(error));
    }
    if mounted() {
        Ok(Tracefs::MountedNow)
    } else {
        Err(TracefsError::Mount(std::io::Error::other(
            "mounted, but no events directory appeared",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_table_says_whether_tracefs_is_mounted() {
        let mounted = "sysfs /sys sysfs rw,nosuid 0 0\n\
                       tracefs /sys/kernel/tracing tracefs rw,nosuid,nodev,noexec,relatime 0 0\n";
        assert!(listed(mounted));
        let debug_only = "tracefs /sys/kernel/debug/tracing tracefs rw 0 0\n";
        assert!(!listed(debug_only));
        assert!(!listed("none /sys/kernel/tracing tmpfs rw 0 0\n"));
        assert!(!listed(""));
    }
}
