//! D on stock Linux: a compiler from the subset of D that people write for heatmaps to
//! bpftrace 0.17, so a browser's D script runs where no libdtrace exists.
//!
//! [`compile`] is the one entry point: D text in, a [`ProgramSpec`] for the bpftrace backend
//! out (with the rewrite that makes frames say `quantize`/`lquantize`/… and carry DTrace's
//! bucket edges), plus notes on what Linux can only approximate. Anything outside the subset
//! is a [`DError`] naming the construct, its line and its column.

pub mod ast;
pub mod buckets;
pub mod lexer;
pub mod parser;
pub mod probes;
pub mod translate;

use std::sync::Arc;

use serde::Serialize;

use crate::consumer::ProgramSpec;
use crate::presets::KeyNames;
use lexer::Pos;

/// The engine named in `started` for D scripts run through this translator.
pub const ENGINE: &str = "d-to-bpftrace";

/// The 2011 Heat Tracer's D script, which must run verbatim.
pub const SEED: &str = "syscall:::entry { self->syscall_entry_ts[probefunc] = vtimestamp; }
syscall:::return /self->syscall_entry_ts[probefunc]/ {
  @time[probefunc] = lquantize((vtimestamp - self->syscall_entry_ts[probefunc]) / 1000, 0, 63, 2);
  self->syscall_entry_ts[probefunc] = 0;
}
";

/// A D script outside the supported subset, or not D at all, with where it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("line {line}, column {column}: {message}")]
pub struct DError {
    /// 1-based line of the offending text.
    pub line: u32,
    /// 1-based column (in characters) of the offending text.
    pub column: u32,
    /// What is wrong, naming the construct.
    pub message: String,
}

impl DError {
    pub fn at(pos: Pos, message: impl Into<String>) -> DError {
        DError {
            line: pos.line,
            column: pos.col,
            message: message.into(),
        }
    }
}

/// A D script compiled for the bpftrace backend.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// What the bpftrace consumer runs.
    pub spec: ProgramSpec,
    /// What the translation approximates, for people.
    pub notes: Vec<String>,
}

/// Compiles D source to a bpftrace program and its post-walk rewrite.
pub fn compile(source: &str) -> Result<Compiled, DError> {
    let program = parser::parse(source)?;
    let out = translate::translate(&program)?;
    Ok(Compiled {
        spec: ProgramSpec {
            script: out.bpftrace,
            key_names: KeyNames::AsIs,
            rewrite: Some(Arc::new(out.rewrite)),
            preset: None,
            filter: crate::presets::ProcessFilter::default(),
            capture: None,
        },
        notes: out.notes,
    })
}
