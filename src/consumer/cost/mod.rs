//! What a running program costs the host, measured by the kernel: BPF run-time statistics
//! (`run_cnt`, `run_time_ns` of each BPF program, counted while `BPF_ENABLE_STATS` is held),
//! turned into each frame's `cost` and checked against the CPU budget
//! (`limits.max_program_cpu_percent`).
//!
//! An *event* is one run of one of the program's BPF programs: a probe firing. A preset that
//! pairs an entry and an exit probe (`syscall-latency`) runs twice per syscall.
//!
//! The statistics are duty-cycled: while they are on, the kernel reads the clock around every
//! run of every BPF program on the machine (+147 ns a syscall for a syscall tracer on this
//! project's VM), so heat-actix holds them for a [`STATS_WINDOW`] of every [`STATS_PERIOD`]
//! only. The kernel counts runs and run time only while they are on, so a tick's counts are
//! scaled by the tick's length over the time the statistics were on during it.

mod sys;

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[cfg(target_os = "linux")]
pub use self::sys::prog_stats;

/// How many ticks the CPU budget is averaged over: one busy tick (a burst of syscalls, a
/// program's start-up) does not stop a program; a sustained load does.
pub const BUDGET_TICKS: usize = 3;

/// What the kernel counted for a program's BPF programs since they were loaded (summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Times any of the programs ran.
    pub run_cnt: u64,
    /// Nanoseconds spent running them (counted only while statistics are enabled).
    pub run_time_ns: u64,
}

impl RunStats {
    /// The sum of two programs' counts.
    pub fn plus(self, other: RunStats) -> RunStats {
        RunStats {
            run_cnt: self.run_cnt.saturating_add(other.run_cnt),
            run_time_ns: self.run_time_ns.saturating_add(other.run_time_ns),
        }
    }
}

/// A program's counts with the time the statistics had been on when they were read
/// ([`measured_time`]): two readings give a tick's [`Sample`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    pub stats: RunStats,
    pub measured: Duration,
}

impl Reading {
    /// The program's counts now, with the statistics' time so far.
    pub fn now(stats: RunStats) -> Reading {
        Reading {
            stats,
            measured: measured_time(),
        }
    }
}

/// What one tick of a program cost: the kernel's counts over the tick, scaled from the time
/// the statistics were on to the whole tick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Program runs during the tick (estimated).
    pub events: u64,
    /// Nanoseconds of CPU the runs took (estimated).
    pub run_time_ns: u64,
    /// The tick's length, in nanoseconds of wall time.
    pub interval_ns: u64,
    /// Nanoseconds of the tick the statistics were on (what was counted); 0: nothing was.
    pub measured_ns: u64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Sample {
    /// The counts between two readings `interval` apart, scaled by `interval` over the time
    /// the statistics were on between them. A count that went backwards (the program set
    /// changed) counts as nothing rather than as a huge number.
    pub fn between(before: Reading, now: Reading, interval: Duration) -> Sample {
        let interval_ns = nanos(interval);
        // Never more than the tick: the two clocks are read a few microseconds apart.
        let measured_ns = nanos(now.measured.saturating_sub(before.measured)).min(interval_ns);
        let scale = |counted: u64| match measured_ns {
            0 => 0,
            m => (u128::from(counted) * u128::from(interval_ns) / u128::from(m))
                .try_into()
                .unwrap_or(u64::MAX),
        };
        Sample {
            events: scale(now.stats.run_cnt.saturating_sub(before.stats.run_cnt)),
            run_time_ns: scale(
                now.stats
                    .run_time_ns
                    .saturating_sub(before.stats.run_time_ns),
            ),
            interval_ns,
            measured_ns,
        }
    }

    /// The sample as people read it; `None` for a tick of no length or in which the
    /// statistics were never on.
    pub fn cost(&self) -> Option<Cost> {
        if self.interval_ns == 0 || self.measured_ns == 0 {
            return None;
        }
        let interval_s = self.interval_ns as f64 / 1e9;
        let ns_per_event = match self.events {
            0 => 0.0,
            n => self.run_time_ns as f64 / n as f64,
        };
        Some(Cost {
            events_per_s: round_to(self.events as f64 / interval_s, 1.0),
            ns_per_event: round_to(ns_per_event, 10.0),
            cpu_share: round_to(self.run_time_ns as f64 / self.interval_ns as f64, 1e6),
            sampled: Some(round_to(
                self.measured_ns as f64 / self.interval_ns as f64,
                1e3,
            )),
        })
    }
}

/// Rounds `x` to `1 / per_unit`: frames say what is worth reading, not 17 digits.
fn round_to(x: f64, per_unit: f64) -> f64 {
    (x * per_unit).round() / per_unit
}

/// A frame's `cost`: what the program's BPF programs cost over the frame's interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cost {
    /// Probe firings per second.
    pub events_per_s: f64,
    /// Mean CPU nanoseconds per firing (0 when nothing fired).
    pub ns_per_event: f64,
    /// CPU time over wall time: the share of ONE CPU (1.0 is a whole CPU; may pass 1 on
    /// several CPUs).
    pub cpu_share: f64,
    /// The fraction of the interval the statistics were on: the figures above are what was
    /// counted then, scaled to the whole interval (absent in frames recorded before sampling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampled: Option<f64>,
}

/// A program's CPU budget: the share of one CPU its BPF programs may use, averaged over the
/// last [`BUDGET_TICKS`] ticks.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The limit, in percent of one CPU.
    percent: u32,
    recent: VecDeque<Sample>,
}

/// A program used more CPU than its budget allows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverBudget {
    /// What it used, in percent of one CPU, averaged over [`BUDGET_TICKS`] ticks.
    pub measured_percent: f64,
    /// Its limit, in percent of one CPU.
    pub limit_percent: u32,
}

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the program's BPF programs used {:.2}% of a CPU over the last {BUDGET_TICKS} ticks, \
             over the budget of {}% (limits.max_program_cpu_percent, or the start's \
             max_cpu_percent); it was stopped",
            self.measured_percent, self.limit_percent
        )
    }
}

impl Budget {
    pub fn new(percent: u32) -> Budget {
        Budget {
            percent,
            recent: VecDeque::with_capacity(BUDGET_TICKS),
        }
    }

    /// Adds one tick; over budget once [`BUDGET_TICKS`] ticks together used more than it.
    /// A tick in which the statistics were never on says nothing and is left out.
    pub fn observe(&mut self, sample: Sample) -> Result<(), OverBudget> {
        if sample.measured_ns == 0 {
            return Ok(());
        }
        if self.recent.len() == BUDGET_TICKS {
            self.recent.pop_front();
        }
        self.recent.push_back(sample);
        if self.recent.len() < BUDGET_TICKS {
            return Ok(());
        }
        let (run, wall) = self.recent.iter().fold((0u128, 0u128), |(r, w), s| {
            (r + u128::from(s.run_time_ns), w + u128::from(s.interval_ns))
        });
        // run / wall > percent / 100, in integers.
        if wall == 0 || run * 100 <= wall * u128::from(self.percent) {
            return Ok(());
        }
        Err(OverBudget {
            measured_percent: run as f64 * 100.0 / wall as f64,
            limit_percent: self.percent,
        })
    }
}

/// How often the statistics are switched on: one measuring window starts every period. Ten
/// a second, so that even the shortest tick (100 ms) holds one window's worth, and a tick of a
/// second samples ten moments of it.
pub const STATS_PERIOD: Duration = Duration::from_millis(100);
/// How long each measuring window lasts: the statistics are on 15 ms of every 100, 15% of the
/// time, and every BPF program on the machine pays their clock reads that share of the time.
pub const STATS_WINDOW: Duration = Duration::from_millis(15);
/// The kernel's own switch (`kernel.bpf_stats_enabled`): when an administrator set it, the
/// statistics are on all the time, and everything the kernel counted was measured. Another
/// process's `BPF_ENABLE_STATS` fd does the same, unseen here: a canary program of ours,
/// test-run before each window, shows whether the kernel counts while our windows are closed.
const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// The process-wide state of the statistics: one `BPF_ENABLE_STATS` fd, opened for a window
/// and closed after it by a thread that runs while any [`StatsEnabled`] lives.
struct Stats {
    /// Live [`StatsEnabled`] holds.
    holds: usize,
    /// The fd that keeps the statistics on, during a window.
    fd: Option<OwnedFd>,
    /// When the open window opened.
    opened: Option<Instant>,
    /// When the previous window closed (or the first opened).
    last_close: Option<Instant>,
    /// The time windows were open, over the process's life (closed windows).
    measured: Duration,
    /// Bumped when the last hold goes: a cycling thread of an older generation ends.
    generation: u64,
    /// Whether a cycling thread of this generation runs.
    cycling: bool,
    /// Whether the kernel counted between the previous window and the open one (another
    /// process, or the kernel's switch, kept the statistics on): then the whole time since the
    /// previous window was measured.
    counted_between: bool,
    /// Tells whether the kernel counts while our window is closed; loaded with the first hold,
    /// unloaded with the last.
    canary: Option<sys::Canary>,
}

static STATS: Mutex<Stats> = Mutex::new(Stats {
    holds: 0,
    fd: None,
    opened: None,
    last_close: None,
    measured: Duration::ZERO,
    generation: 0,
    cycling: false,
    counted_between: false,
    canary: None,
});

impl Stats {
    fn open_window(&mut self) -> std::io::Result<()> {
        if self.fd.is_none() {
            // Asked while ours is closed: is someone else keeping the statistics on?
            self.counted_between = sysctl_keeps_stats_on()
                || self
                    .canary
                    .as_ref()
                    .is_some_and(|c| c.counts().unwrap_or(false));
            self.fd = Some(sys::enable_run_time_stats()?);
            let now = Instant::now();
            self.opened = Some(now);
            self.last_close.get_or_insert(now);
        }
        Ok(())
    }

    /// Closes the window and adds it to the measured time: the whole time since the previous
    /// window closed when the statistics were on between the two (another holder).
    fn close_window(&mut self) {
        let Some(opened) = self.opened.take() else {
            return;
        };
        self.fd = None; // closing the fd disables the statistics
        let now = Instant::now();
        let since = match self.last_close {
            Some(last) if self.counted_between => last,
            _ => opened,
        };
        self.measured += now - since;
        self.last_close = Some(now);
    }
}

fn sysctl_keeps_stats_on() -> bool {
    std::fs::read_to_string(STATS_SYSCTL).is_ok_and(|v| v.trim() == "1")
}

/// How long the statistics have been on (by heat-actix's windows) over the process's life,
/// the open window included: the difference between two readings is what a tick measured.
pub fn measured_time() -> Duration {
    let stats = STATS.lock();
    stats.measured + stats.opened.map_or(Duration::ZERO, |t| t.elapsed())
}

/// Opens and closes the windows until the holds of `generation` are gone.
fn cycle(generation: u64) {
    let current = |stats: &Stats| stats.generation == generation && stats.holds > 0;
    loop {
        std::thread::sleep(STATS_WINDOW);
        {
            let mut stats = STATS.lock();
            if !current(&stats) {
                return;
            }
            stats.close_window();
        }
        std::thread::sleep(STATS_PERIOD.saturating_sub(STATS_WINDOW));
        let mut stats = STATS.lock();
        if !current(&stats) {
            return;
        }
        if let Err(e) = stats.open_window() {
            tracing::warn!(error = %e, "BPF run-time statistics could not be switched on for a window.");
        }
    }
}

/// A hold on the kernel's BPF run-time statistics: while one lives they are on for a
/// [`STATS_WINDOW`] of every [`STATS_PERIOD`]; dropping the last one switches them off.
#[derive(Debug)]
pub struct StatsEnabled(());

impl StatsEnabled {
    /// Starts the windows (if no program of ours already did), the first one now.
    pub fn acquire() -> std::io::Result<StatsEnabled> {
        let mut stats = STATS.lock();
        if !stats.cycling {
            if stats.canary.is_none() {
                stats.canary = sys::Canary::load()
                    .inspect_err(|e| {
                        tracing::warn!(error = %e, "No canary BPF program: another holder of the BPF run-time statistics would go unseen.");
                    })
                    .ok();
            }
            stats.open_window()?;
            let generation = stats.generation;
            std::thread::Builder::new()
                .name("bpf-stats".into())
                .spawn(move || cycle(generation))?;
            stats.cycling = true;
        }
        stats.holds += 1;
        Ok(StatsEnabled(()))
    }
}

impl Drop for StatsEnabled {
    fn drop(&mut self) {
        let mut stats = STATS.lock();
        stats.holds = stats.holds.saturating_sub(1);
        if stats.holds == 0 {
            stats.close_window();
            stats.last_close = None;
            // Nothing of ours stays loaded while nothing is measured.
            stats.canary = None;
            stats.generation += 1;
            stats.cycling = false;
        }
    }
}

/// How many holds on the statistics exist and whether windows are being opened (tests).
#[cfg(test)]
fn holds() -> (usize, bool) {
    let stats = STATS.lock();
    (stats.holds, stats.cycling)
}

/// Whether the statistics' fd is open now: a window is (tests).
#[cfg(test)]
fn window_open() -> bool {
    STATS.lock().fd.is_some()
}

/// The BPF program an fd names and its counts, from its `/proc/PID/fdinfo/FD` text (`None`: not
/// a program). The kernel prints `run_time_ns` and `run_cnt` there for every program fd.
pub fn prog_in_fdinfo(fdinfo: &str) -> Option<(u32, RunStats)> {
    let field = |name: &str| {
        fdinfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let id = u32::try_from(field("prog_id")?).ok()?;
    Some((
        id,
        RunStats {
            run_cnt: field("run_cnt").unwrap_or(0),
            run_time_ns: field("run_time_ns").unwrap_or(0),
        },
    ))
}

/// The counts of every BPF program process `pid` holds open, each program once (a bpftrace
/// child's): read from its fdinfo, so that heat-actix holds no fd that would keep a dead
/// tracer's programs loaded. `None` when it holds none (or is gone).
pub fn stats_of_process(pid: u32) -> Option<RunStats> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fdinfo")).ok()?;
    let mut programs: Vec<(u32, RunStats)> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_to_string(fd.path()).ok())
        .filter_map(|text| prog_in_fdinfo(&text))
        .collect();
    programs.sort_unstable_by_key(|&(id, _)| id);
    programs.dedup_by_key(|&mut (id, _)| id);
    if programs.is_empty() {
        return None;
    }
    Some(
        programs
            .into_iter()
            .fold(RunStats::default(), |sum, (_, s)| sum.plus(s)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(run_cnt: u64, run_time_ns: u64) -> RunStats {
        RunStats {
            run_cnt,
            run_time_ns,
        }
    }

    /// A reading of `stats` after the statistics were on for `measured` in all.
    fn at(stats: RunStats, measured: Duration) -> Reading {
        Reading { stats, measured }
    }

    /// Two readings `interval` apart with the statistics on all the time between them.
    fn whole(before: RunStats, now: RunStats, interval: Duration) -> Sample {
        Sample::between(
            at(before, Duration::from_secs(5)),
            at(now, Duration::from_secs(5) + interval),
            interval,
        )
    }

    #[test]
    fn a_tick_costs_its_deltas_over_its_interval() {
        // 1.2 M runs of 190 ns each in one second: 22.8% of a CPU.
        let sample = whole(
            stats(1_000, 50_000),
            stats(1_201_000, 50_000 + 228_000_000),
            Duration::from_secs(1),
        );
        assert_eq!(
            sample,
            Sample {
                events: 1_200_000,
                run_time_ns: 228_000_000,
                interval_ns: 1_000_000_000,
                measured_ns: 1_000_000_000,
            }
        );
        assert_eq!(
            sample.cost(),
            Some(Cost {
                events_per_s: 1_200_000.0,
                ns_per_event: 190.0,
                cpu_share: 0.228,
                sampled: Some(1.0),
            })
        );
    }

    #[test]
    fn a_sampled_tick_is_scaled_to_the_whole_tick() {
        // The statistics were on 150 ms of the second: 180 000 runs of 190 ns counted.
        let sample = Sample::between(
            at(stats(1_000, 50_000), Duration::from_millis(700)),
            at(
                stats(181_000, 50_000 + 34_200_000),
                Duration::from_millis(850),
            ),
            Duration::from_secs(1),
        );
        assert_eq!(
            (sample.events, sample.run_time_ns, sample.measured_ns),
            (1_200_000, 228_000_000, 150_000_000)
        );
        assert_eq!(
            sample.cost(),
            Some(Cost {
                events_per_s: 1_200_000.0,
                ns_per_event: 190.0,
                cpu_share: 0.228,
                sampled: Some(0.15),
            })
        );
    }

    #[test]
    fn a_tick_the_statistics_missed_has_no_cost_and_no_say_in_the_budget() {
        let missed = Sample::between(
            at(stats(10, 10), Duration::from_secs(2)),
            at(stats(10, 10), Duration::from_secs(2)),
            Duration::from_millis(100),
        );
        assert_eq!(missed.cost(), None);
        let mut budget = Budget::new(10);
        assert_eq!(budget.observe(tick(900_000_000)), Ok(()));
        assert_eq!(budget.observe(missed), Ok(()));
        assert_eq!(budget.observe(missed), Ok(()));
        assert_eq!(budget.observe(tick(0)), Ok(()));
        // The missed ticks were left out: the busy one is still in the window, (0.9 + 0 + 0) /
        // 3 = 30%, over 10%.
        assert!(budget.observe(tick(0)).is_err());
    }

    #[test]
    fn rates_are_per_second_whatever_the_tick() {
        let cost = whole(stats(0, 0), stats(500, 40_000), Duration::from_millis(250))
            .cost()
            .unwrap();
        assert_eq!(cost.events_per_s, 2_000.0);
        assert_eq!(cost.ns_per_event, 80.0);
        assert_eq!(cost.cpu_share, 0.00016);
    }

    #[test]
    fn an_idle_tick_costs_nothing_and_a_zero_tick_has_no_cost() {
        let idle = whole(stats(7, 9), stats(7, 9), Duration::from_secs(1));
        assert_eq!(
            idle.cost(),
            Some(Cost {
                events_per_s: 0.0,
                ns_per_event: 0.0,
                cpu_share: 0.0,
                sampled: Some(1.0),
            })
        );
        assert_eq!(whole(stats(0, 0), stats(5, 5), Duration::ZERO).cost(), None);
    }

    #[test]
    fn counts_that_go_backwards_count_as_nothing() {
        let sample = whole(stats(100, 100), stats(10, 10), Duration::from_secs(1));
        assert_eq!((sample.events, sample.run_time_ns), (0, 0));
    }

    #[test]
    fn several_cpus_can_pass_one_whole_cpu() {
        let cost = whole(
            stats(0, 0),
            stats(10, 2_500_000_000),
            Duration::from_secs(1),
        )
        .cost()
        .unwrap();
        assert_eq!(cost.cpu_share, 2.5);
    }

    fn tick(run_time_ns: u64) -> Sample {
        Sample {
            events: 1,
            run_time_ns,
            interval_ns: 1_000_000_000,
            measured_ns: 150_000_000,
        }
    }

    #[test]
    fn the_budget_is_averaged_over_its_ticks() {
        let mut budget = Budget::new(10);
        // One tick at 50% is a burst, not a verdict.
        assert_eq!(budget.observe(tick(500_000_000)), Ok(()));
        assert_eq!(budget.observe(tick(0)), Ok(()));
        // (0.5 + 0 + 0.1) / 3 = 20%: over 10%.
        let over = budget.observe(tick(100_000_000)).unwrap_err();
        assert_eq!(over.limit_percent, 10);
        assert!((over.measured_percent - 20.0).abs() < 1e-9, "{over:?}");
        let text = over.to_string();
        assert!(text.contains("20.00%") && text.contains("10%"), "{text}");
    }

    #[test]
    fn exactly_the_budget_is_within_it_and_old_ticks_leave_the_window() {
        let mut budget = Budget::new(10);
        for _ in 0..BUDGET_TICKS {
            assert_eq!(budget.observe(tick(100_000_000)), Ok(()));
        }
        let mut budget = Budget::new(10);
        assert_eq!(budget.observe(tick(900_000_000)), Ok(()));
        assert_eq!(budget.observe(tick(0)), Ok(()));
        // (0.9 + 0 + 0) / 3 = 30%.
        assert!(budget.observe(tick(0)).is_err());
        // The busy tick has left the window: idle ticks are within budget.
        assert_eq!(budget.observe(tick(0)), Ok(()));
    }

    #[test]
    fn program_counts_are_read_from_fdinfo() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t5\n\
                    prog_jited:\t1\nprog_tag:\tb6b0f1e4c3f0e0a6\nmemlock:\t4096\nprog_id:\t812\n\
                    run_time_ns:\t0\nrun_cnt:\t0\n";
        assert_eq!(prog_in_fdinfo(prog), Some((812, stats(0, 0))));
        let busy = prog.replace(
            "run_time_ns:\t0\nrun_cnt:\t0",
            "run_time_ns:\t190000\nrun_cnt:\t1000",
        );
        assert_eq!(prog_in_fdinfo(&busy), Some((812, stats(1000, 190_000))));
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t5\nmap_id:\t31\n";
        assert_eq!(prog_in_fdinfo(map), None);
    }

    /// Waits (a bounded number of short sleeps) until the window is as `open`; whether it was.
    fn wait_for_window(open: bool) -> bool {
        // Patience, not a threshold: a few hundred periods.
        (0..30_000).any(|_| {
            std::thread::sleep(Duration::from_millis(1));
            window_open() == open
        })
    }

    #[test]
    fn statistics_stay_enabled_while_any_hold_lives_and_are_off_between_windows() {
        // Without CAP_SYS_ADMIN the kernel refuses; the counting is what is tested here.
        let Ok(first) = StatsEnabled::acquire() else {
            return;
        };
        let began = Instant::now();
        let measured_before = measured_time();
        let second = StatsEnabled::acquire().unwrap();
        assert_eq!(holds(), (2, true));
        // Duty cycling: the fd is closed between windows, and opened again for the next.
        assert!(wait_for_window(false), "the statistics stayed on");
        assert!(wait_for_window(true), "no window opened again");
        assert!(wait_for_window(false), "the second window never closed");
        // The time they were on is less than the time that passed.
        assert!(measured_time() - measured_before < began.elapsed());
        drop(first);
        assert_eq!(holds(), (1, true));
        // The other hold keeps them cycling.
        assert!(wait_for_window(true), "one hold left, and no window opened");
        drop(second);
        assert_eq!(holds(), (0, false));
        assert!(!window_open(), "the last hold closes the window at once");
        assert!(STATS.lock().canary.is_none(), "and unloads the canary");
    }

    #[test]
    fn the_canary_sees_the_statistics_on() {
        let Ok(canary) = sys::Canary::load() else {
            return; // without CAP_BPF nothing loads
        };
        let held = sys::enable_run_time_stats().unwrap();
        assert!(
            canary.counts().unwrap(),
            "a run while they are on is counted"
        );
        drop(held);
        // Off again, unless another process on this machine holds them (not asserted).
    }
}
