//! The HTTP side: the heatmap page and its assets (compiled into the binary, so the server
//! needs no files beside it), the websocket endpoint, `/metrics` and `/healthz`.

use std::sync::Arc;

use actix::prelude::*;
use actix_web::{dev::Server, http::header, web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;

use crate::config::Config;
use crate::session::{Session, Shared};
use crate::supervisor::{Registry, Supervisor};
use crate::telemetry;

/// Largest websocket message accepted from a browser; a start request carries a whole script.
const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

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
        "connection.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/connection.js"),
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

/// Everything a running server holds on to.
pub struct Running {
    pub server: Server,
    pub supervisor: Addr<Supervisor>,
    pub sessions: Arc<Registry>,
    pub bound: Vec<std::net::SocketAddr>,
}

/// Binds and starts the server; must be called inside an actix system.
pub fn start(config: Config) -> std::io::Result<Running> {
    let sessions = Arc::new(Registry::new());
    let supervisor = Supervisor::new(config.max_sessions, sessions.clone()).start();
    let shared = Arc::new(Shared {
        config: config.clone(),
        supervisor: supervisor.clone(),
    });
    let data = web::Data::from(shared);
    let http = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/", web::get().to(index))
            .route("/static/{name}", web::get().to(asset))
            .route("/ws", web::get().to(websocket))
            .route("/metrics", web::get().to(metrics))
            .route("/healthz", web::get().to(|| async { "ok\n" }))
    })
    // Signals are ours: shutdown stops every tracer before the server goes.
    .disable_signals()
    .workers(2)
    .bind(config.bind)?;
    let bound = http.addrs();
    Ok(Running {
        server: http.run(),
        supervisor,
        sessions,
        bound,
    })
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
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
    let session = Session::new(shared.into_inner(), peer);
    ws::WsResponseBuilder::new(session, &req, stream)
        .frame_size(MAX_MESSAGE_BYTES)
        .start()
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        ))
        .body(telemetry::metrics().render())
}
