//! DTrace's bucket edges for `quantize`, `lquantize` and `llquantize`, and the post-walk
//! rewrite that relabels what bpftrace computed (hist, lhist over a bucket index) into them.
//!
//! The edges follow DTrace's kernel aggregation functions (illumos/FreeBSD `dtrace.c`), read
//! for their semantics: `quantize` has a zero bucket and power-of-two buckets mirrored for
//! negative values (`[-3, -2]`, `[-7, -4]`, …); `lquantize(v, base, limit, step)` has
//! `levels = (limit - base) / step` buckets of `step` from `base`, one bucket below `base` and
//! one from `base + levels * step` up; `llquantize(v, factor, low, high, nsteps)` has one bucket
//! below `factor^low`, then for each order of magnitude `m` in `low..=high` the range
//! `[factor^m, factor^(m+1))` in steps of `factor^(m+1) / min(nsteps, factor^(m+1))`, and one
//! bucket from `factor^(high+1)` up.

use crate::aggregation::{AggKind, AggregationInfo, Bucket, KeyPart, Layout, Snapshot, Value};
use crate::consumer::SnapshotRewrite;

/// An inclusive bucket range; `None` is an open end.
pub type Edges = (Option<i64>, Option<i64>);

/// The `quantize` bucket holding `v`.
pub fn quantize_edges(v: i64) -> Edges {
    if v == 0 {
        return (Some(0), Some(0));
    }
    if v <= -(1 << 62) {
        // DTrace's lowest bucket holds everything from -2^62 down.
        return (Some(i64::MIN), Some(-(1 << 62)));
    }
    let magnitude = v.unsigned_abs();
    let k = 63 - magnitude.leading_zeros();
    let lo = 1u64 << k;
    let hi = if k >= 62 {
        i64::MAX as u64
    } else {
        (lo << 1) - 1
    };
    if v > 0 {
        (Some(lo as i64), Some(hi as i64))
    } else {
        (Some(-(hi as i64)), Some(-(lo as i64)))
    }
}

/// The index of the zero bucket in [`quantize_table`]: 63 negative buckets come before it.
pub const QUANTIZE_ZERO_INDEX: i64 = 63;

/// Every `quantize` bucket in order: the 63 negative ones, zero, the 63 positive ones. The
/// translated program aggregates a value's index in this table.
pub fn quantize_table() -> Vec<Edges> {
    let negative = (0..62).rev().map(|k| quantize_edges(-(1i64 << k)));
    let positive = (0..63).map(|k| quantize_edges(1i64 << k));
    std::iter::once(quantize_edges(i64::MIN))
        .chain(negative)
        .chain(std::iter::once(quantize_edges(0)))
        .chain(positive)
        .collect()
}

/// The `lquantize` bucket holding `v`, for `levels = (limit - base) / step`.
pub fn lquantize_edges(v: i64, base: i64, levels: i64, step: i64) -> Edges {
    let top = base + levels * step;
    if v < base {
        (None, Some(base - 1))
    } else if v >= top {
        (Some(top), None)
    } else {
        let lo = base + (v - base) / step * step;
        (Some(lo), Some(lo + step - 1))
    }
}

/// Every `llquantize` bucket in order; the index of a value's bucket is what the translated
/// program aggregates. Parameters must have passed [`llquantize_check`].
pub fn llquantize_table(factor: i64, low: u32, high: u32, nsteps: i64) -> Vec<Edges> {
    let first = factor.pow(low);
    let mut table = vec![(None, Some(first - 1))];
    let mut this = first;
    for _ in low..=high {
        let next = this * factor;
        let width = next / nsteps.min(next);
        let mut lo = this;
        while lo < next {
            table.push((Some(lo), Some(lo + width - 1)));
            lo += width;
        }
        this = next;
    }
    table.push((Some(this), None));
    table
}

/// Every `lquantize` bucket in order, for programs that aggregate the bucket index.
pub fn lquantize_table(base: i64, levels: i64, step: i64) -> Vec<Edges> {
    let mut table = vec![(None, Some(base - 1))];
    table.extend((0..levels).map(|i| (Some(base + i * step), Some(base + (i + 1) * step - 1))));
    table.push((Some(base + levels * step), None));
    table
}

/// Why `llquantize` parameters are refused, as DTrace's compiler refuses them; `None` if fine.
pub fn llquantize_check(factor: i64, low: i64, high: i64, nsteps: i64) -> Option<String> {
    if factor < 2 {
        return Some("llquantize() factor (argument #2) must be at least 2".into());
    }
    if low < 0 || high < low {
        return Some(
            "llquantize() magnitudes need 0 <= low (argument #3) <= high (argument #4)".into(),
        );
    }
    if nsteps < factor || nsteps % factor != 0 {
        return Some(
            "llquantize() factor (argument #2) must evenly divide the steps per magnitude \
             (argument #5), which must be at least the factor"
                .into(),
        );
    }
    let power = |e: i64| u32::try_from(e).ok().and_then(|e| factor.checked_pow(e));
    if power(high + 2).is_none() {
        return Some("llquantize() high magnitude (argument #4) overflows 64 bits".into());
    }
    let span = power(if low == 0 { 2 } else { low + 1 })?;
    if nsteps > factor && span % nsteps != 0 {
        return Some(format!(
            "llquantize() steps per magnitude (argument #5) must evenly divide {span}"
        ));
    }
    None
}

/// How one aggregation's buckets are relabelled.
#[derive(Debug, Clone, PartialEq)]
pub enum Relabel {
    /// Scalars, or buckets already right.
    None,
    /// A scalar aggregated negated (`max(x)` as `-min(-x)`).
    Negate,
    /// bpftrace `lhist(v, base, base + levels * step, step)`.
    Lquantize { base: i64, levels: i64, step: i64 },
    /// bpftrace `lhist(index, 0, len, 1)` over a bucket index the program computes; entry `i`
    /// is bucket `i`'s edges (llquantize, and lquantize below zero, which lhist refuses).
    Table(Vec<Edges>),
}

/// What the translator knows about one aggregation that the bpftrace output does not say.
#[derive(Debug, Clone, PartialEq)]
pub struct AggPlan {
    /// The bpftrace map name (`@time`).
    pub name: String,
    pub kind: AggKind,
    pub layout: Option<Layout>,
    /// Key positions holding a syscall number, shown as the syscall's name.
    pub syscall_keys: Vec<usize>,
    pub relabel: Relabel,
}

/// The post-walk rewrite of a translated D program.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DRewrite {
    pub plans: Vec<AggPlan>,
}

impl SnapshotRewrite for DRewrite {
    fn infos(&self, infos: &mut [AggregationInfo]) {
        for info in infos {
            if let Some(plan) = self.plans.iter().find(|p| p.name == info.name) {
                info.kind = plan.kind;
                info.layout = plan.layout;
            }
        }
    }

    fn snapshot(&self, snapshot: &mut Snapshot) {
        for agg in &mut snapshot.aggregations {
            let Some(plan) = self.plans.iter().find(|p| p.name == agg.name) else {
                continue;
            };
            agg.kind = plan.kind;
            for series in &mut agg.series {
                if let Value::Buckets(buckets) = &mut series.value {
                    relabel(&plan.relabel, buckets);
                } else if let (Relabel::Negate, Value::Scalar(v)) =
                    (&plan.relabel, &mut series.value)
                {
                    *v = v.saturating_neg();
                }
                for &i in &plan.syscall_keys {
                    if let Some(KeyPart::Int(n)) = series.key.get(i) {
                        series.key[i] = KeyPart::Str(crate::syscalls::name(*n).into_owned());
                    }
                }
            }
            if !plan.syscall_keys.is_empty() {
                agg.merge_equal_keys();
            }
        }
    }
}

fn relabel(how: &Relabel, buckets: &mut Vec<Bucket>) {
    match how {
        Relabel::None | Relabel::Negate => {}
        Relabel::Lquantize { base, levels, step } => {
            for b in buckets.iter_mut() {
                let probe = b.lo.unwrap_or(base - 1);
                (b.lo, b.hi) = lquantize_edges(probe, *base, *levels, *step);
            }
        }
        Relabel::Table(table) => {
            // Index buckets outside the table cannot be produced by the translated program.
            buckets.retain_mut(|b| {
                let Some(&(lo, hi)) =
                    b.lo.and_then(|i| usize::try_from(i).ok())
                        .and_then(|i| table.get(i))
                else {
                    return false;
                };
                (b.lo, b.hi) = (lo, hi);
                true
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::{Aggregation, Series};

    #[test]
    fn the_quantize_table_is_every_bucket_in_order() {
        let table = quantize_table();
        assert_eq!(table.len(), 127);
        assert_eq!(table[QUANTIZE_ZERO_INDEX as usize], (Some(0), Some(0)));
        assert_eq!(table[0], (Some(i64::MIN), Some(-(1 << 62))));
        assert_eq!(table[126], (Some(1 << 62), Some(i64::MAX)));
        for pair in table.windows(2) {
            let (hi, next_lo) = (pair[0].1.unwrap(), pair[1].0.unwrap());
            assert_eq!(hi + 1, next_lo, "{pair:?} leave a gap or overlap");
        }
    }

    #[test]
    fn quantize_has_a_zero_bucket_and_mirrored_powers_of_two() {
        let cases = [
            (0, (Some(0), Some(0))),
            (1, (Some(1), Some(1))),
            (2, (Some(2), Some(3))),
            (3, (Some(2), Some(3))),
            (4, (Some(4), Some(7))),
            (1000, (Some(512), Some(1023))),
            (1024, (Some(1024), Some(2047))),
            (-1, (Some(-1), Some(-1))),
            (-2, (Some(-3), Some(-2))),
            (-3, (Some(-3), Some(-2))),
            (-4, (Some(-7), Some(-4))),
            (i64::MAX, (Some(1 << 62), Some(i64::MAX))),
            (i64::MIN, (Some(i64::MIN), Some(-(1 << 62)))),
        ];
        for (v, edges) in cases {
            assert_eq!(quantize_edges(v), edges, "{v}");
        }
    }

    #[test]
    fn lquantize_0_63_2_is_the_seed_layout() {
        // (63 - 0) / 2 = 31 levels: [0,1] … [60,61], then everything from 62 up.
        let (base, limit, step) = (0, 63, 2);
        let levels = (limit - base) / step;
        assert_eq!(lquantize_edges(-1, 0, levels, 2), (None, Some(-1)));
        assert_eq!(lquantize_edges(0, 0, levels, 2), (Some(0), Some(1)));
        assert_eq!(lquantize_edges(1, 0, levels, 2), (Some(0), Some(1)));
        assert_eq!(lquantize_edges(61, 0, levels, 2), (Some(60), Some(61)));
        assert_eq!(lquantize_edges(62, 0, levels, 2), (Some(62), None));
        assert_eq!(lquantize_edges(5000, 0, levels, 2), (Some(62), None));
        assert_eq!(lquantize_edges(-7, -10, 2, 5), (Some(-10), Some(-6)));
    }

    #[test]
    fn llquantize_decades_in_ten_steps() {
        let t = llquantize_table(10, 0, 2, 10);
        // below 1; 1..9 by 1; 10..90 by 10; 100..900 by 100; 1000 up.
        assert_eq!(t.len(), 1 + 9 + 9 + 9 + 1);
        assert_eq!(t[0], (None, Some(0)));
        assert_eq!(t[1], (Some(1), Some(1)));
        assert_eq!(t[9], (Some(9), Some(9)));
        assert_eq!(t[10], (Some(10), Some(19)));
        assert_eq!(t[19], (Some(100), Some(199)));
        assert_eq!(t[27], (Some(900), Some(999)));
        assert_eq!(t[28], (Some(1000), None));
        // Buckets tile the line: each starts one past the previous end.
        for w in t.windows(2) {
            assert_eq!(w[0].1.map(|h| h + 1), w[1].0);
        }
    }

    #[test]
    fn llquantize_with_more_steps_than_the_low_magnitude_has_values() {
        // factor 2, magnitudes 0..=3, 4 steps: order 0 is [1,2) (width 1), order 1 [2,4)
        // (width 1), order 2 [4,8) (width 2), order 3 [8,16) (width 4).
        let t = llquantize_table(2, 0, 3, 4);
        let lows: Vec<Option<i64>> = t.iter().map(|e| e.0).collect();
        assert_eq!(
            lows,
            [
                None,
                Some(1),
                Some(2),
                Some(3),
                Some(4),
                Some(6),
                Some(8),
                Some(12),
                Some(16)
            ]
        );
    }

    #[test]
    fn llquantize_parameters_are_checked_like_dtrace() {
        assert!(llquantize_check(10, 0, 6, 10).is_none());
        assert!(llquantize_check(10, 0, 6, 20).is_none());
        assert!(llquantize_check(1, 0, 6, 20)
            .unwrap()
            .contains("at least 2"));
        assert!(llquantize_check(10, 0, 6, 15).is_some());
        assert!(llquantize_check(10, 0, 6, 6).is_some());
        assert!(llquantize_check(10, 0, 6, 30).is_some());
        assert!(llquantize_check(10, 3, 2, 10).is_some());
        assert!(llquantize_check(10, 0, 30, 10)
            .unwrap()
            .contains("overflows"));
    }

    fn bucket(lo: Option<i64>, hi: Option<i64>, count: u64) -> Bucket {
        Bucket { lo, hi, count }
    }

    #[test]
    fn the_rewrite_relabels_kinds_keys_and_buckets() {
        let rewrite = DRewrite {
            plans: vec![
                AggPlan {
                    name: "@q".into(),
                    kind: AggKind::Quantize,
                    layout: None,
                    syscall_keys: vec![0],
                    relabel: Relabel::Table(quantize_table()),
                },
                AggPlan {
                    name: "@mx".into(),
                    kind: AggKind::Max,
                    layout: None,
                    syscall_keys: vec![],
                    relabel: Relabel::Negate,
                },
                AggPlan {
                    name: "@ll".into(),
                    kind: AggKind::Llquantize,
                    layout: None,
                    syscall_keys: vec![],
                    relabel: Relabel::Table(llquantize_table(10, 0, 2, 10)),
                },
            ],
        };
        let mut infos = vec![AggregationInfo {
            name: "@q".into(),
            kind: AggKind::Hist,
            layout: None,
        }];
        rewrite.infos(&mut infos);
        assert_eq!(infos[0].kind, AggKind::Quantize);

        let read = libc::SYS_read;
        let mut snap = Snapshot {
            aggregations: vec![
                Aggregation {
                    folded: 0,
                    name: "@q".into(),
                    kind: AggKind::Hist,
                    series: vec![Series::histogram(
                        vec![KeyPart::Int(read)],
                        [61, 62, 63, 66]
                            .into_iter()
                            .zip([3, 5, 2, 1])
                            .map(|(i, n)| bucket(Some(i), Some(i), n))
                            .collect(),
                    )],
                },
                Aggregation {
                    folded: 0,
                    name: "@mx".into(),
                    kind: AggKind::Min,
                    series: vec![Series {
                        key: vec![],
                        value: Value::Scalar(5),
                        sum: None,
                    }],
                },
                Aggregation {
                    folded: 0,
                    name: "@ll".into(),
                    kind: AggKind::Lhist,
                    series: vec![Series::histogram(
                        vec![],
                        vec![bucket(Some(0), Some(0), 1), bucket(Some(20), Some(20), 4)],
                    )],
                },
            ],
            output: vec![],
            ..Default::default()
        };
        rewrite.snapshot(&mut snap);
        let q = &snap.aggregations[0];
        assert_eq!(q.kind, AggKind::Quantize);
        assert_eq!(q.series.len(), 1);
        assert_eq!(q.series[0].key, vec![KeyPart::Str("read".into())]);
        assert_eq!(
            q.series[0].value,
            Value::Buckets(vec![
                bucket(Some(-3), Some(-2), 3),
                bucket(Some(-1), Some(-1), 5),
                bucket(Some(0), Some(0), 2),
                bucket(Some(4), Some(7), 1),
            ])
        );
        let mx = &snap.aggregations[1];
        assert_eq!(
            (mx.kind, &mx.series[0].value),
            (AggKind::Max, &Value::Scalar(-5))
        );
        let ll = &snap.aggregations[2];
        assert_eq!(ll.kind, AggKind::Llquantize);
        assert_eq!(
            ll.series[0].value,
            Value::Buckets(vec![
                bucket(None, Some(0), 1),
                bucket(Some(200), Some(299), 4)
            ])
        );
    }
}
