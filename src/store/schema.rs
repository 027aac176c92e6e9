//! The store file's tables and the settings every connection opens it with.

/// The schema this build writes and reads; a file with another is refused, not guessed at.
/// Version 2 adds the packed series form (`codec::FORM_PACKED`) to rows; tables are unchanged.
pub(super) const SCHEMA_VERSION: i64 = 2;

/// An older schema this build upgrades in place when it opens the file: version 1 rows are
/// read as they are (version 2 only adds a form), so the upgrade is the version number alone,
/// one statement, and a heat-actix that reads only version 1 then refuses the file by name.
pub(super) const UPGRADES_FROM: i64 = 1;

/// Connection settings. WAL lets readers run beside the writer; `synchronous=NORMAL` in WAL
/// mode makes a commit durable against a killed process (the WAL is in the OS's hands when
/// `COMMIT` returns) and never torn by a power loss, which may only lose the newest commits.
/// `auto_vacuum=INCREMENTAL` lets retention give freed pages back to the file system.
pub(super) const PRAGMAS: &str = "
    PRAGMA auto_vacuum = INCREMENTAL;
    PRAGMA journal_mode = WAL;
    PRAGMA synchronous = NORMAL;
    PRAGMA foreign_keys = ON;
";

/// Tables. `ticks` holds full-resolution rows (`level` 0, one per tick) and roll-ups
/// (`level` 1, one per run and `width_ms` window, `span` ticks summed); `window_ms` is the
/// tick's `ts_ms` at level 0 and the window's start at level 1. `ticks_by_age` covers what
/// retention and `bytes` read (age and size), so they never read the blobs.
pub(super) const TABLES: &str = "
    CREATE TABLE IF NOT EXISTS meta (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS watches (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        rollup_ms INTEGER NOT NULL DEFAULT 0,
        rolled_to_ms INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS runs (
        watch INTEGER NOT NULL REFERENCES watches(id),
        run INTEGER NOT NULL,
        started_ms INTEGER NOT NULL,
        PRIMARY KEY (watch, run)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS aggregations (
        watch INTEGER NOT NULL,
        run INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        layout_min INTEGER,
        layout_max INTEGER,
        layout_step INTEGER,
        PRIMARY KEY (watch, run, slot),
        FOREIGN KEY (watch, run) REFERENCES runs(watch, run)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS keys (
        watch INTEGER NOT NULL REFERENCES watches(id),
        id INTEGER NOT NULL,
        key TEXT NOT NULL,
        checksum INTEGER NOT NULL,
        PRIMARY KEY (watch, id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS ticks (
        id INTEGER PRIMARY KEY,
        watch INTEGER NOT NULL REFERENCES watches(id),
        level INTEGER NOT NULL,
        window_ms INTEGER NOT NULL,
        width_ms INTEGER NOT NULL,
        run INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        ts_ms INTEGER NOT NULL,
        interval_ms INTEGER NOT NULL,
        span INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        data BLOB NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS ticks_by_time ON ticks (watch, level, window_ms, run, seq);
    CREATE INDEX IF NOT EXISTS ticks_by_age ON ticks (watch, ts_ms, level, bytes);
    CREATE TABLE IF NOT EXISTS marks (
        id INTEGER PRIMARY KEY,
        watch INTEGER NOT NULL REFERENCES watches(id),
        from_ms INTEGER NOT NULL,
        to_ms INTEGER NOT NULL,
        until_ms INTEGER NOT NULL,
        label TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS marks_by_time ON marks (watch, from_ms);
";
