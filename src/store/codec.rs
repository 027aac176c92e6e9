//! How one stored row's snapshot becomes bytes and back: keys as ids of the watch's key
//! dictionary, aggregations as slots of the run's table, series in the sparse encoding that
//! compact frames use (`crate::sparse`), the whole compressed by zstd with its checksum on.
//! Histogram counts on a layout's indices may instead be bit-packed (the store's own form,
//! [`FORM_PACKED`], never sent to browsers), whichever is smaller.

use std::collections::HashMap;

use crate::aggregation::{AggKind, Aggregation, AggregationInfo, Bucket, KeyPart, Snapshot, Value};
use crate::sparse::{
    get_value, put_str, put_u64, put_usize, put_value, DecodeError, Index, Reader, FORM_BITS,
    FORM_INDEXED,
};

/// Series form of stored rows only (compact frames use 0–4): first bucket index, run length,
/// a bit width `w`, then the run's counts (zeros for empty indices) as `w`-bit numbers, least
/// significant bit first, in `ceil(run × w / 8)` bytes. Counts of similar size (the common
/// case) take `w` bits each where varints take whole bytes that zstd cannot shrink much
/// (a varint's low byte is close to random).
const FORM_PACKED: u8 = 5;

/// The zstd level tick rows are written with: level 3 (zstd's default) compresses a 50-key
/// frame to within a few percent of level 19 at a tenth of the cost.
const ZSTD_LEVEL: i32 = 3;

/// Largest decoded row accepted: a damaged frame header cannot make a reader allocate more.
/// A 65,536-key × 34-bucket frame (the compact dictionary's bound) is well under it.
const MAX_ROW_BYTES: u64 = 256 << 20;

/// The watch's key dictionary: id ↔ key, ids given in order of first appearance.
#[derive(Debug, Default)]
pub(super) struct Keys {
    pub(super) by_id: Vec<Vec<KeyPart>>,
    pub(super) ids: HashMap<Vec<KeyPart>, u32>,
}

impl Keys {
    /// The keys of `snapshot` the dictionary lacks, in order, without adding them.
    pub(super) fn missing(&self, snapshot: &Snapshot) -> Vec<Vec<KeyPart>> {
        let mut fresh: Vec<Vec<KeyPart>> = Vec::new();
        for series in snapshot.aggregations.iter().flat_map(|a| &a.series) {
            if !self.ids.contains_key(&series.key) && !fresh.contains(&series.key) {
                fresh.push(series.key.clone());
            }
        }
        fresh
    }

    pub(super) fn push(&mut self, key: Vec<KeyPart>) -> u32 {
        let id = self.by_id.len() as u32;
        self.ids.insert(key.clone(), id);
        self.by_id.push(key);
        id
    }
}

/// A key as its JSON array text (`["read", 3]`), the form the dictionary table holds.
pub(super) fn key_text(key: &[KeyPart]) -> String {
    serde_json::to_string(key).expect("keys always serialise as JSON")
}

/// Reads a key back from its JSON text: integers are `Int`, strings `Str`.
pub(super) fn parse_key(text: &str) -> Option<Vec<KeyPart>> {
    let parts: Vec<serde_json::Value> = serde_json::from_str(text).ok()?;
    parts
        .into_iter()
        .map(|p| match p {
            serde_json::Value::String(s) => Some(KeyPart::Str(s)),
            serde_json::Value::Number(n) => n.as_i64().map(KeyPart::Int),
            _ => None,
        })
        .collect()
}

/// A checksum of a key's text (FNV-1a, 64 bits), so a damaged dictionary row is refused
/// rather than read as another key.
pub(super) fn key_checksum(text: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// The slot of `aggregation` in the run's table, as compact frames choose theirs.
pub(super) fn slot(
    infos: &[AggregationInfo],
    at: usize,
    aggregation: &Aggregation,
) -> Option<usize> {
    let matches = |i: &AggregationInfo| i.name == aggregation.name && i.kind == aggregation.kind;
    if infos.get(at).is_some_and(matches) {
        return Some(at);
    }
    infos.iter().position(matches)
}

/// The sparse bytes of `snapshot`, every key and aggregation already known, compressed.
pub(super) fn encode(
    snapshot: &Snapshot,
    infos: &[AggregationInfo],
    keys: &Keys,
    compressor: &mut zstd::bulk::Compressor<'static>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    put_usize(&mut out, snapshot.aggregations.len());
    for (at, aggregation) in snapshot.aggregations.iter().enumerate() {
        let slot = slot(infos, at, aggregation).expect("aggregations are defined before encoding");
        let index = Index::of(infos[slot].kind, infos[slot].layout);
        put_usize(&mut out, slot);
        put_usize(&mut out, aggregation.folded);
        put_usize(&mut out, aggregation.series.len());
        for series in &aggregation.series {
            let id = keys.ids[&series.key];
            let packed = match &series.value {
                Value::Buckets(buckets) => put_packed(&mut out, index, id, buckets),
                _ => false,
            };
            if !packed {
                put_value(&mut out, index, id, series);
            }
        }
    }
    for list in [&snapshot.output, &snapshot.drops, &snapshot.errors] {
        put_usize(&mut out, list.len());
        for text in list {
            put_str(&mut out, text);
        }
    }
    compressor
        .compress(&out)
        .expect("compressing into a growing buffer cannot fail")
}

/// Bytes of `v` as a LEB128 varint.
fn varint_len(v: u64) -> u64 {
    u64::from((64 - (v | 1).leading_zeros()).div_ceil(7))
}

/// Writes `buckets` in the packed form when every bucket sits on an index, in ascending
/// order, and the packed counts are smaller than the indexed form's varints; else writes
/// nothing and returns false (the caller writes a sparse form). Each bucket's index is
/// computed once: this runs for every series of every tick.
fn put_packed(out: &mut Vec<u8>, index: Index, id: u32, buckets: &[Bucket]) -> bool {
    let Some(first) = buckets.first().and_then(|b| index.index(b)) else {
        return false;
    };
    let mut counts: Vec<u64> = Vec::with_capacity(buckets.len());
    let (mut next, mut varints, mut widest) = (first, 0u64, 0u64);
    for bucket in buckets {
        match index.index(bucket) {
            Some(at) if at >= next && bucket.count > 0 && at - first <= DENSE_MAX => {
                counts.resize((at - first) as usize, 0);
                counts.push(bucket.count);
                // A zero inside the run is one varint byte.
                varints += at - next + varint_len(bucket.count);
                widest |= bucket.count;
                next = at + 1;
            }
            _ => return false,
        }
    }
    let run = counts.len() as u64;
    let width = 64 - widest.leading_zeros();
    // Head, first and run are the same in both forms; packed adds the width byte.
    if 1 + (run * u64::from(width)).div_ceil(8) >= varints {
        return false;
    }
    put_u64(out, (u64::from(id) << FORM_BITS) | u64::from(FORM_PACKED));
    put_u64(out, first);
    put_u64(out, run);
    out.push(width as u8);
    let (mut acc, mut bits) = (0u128, 0u32);
    for count in counts {
        acc |= u128::from(count) << bits;
        bits += width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
    true
}

/// One series of a stored row: the store's packed form, or any form of `crate::sparse`.
fn get_series(
    r: &mut Reader,
    index: Index,
) -> Result<(u64, crate::aggregation::Value), DecodeError> {
    let mut peek = r.clone();
    let head = peek.u64()?;
    if (head & ((1 << FORM_BITS) - 1)) as u8 != FORM_PACKED {
        return get_value(r, index);
    }
    *r = peek;
    let first = r.u64()?;
    let mut buckets = Vec::new();
    read_packed(r, first, |at, count| {
        if count > 0 {
            let (lo, hi) = index
                .bounds(at)
                .ok_or(DecodeError::Invalid("bucket index past the layout"))?;
            buckets.push(Bucket { lo, hi, count });
        }
        Ok(())
    })?;
    Ok((head >> FORM_BITS, Value::Buckets(buckets)))
}

/// Reads a packed run of counts (its length, bit width and bits, after its first index) and
/// hands every count, zeros included, to `each` with its bucket index. The run's bytes must be
/// there, so a damaged run length cannot make a reader allocate or read on.
fn read_packed(
    r: &mut Reader,
    first: u64,
    mut each: impl FnMut(u64, u64) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let run = r.u64()?;
    let width = u32::from(r.byte()?);
    if !(1..=64).contains(&width) {
        return Err(DecodeError::Invalid("packed counts wider than 64 bits"));
    }
    let bytes = run
        .checked_mul(u64::from(width))
        .map(|b| b.div_ceil(8))
        .filter(|&b| b <= r.remaining() as u64)
        .ok_or(DecodeError::Truncated)?;
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    let (mut acc, mut bits, mut left) = (0u128, 0u32, bytes);
    for at in first..first.saturating_add(run) {
        while bits < width {
            acc |= u128::from(r.byte()?) << bits;
            bits += 8;
            left -= 1;
        }
        each(at, acc as u64 & mask)?;
        acc >>= width;
        bits -= width;
    }
    if left != 0 || acc != 0 {
        return Err(DecodeError::Invalid(
            "packed counts do not fill their bytes",
        ));
    }
    Ok(())
}

/// The compressor rows are written with: zstd level [`ZSTD_LEVEL`], its checksum on.
pub(super) fn compressor() -> zstd::bulk::Compressor<'static> {
    let mut compressor =
        zstd::bulk::Compressor::new(ZSTD_LEVEL).expect("zstd accepts its default level");
    compressor
        .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
        .expect("zstd accepts the checksum flag");
    compressor
}

/// The snapshot `bytes` hold; any damage (zstd checksum, bounds, unknown ids) is an error.
pub(super) fn decode(
    bytes: &[u8],
    infos: &[AggregationInfo],
    keys: &Keys,
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Result<Snapshot, DecodeError> {
    let raw = decompress(bytes, decompressor)?;
    let mut r = Reader::new(&raw);
    let mut snapshot = Snapshot::default();
    for _ in 0..r.len()? {
        let slot = r.u64()? as usize;
        let info = infos
            .get(slot)
            .ok_or(DecodeError::Invalid("aggregation slot not in the run"))?;
        let index = Index::of(info.kind, info.layout);
        let folded = r.u64()? as usize;
        let n = r.len()?;
        let mut series = Vec::with_capacity(n);
        for _ in 0..n {
            let (id, value) = get_series(&mut r, index)?;
            let key = keys
                .by_id
                .get(id as usize)
                .ok_or(DecodeError::Invalid("key id not in the dictionary"))?;
            series.push(crate::aggregation::Series {
                key: key.clone(),
                value,
                sum: None,
            });
        }
        snapshot.aggregations.push(Aggregation {
            name: info.name.clone(),
            kind: info.kind,
            series,
            folded,
        });
    }
    for list in [
        &mut snapshot.output,
        &mut snapshot.drops,
        &mut snapshot.errors,
    ] {
        for _ in 0..r.len()? {
            list.push(r.str()?);
        }
    }
    if !r.is_done() {
        return Err(DecodeError::Invalid("trailing bytes in a stored row"));
    }
    Ok(snapshot)
}

/// Highest bucket index a summed column keeps in a dense array; a layout with more indices
/// (a very fine `lhist`) sums its series as buckets instead.
const DENSE_MAX: u64 = 1 << 16;

/// One column of a downsampled read being summed: rows are added in key-id space, histogram
/// counts on their layout's indices into one dense array per key, so an hour of 300-key
/// ticks is summed without decoding a key or a bucket list per row. `finish` gives the same
/// snapshot as decoding each row and `Snapshot::absorb`-ing them in order.
#[derive(Default)]
pub(super) struct ColumnSum {
    aggregations: Vec<AggSum>,
    output: Vec<String>,
    drops: Vec<String>,
    errors: Vec<String>,
    /// One series' (index, count) pairs, reused row after row.
    scratch: Vec<(u64, u64)>,
}

struct AggSum {
    name: String,
    kind: AggKind,
    index: Index,
    folded: usize,
    /// Key id and sum, in order of first appearance.
    series: Vec<(u64, Sum)>,
    /// Position in `series` by key id (ids are dense: the dictionary's), `usize::MAX` if none.
    at: Vec<usize>,
}

enum Sum {
    /// Counts by bucket index of the aggregation's layout.
    Counts(Vec<u64>),
    /// Anything else, merged as `Snapshot::absorb` merges values.
    Value(Value),
}

impl AggSum {
    /// The sum of key `id` (an id of the dictionary, checked by the caller).
    fn entry(&mut self, id: u64, fresh: impl FnOnce() -> Sum) -> &mut Sum {
        let slot = id as usize;
        if self.at.len() <= slot {
            self.at.resize(slot + 1, usize::MAX);
        }
        if self.at[slot] == usize::MAX {
            self.at[slot] = self.series.len();
            self.series.push((id, fresh()));
        }
        let at = self.at[slot];
        &mut self.series[at].1
    }

    fn buckets(index: Index, counts: &[u64]) -> Value {
        Value::Buckets(
            counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .filter_map(|(at, &count)| {
                    let (lo, hi) = index.bounds(at as u64)?;
                    Some(Bucket { lo, hi, count })
                })
                .collect(),
        )
    }

    /// Adds a decoded value: into the counts when every bucket sits on an index, else merged.
    fn add_value(&mut self, id: u64, value: Value) {
        let (kind, index) = (self.kind, self.index);
        let mut value = Some(value);
        let sum = self.entry(id, || Sum::Value(value.take().expect("taken once")));
        let Some(value) = value else { return };
        if let (Sum::Counts(counts), Value::Buckets(buckets)) = (&mut *sum, &value) {
            let on_grid: Option<Vec<u64>> = buckets
                .iter()
                .map(|b| index.index(b).filter(|&at| at <= DENSE_MAX))
                .collect();
            if let Some(ats) = on_grid {
                for (at, b) in ats.into_iter().zip(buckets) {
                    add_count(counts, at, b.count);
                }
                return;
            }
        }
        if let Sum::Counts(counts) = sum {
            *sum = Sum::Value(AggSum::buckets(index, counts));
        }
        if let Sum::Value(into) = sum {
            crate::aggregation::merge_value(kind, into, value);
        }
    }
}

fn add_count(counts: &mut Vec<u64>, at: u64, count: u64) {
    let at = at as usize;
    if counts.len() <= at {
        counts.resize(at + 1, 0);
    }
    counts[at] = counts[at].saturating_add(count);
}

/// The highest index of `index`'s layout.
fn last_index(index: Index) -> Option<u64> {
    match index {
        Index::Log2 => Some(33),
        Index::Linear { levels, .. } => Some(levels as u64 + 1),
        Index::None => None,
    }
}

/// Reads an indexed or packed series into `add(index, count)` for its non-zero counts and
/// returns its key id; `None`, the reader untouched, for any other form.
fn read_counts(
    r: &mut Reader,
    index: Index,
    mut add: impl FnMut(u64, u64),
) -> Result<Option<u64>, DecodeError> {
    let mut peek = r.clone();
    let head = peek.u64()?;
    let form = (head & ((1 << FORM_BITS) - 1)) as u8;
    if form != FORM_INDEXED && form != FORM_PACKED {
        return Ok(None);
    }
    *r = peek;
    let last = last_index(index);
    let mut put = |at: u64, count: u64| {
        if count > 0 {
            if last.is_none_or(|last| at > last) {
                return Err(DecodeError::Invalid("bucket index past the layout"));
            }
            add(at, count);
        }
        Ok(())
    };
    let first = r.u64()?;
    if form == FORM_INDEXED {
        let run = r.len()? as u64;
        for at in first..first.saturating_add(run) {
            put(at, r.u64()?)?;
        }
        return Ok(Some(head >> FORM_BITS));
    }
    read_packed(r, first, put)?;
    Ok(Some(head >> FORM_BITS))
}

impl ColumnSum {
    /// Adds one stored row (`bytes`, written by [`encode`]); any damage is an error.
    pub(super) fn add(
        &mut self,
        bytes: &[u8],
        infos: &[AggregationInfo],
        keys: &Keys,
        decompressor: &mut zstd::bulk::Decompressor<'static>,
    ) -> Result<(), DecodeError> {
        let raw = decompress(bytes, decompressor)?;
        let mut r = Reader::new(&raw);
        let known = keys.by_id.len() as u64;
        for _ in 0..r.len()? {
            let info = infos
                .get(r.u64()? as usize)
                .ok_or(DecodeError::Invalid("aggregation slot not in the run"))?;
            let index = Index::of(info.kind, info.layout);
            let folded = r.u64()? as usize;
            let at = match self.aggregations.iter().position(|a| a.name == info.name) {
                Some(at) => at,
                None => {
                    self.aggregations.push(AggSum {
                        name: info.name.clone(),
                        kind: info.kind,
                        index,
                        folded: 0,
                        series: Vec::new(),
                        at: Vec::new(),
                    });
                    self.aggregations.len() - 1
                }
            };
            let agg = &mut self.aggregations[at];
            agg.folded = agg.folded.max(folded);
            // Counts go straight into the dense arrays when the row's layout is the column's.
            let dense = agg.index == index && index != Index::None;
            // Every index of the layout fits a dense array: counts go straight into it.
            let direct = dense && last_index(index).is_some_and(|last| last <= DENSE_MAX);
            for _ in 0..r.len()? {
                if direct {
                    let head = r.clone().u64()?;
                    let form = (head & ((1 << FORM_BITS) - 1)) as u8;
                    let id = head >> FORM_BITS;
                    if (form == FORM_INDEXED || form == FORM_PACKED) && id < known {
                        if let Sum::Counts(counts) = agg.entry(id, || Sum::Counts(Vec::new())) {
                            read_counts(&mut r, index, |at, c| add_count(counts, at, c))?;
                            continue;
                        }
                    }
                }
                if dense {
                    let row = &mut self.scratch;
                    row.clear();
                    if let Some(id) = read_counts(&mut r, index, |at, c| row.push((at, c)))? {
                        if id >= known {
                            return Err(DecodeError::Invalid("key id not in the dictionary"));
                        }
                        let fits = row.last().is_none_or(|&(at, _)| at <= DENSE_MAX);
                        match agg.entry(id, || Sum::Counts(Vec::new())) {
                            Sum::Counts(counts) if fits => {
                                for &(at, c) in row.iter() {
                                    add_count(counts, at, c);
                                }
                            }
                            _ => {
                                let buckets = row
                                    .iter()
                                    .filter_map(|&(at, count)| {
                                        let (lo, hi) = index.bounds(at)?;
                                        Some(Bucket { lo, hi, count })
                                    })
                                    .collect();
                                agg.add_value(id, Value::Buckets(buckets));
                            }
                        }
                        continue;
                    }
                }
                let (id, value) = get_series(&mut r, index)?;
                if id >= known {
                    return Err(DecodeError::Invalid("key id not in the dictionary"));
                }
                agg.add_value(id, value);
            }
        }
        for list in [&mut self.output, &mut self.drops, &mut self.errors] {
            for _ in 0..r.len()? {
                list.push(r.str()?);
            }
        }
        if !r.is_done() {
            return Err(DecodeError::Invalid("trailing bytes in a stored row"));
        }
        Ok(())
    }

    /// The column's snapshot, keys looked up once.
    pub(super) fn finish(self, keys: &Keys) -> Snapshot {
        Snapshot {
            aggregations: self
                .aggregations
                .into_iter()
                .map(|a| Aggregation {
                    series: a
                        .series
                        .into_iter()
                        .map(|(id, sum)| crate::aggregation::Series {
                            sum: None,
                            key: keys.by_id[id as usize].clone(),
                            value: match sum {
                                Sum::Counts(counts) => AggSum::buckets(a.index, &counts),
                                Sum::Value(v) => v,
                            },
                        })
                        .collect(),
                    name: a.name,
                    kind: a.kind,
                    folded: a.folded,
                })
                .collect(),
            output: self.output,
            drops: self.drops,
            errors: self.errors,
        }
    }
}

/// A row's bytes decompressed, its zstd checksum verified.
fn decompress(
    bytes: &[u8],
    decompressor: &mut zstd::bulk::Decompressor<'static>,
) -> Result<Vec<u8>, DecodeError> {
    let size = zstd::zstd_safe::get_frame_content_size(bytes)
        .ok()
        .flatten()
        .filter(|&n| n <= MAX_ROW_BYTES)
        .ok_or(DecodeError::Invalid("not a stored row (zstd frame header)"))?;
    decompressor
        .decompress(bytes, size as usize)
        .map_err(|_| DecodeError::Invalid("compressed row fails its checksum"))
}

/// A layout as the three nullable columns of the aggregations table.
pub(super) fn kind_and_layout(info: &AggregationInfo) -> (&'static str, Option<[i64; 3]>) {
    (
        crate::sparse::kind_name(info.kind),
        info.layout.map(|l| [l.min, l.max, l.step]),
    )
}

/// Reads a kind back from the aggregations table.
pub(super) fn parse_kind(name: &str) -> Option<AggKind> {
    crate::sparse::kind_from_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::{Layout, Series};
    use crate::sparse::FORM_INDEXED;

    fn lhist() -> Vec<AggregationInfo> {
        vec![AggregationInfo {
            name: "@us".into(),
            kind: AggKind::Lhist,
            layout: Some(Layout {
                min: 0,
                max: 64,
                step: 2,
            }),
        }]
    }

    fn bucket(lo: Option<i64>, hi: Option<i64>, count: u64) -> Bucket {
        Bucket { lo, hi, count }
    }

    /// Row bytes before compression, so tests can look at the form each series took.
    fn plain(snapshot: &Snapshot, infos: &[AggregationInfo], keys: &Keys) -> Vec<u8> {
        let mut compressor = zstd::bulk::Compressor::new(0).unwrap();
        compressor
            .set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))
            .unwrap();
        let bytes = encode(snapshot, infos, keys, &mut compressor);
        zstd::bulk::decompress(&bytes, MAX_ROW_BYTES as usize).unwrap()
    }

    fn round_trip(series: Vec<Series>) -> (Snapshot, Vec<u8>) {
        let infos = lhist();
        let mut snapshot = Snapshot::empty(&infos);
        snapshot.aggregations[0].series = series;
        let mut keys = Keys::default();
        for key in keys.missing(&snapshot) {
            keys.push(key);
        }
        let bytes = encode(&snapshot, &infos, &keys, &mut compressor());
        let back = decode(
            &bytes,
            &infos,
            &keys,
            &mut zstd::bulk::Decompressor::new().unwrap(),
        );
        assert_eq!(back.as_ref(), Ok(&snapshot));
        (snapshot.clone(), plain(&snapshot, &infos, &keys))
    }

    fn key(name: &str) -> Vec<KeyPart> {
        vec![KeyPart::Str(name.into())]
    }

    #[test]
    fn counts_of_one_size_are_packed_and_read_back_exactly() {
        // Eight counts of 13 bits: 13 bytes packed, 16 as varints. Gaps inside the run, the
        // open ends and a 64-bit count read back as written.
        let dense: Vec<Bucket> = (0..8)
            .map(|i| bucket(Some(2 * i), Some(2 * i + 1), 4096 + 397 * i as u64))
            .collect();
        let (_, raw) = round_trip(vec![Series::histogram(key("read"), dense)]);
        // Row: aggregation count, slot, folded, series count, then the series head.
        assert_eq!(raw[4] & 7, FORM_PACKED, "{raw:?}");
        let wide = vec![
            bucket(None, Some(-1), u64::MAX),
            bucket(Some(0), Some(1), u64::MAX - 1),
            bucket(Some(4), Some(5), 1 << 63),
            bucket(Some(64), None, u64::MAX >> 1),
        ];
        let gappy = vec![
            bucket(None, Some(-1), 3),
            bucket(Some(2), Some(3), 5),
            bucket(Some(6), Some(7), 6),
            bucket(Some(64), None, 7),
        ];
        round_trip(vec![
            Series::histogram(key("a"), wide),
            Series::histogram(key("b"), gappy),
        ]);
    }

    #[test]
    fn skewed_or_sparse_counts_keep_the_sparse_forms() {
        // One large count among ones: varints are smaller than eight 20-bit fields.
        let skewed: Vec<Bucket> = (0..8)
            .map(|i| {
                bucket(
                    Some(2 * i),
                    Some(2 * i + 1),
                    if i == 3 { 1 << 19 } else { 1 },
                )
            })
            .collect();
        let (_, raw) = round_trip(vec![Series::histogram(key("read"), skewed)]);
        assert_eq!(raw[4] & 7, FORM_INDEXED);
        // Buckets off the layout's grid go explicit, as before.
        let off = vec![bucket(Some(1), Some(2), 9), bucket(Some(3), Some(9), 9)];
        round_trip(vec![Series::histogram(key("odd"), off)]);
    }

    #[test]
    fn damaged_packed_counts_are_refused() {
        let infos = lhist();
        let index = Index::of(AggKind::Lhist, infos[0].layout);
        // Seven 13-bit counts: 91 bits, so the last byte has 5 bits of padding.
        let dense: Vec<Bucket> = (0..7)
            .map(|i| bucket(Some(2 * i), Some(2 * i + 1), 4096 + i as u64))
            .collect();
        let mut out = Vec::new();
        assert!(put_packed(&mut out, index, 0, &dense));
        assert_eq!(out[0] & 7, FORM_PACKED);
        let ok = get_series(&mut Reader::new(&out), index).unwrap();
        assert_eq!(ok, (0, Value::Buckets(dense)));
        // Truncated, a run longer than its bytes, a width past 64, stray padding bits.
        assert!(get_series(&mut Reader::new(&out[..out.len() - 1]), index).is_err());
        let mut long = out.clone();
        long[2] = 100;
        assert!(get_series(&mut Reader::new(&long), index).is_err());
        let mut wide = out.clone();
        wide[3] = 65;
        assert!(get_series(&mut Reader::new(&wide), index).is_err());
        let mut stray = out.clone();
        *stray.last_mut().unwrap() |= 0x80;
        assert!(get_series(&mut Reader::new(&stray), index).is_err());
    }

    #[test]
    fn a_summed_column_equals_the_rows_decoded_and_absorbed() {
        let mut infos = lhist();
        infos.push(AggregationInfo {
            name: "@n".into(),
            kind: AggKind::Count,
            layout: None,
        });
        infos.push(AggregationInfo {
            name: "@max".into(),
            kind: AggKind::Max,
            layout: None,
        });
        let dense = |n: u64| -> Vec<Bucket> {
            (0..8)
                .map(|i| bucket(Some(2 * i), Some(2 * i + 1), 4000 + n * 31 + i as u64))
                .collect()
        };
        // Each key takes every form across the rows: packed, indexed, explicit off the grid,
        // explicit on it, a count near 2^64, and keys new in later rows.
        let rows: Vec<Snapshot> = (0..4u64)
            .map(|n| {
                let mut s = Snapshot::empty(&infos);
                let h = &mut s.aggregations[0].series;
                h.push(Series::histogram(key("packed"), dense(n)));
                h.push(Series::histogram(
                    key("mixed"),
                    match n {
                        0 => dense(n),
                        1 => vec![bucket(Some(1), Some(2), 3), bucket(Some(2), Some(3), 1)],
                        2 => vec![
                            bucket(None, Some(-1), u64::MAX - 5),
                            bucket(Some(64), None, 2),
                        ],
                        _ => vec![bucket(Some(2), Some(3), 1 << 40)],
                    },
                ));
                if n >= 2 {
                    h.push(Series::histogram(key(&format!("late{n}")), dense(n)));
                }
                s.aggregations[1].series.push(Series {
                    sum: None,
                    key: key("all"),
                    value: Value::Scalar(n as i64 + 1),
                });
                s.aggregations[2].series.push(Series {
                    sum: None,
                    key: key("all"),
                    value: Value::Scalar(10 - n as i64),
                });
                s.output.push(format!("line {n}"));
                s
            })
            .collect();
        let mut keys = Keys::default();
        for row in &rows {
            for k in keys.missing(row) {
                keys.push(k);
            }
        }
        let mut compressor = compressor();
        let mut decompressor = zstd::bulk::Decompressor::new().unwrap();
        let mut sum = ColumnSum::default();
        let mut absorbed: Option<Snapshot> = None;
        for row in &rows {
            let bytes = encode(row, &infos, &keys, &mut compressor);
            sum.add(&bytes, &infos, &keys, &mut decompressor).unwrap();
            let decoded = decode(&bytes, &infos, &keys, &mut decompressor).unwrap();
            match &mut absorbed {
                Some(a) => a.absorb(decoded),
                None => absorbed = Some(decoded),
            }
        }
        assert_eq!(sum.finish(&keys), absorbed.unwrap());
    }
}
