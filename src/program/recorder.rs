//! The recorder: the store's one writer and reader, on a thread of its own, so that recording
//! never delays a frame to viewers and no store call runs on an HTTP worker. Programs hand it
//! typed ticks (never wire text); the HTTP API asks it for ranges.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use parking_lot::Mutex;

use crate::aggregation::{AggregationInfo, Snapshot};
use crate::store::{
    Mark, Retention, RetentionReport, Slices, Store, StoreError, StoredTick, WatchSummary,
};
use crate::telemetry::Event;

/// Owns the store on its thread.
pub struct Recorder {
    path: PathBuf,
    store: Option<Store>,
    /// The run each watch's ticks belong to now (from its latest `BeginRun`).
    runs: HashMap<String, u64>,
    /// Watches whose last write failed, so a failure is logged once, not every tick.
    failing: HashMap<String, String>,
}

impl Recorder {
    /// Starts the recorder thread with a store already opened (start-up opens it, so a damaged
    /// store stops the server with its message before anything runs).
    pub fn start(store: Store) -> Addr<Recorder> {
        let path = store.path().to_owned();
        let slot = Arc::new(Mutex::new(Some(store)));
        SyncArbiter::start(1, move || Recorder {
            path: path.clone(),
            // After a panic the thread is rebuilt: the store is opened again.
            store: slot.lock().take().or_else(|| Store::open(&path).ok()),
            runs: HashMap::new(),
            failing: HashMap::new(),
        })
    }

    fn store(&mut self) -> Result<&mut Store, StoreError> {
        if self.store.is_none() {
            self.store = Some(Store::open(&self.path)?);
        }
        Ok(self.store.as_mut().expect("opened above"))
    }

    fn written(&mut self, watch: &str, result: Result<(), StoreError>, began: Instant) {
        match result {
            Ok(()) => {
                Event::StoreWritten {
                    elapsed: began.elapsed(),
                }
                .emit();
                if let Some(error) = self.failing.remove(watch) {
                    Event::RecordingResumed {
                        watch,
                        after: &error,
                    }
                    .emit();
                }
            }
            Err(e) => {
                let error = e.to_string();
                let first = self
                    .failing
                    .insert(watch.to_owned(), error.clone())
                    .is_none();
                Event::StoreWriteFailed {
                    watch,
                    error: &error,
                    first,
                }
                .emit();
            }
        }
    }
}

impl Actor for Recorder {
    type Context = SyncContext<Self>;
}

/// A watch's program (re)started: its ticks from now on are a new run.
#[derive(Message)]
#[rtype(result = "()")]
pub struct BeginRun {
    pub watch: String,
    pub infos: Vec<AggregationInfo>,
    pub started_ms: u64,
}

/// One tick of a watch, to be stored.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Record {
    pub watch: String,
    pub seq: u64,
    pub ts_ms: u64,
    pub interval_ms: u64,
    pub snapshot: Arc<Snapshot>,
}

/// Ticks of a watch in `[from_ms, to_ms)`, summed into at most `columns` columns, with the
/// aggregations of every run they come from.
#[derive(Message)]
#[rtype(result = "Result<Range, StoreError>")]
pub struct ReadRange {
    pub watch: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub columns: Option<usize>,
}

/// What [`ReadRange`] found.
#[derive(Debug)]
pub struct Range {
    pub ticks: Vec<StoredTick>,
    pub runs: Vec<(u64, Vec<AggregationInfo>)>,
    pub marks: Vec<Mark>,
    /// How the columns were cut (when `columns` was asked): column `k` covers
    /// `[origin + k·width, origin + (k+1)·width)`.
    pub slices: Option<Slices>,
}

/// Every recorded watch.
#[derive(Message)]
#[rtype(result = "Result<Vec<WatchSummary>, StoreError>")]
pub struct ListRecorded;

/// Apply a watch's retention (roll-ups, age, size) now.
#[derive(Message)]
#[rtype(result = "Result<RetentionReport, StoreError>")]
pub struct Enforce {
    pub watch: String,
    pub retention: Retention,
    pub now_ms: u64,
}

/// Keep a range of a watch until `until_ms`, with a label (a trigger's mark).
#[derive(Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Pin {
    pub watch: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub until_ms: u64,
    pub label: String,
}

impl Handler<BeginRun> for Recorder {
    type Result = ();

    fn handle(&mut self, begin: BeginRun, _: &mut Self::Context) {
        let began = Instant::now();
        let result = self
            .store()
            .and_then(|s| s.begin_run(&begin.watch, &begin.infos, begin.started_ms));
        match result {
            Ok(run) => {
                self.runs.insert(begin.watch.clone(), run);
                self.written(&begin.watch, Ok(()), began);
            }
            Err(e) => {
                self.runs.remove(&begin.watch);
                self.written(&begin.watch, Err(e), began);
            }
        }
    }
}

impl Handler<Record> for Recorder {
    type Result = ();

    fn handle(&mut self, record: Record, _: &mut Self::Context) {
        let began = Instant::now();
        let Some(&run) = self.runs.get(&record.watch) else {
            // Its run could not be begun (the store was failing): nothing to file it under.
            let error = StoreError::Unwritable {
                path: self.path.clone(),
                detail: format!("no run of watch {:?} is open", record.watch),
            };
            return self.written(&record.watch, Err(error), began);
        };
        let tick = StoredTick {
            run,
            seq: record.seq,
            ts_ms: record.ts_ms,
            interval_ms: record.interval_ms,
            snapshot: Arc::unwrap_or_clone(record.snapshot),
        };
        let result = self.store().and_then(|s| s.append(&record.watch, &tick));
        self.written(&record.watch, result, began);
    }
}

impl Handler<ReadRange> for Recorder {
    type Result = Result<Range, StoreError>;

    fn handle(&mut self, read: ReadRange, _: &mut Self::Context) -> Self::Result {
        let store = self.store()?;
        let ticks = store.read(&read.watch, read.from_ms, read.to_ms, read.columns)?;
        let mut runs: Vec<(u64, Vec<AggregationInfo>)> = Vec::new();
        for tick in &ticks {
            if !runs.iter().any(|(r, _)| *r == tick.run) {
                runs.push((tick.run, store.infos(&read.watch, tick.run)?));
            }
        }
        let marks = store.marks(&read.watch, read.from_ms, read.to_ms)?;
        let slices = match read.columns {
            Some(n) => Some(store.slices(&read.watch, read.from_ms, read.to_ms, n)?),
            None => None,
        };
        Ok(Range {
            ticks,
            runs,
            marks,
            slices,
        })
    }
}

impl Handler<ListRecorded> for Recorder {
    type Result = Result<Vec<WatchSummary>, StoreError>;

    fn handle(&mut self, _: ListRecorded, _: &mut Self::Context) -> Self::Result {
        self.store()?.watches()
    }
}

impl Handler<Enforce> for Recorder {
    type Result = Result<RetentionReport, StoreError>;

    fn handle(&mut self, enforce: Enforce, _: &mut Self::Context) -> Self::Result {
        let report = self
            .store()?
            .enforce(&enforce.watch, &enforce.retention, enforce.now_ms)?;
        Event::StoreSized {
            watch: &enforce.watch,
            bytes: report.bytes,
        }
        .emit();
        Ok(report)
    }
}

impl Handler<Pin> for Recorder {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, pin: Pin, _: &mut Self::Context) -> Self::Result {
        self.store()?
            .pin(&pin.watch, pin.from_ms, pin.to_ms, pin.until_ms, &pin.label)
    }
}
