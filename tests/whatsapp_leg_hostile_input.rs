//! Hostile input on the WhatsApp leg: broken and huge SDPs, random datagrams,
//! STUN for someone else, truncated DTLS. Errors or drops, never a panic, and
//! a call that is being attacked keeps working, as does its neighbour.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::audio::{tone_snr_db, Sink, ToneSource};
use support::wa_peer::WaPeer;
use support::wa_sim::{inbound, leg_addr, peer_addr, Sim};
use wa_sip_bridge::webrtc::{LegConfig, LegError, LegEvent, SdpError, WaLeg};

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn cfg() -> LegConfig {
    LegConfig::new(leg_addr(), leg_addr())
}

#[test]
fn broken_and_huge_sdps_are_typed_errors() {
    let now = Instant::now();
    let huge = format!("v=0\r\n{}", "a=x:".repeat(250_000));
    assert!(matches!(
        WaLeg::answer(&huge, cfg(), now),
        Err(LegError::Sdp(SdpError::TooLong))
    ));
    for garbage in [
        "",
        "garbage",
        "v=0",
        "v=0\r\nm=audio 1 RTP/AVP 0\r\n",
        "\u{0}\u{1}v=0",
    ] {
        assert!(WaLeg::answer(garbage, cfg(), now).is_err(), "{garbage:?}");
    }
    // Mutations of a real offer: lines dropped, duplicated, cut, bytes flipped.
    let (_, offer) = WaPeer::offer(peer_addr(), now, None).unwrap();
    let lines: Vec<&str> = offer.split("\r\n").collect();
    let mut rng = Rng(0x5eed);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..300 {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        match rng.below(4) {
            0 => {
                l.remove(rng.below(l.len()));
            }
            1 => {
                let i = rng.below(l.len());
                let dup = l[i].clone();
                l.insert(i, dup);
            }
            2 => {
                let i = rng.below(l.len());
                let cut = rng.below(l[i].len() + 1);
                l[i] = l[i].chars().take(cut).collect();
            }
            _ => {
                let i = rng.below(l.len());
                let mut b = l[i].clone().into_bytes();
                if !b.is_empty() {
                    let j = rng.below(b.len());
                    b[j] = b' ' + (rng.next() % 90) as u8;
                }
                l[i] = String::from_utf8_lossy(&b).into_owned();
            }
        }
        match WaLeg::answer(&l.join("\r\n"), cfg(), now) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    assert!(
        ok > 0 && err > 0,
        "mutations should both pass and fail: {ok} ok, {err} errors"
    );
    // An answer that does not fit our offer.
    let (mut leg, _) = WaLeg::offer(cfg(), now).unwrap();
    assert!(leg
        .apply_answer(std::time::Instant::now(), "v=0\r\n")
        .is_err());
    assert!(matches!(
        leg.apply_answer(std::time::Instant::now(), "v=0\r\n"),
        Err(LegError::NoPendingOffer)
    ));
}

/// A STUN binding request for another session (wrong USERNAME).
fn stun_with_wrong_ufrag() -> Vec<u8> {
    let username = b"notours:alsonotours";
    let mut m = vec![0x00, 0x01, 0, 0, 0x21, 0x12, 0xa4, 0x42];
    m.extend_from_slice(&[7u8; 12]);
    m.extend_from_slice(&[0x00, 0x06, 0, username.len() as u8]);
    m.extend_from_slice(username);
    m.extend(std::iter::repeat_n(0, (4 - username.len() % 4) % 4));
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

fn tone_through(sim: &mut Sim) -> f64 {
    let mut theirs = ToneSource::new(440.0).unwrap();
    let start = sim.events.len();
    sim.run_for(Duration::from_secs(1), |s| {
        let now = s.now;
        s.peer.send_audio(now, &theirs.next_packet().unwrap());
    });
    let mut sink = Sink::new().unwrap();
    for e in &sim.events[start..] {
        if let LegEvent::Audio { payload, .. } = e {
            sink.push(payload).unwrap();
        }
    }
    tone_snr_db(&sink.pcm, 440.0, 48_000.0, 4800)
}

#[test]
fn random_datagrams_stray_stun_and_truncated_dtls_are_dropped() {
    let (mut attacked, _) = inbound(None);
    let (mut neighbour, _) = inbound(None);
    let mut rng = Rng(42);

    // A donor call's DTLS handshake records, truncated, fed to the attacked
    // leg at every millisecond of its own handshake.
    let (mut donor, _) = inbound(None);
    donor.run_for(Duration::from_secs(1), |_| {});
    let records: Vec<Vec<u8>> = donor
        .peer_sent
        .iter()
        .filter(|d| d.len() > 13 && (20..=63).contains(&d[0]))
        .cloned()
        .collect();
    let mut injected_dtls = 0;
    for step in 0..200 {
        attacked.run_for(Duration::from_millis(1), |_| {});
        let now = attacked.now;
        let r = &records[step % records.len()];
        let cut = 1 + rng.below(r.len() - 1);
        attacked.leg.handle_receive(now, peer_addr(), &r[..cut]);
        injected_dtls += 1;
    }
    // And truncated copies of its own peer's records.
    let own: Vec<Vec<u8>> = attacked
        .peer_sent
        .iter()
        .filter(|d| d.len() > 13 && (20..=63).contains(&d[0]))
        .cloned()
        .collect();
    for r in &own {
        let now = attacked.now;
        attacked
            .leg
            .handle_receive(now, peer_addr(), &r[..r.len() / 2]);
        injected_dtls += 1;
    }
    assert!(injected_dtls > 0, "no DTLS record was seen to truncate");
    attacked.run_for(Duration::from_secs(2), |_| {});
    neighbour.run_for(Duration::from_secs(2), |_| {});
    assert!(
        attacked.connected(),
        "handshake survives truncated records ({injected_dtls} injected)"
    );
    assert!(neighbour.connected());

    // Once connected: 20 000 random datagrams, shaped like STUN (0-3), DTLS
    // (20-63) and RTP/RTCP (128-191), from the peer's address and elsewhere.
    let stranger: SocketAddr = "127.0.0.1:9999".parse().unwrap();
    let now = attacked.now;
    let dropped_before = attacked.leg.stats().dropped;
    for i in 0..20_000 {
        let len = rng.below(1500);
        let mut d = rng.bytes(len);
        if let Some(first) = d.first_mut() {
            *first = match i % 4 {
                0 => (*first) % 4,
                1 => 20 + (*first) % 44,
                2 => 128 + (*first) % 64,
                _ => *first,
            };
        }
        let from = if i % 2 == 0 { peer_addr() } else { stranger };
        attacked.leg.handle_receive(now, from, &d);
    }
    for _ in 0..100 {
        attacked
            .leg
            .handle_receive(now, stranger, &stun_with_wrong_ufrag());
        attacked
            .leg
            .handle_receive(now, peer_addr(), &stun_with_wrong_ufrag());
    }
    assert!(
        attacked.leg.stats().dropped > dropped_before + 10_000,
        "{:?}",
        attacked.leg.stats()
    );

    // Both calls still carry audio.
    let snr = tone_through(&mut attacked);
    assert!(snr > 15.0, "attacked call: SNR {snr:.1} dB");
    let snr = tone_through(&mut neighbour);
    assert!(snr > 15.0, "neighbour call: SNR {snr:.1} dB");
    assert!(attacked.ended().is_empty(), "{:?}", attacked.ended());
}

#[test]
fn datagrams_before_any_answer_and_after_close_are_harmless() {
    let now = Instant::now();
    let (mut leg, _) = WaLeg::offer(cfg(), now).unwrap();
    let mut rng = Rng(7);
    for _ in 0..1000 {
        let len = rng.below(300);
        leg.handle_receive(now, peer_addr(), &rng.bytes(len));
        leg.handle_timeout(now);
    }
    leg.close();
    leg.handle_receive(now, peer_addr(), &[0x80, 111, 0, 1]);
    leg.handle_timeout(now + Duration::from_secs(100));
    let mut ended = 0;
    for _ in 0..10_000 {
        match leg.poll_output() {
            wa_sip_bridge::webrtc::LegOutput::Event(LegEvent::Ended(_)) => ended += 1,
            wa_sip_bridge::webrtc::LegOutput::Timeout(_) => break,
            _ => {}
        }
    }
    assert_eq!(ended, 1);
}
