//! A real Prometheus (Debian's `prometheus`, 2.42, installed by scripts/deps) for tests: on a
//! free loopback port with native histograms on, a temp storage directory and a short scrape
//! interval over given targets; queries through its HTTP API; killed on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// How long Prometheus may take to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one API call may take.
const QUERY_TIMEOUT_S: &str = "10";

/// A Prometheus process scraping heat-actix servers, stopped on drop.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`) every `scrape_interval` (job
    /// `heat`, so `instance` is the target). Waits until it is ready.
    pub fn start(targets: &[String], scrape_interval: Duration) -> Prometheus {
        let found = Command::new("prometheus").arg("--version").output();
        assert!(
            found.map(|o| o.status.success()).unwrap_or(false),
            "this test runs Prometheus, which is not installed (scripts/deps: apt-get install prometheus)"
        );
        let port = super::free_port();
        let dir = std::env::temp_dir().join(format!(
            "heat-actix-prometheus-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).expect("prometheus temp dir");
        let interval = format!("{}ms", scrape_interval.as_millis());
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n  \
             evaluation_interval: {interval}\n\
             scrape_configs:\n  - job_name: heat\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        );
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("prometheus config");
        let log = std::fs::File::create(dir.join("log")).expect("prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=native-histograms")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus");
        let mut prometheus = Prometheus { child, port, dir };
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!(
                    "prometheus exited at start ({status}):\n{}",
                    prometheus.log()
                );
            }
            if prometheus
                .get("/-/ready", &[])
                .is_some_and(|b| b.contains("Ready"))
            {
                return prometheus;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("prometheus not ready:\n{}", prometheus.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// GET a path with URL-encoded parameters; the body on success.
    fn get(&self, path: &str, params: &[(&str, &str)]) -> Option<String> {
        let mut curl = Command::new("curl");
        curl.args(["-sf", "--max-time", QUERY_TIMEOUT_S, "--get"]);
        for (k, v) in params {
            curl.arg("--data-urlencode").arg(format!("{k}={v}"));
        }
        curl.arg(format!("http://127.0.0.1:{}{path}", self.port));
        let out = curl.output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An API call's `data`, panicking on an error answer (a bad query is the test's bug).
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Json {
        let body = self
            .get(path, params)
            .unwrap_or_else(|| panic!("prometheus {path} {params:?} failed:\n{}", self.log()));
        let answer: Json = serde_json::from_str(&body).expect("prometheus answers JSON");
        assert_eq!(answer["status"], "success", "{path} {params:?}: {answer}");
        answer["data"].clone()
    }

    /// An instant query now: the `result` array (vector samples with `value` or `histogram`).
    pub fn query(&self, promql: &str) -> Vec<Json> {
        let data = self.api("/api/v1/query", &[("query", promql)]);
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query over the last `range` at `step`: the `result` matrix (with `values` or
    /// `histograms`).
    pub fn query_range(&self, promql: &str, range: Duration, step: Duration) -> Vec<Json> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = format!("{:.3}", now - range.as_secs_f64());
        let end = format!("{now:.3}");
        let step = format!("{}", step.as_secs_f64());
        let data = self.api(
            "/api/v1/query_range",
            &[
                ("query", promql),
                ("start", &start),
                ("end", &end),
                ("step", &step),
            ],
        );
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The scrape targets and their health (`up`, `down`, `unknown`) by `instance`.
    pub fn targets(&self) -> Vec<(String, String)> {
        let data = self.api("/api/v1/targets", &[]);
        data["activeTargets"]
            .as_array()
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        (
                            t["labels"]["instance"].as_str().unwrap_or("").to_owned(),
                            t["health"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
