//! Tail triggers: the state of each `[[watch.trigger]]` of a running watch, fed one typed
//! snapshot per tick, deciding when it fires. Pure (no clock, no I/O): the [`Program`] feeds it
//! and acts on what it returns.
//!
//! The conditions read one histogram aggregation, every key merged:
//! - `p99_above = V`: with `N` events, the 99th percentile event is the one of rank
//!   `ceil(0.99 × N)` in ascending bucket order; the condition holds when the **lower bound**
//!   of the bucket holding it is above `V`, i.e. when the p99 is certainly above `V` whatever
//!   the spread inside the bucket. A bucket with an open lower end (below a linear range)
//!   never is. With power-of-two buckets the condition therefore means "p99 ≥ the first
//!   bucket bound above V".
//! - `share_at_or_above = B, fraction = F`: the events in buckets whose lower bound is ≥ `B`
//!   are more than `F` of all events. A bucket straddling `B` does not count.
//!
//! A tick with no events in the aggregation (or without the aggregation) holds neither.
//!
//! [`Program`]: super::Program

use crate::aggregation::{Snapshot, Value};
use crate::config::TriggerConfig;

/// The rank of the percentile `p99_above` compares, in hundredths.
const PERCENTILE: u64 = 99;

/// What a trigger tests on each tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// The lower bound of the bucket holding the 99th percentile is above this.
    P99Above(i64),
    /// More than `fraction` of the events are in buckets starting at `bound` or above.
    ShareAtOrAbove { bound: i64, fraction: f64 },
}

impl Condition {
    /// Evaluates the condition on merged buckets `(lo, count)` in ascending order; the value
    /// it measured (the p99 bucket's lower bound, or the share) when it holds.
    fn holds(&self, buckets: &[(Option<i64>, u64)]) -> Option<f64> {
        let total: u64 = buckets.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        match *self {
            Condition::P99Above(limit) => {
                let rank = (total * PERCENTILE).div_ceil(100);
                let mut seen = 0;
                let lo = buckets.iter().find_map(|&(lo, n)| {
                    seen += n;
                    (seen >= rank).then_some(lo)
                })?;
                lo.filter(|&lo| lo > limit).map(|lo| lo as f64)
            }
            Condition::ShareAtOrAbove { bound, fraction } => {
                let above: u64 = buckets
                    .iter()
                    .filter(|(lo, _)| lo.is_some_and(|lo| lo >= bound))
                    .map(|(_, n)| n)
                    .sum();
                let share = above as f64 / total as f64;
                (share > fraction).then_some(share)
            }
        }
    }
}

/// A trigger that fired on a tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// The trigger's name.
    pub trigger: String,
    /// The firing tick's `ts_ms`.
    pub fired_ms: u64,
    /// What the condition measured on that tick: the p99 bucket's lower bound, or the share.
    pub value: f64,
}

/// One trigger's state between ticks.
#[derive(Debug, Clone)]
pub struct Trigger {
    name: String,
    /// The aggregation read; `None` until the program's first histogram is known.
    aggregation: Option<String>,
    condition: Condition,
    ticks: u32,
    /// Consecutive ticks the condition has held while armed.
    held: u32,
    /// False from a firing until the condition is false on a tick.
    armed: bool,
}

impl Trigger {
    pub fn new(
        name: String,
        aggregation: Option<String>,
        condition: Condition,
        ticks: u32,
    ) -> Trigger {
        Trigger {
            name,
            aggregation,
            condition,
            ticks: ticks.max(1),
            held: 0,
            armed: true,
        }
    }

    /// The trigger a validated `[[watch.trigger]]` describes.
    pub fn from_config(config: &TriggerConfig) -> Trigger {
        let condition = match (config.p99_above, config.share_at_or_above) {
            (Some(v), _) => Condition::P99Above(v as i64),
            (None, bound) => Condition::ShareAtOrAbove {
                bound: bound.unwrap_or(0) as i64,
                fraction: config.fraction.unwrap_or(1.0),
            },
        };
        Trigger::new(
            config.name.clone(),
            config.aggregation.clone(),
            condition,
            config.ticks,
        )
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The aggregation this trigger reads, when known.
    pub fn aggregation(&self) -> Option<&str> {
        self.aggregation.as_deref()
    }

    /// Settles which aggregation an unnamed trigger reads, from what the program announced
    /// (`(name, is_histogram)` in program order); `Err` with why when it reads none.
    pub fn resolve<'a>(
        &mut self,
        announced: impl IntoIterator<Item = (&'a str, bool)>,
    ) -> Result<(), String> {
        let announced: Vec<(&str, bool)> = announced.into_iter().collect();
        match &self.aggregation {
            None => match announced.iter().find(|(_, histogram)| *histogram) {
                Some((name, _)) => {
                    self.aggregation = Some((*name).to_owned());
                    Ok(())
                }
                None => Err("the program has no histogram aggregation".into()),
            },
            Some(wanted) => match announced.iter().find(|(n, _)| same_name(n, wanted)) {
                Some((name, true)) => {
                    self.aggregation = Some((*name).to_owned());
                    Ok(())
                }
                Some((name, false)) => Err(format!("{name} is not a histogram")),
                None => Err(format!(
                    "the program has no aggregation {wanted} (it has {})",
                    announced
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        }
    }

    /// Takes one tick's snapshot (its `ts_ms`); `Some` on the tick the condition has held
    /// for `ticks` consecutive ticks. After firing it fires again only once the condition has
    /// been false on a tick.
    pub fn observe(&mut self, snapshot: &Snapshot, ts_ms: u64) -> Option<Fired> {
        let value = self.measure(snapshot);
        let Some(value) = value else {
            self.held = 0;
            self.armed = true;
            return None;
        };
        if !self.armed {
            return None;
        }
        self.held += 1;
        if self.held < self.ticks {
            return None;
        }
        self.held = 0;
        self.armed = false;
        Some(Fired {
            trigger: self.name.clone(),
            fired_ms: ts_ms,
            value,
        })
    }

    /// The condition's value on this snapshot, when it holds.
    fn measure(&self, snapshot: &Snapshot) -> Option<f64> {
        let aggregation = match &self.aggregation {
            Some(name) => snapshot
                .aggregations
                .iter()
                .find(|a| same_name(&a.name, name))?,
            None => snapshot
                .aggregations
                .iter()
                .find(|a| a.kind.is_histogram())?,
        };
        let mut merged: Vec<(Option<i64>, u64)> = Vec::new();
        for series in &aggregation.series {
            let Value::Buckets(buckets) = &series.value else {
                continue;
            };
            for b in buckets {
                match merged.iter_mut().find(|(lo, _)| *lo == b.lo) {
                    Some((_, n)) => *n += b.count,
                    None => merged.push((b.lo, b.count)),
                }
            }
        }
        // An open lower end sorts first: `None < Some(_)`.
        merged.sort_by_key(|(lo, _)| *lo);
        self.condition.holds(&merged)
    }
}

/// Aggregation names match with or without bpftrace's `@`.
fn same_name(a: &str, b: &str) -> bool {
    a.trim_start_matches('@') == b.trim_start_matches('@')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::{AggKind, Aggregation, Bucket, KeyPart, Series};

    /// A bucket as `(lo, hi, count)`.
    type Triple = (Option<i64>, Option<i64>, u64);

    /// A snapshot of one `hist` aggregation `@lat` with these keys' buckets.
    fn snapshot(keys: &[&[Triple]]) -> Snapshot {
        Snapshot {
            aggregations: vec![
                Aggregation {
                    name: "@calls".into(),
                    kind: AggKind::Count,
                    series: vec![Series {
                        key: vec![KeyPart::Int(1)],
                        value: Value::Scalar(5),
                        sum: None,
                    }],
                    folded: 0,
                },
                Aggregation {
                    name: "@lat".into(),
                    kind: AggKind::Hist,
                    series: keys
                        .iter()
                        .enumerate()
                        .map(|(i, buckets)| {
                            Series::histogram(
                                vec![KeyPart::Int(i as i64)],
                                buckets
                                    .iter()
                                    .map(|&(lo, hi, count)| Bucket { lo, hi, count })
                                    .collect(),
                            )
                        })
                        .collect(),
                    folded: 0,
                },
            ],
            ..Default::default()
        }
    }

    fn p99(limit: i64, ticks: u32) -> Trigger {
        Trigger::new("t".into(), None, Condition::P99Above(limit), ticks)
    }

    /// 99 fast events and 1 slow one: the p99 (rank 99) is in the fast bucket.
    fn mostly_fast() -> Snapshot {
        snapshot(&[&[(Some(0), Some(1), 99), (Some(1024), Some(2047), 1)]])
    }

    /// 98 fast events and 2 slow ones in another key: the p99 is in the slow bucket.
    fn slow_tail() -> Snapshot {
        snapshot(&[&[(Some(0), Some(1), 98)], &[(Some(1024), Some(2047), 2)]])
    }

    #[test]
    fn p99_is_the_bucket_of_rank_ceil_99_percent_with_keys_merged() {
        let mut t = p99(1000, 1);
        assert_eq!(t.observe(&mostly_fast(), 1), None);
        let fired = t.observe(&slow_tail(), 2).expect("p99 in [1024, 2047]");
        assert_eq!((fired.fired_ms, fired.value), (2, 1024.0));
        // The lower bound is compared: a p99 bucket starting at the limit is not above it.
        let mut t = p99(1024, 1);
        assert_eq!(t.observe(&slow_tail(), 1), None);
        let mut t = p99(1023, 1);
        assert!(t.observe(&slow_tail(), 1).is_some());
    }

    #[test]
    fn it_fires_after_k_consecutive_ticks_and_a_false_tick_starts_over() {
        let mut t = p99(1000, 3);
        assert_eq!(t.observe(&slow_tail(), 1), None);
        assert_eq!(t.observe(&slow_tail(), 2), None);
        assert_eq!(t.observe(&mostly_fast(), 3), None);
        assert_eq!(t.observe(&slow_tail(), 4), None);
        assert_eq!(t.observe(&slow_tail(), 5), None);
        assert_eq!(t.observe(&slow_tail(), 6).map(|f| f.fired_ms), Some(6));
    }

    #[test]
    fn after_firing_it_re_arms_only_once_the_condition_was_false() {
        let mut t = p99(1000, 2);
        assert_eq!(t.observe(&slow_tail(), 1), None);
        assert!(t.observe(&slow_tail(), 2).is_some());
        for ts in 3..10 {
            assert_eq!(t.observe(&slow_tail(), ts), None, "still true at {ts}");
        }
        // An empty tick is a false one.
        assert_eq!(t.observe(&Snapshot::default(), 10), None);
        assert_eq!(t.observe(&slow_tail(), 11), None);
        assert_eq!(t.observe(&slow_tail(), 12).map(|f| f.fired_ms), Some(12));
    }

    #[test]
    fn open_buckets_below_never_count_and_open_above_use_their_lower_bound() {
        // Everything below a linear range: the p99 bucket has no lower bound.
        let below = snapshot(&[&[(None, Some(-1), 100)]]);
        let mut t = p99(-1_000_000, 1);
        assert_eq!(t.observe(&below, 1), None);
        // Everything above a linear range [0, 64): the p99 bucket starts at 64.
        let above = snapshot(&[&[(Some(0), Some(1), 1), (Some(64), None, 99)]]);
        let mut t = p99(63, 1);
        assert_eq!(t.observe(&above, 1).map(|f| f.value), Some(64.0));
        let share = Condition::ShareAtOrAbove {
            bound: 0,
            fraction: 0.5,
        };
        let mut t = Trigger::new("s".into(), None, share, 1);
        assert_eq!(
            t.observe(&below, 1),
            None,
            "an open lower end is below any bound"
        );
    }

    #[test]
    fn share_counts_buckets_starting_at_or_above_the_bound() {
        let condition = Condition::ShareAtOrAbove {
            bound: 1024,
            fraction: 0.25,
        };
        let mut t = Trigger::new("s".into(), Some("lat".into()), condition, 2);
        // 30 of 100 start at 1024 or above; the [512, 2047] bucket straddles it and does not count.
        let tick = snapshot(&[
            &[(Some(0), Some(1), 60), (Some(512), Some(2047), 10)],
            &[(Some(1024), Some(2047), 20), (Some(4096), None, 10)],
        ]);
        assert_eq!(t.observe(&tick, 1), None);
        let fired = t.observe(&tick, 2).expect("30% > 25% twice");
        assert!((fired.value - 0.3).abs() < 1e-9, "{}", fired.value);
        // Exactly the fraction is not above it.
        let mut t = Trigger::new(
            "s".into(),
            None,
            Condition::ShareAtOrAbove {
                bound: 1024,
                fraction: 0.3,
            },
            1,
        );
        assert_eq!(t.observe(&tick, 1), None);
    }

    #[test]
    fn resolve_picks_the_first_histogram_or_checks_the_named_one() {
        let announced = [("@calls", false), ("@lat", true), ("@other", true)];
        let mut t = p99(1, 1);
        t.resolve(announced).unwrap();
        assert_eq!(t.aggregation(), Some("@lat"));
        let mut named = Trigger::new("n".into(), Some("other".into()), Condition::P99Above(1), 1);
        named.resolve(announced).unwrap();
        assert_eq!(named.aggregation(), Some("@other"));
        let mut scalar = Trigger::new("n".into(), Some("@calls".into()), Condition::P99Above(1), 1);
        assert!(scalar
            .resolve(announced)
            .unwrap_err()
            .contains("not a histogram"));
        let mut missing = Trigger::new("n".into(), Some("@nope".into()), Condition::P99Above(1), 1);
        assert!(missing.resolve(announced).unwrap_err().contains("@lat"));
    }
}
