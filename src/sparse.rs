//! The sparse binary encoding of aggregation series that compact frames (`session::compact`)
//! and the store (`store`) share: LEB128 varints (zigzag for signed numbers), strings, bucket
//! indices implied by a histogram's kind and layout, and one series as `key id << 3 | form`
//! followed by what the form holds. Writing and reading live side by side so both ends agree.

use crate::aggregation::{AggKind, Bucket, Layout, Series, Value};

/// Bits of a series head that hold its form; the rest hold the key id.
pub(crate) const FORM_BITS: u32 = 3;
/// Series form: one signed number (count, sum, avg, min, max).
pub(crate) const FORM_SCALAR: u8 = 0;
/// Series form: count, total, average (stats, DTrace avg).
pub(crate) const FORM_STATS: u8 = 1;
/// Series form: count, total, average, stddev (DTrace stddev).
pub(crate) const FORM_DEVIATION: u8 = 2;
/// Series form: first bucket index, run length, one count per index of the run.
pub(crate) const FORM_INDEXED: u8 = 3;
/// Series form: every bucket with its bounds.
pub(crate) const FORM_EXPLICIT: u8 = 4;

/// Explicit bucket flag: the bucket has no lower bound.
pub(crate) const BUCKET_LO_OPEN: u8 = 1;
/// Explicit bucket flag: the bucket has no upper bound.
pub(crate) const BUCKET_HI_OPEN: u8 = 2;

/// The last index of a `hist` (log2) histogram: bpftrace 0.17's open top `[2^31, null]`.
const LOG2_TOP: u32 = 33;

/// How a histogram's buckets map to indices, from its kind and announced layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Index {
    /// `hist`: `[null,-1]`→0, `[0,0]`→1, `[2^k, 2^(k+1)-1]`→k+2, `[2^31, null]`→33.
    Log2,
    /// `lhist`/`lquantize` with a usable layout: `[null, min-1]`→0,
    /// `[min+k*step, min+(k+1)*step-1]`→k+1 for k < levels, `[min+levels*step, null]`→levels+1.
    Linear { min: i64, step: i64, levels: i64 },
    /// No index: buckets always go explicit.
    None,
}

impl Index {
    pub(crate) fn of(kind: AggKind, layout: Option<Layout>) -> Index {
        match (kind, layout) {
            (AggKind::Hist, _) => Index::Log2,
            (AggKind::Lhist | AggKind::Lquantize, Some(Layout { min, max, step })) => {
                // The top bucket's lower edge must be an i64, and the bucket below min too.
                let usable = step > 0
                    && max >= min
                    && min > i64::MIN
                    && max
                        .checked_sub(min)
                        .and_then(|span| min.checked_add(span / step * step))
                        .is_some();
                if usable {
                    Index::Linear {
                        min,
                        step,
                        levels: (max - min) / step,
                    }
                } else {
                    Index::None
                }
            }
            _ => Index::None,
        }
    }

    /// The bounds of bucket `index`, or `None` past the last index.
    pub(crate) fn bounds(self, index: u64) -> Option<(Option<i64>, Option<i64>)> {
        match self {
            Index::Log2 => match index {
                0 => Some((None, Some(-1))),
                1 => Some((Some(0), Some(0))),
                2..=32 => {
                    let lo = 1i64 << (index - 2);
                    Some((Some(lo), Some(2 * lo - 1)))
                }
                33 => Some((Some(1 << 31), None)),
                _ => None,
            },
            Index::Linear { min, step, levels } => {
                let levels = levels as u64;
                if index == 0 {
                    Some((None, Some(min - 1)))
                } else if index <= levels {
                    let lo = min + (index as i64 - 1) * step;
                    Some((Some(lo), Some(lo + step - 1)))
                } else if index == levels + 1 {
                    Some((Some(min + levels as i64 * step), None))
                } else {
                    None
                }
            }
            Index::None => None,
        }
    }

    /// The index of `bucket`, if its bounds are exactly those of an index.
    pub(crate) fn index(self, bucket: &Bucket) -> Option<u64> {
        let index = match (self, bucket.lo) {
            (Index::None, _) => return None,
            (_, None) => 0,
            (Index::Log2, Some(_)) if bucket.hi.is_none() => u64::from(LOG2_TOP),
            (Index::Log2, Some(0)) => 1,
            (Index::Log2, Some(lo)) if lo > 0 => u64::from(lo.ilog2()) + 2,
            (Index::Log2, Some(_)) => return None,
            (Index::Linear { levels, .. }, Some(_)) if bucket.hi.is_none() => levels as u64 + 1,
            (Index::Linear { min, step, .. }, Some(lo)) if lo >= min => {
                ((lo as i128 - min as i128) / step as i128) as u64 + 1
            }
            (Index::Linear { .. }, Some(_)) => return None,
        };
        (self.bounds(index) == Some((bucket.lo, bucket.hi))).then_some(index)
    }
}

/// Every kind, in declaration order.
pub(crate) const KINDS: [AggKind; 12] = [
    AggKind::Count,
    AggKind::Sum,
    AggKind::Avg,
    AggKind::Min,
    AggKind::Max,
    AggKind::Stats,
    AggKind::Stddev,
    AggKind::Hist,
    AggKind::Lhist,
    AggKind::Quantize,
    AggKind::Lquantize,
    AggKind::Llquantize,
];

/// The kind spelled as [`kind_name`] spells it.
pub(crate) fn kind_from_name(name: &str) -> Option<AggKind> {
    KINDS.into_iter().find(|k| kind_name(*k) == name)
}

/// The kind as the JSON protocol spells it.
pub(crate) fn kind_name(kind: AggKind) -> &'static str {
    match kind {
        AggKind::Count => "count",
        AggKind::Sum => "sum",
        AggKind::Avg => "avg",
        AggKind::Min => "min",
        AggKind::Max => "max",
        AggKind::Stats => "stats",
        AggKind::Stddev => "stddev",
        AggKind::Hist => "hist",
        AggKind::Lhist => "lhist",
        AggKind::Quantize => "quantize",
        AggKind::Lquantize => "lquantize",
        AggKind::Llquantize => "llquantize",
    }
}

/// One series: its key id and form in one varint (`id << 3 | form`), then what the form holds.
pub(crate) fn put_value(out: &mut Vec<u8>, index: Index, id: u32, series: &Series) {
    let head = |form: u8| (u64::from(id) << FORM_BITS) | u64::from(form);
    match &series.value {
        Value::Scalar(v) => {
            put_u64(out, head(FORM_SCALAR));
            put_i64(out, *v);
        }
        Value::Stats {
            count,
            total,
            average,
        } => {
            put_u64(out, head(FORM_STATS));
            put_u64(out, *count);
            put_i64(out, *total);
            put_i64(out, *average);
        }
        Value::Deviation {
            count,
            total,
            average,
            stddev,
        } => {
            put_u64(out, head(FORM_DEVIATION));
            put_u64(out, *count);
            put_i64(out, *total);
            put_i64(out, *average);
            put_u64(out, *stddev);
        }
        Value::Buckets(buckets) => {
            if !put_indexed(out, index, head(FORM_INDEXED), buckets) {
                put_explicit(out, head(FORM_EXPLICIT), buckets);
            }
        }
    }
}

/// Writes `buckets` as a run of counts when every bucket sits exactly on an index, in strictly
/// ascending order, with a count (zeros are what the run fills in, so a zero bucket could not
/// come back), and the run is no longer than the explicit form. Writes nothing otherwise.
fn put_indexed(out: &mut Vec<u8>, index: Index, head: u64, buckets: &[Bucket]) -> bool {
    let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
        return false;
    };
    let (Some(first), Some(last)) = (index.index(first), index.index(last)) else {
        return false;
    };
    if last < first {
        return false;
    }
    let run = last - first + 1;
    if run > buckets.len() as u64 {
        // Zeros inside the run cost a byte each; explicit buckets cost their bounds.
        let indexed = run - buckets.len() as u64
            + buckets.iter().map(|b| varint_len(b.count)).sum::<u64>()
            + varint_len(first)
            + varint_len(run);
        let explicit = varint_len(buckets.len() as u64)
            + buckets
                .iter()
                .map(|b| {
                    1 + varint_len(b.count)
                        + b.lo.map_or(0, |v| varint_len(zigzag(v)))
                        + b.hi.map_or(0, |v| varint_len(zigzag(v)))
                })
                .sum::<u64>();
        if indexed > explicit {
            return false;
        }
    }
    let start = out.len();
    put_u64(out, head);
    put_u64(out, first);
    put_u64(out, run);
    let mut next = first;
    for bucket in buckets {
        let at = match index.index(bucket) {
            Some(at) if at >= next && bucket.count > 0 => at,
            _ => {
                out.truncate(start);
                return false;
            }
        };
        out.resize(out.len() + (at - next) as usize, 0);
        put_u64(out, bucket.count);
        next = at + 1;
    }
    true
}

fn put_explicit(out: &mut Vec<u8>, head: u64, buckets: &[Bucket]) {
    put_u64(out, head);
    put_usize(out, buckets.len());
    for bucket in buckets {
        let open = if bucket.lo.is_none() {
            BUCKET_LO_OPEN
        } else {
            0
        } | if bucket.hi.is_none() {
            BUCKET_HI_OPEN
        } else {
            0
        };
        out.push(open);
        for bound in [bucket.lo, bucket.hi].into_iter().flatten() {
            put_i64(out, bound);
        }
        put_u64(out, bucket.count);
    }
}

pub(crate) fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(crate) fn put_usize(out: &mut Vec<u8>, v: usize) {
    put_u64(out, v as u64);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, zigzag(v));
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_usize(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

/// Why bytes could not be read back: the encoding is internal, so any of these means the
/// bytes were damaged or written by something else.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("truncated")]
    Truncated,
    #[error("varint overflows 64 bits")]
    Overflow,
    #[error("{0}")]
    Invalid(&'static str),
}

/// Reads what the `put_*` functions wrote, refusing anything out of bounds. Cloning one
/// peeks ahead (the store reads a series head before choosing how to read the rest).
#[derive(Clone)]
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// Whether every byte was read.
    pub(crate) fn is_done(&self) -> bool {
        self.at == self.bytes.len()
    }

    pub(crate) fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = *self.bytes.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(DecodeError::Overflow);
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Overflow)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        let u = self.u64()?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    /// A length or count: no larger than the bytes left, since every element takes a byte,
    /// so a damaged length cannot make a reader allocate without bound.
    pub(crate) fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.u64()?;
        if n > (self.bytes.len() - self.at) as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    pub(crate) fn str(&mut self) -> Result<String, DecodeError> {
        let len = self.len()?;
        let bytes = &self.bytes[self.at..self.at + len];
        self.at += len;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Invalid("text is not UTF-8"))
    }
}

/// Reads one series written by [`put_value`]: its key id and value.
pub(crate) fn get_value(r: &mut Reader, index: Index) -> Result<(u64, Value), DecodeError> {
    let head = r.u64()?;
    let value = match (head & ((1 << FORM_BITS) - 1)) as u8 {
        FORM_SCALAR => Value::Scalar(r.i64()?),
        FORM_STATS => Value::Stats {
            count: r.u64()?,
            total: r.i64()?,
            average: r.i64()?,
        },
        FORM_DEVIATION => Value::Deviation {
            count: r.u64()?,
            total: r.i64()?,
            average: r.i64()?,
            stddev: r.u64()?,
        },
        FORM_INDEXED => {
            let first = r.u64()?;
            let run = r.len()? as u64;
            let mut buckets = Vec::new();
            for at in first..first.saturating_add(run) {
                let count = r.u64()?;
                if count > 0 {
                    let (lo, hi) = index
                        .bounds(at)
                        .ok_or(DecodeError::Invalid("bucket index past the layout"))?;
                    buckets.push(Bucket { lo, hi, count });
                }
            }
            Value::Buckets(buckets)
        }
        FORM_EXPLICIT => {
            let n = r.len()?;
            let mut buckets = Vec::with_capacity(n);
            for _ in 0..n {
                let open = r.byte()?;
                if open & !(BUCKET_LO_OPEN | BUCKET_HI_OPEN) != 0 {
                    return Err(DecodeError::Invalid("unknown bucket flags"));
                }
                let lo = (open & BUCKET_LO_OPEN == 0).then(|| r.i64()).transpose()?;
                let hi = (open & BUCKET_HI_OPEN == 0).then(|| r.i64()).transpose()?;
                buckets.push(Bucket {
                    lo,
                    hi,
                    count: r.u64()?,
                });
            }
            Value::Buckets(buckets)
        }
        _ => return Err(DecodeError::Invalid("unknown series form")),
    };
    Ok((head >> FORM_BITS, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::KeyPart;

    #[test]
    fn every_value_form_reads_back_as_written() {
        let lin = Index::of(
            AggKind::Lhist,
            Some(Layout {
                min: 0,
                max: 10,
                step: 2,
            }),
        );
        let b = |lo, hi, count| Bucket { lo, hi, count };
        let values = [
            Value::Scalar(-5),
            Value::Scalar(i64::MIN),
            Value::Stats {
                count: u64::MAX,
                total: i64::MAX,
                average: -3,
            },
            Value::Deviation {
                count: 2,
                total: -4,
                average: -2,
                stddev: 1,
            },
            Value::Buckets(vec![
                b(None, Some(-1), 3),
                b(Some(2), Some(3), 1),
                b(Some(10), None, 7),
            ]),
            Value::Buckets(vec![b(Some(1), Some(1), 3), b(Some(5), None, 2)]),
            Value::Buckets(vec![]),
        ];
        for (id, value) in values.into_iter().enumerate() {
            let series = Series {
                key: vec![KeyPart::Int(1)],
                value,
                sum: None,
            };
            let mut out = Vec::new();
            put_value(&mut out, lin, id as u32 * 1000, &series);
            let mut r = Reader::new(&out);
            assert_eq!(
                get_value(&mut r, lin).unwrap(),
                (id as u64 * 1000, series.value)
            );
            assert!(r.is_done());
        }
    }

    #[test]
    fn damaged_bytes_are_refused_not_misread() {
        let mut r = Reader::new(&[0xff; 11]);
        assert_eq!(r.u64(), Err(DecodeError::Overflow));
        let mut r = Reader::new(&[FORM_EXPLICIT, 200]);
        assert_eq!(get_value(&mut r, Index::None), Err(DecodeError::Truncated));
        let mut r = Reader::new(&[7]);
        assert!(matches!(
            get_value(&mut r, Index::None),
            Err(DecodeError::Invalid(_))
        ));
        let mut r = Reader::new(&[FORM_INDEXED, 40, 1, 1]);
        assert!(get_value(&mut r, Index::Log2).is_err());
        for kind in KINDS {
            assert_eq!(kind_from_name(kind_name(kind)), Some(kind));
        }
    }
}
