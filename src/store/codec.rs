//! How one stored row's snapshot becomes bytes and back: keys as ids of the watch's key
//! dictionary, aggregations as slots of the run's table, series in the sparse encoding that
//! compact frames use (`crate::sparse`), the whole compressed by zstd with its checksum on.

use std::collections::HashMap;

use crate::aggregation::{AggKind, Aggregation, AggregationInfo, KeyPart, Snapshot};
use crate::sparse::{get_value, put_str, put_usize, put_value, DecodeError, Index, Reader};

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
            put_value(&mut out, index, keys.ids[&series.key], series);
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
    let size = zstd::zstd_safe::get_frame_content_size(bytes)
        .ok()
        .flatten()
        .filter(|&n| n <= MAX_ROW_BYTES)
        .ok_or(DecodeError::Invalid("not a stored row (zstd frame header)"))?;
    let raw = decompressor
        .decompress(bytes, size as usize)
        .map_err(|_| DecodeError::Invalid("compressed row fails its checksum"))?;
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
            let (id, value) = get_value(&mut r, index)?;
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
