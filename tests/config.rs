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
