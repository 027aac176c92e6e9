//! The command line: where the config file is, and the flags that override it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::config::{Config, ConfigError};

/// Live kernel tracing as realtime latency heatmaps in the browser.
///
/// Serves the heatmap page at http://BIND/, the websocket at /ws and Prometheus metrics at
/// /metrics. Needs root (it runs tracers, and mounts tracefs when it is missing).
#[derive(Debug, Parser)]
#[command(name = "heat-actix", version, about, long_about = None)]
pub struct Cli {
    /// TOML config file (see config/heat.toml); defaults apply without one.
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
    /// Listen address, overriding `bind` (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR:PORT")]
    pub bind: Option<SocketAddr>,
    /// Most concurrent sessions, overriding `max_sessions`.
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<usize>,
    /// Default walk interval in ms (100..=10000), overriding `tick_ms`.
    #[arg(long, value_name = "N")]
    pub tick_ms: Option<u64>,
    /// Log filter (error, warn, info, debug, trace, or directives), overriding `log`.
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Helpers that do not start the server.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Read a token on stdin and print the `sha256 = "…"` line for its [[auth.tokens]] entry.
    HashToken,
    /// Write an NDJSON export (GET /api/watches/NAME/export, or the page's download) into the
    /// store of the config's `[store] path`, as new runs of watch NAME. The file is checked
    /// whole before anything is written. NAME must not be a watch this config records (a
    /// running server writes those).
    Import {
        /// The .ndjson file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The watch the ticks are filed under (1..=64 of a-z 0-9 _ -).
        #[arg(long, value_name = "NAME")]
        watch: String,
    },
}

impl Cli {
    /// The config file (or defaults) with this command line's overrides, validated.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        // The store's default place depends on where the config came from: settle it now.
        config.store.path = Some(config.store.resolve(self.config.as_deref()));
        if let Some(bind) = self.bind {
            config.bind = bind;
        }
        if let Some(n) = self.max_sessions {
            config.max_sessions = n;
        }
        if let Some(n) = self.tick_ms {
            config.tick_ms = n;
        }
        if let Some(log) = &self.log {
            config.log = log.clone();
        }
        config.validate().map_err(|e| self.name_the_flag(e))?;
        Ok(config)
    }

    /// An error about a value this command line set names the flag, not the config key.
    fn name_the_flag(&self, e: ConfigError) -> ConfigError {
        let ConfigError::Invalid { key, message } = e else {
            return e;
        };
        let flag = match key {
            "bind" if self.bind.is_some() => "--bind",
            "max_sessions" if self.max_sessions.is_some() => "--max-sessions",
            "tick_ms" if self.tick_ms.is_some() => "--tick-ms",
            "log" if self.log.is_some() => "--log",
            _ => return ConfigError::Invalid { key, message },
        };
        ConfigError::Flag { flag, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_are_validated() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/heat.toml");
        let cli = Cli::parse_from([
            "heat-actix",
            "--config",
            path,
            "--max-sessions",
            "2",
            "--tick-ms",
            "250",
        ]);
        let config = cli.config().unwrap();
        assert_eq!((config.max_sessions, config.tick_ms), (2, 250));
        let cli = Cli::parse_from(["heat-actix", "--tick-ms", "50"]);
        let err = cli.config().unwrap_err().to_string();
        assert!(
            err.contains("--tick-ms") && err.contains("50") && !err.contains("config key"),
            "{err}"
        );
        let cli = Cli::parse_from(["heat-actix", "--max-sessions", "0"]);
        let err = cli.config().unwrap_err().to_string();
        assert!(err.contains("--max-sessions"), "{err}");
    }
}
