//! Re-offers from the PBX in a call through the bridge (sipp dials a
//! WhatsApp user): a re-INVITE with no codec in common gets 488 and the
//! call goes on (RFC 3261 §14.2), a hold re-INVITE gets 200 with
//! `a=recvonly` and our SDP's version one above the first answer's
//! (RFC 3264 §8), a re-INVITE to another codec moves the call to it
//! (RFC 3264 §8.3.2), and the call ends normally with the PBX's BYE. sipp
//! checks each response (its exit status is 0 only if every step matched).

mod support;

use std::time::Duration;

use support::audio::tone_snr_db;
use support::fake_wati::Route;
use support::wa_user::wait_for_request;
use support::{ended_call_records, sipp_dials_whatsapp};

#[tokio::test]
async fn a_re_invite_without_our_codec_gets_488_and_a_hold_gets_recvonly() {
    let wati = support::fake_wati::FakeWati::start().await.unwrap();
    let call_id = "wacid.pbx-re-offers";
    let extra = "[webrtc]\nport_min = 42450\nport_max = 42499\n[media]\nrtp_port_min = 22500\nrtp_port_max = 22599\ncodecs = [\"pcmu\"]\n";
    let call = sipp_dials_whatsapp(
        &wati,
        extra,
        call_id,
        "uac_outbound_reoffers.xml",
        &[],
        Duration::from_secs(3),
    )
    .await;
    assert!(call.heard.connected);
    assert!(
        call.pbx_status.success(),
        "sipp: 200, 488 to the G.729 re-INVITE, 200 with a=recvonly to the hold, BYE answered"
    );
    let rows = ended_call_records(&call.bridge.store, call_id).await;
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
    call.bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_re_invite_to_another_codec_moves_the_call_to_it() {
    let wati = support::fake_wati::FakeWati::start().await.unwrap();
    let call_id = "wacid.pbx-codec-change";
    let extra = "[webrtc]\nport_min = 43400\nport_max = 43449\n[media]\nrtp_port_min = 23200\nrtp_port_max = 23299\ncodecs = [\"pcmu\", \"pcma\"]\n";
    let call = sipp_dials_whatsapp(
        &wati,
        extra,
        call_id,
        "uac_codec_change.xml",
        &["-rtp_echo"],
        Duration::from_secs(3),
    )
    .await;
    assert!(call.heard.connected);
    assert!(
        call.pbx_status.success(),
        "sipp: 200 (PCMU), 200 answering PCMA + telephone-event to the re-INVITE, BYE answered"
    );
    let snr = tone_snr_db(&call.heard.pcm, 1000.0, 48_000.0, 48_000);
    assert!(
        snr > 10.0,
        "1 kHz back through the PBX's echo across the change: {snr:.1} dB"
    );
    let rows = ended_call_records(&call.bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"));
    assert_eq!(
        rows[0].media.as_ref().and_then(|m| m.codec.as_deref()),
        Some("pcma"),
        "the call ended on the re-INVITE's codec"
    );
    call.bridge.shutdown().await.unwrap();
}
