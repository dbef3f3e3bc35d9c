//! A whole call over a secured trunk with a third-party SIP stack: baresip
//! (Debian) as the PBX extension, listening for SIP over TLS with a
//! certificate from the test's CA and requiring SRTP (SDES, RTP/SAVP,
//! `mediaenc=srtp-mand`, its srtp module); the bridge with `trunk.uri`
//! `;transport=tls`, `trunk.tls_ca` and `media.srtp = "required"`. The
//! (simulated) WhatsApp user's 1 kHz reaches baresip's recording and
//! baresip's 440 Hz reaches the user. Mid-call, forged packets (an RTP
//! header and garbage where the cipher text and tag belong) land on the
//! bridge's SRTP port from the PBX's address: they fail authentication,
//! are dropped and counted (`wsb_media_dropped_total{reason="srtp_failed"}`),
//! and the call goes on.

mod support;

use std::time::Duration;

use serde_json::json;
use support::audio::tone_snr_db;
use support::fake_wati::FakeWati;
use support::peers::Baresip;
use support::wa_user::run_media;
use support::{ended_call_records, free_ports, post_webhook_ok, settings_with, whatsapp_calls_in};
use wa_sip_bridge::Bridge;

const RTP_MIN: u16 = 23600;
const RTP_MAX: u16 = 23699;
const FORGED_PER_PORT: usize = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_baresip_over_tls_with_srtp_survives_forged_packets() {
    let dir = tempfile::tempdir().unwrap();
    let pki = support::pki::make("PBX CA", &["pbx.test", "127.0.0.1"]);
    let sip_port = free_ports(2);
    let rtp = free_ports(12);
    let baresip = Baresip::start_secure(
        dir.path(),
        sip_port,
        (rtp, rtp + 10),
        "pcmu",
        440,
        20,
        &pki.cert_and_key,
        &pki.ca,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[routing]\ninbound_user = \"ivr\"\n[trunk]\nuri = \"sip:127.0.0.1:{};transport=tls\"\ntls_ca = \"{}\"\ntls_server_name = \"pbx.test\"\n[webrtc]\nport_min = 43700\nport_max = 43749\n[media]\nrtp_port_min = {RTP_MIN}\nrtp_port_max = {RTP_MAX}\ncodecs = [\"pcmu\"]\nsrtp = \"required\"\n",
        sip_port + 1,
        pki.ca.display()
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let call_id = "wacid.baresip-tls-srtp";
    let (mut peer, sock) = whatsapp_calls_in(
        &wati,
        &bridge,
        json!({"callId": call_id, "businessNumber": "15551441906"}),
    )
    .await;

    // Two seconds in, forged packets at every even port of the bridge's RTP
    // range (the call's is one of them), from 127.0.0.1 like baresip.
    let forger = tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut packet = [0x5au8; 182];
        packet[..12].copy_from_slice(&[0x80, 0, 0, 7, 0, 0, 3, 0xc0, 0x11, 0x22, 0x33, 0x44]);
        for port in (RTP_MIN..=RTP_MAX).step_by(2) {
            for i in 0..FORGED_PER_PORT {
                packet[3] = 7 + i as u8;
                let _ = s.send_to(&packet, ("127.0.0.1", port)).await;
            }
        }
    });
    let media = run_media(&mut peer, &sock, Duration::from_secs(6), 1000.0, "")
        .await
        .unwrap();
    forger.await.unwrap();
    assert!(media.connected);
    let snr = tone_snr_db(&media.pcm, 440.0, 48_000.0, 48_000);
    assert!(
        snr > 10.0,
        "baresip's 440 Hz at WhatsApp over SRTP: {snr:.1} dB; baresip said:\n{}",
        baresip.log()
    );

    post_webhook_ok(&wati, &bridge, "terminate", json!({"callId": call_id})).await;
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    let metrics = support::metrics_text(&bridge).await;
    let failed = support::metric_value(
        &metrics,
        r#"wsb_media_dropped_total{leg="pbx",reason="srtp_failed"}"#,
    );
    assert!(
        failed >= FORGED_PER_PORT as u64,
        "the forged packets were dropped and counted: {failed}\n{metrics}"
    );
    let log = baresip.log();
    let (rate, pcm) = baresip
        .finish(Duration::from_secs(15))
        .await
        .expect("baresip recorded the call");
    let snr = tone_snr_db(&pcm, 1000.0, rate as f64, rate as usize);
    assert!(
        snr > 10.0,
        "WhatsApp's 1 kHz at baresip over SRTP: {snr:.1} dB; baresip said:\n{log}"
    );
    bridge.shutdown().await.unwrap();
}
