//! Rows of the hang-up table not covered elsewhere, each leaving both sides
//! hung up and one call record: Wati refusing the accept of an inbound call
//! (BYE to the PBX, terminate at Wati); a DTLS failure on the WhatsApp leg of
//! an answered inbound call (fingerprint mismatch: BYE, terminate); the
//! Terminate webhook after an outbound call was answered (BYE, nothing to
//! terminate); WhatsApp media stopping in an answered outbound call (media
//! timeout: BYE, terminate).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_wati::{FakeWati, Reply, Route};
use support::wa_peer::WaPeer;
use support::wa_user::{
    answer_outbound_call, run_media, script_outbound_call_id, wait_for_request,
};
use support::{ended_call_records, settings_with, WEBHOOK_KEY};
use tokio::task::JoinHandle;
use wa_sip_bridge::demo::pbx::{answer_one_call, extension_socket, place_call, Dial, PbxReport};
use wa_sip_bridge::demo::DemoError;
use wa_sip_bridge::Bridge;

const PORTS: &str = "[webrtc]\nport_min = 42800\nport_max = 42899\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\ncodecs = [\"pcmu\"]\n";

async fn bridge_with_answering_pbx(
    wati: &FakeWati,
    extra: &str,
) -> (Bridge, JoinHandle<Result<PbxReport, DemoError>>) {
    let sock = extension_socket("ivr").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let pbx = tokio::spawn(answer_one_call(sock, "", Duration::from_secs(30)));
    let extra = format!("[trunk]\nuri = \"sip:{addr}\"\n{PORTS}{extra}");
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    (bridge, pbx)
}

async fn pbx_report(pbx: JoinHandle<Result<PbxReport, DemoError>>) -> PbxReport {
    tokio::time::timeout(Duration::from_secs(30), pbx)
        .await
        .expect("the PBX's call ended")
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn inbound_accept_refused_by_wati_byes_the_pbx_and_terminates() {
    let wati = FakeWati::start().await.unwrap();
    wati.script(
        Route::Accept,
        Reply::json(400, json!({"code": 400, "message": "call already ended"})),
    );
    let (bridge, pbx) = bridge_with_answering_pbx(&wati, "").await;
    let (_peer, offer) =
        WaPeer::offer("127.0.0.1:9".parse().unwrap(), Instant::now(), None).unwrap();
    let call_id = "wacid.accept-refused";
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer}),
        )
        .await;
    assert_eq!(status, 200);
    let report = pbx_report(pbx).await;
    assert!(
        report.bye_received,
        "BYE to the PBX after the failed accept"
    );
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]
            .end_cause
            .as_deref()
            .unwrap()
            .starts_with("wati_accept"),
        "{:?}",
        rows[0]
    );
    let term = wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
        .await
        .expect("terminate at Wati, best effort");
    assert!(term.path.ends_with("/wacid.accept-refused/terminate"));
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn inbound_dtls_failure_after_answer_byes_the_pbx_and_terminates() {
    let wati = FakeWati::start().await.unwrap();
    let (bridge, pbx) = bridge_with_answering_pbx(&wati, "").await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, offer) =
        WaPeer::offer(sock.local_addr().unwrap(), Instant::now(), None).unwrap();
    // The offer announces a certificate the peer does not have.
    let fp_line = offer
        .lines()
        .find(|l| l.starts_with("a=fingerprint:sha-256 "))
        .unwrap()
        .to_string();
    let forged = format!("a=fingerprint:sha-256 {}", ["AB"; 32].join(":"));
    let offer = offer.replace(&fp_line, &forged);
    let call_id = "wacid.dtls-fails";
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer}),
        )
        .await;
    assert_eq!(status, 200);
    let accept = wait_for_request(&wati, Route::Accept, Duration::from_secs(10))
        .await
        .expect("accepted once the PBX answered");
    peer.accept_answer(accept.json.unwrap()["Sdp"].as_str().unwrap())
        .unwrap();
    let _ = run_media(&mut peer, &sock, Duration::from_secs(3), 1000.0, "").await;
    let report = pbx_report(pbx).await;
    assert!(report.bye_received, "BYE to the PBX after the DTLS failure");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]
            .end_cause
            .as_deref()
            .unwrap()
            .starts_with("whatsapp_leg"),
        "{:?}",
        rows[0]
    );
    assert!(
        wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
            .await
            .is_some()
    );
    bridge.shutdown().await.unwrap();
}

/// An answered outbound call; returns the PBX task, the user's peer and socket.
async fn answered_outbound(
    wati: &FakeWati,
    bridge: &Bridge,
    call_id: &str,
) -> (
    JoinHandle<Result<PbxReport, DemoError>>,
    WaPeer,
    tokio::net::UdpSocket,
) {
    script_outbound_call_id(wati, call_id);
    let pbx = tokio::spawn(place_call(
        extension_socket("agent").await.unwrap(),
        bridge.sip_addr,
        Dial {
            talk: Duration::from_secs(30),
            limit: Duration::from_secs(40),
            ..Dial::new("447700900123")
        },
    ));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (peer, _) = answer_outbound_call(
        wati,
        bridge.http_addr,
        WEBHOOK_KEY,
        call_id,
        &sock,
        Duration::ZERO,
    )
    .await
    .unwrap();
    (pbx, peer, sock)
}

#[tokio::test]
async fn outbound_terminate_webhook_after_answer_byes_the_pbx() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), PORTS))
        .await
        .unwrap();
    let call_id = "wacid.out-terminated";
    let (pbx, mut peer, sock) = answered_outbound(&wati, &bridge, call_id).await;
    let wa = run_media(&mut peer, &sock, Duration::from_secs(2), 1000.0, "")
        .await
        .unwrap();
    assert!(wa.connected);
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "terminate",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id}),
        )
        .await;
    assert_eq!(status, 200);
    let report = pbx_report(pbx).await;
    assert_eq!(report.final_code, Some(200));
    assert!(report.bye_received, "BYE to the PBX");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    // WhatsApp ended it: nothing to terminate there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(wati.requests_to(Route::Terminate).is_empty());
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn outbound_whatsapp_media_stopping_times_out_on_both_sides() {
    let wati = FakeWati::start().await.unwrap();
    let bridge = Bridge::start(settings_with(
        &wati.api_endpoint(),
        &format!("{PORTS}rtp_timeout_s = 2\n"),
    ))
    .await
    .unwrap();
    let call_id = "wacid.out-silent";
    let (pbx, mut peer, sock) = answered_outbound(&wati, &bridge, call_id).await;
    let wa = run_media(&mut peer, &sock, Duration::from_secs(2), 1000.0, "")
        .await
        .unwrap();
    assert!(wa.connected);
    // The user's phone goes silent (network gone).
    drop(peer);
    drop(sock);
    let report = pbx_report(pbx).await;
    assert!(report.bye_received, "BYE to the PBX");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("media_timeout_whatsapp"));
    let term = wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
        .await
        .expect("terminate at Wati");
    assert!(term.path.ends_with("/wacid.out-silent/terminate"));
    bridge.shutdown().await.unwrap();
}
