//! Who turns watch ticks into Prometheus histograms: every `[[watch]]` with `export = true`
//! adds its histogram's per-tick deltas into cumulative series (native schema-0 and classic
//! buckets for log2 kinds, classic for linear ones) that `/metrics` encodes from the one
//! registry, kept across tracer restarts for the life of the server.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use parking_lot::Mutex;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeMetric, NativeHistogram, NativeHistogramBuckets, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::aggregation::{
    AggKind, AggregationInfo, Bucket, KeyPart, Layout, Snapshot, Value, OTHER_KEY,
};
use crate::config::Config;

/// The key label of a script's watch: its keys are whatever the script made them.
pub const SCRIPT_KEY_LABEL: &str = "key";

/// The key label whose keys name processes: exported only when the watch asks.
pub const PROCESS_KEY_LABEL: &str = "comm";

/// Folded keys remembered (to count each once); past this, folds are no longer counted.
const FOLDED_KEYS_TRACKED: usize = 100_000;

/// Every log2 classic bucket a family exports before it saw anything: `le` = 0, 1, 3, ...,
/// 2^31 - 1 (bpftrace's `hist` top; larger buckets join the ladder when seen).
const LOG2_LADDER_TOP_EXP: u32 = 31;

/// The Prometheus base unit of one of our units, for the family name.
pub fn prometheus_unit(unit: Option<&str>) -> &'static str {
    match unit {
        Some("ns") => "nanoseconds",
        Some("us") => "microseconds",
        Some("ms") => "milliseconds",
        Some("s") => "seconds",
        Some("bytes") => "bytes",
        Some("ms-offset") => "offset_milliseconds",
        _ => "value",
    }
}

/// A watch name as it goes into a metric name: lower case, anything outside `[a-z0-9_]` → `_`.
pub fn metric_name_part(watch: &str) -> String {
    watch
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The family an exported watch's histogram is: `heat_<watch>_<unit>`.
pub fn family_name(watch: &str, unit: Option<&str>) -> String {
    format!("heat_{}_{}", metric_name_part(watch), prometheus_unit(unit))
}

/// Whether a kind's buckets are powers of two (native histograms) or linear (classic only).
fn is_log2(kind: AggKind) -> bool {
    matches!(kind, AggKind::Hist | AggKind::Quantize)
}

/// Where one of our log2 buckets goes in a schema-0 native histogram, whose bucket `i` holds
/// `(2^(i-1), 2^i]` (negative `i`'s mirror: `[-2^i, -2^(i-1))`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NativeSlot {
    /// The zero bucket (threshold 0: exactly 0).
    Zero,
    Positive(i32),
    Negative(i32),
}

/// `ceil(log2(m))` for `m >= 1`: the schema-0 index whose upper bound is the first power of two
/// at or above `m`.
fn ceil_log2(m: u64) -> i32 {
    (64 - m.saturating_sub(1).leading_zeros()) as i32
}

/// Our log2 buckets are inclusive integer ranges `[2^k, 2^(k+1) - 1]`; each goes whole into the
/// native bucket whose upper bound is at or above its largest value: `(2^k, 2^(k+1)]`, index
/// k+1. Only values exactly 2^k (k >= 1) move, one bucket up; `[1, 1]` is index 0 exactly.
/// An open top `[2^k, inf)` is read as `[2^k, 2^(k+1) - 1]`; bpftrace's one negative bucket
/// `(-inf, -1]` as -1 (index 0); DTrace's negative buckets mirror the positive ones.
pub fn native_slot(bucket: &Bucket) -> NativeSlot {
    match (bucket.lo, bucket.hi) {
        (Some(0), Some(0)) => NativeSlot::Zero,
        (Some(lo), hi) if lo > 0 => {
            let lo = lo as u64;
            let top = match hi {
                Some(hi) => hi as u64,
                None => lo.saturating_mul(2) - 1,
            };
            NativeSlot::Positive(ceil_log2(top))
        }
        (lo, Some(hi)) if hi < 0 => {
            let magnitude = lo.map_or(hi.unsigned_abs(), i64::unsigned_abs);
            NativeSlot::Negative(ceil_log2(magnitude))
        }
        // A log2 layout has no other bucket; one spanning zero counts as zero.
        _ => NativeSlot::Zero,
    }
}

/// The classic `le` a bucket counts under: its inclusive upper bound; an open top only in
/// `+Inf` (`None`).
pub fn classic_le(bucket: &Bucket) -> Option<i64> {
    bucket.hi
}

/// The value a bucket's events are taken to have for `_sum` when the program kept no exact
/// sum (DTrace, scripts without an `@name_sum` map, the profile: see README): a closed
/// bucket's midpoint, an open one's finite end.
fn representative(bucket: &Bucket) -> f64 {
    match (bucket.lo, bucket.hi) {
        (Some(lo), Some(hi)) => (lo as f64 + hi as f64) / 2.0,
        (Some(lo), None) => lo as f64,
        (None, Some(hi)) => hi as f64,
        (None, None) => 0.0,
    }
}

/// The classic `le`s every series of a family exports from the start, so that series (and
/// instances) sum bucket by bucket.
fn ladder(kind: AggKind, layout: Option<Layout>) -> BTreeSet<i64> {
    if is_log2(kind) {
        return std::iter::once(0)
            .chain((0..=LOG2_LADDER_TOP_EXP - 1).map(|k| (1i64 << (k + 1)) - 1))
            .collect();
    }
    match layout {
        Some(Layout { min, max, step }) if step > 0 && max > min => {
            let mut les: BTreeSet<i64> = BTreeSet::new();
            les.insert(min - 1);
            let mut lo = min;
            while lo < max {
                les.insert(lo + step - 1);
                lo += step;
            }
            les
        }
        _ => BTreeSet::new(),
    }
}

/// One exported series: everything its key's ticks added since the server started.
#[derive(Debug, Clone)]
pub struct Cumulative {
    pub created: SystemTime,
    pub count: u64,
    /// What the program summed exactly (ticks whose series carried a sum).
    pub exact_sum: i128,
    /// Midpoint estimate for the ticks whose series carried none.
    pub estimated_sum: f64,
    /// Events whose value was estimated (in `estimated_sum`), 0 when `_sum` is exact.
    pub estimated: u64,
    pub zero: u64,
    pub positive: BTreeMap<i32, u64>,
    pub negative: BTreeMap<i32, u64>,
    /// Events by classic `le` (`None`: only in `+Inf`).
    pub classic: BTreeMap<Option<i64>, u64>,
}

impl Cumulative {
    fn new() -> Cumulative {
        Cumulative {
            created: SystemTime::now(),
            count: 0,
            exact_sum: 0,
            estimated_sum: 0.0,
            estimated: 0,
            zero: 0,
            positive: BTreeMap::new(),
            negative: BTreeMap::new(),
            classic: BTreeMap::new(),
        }
    }

    /// The `_sum`: exact where the program summed, estimated where it did not.
    pub fn sum(&self) -> f64 {
        self.exact_sum as f64 + self.estimated_sum
    }

    /// Adds one tick of a series: its buckets, and its exact sum if the program kept one.
    fn add(&mut self, kind: AggKind, buckets: &[Bucket], sum: Option<i128>) {
        match sum {
            Some(sum) => self.exact_sum = self.exact_sum.saturating_add(sum),
            None => {
                for b in buckets {
                    self.estimated_sum += representative(b) * b.count as f64;
                    self.estimated = self.estimated.saturating_add(b.count);
                }
            }
        }
        for b in buckets {
            self.count = self.count.saturating_add(b.count);
            *self.classic.entry(classic_le(b)).or_default() += b.count;
            if is_log2(kind) {
                match native_slot(b) {
                    NativeSlot::Zero => self.zero += b.count,
                    NativeSlot::Positive(i) => *self.positive.entry(i).or_default() += b.count,
                    NativeSlot::Negative(i) => *self.negative.entry(i).or_default() += b.count,
                }
            }
        }
    }

    /// Per-`le` counts over the family's ladder (the encoder accumulates them; `+Inf` is
    /// the count).
    fn classic_buckets(&self, ladder: &BTreeSet<i64>) -> Vec<(f64, u64)> {
        ladder
            .iter()
            .map(|le| {
                (
                    *le as f64,
                    self.classic.get(&Some(*le)).copied().unwrap_or(0),
                )
            })
            .collect()
    }
}

/// Sparse schema-0 buckets as spans `(offset, length)` and count deltas.
pub fn spans_and_deltas(buckets: &BTreeMap<i32, u64>) -> (Vec<(i32, u32)>, Vec<i64>) {
    let mut spans: Vec<(i32, u32)> = Vec::new();
    let mut deltas = Vec::new();
    let mut next: Option<i32> = None;
    let mut previous = 0i64;
    for (&index, &count) in buckets {
        match next {
            Some(n) if n == index => spans.last_mut().expect("a span is open").1 += 1,
            _ => spans.push((index - next.unwrap_or(0), 1)),
        }
        next = Some(index + 1);
        deltas.push(count as i64 - previous);
        previous = count as i64;
    }
    (spans, deltas)
}

/// One exported watch.
#[derive(Debug)]
struct WatchExport {
    key_label: &'static str,
    export_keys: bool,
    /// The preset's unit (`None` for a script until its program says).
    unit: Option<&'static str>,
    /// Set when the program announced its histogram: (family, kind, classic ladder).
    shape: Option<Shape>,
    series: BTreeMap<String, Cumulative>,
    folded: HashSet<String>,
}

#[derive(Debug)]
struct Shape {
    family: String,
    aggregation: String,
    kind: AggKind,
    ladder: BTreeSet<i64>,
}

/// Every exported watch's cumulative histograms.
#[derive(Debug)]
pub struct Exports {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    max_series: usize,
    watches: BTreeMap<String, WatchExport>,
}

impl Exports {
    pub fn new(max_series: usize) -> Exports {
        Exports {
            state: Mutex::new(State {
                max_series,
                watches: BTreeMap::new(),
            }),
        }
    }

    /// Takes the config's exported watches (a watch already known keeps its series).
    pub fn configure(&self, config: &Config) {
        let mut state = self.state.lock();
        state.max_series = config.export.max_series;
        for watch in config.watches.iter().filter(|w| w.export) {
            let preset = watch.preset.as_deref().and_then(crate::presets::find);
            let key_label = preset.map_or(SCRIPT_KEY_LABEL, |p| p.key_label);
            let export_keys = watch.export_keys.unwrap_or(key_label != PROCESS_KEY_LABEL);
            state
                .watches
                .entry(watch.name.clone())
                .or_insert_with(|| WatchExport {
                    key_label,
                    export_keys,
                    unit: preset.map(|p| p.unit),
                    shape: None,
                    series: BTreeMap::new(),
                    folded: HashSet::new(),
                });
        }
    }

    /// Whether `watch` is exported.
    pub fn exports(&self, watch: &str) -> bool {
        self.state.lock().watches.contains_key(watch)
    }

    /// The watch's program announced its aggregations: its first histogram is exported.
    /// The first announcement fixes the family for the life of the server.
    pub fn announce(&self, watch: &str, unit: Option<&'static str>, infos: &[AggregationInfo]) {
        let mut state = self.state.lock();
        let Some(w) = state.watches.get_mut(watch) else {
            return;
        };
        if w.shape.is_some() {
            return;
        }
        let Some(info) = infos.iter().find(|i| i.kind.is_histogram()) else {
            drop(state);
            crate::telemetry::Event::ExportUnusable { watch }.emit();
            return;
        };
        w.unit = w.unit.or(unit);
        w.shape = Some(Shape {
            family: family_name(watch, w.unit),
            aggregation: info.name.clone(),
            kind: info.kind,
            ladder: ladder(info.kind, info.layout),
        });
    }

    /// Adds one tick's deltas of the watch's exported histogram.
    pub fn observe(&self, watch: &str, snapshot: &Snapshot) {
        let mut state = self.state.lock();
        let max_series = state.max_series;
        let Some(w) = state.watches.get_mut(watch) else {
            return;
        };
        let Some(shape) = &mut w.shape else {
            return;
        };
        let Some(aggregation) = snapshot
            .aggregations
            .iter()
            .find(|a| a.name == shape.aggregation && a.kind == shape.kind)
        else {
            return;
        };
        for series in &aggregation.series {
            let Value::Buckets(buckets) = &series.value else {
                continue;
            };
            for b in buckets.iter().filter_map(classic_le_of) {
                shape.ladder.insert(b);
            }
            let label = if w.export_keys {
                key_text(&series.key)
            } else {
                String::new()
            };
            let known = label == OTHER_KEY || w.series.contains_key(&label);
            let keys = w.series.len() - usize::from(w.series.contains_key(OTHER_KEY));
            let label = if known || keys < max_series {
                label
            } else {
                if w.folded.len() < FOLDED_KEYS_TRACKED {
                    w.folded.insert(label);
                }
                OTHER_KEY.to_owned()
            };
            w.series
                .entry(label)
                .or_insert_with(Cumulative::new)
                .add(shape.kind, buckets, series.sum);
        }
    }

    /// The series of a watch as (label value, cumulative), for tests.
    pub fn series(&self, watch: &str) -> Vec<(String, Cumulative)> {
        let state = self.state.lock();
        state
            .watches
            .get(watch)
            .map(|w| {
                w.series
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Distinct keys folded into `other` so far.
    pub fn folded(&self, watch: &str) -> usize {
        self.state
            .lock()
            .watches
            .get(watch)
            .map_or(0, |w| w.folded.len())
    }

    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.state.lock();
        if state.watches.is_empty() {
            return Ok(());
        }
        {
            let mut info = encoder.encode_descriptor(
                "heat_watch_export_info",
                "Exported watches: the family each one's histogram is, its key label, unit and kind (always 1).",
                None,
                MetricType::Gauge,
            )?;
            for (name, w) in &state.watches {
                let Some(shape) = &w.shape else {
                    continue;
                };
                let key_label = if w.export_keys { w.key_label } else { "" };
                let labels: [(&str, &str); 5] = [
                    ("watch", name),
                    ("family", &shape.family),
                    ("key_label", key_label),
                    ("unit", w.unit.unwrap_or("")),
                    ("kind", kind_name(shape.kind)),
                ];
                ConstGauge::new(1i64).encode(info.encode_family(&labels)?)?;
            }
        }
        {
            let mut folded = encoder.encode_descriptor(
                "heat_export_series_folded",
                "Distinct keys of an exported watch folded into its `other` series (export.max_series), by watch.",
                None,
                MetricType::Counter,
            )?;
            for (name, w) in &state.watches {
                let labels = [("watch", name.as_str())];
                ConstCounter::new(w.folded.len() as u64).encode(folded.encode_family(&labels)?)?;
            }
        }
        {
            let mut estimated = encoder.encode_descriptor(
                "heat_export_sum_estimated",
                "Events of an exported watch whose value its `_sum` took at the bucket midpoint (the program keeps no exact sum), by watch; 0: the `_sum` is exact.",
                None,
                MetricType::Counter,
            )?;
            for (name, w) in &state.watches {
                let labels = [("watch", name.as_str())];
                let events = w.series.values().map(|c| c.estimated).sum::<u64>();
                ConstCounter::new(events).encode(estimated.encode_family(&labels)?)?;
            }
        }
        for w in state.watches.values() {
            let Some(shape) = &w.shape else {
                continue;
            };
            let help = format!(
                "Watch histogram: events by {} in {}, cumulative since the server started.",
                if w.export_keys {
                    w.key_label
                } else {
                    "nothing (keys summed)"
                },
                w.unit.unwrap_or("the script's unit")
            );
            let mut family =
                encoder.encode_descriptor(&shape.family, &help, None, MetricType::Histogram)?;
            for (label, c) in &w.series {
                let labels: Vec<(&str, &str)> = if w.export_keys {
                    vec![(w.key_label, label.as_str())]
                } else {
                    Vec::new()
                };
                let mut metric = family.encode_family(&labels)?;
                let classic = c.classic_buckets(&shape.ladder);
                if is_log2(shape.kind) {
                    let (mut positive_spans, positive_deltas) = spans_and_deltas(&c.positive);
                    let (negative_spans, negative_deltas) = spans_and_deltas(&c.negative);
                    if c.zero == 0 && positive_spans.is_empty() && negative_spans.is_empty() {
                        // An empty span marks the histogram native when it holds nothing.
                        positive_spans.push((0, 0));
                    }
                    metric.encode_histogram_with_native::<NoLabelSet>(
                        c.sum(),
                        c.count,
                        &classic,
                        None,
                        NativeHistogram {
                            schema: 0,
                            zero_threshold: 0.0,
                            zero_count: c.zero,
                            negative: NativeHistogramBuckets {
                                spans: &negative_spans,
                                deltas: &negative_deltas,
                            },
                            positive: NativeHistogramBuckets {
                                spans: &positive_spans,
                                deltas: &positive_deltas,
                            },
                            created: Some(c.created),
                        },
                    )?;
                } else {
                    metric.encode_histogram::<NoLabelSet>(c.sum(), c.count, &classic, None)?;
                }
            }
        }
        Ok(())
    }
}

fn classic_le_of(b: &Bucket) -> Option<i64> {
    classic_le(b)
}

/// The wire name of a histogram kind.
fn kind_name(kind: AggKind) -> &'static str {
    match kind {
        AggKind::Hist => "hist",
        AggKind::Lhist => "lhist",
        AggKind::Quantize => "quantize",
        AggKind::Lquantize => "lquantize",
        AggKind::Llquantize => "llquantize",
        _ => "other",
    }
}

/// A key as one label value: its parts joined with `,`.
fn key_text(key: &[KeyPart]) -> String {
    key.iter()
        .map(|p| match p {
            KeyPart::Int(n) => n.to_string(),
            KeyPart::Str(s) => s.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The process-wide exports, encoded by the telemetry registry.
pub fn exports() -> &'static Arc<Exports> {
    static EXPORTS: OnceLock<Arc<Exports>> = OnceLock::new();
    EXPORTS.get_or_init(|| {
        Arc::new(Exports::new(
            crate::config::ExportConfig::default().max_series,
        ))
    })
}

impl prometheus_client::collector::Collector for Exports {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        Exports::encode(self, encoder)
    }
}

/// The registry's view of [`exports`].
#[derive(Debug)]
pub struct ExportCollector;

impl prometheus_client::collector::Collector for ExportCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        exports().encode(encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::{Aggregation, Series};
    use prometheus_client::encoding::prometheus_protobuf;
    use prometheus_client::registry::Registry;

    fn b(lo: Option<i64>, hi: Option<i64>, count: u64) -> Bucket {
        Bucket { lo, hi, count }
    }

    /// Our log2 bucket `[2^k, 2^(k+1)-1]`.
    fn log2(k: u32, count: u64) -> Bucket {
        b(Some(1 << k), Some((1 << (k + 1)) - 1), count)
    }

    #[test]
    fn log2_buckets_go_to_the_native_bucket_whose_upper_bound_covers_them() {
        use NativeSlot::*;
        // By hand: (2^(i-1), 2^i] is index i.
        assert_eq!(native_slot(&b(Some(0), Some(0), 1)), Zero);
        assert_eq!(native_slot(&b(Some(1), Some(1), 1)), Positive(0)); // (0.5, 1]: exact
        assert_eq!(native_slot(&log2(1, 1)), Positive(2)); // [2, 3] -> (2, 4]
        assert_eq!(native_slot(&log2(2, 1)), Positive(3)); // [4, 7] -> (4, 8]
        assert_eq!(native_slot(&log2(10, 1)), Positive(11)); // [1024, 2047] -> (1024, 2048]
        assert_eq!(native_slot(&log2(30, 1)), Positive(31));
        // The seam: 2^k exactly lives in our [2^k, ...) but natively in (2^(k-1), 2^k],
        // index k; it moves one up, to k+1, with the rest of its bucket.
        let four = log2(2, 1);
        assert!(four.lo == Some(4) && native_slot(&four) == Positive(3));
        // The open top: bpftrace 0.17's [2^31, inf) reads as [2^31, 2^32 - 1].
        assert_eq!(native_slot(&b(Some(1 << 31), None, 1)), Positive(32));
        // DTrace quantize's last bucket, [2^62, inf).
        assert_eq!(native_slot(&b(Some(1 << 62), None, 1)), Positive(63));
        // Negatives: bpftrace's one (-inf, -1] is -1, index 0; DTrace's mirror the positives.
        assert_eq!(native_slot(&b(None, Some(-1), 1)), Negative(0));
        assert_eq!(native_slot(&b(Some(-1), Some(-1), 1)), Negative(0));
        assert_eq!(native_slot(&b(Some(-3), Some(-2), 1)), Negative(2)); // [-4, -2)
        assert_eq!(native_slot(&b(Some(-7), Some(-4), 1)), Negative(3)); // [-8, -4)
    }

    #[test]
    fn classic_le_is_the_inclusive_upper_bound_and_open_tops_only_count_in_inf() {
        assert_eq!(classic_le(&b(Some(0), Some(0), 1)), Some(0));
        assert_eq!(classic_le(&log2(2, 1)), Some(7));
        assert_eq!(classic_le(&b(Some(1 << 31), None, 1)), None);
        assert_eq!(classic_le(&b(None, Some(-1), 1)), Some(-1));
        // lhist(v, 0, 64, 2): [62, 63], and [64, inf) only in +Inf.
        assert_eq!(classic_le(&b(Some(62), Some(63), 1)), Some(63));
        assert_eq!(classic_le(&b(Some(64), None, 1)), None);
    }

    #[test]
    fn every_series_of_a_family_exports_the_same_ladder() {
        let log2 = ladder(AggKind::Hist, None);
        assert_eq!(log2.len(), 32);
        assert_eq!(
            log2.iter().take(5).copied().collect::<Vec<_>>(),
            [0, 1, 3, 7, 15]
        );
        assert_eq!(log2.last(), Some(&((1i64 << 31) - 1)));
        let linear = ladder(
            AggKind::Lhist,
            Some(Layout {
                min: 0,
                max: 64,
                step: 2,
            }),
        );
        // Below min (-1), then 1, 3, ..., 63: 33 bounds.
        assert_eq!(linear.len(), 33);
        assert_eq!(linear.first(), Some(&-1));
        assert_eq!(linear.iter().nth(1), Some(&1));
        assert_eq!(linear.last(), Some(&63));
    }

    #[test]
    fn sparse_buckets_become_spans_and_deltas() {
        let buckets: BTreeMap<i32, u64> = [(0, 1), (1, 3), (2, 2), (5, 4)].into();
        let (spans, deltas) = spans_and_deltas(&buckets);
        assert_eq!(spans, [(0, 3), (2, 1)]);
        assert_eq!(deltas, [1, 2, -1, 2]);
        let (spans, deltas) = spans_and_deltas(&[(-2, 5), (-1, 5)].into());
        assert_eq!(spans, [(-2, 2)]);
        assert_eq!(deltas, [5, 0]);
    }

    fn exports_for(toml: &str) -> Exports {
        let config = Config::parse(toml, std::path::Path::new("export-test.toml")).unwrap();
        let exports = Exports::new(config.export.max_series);
        exports.configure(&config);
        exports
    }

    fn tick(kind: AggKind, series: Vec<(&str, Vec<Bucket>)>) -> Snapshot {
        Snapshot {
            aggregations: vec![Aggregation {
                name: "@h".into(),
                kind,
                series: series
                    .into_iter()
                    .map(|(k, bs)| Series::histogram(vec![KeyPart::Str(k.into())], bs))
                    .collect(),
                folded: 0,
            }],
            ..Default::default()
        }
    }

    fn announce(exports: &Exports, watch: &str, kind: AggKind, layout: Option<Layout>) {
        exports.announce(
            watch,
            None,
            &[AggregationInfo {
                name: "@h".into(),
                kind,
                layout,
            }],
        );
    }

    fn render(exports: Exports) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::new(exports)));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    const LOG2_WATCH: &str = "[[watch]]\nname = \"sys-lat\"\npreset = \"syscall-latency-log2\"\n\
                              record = false\nexport = true\n";

    #[test]
    fn ticks_add_up_into_native_and_classic_buckets() {
        let exports = exports_for(LOG2_WATCH);
        announce(&exports, "sys-lat", AggKind::Hist, None);
        let one = vec![
            b(Some(0), Some(0), 2),
            log2(2, 3),
            b(Some(1 << 31), None, 1),
        ];
        exports.observe("sys-lat", &tick(AggKind::Hist, vec![("read", one.clone())]));
        exports.observe("sys-lat", &tick(AggKind::Hist, vec![("read", one)]));
        let series = exports.series("sys-lat");
        assert_eq!(series.len(), 1);
        let (key, c) = &series[0];
        assert_eq!(key, "read");
        assert_eq!(c.count, 12);
        assert_eq!(c.zero, 4);
        assert_eq!(c.positive, [(3, 6), (32, 2)].into());
        assert!(c.negative.is_empty());
        // No exact sum in these ticks: midpoints 0 and 5.5, the open top at 2^31.
        assert_eq!(c.sum(), 2.0 * (3.0 * 5.5 + 2f64.powi(31)));
        assert_eq!((c.exact_sum, c.estimated), (0, 12));
        let text = render(exports);
        let family = "heat_sys_lat_nanoseconds";
        assert!(
            text.contains("# TYPE heat_sys_lat_nanoseconds histogram"),
            "{text}"
        );
        for line in [
            format!("{family}_bucket{{syscall=\"read\",le=\"0\"}} 4"),
            format!("{family}_bucket{{syscall=\"read\",le=\"3\"}} 4"),
            format!("{family}_bucket{{syscall=\"read\",le=\"7\"}} 10"),
            format!("{family}_bucket{{syscall=\"read\",le=\"2.147483647e+09\"}} 10"),
            format!("{family}_bucket{{syscall=\"read\",le=\"+Inf\"}} 12"),
            format!("{family}_count{{syscall=\"read\"}} 12"),
            format!(
                "heat_watch_export_info{{watch=\"sys-lat\",family=\"{family}\",key_label=\"syscall\",unit=\"ns\",kind=\"hist\"}} 1"
            ),
            "heat_export_series_folded_total{watch=\"sys-lat\"} 0".to_owned(),
            "heat_export_sum_estimated_total{watch=\"sys-lat\"} 12".to_owned(),
            format!("{family}_sum{{syscall=\"read\"}} 4294967329.0"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn an_exact_sum_is_used_where_the_program_kept_one() {
        let exports = exports_for(LOG2_WATCH);
        announce(&exports, "sys-lat", AggKind::Hist, None);
        // Three reads of 5 ms: bucket [2^22, 2^23 - 1], midpoint ~6.29 ms.
        let with_sum = |key: &str, sum| {
            let mut snapshot = tick(AggKind::Hist, vec![(key, vec![log2(22, 3)])]);
            snapshot.aggregations[0].series[0].sum = sum;
            snapshot
        };
        exports.observe("sys-lat", &with_sum("read", Some(15_000_000)));
        exports.observe("sys-lat", &with_sum("read", Some(15_000_300)));
        // A tick without one (e.g. a store import) is estimated, and said to be.
        exports.observe("sys-lat", &with_sum("write", None));
        let series: BTreeMap<String, Cumulative> = exports.series("sys-lat").into_iter().collect();
        let read = &series["read"];
        assert_eq!(
            (read.count, read.exact_sum, read.estimated),
            (6, 30_000_300, 0)
        );
        assert_eq!(read.sum(), 30_000_300.0);
        let write = &series["write"];
        let midpoint = ((1u64 << 22) + (1u64 << 23) - 1) as f64 / 2.0;
        assert_eq!((write.exact_sum, write.estimated), (0, 3));
        assert_eq!(write.sum(), 3.0 * midpoint);
        let text = render(exports);
        for line in [
            "heat_sys_lat_nanoseconds_sum{syscall=\"read\"} 30000300.0",
            "heat_export_sum_estimated_total{watch=\"sys-lat\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
    }

    #[test]
    fn protobuf_carries_schema_0_spans_and_a_created_timestamp() {
        let exports = exports_for(LOG2_WATCH);
        announce(&exports, "sys-lat", AggKind::Hist, None);
        let buckets = vec![
            b(None, Some(-1), 1),
            b(Some(0), Some(0), 2),
            b(Some(1), Some(1), 1),
            log2(1, 3),
            log2(3, 5),
        ];
        exports.observe("sys-lat", &tick(AggKind::Hist, vec![("read", buckets)]));
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Arc::new(exports)));
        let families = prometheus_protobuf::encode(&registry).unwrap();
        let family = families
            .iter()
            .find(|f| f.name == "heat_sys_lat_nanoseconds")
            .expect("the family");
        let h = family.metric[0].histogram.as_ref().unwrap();
        assert_eq!(h.schema, 0);
        assert_eq!(h.zero_threshold, 0.0);
        assert_eq!(h.zero_count, 2);
        assert_eq!(h.sample_count, 12);
        // Indexes 0 (1), 2 ([2, 3]) and 4 ([8, 15]): spans (0, 1), (1, 1), (1, 1).
        let spans: Vec<(i32, u32)> = h
            .positive_span
            .iter()
            .map(|s| (s.offset, s.length))
            .collect();
        assert_eq!(spans, [(0, 1), (1, 1), (1, 1)]);
        assert_eq!(h.positive_delta, [1, 2, 2]);
        let negative: Vec<(i32, u32)> = h
            .negative_span
            .iter()
            .map(|s| (s.offset, s.length))
            .collect();
        assert_eq!(negative, [(0, 1)]);
        assert_eq!(h.negative_delta, [1]);
        assert!(h.start_timestamp.as_ref().is_some_and(|t| t.seconds > 0));
    }

    #[test]
    fn linear_kinds_are_classic_with_le_at_each_upper_bound() {
        let exports = exports_for(
            "[[watch]]\nname = \"lin\"\npreset = \"syscall-latency\"\nrecord = false\nexport = true\n",
        );
        let layout = Layout {
            min: 0,
            max: 64,
            step: 2,
        };
        announce(&exports, "lin", AggKind::Lhist, Some(layout));
        let buckets = vec![
            b(None, Some(-1), 1),
            b(Some(0), Some(1), 2),
            b(Some(62), Some(63), 1),
            b(Some(64), None, 3),
        ];
        exports.observe("lin", &tick(AggKind::Lhist, vec![("read", buckets)]));
        let text = render(exports);
        let family = "heat_lin_microseconds";
        for line in [
            format!("{family}_bucket{{syscall=\"read\",le=\"-1\"}} 1"),
            format!("{family}_bucket{{syscall=\"read\",le=\"1\"}} 3"),
            format!("{family}_bucket{{syscall=\"read\",le=\"61\"}} 3"),
            format!("{family}_bucket{{syscall=\"read\",le=\"63\"}} 4"),
            format!("{family}_bucket{{syscall=\"read\",le=\"+Inf\"}} 7"),
            format!("{family}_count{{syscall=\"read\"}} 7"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert!(text.contains("kind=\"lhist\""), "{text}");
    }

    #[test]
    fn keys_past_max_series_fold_into_other_and_are_counted_once() {
        let exports = exports_for(&format!("[export]\nmax_series = 2\n{LOG2_WATCH}"));
        announce(&exports, "sys-lat", AggKind::Hist, None);
        let one = || vec![log2(4, 1)];
        let first = vec![("a", one()), ("b", one()), ("c", one())];
        exports.observe("sys-lat", &tick(AggKind::Hist, first));
        let second = vec![("a", one()), ("c", one()), ("d", one())];
        exports.observe("sys-lat", &tick(AggKind::Hist, second));
        let series: BTreeMap<String, u64> = exports
            .series("sys-lat")
            .into_iter()
            .map(|(k, c)| (k, c.count))
            .collect();
        // a and b got the two slots; c twice and d once went to other.
        assert_eq!(
            series,
            [("a".into(), 2), ("b".into(), 1), ("other".into(), 3)].into()
        );
        assert_eq!(exports.folded("sys-lat"), 2);
        let text = render(exports);
        assert!(
            text.lines()
                .any(|l| l == "heat_export_series_folded_total{watch=\"sys-lat\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn comm_keys_are_summed_into_one_series_unless_asked() {
        let watch = "[[watch]]\nname = \"off\"\npreset = \"offcpu-time\"\nrecord = false\n\
                     export = true\n";
        let exports = exports_for(watch);
        announce(&exports, "off", AggKind::Hist, None);
        let ticks = vec![("bash", vec![log2(4, 1)]), ("perl", vec![log2(5, 2)])];
        exports.observe("off", &tick(AggKind::Hist, ticks.clone()));
        let series = exports.series("off");
        assert_eq!(series.len(), 1);
        assert_eq!((series[0].0.as_str(), series[0].1.count), ("", 3));
        let text = render(exports);
        assert!(text.contains("heat_off_nanoseconds_count 3"), "{text}");
        assert!(text.contains("key_label=\"\""), "{text}");

        let exports = exports_for(&format!("{watch}export_keys = true\n"));
        announce(&exports, "off", AggKind::Hist, None);
        exports.observe("off", &tick(AggKind::Hist, ticks));
        let text = render(exports);
        assert!(
            text.contains("heat_off_nanoseconds_count{comm=\"perl\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn names_follow_prometheus_conventions() {
        assert_eq!(
            family_name("Sys-Lat.2", Some("ns")),
            "heat_sys_lat_2_nanoseconds"
        );
        assert_eq!(family_name("io", Some("bytes")), "heat_io_bytes");
        assert_eq!(family_name("s", None), "heat_s_value");
        assert_eq!(
            family_name("cpu", Some("ms-offset")),
            "heat_cpu_offset_milliseconds"
        );
    }
}
