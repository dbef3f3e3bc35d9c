//! The transaction layer (RFC 3261 §17) as one sans-IO object: it matches
//! incoming messages to transactions (§17.1.3, §17.2.3), drives the pure
//! state machines of [`super::transaction`], keeps the bytes to retransmit,
//! answers INVITEs with 100 Trying, ACKs non-2xx final responses, absorbs
//! retransmissions, and hands the transaction user (the dialog/call layer)
//! only what is new.
//!
//! Feed it with [`Endpoint::handle_message`] and [`Endpoint::handle_timeout`];
//! drain it with [`Endpoint::poll_output`].

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::deadlines::Deadlines;
use super::message::{
    parse_incoming, response_destination, stamp_via, CSeq, Msg, Param, Rejected, Via,
};
use super::method::Method;
use super::transaction::{
    Action, ClientEvent, ClientInvite, ClientNonInvite, Reliability, ServerEvent, ServerInvite,
    ServerNonInvite, Timers,
};

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    Udp,
    Tcp,
    /// TLS over TCP (RFC 3261 §26; `sips:` or `;transport=tls`).
    Tls,
}

impl Transport {
    fn reliability(self) -> Reliability {
        match self {
            Transport::Udp => Reliability::Unreliable,
            Transport::Tcp | Transport::Tls => Reliability::Reliable,
        }
    }
}

/// A peer address with its transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(u64);

/// What the endpoint tells its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new request (not a retransmission). Answer it with [`Endpoint::respond`].
    /// Messages are boxed: a parsed message is several hundred bytes.
    Request {
        tx: ServerTxId,
        msg: Box<Msg>,
        source: Peer,
    },
    /// An ACK that matched no INVITE transaction: the ACK for a 2xx (§13.3.1.4),
    /// or a CANCEL-less stray one; the dialog layer decides.
    Ack { msg: Box<Msg>, source: Peer },
    /// A response for a client transaction (1xx, the first 2xx and its
    /// retransmissions, the final non-2xx once).
    Response { tx: ClientTxId, msg: Box<Msg> },
    /// Timer B/F: no final response.
    ClientTimeout { tx: ClientTxId },
    /// Timer H: the ACK for our non-2xx final never came.
    ServerTimeout { tx: ServerTxId },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Transmit { to: Peer, data: Vec<u8> },
    Event(Event),
}

enum ClientKind {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

struct ClientTx {
    kind: ClientKind,
    /// The request and its bytes, for retransmissions and the ACK of a
    /// non-2xx answer: dropped at the final response (see [`Endpoint::on_response`]).
    /// Boxed, as in [`ServerTx`]: a transaction map keeps the room of its
    /// busiest moment, and a message inline made each slot ~1 KiB.
    request: Option<Box<Msg>>,
    bytes: Vec<u8>,
    to: Peer,
    /// Match key (§17.1.3): branch and CSeq method.
    key: (String, String),
    ack: Option<Vec<u8>>,
}

impl ClientTx {
    fn step(&mut self, ev: ClientEvent, now: Instant, t: &Timers) -> Vec<Action> {
        let rel = self.to.transport.reliability();
        match &mut self.kind {
            ClientKind::Invite(s) => {
                let (ns, a) = s.step(ev, now, t, rel);
                *s = ns;
                a
            }
            ClientKind::NonInvite(s) => {
                let (ns, a) = s.step(ev, now, t, rel);
                *s = ns;
                a
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.kind {
            ClientKind::Invite(s) => s.next_deadline(),
            ClientKind::NonInvite(s) => s.next_deadline(),
        }
    }

    fn terminated(&self) -> bool {
        match &self.kind {
            ClientKind::Invite(s) => *s == ClientInvite::Terminated,
            ClientKind::NonInvite(s) => *s == ClientNonInvite::Terminated,
        }
    }
}

enum ServerKind {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

struct ServerTx {
    kind: ServerKind,
    /// The request, until the TU's final response (see [`Endpoint::respond`]).
    /// Boxed: the message is 888 bytes, and the transaction map's slots
    /// stay (as its room) after the transaction is gone.
    request: Option<Box<Msg>>,
    last_response: Option<Vec<u8>>,
    /// Where responses go (§18.2.2).
    reply_to: Peer,
    key: ServerKey,
}

impl ServerTx {
    fn step(&mut self, ev: ServerEvent, now: Instant, t: &Timers) -> Vec<Action> {
        let rel = self.reply_to.transport.reliability();
        match &mut self.kind {
            ServerKind::Invite(s) => {
                let (ns, a) = s.step(ev, now, t, rel);
                *s = ns;
                a
            }
            ServerKind::NonInvite(s) => {
                let (ns, a) = s.step(ev, now, t, rel);
                *s = ns;
                a
            }
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.kind {
            ServerKind::Invite(s) => s.next_deadline(),
            ServerKind::NonInvite(s) => s.next_deadline(),
        }
    }

    fn terminated(&self) -> bool {
        match &self.kind {
            ServerKind::Invite(s) => *s == ServerInvite::Terminated,
            ServerKind::NonInvite(s) => *s == ServerNonInvite::Terminated,
        }
    }
}

/// §17.2.3: branch, sent-by and method (ACK counts as INVITE).
type ServerKey = (String, String, String);

pub struct Endpoint {
    timers: Timers,
    next_id: u64,
    client: HashMap<ClientTxId, ClientTx>,
    client_index: HashMap<(String, String), ClientTxId>,
    server: HashMap<ServerTxId, ServerTx>,
    server_index: HashMap<ServerKey, ServerTxId>,
    client_deadlines: Deadlines<ClientTxId>,
    server_deadlines: Deadlines<ServerTxId>,
    out: VecDeque<Output>,
    /// Messages dropped as malformed or unmatched.
    pub dropped: u64,
    /// Transactions looked at (by key, or as their timer came due).
    pub visits: u64,
}

fn server_key(msg: &Msg) -> ServerKey {
    let sent_by = msg.top_via().map_or("", |v| v.sent_by.as_str());
    let method = match msg.method() {
        Some(Method::Ack) => "INVITE".to_string(),
        Some(m) => m.to_string(),
        None => String::new(),
    };
    (
        msg.branch().to_string(),
        sent_by.to_ascii_lowercase(),
        method,
    )
}

impl Endpoint {
    pub fn new(timers: Timers) -> Endpoint {
        Endpoint {
            timers,
            next_id: 1,
            client: HashMap::new(),
            client_index: HashMap::new(),
            server: HashMap::new(),
            server_index: HashMap::new(),
            client_deadlines: Deadlines::default(),
            server_deadlines: Deadlines::default(),
            out: VecDeque::new(),
            dropped: 0,
            visits: 0,
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must run next.
    pub fn next_timeout(&self) -> Option<Instant> {
        [self.client_deadlines.next(), self.server_deadlines.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Live transactions (for tests and metrics).
    pub fn transactions(&self) -> usize {
        self.client.len() + self.server.len()
    }

    /// Sends a request in a new client transaction. The request must carry a
    /// top Via with a fresh `z9hG4bK` branch.
    pub fn send_request(&mut self, now: Instant, request: Msg, to: Peer) -> ClientTxId {
        let id = ClientTxId(self.id());
        let rel = to.transport.reliability();
        let is_invite = request.method() == Some(&Method::Invite);
        let key = (request.branch().to_string(), request.cseq().1.to_string());
        let (kind, actions) = if is_invite {
            let (s, a) = ClientInvite::start(now, &self.timers, rel);
            (ClientKind::Invite(s), a)
        } else {
            let (s, a) = ClientNonInvite::start(now, &self.timers, rel);
            (ClientKind::NonInvite(s), a)
        };
        let bytes = request.to_bytes();
        self.client_index.insert(key.clone(), id);
        self.client.insert(
            id,
            ClientTx {
                kind,
                request: Some(Box::new(request)),
                bytes,
                to,
                key,
                ack: None,
            },
        );
        self.client_actions(id, actions, None);
        id
    }

    /// Sends a message outside any transaction (the ACK for a 2xx, a 2xx
    /// retransmission by the UAS core).
    pub fn send_stateless(&mut self, msg: &Msg, to: Peer) {
        self.out.push_back(Output::Transmit {
            to,
            data: msg.to_bytes(),
        });
    }

    /// The TU answers a server transaction.
    pub fn respond(&mut self, now: Instant, tx: ServerTxId, response: Msg) {
        let Some(code) = response.status() else {
            return;
        };
        let Some(t) = self.server.get_mut(&tx) else {
            return;
        };
        t.last_response = Some(response.to_bytes());
        if code >= 200 {
            // Nothing answers this request again: what stays until the
            // transaction ends (32 s over UDP) is its key and the response
            // for retransmissions. A call's requests and their copies were
            // ~20 KiB of each new call's memory until then (heaptrack).
            t.request = None;
        }
        let actions = t.step(ServerEvent::TuResponse(code), now, &self.timers);
        self.server_actions(tx, actions);
    }

    /// The request of a server transaction (e.g. to match a CANCEL to its INVITE).
    pub fn server_request(&self, tx: ServerTxId) -> Option<&Msg> {
        self.server.get(&tx).and_then(|t| t.request.as_deref())
    }

    /// Finds the INVITE server transaction a CANCEL refers to (RFC 3261 §9.2:
    /// same branch and sent-by, method INVITE).
    pub fn invite_for_cancel(&self, cancel: &Msg) -> Option<ServerTxId> {
        let (b, s, _) = server_key(cancel);
        self.server_index.get(&(b, s, "INVITE".into())).copied()
    }

    /// Feeds one received message.
    pub fn handle_message(&mut self, now: Instant, data: &[u8], source: Peer) {
        let mut msg = match parse_incoming(data) {
            Ok(m) => m,
            Err(Rejected::Respond { response, .. }) => {
                // Answer at the address the request came from (it may lack rport).
                self.out.push_back(Output::Transmit {
                    to: source,
                    data: response,
                });
                return;
            }
            Err(Rejected::Drop(_)) => {
                self.dropped += 1;
                return;
            }
        };
        if msg.is_request() {
            if source.transport == Transport::Udp {
                if let Some(top) = msg.via.first_mut() {
                    stamp_via(top, source.addr);
                }
            }
            self.on_request(now, msg, source);
        } else {
            self.on_response(now, msg);
        }
    }

    fn on_request(&mut self, now: Instant, msg: Msg, source: Peer) {
        let key = server_key(&msg);
        let is_ack = msg.method() == Some(&Method::Ack);
        self.visits += 1;
        if let Some(&id) = self.server_index.get(&key) {
            let ev = if is_ack {
                ServerEvent::Ack
            } else {
                ServerEvent::RequestRetransmitted
            };
            let Some(t) = self.server.get_mut(&id) else {
                return;
            };
            // An ACK for a 2xx has its own branch and is not matched here
            // (§17.2.3); one that does match while Accepted goes up.
            if is_ack && matches!(t.kind, ServerKind::Invite(ServerInvite::Accepted { .. })) {
                self.out.push_back(Output::Event(Event::Ack {
                    msg: Box::new(msg),
                    source,
                }));
                return;
            }
            let actions = t.step(ev, now, &self.timers);
            self.server_actions(id, actions);
            return;
        }
        if is_ack {
            self.out.push_back(Output::Event(Event::Ack {
                msg: Box::new(msg),
                source,
            }));
            return;
        }
        let id = ServerTxId(self.id());
        let reply_to = match source.transport {
            Transport::Udp => Peer {
                transport: Transport::Udp,
                addr: response_destination(msg.top_via(), source.addr),
            },
            Transport::Tcp | Transport::Tls => source,
        };
        let is_invite = msg.method() == Some(&Method::Invite);
        let (kind, actions) = if is_invite {
            let (s, a) = ServerInvite::start();
            (ServerKind::Invite(s), a)
        } else {
            let (s, a) = ServerNonInvite::start();
            (ServerKind::NonInvite(s), a)
        };
        self.server_index.insert(key.clone(), id);
        self.server.insert(
            id,
            ServerTx {
                kind,
                request: Some(Box::new(msg.clone())),
                last_response: None,
                reply_to,
                key,
            },
        );
        self.server_actions(id, Vec::new());
        if is_invite {
            // §17.2.1: 100 Trying at once, so the client stops retransmitting.
            let trying = Msg::response_to(&msg, 100, "Trying", None);
            self.respond(now, id, trying);
        }
        for a in actions {
            if a == Action::PassUp {
                self.out.push_back(Output::Event(Event::Request {
                    tx: id,
                    msg: Box::new(msg.clone()),
                    source,
                }));
            }
        }
    }

    fn on_response(&mut self, now: Instant, msg: Msg) {
        let key = (msg.branch().to_string(), msg.cseq().1.to_string());
        self.visits += 1;
        let Some(&id) = self.client_index.get(&key) else {
            // A stray response (§18.1.2): dropped.
            self.dropped += 1;
            return;
        };
        let Some(code) = msg.status() else { return };
        let Some(t) = self.client.get_mut(&id) else {
            return;
        };
        let actions = t.step(ClientEvent::Response(code), now, &self.timers);
        if actions.contains(&Action::SendAck) && t.ack.is_none() {
            if let Some(request) = &t.request {
                t.ack = Some(ack_for_error(request, &msg).to_bytes());
            }
        }
        if code >= 200 {
            // A final response ends retransmissions (§17.1.1.2, §17.1.2.2)
            // and the non-2xx ACK is made: the request and its bytes are not
            // needed for the rest of the transaction's life.
            t.request = None;
            t.bytes = Vec::new();
        }
        self.client_actions(id, actions, Some(msg));
    }

    /// Fires expired timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for id in self.client_deadlines.take_due(now) {
            self.visits += 1;
            let Some(t) = self.client.get_mut(&id) else {
                continue;
            };
            let actions = t.step(ClientEvent::Tick, now, &self.timers);
            self.client_actions(id, actions, None);
        }
        for id in self.server_deadlines.take_due(now) {
            self.visits += 1;
            let Some(t) = self.server.get_mut(&id) else {
                continue;
            };
            let actions = t.step(ServerEvent::Tick, now, &self.timers);
            self.server_actions(id, actions);
        }
    }

    fn client_actions(&mut self, id: ClientTxId, actions: Vec<Action>, response: Option<Msg>) {
        let Some(t) = self.client.get(&id) else {
            return;
        };
        for a in actions {
            match a {
                Action::SendRequest => self.out.push_back(Output::Transmit {
                    to: t.to,
                    data: t.bytes.clone(),
                }),
                Action::SendAck => {
                    if let Some(ack) = &t.ack {
                        self.out.push_back(Output::Transmit {
                            to: t.to,
                            data: ack.clone(),
                        });
                    }
                }
                Action::PassUp => {
                    if let Some(m) = &response {
                        self.out.push_back(Output::Event(Event::Response {
                            tx: id,
                            msg: Box::new(m.clone()),
                        }));
                    }
                }
                Action::Timeout | Action::TransportError => self
                    .out
                    .push_back(Output::Event(Event::ClientTimeout { tx: id })),
                Action::SendResponse => {}
            }
        }
        if t.terminated() {
            let key = t.key.clone();
            self.client.remove(&id);
            self.client_index.remove(&key);
            self.client_deadlines.set(id, None);
        } else {
            self.client_deadlines.set(id, t.deadline());
        }
    }

    fn server_actions(&mut self, id: ServerTxId, actions: Vec<Action>) {
        let Some(t) = self.server.get(&id) else {
            return;
        };
        for a in actions {
            match a {
                Action::SendResponse => {
                    if let Some(r) = &t.last_response {
                        self.out.push_back(Output::Transmit {
                            to: t.reply_to,
                            data: r.clone(),
                        });
                    }
                }
                Action::Timeout | Action::TransportError => self
                    .out
                    .push_back(Output::Event(Event::ServerTimeout { tx: id })),
                _ => {}
            }
        }
        if t.terminated() {
            let key = t.key.clone();
            self.server.remove(&id);
            self.server_index.remove(&key);
            self.server_deadlines.set(id, None);
        } else {
            self.server_deadlines.set(id, t.deadline());
        }
    }
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same
/// Request-URI, Call-ID, From, CSeq number and top Via as the INVITE, To from
/// the response, the INVITE's Route headers.
fn ack_for_error(invite: &Msg, response: &Msg) -> Msg {
    let mut ack = in_invite_transaction(invite, Method::Ack);
    ack.to = response.to.clone();
    ack
}

/// A request that belongs with an INVITE's transaction — its CANCEL
/// (RFC 3261 §9.1) or the ACK of a non-2xx (§17.1.1.3): the INVITE's
/// Request-URI, top Via, Route, From, To, Call-ID and CSeq number, with
/// `method`.
pub(crate) fn in_invite_transaction(invite: &Msg, method: Method) -> Msg {
    let mut m = Msg::request(method.clone(), invite.request_uri().unwrap_or(""));
    m.via = invite.via.iter().take(1).cloned().collect();
    m.route = invite.route.clone();
    m.max_forwards = Some(70);
    m.from = invite.from.clone();
    m.to = invite.to.clone();
    m.call_id = invite.call_id.clone();
    m.cseq = Some(CSeq {
        seq: invite.cseq().0,
        method,
    });
    m
}

/// The one Via builder: a top Via for a request we send over `t` from
/// `sent_by`, with `branch` and an empty `rport` (RFC 3581 §3: answers come
/// back to the port we sent from, whatever NAT did).
pub fn via(t: Transport, sent_by: &str, branch: &str) -> Via {
    let param = |name: &str, value: Option<&str>| Param {
        name: name.to_string(),
        value: value.map(str::to_string),
    };
    Via {
        transport: match t {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
        .to_string(),
        sent_by: sent_by.to_string(),
        params: vec![param("branch", Some(branch)), param("rport", None)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn peer(port: u16) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn invite(branch: &str) -> Msg {
        let mut m = Msg::request(Method::Invite, "sip:100@127.0.0.1:5099");
        m.push(
            "via",
            format!("SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport"),
        )
        .push("max-forwards", "70")
        .push("from", "<sip:+1555@wa.example.com>;tag=a")
        .push("to", "<sip:100@127.0.0.1>")
        .push("call-id", "call-1")
        .push("cseq", "1 INVITE");
        m
    }

    fn drain(e: &mut Endpoint) -> Vec<Output> {
        std::iter::from_fn(|| e.poll_output()).collect()
    }

    fn transmits(out: &[Output]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Output::Transmit { data, .. } => Some(
                    String::from_utf8_lossy(data)
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string(),
                ),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn server_invite_gets_100_and_retransmissions_are_absorbed() {
        let t0 = Instant::now();
        let mut e = Endpoint::new(Timers::default());
        let req = invite("z9hG4bKx1").to_bytes();
        e.handle_message(t0, &req, peer(5099));
        let out = drain(&mut e);
        assert_eq!(transmits(&out), vec!["SIP/2.0 100 Trying"]);
        let Some(Output::Event(Event::Request { tx, msg, .. })) =
            out.iter().find(|o| matches!(o, Output::Event(_))).cloned()
        else {
            panic!()
        };
        // The retransmitted INVITE is answered with the last response, not passed up.
        e.handle_message(t0, &req, peer(5099));
        assert_eq!(transmits(&drain(&mut e)), vec!["SIP/2.0 100 Trying"]);
        // A 486: retransmitted on Timer G until the ACK.
        e.respond(t0, tx, Msg::response_to(&msg, 486, "Busy Here", Some("t1")));
        assert_eq!(transmits(&drain(&mut e)), vec!["SIP/2.0 486 Busy Here"]);
        e.handle_timeout(t0 + Duration::from_millis(500));
        assert_eq!(transmits(&drain(&mut e)), vec!["SIP/2.0 486 Busy Here"]);
        let mut ack = Msg::request(Method::Ack, "sip:100@127.0.0.1:5099");
        ack.push("via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx1;rport")
            .push("from", "<sip:+1555@wa.example.com>;tag=a")
            .push("to", "<sip:100@127.0.0.1>;tag=t1")
            .push("call-id", "call-1")
            .push("cseq", "1 ACK");
        e.handle_message(t0 + Duration::from_millis(600), &ack.to_bytes(), peer(5099));
        assert!(
            drain(&mut e).is_empty(),
            "the ACK for a non-2xx stays in the transaction"
        );
        e.handle_timeout(t0 + Duration::from_secs(10));
        assert_eq!(e.transactions(), 0);
    }

    #[test]
    fn client_invite_acks_errors_itself_and_passes_2xx_up() {
        let t0 = Instant::now();
        let mut e = Endpoint::new(Timers::default());
        let tx = e.send_request(t0, invite("z9hG4bKc1"), peer(5099));
        assert_eq!(
            transmits(&drain(&mut e)),
            vec!["INVITE sip:100@127.0.0.1:5099 SIP/2.0"]
        );
        let inv = parse_incoming(&invite("z9hG4bKc1").to_bytes()).unwrap();
        let busy = Msg::response_to(&inv, 486, "Busy Here", Some("p1")).to_bytes();
        e.handle_message(t0, &busy, peer(5099));
        let out = drain(&mut e);
        assert_eq!(transmits(&out), vec!["ACK sip:100@127.0.0.1:5099 SIP/2.0"]);
        assert!(out.iter().any(|o| matches!(o, Output::Event(Event::Response { tx: t, msg }) if *t == tx && msg.status() == Some(486))));
        // Retransmitted 486: ACK again, not passed up.
        e.handle_message(t0, &busy, peer(5099));
        let out = drain(&mut e);
        assert_eq!(transmits(&out), vec!["ACK sip:100@127.0.0.1:5099 SIP/2.0"]);
        assert!(!out.iter().any(|o| matches!(o, Output::Event(_))));
        // Unmatched responses are dropped.
        let stray = Msg::response_to(
            &parse_incoming(&invite("z9hG4bKnone").to_bytes()).unwrap(),
            200,
            "OK",
            Some("x"),
        );
        e.handle_message(t0, &stray.to_bytes(), peer(5099));
        assert_eq!(e.dropped, 1);
    }

    #[test]
    fn a_transaction_lets_go_of_its_request_at_the_final_response() {
        let t0 = Instant::now();
        let mut e = Endpoint::new(Timers::default());
        // Client: the INVITE and its bytes until the answer, then only the
        // key (and the ACK of an error, still sent for retransmissions).
        let tx = e.send_request(t0, invite("z9hG4bKm1"), peer(5099));
        drain(&mut e);
        assert!(e.client[&tx].request.is_some() && !e.client[&tx].bytes.is_empty());
        let inv = parse_incoming(&invite("z9hG4bKm1").to_bytes()).unwrap();
        let ringing = Msg::response_to(&inv, 180, "Ringing", Some("p1")).to_bytes();
        e.handle_message(t0, &ringing, peer(5099));
        drain(&mut e);
        assert!(
            e.client[&tx].request.is_some(),
            "a provisional answer keeps it"
        );
        let busy = Msg::response_to(&inv, 486, "Busy Here", Some("p1")).to_bytes();
        e.handle_message(t0, &busy, peer(5099));
        drain(&mut e);
        let t = &e.client[&tx];
        assert!(t.request.is_none() && t.bytes.is_empty());
        e.handle_message(t0, &busy, peer(5099));
        assert_eq!(
            transmits(&drain(&mut e)),
            vec!["ACK sip:100@127.0.0.1:5099 SIP/2.0"],
            "the 486 retransmitted: ACKed again"
        );
        // Server: the request until our final response, then the response alone.
        e.handle_message(t0, &invite("z9hG4bKm2").to_bytes(), peer(5099));
        let Some(Output::Event(Event::Request { tx, msg, .. })) = drain(&mut e)
            .into_iter()
            .find(|o| matches!(o, Output::Event(_)))
        else {
            panic!("the INVITE was not passed up")
        };
        e.respond(t0, tx, Msg::response_to(&msg, 180, "Ringing", Some("s1")));
        assert!(e.server_request(tx).is_some());
        e.respond(t0, tx, Msg::response_to(&msg, 200, "OK", Some("s1")));
        drain(&mut e);
        assert!(e.server_request(tx).is_none());
        e.handle_message(t0, &invite("z9hG4bKm2").to_bytes(), peer(5099));
        let out = drain(&mut e);
        assert!(
            !out.iter().any(|o| matches!(o, Output::Event(_))),
            "a retransmitted INVITE is still absorbed by its transaction"
        );
    }

    #[test]
    fn client_invite_timeout_reports_once() {
        let t0 = Instant::now();
        let mut e = Endpoint::new(Timers::default());
        let tx = e.send_request(t0, invite("z9hG4bKt"), peer(5099));
        let mut sends = 0;
        let mut timeouts = 0;
        let mut now = t0;
        while let Some(at) = e.next_timeout() {
            now = at.max(now);
            e.handle_timeout(now);
            for o in drain(&mut e) {
                match o {
                    Output::Transmit { .. } => sends += 1,
                    Output::Event(Event::ClientTimeout { tx: t }) if t == tx => timeouts += 1,
                    _ => {}
                }
            }
        }
        // The first send and six Timer A retransmissions, then Timer B.
        assert_eq!((sends, timeouts), (7, 1));
        assert_eq!(e.transactions(), 0);
    }
}
