//! The HTTP API over watches and their recordings: `GET /api/watches`,
//! `GET /api/watches/{name}/frames?from=&to=&columns=` (a range as protocol frames, summed
//! server-side into at most `columns` columns) and `GET /api/watches/{name}/export?from=&to=`
//! (NDJSON: a header line, then one frame per line). Every route takes the websocket's tokens;
//! every store call runs on the recorder's thread.

use std::collections::HashMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value as Json};

use crate::auth::{self, Identity};
use crate::config::Config;
use crate::program::recorder::{ListRecorded, Range, ReadRange};
use crate::program::registry::{GetRecorder, ListRunning};
use crate::session::protocol::{encode_frame, FrameHeader};
use crate::session::Shared;
use crate::store::StoredTick;
use crate::telemetry::{Event, Refusal};

/// The range a request without `from`/`to` gets: the last hour.
const DEFAULT_RANGE_MS: u64 = 3_600_000;
/// Most columns a read may ask for.
const MAX_COLUMNS: usize = 10_000;

/// A refusal ready to send (boxed: responses are large and refusals rare).
pub type Refused = Box<HttpResponse>;

/// An API error as JSON: `{"error": {"code", "message"}}`.
pub fn api_error(status: StatusCode, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": {"code": code, "message": message}
    }))
}

/// The caller's identity from `Authorization: Bearer TOKEN` or `?token=`, under the same rules
/// as the websocket; a 401 (counted under `auth`) otherwise.
pub fn authorize(req: &HttpRequest, config: &Config, endpoint: &str) -> Result<Identity, Refused> {
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string()).ok();
    let token = bearer.or_else(|| {
        query
            .as_ref()
            .and_then(|q| q.get("token"))
            .map(String::as_str)
    });
    auth::authenticate(config, token, &[]).map_err(|e| {
        let message = match e {
            auth::AuthError::Missing => {
                "this server requires a token: send `Authorization: Bearer TOKEN` or add ?token=TOKEN"
                    .to_owned()
            }
            other => other.to_string(),
        };
        Event::RequestRefused {
            session: endpoint,
            reason: Refusal::Auth,
            detail: &message,
        }
        .emit();
        let mut response = api_error(StatusCode::UNAUTHORIZED, "unauthorized", &message);
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Box::new(response)
    })
}

pub(crate) fn bad_request(endpoint: &str, message: &str) -> Refused {
    Event::RequestRefused {
        session: endpoint,
        reason: Refusal::BadRequest,
        detail: message,
    }
    .emit();
    Box::new(api_error(StatusCode::BAD_REQUEST, "bad_request", message))
}

/// `GET /api/watches`: every configured watch (with the program running it, if any) and
/// every recorded one, with what the store holds.
pub async fn watches(req: HttpRequest, shared: web::Data<Shared>) -> HttpResponse {
    if let Err(refused) = authorize(&req, &shared.config, "/api/watches") {
        return *refused;
    }
    let running = shared.programs.send(ListRunning).await.unwrap_or_default();
    let recorded = match shared.programs.send(GetRecorder).await.ok().flatten() {
        Some(recorder) => match recorder.send(ListRecorded).await {
            Ok(Ok(list)) => list,
            Ok(Err(e)) => {
                return api_error(StatusCode::SERVICE_UNAVAILABLE, "store", &e.to_string())
            }
            Err(e) => return api_error(StatusCode::SERVICE_UNAVAILABLE, "store", &e.to_string()),
        },
        None => Vec::new(),
    };
    let mut out: Vec<Json> = shared
        .config
        .watches
        .iter()
        .map(|w| {
            let program = running.iter().find(|r| r.watch.as_deref() == Some(&w.name));
            json!({
                "name": w.name,
                "preset": w.preset,
                "lang": w.lang,
                "tick_ms": w.tick_ms.unwrap_or(shared.config.tick_ms),
                "record": w.record,
                "program": program.map(|p| p.program),
                "viewers": program.map(|p| p.viewers),
                // Their marks carry these names as labels.
                "triggers": w.triggers.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    for summary in &recorded {
        let entry = match out.iter_mut().find(|w| w["name"] == summary.name.as_str()) {
            Some(entry) => entry,
            None => {
                out.push(json!({"name": summary.name, "configured": false}));
                out.last_mut().expect("pushed")
            }
        };
        entry["recorded"] = json!({
            "first_ms": summary.first_ms,
            "last_ms": summary.last_ms,
            "ticks": summary.ticks,
            "rollups": summary.rollups,
            "bytes": summary.bytes,
            "runs": summary.runs,
        });
    }
    // The page offers a Fleet source only when there is one.
    let fleet = shared.config.fleet.prometheus_url.is_some();
    HttpResponse::Ok().json(json!({ "watches": out, "fleet": fleet }))
}

/// `from`, `to` (Unix ms; default the last hour) and `columns` of a range request.
pub(crate) fn range_query(
    req: &HttpRequest,
    endpoint: &str,
    columns_allowed: bool,
) -> Result<(u64, u64, Option<usize>), Refused> {
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())
        .map_err(|e| bad_request(endpoint, &format!("bad query: {e}")))?;
    let number = |name: &str| -> Result<Option<u64>, Refused> {
        query
            .get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    bad_request(
                        endpoint,
                        &format!("`{name}` must be a whole number, got {v:?}"),
                    )
                })
            })
            .transpose()
    };
    let to = number("to")?.unwrap_or_else(crate::program::now_ms);
    let from = number("from")?.unwrap_or(to.saturating_sub(DEFAULT_RANGE_MS));
    if from >= to {
        return Err(bad_request(
            endpoint,
            "`from` must be before `to` (Unix ms)",
        ));
    }
    let columns = match number("columns")? {
        Some(_) if !columns_allowed => {
            return Err(bad_request(
                endpoint,
                "an export holds every tick; `columns` is not taken",
            ))
        }
        Some(n) if !(1..=MAX_COLUMNS as u64).contains(&n) => {
            return Err(bad_request(
                endpoint,
                &format!("`columns` must be in 1..={MAX_COLUMNS}"),
            ))
        }
        n => n.map(|n| n as usize),
    };
    Ok((from, to, columns))
}

/// Reads a watch's range on the recorder's thread; the HTTP error when it cannot.
async fn read(
    shared: &Shared,
    watch: &str,
    from_ms: u64,
    to_ms: u64,
    columns: Option<usize>,
) -> Result<Range, Refused> {
    let Some(recorder) = shared.programs.send(GetRecorder).await.ok().flatten() else {
        return Err(Box::new(api_error(
            StatusCode::NOT_FOUND,
            "not_recorded",
            "nothing is recorded on this server yet (no [[watch]] records, no session asked to record)",
        )));
    };
    let read = ReadRange {
        watch: watch.to_owned(),
        from_ms,
        to_ms,
        columns,
    };
    match recorder.send(read).await {
        Ok(Ok(range)) => Ok(range),
        Ok(Err(crate::store::StoreError::UnknownWatch(_))) => Err(Box::new(api_error(
            StatusCode::NOT_FOUND,
            "unknown_watch",
            &format!("no recorded watch {watch:?}"),
        ))),
        Ok(Err(e)) => Err(Box::new(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store",
            &e.to_string(),
        ))),
        Err(e) => Err(Box::new(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "store",
            &e.to_string(),
        ))),
    }
}

/// One stored tick as a protocol `frame` object, with the `run` it belongs to.
fn frame_json(tick: &StoredTick) -> Json {
    let header = FrameHeader {
        seq: tick.seq,
        ts_ms: tick.ts_ms,
        interval_ms: tick.interval_ms,
        dropped: 0,
        last: false,
        cost: None,
    };
    let mut frame: Json =
        serde_json::from_str(&encode_frame(&header, &tick.snapshot)).expect("frames are JSON");
    frame["run"] = json!(tick.run);
    frame
}

fn runs_json(range: &Range) -> Json {
    Json::Array(
        range
            .runs
            .iter()
            .map(|(run, infos)| json!({"run": run, "aggregations": infos}))
            .collect(),
    )
}

/// `GET /api/watches/{name}/frames?from=&to=&columns=`.
pub async fn watch_frames(
    req: HttpRequest,
    name: web::Path<String>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    const ENDPOINT: &str = "/api/watches/{name}/frames";
    if let Err(refused) = authorize(&req, &shared.config, ENDPOINT) {
        return *refused;
    }
    let (from, to, columns) = match range_query(&req, ENDPOINT, true) {
        Ok(range) => range,
        Err(refused) => return *refused,
    };
    let range = match read(&shared, &name, from, to, columns).await {
        Ok(range) => range,
        Err(e) => return *e,
    };
    let marks: Vec<Json> = range
        .marks
        .iter()
        .map(|m| json!({"from": m.from_ms, "to": m.to_ms, "until": m.until_ms, "label": m.label}))
        .collect();
    // Which slice each column sums, so a reader places it without knowing the roll-up width:
    // every row of a column has its `ts_ms` in the column's slice (a roll-up's is its last
    // tick's, inside its window, and coarse slices are whole windows).
    let frames: Vec<Json> = range
        .ticks
        .iter()
        .map(|tick| {
            let mut frame = frame_json(tick);
            if let Some(s) = &range.slices {
                frame["slice"] = json!(s.of(tick.ts_ms));
            }
            frame
        })
        .collect();
    let slices = range.slices.as_ref().map(|s| {
        json!({"origin": s.origin, "width": s.width, "count": (to - s.origin).div_ceil(s.width)})
    });
    HttpResponse::Ok().json(json!({
        "watch": name.as_str(),
        "from": from,
        "to": to,
        "columns": columns,
        "slices": slices,
        "runs": runs_json(&range),
        "marks": marks,
        "frames": frames,
    }))
}

/// `GET /api/watches/{name}/export?from=&to=`: NDJSON, a header line (what `started` says, per
/// run) then every tick in the range as a protocol frame, one per line. `heat-actix import`
/// and the page read it back.
pub async fn watch_export(
    req: HttpRequest,
    name: web::Path<String>,
    shared: web::Data<Shared>,
) -> HttpResponse {
    const ENDPOINT: &str = "/api/watches/{name}/export";
    if let Err(refused) = authorize(&req, &shared.config, ENDPOINT) {
        return *refused;
    }
    let (from, to, _) = match range_query(&req, ENDPOINT, false) {
        Ok(range) => range,
        Err(refused) => return *refused,
    };
    let range = match read(&shared, &name, from, to, None).await {
        Ok(range) => range,
        Err(e) => return *e,
    };
    let mut body = json!({
        "type": "export",
        "format": "heat-actix-ndjson-1",
        "watch": name.as_str(),
        "from": from,
        "to": to,
        "runs": runs_json(&range),
    })
    .to_string();
    body.push('\n');
    for tick in &range.ticks {
        body.push_str(&frame_json(tick).to_string());
        body.push('\n');
    }
    HttpResponse::Ok()
        .content_type("application/x-ndjson")
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}-{from}-{to}.ndjson\"",
                name.as_str()
            ),
        ))
        .body(body)
}
