//! The PBX dials a WhatsApp user through the real bridge on 127.0.0.1: the
//! built-in PBX extension sends the INVITE (PCMU) to a number with the
//! trunk's dial prefix; the bridge checks the permission at the fake Wati,
//! places the call with its WebRTC offer, relays RINGING as 180, and once
//! the simulated WhatsApp user (str0m, ICE-lite) answered and media is up,
//! answers 200. Tones and DTMF cross each way; the PBX hangs up, the bridge
//! terminates the call at Wati, and the call record says how it went.

mod support;

use std::time::Duration;

use support::audio::tone_snr_db;
use support::fake_wati::{FakeWati, Route};
use support::wa_user::{answer_outbound_call, run_media, script_outbound_call_id};
use support::{ended_call_records, settings_with, WEBHOOK_KEY};
use wa_sip_bridge::demo::pbx::{extension_socket, place_call, Dial};
use wa_sip_bridge::Bridge;

#[tokio::test]
async fn outbound_call_answered_with_audio_and_dtmf_both_ways_then_pbx_hangs_up() {
    let wati = FakeWati::start().await.unwrap();
    let call_id = "wacid.outbound-HBgLMTQ0Nzc3MDA5MDAxMjMVAgARGBI=";
    script_outbound_call_id(&wati, call_id);
    let extra = "[routing]\noutbound_strip_prefix = \"9\"\n[webrtc]\nport_min = 42100\nport_max = 42199\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\ncodecs = [\"pcmu\"]\n";
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), extra))
        .await
        .unwrap();

    // The agent dials 9 + the user's number.
    let pbx = tokio::spawn(place_call(
        extension_socket("agent").await.unwrap(),
        bridge.sip_addr,
        Dial {
            dtmf: "9*".into(),
            talk: Duration::from_secs(6),
            ..Dial::new("9447700900123")
        },
    ));

    // The user's phone rings for half a second, then answers.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, req) = answer_outbound_call(
        &wati,
        bridge.http_addr,
        WEBHOOK_KEY,
        call_id,
        &sock,
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert!(
        req.path.ends_with("/outbound-call/447700900123"),
        "{}",
        req.path
    );
    let offer = req.json.as_ref().unwrap()["Sdp"].as_str().unwrap();
    assert!(offer.contains("a=setup:actpass"), "{offer}");
    assert!(offer.contains("a=candidate:"), "complete SDP: {offer}");
    assert!(
        !offer.contains("a=ice-lite") && !offer.contains("trickle"),
        "{offer}"
    );
    assert_eq!(
        offer.matches("a=fingerprint:sha-256 ").count(),
        1,
        "{offer}"
    );
    let fp = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=fingerprint:sha-256 "))
        .unwrap();
    assert_eq!(fp, fp.to_ascii_uppercase());
    assert!(offer.contains("opus/48000/2") && offer.contains("telephone-event/8000"));

    // The permission was checked first, for the number without the prefix.
    let perm = wati.requests_to(Route::Permissions);
    assert_eq!(perm.len(), 1);
    assert!(perm[0].path.ends_with("/permissions/447700900123"));
    assert!(wati.requests_to(Route::PermissionRequest).is_empty());

    let wa = run_media(&mut peer, &sock, Duration::from_secs(5), 1000.0, "12")
        .await
        .unwrap();
    assert!(wa.connected, "ICE/DTLS between the user and the bridge");
    let report = tokio::time::timeout(Duration::from_secs(20), pbx)
        .await
        .expect("the PBX's call ended")
        .unwrap()
        .unwrap();
    assert!(
        report.provisional.contains(&180),
        "RINGING relayed as 180: {:?}",
        report.provisional
    );
    assert_eq!(report.final_code, Some(200));

    // 0.3-1.3 s after connecting: the PBX's tone before its DTMF.
    let window = &wa.pcm[wa.pcm.len().min(14_400)..wa.pcm.len().min(62_400)];
    let snr = tone_snr_db(window, 440.0, 48_000.0, 0);
    assert!(snr > 10.0, "440 Hz from the PBX at WhatsApp: {snr:.1} dB");
    assert_eq!(wa.digits, "9*", "DTMF PBX → WhatsApp");
    let snr = tone_snr_db(&report.pcm, 1000.0, 8000.0, 8000);
    assert!(snr > 10.0, "1 kHz from WhatsApp at the PBX: {snr:.1} dB");
    assert_eq!(report.digits, "12", "DTMF WhatsApp → PBX");

    // The PBX hung up: the WhatsApp call is terminated at Wati.
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.end_cause.as_deref(), Some("pbx_bye"));
    assert_eq!(row.sip_code, Some(200));
    assert_eq!(row.waid.as_deref(), Some("447700900123"));
    assert!(row.answered_at_ms.is_some());
    let media = row.media.clone().expect("media counters in the record");
    assert!(media.wa_rx > 100 && media.pbx_rx > 100, "{media:?}");
    assert_eq!(media.codec.as_deref(), Some("pcmu"));
    let term = wati.requests_to(Route::Terminate);
    assert_eq!(term.len(), 1);
    assert!(
        term[0]
            .path
            .contains("outbound-HBgLMTQ0Nzc3MDA5MDAxMjMVAgARGBI")
            && term[0].path.ends_with("/terminate"),
        "{}",
        term[0].path
    );
    assert!(bridge.registry.is_empty());
    let metrics = bridge.metrics.encode();
    assert!(
        metrics.contains(r#"wsb_call_setup_seconds_count{direction="outbound"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"wsb_calls_total{direction="outbound",result="answered"} 1"#),
        "{metrics}"
    );
    bridge.shutdown().await.unwrap();
}
