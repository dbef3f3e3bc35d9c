//! The running bridge's SIP side: bound on `sip.listen`, answers OPTIONS,
//! refuses INVITEs with 503 + Retry-After until the call flows exist, and
//! registers to a challenging registrar (sipp) with the state in `/readyz`
//! and `wsb_sip_registered`.

mod support;

use std::time::Duration;

use support::fake_wati::FakeWati;
use support::{settings, settings_with};
use wa_sip_bridge::Bridge;

fn request(
    method: &str,
    bridge: std::net::SocketAddr,
    ours: std::net::SocketAddr,
    cseq: u32,
) -> Vec<u8> {
    format!(
        "{method} sip:14085551234@{bridge} SIP/2.0\r\nVia: SIP/2.0/UDP {ours};branch=z9hG4bK-{method}-{cseq};rport\r\nMax-Forwards: 70\r\nFrom: <sip:agent@{ours}>;tag=t{cseq}\r\nTo: <sip:14085551234@{bridge}>\r\nCall-ID: svc-{cseq}@test\r\nCSeq: {cseq} {method}\r\nContact: <sip:agent@{ours}>\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

async fn responses(sock: &tokio::net::UdpSocket, until_final: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await
        else {
            break;
        };
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let is_final = !text.starts_with("SIP/2.0 1");
        out.push(text);
        if !until_final || is_final {
            break;
        }
    }
    out
}

#[tokio::test]
async fn options_answered_and_invites_refused_until_calls_exist() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings(&wati.api_endpoint())).await.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ours = sock.local_addr().unwrap();
    sock.send_to(
        &request("OPTIONS", bridge.sip_addr, ours, 1),
        bridge.sip_addr,
    )
    .await
    .unwrap();
    let r = responses(&sock, true).await;
    assert!(r[0].starts_with("SIP/2.0 200 OK"), "{r:?}");
    assert!(r[0].contains("Allow: INVITE"), "{r:?}");

    sock.send_to(
        &request("INVITE", bridge.sip_addr, ours, 2),
        bridge.sip_addr,
    )
    .await
    .unwrap();
    let r = responses(&sock, true).await;
    assert!(
        r.first()
            .is_some_and(|m| m.starts_with("SIP/2.0 100 Trying")),
        "{r:?}"
    );
    let last = r.last().unwrap();
    assert!(last.starts_with("SIP/2.0 503"), "{r:?}");
    assert!(last.contains("Retry-After: 60"), "{last}");

    let ready: serde_json::Value = reqwest::get(format!("http://{}/readyz", bridge.http_addr))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["checks"]["sip"], "ok");
    assert_eq!(ready["checks"]["registration"], "n/a");
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn registration_state_reaches_readyz_and_metrics() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cp = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mp = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut sipp = tokio::process::Command::new("sipp")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-cp",
            &cp.to_string(),
            "-mp",
            &mp.to_string(),
            "-nostdin",
            "-m",
            "1",
            "-timeout",
            "30s",
        ])
        .arg("-sf")
        .arg(format!(
            "{}/tests/sipp/registrar_401.xml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp is installed (tests/setup-system.sh)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{port}\"\nregister = true\nregister_expires = 60\nusername = \"wa-bridge\"\npassword = \"s3cret\"\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let mut registered = false;
    for _ in 0..100 {
        let ready: serde_json::Value = reqwest::get(format!("http://{}/readyz", bridge.http_addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["checks"]["registration"] == "ok" {
            registered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(registered, "registration never became ok");
    let metrics = reqwest::get(format!("http://{}/metrics", bridge.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("wsb_sip_registered 1"), "{metrics}");
    let status = tokio::time::timeout(Duration::from_secs(20), sipp.wait())
        .await
        .expect("sipp done")
        .unwrap();
    assert!(
        status.success(),
        "sipp saw the challenge answered and the refresh"
    );
    bridge.shutdown().await.unwrap();
}
