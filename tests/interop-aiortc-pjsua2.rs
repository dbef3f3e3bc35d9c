//! Whole calls with PJSIP (PyPI pjsua2, the SIP stack inside Asterisk's
//! chan_pjsip) as the PBX extension, G.711 only (the wheel has no Opus):
//! inbound with aiortc as the WhatsApp caller, outbound with pjsua2 dialling
//! and aiortc answering as the WhatsApp user; tones detected at each side.
//! And RFC 4733 DTMF both ways: typed at pjsua2, arriving at the
//! (simulated) WhatsApp user as the same digits, and keyed by the WhatsApp
//! user, arriving at pjsua2 (PJSIP's own RFC 4733 receiver) as the same digits.

mod support;

use std::time::Duration;

use serde_json::json;
use support::audio::tone_snr_db;
use support::fake_wati::{FakeWati, Route};
use support::peers::{aiortc, pjsua, read_wav};
use support::wa_user::{
    answer_outbound_call, run_media, script_outbound_call_id, wait_for_request,
};
use support::{ended_call_records, free_port, settings_with, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

async fn bridge(wati: &FakeWati, pbx_port: u16, ports: u16) -> Bridge {
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{pbx_port}\"\n[webrtc]\nport_min = {}\nport_max = {}\n[media]\nrtp_port_min = {}\nrtp_port_max = {}\ncodecs = [\"pcmu\", \"pcma\"]\n",
        42000 + ports,
        42049 + ports,
        22000 + ports,
        22099 + ports
    );
    Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap()
}

/// pjsua2 dials a WhatsApp user through the bridge, recording to `rec`; waits until it runs.
async fn pjsua_dials(
    bridge: &Bridge,
    rec: &std::path::Path,
    extra: &[&str],
) -> support::peers::JsonChild {
    let port = free_port().to_string();
    let target = format!("sip:447700900123@{}", bridge.sip_addr);
    let mut args = vec!["dial", "--port", &port, "--target", &target];
    args.extend(["--record", rec.to_str().unwrap(), "--limit", "40"]);
    args.extend(extra);
    let mut pbx = pjsua(&args);
    let ready = pbx.read(Duration::from_secs(20)).await;
    eprintln!("pjsua2 {}", ready["pjsua"]);
    pbx
}

/// The tone's SNR in seconds 1 to 3 of the recording (the call's middle:
/// the recording also holds the time before WhatsApp's media started).
fn wav_snr(path: &std::path::Path, hz: f64) -> f64 {
    let (rate, pcm) = read_wav(path).expect("pjsua recorded the call");
    let r = rate as usize;
    let window = &pcm[pcm.len().min(r)..pcm.len().min(3 * r)];
    let snr = tone_snr_db(window, hz, rate as f64, 0);
    eprintln!(
        "pjsua heard {hz} Hz at {snr:.1} dB ({rate} Hz, {} samples)",
        pcm.len()
    );
    snr
}

#[tokio::test]
async fn inbound_aiortc_calls_pjsua2_answers() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rx.wav");
    let port = free_port();
    let mut pbx = pjsua(&[
        "answer",
        "--port",
        &port.to_string(),
        "--tone",
        "600",
        "--record",
        rec.to_str().unwrap(),
        "--limit",
        "40",
    ]);
    let ready = pbx.read(Duration::from_secs(20)).await;
    eprintln!("pjsua2 {}", ready["pjsua"]);
    let wati = FakeWati::start().await.unwrap();
    let bridge = bridge(&wati, port, 100).await;

    let mut wa = aiortc("offer", 1000.0, 600.0, 6.0);
    let offer = wa.read(Duration::from_secs(20)).await["sdp"]
        .as_str()
        .unwrap()
        .to_string();
    let call_id = "wacid.interop-pjsua-in";
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer, "contact": {"ContactNumber": "917358580180"}}),
        )
        .await;
    assert_eq!(status, 200);
    let accept = wait_for_request(&wati, Route::Accept, Duration::from_secs(15))
        .await
        .expect("pjsua answered; accepted at Wati");
    wa.write(&json!({"sdp": accept.json.unwrap()["Sdp"]})).await;
    let result = wa.read(Duration::from_secs(30)).await["result"].clone();
    eprintln!("aiortc: {result}");
    assert_eq!(result["connection"], "connected");
    let snr = result["snr_db"].as_f64().unwrap();
    assert!(snr > 10.0, "pjsua's 600 Hz at aiortc: {snr:.1} dB");
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "terminate",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id}),
        )
        .await;
    assert_eq!(status, 200);
    let done = pbx.read(Duration::from_secs(20)).await["result"].clone();
    eprintln!("pjsua: {done}");
    assert_eq!(done["confirmed"], true);
    assert!(wav_snr(&rec, 1000.0) > 10.0, "aiortc's 1 kHz at pjsua");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn outbound_pjsua2_dials_aiortc_answers() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rx.wav");
    let wati = FakeWati::start().await.unwrap();
    let call_id = "wacid.interop-pjsua-out";
    script_outbound_call_id(&wati, call_id);
    let bridge = bridge(&wati, free_port(), 200).await;
    let mut pbx = pjsua_dials(&bridge, &rec, &["--tone", "600", "--seconds", "6"]).await;

    // Wati's side: the bridge's offer goes to aiortc, whose answer comes back as the webhook.
    let req = wait_for_request(&wati, Route::OutboundCall, Duration::from_secs(15))
        .await
        .expect("call placed at Wati");
    assert!(req.path.ends_with("/outbound-call/447700900123"));
    let mut wa = aiortc("answer", 1000.0, 600.0, 5.0);
    wa.write(&json!({"sdp": req.json.unwrap()["Sdp"]})).await;
    let answer = wa.read(Duration::from_secs(20)).await["sdp"]
        .as_str()
        .unwrap()
        .to_string();
    for (route, body) in [
        (
            "outbound-call-status",
            json!({"callId": call_id, "status": "RINGING"}),
        ),
        ("outbound-call", json!({"callId": call_id, "sdp": answer})),
    ] {
        let (status, _) = wati
            .post_webhook(bridge.http_addr, route, Some(WEBHOOK_KEY), &body)
            .await;
        assert_eq!(status, 200);
    }
    let result = wa.read(Duration::from_secs(30)).await["result"].clone();
    eprintln!("aiortc: {result}");
    assert_eq!(result["connection"], "connected");
    let snr = result["snr_db"].as_f64().unwrap();
    assert!(snr > 10.0, "pjsua's 600 Hz at aiortc: {snr:.1} dB");
    let done = pbx.read(Duration::from_secs(30)).await["result"].clone();
    eprintln!("pjsua: {done}");
    assert_eq!(done["confirmed"], true, "pjsua got our 200");
    assert!(wav_snr(&rec, 1000.0) > 10.0, "aiortc's 1 kHz at pjsua");
    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("pbx_bye"));
    assert!(
        wait_for_request(&wati, Route::Terminate, Duration::from_secs(5))
            .await
            .is_some()
    );
    bridge.shutdown().await.unwrap();
}

#[tokio::test]
async fn rfc4733_dtmf_crosses_both_ways_between_pjsua2_and_the_whatsapp_user() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rx.wav");
    let wati = FakeWati::start().await.unwrap();
    let call_id = "wacid.interop-pjsua-dtmf";
    script_outbound_call_id(&wati, call_id);
    let bridge = bridge(&wati, free_port(), 300).await;
    let mut pbx = pjsua_dials(&bridge, &rec, &["--dtmf", "159#", "--seconds", "5"]).await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (mut peer, _) = answer_outbound_call(
        &wati,
        bridge.http_addr,
        WEBHOOK_KEY,
        call_id,
        &sock,
        Duration::ZERO,
    )
    .await
    .unwrap();
    // The WhatsApp user keys 27* (an IVR menu choice) 1.5 s after connecting.
    let heard = run_media(&mut peer, &sock, Duration::from_secs(5), 1000.0, "27*")
        .await
        .unwrap();
    assert!(heard.connected);
    assert_eq!(heard.digits, "159#", "pjsua's RFC 4733 digits at WhatsApp");
    let done = pbx.read(Duration::from_secs(30)).await["result"].clone();
    assert_eq!(done["confirmed"], true);
    assert_eq!(
        done["digits"], "27*",
        "the WhatsApp user's digits at pjsua (PJSIP's onDtmfDigit)"
    );
    bridge.shutdown().await.unwrap();
}
