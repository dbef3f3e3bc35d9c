//! A trunk reached over TCP (`trunk.uri = "sip:…;transport=tcp"`): a
//! WhatsApp user calls, the bridge INVITEs sipp over TCP (sipp `-t t1`, so
//! sipp has no UDP SIP socket at all), sipp answers and echoes RTP, a 1 kHz
//! tone from WhatsApp comes back through the echo, and WhatsApp's hang-up
//! reaches sipp as a BYE on the same TCP connection (sipp's scenario only
//! completes if it does).

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
async fn inbound_call_to_a_tcp_trunk_is_answered_carries_audio_and_ends_with_bye() {
    let (mut pbx, sip_port) = sipp_pbx(&["-sn", "uas", "-t", "t1", "-rtp_echo", "-m", "1"]).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{sip_port};transport=tcp\"\n[webrtc]\nport_min = 43100\nport_max = 43199\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();

    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, offer) =
        WaPeer::offer(sock.local_addr().unwrap(), Instant::now(), None).unwrap();
    let call_id = "wacid.tcp-trunk";
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer, "businessNumber": "15551441906"}),
        )
        .await;
    assert_eq!(status, 200);

    // sipp answered over TCP: the bridge accepts at Wati.
    let accept = wait_for_request(&wati, Route::Accept, Duration::from_secs(10))
        .await
        .expect("accept at Wati after the PBX answered over TCP");
    let answer = accept
        .json
        .as_ref()
        .and_then(|b| b["Sdp"].as_str())
        .expect("{\"Sdp\": answer}")
        .to_string();
    peer.accept_answer(&answer).unwrap();

    let media = run_media(&mut peer, &sock, Duration::from_secs(4), 1000.0, "")
        .await
        .unwrap();
    assert!(media.connected, "ICE/DTLS between WhatsApp and the bridge");
    let snr = tone_snr_db(&media.pcm, 1000.0, 48_000.0, 48_000);
    assert!(
        snr > 10.0,
        "1 kHz back at WhatsApp through the PBX's echo: {snr:.1} dB"
    );

    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "terminate",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id}),
        )
        .await;
    assert_eq!(status, 200);
    let sipp_status = tokio::time::timeout(Duration::from_secs(20), pbx.wait())
        .await
        .expect("sipp ended")
        .unwrap();
    assert!(
        sipp_status.success(),
        "sipp (TCP only) saw our INVITE, ACK and BYE"
    );
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    assert_eq!(rows[0].sip_code, Some(200));
    bridge.shutdown().await.unwrap();
}
