//! In-memory harness: our WhatsApp leg and a simulated WhatsApp peer joined
//! by a lossless zero-delay "network", driven with simulated time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::config::DtlsCert;
use wa_sip_bridge::webrtc::{LegConfig, LegEnd, LegEvent, LegOutput, WaLeg};

use wa_sip_bridge::demo::wa_peer::WaPeer;

pub fn leg_addr() -> SocketAddr {
    "127.0.0.1:40002".parse().unwrap()
}
pub fn peer_addr() -> SocketAddr {
    "127.0.0.1:3484".parse().unwrap()
}

pub struct Sim {
    pub now: Instant,
    pub leg: WaLeg,
    pub peer: WaPeer,
    pub events: Vec<LegEvent>,
    /// Datagrams the leg sent, in order (for STUN inspection).
    pub leg_sent: Vec<Vec<u8>>,
    /// Datagrams the peer sent toward the leg, in order.
    pub peer_sent: Vec<Vec<u8>>,
    /// When false, nothing from the peer reaches the leg (a dead network).
    pub peer_reachable: bool,
    /// How many of the leg's next DTLS datagrams the network loses.
    pub lose_leg_dtls: usize,
}

impl Sim {
    pub fn run_for(&mut self, d: Duration, mut tick: impl FnMut(&mut Sim)) {
        let until = self.now + d;
        let mut next_tick = self.now;
        while self.now < until {
            if self.now >= next_tick {
                tick(self);
                next_tick += Duration::from_millis(20);
            }
            let mut leg_timeout;
            let mut peer_timeout;
            let mut rounds = 0;
            loop {
                let mut delivered = false;
                loop {
                    match self.leg.poll_output() {
                        LegOutput::Transmit { to, data, .. } => {
                            assert_eq!(to, peer_addr());
                            self.leg_sent.push(data.clone());
                            // RFC 7983 §7: first byte 20..=63 is DTLS.
                            if (20..=63).contains(&data[0]) && self.lose_leg_dtls > 0 {
                                self.lose_leg_dtls -= 1;
                                continue;
                            }
                            self.peer.handle_receive(self.now, leg_addr(), &data);
                            delivered = true;
                        }
                        LegOutput::Event(e) => self.events.push(e),
                        LegOutput::Timeout(t) => {
                            leg_timeout = t;
                            break;
                        }
                    }
                }
                let (tx, t) = self.peer.poll().unwrap();
                peer_timeout = t;
                for (to, data) in tx {
                    self.peer_sent.push(data.clone());
                    if to == leg_addr() && self.peer_reachable {
                        self.leg.handle_receive(self.now, peer_addr(), &data);
                        delivered = true;
                    }
                }
                rounds += 1;
                if !delivered || rounds > 100 {
                    break;
                }
            }
            let mut next = leg_timeout.min(peer_timeout).min(until).min(next_tick);
            if next <= self.now {
                next = self.now + Duration::from_millis(1);
            }
            self.now = next;
            // As the leg's runtime does: its clock only when it asked for
            // it (a deadline it did not report would never come).
            if self.now >= leg_timeout {
                self.leg.handle_timeout(self.now);
            }
            self.peer.handle_timeout(self.now).unwrap();
        }
    }

    pub fn connected(&self) -> bool {
        self.events.contains(&LegEvent::Connected) && self.peer.connected
    }

    pub fn ended(&self) -> Vec<LegEnd> {
        self.events
            .iter()
            .filter_map(|e| match e {
                LegEvent::Ended(c) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }
}

pub fn inbound(cert: Option<DtlsCert>) -> (Sim, String) {
    inbound_with(cert, |offer| offer)
}

/// As [`inbound`], with the peer's offer passed through `edit` on its way
/// to the leg (the peer itself behaves as its own offer says).
pub fn inbound_with(cert: Option<DtlsCert>, edit: impl FnOnce(String) -> String) -> (Sim, String) {
    let now = Instant::now();
    let (mut peer, offer) = WaPeer::offer(peer_addr(), now, cert).unwrap();
    let offer = edit(offer);
    let (leg, answer) = WaLeg::answer(&offer, LegConfig::new(leg_addr(), leg_addr()), now).unwrap();
    peer.accept_answer(&answer).unwrap();
    (
        Sim {
            now,
            leg,
            peer,
            events: vec![],
            leg_sent: vec![],
            peer_sent: vec![],
            peer_reachable: true,
            lose_leg_dtls: 0,
        },
        answer,
    )
}

/// An inbound-call leg already connected to its peer (one simulated second).
pub fn inbound_connected() -> Sim {
    let (mut sim, _) = inbound(None);
    sim.run_for(Duration::from_secs(1), |_| {});
    assert!(sim.connected(), "not connected: {:?}", sim.events);
    sim
}

pub fn outbound(cert: Option<DtlsCert>) -> (Sim, String, String) {
    outbound_with(cert, |answer| answer)
}

/// As [`outbound`], with the peer's answer passed through `edit` on its way
/// to the leg (the peer itself behaves as its own answer says).
pub fn outbound_with(
    cert: Option<DtlsCert>,
    edit: impl FnOnce(String) -> String,
) -> (Sim, String, String) {
    let now = Instant::now();
    let (mut leg, offer) = WaLeg::offer(LegConfig::new(leg_addr(), leg_addr()), now).unwrap();
    let (peer, answer) = WaPeer::answer(&offer, peer_addr(), now, cert).unwrap();
    let answer = edit(answer);
    leg.apply_answer(std::time::Instant::now(), &answer)
        .unwrap();
    (
        Sim {
            now,
            leg,
            peer,
            events: vec![],
            leg_sent: vec![],
            peer_sent: vec![],
            peer_reachable: true,
            lose_leg_dtls: 0,
        },
        offer,
        answer,
    )
}
