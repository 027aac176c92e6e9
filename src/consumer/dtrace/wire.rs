//! The pipe protocol between the server's DTrace consumer and its child process
//! (`heat-actix __dtrace-consumer`): one JSON object per line each way. The parent writes
//! [`Request`]s on the child's stdin; the child answers each with exactly one [`Reply`] on its
//! stdout, in order. Nothing else may be written to the child's stdout.

use serde::{Deserialize, Serialize};

use crate::aggregation::{AggKind, Aggregation, Bucket, KeyPart, Series, Value};

/// The hidden subcommand that turns the heat-actix binary into a DTrace consumer process.
pub const CHILD_SUBCOMMAND: &str = "__dtrace-consumer";

/// Parent → child.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Open libdtrace, set the options and compile the script (answered `compiled`).
    Compile { script: String },
    /// Enable the compiled program (answered `running`).
    Go,
    /// Snapshot, walk and remove every aggregation (answered `walked`).
    Walk,
    /// Stop tracing (which fires `END`), then walk one last time (answered `walked`).
    Finish,
    /// Stop tracing and exit (answered `stopped`, then the child exits).
    Stop,
}

/// Child → parent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Compiled,
    Running,
    Walked {
        aggregations: Vec<WireAggregation>,
        /// `printf` and other principal-buffer output of the interval.
        #[serde(default)]
        output: Vec<String>,
        /// libdtrace's drop handler messages of the interval.
        #[serde(default)]
        drops: Vec<String>,
        /// libdtrace's error handler messages of the interval.
        #[serde(default)]
        errors: Vec<String>,
    },
    Stopped,
    /// A request failed; `message` is libdtrace's own text.
    Failed {
        stage: Stage,
        message: String,
    },
}

/// Which request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// dtrace_open or an option (no libdtrace, no permission, …).
    Open,
    /// The D compiler refused the script.
    Compile,
    /// dtrace_program_exec or dtrace_go.
    Go,
    /// A walk.
    Walk,
    /// The request made no sense in the child's state, or was not JSON.
    Protocol,
}

/// One aggregation of a walk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireAggregation {
    pub name: String,
    pub kind: AggKind,
    pub series: Vec<WireSeries>,
}

/// One key's value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireSeries {
    pub key: Vec<WireKey>,
    pub value: WireValue,
}

/// A key part.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WireKey {
    Int(i64),
    Str(String),
}

/// A value, tagged so every shape round-trips exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireValue {
    Scalar(i64),
    Stats {
        count: u64,
        total: i64,
        average: i64,
    },
    Deviation {
        count: u64,
        total: i64,
        average: i64,
        stddev: u64,
    },
    /// `[lo, hi, count]` with `null` open ends.
    Buckets(Vec<(Option<i64>, Option<i64>, u64)>),
}

impl From<&Series> for WireSeries {
    fn from(series: &Series) -> WireSeries {
        WireSeries {
            key: series
                .key
                .iter()
                .map(|k| match k {
                    KeyPart::Int(n) => WireKey::Int(*n),
                    KeyPart::Str(s) => WireKey::Str(s.clone()),
                })
                .collect(),
            value: match &series.value {
                Value::Scalar(v) => WireValue::Scalar(*v),
                Value::Stats {
                    count,
                    total,
                    average,
                } => WireValue::Stats {
                    count: *count,
                    total: *total,
                    average: *average,
                },
                Value::Deviation {
                    count,
                    total,
                    average,
                    stddev,
                } => WireValue::Deviation {
                    count: *count,
                    total: *total,
                    average: *average,
                    stddev: *stddev,
                },
                Value::Buckets(b) => {
                    WireValue::Buckets(b.iter().map(|b| (b.lo, b.hi, b.count)).collect())
                }
            },
        }
    }
}

impl From<WireSeries> for Series {
    fn from(series: WireSeries) -> Series {
        let key = series
            .key
            .into_iter()
            .map(|k| match k {
                WireKey::Int(n) => KeyPart::Int(n),
                WireKey::Str(s) => KeyPart::Str(s),
            })
            .collect();
        match series.value {
            WireValue::Scalar(v) => Series {
                key,
                value: Value::Scalar(v),
                sum: None,
            },
            WireValue::Stats {
                count,
                total,
                average,
            } => Series {
                key,
                value: Value::Stats {
                    count,
                    total,
                    average,
                },
                sum: None,
            },
            WireValue::Deviation {
                count,
                total,
                average,
                stddev,
            } => Series {
                key,
                value: Value::Deviation {
                    count,
                    total,
                    average,
                    stddev,
                },
                sum: None,
            },
            // Re-sorted and zero-filtered: the child's word is not trusted for the wire promise.
            WireValue::Buckets(b) => Series::histogram(
                key,
                b.into_iter()
                    .map(|(lo, hi, count)| Bucket { lo, hi, count })
                    .collect(),
            ),
        }
    }
}

impl From<WireAggregation> for Aggregation {
    fn from(a: WireAggregation) -> Aggregation {
        Aggregation {
            name: a.name,
            kind: a.kind,
            series: a.series.into_iter().map(Series::from).collect(),
            folded: 0,
        }
    }
}

/// One line of JSON for the pipe.
pub fn to_line<T: Serialize>(message: &T) -> String {
    let mut line = serde_json::to_string(message).expect("wire messages always serialise");
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_are_one_tagged_line_each() {
        assert_eq!(to_line(&Request::Go), "{\"op\":\"go\"}\n");
        let compile: Request =
            serde_json::from_str(r#"{"op":"compile","script":"BEGIN{}"}"#).unwrap();
        assert_eq!(
            compile,
            Request::Compile {
                script: "BEGIN{}".into()
            }
        );
        let failed = Reply::Failed {
            stage: Stage::Compile,
            message: "dtrace: invalid probe specifier".into(),
        };
        let line = to_line(&failed);
        assert_eq!(line.matches('\n').count(), 1);
        assert_eq!(serde_json::from_str::<Reply>(&line).unwrap(), failed);
    }

    #[test]
    fn every_value_shape_round_trips_through_the_pipe() {
        let series = vec![
            Series {
                key: vec![KeyPart::Str("read".into()), KeyPart::Int(-3)],
                value: Value::Scalar(7),
                sum: None,
            },
            Series {
                key: vec![],
                value: Value::Stats {
                    count: 2,
                    total: 10,
                    average: 5,
                },
                sum: None,
            },
            Series {
                key: vec![],
                value: Value::Deviation {
                    count: 8,
                    total: 40,
                    average: 5,
                    stddev: 2,
                },
                sum: None,
            },
            Series::histogram(
                vec![KeyPart::Str("write".into())],
                vec![
                    Bucket {
                        lo: None,
                        hi: Some(-1),
                        count: 1,
                    },
                    Bucket {
                        lo: Some(62),
                        hi: None,
                        count: 2,
                    },
                ],
            ),
        ];
        let reply = Reply::Walked {
            aggregations: vec![WireAggregation {
                name: "@time".into(),
                kind: AggKind::Lquantize,
                series: series.iter().map(WireSeries::from).collect(),
            }],
            output: vec![],
            drops: vec!["1 dynamic variable drop".into()],
            errors: vec![],
        };
        let back: Reply = serde_json::from_str(&to_line(&reply)).unwrap();
        let Reply::Walked { aggregations, .. } = back else {
            panic!("not a walk: {back:?}")
        };
        let aggregation = Aggregation::from(aggregations.into_iter().next().unwrap());
        assert_eq!(aggregation.series, series);
    }
}
