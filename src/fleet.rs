//! The fleet view's proxy: who asks Prometheus for the fleet and turns answers into frames.
//! `GET /api/fleet/watches` lists the watches hosts export (from `heat_watch_export_info`);
//! `GET /api/fleet/watches/{name}/frames?from=&to=&columns=&key=` reads one of them over a
//! range with fixed, parameterised queries and answers in the shape of
//! `/api/watches/{name}/frames`, with the host (`instance`) as the key. Viewers never send
//! PromQL: the watch must be one the info gauge lists, the range and step are numbers checked
//! here, and a key filter is a PromQL string literal, escaped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value as Json};

use crate::aggregation::{AggKind, Aggregation, Bucket, KeyPart, Series, Snapshot};
use crate::api::{api_error, authorize, bad_request, range_query, Refused};
use crate::config::{parse_header_line, FleetConfig};
use crate::session::protocol::{encode_frame, FrameHeader};
use crate::session::Shared;
use crate::telemetry::{Event, FleetOutcome};

/// The info gauge every exporting host sets to 1 per exported watch.
const INFO_METRIC: &str = "heat_watch_export_info";
/// Largest answer read from Prometheus (11,000 points × many hosts × tens of buckets).
const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
/// Longest key filter value a request may give.
const MAX_KEY_BYTES: usize = 1024;
/// Prometheus takes whole milliseconds at most; columns are cut in whole seconds.
const STEP_UNIT_MS: u64 = 1000;

/// Why the fleet could not be set up or asked.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// `fleet.auth_header_file` could not be read.
    #[error("cannot read fleet.auth_header_file {path}: {source}")]
    AuthFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    /// The configured header is not one line `Name: value` (the value is never shown).
    #[error("fleet auth header: {0}")]
    AuthHeader(String),
    /// No connection to Prometheus.
    #[error("Prometheus cannot be reached: {0}")]
    Unreachable(String),
    /// No answer in time.
    #[error("Prometheus did not answer within {0} ms (fleet.query_timeout_ms)")]
    Timeout(u64),
    /// Prometheus answered with an error.
    #[error("Prometheus answered {status}: {message}")]
    Answered { status: u16, message: String },
    /// An answer that is not what Prometheus's API documents.
    #[error("Prometheus's answer cannot be read: {0}")]
    BadAnswer(String),
}

impl FleetError {
    fn outcome(&self) -> FleetOutcome {
        match self {
            FleetError::Unreachable(_)
            | FleetError::AuthFile { .. }
            | FleetError::AuthHeader(_) => FleetOutcome::Unreachable,
            FleetError::Timeout(_) => FleetOutcome::Timeout,
            FleetError::Answered { .. } => FleetOutcome::Error,
            FleetError::BadAnswer(_) => FleetOutcome::BadAnswer,
        }
    }

    /// The API answer: 504 for a timeout, 502 for anything else Prometheus did.
    fn response(&self) -> HttpResponse {
        let (status, code) = match self {
            FleetError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "prometheus_timeout"),
            FleetError::Unreachable(_) => (StatusCode::BAD_GATEWAY, "prometheus_unreachable"),
            FleetError::Answered { .. } => (StatusCode::BAD_GATEWAY, "prometheus_error"),
            _ => (StatusCode::BAD_GATEWAY, "prometheus_bad_answer"),
        };
        api_error(status, code, &self.to_string())
    }
}

/// The fleet's Prometheus, as configured; `None` inside when there is no fleet.
pub struct Fleet {
    prometheus: Option<Prometheus>,
}

struct Prometheus {
    /// `prometheus_url` without a trailing `/`.
    base: String,
    /// The auth header (name, value); never logged.
    auth: Option<(String, String)>,
    timeout: Duration,
    min_step_ms: u64,
    max_range_ms: u64,
    max_points: u64,
}

impl Fleet {
    /// From `[fleet]`, reading `auth_header_file` (a blocking read, at start-up only).
    pub fn from_config(config: &FleetConfig) -> Result<Fleet, FleetError> {
        let Some(url) = &config.prometheus_url else {
            return Ok(Fleet { prometheus: None });
        };
        let line = match (&config.auth_header, &config.auth_header_file) {
            (Some(secret), _) => Some(secret.0.clone()),
            (None, Some(path)) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| FleetError::AuthFile {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            (None, None) => None,
        };
        let auth = line
            .map(|l| parse_header_line(l.trim()).map_err(FleetError::AuthHeader))
            .transpose()?;
        Ok(Fleet {
            prometheus: Some(Prometheus {
                base: url.trim_end_matches('/').to_owned(),
                auth,
                timeout: Duration::from_millis(config.query_timeout_ms),
                min_step_ms: config.min_step_ms,
                max_range_ms: config.max_range_s.saturating_mul(1000),
                max_points: config.max_points,
            }),
        })
    }

    /// Whether the page gets a Fleet source.
    pub fn configured(&self) -> bool {
        self.prometheus.is_some()
    }
}

/// One watch some hosts export, as the info gauge describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedWatch {
    pub watch: String,
    /// The histogram family, e.g. `heat_syscalls_nanoseconds`.
    pub family: String,
    pub unit: String,
    /// Our aggregation kind (`hist`, `lhist`, …).
    pub kind: AggKind,
    /// The label holding the watch's key (`syscall`, `comm`, …); empty for an unkeyed watch.
    pub key_label: String,
    /// The hosts exporting it, sorted.
    pub instances: Vec<String>,
}

impl ExportedWatch {
    fn json(&self) -> Json {
        json!({
            "name": self.watch,
            "family": self.family,
            "unit": self.unit,
            "kind": self.kind,
            "key_label": self.key_label,
            "instances": self.instances,
        })
    }

    /// Native histograms for log2 kinds, classic `le` buckets for linear ones (what the
    /// exporter writes).
    fn native(&self) -> bool {
        is_log2(self.kind)
    }
}

fn is_log2(kind: AggKind) -> bool {
    matches!(kind, AggKind::Hist | AggKind::Quantize)
}

/// A metric or label name as Prometheus allows it: anything else from the info gauge is not
/// put into a query.
fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(first)
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// The info gauge's instant vector → the watches, grouped by name. A series whose names could
/// not go into a query safely, or whose kind is not a histogram, is skipped.
pub fn parse_info(answer: &Json) -> Result<Vec<ExportedWatch>, FleetError> {
    let result = data_result(answer, "vector")?;
    let mut by: BTreeMap<String, ExportedWatch> = BTreeMap::new();
    for series in result {
        let metric = &series["metric"];
        let label = |name: &str| metric[name].as_str().unwrap_or("").to_owned();
        let (watch, family, key_label) = (label("watch"), label("family"), label("key_label"));
        let kind: Option<AggKind> = serde_json::from_value(metric["kind"].clone()).ok();
        let Some(kind) = kind.filter(|k| k.is_histogram()) else {
            continue;
        };
        if watch.is_empty()
            || !is_name(&family, true)
            || !(key_label.is_empty() || is_name(&key_label, false))
        {
            continue;
        }
        let entry = by.entry(watch.clone()).or_insert_with(|| ExportedWatch {
            watch,
            family,
            unit: label("unit"),
            kind,
            key_label,
            instances: Vec::new(),
        });
        let instance = label("instance");
        if !entry.instances.contains(&instance) {
            entry.instances.push(instance);
        }
    }
    let mut out: Vec<ExportedWatch> = by.into_values().collect();
    for w in &mut out {
        w.instances.sort();
    }
    Ok(out)
}

/// `data.result` of a successful answer of `result_type`.
fn data_result<'a>(answer: &'a Json, result_type: &str) -> Result<&'a Vec<Json>, FleetError> {
    if answer["status"] != "success" {
        return Err(FleetError::BadAnswer("no `status: success`".into()));
    }
    if answer["data"]["resultType"] != result_type {
        return Err(FleetError::BadAnswer(format!(
            "resultType {} where {result_type} was asked for",
            answer["data"]["resultType"]
        )));
    }
    answer["data"]["result"]
        .as_array()
        .ok_or_else(|| FleetError::BadAnswer("no `data.result` array".into()))
}

/// `s` as a PromQL double-quoted string literal: nothing in it can end the string.
pub fn promql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The one query a fleet range sends: each host's increase per column, summed over keys.
pub fn range_promql(w: &ExportedWatch, step_s: u64, key: Option<&str>) -> String {
    let selector = match key {
        Some(k) if !w.key_label.is_empty() => format!("{{{}={}}}", w.key_label, promql_string(k)),
        _ => String::new(),
    };
    if w.native() {
        format!(
            "sum by (instance) (increase({}{selector}[{step_s}s]))",
            w.family
        )
    } else {
        format!(
            "sum by (instance, le) (increase({}_bucket{selector}[{step_s}s]))",
            w.family
        )
    }
}

/// How a range is cut: `count` columns of `width` ms from `origin`; column `k` is
/// `[origin + k·width, origin + (k+1)·width)` and Prometheus evaluates it at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub origin: u64,
    pub width: u64,
    pub count: u64,
}

impl Grid {
    /// `columns` (default: as many as `min_step_ms` allows) over `[from, to)`, each a whole
    /// number of seconds and at least `min_step_ms`, at most `max_points` of them.
    pub fn new(
        from: u64,
        to: u64,
        columns: Option<u64>,
        min_step_ms: u64,
        max_points: u64,
    ) -> Grid {
        let span = to - from;
        let columns = columns.unwrap_or(max_points).clamp(1, max_points);
        let whole = |ms: u64| ms.div_ceil(STEP_UNIT_MS).max(1) * STEP_UNIT_MS;
        let mut width = whole(span.div_ceil(columns).max(min_step_ms));
        if span.div_ceil(width) > max_points {
            width = whole(span.div_ceil(max_points));
        }
        Grid {
            origin: from,
            width,
            count: span.div_ceil(width),
        }
    }

    /// The column Prometheus's evaluation at `ts_ms` fills, if it is one of ours.
    fn column_of(&self, ts_ms: i64) -> Option<u64> {
        let end = ts_ms.checked_sub(self.origin as i64)?;
        if end <= 0 || end % self.width as i64 != 0 {
            return None;
        }
        let k = (end / self.width as i64 - 1) as u64;
        (k < self.count).then_some(k)
    }
}

/// A count from Prometheus (a float: `increase` extrapolates) as our whole count.
fn whole_count(text: &Json) -> Result<u64, FleetError> {
    let v: f64 = number(text)?;
    // Negative only through float noise; a count is never below 0.
    Ok(v.max(0.0).round() as u64)
}

fn number(text: &Json) -> Result<f64, FleetError> {
    let s = text
        .as_str()
        .ok_or_else(|| FleetError::BadAnswer(format!("{text} is not a number string")))?;
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s
            .parse()
            .map_err(|_| FleetError::BadAnswer(format!("{s:?} is not a number"))),
    }
}

fn timestamp_ms(ts: &Json) -> Result<i64, FleetError> {
    ts.as_f64()
        .map(|t| (t * 1000.0).round() as i64)
        .ok_or_else(|| FleetError::BadAnswer(format!("{ts} is not a timestamp")))
}

/// A bound as our integer bound (values are whole numbers of the unit).
fn int_bound(v: f64) -> i64 {
    v.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64
}

/// bpftrace 0.17's `hist` counts every value from 2^31 in one open bucket `[2^31, null]`.
const HIST_OPEN_TOP: i64 = 1 << 31;

/// One native histogram's buckets (`[boundary_rule, lo, hi, count]`) as ours, for a log2
/// `kind`. The exporter puts our bucket `[2^k, 2^(k+1) - 1]` whole into the schema-0 bucket
/// `(2^k, 2^(k+1)]` (`[1, 1]` into `(0.5, 1]`), `[0, 0]` into the zero bucket, a negative
/// bucket into its mirror (`[-2^(k+1), -2^k)`; bpftrace's one `[null, -1]` into `[-1, -0.5)`)
/// and an open top `[2^k, null]` into `(2^k, 2^(k+1)]`. This reads each back: `(lo, hi]` is
/// `[lo + 1, hi]` when `lo` is below 1 and `[lo, hi - 1]` otherwise; for `hist`, a bucket from
/// 2^31 up is the open top again; `[lo, hi)` below zero is `[lo + 1, hi]` (`[-1, -1]`
/// for `[-1, -0.5)`), or for `hist` bpftrace's `[null, -1]`; the zero bucket is `[0, 0]`.
pub fn native_buckets(histogram: &Json, kind: AggKind) -> Result<Vec<Bucket>, FleetError> {
    let Some(list) = histogram.get("buckets") else {
        return Ok(Vec::new()); // an empty histogram has no `buckets`
    };
    let list = list
        .as_array()
        .ok_or_else(|| FleetError::BadAnswer("`buckets` is not an array".into()))?;
    let hist = kind == AggKind::Hist;
    let mut out: BTreeMap<(Option<i64>, Option<i64>), u64> = BTreeMap::new();
    for b in list {
        let bad = || FleetError::BadAnswer(format!("bucket {b} is not [rule, lo, hi, count]"));
        let parts = b.as_array().filter(|p| p.len() == 4).ok_or_else(bad)?;
        let (lo, hi, count) = (
            number(&parts[1])?,
            number(&parts[2])?,
            whole_count(&parts[3])?,
        );
        if count == 0 {
            continue;
        }
        let ours = if lo < 0.0 && hi <= 0.0 {
            if hist {
                (None, Some(-1))
            } else {
                (
                    Some((int_bound(lo) + 1).min(-1)),
                    Some(int_bound(hi.min(-1.0))),
                )
            }
        } else if lo <= 0.0 && (0.0..1.0).contains(&hi) {
            (Some(0), Some(0)) // the zero bucket
        } else if hist && lo >= HIST_OPEN_TOP as f64 {
            (Some(HIST_OPEN_TOP), None)
        } else if hi.is_infinite() {
            (Some(int_bound(lo).max(1)), None)
        } else if lo < 1.0 {
            (Some(int_bound(lo.floor()) + 1), Some(int_bound(hi)))
        } else {
            (Some(int_bound(lo)), Some(int_bound(hi) - 1))
        };
        *out.entry(ours).or_default() += count;
    }
    Ok(out
        .into_iter()
        .map(|((lo, hi), count)| Bucket { lo, hi, count })
        .collect())
}

/// One host's classic cumulative `le` counts at one time as our buckets: `le` is each
/// bucket's inclusive upper bound, so a bucket is `[previous le + 1, le]`, the lowest one is
/// open below and `+Inf` is open above.
pub fn classic_buckets(cumulative: &mut [(f64, f64)]) -> Vec<Bucket> {
    cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = Vec::new();
    let (mut prev_le, mut prev_count) = (None::<f64>, 0.0);
    for &(le, count) in cumulative.iter() {
        let n = (count - prev_count).max(0.0).round() as u64;
        if n > 0 {
            out.push(Bucket {
                lo: prev_le.map(|p| int_bound(p) + 1),
                hi: le.is_finite().then(|| int_bound(le)),
                count: n,
            });
        }
        prev_le = Some(le);
        prev_count = count.max(prev_count);
    }
    out
}

/// A `query_range` answer → per column, per host, our buckets.
pub fn parse_range(
    answer: &Json,
    grid: &Grid,
    kind: AggKind,
) -> Result<BTreeMap<u64, BTreeMap<String, Vec<Bucket>>>, FleetError> {
    let result = data_result(answer, "matrix")?;
    let native = is_log2(kind);
    let mut columns: BTreeMap<u64, BTreeMap<String, Vec<Bucket>>> = BTreeMap::new();
    // Classic: (column, instance) → [(le, cumulative count)].
    let mut classic: HashMap<(u64, String), Vec<(f64, f64)>> = HashMap::new();
    for series in result {
        let instance = series["metric"]["instance"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if native {
            let Some(points) = series.get("histograms").and_then(Json::as_array) else {
                continue; // float samples under a native family: an exporter without them
            };
            for point in points {
                let k = point
                    .get(0)
                    .map(timestamp_ms)
                    .transpose()?
                    .and_then(|ts| grid.column_of(ts));
                let Some(k) = k else { continue };
                let buckets = native_buckets(&point[1], kind)?;
                if !buckets.is_empty() {
                    columns
                        .entry(k)
                        .or_default()
                        .insert(instance.clone(), buckets);
                }
            }
        } else {
            let le = number(&series["metric"]["le"])?;
            let points = series["values"].as_array().cloned().unwrap_or_default();
            for point in &points {
                let k = point
                    .get(0)
                    .map(timestamp_ms)
                    .transpose()?
                    .and_then(|ts| grid.column_of(ts));
                let Some(k) = k else { continue };
                classic
                    .entry((k, instance.clone()))
                    .or_default()
                    .push((le, number(&point[1])?));
            }
        }
    }
    for ((k, instance), mut cumulative) in classic {
        let buckets = classic_buckets(&mut cumulative);
        if !buckets.is_empty() {
            columns.entry(k).or_default().insert(instance, buckets);
        }
    }
    Ok(columns)
}

/// The answer to a fleet range, in the shape of `/api/watches/{name}/frames`.
pub fn frames_json(
    w: &ExportedWatch,
    from: u64,
    to: u64,
    grid: &Grid,
    columns: &BTreeMap<u64, BTreeMap<String, Vec<Bucket>>>,
    query: &str,
) -> Json {
    let frames: Vec<Json> = columns
        .iter()
        .map(|(&k, hosts)| {
            let series = hosts
                .iter()
                .map(|(instance, b)| {
                    Series::histogram(vec![KeyPart::Str(instance.clone())], b.clone())
                })
                .collect();
            let snapshot = Snapshot {
                aggregations: vec![Aggregation {
                    name: w.family.clone(),
                    kind: w.kind,
                    series,
                    folded: 0,
                }],
                ..Snapshot::default()
            };
            let header = FrameHeader {
                seq: k + 1,
                // The column's last millisecond: inside its slice, like a stored tick's.
                ts_ms: grid.origin + (k + 1) * grid.width - 1,
                interval_ms: grid.width,
                dropped: 0,
                last: false,
                cost: None,
            };
            let mut frame: Json =
                serde_json::from_str(&encode_frame(&header, &snapshot)).expect("frames are JSON");
            frame["run"] = json!(0);
            frame["slice"] = json!(k);
            frame
        })
        .collect();
    json!({
        "watch": w.watch,
        "from": from,
        "to": to,
        "columns": grid.count,
        "slices": {"origin": grid.origin, "width": grid.width, "count": grid.count},
        "runs": [{"run": 0, "aggregations": [{"name": w.family, "kind": w.kind, "unit": w.unit}]}],
        "marks": [],
        "frames": frames,
        "fleet": {"key": "instance", "instances": w.instances, "query": query},
    })
}

impl Prometheus {
    /// One GET of Prometheus's API, counted; the parsed JSON of a successful answer.
    async fn get(
        &self,
        what: &'static str,
        path: &str,
        params: &[(&str, String)],
    ) -> Result<Json, FleetError> {
        let started = Instant::now();
        let result = self.send(path, params).await;
        let detail = match &result {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        Event::FleetQueried {
            what,
            outcome: result
                .as_ref()
                .map_or_else(|e| e.outcome(), |_| FleetOutcome::Ok),
            elapsed: started.elapsed(),
            detail: &detail,
        }
        .emit();
        result
    }

    async fn send(&self, path: &str, params: &[(&str, String)]) -> Result<Json, FleetError> {
        let timeout_ms = self.timeout.as_millis() as u64;
        let client = awc::Client::builder()
            .connector(awc::Connector::new().timeout(self.timeout))
            .timeout(self.timeout)
            .finish();
        let mut request = client
            .get(format!("{}{path}", self.base))
            .query(&params)
            .map_err(|e| FleetError::BadAnswer(format!("cannot encode the query: {e}")))?;
        if let Some((name, value)) = &self.auth {
            request = request.insert_header((name.as_str(), value.as_str()));
        }
        let mut response = request.send().await.map_err(|e| match e {
            awc::error::SendRequestError::Timeout => FleetError::Timeout(timeout_ms),
            awc::error::SendRequestError::Connect(awc::error::ConnectError::Timeout) => {
                FleetError::Timeout(timeout_ms)
            }
            other => FleetError::Unreachable(other.to_string()),
        })?;
        let status = response.status();
        let body = response
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|e| FleetError::BadAnswer(format!("reading the body: {e}")))?;
        let parsed: Result<Json, _> = serde_json::from_slice(&body);
        match parsed {
            Ok(answer) if answer["status"] == "success" => Ok(answer),
            Ok(answer) => Err(FleetError::Answered {
                status: status.as_u16(),
                message: answer["error"].as_str().unwrap_or("no message").to_owned(),
            }),
            Err(_) if !status.is_success() => Err(FleetError::Answered {
                status: status.as_u16(),
                message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            }),
            Err(e) => Err(FleetError::BadAnswer(e.to_string())),
        }
    }

    async fn watches(&self) -> Result<Vec<ExportedWatch>, FleetError> {
        let params = [
            ("query", INFO_METRIC.to_owned()),
            ("timeout", format!("{}ms", self.timeout.as_millis())),
        ];
        parse_info(&self.get("watches", "/api/v1/query", &params).await?)
    }
}

/// The fleet for an authorized request: the refusal of `authorize`, or the 404 that says no
/// fleet is configured (counted as a refusal).
fn prometheus<'a>(
    req: &HttpRequest,
    shared: &Shared,
    fleet: &'a Fleet,
    endpoint: &str,
) -> Result<&'a Prometheus, Refused> {
    authorize(req, &shared.config, endpoint)?;
    fleet.prometheus.as_ref().ok_or_else(|| {
        Event::RequestRefused {
            session: endpoint,
            reason: crate::telemetry::Refusal::BadRequest,
            detail: "no fleet configured",
        }
        .emit();
        Box::new(api_error(
            StatusCode::NOT_FOUND,
            "no_fleet",
            "this server has no fleet: set [fleet] prometheus_url",
        ))
    })
}

/// `GET /api/fleet/watches`.
pub async fn watches(
    req: HttpRequest,
    shared: web::Data<Shared>,
    fleet: web::Data<Fleet>,
) -> HttpResponse {
    const ENDPOINT: &str = "/api/fleet/watches";
    let prometheus = match prometheus(&req, &shared, &fleet, ENDPOINT) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    match prometheus.watches().await {
        Ok(list) => HttpResponse::Ok().json(json!({
            "watches": list.iter().map(ExportedWatch::json).collect::<Vec<_>>(),
        })),
        Err(e) => e.response(),
    }
}

/// `GET /api/fleet/watches/{name}/frames?from=&to=&columns=&key=`.
pub async fn watch_frames(
    req: HttpRequest,
    name: web::Path<String>,
    shared: web::Data<Shared>,
    fleet: web::Data<Fleet>,
) -> HttpResponse {
    const ENDPOINT: &str = "/api/fleet/watches/{name}/frames";
    let prometheus = match prometheus(&req, &shared, &fleet, ENDPOINT) {
        Ok(p) => p,
        Err(refused) => return *refused,
    };
    let (from, to, columns) = match range_query(&req, ENDPOINT, true) {
        Ok(range) => range,
        Err(refused) => return *refused,
    };
    if to - from > prometheus.max_range_ms {
        let message = format!(
            "the range is longer than fleet.max_range_s ({} s)",
            prometheus.max_range_ms / 1000
        );
        return *bad_request(ENDPOINT, &message);
    }
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map(|q| q.into_inner())
        .unwrap_or_default();
    let key = query.get("key").map(String::as_str);
    if key.is_some_and(|k| k.len() > MAX_KEY_BYTES) {
        let message = format!("`key` is longer than {MAX_KEY_BYTES} bytes");
        return *bad_request(ENDPOINT, &message);
    }
    let list = match prometheus.watches().await {
        Ok(list) => list,
        Err(e) => return e.response(),
    };
    let Some(watch) = list.into_iter().find(|w| w.watch == *name) else {
        return api_error(
            StatusCode::NOT_FOUND,
            "unknown_watch",
            &format!(
                "no host exports a watch {:?} to the fleet's Prometheus",
                name.as_str()
            ),
        );
    };
    if key.is_some() && watch.key_label.is_empty() {
        return *bad_request(ENDPOINT, "this watch has no key to filter on");
    }
    let grid = Grid::new(
        from,
        to,
        columns.map(|c| c as u64),
        prometheus.min_step_ms,
        prometheus.max_points,
    );
    let promql = range_promql(&watch, grid.width / STEP_UNIT_MS, key);
    let seconds = |ms: u64| format!("{}.{:03}", ms / 1000, ms % 1000);
    let params = [
        ("query", promql.clone()),
        ("start", seconds(grid.origin + grid.width)),
        ("end", seconds(grid.origin + grid.count * grid.width)),
        ("step", format!("{}s", grid.width / STEP_UNIT_MS)),
        ("timeout", format!("{}ms", prometheus.timeout.as_millis())),
    ];
    let answer = match prometheus
        .get("frames", "/api/v1/query_range", &params)
        .await
    {
        Ok(answer) => answer,
        Err(e) => return e.response(),
    };
    match parse_range(&answer, &grid, watch.kind) {
        Ok(columns) => {
            HttpResponse::Ok().json(frames_json(&watch, from, to, &grid, &columns, &promql))
        }
        Err(e) => {
            Event::FleetQueried {
                what: "frames",
                outcome: FleetOutcome::BadAnswer,
                elapsed: Duration::ZERO,
                detail: &e.to_string(),
            }
            .emit();
            e.response()
        }
    }
}

/// What the fleet routes answer to any method but GET.
pub async fn only_get(req: HttpRequest) -> HttpResponse {
    let message = format!("{} is not allowed here; use GET", req.method());
    let mut response = api_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &message,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(kind: AggKind) -> ExportedWatch {
        ExportedWatch {
            watch: "syscalls".into(),
            family: "heat_syscalls_nanoseconds".into(),
            unit: "ns".into(),
            kind,
            key_label: "syscall".into(),
            instances: vec!["a:1".into(), "b:2".into()],
        }
    }

    #[test]
    fn a_key_cannot_leave_its_string_literal() {
        let w = watch(AggKind::Hist);
        for (key, literal) in [
            ("read", r#""read""#),
            (r#"x"} or vector(1) #"#, r#""x\"} or vector(1) #""#),
            (r#"a\"b"#, r#""a\\\"b""#),
            ("line\nbreak", r#""line\nbreak""#),
            ("nul\u{0}", r#""nul\u0000""#),
        ] {
            let q = range_promql(&w, 15, Some(key));
            assert_eq!(
                q,
                format!("sum by (instance) (increase(heat_syscalls_nanoseconds{{syscall={literal}}}[15s]))")
            );
        }
        assert_eq!(
            range_promql(&watch(AggKind::Lhist), 60, None),
            "sum by (instance, le) (increase(heat_syscalls_nanoseconds_bucket[60s]))"
        );
    }

    #[test]
    fn unsafe_names_from_the_info_gauge_are_not_queried() {
        let answer = json!({"status": "success", "data": {"resultType": "vector", "result": [
            {"metric": {"watch": "ok", "family": "heat_ok_nanoseconds", "key_label": "syscall", "unit": "ns", "kind": "hist", "instance": "h:1"}, "value": [1, "1"]},
            {"metric": {"watch": "ok", "family": "heat_ok_nanoseconds", "key_label": "syscall", "unit": "ns", "kind": "hist", "instance": "g:1"}, "value": [1, "1"]},
            {"metric": {"watch": "evil", "family": "x{a=\"b\"}", "key_label": "syscall", "unit": "ns", "kind": "hist", "instance": "h:1"}, "value": [1, "1"]},
            {"metric": {"watch": "evil2", "family": "heat_e", "key_label": "a b", "unit": "ns", "kind": "hist", "instance": "h:1"}, "value": [1, "1"]},
            {"metric": {"watch": "scalar", "family": "heat_s", "key_label": "", "unit": "", "kind": "count", "instance": "h:1"}, "value": [1, "1"]}
        ]}});
        let list = parse_info(&answer).unwrap();
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].instances, ["g:1", "h:1"]);
        assert_eq!(list[0].kind, AggKind::Hist);
    }

    #[test]
    fn the_grid_is_whole_seconds_within_the_limits() {
        // 1 h into 120 columns: 30 s each.
        let g = Grid::new(0, 3_600_000, Some(120), 15_000, 11_000);
        assert_eq!((g.width, g.count), (30_000, 120));
        // 5 min into 600 columns would be 0.5 s: held to min_step (15 s).
        let g = Grid::new(0, 300_000, Some(600), 15_000, 11_000);
        assert_eq!((g.width, g.count), (15_000, 20));
        // An uneven span: whole seconds, the last column reaching past `to`.
        let g = Grid::new(1_000, 62_500, Some(30), 1_000, 11_000);
        assert_eq!((g.width, g.count), (3_000, 21));
        // max_points caps the columns.
        let g = Grid::new(0, 100_000_000, None, 1_000, 100);
        assert_eq!((g.width, g.count), (1_000_000, 100));
        // Prometheus evaluates column k at its end.
        let g = Grid::new(10_000, 70_000, Some(4), 1_000, 11_000);
        assert_eq!(g.column_of(25_000), Some(0));
        assert_eq!(g.column_of(70_000), Some(3));
        assert_eq!(g.column_of(10_000), None);
        assert_eq!(g.column_of(26_000), None);
        assert_eq!(g.column_of(85_000), None);
    }

    #[test]
    fn classic_le_buckets_read_back_as_linear_buckets() {
        // lhist 0..64 step 2 exported with `le` at each bucket's inclusive upper bound.
        let mut cumulative = vec![
            (1.0, 3.0),
            (-1.0, 0.0),
            (3.0, 3.0),
            (f64::INFINITY, 10.4),
            (63.0, 8.0),
        ];
        let b = classic_buckets(&mut cumulative);
        assert_eq!(
            b,
            vec![
                Bucket {
                    lo: Some(0),
                    hi: Some(1),
                    count: 3
                },
                Bucket {
                    lo: Some(4),
                    hi: Some(63),
                    count: 5
                },
                Bucket {
                    lo: Some(64),
                    hi: None,
                    count: 2
                },
            ]
        );
    }

    #[test]
    fn native_buckets_read_back_as_log2_buckets() {
        let h = json!({"count": "12.6", "sum": "100", "buckets": [
            [1, "-1", "-0.5", "1"],
            [3, "-0", "0", "2"],
            [0, "0.5", "1", "1"],
            [0, "1024", "2048", "3.4"],
            [0, "2048", "4096", "0.4"],
            [0, "2147483648", "4294967296", "2.6"],
            [0, "4294967296", "8589934592", "3"]
        ]});
        assert_eq!(
            native_buckets(&h, AggKind::Hist).unwrap(),
            vec![
                Bucket {
                    lo: None,
                    hi: Some(-1),
                    count: 1
                },
                Bucket {
                    lo: Some(0),
                    hi: Some(0),
                    count: 2
                },
                Bucket {
                    lo: Some(1),
                    hi: Some(1),
                    count: 1
                },
                Bucket {
                    lo: Some(1024),
                    hi: Some(2047),
                    count: 3
                },
                Bucket {
                    lo: Some(HIST_OPEN_TOP),
                    hi: None,
                    count: 6
                },
            ]
        );
        // DTrace's quantize: negative buckets mirror, no open top.
        let q = json!({"buckets": [
            [1, "-4", "-2", "5"],
            [1, "-1", "-0.5", "1"],
            [0, "2147483648", "4294967296", "2"]
        ]});
        assert_eq!(
            native_buckets(&q, AggKind::Quantize).unwrap(),
            vec![
                Bucket {
                    lo: Some(-3),
                    hi: Some(-2),
                    count: 5
                },
                Bucket {
                    lo: Some(-1),
                    hi: Some(-1),
                    count: 1
                },
                Bucket {
                    lo: Some(HIST_OPEN_TOP),
                    hi: Some(2 * HIST_OPEN_TOP - 1),
                    count: 2
                },
            ]
        );
        assert!(
            native_buckets(&json!({"count": "0", "sum": "0"}), AggKind::Hist)
                .unwrap()
                .is_empty()
        );
        assert!(native_buckets(&json!({"buckets": [[0, "x", "2", "1"]]}), AggKind::Hist).is_err());
    }

    /// Answers captured from Debian's Prometheus 2.42 scraping two heat-actix servers that
    /// export `sleepers` (syscall-latency-log2, native) and `linear` (syscall-latency, classic),
    /// host A sleeping 1.5 ms, host B 1.5 ms and 20 ms (tests/fixtures/fleet/).
    mod captured {
        use super::*;

        fn fixture(name: &str) -> Json {
            let path = format!("{}/tests/fixtures/fleet/{name}", env!("CARGO_MANIFEST_DIR"));
            serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON")
        }

        fn setup() -> (Grid, String, String) {
            let g = fixture("grid.json");
            let (from, to, width) = (
                g["from"].as_u64().unwrap(),
                g["to"].as_u64().unwrap(),
                g["width"].as_u64().unwrap(),
            );
            let grid = Grid::new(from, to, Some((to - from) / width), width, 11_000);
            assert_eq!(grid.width, width);
            let host = |i: usize| g["instances"][i].as_str().unwrap().to_owned();
            (grid, host(0), host(1))
        }

        #[test]
        fn the_info_gauge_lists_both_watches_of_both_hosts() {
            let (_, a, b) = setup();
            let list = parse_info(&fixture("info.json")).unwrap();
            let mut hosts = vec![a, b];
            hosts.sort();
            let names: Vec<_> = list.iter().map(|w| (w.watch.as_str(), w.kind)).collect();
            assert_eq!(
                names,
                [("linear", AggKind::Lhist), ("sleepers", AggKind::Hist)]
            );
            assert_eq!(list[1].family, "heat_sleepers_nanoseconds");
            assert_eq!(list[1].key_label, "syscall");
            assert_eq!(list[1].unit, "ns");
            assert!(list.iter().all(|w| w.instances == hosts), "{list:?}");
        }

        #[test]
        fn native_histograms_become_each_hosts_log2_buckets() {
            let (grid, a, b) = setup();
            let columns = parse_range(&fixture("native-range.json"), &grid, AggKind::Hist).unwrap();
            assert_eq!(columns.len() as u64, grid.count, "every column has data");
            // The first column, by hand from the fixture's first histogram of each host.
            let bucket = |lo: i64, count: u64| Bucket {
                lo: Some(lo),
                hi: Some(lo * 2 - 1),
                count,
            };
            assert_eq!(
                columns[&0][&b],
                vec![
                    bucket(1 << 20, 80),
                    bucket(1 << 21, 4),
                    bucket(1 << 22, 2),
                    bucket(1 << 23, 2),
                    bucket(1 << 24, 88)
                ]
            );
            assert_eq!(
                columns[&0][&a],
                vec![
                    bucket(1 << 20, 982),
                    bucket(1 << 21, 62),
                    bucket(1 << 22, 40),
                    bucket(1 << 23, 6)
                ]
            );
            // In every column B's 20 ms sleeps are in [2^24, 2^25), and A's 1.5 ms ones lead.
            for hosts in columns.values() {
                assert!(hosts[&b]
                    .iter()
                    .any(|x| x.lo == Some(1 << 24) && x.count > 50));
                let top = hosts[&a].iter().max_by_key(|x| x.count).unwrap();
                assert_eq!(top.lo, Some(1 << 20));
            }
            // As frames: one per column, in its slice, the hosts as keys.
            let w = ExportedWatch {
                watch: "sleepers".into(),
                family: "heat_sleepers_nanoseconds".into(),
                unit: "ns".into(),
                kind: AggKind::Hist,
                key_label: "syscall".into(),
                instances: vec![a.clone(), b.clone()],
            };
            let body = frames_json(
                &w,
                grid.origin,
                grid.origin + grid.count * grid.width,
                &grid,
                &columns,
                "q",
            );
            let frames = body["frames"].as_array().unwrap();
            assert_eq!(frames.len() as u64, grid.count);
            for (k, f) in frames.iter().enumerate() {
                assert_eq!(f["slice"], k);
                assert_eq!(f["seq"], k + 1);
                let ts = f["ts_ms"].as_u64().unwrap();
                assert_eq!((ts - grid.origin) / grid.width, k as u64);
                let keys: Vec<_> = f["aggregations"][0]["series"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["key"][0].as_str().unwrap().to_owned())
                    .collect();
                let mut want = vec![a.clone(), b.clone()];
                want.sort();
                assert_eq!(keys, want);
            }
        }

        #[test]
        fn classic_buckets_become_each_hosts_linear_buckets() {
            let (grid, a, b) = setup();
            let answer = fixture("classic-range.json");
            let columns = parse_range(&answer, &grid, AggKind::Lhist).unwrap();
            assert_eq!(columns.len() as u64, grid.count);
            // Both hosts sleep 1.5 ms or more: above the 64 us layout, in its open top; each
            // column holds the host's `+Inf` count (rounded), nothing is lost or invented.
            for series in answer["data"]["result"].as_array().unwrap() {
                if series["metric"]["le"] != "+Inf" {
                    continue;
                }
                let host = series["metric"]["instance"].as_str().unwrap();
                assert!(host == a || host == b);
                for point in series["values"].as_array().unwrap() {
                    let k = grid.column_of(timestamp_ms(&point[0]).unwrap()).unwrap();
                    let total = whole_count(&point[1]).unwrap();
                    let ours = &columns[&k][host];
                    let sum: u64 = ours.iter().map(|x| x.count).sum();
                    assert!(
                        sum.abs_diff(total) <= ours.len() as u64,
                        "{host} column {k}: {ours:?} vs {total}"
                    );
                    let top = ours.iter().max_by_key(|x| x.count).unwrap();
                    assert_eq!((top.lo, top.hi), (Some(64), None), "{ours:?}");
                }
            }
        }
    }
}
