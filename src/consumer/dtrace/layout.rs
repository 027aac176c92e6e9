//! How libdtrace lays out aggregation keys and values in memory, per platform, and their
//! decoding into the one aggregation model. Pure Rust, so it is compiled and tested on hosts
//! without libdtrace; the FFI glue only hands it byte slices and record descriptions.
//!
//! Two layouts exist. illumos (and FreeBSD, macOS and Windows, which carry its libdtrace) keep
//! the key and the value in one buffer (`dtada_data`) and put the lquantize/llquantize
//! parameters in the first 64-bit word of the value. Oracle's DTrace for Linux 2.x keeps keys in
//! `dtada_key`, the parameters in the aggregation's signature (`dtagd_sig`), and encodes and
//! buckets llquantize differently (with a negative half).

use crate::aggregation::{AggKind, Bucket, KeyPart, Series, Value};

/// Which libdtrace's layout a buffer follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// illumos libdtrace and its ports (FreeBSD, macOS, Windows).
    Illumos,
    /// Oracle's DTrace for Linux 2.x (BPF-based).
    Oracle,
}

/// The aggregation action class and its members, identical in every dtrace.h (`DTRACEAGG_*`).
/// They are here, not only in the bindings, so decoding is testable without libdtrace; the FFI
/// glue checks at compile time that the header agrees.
pub mod action {
    /// `DTRACEACT_DIFEXPR`: a traced D expression (every key record).
    pub const DIFEXPR: u16 = 1;
    /// `DTRACEACT_AGGREGATION`: the class of aggregating actions.
    pub const AGGREGATION: u16 = 0x0700;
    pub const COUNT: u16 = AGGREGATION + 1;
    pub const MIN: u16 = AGGREGATION + 2;
    pub const MAX: u16 = AGGREGATION + 3;
    pub const AVG: u16 = AGGREGATION + 4;
    pub const SUM: u16 = AGGREGATION + 5;
    pub const STDDEV: u16 = AGGREGATION + 6;
    pub const QUANTIZE: u16 = AGGREGATION + 7;
    pub const LQUANTIZE: u16 = AGGREGATION + 8;
    pub const LLQUANTIZE: u16 = AGGREGATION + 9;
}

/// `DTRACE_QUANTIZE_NBUCKETS`: power-of-two buckets, negative and positive, and zero.
pub const QUANTIZE_NBUCKETS: usize = (64 - 1) * 2 + 1;
/// `DTRACE_QUANTIZE_ZEROBUCKET`: the bucket that counts exactly 0.
pub const QUANTIZE_ZEROBUCKET: usize = 64 - 1;

/// `DTRACE_QUANTIZE_BUCKETVAL`: the value `dtrace` prints for quantize bucket `bucket`.
pub fn quantize_bucketval(bucket: usize) -> i64 {
    if bucket < QUANTIZE_ZEROBUCKET {
        -(1i64 << (QUANTIZE_ZEROBUCKET - 1 - bucket))
    } else if bucket == QUANTIZE_ZEROBUCKET {
        0
    } else {
        1i64 << (bucket - QUANTIZE_ZEROBUCKET - 1)
    }
}

/// lquantize parameters, encoded the same way on every platform (`DTRACE_LQUANTIZE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LquantizeArg {
    pub base: i32,
    pub levels: u16,
    pub step: u16,
}

impl LquantizeArg {
    /// `DTRACE_LQUANTIZE_BASE`, `_LEVELS` and `_STEP` of an encoded argument.
    pub fn decode(arg: u64) -> LquantizeArg {
        LquantizeArg {
            step: ((arg >> 48) & 0xffff) as u16,
            levels: ((arg >> 32) & 0xffff) as u16,
            base: (arg & 0xffff_ffff) as u32 as i32,
        }
    }

    /// The inverse of [`LquantizeArg::decode`], as the D compiler encodes it.
    pub fn encode(self) -> u64 {
        (u64::from(self.step) << 48) | (u64::from(self.levels) << 32) | u64::from(self.base as u32)
    }
}

/// llquantize parameters. The fields mean the same everywhere; the encodings differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlquantizeArg {
    pub factor: u16,
    /// Lowest magnitude (illumos `low`, Oracle `lmag`).
    pub low: u16,
    /// Highest magnitude (illumos `high`, Oracle `hmag`).
    pub high: u16,
    /// Steps per magnitude (illumos `nsteps`, Oracle `steps`).
    pub steps: u16,
}

impl LlquantizeArg {
    /// illumos: factor at bit 48, low at 32, high at 16, nsteps at 0 (`DTRACE_LLQUANTIZE_*`).
    /// Oracle: steps at 48, hmag at 32, lmag at 16, factor at 0.
    pub fn decode(flavor: Flavor, arg: u64) -> LlquantizeArg {
        let field = |shift: u32| ((arg >> shift) & 0xffff) as u16;
        match flavor {
            Flavor::Illumos => LlquantizeArg {
                factor: field(48),
                low: field(32),
                high: field(16),
                steps: field(0),
            },
            Flavor::Oracle => LlquantizeArg {
                steps: field(48),
                high: field(32),
                low: field(16),
                factor: field(0),
            },
        }
    }

    /// The inverse of [`LlquantizeArg::decode`].
    pub fn encode(self, flavor: Flavor) -> u64 {
        let [a, b, c, d] = match flavor {
            Flavor::Illumos => [self.factor, self.low, self.high, self.steps],
            Flavor::Oracle => [self.steps, self.high, self.low, self.factor],
        };
        (u64::from(a) << 48) | (u64::from(b) << 32) | (u64::from(c) << 16) | u64::from(d)
    }
}

/// A record description (`dtrace_recdesc_t`), reduced to what decoding needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    pub action: u16,
    pub size: u32,
    pub offset: u32,
}

/// Why a buffer could not be decoded.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A record reaches past the end of its buffer.
    #[error("record at offset {offset} size {size} overruns a {len}-byte buffer")]
    Overrun { offset: u32, size: u32, len: usize },
    /// A value's size does not fit its aggregating function.
    #[error("{kind:?} value of {size} bytes does not match its parameters")]
    Size { kind: AggKind, size: usize },
    /// Parameters the D compiler never produces.
    #[error("invalid {0} parameters")]
    Parameters(&'static str),
    /// An action that is not an aggregating function.
    #[error("action {0:#x} is not an aggregating function")]
    NotAggregating(u16),
    /// An empty key record.
    #[error("key record of action {action:#x} has {size} bytes")]
    Key { action: u16, size: u32 },
}

/// Oracle's DTrace for Linux does not record `DTRACEAGG_*` in an aggregation's data record: it
/// records its private `dt_aggfid_t` (libdtrace/dt_aggregate.h, not installed), which numbers
/// the functions alphabetically from `DTRACEACT_AGGREGATION`.
pub mod oracle_action {
    use super::action::AGGREGATION;
    pub const AVG: u16 = AGGREGATION;
    pub const COUNT: u16 = AGGREGATION + 1;
    pub const LLQUANTIZE: u16 = AGGREGATION + 2;
    pub const LQUANTIZE: u16 = AGGREGATION + 3;
    pub const MAX: u16 = AGGREGATION + 4;
    pub const MIN: u16 = AGGREGATION + 5;
    pub const QUANTIZE: u16 = AGGREGATION + 6;
    pub const STDDEV: u16 = AGGREGATION + 7;
    pub const SUM: u16 = AGGREGATION + 8;
}

/// The aggregation kind behind an aggregating action, as `flavor` numbers them.
pub fn kind_of(flavor: Flavor, action: u16) -> Result<AggKind, LayoutError> {
    let kind = match flavor {
        Flavor::Illumos => match action {
            action::COUNT => AggKind::Count,
            action::MIN => AggKind::Min,
            action::MAX => AggKind::Max,
            action::AVG => AggKind::Avg,
            action::SUM => AggKind::Sum,
            action::STDDEV => AggKind::Stddev,
            action::QUANTIZE => AggKind::Quantize,
            action::LQUANTIZE => AggKind::Lquantize,
            action::LLQUANTIZE => AggKind::Llquantize,
            _ => return Err(LayoutError::NotAggregating(action)),
        },
        Flavor::Oracle => match action {
            oracle_action::AVG => AggKind::Avg,
            oracle_action::COUNT => AggKind::Count,
            oracle_action::LLQUANTIZE => AggKind::Llquantize,
            oracle_action::LQUANTIZE => AggKind::Lquantize,
            oracle_action::MAX => AggKind::Max,
            oracle_action::MIN => AggKind::Min,
            oracle_action::QUANTIZE => AggKind::Quantize,
            oracle_action::STDDEV => AggKind::Stddev,
            oracle_action::SUM => AggKind::Sum,
            _ => return Err(LayoutError::NotAggregating(action)),
        },
    };
    Ok(kind)
}

/// The bytes of `record` inside `buffer`.
pub fn slice<'a>(buffer: &'a [u8], record: &Record) -> Result<&'a [u8], LayoutError> {
    let start = record.offset as usize;
    let end = start.checked_add(record.size as usize);
    match end {
        Some(end) if end <= buffer.len() => Ok(&buffer[start..end]),
        _ => Err(LayoutError::Overrun {
            offset: record.offset,
            size: record.size,
            len: buffer.len(),
        }),
    }
}

/// Native-endian 64-bit words of a value (libdtrace hands them over in host order).
fn words(data: &[u8]) -> Vec<i64> {
    data.chunks_exact(8)
        .map(|c| i64::from_ne_bytes(c.try_into().expect("chunks of 8")))
        .collect()
}

/// Reads the key: integer records of 1, 2, 4 or 8 bytes (signed, as D's integer types are),
/// anything larger a NUL-terminated string, as node-libdtrace reads them.
pub fn decode_key(records: &[Record], buffer: &[u8]) -> Result<Vec<KeyPart>, LayoutError> {
    records
        .iter()
        .map(|record| {
            let bytes = slice(buffer, record)?;
            if record.action != action::DIFEXPR && !bytes.is_empty() {
                // stack(), sym(), mod() and friends: kept distinct, as hex, not symbolised.
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                return Ok(KeyPart::Str(format!("0x{hex}")));
            }
            Ok(match bytes.len() {
                1 => KeyPart::Int(i64::from(bytes[0] as i8)),
                2 => KeyPart::Int(i64::from(i16::from_ne_bytes([bytes[0], bytes[1]]))),
                4 => KeyPart::Int(i64::from(i32::from_ne_bytes(
                    bytes.try_into().expect("4 bytes"),
                ))),
                8 => KeyPart::Int(i64::from_ne_bytes(bytes.try_into().expect("8 bytes"))),
                0 => {
                    return Err(LayoutError::Key {
                        action: record.action,
                        size: record.size,
                    })
                }
                _ => {
                    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                    KeyPart::Str(String::from_utf8_lossy(&bytes[..end]).into_owned())
                }
            })
        })
        .collect()
}

/// One aggregation element as libdtrace hands it to a walk callback, as plain data.
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    pub flavor: Flavor,
    /// The aggregating action of the data record (`DTRACEAGG_*`, or Oracle's [`oracle_action`]).
    pub action: u16,
    /// The value's bytes (the record's slice of `dtada_data`).
    pub data: &'a [u8],
    /// Oracle's `dtagd_sig` (lquantize/llquantize parameters); unused on illumos.
    pub sig: u64,
    /// The normalisation factor (`normalize()`); 1 when none.
    pub normal: u64,
}

/// Decodes one value into the aggregation model, as `dtrace` would print it.
pub fn decode_value(element: &Element<'_>) -> Result<(AggKind, Value), LayoutError> {
    let kind = kind_of(element.flavor, element.action)?;
    let w = words(element.data);
    let normal = element.normal.max(1) as i64;
    let need = |n: usize| {
        if w.len() < n {
            Err(LayoutError::Size {
                kind,
                size: element.data.len(),
            })
        } else {
            Ok(())
        }
    };
    let value = match kind {
        AggKind::Count | AggKind::Sum | AggKind::Min | AggKind::Max => {
            need(1)?;
            Value::Scalar(w[0] / normal)
        }
        AggKind::Avg => {
            need(2)?;
            let (count, total) = (w[0] as u64, w[1]);
            Value::Stats {
                count,
                total: total / normal,
                average: if count == 0 {
                    0
                } else {
                    total / normal / count as i64
                },
            }
        }
        AggKind::Stddev => {
            need(4)?;
            let (count, total) = (w[0] as u64, w[1]);
            let squares = u128::from(w[2] as u64) | (u128::from(w[3] as u64) << 64);
            Value::Deviation {
                count,
                total: total / normal,
                average: if count == 0 {
                    0
                } else {
                    total / normal / count as i64
                },
                stddev: stddev(count, total, squares, normal as u64),
            }
        }
        AggKind::Quantize => {
            if w.len() != QUANTIZE_NBUCKETS {
                return Err(LayoutError::Size {
                    kind,
                    size: element.data.len(),
                });
            }
            Value::Buckets(quantize_buckets(&w, normal))
        }
        AggKind::Lquantize => {
            let (arg, counts) = match element.flavor {
                Flavor::Illumos => {
                    need(1)?;
                    (w[0] as u64, &w[1..])
                }
                Flavor::Oracle => (element.sig, &w[..]),
            };
            Value::Buckets(lquantize_buckets(
                kind,
                LquantizeArg::decode(arg),
                counts,
                normal,
            )?)
        }
        AggKind::Llquantize => match element.flavor {
            Flavor::Illumos => {
                need(1)?;
                let arg = LlquantizeArg::decode(Flavor::Illumos, w[0] as u64);
                Value::Buckets(llquantize_buckets_illumos(arg, &w[1..], normal)?)
            }
            Flavor::Oracle => {
                let arg = LlquantizeArg::decode(Flavor::Oracle, element.sig);
                Value::Buckets(llquantize_buckets_oracle(arg, &w, normal)?)
            }
        },
        AggKind::Stats | AggKind::Hist | AggKind::Lhist => unreachable!("not DTrace kinds"),
    };
    Ok((kind, value))
}

/// Decodes a whole element: the key from `key_buffer`, the value from the element.
pub fn decode_series(
    key_records: &[Record],
    key_buffer: &[u8],
    element: &Element<'_>,
) -> Result<(AggKind, Series), LayoutError> {
    let key = decode_key(key_records, key_buffer)?;
    let (kind, value) = decode_value(element)?;
    let series = match value {
        Value::Buckets(buckets) => Series::histogram(key, buckets),
        value => Series {
            key,
            value,
            sum: None,
        },
    };
    Ok((kind, series))
}

/// A bucket with count `count` (normalised; negative counts, from negative increments, are 0).
fn bucket(lo: Option<i64>, hi: Option<i64>, count: i64, normal: i64) -> Bucket {
    Bucket {
        lo,
        hi,
        count: (count / normal).max(0) as u64,
    }
}

/// quantize: bucket `i` below zero holds `(BUCKETVAL(i-1), BUCKETVAL(i)]` (dtrace labels it
/// with its upper end), zero holds 0, above zero `[BUCKETVAL(i), BUCKETVAL(i+1))`.
fn quantize_buckets(counts: &[i64], normal: i64) -> Vec<Bucket> {
    let last = QUANTIZE_NBUCKETS - 1;
    counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 0)
        .map(|(i, &c)| {
            let (lo, hi) = if i == 0 {
                (None, Some(quantize_bucketval(0)))
            } else if i < QUANTIZE_ZEROBUCKET {
                (
                    Some(quantize_bucketval(i - 1) + 1),
                    Some(quantize_bucketval(i)),
                )
            } else if i == QUANTIZE_ZEROBUCKET {
                (Some(0), Some(0))
            } else if i == last {
                (Some(quantize_bucketval(i)), None)
            } else {
                (
                    Some(quantize_bucketval(i)),
                    Some(quantize_bucketval(i + 1) - 1),
                )
            };
            bucket(lo, hi, c, normal)
        })
        .collect()
}

/// lquantize: `levels + 2` counts: below `base`, `levels` buckets of `step`, and the rest.
fn lquantize_buckets(
    kind: AggKind,
    arg: LquantizeArg,
    counts: &[i64],
    normal: i64,
) -> Result<Vec<Bucket>, LayoutError> {
    let levels = usize::from(arg.levels);
    if arg.step == 0 || levels == 0 {
        return Err(LayoutError::Parameters("lquantize"));
    }
    if counts.len() != levels + 2 {
        return Err(LayoutError::Size {
            kind,
            size: counts.len() * 8,
        });
    }
    let (base, step) = (i64::from(arg.base), i64::from(arg.step));
    Ok(counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 0)
        .map(|(i, &c)| {
            let (lo, hi) = if i == 0 {
                (None, Some(base - 1))
            } else if i == levels + 1 {
                (Some(base + levels as i64 * step), None)
            } else {
                let lo = base + (i as i64 - 1) * step;
                (Some(lo), Some(lo + step - 1))
            };
            bucket(lo, hi, c, normal)
        })
        .collect())
}

/// `factor^exp`, or `None` past i64.
fn power(factor: u16, exp: u16) -> Option<i64> {
    i64::from(factor).checked_pow(u32::from(exp))
}

/// illumos llquantize: one bucket below `factor^low`, then for each magnitude `low..=high`
/// buckets of `factor^(m+1) / nsteps` (at least 1) from `factor^m`, then one from
/// `factor^(high+1)` up; the walk of `dt_print_llquantize`.
fn llquantize_buckets_illumos(
    arg: LlquantizeArg,
    counts: &[i64],
    normal: i64,
) -> Result<Vec<Bucket>, LayoutError> {
    let LlquantizeArg {
        factor,
        low,
        high,
        steps,
    } = arg;
    if factor < 2 || low >= high || steps == 0 || factor > steps {
        return Err(LayoutError::Parameters("llquantize"));
    }
    let mut edges = Vec::new(); // lower edge of every bucket after the first
    let mut value = power(factor, low).ok_or(LayoutError::Parameters("llquantize"))?;
    let top = power(factor, high + 1).ok_or(LayoutError::Parameters("llquantize"))?;
    while value < top {
        edges.push(value);
        let next = value_next_magnitude(value, factor);
        let step = if next > i64::from(steps) {
            next / i64::from(steps)
        } else {
            1
        };
        // The magnitude of `value` is where it sits between powers of the factor.
        value += step;
    }
    edges.push(top);
    if counts.len() != edges.len() + 1 {
        return Err(LayoutError::Size {
            kind: AggKind::Llquantize,
            size: counts.len() * 8,
        });
    }
    let first = edges[0];
    Ok(counts
        .iter()
        .enumerate()
        .filter(|(_, &c)| c != 0)
        .map(|(i, &c)| {
            let (lo, hi) = match i {
                0 => (None, Some(first - 1)),
                i if i == edges.len() => (Some(top), None),
                i => (Some(edges[i - 1]), Some(edges[i] - 1)),
            };
            bucket(lo, hi, c, normal)
        })
        .collect())
}

/// The power of `factor` above `value`'s magnitude: for `value` in `[f^m, f^(m+1))`, `f^(m+1)`.
fn value_next_magnitude(value: i64, factor: u16) -> i64 {
    let factor = i64::from(factor);
    let mut next = factor;
    while next <= value {
        next = next.saturating_mul(factor);
    }
    next
}

/// Oracle llquantize: `(high-low+1) * (steps - steps/factor)` buckets on each side of a middle
/// bucket (`|v| < factor^low`), and an overflow bucket at each end. Positive bucket `s` of
/// magnitude `m` starts at `ceil(s * factor^(m+1) / steps)`; with `low == 0` some buckets can
/// hold no integer at all ("ghost bins") and are skipped. Negative buckets mirror the positive.
fn llquantize_buckets_oracle(
    arg: LlquantizeArg,
    counts: &[i64],
    normal: i64,
) -> Result<Vec<Bucket>, LayoutError> {
    let LlquantizeArg {
        factor,
        low,
        high,
        steps,
    } = arg;
    if factor < 2 || low > high || steps < factor || steps % factor != 0 {
        return Err(LayoutError::Parameters("llquantize"));
    }
    let per_mag = usize::from(steps - steps / factor);
    let mags = usize::from(high - low) + 1;
    let side = per_mag * mags;
    if counts.len() != side * 2 + 3 {
        return Err(LayoutError::Size {
            kind: AggKind::Llquantize,
            size: counts.len() * 8,
        });
    }
    let bad = || LayoutError::Parameters("llquantize");
    let scale = power(factor, low).ok_or_else(bad)?;
    let top = power(factor, high + 1).ok_or_else(bad)?;
    // Lower edges of the positive buckets bin0+1 ..= bin0+side, then the overflow's.
    let mut edges = Vec::with_capacity(side + 1);
    for mag in low..=high {
        let span = i128::from(power(factor, mag + 1).ok_or_else(bad)?);
        for s in usize::from(steps / factor)..usize::from(steps) {
            let edge = (s as i128 * span + i128::from(steps) - 1) / i128::from(steps);
            edges.push(edge as i64);
        }
    }
    edges.push(top);
    let bin0 = side + 1;
    let mut buckets = Vec::new();
    for (i, &c) in counts.iter().enumerate().filter(|(_, &c)| c != 0) {
        let (lo, hi) = if i == 0 {
            (None, Some(-top))
        } else if i == counts.len() - 1 {
            (Some(top), None)
        } else if i == bin0 {
            (Some(-(scale - 1)), Some(scale - 1))
        } else {
            let j = i.abs_diff(bin0) - 1;
            let (lo, hi) = (edges[j], edges[j + 1] - 1);
            if lo > hi {
                continue; // a ghost bin: no integer falls in it
            }
            if i > bin0 {
                (Some(lo), Some(hi))
            } else {
                (Some(-hi), Some(-lo))
            }
        };
        buckets.push(bucket(lo, hi, c, normal));
    }
    Ok(buckets)
}

/// `dt_stddev`: `sqrt(avg(x²) - avg(x)²)` in integers, as `dtrace` prints it.
pub fn stddev(count: u64, total: i64, squares: u128, normal: u64) -> u64 {
    if count == 0 {
        return 0;
    }
    let normal = normal.max(1);
    let avg_of_squares = squares / u128::from(normal) / u128::from(count);
    let avg = (total / normal as i64 / count as i64).unsigned_abs();
    let square_of_avg = u128::from(avg) * u128::from(avg);
    isqrt(avg_of_squares.saturating_sub(square_of_avg)) as u64
}

/// Integer square root (floor).
fn isqrt(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    let mut x = (n as f64).sqrt() as u128;
    while x * x > n {
        x -= 1;
    }
    while (x + 1) * (x + 1) <= n {
        x += 1;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(words: &[i64]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_ne_bytes()).collect()
    }

    fn b(lo: Option<i64>, hi: Option<i64>, count: u64) -> Bucket {
        Bucket { lo, hi, count }
    }

    fn decode(flavor: Flavor, action: u16, words: &[i64], sig: u64) -> Value {
        let data = bytes(words);
        decode_value(&Element {
            flavor,
            action,
            data: &data,
            sig,
            normal: 1,
        })
        .unwrap()
        .1
    }

    #[test]
    fn quantize_bucket_values_are_dtraces_labels() {
        // `dtrace -n 'BEGIN { @ = quantize(-3); @ = quantize(0); @ = quantize(5); }'` prints
        // the rows -4, -2, -1, 0, 1, 2, 4, 8: the bucket values around the data.
        assert_eq!(quantize_bucketval(QUANTIZE_ZEROBUCKET), 0);
        assert_eq!(quantize_bucketval(QUANTIZE_ZEROBUCKET + 1), 1);
        assert_eq!(quantize_bucketval(QUANTIZE_ZEROBUCKET + 3), 4);
        assert_eq!(quantize_bucketval(QUANTIZE_ZEROBUCKET - 1), -1);
        assert_eq!(quantize_bucketval(QUANTIZE_ZEROBUCKET - 2), -2);
        assert_eq!(quantize_bucketval(0), -(1 << 62));
        assert_eq!(quantize_bucketval(QUANTIZE_NBUCKETS - 1), 1 << 62);
    }

    #[test]
    fn quantize_decodes_every_region() {
        let z = QUANTIZE_ZEROBUCKET;
        let mut counts = vec![0i64; QUANTIZE_NBUCKETS];
        counts[z - 2] = 1; // -3 and -2: dtrace's row "-2"
        counts[z] = 4; // 0
        counts[z + 1] = 2; // 1
        counts[z + 3] = 7; // 4..=7: dtrace's row "4"
        counts[0] = 1;
        counts[QUANTIZE_NBUCKETS - 1] = 9;
        let value = decode(Flavor::Illumos, action::QUANTIZE, &counts, 0);
        assert_eq!(
            value,
            Value::Buckets(vec![
                b(None, Some(-(1 << 62)), 1),
                b(Some(-3), Some(-2), 1),
                b(Some(0), Some(0), 4),
                b(Some(1), Some(1), 2),
                b(Some(4), Some(7), 7),
                b(Some(1 << 62), None, 9),
            ])
        );
        // The same layout on Oracle, under its own action number.
        assert_eq!(
            decode(Flavor::Oracle, oracle_action::QUANTIZE, &counts, 0),
            value
        );
    }

    #[test]
    fn lquantize_macros_round_trip() {
        let arg = LquantizeArg {
            base: -10,
            levels: 31,
            step: 2,
        };
        assert_eq!(LquantizeArg::decode(arg.encode()), arg);
        // DTRACE_LQUANTIZE_STEP/LEVELS/BASE of a hand-encoded word.
        let raw = (2u64 << 48) | (31u64 << 32) | 5;
        assert_eq!(
            LquantizeArg::decode(raw),
            LquantizeArg {
                base: 5,
                levels: 31,
                step: 2
            }
        );
    }

    /// The seed's `lquantize(x, 0, 63, 2)`: 31 levels; dtrace prints "< 0", 0, 2, …, 60, ">= 62".
    fn seed_counts() -> (LquantizeArg, Vec<i64>) {
        let arg = LquantizeArg {
            base: 0,
            levels: 31,
            step: 2,
        };
        let mut counts = vec![0i64; 33];
        counts[0] = 1; // < 0
        counts[1] = 12; // 0..=1
        counts[2] = 40; // 2..=3
        counts[31] = 3; // 60..=61
        counts[32] = 5; // >= 62
        (arg, counts)
    }

    #[test]
    fn lquantize_decodes_the_seed_layout_on_both_platforms() {
        let (arg, counts) = seed_counts();
        let expected = Value::Buckets(vec![
            b(None, Some(-1), 1),
            b(Some(0), Some(1), 12),
            b(Some(2), Some(3), 40),
            b(Some(60), Some(61), 3),
            b(Some(62), None, 5),
        ]);
        // illumos: the encoded argument is the value's first word.
        let mut illumos = vec![arg.encode() as i64];
        illumos.extend(&counts);
        assert_eq!(
            decode(Flavor::Illumos, action::LQUANTIZE, &illumos, 0),
            expected
        );
        // Oracle: the argument is the signature; the value is only counts.
        assert_eq!(
            decode(
                Flavor::Oracle,
                oracle_action::LQUANTIZE,
                &counts,
                arg.encode()
            ),
            expected
        );
        // A value that does not match its parameters is refused, not misread.
        let data = bytes(&counts[1..]);
        let err = decode_value(&Element {
            flavor: Flavor::Oracle,
            action: oracle_action::LQUANTIZE,
            data: &data,
            sig: arg.encode(),
            normal: 1,
        })
        .unwrap_err();
        assert!(matches!(err, LayoutError::Size { .. }), "{err}");
    }

    #[test]
    fn llquantize_encodings_differ_per_platform() {
        let arg = LlquantizeArg {
            factor: 10,
            low: 0,
            high: 2,
            steps: 20,
        };
        for flavor in [Flavor::Illumos, Flavor::Oracle] {
            assert_eq!(LlquantizeArg::decode(flavor, arg.encode(flavor)), arg);
        }
        assert_ne!(arg.encode(Flavor::Illumos), arg.encode(Flavor::Oracle));
        assert_eq!(arg.encode(Flavor::Illumos) >> 48, 10);
        assert_eq!(arg.encode(Flavor::Oracle) & 0xffff, 10);
    }

    #[test]
    fn llquantize_illumos_buckets_follow_dt_print_llquantize() {
        // llquantize(x, 10, 0, 2, 20): "< 1", 1..9 by 1, 10..95 by 5, 100..950 by 50, ">= 1000".
        let arg = LlquantizeArg {
            factor: 10,
            low: 0,
            high: 2,
            steps: 20,
        };
        let n = 1 + 9 + 18 + 18 + 1;
        let mut counts = vec![0i64; n];
        counts[0] = 2; // < 1
        counts[1] = 3; // 1
        counts[9] = 4; // 9
        counts[10] = 5; // 10..=14
        counts[27] = 6; // 95..=99
        counts[28] = 7; // 100..=149
        counts[n - 1] = 8; // >= 1000
        let mut words = vec![arg.encode(Flavor::Illumos) as i64];
        words.extend(&counts);
        assert_eq!(
            decode(Flavor::Illumos, action::LLQUANTIZE, &words, 0),
            Value::Buckets(vec![
                b(None, Some(0), 2),
                b(Some(1), Some(1), 3),
                b(Some(9), Some(9), 4),
                b(Some(10), Some(14), 5),
                b(Some(95), Some(99), 6),
                b(Some(100), Some(149), 7),
                b(Some(1000), None, 8),
            ])
        );
        // One bucket too few is a mismatch, as EDT_DMISMATCH would be.
        let short = &words[..words.len() - 1];
        let data = bytes(short);
        assert!(decode_value(&Element {
            flavor: Flavor::Illumos,
            action: action::LLQUANTIZE,
            data: &data,
            sig: 0,
            normal: 1,
        })
        .is_err());
    }

    #[test]
    fn llquantize_oracle_buckets_mirror_around_zero_and_skip_ghosts() {
        // llquantize(x, 10, 0, 1, 20): steps/factor = 2, 18 bins per magnitude, 2 magnitudes:
        // 36 per side, nbins = 75, bin0 = 37 (|x| < 1, printed "0").
        let arg = LlquantizeArg {
            factor: 10,
            low: 0,
            high: 1,
            steps: 20,
        };
        let n = 36 * 2 + 3;
        let bin0 = 37;
        let mut counts = vec![0i64; n];
        counts[bin0] = 1; // 0
        counts[bin0 + 1] = 2; // 1 (dtrace row "1")
        counts[bin0 + 3] = 3; // 2 (row "2"); bin0+2 is a ghost between 1 and 2
        counts[bin0 + 19] = 4; // magnitude 1, step 2: 10..=14 (row "10")
        counts[bin0 + 36] = 5; // step 19 of magnitude 1: 95..=99 (row "95")
        counts[n - 1] = 6; // >= 100
        counts[bin0 - 1] = 7; // -1
        counts[0] = 8; // <= -100
        assert_eq!(
            decode(
                Flavor::Oracle,
                oracle_action::LLQUANTIZE,
                &counts,
                arg.encode(Flavor::Oracle)
            ),
            Value::Buckets(vec![
                b(None, Some(-100), 8),
                b(Some(-1), Some(-1), 7),
                b(Some(0), Some(0), 1),
                b(Some(1), Some(1), 2),
                b(Some(2), Some(2), 3),
                b(Some(10), Some(14), 4),
                b(Some(95), Some(99), 5),
                b(Some(100), None, 6),
            ])
        );
    }

    #[test]
    fn avg_and_stddev_match_dtraces_integer_arithmetic() {
        // Values 2, 4, 4, 4, 5, 5, 7, 9: mean 5, population stddev 2.
        let values = [2i64, 4, 4, 4, 5, 5, 7, 9];
        let total: i64 = values.iter().sum();
        let squares: i64 = values.iter().map(|v| v * v).sum();
        assert_eq!(
            decode(Flavor::Illumos, action::AVG, &[8, total], 0),
            Value::Stats {
                count: 8,
                total: 40,
                average: 5
            }
        );
        assert_eq!(
            decode(
                Flavor::Oracle,
                oracle_action::STDDEV,
                &[8, total, squares, 0],
                0
            ),
            Value::Deviation {
                count: 8,
                total: 40,
                average: 5,
                stddev: 2
            }
        );
        // The high word of the 128-bit sum of squares counts.
        // sqrt(2^64 / 2) = 2^31.5, floored.
        assert_eq!(stddev(2, 0, 1u128 << 64, 1), 3_037_000_499);
        assert_eq!(stddev(0, 0, 0, 1), 0);
    }

    #[test]
    fn scalars_are_normalised() {
        let data = bytes(&[1000]);
        let (kind, value) = decode_value(&Element {
            flavor: Flavor::Illumos,
            action: action::SUM,
            data: &data,
            sig: 0,
            normal: 10,
        })
        .unwrap();
        assert_eq!((kind, value), (AggKind::Sum, Value::Scalar(100)));
        assert!(matches!(
            kind_of(Flavor::Illumos, 0x0201),
            Err(LayoutError::NotAggregating(0x0201))
        ));
        // The two numberings disagree: 0x701 is count on both, 0x702 is min or llquantize.
        assert_eq!(kind_of(Flavor::Illumos, 0x0701), Ok(AggKind::Count));
        assert_eq!(kind_of(Flavor::Oracle, 0x0701), Ok(AggKind::Count));
        assert_eq!(kind_of(Flavor::Illumos, 0x0702), Ok(AggKind::Min));
        assert_eq!(kind_of(Flavor::Oracle, 0x0702), Ok(AggKind::Llquantize));
        assert_eq!(kind_of(Flavor::Oracle, 0x0700), Ok(AggKind::Avg));
        assert!(kind_of(Flavor::Illumos, 0x0700).is_err());
    }

    #[test]
    fn keys_read_integers_and_strings() {
        let mut buffer = vec![0u8; 4];
        buffer.extend(7i32.to_ne_bytes());
        buffer.extend(b"read\0garbage");
        buffer.resize(8 + 32, 0);
        buffer.extend((-5i64).to_ne_bytes());
        let records = [
            Record {
                action: action::DIFEXPR,
                size: 4,
                offset: 4,
            },
            Record {
                action: action::DIFEXPR,
                size: 32,
                offset: 8,
            },
            Record {
                action: action::DIFEXPR,
                size: 8,
                offset: 40,
            },
        ];
        assert_eq!(
            decode_key(&records, &buffer).unwrap(),
            vec![
                KeyPart::Int(7),
                KeyPart::Str("read".into()),
                KeyPart::Int(-5)
            ]
        );
        let past = Record {
            action: action::DIFEXPR,
            size: 8,
            offset: 44,
        };
        assert!(matches!(
            decode_key(&[past], &buffer),
            Err(LayoutError::Overrun { .. })
        ));
        // A stack() key (not a D expression) stays distinct as hex.
        let stack = Record {
            action: 0x0401,
            size: 2,
            offset: 4,
        };
        assert_eq!(
            decode_key(&[stack], &[0, 0, 0, 0, 0xab, 0x01]).unwrap(),
            vec![KeyPart::Str("0xab01".into())]
        );
    }
}
