//! The configuration file (`heat.toml`): what it may say, its defaults, and its validation.
//! Command-line flags override it (see `cli`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// The shortest and longest walk interval a session may ask for, in milliseconds.
pub const TICK_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=10_000;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (an unknown key, a wrong type, …); the
    /// parser's message names the key and its line.
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of its allowed range.
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

/// Everything heat-actix can be told.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address and port to listen on. Loopback unless you mean it.
    #[serde(default = "default_bind")]
    pub bind: SocketAddr,
    /// Most websocket sessions open at once; the next connection is closed with 1013.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Default walk interval in milliseconds (a start request may ask for 100..=10000).
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Log filter: a level (`error`, `warn`, `info`, `debug`, `trace`) or tracing directives.
    #[serde(default = "default_log")]
    pub log: String,
    /// The bpftrace backend.
    #[serde(default)]
    pub bpftrace: BpftraceConfig,
}

/// Settings of the bpftrace backend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BpftraceConfig {
    /// The bpftrace executable (looked up in PATH when not absolute).
    #[serde(default = "default_bpftrace_path")]
    pub path: PathBuf,
    /// How long bpftrace may take to compile and attach a program, in milliseconds.
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
}

fn default_bind() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_max_sessions() -> usize {
    16
}
fn default_tick_ms() -> u64 {
    1000
}
fn default_log() -> String {
    "info".to_owned()
}
fn default_bpftrace_path() -> PathBuf {
    PathBuf::from("bpftrace")
}
fn default_start_timeout_ms() -> u64 {
    30_000
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind: default_bind(),
            max_sessions: default_max_sessions(),
            tick_ms: default_tick_ms(),
            log: default_log(),
            bpftrace: BpftraceConfig::default(),
        }
    }
}

impl Default for BpftraceConfig {
    fn default() -> BpftraceConfig {
        BpftraceConfig {
            path: default_bpftrace_path(),
            start_timeout_ms: default_start_timeout_ms(),
        }
    }
}

impl BpftraceConfig {
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range; run again after command-line overrides.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=100_000).contains(&self.max_sessions) {
            return Err(ConfigError::Invalid {
                key: "max_sessions",
                message: format!("{} is not in 1..=100000", self.max_sessions),
            });
        }
        if !TICK_MS_RANGE.contains(&self.tick_ms) {
            return Err(ConfigError::Invalid {
                key: "tick_ms",
                message: format!(
                    "{} is not in {}..={}",
                    self.tick_ms,
                    TICK_MS_RANGE.start(),
                    TICK_MS_RANGE.end()
                ),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log) {
            return Err(ConfigError::Invalid {
                key: "log",
                message: format!("{:?}: {e}", self.log),
            });
        }
        if self.bpftrace.path.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                key: "bpftrace.path",
                message: "must not be empty".into(),
            });
        }
        if !(1_000..=600_000).contains(&self.bpftrace.start_timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "bpftrace.start_timeout_ms",
                message: format!("{} is not in 1000..=600000", self.bpftrace.start_timeout_ms),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn the_example_config_parses_with_the_real_parser() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/heat.toml");
        let config = Config::load(&path).expect("config/heat.toml is valid");
        assert!(
            config.bind.ip().is_loopback(),
            "the example listens on loopback"
        );
        assert_eq!(config.tick_ms, 1000);
    }

    #[test]
    fn empty_config_is_all_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = parse("max_sesions = 3\n").unwrap_err().to_string();
        assert!(err.contains("max_sesions"), "{err}");
        let err = parse("[bpftrace]\npaht = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("paht"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_named() {
        let err = parse("tick_ms = 5\n").unwrap_err().to_string();
        assert!(err.contains("tick_ms") && err.contains('5'), "{err}");
        let err = parse("max_sessions = 0\n").unwrap_err().to_string();
        assert!(err.contains("max_sessions"), "{err}");
        let err = parse("bind = \"nowhere\"\n").unwrap_err().to_string();
        assert!(err.contains("bind"), "{err}");
        let err = parse("log = \"info,[\"\n").unwrap_err().to_string();
        assert!(err.contains("`log`"), "{err}");
    }
}
