//! Where recorded data is stored: every tick of a watch (a typed [`Snapshot`] with its `seq`,
//! `ts_ms`, `interval_ms` and run), its roll-ups, retention and pinned ranges, in one SQLite
//! file (see README "Recording: the store").
//!
//! The API is synchronous: it does file I/O and must run on a dedicated thread, never on an
//! async arbiter. One `Store` is the file's only writer.
//!
//! Layout: per watch a key dictionary (id ↔ key JSON) and per run the aggregations as
//! `started` announced them; each tick is a row whose blob is zstd over the sparse series
//! encoding compact frames use. Roll-ups are rows of the same shape that sum every tick of one
//! run in a `rollup`-wide window; reads of long ranges sum roll-ups instead of ticks.

mod codec;
mod schema;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{
    named_params, params, Connection, ErrorCode, OptionalExtension, TransactionBehavior,
};

use crate::aggregation::{AggregationInfo, Layout, Snapshot};
use codec::Keys;

/// Bytes a row costs beyond its blob (its columns and index entries), counted toward
/// `max_bytes` so that many tiny rows cannot exceed it unseen.
const ROW_OVERHEAD: u64 = 64;

/// The store's file inside the `[store] path` directory (with SQLite's `-wal` and `-shm`).
pub const FILE_NAME: &str = "heat-actix.sqlite";

/// Default full-resolution window: a day of ticks.
pub const DEFAULT_FULL_RESOLUTION: Duration = Duration::from_secs(24 * 3600);
/// Default roll-up width: one minute.
pub const DEFAULT_ROLLUP: Duration = Duration::from_secs(60);

/// Most rows one roll-up pass reads at once, so a long backlog is rolled in bounded memory.
const ROLLUP_CHUNK_WINDOWS: u64 = 60;

/// One tick of a watch as stored and read back; a column of a downsampled read has the same
/// shape (the sum of the ticks in its time slice).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTick {
    /// Which start of the watch's program produced it (see [`Store::begin_run`]).
    pub run: u64,
    pub seq: u64,
    /// The walk's wall clock (Unix ms): the end of the interval the tick covers.
    pub ts_ms: u64,
    pub interval_ms: u64,
    pub snapshot: Snapshot,
}

/// How long and how much a watch keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct Retention {
    /// Data older than this is dropped (pinned ranges excepted).
    pub max_age: Duration,
    /// Past this many stored bytes the oldest data is dropped (pinned ranges excepted).
    pub max_bytes: u64,
    /// Ticks younger than this are kept one by one; older ones only as roll-ups.
    pub full_resolution: Duration,
    /// Width of a roll-up row.
    pub rollup: Duration,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            max_age: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 1 << 30,
            full_resolution: DEFAULT_FULL_RESOLUTION,
            rollup: DEFAULT_ROLLUP,
        }
    }
}

/// What one [`Store::enforce`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Roll-up rows written.
    pub rollups_written: u64,
    /// Full-resolution ticks dropped because a roll-up holds them now.
    pub ticks_rolled: u64,
    /// Rows (ticks or roll-ups) dropped for `max_age` or `max_bytes`.
    pub rows_dropped: u64,
    /// Rows an active pin covers, kept whatever the limits.
    pub rows_pinned: u64,
    /// The watch's bytes afterwards.
    pub bytes: u64,
}

/// One recorded watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchSummary {
    pub name: String,
    /// Start of the oldest data kept (ts_ms - interval_ms of the oldest row).
    pub first_ms: Option<u64>,
    /// `ts_ms` of the newest row.
    pub last_ms: Option<u64>,
    /// Full-resolution ticks kept.
    pub ticks: u64,
    /// Roll-up rows kept.
    pub rollups: u64,
    pub bytes: u64,
    pub runs: u64,
}

/// A pinned range or trigger mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub from_ms: u64,
    pub to_ms: u64,
    /// Retention keeps the range until this time (Unix ms).
    pub until_ms: u64,
    pub label: String,
}

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the store file {path} is damaged ({detail}); stop heat-actix and move it aside \
         (`mv {path} {path}.damaged`, with its -wal and -shm files) to start a new store, or \
         inspect it with `sqlite3 {path} 'PRAGMA integrity_check'`"
    )]
    Damaged { path: PathBuf, detail: String },
    #[error("the disk holding the store {path} is full: nothing was written; free space and recording resumes")]
    Full { path: PathBuf },
    #[error("the store {path} cannot be written or opened: {detail}")]
    Unwritable { path: PathBuf, detail: String },
    #[error(
        "the store {path} has schema version {found}; this heat-actix reads version {supported}"
    )]
    Version {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("the store has no watch named {0:?}")]
    UnknownWatch(String),
    #[error("watch {watch:?} has no run {run} (call begin_run first)")]
    UnknownRun { watch: String, run: u64 },
    #[error("invalid retention: {0}")]
    Retention(&'static str),
    #[error("the store {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// What the store knows of one watch between calls.
#[derive(Debug)]
struct Watch {
    id: i64,
    keys: Keys,
    runs: HashMap<u64, Vec<AggregationInfo>>,
    /// Width of the roll-ups the last `enforce` wrote (0: none yet).
    rollup_ms: u64,
    /// Every window ending at or before this is rolled up.
    rolled_to_ms: u64,
}

/// A row of the ticks table.
#[derive(Debug)]
struct Row {
    level: i64,
    window_ms: u64,
    width_ms: u64,
    run: u64,
    seq: u64,
    ts_ms: u64,
    interval_ms: u64,
    /// Ticks the row sums (1 for a tick).
    span: u64,
    data: Vec<u8>,
}

impl Row {
    /// Where the row sits in time for slicing: its tick's time, or its window's start.
    fn at(&self) -> u64 {
        if self.level == 0 {
            self.ts_ms
        } else {
            self.window_ms
        }
    }
}

const ROW_COLUMNS: &str = "level, window_ms, width_ms, run, seq, ts_ms, interval_ms, span, data";

fn row(r: &rusqlite::Row) -> rusqlite::Result<Row> {
    Ok(Row {
        level: r.get(0)?,
        window_ms: r.get::<_, i64>(1)? as u64,
        width_ms: r.get::<_, i64>(2)? as u64,
        run: r.get::<_, i64>(3)? as u64,
        seq: r.get::<_, i64>(4)? as u64,
        ts_ms: r.get::<_, i64>(5)? as u64,
        interval_ms: r.get::<_, i64>(6)? as u64,
        span: r.get::<_, i64>(7)? as u64,
        data: r.get(8)?,
    })
}

/// SQLite stores signed 64-bit integers; times and counters beyond `i64::MAX` are clamped.
fn sql(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// The condition "this ticks row lies in a range pinned at `:now`" (`t` is the row, `:rollup`
/// the watch's roll-up width): its interval or its roll-up window meets the pinned range, so a
/// pin keeps whole windows and retention never splits a pinned window.
const PINNED: &str = "EXISTS (SELECT 1 FROM marks m WHERE m.watch = t.watch AND m.until_ms > :now \
     AND ((t.ts_ms >= m.from_ms AND t.ts_ms - t.interval_ms < m.to_ms) OR \
     (CASE WHEN t.level = 0 THEN t.ts_ms / :rollup * :rollup ELSE t.window_ms END < m.to_ms AND \
      CASE WHEN t.level = 0 THEN t.ts_ms / :rollup * :rollup + (:rollup) ELSE t.window_ms + t.width_ms END > m.from_ms)))";

/// The embedded store of recorded watches: one SQLite file.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    watches: RefCell<HashMap<String, Watch>>,
    compressor: zstd::bulk::Compressor<'static>,
    /// Inside [`Store::in_one_transaction`]: writes join its transaction.
    batch: bool,
}

/// Runs `write` in a transaction of its own, or inside the open batch's (which commits or
/// rolls back as a whole).
fn write<T>(
    conn: &mut Connection,
    batch: bool,
    write: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    if batch {
        return write(conn);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let value = write(&tx)?;
    tx.commit()?;
    Ok(value)
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating it and its directory if need be) the store file at `path`, checks it
    /// (`PRAGMA quick_check`) and refuses a damaged one with [`StoreError::Damaged`], which
    /// names the file and what to do.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let path = path.to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Unwritable {
                path: path.clone(),
                detail: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
        let fail = |e| classify(&path, e);
        let conn = Connection::open(&path).map_err(fail)?;
        conn.execute_batch(schema::PRAGMAS).map_err(fail)?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(fail)?;
        if check != "ok" {
            return Err(StoreError::Damaged {
                path,
                detail: format!("quick_check: {check}"),
            });
        }
        conn.execute_batch(schema::TABLES).map_err(fail)?;
        let found: Option<i64> = conn
            .query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(fail)?;
        match found {
            None => {
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES ('schema', ?1)",
                    [schema::SCHEMA_VERSION],
                )
                .map_err(fail)?;
            }
            Some(v) if v == schema::SCHEMA_VERSION => {}
            Some(schema::UPGRADES_FROM) => {
                conn.execute(
                    "UPDATE meta SET value = ?1 WHERE name = 'schema'",
                    [schema::SCHEMA_VERSION],
                )
                .map_err(fail)?;
                tracing::info!(
                    path = %path.display(),
                    from = schema::UPGRADES_FROM,
                    to = schema::SCHEMA_VERSION,
                    "Store schema upgraded"
                );
            }
            Some(found) => {
                return Err(StoreError::Version {
                    path,
                    found,
                    supported: schema::SCHEMA_VERSION,
                })
            }
        }
        Ok(Store {
            conn,
            path,
            watches: RefCell::new(HashMap::new()),
            compressor: codec::compressor(),
            batch: false,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records that the watch's program (re)started announcing `infos`; returns the new run's
    /// id (1 for a watch's first run), which its ticks carry.
    pub fn begin_run(
        &mut self,
        watch: &str,
        infos: &[AggregationInfo],
        started_ms: u64,
    ) -> Result<u64, StoreError> {
        let run = write(&mut self.conn, self.batch, |tx| {
            tx.execute("INSERT OR IGNORE INTO watches (name) VALUES (?1)", [watch])?;
            let id: i64 = tx.query_row("SELECT id FROM watches WHERE name = ?1", [watch], |r| {
                r.get(0)
            })?;
            let run: i64 = tx.query_row(
                "SELECT COALESCE(MAX(run), 0) + 1 FROM runs WHERE watch = ?1",
                [id],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO runs (watch, run, started_ms) VALUES (?1, ?2, ?3)",
                params![id, run, sql(started_ms)],
            )?;
            for (slot, info) in infos.iter().enumerate() {
                insert_aggregation(tx, id, run, slot, info)?;
            }
            Ok(run)
        })
        .map_err(|e| classify(&self.path, e))?;
        let run = run as u64;
        if let Some(w) = self.watches.get_mut().get_mut(watch) {
            w.runs.insert(run, infos.to_vec());
        }
        Ok(run)
    }

    /// Stores one tick in its own transaction: once this returns `Ok` the tick survives the
    /// process being killed. On an error nothing of the tick was written.
    pub fn append(&mut self, watch: &str, tick: &StoredTick) -> Result<(), StoreError> {
        self.load(watch)?;
        let path = self.path.clone();
        let fail = |e| classify(&path, e);
        let watches = self.watches.get_mut();
        let w = watches.get_mut(watch).expect("loaded above");
        let mut infos = w
            .runs
            .get(&tick.run)
            .ok_or_else(|| StoreError::UnknownRun {
                watch: watch.to_owned(),
                run: tick.run,
            })?
            .clone();
        // A DTrace walk can reveal aggregations `started` did not announce.
        let announced = infos.len();
        for (at, aggregation) in tick.snapshot.aggregations.iter().enumerate() {
            if codec::slot(&infos, at, aggregation).is_none() {
                infos.push(AggregationInfo {
                    name: aggregation.name.clone(),
                    kind: aggregation.kind,
                    layout: None,
                });
            }
        }
        let known_keys = w.keys.by_id.len();
        for key in w.keys.missing(&tick.snapshot) {
            w.keys.push(key);
        }
        let data = codec::encode(&tick.snapshot, &infos, &w.keys, &mut self.compressor);
        let written = write(&mut self.conn, self.batch, |tx| {
            for (id, key) in w.keys.by_id.iter().enumerate().skip(known_keys) {
                let text = codec::key_text(key);
                tx.prepare_cached(
                    "INSERT INTO keys (watch, id, key, checksum) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    w.id,
                    id as i64,
                    text,
                    codec::key_checksum(&text)
                ])?;
            }
            for (slot, info) in infos.iter().enumerate().skip(announced) {
                insert_aggregation(tx, w.id, tick.run as i64, slot, info)?;
            }
            tx.prepare_cached(
                "INSERT INTO ticks (watch, level, window_ms, width_ms, run, seq, ts_ms, \
                 interval_ms, span, bytes, data) VALUES (?1, 0, ?2, 0, ?3, ?4, ?2, ?5, 1, ?6, ?7)",
            )?
            .execute(params![
                w.id,
                sql(tick.ts_ms),
                sql(tick.run),
                sql(tick.seq),
                sql(tick.interval_ms),
                data.len() as i64,
                data
            ])?;
            let mut rolled_to = w.rolled_to_ms;
            if tick.ts_ms < w.rolled_to_ms && w.rollup_ms > 0 {
                // A tick older than what is rolled up (a clock step back): its window's
                // roll-ups are dropped and rolled again by the next enforce.
                let window = tick.ts_ms / w.rollup_ms * w.rollup_ms;
                tx.execute(
                    "DELETE FROM ticks WHERE watch = ?1 AND level = 1 AND window_ms + width_ms > ?2",
                    params![w.id, sql(window)],
                )?;
                tx.execute(
                    "UPDATE watches SET rolled_to_ms = ?2 WHERE id = ?1",
                    params![w.id, sql(window)],
                )?;
                rolled_to = window;
            }
            Ok(rolled_to)
        });
        match written {
            Ok(rolled_to) => {
                w.rolled_to_ms = rolled_to;
                if infos.len() > announced {
                    w.runs.insert(tick.run, infos);
                }
                Ok(())
            }
            Err(e) => {
                for key in w.keys.by_id.drain(known_keys..) {
                    w.keys.ids.remove(&key);
                }
                Err(fail(e))
            }
        }
    }

    /// Runs `f` as one transaction: every `begin_run` and `append` it makes is written together
    /// when it returns `Ok`, or not at all (`f`'s error, or the commit's, is returned). Appends
    /// inside are durable only at the end, so a batch is for bulk writes (an import), not ticks.
    pub fn in_one_transaction<T>(
        &mut self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| classify(&self.path, e))?;
        self.batch = true;
        let result = f(self).and_then(|value| {
            self.conn
                .execute_batch("COMMIT")
                .map(|()| value)
                .map_err(|e| classify(&self.path, e))
        });
        self.batch = false;
        if result.is_err() {
            // A failed COMMIT may have rolled back already; either way nothing is written.
            let _ = self.conn.execute_batch("ROLLBACK");
            // Keys, runs and roll-up marks learnt inside are gone: read them again when needed.
            self.watches.get_mut().clear();
        }
        result
    }

    /// Every recorded watch.
    pub fn watches(&self) -> Result<Vec<WatchSummary>, StoreError> {
        let fail = |e| classify(&self.path, e);
        let mut statement = self
            .conn
            .prepare(
                "SELECT w.name, w.id,
                    (SELECT MIN(ts_ms - interval_ms) FROM ticks t WHERE t.watch = w.id),
                    (SELECT MAX(ts_ms) FROM ticks t WHERE t.watch = w.id),
                    (SELECT COUNT(*) FROM ticks t WHERE t.watch = w.id AND level = 0),
                    (SELECT COUNT(*) FROM ticks t WHERE t.watch = w.id AND level = 1),
                    (SELECT COUNT(*) FROM runs r WHERE r.watch = w.id)
                 FROM watches w ORDER BY w.name",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(fail)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?;
        rows.into_iter()
            .map(|(name, id, first, last, ticks, rollups, runs)| {
                Ok(WatchSummary {
                    bytes: self.bytes_of(id)?,
                    name,
                    first_ms: first.map(|v| v.max(0) as u64),
                    last_ms: last.map(|v| v as u64),
                    ticks: ticks as u64,
                    rollups: rollups as u64,
                    runs: runs as u64,
                })
            })
            .collect()
    }

    /// The aggregations of a run: what `started` announced, then any met later.
    pub fn infos(&self, watch: &str, run: u64) -> Result<Vec<AggregationInfo>, StoreError> {
        self.load(watch)?;
        let watches = self.watches.borrow();
        watches[watch]
            .runs
            .get(&run)
            .cloned()
            .ok_or_else(|| StoreError::UnknownRun {
                watch: watch.to_owned(),
                run,
            })
    }

    /// How [`Store::read`] with `columns` cuts `[from_ms, to_ms)` for this watch (its roll-up
    /// width decides whether slices are whole roll-up windows), so a reader can place each
    /// column in its slice.
    pub fn slices(
        &self,
        watch: &str,
        from_ms: u64,
        to_ms: u64,
        columns: usize,
    ) -> Result<Slices, StoreError> {
        self.load(watch)?;
        let rollup_ms = self.watches.borrow()[watch].rollup_ms;
        Ok(Slices::new(
            from_ms,
            to_ms.max(from_ms + 1),
            columns,
            rollup_ms,
        ))
    }

    /// Ticks with `ts_ms` in `[from_ms, to_ms)`. Without `columns`, every row as stored:
    /// ticks, and roll-ups where the ticks are gone. With `columns`, at most that many
    /// columns, each the exact sum (histograms bucket by bucket) of the rows in its time slice,
    /// its `ts_ms`/`interval_ms` covering them and its `run`/`seq` its first row's; a slice
    /// with no data gets no column. Slices are `width` wide from `origin` (see [`Slices`]):
    /// when a slice spans a roll-up width or more, whole roll-up windows inside the range are
    /// read from their roll-ups and only the edges from ticks.
    pub fn read(
        &self,
        watch: &str,
        from_ms: u64,
        to_ms: u64,
        columns: Option<usize>,
    ) -> Result<Vec<StoredTick>, StoreError> {
        if to_ms <= from_ms || columns == Some(0) {
            return Ok(Vec::new());
        }
        self.load(watch)?;
        let fail = |e| classify(&self.path, e);
        let watches = self.watches.borrow();
        let w = &watches[watch];
        let slices = columns.map(|n| Slices::new(from_ms, to_ms, n, w.rollup_ms));
        let coarse = slices.as_ref().is_some_and(|s| s.coarse);

        let rollups: Vec<Row> = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM ticks WHERE watch = ?1 AND level = 1 \
                 AND window_ms < ?3 AND window_ms + width_ms > ?2 ORDER BY window_ms, run"
            ))
            .map_err(fail)?
            .query_map(params![w.id, sql(from_ms), sql(to_ms)], row)
            .map_err(fail)?
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        let inside = |r: &Row| r.window_ms >= from_ms && r.window_ms + r.width_ms <= to_ms;
        // Time ranges whose ticks a roll-up stands for in this read.
        let mut covered: Vec<(u64, u64)> = Vec::new();
        if coarse {
            for r in rollups.iter().filter(|r| inside(r)) {
                match covered.last_mut() {
                    Some(last) if last.1 >= r.window_ms => {
                        last.1 = last.1.max(r.window_ms + r.width_ms)
                    }
                    _ => covered.push((r.window_ms, r.window_ms + r.width_ms)),
                }
            }
        }
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        let mut at = from_ms;
        for &(start, end) in &covered {
            if start > at {
                gaps.push((at, start));
            }
            at = at.max(end);
        }
        if at < to_ms {
            gaps.push((at, to_ms));
        }
        let mut rows: Vec<Row> = Vec::new();
        {
            let mut statement = self
                .conn
                .prepare_cached(&format!(
                    "SELECT {ROW_COLUMNS} FROM ticks WHERE watch = ?1 AND level = 0 \
                     AND window_ms >= ?2 AND window_ms < ?3 ORDER BY window_ms, run, seq"
                ))
                .map_err(fail)?;
            for (a, b) in gaps {
                let found = statement
                    .query_map(params![w.id, sql(a), sql(b)], row)
                    .map_err(fail)?;
                for r in found {
                    rows.push(r.map_err(fail)?);
                }
            }
        }
        // A roll-up stands in for its window when the read is coarse and the window inside the
        // range, or when some of the window's ticks are gone (their counts live on only in it).
        let mut used: Vec<Row> = Vec::new();
        let mut replaced: Vec<(u64, u64, u64)> = Vec::new();
        for r in rollups {
            if coarse && inside(&r) {
                used.push(r);
                continue;
            }
            let (start, end) = (r.window_ms, r.window_ms + r.width_ms);
            let first = rows.partition_point(|t| t.ts_ms < start);
            let present = rows[first..]
                .iter()
                .take_while(|t| t.ts_ms < end)
                .filter(|t| t.run == r.run)
                .count() as u64;
            let complete = if inside(&r) {
                present >= r.span
            } else {
                self.ticks_in_window(w.id, &r)? >= r.span
            };
            if !complete && start >= from_ms {
                replaced.push((r.run, start, end));
                used.push(r);
            }
        }
        rows.retain(|t| {
            !replaced
                .iter()
                .any(|&(run, start, end)| t.run == run && t.ts_ms >= start && t.ts_ms < end)
        });
        let mut rollups = used;
        rows.append(&mut rollups);
        rows.sort_by_key(|r| (r.at(), r.run, r.seq));

        let mut decompressor =
            zstd::bulk::Decompressor::new().map_err(|e| StoreError::Damaged {
                path: self.path.clone(),
                detail: format!("zstd: {e}"),
            })?;
        let damaged = |r: &Row, e: crate::sparse::DecodeError| StoreError::Damaged {
            path: self.path.clone(),
            detail: format!("watch {watch:?}, row at {} ms: {e}", r.ts_ms),
        };
        let mut out: Vec<StoredTick> = Vec::new();
        // The column being summed (downsampled reads): its slice, its tick and its sum.
        let mut column: Option<(u64, StoredTick, codec::ColumnSum)> = None;
        for r in rows {
            let infos = w.runs.get(&r.run).ok_or_else(|| StoreError::Damaged {
                path: self.path.clone(),
                detail: format!(
                    "a row of watch {watch:?} names run {} that is not recorded",
                    r.run
                ),
            })?;
            let Some(slices) = &slices else {
                let snapshot = codec::decode(&r.data, infos, &w.keys, &mut decompressor)
                    .map_err(|e| damaged(&r, e))?;
                out.push(StoredTick {
                    run: r.run,
                    seq: r.seq,
                    ts_ms: r.ts_ms,
                    interval_ms: r.interval_ms,
                    snapshot,
                });
                continue;
            };
            let slice = slices.of(r.at());
            match &mut column {
                Some((at, tick, _)) if *at == slice => {
                    let start =
                        (tick.ts_ms - tick.interval_ms).min(r.ts_ms - r.interval_ms.min(r.ts_ms));
                    tick.ts_ms = tick.ts_ms.max(r.ts_ms);
                    tick.interval_ms = tick.ts_ms - start;
                }
                _ => {
                    if let Some((_, mut tick, sum)) = column.take() {
                        tick.snapshot = sum.finish(&w.keys);
                        out.push(tick);
                    }
                    let tick = StoredTick {
                        run: r.run,
                        seq: r.seq,
                        ts_ms: r.ts_ms,
                        interval_ms: r.interval_ms,
                        snapshot: Snapshot::default(),
                    };
                    column = Some((slice, tick, codec::ColumnSum::default()));
                }
            }
            let (_, _, sum) = column.as_mut().expect("set above");
            sum.add(&r.data, infos, &w.keys, &mut decompressor)
                .map_err(|e| damaged(&r, e))?;
        }
        if let Some((_, mut tick, sum)) = column {
            tick.snapshot = sum.finish(&w.keys);
            out.push(tick);
        }
        Ok(out)
    }

    /// How many ticks of the roll-up's run are stored in its window.
    fn ticks_in_window(&self, watch: i64, r: &Row) -> Result<u64, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT COUNT(*) FROM ticks WHERE watch = ?1 AND level = 0 AND run = ?2 \
                 AND window_ms >= ?3 AND window_ms < ?4",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![
                        watch,
                        sql(r.run),
                        sql(r.window_ms),
                        sql(r.window_ms + r.width_ms)
                    ],
                    |row| row.get::<_, i64>(0),
                )
            })
            .map(|n| n as u64)
            .map_err(|e| classify(&self.path, e))
    }

    /// Applies `retention` to a watch at `now_ms`: rolls every closed `rollup` window up into
    /// roll-up rows (exact sums), drops ticks older than `full_resolution` that a roll-up
    /// holds, then drops the oldest rows past `max_age` and `max_bytes`. Rows in a range
    /// pinned until after `now_ms` are kept, ticks and roll-ups alike.
    pub fn enforce(
        &mut self,
        watch: &str,
        retention: &Retention,
        now_ms: u64,
    ) -> Result<RetentionReport, StoreError> {
        let rollup_ms = retention.rollup.as_millis() as u64;
        if rollup_ms == 0 {
            return Err(StoreError::Retention("rollup must be at least 1 ms"));
        }
        self.load(watch)?;
        let path = self.path.clone();
        let fail = |e| classify(&path, e);
        let mut report = RetentionReport::default();
        let closed_to = now_ms / rollup_ms * rollup_ms;
        let (id, mut rolled_to) = {
            let watches = self.watches.get_mut();
            let w = watches.get_mut(watch).expect("loaded above");
            if w.rollup_ms != rollup_ms {
                self.conn
                    .execute(
                        "UPDATE watches SET rollup_ms = ?2 WHERE id = ?1",
                        params![w.id, sql(rollup_ms)],
                    )
                    .map_err(fail)?;
                w.rollup_ms = rollup_ms;
            }
            (w.id, w.rolled_to_ms / rollup_ms * rollup_ms)
        };
        if rolled_to == 0 {
            // Start where the data starts rather than at the epoch.
            let oldest: Option<i64> = self
                .conn
                .query_row(
                    "SELECT MIN(window_ms) FROM ticks WHERE watch = ?1 AND level = 0",
                    [id],
                    |r| r.get(0),
                )
                .map_err(fail)?;
            rolled_to = oldest.map_or(closed_to, |t| t as u64 / rollup_ms * rollup_ms);
        }
        while rolled_to < closed_to {
            let until = (rolled_to + ROLLUP_CHUNK_WINDOWS * rollup_ms).min(closed_to);
            report.rollups_written += self.roll(watch, rolled_to, until, rollup_ms)?;
            rolled_to = until;
        }

        // Whole windows only, so a window's ticks are all there or its roll-up reads instead.
        let full_from = now_ms.saturating_sub(retention.full_resolution.as_millis() as u64)
            / rollup_ms
            * rollup_ms;
        let age_from = now_ms.saturating_sub(retention.max_age.as_millis() as u64);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        report.ticks_rolled = tx
            .execute(
                &format!(
                    "DELETE FROM ticks AS t WHERE watch = :watch AND level = 0 AND ts_ms < :full \
                     AND ts_ms < :rolled AND NOT {PINNED}"
                ),
                named_params! {
                    ":watch": id, ":now": sql(now_ms), ":rollup": sql(rollup_ms),
                    ":full": sql(full_from), ":rolled": sql(rolled_to),
                },
            )
            .map_err(fail)? as u64;
        report.rows_dropped += tx
            .execute(
                &format!(
                    "DELETE FROM ticks AS t WHERE watch = :watch AND ts_ms < :age AND NOT {PINNED}"
                ),
                named_params! {
                    ":watch": id, ":now": sql(now_ms), ":rollup": sql(rollup_ms), ":age": sql(age_from),
                },
            )
            .map_err(fail)? as u64;
        tx.execute(
            "DELETE FROM marks WHERE watch = ?1 AND until_ms <= ?2 AND to_ms < ?3",
            params![id, sql(now_ms), sql(age_from)],
        )
        .map_err(fail)?;

        let mut bytes = bytes_in(&tx, id).map_err(fail)?;
        if bytes > retention.max_bytes {
            let mut doomed: Vec<i64> = Vec::new();
            {
                let mut oldest = tx
                    .prepare(&format!(
                        "SELECT t.id, t.bytes, {PINNED} FROM ticks AS t WHERE watch = :watch \
                         ORDER BY ts_ms, level"
                    ))
                    .map_err(fail)?;
                let mut found = oldest
                    .query(named_params! {
                        ":watch": id, ":now": sql(now_ms), ":rollup": sql(rollup_ms),
                    })
                    .map_err(fail)?;
                while bytes > retention.max_bytes {
                    let Some(r) = found.next().map_err(fail)? else {
                        break;
                    };
                    if r.get::<_, bool>(2).map_err(fail)? {
                        continue;
                    }
                    doomed.push(r.get(0).map_err(fail)?);
                    bytes = bytes
                        .saturating_sub(r.get::<_, i64>(1).map_err(fail)? as u64 + ROW_OVERHEAD);
                }
            }
            let mut delete = tx
                .prepare("DELETE FROM ticks WHERE id = ?1")
                .map_err(fail)?;
            for row in &doomed {
                delete.execute([row]).map_err(fail)?;
            }
            report.rows_dropped += doomed.len() as u64;
        }
        let pins: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM marks WHERE watch = ?1 AND until_ms > ?2",
                params![id, sql(now_ms)],
                |r| r.get(0),
            )
            .map_err(fail)?;
        report.rows_pinned = if pins == 0 {
            0
        } else {
            tx.query_row(
                &format!("SELECT COUNT(*) FROM ticks AS t WHERE watch = :watch AND {PINNED}"),
                named_params! {":watch": id, ":now": sql(now_ms), ":rollup": sql(rollup_ms)},
                |r| r.get::<_, i64>(0),
            )
            .map_err(fail)? as u64
        };
        report.bytes = bytes_in(&tx, id).map_err(fail)?;
        tx.commit().map_err(fail)?;
        if report.ticks_rolled + report.rows_dropped > 0 {
            // Gives freed pages back to the file system (auto_vacuum = INCREMENTAL).
            self.conn
                .execute_batch("PRAGMA incremental_vacuum")
                .map_err(fail)?;
        }
        Ok(report)
    }

    /// Writes the roll-ups of the windows in `[from, to)` (replacing any there) and moves the
    /// watch's rolled-up mark to `to`; how many roll-up rows it wrote.
    fn roll(&mut self, watch: &str, from: u64, to: u64, width: u64) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let fail = |e| classify(&path, e);
        let damaged = |detail: String| StoreError::Damaged {
            path: path.clone(),
            detail,
        };
        let w = self.watches.get_mut().get_mut(watch).expect("loaded");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let rows: Vec<Row> = tx
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM ticks WHERE watch = ?1 AND level = 0 \
                 AND window_ms >= ?2 AND window_ms < ?3 ORDER BY run, window_ms, seq"
            ))
            .map_err(fail)?
            .query_map(params![w.id, sql(from), sql(to)], row)
            .map_err(fail)?
            .collect::<Result<_, _>>()
            .map_err(fail)?;
        tx.execute(
            "DELETE FROM ticks WHERE watch = ?1 AND level = 1 AND window_ms >= ?2 AND window_ms < ?3",
            params![w.id, sql(from), sql(to)],
        )
        .map_err(fail)?;
        let mut decompressor =
            zstd::bulk::Decompressor::new().map_err(|e| damaged(format!("zstd: {e}")))?;
        let mut written = 0;
        let mut at = 0;
        while at < rows.len() {
            let first = &rows[at];
            let window = first.ts_ms / width * width;
            let infos = w.runs.get(&first.run).ok_or_else(|| {
                damaged(format!(
                    "a row names run {} that is not recorded",
                    first.run
                ))
            })?;
            let mut sum = Snapshot::default();
            let start = first.ts_ms.saturating_sub(first.interval_ms);
            let (mut last_ts, mut span) = (first.ts_ms, 0u64);
            while let Some(r) = rows
                .get(at)
                .filter(|r| r.run == first.run && r.ts_ms / width * width == window)
            {
                let snapshot =
                    codec::decode(&r.data, infos, &w.keys, &mut decompressor).map_err(|e| {
                        damaged(format!("watch {watch:?}, tick at {} ms: {e}", r.ts_ms))
                    })?;
                if span == 0 {
                    sum = snapshot;
                } else {
                    sum.absorb(snapshot);
                }
                last_ts = r.ts_ms;
                span += 1;
                at += 1;
            }
            let data = codec::encode(&sum, infos, &w.keys, &mut self.compressor);
            tx.prepare_cached(
                "INSERT INTO ticks (watch, level, window_ms, width_ms, run, seq, ts_ms, \
                 interval_ms, span, bytes, data) VALUES (?1, 1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(fail)?
            .execute(params![
                w.id,
                sql(window),
                sql(width),
                sql(first.run),
                sql(first.seq),
                sql(last_ts),
                sql(last_ts - start),
                sql(span),
                data.len() as i64,
                data
            ])
            .map_err(fail)?;
            written += 1;
        }
        tx.execute(
            "UPDATE watches SET rolled_to_ms = ?2 WHERE id = ?1",
            params![w.id, sql(to)],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        w.rolled_to_ms = to;
        Ok(written)
    }

    /// Pins `[from_ms, to_ms)` of a watch against retention until `until_ms`, with a label the
    /// timeline shows (a trigger's name, or why a person pinned it).
    pub fn pin(
        &mut self,
        watch: &str,
        from_ms: u64,
        to_ms: u64,
        until_ms: u64,
        label: &str,
    ) -> Result<(), StoreError> {
        self.load(watch)?;
        let id = self.watches.get_mut()[watch].id;
        self.conn
            .execute(
                "INSERT INTO marks (watch, from_ms, to_ms, until_ms, label) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, sql(from_ms), sql(to_ms), sql(until_ms), label],
            )
            .map_err(|e| classify(&self.path, e))?;
        Ok(())
    }

    /// Pins and trigger marks whose range meets `[from_ms, to_ms)`, oldest first.
    pub fn marks(&self, watch: &str, from_ms: u64, to_ms: u64) -> Result<Vec<Mark>, StoreError> {
        self.load(watch)?;
        let fail = |e| classify(&self.path, e);
        let id = self.watches.borrow()[watch].id;
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT from_ms, to_ms, until_ms, label FROM marks WHERE watch = ?1 \
                 AND from_ms < ?3 AND to_ms > ?2 ORDER BY from_ms, id",
            )
            .map_err(fail)?;
        let marks = statement
            .query_map(params![id, sql(from_ms), sql(to_ms)], |r| {
                Ok(Mark {
                    from_ms: r.get::<_, i64>(0)? as u64,
                    to_ms: r.get::<_, i64>(1)? as u64,
                    until_ms: r.get::<_, i64>(2)? as u64,
                    label: r.get(3)?,
                })
            })
            .map_err(fail)?
            .collect::<Result<_, _>>()
            .map_err(fail);
        marks
    }

    /// Bytes a watch takes: its rows' blobs, [`ROW_OVERHEAD`] per row, and its keys.
    pub fn bytes(&self, watch: &str) -> Result<u64, StoreError> {
        self.load(watch)?;
        let id = self.watches.borrow()[watch].id;
        self.bytes_of(id)
    }

    fn bytes_of(&self, id: i64) -> Result<u64, StoreError> {
        bytes_in(&self.conn, id).map_err(|e| classify(&self.path, e))
    }

    /// Reads what the store knows of `watch` into memory, once.
    fn load(&self, watch: &str) -> Result<(), StoreError> {
        if self.watches.borrow().contains_key(watch) {
            return Ok(());
        }
        let fail = |e| classify(&self.path, e);
        let damaged = |detail: String| StoreError::Damaged {
            path: self.path.clone(),
            detail,
        };
        let found = self
            .conn
            .query_row(
                "SELECT id, rollup_ms, rolled_to_ms FROM watches WHERE name = ?1",
                [watch],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(fail)?;
        let Some((id, rollup_ms, rolled_to_ms)) = found else {
            return Err(StoreError::UnknownWatch(watch.to_owned()));
        };
        let mut keys = Keys::default();
        let mut statement = self
            .conn
            .prepare("SELECT id, key, checksum FROM keys WHERE watch = ?1 ORDER BY id")
            .map_err(fail)?;
        let rows = statement
            .query_map([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(fail)?;
        for r in rows {
            let (key_id, text, checksum) = r.map_err(fail)?;
            let key = codec::parse_key(&text)
                .filter(|_| {
                    codec::key_checksum(&text) == checksum && key_id as usize == keys.by_id.len()
                })
                .ok_or_else(|| damaged(format!("key {key_id} of watch {watch:?}")))?;
            keys.push(key);
        }
        let mut runs: HashMap<u64, Vec<AggregationInfo>> = HashMap::new();
        let mut statement = self
            .conn
            .prepare("SELECT run FROM runs WHERE watch = ?1")
            .map_err(fail)?;
        for run in statement
            .query_map([id], |r| r.get::<_, i64>(0))
            .map_err(fail)?
        {
            runs.insert(run.map_err(fail)? as u64, Vec::new());
        }
        let mut statement = self
            .conn
            .prepare(
                "SELECT run, slot, name, kind, layout_min, layout_max, layout_step \
                 FROM aggregations WHERE watch = ?1 ORDER BY run, slot",
            )
            .map_err(fail)?;
        let rows = statement
            .query_map([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                    r.get::<_, Option<i64>>(5)?,
                    r.get::<_, Option<i64>>(6)?,
                ))
            })
            .map_err(fail)?;
        for r in rows {
            let (run, slot, name, kind, min, max, step) = r.map_err(fail)?;
            let infos = runs
                .get_mut(&(run as u64))
                .filter(|infos| infos.len() == slot as usize)
                .ok_or_else(|| {
                    damaged(format!(
                        "aggregation {slot} of run {run} of watch {watch:?}"
                    ))
                })?;
            let kind = codec::parse_kind(&kind)
                .ok_or_else(|| damaged(format!("aggregation kind {kind:?} of watch {watch:?}")))?;
            let layout = match (min, max, step) {
                (Some(min), Some(max), Some(step)) => Some(Layout { min, max, step }),
                _ => None,
            };
            infos.push(AggregationInfo { name, kind, layout });
        }
        self.watches.borrow_mut().insert(
            watch.to_owned(),
            Watch {
                id,
                keys,
                runs,
                rollup_ms: rollup_ms as u64,
                rolled_to_ms: rolled_to_ms as u64,
            },
        );
        Ok(())
    }
}

fn insert_aggregation(
    conn: &Connection,
    watch: i64,
    run: i64,
    slot: usize,
    info: &AggregationInfo,
) -> rusqlite::Result<usize> {
    let (kind, layout) = codec::kind_and_layout(info);
    conn.prepare_cached(
        "INSERT INTO aggregations (watch, run, slot, name, kind, layout_min, layout_max, \
         layout_step) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        watch,
        run,
        slot as i64,
        info.name,
        kind,
        layout.map(|l| l[0]),
        layout.map(|l| l[1]),
        layout.map(|l| l[2])
    ])
}

fn bytes_in(conn: &Connection, watch: i64) -> rusqlite::Result<u64> {
    let (rows, blobs): (i64, i64) = conn.query_row(
        "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM ticks WHERE watch = ?1",
        [watch],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let keys: i64 = conn.query_row(
        "SELECT COALESCE(SUM(LENGTH(key)), 0) FROM keys WHERE watch = ?1",
        [watch],
        |r| r.get(0),
    )?;
    Ok(blobs as u64 + rows as u64 * ROW_OVERHEAD + keys as u64)
}

/// Names what went wrong in the terms an operator acts on.
fn classify(path: &Path, e: rusqlite::Error) -> StoreError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => StoreError::Full { path },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Damaged {
            path,
            detail: e.to_string(),
        },
        Some(
            ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::PermissionDenied
            | ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked,
        ) => StoreError::Unwritable {
            path,
            detail: e.to_string(),
        },
        _ => StoreError::Sqlite { path, source: e },
    }
}

/// How a downsampled read cuts `[from, to)` into at most `columns` slices of `width` ms from
/// `origin`. When a slice would span a roll-up window or more (`coarse`), `origin` and `width`
/// are whole roll-up windows, so every window falls in one slice and its roll-up can stand in
/// for its ticks; the price is that fewer than `columns` slices may cover the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slices {
    pub origin: u64,
    pub width: u64,
    pub coarse: bool,
}

impl Slices {
    pub fn new(from: u64, to: u64, columns: usize, rollup_ms: u64) -> Slices {
        let columns = columns.max(1) as u64;
        let fine = (to - from).div_ceil(columns).max(1);
        if rollup_ms > 0 && fine >= rollup_ms {
            let origin = from / rollup_ms * rollup_ms;
            let width = (to - origin).div_ceil(columns).div_ceil(rollup_ms) * rollup_ms;
            Slices {
                origin,
                width,
                coarse: true,
            }
        } else {
            Slices {
                origin: from,
                width: fine,
                coarse: false,
            }
        }
    }

    /// The slice a row at `at` falls in.
    pub fn of(&self, at: u64) -> u64 {
        at.saturating_sub(self.origin) / self.width
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::{AggKind, Bucket, KeyPart, Series, Value};

    /// A directory of its own under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir =
                std::env::temp_dir().join(format!("heat-store-unit-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn infos() -> Vec<AggregationInfo> {
        vec![AggregationInfo {
            name: "@us".into(),
            kind: AggKind::Hist,
            layout: None,
        }]
    }

    fn tick(run: u64, seq: u64, ts_ms: u64, count: u64) -> StoredTick {
        let mut snapshot = Snapshot::empty(&infos());
        snapshot.aggregations[0].series.push(Series {
            key: vec![KeyPart::Str("read".into())],
            value: Value::Buckets(vec![Bucket {
                lo: Some(4),
                hi: Some(7),
                count,
            }]),
            sum: None,
        });
        StoredTick {
            run,
            seq,
            ts_ms,
            interval_ms: 1000,
            snapshot,
        }
    }

    fn events(ticks: &[StoredTick]) -> u64 {
        ticks
            .iter()
            .flat_map(|t| &t.snapshot.aggregations[0].series)
            .filter_map(Series::events)
            .sum()
    }

    #[test]
    fn slices_never_exceed_columns_and_coarse_ones_are_whole_windows() {
        for (from, to, columns, rollup) in [
            (0, 86_400_000, 600, 60_000),
            (12_345, 3_612_345, 600, 60_000),
            (5, 6, 600, 60_000),
            (1_000, 61_000, 7, 0),
            (59_999, 60_001, 1, 60_000),
        ] {
            let s = Slices::new(from, to, columns, rollup);
            assert!(s.of(to - 1) < columns as u64, "{s:?}");
            assert_eq!(s.of(from), 0);
            if s.coarse {
                assert_eq!((s.origin % rollup, s.width % rollup), (0, 0));
            }
        }
        assert_eq!(Slices::new(0, 86_400_000, 600, 60_000).width, 180_000);
    }

    #[test]
    fn a_store_is_created_with_its_directory_and_reopened() {
        let dir = TempDir::new("open");
        let path = dir.0.join("nested").join("store.sqlite");
        let mut store = Store::open(&path).unwrap();
        let run = store.begin_run("w", &infos(), 0).unwrap();
        store.append("w", &tick(run, 1, 1_000, 3)).unwrap();
        assert!(matches!(
            store.append("w", &tick(9, 2, 2_000, 1)),
            Err(StoreError::UnknownRun { run: 9, .. })
        ));
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.read("w", 0, 10_000, None).unwrap(),
            vec![tick(1, 1, 1_000, 3)]
        );
        assert_eq!(store.path(), path);
    }

    #[test]
    fn a_late_tick_in_a_rolled_window_is_rolled_again() {
        let dir = TempDir::new("late");
        let mut store = Store::open(&dir.0.join("s.sqlite")).unwrap();
        let run = store.begin_run("w", &infos(), 0).unwrap();
        for seq in 1..=100 {
            store.append("w", &tick(run, seq, seq * 1000, 1)).unwrap();
        }
        let retention = Retention::default();
        store.enforce("w", &retention, 120_000).unwrap();
        // A clock step back puts a tick into the rolled first minute.
        store.append("w", &tick(run, 101, 30_500, 5)).unwrap();
        assert_eq!(
            events(&store.read("w", 0, 60_000, Some(1)).unwrap()),
            59 + 5
        );
        let report = store.enforce("w", &retention, 120_000).unwrap();
        assert_eq!(report.rollups_written, 2);
        let minute = store.read("w", 0, 60_000, Some(1)).unwrap();
        assert_eq!(events(&minute), 59 + 5);
        assert_eq!((minute[0].ts_ms, minute[0].interval_ms), (59_000, 59_000));
    }

    #[test]
    fn a_version_1_file_is_upgraded_and_a_newer_one_refused_by_name() {
        let dir = TempDir::new("schema");
        let path = dir.0.join("s.sqlite");
        let mut store = Store::open(&path).unwrap();
        let run = store.begin_run("w", &infos(), 0).unwrap();
        store.append("w", &tick(run, 1, 1_000, 3)).unwrap();
        drop(store);
        let set = |v: i64| {
            let conn = Connection::open(&path).unwrap();
            conn.execute("UPDATE meta SET value = ?1 WHERE name = 'schema'", [v])
                .unwrap();
        };
        set(1);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.read("w", 0, 10_000, None).unwrap(),
            vec![tick(1, 1, 1_000, 3)]
        );
        let version: i64 = store
            .conn
            .query_row("SELECT value FROM meta WHERE name = 'schema'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(version, schema::SCHEMA_VERSION);
        drop(store);
        set(schema::SCHEMA_VERSION + 1);
        let refused = Store::open(&path).unwrap_err();
        assert!(matches!(refused, StoreError::Version { .. }));
        assert!(refused.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn rejected_retention_and_empty_ranges_are_clear() {
        let dir = TempDir::new("retention");
        let mut store = Store::open(&dir.0.join("s.sqlite")).unwrap();
        store.begin_run("w", &infos(), 0).unwrap();
        let zero = Retention {
            rollup: Duration::ZERO,
            ..Retention::default()
        };
        assert!(matches!(
            store.enforce("w", &zero, 1),
            Err(StoreError::Retention(_))
        ));
        assert!(store.read("w", 5, 5, Some(10)).unwrap().is_empty());
        assert!(store.read("w", 0, 5, Some(0)).unwrap().is_empty());
        assert!(matches!(store.bytes("x"), Err(StoreError::UnknownWatch(_))));
    }
}
