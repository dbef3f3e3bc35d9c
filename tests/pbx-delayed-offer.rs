//! The PBX dials a WhatsApp user with a delayed offer (an INVITE without
//! SDP, RFC 3261 §13.2.1), as some trunks and SBCs do: the bridge's 200
//! carries its offer (sipp checks for PCMU and `a=sendrecv`), sipp answers
//! PCMU in its ACK and echoes RTP, and a 1 kHz tone from WhatsApp comes back
//! through the PBX: the codec was taken from the ACK. Then the PBX hangs up.

mod support;

use std::time::Duration;

use support::audio::tone_snr_db;
use support::fake_wati::Route;
use support::wa_user::wait_for_request;
use support::{ended_call_records, sipp_dials_whatsapp};

#[tokio::test]
async fn an_invite_without_sdp_gets_our_offer_and_the_ack_answer_carries_audio() {
    let wati = support::fake_wati::FakeWati::start().await.unwrap();
    let call_id = "wacid.pbx-delayed-offer";
    let extra = "[webrtc]\nport_min = 43300\nport_max = 43349\n[media]\nrtp_port_min = 23100\nrtp_port_max = 23199\n";
    let call = sipp_dials_whatsapp(
        &wati,
        extra,
        call_id,
        "uac_delayed_offer.xml",
        &["-rtp_echo"],
        Duration::from_secs(3),
    )
    .await;
    assert!(call.heard.connected);
    let snr = tone_snr_db(&call.heard.pcm, 1000.0, 48_000.0, 48_000);
    assert!(
        snr > 10.0,
        "1 kHz back through the PBX's echo, as PCMU from its ACK: {snr:.1} dB"
    );
    assert!(
        call.pbx_status.success(),
        "sipp: a 200 with our offer (PCMU, sendrecv), its BYE answered"
    );
    let rows = ended_call_records(&call.bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"));
    assert_eq!(
        rows[0].media.as_ref().and_then(|m| m.codec.as_deref()),
        Some("pcmu")
    );
    assert!(
        wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
            .await
            .is_some()
    );
    call.bridge.shutdown().await.unwrap();
}
