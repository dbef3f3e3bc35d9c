//! Call records out: with `cdr.webhook_url` each finished call's record is
//! POSTed as JSON (bearer token, `Idempotency-Key`) from a durable outbox.
//! The receiver is down (503) at first: the push is retried, and the record
//! stays queued across a restart of the bridge (same store file); once the
//! receiver is up the queued record arrives, and so does a new one; the
//! outbox is then empty. `GET /calls/history?since=` lists ended calls in
//! the order they ended, after `since`. (The calls: PBX INVITEs refused
//! with 488 by `media.srtp = "required"`, which end at once.)

mod support;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use support::fake_wati::FakeWati;
use wa_sip_bridge::Bridge;

#[derive(Clone, Default)]
struct Receiver {
    status: Arc<AtomicU16>,
    /// (Authorization, Idempotency-Key, body) of every push, answered or not.
    got: Arc<Mutex<Vec<(String, String, Value)>>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    r.got
        .lock()
        .unwrap()
        .push((h("authorization"), h("idempotency-key"), json));
    StatusCode::from_u16(r.status.load(Ordering::SeqCst)).unwrap()
}

async fn start_receiver(r: Receiver) -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route("/cdr", axum::routing::post(receive))
        .with_state(r);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A plain RTP/AVP offer, which `media.srtp = "required"` refuses with 488.
async fn refused_invite(bridge: &Bridge, n: u32) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ours = sock.local_addr().unwrap();
    let to = bridge.sip_addr;
    let sdp = format!(
        "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n",
        ours.port() + 2
    );
    let msg = format!(
        "INVITE sip:14085551234@{to} SIP/2.0\r\nVia: SIP/2.0/UDP {ours};branch=z9hG4bK-cdr-{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:agent@{ours}>;tag=c{n}\r\nTo: <sip:14085551234@{to}>\r\nCall-ID: cdr-{n}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@{ours}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    sock.send_to(msg.as_bytes(), to).await.unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (len, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        if buf[..len].starts_with(b"SIP/2.0 488") {
            return;
        }
    }
}

async fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + limit;
    while !f() {
        assert!(std::time::Instant::now() < end, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_are_pushed_at_least_once_across_a_receiver_outage_and_a_restart() {
    let receiver = Receiver::default();
    receiver.status.store(503, Ordering::SeqCst);
    let at = start_receiver(receiver.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("calls.db");
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[http]\nadmin_token = \"adm-1\"\n[media]\nsrtp = \"required\"\nrtp_port_min = 24000\nrtp_port_max = 24099\n[webrtc]\nport_min = 44000\nport_max = 44049\n[storage]\nurl = \"sqlite://{}\"\n[cdr]\nwebhook_url = \"http://{at}/cdr\"\nbearer_token = \"cdr-token\"\ntimeout_s = 2\n",
        db.display()
    );
    let settings = support::settings_with(&wati.api_endpoint(), &extra);

    let bridge = Bridge::start(settings.clone()).await.unwrap();
    refused_invite(&bridge, 1).await;
    let got = receiver.got.clone();
    until("a first push", Duration::from_secs(10), || {
        !got.lock().unwrap().is_empty()
    })
    .await;
    assert_eq!(
        bridge.store.cdr_pending().await.unwrap(),
        1,
        "still queued after a 503"
    );
    bridge.shutdown().await.unwrap();

    // The receiver comes back; so does the bridge, on the same store.
    receiver.status.store(200, Ordering::SeqCst);
    let bridge = Bridge::start(settings).await.unwrap();
    until(
        "the queued record delivered",
        Duration::from_secs(15),
        || {
            got.lock()
                .unwrap()
                .iter()
                .any(|(_, _, b)| b["sip_call_id"] == "cdr-1@test")
                && got.lock().unwrap().len() >= 2
        },
    )
    .await;
    refused_invite(&bridge, 2).await;
    until("the new record delivered", Duration::from_secs(10), || {
        got.lock()
            .unwrap()
            .iter()
            .any(|(_, _, b)| b["sip_call_id"] == "cdr-2@test")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        bridge.store.cdr_pending().await.unwrap(),
        0,
        "the outbox is empty"
    );

    let pushes = got.lock().unwrap().clone();
    for (auth, key, body) in &pushes {
        assert_eq!(auth, "Bearer cdr-token");
        assert_eq!(key, &format!("wsb-call-{}", body["id"]));
        assert!(
            body["end_cause"].as_str().unwrap().starts_with("pbx_sdp: "),
            "{body}"
        );
        assert_eq!(body["sip_code"], 488);
        assert_eq!(body["direction"], "outbound");
        assert!(body["ended_at_ms"].as_i64().is_some());
    }
    let first = pushes
        .iter()
        .filter(|(_, _, b)| b["sip_call_id"] == "cdr-1@test")
        .count();
    assert!(first >= 2, "pushed again after the 503: {first}");

    // Pull-style: the history, all of it, then after the first.
    let client = reqwest::Client::new();
    let history = |since: i64| {
        client
            .get(format!(
                "http://{}/calls/history?since={since}",
                bridge.http_addr
            ))
            .bearer_auth("adm-1")
            .send()
    };
    let all: Value = history(0).await.unwrap().json().await.unwrap();
    let calls = all["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{all}");
    assert_eq!(calls[0]["sip_call_id"], "cdr-1@test");
    let after: Value = history(calls[0]["ended_at_ms"].as_i64().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after["calls"].as_array().unwrap().len(), 1);
    assert_eq!(after["calls"][0]["sip_call_id"], "cdr-2@test");
    let bad = client
        .get(format!(
            "http://{}/calls/history?since=yesterday",
            bridge.http_addr
        ))
        .bearer_auth("adm-1")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("since"));
    bridge.shutdown().await.unwrap();
}
