//! The running bridge's SIP side: bound on `sip.listen`, answers OPTIONS,
//! refuses an INVITE requiring an extension it lacks with 420, one without
//! an audio offer with 488, refuses INVITEs over
//! `calls.max_concurrent` with 503 + Retry-After (and a WhatsApp call over
//! it is terminated at Wati; each refused call leaves an ended record), and
//! registers to a challenging registrar (sipp) with the state in `/readyz`
//! and `wsb_sip_registered`.

mod support;

use std::time::Duration;

use support::fake_wati::FakeWati;
use support::settings_with;
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

fn invite_with_sdp(bridge: std::net::SocketAddr, ours: std::net::SocketAddr, cseq: u32) -> Vec<u8> {
    let sdp = format!(
        "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ours.port() + 2
    );
    let text = String::from_utf8(request("INVITE", bridge, ours, cseq)).unwrap();
    text.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            sdp.len()
        ),
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
async fn options_answered_required_extension_420_offer_without_audio_488_and_over_capacity_503() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings_with(
        &wati.api_endpoint(),
        "[calls]\nmax_concurrent = 1\n[webrtc]\nport_min = 42400\nport_max = 42499\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\n",
    ))
    .await
    .unwrap();
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

    // An extension the bridge lacks, required (RFC 3261 §8.2.2.3): 420 naming it, no call.
    let requiring = String::from_utf8(invite_with_sdp(bridge.sip_addr, ours, 10))
        .unwrap()
        .replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRequire: x-frobnicate\r\n",
        );
    sock.send_to(requiring.as_bytes(), bridge.sip_addr)
        .await
        .unwrap();
    let r = responses(&sock, true).await;
    let last = r.last().unwrap();
    assert!(last.starts_with("SIP/2.0 420 Bad Extension"), "{r:?}");
    assert!(last.contains("Unsupported: x-frobnicate"), "{last}");
    assert!(wati
        .requests_to(support::fake_wati::Route::OutboundCall)
        .is_empty());

    // An offer without audio (same length: the Content-Length still holds).
    let video_only = String::from_utf8(invite_with_sdp(bridge.sip_addr, ours, 2))
        .unwrap()
        .replace("m=audio ", "m=video ");
    sock.send_to(video_only.as_bytes(), bridge.sip_addr)
        .await
        .unwrap();
    let r = responses(&sock, true).await;
    assert!(
        r.first()
            .is_some_and(|m| m.starts_with("SIP/2.0 100 Trying")),
        "{r:?}"
    );
    let last = r.last().unwrap();
    assert!(last.starts_with("SIP/2.0 488"), "{r:?}");
    assert!(
        last.contains("Reason: SIP;cause=488;text=\"no audio m= line\""),
        "{last}"
    );

    // One call ringing at WhatsApp fills max_concurrent = 1: the next gets 503.
    sock.send_to(&invite_with_sdp(bridge.sip_addr, ours, 3), bridge.sip_addr)
        .await
        .unwrap();
    let r = responses(&sock, false).await;
    assert!(r[0].starts_with("SIP/2.0 100"), "{r:?}");
    let mut placed = false;
    for _ in 0..100 {
        if !wati
            .requests_to(support::fake_wati::Route::OutboundCall)
            .is_empty()
        {
            placed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(placed, "first call placed at Wati");
    sock.send_to(&invite_with_sdp(bridge.sip_addr, ours, 4), bridge.sip_addr)
        .await
        .unwrap();
    let r = responses(&sock, true).await;
    let last = r.last().unwrap();
    assert!(last.starts_with("SIP/2.0 503"), "{r:?}");
    assert!(last.contains("Call-ID: svc-4@test"), "{last}");
    assert!(last.contains("Retry-After: 10"), "{last}");
    let metrics = bridge.metrics.encode();
    assert!(
        metrics.contains(r#"wsb_calls_total{direction="outbound",result="refused_capacity"} 1"#),
        "{metrics}"
    );
    // The refused INVITE leaves a call record, ended at once (design §2).
    let mut refused = None;
    for _ in 0..100 {
        let rows = bridge.store.recent_calls(10).await.unwrap();
        refused = rows
            .into_iter()
            .find(|r| r.sip_call_id.as_deref() == Some("svc-4@test"));
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("a record of the refused INVITE");
    assert_eq!(refused.end_cause.as_deref(), Some("refused_capacity"));
    assert_eq!(refused.sip_code, Some(503));
    assert_eq!(refused.waid.as_deref(), Some("14085551234"));
    assert!(refused.ended_at_ms.is_some());

    // A WhatsApp call over capacity: terminated at Wati, and recorded.
    let (_peer, offer) = support::wa_peer::WaPeer::offer(
        "127.0.0.1:9".parse().unwrap(),
        std::time::Instant::now(),
        None,
    )
    .unwrap();
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(support::WEBHOOK_KEY),
            &serde_json::json!({"callId": "wacid.over-capacity", "sdp": offer, "from": "447700900123"}),
        )
        .await;
    assert_eq!(status, 200);
    let rows = support::ended_call_records(&bridge.store, "wacid.over-capacity").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].end_cause.as_deref(), Some("refused_capacity"));
    assert_eq!(rows[0].waid.as_deref(), Some("447700900123"));
    let terminated = support::wa_user::wait_for_request(
        &wati,
        support::fake_wati::Route::Terminate,
        Duration::from_secs(5),
    )
    .await
    .expect("the refused WhatsApp call terminated at Wati");
    assert!(
        terminated.path.contains("wacid.over-capacity"),
        "{}",
        terminated.path
    );

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

/// `media.srtp = "required"` (RFC 4568 over SDES): a PBX's plain RTP/AVP
/// offer is refused with 488 and a Reason saying why, before anything
/// reaches Wati; the refused call leaves one ended record with the code.
/// The same offer with an `a=crypto` line on RTP/SAVP gets past the check.
#[tokio::test]
async fn srtp_required_refuses_a_plain_offer_with_488() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings_with(
        &wati.api_endpoint(),
        "[webrtc]\nport_min = 42500\nport_max = 42549\n[media]\nrtp_port_min = 23000\nrtp_port_max = 23099\nsrtp = \"required\"\n",
    ))
    .await
    .unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ours = sock.local_addr().unwrap();
    sock.send_to(&invite_with_sdp(bridge.sip_addr, ours, 7), bridge.sip_addr)
        .await
        .unwrap();
    let r = responses(&sock, true).await;
    let last = r.last().unwrap();
    assert!(last.starts_with("SIP/2.0 488"), "{r:?}");
    assert!(last.contains("Reason: SIP;cause=488;text="), "{last}");
    assert!(
        last.to_ascii_lowercase().contains("srtp"),
        "the reason names SRTP: {last}"
    );
    assert!(wati
        .requests_to(support::fake_wati::Route::OutboundCall)
        .is_empty());
    let mut refused = None;
    for _ in 0..100 {
        let rows = bridge.store.recent_calls(10).await.unwrap();
        refused = rows
            .into_iter()
            .find(|r| r.sip_call_id.as_deref() == Some("svc-7@test") && r.ended_at_ms.is_some());
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = refused.expect("an ended record of the refused INVITE");
    assert_eq!(refused.sip_code, Some(488));

    // The same offer secured: RTP/SAVP with a key. Not a 488 this time.
    let key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz";
    let secured = String::from_utf8(invite_with_sdp(bridge.sip_addr, ours, 8))
        .unwrap()
        .replace("RTP/AVP 0\r\n", "RTP/SAVP 0\r\n");
    let line = format!("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{key}\r\n");
    let (head, body) = secured.split_once("\r\n\r\n").unwrap();
    let body = format!("{body}{line}");
    let head = head.replace(
        &format!("Content-Length: {}", body.len() - line.len()),
        &format!("Content-Length: {}", body.len()),
    );
    sock.send_to(format!("{head}\r\n\r\n{body}").as_bytes(), bridge.sip_addr)
        .await
        .unwrap();
    let r = responses(&sock, false).await;
    assert!(
        r.first().is_some_and(|m| !m.starts_with("SIP/2.0 488")),
        "a secured offer passes the SRTP check: {r:?}"
    );
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
    assert!(
        support::pbx::registered(&bridge).await,
        "registration never became ok"
    );
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
