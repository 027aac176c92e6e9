//! The store against its promises: what is appended reads back tick by tick and count by
//! count; downsampling and roll-ups keep every count; retention drops oldest first and keeps
//! pinned ranges; a killed writer, a full disk and a damaged file lose nothing that was
//! acknowledged and never yield wrong counts.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use heat_actix::aggregation::{
    AggKind, Aggregation, AggregationInfo, Bucket, KeyPart, Layout, Series, Snapshot, Value,
};
use heat_actix::store::{Retention, Slices, Store, StoreError, StoredTick};

/// A day's first tick, so times read like real ones.
const T0: u64 = 1_763_788_800_000;
/// Tick interval of the recorded sequences.
const TICK_MS: u64 = 1000;

/// A fresh directory for one test, removed by [`Dir`]'s drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("heat-store-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
    fn file(&self) -> PathBuf {
        self.0.join("store.sqlite")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: a seeded generator, so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn info(name: &str, kind: AggKind, layout: Option<Layout>) -> AggregationInfo {
    AggregationInfo {
        name: name.into(),
        kind,
        layout,
    }
}

/// One aggregation of every kind, linear ones with and without a layout.
fn infos() -> Vec<AggregationInfo> {
    vec![
        info("@log2", AggKind::Hist, None),
        info(
            "@lin",
            AggKind::Lhist,
            Some(Layout {
                min: 0,
                max: 64,
                step: 4,
            }),
        ),
        info("@llq", AggKind::Llquantize, None),
        info("@n", AggKind::Count, None),
        info("@sum", AggKind::Sum, None),
        info("@min", AggKind::Min, None),
        info("@max", AggKind::Max, None),
        info("@avg", AggKind::Avg, None),
        info("@stats", AggKind::Stats, None),
        info("@sd", AggKind::Stddev, None),
    ]
}

fn key(rng: &mut Rng) -> Vec<KeyPart> {
    match rng.below(3) {
        0 => vec![KeyPart::Str(format!("k{}", rng.below(12)))],
        1 => vec![
            KeyPart::Int(rng.below(5) as i64 - 2),
            KeyPart::Str("x".into()),
        ],
        _ => vec![],
    }
}

/// A random snapshot of [`infos`]: every kind, open buckets at both ends, text now and then.
fn snapshot(rng: &mut Rng) -> Snapshot {
    let infos = infos();
    let mut s = Snapshot::empty(&infos);
    for agg in &mut s.aggregations {
        let mut keys: Vec<Vec<KeyPart>> = (0..rng.below(5)).map(|_| key(rng)).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let value = match agg.kind {
                AggKind::Hist => {
                    let mut b = vec![];
                    for _ in 0..1 + rng.below(6) {
                        let i = rng.below(34);
                        let (lo, hi) = match i {
                            0 => (None, Some(-1)),
                            1 => (Some(0), Some(0)),
                            33 => (Some(1 << 31), None),
                            k => (Some(1i64 << (k - 2)), Some((1i64 << (k - 1)) - 1)),
                        };
                        b.push(Bucket {
                            lo,
                            hi,
                            count: 1 + rng.below(1000),
                        });
                    }
                    b.sort_by_key(|b| (b.lo, b.hi));
                    b.dedup_by_key(|b| (b.lo, b.hi));
                    Value::Buckets(b)
                }
                AggKind::Lhist => {
                    let mut b = vec![];
                    for _ in 0..1 + rng.below(6) {
                        let (lo, hi) = match rng.below(18) {
                            0 => (None, Some(-1)),
                            17 => (Some(64), None),
                            k => (Some((k as i64 - 1) * 4), Some((k as i64 - 1) * 4 + 3)),
                        };
                        b.push(Bucket {
                            lo,
                            hi,
                            count: 1 + rng.below(1 << 40),
                        });
                    }
                    b.sort_by_key(|b| (b.lo, b.hi));
                    b.dedup_by_key(|b| (b.lo, b.hi));
                    Value::Buckets(b)
                }
                AggKind::Llquantize => {
                    let mut b = vec![];
                    for _ in 0..1 + rng.below(4) {
                        let lo = rng.below(1000) as i64 * 10 - 5000;
                        b.push(Bucket {
                            lo: Some(lo),
                            hi: if rng.below(4) == 0 {
                                None
                            } else {
                                Some(lo + 9)
                            },
                            count: 1 + rng.below(50),
                        });
                    }
                    b.sort_by_key(|b| (b.lo, b.hi));
                    b.dedup_by_key(|b| (b.lo, b.hi));
                    Value::Buckets(b)
                }
                AggKind::Stats => {
                    let count = 1 + rng.below(100);
                    let total = rng.below(1 << 30) as i64 - (1 << 29);
                    Value::Stats {
                        count,
                        total,
                        average: total / count as i64,
                    }
                }
                AggKind::Stddev => Value::Deviation {
                    count: 4,
                    total: 40,
                    average: 10,
                    stddev: rng.below(9),
                },
                // Within ±2^40, so a day of sums cannot overflow an i64.
                _ => Value::Scalar(((rng.next() >> 23) as i64 - (1 << 40)) >> rng.below(41)),
            };
            agg.series.push(Series {
                key,
                value,
                sum: None,
            });
        }
        agg.folded = rng.below(3) as usize;
    }
    if rng.below(5) == 0 {
        s.output.push(format!("printed {}", rng.next()));
    }
    if rng.below(9) == 0 {
        s.drops.push("3 dynamic variable drops".into());
        s.errors.push("error on enabled probe".into());
    }
    s
}

/// The tick `seq` of a recording seeded with `seed`: the same every time it is asked for.
fn tick(seed: u64, run: u64, seq: u64) -> StoredTick {
    let mut rng = Rng(seed ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    StoredTick {
        run,
        seq,
        ts_ms: T0 + seq * TICK_MS,
        interval_ms: TICK_MS,
        snapshot: snapshot(&mut rng),
    }
}

/// A snapshot's exactly-additive content, by (aggregation, key): histogram buckets with their
/// counts, stats counts and totals, count and sum values, min and max extremes. Order-free.
type Counts = BTreeMap<(String, String), BTreeMap<(Option<i64>, Option<i64>), i128>>;

fn counts(s: &Snapshot) -> Counts {
    let mut out = Counts::new();
    for agg in &s.aggregations {
        for series in &agg.series {
            let k = (
                agg.name.clone(),
                serde_json::to_string(&series.key).unwrap(),
            );
            let entry = out.entry(k).or_default();
            let mut add = |lo, hi, v: i128, kind: AggKind| {
                let slot = entry.entry((lo, hi)).or_insert(match kind {
                    AggKind::Min => i128::MAX,
                    AggKind::Max => i128::MIN,
                    _ => 0,
                });
                *slot = match kind {
                    AggKind::Min => (*slot).min(v),
                    AggKind::Max => (*slot).max(v),
                    _ => *slot + v,
                };
            };
            match (&series.value, agg.kind) {
                (Value::Buckets(b), kind) => {
                    for b in b {
                        add(b.lo, b.hi, b.count as i128, kind)
                    }
                }
                (Value::Stats { count, total, .. }, kind) => {
                    add(Some(0), None, *count as i128, kind);
                    add(Some(1), None, *total as i128, kind);
                }
                (
                    Value::Scalar(v),
                    kind @ (AggKind::Count | AggKind::Sum | AggKind::Min | AggKind::Max),
                ) => add(None, None, *v as i128, kind),
                // avg and stddev do not add exactly (documented); their presence is checked.
                _ => add(None, None, 0, AggKind::Count),
            }
        }
    }
    out
}

/// The counts of many snapshots together, as one sum would hold them.
fn total<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Counts {
    let mut sum = Snapshot::default();
    for s in snapshots {
        sum.absorb(s.clone());
    }
    counts(&sum)
}

fn record(
    store: &mut Store,
    watch: &str,
    seed: u64,
    seqs: impl Iterator<Item = u64>,
) -> Vec<StoredTick> {
    let run = store.begin_run(watch, &infos(), T0).unwrap();
    seqs.map(|seq| {
        let t = tick(seed, run, seq);
        store.append(watch, &t).unwrap();
        t
    })
    .collect()
}

#[test]
fn a_recorded_sequence_reads_back_tick_by_tick() {
    let dir = Dir::new("roundtrip");
    let mut store = Store::open(&dir.file()).unwrap();
    let first = record(&mut store, "w", 7, 1..=300);
    // A restart: a new run, new aggregation found later, its ticks after a gap.
    let second = record(&mut store, "w", 8, 320..=400);
    assert_eq!(second[0].run, 2);
    drop(store);
    let store = Store::open(&dir.file()).unwrap();
    let read = store.read("w", 0, u64::MAX / 2, None).unwrap();
    let expected: Vec<StoredTick> = first.into_iter().chain(second).collect();
    assert_eq!(read.len(), expected.len());
    for (got, want) in read.iter().zip(&expected) {
        assert_eq!(got, want, "tick {}", want.seq);
    }
    assert_eq!(store.infos("w", 1).unwrap(), infos());
    let summary = &store.watches().unwrap()[0];
    assert_eq!((summary.ticks, summary.runs), (381, 2));
    assert_eq!(summary.last_ms, Some(T0 + 400 * TICK_MS));
    assert!(matches!(
        store.read("nope", 0, 1, None),
        Err(StoreError::UnknownWatch(_))
    ));
}

#[test]
fn downsampled_columns_are_exact_sums_and_gaps_stay_gaps() {
    let dir = Dir::new("columns");
    let mut store = Store::open(&dir.file()).unwrap();
    // Two stretches with a 100 s gap between them.
    let ticks: Vec<StoredTick> = record(&mut store, "w", 3, (1..=120).chain(221..=300));
    for (from, to, columns) in [
        (T0, T0 + 301 * TICK_MS, 30usize),
        (T0 + 5_500, T0 + 250_000, 7),
        (T0, T0 + 400 * TICK_MS, 1),
    ] {
        let read = store.read("w", from, to, Some(columns)).unwrap();
        assert!(
            read.len() <= columns,
            "{} columns for {columns}",
            read.len()
        );
        let slices = Slices::new(from, to, columns, 0);
        let mut seen = 0;
        for column in &read {
            let slice = slices.of(column.ts_ms - column.interval_ms + TICK_MS);
            let inside: Vec<&StoredTick> = ticks
                .iter()
                .filter(|t| t.ts_ms >= from && t.ts_ms < to && slices.of(t.ts_ms) == slice)
                .collect();
            assert!(!inside.is_empty(), "a column for a slice with no data");
            seen += inside.len();
            assert_eq!(
                counts(&column.snapshot),
                total(inside.iter().map(|t| &t.snapshot))
            );
            assert_eq!(column.ts_ms, inside.last().unwrap().ts_ms);
            assert_eq!(column.seq, inside[0].seq);
        }
        assert_eq!(
            seen,
            ticks
                .iter()
                .filter(|t| t.ts_ms >= from && t.ts_ms < to)
                .count()
        );
    }
    // A slice inside the gap has no column.
    let read = store.read("w", T0, T0 + 301 * TICK_MS, Some(301)).unwrap();
    assert_eq!(read.len(), 200);
}

#[test]
fn rollups_keep_every_count_and_coarse_reads_use_them() {
    let dir = Dir::new("rollup");
    let mut store = Store::open(&dir.file()).unwrap();
    let ticks = record(&mut store, "w", 11, 1..=1200);
    let everything = (0, u64::MAX / 2);
    let before = total(ticks.iter().map(|t| &t.snapshot));
    let retention = Retention {
        full_resolution: Duration::from_secs(300),
        rollup: Duration::from_secs(60),
        ..Retention::default()
    };
    let now = T0 + 1201 * TICK_MS;
    let report = store.enforce("w", &retention, now).unwrap();
    // Twenty closed minutes; the twenty-first is still open at `now`.
    assert_eq!(report.rollups_written, 20, "{report:?}");
    assert!(report.ticks_rolled >= 890, "{report:?}");
    let rows = store.read("w", everything.0, everything.1, None).unwrap();
    assert!(rows.len() < 330, "{} rows", rows.len());
    assert_eq!(total(rows.iter().map(|t| &t.snapshot)), before);
    // Ten columns over 20 minutes: 3-minute slices made of roll-ups, each the exact sum.
    let (from, to) = (T0, T0 + 1201 * TICK_MS);
    let columns = store.read("w", from, to, Some(10)).unwrap();
    let slices = Slices::new(from, to, 10, 60_000);
    assert_eq!(slices.width, 180_000);
    assert_eq!(columns.len(), 7);
    for column in &columns {
        let slice = slices.of(column.ts_ms);
        let inside: Vec<&StoredTick> = ticks
            .iter()
            .filter(|t| slices.of(t.ts_ms) == slice)
            .collect();
        assert_eq!(
            counts(&column.snapshot),
            total(inside.iter().map(|t| &t.snapshot))
        );
        assert_eq!(column.ts_ms, inside.last().unwrap().ts_ms);
        assert_eq!(column.interval_ms, inside.len() as u64 * TICK_MS);
    }
    // The recent five minutes are still there one by one.
    let recent = store.read("w", now - 300_000, now, None).unwrap();
    assert!(recent.len() >= 299 && recent.iter().all(|t| t.interval_ms == TICK_MS));
    // Enforcing again changes nothing.
    let again = store.enforce("w", &retention, now).unwrap();
    assert_eq!(
        (
            again.rollups_written,
            again.ticks_rolled,
            again.rows_dropped
        ),
        (0, 0, 0)
    );
}

#[test]
fn a_small_max_bytes_drops_oldest_first_and_keeps_pinned_ranges() {
    let dir = Dir::new("retention");
    let mut store = Store::open(&dir.file()).unwrap();
    record(&mut store, "w", 5, 1..=600);
    record(&mut store, "other", 6, 1..=50);
    let other_bytes = store.bytes("other").unwrap();
    let pinned = (T0 + 100 * TICK_MS, T0 + 130 * TICK_MS);
    store
        .pin("w", pinned.0, pinned.1, T0 + 10_000_000, "p99 over 10ms")
        .unwrap();
    let full = store.bytes("w").unwrap();
    let retention = Retention {
        max_bytes: full / 4,
        ..Retention::default()
    };
    let report = store.enforce("w", &retention, T0 + 601 * TICK_MS).unwrap();
    assert!(report.bytes <= full / 4, "{report:?} of {full}");
    assert!(report.rows_pinned >= 30, "{report:?}");
    let ticks = store.read("w", 0, u64::MAX / 2, None).unwrap();
    let seqs: Vec<u64> = ticks.iter().map(|t| t.seq).collect();
    // The pinned range widened to whole roll-up minutes (T0 is on a minute), then the newest
    // ticks, contiguous to the end.
    let kept_pinned: Vec<u64> = seqs.iter().copied().filter(|s| *s <= 200).collect();
    assert_eq!(kept_pinned, (60..=179).collect::<Vec<_>>());
    let newest: Vec<u64> = seqs.iter().copied().filter(|s| *s > 200).collect();
    assert_eq!(*newest.last().unwrap(), 600);
    assert_eq!(newest.len() as u64, 600 - newest[0] + 1);
    for t in &ticks {
        assert_eq!(t, &tick(5, 1, t.seq));
    }
    assert_eq!(
        store.bytes("other").unwrap(),
        other_bytes,
        "another watch is untouched"
    );
    let marks = store.marks("w", T0, T0 + 1_000_000).unwrap();
    assert_eq!(marks.len(), 1);
    assert_eq!(marks[0].label, "p99 over 10ms");
    // Past the pin's own limit, the formerly pinned range is the oldest and goes first.
    let tighter = Retention {
        max_bytes: report.bytes - 1,
        ..retention
    };
    store.enforce("w", &tighter, T0 + 10_000_001).unwrap();
    let after = store.read("w", 0, u64::MAX / 2, None).unwrap();
    // Tick 60 went; the rest of its minute reads as the minute's roll-up.
    assert!(
        !after
            .iter()
            .any(|t| t.seq == 60 && t.interval_ms == TICK_MS),
        "the expired pin's oldest tick went first"
    );
    assert_eq!((after[0].seq, after[0].interval_ms), (60, 60 * TICK_MS));
    assert_eq!(after.last().unwrap().seq, 600);
}

/// Environment variable naming the store file the killed writer appends to.
const CHILD_STORE: &str = "HEAT_STORE_KILL_CHILD";
/// Ticks the parent waits to see acknowledged before it kills the writer.
const ACKED_BEFORE_KILL: u64 = 150;

/// The writer the kill test spawns (this test binary, asked for this test alone): appends
/// forever, printing each seq once its append returned.
#[test]
#[ignore = "run by a_killed_writer_loses_nothing_acknowledged as its child"]
fn killed_writer_child() {
    let path = PathBuf::from(std::env::var(CHILD_STORE).expect("run by the kill test"));
    let mut store = Store::open(&path).unwrap();
    let run = store.begin_run("w", &infos(), T0).unwrap();
    let mut out = std::io::stdout().lock();
    for seq in 1.. {
        store.append("w", &tick(21, run, seq)).unwrap();
        writeln!(out, "acked {seq}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn a_killed_writer_loses_nothing_acknowledged() {
    let dir = Dir::new("kill");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "killed_writer_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_STORE, dir.file())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked = 0;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while acked < ACKED_BEFORE_KILL {
        let line = lines.next().expect("the writer runs").unwrap();
        if let Some(seq) = line.strip_prefix("acked ") {
            acked = seq.parse().unwrap();
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let store = Store::open(&dir.file()).unwrap();
    let ticks = store.read("w", 0, u64::MAX / 2, None).unwrap();
    assert!(
        ticks.len() as u64 >= acked,
        "{} of {acked} acknowledged ticks",
        ticks.len()
    );
    for (i, t) in ticks.iter().enumerate() {
        assert_eq!(t, &tick(21, 1, i as u64 + 1), "tick {}", i + 1);
    }
    assert_integrity(&dir.file());
}

fn assert_integrity(path: &Path) {
    let conn = rusqlite_check(path);
    assert_eq!(conn, "ok");
}

/// `PRAGMA integrity_check` through a second connection, as `sqlite3` would run it.
fn rusqlite_check(path: &Path) -> String {
    let out = Command::new("sqlite3")
        .arg(path)
        .arg("PRAGMA integrity_check")
        .output();
    match out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        // Without the sqlite3 CLI, the store's own open runs quick_check.
        _ => Store::open(path)
            .map(|_| "ok".to_owned())
            .unwrap_or_else(|e| e.to_string()),
    }
}

/// Size of the tmpfs the disk-full test fills.
const TINY_DISK: &str = "size=2m";

#[test]
fn a_full_disk_refuses_clearly_and_recording_resumes_when_space_returns() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "mounting a tmpfs needs root (CI runs as root)"
    );
    let dir = Dir::new("full");
    let mount = dir.0.join("disk");
    std::fs::create_dir_all(&mount).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", TINY_DISK, "tmpfs"])
        .arg(&mount)
        .status()
        .unwrap();
    assert!(status.success(), "mount tmpfs");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mount.clone());
    let path = mount.join("store.sqlite");
    let mut store = Store::open(&path).unwrap();
    let run = store.begin_run("w", &infos(), T0).unwrap();
    // Most of the disk goes to a filler file, so the store fills it quickly.
    let filler = mount.join("filler");
    std::fs::write(&filler, vec![0u8; 1_600_000]).unwrap();
    let mut acked = Vec::new();
    let mut refused = None;
    for seq in 1..100_000 {
        let t = tick(31, run, seq);
        match store.append("w", &t) {
            Ok(()) => acked.push(t),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the disk filled");
    assert!(matches!(refused, StoreError::Full { .. }), "{refused}");
    assert!(refused.to_string().contains("full"), "{refused}");
    // Reading what was acknowledged still works while the disk is full.
    assert_eq!(store.read("w", 0, u64::MAX / 2, None).unwrap(), acked);
    std::fs::remove_file(&filler).unwrap();
    let next = acked.len() as u64 + 1;
    for seq in next..next + 20 {
        let t = tick(31, run, seq);
        store.append("w", &t).unwrap();
        acked.push(t);
    }
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.read("w", 0, u64::MAX / 2, None).unwrap(), acked);
    assert_integrity(&path);
}

#[test]
fn a_damaged_file_is_named_and_never_read_as_wrong_counts() {
    let dir = Dir::new("damage");
    let mut store = Store::open(&dir.file()).unwrap();
    let ticks = record(&mut store, "w", 41, 1..=400);
    drop(store);
    let len = std::fs::metadata(dir.file()).unwrap().len();
    for (round, at) in [len / 2, len / 3, len * 3 / 4].into_iter().enumerate() {
        let damaged = dir.0.join(format!("damaged-{round}.sqlite"));
        std::fs::copy(dir.file(), &damaged).unwrap();
        let mut bytes = std::fs::read(&damaged).unwrap();
        for b in &mut bytes[at as usize..at as usize + 3000] {
            *b = 0xa5;
        }
        std::fs::write(&damaged, bytes).unwrap();
        let named = |e: &StoreError| {
            let text = e.to_string();
            assert!(matches!(e, StoreError::Damaged { .. }), "{text}");
            assert!(
                text.contains(&*damaged.to_string_lossy()) && text.contains("move it aside"),
                "{text}"
            );
        };
        match Store::open(&damaged) {
            Err(e) => named(&e),
            Ok(store) => match store.read("w", 0, u64::MAX / 2, None) {
                Err(e) => named(&e),
                Ok(read) => {
                    for t in &read {
                        assert_eq!(t, &ticks[t.seq as usize - 1], "a damaged tick was served");
                    }
                }
            },
        }
    }
}

#[test]
fn aggregations_found_later_are_stored_with_their_run() {
    let dir = Dir::new("later");
    let mut store = Store::open(&dir.file()).unwrap();
    let run = store.begin_run("w", &infos()[..1], T0).unwrap();
    let mut t = tick(1, run, 1);
    t.snapshot.aggregations.push(Aggregation {
        name: "@late".into(),
        kind: AggKind::Count,
        series: vec![Series {
            key: vec![],
            value: Value::Scalar(3),
            sum: None,
        }],
        folded: 0,
    });
    t.snapshot.aggregations.swap(0, 1);
    store.append("w", &t).unwrap();
    drop(store);
    let store = Store::open(&dir.file()).unwrap();
    assert_eq!(store.read("w", 0, u64::MAX / 2, None).unwrap(), vec![t]);
    assert_eq!(store.infos("w", run).unwrap().len(), infos().len() + 1);
}
