//! The WhatsApp leg carries media itself once DTLS is up (str0m keeps ICE
//! and DTLS): against the simulated WhatsApp media server (full str0m), in
//! memory with simulated time — RTCP crosses both ways and each side reads
//! the other's reports, str0m sends no SRTCP of its own under the same keys,
//! and the per-packet path allocates nothing.

mod support;

use std::time::Duration;

use support::audio::ToneSource;
use support::wa_sim::{inbound_connected, leg_addr, outbound, peer_addr, Sim};
use wa_sip_bridge::webrtc::{LegEvent, LegOutput};

#[path = "counting_alloc/mod.rs"]
mod counting_alloc;
use counting_alloc::counted;

/// RTCP compound packets (SRTCP keeps the first 8 bytes clear: the
/// second byte is the packet type, RFC 5761 §4).
fn is_rtcp(d: &[u8]) -> bool {
    d.len() > 8 && (128..=191).contains(&d[0]) && (192..=223).contains(&d[1])
}

/// Both ways for `secs` simulated seconds: the peer's tone and ours.
fn talk(sim: &mut Sim, secs: u64) {
    let mut ours = ToneSource::new(1000.0).unwrap();
    let mut theirs = ToneSource::new(440.0).unwrap();
    sim.run_for(Duration::from_secs(secs), |s| {
        let now = s.now;
        s.peer.send_audio(now, &theirs.next_packet().unwrap());
        s.leg.send_audio(now, &ours.next_packet().unwrap(), 960);
    });
}

#[test]
fn rtcp_reports_cross_both_ways_and_each_side_reads_the_others() {
    for outbound_call in [false, true] {
        let mut sim = if outbound_call {
            let (mut sim, _, _) = outbound(None);
            sim.run_for(Duration::from_secs(1), |_| {});
            assert!(sim.connected(), "{:?}", sim.events);
            sim
        } else {
            inbound_connected()
        };
        talk(&mut sim, 20);
        // Ours, as WhatsApp read it: a block about its stream echoing its SR
        // (str0m's round trip; in memory it is 0) and no loss.
        let (rtt, loss) = sim.peer.reported.expect("the peer read our reports");
        assert!(
            loss.is_none_or(|l| l == 0.0),
            "outbound {outbound_call}: {loss:?}"
        );
        assert!(
            rtt.is_some(),
            "outbound {outbound_call}: no round trip at the peer"
        );
        // Its, as we read them.
        let stats = sim.leg.stats();
        assert_eq!(
            stats.peer_loss_permille,
            Some(0),
            "outbound {outbound_call}"
        );
        assert!(
            stats.rtt.is_some_and(|r| r < Duration::from_millis(100)),
            "outbound {outbound_call}: {:?}",
            stats.rtt
        );
        // Every 5 s on average (RFC 3550 §6.3.1's spread: 2.5–7.5 s).
        let reports = sim.leg_sent.iter().filter(|d| is_rtcp(d)).count();
        assert!(
            (2..=9).contains(&reports),
            "outbound {outbound_call}: {reports} reports"
        );
    }
}

/// One SRTCP sender under the leg's keys: the E-flag-and-index words
/// (RFC 3711 §3.4: after the encrypted part with AES-CM, before the tag;
/// RFC 7714 §17: last with AES-GCM) count 1, 2, 3… Had str0m kept its
/// streams, its reports would repeat indexes the peer's replay check drops.
#[test]
fn str0m_sends_no_srtcp_of_its_own() {
    let mut sim = inbound_connected();
    talk(&mut sim, 30);
    let rtcp: Vec<&Vec<u8>> = sim.leg_sent.iter().filter(|d| is_rtcp(d)).collect();
    assert!(rtcp.len() >= 4, "{} reports", rtcp.len());
    let word = |d: &[u8], from_end: usize| {
        let i = d.len() - from_end;
        u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]) & 0x7fff_ffff
    };
    // libsrtp2 counts from 1.
    let sequential = |from_end: usize| {
        rtcp.iter()
            .enumerate()
            .all(|(i, d)| word(d, from_end) == i as u32 + 1)
    };
    assert!(
        sequential(4) || sequential(14),
        "SRTCP indexes not 1, 2, 3…: {} reports",
        rtcp.len()
    );
}

/// Once warm, a packet each way — SRTP in, checked and decrypted, handed
/// over; audio in, protected, sent; buffers handed back — allocates
/// nothing. (str0m's ICE keep-alives run outside the counted calls: they
/// are not per packet.)
#[test]
fn the_per_packet_path_allocates_nothing() {
    for outbound_call in [false, true] {
        let mut sim = if outbound_call {
            let (mut sim, _, _) = outbound(None);
            sim.run_for(Duration::from_secs(1), |_| {});
            sim
        } else {
            inbound_connected()
        };
        assert!(sim.connected());
        let mut ours = ToneSource::new(1000.0).unwrap();
        let mut theirs = ToneSource::new(440.0).unwrap();
        let ours_packets: Vec<Vec<u8>> = (0..100).map(|_| ours.next_packet().unwrap()).collect();
        let mut received = 0u64;
        let mut sent = 0u64;
        let mut measured = 0u64;
        let mut out: Vec<Vec<u8>> = Vec::with_capacity(64);
        // 2 s to warm up (pools, the replay window, the event queue), then 10 s counted.
        for tick in 0..600u32 {
            let count = tick >= 100;
            sim.now += Duration::from_millis(20);
            let now = sim.now;
            sim.leg.handle_timeout(now);
            sim.peer.handle_timeout(now).unwrap();
            sim.peer.send_audio(now, &theirs.next_packet().unwrap());
            let (to_leg, _) = sim.peer.poll().unwrap();
            let payload = &ours_packets[tick as usize % ours_packets.len()];
            let mut allocs = 0;
            for (to, data) in &to_leg {
                if *to == leg_addr() {
                    let media = (128..=191).contains(&data[0]);
                    if media && count {
                        allocs += counted(|| sim.leg.handle_receive(now, peer_addr(), data)).1;
                    } else {
                        sim.leg.handle_receive(now, peer_addr(), data);
                    }
                }
            }
            let mut step = |sim: &mut Sim, out: &mut Vec<Vec<u8>>| {
                sim.leg.send_audio(now, payload, 960);
                loop {
                    match sim.leg.poll_output() {
                        LegOutput::Transmit { data, .. } => {
                            sent += 1;
                            out.push(data);
                        }
                        LegOutput::Event(LegEvent::Audio { payload, .. }) => {
                            received += 1;
                            sim.leg.recycle(payload);
                        }
                        LegOutput::Event(_) => {}
                        LegOutput::Timeout(_) => break,
                    }
                }
            };
            // `out` has its room before the count; the datagrams go to the
            // peer outside it (the peer is str0m) and come back to the
            // leg's pool inside it.
            out.clear();
            if count {
                allocs += counted(|| step(&mut sim, &mut out)).1;
            } else {
                step(&mut sim, &mut out);
            }
            for data in out.drain(..) {
                sim.peer.handle_receive(now, leg_addr(), &data);
                if count {
                    allocs += counted(|| sim.leg.recycle(data)).1;
                } else {
                    sim.leg.recycle(data);
                }
            }
            measured += allocs;
        }
        assert!(received > 500 && sent > 500, "{received} in, {sent} out");
        assert_eq!(
            measured, 0,
            "outbound {outbound_call}: {measured} allocations"
        );
    }
}
