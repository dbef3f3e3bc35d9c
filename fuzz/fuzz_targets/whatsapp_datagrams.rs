//! Datagrams arriving on a WhatsApp leg's socket → the leg (str0m's ICE,
//! our DTLS provider on OpenSSL, then the leg's own SRTP/SRTCP through
//! libsrtp2 and its RTCP reports). The first byte picks when they arrive:
//! before anything (the leg has just answered a WhatsApp-shaped offer), or
//! once the leg is connected to a simulated WhatsApp peer over a real ICE +
//! DTLS-SRTP handshake (so forged STUN, late DTLS records, RTP/RTCP with the
//! right SSRC but bad tags reach the connected paths); with its two low bits
//! set, each datagram goes through the peer as the payload of valid SRTP
//! instead, so the decrypted path sees it. Each datagram comes from the
//! peer's address or from elsewhere, with time passing between them.
//! Oracle: no panic, and nothing the leg sends goes anywhere but the peer.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wa_sip_bridge::demo::wa_peer::WaPeer;
use wa_sip_bridge::webrtc::{LegConfig, LegEvent, LegOutput, WaLeg};

fn leg_addr() -> SocketAddr {
    "127.0.0.1:40002".parse().unwrap()
}
fn peer_addr() -> SocketAddr {
    "127.0.0.1:3484".parse().unwrap()
}

/// Runs both sides until neither has anything to send; returns whether the
/// leg reported Connected and the time reached.
fn pump(leg: &mut WaLeg, peer: &mut WaPeer, mut now: Instant, rounds: usize) -> (bool, Instant) {
    let mut connected = false;
    for _ in 0..rounds {
        let mut next = now + Duration::from_millis(50);
        loop {
            match leg.poll_output() {
                LegOutput::Transmit { to, data, .. } => {
                    assert!(to == peer_addr(), "the leg sent to {to}");
                    peer.handle_receive(now, leg_addr(), &data);
                }
                LegOutput::Event(LegEvent::Connected) => connected = true,
                LegOutput::Event(_) => {}
                LegOutput::Timeout(t) => {
                    next = next.min(t.max(now));
                    break;
                }
            }
        }
        let Ok((sent, t)) = peer.poll() else { break };
        for (_, data) in sent {
            leg.handle_receive(now, peer_addr(), &data);
        }
        next = next.min(t.max(now));
        now = next.max(now + Duration::from_millis(1));
        leg.handle_timeout(now);
        let _ = peer.handle_timeout(now);
        if connected {
            break;
        }
    }
    (connected, now)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let Ok((mut peer, offer)) = WaPeer::offer(peer_addr(), t0, None) else {
        return;
    };
    let mut cfg = LegConfig::new(leg_addr(), leg_addr());
    cfg.rtp_seed = 1;
    let (mut leg, answer) =
        WaLeg::answer(&offer, cfg, t0).expect("a WhatsApp-shaped offer is answered");
    let mut now = t0;
    if mode & 1 == 1 {
        peer.accept_answer(&answer)
            .expect("the peer takes our answer");
        let (connected, t) = pump(&mut leg, &mut peer, now, 400);
        assert!(connected, "the simulated peer connects");
        now = t;
    }
    // Records: [flags, length] then the datagram (length + 256 * (flags & 7)
    // bytes, up to 2047); flags & 0x80: from an address that is not the peer's.
    while let [flags, len, tail @ ..] = rest {
        let n = (usize::from(*len) + 256 * usize::from(flags & 7)).min(tail.len());
        let (datagram, more) = tail.split_at(n);
        rest = more;
        let from = if flags & 0x80 == 0 {
            peer_addr()
        } else {
            "127.0.0.1:9".parse().unwrap()
        };
        if mode & 3 == 3 {
            // Through the peer: valid SRTP carrying these bytes as audio,
            // so the leg's decrypted path sees them.
            peer.send_audio(now, datagram);
            if let Ok((sent, _)) = peer.poll() {
                for (_, d) in sent {
                    leg.handle_receive(now, peer_addr(), &d);
                }
            }
        } else {
            leg.handle_receive(now, from, datagram);
        }
        now += Duration::from_millis(u64::from(flags & 0x78));
        leg.handle_timeout(now);
        loop {
            match leg.poll_output() {
                LegOutput::Transmit { to, .. } => {
                    assert!(to == peer_addr(), "the leg sent to {to}")
                }
                LegOutput::Event(_) => {}
                LegOutput::Timeout(_) => break,
            }
        }
    }
});
