//! Decoding bpftrace's JSON output (`-f json`, from 0.17 to current releases) into the
//! aggregation model.
//!
//! What bpftrace prints, one JSON value per event (current releases may pretty-print across
//! lines, so values are read as a stream, not as lines):
//! - `{"type": "map"|"hist"|"stats", "data": {"@name": V}}` where V is a number (unkeyed
//!   scalar), a bucket array (unkeyed histogram), a stats object, or an object from key text to
//!   one of those (keyed). Multi-part keys are joined with `,` (`"bash,257"`).
//! - buckets `{"min": lo, "max": hi, "count": n}`, inclusive; `min` is missing on the bucket
//!   below the range, `max` on the bucket above it.
//! - bpftrace 0.17's `hist()` counts every value from 2^31 up in one bucket and prints it as
//!   `{"min": -2147483648, "max": 0}` (its text output says `[2G, 4G)`); that is the open-ended
//!   top bucket `[2^31, …)`. No real bucket of `hist` or `lhist` has those edges.
//! - a keyed map with no entries prints nothing; an unkeyed scalar prints 0.
//! - `{"type": "attached_probes", "data": {"probes": N}}` once attached, `printf` as
//!   `{"type": "printf", "data": "text"}`.

use std::io::BufRead;

use serde_json::{Map, Value as Json};

use super::program::{MapSpec, WALK_MARKER};
use crate::aggregation::{AggKind, Aggregation, Bucket, KeyPart, Series, Value};

/// What went wrong reading one piece of bpftrace output.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DecodeError {
    /// The value of a map did not have the shape its aggregating function prints.
    #[error("map {map}: unexpected {what} in bpftrace output")]
    Shape { map: String, what: &'static str },
}

/// One event of bpftrace's output stream.
#[derive(Debug, PartialEq)]
pub enum Event {
    /// The program is attached (bpftrace's `attached_probes`).
    Attached { probes: u64 },
    /// One printed map.
    Map { name: String, value: Json },
    /// The walk with this number is complete.
    WalkDone(u64),
    /// Text from the program's `printf`, `time` and similar.
    Text(String),
    /// Anything else (lost events, helper errors, …), kept as printed.
    Other(Json),
}

impl Event {
    /// Classifies one JSON value printed by bpftrace.
    pub fn from_json(json: Json) -> Event {
        let Json::Object(mut object) = json else {
            return Event::Other(json);
        };
        let kind = object
            .get("type")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let data = object.remove("data").unwrap_or(Json::Null);
        match kind.as_str() {
            "attached_probes" => Event::Attached {
                probes: data.get("probes").and_then(Json::as_u64).unwrap_or(0),
            },
            "map" | "hist" | "stats" => match data {
                Json::Object(maps) if maps.len() == 1 => {
                    let (name, value) = maps.into_iter().next().expect("one entry");
                    Event::Map { name, value }
                }
                other => {
                    object.insert("data".into(), other);
                    Event::Other(Json::Object(object))
                }
            },
            "printf" | "time" | "join" | "cat" | "value" | "syscall" => match data {
                Json::String(text) => match text.strip_prefix(WALK_MARKER) {
                    Some(n) => match n.trim().parse() {
                        Ok(n) => Event::WalkDone(n),
                        Err(_) => Event::Text(text),
                    },
                    None => Event::Text(text),
                },
                other => Event::Text(other.to_string()),
            },
            _ => {
                object.insert("data".into(), data);
                Event::Other(Json::Object(object))
            }
        }
    }
}

/// Most bytes of one JSON value accepted from bpftrace before it is treated as plain text.
const JSON_VALUE_LIMIT: usize = 256 * 1024 * 1024;

/// The events in bpftrace's output, until it ends. One value per line is the norm; a value
/// spread over several lines is read once complete; a line that is not JSON is [`Event::Text`].
pub fn events(reader: impl BufRead) -> impl Iterator<Item = Event> {
    let mut lines = reader.lines();
    let mut pending = String::new();
    let mut depth = Depth::default();
    std::iter::from_fn(move || loop {
        let Some(Ok(line)) = lines.next() else {
            return None;
        };
        if pending.is_empty() && line.trim().is_empty() {
            continue;
        }
        depth.scan(&line);
        pending.push_str(&line);
        pending.push('\n');
        // A pretty-printed value is parsed once its brackets close, not at every line (which
        // would parse a large map quadratically often); text that does not open a value is
        // parsed (and found not to be JSON) at once.
        let opens_value = pending.trim_start().starts_with(['{', '[']);
        if opens_value && depth.open() && pending.len() < JSON_VALUE_LIMIT {
            continue;
        }
        depth = Depth::default();
        match serde_json::from_str::<Json>(&pending) {
            Ok(json) => {
                pending.clear();
                return Some(Event::from_json(json));
            }
            Err(e) if e.is_eof() && pending.len() < JSON_VALUE_LIMIT => {}
            Err(_) => return Some(Event::Text(std::mem::take(&mut pending))),
        }
    })
}

/// How deeply nested the JSON text seen so far is, strings skipped.
#[derive(Debug, Default)]
struct Depth {
    level: i64,
    in_string: bool,
    escaped: bool,
}

impl Depth {
    fn scan(&mut self, text: &str) {
        for c in text.chars() {
            if self.in_string {
                match (self.escaped, c) {
                    (true, _) => self.escaped = false,
                    (false, '\\') => self.escaped = true,
                    (false, '"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.level += 1,
                '}' | ']' => self.level -= 1,
                _ => {}
            }
        }
    }

    fn open(&self) -> bool {
        self.level > 0 || self.in_string
    }
}

/// Decodes the printed value of one aggregation map.
pub fn decode_map(spec: &MapSpec, value: &Json) -> Result<Aggregation, DecodeError> {
    let name = &spec.info.name;
    let kind = spec.info.kind;
    let shape = |what| DecodeError::Shape {
        map: name.clone(),
        what,
    };
    let mut series = Vec::new();
    let keyed = spec.arity > 0 || (kind != AggKind::Stats && value.is_object());
    if keyed {
        let Json::Object(entries) = value else {
            return Err(shape("non-object for a keyed map"));
        };
        series.reserve(entries.len());
        for (key, v) in entries {
            series.push(
                decode_value(kind, split_key(key, spec.arity), v).ok_or_else(|| shape("value"))?,
            );
        }
    } else {
        series.push(decode_value(kind, Vec::new(), value).ok_or_else(|| shape("value"))?);
    }
    Ok(Aggregation {
        folded: 0,
        name: name.clone(),
        kind,
        series,
    })
}

fn decode_value(kind: AggKind, key: Vec<KeyPart>, v: &Json) -> Option<Series> {
    Some(match (kind, v) {
        (_, Json::Array(buckets)) if kind.is_histogram() => {
            let buckets = buckets
                .iter()
                .map(decode_bucket)
                .collect::<Option<Vec<_>>>()?;
            Series::histogram(key, buckets)
        }
        (AggKind::Stats, Json::Object(stats)) => Series {
            key,
            value: decode_stats(stats)?,
        },
        // bpftrace prints avg() as a bare number under the "stats" type.
        (_, Json::Number(_)) if !kind.is_histogram() => Series {
            key,
            value: Value::Scalar(int(v)?),
        },
        _ => return None,
    })
}

fn decode_stats(stats: &Map<String, Json>) -> Option<Value> {
    Some(Value::Stats {
        count: stats.get("count").and_then(Json::as_u64)?,
        total: stats.get("total").and_then(int)?,
        average: stats.get("average").and_then(int)?,
    })
}

/// Where bpftrace 0.17's `hist()` top bucket starts: its log2 stops at 32 bits.
pub const HIST_TOP: i64 = 1 << 31;

/// How bpftrace 0.17 prints that top bucket's edges (a 32-bit overflow).
const HIST_TOP_PRINTED: (Option<i64>, Option<i64>) = (Some(i32::MIN as i64), Some(0));

fn decode_bucket(b: &Json) -> Option<Bucket> {
    let b = b.as_object()?;
    let mut edges = (b.get("min").and_then(int), b.get("max").and_then(int));
    if edges == HIST_TOP_PRINTED {
        edges = (Some(HIST_TOP), None);
    }
    Some(Bucket {
        lo: edges.0,
        hi: edges.1,
        count: b.get("count").and_then(Json::as_u64)?,
    })
}

/// An integer, saturating the rare u64 above `i64::MAX` rather than losing the sample.
fn int(v: &Json) -> Option<i64> {
    v.as_i64().or_else(|| v.as_u64().map(|_| i64::MAX))
}

/// Splits a printed key (`"bash,257"`) into `arity` parts. Commas inside the last part survive;
/// a comma inside an earlier string part cannot be told from a separator in bpftrace's output.
fn split_key(key: &str, arity: usize) -> Vec<KeyPart> {
    if arity <= 1 {
        return vec![KeyPart::parse(key)];
    }
    key.splitn(arity, ',').map(KeyPart::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::AggregationInfo;

    fn spec(name: &str, kind: AggKind, arity: usize) -> MapSpec {
        MapSpec {
            info: AggregationInfo {
                name: name.into(),
                kind,
                layout: None,
            },
            arity,
        }
    }

    fn map_event(line: &str) -> (String, Json) {
        match Event::from_json(serde_json::from_str(line).unwrap()) {
            Event::Map { name, value } => (name, value),
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn bpftrace_0_17s_overflowed_hist_top_bucket_opens_at_2_to_the_31() {
        // Printed by bpftrace 0.17 for `@n = hist(1 << 30); @n = hist(nsecs); @n = hist(1 << 31);`.
        let (_, v) = map_event(
            r#"{"type": "hist", "data": {"@n": [{"min": 1073741824, "max": 2147483647, "count": 1}, {"min": -2147483648, "max": 0, "count": 2}]}}"#,
        );
        let agg = decode_map(&spec("@n", AggKind::Hist, 0), &v).unwrap();
        assert_eq!(
            agg.series[0].value,
            Value::Buckets(vec![
                Bucket {
                    lo: Some(1 << 30),
                    hi: Some((1 << 31) - 1),
                    count: 1
                },
                Bucket {
                    lo: Some(1 << 31),
                    hi: None,
                    count: 2
                }
            ])
        );
    }

    #[test]
    fn a_pretty_printed_value_is_parsed_once_its_brackets_close() {
        let input = "{\n  \"type\": \"printf\",\n  \"data\": \"a } and a \\\" in text\"\n}\nplain { text\n{\"type\": \"map\", \"data\": {\"@n\": 3}}\n";
        let got: Vec<Event> = events(input.as_bytes()).collect();
        assert_eq!(
            got,
            vec![
                Event::Text("a } and a \" in text".into()),
                Event::Text("plain { text\n".into()),
                Event::Map {
                    name: "@n".into(),
                    value: serde_json::json!(3)
                },
            ]
        );
    }

    #[test]
    fn open_ended_buckets_become_nulls() {
        let (_, v) = map_event(
            r#"{"type": "hist", "data": {"@l": [{"max": -1, "count": 2}, {"min": 0, "max": 1, "count": 0}, {"min": 63, "count": 1}]}}"#,
        );
        let agg = decode_map(&spec("@l", AggKind::Lhist, 0), &v).unwrap();
        assert_eq!(
            agg.series[0].value,
            Value::Buckets(vec![
                Bucket {
                    lo: None,
                    hi: Some(-1),
                    count: 2
                },
                Bucket {
                    lo: Some(63),
                    hi: None,
                    count: 1
                }
            ])
        );
    }

    #[test]
    fn multi_part_keys_split_by_arity() {
        let (_, v) = map_event(r#"{"type": "map", "data": {"@mk": {"1,a,b": 3}}}"#);
        let agg = decode_map(&spec("@mk", AggKind::Count, 2), &v).unwrap();
        assert_eq!(
            agg.series[0].key,
            vec![KeyPart::Int(1), KeyPart::Str("a,b".into())]
        );
        assert_eq!(agg.series[0].value, Value::Scalar(3));
    }

    #[test]
    fn unkeyed_stats_and_keyed_stats_differ_by_arity() {
        let (_, v) = map_event(
            r#"{"type": "stats", "data": {"@s": {"count": 2, "average": 6, "total": 12}}}"#,
        );
        let agg = decode_map(&spec("@s", AggKind::Stats, 0), &v).unwrap();
        assert_eq!(agg.series[0].key, vec![]);
        assert_eq!(
            agg.series[0].value,
            Value::Stats {
                count: 2,
                total: 12,
                average: 6
            }
        );
        let (_, v) = map_event(
            r#"{"type": "stats", "data": {"@s": {"curl": {"count": 1, "average": 2, "total": 2}}}}"#,
        );
        let agg = decode_map(&spec("@s", AggKind::Stats, 1), &v).unwrap();
        assert_eq!(agg.series[0].key, vec![KeyPart::Str("curl".into())]);
    }

    #[test]
    fn wrong_shapes_are_errors_not_panics() {
        let err = decode_map(&spec("@h", AggKind::Hist, 0), &Json::String("x".into())).unwrap_err();
        assert!(matches!(err, DecodeError::Shape { .. }));
        assert!(decode_map(
            &spec("@h", AggKind::Hist, 1),
            &serde_json::json!({"k": [{"min": 1}]})
        )
        .is_err());
        assert!(decode_map(&spec("@n", AggKind::Count, 1), &serde_json::json!([1, 2])).is_err());
    }

    #[test]
    fn walk_marker_and_text_are_told_apart() {
        let done = Event::from_json(
            serde_json::json!({"type": "printf", "data": format!("{WALK_MARKER}12\n")}),
        );
        assert_eq!(done, Event::WalkDone(12));
        let text = Event::from_json(serde_json::json!({"type": "printf", "data": "hello\n"}));
        assert_eq!(text, Event::Text("hello\n".into()));
        let attached = Event::from_json(
            serde_json::json!({"type": "attached_probes", "count": 1, "data": {"probes": 3}}),
        );
        assert_eq!(attached, Event::Attached { probes: 3 });
    }
}
