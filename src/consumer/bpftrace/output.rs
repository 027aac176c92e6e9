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

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
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
    Map { name: String, value: Printed },
    /// The walk with this number is complete.
    WalkDone(u64),
    /// Text from the program's `printf`, `time` and similar.
    Text(String),
    /// Anything else (lost events, helper errors, …), kept as printed.
    Other(Json),
}

/// The `data` of one event: the printed maps of a map event, read straight into [`Printed`],
/// or any other event's JSON.
enum Data {
    Maps(Printed),
    Json(Json),
}

/// Whether events of this `type` print maps.
fn prints_maps(kind: &str) -> bool {
    matches!(kind, "map" | "hist" | "stats")
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
        let data = if prints_maps(&kind) {
            Data::Maps(Printed::from_json(data))
        } else {
            Data::Json(data)
        };
        Event::classify(&kind, data, object)
    }

    /// The event of `type` `kind` with `data`; `rest` holds the object's other members.
    fn classify(kind: &str, data: Data, mut rest: Map<String, Json>) -> Event {
        match (kind, data) {
            ("attached_probes", Data::Json(data)) => Event::Attached {
                probes: data.get("probes").and_then(Json::as_u64).unwrap_or(0),
            },
            (_, Data::Maps(Printed::Object(mut maps))) if maps.len() == 1 => {
                let (name, value) = maps.pop().expect("one entry");
                Event::Map { name, value }
            }
            ("printf" | "time" | "join" | "cat" | "value" | "syscall", Data::Json(data)) => {
                match data {
                    Json::String(text) => match text.strip_prefix(WALK_MARKER) {
                        Some(n) => match n.trim().parse() {
                            Ok(n) => Event::WalkDone(n),
                            Err(_) => Event::Text(text),
                        },
                        None => Event::Text(text),
                    },
                    other => Event::Text(other.to_string()),
                }
            }
            (_, data) => {
                rest.insert("type".into(), Json::String(kind.to_owned()));
                let data = match data {
                    Data::Maps(printed) => printed.to_json(),
                    Data::Json(json) => json,
                };
                rest.insert("data".into(), data);
                Event::Other(Json::Object(rest))
            }
        }
    }
}

/// Reads one printed JSON value as an [`Event`] without building a generic JSON tree for map
/// data: a busy map is tens of thousands of bucket objects, and a `serde_json::Value` per
/// bucket (a BTreeMap each) was most of a walk's cost. bpftrace prints `type` before `data`;
/// in the other order `data` is read as JSON and converted.
impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
        deserializer.deserialize_any(EventVisitor)
    }
}

struct EventVisitor;

impl<'de> Visitor<'de> for EventVisitor {
    type Value = Event;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let mut kind: Option<String> = None;
        let mut data: Option<Data> = None;
        let mut rest = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "type" => {
                    let value: Json = map.next_value()?;
                    kind = Some(value.as_str().unwrap_or_default().to_owned());
                }
                "data" if kind.as_deref().is_some_and(prints_maps) => {
                    data = Some(Data::Maps(map.next_value()?));
                }
                "data" => data = Some(Data::Json(map.next_value()?)),
                _ => {
                    let value: Json = map.next_value()?;
                    rest.insert(key, value);
                }
            }
        }
        let kind = kind.unwrap_or_default();
        let data = match data {
            Some(Data::Json(json)) if prints_maps(&kind) => Data::Maps(Printed::from_json(json)),
            Some(data) => data,
            None if prints_maps(&kind) => Data::Maps(Printed::Other),
            None => Data::Json(Json::Null),
        };
        Ok(Event::classify(&kind, data, rest))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Event, A::Error> {
        let items = Json::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Event::Other(items))
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Event, E> {
        Ok(Event::Other(Json::Bool(v)))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Event, E> {
        Ok(Event::Other(Json::from(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Event, E> {
        Ok(Event::Other(Json::from(v)))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Event, E> {
        Ok(Event::Other(Json::from(v)))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Event, E> {
        Ok(Event::Other(Json::from(v)))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Event, E> {
        Ok(Event::Other(Json::Null))
    }
}

/// A map's value as bpftrace prints it: numbers, bucket arrays, and objects of those (keyed
/// maps, stats). Anything else it could print is [`Printed::Other`], a shape error to decode.
#[derive(Debug, Clone, PartialEq)]
pub enum Printed {
    /// An integer (wide enough for any i64 or u64 bpftrace prints).
    Int(i128),
    /// An array; bucket arrays are arrays of [`PrintedBucket`].
    Array(Vec<Element>),
    /// An object, members in printed order.
    Object(Vec<(String, Printed)>),
    /// A float, string, bool or null.
    Other,
}

/// One element of a printed array: a bucket, or something a bucket array never holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Element {
    Bucket(PrintedBucket),
    Other,
}

/// A printed bucket's members; a member that is missing or not an integer is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrintedBucket {
    pub min: Option<i128>,
    pub max: Option<i128>,
    pub count: Option<i128>,
}

impl Printed {
    /// The same value from a JSON tree (tests, and `data` printed before `type`).
    pub fn from_json(json: Json) -> Printed {
        match json {
            Json::Number(_) => json_int(&json).map_or(Printed::Other, Printed::Int),
            Json::Array(items) => Printed::Array(
                items
                    .into_iter()
                    .map(|item| match item {
                        Json::Object(b) => {
                            let member = |name: &str| b.get(name).and_then(json_int);
                            Element::Bucket(PrintedBucket {
                                min: member("min"),
                                max: member("max"),
                                count: member("count"),
                            })
                        }
                        _ => Element::Other,
                    })
                    .collect(),
            ),
            Json::Object(members) => Printed::Object(
                members
                    .into_iter()
                    .map(|(k, v)| (k, Printed::from_json(v)))
                    .collect(),
            ),
            _ => Printed::Other,
        }
    }

    /// Back to JSON, for an event kept as [`Event::Other`].
    pub fn to_json(&self) -> Json {
        match self {
            Printed::Int(n) => i64::try_from(*n)
                .map(Json::from)
                .or_else(|_| u64::try_from(*n).map(Json::from))
                .unwrap_or(Json::Null),
            Printed::Array(items) => Json::Array(
                items
                    .iter()
                    .map(|item| match item {
                        Element::Bucket(b) => {
                            let mut object = Map::new();
                            for (name, v) in [("min", b.min), ("max", b.max), ("count", b.count)] {
                                if let Some(v) = v {
                                    object.insert(name.into(), Printed::Int(v).to_json());
                                }
                            }
                            Json::Object(object)
                        }
                        Element::Other => Json::Null,
                    })
                    .collect(),
            ),
            Printed::Object(members) => Json::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
            Printed::Other => Json::Null,
        }
    }
}

/// A JSON integer, signed or unsigned; `None` for anything else.
fn json_int(v: &Json) -> Option<i128> {
    v.as_i64().map(i128::from).or(v.as_u64().map(i128::from))
}

impl<'de> Deserialize<'de> for Printed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Printed, D::Error> {
        deserializer.deserialize_any(PrintedVisitor)
    }
}

struct PrintedVisitor;

impl<'de> Visitor<'de> for PrintedVisitor {
    type Value = Printed;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a printed bpftrace map value")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Printed, E> {
        Ok(Printed::Int(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Printed, E> {
        Ok(Printed::Int(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Printed, E> {
        Ok(Printed::Other)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Printed, E> {
        Ok(Printed::Other)
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Printed, E> {
        Ok(Printed::Other)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Printed, E> {
        Ok(Printed::Other)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Printed, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Element>()? {
            items.push(item);
        }
        Ok(Printed::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Printed, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some(key) = map.next_key::<String>()? {
            members.push((key, map.next_value::<Printed>()?));
        }
        Ok(Printed::Object(members))
    }
}

impl<'de> Deserialize<'de> for Element {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Element, D::Error> {
        deserializer.deserialize_any(ElementVisitor)
    }
}

struct ElementVisitor;

impl<'de> Visitor<'de> for ElementVisitor {
    type Value = Element;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a bucket")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Element, A::Error> {
        let mut bucket = PrintedBucket::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "min" => &mut bucket.min,
                "max" => &mut bucket.max,
                "count" => &mut bucket.count,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = match map.next_value::<Printed>()? {
                Printed::Int(n) => Some(n),
                _ => None,
            };
        }
        Ok(Element::Bucket(bucket))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Element, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Element::Other)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Element, E> {
        Ok(Element::Other)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Element, E> {
        Ok(Element::Other)
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
        match serde_json::from_str::<Event>(&pending) {
            Ok(event) => {
                pending.clear();
                return Some(event);
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
pub fn decode_map(spec: &MapSpec, value: &Printed) -> Result<Aggregation, DecodeError> {
    let name = &spec.info.name;
    let kind = spec.info.kind;
    let shape = |what| DecodeError::Shape {
        map: name.clone(),
        what,
    };
    let mut series = Vec::new();
    let is_object = matches!(value, Printed::Object(_));
    let keyed = spec.arity > 0 || (kind != AggKind::Stats && is_object);
    if keyed {
        let Printed::Object(entries) = value else {
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

fn decode_value(kind: AggKind, key: Vec<KeyPart>, v: &Printed) -> Option<Series> {
    Some(match (kind, v) {
        (_, Printed::Array(buckets)) if kind.is_histogram() => {
            let buckets = buckets
                .iter()
                .map(|b| match b {
                    Element::Bucket(b) => decode_bucket(b),
                    Element::Other => None,
                })
                .collect::<Option<Vec<_>>>()?;
            Series::histogram(key, buckets)
        }
        (AggKind::Stats, Printed::Object(stats)) => Series {
            key,
            value: decode_stats(stats)?,
            sum: None,
        },
        // bpftrace prints avg() as a bare number under the "stats" type.
        (_, Printed::Int(n)) if !kind.is_histogram() => Series {
            key,
            value: Value::Scalar(int(*n)?),
            sum: None,
        },
        _ => return None,
    })
}

fn decode_stats(stats: &[(String, Printed)]) -> Option<Value> {
    let member = |name: &str| {
        stats
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| match v {
                Printed::Int(n) => Some(*n),
                _ => None,
            })
    };
    Some(Value::Stats {
        count: u64::try_from(member("count")?).ok()?,
        total: int(member("total")?)?,
        average: int(member("average")?)?,
    })
}

/// Where bpftrace 0.17's `hist()` top bucket starts: its log2 stops at 32 bits.
pub const HIST_TOP: i64 = 1 << 31;

/// How bpftrace 0.17 prints that top bucket's edges (a 32-bit overflow).
const HIST_TOP_PRINTED: (Option<i64>, Option<i64>) = (Some(i32::MIN as i64), Some(0));

fn decode_bucket(b: &PrintedBucket) -> Option<Bucket> {
    let mut edges = (b.min.and_then(int), b.max.and_then(int));
    if edges == HIST_TOP_PRINTED {
        edges = (Some(HIST_TOP), None);
    }
    Some(Bucket {
        lo: edges.0,
        hi: edges.1,
        count: u64::try_from(b.count?).ok()?,
    })
}

/// An integer, saturating the rare u64 above `i64::MAX` rather than losing the sample.
fn int(n: i128) -> Option<i64> {
    Some(i64::try_from(n).unwrap_or(if n > 0 { i64::MAX } else { i64::MIN }))
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

    /// Members in name order (a JSON tree sorts them; the reader keeps bpftrace's order).
    fn sorted(p: &Printed) -> Printed {
        match p {
            Printed::Object(members) => {
                let mut members: Vec<_> = members
                    .iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect();
                members.sort_by(|a, b| a.0.cmp(&b.0));
                Printed::Object(members)
            }
            other => other.clone(),
        }
    }

    /// A map event read as the reader reads it, and as JSON through `from_json`: both agree.
    fn map_event(line: &str) -> (String, Printed) {
        let read: Event = serde_json::from_str(line).unwrap();
        let (Event::Map { value: a, .. }, Event::Map { value: b, .. }) =
            (&read, Event::from_json(serde_json::from_str(line).unwrap()))
        else {
            panic!("not a map: {line}");
        };
        assert_eq!(sorted(a), sorted(&b));
        match read {
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
                    value: Printed::Int(3)
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
        let err = decode_map(
            &spec("@h", AggKind::Hist, 0),
            &Printed::from_json(Json::String("x".into())),
        )
        .unwrap_err();
        assert!(matches!(err, DecodeError::Shape { .. }));
        assert!(decode_map(
            &spec("@h", AggKind::Hist, 1),
            &Printed::from_json(serde_json::json!({"k": [{"min": 1}]}))
        )
        .is_err());
        assert!(decode_map(
            &spec("@n", AggKind::Count, 1),
            &Printed::from_json(serde_json::json!([1, 2]))
        )
        .is_err());
    }

    #[test]
    fn events_other_than_maps_read_the_same_typed_or_as_json() {
        for line in [
            r#"{"type": "attached_probes", "data": {"probes": 3}}"#,
            r#"{"type": "printf", "data": "hello\n"}"#,
            r#"{"type": "lost_events", "data": {"events": 5}}"#,
            r#"{"data": {"@x": 7}, "type": "map"}"#,
            r#"{"type": "map", "data": {"@a": 1, "@b": 2}}"#,
            r#"[1, 2]"#,
            r#"42"#,
        ] {
            let read: Event = serde_json::from_str(line).unwrap();
            assert_eq!(
                read,
                Event::from_json(serde_json::from_str(line).unwrap()),
                "{line}"
            );
        }
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
