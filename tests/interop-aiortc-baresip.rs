//! Whole inbound calls with only third-party software on the outer sides:
//! aiortc (PyPI) is the WhatsApp user, baresip (Debian) the PBX extension
//! that auto-answers; the real bridge and the fake Wati in the middle. Once
//! with Opus only on the SIP side (relayed untouched) and once with PCMU only
//! (transcoded). A tone from each side is detected at the other side at the
//! right frequency: aiortc's received frames, and baresip's recording.
//! And RFC 4733 both ways between a (simulated) WhatsApp user and baresip.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::audio::tone_snr_db;
use support::fake_wati::{FakeWati, Route};
use support::peers::{aiortc, Baresip, BaresipCtrl};
use support::wa_user::run_media;
use support::wa_user::wait_for_request;
use support::{
    ended_call_records, free_port, free_ports, post_webhook_ok, settings_with, whatsapp_calls_in,
    WEBHOOK_KEY,
};
use wa_sip_bridge::Bridge;

async fn call(codec_bridge: &str, codec_baresip: &str, call_id: &str, ports: u16) {
    let dir = tempfile::tempdir().unwrap();
    // baresip listens for SIP on this port (UDP, TCP) and for SIP/TLS on the next.
    let sip_port = free_ports(2);
    let rtp = (free_ports(12), 0);
    let baresip = Baresip::start(
        dir.path(),
        sip_port,
        (rtp.0, rtp.0 + 10),
        codec_baresip,
        440,
        None,
        // Its whole life (`-t`): room for aiortc's start and a slow
        // machine; the call itself ends with the bridge's BYE long before.
        45,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[routing]\ninbound_user = \"ivr\"\n[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = {}\nport_max = {}\n[media]\nrtp_port_min = {}\nrtp_port_max = {}\ncodecs = [\"{codec_bridge}\"]\n",
        42000 + ports,
        42049 + ports,
        22000 + ports,
        22099 + ports
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();

    // aiortc offers (as WhatsApp does), sends 1 kHz, expects 440 Hz back.
    let mut wa = aiortc("offer", 1000.0, 440.0, 6.0);
    let offer = wa.read(Duration::from_secs(20)).await["sdp"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer, "businessNumber": "15551441906", "contact": {"ContactNumber": "917358580180"}}),
        )
        .await;
    assert_eq!(status, 200);
    let Some(accept) = wait_for_request(&wati, Route::Accept, Duration::from_secs(15)).await else {
        panic!(
            "baresip did not answer (no accept at Wati); baresip said:\n{}",
            baresip.log()
        );
    };
    let answer = accept.json.unwrap()["Sdp"].as_str().unwrap().to_string();
    wa.write(&json!({"sdp": answer})).await;
    let result = wa.read(Duration::from_secs(30)).await["result"].clone();
    eprintln!("aiortc: {result}");
    assert_eq!(result["connection"], "connected", "{result}");
    let snr = result["snr_db"].as_f64().unwrap();
    assert!(
        snr > 10.0,
        "baresip's 440 Hz at aiortc: {snr:.1} dB ({codec_bridge})"
    );

    // WhatsApp hangs up; baresip gets the BYE and its recording is complete.
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "terminate",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id}),
        )
        .await;
    assert_eq!(status, 200);
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    let media = rows[0].media.clone().unwrap();
    assert_eq!(media.codec.as_deref(), Some(codec_bridge));
    assert!(media.pbx_rx > 50 && media.wa_rx > 50, "{media:?}");
    // The BYE ended its call and closed its recording; it is stopped
    // rather than waited for.
    let (rate, pcm) = baresip
        .finish(Duration::from_secs(2))
        .await
        .expect("baresip recorded the call");
    let snr = tone_snr_db(&pcm, 1000.0, rate as f64, rate as usize);
    eprintln!(
        "baresip heard 1 kHz at {snr:.1} dB ({rate} Hz, {} samples)",
        pcm.len()
    );
    assert!(
        snr > 10.0,
        "aiortc's 1 kHz at baresip: {snr:.1} dB ({codec_bridge})"
    );
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn opus_passthrough_aiortc_to_baresip() {
    call("opus", "opus/48000/2", "wacid.interop-opus", 900).await;
}

#[tokio::test]
async fn pcmu_transcoding_aiortc_to_baresip() {
    call("pcmu", "pcmu", "wacid.interop-pcmu", 950).await;
}

/// Keys cross both ways with baresip as the PBX extension (PCMU): `159#`
/// pressed at the (simulated, str0m) WhatsApp user reach baresip, whose
/// ctrl_tcp reports each received RFC 4733 key (CALL_DTMF_START); `27*` sent
/// by baresip (ctrl_tcp `sndcode`) reach the WhatsApp user as RFC 4733 at
/// 8 kHz. Before, baresip's DTMF was untested (pjsua2 covers both ways too).
#[tokio::test]
async fn dtmf_both_ways_between_whatsapp_and_baresip() {
    let dir = tempfile::tempdir().unwrap();
    let sip_port = free_ports(2);
    let rtp = free_ports(12);
    let ctrl_port = free_port();
    let baresip = Baresip::start_controlled(
        dir.path(),
        sip_port,
        (rtp, rtp + 10),
        "pcmu",
        440,
        20,
        ctrl_port,
    );
    let mut ctrl = BaresipCtrl::connect(ctrl_port, Duration::from_secs(10)).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[routing]\ninbound_user = \"ivr\"\n[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = 43600\nport_max = 43649\n[media]\nrtp_port_min = 23400\nrtp_port_max = 23499\ncodecs = [\"pcmu\"]\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();
    let call_id = "wacid.interop-baresip-dtmf";
    let (mut peer, sock) = whatsapp_calls_in(
        &wati,
        &bridge,
        json!({"callId": call_id, "businessNumber": "15551441906"}),
    )
    .await;

    // baresip's side: once its call is up, send 2, 7, * 400 ms apart, and
    // collect the keys it reports receiving.
    let baresip_side = tokio::spawn(async move {
        let mut heard = String::new();
        let mut to_send: Vec<char> = "*72".chars().collect();
        let mut next_send: Option<Instant> = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        let done = |heard: &String, to_send: &Vec<char>| heard.len() >= 4 && to_send.is_empty();
        while Instant::now() < deadline && !ctrl.closed && !done(&heard, &to_send) {
            if next_send.is_some_and(|t| Instant::now() >= t) {
                match to_send.pop() {
                    Some(k) => {
                        ctrl.command("sndcode", &k.to_string()).await;
                        next_send = Some(Instant::now() + Duration::from_millis(400));
                    }
                    None => next_send = None,
                }
            }
            let Some(msg) = ctrl.next(Duration::from_millis(100)).await else {
                continue;
            };
            match msg["type"].as_str() {
                Some("CALL_ESTABLISHED") if next_send.is_none() && to_send.len() == 3 => {
                    next_send = Some(Instant::now() + Duration::from_millis(1000));
                }
                Some("CALL_DTMF_START") => {
                    if let Some(k) = msg["param"].as_str().and_then(|p| p.chars().next()) {
                        heard.push(k);
                    }
                }
                _ => {}
            }
        }
        heard
    });
    let media = run_media(&mut peer, &sock, Duration::from_secs(5), 1000.0, "159#")
        .await
        .unwrap();
    assert!(media.connected);
    post_webhook_ok(&wati, &bridge, "terminate", json!({"callId": call_id})).await;
    let heard_at_baresip = baresip_side.await.unwrap();
    let log = baresip.log();
    let _ = baresip.finish(Duration::from_secs(1)).await;
    assert_eq!(
        heard_at_baresip, "159#",
        "keys from WhatsApp at baresip; baresip said:\n{log}"
    );
    assert_eq!(media.digits, "27*", "keys from baresip at WhatsApp");
    bridge.shutdown().await.unwrap();
}
