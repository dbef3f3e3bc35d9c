//! SIP transactions (RFC 3261 §17, with RFC 6026's Accepted state) as pure
//! state machines: `step(state, event, now) -> (state, actions)`.
//!
//! A transaction does not hold messages; it tells its owner what to do
//! ([`Action`]) and when to call again ([`next_deadline`]). Timers carry the
//! RFC's names (A–K, plus L and M from RFC 6026) and are derived from T1, T2
//! and T4. Retransmissions happen only over unreliable transports
//! (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1).
//!
//! [`next_deadline`]: ClientInvite::next_deadline

use std::time::{Duration, Instant};

/// RFC 3261 §17.1.1.1 timer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate, default 500 ms.
    pub t1: Duration,
    /// Maximum retransmit interval for non-INVITE requests and INVITE responses, 4 s.
    pub t2: Duration,
    /// Maximum time a message stays in the network, 5 s.
    pub t4: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl Timers {
    fn t1x64(&self) -> Duration {
        self.t1 * 64
    }
}

/// UDP retransmits; TCP/TLS do not (RFC 3261 §17.1.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reliability {
    Unreliable,
    Reliable,
}

/// What the owner of a transaction must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// (Re)send the transaction's request.
    SendRequest,
    /// Send the ACK for a non-2xx final response (RFC 3261 §17.1.1.3).
    SendAck,
    /// (Re)send the last response the TU gave the server transaction.
    SendResponse,
    /// Hand the response (client) or request (server) to the TU.
    PassUp,
    /// The transaction timed out (Timer B, F or H): tell the TU.
    Timeout,
    /// The transport failed: tell the TU (RFC 3261 §17.1.4).
    TransportError,
}

pub type Actions = Vec<Action>;

/// Events a client transaction reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// Time passed; expired timers fire.
    Tick,
    /// A response with this status code matched the transaction.
    Response(u16),
    TransportError,
}

/// Events a server transaction reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    Tick,
    /// The request was received again (a retransmission).
    RequestRetransmitted,
    /// An ACK matched this INVITE transaction (non-2xx case).
    Ack,
    /// The TU sends a response with this status code.
    TuResponse(u16),
    TransportError,
}

// ---------------------------------------------------------------------------
// Client INVITE (RFC 3261 §17.1.1, RFC 6026 §7.2)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInvite {
    Calling {
        /// Timer A: next retransmission (unreliable only) and its interval.
        a: Option<(Instant, Duration)>,
        /// Timer B: transaction timeout.
        b: Instant,
    },
    Proceeding,
    /// 2xx received: absorb retransmitted 2xx (passed up for the TU to ACK) until Timer M.
    Accepted {
        m: Instant,
    },
    /// Non-2xx final received and ACKed: absorb retransmissions until Timer D.
    Completed {
        d: Instant,
    },
    Terminated,
}

impl ClientInvite {
    /// Starts the transaction: the request goes out now.
    pub fn start(now: Instant, t: &Timers, rel: Reliability) -> (ClientInvite, Actions) {
        let a = (rel == Reliability::Unreliable).then(|| (now + t.t1, t.t1));
        (
            ClientInvite::Calling {
                a,
                b: now + t.t1x64(),
            },
            vec![Action::SendRequest],
        )
    }

    pub fn step(
        self,
        ev: ClientEvent,
        now: Instant,
        t: &Timers,
        rel: Reliability,
    ) -> (ClientInvite, Actions) {
        use ClientInvite::*;
        match (self, ev) {
            (Terminated, _) => (Terminated, vec![]),
            (_, ClientEvent::TransportError) => (Terminated, vec![Action::TransportError]),
            (Calling { a, b }, ClientEvent::Tick) => {
                if now >= b {
                    return (Terminated, vec![Action::Timeout]);
                }
                match a {
                    // Timer A doubles each time (no cap for INVITE, §17.1.1.2).
                    Some((at, interval)) if now >= at => {
                        let next = interval * 2;
                        (
                            Calling {
                                a: Some((now + next, next)),
                                b,
                            },
                            vec![Action::SendRequest],
                        )
                    }
                    _ => (Calling { a, b }, vec![]),
                }
            }
            (Calling { .. } | Proceeding, ClientEvent::Response(code)) => match code {
                100..=199 => (Proceeding, vec![Action::PassUp]),
                200..=299 => (Accepted { m: now + t.t1x64() }, vec![Action::PassUp]),
                _ => {
                    let d = if rel == Reliability::Unreliable {
                        Duration::from_secs(32).max(t.t1x64() / 2)
                    } else {
                        Duration::ZERO
                    };
                    (
                        Completed { d: now + d },
                        vec![Action::SendAck, Action::PassUp],
                    )
                }
            },
            (Proceeding, ClientEvent::Tick) => (Proceeding, vec![]),
            (Accepted { m }, ClientEvent::Response(code)) if (200..300).contains(&code) => {
                // RFC 6026 §7.2: retransmitted 2xx go to the TU, which re-sends its ACK.
                (Accepted { m }, vec![Action::PassUp])
            }
            (Accepted { m }, ClientEvent::Response(_)) => (Accepted { m }, vec![]),
            (Accepted { m }, ClientEvent::Tick) => {
                if now >= m {
                    (Terminated, vec![])
                } else {
                    (Accepted { m }, vec![])
                }
            }
            (Completed { d }, ClientEvent::Response(code)) if code >= 300 => {
                (Completed { d }, vec![Action::SendAck])
            }
            (Completed { d }, ClientEvent::Response(_)) => (Completed { d }, vec![]),
            (Completed { d }, ClientEvent::Tick) => {
                if now >= d {
                    (Terminated, vec![])
                } else {
                    (Completed { d }, vec![])
                }
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match *self {
            ClientInvite::Calling { a, b } => Some(a.map_or(b, |(at, _)| at.min(b))),
            ClientInvite::Proceeding => None,
            ClientInvite::Accepted { m } => Some(m),
            ClientInvite::Completed { d } => Some(d),
            ClientInvite::Terminated => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Client non-INVITE (RFC 3261 §17.1.2)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInvite {
    Trying {
        /// Timer E (unreliable only).
        e: Option<(Instant, Duration)>,
        /// Timer F.
        f: Instant,
    },
    Proceeding {
        e: Option<(Instant, Duration)>,
        f: Instant,
    },
    /// Final response received; absorb retransmissions until Timer K.
    Completed {
        k: Instant,
    },
    Terminated,
}

impl ClientNonInvite {
    pub fn start(now: Instant, t: &Timers, rel: Reliability) -> (ClientNonInvite, Actions) {
        let e = (rel == Reliability::Unreliable).then(|| (now + t.t1, t.t1));
        (
            ClientNonInvite::Trying {
                e,
                f: now + t.t1x64(),
            },
            vec![Action::SendRequest],
        )
    }

    pub fn step(
        self,
        ev: ClientEvent,
        now: Instant,
        t: &Timers,
        rel: Reliability,
    ) -> (ClientNonInvite, Actions) {
        use ClientNonInvite::*;
        match (self, ev) {
            (Terminated, _) => (Terminated, vec![]),
            (_, ClientEvent::TransportError) => (Terminated, vec![Action::TransportError]),
            (Trying { e, f } | Proceeding { e, f }, ClientEvent::Tick) => {
                let proceeding = matches!(self, Proceeding { .. });
                if now >= f {
                    return (Terminated, vec![Action::Timeout]);
                }
                let (e, actions) = match e {
                    Some((at, interval)) if now >= at => {
                        // §17.1.2.2: E doubles up to T2; in Proceeding it is T2.
                        let next = if proceeding {
                            t.t2
                        } else {
                            (interval * 2).min(t.t2)
                        };
                        (Some((now + next, next)), vec![Action::SendRequest])
                    }
                    other => (other, vec![]),
                };
                if proceeding {
                    (Proceeding { e, f }, actions)
                } else {
                    (Trying { e, f }, actions)
                }
            }
            (Trying { e, f } | Proceeding { e, f }, ClientEvent::Response(code)) => {
                if code < 200 {
                    (Proceeding { e, f }, vec![Action::PassUp])
                } else {
                    let k = if rel == Reliability::Unreliable {
                        t.t4
                    } else {
                        Duration::ZERO
                    };
                    (Completed { k: now + k }, vec![Action::PassUp])
                }
            }
            (Completed { k }, ClientEvent::Response(_)) => (Completed { k }, vec![]),
            (Completed { k }, ClientEvent::Tick) => {
                if now >= k {
                    (Terminated, vec![])
                } else {
                    (Completed { k }, vec![])
                }
            }
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match *self {
            ClientNonInvite::Trying { e, f } | ClientNonInvite::Proceeding { e, f } => {
                Some(e.map_or(f, |(at, _)| at.min(f)))
            }
            ClientNonInvite::Completed { k } => Some(k),
            ClientNonInvite::Terminated => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Server INVITE (RFC 3261 §17.2.1, RFC 6026 §7.1)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInvite {
    Proceeding,
    /// 2xx sent: its retransmission is the TU's (§13.3.1.4); absorb INVITE
    /// retransmissions until Timer L.
    Accepted {
        l: Instant,
    },
    /// Non-2xx final sent: retransmit it on Timer G until the ACK or Timer H.
    Completed {
        g: Option<(Instant, Duration)>,
        h: Instant,
    },
    /// ACK received: absorb further ACKs until Timer I.
    Confirmed {
        i: Instant,
    },
    Terminated,
}

impl ServerInvite {
    /// An INVITE arrived: pass it up and answer 100 Trying at once (§17.2.1),
    /// so the client stops retransmitting.
    pub fn start() -> (ServerInvite, Actions) {
        (ServerInvite::Proceeding, vec![Action::PassUp])
    }

    pub fn step(
        self,
        ev: ServerEvent,
        now: Instant,
        t: &Timers,
        rel: Reliability,
    ) -> (ServerInvite, Actions) {
        use ServerInvite::*;
        match (self, ev) {
            (Terminated, _) => (Terminated, vec![]),
            (_, ServerEvent::TransportError) => (Terminated, vec![Action::TransportError]),
            (Proceeding, ServerEvent::RequestRetransmitted) => {
                (Proceeding, vec![Action::SendResponse])
            }
            (Proceeding, ServerEvent::TuResponse(code)) => match code {
                100..=199 => (Proceeding, vec![Action::SendResponse]),
                200..=299 => (Accepted { l: now + t.t1x64() }, vec![Action::SendResponse]),
                _ => {
                    let g = (rel == Reliability::Unreliable).then(|| (now + t.t1, t.t1));
                    (
                        Completed {
                            g,
                            h: now + t.t1x64(),
                        },
                        vec![Action::SendResponse],
                    )
                }
            },
            (Proceeding, _) => (Proceeding, vec![]),
            (Accepted { l }, ServerEvent::Tick) if now >= l => (Terminated, vec![]),
            // A retransmitted INVITE or an ACK for the 2xx goes to the TU (§13.3.1.4).
            (Accepted { l }, ServerEvent::RequestRetransmitted) => (Accepted { l }, vec![]),
            (Accepted { l }, ServerEvent::TuResponse(code)) if (200..300).contains(&code) => {
                (Accepted { l }, vec![Action::SendResponse])
            }
            (Accepted { l }, _) => (Accepted { l }, vec![]),
            (Completed { g, h }, ServerEvent::Tick) => {
                if now >= h {
                    return (Terminated, vec![Action::Timeout]);
                }
                match g {
                    Some((at, interval)) if now >= at => {
                        let next = (interval * 2).min(t.t2);
                        (
                            Completed {
                                g: Some((now + next, next)),
                                h,
                            },
                            vec![Action::SendResponse],
                        )
                    }
                    _ => (Completed { g, h }, vec![]),
                }
            }
            (Completed { g, h }, ServerEvent::RequestRetransmitted) => {
                (Completed { g, h }, vec![Action::SendResponse])
            }
            (Completed { .. }, ServerEvent::Ack) => {
                let i = if rel == Reliability::Unreliable {
                    t.t4
                } else {
                    Duration::ZERO
                };
                (Confirmed { i: now + i }, vec![])
            }
            (Completed { g, h }, ServerEvent::TuResponse(_)) => (Completed { g, h }, vec![]),
            (Confirmed { i }, ServerEvent::Tick) if now >= i => (Terminated, vec![]),
            (Confirmed { i }, _) => (Confirmed { i }, vec![]),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match *self {
            ServerInvite::Proceeding | ServerInvite::Terminated => None,
            ServerInvite::Accepted { l } => Some(l),
            ServerInvite::Completed { g, h } => Some(g.map_or(h, |(at, _)| at.min(h))),
            ServerInvite::Confirmed { i } => Some(i),
        }
    }
}

// ---------------------------------------------------------------------------
// Server non-INVITE (RFC 3261 §17.2.2)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInvite {
    Trying,
    Proceeding,
    /// Final response sent: answer retransmissions with it until Timer J.
    Completed {
        j: Instant,
    },
    Terminated,
}

impl ServerNonInvite {
    pub fn start() -> (ServerNonInvite, Actions) {
        (ServerNonInvite::Trying, vec![Action::PassUp])
    }

    pub fn step(
        self,
        ev: ServerEvent,
        now: Instant,
        t: &Timers,
        rel: Reliability,
    ) -> (ServerNonInvite, Actions) {
        use ServerNonInvite::*;
        match (self, ev) {
            (Terminated, _) => (Terminated, vec![]),
            (_, ServerEvent::TransportError) => (Terminated, vec![Action::TransportError]),
            // §17.2.2: a retransmission in Trying is discarded.
            (Trying, ServerEvent::RequestRetransmitted) => (Trying, vec![]),
            (Trying | Proceeding, ServerEvent::TuResponse(code)) => {
                if code < 200 {
                    (Proceeding, vec![Action::SendResponse])
                } else {
                    let j = if rel == Reliability::Unreliable {
                        t.t1x64()
                    } else {
                        Duration::ZERO
                    };
                    (Completed { j: now + j }, vec![Action::SendResponse])
                }
            }
            (Proceeding, ServerEvent::RequestRetransmitted) => {
                (Proceeding, vec![Action::SendResponse])
            }
            (Completed { j }, ServerEvent::RequestRetransmitted) => {
                (Completed { j }, vec![Action::SendResponse])
            }
            (Completed { j }, ServerEvent::Tick) if now >= j => (Terminated, vec![]),
            (s, _) => (s, vec![]),
        }
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        match *self {
            ServerNonInvite::Completed { j } => Some(j),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timers = Timers {
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
        t4: Duration::from_secs(5),
    };
    const UDP: Reliability = Reliability::Unreliable;
    const TCP: Reliability = Reliability::Reliable;

    /// Runs a client transaction with no responses until it terminates;
    /// returns the offsets (ms) of every SendRequest and of the timeout.
    fn silent_client<S: Copy>(
        start: (S, Actions),
        step: impl Fn(S, ClientEvent, Instant) -> (S, Actions),
        deadline: impl Fn(&S) -> Option<Instant>,
        t0: Instant,
    ) -> (Vec<u128>, Option<u128>) {
        let (mut s, a) = start;
        let mut sends = vec![];
        if a.contains(&Action::SendRequest) {
            sends.push(0);
        }
        for _ in 0..1000 {
            let Some(at) = deadline(&s) else { break };
            let (ns, actions) = step(s, ClientEvent::Tick, at);
            s = ns;
            let ms = (at - t0).as_millis();
            for a in actions {
                match a {
                    Action::SendRequest => sends.push(ms),
                    Action::Timeout => return (sends, Some(ms)),
                    _ => {}
                }
            }
        }
        (sends, None)
    }

    #[test]
    fn invite_over_udp_retransmits_on_timer_a_and_times_out_on_timer_b() {
        let t0 = Instant::now();
        let (sends, timeout) = silent_client(
            ClientInvite::start(t0, &T, UDP),
            |s, e, n| s.step(e, n, &T, UDP),
            |s| s.next_deadline(),
            t0,
        );
        // A: 0.5, 1, 2, 4, 8, 16 s intervals → sends at 0, .5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
        assert_eq!(sends, vec![0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(timeout, Some(32_000));
    }

    #[test]
    fn invite_over_tcp_does_not_retransmit() {
        let t0 = Instant::now();
        let (sends, timeout) = silent_client(
            ClientInvite::start(t0, &T, TCP),
            |s, e, n| s.step(e, n, &T, TCP),
            |s| s.next_deadline(),
            t0,
        );
        assert_eq!((sends, timeout), (vec![0], Some(32_000)));
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_f_times_out() {
        let t0 = Instant::now();
        let (sends, timeout) = silent_client(
            ClientNonInvite::start(t0, &T, UDP),
            |s, e, n| s.step(e, n, &T, UDP),
            |s| s.next_deadline(),
            t0,
        );
        assert_eq!(
            sends,
            vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(timeout, Some(32_000));
    }

    #[test]
    fn non_invite_in_proceeding_retransmits_every_t2() {
        let t0 = Instant::now();
        let (s, _) = ClientNonInvite::start(t0, &T, UDP);
        let (s, a) = s.step(
            ClientEvent::Response(100),
            t0 + Duration::from_millis(100),
            &T,
            UDP,
        );
        assert_eq!(a, vec![Action::PassUp]);
        // Timer E still due at 500 ms, then every T2.
        let (s, a) = s.step(ClientEvent::Tick, t0 + Duration::from_millis(500), &T, UDP);
        assert_eq!(a, vec![Action::SendRequest]);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_millis(4500)));
        // Final response: Completed, K = T4, retransmissions absorbed.
        let (s, a) = s.step(
            ClientEvent::Response(200),
            t0 + Duration::from_secs(1),
            &T,
            UDP,
        );
        assert_eq!(a, vec![Action::PassUp]);
        let (s, a) = s.step(
            ClientEvent::Response(200),
            t0 + Duration::from_secs(2),
            &T,
            UDP,
        );
        assert!(a.is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(6)));
        let (s, _) = s.step(ClientEvent::Tick, t0 + Duration::from_secs(6), &T, UDP);
        assert_eq!(s, ClientNonInvite::Terminated);
    }

    #[test]
    fn invite_error_response_is_acked_and_retransmissions_re_acked_until_timer_d() {
        let t0 = Instant::now();
        let (s, _) = ClientInvite::start(t0, &T, UDP);
        let (s, a) = s.step(ClientEvent::Response(180), t0, &T, UDP);
        assert_eq!(a, vec![Action::PassUp]);
        assert_eq!(
            s.next_deadline(),
            None,
            "no retransmission once 1xx arrived"
        );
        let (s, a) = s.step(
            ClientEvent::Response(486),
            t0 + Duration::from_secs(1),
            &T,
            UDP,
        );
        assert_eq!(a, vec![Action::SendAck, Action::PassUp]);
        let (s, a) = s.step(
            ClientEvent::Response(486),
            t0 + Duration::from_secs(2),
            &T,
            UDP,
        );
        assert_eq!(
            a,
            vec![Action::SendAck],
            "retransmitted final: ACK again, not passed up"
        );
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(33)));
        let (s, _) = s.step(ClientEvent::Tick, t0 + Duration::from_secs(33), &T, UDP);
        assert_eq!(s, ClientInvite::Terminated);
        // Over TCP, Timer D is zero.
        let (s, _) = ClientInvite::start(t0, &T, TCP);
        let (s, _) = s.step(ClientEvent::Response(404), t0, &T, TCP);
        assert_eq!(s.next_deadline(), Some(t0));
    }

    #[test]
    fn invite_2xx_retransmissions_reach_the_tu_until_timer_m() {
        let t0 = Instant::now();
        let (s, _) = ClientInvite::start(t0, &T, UDP);
        let (s, a) = s.step(ClientEvent::Response(200), t0, &T, UDP);
        assert_eq!(a, vec![Action::PassUp]);
        let (s, a) = s.step(
            ClientEvent::Response(200),
            t0 + Duration::from_millis(500),
            &T,
            UDP,
        );
        assert_eq!(
            a,
            vec![Action::PassUp],
            "the TU must ACK each retransmitted 2xx"
        );
        let (s, _) = s.step(ClientEvent::Tick, t0 + Duration::from_secs(32), &T, UDP);
        assert_eq!(s, ClientInvite::Terminated);
    }

    #[test]
    fn server_invite_error_retransmits_on_g_until_h_without_ack() {
        let t0 = Instant::now();
        let (s, a) = ServerInvite::start();
        assert_eq!(a, vec![Action::PassUp]);
        let (s, a) = s.step(ServerEvent::RequestRetransmitted, t0, &T, UDP);
        assert_eq!(a, vec![Action::SendResponse], "re-send the 100/180");
        let (mut s, _) = s.step(ServerEvent::TuResponse(486), t0, &T, UDP);
        let mut sends = vec![0u128];
        let mut timeout = None;
        while let Some(at) = s.next_deadline() {
            let (ns, actions) = s.step(ServerEvent::Tick, at, &T, UDP);
            s = ns;
            for a in actions {
                match a {
                    Action::SendResponse => sends.push((at - t0).as_millis()),
                    Action::Timeout => timeout = Some((at - t0).as_millis()),
                    _ => {}
                }
            }
        }
        assert_eq!(
            sends,
            vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(timeout, Some(32_000));
    }

    #[test]
    fn server_invite_ack_confirms_then_timer_i() {
        let t0 = Instant::now();
        let (s, _) = ServerInvite::start();
        let (s, _) = s.step(ServerEvent::TuResponse(487), t0, &T, UDP);
        let (s, a) = s.step(ServerEvent::RequestRetransmitted, t0, &T, UDP);
        assert_eq!(a, vec![Action::SendResponse]);
        let (s, a) = s.step(ServerEvent::Ack, t0 + Duration::from_secs(1), &T, UDP);
        assert!(a.is_empty());
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(6)));
        let (s, a) = s.step(ServerEvent::Ack, t0 + Duration::from_secs(2), &T, UDP);
        assert!(a.is_empty(), "duplicate ACKs absorbed");
        let (s, _) = s.step(ServerEvent::Tick, t0 + Duration::from_secs(6), &T, UDP);
        assert_eq!(s, ServerInvite::Terminated);
    }

    #[test]
    fn server_invite_2xx_is_accepted_until_timer_l() {
        let t0 = Instant::now();
        let (s, _) = ServerInvite::start();
        let (s, a) = s.step(ServerEvent::TuResponse(200), t0, &T, UDP);
        assert_eq!(a, vec![Action::SendResponse]);
        assert!(matches!(s, ServerInvite::Accepted { .. }));
        let (s, a) = s.step(ServerEvent::RequestRetransmitted, t0, &T, UDP);
        assert!(a.is_empty());
        let (s, _) = s.step(ServerEvent::Tick, t0 + Duration::from_secs(32), &T, UDP);
        assert_eq!(s, ServerInvite::Terminated);
    }

    #[test]
    fn server_non_invite_absorbs_and_answers_retransmissions_until_timer_j() {
        let t0 = Instant::now();
        let (s, _) = ServerNonInvite::start();
        let (s, a) = s.step(ServerEvent::RequestRetransmitted, t0, &T, UDP);
        assert!(a.is_empty(), "Trying discards retransmissions");
        let (s, a) = s.step(ServerEvent::TuResponse(200), t0, &T, UDP);
        assert_eq!(a, vec![Action::SendResponse]);
        let (s, a) = s.step(
            ServerEvent::RequestRetransmitted,
            t0 + Duration::from_secs(1),
            &T,
            UDP,
        );
        assert_eq!(a, vec![Action::SendResponse]);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(32)));
        let (s, _) = s.step(ServerEvent::Tick, t0 + Duration::from_secs(32), &T, UDP);
        assert_eq!(s, ServerNonInvite::Terminated);
        let (s, _) = ServerNonInvite::start();
        let (s, _) = s.step(ServerEvent::TuResponse(200), t0, &T, TCP);
        assert_eq!(s.next_deadline(), Some(t0), "Timer J is zero over TCP");
    }

    #[test]
    fn transport_errors_terminate_and_inform_the_tu() {
        let t0 = Instant::now();
        let (s, _) = ClientInvite::start(t0, &T, UDP);
        assert_eq!(
            s.step(ClientEvent::TransportError, t0, &T, UDP),
            (ClientInvite::Terminated, vec![Action::TransportError])
        );
        let (s, _) = ClientNonInvite::start(t0, &T, UDP);
        assert_eq!(
            s.step(ClientEvent::TransportError, t0, &T, UDP).1,
            vec![Action::TransportError]
        );
        let (s, _) = ServerInvite::start();
        assert_eq!(
            s.step(ServerEvent::TransportError, t0, &T, UDP).1,
            vec![Action::TransportError]
        );
    }
}
