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
    /// A command-line flag's value is out of its allowed range.
    #[error("flag `{flag}`: {message}")]
    Flag { flag: &'static str, message: String },
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
    /// Who may connect, and with which rights.
    #[serde(default)]
    pub auth: AuthConfig,
    /// What sessions may run, and from which pages.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Limits that keep one client from wearing the server down.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// HTTPS and WSS; plain HTTP when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Where recordings are kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// Standing watches: programs that run from start-up with no viewer, and are recorded.
    #[serde(default, rename = "watch")]
    pub watches: Vec<WatchConfig>,
    /// How people reach this server (`scheme://host[:port]`), for the links it hands out
    /// (trigger webhooks' permalinks). Default: `http://{bind}` (`https://` with `[tls]`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// The fleet view: the Prometheus that scrapes every host's exported watches.
    #[serde(default)]
    pub fleet: FleetConfig,
    /// Watches exported to Prometheus (`[[watch]] export = true`): limits shared by all.
    #[serde(default)]
    pub export: ExportConfig,
}

/// Where the page's "Fleet" source reads from: a Prometheus that scrapes the hosts' exported
/// watches. Without `prometheus_url` there is no fleet source.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// `http://host:port[/prefix]` of Prometheus's HTTP API (no credentials in it).
    #[serde(default)]
    pub prometheus_url: Option<String>,
    /// One header sent with every query, `Name: value` (e.g. `Authorization: Bearer …`).
    #[serde(default)]
    pub auth_header: Option<Secret>,
    /// A file holding that header line instead, read at start-up (so the secret need not sit
    /// in the config).
    #[serde(default)]
    pub auth_header_file: Option<PathBuf>,
    /// How long one query to Prometheus may take, in milliseconds.
    #[serde(default = "default_fleet_query_timeout_ms")]
    pub query_timeout_ms: u64,
    /// The narrowest column a fleet range is cut into, in milliseconds (keep it at or above
    /// the scrape interval: `increase` over a window with fewer than two samples is empty).
    #[serde(default = "default_fleet_min_step_ms")]
    pub min_step_ms: u64,
    /// The longest range one request may read, in seconds.
    #[serde(default = "default_fleet_max_range_s")]
    pub max_range_s: u64,
    /// Most columns (Prometheus points per host) one request may ask for.
    #[serde(default = "default_fleet_max_points")]
    pub max_points: u64,
}

impl Default for FleetConfig {
    fn default() -> FleetConfig {
        FleetConfig {
            prometheus_url: None,
            auth_header: None,
            auth_header_file: None,
            query_timeout_ms: default_fleet_query_timeout_ms(),
            min_step_ms: default_fleet_min_step_ms(),
            max_range_s: default_fleet_max_range_s(),
            max_points: default_fleet_max_points(),
        }
    }
}

fn default_fleet_query_timeout_ms() -> u64 {
    10_000
}
fn default_fleet_min_step_ms() -> u64 {
    15_000
}
fn default_fleet_max_range_s() -> u64 {
    31 * 24 * 3600
}
fn default_fleet_max_points() -> u64 {
    11_000
}

/// A value that is never printed: `Debug` says it is hidden.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(hidden)")
    }
}

impl FleetConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.prometheus_url {
            // awc is built without TLS here; credentials go in `auth_header`, never the URL,
            // which error messages and logs may show.
            let rest = url.strip_prefix("http://").unwrap_or("");
            let authority = rest.split('/').next().unwrap_or("");
            if authority.is_empty()
                || authority.contains('@')
                || url
                    .chars()
                    .any(|c| c.is_whitespace() || c == '?' || c == '#')
            {
                return Err(ConfigError::Invalid {
                    key: "fleet.prometheus_url",
                    message: format!(
                        "{url:?} is not an http:// URL with a host and no credentials, query or fragment"
                    ),
                });
            }
        }
        if self.auth_header.is_some() && self.auth_header_file.is_some() {
            return Err(ConfigError::Invalid {
                key: "fleet.auth_header",
                message: "give auth_header or auth_header_file, not both".into(),
            });
        }
        if let Some(header) = &self.auth_header {
            parse_header_line(&header.0).map_err(|message| ConfigError::Invalid {
                key: "fleet.auth_header",
                message,
            })?;
        }
        let ranges: [(&'static str, u64, std::ops::RangeInclusive<u64>); 4] = [
            (
                "fleet.query_timeout_ms",
                self.query_timeout_ms,
                100..=600_000,
            ),
            ("fleet.min_step_ms", self.min_step_ms, 1_000..=86_400_000),
            ("fleet.max_range_s", self.max_range_s, 60..=315_360_000),
            ("fleet.max_points", self.max_points, 1..=11_000),
        ];
        for (key, value, range) in ranges {
            if !range.contains(&value) {
                let message = format!("{value} is not in {}..={}", range.start(), range.end());
                return Err(ConfigError::Invalid { key, message });
            }
        }
        Ok(())
    }
}

/// `Name: value` → (name, value), checked as an HTTP header; the message never quotes the
/// value (it is a secret).
pub fn parse_header_line(line: &str) -> Result<(String, String), String> {
    let line = line.trim_end_matches(['\r', '\n']);
    let Some((name, value)) = line.split_once(':') else {
        return Err("must read `Name: value` (e.g. `Authorization: Bearer …`)".into());
    };
    let (name, value) = (name.trim(), value.trim());
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("{name:?} is not a header name"));
    }
    if value.is_empty() || value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "the value of {name} must be non-empty, one line, without control characters"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// The allowed range of `export.max_series`.
pub const EXPORT_MAX_SERIES_RANGE: std::ops::RangeInclusive<usize> = 1..=100_000;

/// `[export]`: how much an exported watch may put in `/metrics`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportConfig {
    /// Label sets (keys) one exported watch exports at most; later keys fold into `other`.
    #[serde(default = "default_export_max_series")]
    pub max_series: usize,
}

fn default_export_max_series() -> usize {
    1000
}

impl Default for ExportConfig {
    fn default() -> ExportConfig {
        ExportConfig {
            max_series: default_export_max_series(),
        }
    }
}

/// The embedded store of recordings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A directory. Default: `/var/lib/heat-actix` when running as root, otherwise
    /// `heat-actix-store` beside the config file (or in the working directory without one).
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl StoreConfig {
    /// The directory recordings go to, for a config read from `origin` (if any).
    pub fn resolve(&self, origin: Option<&Path>) -> PathBuf {
        if let Some(path) = &self.path {
            return path.clone();
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        #[cfg(unix)]
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/heat-actix");
        }
        origin.and_then(Path::parent).map_or_else(
            || PathBuf::from("heat-actix-store"),
            |d| d.join("heat-actix-store"),
        )
    }
}

/// A standing watch: a program that runs from start-up, pinned (leaving never stops it),
/// restarted with backoff when it fails, and recorded.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Its name in the store, the API and the page: 1..=64 of `a-z 0-9 _ -`.
    pub name: String,
    /// A preset (exclusive with `script`).
    #[serde(default)]
    pub preset: Option<String>,
    /// A program text (the config is trusted; no policy applies); needs `lang`.
    #[serde(default)]
    pub script: Option<String>,
    /// `bpftrace` or `d`, for a `script`.
    #[serde(default)]
    pub lang: Option<String>,
    /// Walk interval in milliseconds; default the server's `tick_ms`.
    #[serde(default)]
    pub tick_ms: Option<u64>,
    /// Force a backend (`ebpf`, `bpftrace`, `dtrace`), as a start request may.
    #[serde(default)]
    pub backend: Option<String>,
    /// Preset filters, as in a start request.
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub comm: Option<String>,
    #[serde(default)]
    pub include_self: Option<bool>,
    /// Record every tick to the store.
    #[serde(default = "default_true")]
    pub record: bool,
    /// Recorded data older than this many seconds goes (pinned ranges aside).
    #[serde(default = "default_max_age_s")]
    pub max_age_s: u64,
    /// The oldest recorded data goes once the watch takes more bytes than this.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// Ticks are kept at full resolution for this many seconds, then summed into roll-ups.
    #[serde(default = "default_full_resolution_s")]
    pub full_resolution_s: u64,
    /// The width of a roll-up, in seconds.
    #[serde(default = "default_rollup_s")]
    pub rollup_s: u64,
    /// Tail triggers on this watch's frames (`[[watch.trigger]]`).
    #[serde(default, rename = "trigger")]
    pub triggers: Vec<TriggerConfig>,
    /// Export the watch's histogram to `/metrics` (see `export`).
    #[serde(default)]
    pub export: bool,
    /// Export each key as a label value. Default: yes, except for keys that name processes
    /// (`comm`), which are off unless asked: all keys then sum into one series.
    #[serde(default)]
    pub export_keys: Option<bool>,
}

/// The allowed range of a trigger's thresholds (`p99_above`, `share_at_or_above`), in the
/// aggregation's unit.
pub const TRIGGER_THRESHOLD_RANGE: std::ops::RangeInclusive<u64> = 0..=1_000_000_000_000;

/// A tail trigger: a condition on a watch's frames that, held for `ticks` consecutive ticks,
/// pins the surrounding range, counts, logs and calls a webhook (see `program::trigger`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerConfig {
    /// Its name: the label of its marks and metrics, 1..=64 of `a-z 0-9 _ -`.
    pub name: String,
    /// The histogram aggregation it reads (e.g. `@latency_us`); default the program's first.
    #[serde(default)]
    pub aggregation: Option<String>,
    /// Fires when the bucket holding the 99th percentile event starts above this value.
    #[serde(default)]
    pub p99_above: Option<u64>,
    /// With `fraction`: fires when more than `fraction` of the events are in buckets whose
    /// lower bound is at least this value.
    #[serde(default)]
    pub share_at_or_above: Option<u64>,
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Consecutive ticks the condition must hold.
    #[serde(default = "default_trigger_ticks")]
    pub ticks: u32,
    /// Seconds before the firing tick that are pinned.
    #[serde(default = "default_pin_s")]
    pub pin_before_s: u64,
    /// Seconds after the firing tick that are pinned.
    #[serde(default = "default_pin_s")]
    pub pin_after_s: u64,
    /// How long the pinned range is kept against retention, in seconds from the firing.
    #[serde(default = "default_keep_s")]
    pub keep_s: u64,
    /// An `http://` URL that gets a JSON POST when the trigger fires.
    #[serde(default)]
    pub webhook: Option<String>,
    /// How long one webhook attempt may take, in milliseconds.
    #[serde(default = "default_webhook_timeout_ms")]
    pub webhook_timeout_ms: u64,
    /// Attempts after the first that failed (an error, a timeout or a status other than 2xx).
    #[serde(default = "default_webhook_retries")]
    pub webhook_retries: u32,
}

fn default_trigger_ticks() -> u32 {
    3
}
fn default_pin_s() -> u64 {
    300
}
fn default_keep_s() -> u64 {
    7 * 24 * 3600
}
fn default_webhook_timeout_ms() -> u64 {
    5000
}
fn default_webhook_retries() -> u32 {
    3
}

/// Whether `name` is a valid watch or trigger name: 1..=64 of `a-z 0-9 _ -`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl TriggerConfig {
    fn validate(&self, watch: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "watch.trigger",
            message: format!("watch {watch:?}, trigger {:?}: {message}", self.name),
        };
        if !valid_name(&self.name) {
            return Err(invalid("a name is 1..=64 of a-z 0-9 _ -".into()));
        }
        match (self.p99_above, self.share_at_or_above, self.fraction) {
            (Some(_), None, None) => {}
            (None, Some(_), Some(f)) if f > 0.0 && f < 1.0 => {}
            (None, Some(_), Some(f)) => {
                return Err(invalid(format!(
                    "fraction {f} is not strictly between 0 and 1"
                )))
            }
            _ => {
                return Err(invalid(
                    "give exactly one condition: `p99_above`, or `share_at_or_above` with \
                     `fraction`"
                        .into(),
                ))
            }
        }
        if let Some(url) = &self.webhook {
            let rest = url.strip_prefix("http://").unwrap_or("");
            if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
                return Err(invalid(format!(
                    "webhook {url:?} is not an http:// URL with a host"
                )));
            }
        }
        let ranges: [(&str, u64, std::ops::RangeInclusive<u64>); 8] = [
            (
                "p99_above",
                self.p99_above.unwrap_or(0),
                TRIGGER_THRESHOLD_RANGE,
            ),
            (
                "share_at_or_above",
                self.share_at_or_above.unwrap_or(0),
                TRIGGER_THRESHOLD_RANGE,
            ),
            ("ticks", u64::from(self.ticks), 1..=10_000),
            ("pin_before_s", self.pin_before_s, 0..=7 * 24 * 3600),
            ("pin_after_s", self.pin_after_s, 0..=7 * 24 * 3600),
            ("keep_s", self.keep_s, 60..=10 * 365 * 24 * 3600),
            ("webhook_timeout_ms", self.webhook_timeout_ms, 100..=600_000),
            ("webhook_retries", u64::from(self.webhook_retries), 0..=100),
        ];
        for (key, value, range) in ranges {
            if !range.contains(&value) {
                return Err(invalid(format!(
                    "{key} {value} is not in {}..={}",
                    range.start(),
                    range.end()
                )));
            }
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}
fn default_max_age_s() -> u64 {
    30 * 24 * 3600
}
fn default_max_bytes() -> u64 {
    1 << 30
}
fn default_full_resolution_s() -> u64 {
    24 * 3600
}
fn default_rollup_s() -> u64 {
    60
}

impl WatchConfig {
    /// What the store keeps of this watch.
    pub fn retention(&self) -> crate::store::Retention {
        crate::store::Retention {
            max_age: Duration::from_secs(self.max_age_s),
            max_bytes: self.max_bytes,
            full_resolution: Duration::from_secs(self.full_resolution_s),
            rollup: Duration::from_secs(self.rollup_s),
        }
    }

    /// The start request this watch amounts to (a watch's script is always shareable).
    pub fn start_request(&self, default_tick_ms: u64) -> crate::session::protocol::StartRequest {
        crate::session::protocol::StartRequest {
            preset: self.preset.clone(),
            lang: self.lang.clone(),
            script: self.script.clone(),
            tick_ms: Some(self.tick_ms.unwrap_or(default_tick_ms)),
            backend: self.backend.clone(),
            pid: self.pid,
            comm: self.comm.clone(),
            include_self: self.include_self,
            share: true,
            compact: false,
            record: false,
            max_cpu_percent: None,
            watch: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            key: "watch",
            message: format!("{:?}: {message}", self.name),
        };
        if !valid_name(&self.name) {
            return Err(invalid("a name is 1..=64 of a-z 0-9 _ -".into()));
        }
        match (&self.preset, &self.script, &self.lang) {
            (Some(_), None, None) | (None, Some(_), Some(_)) => {}
            _ => {
                return Err(invalid(
                    "give `preset`, or `script` with `lang`, not both".into(),
                ))
            }
        }
        if let Some(tick) = self.tick_ms.filter(|t| !TICK_MS_RANGE.contains(t)) {
            return Err(invalid(format!(
                "tick_ms {tick} is not in {}..={}",
                TICK_MS_RANGE.start(),
                TICK_MS_RANGE.end()
            )));
        }
        let ranges = [
            ("max_age_s", self.max_age_s, 60..=10 * 365 * 24 * 3600),
            ("max_bytes", self.max_bytes, 1 << 20..=1 << 44),
            (
                "full_resolution_s",
                self.full_resolution_s,
                60..=365 * 24 * 3600,
            ),
            ("rollup_s", self.rollup_s, 1..=24 * 3600),
        ];
        for (key, value, range) in ranges {
            if !range.contains(&value) {
                return Err(invalid(format!(
                    "{key} {value} is not in {}..={}",
                    range.start(),
                    range.end()
                )));
            }
        }
        if !self.triggers.is_empty() && !self.record {
            return Err(invalid(
                "a trigger pins recorded ranges: a watch with triggers needs record = true".into(),
            ));
        }
        for (i, trigger) in self.triggers.iter().enumerate() {
            trigger.validate(&self.name)?;
            if self.triggers[..i].iter().any(|t| t.name == trigger.name) {
                return Err(invalid(format!(
                    "two triggers are named {:?}",
                    trigger.name
                )));
            }
        }
        Ok(())
    }
}

/// What a token lets its holder do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May run presets.
    Viewer,
    /// May also run custom scripts.
    Operator,
}

/// Access tokens. When none are configured, no token is asked for (loopback only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// One token, stored as the SHA-256 of its text (make one with `heat-actix hash-token`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; appears in logs instead of the token.
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
}

/// What may run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Whether custom scripts may run at all (operators only when tokens are configured).
    #[serde(default)]
    pub custom_scripts: bool,
    /// Origins (scheme://host[:port]) allowed to open the websocket besides the server's own.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// Limits, each refusal counted in /metrics.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest websocket message accepted, in bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Largest custom script accepted, in bytes.
    #[serde(default = "default_max_script_bytes")]
    pub max_script_bytes: usize,
    /// Most sessions open at once from one client address.
    #[serde(default = "default_max_sessions_per_client")]
    pub max_sessions_per_client: usize,
    /// Most bytes per second a tracer may print before it is killed.
    #[serde(default = "default_output_budget")]
    pub output_budget_bytes_per_s: u64,
    /// Most keys sent per aggregation per frame; the rest are folded into one "other" series.
    #[serde(default = "default_max_keys")]
    pub max_keys_per_aggregation: usize,
    /// Seconds a session with nothing running and no message is kept open.
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Shortest time between two start requests of one session, in milliseconds.
    #[serde(default = "default_start_cooldown_ms")]
    pub start_cooldown_ms: u64,
    /// Most tracing programs running at once (viewers of one shared program use one).
    #[serde(default = "default_max_programs")]
    pub max_programs: usize,
    /// Frames each running program keeps for late joiners and `fetch`.
    #[serde(default = "default_channel_history_ticks")]
    pub channel_history_ticks: usize,
    /// Most CPU a program's BPF programs may use, in percent of one CPU, averaged over
    /// `consumer::cost::BUDGET_TICKS` ticks; a program over it is stopped (`budget`).
    #[serde(default = "default_max_program_cpu_percent")]
    pub max_program_cpu_percent: u32,
    /// The most an operator may raise one program's budget to with `max_cpu_percent` in its
    /// start (never below `max_program_cpu_percent`).
    #[serde(default = "default_max_program_cpu_percent_operator")]
    pub max_program_cpu_percent_operator: u32,
    /// Which programs run with the kernel's BPF run-time statistics on (their frames carry
    /// `cost`, and the CPU budget applies to them).
    #[serde(default)]
    pub measure_cost: MeasureCost,
    /// Explain companions (stack-capturing programs for a selected band) running at once,
    /// over every program; 0 disables Explain.
    #[serde(default = "default_max_explains")]
    pub max_explains: usize,
}

/// Which programs the kernel's BPF run-time statistics measure. While they are on they cost
/// every probe of every program on the machine two clock reads (about 150 ns a syscall for
/// `syscall-latency` on this project's VM), so they are duty-cycled: on for
/// `consumer::cost::STATS_WINDOW` of every `consumer::cost::STATS_PERIOD` while any measured
/// program runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MeasureCost {
    /// While a custom script runs: its cost is unknown, and the budget is there for it.
    #[default]
    Scripts,
    /// For every program, presets too.
    Always,
    /// Never: no `cost` on frames, no budget.
    Never,
}

/// Certificate and key, PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
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
fn default_max_message_bytes() -> usize {
    256 * 1024
}
fn default_max_script_bytes() -> usize {
    64 * 1024
}
fn default_max_sessions_per_client() -> usize {
    8
}
fn default_output_budget() -> u64 {
    4 * 1024 * 1024
}
fn default_max_keys() -> usize {
    1000
}
fn default_idle_timeout_s() -> u64 {
    900
}
fn default_max_programs() -> usize {
    32
}
fn default_max_explains() -> usize {
    4
}
fn default_channel_history_ticks() -> usize {
    600
}
fn default_start_cooldown_ms() -> u64 {
    500
}
fn default_max_program_cpu_percent() -> u32 {
    10
}
fn default_max_program_cpu_percent_operator() -> u32 {
    100
}

/// A program's CPU budget, in percent of ONE CPU: a program on many CPUs may use several.
pub const CPU_PERCENT_RANGE: std::ops::RangeInclusive<u64> = 1..=100_000;

impl LimitsConfig {
    /// The highest `max_cpu_percent` a start of `role` may ask for.
    pub fn max_cpu_percent_for(&self, role: Role) -> u32 {
        match role {
            Role::Viewer => self.max_program_cpu_percent,
            Role::Operator => self
                .max_program_cpu_percent_operator
                .max(self.max_program_cpu_percent),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            max_message_bytes: default_max_message_bytes(),
            max_script_bytes: default_max_script_bytes(),
            max_sessions_per_client: default_max_sessions_per_client(),
            output_budget_bytes_per_s: default_output_budget(),
            max_keys_per_aggregation: default_max_keys(),
            idle_timeout_s: default_idle_timeout_s(),
            start_cooldown_ms: default_start_cooldown_ms(),
            max_programs: default_max_programs(),
            channel_history_ticks: default_channel_history_ticks(),
            max_program_cpu_percent: default_max_program_cpu_percent(),
            max_program_cpu_percent_operator: default_max_program_cpu_percent_operator(),
            measure_cost: MeasureCost::default(),
            max_explains: default_max_explains(),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            bind: default_bind(),
            max_sessions: default_max_sessions(),
            tick_ms: default_tick_ms(),
            log: default_log(),
            bpftrace: BpftraceConfig::default(),
            auth: AuthConfig::default(),
            policy: PolicyConfig::default(),
            limits: LimitsConfig::default(),
            tls: None,
            store: StoreConfig::default(),
            watches: Vec::new(),
            public_url: None,
            fleet: FleetConfig::default(),
            export: ExportConfig::default(),
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
        self.validate_security()?;
        if let Some(url) = &self.public_url {
            let rest = ["http://", "https://"]
                .iter()
                .find_map(|scheme| url.strip_prefix(scheme))
                .unwrap_or("");
            if rest.is_empty() || rest.starts_with('/') || url.chars().any(char::is_whitespace) {
                return Err(ConfigError::Invalid {
                    key: "public_url",
                    message: format!("{url:?} is not an http:// or https:// URL with a host"),
                });
            }
        }
        self.fleet.validate()?;
        if !EXPORT_MAX_SERIES_RANGE.contains(&self.export.max_series) {
            return Err(ConfigError::Invalid {
                key: "export.max_series",
                message: format!(
                    "{} is not in {}..={}",
                    self.export.max_series,
                    EXPORT_MAX_SERIES_RANGE.start(),
                    EXPORT_MAX_SERIES_RANGE.end()
                ),
            });
        }
        for (i, watch) in self.watches.iter().enumerate() {
            watch.validate()?;
            if self.watches[..i].iter().any(|w| w.name == watch.name) {
                return Err(ConfigError::Invalid {
                    key: "watch",
                    message: format!("two watches are named {:?}", watch.name),
                });
            }
        }
        // Exported watches whose names differ only in `-` vs `_` would share one family.
        let exported: Vec<(&str, String)> = self
            .watches
            .iter()
            .filter(|w| w.export)
            .map(|w| {
                let unit = w
                    .preset
                    .as_deref()
                    .and_then(crate::presets::find)
                    .map(|p| p.unit);
                (w.name.as_str(), crate::export::family_name(&w.name, unit))
            })
            .collect();
        for (name, family) in &exported {
            let taken = crate::telemetry::SELF_FAMILIES
                .iter()
                .any(|f| family == f || *family == format!("{f}_total"));
            if taken {
                return Err(ConfigError::Invalid {
                    key: "watch.export",
                    message: format!(
                        "watch {name:?} would export as {family}, one of heat-actix's own metrics: rename it"
                    ),
                });
            }
        }
        for (i, (name, family)) in exported.iter().enumerate() {
            if let Some((other, _)) = exported[..i].iter().find(|(_, f)| f == family) {
                return Err(ConfigError::Invalid {
                    key: "watch.export",
                    message: format!(
                        "watches {other:?} and {name:?} would both export as {family}: rename one"
                    ),
                });
            }
        }
        let l = &self.limits;
        let ranges: [(&'static str, u64, std::ops::RangeInclusive<u64>); 12] = [
            (
                "limits.max_message_bytes",
                l.max_message_bytes as u64,
                1024..=64 * 1024 * 1024,
            ),
            (
                "limits.max_script_bytes",
                l.max_script_bytes as u64,
                64..=16 * 1024 * 1024,
            ),
            (
                "limits.max_sessions_per_client",
                l.max_sessions_per_client as u64,
                1..=100_000,
            ),
            (
                "limits.output_budget_bytes_per_s",
                l.output_budget_bytes_per_s,
                1024..=1 << 40,
            ),
            (
                "limits.max_keys_per_aggregation",
                l.max_keys_per_aggregation as u64,
                1..=1_000_000,
            ),
            ("limits.idle_timeout_s", l.idle_timeout_s, 1..=7 * 24 * 3600),
            ("limits.start_cooldown_ms", l.start_cooldown_ms, 0..=600_000),
            ("limits.max_programs", l.max_programs as u64, 1..=10_000),
            ("limits.max_explains", l.max_explains as u64, 0..=1_000),
            (
                "limits.channel_history_ticks",
                l.channel_history_ticks as u64,
                0..=86_400,
            ),
            (
                "limits.max_program_cpu_percent",
                u64::from(l.max_program_cpu_percent),
                CPU_PERCENT_RANGE,
            ),
            (
                "limits.max_program_cpu_percent_operator",
                u64::from(l.max_program_cpu_percent_operator),
                CPU_PERCENT_RANGE,
            ),
        ];
        for (key, value, range) in ranges {
            if !range.contains(&value) {
                let message = format!("{value} is not in {}..={}", range.start(), range.end());
                return Err(ConfigError::Invalid { key, message });
            }
        }
        Ok(())
    }

    /// Refuses configurations that would hand root tracing to whoever can reach the port.
    fn validate_security(&self) -> Result<(), ConfigError> {
        for (i, token) in self.auth.tokens.iter().enumerate() {
            let hex =
                token.sha256.len() == 64 && token.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            if !hex {
                return Err(ConfigError::Invalid {
                    key: "auth.tokens.sha256",
                    message: format!(
                        "token {i} ({:?}) needs 64 hex digits (`heat-actix hash-token` makes them)",
                        token.name
                    ),
                });
            }
        }
        let loopback = self.bind.ip().is_loopback();
        if !loopback && self.auth.tokens.is_empty() {
            return Err(ConfigError::Invalid {
                key: "bind",
                message: format!(
                    "{} is not a loopback address and no [[auth.tokens]] are configured: anyone who can \
                     reach it could run tracing programs as root",
                    self.bind
                ),
            });
        }
        let operators = self.auth.tokens.iter().any(|t| t.role == Role::Operator);
        if self.policy.custom_scripts && !loopback && !operators {
            return Err(ConfigError::Invalid {
                key: "policy.custom_scripts",
                message: "custom scripts on a non-loopback bind need at least one operator token"
                    .into(),
            });
        }
        Ok(())
    }

    /// The role of the holder of `token`, if it is one of ours. Compares digests in constant
    /// time, so response timing says nothing about how close a guess was.
    pub fn role_of(&self, token: &str) -> Option<(&str, Role)> {
        use sha2::Digest;
        let digest: String = sha2::Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.auth.tokens.iter().find_map(|t| {
            let same = t.sha256.len() == digest.len()
                && t.sha256
                    .bytes()
                    .zip(digest.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a.to_ascii_lowercase() ^ b))
                    == 0;
            same.then_some((t.name.as_str(), t.role))
        })
    }
}

impl Config {
    /// The base of links this server hands out: `public_url` without a trailing `/`, or
    /// `http://{bind}` (`https://` with `[tls]`).
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                format!("{scheme}://{}", self.bind)
            }
        }
    }
}

/// Lowercase hex SHA-256 of a token, as `auth.tokens.sha256` wants it.
pub fn hash_token(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
    fn the_fleet_needs_a_plain_url_and_one_well_formed_header() {
        let ok = parse("[fleet]\nprometheus_url = \"http://127.0.0.1:9090/prom/\"\nauth_header = \"Authorization: Bearer s3cret\"\n").unwrap();
        assert_eq!(
            ok.fleet.auth_header.as_ref().map(|s| s.0.as_str()),
            Some("Authorization: Bearer s3cret")
        );
        assert!(
            !format!("{ok:?}").contains("s3cret"),
            "Debug never shows the header's value"
        );
        for (text, key) in [
            (
                "prometheus_url = \"https://p:9090\"",
                "fleet.prometheus_url",
            ),
            (
                "prometheus_url = \"http://u:pw@p:9090\"",
                "fleet.prometheus_url",
            ),
            ("prometheus_url = \"http://\"", "fleet.prometheus_url"),
            ("prometheus_url = \"http://p/?q=1\"", "fleet.prometheus_url"),
            ("auth_header = \"no colon here\"", "fleet.auth_header"),
            ("auth_header = \"Bad Name: x\"", "fleet.auth_header"),
            (
                "auth_header = \"X-Token: a\\nInjected: b\"",
                "fleet.auth_header",
            ),
            (
                "auth_header = \"X: y\"\nauth_header_file = \"/f\"",
                "fleet.auth_header",
            ),
        ] {
            let err = parse(&format!("[fleet]\n{text}\n"))
                .expect_err(text)
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
            assert!(
                !err.contains("Injected: b"),
                "the value is not echoed: {err}"
            );
        }
    }

    #[test]
    fn two_exported_watches_may_not_share_a_family() {
        let watch = |name: &str| {
            format!(
                "[[watch]]\nname = \"{name}\"\npreset = \"syscall-latency-log2\"\nexport = true\n"
            )
        };
        let err = parse(&format!("{}{}", watch("a-b"), watch("a_b")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("heat_a_b_nanoseconds"), "{err}");
        assert!(parse(&format!("{}{}", watch("a-b"), watch("a_c"))).is_ok());
        let err = parse("[[watch]]\nname = \"store\"\npreset = \"block-io-size\"\nexport = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("heat_store_bytes"), "{err}");
        let config = parse(&watch("a")).unwrap();
        assert!(config.watches[0].export && config.watches[0].export_keys.is_none());
        assert_eq!(config.export.max_series, 1000);
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
        let err = parse("[limits]\nmax_script_bytes = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("limits.max_script_bytes"), "{err}");
    }

    #[test]
    fn exposing_the_server_needs_tokens() {
        let err = parse("bind = \"0.0.0.0:8080\"\n").unwrap_err().to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        let viewer = format!(
            "bind = \"0.0.0.0:8080\"\n[policy]\ncustom_scripts = true\n[[auth.tokens]]\nname = \"v\"\nrole = \"viewer\"\nsha256 = \"{}\"\n",
            hash_token("v")
        );
        let err = parse(&viewer).unwrap_err().to_string();
        assert!(err.contains("policy.custom_scripts"), "{err}");
        let operator = viewer.replace("viewer", "operator");
        assert!(parse(&operator).is_ok());
        assert!(parse("custom = 1\n").is_err());
    }

    #[test]
    fn triggers_take_exactly_one_condition_and_name_what_is_wrong() {
        let watch = "[[watch]]\nname = \"w\"\npreset = \"syscall-latency\"\n";
        let trigger =
            |body: &str| parse(&format!("{watch}[[watch.trigger]]\nname = \"t\"\n{body}"));
        let config = trigger("p99_above = 100\nwebhook = \"http://127.0.0.1:9/x\"\n").unwrap();
        let t = &config.watches[0].triggers[0];
        assert_eq!(
            (t.p99_above, t.ticks, t.pin_before_s, t.pin_after_s),
            (Some(100), 3, 300, 300)
        );
        assert_eq!((t.keep_s, t.webhook_retries), (7 * 24 * 3600, 3));
        assert!(trigger("share_at_or_above = 64\nfraction = 0.25\n").is_ok());
        for (body, says) in [
            ("", "exactly one condition"),
            (
                "p99_above = 1\nshare_at_or_above = 1\nfraction = 0.5\n",
                "exactly one condition",
            ),
            ("share_at_or_above = 1\n", "exactly one condition"),
            ("p99_above = 1\nfraction = 0.5\n", "exactly one condition"),
            ("share_at_or_above = 1\nfraction = 1.0\n", "fraction"),
            ("share_at_or_above = 1\nfraction = 0.0\n", "fraction"),
            ("p99_above = 1000000000001\n", "p99_above"),
            ("p99_above = 1\nticks = 0\n", "ticks"),
            ("p99_above = 1\nwebhook = \"https://x/\"\n", "webhook"),
            ("p99_above = 1\nwebhook = \"http:///x\"\n", "webhook"),
            ("p99_above = 1\nwhen = 3\n", "when"),
        ] {
            let err = trigger(body).unwrap_err().to_string();
            assert!(err.contains(says), "{body}: {err}");
        }
        let twice = format!(
            "{watch}[[watch.trigger]]\nname = \"t\"\np99_above = 1\n[[watch.trigger]]\nname = \"t\"\np99_above = 2\n"
        );
        assert!(parse(&twice)
            .unwrap_err()
            .to_string()
            .contains("two triggers"));
        let unrecorded =
            format!("{watch}record = false\n[[watch.trigger]]\nname = \"t\"\np99_above = 1\n");
        assert!(parse(&unrecorded)
            .unwrap_err()
            .to_string()
            .contains("record = true"));
    }

    #[test]
    fn public_url_defaults_to_the_bind_address() {
        assert_eq!(parse("").unwrap().public_url(), "http://127.0.0.1:8080");
        let set = parse("public_url = \"https://heat.example/\"\n").unwrap();
        assert_eq!(set.public_url(), "https://heat.example");
        let err = parse("public_url = \"heat.example\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("public_url"), "{err}");
    }

    #[test]
    fn tokens_are_checked_by_digest() {
        let text = format!(
            "[[auth.tokens]]\nname = \"alice\"\nrole = \"operator\"\nsha256 = \"{}\"\n",
            hash_token("s3cret")
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.role_of("s3cret"), Some(("alice", Role::Operator)));
        assert_eq!(config.role_of("s3cret "), None);
        assert_eq!(config.role_of(""), None);
        assert!(
            parse("[[auth.tokens]]\nname = \"x\"\nrole = \"viewer\"\nsha256 = \"abc\"\n").is_err()
        );
        assert!(
            parse("[[auth.tokens]]\nname = \"x\"\nrole = \"admin\"\nsha256 = \"abc\"\n").is_err()
        );
    }
}
