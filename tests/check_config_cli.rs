//! `wa-sip-bridge check-config` and the CLI surface, run as a user would.

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wa-sip-bridge"));
    // The developer's own WSB_* variables must not leak into these checks.
    for (k, _) in std::env::vars() {
        if k.starts_with("WSB_") {
            c.env_remove(k);
        }
    }
    c
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/bridge.toml")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_annotated_example_passes() {
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(example())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one-line summary: {text}");
    assert!(text.contains("OK"), "{text}");
}

#[test]
fn every_problem_is_printed_with_its_key_and_exit_is_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[wati]
api_endpoint = "https://live-mt-server.wati.io/1"
token = ""
webhook_key = "k"
[http]
listen = "8080"
[trunk]
uri = "pbx.example.com"
allowed_sources = ["300.1.1.1/32"]
[media]
public_ip = "192.0.2.20"
rtp_port_min = 20001
codecs = ["opus", "g729"]
[webrtc]
public_ip = "192.0.2.20"
[sip]
public_addr = "192.0.2.20:5060"
[calls]
answer_mode = "sometimes"
"#,
    )
    .unwrap();
    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    let keys: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(
        keys,
        vec![
            "wati.token",
            "http.listen",
            "trunk.uri",
            "trunk.allowed_sources",
            "media.rtp_port_min",
            "media.codecs",
            "calls.answer_mode"
        ],
        "{text}"
    );
}

#[test]
fn environment_overrides_win_over_the_file() {
    let out = bin()
        .arg("check-config")
        .env("WSB_CONFIG", example())
        .env("WSB_TRUNK__URI", "sip:other-pbx.example.net:5080")
        .env("WSB_MEDIA__CODECS", "pcma")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(text.contains("sip:other-pbx.example.net:5080"), "{text}");
    assert!(text.contains("codecs pcma,"), "{text}");

    let out = bin()
        .arg("check-config")
        .arg("--config")
        .arg(example())
        .env("WSB_WATI__TOKEN", "")
        .env("WSB_MEDIA__RTP_PORT_MIN", "twenty")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("wati.token: required"), "{text}");
    assert!(
        text.contains("media.rtp_port_min: expected an integer"),
        "{text}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let out = bin()
        .args(["check-config", "--config", "/nonexistent/bridge.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("/nonexistent/bridge.toml: cannot read"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn run_refuses_an_invalid_config() {
    let out = bin()
        .args(["run", "--config", "/nonexistent/bridge.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
