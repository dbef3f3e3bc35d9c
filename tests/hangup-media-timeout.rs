//! No media from WhatsApp for `media.rtp_timeout_s` after the PBX answered:
//! the bridge ends the call on both sides — terminate at Wati and BYE to the
//! PBX — with one call record whose cause says so.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_wati::{FakeWati, Route};
use support::wa_peer::WaPeer;
use support::{ended_call_records, settings_with, sipp_pbx, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

#[tokio::test]
async fn silent_whatsapp_leg_times_out_and_both_sides_hang_up() {
    // sipp's built-in UAS answers and then waits for our BYE.
    let (mut pbx, sip_port) = sipp_pbx(&["-sn", "uas", "-m", "1"]).await;

    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = 42200\nport_max = 42299\n[media]\nrtp_port_min = 22200\nrtp_port_max = 22299\nrtp_timeout_s = 1\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    // A WhatsApp side that never sends a packet.
    let (_peer, offer) =
        WaPeer::offer("127.0.0.1:9".parse().unwrap(), Instant::now(), None).unwrap();
    let call_id = "wacid.silent-1";
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer, "businessNumber": "15551441906"}),
        )
        .await;
    assert_eq!(status, 200);

    let status = tokio::time::timeout(Duration::from_secs(20), pbx.wait())
        .await
        .expect("sipp done")
        .unwrap();
    assert!(status.success(), "the PBX got our BYE");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("media_timeout_whatsapp"));
    assert_eq!(
        wati.requests_to(Route::Accept).len(),
        1,
        "accepted when the PBX answered"
    );
    assert_eq!(
        wati.requests_to(Route::Terminate).len(),
        1,
        "terminated once at Wati"
    );
    bridge.shutdown().await.unwrap();
}
