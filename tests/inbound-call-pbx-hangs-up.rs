//! A WhatsApp user calls and the PBX ends the call: by rejecting the INVITE
//! (486) or by hanging up after answering (BYE). Either way the WhatsApp call
//! is terminated at Wati exactly once and the call record says why.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_wati::{FakeWati, Route};
use support::wa_peer::WaPeer;
use support::{ended_call_records, settings_with, sipp_pbx, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

async fn pbx_ends_the_call(
    scenario: &str,
    call_id: &str,
    cause: &str,
    sip_code: u16,
    answered: bool,
) {
    let sf = format!("{}/tests/sipp/{scenario}", env!("CARGO_MANIFEST_DIR"));
    let (mut pbx, sip_port) = sipp_pbx(&["-sf", &sf, "-m", "1"]).await;

    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = 42100\nport_max = 42199\n[media]\nrtp_port_min = 22100\nrtp_port_max = 22199\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let (_peer, offer) =
        WaPeer::offer("127.0.0.1:3484".parse().unwrap(), Instant::now(), None).unwrap();
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer, "businessNumber": "15551441906"}),
        )
        .await;
    assert_eq!(status, 200);

    let mut terminated = Vec::new();
    for _ in 0..200 {
        terminated = wati.requests_to(Route::Terminate);
        if !terminated.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(terminated.len(), 1, "exactly one terminate at Wati");
    assert!(
        terminated[0]
            .path
            .ends_with(&format!("/{call_id}/terminate")),
        "{}",
        terminated[0].path
    );
    assert!(terminated[0].raw_body.is_empty());
    assert_eq!(wati.requests_to(Route::Accept).len(), answered as usize);

    let status = tokio::time::timeout(Duration::from_secs(20), pbx.wait())
        .await
        .expect("sipp done")
        .unwrap();
    assert!(status.success(), "sipp's scenario completed");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some(cause));
    assert_eq!(rows[0].sip_code, Some(sip_code));
    assert_eq!(rows[0].answered_at_ms.is_some(), answered);
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn pbx_486_terminates_the_whatsapp_call() {
    pbx_ends_the_call(
        "uas_486.xml",
        "wacid.rejected-1",
        "pbx_rejected_486",
        486,
        false,
    )
    .await;
}

#[tokio::test]
async fn pbx_bye_after_answer_terminates_the_whatsapp_call() {
    pbx_ends_the_call(
        "uas_answer_then_bye.xml",
        "wacid.pbx-bye-1",
        "pbx_bye",
        200,
        true,
    )
    .await;
}
