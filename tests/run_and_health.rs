//! The real binary: `run` serves /healthz, /readyz and /metrics, and stops
//! cleanly on SIGTERM.

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::free_port;

/// The bridge binary with a config whose HTTP listener is on `port`.
fn spawn_bridge(dir: &std::path::Path, port: u16) -> std::process::Child {
    spawn_bridge_with(dir, port, &[])
}

fn spawn_bridge_with(
    dir: &std::path::Path,
    port: u16,
    env: &[(&str, String)],
) -> std::process::Child {
    let config = dir.join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[wati]
api_endpoint = "http://127.0.0.1:9/123456"
token = "t"
webhook_key = "k"
[http]
listen = "127.0.0.1:{port}"
[webrtc]
bind_ip = "127.0.0.1"
[sip]
listen = "127.0.0.1:0"
[trunk]
uri = "sip:127.0.0.1:5099"
[media]
rtp_ip = "127.0.0.1"
[storage]
url = "sqlite://{}"
"#,
            dir.join("calls.db").display()
        ),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_wa-sip-bridge"))
        .arg("--config")
        .arg(&config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn stderr_of(child: &mut std::process::Child) -> String {
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    log
}

#[tokio::test]
async fn run_serves_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::new();
    // A bridge that exits at start says why (a port taken by a process
    // outside the tests: started again on another port).
    let mut attempt = 0;
    let (mut child, base, health) = loop {
        attempt += 1;
        let port = free_port();
        let mut child = spawn_bridge(dir.path(), port);
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let health = loop {
            if let Some(exit) = child.try_wait().unwrap() {
                break Err(format!(
                    "bridge exited at start ({exit}):\n{}",
                    stderr_of(&mut child)
                ));
            }
            match http.get(format!("{base}/healthz")).send().await {
                Ok(r) => break Ok(r),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("bridge never listened: {e}\n{}", stderr_of(&mut child));
                }
            }
        };
        match health {
            Ok(h) => break (child, base, h),
            Err(why) if attempt < 3 && why.contains("in use") => eprintln!("{why}"),
            Err(why) => panic!("{why}"),
        }
    };
    assert_eq!(health.status().as_u16(), 200);
    let ready = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);
    let unauthorised = http
        .post(format!("{base}/webhooks/wati/terminate"))
        .body(r#"{"callId":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status().as_u16(), 401);
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("# TYPE wsb_webhooks counter"), "{metrics}");
    assert!(
        metrics.contains(r#"wsb_webhooks_total{kind="terminate",status="401"} 1"#),
        "{metrics}"
    );

    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bridge did not stop on SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(exit.success(), "exit {exit:?}\n{log}");
    assert!(log.contains("shutting down"), "{log}");
}

/// Under systemd (`Type=notify`, as the packaged unit runs it): READY=1
/// once listening; a SIGHUP with nothing to reload leaves it running and
/// says RELOADING=1 then READY=1 (SIGHUP's default action would have ended
/// it); WATCHDOG=1 at half of WATCHDOG_USEC; STOPPING=1 on SIGTERM, then a
/// clean exit.
#[tokio::test]
async fn under_systemd_it_notifies_ready_reload_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let port = free_port();
    let mut child = spawn_bridge_with(
        dir.path(),
        port,
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );
    let mut seen = Vec::<String>::new();
    let next = |seen: &mut Vec<String>| {
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).expect("a notification within 15 s");
        let s = String::from_utf8_lossy(&buf[..n]).to_string();
        seen.push(s.clone());
        s
    };
    assert!(next(&mut seen).starts_with("READY=1"), "{seen:?}");
    let pid = child.id().to_string();
    let kill = |sig: &str| {
        assert!(Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success());
    };
    kill("-HUP");
    let got = |want: &str, seen: &mut Vec<String>| {
        for _ in 0..20 {
            if next(seen) == want {
                return;
            }
        }
        panic!("no {want}: {seen:?}");
    };
    got("RELOADING=1", &mut seen);
    got("READY=1", &mut seen);
    got("WATCHDOG=1", &mut seen);
    assert!(child.try_wait().unwrap().is_none(), "SIGHUP did not end it");
    let health = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    kill("-TERM");
    got("STOPPING=1", &mut seen);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "stopped within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}: {}", stderr_of(&mut child));
}
