//! Re-offers from the PBX in a call through the bridge (sipp dials a
//! WhatsApp user): a re-INVITE that drops the call's codec gets 488 and the
//! call goes on (RFC 3261 §14.2), a hold re-INVITE gets 200 with
//! `a=recvonly` and our SDP's version one above the first answer's
//! (RFC 3264 §8), and the call ends normally with the PBX's BYE. sipp checks
//! each response (its exit status is 0 only if every step matched).

mod support;

use std::time::Duration;

use support::fake_wati::Route;
use support::wa_user::{
    answer_outbound_call, run_media, script_outbound_call_id, wait_for_request,
};
use support::{ended_call_records, settings_with, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

#[tokio::test]
async fn a_re_invite_without_our_codec_gets_488_and_a_hold_gets_recvonly() {
    let wati = support::fake_wati::FakeWati::start().await.unwrap();
    let call_id = "wacid.pbx-re-offers";
    script_outbound_call_id(&wati, call_id);
    let extra = "[webrtc]\nport_min = 42450\nport_max = 42499\n[media]\nrtp_port_min = 22500\nrtp_port_max = 22599\ncodecs = [\"pcmu\"]\n";
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), extra))
        .await
        .unwrap();
    let mut sipp = support::sipp_dials(
        "uac_outbound_reoffers.xml",
        "447700900123",
        bridge.sip_addr,
        &[],
    );

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, _) = answer_outbound_call(
        &wati,
        bridge.http_addr,
        WEBHOOK_KEY,
        call_id,
        &sock,
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    let heard = run_media(&mut peer, &sock, Duration::from_secs(3), 1000.0, "")
        .await
        .unwrap();
    assert!(heard.connected);

    let status = tokio::time::timeout(Duration::from_secs(40), sipp.wait())
        .await
        .expect("sipp finished")
        .unwrap();
    assert!(
        status.success(),
        "sipp: 200, 488 to the G.729 re-INVITE, 200 with a=recvonly to the hold, BYE answered"
    );
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(
        rows[0].end_cause.as_deref(),
        Some("pbx_bye"),
        "the 488 did not end the call"
    );
    assert!(
        wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
            .await
            .is_some()
    );
    bridge.shutdown().await.unwrap();
}
