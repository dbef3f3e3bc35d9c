//! A trunk reached over TCP (`trunk.uri = "sip:…;transport=tcp"`): a
//! WhatsApp user calls, the bridge INVITEs sipp over TCP (sipp `-t t1`, so
//! sipp has no UDP SIP socket at all), sipp answers and echoes RTP, a 1 kHz
//! tone from WhatsApp comes back through the echo, and WhatsApp's hang-up
//! reaches sipp as a BYE on the same TCP connection (sipp's scenario only
//! completes if it does).

mod support;

use support::fake_wati::FakeWati;
use support::{ended_call_records, inbound_echo_call, sipp_pbx};

#[tokio::test]
async fn inbound_call_to_a_tcp_trunk_is_answered_carries_audio_and_ends_with_bye() {
    let (mut pbx, sip_port) = sipp_pbx(&["-sn", "uas", "-t", "t1", "-rtp_echo", "-m", "1"]).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{sip_port};transport=tcp\"\n[webrtc]\nport_min = 43100\nport_max = 43199\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\n"
    );
    let call = inbound_echo_call(&wati, &extra, "wacid.tcp-trunk", &mut pbx).await;
    assert!(
        call.snr_db > 10.0,
        "1 kHz back at WhatsApp through the PBX's echo: {:.1} dB",
        call.snr_db
    );
    assert!(
        call.pbx_status.success(),
        "sipp (TCP only) saw our INVITE, ACK and BYE"
    );
    let rows = ended_call_records(&call.bridge.store, "wacid.tcp-trunk").await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    assert_eq!(rows[0].sip_code, Some(200));
    call.bridge.shutdown().await.unwrap();
}
