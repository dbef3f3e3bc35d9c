//! The PBX dials a WhatsApp user with a delayed offer (an INVITE without
//! SDP, RFC 3261 §13.2.1), as some trunks and SBCs do: the bridge's 200
//! carries its offer (sipp checks for PCMU and `a=sendrecv`), sipp answers
//! PCMU in its ACK and echoes RTP, and a 1 kHz tone from WhatsApp comes back
//! through the PBX: the codec was taken from the ACK. Then the PBX hangs up.

mod support;

use std::time::Duration;

use support::audio::tone_snr_db;
use support::fake_wati::Route;
use support::wa_user::{
    answer_outbound_call, run_media, script_outbound_call_id, wait_for_request,
};
use support::{ended_call_records, settings_with, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

#[tokio::test]
async fn an_invite_without_sdp_gets_our_offer_and_the_ack_answer_carries_audio() {
    let wati = support::fake_wati::FakeWati::start().await.unwrap();
    let call_id = "wacid.pbx-delayed-offer";
    script_outbound_call_id(&wati, call_id);
    let extra = "[webrtc]\nport_min = 43300\nport_max = 43349\n[media]\nrtp_port_min = 23100\nrtp_port_max = 23199\n";
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), extra))
        .await
        .unwrap();
    let mut sipp = support::sipp_dials(
        "uac_delayed_offer.xml",
        "447700900123",
        bridge.sip_addr,
        &["-rtp_echo"],
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
    let snr = tone_snr_db(&heard.pcm, 1000.0, 48_000.0, 48_000);
    assert!(
        snr > 10.0,
        "1 kHz back through the PBX's echo, as PCMU from its ACK: {snr:.1} dB"
    );

    let status = tokio::time::timeout(Duration::from_secs(30), sipp.wait())
        .await
        .expect("sipp finished")
        .unwrap();
    assert!(
        status.success(),
        "sipp: a 200 with our offer (PCMU, sendrecv), its BYE answered"
    );
    let rows = ended_call_records(&bridge.store, call_id).await;
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
    bridge.shutdown().await.unwrap();
}
