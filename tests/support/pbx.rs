//! What the real-PBX tests (`real-pbx-asterisk`, `real-pbx-freeswitch`)
//! share: a bridge whose trunk is the PBX on 127.0.0.1, the secrets put in
//! the shipped profiles, a desk phone (sipp) calling a WhatsApp user through
//! the PBX, and tone checks over time windows.

use std::net::SocketAddr;
use std::time::Duration;

use super::fake_wati::FakeWati;
use super::wa_user::WaMedia;
use super::{ended_call_records, settings_with, WEBHOOK_KEY};

/// The secrets substituted into the shipped profiles.
pub const TRUNK_PASSWORD: &str = "trunk-secret-4cd1";
pub const INBOUND_PASSWORD: &str = "inbound-secret-77a0";
/// The test's desk phone, `agent100`.
pub const PHONE_PASSWORD: &str = "desk-secret-19be";

/// A bridge whose trunk is the PBX on 127.0.0.1:`port`, with `inbound_user`
/// as the request-URI user of calls from WhatsApp, `trunk` more keys of
/// `[trunk]` and `more` TOML right after the `[media]` keys (more media
/// keys, then other sections).
pub async fn bridge_for(
    wati: &FakeWati,
    port: u16,
    inbound_user: &str,
    trunk: &str,
    more: &str,
) -> wa_sip_bridge::Bridge {
    let ports = super::free_ports(40);
    let extra = format!(
        "[routing]\ninbound_user = \"{inbound_user}\"\n[trunk]\nuri = \"sip:127.0.0.1:{port}\"\nusername = \"wa-bridge\"\npassword = \"{TRUNK_PASSWORD}\"\n{trunk}[webrtc]\nport_min = {}\nport_max = {}\n[media]\nrtp_port_min = {}\nrtp_port_max = {}\n{more}",
        ports,
        ports + 9,
        ports + 10,
        ports + 39
    );
    wa_sip_bridge::Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap()
}

/// WhatsApp hangs up `call_id`; returns its one record.
pub async fn hang_up_from_whatsapp(
    wati: &FakeWati,
    bridge: &wa_sip_bridge::Bridge,
    call_id: &str,
) -> wa_sip_bridge::store::CallRow {
    super::post_webhook_ok(
        wati,
        bridge,
        "terminate",
        serde_json::json!({"callId": call_id}),
    )
    .await;
    let mut rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    rows.remove(0)
}

/// A WhatsApp caller's 1 kHz tone for `seconds` through an echo at the PBX
/// (the tone must come back: `what` says through what), then WhatsApp
/// hangs up; returns the call's one record, ended `whatsapp_terminated`.
pub async fn echo_then_hang_up(
    wati: &FakeWati,
    bridge: &wa_sip_bridge::Bridge,
    call_id: &str,
    seconds: u64,
    what: &str,
) -> wa_sip_bridge::store::CallRow {
    let snr_db = super::tone_through_echo(wati, bridge, call_id, seconds).await;
    assert!(snr_db > 10.0, "{what}: {snr_db:.1} dB");
    let row = hang_up_from_whatsapp(wati, bridge, call_id).await;
    assert_eq!(row.end_cause.as_deref(), Some("whatsapp_terminated"));
    row
}

/// The best SNR of `freq` over 200 ms windows of `pcm` (48 kHz), and the
/// sample where that window starts.
pub fn best_window(pcm: &[i16], freq: f64) -> (f64, usize) {
    let w = 9_600;
    (0..pcm.len().saturating_sub(w))
        .step_by(w / 2)
        .map(|i| {
            (
                super::audio::tone_snr_db(&pcm[i..i + w], freq, 48_000.0, 0),
                i,
            )
        })
        .fold((-100.0, 0), |best, x| if x.0 > best.0 { x } else { best })
}

/// The best SNR of `freq` in 200 ms windows of `pcm` between `from` and
/// `to` seconds.
pub fn tone_between(pcm: &[i16], freq: f64, from: f64, to: f64) -> f64 {
    let a = ((from * 48_000.0) as usize).min(pcm.len());
    let b = ((to * 48_000.0) as usize).min(pcm.len());
    best_window(&pcm[a..b], freq).0
}

/// What a desk phone's call to a WhatsApp user gave.
pub struct PhoneCall {
    /// What the WhatsApp user heard (it sent a 1 kHz tone).
    pub heard: WaMedia,
    /// sipp's exit status: success only if its whole scenario ran.
    pub phone: std::process::ExitStatus,
}

/// The desk phone `agent100` (sipp, PCMU, echoing what it hears) runs
/// `scenario` against the PBX at `pbx` (it registers, then dials `9` + the
/// WhatsApp number); the simulated user answers `call_id` at Wati and
/// talks for `talk`.
pub async fn desk_phone_calls_whatsapp(
    wati: &FakeWati,
    bridge: &wa_sip_bridge::Bridge,
    pbx: SocketAddr,
    scenario: &str,
    call_id: &str,
    talk: Duration,
) -> PhoneCall {
    super::wa_user::script_outbound_call_id(wati, call_id);
    let mut phone = super::sipp_dials(
        scenario,
        "9447700900123",
        pbx,
        &["-rtp_echo", "-au", "agent100", "-ap", PHONE_PASSWORD],
    );
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, placed) = super::wa_user::answer_outbound_call(
        wati,
        bridge.http_addr,
        WEBHOOK_KEY,
        call_id,
        &sock,
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert!(placed.path.ends_with("/outbound-call/447700900123"));
    let heard = super::wa_user::run_media(&mut peer, &sock, talk, 1000.0, "")
        .await
        .unwrap();
    assert!(heard.connected);
    let phone = tokio::time::timeout(Duration::from_secs(30), phone.wait())
        .await
        .expect("the phone's scenario ended")
        .unwrap();
    PhoneCall { heard, phone }
}

/// What the WhatsApp user heard in `uac_desk_phone_holds.xml`: the phone's
/// echo of its 1 kHz tone (0–3 s), the PBX's 500 Hz hold music and no echo
/// (3–6.5 s), the echo again after resume (6.5–9.5 s); windows kept clear
/// of the switch-overs.
pub fn assert_hold_then_resume(pcm: &[i16]) {
    let talk = tone_between(pcm, 1000.0, 0.5, 2.8);
    let moh = tone_between(pcm, 500.0, 3.8, 6.2);
    let echo_in_hold = tone_between(pcm, 1000.0, 3.8, 6.2);
    let resumed = tone_between(pcm, 1000.0, 7.3, 9.5);
    assert!(
        talk > 10.0,
        "the agent's side (echo) before hold: {talk:.1} dB"
    );
    assert!(moh > 10.0, "music on hold at WhatsApp: {moh:.1} dB");
    assert!(
        echo_in_hold < 0.0,
        "no echo while held: {echo_in_hold:.1} dB"
    );
    assert!(
        resumed > 10.0,
        "the agent's side back after resume: {resumed:.1} dB"
    );
}

/// Waits (≤ 20 s) for the bridge's `/readyz` to report its registration ok.
pub async fn registered(bridge: &wa_sip_bridge::Bridge) -> bool {
    for _ in 0..200 {
        let ready: serde_json::Value = reqwest::get(format!("http://{}/readyz", bridge.http_addr))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if ready["checks"]["registration"] == "ok" {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
