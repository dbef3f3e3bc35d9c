//! A WhatsApp user calls the business, through the real bridge on 127.0.0.1:
//! the fake Wati delivers the webhook with a WhatsApp-shaped offer from a
//! simulated WhatsApp media server (str0m, ICE-lite) on a real socket; the
//! bridge INVITEs the PBX (sipp, answering and echoing RTP); on the 200 it
//! accepts at Wati with its SDP answer; a 1 kHz tone from WhatsApp crosses
//! to the PBX (PCMU, transcoded), is echoed and comes back (transcoded again)
//! and is detected at the WhatsApp side. The Terminate webhook then makes the
//! bridge BYE the PBX, and the call record says why the call ended.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::audio::{tone_snr_db, Sink, ToneSource};
use support::fake_wati::{FakeWati, Route};
use support::wa_peer::WaPeer;
use support::{ended_call_records, settings_with, sipp_pbx, WEBHOOK_KEY};
use wa_sip_bridge::Bridge;

#[tokio::test]
async fn inbound_call_answered_with_audio_both_ways_then_whatsapp_hangs_up() {
    // The PBX: sipp answering (180, 200 with PCMU SDP) and echoing RTP.
    let (mut pbx, sip_port) = sipp_pbx(&["-sn", "uas", "-rtp_echo", "-m", "1"]).await;

    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = 42000\nport_max = 42099\n[media]\nrtp_port_min = 22000\nrtp_port_max = 22999\n"
    );
    let bridge = Bridge::start(settings_with(&wati.api_endpoint(), &extra))
        .await
        .unwrap();

    // WhatsApp's media server on a real socket, and its offer in the webhook.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let peer_addr = sock.local_addr().unwrap();
    let (mut peer, offer) = WaPeer::offer(peer_addr, Instant::now(), None).unwrap();
    let call_id = "wacid.HBgMOTE3MzU4NTgwMTgwFQIAEhggQkE2/+ABUKAA==";
    let (status, _) = wati
        .post_webhook(
            bridge.http_addr,
            "inbound-call",
            Some(WEBHOOK_KEY),
            &json!({"callId": call_id, "sdp": offer, "businessNumber": "15551441906", "contact": {"ContactNumber": "917358580180"}}),
        )
        .await;
    assert_eq!(status, 200);

    // The bridge accepts at Wati once the PBX answered.
    let mut accept = None;
    for _ in 0..200 {
        if let Some(r) = wati.requests_to(Route::Accept).into_iter().next() {
            accept = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let accept = accept.expect("accept request sent to Wati after the PBX answered");
    assert!(accept.path.ends_with("/accept"));
    let answer = accept
        .json
        .as_ref()
        .and_then(|b| b["Sdp"].as_str())
        .expect("{\"Sdp\": answer}")
        .to_string();
    assert!(answer.contains("a=setup:active"), "{answer}");
    assert!(!answer.contains("a=ice-lite"));
    let fp = answer
        .lines()
        .find(|l| l.starts_with("a=fingerprint:sha-256 "))
        .expect("fingerprint");
    assert_eq!(
        fp,
        fp.to_ascii_uppercase()
            .replace("A=FINGERPRINT:SHA-256", "a=fingerprint:sha-256")
    );
    peer.accept_answer(&answer).unwrap();

    // Run the WhatsApp side for a few seconds: a 1 kHz tone once connected.
    let mut tone = ToneSource::new(1000.0).unwrap();
    let mut buf = vec![0u8; 2048];
    let end = Instant::now() + Duration::from_secs(5);
    let mut next_tick = Instant::now();
    let mut connected_at = None;
    while Instant::now() < end {
        let (tx, timeout) = peer.poll().unwrap();
        for (to, data) in tx {
            let _ = sock.send_to(&data, to).await;
        }
        if peer.connected && connected_at.is_none() {
            connected_at = Some(peer.audio.len());
        }
        if peer.connected && Instant::now() >= next_tick {
            let now = Instant::now();
            peer.send_audio(now, &tone.next_packet().unwrap());
            next_tick += Duration::from_millis(20);
        }
        let wake = timeout
            .min(next_tick)
            .max(Instant::now() + Duration::from_millis(1));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    peer.handle_receive(Instant::now(), from, &buf[..n]);
                }
            }
            _ = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
        }
        peer.handle_timeout(Instant::now()).unwrap();
    }
    assert!(peer.connected, "ICE/DTLS between WhatsApp and the bridge");
    let mut sink = Sink::new().unwrap();
    for p in &peer.audio[connected_at.unwrap_or(0)..] {
        sink.push(p).unwrap();
    }
    // Skip the first second: silence before the echo loop fills.
    let snr = tone_snr_db(&sink.pcm, 1000.0, 48_000.0, 48_000);
    eprintln!(
        "1 kHz back at WhatsApp: {snr:.1} dB over {} packets",
        sink.packets
    );
    assert!(
        snr > 10.0,
        "1 kHz back at WhatsApp through PBX echo: {snr:.1} dB over {} packets",
        sink.packets
    );

    // Someone else sprays the bridge's WhatsApp media port: dropped, and
    // counted when the call ends.
    let cand: Vec<&str> = answer
        .lines()
        .find(|l| l.starts_with("a=candidate:"))
        .expect("candidate")
        .split(' ')
        .collect();
    let media_addr: std::net::SocketAddr = format!("{}:{}", cand[4], cand[5]).parse().unwrap();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for junk in [
        &[0x80u8, 111, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1][..],
        b"hello",
        &[0x17; 40],
    ] {
        stranger.send_to(junk, media_addr).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    // WhatsApp hangs up: the bridge BYEs the PBX; sipp then completes its call.
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
    assert!(sipp_status.success(), "sipp saw INVITE, ACK and our BYE");

    let rows = ended_call_records(&bridge.store, call_id).await;
    assert_eq!(rows.len(), 1, "exactly one call record");
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    assert!(rows[0]
        .answered_at_ms
        .is_some_and(|a| a >= rows[0].offered_at_ms));
    assert_eq!(rows[0].sip_code, Some(200));
    assert_eq!(rows[0].waid.as_deref(), Some("917358580180"));
    // Packet counts reach the metrics when the call ends.
    let metrics = reqwest::get(format!("http://{}/metrics", bridge.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (leg, dir) in [
        ("whatsapp", "in"),
        ("whatsapp", "out"),
        ("pbx", "in"),
        ("pbx", "out"),
    ] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "wsb_rtp_packets_total{{leg=\"{leg}\",dir=\"{dir}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no {leg}/{dir} in {metrics}"));
        let n: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n > 50, "{line}");
    }
    assert!(
        metrics.contains(r#"wsb_calls_total{direction="inbound",result="answered"} 1"#),
        "{metrics}"
    );
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with(r#"wsb_media_dropped_total{leg="whatsapp",reason="invalid"}"#))
        .unwrap_or_else(|| panic!("no dropped count in {metrics}"));
    let n: u64 = dropped.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 3, "{dropped}");
    // WhatsApp ended the call itself: no terminate request to Wati.
    assert!(wati.requests_to(Route::Terminate).is_empty());
    bridge.shutdown().await.unwrap();
}

/// A PBX that gives its answer in a 183 and sends a 200 without SDP: the
/// 183's SDP is used, the call is accepted at Wati and audio crosses (before,
/// the bridge hung up with `pbx_answer_without_sdp`).
#[tokio::test]
async fn a_pbx_answer_given_only_in_its_183_is_used() {
    let sf = format!(
        "{}/tests/sipp/uas_answer_in_183.xml",
        env!("CARGO_MANIFEST_DIR")
    );
    let (mut pbx, sip_port) = sipp_pbx(&["-sf", &sf, "-rtp_echo", "-m", "1"]).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = 43200\nport_max = 43299\n[media]\nrtp_port_min = 23000\nrtp_port_max = 23099\n"
    );
    let call = support::inbound_echo_call(&wati, &extra, "wacid.answer-in-183", &mut pbx).await;
    assert!(
        call.snr_db > 10.0,
        "1 kHz back through the 183's media address: {:.1} dB",
        call.snr_db
    );
    assert!(call.pbx_status.success(), "sipp saw our ACK and BYE");
    let rows = ended_call_records(&call.bridge.store, "wacid.answer-in-183").await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    call.bridge.shutdown().await.unwrap();
}

/// A PBX that redirects the call (302 to extension 2001) before answering:
/// the bridge INVITEs sip:2001@ on the same trunk (sipp checks the
/// request-URI), the answer connects the call and audio crosses (before, the
/// call ended as `pbx_rejected_3xx`).
#[tokio::test]
async fn a_redirect_from_the_pbx_is_followed_on_the_trunk() {
    let sf = format!("{}/tests/sipp/uas_redirect.xml", env!("CARGO_MANIFEST_DIR"));
    let (mut pbx, sip_port) = sipp_pbx(&["-sf", &sf, "-rtp_echo", "-m", "1"]).await;
    let wati = FakeWati::start().await.unwrap();
    let extra = format!(
        "[trunk]\nuri = \"sip:127.0.0.1:{sip_port}\"\n[webrtc]\nport_min = 43500\nport_max = 43599\n[media]\nrtp_port_min = 23300\nrtp_port_max = 23399\n"
    );
    let call = support::inbound_echo_call(&wati, &extra, "wacid.redirected", &mut pbx).await;
    assert!(
        call.snr_db > 10.0,
        "1 kHz back through the redirected target's echo: {:.1} dB",
        call.snr_db
    );
    assert!(
        call.pbx_status.success(),
        "sipp saw the INVITE for sip:2001@, our ACK and BYE"
    );
    let rows = ended_call_records(&call.bridge.store, "wacid.redirected").await;
    assert_eq!(rows[0].end_cause.as_deref(), Some("whatsapp_terminated"));
    assert_eq!(rows[0].sip_code, Some(200));
    call.bridge.shutdown().await.unwrap();
}
