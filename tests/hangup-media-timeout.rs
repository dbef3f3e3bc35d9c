//! No media from WhatsApp for `media.rtp_timeout_s` after the PBX answered:
//! the bridge ends the call on both sides — terminate at Wati and BYE to the
//! PBX — with one call record whose cause says so.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_wati::{FakeWati, Route};
use support::wa_peer::WaPeer;
use support::{settings_with, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn silent_whatsapp_leg_times_out_and_both_sides_hang_up() {
    let sip_port = free_port();
    // sipp's built-in UAS answers and then waits for our BYE.
    let mut pbx = tokio::process::Command::new("sipp")
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &sip_port.to_string(),
            "-mp",
            &free_port().to_string(),
            "-cp",
            &free_port().to_string(),
        ])
        .args(["-m", "1", "-nostdin", "-timeout", "30s", "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp is installed (tests/setup-system.sh)");
    tokio::time::sleep(Duration::from_millis(500)).await;

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
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = bridge
            .store
            .calls_by_wa_call_id(call_id.into())
            .await
            .unwrap();
        if rows.first().is_some_and(|r| r.ended_at_ms.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
