//! What every tracer child process gets, whichever backend starts it: it dies with the thread
//! that owns it, it is out of the terminal's process group, and its stderr is kept, capped.

use std::io::{BufRead, BufReader, Read};
#[cfg(unix)]
use std::os::unix::process::CommandExt;
#[cfg(windows)]
use std::os::windows::process::CommandExt;
use std::process::Command;
use std::thread::JoinHandle;

use parking_lot::Mutex;

/// Makes the child of `command` die when the thread that spawned it dies (even by panic), and
/// puts it in its own process group, so a terminal's Ctrl-C goes to the server, which stops
/// tracers in order. Where there is no parent-death signal (everywhere but Linux), the DTrace
/// consumer ends when its stdin closes, which happens when its owner drops it or dies.
#[cfg(unix)]
pub fn tie_to_owner(command: &mut Command) {
    // SAFETY: only async-signal-safe calls (prctl, setpgid) run between fork and exec.
    unsafe {
        command.pre_exec(|| {
            #[cfg(target_os = "linux")]
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::setpgid(0, 0);
            Ok(())
        });
    }
}

/// Windows: a new process group keeps the console's Ctrl-C away from the child; the DTrace
/// consumer ends when its stdin closes (its owner dropped it or died).
#[cfg(windows)]
pub fn tie_to_owner(command: &mut Command) {
    /// `CREATE_NEW_PROCESS_GROUP` from the Windows SDK's process creation flags.
    const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;
    command.creation_flags(CREATE_NEW_PROCESS_GROUP);
}

/// Runs `body` on a named thread that reads one of a child's pipes until it closes.
pub fn reader(name: &str, body: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(body)
        .expect("spawn reader thread")
}

/// Appends the lines of `stream` to `sink` until it closes, keeping at most `limit` bytes.
pub fn collect_lines(stream: impl Read, sink: &Mutex<String>, limit: usize) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let mut text = sink.lock();
        if text.len() + line.len() < limit {
            text.push_str(&line);
            text.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collected_text_stops_at_the_limit() {
        let sink = Mutex::new(String::new());
        collect_lines("one\ntwo\nthree\n".as_bytes(), &sink, 9);
        assert_eq!(*sink.lock(), "one\ntwo\n");
    }
}
