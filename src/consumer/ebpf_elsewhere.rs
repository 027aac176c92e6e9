//! The native eBPF backend where there is none: BPF and libbpf are Linux's, so on DTrace hosts
//! (illumos, FreeBSD, macOS) no preset has a native version and the backend says why when it is
//! asked for by name.

use crate::aggregation::{AggregationInfo, Snapshot};
use crate::consumer::{Backend, Consumer, ConsumerError, ProgramSpec};

/// Why nothing runs natively here.
const WHY: &str = "native eBPF programs run on Linux only";

/// A preset's native version; none exist on this platform.
#[derive(Debug)]
pub struct Native {
    /// The preset's name.
    pub preset: &'static str,
}

/// The native version of preset `name`: never, here.
pub fn find(_name: &str) -> Option<&'static Native> {
    None
}

/// What the start-up check finds: no native support.
pub fn probe() -> &'static Result<(), String> {
    static NONE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    NONE.get_or_init(|| Err(WHY.to_owned()))
}

/// Same as [`probe`]: known without loading anything.
pub fn support() -> Option<&'static Result<(), String>> {
    Some(probe())
}

/// The native explain companion: refuses as the backend does.
pub type StackConsumer = EbpfConsumer;

/// The backend's consumer, which refuses every program with [`WHY`].
#[derive(Debug, Default)]
pub struct EbpfConsumer;

impl EbpfConsumer {
    pub fn new() -> EbpfConsumer {
        EbpfConsumer
    }
}

impl Consumer for EbpfConsumer {
    fn backend(&self) -> Backend {
        Backend::Ebpf
    }

    fn compile(&mut self, _: &ProgramSpec) -> Result<Vec<AggregationInfo>, ConsumerError> {
        Err(ConsumerError::Compile(WHY.to_owned()))
    }

    fn go(&mut self) -> Result<(), ConsumerError> {
        Err(ConsumerError::State("not compiled"))
    }

    fn walk(&mut self) -> Result<Snapshot, ConsumerError> {
        Err(ConsumerError::State("not running"))
    }

    fn stop(&mut self) {}
}
