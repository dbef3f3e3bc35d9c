//! `calls.answer_mode = "immediate"`: the WhatsApp call is accepted at Wati
//! as soon as the INVITE is out, and the PBX's early media (183, echoed by
//! sipp) reaches the caller: a 1 kHz tone from WhatsApp comes back before
//! the PBX ever answers. The PBX then rejects (486): the call is terminated
//! at Wati, with one record.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::audio::tone_snr_db;
use support::fake_wati::{FakeWati, Route};
use support::wa_peer::WaPeer;
use support::wa_user::{run_media, wait_for_request};
use support::{ended_call_records, settings_with, sipp_pbx, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

#[tokio::test]
async fn immediate_accept_relays_early_media_then_pbx_rejects() {
    let scenario = format!(
        "{}/tests/sipp/uas_183_then_486.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let (mut pbx, sip_port) = sipp_pbx(&["-sf", &scenario, "-rtp_echo", "-m", "1"]).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[calls]\nanswer_mode = \"immediate\"\n[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = 42700\nport_max = 42799\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\ncodecs = [\"pcmu\"]\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, offer) =
        WaPeer::offer(sock.local_addr().unwrap(), Instant::now(), None).unwrap();
    let call_id = "wacid.immediate-1";
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer}),
        )
        .await;
    assert_eq!(status, 200);
    let accept = wait_for_request(&wati, Route::Accept, Duration::from_secs(5))
        .await
        .expect("accepted before the PBX answered");
    peer.accept_answer(accept.json.as_ref().unwrap()["Sdp"].as_str().unwrap())
        .unwrap();
    let wa = run_media(&mut peer, &sock, Duration::from_millis(2500), 1000.0, "")
        .await
        .unwrap();
    assert!(wa.connected);
    let snr = tone_snr_db(&wa.pcm, 1000.0, 48_000.0, 24_000);
    assert!(
        snr > 10.0,
        "early media echoed back to WhatsApp: {snr:.1} dB"
    );

    let sipp = tokio::time::timeout(Duration::from_secs(20), pbx.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(sipp.success(), "sipp saw our ACK to its 486");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_rejected_486"));
    assert!(rows[0].answered_at_ms.is_none());
    let term = wait_for_request(&wati, Route::Terminate, Duration::from_secs(5)).await;
    assert!(term.is_some(), "terminated at Wati after the 486");
    assert_eq!(wati.requests_to(Route::Accept).len(), 1);
    bridge.shutdown().await.unwrap();
}
