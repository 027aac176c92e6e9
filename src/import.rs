//! `heat-actix import`: an NDJSON export (`GET /api/watches/{name}/export`) written back into
//! a store under a watch name. The whole file is read and checked before anything is written,
//! so a malformed line (named by its number) leaves the store untouched; then the whole file is
//! written in one transaction, so a store that fails midway (a full disk) keeps nothing of it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::aggregation::{AggregationInfo, Snapshot};
use crate::session::protocol::{decode_frame, FrameHeader};
use crate::store::{Store, StoreError, StoredTick};

/// The `format` of the export header this build reads.
pub const FORMAT: &str = "heat-actix-ndjson-1";

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line is not what an export holds; nothing was written.
    #[error("{path} line {line}: {message}; nothing was imported")]
    Malformed {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// The store refused a write (`line` 0: the final commit); the transaction was rolled
    /// back, so nothing of the file is in the store.
    #[error(
        "the store refused to import {path} into watch {watch:?} ({at}): {source}; nothing was \
         imported (the file is written in one transaction)"
    )]
    Store {
        path: PathBuf,
        at: String,
        watch: String,
        source: Box<StoreError>,
    },
}

/// What an import wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The runs it created in the store, one per run of the file, in the file's order.
    pub runs: Vec<u64>,
    pub ticks: usize,
}

/// One checked frame line.
struct Line {
    number: usize,
    run: u64,
    header: FrameHeader,
    snapshot: Snapshot,
}

/// A checked export: its runs (the file's ids and aggregations) and its ticks.
struct Export {
    runs: Vec<(u64, Vec<AggregationInfo>)>,
    lines: Vec<Line>,
}

fn parse(text: &str) -> Result<Export, (usize, String)> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l))
        .filter(|(_, l)| !l.trim().is_empty());
    let (number, first) = lines.next().ok_or((
        1,
        "the file is empty: an export opens with its header line".into(),
    ))?;
    let header: Json =
        serde_json::from_str(first).map_err(|e| (number, format!("malformed JSON: {e}")))?;
    if header["type"] != "export" {
        return Err((
            number,
            "the first line must be the export header (\"type\":\"export\")".into(),
        ));
    }
    if header["format"] != FORMAT {
        return Err((
            number,
            format!(
                "format {} is not {FORMAT:?}, the one this build reads",
                header["format"]
            ),
        ));
    }
    let runs: Vec<(u64, Vec<AggregationInfo>)> = header["runs"]
        .as_array()
        .ok_or((number, "the header has no `runs` list".to_owned()))?
        .iter()
        .map(|r| {
            let run = r["run"].as_u64().ok_or("a run without a whole `run` id")?;
            let infos = serde_json::from_value(r["aggregations"].clone())
                .map_err(|e| format!("run {run}: bad `aggregations`: {e}"))?;
            Ok((run, infos))
        })
        .collect::<Result<_, String>>()
        .map_err(|e| (number, e))?;
    let mut seen = std::collections::HashSet::new();
    if let Some((run, _)) = runs.iter().find(|(run, _)| !seen.insert(*run)) {
        return Err((number, format!("run {run} is listed twice")));
    }
    let mut checked = Vec::new();
    for (number, line) in lines {
        let mut frame: Json =
            serde_json::from_str(line).map_err(|e| (number, format!("malformed JSON: {e}")))?;
        let run = match frame.as_object_mut().and_then(|o| o.remove("run")) {
            Some(run) => run
                .as_u64()
                .ok_or((number, format!("`run` {run} is not a run id")))?,
            None if runs.len() == 1 => runs[0].0,
            None => {
                return Err((
                    number,
                    "a frame without `run` in a file of several runs".into(),
                ))
            }
        };
        if !runs.iter().any(|(r, _)| *r == run) {
            return Err((number, format!("run {run} is not in the header's `runs`")));
        }
        let (header, snapshot) = decode_frame(frame).map_err(|e| (number, e.to_string()))?;
        checked.push(Line {
            number,
            run,
            header,
            snapshot,
        });
    }
    Ok(Export {
        runs,
        lines: checked,
    })
}

/// Imports the export at `path` into `store` under `watch`: one new run per run of the file
/// (with its aggregations), then every tick with its `seq`, `ts_ms` and `interval_ms`.
pub fn import(path: &Path, watch: &str, store: &mut Store) -> Result<Imported, ImportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ImportError::Read {
        path: path.to_owned(),
        source,
    })?;
    let export = parse(&text).map_err(|(line, message)| ImportError::Malformed {
        path: path.to_owned(),
        line,
        message,
    })?;
    let total = export.lines.len();
    // Where the write stopped, for the message: a line, or the commit after the last one.
    let mut at = "at the commit".to_owned();
    let runs = store
        .in_one_transaction(|store| {
            let mut created: Vec<u64> = Vec::new();
            let mut mapped: HashMap<u64, u64> = HashMap::new();
            for (run, infos) in &export.runs {
                // The run began where its first tick's interval did (0 without ticks).
                let started_ms = export
                    .lines
                    .iter()
                    .find(|l| l.run == *run)
                    .map_or(0, |l| l.header.ts_ms.saturating_sub(l.header.interval_ms));
                at = "line 1, the header's runs".to_owned();
                let new = store.begin_run(watch, infos, started_ms)?;
                created.push(new);
                mapped.insert(*run, new);
            }
            for line in export.lines {
                let tick = StoredTick {
                    run: mapped[&line.run],
                    seq: line.header.seq,
                    ts_ms: line.header.ts_ms,
                    interval_ms: line.header.interval_ms,
                    snapshot: line.snapshot,
                };
                at = format!("line {}", line.number);
                store.append(watch, &tick)?;
            }
            at = "at the commit".to_owned();
            Ok(created)
        })
        .map_err(|source| ImportError::Store {
            path: path.to_owned(),
            at: at.clone(),
            watch: watch.to_owned(),
            source: Box::new(source),
        })?;
    Ok(Imported { runs, ticks: total })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("heat-actix-import-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    const HEADER: &str = r#"{"type":"export","format":"heat-actix-ndjson-1","watch":"w","from":0,"to":9,"runs":[{"run":4,"aggregations":[{"name":"@lat","kind":"hist"}]}]}"#;
    const FRAME: &str = r#"{"type":"frame","seq":3,"ts_ms":1000,"interval_ms":200,"aggregations":[{"name":"@lat","kind":"hist","series":[{"key":["read"],"buckets":[[4,7,9]]}]}],"run":4}"#;

    #[test]
    fn an_export_is_imported_as_new_runs_with_its_ticks() {
        let dir = temp("ok");
        let file = dir.join("x.ndjson");
        std::fs::write(&file, format!("{HEADER}\n{FRAME}\n\n")).unwrap();
        let mut store = Store::open(&dir.join("s.sqlite")).unwrap();
        let imported = import(&file, "copy", &mut store).unwrap();
        assert_eq!(
            imported,
            Imported {
                runs: vec![1],
                ticks: 1
            }
        );
        let ticks = store.read("copy", 0, 2000, None).unwrap();
        assert_eq!(ticks.len(), 1);
        assert_eq!((ticks[0].run, ticks[0].seq, ticks[0].ts_ms), (1, 3, 1000));
        let again = import(&file, "copy", &mut store).unwrap();
        assert_eq!(again.runs, vec![2], "a second import is a run of its own");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_failure_midway_keeps_nothing_of_the_file() {
        let dir = temp("midway");
        let file = dir.join("x.ndjson");
        // The same tick twice: the store refuses the second (one row per run, seq and time).
        let later = FRAME
            .replace("\"seq\":3", "\"seq\":4")
            .replace("1000", "1200");
        std::fs::write(&file, format!("{HEADER}\n{FRAME}\n{later}\n{FRAME}\n")).unwrap();
        let mut store = Store::open(&dir.join("s.sqlite")).unwrap();
        let err = import(&file, "copy", &mut store).unwrap_err();
        assert!(matches!(err, ImportError::Store { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("line 4") && message.contains("nothing was imported"),
            "{message}"
        );
        assert!(
            store.watches().unwrap().is_empty(),
            "no run, no tick of the file is stored"
        );
        // The store goes on: a good file imports as the watch's first run.
        std::fs::write(&file, format!("{HEADER}\n{FRAME}\n{later}\n")).unwrap();
        let imported = import(&file, "copy", &mut store).unwrap();
        assert_eq!(
            imported,
            Imported {
                runs: vec![1],
                ticks: 2
            }
        );
        assert_eq!(store.read("copy", 0, 2000, None).unwrap().len(), 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_malformed_line_is_named_and_nothing_is_written() {
        let dir = temp("bad");
        let file = dir.join("x.ndjson");
        let mut store = Store::open(&dir.join("s.sqlite")).unwrap();
        for (text, line, says) in [
            (
                format!("{HEADER}\n{FRAME}\n{{\"type\":\"frame\"\n"),
                3,
                "malformed JSON",
            ),
            (
                format!("{HEADER}\n{}\n", FRAME.replace("\"run\":4", "\"run\":5")),
                2,
                "run 5",
            ),
            (format!("{FRAME}\n"), 1, "export header"),
            (HEADER.replace("ndjson-1", "ndjson-9"), 1, "format"),
            (
                format!("{HEADER}\n{}\n", FRAME.replace("[4,7,9]", "[4,7]")),
                2,
                "not a frame",
            ),
            (String::new(), 1, "empty"),
        ] {
            std::fs::write(&file, &text).unwrap();
            let err = import(&file, "copy", &mut store).unwrap_err().to_string();
            assert!(
                err.contains(&format!("line {line}:")) && err.contains(says),
                "{text}: {err}"
            );
            assert!(err.contains("nothing was imported"), "{err}");
        }
        assert!(store.watches().unwrap().is_empty(), "nothing was written");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
