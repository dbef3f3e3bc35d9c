//! The Debian package (cargo-deb) installed as an operator would: built
//! from the test build's binary, installed with apt as root, its files,
//! system user and unit checked (`systemd-analyze verify`), the installed
//! binary run as the unit runs it (as its user, in its state directory:
//! `check-config` on the installed config, then `demo`), then purged —
//! files, state and user gone. Needs root and cargo-deb
//! (`tests/setup-system.sh` installs it); without them it says it is
//! skipped, except under `CI=true`, where that is a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().expect("the command runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn ok(cmd: &mut Command) -> String {
    let what = format!("{cmd:?}");
    let (success, text) = run(cmd);
    assert!(success, "{what} failed:\n{text}");
    text
}

fn usable() -> bool {
    let root = run(Command::new("id").arg("-u")).1.trim() == "0";
    let deb = run(Command::new("cargo").args(["deb", "--version"])).0;
    if root && deb {
        return true;
    }
    let why = format!("skipped: needs root ({root}) and cargo-deb ({deb})");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI=true: {why}"
    );
    eprintln!("{why}");
    false
}

#[test]
fn the_package_installs_runs_as_its_unit_would_and_purges() {
    if !usable() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    // The binary this test build made (no release build here: the package's
    // layout is what is under test; `cargo deb` alone builds a release).
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_wa-sip-bridge"));
    let profile_dir = binary.parent().unwrap().to_path_buf();
    let profile = profile_dir
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let cargo_profile = if profile == "debug" {
        "dev"
    } else {
        profile.as_str()
    };
    ok(Command::new("cargo")
        .current_dir(root)
        .args([
            "deb",
            "--no-build",
            "--no-strip",
            "--profile",
            cargo_profile,
            "--output",
        ])
        .arg(out.path()));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb");
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    for f in [
        "./usr/bin/wa-sip-bridge",
        "./etc/wa-sip-bridge/bridge.toml",
        "/systemd/system/wa-sip-bridge.service",
        "./usr/share/wa-sip-bridge/sip-profiles/asterisk/pjsip.conf",
        "./usr/share/wa-sip-bridge/sip-profiles/freeswitch/sip_profiles/external/wa-bridge.xml",
        "./usr/share/wa-sip-bridge/grafana/wa-sip-bridge.json",
    ] {
        assert!(contents.contains(f), "{f} in the package:\n{contents}");
    }
    let lock = ["-o", "DPkg::Lock::Timeout=300"];
    let _ = run(Command::new("apt-get")
        .args(["purge", "-y", "-qq"])
        .args(lock)
        .arg("wa-sip-bridge"));
    ok(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(lock)
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));

    // Files, user, modes, unit.
    assert!(Path::new("/usr/bin/wa-sip-bridge").is_file());
    ok(Command::new("getent").args(["passwd", "wa-sip-bridge"]));
    let conf = ok(Command::new("stat").args(["-c", "%a %U %G", "/etc/wa-sip-bridge/bridge.toml"]));
    assert_eq!(
        conf.trim(),
        "640 root wa-sip-bridge",
        "the config holds secrets"
    );
    let state = ok(Command::new("stat").args(["-c", "%U", "/var/lib/wa-sip-bridge"]));
    assert_eq!(state.trim(), "wa-sip-bridge");
    let unit = std::fs::read_to_string("/lib/systemd/system/wa-sip-bridge.service").unwrap();
    for line in [
        "Type=notify",
        "User=wa-sip-bridge",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(line), "{line} in the unit");
    }
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(stop >= 30, "TimeoutStopSec covers calls.drain_s (30 s)");
    let (verified, why) = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg("/lib/systemd/system/wa-sip-bridge.service"));
    assert!(verified, "systemd-analyze verify:\n{why}");

    // As the unit runs it: its user, its working directory.
    let as_unit = |args: &[&str]| {
        let mut c = Command::new("runuser");
        c.args(["-u", "wa-sip-bridge", "--", "/usr/bin/wa-sip-bridge"])
            .args(args)
            .current_dir("/var/lib/wa-sip-bridge");
        c
    };
    let checked = ok(&mut as_unit(&[
        "check-config",
        "--config",
        "/etc/wa-sip-bridge/bridge.toml",
    ]));
    assert!(checked.contains("OK"), "{checked}");
    let demo = ok(&mut as_unit(&["demo"]));
    eprintln!("{demo}");

    ok(Command::new("apt-get")
        .args(["purge", "-y", "-qq"])
        .args(lock)
        .arg("wa-sip-bridge")
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(!Path::new("/usr/bin/wa-sip-bridge").exists());
    assert!(!Path::new("/etc/wa-sip-bridge/bridge.toml").exists());
    assert!(!Path::new("/var/lib/wa-sip-bridge").exists());
    assert!(
        !run(Command::new("getent").args(["passwd", "wa-sip-bridge"])).0,
        "the user is gone"
    );
}
