//! The HTTP side: the heatmap page and its assets (compiled into the binary, so the server
//! needs no files beside it), the websocket endpoint with its origin and token checks,
//! `/metrics` and `/healthz`, over HTTP or HTTPS.

use std::sync::Arc;

use actix::prelude::*;
use actix_web::{
    dev::Server, http::header, http::StatusCode, web, App, HttpRequest, HttpResponse, HttpServer,
};
use actix_web_actors::ws;

use crate::api::api_error;
use crate::auth::{self, PROTOCOL_NAME};
use crate::config::{Config, TlsConfig};
use crate::consumer::Encoding;
use crate::program::registry::Programs;
use crate::session::{Peer, Session, Shared};
use crate::supervisor::{Registry, Supervisor};
use crate::telemetry::{self, Event, Refusal};

/// Files of the browser UI: (name under /static/, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    (
        "colour.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/colour.js"),
    ),
    (
        "compact.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/compact.js"),
    ),
    (
        "connection.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/connection.js"),
    ),
    (
        "explain.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/explain.js"),
    ),
    (
        "flame.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/flame.js"),
    ),
    (
        "heatmap.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/heatmap.js"),
    ),
    (
        "keys.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/keys.js"),
    ),
    (
        "model.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/model.js"),
    ),
    (
        "protocol.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/protocol.js"),
    ),
    (
        "rows.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/rows.js"),
    ),
    (
        "scalars.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/scalars.js"),
    ),
    (
        "select.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/select.js"),
    ),
    (
        "selectpanel.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/selectpanel.js"),
    ),
    (
        "stacks.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/stacks.js"),
    ),
    (
        "timeline.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/timeline.js"),
    ),
    (
        "units.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/units.js"),
    ),
    (
        "util.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/util.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
];

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("tls: {0}")]
    Tls(String),
    /// The store of recordings could not be opened (its message says what to do).
    #[error("{0}")]
    Store(crate::store::StoreError),
    /// The fleet's Prometheus settings could not be used (its auth header file).
    #[error("{0}")]
    Fleet(crate::fleet::FleetError),
}

/// Everything a running server holds on to.
pub struct Running {
    pub server: Server,
    pub supervisor: Addr<Supervisor>,
    pub sessions: Arc<Registry>,
    pub programs: Addr<Programs>,
    pub bound: Vec<std::net::SocketAddr>,
}

/// Binds and starts the server; must be called inside an actix system.
pub fn start(config: Config) -> Result<Running, ServerError> {
    let sessions = Arc::new(Registry::new());
    let supervisor = Supervisor::new(
        config.max_sessions,
        config.limits.max_sessions_per_client,
        sessions.clone(),
    )
    .start();
    // Opened here, before anything runs, so a damaged store stops start-up with its message.
    let recorder = if config.watches.iter().any(|w| w.record) {
        let path = config.store.resolve(None).join(crate::store::FILE_NAME);
        let store = crate::store::Store::open(&path).map_err(ServerError::Store)?;
        tracing::info!(path = %store.path().display(), "Recording to the store.");
        Some(crate::program::recorder::Recorder::start(store))
    } else {
        None
    };
    let programs = Programs::new(Arc::new(config.clone()), recorder).start();
    let shared = Arc::new(Shared {
        config: config.clone(),
        supervisor: supervisor.clone(),
        programs: programs.clone(),
    });
    let data = web::Data::from(shared);
    let fleet = web::Data::new(
        crate::fleet::Fleet::from_config(&config.fleet).map_err(ServerError::Fleet)?,
    );
    let http = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(fleet.clone())
            .route("/", web::get().to(index))
            .route("/static/{name}", web::get().to(asset))
            .route("/ws", web::get().to(websocket))
            .route("/metrics", web::get().to(metrics))
            .service(
                web::resource("/api/translate")
                    .route(web::post().to(translate))
                    .default_service(web::to(only_post)),
            )
            .route("/api/watches", web::get().to(crate::api::watches))
            .route(
                "/api/watches/{name}/frames",
                web::get().to(crate::api::watch_frames),
            )
            .route(
                "/api/watches/{name}/export",
                web::get().to(crate::api::watch_export),
            )
            .service(
                web::resource("/api/fleet/watches")
                    .route(web::get().to(crate::fleet::watches))
                    .default_service(web::to(crate::fleet::only_get)),
            )
            .service(
                web::resource("/api/fleet/watches/{name}/frames")
                    .route(web::get().to(crate::fleet::watch_frames))
                    .default_service(web::to(crate::fleet::only_get)),
            )
            .route("/healthz", web::get().to(|| async { "ok\n" }))
    })
    // Signals are ours: shutdown stops every tracer before the server goes.
    .disable_signals()
    .workers(2);
    let bind_error = |source| ServerError::Bind {
        addr: config.bind,
        source,
    };
    let http = match &config.tls {
        None => http.bind(config.bind).map_err(bind_error)?,
        Some(tls) => http
            .bind_rustls_0_23(config.bind, tls_config(tls)?)
            .map_err(bind_error)?,
    };
    let bound = http.addrs();
    Ok(Running {
        server: http.run(),
        supervisor,
        sessions,
        programs,
        bound,
    })
}

fn tls_config(tls: &TlsConfig) -> Result<rustls::ServerConfig, ServerError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path)
            .map_err(|e| ServerError::Tls(format!("cannot read {}: {e}", path.display())))
    };
    let certs = rustls_pemfile::certs(&mut read(&tls.cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.cert.display())))?;
    if certs.is_empty() {
        return Err(ServerError::Tls(format!(
            "{}: no certificate found",
            tls.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut read(&tls.key)?.as_slice())
        .map_err(|e| ServerError::Tls(format!("{}: {e}", tls.key.display())))?
        .ok_or_else(|| ServerError::Tls(format!("{}: no private key found", tls.key.display())))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ServerError::Tls(e.to_string()))
}

fn serve(name: &str) -> HttpResponse {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, *content_type))
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .body(*body),
        None => HttpResponse::NotFound().body("not found\n"),
    }
}

async fn index() -> HttpResponse {
    serve("index.html")
}

async fn asset(name: web::Path<String>) -> HttpResponse {
    serve(&name)
}

async fn websocket(
    req: HttpRequest,
    stream: web::Payload,
    shared: web::Data<Shared>,
) -> Result<HttpResponse, actix_web::Error> {
    let config = &shared.config;
    let addr = req.peer_addr();
    let peer = addr.map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    // A page on another site must not drive a root tracer through a visitor's browser.
    if let Err(e) = auth::check_origin(config, header(header::ORIGIN), header(header::HOST)) {
        Event::SessionRejected {
            reason: Refusal::Origin,
            peer: &peer,
            detail: &e.to_string(),
        }
        .emit();
        return Ok(HttpResponse::Forbidden().body(format!("{e}\n")));
    }
    let protocols: Vec<&str> = header(header::SEC_WEBSOCKET_PROTOCOL)
        .map(|p| p.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok();
    let token = query
        .as_ref()
        .and_then(|q| q.get("token"))
        .map(String::as_str);
    let format = query.as_ref().and_then(|q| q.get("format"));
    let encoding = match format.map(String::as_str) {
        None | Some("1") => Encoding::V1,
        Some("2011") => Encoding::Legacy2011,
        Some(other) => {
            let message = format!("unknown format {other:?}: /ws speaks protocol v1, /ws?format=2011 the 2011 dialect\n");
            return Ok(HttpResponse::BadRequest().body(message));
        }
    };
    // An unauthenticated upgrade still succeeds, so the page can read the close reason and
    // ask for a token; the session closes it at once.
    let identity = auth::authenticate(config, token, &protocols);
    let session = Session::new(
        shared.clone().into_inner(),
        Peer {
            addr: peer,
            ip: addr.map(|a| a.ip()),
            identity,
        },
        encoding,
    );
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(config.limits.max_message_bytes)
        .protocols(&[PROTOCOL_NAME])
        .start()
}

/// What `/api/translate` answers to any method but POST.
async fn only_post(req: HttpRequest) -> HttpResponse {
    let message = format!("{} is not allowed here; POST a D script", req.method());
    let mut response = api_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &message,
    );
    response
        .headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("POST"));
    response
}

/// `POST /api/translate`: the D script in the body; the bpftrace program and notes, or the
/// positioned error (422), so people can see what their D becomes. It runs nothing, so any
/// valid token may use it (custom-script rights are not needed), but it takes the websocket's
/// token and `limits.max_script_bytes`.
async fn translate(
    req: HttpRequest,
    payload: web::Payload,
    shared: web::Data<Shared>,
) -> HttpResponse {
    const ENDPOINT: &str = "/api/translate";
    let config = &shared.config;
    if let Err(refused) = crate::api::authorize(&req, config, ENDPOINT) {
        return *refused;
    }
    let max = config.limits.max_script_bytes;
    let refuse = |status, reason: Refusal, message: &str| {
        Event::RequestRefused {
            session: ENDPOINT,
            reason,
            detail: message,
        }
        .emit();
        api_error(status, reason.as_str(), message)
    };
    let too_large =
        format!("the script is over the limit of {max} bytes (limits.max_script_bytes)");
    let bytes = match payload.to_bytes_limited(max).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let message = format!("cannot read the request body: {e}");
            return refuse(StatusCode::BAD_REQUEST, Refusal::BadRequest, &message);
        }
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, Refusal::TooLarge, &too_large),
    };
    let Ok(script) = std::str::from_utf8(&bytes) else {
        let message = "the body must be the D script as UTF-8 text";
        return refuse(StatusCode::BAD_REQUEST, Refusal::BadRequest, message);
    };
    match crate::dlang::compile(script) {
        Ok(compiled) => HttpResponse::Ok().json(serde_json::json!({
            "engine": crate::dlang::ENGINE,
            "bpftrace": compiled.spec.script,
            "notes": compiled.notes,
        })),
        Err(error) => HttpResponse::UnprocessableEntity().json(serde_json::json!({
            "error": {
                "code": "compile",
                "line": error.line,
                "column": error.column,
                "message": error.message,
            }
        })),
    }
}

/// Protobuf when the scraper's `Accept` asks for it (native histograms travel only there),
/// the text format otherwise.
async fn metrics(request: HttpRequest) -> HttpResponse {
    let accept = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if telemetry::wants_protobuf(accept) {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, telemetry::PROTOBUF_CONTENT_TYPE))
            .body(telemetry::metrics().render_protobuf())
    } else {
        HttpResponse::Ok()
            .insert_header((header::CONTENT_TYPE, telemetry::TEXT_CONTENT_TYPE))
            .body(telemetry::metrics().render())
    }
}

#[cfg(test)]
mod tests {
    use super::ASSETS;

    /// A page module missing from `ASSETS` is a 404 its importers die of: serve every file.
    #[test]
    fn every_static_file_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
        for entry in std::fs::read_dir(&dir).expect("static/") {
            let name = entry.expect("static/ entry").file_name();
            let name = name.to_str().expect("UTF-8 name");
            assert!(
                ASSETS.iter().any(|(n, _, _)| *n == name),
                "static/{name} is not in server::ASSETS"
            );
        }
    }
}
