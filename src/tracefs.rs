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

/// Mounts tracefs when it is missing.
pub fn ensure_mounted() -> Result<Tracefs, TracefsError> {
    if mounted() {
        return Ok(Tracefs::AlreadyMounted);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(TracefsError::NotRoot);
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
