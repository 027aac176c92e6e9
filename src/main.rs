//! The `heat-actix` binary: read the command line and config, make sure tracing can work,
//! serve until SIGINT or SIGTERM, then stop every tracer before exiting.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use heat_actix::cli::{Cli, Command};
use heat_actix::program::registry::HaltAll;
use heat_actix::{config, server, supervisor::EvictAll};
use tracing::{info, warn};

/// How long shutdown waits for sessions to stop their tracers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// How often shutdown looks whether every session has gone.
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);

fn main() -> anyhow::Result<()> {
    // The DTrace backend re-executes this binary as its consumer process; its stdout is the
    // pipe protocol, so it starts before anything could log or print.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            heat_actix::consumer::dtrace::wire::CHILD_SUBCOMMAND,
        ))
    {
        std::process::exit(heat_actix::consumer::dtrace::child::main());
    }
    let cli = Cli::parse();
    if let Some(Command::HashToken) = cli.command {
        return hash_token();
    }
    let config = cli.config()?;
    if let Some(Command::Import { file, watch }) = &cli.command {
        return import(&config, file, watch);
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).context("log filter")?)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // bpftrace needs tracefs; DTrace hosts have no such thing.
    #[cfg(target_os = "linux")]
    match heat_actix::tracefs::ensure_mounted()? {
        heat_actix::tracefs::Tracefs::MountedNow => {
            info!(path = "/sys/kernel/tracing", "Mounted tracefs.")
        }
        heat_actix::tracefs::Tracefs::AlreadyMounted => {}
    }
    // SAFETY: geteuid has no preconditions.
    #[cfg(unix)]
    if unsafe { libc::geteuid() } != 0 {
        // deploy/native-only.conf runs native presets this way, with ambient capabilities.
        match effective_capabilities() {
            Some(caps) if caps & TRACING_CAPS == TRACING_CAPS || caps & CAP_SYS_ADMIN != 0 => {
                warn!(cap_eff = format_args!("{caps:#x}"), "Not running as root: native programs can run, bpftrace (which needs uid 0) cannot.")
            }
            _ => warn!("Not running as root: tracers will fail to attach."),
        }
    }

    if let Some(why) = heat_actix::consumer::bpftrace::missing(&config.bpftrace.path) {
        warn!(path = %config.bpftrace.path.display(), %why, "bpftrace not found: bpftrace scripts, D translated to bpftrace and presets without a native version will be refused.");
    }

    // Loading a BPF object blocks; done here, before any arbiter runs.
    match heat_actix::consumer::ebpf::probe() {
        Ok(()) => info!("Native eBPF presets available."),
        Err(reason) => warn!(%reason, "Native eBPF presets unavailable: presets run on bpftrace."),
    }

    actix_web::rt::System::new().block_on(async move {
        // Each error names what failed (the address, the certificate, the store and what to do).
        let running = server::start(config.clone())?;
        for addr in &running.bound {
            info!(%addr, max_sessions = config.max_sessions, tick_ms = config.tick_ms, "Listening.");
        }
        let handle = running.server.handle();
        let server = actix_web::rt::spawn(running.server);

        let signal = wait_for_signal().await;
        info!(signal, "Shutting down: stopping every session.");
        let asked = running.supervisor.send(EvictAll).await.unwrap_or(0);
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while !running.sessions.is_empty() && Instant::now() < deadline {
            actix_web::rt::time::sleep(SHUTDOWN_POLL).await;
        }
        info!(sessions = asked, left = running.sessions.len(), "Sessions stopped.");
        // Programs end with their last viewer; whatever is left (a session that did not stop
        // in time) ends here, before the process does.
        let _ = running.programs.send(HaltAll).await;
        handle.stop(true).await;
        let _ = server.await;
        anyhow::Ok(())
    })?;
    // Consumer threads reap their tracers as their sessions end; give the last ones a moment.
    std::thread::sleep(SHUTDOWN_POLL);
    Ok(())
}

/// `heat-actix hash-token`: the config line for a token read on stdin (never an argument, so
/// it stays out of shell history and `ps`).
/// Capability bits (linux/capability.h): CAP_SYS_ADMIN, and CAP_PERFMON with CAP_BPF, which
/// attaching and loading the native programs need.
const CAP_SYS_ADMIN: u64 = 1 << 21;
const TRACING_CAPS: u64 = (1 << 38) | (1 << 39);

/// This process's effective capability set, from `/proc/self/status`.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn hash_token() -> anyhow::Result<()> {
    use std::io::{BufRead, Write};
    let mut token = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut token)
        .context("read the token on stdin")?;
    let token = token.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(
        !token.trim().is_empty(),
        "the token on stdin is empty or only whitespace; give a token of random visible characters (e.g. `openssl rand -hex 32`)"
    );
    writeln!(
        std::io::stdout(),
        "sha256 = \"{}\"",
        config::hash_token(token)
    )?;
    Ok(())
}

/// `heat-actix import FILE --watch NAME`: an export into the config's store.
fn import(config: &config::Config, file: &std::path::Path, watch: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        config::valid_name(watch),
        "--watch {watch:?}: a watch name is 1..=64 of a-z 0-9 _ -"
    );
    anyhow::ensure!(
        !config.watches.iter().any(|w| w.name == watch && w.record),
        "--watch {watch:?} is a watch this config records: a running server writes it too; \
         import under another name (e.g. {watch}-imported)"
    );
    let path = config
        .store
        .resolve(None)
        .join(heat_actix::store::FILE_NAME);
    let mut store = heat_actix::store::Store::open(&path)?;
    let imported = heat_actix::import::import(file, watch, &mut store)?;
    println!(
        "Imported {} ticks from {} into watch {watch:?} (run(s) {:?}) of {}.",
        imported.ticks,
        file.display(),
        imported.runs,
        path.display()
    );
    Ok(())
}

#[cfg(unix)]
async fn wait_for_signal() -> &'static str {
    use actix_web::rt::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio_select(&mut term, &mut int).await
}

/// Windows has no SIGTERM: Ctrl-C (or Ctrl-Break) in the console is the stop request.
#[cfg(windows)]
async fn wait_for_signal() -> &'static str {
    actix_web::rt::signal::ctrl_c()
        .await
        .expect("install the Ctrl-C handler");
    "Ctrl-C"
}

#[cfg(unix)]
async fn tokio_select(
    term: &mut actix_web::rt::signal::unix::Signal,
    int: &mut actix_web::rt::signal::unix::Signal,
) -> &'static str {
    use std::future::poll_fn;
    use std::task::Poll;
    poll_fn(|cx| {
        if term.poll_recv(cx).is_ready() {
            return Poll::Ready("SIGTERM");
        }
        if int.poll_recv(cx).is_ready() {
            return Poll::Ready("SIGINT");
        }
        Poll::Pending
    })
    .await
}
