//! The real binary crashes (SIGKILL) in the middle of two answered calls, an
//! inbound one (the bridge is the SIP UAC) and an outbound one (the bridge is
//! the UAS); started again on the same database, it ends both on both sides:
//! terminate at Wati, and a BYE in each saved dialog that the PBX side
//! accepts as its own call's. The records are closed with the cause
//! `bridge_restarted`.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_wati::{FakeWati, Route};
use support::wa_peer::WaPeer;
use support::wa_user::{answer_outbound_call, script_outbound_call_id};
use support::wa_user::{run_media, wait_for_request};
use support::WEBHOOK_KEY;
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket, place_call, Dial};

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(config: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_wa-sip-bridge"))
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("bridge never listened on {port}");
}

#[tokio::test]
async fn a_crash_mid_call_is_cleaned_up_on_both_sides_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let wati = FakeWati::start().await.unwrap();
    let pbx_sock = extension_socket("ivr").await.unwrap();
    let pbx_addr = pbx_sock.local_addr().unwrap();
    let pbx = tokio::spawn(answer_one_call(pbx_sock, "", Duration::from_secs(60)));
    let port = free_tcp_port();
    let sip_port = support::free_port();
    let db = dir.path().join("calls.db");
    let config = dir.path().join("bridge.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[wati]
api_endpoint = "{api}"
token = "t"
webhook_key = "{WEBHOOK_KEY}"
timeout_ms = 2000
[http]
listen = "127.0.0.1:{port}"
[webrtc]
bind_ip = "127.0.0.1"
port_min = 42300
port_max = 42399
[sip]
listen = "127.0.0.1:{sip_port}"
[trunk]
uri = "sip:{pbx_addr}"
allowed_sources = ["127.0.0.1/32"]
[media]
rtp_ip = "127.0.0.1"
rtp_port_min = 22000
rtp_port_max = 22999
codecs = ["pcmu"]
[storage]
url = "sqlite://{db}"
"#,
            api = wati.api_endpoint(),
            db = db.display()
        ),
    )
    .unwrap();
    let mut first = start(&config);
    wait_healthy(port).await;
    let http: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // A WhatsApp user calls; the PBX extension answers; media flows.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, offer) =
        WaPeer::offer(sock.local_addr().unwrap(), Instant::now(), None).unwrap();
    let call_id = "wacid.crash-HBgMOTE3MzU4NTgwMTgwFQIAEhgg";
    let (status, _) = wati
        .post_webhook(
            http,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer, "contact": {"ContactNumber": "917358580180"}}),
        )
        .await;
    assert_eq!(status, 200);
    let accept = wait_for_request(&wati, Route::Accept, Duration::from_secs(10))
        .await
        .expect("accepted at Wati");
    peer.accept_answer(accept.json.as_ref().unwrap()["Sdp"].as_str().unwrap())
        .unwrap();
    let media = run_media(&mut peer, &sock, Duration::from_secs(2), 1000.0, "")
        .await
        .unwrap();
    assert!(media.connected);

    // An agent calls a WhatsApp user, who answers.
    let out_call_id = "wacid.crash-outbound-1";
    script_outbound_call_id(&wati, out_call_id);
    let bridge_sip: std::net::SocketAddr = format!("127.0.0.1:{sip_port}").parse().unwrap();
    let agent = tokio::spawn(place_call(
        extension_socket("agent").await.unwrap(),
        bridge_sip,
        Dial {
            talk: Duration::from_secs(60),
            limit: Duration::from_secs(60),
            ..Dial::new("447700900123")
        },
    ));
    let out_sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut out_peer, _) = answer_outbound_call(
        &wati,
        http,
        WEBHOOK_KEY,
        out_call_id,
        &out_sock,
        Duration::ZERO,
    )
    .await
    .unwrap();
    let media = run_media(&mut out_peer, &out_sock, Duration::from_secs(2), 1000.0, "")
        .await
        .unwrap();
    assert!(media.connected);

    // Crash.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(wati.requests_to(Route::Terminate).is_empty());

    // Restart: the call is ended on both sides.
    let mut second = start(&config);
    wait_healthy(port).await;
    let mut terms = Vec::new();
    for _ in 0..200 {
        terms = wati.requests_to(Route::Terminate);
        if terms.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        terms.len(),
        2,
        "both calls terminated at Wati after the restart"
    );
    assert!(terms
        .iter()
        .any(|t| t.path.contains("crash-HBgMOTE3MzU4NTgwMTgwFQIAEhgg")));
    assert!(terms.iter().any(|t| t.path.contains("crash-outbound-1")));
    let agent_report = tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent's call ended")
        .unwrap()
        .unwrap();
    assert_eq!(agent_report.final_code, Some(200));
    assert!(
        agent_report.bye_received,
        "BYE in the saved UAS-side dialog reached the agent"
    );
    let report = tokio::time::timeout(Duration::from_secs(10), pbx)
        .await
        .expect("the PBX's call ended")
        .unwrap()
        .unwrap();
    assert!(
        report.bye_received,
        "BYE in the saved dialog reached the PBX"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status();
    let _ = second.wait();
    let store = wa_sip_bridge::store::Store::open(
        &wa_sip_bridge::config::StorageSettings::SqliteFile(db),
        std::sync::Arc::new(wa_sip_bridge::health::Health::default()),
    )
    .unwrap();
    let rows = store.calls_by_wa_call_id(call_id.into()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("bridge_restarted"));
    assert!(store.live_calls().await.unwrap().is_empty());
    let rows = store.calls_by_wa_call_id(out_call_id.into()).await.unwrap();
    assert_eq!(rows[0].end_cause.as_deref(), Some("bridge_restarted"));
    assert_eq!(wati.requests_to(Route::Terminate).len(), 2);
}

/// The crash came after a New Inbound Call webhook was accepted (logged,
/// answered 200) but before its call was recorded: the next start finds the
/// logged offer without a record, terminates the WhatsApp call at Wati (its
/// caller would otherwise ring until WhatsApp gives up) and records it with
/// the cause `bridge_restarted`. A call that has its record is left alone.
#[tokio::test]
async fn an_inbound_offer_accepted_but_never_started_is_ended_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let wati = FakeWati::start().await.unwrap();
    let storage = format!(
        "[storage]\nurl = \"sqlite://{}\"\n",
        dir.path().join("bridge.db").display()
    );
    let settings = || support::settings_with(&wati.api_endpoint(), &storage);
    let (_peer, offer) =
        WaPeer::offer("127.0.0.1:9".parse().unwrap(), Instant::now(), None).unwrap();

    // The first run: webhooks are accepted and logged, but (as in a crash
    // right after) no call task ever starts: the events go nowhere.
    let (first, events) = wa_sip_bridge::Bridge::start_with_events(settings())
        .await
        .unwrap();
    let (status, _) = wati
        .post_webhook(
            first.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": "wacid.never-started", "sdp": offer, "from": "447700900123", "businessNumber": "15551441906"}),
        )
        .await;
    assert_eq!(status, 200);
    first.shutdown().await.unwrap();
    drop(events);
    assert!(wati.requests_to(Route::Terminate).is_empty());

    let second = wa_sip_bridge::Bridge::start(settings()).await.unwrap();
    let terminated = wait_for_request(&wati, Route::Terminate, Duration::from_secs(10))
        .await
        .expect("the unstarted call terminated at Wati");
    assert!(
        terminated.path.ends_with("/wacid.never-started/terminate"),
        "{}",
        terminated.path
    );
    let rows = support::ended_call_records(&second.store, "wacid.never-started").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].end_cause.as_deref(), Some("bridge_restarted"));
    assert_eq!(rows[0].waid.as_deref(), Some("447700900123"));
    assert_eq!(rows[0].business_number.as_deref(), Some("15551441906"));
    second.shutdown().await.unwrap();

    // A third start: the offer has its record now, so nothing more is done.
    let third = wa_sip_bridge::Bridge::start(settings()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(wati.requests_to(Route::Terminate).len(), 1);
    third.shutdown().await.unwrap();
}
