//! Start-up refuses a bad configuration and says which key is wrong.

use std::process::Command;

fn run_with_config(text: &str) -> (bool, String) {
    let path = std::env::temp_dir().join(format!(
        "heat-actix-config-{}-{}.toml",
        std::process::id(),
        text.len()
    ));
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_heat-actix"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_key_stops_start_up_naming_the_key() {
    let (ok, stderr) = run_with_config("bind = \"127.0.0.1:0\"\nmax_sesions = 4\n");
    assert!(!ok, "start-up must fail");
    assert!(
        stderr.contains("max_sesions"),
        "the message names the key: {stderr}"
    );
}

#[test]
fn an_out_of_range_value_stops_start_up_naming_the_key() {
    let (ok, stderr) = run_with_config("tick_ms = 20\n");
    assert!(!ok);
    assert!(stderr.contains("tick_ms"), "{stderr}");
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_heat-actix"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--config", "--bind", "--max-sessions", "--tick-ms", "--log"] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

/// The `Range: A..=B` each integer key documents in config/heat.toml, as
/// (dotted key, A, B); every integer key must document one.
fn documented_ranges() -> Vec<(String, u64, u64)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/heat.toml")).unwrap();
    let mut section = String::new();
    let mut range: Option<(u64, u64)> = None;
    let mut found = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(r) = line.strip_prefix("# Range: ") {
            let (lo, hi) = r.split_once("..=").expect("Range: A..=B");
            range = Some((lo.trim().parse().unwrap(), hi.trim().parse().unwrap()));
        } else if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            section = format!("{name}.");
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
        } else if let Some((key, value)) = line.split_once(" = ").filter(|_| !line.starts_with('#'))
        {
            let key = format!("{section}{key}");
            match range.take() {
                Some((lo, hi)) => found.push((key, lo, hi)),
                None => assert!(
                    value.parse::<i64>().is_err(),
                    "{key} is a number without a documented Range in config/heat.toml"
                ),
            }
        }
    }
    found
}

/// Config text setting one (dotted) key.
fn with_value(key: &str, value: u64) -> String {
    match key.rsplit_once('.') {
        // A trigger needs a watch, a name and a condition besides the key under test.
        Some(("watch.trigger", key)) => {
            let condition = match key {
                "p99_above" => "",
                "share_at_or_above" => "fraction = 0.5\n",
                _ => "p99_above = 1000\n",
            };
            format!(
                "[[watch]]\nname = \"t\"\npreset = \"syscall-latency\"\n\
                 [[watch.trigger]]\nname = \"t\"\n{condition}{key} = {value}\n"
            )
        }
        // A watch needs a name and a program besides the key under test.
        Some(("watch", key)) => {
            format!("[[watch]]\nname = \"t\"\npreset = \"syscall-latency\"\n{key} = {value}\n")
        }
        Some((section, key)) => format!("[{section}]\n{key} = {value}\n"),
        None => format!("{key} = {value}\n"),
    }
}

#[test]
fn every_documented_range_is_what_validate_enforces() {
    use heat_actix::config::Config;
    let parse = |text: &str| Config::parse(text, std::path::Path::new("range-test.toml"));
    let ranges = documented_ranges();
    assert!(ranges.len() >= 10, "ranges found: {ranges:?}");
    for (key, lo, hi) in &ranges {
        for ok in [*lo, *hi] {
            if let Err(e) = parse(&with_value(key, ok)) {
                panic!("{key} = {ok} is documented as allowed but refused: {e}");
            }
        }
        let outside = [lo.checked_sub(1), hi.checked_add(1)];
        for bad in outside.into_iter().flatten() {
            let err = parse(&with_value(key, bad))
                .expect_err(&format!(
                    "{key} = {bad} is outside {lo}..={hi} but accepted"
                ))
                .to_string();
            let leaf = key.rsplit('.').next().unwrap();
            assert!(err.contains(leaf), "the error names {key}: {err}");
        }
    }
}

#[test]
fn the_readme_settings_table_documents_the_same_ranges() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for (key, lo, hi) in documented_ranges() {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` |")))
            .unwrap_or_else(|| panic!("README's settings table has no row for `{key}`"));
        assert!(
            row.contains(&format!("{lo}..={hi}")),
            "README gives `{key}` another range than config/heat.toml ({lo}..={hi}): {row}"
        );
    }
}

#[test]
fn a_flag_out_of_range_is_named_as_the_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_heat-actix"))
        .args(["--tick-ms", "50"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--tick-ms") && !stderr.contains("config key"),
        "{stderr}"
    );
}

#[test]
fn hash_token_refuses_an_empty_or_blank_token() {
    use std::io::Write;
    for token in ["\n", "   \t \n", ""] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_heat-actix"))
            .arg("hash-token")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(token.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{token:?} was hashed");
        assert!(out.stdout.is_empty(), "{token:?} printed a config line");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("empty or only whitespace"), "{stderr}");
    }
}

#[test]
fn as_an_unprivileged_user_tracefs_is_reported_mounted_but_unreadable() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test drops to user nobody and needs root to do it"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        mounts.contains(" /sys/kernel/tracing tracefs "),
        "tracefs must be mounted at /sys/kernel/tracing for this test"
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_heat-actix"))
        .args(["--bind", "127.0.0.1:0"])
        .output()
        .expect("setpriv (util-linux) is installed");
    assert!(!out.status.success(), "start-up must stop");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mounted at /sys/kernel/tracing but not readable by this user")
            && stderr.contains("CAP_")
            && !stderr.contains("is not mounted"),
        "{stderr}"
    );
}
