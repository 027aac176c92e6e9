//! The store's costs for one watch of the syscall-latency preset at 1 s ticks: stored bytes per
//! tick and per day, write cost per tick, roll-up cost, and the time to read 1 h and 24 h into
//! 600 columns, for the 50 keys × 8 buckets reference workload and the 300 × 33 reference frame
//! (benches/frame_pipeline.rs). Prints figures; no thresholds.
//!
//! `cargo bench --bench store` (HEAT_BENCH_HOURS=N records N hours instead of 24;
//! HEAT_BENCH_FRAME=50x8 or 300x33 runs only that frame).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use heat_actix::aggregation::{AggregationInfo, Bucket, KeyPart, Series, Snapshot};
use heat_actix::consumer::bpftrace::program::aggregation_maps;
use heat_actix::presets;
use heat_actix::store::{Retention, Store, StoredTick};

/// The first tick of the recorded day (on a minute).
const T0: u64 = 1_763_788_800_000;
/// One tick a second.
const TICK_MS: u64 = 1000;
/// Columns a page asks for.
const COLUMNS: usize = 600;
/// Hours recorded unless HEAT_BENCH_HOURS says otherwise.
const DEFAULT_HOURS: u64 = 24;
/// Reads timed per figure (the median is printed).
const READS: usize = 5;

/// xorshift64*, seeded: counts vary tick to tick as a real workload's do.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A tick of `keys` syscalls with `buckets` non-empty latency buckets each; counts vary.
fn snapshot(info: &AggregationInfo, keys: usize, buckets: usize, rng: &mut Rng) -> Snapshot {
    let layout = info.layout.expect("the preset's lhist has a layout");
    let levels = ((layout.max - layout.min) / layout.step) as usize;
    let mut s = Snapshot::empty(std::slice::from_ref(info));
    for key in 0..keys {
        let mut b: Vec<Bucket> = (0..buckets.min(levels))
            .map(|i| {
                let lo = layout.min + (i + key % 3) as i64 % levels as i64 * layout.step;
                Bucket {
                    lo: Some(lo),
                    hi: Some(lo + layout.step - 1),
                    count: 1 + rng.next() % 5000,
                }
            })
            .collect();
        if buckets > levels {
            b.push(Bucket {
                lo: Some(layout.min + levels as i64 * layout.step),
                hi: None,
                count: 1 + rng.next() % 11,
            });
        }
        s.aggregations[0].series.push(Series::histogram(
            vec![KeyPart::Str(format!("syscall_{key}"))],
            b,
        ));
    }
    s
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn run(label: &str, info: &AggregationInfo, keys: usize, buckets: usize, hours: u64) {
    let dir = std::env::temp_dir().join(format!("heat-store-bench-{}-{label}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path: PathBuf = dir.join("store.sqlite");
    let mut store = Store::open(&path).unwrap();
    let run = store
        .begin_run("w", std::slice::from_ref(info), T0)
        .unwrap();
    let mut rng = Rng(0x5eed);
    // Snapshots are made outside the timed appends; a pool keeps that cost off the figure.
    let pool: Vec<Snapshot> = (0..64)
        .map(|_| snapshot(info, keys, buckets, &mut rng))
        .collect();
    let ticks = hours * 3600;
    let mut writing = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    // No size limit: the figures are for a whole day kept.
    let retention = Retention {
        max_bytes: u64::MAX,
        ..Retention::default()
    };
    let mut rolling = Duration::ZERO;
    for seq in 1..=ticks {
        let tick = StoredTick {
            run,
            seq,
            ts_ms: T0 + seq * TICK_MS,
            interval_ms: TICK_MS,
            snapshot: pool[(seq as usize * 7 + (seq as usize >> 6)) % pool.len()].clone(),
        };
        let started = Instant::now();
        store.append("w", &tick).unwrap();
        let took = started.elapsed();
        writing += took;
        slowest = slowest.max(took);
        // As a recorder would: enforce retention once a minute of ticks.
        if seq % 60 == 0 {
            let started = Instant::now();
            store.enforce("w", &retention, T0 + seq * TICK_MS).unwrap();
            rolling += started.elapsed();
        }
    }
    let end = T0 + (ticks + 1) * TICK_MS;
    let summary = store.watches().unwrap().remove(0);
    let rollup_bytes = summary.bytes;
    drop(store);
    let file = std::fs::metadata(&path).unwrap().len()
        + std::fs::metadata(dir.join("store.sqlite-wal")).map_or(0, |m| m.len());
    let store = Store::open(&path).unwrap();
    let per_tick = rollup_bytes as f64 / ticks as f64;
    println!(
        "{label}: {ticks} ticks ({hours} h at 1 s), {} full-resolution ticks + {} one-minute roll-ups",
        summary.ticks, summary.rollups
    );
    println!(
        "  stored: {per_tick:.0} bytes/tick (blobs + row estimate, roll-ups included) = {:.1} MB/day; \
         file on disk {:.1} MB = {:.0} bytes/tick",
        per_tick * 86_400.0 / 1e6,
        file as f64 / 1e6,
        file as f64 / ticks as f64
    );
    println!(
        "  write: {:.0} µs/tick mean, slowest {:.1} ms; roll-up + retention once a minute: {:.1} ms mean",
        writing.as_secs_f64() * 1e6 / ticks as f64,
        slowest.as_secs_f64() * 1e3,
        rolling.as_secs_f64() * 1e3 / (ticks / 60).max(1) as f64
    );
    for range_hours in [1, 24] {
        if range_hours > hours {
            continue;
        }
        let from = end - range_hours * 3_600_000;
        let mut times = Vec::new();
        let mut columns = 0;
        for _ in 0..READS {
            let started = Instant::now();
            columns = store.read("w", from, end, Some(COLUMNS)).unwrap().len();
            times.push(started.elapsed());
        }
        println!(
            "  read {range_hours} h into {COLUMNS} columns: {:.1} ms (median of {READS}), {columns} columns",
            median(times).as_secs_f64() * 1e3
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this once without it.
    if !std::env::args().any(|a| a == "--bench") {
        println!("store bench: run with `cargo bench --bench store`");
        return;
    }
    let hours = std::env::var("HEAT_BENCH_HOURS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(DEFAULT_HOURS);
    let preset = presets::find("syscall-latency").unwrap();
    let info = aggregation_maps(preset.script).remove(0).info;
    let only = std::env::var("HEAT_BENCH_FRAME").ok();
    for (name, keys, buckets) in [("50x8", 50, 8), ("300x33", 300, 33)] {
        if only.as_deref().is_none_or(|o| o == name) {
            run(
                &format!("{keys} keys x {buckets} buckets"),
                &info,
                keys,
                buckets,
                hours,
            );
        }
    }
}
