//! Wire protocol v1 (see `docs/protocol.md`): the messages a browser sends, parsed strictly,
//! and the messages the server sends.

use serde::Serialize;
use serde_json::Value as Json;

use crate::aggregation::{AggregationInfo, Snapshot};
use crate::presets::{Excluded, Preset};

/// The protocol version in `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// A request from the browser.
#[derive(Debug, PartialEq)]
pub enum ClientMessage {
    Start(StartRequest),
    Stop,
    /// Frames `from..=to` of the running program again (those a slow browser missed).
    Fetch {
        from: u64,
        to: u64,
    },
    /// Capture stacks for a latency band of the watched program (issue 16).
    Explain(ExplainRequest),
    /// Stop the explain companion.
    ExplainStop,
}

/// `{"type":"explain","program":N,"band":{"lo":A,"hi":B},"keys":[…]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainRequest {
    pub program: u64,
    pub band: crate::program::explain::Band,
    /// The isolated keys; empty: every key.
    pub keys: Vec<String>,
    /// The companion's CPU budget, as `start`'s `max_cpu_percent`.
    pub max_cpu_percent: Option<u32>,
    /// Which companion runs (`auto` unless asked).
    pub backend: crate::program::explain::CompanionBackend,
}

/// `{"type":"start", …}`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct StartRequest {
    pub preset: Option<String>,
    pub lang: Option<String>,
    pub script: Option<String>,
    pub tick_ms: Option<u64>,
    pub backend: Option<String>,
    /// Only this process is measured (presets only).
    pub pid: Option<u32>,
    /// Only tasks with this command name are measured (presets only).
    pub comm: Option<String>,
    /// Whether heat-actix's own process and tracers are measured too (presets only; the
    /// syscall presets leave them out unless this is true).
    pub include_self: Option<bool>,
    /// A script that other sessions sending the same text may join (scripts are private
    /// otherwise; presets are always shared).
    pub share: bool,
    /// Frames as compact binary messages (protocol v1.1) instead of JSON.
    pub compact: bool,
    /// Record the program's ticks in the store while it runs.
    pub record: bool,
    /// The program's CPU budget in percent of one CPU, instead of
    /// `limits.max_program_cpu_percent` (up to the session's role's limit).
    pub max_cpu_percent: Option<u32>,
    /// Join this configured watch's running program, whatever its parameters (`[[watch]]`).
    pub watch: Option<String>,
}

/// Longest `comm` the kernel keeps (TASK_COMM_LEN without its NUL).
const COMM_MAX: usize = 15;

/// Why a client message was refused.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ProtocolError {
    /// Not a message this protocol knows; the text says what is wrong.
    #[error("{0}")]
    BadRequest(String),
    /// A valid request for something this server cannot do.
    #[error("{0}")]
    Unsupported(String),
}

impl ProtocolError {
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::BadRequest(_) => "bad_request",
            ProtocolError::Unsupported(_) => "unsupported",
        }
    }
}

/// Parses one text frame from the browser.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    let json: Json = serde_json::from_str(text)
        .map_err(|e| ProtocolError::BadRequest(format!("malformed JSON: {e}")))?;
    let Json::Object(mut object) = json else {
        return Err(ProtocolError::BadRequest(
            "a message must be a JSON object".into(),
        ));
    };
    let kind = match object.remove("type") {
        Some(Json::String(kind)) => kind,
        Some(_) => return Err(ProtocolError::BadRequest("`type` must be a string".into())),
        // The 2011 Heat Tracer's message: a bare D script, run as `lang: "d"`.
        None if object.contains_key("dscript") => return dscript(object),
        None => return Err(ProtocolError::BadRequest("missing `type`".into())),
    };
    match kind.as_str() {
        "start" => {
            let request = start_request(object)?;
            match (&request.preset, &request.script) {
                (Some(_), Some(_)) => Err(ProtocolError::BadRequest(
                    "start: give `preset` or `script`, not both".into(),
                )),
                (None, None) if request.watch.is_none() => Err(ProtocolError::BadRequest(
                    "start: needs `preset`, `script` or `watch`".into(),
                )),
                (None, Some(_)) if request.lang.is_none() => Err(ProtocolError::BadRequest(
                    "start: a `script` needs `lang` (\"bpftrace\" or \"d\")".into(),
                )),
                _ => Ok(ClientMessage::Start(request)),
            }
        }
        "stop" if object.is_empty() => Ok(ClientMessage::Stop),
        "fetch" => fetch_request(object),
        "explain" => explain_request(object).map(ClientMessage::Explain),
        "explain_stop" if object.is_empty() => Ok(ClientMessage::ExplainStop),
        "explain_stop" => Err(ProtocolError::BadRequest(
            "explain_stop takes no fields".into(),
        )),
        "stop" => Err(ProtocolError::BadRequest("stop takes no fields".into())),
        other => Err(ProtocolError::BadRequest(format!(
            "unknown message type {other:?}"
        ))),
    }
}

/// Most frames one `fetch` may ask for.
pub const MAX_FETCH: u64 = 100_000;

/// `{"type":"fetch","from":A,"to":B}`: `seq` numbers, `A <= B`.
fn fetch_request(
    mut object: serde_json::Map<String, Json>,
) -> Result<ClientMessage, ProtocolError> {
    let mut seq = |name: &str| match object.remove(name) {
        Some(v) => v.as_u64().ok_or_else(|| {
            ProtocolError::BadRequest(format!("fetch: `{name}` must be a non-negative integer"))
        }),
        None => Err(ProtocolError::BadRequest(format!("fetch: needs `{name}`"))),
    };
    let (from, to) = (seq("from")?, seq("to")?);
    if let Some(other) = object.keys().next() {
        return Err(ProtocolError::BadRequest(format!(
            "fetch: unknown field `{other}`"
        )));
    }
    if from > to || to - from >= MAX_FETCH {
        return Err(ProtocolError::BadRequest(format!(
            "fetch: needs from <= to, at most {MAX_FETCH} frames"
        )));
    }
    Ok(ClientMessage::Fetch { from, to })
}

/// The fields of an `explain`, naming any that is unknown or mistyped.
fn explain_request(object: serde_json::Map<String, Json>) -> Result<ExplainRequest, ProtocolError> {
    use crate::program::explain::{Band, MAX_KEYS};
    let bad = |m: &str| ProtocolError::BadRequest(format!("explain: {m}"));
    let (mut program, mut band, mut keys, mut max_cpu_percent) = (None, None, Vec::new(), None);
    let mut backend = crate::program::explain::CompanionBackend::Auto;
    for (field, value) in object {
        match field.as_str() {
            "program" => {
                program = Some(
                    value
                        .as_u64()
                        .ok_or_else(|| bad("`program` must be a program id"))?,
                )
            }
            "band" => {
                let Json::Object(b) = value else {
                    return Err(bad("`band` must be {\"lo\": …, \"hi\": …}"));
                };
                if let Some(other) = b.keys().find(|k| *k != "lo" && *k != "hi") {
                    return Err(bad(&format!("unknown band field `{other}`")));
                }
                let lo = b.get("lo").and_then(Json::as_u64).ok_or_else(|| {
                    bad("`band.lo` must be a non-negative integer in the program's unit")
                })?;
                let hi = match b.get("hi") {
                    None | Some(Json::Null) => None,
                    Some(v) => Some(v.as_u64().filter(|&hi| hi > lo).ok_or_else(|| {
                        bad("`band.hi` must be an integer above `lo`, or null for no upper bound")
                    })?),
                };
                band = Some(Band { lo, hi });
            }
            "keys" => {
                let Json::Array(list) = value else {
                    return Err(bad("`keys` must be an array of strings"));
                };
                if list.len() > MAX_KEYS {
                    return Err(bad(&format!("at most {MAX_KEYS} keys")));
                }
                for key in list {
                    match key {
                        Json::String(k) => keys.push(k),
                        Json::Number(n) => keys.push(n.to_string()),
                        _ => return Err(bad("`keys` must be an array of strings")),
                    }
                }
            }
            "max_cpu_percent" => {
                let percent = value
                    .as_u64()
                    .filter(|&p| p >= 1)
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| {
                        bad("`max_cpu_percent` must be a whole number of percent, at least 1")
                    })?;
                max_cpu_percent = Some(percent);
            }
            "backend" => {
                backend = value
                    .as_str()
                    .and_then(crate::program::explain::CompanionBackend::parse)
                    .ok_or_else(|| bad("`backend` must be \"auto\", \"ebpf\" or \"bpftrace\""))?;
            }
            other => return Err(bad(&format!("unknown field `{other}`"))),
        }
    }
    Ok(ExplainRequest {
        program: program.ok_or_else(|| bad("needs `program` (from `started`)"))?,
        band: band.ok_or_else(|| bad("needs `band`"))?,
        keys,
        max_cpu_percent,
        backend,
    })
}

/// Parses one text message of the 2011 dialect (`/ws?format=2011`): a JSON object with
/// `dscript` (Heat Tracer), or text that is not JSON at all (dowboy's bare D program). Either
/// starts the D program, replacing any running one.
pub fn parse_2011_message(text: &str) -> Result<ClientMessage, ProtocolError> {
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(object)) if object.contains_key("dscript") => dscript(object),
        Ok(_) => Err(ProtocolError::BadRequest(
            "send a D program, as text or as {\"dscript\": \"…\"}".into(),
        )),
        Err(_) => Ok(ClientMessage::Start(StartRequest {
            lang: Some("d".into()),
            script: Some(text.to_owned()),
            ..StartRequest::default()
        })),
    }
}

/// `{"dscript": "…"}`, optionally with `tick_ms`: a start of a D script.
fn dscript(mut object: serde_json::Map<String, Json>) -> Result<ClientMessage, ProtocolError> {
    let Some(Json::String(script)) = object.remove("dscript") else {
        return Err(ProtocolError::BadRequest(
            "`dscript` must be a string".into(),
        ));
    };
    let mut request = start_request(object)?;
    if request.preset.is_some() || request.script.is_some() || request.lang.is_some() {
        return Err(ProtocolError::BadRequest(
            "`dscript` takes no `preset`, `script` or `lang`".into(),
        ));
    }
    request.lang = Some("d".into());
    request.script = Some(script);
    Ok(ClientMessage::Start(request))
}

/// Reads the fields of a start request, naming any field that is unknown or mistyped.
fn start_request(object: serde_json::Map<String, Json>) -> Result<StartRequest, ProtocolError> {
    let mut request = StartRequest::default();
    for (field, value) in object {
        let text = |value: Json| match value {
            Json::String(s) => Ok(Some(s)),
            _ => Err(ProtocolError::BadRequest(format!(
                "start: `{field}` must be a string"
            ))),
        };
        match field.as_str() {
            "preset" => request.preset = text(value)?,
            "lang" => request.lang = text(value)?,
            "script" => request.script = text(value)?,
            "watch" => request.watch = text(value)?,
            "backend" => request.backend = text(value)?,
            "pid" => {
                let pid = value
                    .as_u64()
                    .filter(|p| (1..=i32::MAX as u64).contains(p))
                    .ok_or_else(|| {
                        ProtocolError::BadRequest("start: `pid` must be a process id".into())
                    })?;
                request.pid = Some(pid as u32);
            }
            "comm" => {
                let comm = text(value)?.unwrap_or_default();
                // Quotes, backslashes and control characters are refused: the bpftrace
                // backend quotes the comm into its predicate.
                let plain = comm
                    .chars()
                    .all(|c| !c.is_control() && c != '"' && c != '\\');
                if comm.is_empty() || comm.len() > COMM_MAX || !plain {
                    return Err(ProtocolError::BadRequest(format!(
                        "start: `comm` must be 1..={COMM_MAX} bytes without quotes or backslashes"
                    )));
                }
                request.comm = Some(comm);
            }
            "record" => {
                request.record = value.as_bool().ok_or_else(|| {
                    ProtocolError::BadRequest("start: `record` must be true or false".into())
                })?;
            }
            "share" => {
                request.share = value.as_bool().ok_or_else(|| {
                    ProtocolError::BadRequest("start: `share` must be true or false".into())
                })?;
            }
            "encoding" => match value.as_str() {
                Some("json") => request.compact = false,
                Some("compact") => request.compact = true,
                _ => {
                    return Err(ProtocolError::BadRequest(
                        "start: `encoding` must be \"json\" or \"compact\"".into(),
                    ))
                }
            },
            "include_self" => {
                let include = value.as_bool().ok_or_else(|| {
                    ProtocolError::BadRequest("start: `include_self` must be true or false".into())
                })?;
                request.include_self = Some(include);
            }
            "max_cpu_percent" => {
                let percent = value
                    .as_u64()
                    .filter(|&p| p >= 1)
                    .and_then(|p| u32::try_from(p).ok())
                    .ok_or_else(|| {
                        ProtocolError::BadRequest(
                            "start: `max_cpu_percent` must be a whole number of percent, at least 1"
                                .into(),
                        )
                    })?;
                request.max_cpu_percent = Some(percent);
            }
            "tick_ms" => {
                let ms = value.as_u64().ok_or_else(|| {
                    ProtocolError::BadRequest(
                        "start: `tick_ms` must be a whole number of milliseconds".into(),
                    )
                })?;
                request.tick_ms = Some(ms);
            }
            other => {
                return Err(ProtocolError::BadRequest(format!(
                    "start: unknown field `{other}`"
                )))
            }
        }
    }
    // A watch is joined as configured: its parameters are the operator's, not the viewer's.
    let only_encoding = StartRequest {
        watch: None,
        compact: false,
        ..StartRequest::default()
    };
    if request.watch.is_some()
        && (StartRequest {
            watch: None,
            compact: false,
            ..request.clone()
        }) != only_encoding
    {
        return Err(ProtocolError::BadRequest(
            "start: `watch` takes no other field but `encoding` (the watch's parameters are configured)"
                .into(),
        ));
    }
    Ok(request)
}

/// A message from the server (frames aside, see [`encode_frame`]).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMessage<'a> {
    Hello {
        protocol: u32,
        server: &'static str,
        version: &'static str,
        session: &'a str,
        tick_ms: u64,
        tick_ms_range: [u64; 2],
        backends: &'a [&'static str],
        presets: &'a [Preset],
        /// The token's name, or `anonymous`.
        user: &'a str,
        role: crate::config::Role,
        /// Whether this session may run custom scripts.
        custom_scripts: bool,
        max_script_bytes: usize,
        /// Frame encodings a `start` may ask for (v1.1: `compact`).
        encodings: [&'static str; 2],
        /// Shared preset programs running now, which a `start` with the same parameters joins.
        running: &'a [crate::program::registry::RunningProgram],
    },
    Started {
        session: &'a str,
        backend: &'static str,
        tick_ms: u64,
        preset: Option<&'a str>,
        unit: Option<&'a str>,
        startup_ms: u64,
        aggregations: &'a [AggregationInfo],
        /// What runs a D script (`d-to-bpftrace`); absent for presets and bpftrace scripts.
        #[serde(skip_serializing_if = "Option::is_none")]
        engine: Option<&'a str>,
        /// What the engine only approximates; absent when there is no engine.
        #[serde(skip_serializing_if = "Option::is_none")]
        notes: Option<&'a [String]>,
        /// Why a preset runs on bpftrace when its native version was the first choice.
        #[serde(skip_serializing_if = "Option::is_none")]
        fallback: Option<&'a str>,
        /// What the program leaves out of its picture (heat-actix itself); absent: nothing.
        #[serde(skip_serializing_if = "Option::is_none")]
        excluded: Option<&'a [Excluded]>,
        /// The running program this session watches (v1.1).
        program: u64,
        /// Whether other sessions may join the program (presets, and scripts started with
        /// `share`), and how many watch it now, this one included (v1.1).
        shared: bool,
        viewers: usize,
        /// The first frame this session gets: the oldest of the `history` that follows, or the
        /// next live frame (v1.1).
        first_seq: u64,
        /// The name the program's ticks are recorded under (`/api/watches/{name}/frames`), when
        /// they are: a watch, or a start with `record` (v1.1).
        #[serde(skip_serializing_if = "Option::is_none")]
        recording: Option<&'a str>,
    },
    /// How many sessions watch the program, when it changed (at most once a tick; v1.1).
    Viewers {
        count: usize,
    },
    Stopped {
        reason: &'static str,
    },
    /// The explain companion runs (issue 16).
    #[serde(rename = "explain_started")]
    ExplainStarted {
        explain: u64,
        program: u64,
        preset: &'a str,
        backend: &'static str,
        band: crate::program::explain::Band,
        keys: &'a [String],
        /// What the companion captures for this preset.
        captures: &'a str,
    },
    /// The explain companion stopped: `client`, `replaced`, `refused`, `budget`,
    /// `tracer_exited` (an `error` precedes the last three).
    #[serde(rename = "explain_stopped")]
    ExplainStopped {
        #[serde(skip_serializing_if = "Option::is_none")]
        explain: Option<u64>,
        reason: &'static str,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

/// A `history` message (v1.1) from frames already encoded as JSON `frame` messages, so that
/// nothing is encoded twice: `{"type":"history","from":A,"to":B,"frames":[…]}`. `from` and
/// `to` are the range asked for (a join: the ring's); `frames` holds those the ring still has.
pub fn encode_history<'a>(from: u64, to: u64, frames: impl Iterator<Item = &'a str>) -> String {
    let mut out = format!(r#"{{"type":"history","from":{from},"to":{to},"frames":["#);
    for (i, frame) in frames.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(frame);
    }
    out.push_str("]}");
    out
}

impl ServerMessage<'_> {
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server messages always serialise")
    }
}

/// What a `frame` says besides its aggregations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FrameHeader {
    pub seq: u64,
    pub ts_ms: u64,
    pub interval_ms: u64,
    /// Frames not delivered since the previous one because the browser was behind.
    #[serde(skip_serializing_if = "is_zero")]
    pub dropped: u64,
    /// The program's last frame (`"final": true`): what it aggregated since the previous
    /// frame, `END` included; `stopped` follows.
    #[serde(rename = "final", skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
    /// What the program's BPF programs cost over the interval, where the kernel measured it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<crate::consumer::cost::Cost>,
}

#[derive(Serialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    header: &'a FrameHeader,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Encodes one `frame` message.
pub fn encode_frame(header: &FrameHeader, snapshot: &Snapshot) -> String {
    serde_json::to_string(&Frame {
        kind: "frame",
        header,
        snapshot,
    })
    .expect("frames always serialise")
}

/// A `frame` object as [`encode_frame`] writes it, read strictly (an unknown field is an error).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFrame {
    #[serde(rename = "type")]
    kind: String,
    seq: u64,
    ts_ms: u64,
    interval_ms: u64,
    #[serde(default)]
    dropped: u64,
    #[serde(rename = "final", default)]
    last: bool,
    #[serde(default)]
    cost: Option<crate::consumer::cost::Cost>,
    aggregations: Vec<WireAggregation>,
    #[serde(default)]
    output: Vec<String>,
    #[serde(default)]
    drops: Vec<String>,
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WireAggregation {
    name: String,
    kind: crate::aggregation::AggKind,
    series: Vec<WireSeries>,
    #[serde(default)]
    folded: usize,
}

/// A series in any of the shapes `Series` serialises to (see `aggregation::Series`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WireSeries {
    key: Vec<crate::aggregation::KeyPart>,
    value: Option<serde_json::Number>,
    count: Option<u64>,
    total: Option<i64>,
    average: Option<i64>,
    buckets: Option<Vec<WireBucket>>,
}

/// A bucket on the wire: `[lo, hi, count]`, `null` for an open end.
type WireBucket = (Option<i64>, Option<i64>, u64);

impl WireSeries {
    fn decode(self) -> Result<crate::aggregation::Series, String> {
        use crate::aggregation::{Bucket, Series, Value};
        let key = self.key;
        let value = match (
            self.value,
            self.count,
            self.total,
            self.average,
            self.buckets,
        ) {
            (None, None, None, None, Some(buckets)) => Value::Buckets(
                buckets
                    .into_iter()
                    .map(|(lo, hi, count)| Bucket { lo, hi, count })
                    .collect(),
            ),
            (Some(v), None, None, None, None) => Value::Scalar(
                v.as_i64()
                    .ok_or_else(|| format!("value {v} is not a 64-bit integer"))?,
            ),
            (Some(v), Some(count), Some(total), None, None) => Value::Stats {
                count,
                total,
                average: v
                    .as_i64()
                    .ok_or_else(|| format!("value {v} is not a 64-bit integer"))?,
            },
            (Some(v), Some(count), Some(total), Some(average), None) => Value::Deviation {
                count,
                total,
                average,
                stddev: v
                    .as_u64()
                    .ok_or_else(|| format!("stddev {v} is not a whole number"))?,
            },
            _ => {
                return Err(format!(
                    "series {key:?}: give `buckets`, or `value` (with `count` and `total` for \
                     stats, and `average` for stddev)"
                ))
            }
        };
        Ok(Series {
            key,
            value,
            sum: None,
        })
    }
}

/// Reads a `frame` object back into what it was made of: the inverse of [`encode_frame`]
/// (`encode_frame(&h, &s)` decodes to `(h, s)`). Refuses anything else, saying what is wrong.
pub fn decode_frame(frame: Json) -> Result<(FrameHeader, Snapshot), ProtocolError> {
    let bad = |e: String| ProtocolError::BadRequest(e);
    let wire: WireFrame =
        serde_json::from_value(frame).map_err(|e| bad(format!("not a frame: {e}")))?;
    if wire.kind != "frame" {
        return Err(bad(format!("a {:?} message is not a frame", wire.kind)));
    }
    let header = FrameHeader {
        seq: wire.seq,
        ts_ms: wire.ts_ms,
        interval_ms: wire.interval_ms,
        dropped: wire.dropped,
        last: wire.last,
        cost: wire.cost,
    };
    let aggregations = wire
        .aggregations
        .into_iter()
        .map(|a| {
            Ok(crate::aggregation::Aggregation {
                series: a
                    .series
                    .into_iter()
                    .map(WireSeries::decode)
                    .collect::<Result<_, String>>()
                    .map_err(|e| bad(format!("aggregation {}: {e}", a.name)))?,
                name: a.name,
                kind: a.kind,
                folded: a.folded,
            })
        })
        .collect::<Result<_, ProtocolError>>()?;
    let snapshot = Snapshot {
        aggregations,
        output: wire.output,
        drops: wire.drops,
        errors: wire.errors,
    };
    Ok((header, snapshot))
}

/// Encodes one tick in the 2011 dialect (`/ws?format=2011`): one object mapping each key
/// (parts joined with `,`, as node-libdtrace's key array becomes a JS object key) to its
/// `[[lo, hi], count]` pairs, or to its number for scalar kinds. Open ends are the lowest and
/// highest 64-bit values, as DTrace prints `lquantize`'s. As in the seed's `aggdata`, the keys
/// of every aggregation share the object, a later aggregation's value winning a shared key.
pub fn encode_2011(snapshot: &Snapshot) -> String {
    use crate::aggregation::Value;
    let mut object = serde_json::Map::new();
    for aggregation in &snapshot.aggregations {
        for series in &aggregation.series {
            let key = series
                .key
                .iter()
                .map(|part| match part {
                    crate::aggregation::KeyPart::Int(n) => n.to_string(),
                    crate::aggregation::KeyPart::Str(s) => s.clone(),
                })
                .collect::<Vec<_>>()
                .join(",");
            let value = match &series.value {
                Value::Buckets(buckets) => Json::Array(
                    buckets
                        .iter()
                        .map(|b| {
                            serde_json::json!([
                                [b.lo.unwrap_or(i64::MIN), b.hi.unwrap_or(i64::MAX)],
                                b.count
                            ])
                        })
                        .collect(),
                ),
                Value::Scalar(v) => Json::from(*v),
                Value::Stats { average, .. } => Json::from(*average),
                Value::Deviation { stddev, .. } => Json::from(*stddev),
            };
            object.insert(key, value);
        }
    }
    Json::Object(object).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregation::{AggKind, Aggregation, Bucket, KeyPart, Series, Value};

    #[test]
    fn decode_frame_is_the_inverse_of_encode_frame() {
        let aggregation = |name: &str, kind, series| Aggregation {
            name: name.into(),
            kind,
            series,
            folded: 0,
        };
        let snapshot = Snapshot {
            aggregations: vec![
                Aggregation {
                    folded: 7,
                    ..aggregation(
                        "@lat",
                        AggKind::Hist,
                        vec![
                            Series::histogram(
                                vec![KeyPart::Str("read".into()), KeyPart::Int(-3)],
                                vec![
                                    Bucket {
                                        lo: None,
                                        hi: Some(-1),
                                        count: 2,
                                    },
                                    Bucket {
                                        lo: Some(4),
                                        hi: Some(7),
                                        count: 9,
                                    },
                                    Bucket {
                                        lo: Some(1 << 40),
                                        hi: None,
                                        count: u64::MAX,
                                    },
                                ],
                            ),
                            Series::histogram(vec![KeyPart::Str("other".into())], vec![]),
                        ],
                    )
                },
                aggregation(
                    "@n",
                    AggKind::Count,
                    vec![Series {
                        key: vec![],
                        value: Value::Scalar(i64::MIN),
                        sum: None,
                    }],
                ),
                aggregation(
                    "@s",
                    AggKind::Stats,
                    vec![Series {
                        key: vec![KeyPart::Int(1)],
                        value: Value::Stats {
                            count: 3,
                            total: -9,
                            average: -3,
                        },
                        sum: None,
                    }],
                ),
                aggregation(
                    "@d",
                    AggKind::Stddev,
                    vec![Series {
                        key: vec![KeyPart::Int(2)],
                        value: Value::Deviation {
                            count: 4,
                            total: 8,
                            average: 2,
                            stddev: u64::MAX,
                        },
                        sum: None,
                    }],
                ),
                aggregation("@empty", AggKind::Lquantize, vec![]),
            ],
            output: vec!["printed \"text\"\n".into()],
            drops: vec!["1 drop".into()],
            errors: vec!["an error".into()],
        };
        for header in [
            FrameHeader {
                seq: 7,
                ts_ms: 1_700_000_000_123,
                interval_ms: 200,
                dropped: 0,
                last: false,
                cost: None,
            },
            FrameHeader {
                seq: 8,
                ts_ms: 1,
                interval_ms: 0,
                dropped: 3,
                last: true,
                cost: Some(crate::consumer::cost::Cost {
                    events_per_s: 1_200_000.0,
                    ns_per_event: 190.5,
                    cpu_share: 0.2286,
                    sampled: Some(0.15),
                }),
            },
        ] {
            let text = encode_frame(&header, &snapshot);
            let decoded = decode_frame(serde_json::from_str(&text).unwrap()).unwrap();
            assert_eq!(decoded, (header, snapshot.clone()), "{text}");
            assert_eq!(encode_frame(&decoded.0, &decoded.1), text);
        }
        let empty = Snapshot::default();
        let header = FrameHeader {
            seq: 1,
            ts_ms: 2,
            interval_ms: 3,
            dropped: 0,
            last: false,
            cost: None,
        };
        let text = encode_frame(&header, &empty);
        assert_eq!(
            decode_frame(serde_json::from_str(&text).unwrap()).unwrap(),
            (header, empty)
        );
    }

    #[test]
    fn decode_frame_refuses_what_is_not_a_frame() {
        let frame = |text: &str| decode_frame(serde_json::from_str(text).unwrap());
        let ok = r#"{"type":"frame","seq":1,"ts_ms":2,"interval_ms":3,"aggregations":[]}"#;
        assert!(frame(ok).is_ok());
        for (text, says) in [
            (
                r#"{"type":"started","seq":1,"ts_ms":2,"interval_ms":3,"aggregations":[]}"#,
                "not a frame",
            ),
            (
                r#"{"type":"frame","seq":1,"ts_ms":2,"interval_ms":3,"aggregations":[],"x":1}"#,
                "unknown field",
            ),
            (
                r#"{"type":"frame","seq":1,"ts_ms":2,"aggregations":[]}"#,
                "interval_ms",
            ),
            (
                r#"{"type":"frame","seq":1,"ts_ms":2,"interval_ms":3,"aggregations":[{"name":"@a","kind":"hist","series":[{"key":[],"value":1,"buckets":[]}]}]}"#,
                "give `buckets`",
            ),
            (
                r#"{"type":"frame","seq":1,"ts_ms":2,"interval_ms":3,"aggregations":[{"name":"@a","kind":"hist","series":[{"key":[],"buckets":[[1,2,-1]]}]}]}"#,
                "invalid value",
            ),
            (
                r#"{"type":"frame","seq":-1,"ts_ms":2,"interval_ms":3,"aggregations":[]}"#,
                "invalid value",
            ),
        ] {
            let err = frame(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn start_requests_parse() {
        assert_eq!(
            parse_client_message(r#"{"type":"start","preset":"syscall-latency","tick_ms":500}"#)
                .unwrap(),
            ClientMessage::Start(StartRequest {
                preset: Some("syscall-latency".into()),
                tick_ms: Some(500),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"start","preset":"p","pid":42,"comm":"cat"}"#).unwrap(),
            ClientMessage::Start(StartRequest {
                preset: Some("p".into()),
                pid: Some(42),
                comm: Some("cat".into()),
                ..Default::default()
            })
        );
        for include in [true, false] {
            let text = format!(r#"{{"type":"start","preset":"p","include_self":{include}}}"#);
            assert_eq!(
                parse_client_message(&text).unwrap(),
                ClientMessage::Start(StartRequest {
                    preset: Some("p".into()),
                    include_self: Some(include),
                    ..Default::default()
                })
            );
        }
        assert!(matches!(
            parse_client_message(r#"{"type":"start","lang":"bpftrace","script":"BEGIN{}"}"#),
            Ok(ClientMessage::Start(_))
        ));
        assert_eq!(
            parse_client_message(r#"{"type":"start","preset":"p","max_cpu_percent":25}"#).unwrap(),
            ClientMessage::Start(StartRequest {
                preset: Some("p".into()),
                max_cpu_percent: Some(25),
                ..Default::default()
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"stop"}"#).unwrap(),
            ClientMessage::Stop
        );
        // The seed's own message is a start of a D script.
        assert_eq!(
            parse_client_message(r#"{"dscript":"syscall:::entry {}"}"#).unwrap(),
            ClientMessage::Start(StartRequest {
                lang: Some("d".into()),
                script: Some("syscall:::entry {}".into()),
                ..Default::default()
            })
        );
    }

    #[test]
    fn bad_messages_say_what_is_wrong() {
        let cases = [
            ("{nope", "malformed JSON"),
            ("[1]", "JSON object"),
            (r#"{"type":"dance"}"#, "unknown message type"),
            (r#"{"preset":"x"}"#, "missing `type`"),
            (r#"{"type":"start"}"#, "needs `preset`, `script` or `watch`"),
            (
                r#"{"type":"start","preset":"a","script":"b","lang":"bpftrace"}"#,
                "not both",
            ),
            (r#"{"type":"start","script":"b"}"#, "needs `lang`"),
            (r#"{"type":"start","preset":"a","pid":-1}"#, "`pid`"),
            (r#"{"type":"start","preset":"a","pid":0}"#, "`pid`"),
            (r#"{"type":"start","preset":"a","comm":"a\"b"}"#, "`comm`"),
            (
                r#"{"type":"start","preset":"a","comm":"sixteen-bytes-xx"}"#,
                "`comm`",
            ),
            (r#"{"type":"start","preset":"a","colour":"red"}"#, "colour"),
            (
                r#"{"type":"start","preset":"a","include_self":1}"#,
                "`include_self` must be true or false",
            ),
            (
                r#"{"type":"start","preset":"a","include_self":"yes"}"#,
                "`include_self`",
            ),
            (
                r#"{"type":"start","preset":"a","tick_ms":"fast"}"#,
                "tick_ms",
            ),
            (
                r#"{"type":"start","preset":"a","max_cpu_percent":0}"#,
                "`max_cpu_percent`",
            ),
            (
                r#"{"type":"start","preset":"a","max_cpu_percent":2.5}"#,
                "`max_cpu_percent`",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_client_message(text).unwrap_err();
            assert_eq!(err.code(), "bad_request", "{text}");
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
        let seed = parse_client_message(r#"{"dscript":"syscall:::entry {}","tick_ms":500}"#);
        assert_eq!(
            seed.unwrap(),
            ClientMessage::Start(StartRequest {
                lang: Some("d".into()),
                script: Some("syscall:::entry {}".into()),
                tick_ms: Some(500),
                ..Default::default()
            })
        );
        for bad in [r#"{"dscript":3}"#, r#"{"dscript":"x","lang":"bpftrace"}"#] {
            assert_eq!(parse_client_message(bad).unwrap_err().code(), "bad_request");
        }
    }

    #[test]
    fn frames_have_the_documented_shape() {
        let snapshot = Snapshot {
            aggregations: vec![
                Aggregation {
                    name: "@lat".into(),
                    kind: AggKind::Lhist,
                    folded: 0,
                    series: vec![Series::histogram(
                        vec![KeyPart::Str("read".into())],
                        vec![Bucket {
                            lo: Some(0),
                            hi: Some(1),
                            count: 3,
                        }],
                    )],
                },
                Aggregation {
                    folded: 0,
                    name: "@n".into(),
                    kind: AggKind::Count,
                    series: vec![Series {
                        key: vec![],
                        value: Value::Scalar(136),
                        sum: None,
                    }],
                },
            ],
            output: vec![],
            ..Default::default()
        };
        let frame: Json = serde_json::from_str(&encode_frame(
            &FrameHeader {
                seq: 7,
                ts_ms: 1000,
                interval_ms: 999,
                dropped: 0,
                last: false,
                cost: None,
            },
            &snapshot,
        ))
        .unwrap();
        assert_eq!(
            frame,
            serde_json::json!({"type":"frame","seq":7,"ts_ms":1000,"interval_ms":999,"aggregations":[
                {"name":"@lat","kind":"lhist","series":[{"key":["read"],"buckets":[[0,1,3]]}]},
                {"name":"@n","kind":"count","series":[{"key":[],"value":136}]}]})
        );
    }

    #[test]
    fn the_2011_dialect_takes_bare_d_and_dscript_and_nothing_else() {
        let start = |m| match m {
            Ok(ClientMessage::Start(r)) => r,
            other => panic!("not a start: {other:?}"),
        };
        let bare = start(parse_2011_message(
            "syscall:::entry { @[probefunc] = count(); }",
        ));
        assert_eq!(bare.lang.as_deref(), Some("d"));
        assert_eq!(
            bare.script.as_deref(),
            Some("syscall:::entry { @[probefunc] = count(); }")
        );
        let seed = start(parse_2011_message(r#"{"dscript": "BEGIN {}"}"#));
        assert_eq!(seed.script.as_deref(), Some("BEGIN {}"));
        assert!(matches!(
            parse_2011_message(r#"{"type": "start", "preset": "x"}"#),
            Err(ProtocolError::BadRequest(_))
        ));
        assert!(parse_2011_message("42").is_err());
    }

    #[test]
    fn the_2011_object_keys_joined_with_commas_and_open_ends_as_dtrace_prints_them() {
        use crate::aggregation::{AggKind, Aggregation, Bucket, KeyPart, Series, Value};
        let snapshot = Snapshot {
            aggregations: vec![
                Aggregation {
                    name: "@time".into(),
                    kind: AggKind::Lquantize,
                    series: vec![Series::histogram(
                        vec![KeyPart::Str("read".into()), KeyPart::Int(3)],
                        vec![
                            Bucket {
                                lo: None,
                                hi: Some(-1),
                                count: 1,
                            },
                            Bucket {
                                lo: Some(0),
                                hi: Some(1),
                                count: 5,
                            },
                            Bucket {
                                lo: Some(62),
                                hi: None,
                                count: 2,
                            },
                        ],
                    )],
                    folded: 0,
                },
                Aggregation {
                    name: "@n".into(),
                    kind: AggKind::Count,
                    series: vec![Series {
                        key: vec![],
                        value: Value::Scalar(7),
                        sum: None,
                    }],
                    folded: 0,
                },
            ],
            ..Default::default()
        };
        let object: Json = serde_json::from_str(&encode_2011(&snapshot)).unwrap();
        assert_eq!(
            object,
            serde_json::json!({
                "read,3": [[[i64::MIN, -1], 1], [[0, 1], 5], [[62, i64::MAX], 2]],
                "": 7
            })
        );
    }
}
