//! heat-actix: live kernel tracing turned into realtime latency heatmaps in the browser, for
//! many people at once. Each distinct running program (`program`) owns a tracing consumer on
//! its own thread and is shared by every websocket session (`session`) that asks for it; an
//! interval tick walks its aggregations into frames; a supervisor caps the sessions.

pub mod aggregation;
pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod dlang;
pub mod export;
pub mod fleet;
pub mod import;
pub mod presets;
pub mod program;
pub mod server;
pub mod session;
pub(crate) mod sparse;
pub mod store;
pub mod supervisor;
pub mod syscalls;
pub mod telemetry;
#[cfg(target_os = "linux")]
pub mod tracefs;
