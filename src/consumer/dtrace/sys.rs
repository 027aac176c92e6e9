//! Raw libdtrace FFI: the bindings bindgen generated from this host's `<dtrace.h>` (see
//! build.rs), and compile-time checks that the header agrees with what the pure-Rust decoders
//! assume. Function-like macros bindgen cannot emit live in [`super::layout`], with tests.
#![allow(
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code,
    unreachable_pub,
    clippy::all
)]

include!(concat!(env!("OUT_DIR"), "/dtrace_bindings.rs"));

use super::layout::action;

// The header and the pure-Rust decoders must agree; a mismatch fails the build, not a walk.
const _: () = assert!(DTRACEACT_DIFEXPR as u16 == action::DIFEXPR);
const _: () = assert!(DTRACEACT_AGGREGATION as u16 == action::AGGREGATION);
const _: () = assert!(DTRACE_LQUANTIZE_STEPSHIFT == 48);
const _: () = assert!(DTRACE_LQUANTIZE_LEVELSHIFT == 32);
const _: () = assert!(DTRACE_LQUANTIZE_BASESHIFT == 0);

// illumos-style headers publish DTRACEAGG_* and llquantize's factor in the top bits.
#[cfg(not(dtrace_oracle))]
mod illumos_layout {
    use super::*;
    const _: () = assert!(DTRACEAGG_COUNT as u16 == action::COUNT);
    const _: () = assert!(DTRACEAGG_MIN as u16 == action::MIN);
    const _: () = assert!(DTRACEAGG_MAX as u16 == action::MAX);
    const _: () = assert!(DTRACEAGG_AVG as u16 == action::AVG);
    const _: () = assert!(DTRACEAGG_SUM as u16 == action::SUM);
    const _: () = assert!(DTRACEAGG_STDDEV as u16 == action::STDDEV);
    const _: () = assert!(DTRACEAGG_QUANTIZE as u16 == action::QUANTIZE);
    const _: () = assert!(DTRACEAGG_LQUANTIZE as u16 == action::LQUANTIZE);
    const _: () = assert!(DTRACEAGG_LLQUANTIZE as u16 == action::LLQUANTIZE);
    const _: () = assert!(DTRACE_LLQUANTIZE_FACTORSHIFT == 48);
    const _: () = assert!(DTRACE_LLQUANTIZE_LOWSHIFT == 32);
    const _: () = assert!(DTRACE_LLQUANTIZE_HIGHSHIFT == 16);
    const _: () = assert!(DTRACE_LLQUANTIZE_NSTEPSHIFT == 0);
}

// Oracle's header has no DTRACEAGG_* (its data records carry the private numbering in
// layout::oracle_action) and puts llquantize's steps in the top bits.
#[cfg(dtrace_oracle)]
mod oracle_layout {
    use super::*;
    const _: () = assert!(DTRACE_LLQUANTIZE_STEPSSHIFT == 48);
    const _: () = assert!(DTRACE_LLQUANTIZE_HMAGSHIFT == 32);
    const _: () = assert!(DTRACE_LLQUANTIZE_LMAGSHIFT == 16);
    const _: () = assert!(DTRACE_LLQUANTIZE_FACTORSHIFT == 0);
}
