//! The WhatsApp leg against a simulated WhatsApp media server (str0m,
//! ICE-lite, WhatsApp's SDP), in memory with simulated time: both call
//! directions connect with us as the controlling ICE agent, audio crosses
//! both ways (tones detected at the right frequency), DTMF crosses both ways,
//! with ECDSA and RSA certificates, and failures end the leg exactly once.

mod support;

use std::time::Duration;

use str0m::config::DtlsCert;
use support::audio::{tone_snr_db, Sink, ToneSource};
use support::wa_sim::{inbound, inbound_connected, outbound, outbound_with, Sim};
use wa_sip_bridge::dtmf::TelephoneEvent;
use wa_sip_bridge::webrtc::{LegEnd, LegEvent};

/// SNR a decoded tone must reach (Opus at 32 kb/s delivers far more; a wrong
/// frequency, silence or noise is far below).
const MIN_SNR_DB: f64 = 15.0;

/// STUN attribute types present in a binding request, if `data` is one.
fn stun_request_attrs(data: &[u8]) -> Option<Vec<u16>> {
    if data.len() < 20 || data[0..2] != [0x00, 0x01] || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut attrs = vec![];
    let mut i = 20;
    while i + 4 <= data.len() {
        let t = u16::from_be_bytes([data[i], data[i + 1]]);
        let len = u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize;
        attrs.push(t);
        i += 4 + len.div_ceil(4) * 4;
    }
    Some(attrs)
}

const ICE_CONTROLLING: u16 = 0x802a;
const ICE_CONTROLLED: u16 = 0x8029;
const USE_CANDIDATE: u16 = 0x0025;

fn assert_controlling(sim: &Sim) {
    let reqs: Vec<Vec<u16>> = sim
        .leg_sent
        .iter()
        .filter_map(|d| stun_request_attrs(d))
        .collect();
    assert!(!reqs.is_empty(), "the leg sent no STUN binding request");
    assert!(reqs
        .iter()
        .all(|a| a.contains(&ICE_CONTROLLING) && !a.contains(&ICE_CONTROLLED)));
    assert!(
        reqs.iter().any(|a| a.contains(&USE_CANDIDATE)),
        "no nomination (USE-CANDIDATE)"
    );
}

/// DTLS ClientHello: content type 22 (handshake), handshake type 1.
fn sent_client_hello(sim: &Sim) -> bool {
    sim.leg_sent
        .iter()
        .any(|d| d.len() > 13 && d[0] == 22 && d[13] == 1)
}

fn tones_cross(sim: &mut Sim) {
    let mut ours = ToneSource::new(1000.0).unwrap();
    let mut theirs = ToneSource::new(440.0).unwrap();
    let start = sim.peer.audio.len();
    sim.run_for(Duration::from_secs(2), |s| {
        let now = s.now;
        s.leg.send_audio(now, &ours.next_packet().unwrap(), 960);
        s.peer.send_audio(now, &theirs.next_packet().unwrap());
    });
    // At the peer: our 1 kHz tone.
    let mut at_peer = Sink::new().unwrap();
    for p in &sim.peer.audio[start..] {
        at_peer.push(p).unwrap();
    }
    let snr = tone_snr_db(&at_peer.pcm, 1000.0, 48_000.0, 9600);
    assert!(
        snr > MIN_SNR_DB,
        "1 kHz at the WhatsApp side: SNR {snr:.1} dB over {} packets",
        at_peer.packets
    );
    assert!(
        tone_snr_db(&at_peer.pcm, 440.0, 48_000.0, 9600) < 0.0,
        "wrong tone at the WhatsApp side"
    );
    // At the leg: their 440 Hz tone, payloads untouched.
    let mut at_leg = Sink::new().unwrap();
    for e in &sim.events {
        if let LegEvent::Audio { payload, .. } = e {
            at_leg.push(payload).unwrap();
        }
    }
    let snr = tone_snr_db(&at_leg.pcm, 440.0, 48_000.0, 9600);
    assert!(
        snr > MIN_SNR_DB,
        "440 Hz at the bridge: SNR {snr:.1} dB over {} packets",
        at_leg.packets
    );
}

fn dtmf_crosses(sim: &mut Sim) {
    const DIGITS: &str = "1#9*0";
    // Bridge → WhatsApp.
    for d in DIGITS.chars() {
        sim.leg.send_dtmf(d, Duration::from_millis(100));
    }
    // WhatsApp → bridge: each digit as 5 updates and 3 end packets, 8 kHz clock.
    let mut plan = Vec::new();
    for (i, d) in DIGITS.chars().enumerate() {
        let ev = wa_sip_bridge::dtmf::event_of(d).unwrap();
        let ts = 8000 + i as u64 * 2400;
        for k in 0..8u16 {
            let end = k >= 5;
            let dur = 160 * (k.min(5) + 1);
            plan.push((
                ts,
                TelephoneEvent {
                    event: ev,
                    end,
                    volume: 10,
                    duration: dur,
                }
                .to_bytes(),
                k == 0,
            ));
        }
    }
    let mut plan = plan.into_iter();
    let before = sim.peer.events.len();
    sim.run_for(Duration::from_secs(3), |s| {
        if let Some((ts, payload, first)) = plan.next() {
            let now = s.now;
            s.peer.send_event(now, ts, payload, first);
        }
    });
    let got: String = sim
        .events
        .iter()
        .filter_map(|e| match e {
            LegEvent::Dtmf(k) => Some(k.digit),
            _ => None,
        })
        .collect();
    assert_eq!(got, DIGITS, "DTMF WhatsApp → bridge");

    // At the peer: group packets by timestamp, one digit per event, in order,
    // with end packets present for each.
    let mut seen: Vec<(u64, char, bool)> = Vec::new();
    for (t, p) in &sim.peer.events[before..] {
        let ev = TelephoneEvent::parse(p).unwrap();
        let digit = wa_sip_bridge::dtmf::digit_of(ev.event).unwrap();
        match seen.last_mut() {
            Some((lt, ld, ended)) if *lt == *t => {
                assert_eq!(*ld, digit);
                *ended |= ev.end;
            }
            _ => seen.push((*t, digit, ev.end)),
        }
    }
    let digits: String = seen.iter().map(|(_, d, _)| *d).collect();
    assert_eq!(digits, DIGITS, "DTMF bridge → WhatsApp");
    assert!(seen.iter().all(|(_, _, ended)| *ended), "every event ends");
}

#[test]
fn inbound_call_answer_connects_and_carries_audio_and_dtmf() {
    let (mut sim, answer) = inbound(None);
    // The answer WhatsApp needs.
    assert!(answer.contains("a=setup:active\r\n"), "{answer}");
    assert!(!answer.contains("a=ice-lite"));
    assert!(!answer.contains("trickle"));
    assert!(
        answer.contains("m=audio 40002 UDP/TLS/RTP/SAVPF 111 126"),
        "{answer}"
    );
    assert!(answer.contains("c=IN IP4 127.0.0.1\r\n"));
    assert!(answer.contains("a=candidate:"));
    assert!(answer.contains("a=rtpmap:126 telephone-event/8000"));
    assert_eq!(answer.matches("a=fingerprint:").count(), 1);

    // Six seconds of silence on our side: longer than str0m's 5 s report interval.
    sim.run_for(Duration::from_secs(6), |_| {});
    assert!(sim.connected(), "not connected; events {:?}", sim.events);
    assert_controlling(&sim);
    assert!(sent_client_hello(&sim), "we must start DTLS (client)");
    // We sent first: silence reached the peer before we had any audio to send.
    assert!(
        sim.peer.audio.len() >= 50,
        "silence packets at the peer: {}",
        sim.peer.audio.len()
    );
    assert!(sim.leg.stats().silence_packets >= 50);
    // RTCP keeps flowing in silence: SRTCP keeps the first 8 bytes in clear,
    // so sender/receiver reports show as version 2 with packet type 200/201.
    let rtcp = sim
        .leg_sent
        .iter()
        .filter(|d| d.len() > 8 && d[0] >> 6 == 2 && (200..=201).contains(&d[1]))
        .count();
    assert!(rtcp >= 1, "no RTCP report sent during 6 s of silence");

    tones_cross(&mut sim);
    dtmf_crosses(&mut sim);
    assert!(sim.ended().is_empty());
    sim.leg.close();
    sim.run_for(Duration::from_millis(100), |_| {});
    assert_eq!(sim.ended(), vec![LegEnd::Closed]);
}

#[test]
fn outbound_call_offer_connects_and_carries_audio_and_dtmf() {
    let (mut sim, offer, answer) = outbound(None);
    assert!(offer.contains("a=setup:actpass\r\n"), "{offer}");
    assert!(offer.contains("a=rtpmap:111 opus/48000/2"));
    assert!(offer.contains("a=rtpmap:126 telephone-event/8000"));
    assert!(offer.contains("a=candidate:"));
    assert!(!offer.contains("trickle"));
    assert!(!offer.contains("a=ice-lite"));
    assert!(
        answer.contains("a=ice-lite") && answer.contains("a=setup:active"),
        "{answer}"
    );

    sim.run_for(Duration::from_secs(2), |_| {});
    assert!(sim.connected(), "not connected; events {:?}", sim.events);
    assert_controlling(&sim);
    tones_cross(&mut sim);
    dtmf_crosses(&mut sim);
}

/// WhatsApp's answer to a business-initiated call in the shape Meta
/// documents (whatsapp-wire.md §1.5): `a=extmap-allow-mixed`, header
/// extensions, `a=ice-options:trickle`, candidates ending in `ufrag …`,
/// `mid`-less legacy `a=ssrc` lines, and more payload types than we offered,
/// among them a second telephone-event at 48 kHz (PT 110). The peer behind
/// it is our str0m peer; the leg must read the answer, keep Opus 111 and
/// telephone-event 126 at 8 kHz, connect, and carry audio and DTMF.
#[test]
fn an_answer_shaped_like_metas_sample_connects_and_keeps_126_for_dtmf() {
    let (mut sim, _, answer) = outbound_with(None, |answer| {
        let ufrag = answer
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .unwrap()
            .to_string();
        let ssrc = answer
            .lines()
            .find_map(|l| l.strip_prefix("a=ssrc:"))
            .and_then(|l| l.split(' ').next())
            .unwrap()
            .to_string();
        let mut out = String::new();
        for line in answer.split("\r\n").filter(|l| !l.is_empty()) {
            if line.starts_with("a=ssrc:") || line.starts_with("a=fmtp:111") {
                continue;
            }
            if line.starts_with("a=msid-semantic") {
                out.push_str("a=extmap-allow-mixed\r\n");
            }
            if let Some(rest) = line.strip_prefix("m=audio ") {
                let port = rest.split(' ').next().unwrap();
                out.push_str(&format!(
                    "m=audio {port} UDP/TLS/RTP/SAVPF 111 9 0 8 110 126\r\n"
                ));
                continue;
            }
            if line.starts_with("a=candidate:") {
                out.push_str(&format!("{line} ufrag {ufrag}\r\n"));
                continue;
            }
            out.push_str(line);
            out.push_str("\r\n");
            if line.starts_with("a=ice-pwd:") {
                out.push_str("a=ice-options:trickle\r\n");
            }
            if line.starts_with("a=mid:") {
                out.push_str("a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n");
                out.push_str(
                    "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n",
                );
                out.push_str("a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n");
            }
            if line.starts_with("a=rtpmap:111 ") {
                out.push_str("a=fmtp:111 minptime=10;useinbandfec=1\r\n");
                out.push_str(
                    "a=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n",
                );
                out.push_str("a=rtpmap:110 telephone-event/48000\r\n");
            }
        }
        for attr in [
            "cname:bg8KQDoIk2UJa6sf",
            "msid:798a9670-c0d6-47a8-925e-5f082ef4d8a0 audio#nuxVMf9EAJX",
            "mslabel:798a9670-c0d6-47a8-925e-5f082ef4d8a0",
            "label:audio#nuxVMf9EAJX",
        ] {
            out.push_str(&format!("a=ssrc:{ssrc} {attr}\r\n"));
        }
        out
    });
    assert!(answer.contains(" 111 9 0 8 110 126\r\n"), "{answer}");
    assert!(answer.contains("a=ice-options:trickle"), "{answer}");
    sim.run_for(Duration::from_secs(2), |_| {});
    assert!(sim.connected(), "not connected; events {:?}", sim.events);
    assert_controlling(&sim);
    tones_cross(&mut sim);
    dtmf_crosses(&mut sim);
}

/// In business-initiated calls WhatsApp takes `a=setup:active`, so the
/// leg is the DTLS server, which would keep its handshake state (~40 KiB)
/// for 4 minutes in case the client's last flight comes again. The
/// client's first SRTP shows it has our Finished: the leg tells DTLS then.
#[test]
fn the_peers_first_srtp_releases_the_dtls_server() {
    let (mut sim, _, _) = outbound(None);
    sim.run_for(Duration::from_secs(1), |_| {});
    assert!(sim.connected(), "{:?}", sim.events);
    // Connected, and the leg's own media (silence) flows, but nothing yet
    // from the peer.
    assert!(!sim.leg.told_dtls_peer_finished());
    let mut theirs = ToneSource::new(440.0).unwrap();
    sim.run_for(Duration::from_millis(100), |s| {
        let now = s.now;
        s.peer.send_audio(now, &theirs.next_packet().unwrap());
    });
    assert!(sim
        .events
        .iter()
        .any(|e| matches!(e, LegEvent::Audio { .. })));
    assert!(sim.leg.told_dtls_peer_finished());
    // The call goes on as before.
    tones_cross(&mut sim);
    assert!(sim.ended().is_empty());
}

fn rsa_cert() -> DtlsCert {
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::rsa::Rsa;
    use openssl::x509::{X509NameBuilder, X509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "WebRTC").unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    DtlsCert {
        certificate: b.build().to_der().unwrap(),
        private_key: key.private_key_to_der().unwrap(),
    }
}

#[test]
fn dtls_works_with_an_rsa_peer_in_both_roles() {
    // Inbound: we are the DTLS client, the peer the server with an RSA certificate.
    let (mut sim, _) = inbound(Some(rsa_cert()));
    sim.run_for(Duration::from_secs(2), |_| {});
    assert!(sim.connected(), "inbound with RSA peer: {:?}", sim.events);
    assert!(sim.peer.audio.len() > 10);
    // Outbound: the peer is the DTLS client with an RSA certificate.
    let (mut sim, _, _) = outbound(Some(rsa_cert()));
    sim.run_for(Duration::from_secs(2), |_| {});
    assert!(sim.connected(), "outbound with RSA peer: {:?}", sim.events);
    assert!(sim.peer.audio.len() > 10);
}

/// Feeds the leg a distinct audio packet every 20 ms until it has
/// connected, with WhatsApp unreachable for `unreachable` first; returns
/// what was fed, in order.
fn feed_while_connecting(sim: &mut Sim, unreachable: Duration) -> Vec<Vec<u8>> {
    let mut tone = ToneSource::new(1000.0).unwrap();
    let mut fed = Vec::new();
    let mut feed = |s: &mut Sim| {
        if !s.events.contains(&LegEvent::Connected) {
            let p = tone.next_packet().unwrap();
            s.leg.send_audio(s.now, &p, 960);
            fed.push(p);
        }
    };
    sim.peer_reachable = false;
    sim.run_for(unreachable, &mut feed);
    sim.peer_reachable = true;
    sim.run_for(Duration::from_secs(3), &mut feed);
    assert!(sim.connected(), "{:?}", sim.events);
    fed
}

/// The PBX's first words (an IVR greeting) reach WhatsApp: audio the relay
/// hands over while the leg is still connecting is held and sent first once
/// it is up, in order, instead of being dropped.
#[test]
fn audio_from_before_the_leg_connected_is_sent_once_it_is() {
    let (mut sim, _) = inbound(None);
    let fed = feed_while_connecting(&mut sim, Duration::from_millis(400));
    assert!(
        fed.len() >= 20,
        "only {} packets before connecting",
        fed.len()
    );
    assert!(
        fed.len() <= 50,
        "{} packets: more than the leg holds",
        fed.len()
    );
    assert!(sim.peer.audio.len() >= fed.len());
    assert_eq!(
        &sim.peer.audio[..fed.len()],
        &fed[..],
        "held audio arrives first, whole and in order"
    );
    let stats = sim.leg.stats();
    assert_eq!(
        (stats.held_packets, stats.held_dropped),
        (fed.len() as u64, 0)
    );
}

/// Held audio and the audio the relay keeps delivering once the leg is up
/// (here every millisecond) reach WhatsApp as one stream, in the order fed,
/// minus only what the one-second bound dropped.
#[test]
fn held_audio_and_the_audio_after_it_arrive_as_one_stream_in_order() {
    let (mut sim, _) = inbound(None);
    let mut tone = ToneSource::new(1000.0).unwrap();
    let mut fed = Vec::new();
    let mut feed = |s: &mut Sim, fed: &mut Vec<Vec<u8>>| {
        let p = tone.next_packet().unwrap();
        let now = s.now;
        s.leg.send_audio(now, &p, 960);
        fed.push(p);
    };
    // 1.2 s without WhatsApp: more than the second the leg holds.
    sim.peer_reachable = false;
    for _ in 0..60 {
        feed(&mut sim, &mut fed);
        sim.run_for(Duration::from_millis(20), |_| {});
    }
    // Then a packet from the relay after every millisecond of the leg's work.
    sim.peer_reachable = true;
    for _ in 0..600 {
        sim.run_for(Duration::from_millis(1), |_| {});
        feed(&mut sim, &mut fed);
    }
    sim.run_for(Duration::from_millis(20), |_| {});
    assert!(sim.connected(), "{:?}", sim.events);
    let skipped = sim.leg.stats().held_dropped as usize;
    assert!(skipped >= 10, "{skipped} held packets dropped");
    let got = &sim.peer.audio;
    assert_eq!(got.len(), fed.len() - skipped);
    assert!(got[..] == fed[skipped..], "one stream, in the order fed");
}

/// A leg slow to connect keeps the newest second of audio: the caller hears
/// the audio just before the leg came up, continuous with what follows, and
/// their jitter buffer absorbs at most a second.
#[test]
fn held_audio_is_bounded_to_the_newest_second() {
    let (mut sim, _) = inbound(None);
    let fed = feed_while_connecting(&mut sim, Duration::from_millis(2500));
    assert!(fed.len() > 100, "{} packets", fed.len());
    let newest = &fed[fed.len() - 50..];
    assert_eq!(&sim.peer.audio[..50], newest);
    let stats = sim.leg.stats();
    assert_eq!(
        (stats.held_packets, stats.held_dropped),
        (50, fed.len() as u64 - 50)
    );
}

/// The offer with its `a=ssrc` lines taken out.
fn without_ssrc_lines(offer: String) -> String {
    offer
        .split_inclusive("\r\n")
        .filter(|l| !l.starts_with("a=ssrc:"))
        .collect()
}

/// WhatsApp's audio is relayed even when it comes from an SSRC its SDP did
/// not announce (an offer without `a=ssrc`, or a media server that changed
/// streams): with no RTP header extensions to name the mid, str0m alone
/// drops such packets, and the call would be one-way.
#[test]
fn audio_from_an_ssrc_the_offer_did_not_announce_reaches_the_bridge() {
    let (mut sim, _) = support::wa_sim::inbound_with(None, without_ssrc_lines);
    let mut theirs = ToneSource::new(440.0).unwrap();
    sim.run_for(Duration::from_secs(2), |s| {
        let now = s.now;
        s.peer.send_audio(now, &theirs.next_packet().unwrap());
    });
    assert!(sim.connected(), "{:?}", sim.events);
    let mut at_leg = Sink::new().unwrap();
    for e in &sim.events {
        if let LegEvent::Audio { payload, .. } = e {
            at_leg.push(payload).unwrap();
        }
    }
    assert!(
        at_leg.packets > 50,
        "{} packets of WhatsApp's audio at the bridge",
        at_leg.packets
    );
    let snr = tone_snr_db(&at_leg.pcm, 440.0, 48_000.0, 9600);
    assert!(snr > MIN_SNR_DB, "440 Hz at the bridge: SNR {snr:.1} dB");
}

/// Forged RTP headers from the peer's address, each with a new SSRC (they
/// fail SRTP authentication), neither pile up receive streams nor keep a
/// real unannounced stream from being taken.
#[test]
fn forged_ssrcs_do_not_crowd_out_a_real_unannounced_stream() {
    let (mut sim, _) = support::wa_sim::inbound_with(None, without_ssrc_lines);
    sim.run_for(Duration::from_secs(1), |_| {});
    assert!(sim.connected(), "{:?}", sim.events);
    let mut forged_ssrc = 0x1000_0000u32;
    let mut forge = |s: &mut Sim, n: usize| {
        for _ in 0..n {
            forged_ssrc += 1;
            let mut p = vec![0x80, 111, 0, 1, 0, 0, 0, 0];
            p.extend_from_slice(&forged_ssrc.to_be_bytes());
            p.extend_from_slice(&[0x55; 40]);
            let now = s.now;
            s.leg.handle_receive(now, support::wa_sim::peer_addr(), &p);
        }
    };
    forge(&mut sim, 100);
    let mut theirs = ToneSource::new(440.0).unwrap();
    sim.run_for(Duration::from_secs(2), |s| {
        let now = s.now;
        s.peer.send_audio(now, &theirs.next_packet().unwrap());
        forge(s, 3);
    });
    let audio = sim
        .events
        .iter()
        .filter(|e| matches!(e, LegEvent::Audio { .. }))
        .count();
    assert!(
        audio > 80,
        "{audio} packets of WhatsApp's audio at the bridge"
    );
    assert!(sim.ended().is_empty(), "{:?}", sim.ended());
}

#[test]
fn a_peer_that_never_answers_ends_the_leg_once_with_connect_timeout() {
    let (mut sim, _) = inbound(None);
    sim.peer_reachable = false;
    sim.run_for(Duration::from_secs(20), |_| {});
    assert_eq!(sim.ended(), vec![LegEnd::ConnectTimeout]);
    assert!(!sim.events.contains(&LegEvent::Connected));
}

/// WhatsApp's side is a DTLS server and only ever answers: if our
/// ClientHello is lost, only our retransmission timer (RFC 6347 §4.2.4)
/// saves the call. OpenSSL runs that timer on the wall clock, so this test
/// lets real time pass along with the simulated.
#[test]
fn a_lost_client_hello_costs_a_retransmission_not_the_call() {
    let (mut sim, _) = inbound(None);
    sim.lose_leg_dtls = 1;
    for _ in 0..25 {
        if sim.connected() {
            break;
        }
        sim.run_for(Duration::from_millis(200), |_| {});
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(sim.lose_leg_dtls, 0, "the ClientHello was lost");
    assert!(sim.connected(), "{:?}", sim.events);
    assert!(sim.ended().is_empty());
}

#[test]
fn losing_the_peer_mid_call_ends_the_leg_once_with_consent_lost() {
    let (mut sim, _) = inbound(None);
    sim.run_for(Duration::from_secs(2), |_| {});
    assert!(sim.connected());
    sim.peer_reachable = false;
    sim.run_for(Duration::from_secs(60), |_| {});
    assert_eq!(sim.ended(), vec![LegEnd::ConsentLost]);
}

#[test]
fn a_fingerprint_mismatch_fails_dtls_and_ends_the_leg_once() {
    use support::wa_peer::WaPeer;
    use support::wa_sim::{leg_addr, peer_addr};
    use wa_sip_bridge::webrtc::{LegConfig, WaLeg};
    let now = std::time::Instant::now();
    let (mut peer, offer) = WaPeer::offer(peer_addr(), now, None).unwrap();
    // Someone else's certificate fingerprint (a man in the middle, or a mangled SDP).
    let fp_line = offer
        .lines()
        .find(|l| l.starts_with("a=fingerprint:"))
        .unwrap();
    let forged = offer.replace(fp_line, "a=fingerprint:sha-256 A2:EC:E2:C4:E4:FE:75:63:39:0D:77:45:DF:70:64:BC:F9:96:73:DE:F4:92:E5:78:D0:5B:1F:8F:E7:46:D3:C6");
    let (leg, answer) =
        WaLeg::answer(&forged, LegConfig::new(leg_addr(), leg_addr()), now).unwrap();
    peer.accept_answer(&answer).unwrap();
    let mut sim = Sim {
        now,
        leg,
        peer,
        events: vec![],
        leg_sent: vec![],
        peer_sent: vec![],
        peer_reachable: true,
        lose_leg_dtls: 0,
    };
    sim.run_for(Duration::from_secs(20), |_| {});
    assert!(
        !sim.events.contains(&LegEvent::Connected),
        "{:?}",
        sim.events
    );
    let ended = sim.ended();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(
        matches!(ended[0], LegEnd::Failed(_) | LegEnd::ConnectTimeout),
        "{ended:?}"
    );
    eprintln!("fingerprint mismatch ended with {:?}", ended[0]);
}

/// The same check when we placed the call: WhatsApp's answer is applied
/// through str0m's direct API (no stream declared), and its fingerprint
/// must still bind the certificate the peer presents.
#[test]
fn a_fingerprint_mismatch_in_the_answer_to_our_offer_fails_dtls() {
    use support::wa_sim::outbound_with;
    let (mut sim, _, _) = outbound_with(None, |answer| {
        let fp_line = answer
            .lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .unwrap()
            .to_string();
        answer.replace(&fp_line, "a=fingerprint:sha-256 A2:EC:E2:C4:E4:FE:75:63:39:0D:77:45:DF:70:64:BC:F9:96:73:DE:F4:92:E5:78:D0:5B:1F:8F:E7:46:D3:C6")
    });
    sim.run_for(Duration::from_secs(20), |_| {});
    assert!(!sim.connected(), "{:?}", sim.events);
    let ended = sim.ended();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert!(
        matches!(ended[0], LegEnd::Failed(_) | LegEnd::ConnectTimeout),
        "{ended:?}"
    );
}

/// Audio the relay hands over goes out in the same drain of `poll_output`,
/// without waiting for a timer: str0m reports a written packet as an
/// already-due timeout, and a round through the runtime's timer per packet
/// was one extra wake-up per relayed packet.
#[test]
fn relayed_audio_leaves_in_the_same_poll_without_a_timer() {
    use wa_sip_bridge::webrtc::LegOutput;
    let mut sim = inbound_connected();
    let mut tone = ToneSource::new(800.0).unwrap();
    let mut now = sim.now;
    for i in 0..20 {
        now += Duration::from_millis(20);
        // The leg's own timers run up to `now` first, as the runtime would.
        sim.leg.handle_timeout(now);
        while !matches!(sim.leg.poll_output(), LegOutput::Timeout(_)) {}
        sim.leg.send_audio(now, &tone.next_packet().unwrap(), 960);
        let mut srtp = 0;
        loop {
            match sim.leg.poll_output() {
                // SRTP audio: version 2, payload type 111 (not RTCP 200–204).
                LegOutput::Transmit { data, .. } if data.len() > 12 && data[1] & 0x7f == 111 => {
                    srtp += 1
                }
                LegOutput::Timeout(_) => break,
                _ => {}
            }
        }
        assert_eq!(srtp, 1, "packet {i}: audio not sent in the same poll");
    }
}

/// Every leg presents the process' one DTLS certificate (made once, not at
/// each call setup), and calls still connect with it.
#[test]
fn legs_share_one_certificate() {
    let fingerprint = |sdp: &str| {
        sdp.lines()
            .find(|l| l.starts_with("a=fingerprint:"))
            .map(str::to_owned)
    };
    let (mut a, answer_a) = inbound(None);
    let (mut b, offer_b, _) = outbound(None);
    assert!(fingerprint(&answer_a).is_some());
    assert_eq!(fingerprint(&answer_a), fingerprint(&offer_b));
    a.run_for(Duration::from_secs(1), |_| {});
    b.run_for(Duration::from_secs(1), |_| {});
    assert!(a.connected() && b.connected());
}

/// While audio flows both ways every 20 ms, the leg asks its runtime for few
/// wake-ups of its own: str0m's housekeeping (ICE, RTCP, pause checks) runs
/// when packets arrive, and the leg's timer is only a fallback. Driven like
/// `LegSocket` drives it: one timer, re-armed only when a deadline is earlier.
#[test]
fn flowing_media_needs_few_timer_wake_ups() {
    use std::time::Instant;
    use support::wa_sim::{leg_addr, peer_addr};
    use wa_sip_bridge::webrtc::LegOutput;

    let mut sim = inbound_connected();
    let mut ours = ToneSource::new(700.0).unwrap();
    let mut theirs = ToneSource::new(900.0).unwrap();
    let start = sim.now;
    let mut now = start;
    let mut armed: Option<Instant> = None;
    let mut wake_ups = 0;
    let mut received = 0;
    // Drains the leg; transmits go to the peer, the deadline re-arms the timer.
    fn drain(sim: &mut Sim, now: Instant, armed: &mut Option<Instant>, received: &mut usize) {
        loop {
            match sim.leg.poll_output() {
                LegOutput::Transmit { data, .. } => sim.peer.handle_receive(now, leg_addr(), &data),
                LegOutput::Event(LegEvent::Audio { .. }) => *received += 1,
                LegOutput::Event(_) => {}
                LegOutput::Timeout(at) => {
                    if armed.is_none_or(|a| at < a) {
                        *armed = Some(at);
                    }
                    return;
                }
            }
        }
    }
    let mut next_packet = start;
    while now < start + Duration::from_secs(5) {
        // The timer fires if it is due before the next packet.
        if let Some(at) = armed.filter(|&at| at < next_packet) {
            now = now.max(at);
            armed = None;
            wake_ups += 1;
            sim.leg.handle_timeout(now);
            drain(&mut sim, now, &mut armed, &mut received);
            continue;
        }
        now = next_packet;
        next_packet += Duration::from_millis(20);
        // A packet from WhatsApp, then one from the PBX through the relay.
        sim.peer.send_audio(now, &theirs.next_packet().unwrap());
        sim.peer.handle_timeout(now).unwrap();
        let (tx, _) = sim.peer.poll().unwrap();
        for (_, d) in tx {
            sim.leg.handle_receive(now, peer_addr(), &d);
        }
        drain(&mut sim, now, &mut armed, &mut received);
        sim.leg.send_audio(now, &ours.next_packet().unwrap(), 960);
        drain(&mut sim, now, &mut armed, &mut received);
    }
    assert!(received >= 240, "audio from WhatsApp: {received} of 250");
    assert!(sim.ended().is_empty());
    // 5 s of media: 250 packets each way. str0m alone asked for ~40
    // wake-ups a second; housekeeping with slack needs at most ~10.
    assert!(wake_ups <= 60, "{wake_ups} timer wake-ups in 5 s");
}
