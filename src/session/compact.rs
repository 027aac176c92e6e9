//! Compact frames (protocol v1.1, see `docs/protocol.md`): frames as websocket binary messages,
//! keys as a per-program dictionary and buckets as counts against an index the layout implies.
//!
//! A [`CompactEncoder`] belongs to one running program: every viewer of the program decodes the
//! same bytes, so the dictionary state lives with the program, not with a session. Numbers are
//! little-endian LEB128 varints (zigzag for signed ones), strings a varint length and UTF-8.

use std::collections::HashMap;

use crate::aggregation::{AggKind, Aggregation, AggregationInfo, KeyPart, Snapshot};
#[cfg(test)]
use crate::aggregation::{Bucket, Layout, Series, Value};
use crate::session::protocol::FrameHeader;
use crate::sparse::{kind_name, put_str, put_u64, put_usize, put_value, Index};
#[cfg(test)]
use crate::sparse::{
    BUCKET_HI_OPEN, BUCKET_LO_OPEN, FORM_BITS, FORM_DEVIATION, FORM_EXPLICIT, FORM_INDEXED,
    FORM_SCALAR, FORM_STATS,
};

/// First byte of a frame message.
pub const TAG_FRAME: u8 = 1;
/// First byte of a history message (several frames).
pub const TAG_HISTORY: u8 = 2;
/// First byte of a dictionary message (every key defined so far).
pub const TAG_DICTIONARY: u8 = 3;

/// Frame flag: the program's last frame (`"final": true`).
pub const FLAG_FINAL: u8 = 1;
/// Frame flag: the dictionary was cleared before this frame's definitions.
pub const FLAG_RESET: u8 = 2;
/// Frame flag: the frame ends with its `cost` (three little-endian f64s: `events_per_s`,
/// `ns_per_event`, `cpu_share`). Frames without a cost are as before this flag existed.
pub const FLAG_COST: u8 = 4;
/// Frame flag (only with [`FLAG_COST`]): a fourth f64 follows the cost, `sampled` (the
/// fraction of the interval the kernel's statistics were on).
pub const FLAG_SAMPLED: u8 = 8;

/// Most keys the dictionary holds: past it the encoder starts a new one (a reset), so a
/// program keyed by something unbounded costs the server and every browser bounded memory.
pub const MAX_DICTIONARY_KEYS: usize = 65_536;

/// What the encoder knows of one aggregation.
#[derive(Debug, Clone)]
struct Known {
    name: String,
    kind: AggKind,
    index: Index,
}

/// Per-program encoder state: the key dictionary (ids assigned 0,1,2… in order of first
/// appearance) and the aggregations frames may carry.
#[derive(Debug)]
pub struct CompactEncoder {
    aggregations: Vec<Known>,
    /// How many of `aggregations` were announced in `started`; the rest were met in frames.
    announced: usize,
    ids: HashMap<Vec<KeyPart>, u32>,
    /// Every defined key as its JSON array text, by id.
    texts: Vec<String>,
    /// Size of the previous frame, so the next one is allocated once.
    size_hint: usize,
    /// [`MAX_DICTIONARY_KEYS`]; smaller in tests, to show a reset without 65,536 keys.
    max_keys: usize,
}

impl CompactEncoder {
    /// An encoder for a program that announced `infos` (`started.aggregations`).
    pub fn new(infos: &[AggregationInfo]) -> CompactEncoder {
        CompactEncoder {
            aggregations: infos
                .iter()
                .map(|i| Known {
                    name: i.name.clone(),
                    kind: i.kind,
                    index: Index::of(i.kind, i.layout),
                })
                .collect(),
            announced: infos.len(),
            ids: HashMap::new(),
            texts: Vec::new(),
            size_hint: 64,
            max_keys: MAX_DICTIONARY_KEYS,
        }
    }

    /// How many keys the dictionary holds.
    pub fn keys(&self) -> usize {
        self.texts.len()
    }

    /// One frame; keys seen for the first time get ids and are defined inside this frame.
    /// `header.dropped` is not encoded: frames shared by many viewers carry nothing per viewer.
    pub fn frame(&mut self, header: &FrameHeader, snapshot: &Snapshot) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size_hint);
        out.push(TAG_FRAME);
        put_u64(&mut out, header.seq);
        put_u64(&mut out, header.ts_ms);
        put_u64(&mut out, header.interval_ms);

        let first_new_aggregation = self.aggregations.len();
        let slots: Vec<usize> = snapshot
            .aggregations
            .iter()
            .enumerate()
            .map(|(at, a)| self.slot(at, a))
            .collect();

        let first_new_key = self.texts.len();
        let new_keys: usize = self.define_keys(snapshot);
        let reset = first_new_key + new_keys > self.max_keys;
        let first_new_key = if reset {
            self.ids.clear();
            self.texts.clear();
            self.define_keys(snapshot);
            0
        } else {
            first_new_key
        };
        out.push(
            if header.last { FLAG_FINAL } else { 0 }
                | if reset { FLAG_RESET } else { 0 }
                | if header.cost.is_some() { FLAG_COST } else { 0 }
                | if header.cost.is_some_and(|c| c.sampled.is_some()) {
                    FLAG_SAMPLED
                } else {
                    0
                },
        );
        self.put_definitions(&mut out, first_new_aggregation, first_new_key);

        put_usize(&mut out, snapshot.aggregations.len());
        for (aggregation, &slot) in snapshot.aggregations.iter().zip(&slots) {
            put_usize(&mut out, slot);
            put_usize(&mut out, aggregation.folded);
            put_usize(&mut out, aggregation.series.len());
            let index = self.aggregations[slot].index;
            for series in &aggregation.series {
                put_value(&mut out, index, self.ids[series.key.as_slice()], series);
            }
        }
        for list in [&snapshot.output, &snapshot.drops, &snapshot.errors] {
            put_usize(&mut out, list.len());
            for text in list {
                put_str(&mut out, text);
            }
        }
        if let Some(cost) = &header.cost {
            for x in [cost.events_per_s, cost.ns_per_event, cost.cpu_share]
                .into_iter()
                .chain(cost.sampled)
            {
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
        self.size_hint = out.len() + out.len() / 8;
        out
    }

    /// Every key defined so far (and every aggregation not announced in `started`), as one
    /// message, for a session that joins late.
    pub fn dictionary(&self) -> Vec<u8> {
        let mut out = vec![TAG_DICTIONARY];
        self.put_definitions(&mut out, self.announced, 0);
        out
    }

    /// The encoder's slot for an aggregation of a snapshot: the announced one at the same
    /// position when it matches (the usual case), else any with that name and kind, else a new
    /// one (a DTrace walk can reveal aggregations its script reading missed).
    fn slot(&mut self, at: usize, aggregation: &Aggregation) -> usize {
        let matches = |k: &Known| k.name == aggregation.name && k.kind == aggregation.kind;
        if self.aggregations.get(at).is_some_and(matches) {
            return at;
        }
        if let Some(slot) = self.aggregations.iter().position(matches) {
            return slot;
        }
        self.aggregations.push(Known {
            name: aggregation.name.clone(),
            kind: aggregation.kind,
            index: Index::of(aggregation.kind, None),
        });
        self.aggregations.len() - 1
    }

    /// Gives every key of `snapshot` not yet in the dictionary the next id; how many it gave.
    fn define_keys(&mut self, snapshot: &Snapshot) -> usize {
        let before = self.texts.len();
        for series in snapshot.aggregations.iter().flat_map(|a| &a.series) {
            if !self.ids.contains_key(series.key.as_slice()) {
                let id = self.texts.len() as u32;
                self.texts.push(
                    serde_json::to_string(&series.key).expect("keys always serialise as JSON"),
                );
                self.ids.insert(series.key.clone(), id);
            }
        }
        self.texts.len() - before
    }

    /// The definitions block: aggregations from slot `aggregations_from` on, keys from id
    /// `keys_from` on; each as its first slot or id, a count, then the entries in order.
    fn put_definitions(&self, out: &mut Vec<u8>, aggregations_from: usize, keys_from: usize) {
        let aggregations = &self.aggregations[aggregations_from..];
        put_usize(out, aggregations_from);
        put_usize(out, aggregations.len());
        for known in aggregations {
            put_str(out, &known.name);
            put_str(out, kind_name(known.kind));
        }
        let keys = &self.texts[keys_from..];
        put_usize(out, keys_from);
        put_usize(out, keys.len());
        for text in keys {
            put_str(out, text);
        }
    }
}

/// Several encoded frames (each from [`CompactEncoder::frame`]) as one `history` message.
pub fn history(frames: &[&[u8]]) -> Vec<u8> {
    let size: usize = frames.iter().map(|f| f.len() + 5).sum();
    let mut out = Vec::with_capacity(size + 6);
    out.push(TAG_HISTORY);
    put_usize(&mut out, frames.len());
    for frame in frames {
        put_usize(&mut out, frame.len());
        out.extend_from_slice(frame);
    }
    out
}

/// Whether an encoded frame started a new dictionary: frames before it used ids that were
/// since given to other keys, so a late joiner's `history` must not reach back past it.
pub fn resets_dictionary(frame: &[u8]) -> bool {
    let mut at = 1;
    frame.first() == Some(&TAG_FRAME)
        && (0..3).all(|_| skip_varint(frame, &mut at))
        && frame.get(at).is_some_and(|flags| flags & FLAG_RESET != 0)
}

fn skip_varint(bytes: &[u8], at: &mut usize) -> bool {
    while let Some(&b) = bytes.get(*at) {
        *at += 1;
        if b & 0x80 == 0 {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::protocol::encode_frame;
    use serde_json::{json, Value as Json};

    /// A decoder of compact messages into the JSON protocol's frames, as a client keeps it.
    struct Decoder {
        /// (name, kind, index) by slot.
        aggregations: Vec<(String, String, Index)>,
        announced: usize,
        keys: HashMap<u64, Json>,
    }

    /// One decoded message: its tag and the frames it holds.
    type Decoded = (u8, Vec<Json>);

    struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl Reader<'_> {
        fn byte(&mut self) -> Result<u8, String> {
            let b = *self.bytes.get(self.at).ok_or("truncated")?;
            self.at += 1;
            Ok(b)
        }
        fn u64(&mut self) -> Result<u64, String> {
            let mut v: u64 = 0;
            for shift in (0..64).step_by(7) {
                let b = self.byte()?;
                v |= u64::from(b & 0x7f)
                    .checked_shl(shift)
                    .filter(|x| x >> shift == u64::from(b & 0x7f))
                    .ok_or("varint overflow")?;
                if b & 0x80 == 0 {
                    return Ok(v);
                }
            }
            Err("varint too long".into())
        }
        fn i64(&mut self) -> Result<i64, String> {
            let u = self.u64()?;
            Ok((u >> 1) as i64 ^ -((u & 1) as i64))
        }
        fn str(&mut self) -> Result<String, String> {
            let len = self.u64()? as usize;
            let end = self.at.checked_add(len).ok_or("length")?;
            let bytes = self.bytes.get(self.at..end).ok_or("truncated string")?;
            self.at = end;
            String::from_utf8(bytes.to_vec()).map_err(|e| e.to_string())
        }
    }

    impl Decoder {
        fn new(infos: &[AggregationInfo]) -> Decoder {
            Decoder {
                aggregations: infos
                    .iter()
                    .map(|i| {
                        (
                            i.name.clone(),
                            kind_name(i.kind).to_owned(),
                            Index::of(i.kind, i.layout),
                        )
                    })
                    .collect(),
                announced: infos.len(),
                keys: HashMap::new(),
            }
        }

        fn decode(&mut self, bytes: &[u8]) -> Result<Decoded, String> {
            let mut r = Reader { bytes, at: 0 };
            let tag = r.byte()?;
            let frames = match tag {
                TAG_FRAME => vec![self.frame(&mut r)?],
                TAG_HISTORY => {
                    let n = r.u64()?;
                    let mut frames = Vec::new();
                    for _ in 0..n {
                        let len = r.u64()? as usize;
                        let inner = bytes.get(r.at..r.at + len).ok_or("truncated frame")?;
                        r.at += len;
                        let mut inner = Reader {
                            bytes: inner,
                            at: 0,
                        };
                        if inner.byte()? != TAG_FRAME {
                            return Err("history holds a non-frame".into());
                        }
                        frames.push(self.frame(&mut inner)?);
                        if inner.at != len {
                            return Err("trailing bytes in frame".into());
                        }
                    }
                    frames
                }
                TAG_DICTIONARY => {
                    self.keys.clear();
                    self.aggregations.truncate(self.announced);
                    self.definitions(&mut r)?;
                    vec![]
                }
                other => return Err(format!("unknown tag {other}")),
            };
            if r.at != bytes.len() {
                return Err("trailing bytes".into());
            }
            Ok((tag, frames))
        }

        fn definitions(&mut self, r: &mut Reader) -> Result<(), String> {
            let first = r.u64()? as usize;
            for slot in first..first + r.u64()? as usize {
                let name = r.str()?;
                let kind = r.str()?;
                // Only the announced carry a layout; a `hist` needs none.
                let parsed = serde_json::from_value(json!(kind)).map_err(|e| e.to_string())?;
                let entry = (name, kind, Index::of(parsed, None));
                match slot.cmp(&self.aggregations.len()) {
                    std::cmp::Ordering::Less => self.aggregations[slot] = entry,
                    std::cmp::Ordering::Equal => self.aggregations.push(entry),
                    std::cmp::Ordering::Greater => return Err("aggregation slot skipped".into()),
                }
            }
            let first = r.u64()?;
            for id in first..first + r.u64()? {
                let key: Json = serde_json::from_str(&r.str()?).map_err(|e| e.to_string())?;
                self.keys.insert(id, key);
            }
            Ok(())
        }

        fn frame(&mut self, r: &mut Reader) -> Result<Json, String> {
            let mut frame = serde_json::Map::new();
            frame.insert("type".into(), json!("frame"));
            for field in ["seq", "ts_ms", "interval_ms"] {
                frame.insert(field.into(), json!(r.u64()?));
            }
            let flags = r.byte()?;
            if flags & !(FLAG_FINAL | FLAG_RESET | FLAG_COST | FLAG_SAMPLED) != 0 {
                return Err("unknown flags".into());
            }
            if flags & FLAG_FINAL != 0 {
                frame.insert("final".into(), json!(true));
            }
            if flags & FLAG_RESET != 0 {
                self.keys.clear();
            }
            self.definitions(r)?;
            let mut aggregations = Vec::new();
            for _ in 0..r.u64()? {
                let slot = r.u64()? as usize;
                let (name, kind, index) =
                    self.aggregations.get(slot).ok_or("unknown aggregation")?;
                let index = *index;
                let mut object = serde_json::Map::new();
                object.insert("name".into(), json!(name));
                object.insert("kind".into(), json!(kind));
                let folded = r.u64()?;
                let mut series = Vec::new();
                for _ in 0..r.u64()? {
                    let head = r.u64()?;
                    let key = self.keys.get(&(head >> FORM_BITS)).ok_or("unknown key")?;
                    series.push(Self::series(r, index, head as u8 & 7, key.clone())?);
                }
                object.insert("series".into(), Json::Array(series));
                if folded > 0 {
                    object.insert("folded".into(), json!(folded));
                }
                aggregations.push(Json::Object(object));
            }
            frame.insert("aggregations".into(), Json::Array(aggregations));
            for field in ["output", "drops", "errors"] {
                let n = r.u64()?;
                let texts = (0..n).map(|_| r.str()).collect::<Result<Vec<_>, _>>()?;
                if !texts.is_empty() {
                    frame.insert(field.into(), json!(texts));
                }
            }
            if flags & FLAG_COST != 0 {
                let mut cost = serde_json::Map::new();
                let sampled = (flags & FLAG_SAMPLED != 0).then_some("sampled");
                for field in ["events_per_s", "ns_per_event", "cpu_share"]
                    .into_iter()
                    .chain(sampled)
                {
                    let bytes = r.bytes.get(r.at..r.at + 8).ok_or("truncated cost")?;
                    r.at += 8;
                    let x = f64::from_le_bytes(bytes.try_into().expect("8 bytes"));
                    cost.insert(field.into(), json!(x));
                }
                frame.insert("cost".into(), Json::Object(cost));
            }
            Ok(Json::Object(frame))
        }

        fn series(r: &mut Reader, index: Index, form: u8, key: Json) -> Result<Json, String> {
            Ok(match form {
                FORM_SCALAR => json!({"key": key, "value": r.i64()?}),
                FORM_STATS => {
                    let (count, total, average) = (r.u64()?, r.i64()?, r.i64()?);
                    json!({"key": key, "value": average, "count": count, "total": total})
                }
                FORM_DEVIATION => {
                    let (count, total, average, stddev) = (r.u64()?, r.i64()?, r.i64()?, r.u64()?);
                    json!({"key": key, "value": stddev, "count": count, "total": total, "average": average})
                }
                FORM_INDEXED => {
                    let (first, n) = (r.u64()?, r.u64()?);
                    let mut buckets = Vec::new();
                    for at in first..first + n {
                        let count = r.u64()?;
                        if count > 0 {
                            let (lo, hi) = index.bounds(at).ok_or("index past the layout")?;
                            buckets.push(json!([lo, hi, count]));
                        }
                    }
                    json!({"key": key, "buckets": buckets})
                }
                FORM_EXPLICIT => {
                    let mut buckets = Vec::new();
                    for _ in 0..r.u64()? {
                        let open = r.byte()?;
                        let lo = (open & BUCKET_LO_OPEN == 0).then(|| r.i64()).transpose()?;
                        let hi = (open & BUCKET_HI_OPEN == 0).then(|| r.i64()).transpose()?;
                        buckets.push(json!([lo, hi, r.u64()?]));
                    }
                    json!({"key": key, "buckets": buckets})
                }
                other => return Err(format!("unknown form {other}")),
            })
        }
    }

    fn header(seq: u64) -> FrameHeader {
        FrameHeader {
            seq,
            ts_ms: 1_763_788_800_000 + seq * 1000,
            interval_ms: 1000,
            dropped: 0,
            last: false,
            cost: None,
        }
    }

    fn info(name: &str, kind: AggKind, layout: Option<Layout>) -> AggregationInfo {
        AggregationInfo {
            name: name.into(),
            kind,
            layout,
        }
    }

    fn b(lo: Option<i64>, hi: Option<i64>, count: u64) -> Bucket {
        Bucket { lo, hi, count }
    }

    fn key(parts: &[&str]) -> Vec<KeyPart> {
        parts.iter().map(|p| KeyPart::parse(p)).collect()
    }

    fn json_frame(header: &FrameHeader, snapshot: &Snapshot) -> Json {
        serde_json::from_str(&encode_frame(header, snapshot)).unwrap()
    }

    /// Every kind, with open ends, zeros inside runs and a series that must go explicit.
    fn every_kind() -> (Vec<AggregationInfo>, Snapshot) {
        let lin = Layout {
            min: 0,
            max: 64,
            step: 2,
        };
        let infos = vec![
            info("@log2", AggKind::Hist, None),
            info("@lin", AggKind::Lhist, Some(lin)),
            info(
                "@lq",
                AggKind::Lquantize,
                Some(Layout {
                    min: -10,
                    max: 63,
                    step: 5,
                }),
            ),
            info("@q", AggKind::Quantize, None),
            info("@llq", AggKind::Llquantize, None),
            info("@nolayout", AggKind::Lhist, None),
            info("@n", AggKind::Count, None),
            info("@sum", AggKind::Sum, None),
            info("@avg", AggKind::Avg, None),
            info("@min", AggKind::Min, None),
            info("@max", AggKind::Max, None),
            info("@stats", AggKind::Stats, None),
            info("@sd", AggKind::Stddev, None),
        ];
        let mut s = Snapshot::empty(&infos);
        let top = 1i64 << 31;
        s.aggregations[0].series = vec![
            Series::histogram(
                key(&["read"]),
                vec![
                    b(None, Some(-1), 2),
                    b(Some(0), Some(0), 1),
                    b(Some(1), Some(1), 3),
                    b(Some(16), Some(31), 7),
                ],
            ),
            // Not log2 edges: explicit.
            Series::histogram(key(&["odd"]), vec![b(Some(3), Some(5), 4)]),
            // The last two: indexed, the open top included.
            Series::histogram(
                key(&["far"]),
                vec![b(Some(1 << 30), Some(top - 1), 9), b(Some(top), None, 1)],
            ),
            // Past bpftrace's top: explicit.
            Series::histogram(key(&["wide"]), vec![b(Some(top), Some(2 * top - 1), 1)]),
        ];
        s.aggregations[1].series = vec![
            Series::histogram(
                key(&["read"]),
                vec![
                    b(None, Some(-1), 1),
                    b(Some(0), Some(1), 12),
                    b(Some(2), Some(3), 40),
                    b(Some(8), Some(9), 300),
                ],
            ),
            Series::histogram(
                key(&["write"]),
                vec![b(Some(62), Some(63), 5), b(Some(64), None, 1)],
            ),
            // Two lonely buckets at both ends: the zeros between cost more than bounds.
            Series::histogram(
                key(&["sparse"]),
                vec![b(None, Some(-1), 1), b(Some(64), None, 1)],
            ),
            Series::histogram(key(&["empty"]), vec![]),
        ];
        s.aggregations[2].series = vec![
            Series::histogram(
                key(&["lq", "3"]),
                vec![
                    b(None, Some(-11), 1),
                    b(Some(-10), Some(-6), 2),
                    b(Some(-5), Some(-1), 3),
                ],
            ),
            Series::histogram(
                key(&["lq", "4"]),
                vec![b(Some(50), Some(54), 3), b(Some(60), None, 4)],
            ),
        ];
        s.aggregations[3].series = vec![Series::histogram(
            key(&["q"]),
            vec![
                b(None, Some(-2), 1),
                b(Some(-1), Some(-1), 2),
                b(Some(4), Some(7), 3),
            ],
        )];
        s.aggregations[4].series = vec![Series::histogram(
            key(&["q"]),
            vec![b(Some(10), Some(19), 1), b(Some(100), None, 2)],
        )];
        s.aggregations[5].series = vec![Series::histogram(
            key(&["read"]),
            vec![b(Some(0), Some(1), 1)],
        )];
        s.aggregations[6].series = vec![
            Series {
                key: vec![],
                value: Value::Scalar(136),
                sum: None,
            },
            Series {
                key: vec![KeyPart::Int(i64::MIN), KeyPart::Str("é \"x\"".into())],
                value: Value::Scalar(i64::MAX),
                sum: None,
            },
        ];
        s.aggregations[7].series = vec![Series {
            key: key(&["read"]),
            value: Value::Scalar(-5),
            sum: None,
        }];
        s.aggregations[8].series = vec![Series {
            key: key(&["read"]),
            value: Value::Stats {
                count: 3,
                total: -30,
                average: -10,
            },
            sum: None,
        }];
        s.aggregations[9].series = vec![Series {
            key: vec![],
            value: Value::Scalar(i64::MIN),
            sum: None,
        }];
        s.aggregations[10].series = vec![Series {
            key: vec![],
            value: Value::Scalar(1 << 53),
            sum: None,
        }];
        s.aggregations[11].series = vec![Series {
            key: vec![KeyPart::Int(1234)],
            value: Value::Stats {
                count: u64::MAX,
                total: 100,
                average: 20,
            },
            sum: None,
        }];
        s.aggregations[12].series = vec![Series {
            key: vec![],
            value: Value::Deviation {
                count: 8,
                total: 40,
                average: 5,
                stddev: 2,
            },
            sum: None,
        }];
        s.aggregations[6].folded = 17;
        s.output = vec!["hello\n".into(), "".into()];
        s.drops = vec!["1 drop on CPU 0".into()];
        s.errors = vec!["error on enabled probe ID 3".into()];
        (infos, s)
    }

    #[test]
    fn every_kind_round_trips_to_the_json_frame() {
        let (infos, snapshot) = every_kind();
        let mut encoder = CompactEncoder::new(&infos);
        let mut decoder = Decoder::new(&infos);
        let mut h = header(1);
        h.last = true;
        let bytes = encoder.frame(&h, &snapshot);
        let (tag, frames) = decoder.decode(&bytes).unwrap();
        assert_eq!(tag, TAG_FRAME);
        assert_eq!(frames, vec![json_frame(&h, &snapshot)]);
        assert_eq!(frames[0]["final"], json!(true));
        assert_eq!(frames[0]["aggregations"][6]["folded"], json!(17));
    }

    #[test]
    fn buckets_on_the_layout_go_indexed_and_the_rest_explicit() {
        let (infos, snapshot) = every_kind();
        let index = |a: usize| Index::of(infos[a].kind, infos[a].layout);
        let form = |a: usize, s: usize| {
            let mut out = Vec::new();
            put_value(&mut out, index(a), 0, &snapshot.aggregations[a].series[s]);
            out[0]
        };
        // hist: canonical, off-edge, far, past the top.
        assert_eq!(form(0, 0), FORM_INDEXED);
        assert_eq!(form(0, 1), FORM_EXPLICIT);
        assert_eq!(form(0, 2), FORM_INDEXED);
        assert_eq!(form(0, 3), FORM_EXPLICIT);
        // lhist: canonical with zeros, the open top, sparse ends, empty.
        assert_eq!(form(1, 0), FORM_INDEXED);
        assert_eq!(form(1, 1), FORM_INDEXED);
        assert_eq!(form(1, 2), FORM_EXPLICIT);
        assert_eq!(form(1, 3), FORM_EXPLICIT);
        // lquantize whose span is not a whole number of steps: DTrace's top edge.
        assert_eq!(form(2, 0), FORM_INDEXED);
        assert_eq!(form(2, 1), FORM_INDEXED);
        // quantize, llquantize, lhist without a layout.
        assert_eq!(form(3, 0), FORM_EXPLICIT);
        assert_eq!(form(4, 0), FORM_EXPLICIT);
        assert_eq!(form(5, 0), FORM_EXPLICIT);
    }

    #[test]
    fn the_documented_bucket_indices() {
        let log2 = Index::Log2;
        assert_eq!(log2.bounds(0), Some((None, Some(-1))));
        assert_eq!(log2.bounds(1), Some((Some(0), Some(0))));
        assert_eq!(log2.bounds(2), Some((Some(1), Some(1))));
        assert_eq!(log2.bounds(5), Some((Some(8), Some(15))));
        assert_eq!(log2.bounds(32), Some((Some(1 << 30), Some((1 << 31) - 1))));
        assert_eq!(log2.bounds(33), Some((Some(1 << 31), None)));
        assert_eq!(log2.bounds(34), None);
        let lin = Index::of(
            AggKind::Lhist,
            Some(Layout {
                min: 0,
                max: 64,
                step: 2,
            }),
        );
        assert_eq!(lin.bounds(0), Some((None, Some(-1))));
        assert_eq!(lin.bounds(1), Some((Some(0), Some(1))));
        assert_eq!(lin.bounds(32), Some((Some(62), Some(63))));
        assert_eq!(lin.bounds(33), Some((Some(64), None)));
        assert_eq!(lin.bounds(34), None);
        for (i, bounds) in (0..=33).map(|i| (i, lin.bounds(i).unwrap())) {
            assert_eq!(lin.index(&b(bounds.0, bounds.1, 1)), Some(i));
            let (lo, hi) = log2.bounds(i).unwrap();
            assert_eq!(log2.index(&b(lo, hi, 1)), Some(i));
        }
        let bad = |min, max, step| Index::of(AggKind::Lquantize, Some(Layout { min, max, step }));
        assert_eq!(bad(0, 10, 0), Index::None);
        assert_eq!(bad(10, 0, 1), Index::None);
        assert_eq!(bad(i64::MIN, 0, 1), Index::None);
        assert_eq!(Index::of(AggKind::Quantize, None), Index::None);
    }

    #[test]
    fn buckets_the_run_could_not_carry_go_explicit() {
        let lin = Index::of(
            AggKind::Lhist,
            Some(Layout {
                min: 0,
                max: 64,
                step: 2,
            }),
        );
        let series = |buckets| Series {
            key: vec![],
            value: Value::Buckets(buckets),
            sum: None,
        };
        for buckets in [
            // A zero bucket (JSON shows it; a run would hide it).
            vec![b(Some(0), Some(1), 0)],
            // Out of order.
            vec![b(Some(2), Some(3), 1), b(Some(0), Some(1), 1)],
            // Twice the same.
            vec![b(Some(0), Some(1), 1), b(Some(0), Some(1), 1)],
            // An off-edge bucket in the middle.
            vec![
                b(Some(0), Some(1), 1),
                b(Some(3), Some(4), 1),
                b(Some(6), Some(7), 1),
            ],
        ] {
            let mut out = Vec::new();
            put_value(&mut out, lin, 0, &series(buckets.clone()));
            assert_eq!(out[0], FORM_EXPLICIT, "{buckets:?}");
            let mut r = Reader { bytes: &out, at: 1 };
            // What was explicit comes back exactly, zeros and order included.
            assert_eq!(r.u64().unwrap(), buckets.len() as u64);
        }
    }

    #[test]
    fn keys_are_defined_once_and_new_keys_in_a_later_frame() {
        let infos = vec![
            info("@h", AggKind::Hist, None),
            info("@n", AggKind::Count, None),
        ];
        let mut encoder = CompactEncoder::new(&infos);
        let mut decoder = Decoder::new(&infos);
        let mut first = Snapshot::empty(&infos);
        first.aggregations[0].series = vec![Series::histogram(
            key(&["read"]),
            vec![b(Some(1), Some(1), 1)],
        )];
        // The same key in another aggregation shares the id.
        first.aggregations[1].series = vec![Series {
            key: key(&["read"]),
            value: Value::Scalar(1),
            sum: None,
        }];
        let one = encoder.frame(&header(1), &first);
        assert_eq!(encoder.keys(), 1);
        let mut second = first.clone();
        second.aggregations[1].series.push(Series {
            key: key(&["write"]),
            value: Value::Scalar(2),
            sum: None,
        });
        let two = encoder.frame(&header(2), &second);
        let three = encoder.frame(&header(3), &second);
        assert_eq!(encoder.keys(), 2);
        assert!(three.len() < two.len(), "no definitions the second time");
        for (bytes, snapshot, seq) in [(&one, &first, 1), (&two, &second, 2), (&three, &second, 3)]
        {
            let (_, frames) = decoder.decode(bytes).unwrap();
            assert_eq!(frames, vec![json_frame(&header(seq), snapshot)]);
        }
        // A session joining now gets the dictionary, then frames that define nothing.
        let mut late = Decoder::new(&infos);
        assert_eq!(
            late.decode(&encoder.dictionary()).unwrap(),
            (TAG_DICTIONARY, vec![])
        );
        assert!(late.decode(&three).is_ok());
        assert!(
            Decoder::new(&infos).decode(&three).is_err(),
            "ids need their definitions"
        );
    }

    #[test]
    fn aggregations_not_announced_are_defined_in_the_frame_and_the_dictionary() {
        let infos = vec![info("@a", AggKind::Count, None)];
        let mut encoder = CompactEncoder::new(&infos);
        let mut decoder = Decoder::new(&infos);
        let mut snapshot = Snapshot::empty(&infos);
        snapshot.aggregations.push(Aggregation {
            name: "@late".into(),
            kind: AggKind::Quantize,
            series: vec![Series::histogram(key(&["x"]), vec![b(Some(4), Some(7), 1)])],
            folded: 0,
        });
        // Announced ones in another order still find their slot.
        snapshot.aggregations.swap(0, 1);
        let bytes = encoder.frame(&header(1), &snapshot);
        let (_, frames) = decoder.decode(&bytes).unwrap();
        assert_eq!(frames, vec![json_frame(&header(1), &snapshot)]);
        let again = encoder.frame(&header(2), &snapshot);
        let mut late = Decoder::new(&infos);
        late.decode(&encoder.dictionary()).unwrap();
        let (_, frames) = late.decode(&again).unwrap();
        assert_eq!(frames, vec![json_frame(&header(2), &snapshot)]);
    }

    #[test]
    fn past_the_bound_the_dictionary_resets_and_the_frame_defines_all_it_uses() {
        let infos = vec![info("@n", AggKind::Count, None)];
        let mut encoder = CompactEncoder::new(&infos);
        let mut decoder = Decoder::new(&infos);
        let batch = |from: usize, n: usize| {
            let mut s = Snapshot::empty(&infos);
            s.aggregations[0].series = (from..from + n)
                .map(|k| Series {
                    key: vec![KeyPart::Int(k as i64)],
                    value: Value::Scalar(k as i64),
                    sum: None,
                })
                .collect();
            s
        };
        let mut seq = 0;
        let mut from = 0;
        let chunk = MAX_DICTIONARY_KEYS / 4;
        while from + chunk <= MAX_DICTIONARY_KEYS {
            seq += 1;
            let bytes = encoder.frame(&header(seq), &batch(from, chunk));
            assert!(!resets_dictionary(&bytes));
            decoder.decode(&bytes).unwrap();
            from += chunk;
        }
        assert_eq!(encoder.keys(), MAX_DICTIONARY_KEYS);
        // Three new keys and one old one: past the bound.
        let over = batch(MAX_DICTIONARY_KEYS - 1, 4);
        let bytes = encoder.frame(&header(seq + 1), &over);
        assert!(resets_dictionary(&bytes));
        assert_eq!(encoder.keys(), 4, "only what the frame uses");
        let (_, frames) = decoder.decode(&bytes).unwrap();
        assert_eq!(frames, vec![json_frame(&header(seq + 1), &over)]);
        assert_eq!(decoder.keys.len(), 4, "the client cleared its dictionary");
        // Old ids now mean other keys, or nothing.
        let next = encoder.frame(&header(seq + 2), &batch(0, 1));
        assert!(!resets_dictionary(&next));
        assert_eq!(encoder.ids[[KeyPart::Int(0)].as_slice()], 4);
        let (_, frames) = decoder.decode(&next).unwrap();
        assert_eq!(frames, vec![json_frame(&header(seq + 2), &batch(0, 1))]);
    }

    #[test]
    fn history_carries_frames_in_order() {
        let (infos, snapshot) = every_kind();
        let mut encoder = CompactEncoder::new(&infos);
        let frames: Vec<Vec<u8>> = (1..=3)
            .map(|seq| encoder.frame(&header(seq), &snapshot))
            .collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        let message = history(&refs);
        let mut decoder = Decoder::new(&infos);
        let (tag, decoded) = decoder.decode(&message).unwrap();
        assert_eq!(tag, TAG_HISTORY);
        let expected: Vec<Json> = (1..=3)
            .map(|seq| json_frame(&header(seq), &snapshot))
            .collect();
        assert_eq!(decoded, expected);
        assert_eq!(
            decoder.decode(&history(&[])).unwrap(),
            (TAG_HISTORY, vec![])
        );
        // A late joiner: dictionary, then the same history (re-definitions are harmless).
        let mut late = Decoder::new(&infos);
        late.decode(&encoder.dictionary()).unwrap();
        assert_eq!(late.decode(&message).unwrap().1, expected);
    }

    /// The reference frame of `benches/frame_pipeline.rs`: 300 syscall keys × 33 lhist buckets.
    fn reference() -> (Vec<AggregationInfo>, Snapshot) {
        let infos = vec![info(
            "@latency_us",
            AggKind::Lhist,
            Some(Layout {
                min: 0,
                max: 64,
                step: 2,
            }),
        )];
        let mut s = Snapshot::empty(&infos);
        s.aggregations[0].series = (0..300i64)
            .map(|k| {
                let mut buckets: Vec<Bucket> = (0..32)
                    .map(|i| {
                        b(
                            Some(i * 2),
                            Some(i * 2 + 1),
                            (1 + (k * 7 + i * 13) % 5000) as u64,
                        )
                    })
                    .collect();
                buckets.push(b(Some(64), None, (3 + k % 11) as u64));
                let name = KeyPart::Str(crate::syscalls::name(k).into_owned());
                Series::histogram(vec![name], buckets)
            })
            .collect();
        (infos, s)
    }

    #[test]
    fn the_reference_frame_is_at_most_a_fifth_of_its_json() {
        let (infos, snapshot) = reference();
        let json = encode_frame(&header(1), &snapshot).len();
        let mut encoder = CompactEncoder::new(&infos);
        let first = encoder.frame(&header(1), &snapshot);
        let next = encoder.frame(&header(2), &snapshot);
        println!(
            "reference frame: json {json} bytes, compact {} bytes with its 300 key definitions \
             ({:.1}%), {} bytes after ({:.1}%)",
            first.len(),
            100.0 * first.len() as f64 / json as f64,
            next.len(),
            100.0 * next.len() as f64 / json as f64
        );
        assert!(first.len() * 5 <= json, "{} of {json}", first.len());
        let mut decoder = Decoder::new(&infos);
        assert_eq!(
            decoder.decode(&first).unwrap().1,
            vec![json_frame(&header(1), &snapshot)]
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// One fixture: what `started` announced, then messages in the order a client gets them,
    /// each with the JSON frames (`encode_frame`'s text) it must decode to.
    struct Fixture {
        infos: Vec<AggregationInfo>,
        messages: Vec<(&'static str, Vec<u8>, Vec<String>)>,
    }

    impl Fixture {
        fn text(&self) -> String {
            let messages: Vec<String> = self
                .messages
                .iter()
                .map(|(kind, bytes, frames)| {
                    format!(
                        "{{\"kind\": \"{kind}\", \"hex\": \"{}\",\n   \"frames\": [{}]}}",
                        hex(bytes),
                        frames.join(",\n    ")
                    )
                })
                .collect();
            format!(
                "{{\"aggregations\": {},\n \"messages\": [\n  {}\n ]}}\n",
                serde_json::to_string(&self.infos).unwrap(),
                messages.join(",\n  ")
            )
        }
    }

    fn fixtures() -> Vec<(&'static str, Fixture)> {
        let mut out = Vec::new();

        // Every kind; a later frame with a new key and a final one; then a late joiner's view.
        let (infos, snapshot) = every_kind();
        let mut encoder = CompactEncoder::new(&infos);
        let mut messages = Vec::new();
        let one = encoder.frame(&header(1), &snapshot);
        messages.push((
            "frame",
            one.clone(),
            vec![encode_frame(&header(1), &snapshot)],
        ));
        let mut later = snapshot.clone();
        later.aggregations[7].series.push(Series {
            key: key(&["new", "7"]),
            value: Value::Scalar(7),
            sum: None,
        });
        let mut last = header(2);
        last.last = true;
        let two = encoder.frame(&last, &later);
        messages.push(("frame", two.clone(), vec![encode_frame(&last, &later)]));
        out.push((
            "every-kind",
            Fixture {
                infos: infos.clone(),
                messages,
            },
        ));
        out.push((
            "late-joiner",
            Fixture {
                infos: infos.clone(),
                messages: vec![
                    ("dictionary", encoder.dictionary(), vec![]),
                    (
                        "history",
                        history(&[&one, &two]),
                        vec![
                            encode_frame(&header(1), &snapshot),
                            encode_frame(&last, &later),
                        ],
                    ),
                ],
            },
        ));

        // Aggregations a walk revealed, and a dictionary reset (with a small bound).
        let infos = vec![
            info("@h", AggKind::Hist, None),
            info("@n", AggKind::Count, None),
        ];
        let mut encoder = CompactEncoder::new(&infos);
        encoder.max_keys = 4;
        let mut messages = Vec::new();
        let counts = |keys: &[i64]| {
            let mut s = Snapshot::empty(&infos);
            s.aggregations[1].series = keys
                .iter()
                .map(|&k| Series {
                    key: vec![KeyPart::Int(k), KeyPart::Str(format!("k{k}"))],
                    value: Value::Scalar(k * 10),
                    sum: None,
                })
                .collect();
            s
        };
        let mut revealed = counts(&[1, 2]);
        revealed.aggregations.push(Aggregation {
            name: "@late".into(),
            kind: AggKind::Hist,
            series: vec![Series::histogram(
                key(&["x"]),
                vec![b(Some(4), Some(7), 2), b(Some(16), Some(31), 1)],
            )],
            folded: 0,
        });
        for (seq, snapshot) in [
            (1, counts(&[1, 2])),
            (2, revealed),
            (3, counts(&[3, 4])),
            (4, counts(&[4, 5])),
        ] {
            let bytes = encoder.frame(&header(seq), &snapshot);
            assert_eq!(resets_dictionary(&bytes), seq == 3, "frame {seq}");
            messages.push(("frame", bytes, vec![encode_frame(&header(seq), &snapshot)]));
        }
        out.push(("revealed-and-reset", Fixture { infos, messages }));

        // A busy frame like the reference one, smaller.
        let (infos, mut snapshot) = reference();
        snapshot.aggregations[0].series.truncate(40);
        let mut encoder = CompactEncoder::new(&infos);
        // A live frame, with what the program cost.
        let costed = FrameHeader {
            cost: Some(crate::consumer::cost::Cost {
                events_per_s: 1_204_711.0,
                ns_per_event: 190.3,
                cpu_share: 0.229256,
                sampled: Some(0.15),
            }),
            ..header(1)
        };
        let bytes = encoder.frame(&costed, &snapshot);
        out.push((
            "busy",
            Fixture {
                infos,
                messages: vec![("frame", bytes, vec![encode_frame(&costed, &snapshot)])],
            },
        ));
        out
    }

    /// Environment variable that makes [`the_committed_fixtures_are_current`] rewrite them.
    const WRITE_FIXTURES: &str = "HEAT_ACTIX_WRITE_FIXTURES";

    /// The fixtures `tests/browser/compact.test.mjs` decodes with `static/compact.js`.
    #[test]
    fn the_committed_fixtures_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/compact");
        let write = std::env::var_os(WRITE_FIXTURES).is_some_and(|v| v == "1");
        for (name, fixture) in fixtures() {
            // The Rust decoder agrees with every fixture before JS is asked to.
            let mut decoder = Decoder::new(&fixture.infos);
            for (kind, bytes, frames) in &fixture.messages {
                let (tag, decoded) = decoder.decode(bytes).unwrap();
                let expected: Vec<Json> = frames
                    .iter()
                    .map(|f| serde_json::from_str(f).unwrap())
                    .collect();
                assert_eq!(decoded, expected, "{name}");
                let tags = [
                    ("frame", TAG_FRAME),
                    ("history", TAG_HISTORY),
                    ("dictionary", TAG_DICTIONARY),
                ];
                assert!(tags.contains(&(*kind, tag)), "{name}");
            }
            let path = dir.join(format!("{name}.json"));
            let text = fixture.text();
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else {
                let committed = std::fs::read_to_string(&path).unwrap_or_default();
                assert!(
                    committed == text,
                    "{} is not what the encoder writes now; regenerate with {WRITE_FIXTURES}=1 \
                     cargo test --lib compact, and commit it",
                    path.display()
                );
            }
        }
    }
}
