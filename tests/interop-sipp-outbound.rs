//! sipp as the PBX dialling a WhatsApp user through the bridge, with the
//! bridge's inbound digest auth on: sipp verifies the 401 challenge and
//! answers it, gets 180 and 200, echoes the media (-rtp_echo) and sends keys
//! as SIP INFO. The simulated WhatsApp user hears its own 1 kHz tone back
//! (through PCMU both ways and sipp's echo) and receives the keys as RFC 4733
//! events with the same digits. The PBX hangs up; the call is terminated at Wati.

mod support;

use std::time::Duration;

use support::audio::tone_snr_db;
use support::fake_wati::{FakeWati, Route};
use support::wa_user::wait_for_request;
use support::{ended_call_records, sipp_dials_whatsapp};

#[tokio::test]
async fn sipp_dials_with_digest_auth_and_sip_info_dtmf() {
    let wati = FakeWati::start().await.unwrap();
    let call_id = "wacid.interop-sipp-out";
    let extra = "[trunk]\ninbound_username = \"pbx\"\ninbound_password = \"inbound-secret\"\n[webrtc]\nport_min = 42400\nport_max = 42449\n[media]\nrtp_port_min = 22400\nrtp_port_max = 22499\ncodecs = [\"pcmu\"]\n";
    let version = std::process::Command::new("sipp")
        .arg("-v")
        .output()
        .expect("sipp installed");
    eprintln!(
        "{}",
        String::from_utf8_lossy(&version.stdout)
            .lines()
            .find(|l| l.contains("SIPp"))
            .unwrap_or("sipp")
            .trim()
    );
    let call = sipp_dials_whatsapp(
        &wati,
        extra,
        call_id,
        "uac_auth_outbound_info_dtmf.xml",
        &["-rtp_echo"],
        Duration::from_secs(5),
    )
    .await;
    assert!(call.placed.path.ends_with("/outbound-call/447700900123"));
    let heard = &call.heard;
    assert!(heard.connected);
    assert_eq!(heard.digits, "58", "SIP INFO keys at WhatsApp as RFC 4733");
    let window = &heard.pcm[heard.pcm.len().min(24_000)..heard.pcm.len().min(72_000)];
    let snr = tone_snr_db(window, 1000.0, 48_000.0, 0);
    assert!(snr > 10.0, "1 kHz back through sipp's echo: {snr:.1} dB");
    assert!(
        call.pbx_status.success(),
        "sipp: 401 verified, 200, INFO answered, BYE answered"
    );
    let rows = ended_call_records(&call.bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"));
    assert!(
        wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
            .await
            .is_some()
    );
    call.bridge.shutdown().await.unwrap();
}
