//! The one aggregation data model every backend decodes into, and how it is written on the wire.
//!
//! A [`Snapshot`] is what one walk found: for every aggregation of the program, the series
//! (one per key) aggregated since the previous walk. Backends build it; sessions serialise it
//! into frames without knowing which backend made it.

use std::collections::HashMap;

use serde::ser::{SerializeMap, SerializeTuple};
use serde::{Deserialize, Serialize, Serializer};

/// The aggregating function behind a map, which decides how its values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggKind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    Stats,
    Stddev,
    /// Power-of-two buckets (bpftrace `hist`).
    Hist,
    /// Linear buckets (bpftrace `lhist`).
    Lhist,
    /// DTrace power-of-two buckets.
    Quantize,
    /// DTrace linear buckets.
    Lquantize,
    /// DTrace log-linear buckets.
    Llquantize,
}

impl AggKind {
    /// True for the kinds whose values are bucket lists.
    pub fn is_histogram(self) -> bool {
        matches!(
            self,
            AggKind::Hist
                | AggKind::Lhist
                | AggKind::Quantize
                | AggKind::Lquantize
                | AggKind::Llquantize
        )
    }

    /// The bpftrace function name for this kind, if bpftrace has one.
    pub fn from_bpftrace(function: &str) -> Option<AggKind> {
        Some(match function {
            "count" => AggKind::Count,
            "sum" => AggKind::Sum,
            "avg" => AggKind::Avg,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "stats" => AggKind::Stats,
            "hist" => AggKind::Hist,
            "lhist" => AggKind::Lhist,
            _ => return None,
        })
    }
}

/// One part of a map key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum KeyPart {
    Int(i64),
    Str(String),
}

impl KeyPart {
    /// Reads a key part printed as text: integers become numbers, anything else a string.
    pub fn parse(text: &str) -> KeyPart {
        match text.parse::<i64>() {
            Ok(n) => KeyPart::Int(n),
            Err(_) => KeyPart::Str(text.to_owned()),
        }
    }
}

/// A histogram bucket with inclusive bounds; `None` is an open end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
    pub count: u64,
}

impl Serialize for Bucket {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(3)?;
        tuple.serialize_element(&self.lo)?;
        tuple.serialize_element(&self.hi)?;
        tuple.serialize_element(&self.count)?;
        tuple.end()
    }
}

/// The value of one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// count, sum, avg, min, max: one number.
    Scalar(i64),
    /// stats: count, total and their integer average.
    Stats {
        count: u64,
        total: i64,
        average: i64,
    },
    /// DTrace stddev: what stats has, and the standard deviation as `dtrace` prints it.
    Deviation {
        count: u64,
        total: i64,
        average: i64,
        stddev: u64,
    },
    /// Histogram kinds: non-empty buckets in ascending order.
    Buckets(Vec<Bucket>),
}

/// The aggregated value of one key.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub key: Vec<KeyPart>,
    pub value: Value,
    /// Histograms: the exact sum of the values counted, when the program keeps one beside
    /// the histogram (bpftrace `@name_sum`, the native programs' sum slot); `None` when it does
    /// not. An `i128`: a tick's sum is a tracer's 64-bit sum, and adding ticks (roll-ups,
    /// folded keys) can then neither overflow nor round. Not on the wire (frames are unchanged).
    pub sum: Option<i128>,
}

impl Series {
    /// A histogram series; zero buckets are dropped and the rest put in ascending order,
    /// which is what the wire promises whatever order the tracer printed.
    pub fn histogram(key: Vec<KeyPart>, mut buckets: Vec<Bucket>) -> Series {
        buckets.retain(|b| b.count > 0);
        // An open lower end sorts first: `None < Some(_)`.
        buckets.sort_by_key(|b| (b.lo, b.hi));
        Series {
            key,
            value: Value::Buckets(buckets),
            sum: None,
        }
    }

    /// Total events in the series (bucket counts, or the stats count), if it counts events.
    pub fn events(&self) -> Option<u64> {
        match &self.value {
            Value::Buckets(b) => Some(b.iter().map(|b| b.count).sum()),
            Value::Stats { count, .. } | Value::Deviation { count, .. } => Some(*count),
            Value::Scalar(_) => None,
        }
    }
}

impl Serialize for Series {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = match self.value {
            Value::Stats { .. } => 4,
            Value::Deviation { .. } => 5,
            _ => 2,
        };
        let mut map = serializer.serialize_map(Some(fields))?;
        map.serialize_entry("key", &self.key)?;
        match &self.value {
            Value::Scalar(v) => map.serialize_entry("value", v)?,
            Value::Stats {
                count,
                total,
                average,
            } => {
                map.serialize_entry("value", average)?;
                map.serialize_entry("count", count)?;
                map.serialize_entry("total", total)?;
            }
            Value::Deviation {
                count,
                total,
                average,
                stddev,
            } => {
                map.serialize_entry("value", stddev)?;
                map.serialize_entry("count", count)?;
                map.serialize_entry("total", total)?;
                map.serialize_entry("average", average)?;
            }
            Value::Buckets(b) => map.serialize_entry("buckets", b)?,
        }
        map.end()
    }
}

/// A linear bucket layout known before any data arrives (lhist/lquantize parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layout {
    pub min: i64,
    pub max: i64,
    pub step: i64,
}

/// What a program will aggregate, announced in `started`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationInfo {
    pub name: String,
    pub kind: AggKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<Layout>,
}

/// One aggregation's data for one interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregation {
    pub name: String,
    pub kind: AggKind,
    pub series: Vec<Series>,
    /// How many keys were folded into the `["other"]` series to respect the key limit.
    #[serde(skip_serializing_if = "is_zero")]
    pub folded: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The key of the series that holds whatever the key limit folded away.
pub const OTHER_KEY: &str = "other";

impl Aggregation {
    /// An aggregation with no data yet.
    pub fn empty(info: &AggregationInfo) -> Aggregation {
        Aggregation {
            name: info.name.clone(),
            kind: info.kind,
            series: Vec::new(),
            folded: 0,
        }
    }

    /// Keeps the `max` busiest keys (by events, else by value) and folds the rest into one
    /// `["other"]` series, so a script keyed by something unbounded cannot flood a browser.
    pub fn fold_keys(&mut self, max: usize) {
        if self.series.len() <= max {
            return;
        }
        let weight = |s: &Series| match s.value {
            Value::Scalar(v) => v.unsigned_abs(),
            _ => s.events().unwrap_or(0),
        };
        self.series.sort_by_key(|s| std::cmp::Reverse(weight(s)));
        let keep = max.saturating_sub(1).max(1);
        let rest: Vec<Series> = self.series.drain(keep..).collect();
        self.folded = rest.len();
        let mut other: Option<Series> = None;
        for series in rest {
            match &mut other {
                None => {
                    other = Some(Series {
                        key: vec![KeyPart::Str(OTHER_KEY.into())],
                        value: series.value,
                        sum: series.sum,
                    })
                }
                Some(o) => merge_series(self.kind, o, series),
            }
        }
        self.series.extend(other);
    }

    /// Folds series whose keys became equal (e.g. after renaming keys) into one.
    pub fn merge_equal_keys(&mut self) {
        if self.series.len() < 2 {
            return;
        }
        self.series.sort_by(|a, b| a.key.cmp(&b.key));
        let mut merged: Vec<Series> = Vec::with_capacity(self.series.len());
        for series in self.series.drain(..) {
            match merged.last_mut() {
                Some(last) if last.key == series.key => merge_series(self.kind, last, series),
                _ => merged.push(series),
            }
        }
        self.series = merged;
    }
}

/// Merges a series of the same key into another: values as [`merge_value`] does, and the
/// exact sums add when both have one (a sum of only some of the events would not be exact).
fn merge_series(kind: AggKind, into: &mut Series, from: Series) {
    into.sum = match (into.sum, from.sum) {
        (Some(a), Some(b)) => Some(a.saturating_add(b)),
        _ => None,
    };
    merge_value(kind, &mut into.value, from.value);
}

pub(crate) fn merge_value(kind: AggKind, into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Scalar(a), Value::Scalar(b)) => {
            *a = match kind {
                AggKind::Min => (*a).min(b),
                AggKind::Max => (*a).max(b),
                // Without counts an average of averages is the best available.
                AggKind::Avg => ((i128::from(*a) + i128::from(b)) / 2) as i64,
                // Sums wrap as the tracer's own 64-bit sums do, so frames still add up to
                // what it counted, and no input can make the server panic.
                _ => a.wrapping_add(b),
            }
        }
        (
            Value::Stats {
                count,
                total,
                average,
            },
            Value::Stats {
                count: c, total: t, ..
            },
        ) => {
            *count = count.saturating_add(c);
            *total = total.wrapping_add(t);
            *average = if *count == 0 {
                0
            } else {
                *total / *count as i64
            };
        }
        (Value::Buckets(a), Value::Buckets(b)) if is_sorted(a) && is_sorted(&b) => {
            // Both ascending, as `Series::histogram` leaves them: one merge pass.
            let mut merged = Vec::with_capacity(a.len().max(b.len()));
            let mut left = std::mem::take(a).into_iter().peekable();
            let mut right = b.into_iter().peekable();
            loop {
                let next = match (left.peek(), right.peek()) {
                    (Some(x), Some(y)) => match (x.lo, x.hi).cmp(&(y.lo, y.hi)) {
                        std::cmp::Ordering::Less => left.next(),
                        std::cmp::Ordering::Greater => right.next(),
                        std::cmp::Ordering::Equal => {
                            let mut x = left.next().expect("peeked");
                            x.count = x.count.saturating_add(right.next().expect("peeked").count);
                            Some(x)
                        }
                    },
                    (Some(_), None) => left.next(),
                    (None, _) => right.next(),
                };
                match next {
                    Some(bucket) => merged.push(bucket),
                    None => break,
                }
            }
            *a = merged;
        }
        (Value::Buckets(a), Value::Buckets(b)) => {
            for bucket in b {
                match a
                    .iter_mut()
                    .find(|x| x.lo == bucket.lo && x.hi == bucket.hi)
                {
                    Some(x) => x.count = x.count.saturating_add(bucket.count),
                    None => a.push(bucket),
                }
            }
            a.sort_by_key(|b| (b.lo, b.hi));
        }
        // A standard deviation cannot be merged without its sum of squares, and mixed value
        // shapes cannot come from one map; keep what is there.
        _ => {}
    }
}

/// Whether buckets are in strictly ascending (lo, hi) order.
fn is_sorted(buckets: &[Bucket]) -> bool {
    buckets
        .windows(2)
        .all(|w| (w[0].lo, w[0].hi) < (w[1].lo, w[1].hi))
}

/// Everything one walk found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Snapshot {
    pub aggregations: Vec<Aggregation>,
    /// Text the program printed during the interval.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
    /// Data the tracer dropped during the interval, in its own words (DTrace drop handler).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<String>,
    /// Errors the program hit while running (DTrace error handler), in the tracer's words.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Aggregation {
    /// Adds a later interval of the same aggregation: counts and sums add, min and max keep
    /// the extreme, histogram buckets add bucket by bucket. Nothing is dropped.
    pub fn absorb(&mut self, later: Aggregation) {
        self.folded = self.folded.max(later.folded);
        if self.series.is_empty() {
            self.series = later.series;
            return;
        }
        // One hash lookup per series: summing many wide snapshots (a store read of an hour of
        // 300-key ticks) must not compare every key with every other.
        let found: Vec<Option<usize>> = {
            let index: HashMap<&[KeyPart], usize> = self
                .series
                .iter()
                .enumerate()
                .map(|(at, s)| (s.key.as_slice(), at))
                .collect();
            later
                .series
                .iter()
                .map(|s| index.get(s.key.as_slice()).copied())
                .collect()
        };
        let known = self.series.len();
        for (series, at) in later.series.into_iter().zip(found) {
            // A key new here may still repeat within `later`.
            let at = at.or_else(|| {
                self.series[known..]
                    .iter()
                    .position(|s| s.key == series.key)
                    .map(|p| known + p)
            });
            match at {
                Some(at) => merge_series(self.kind, &mut self.series[at], series),
                None => self.series.push(series),
            }
        }
    }
}

impl Snapshot {
    /// An empty snapshot with every announced aggregation present, in program order.
    pub fn empty(infos: &[AggregationInfo]) -> Snapshot {
        Snapshot {
            aggregations: infos.iter().map(Aggregation::empty).collect(),
            ..Default::default()
        }
    }

    /// Whether nothing was aggregated, printed or reported.
    pub fn is_empty(&self) -> bool {
        self.aggregations.iter().all(|a| a.series.is_empty())
            && self.output.is_empty()
            && self.drops.is_empty()
            && self.errors.is_empty()
    }

    /// Adds what a later walk found, so two intervals become one: aggregations are matched by
    /// name (one this snapshot lacks is appended), text and reports are appended in order.
    pub fn absorb(&mut self, later: Snapshot) {
        for aggregation in later.aggregations {
            match self
                .aggregations
                .iter_mut()
                .find(|a| a.name == aggregation.name)
            {
                Some(a) => a.absorb(aggregation),
                None => self.aggregations.push(aggregation),
            }
        }
        self.output.extend(later.output);
        self.drops.extend(later.drops);
        self.errors.extend(later.errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_serialise_as_triples_with_null_open_ends() {
        let s = Series::histogram(
            vec![KeyPart::Str("read".into())],
            vec![
                Bucket {
                    lo: Some(64),
                    hi: None,
                    count: 1,
                },
                Bucket {
                    lo: Some(2),
                    hi: Some(3),
                    count: 0,
                },
                Bucket {
                    lo: None,
                    hi: Some(-1),
                    count: 4,
                },
                Bucket {
                    lo: Some(0),
                    hi: Some(1),
                    count: 12,
                },
            ],
        );
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"key":["read"],"buckets":[[null,-1,4],[0,1,12],[64,null,1]]}"#
        );
    }

    #[test]
    fn scalars_and_stats_carry_value() {
        let s = Series {
            key: vec![],
            value: Value::Scalar(136),
            sum: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"key":[],"value":136}"#
        );
        let s = Series {
            key: vec![KeyPart::Int(7)],
            value: Value::Stats {
                count: 5,
                total: 100,
                average: 20,
            },
            sum: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"key":[7],"value":20,"count":5,"total":100}"#
        );
        let s = Series {
            key: vec![],
            value: Value::Deviation {
                count: 8,
                total: 40,
                average: 5,
                stddev: 2,
            },
            sum: None,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"key":[],"value":2,"count":8,"total":40,"average":5}"#
        );
    }

    #[test]
    fn merging_equal_keys_adds_counts_and_keeps_extremes() {
        let key = || vec![KeyPart::Str("x".into())];
        let mut agg = Aggregation {
            folded: 0,
            name: "@h".into(),
            kind: AggKind::Hist,
            series: vec![
                Series::histogram(
                    key(),
                    vec![Bucket {
                        lo: Some(1),
                        hi: Some(1),
                        count: 2,
                    }],
                ),
                Series::histogram(
                    key(),
                    vec![
                        Bucket {
                            lo: Some(1),
                            hi: Some(1),
                            count: 3,
                        },
                        Bucket {
                            lo: Some(0),
                            hi: Some(0),
                            count: 1,
                        },
                    ],
                ),
            ],
        };
        agg.merge_equal_keys();
        assert_eq!(agg.series.len(), 1);
        assert_eq!(
            agg.series[0].value,
            Value::Buckets(vec![
                Bucket {
                    lo: Some(0),
                    hi: Some(0),
                    count: 1
                },
                Bucket {
                    lo: Some(1),
                    hi: Some(1),
                    count: 5
                }
            ])
        );
        let mut max = Aggregation {
            folded: 0,
            name: "@m".into(),
            kind: AggKind::Max,
            series: vec![
                Series {
                    key: key(),
                    value: Value::Scalar(3),
                    sum: None,
                },
                Series {
                    key: key(),
                    value: Value::Scalar(9),
                    sum: None,
                },
            ],
        };
        max.merge_equal_keys();
        assert_eq!(max.series[0].value, Value::Scalar(9));
    }

    #[test]
    fn folding_keeps_the_busiest_keys_and_sums_the_rest() {
        let series = |k: i64, n: i64| Series {
            key: vec![KeyPart::Int(k)],
            value: Value::Scalar(n),
            sum: None,
        };
        let mut agg = Aggregation {
            name: "@c".into(),
            kind: AggKind::Count,
            series: (0..10).map(|k| series(k, k * 10)).collect(),
            folded: 0,
        };
        agg.fold_keys(4);
        assert_eq!(agg.series.len(), 4);
        assert_eq!(agg.folded, 7);
        assert_eq!(agg.series[0], series(9, 90));
        assert_eq!(agg.series[3].key, vec![KeyPart::Str("other".into())]);
        assert_eq!(
            agg.series[3].value,
            Value::Scalar((0..7).map(|k| k * 10).sum())
        );
        let json = serde_json::to_value(&agg).unwrap();
        assert_eq!(json["folded"], 7);
    }

    #[test]
    fn key_parts_keep_numbers_numeric() {
        assert_eq!(KeyPart::parse("1234"), KeyPart::Int(1234));
        assert_eq!(KeyPart::parse("-3"), KeyPart::Int(-3));
        assert_eq!(KeyPart::parse("bash"), KeyPart::Str("bash".into()));
        assert_eq!(KeyPart::parse("12ab"), KeyPart::Str("12ab".into()));
    }

    #[test]
    fn absorbing_a_later_interval_adds_exactly() {
        let info = |name: &str, kind| AggregationInfo {
            name: name.into(),
            kind,
            layout: None,
        };
        let key = |k: &str| vec![KeyPart::Str(k.into())];
        let bucket = |lo, hi, count| Bucket {
            lo: Some(lo),
            hi,
            count,
        };
        let mut first = Snapshot::empty(&[info("@h", AggKind::Hist), info("@m", AggKind::Max)]);
        first.aggregations[0]
            .series
            .push(Series::histogram(key("read"), vec![bucket(4, Some(7), 2)]));
        first.aggregations[1].series.push(Series {
            key: vec![],
            value: Value::Scalar(9),
            sum: None,
        });
        first.output.push("one".into());
        let mut later = Snapshot::empty(&[info("@h", AggKind::Hist), info("@m", AggKind::Max)]);
        later.aggregations[0].series.push(Series::histogram(
            key("read"),
            vec![bucket(4, Some(7), 3), bucket(8, None, 1)],
        ));
        later.aggregations[0]
            .series
            .push(Series::histogram(key("write"), vec![bucket(0, Some(0), 1)]));
        later.aggregations[1].series.push(Series {
            key: vec![],
            value: Value::Scalar(4),
            sum: None,
        });
        later.output.push("two".into());
        first.absorb(later);
        let h = &first.aggregations[0].series;
        assert_eq!(
            h[0].value,
            Value::Buckets(vec![bucket(4, Some(7), 5), bucket(8, None, 1)])
        );
        assert_eq!(h[1].key, key("write"));
        assert_eq!(first.aggregations[1].series[0].value, Value::Scalar(9));
        assert_eq!(first.output, ["one", "two"]);
        assert!(!first.is_empty());
        assert!(Snapshot::empty(&[info("@h", AggKind::Hist)]).is_empty());
    }

    #[test]
    fn absorbing_merges_repeated_keys_and_unsorted_buckets_too() {
        let b = |lo, count| Bucket {
            lo: Some(lo),
            hi: Some(lo),
            count,
        };
        let series = |k: &str, buckets| Series {
            key: vec![KeyPart::Str(k.into())],
            value: Value::Buckets(buckets),
            sum: None,
        };
        let agg = |series| Aggregation {
            name: "@h".into(),
            kind: AggKind::Lhist,
            series,
            folded: 0,
        };
        let mut first = agg(vec![series("a", vec![b(1, 1), b(3, 1)])]);
        first.absorb(agg(vec![
            series("b", vec![b(2, 1)]),
            series("a", vec![b(3, 2), b(2, 5)]),
            series("b", vec![b(2, 4), b(0, 1)]),
        ]));
        assert_eq!(
            first.series[0].value,
            Value::Buckets(vec![b(1, 1), b(2, 5), b(3, 3)])
        );
        assert_eq!(
            first.series[1].value,
            Value::Buckets(vec![b(0, 1), b(2, 5)])
        );
        assert_eq!(first.series.len(), 2);
    }

    #[test]
    fn merging_extreme_values_never_panics() {
        let info = AggregationInfo {
            name: "@s".into(),
            kind: AggKind::Sum,
            layout: None,
        };
        let one = |v| {
            let mut s = Snapshot::empty(std::slice::from_ref(&info));
            s.aggregations[0].series.push(Series {
                key: vec![],
                value: Value::Scalar(v),
                sum: None,
            });
            s
        };
        let mut a = one(i64::MAX);
        a.absorb(one(1));
        assert_eq!(a.aggregations[0].series[0].value, Value::Scalar(i64::MIN));
    }
}
