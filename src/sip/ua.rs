//! The bridge's SIP user agent toward the PBX, sans-IO: calls it places
//! (INVITE to the trunk, digest retry on 401/407, ACK for every 2xx
//! retransmission, CANCEL or BYE to hang up) and calls it receives (source
//! ACL, digest challenge, 100/180/183/200, 2xx retransmitted until the ACK
//! and a BYE if it never comes, CANCEL → 487, BYE → 200, OPTIONS → 200,
//! INFO DTMF, re-INVITE/UPDATE handed to the call layer, unknown methods →
//! 405, a required extension we lack → 420).
//!
//! One object for all calls, fed datagrams and time, drained with
//! [`SipUa::poll_output`]; the call layer sees [`UaEvent`]s per call.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::acl::SourceAcl;
use super::deadlines::Deadlines;
use super::dialog::{Dialog, DialogKey};
use super::digest::{self, Authorization, Challenge, NonceCheck, NonceIssuer};
use super::endpoint::{via, ClientTxId, Endpoint, Event, Output, Peer, ServerTxId, Transport};
use super::message::{param, split_list, uri_of, Msg};
use super::method::Method;
use super::random::Random;
use super::register::{RegState, RegisterConfig, Registration};
use super::transaction::Timers;

pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE";

/// The methods of [`ALLOW`].
const ALLOWED: [Method; 7] = [
    Method::Invite,
    Method::Ack,
    Method::Cancel,
    Method::Bye,
    Method::Options,
    Method::Info,
    Method::Update,
];

/// SIP extensions (option tags, RFC 3261 §19.2) the bridge implements:
/// none — no reliable provisional responses (100rel), no session timers
/// (`timer`; a refresh re-INVITE or UPDATE is answered all the same), no
/// `replaces`.
const OPTION_TAGS: &[&str] = &[];

/// The option tags a request's `Require` names that the bridge does not
/// implement. RFC 3261 §8.2.2.3: such a request gets 420 listing them.
/// How many 3xx responses one call follows: a loop between redirecting
/// targets ends here, with the last 3xx as the call's failure.
pub const MAX_REDIRECTS: u8 = 3;

/// Where a 3xx response sends our INVITE, the way Asterisk's
/// `redirect_method = user` (its default) does: the user part of the most
/// preferred Contact (highest `q`, RFC 3261 §8.1.3.4; `sip:`, `sips:` or
/// `tel:`) replaces the user of our request-URI, and the INVITE goes to the
/// same trunk. A PBX's answer cannot send the bridge's calls to hosts of its
/// choosing (toll fraud, internal addresses). `None` when no Contact has a
/// user made only of characters a SIP user may hold unescaped.
fn redirect_uri(invite: &Msg, resp: &Msg) -> Option<String> {
    let mut best: Option<(f32, &str)> = None;
    for contact in resp.all("contact").into_iter().flat_map(split_list) {
        let Some(user) = contact_user(uri_of(contact)) else {
            continue;
        };
        let q = param(contact, "q")
            .and_then(|q| q.parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(1.0);
        if best.is_none_or(|(bq, _)| q > bq) {
            best = Some((q, user));
        }
    }
    let (_, user) = best?;
    let current = invite.request_uri()?;
    let (scheme, rest) = current.split_once(':')?;
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    Some(format!("{scheme}:{user}@{host}"))
}

/// The user of a Contact URI, if it is one we can put in a request-URI as is.
fn contact_user(uri: &str) -> Option<&str> {
    let user = if let Some(tel) = uri.strip_prefix("tel:") {
        tel.split(';').next()?
    } else {
        let rest = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"))?;
        let (userinfo, _) = rest.split_once('@')?;
        // user ";" parameters and ":password" are not carried over.
        userinfo.split([';', ':']).next()?
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || "+-_.!~*#%".contains(c);
    (!user.is_empty() && user.len() <= 64 && user.chars().all(plain)).then_some(user)
}

fn unsupported_required(msg: &Msg) -> Vec<&str> {
    msg.all("require")
        .into_iter()
        .filter(|tag| !OPTION_TAGS.iter().any(|t| t.eq_ignore_ascii_case(tag)))
        .collect()
}

/// Our handle for one call's SIP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// The PBX sent BYE.
    PeerBye,
    /// The PBX cancelled its INVITE before we answered.
    PeerCancel,
    /// We hung up (BYE sent).
    LocalHangup,
    /// Our 2xx was never acknowledged (RFC 3261 §13.3.1.4): BYE sent.
    NoAck,
    /// The call's task did not take its SIP events in time: the SIP side
    /// hung the call up rather than wait for it (and so stall every call).
    Overloaded,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaEvent {
    /// An INVITE from the PBX passed the ACL and authentication.
    /// Answer with [`SipUa::ring`], [`SipUa::answer`] or [`SipUa::reject`].
    Incoming {
        call: CallRef,
        /// Boxed: events travel in per-call channels whose blocks hold 32 of
        /// them from the start; inline, the INVITE made every event 120
        /// bytes and each call's channel ~3.9 KiB.
        invite: Box<Msg>,
        source: Peer,
    },
    /// A provisional response to our INVITE.
    Progress {
        call: CallRef,
        code: u16,
        sdp: Option<String>,
    },
    /// Our INVITE was answered (ACK sent), or our 2xx was acknowledged.
    Answered { call: CallRef, sdp: Option<String> },
    /// Our INVITE failed with a final response (408 on timeout).
    Failed {
        call: CallRef,
        code: u16,
        reason: String,
    },
    /// The call is over on the SIP side.
    Ended { call: CallRef, cause: EndCause },
    /// A re-INVITE or UPDATE in the call: answer with [`SipUa::answer_reoffer`].
    Reoffer {
        call: CallRef,
        tx: ServerTxId,
        sdp: Option<String>,
    },
    /// The registration's outcome changed: registered, or failed with this code.
    Registration { registered: bool, code: u16 },
    /// A key press sent as SIP INFO (application/dtmf-relay or application/dtmf).
    Dtmf {
        call: CallRef,
        digit: char,
        duration: Duration,
    },
}

impl UaEvent {
    /// The call the event is about (none for the registration's).
    pub fn call(&self) -> Option<CallRef> {
        match self {
            UaEvent::Incoming { call, .. }
            | UaEvent::Progress { call, .. }
            | UaEvent::Answered { call, .. }
            | UaEvent::Failed { call, .. }
            | UaEvent::Ended { call, .. }
            | UaEvent::Reoffer { call, .. }
            | UaEvent::Dtmf { call, .. } => Some(*call),
            UaEvent::Registration { .. } => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaOutput {
    Transmit { to: Peer, data: Vec<u8> },
    Event(UaEvent),
}

/// A call to place.
#[derive(Debug, Clone)]
pub struct Invite<'a> {
    pub request_uri: &'a str,
    /// From, without tag (`<sip:+1555@wa.example.com>`).
    pub from: &'a str,
    pub to: &'a str,
    /// Extra headers (e.g. X-WA-Call-Id).
    pub headers: &'a [(&'a str, String)],
    pub sdp: &'a str,
    pub peer: Peer,
}

#[derive(Debug, Clone)]
pub struct UaConfig {
    /// host:port we put in Via and Contact.
    pub via_host: String,
    pub contact_uri: String,
    /// Answering the PBX's challenges.
    pub credentials: Option<(String, String)>,
    /// Challenging the PBX's INVITEs.
    pub inbound_credentials: Option<(String, String)>,
    pub realm: String,
    pub acl: SourceAcl,
    pub timers: Timers,
    /// Seeds the UA's random identifiers (tags, branches, Call-IDs, the
    /// digest secret) for a test that replays them; `None`: from the OS.
    pub rng_seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// UAC: INVITE sent, no final response yet.
    Calling,
    /// UAS: INVITE received, not answered yet.
    Ringing,
    /// UAS: 2xx sent, waiting for the ACK.
    AwaitingAck,
    Confirmed,
    Ended,
}

struct Call {
    state: State,
    uac: bool,
    invite: Msg,
    invite_client: Option<ClientTxId>,
    invite_server: Option<ServerTxId>,
    dialog: Option<Dialog>,
    peer: Peer,
    local_tag: String,
    auth_tries: u8,
    /// 3xx responses followed so far (at most [`MAX_REDIRECTS`]).
    redirects: u8,
    got_provisional: bool,
    /// Hang up as soon as possible (CANCEL sent or pending).
    hangup_requested: bool,
    cancel_sent: bool,
    /// UAS 2xx retransmission: (bytes, next at, interval, give up at).
    ok_retx: Option<(Vec<u8>, Instant, Duration, Instant)>,
    /// When the UA first saw the call ended; it is forgotten 64×T1 later.
    ended_at: Option<Instant>,
    /// The client transactions sent for the call (INVITE, CANCEL, BYE).
    client_txs: Vec<ClientTxId>,
}

pub struct SipUa {
    cfg: UaConfig,
    ep: Endpoint,
    calls: HashMap<CallRef, Call>,
    by_invite_server: HashMap<ServerTxId, CallRef>,
    by_client: HashMap<ClientTxId, CallRef>,
    /// Calls by their dialog's RFC 3261 §12 identifiers.
    by_dialog: HashMap<DialogKey, CallRef>,
    /// When each call next needs [`SipUa::handle_timeout`] (2xx
    /// retransmission, forgetting an ended call).
    call_deadlines: Deadlines<CallRef>,
    /// Calls whose timers may have changed since their deadline was set.
    dirty: Vec<CallRef>,
    /// Per-call records looked at so far (see [`SipUa::work`]).
    visits: u64,
    nonces: NonceIssuer,
    rng: Random,
    next: u64,
    out: VecDeque<UaOutput>,
    /// The latest instant fed in.
    now: Instant,
    /// Registration to the PBX, its peer and the REGISTER in flight.
    registration: Option<(Registration, Peer, Option<ClientTxId>)>,
}

/// Our contact URI for a call or registration over `t`. Over TCP it says
/// so: a sip: URI without a transport parameter means UDP (RFC 3263 §4.1),
/// and the PBX's requests should come the way the call (or the
/// registration, RFC 3261 §10.2.1) did.
fn contact_uri(uri: &str, t: Transport) -> String {
    match t {
        Transport::Tcp => format!("{uri};transport=tcp"),
        Transport::Udp => uri.to_string(),
    }
}

/// [`contact_uri`] as a Contact header value.
fn contact_header(uri: &str, t: Transport) -> String {
    format!("<{}>", contact_uri(uri, t))
}

fn sdp_of(msg: &Msg) -> Option<String> {
    msg.sdp().map(str::to_string)
}

/// Parses INFO DTMF bodies: `Signal=5\r\nDuration=160` (dtmf-relay) or `5` (dtmf).
fn info_dtmf(msg: &Msg) -> Option<(char, Duration)> {
    let ct = msg.header("content-type")?.to_ascii_lowercase();
    let body = msg.body_str();
    let (digit, ms) = if ct.starts_with("application/dtmf-relay") {
        let mut digit = None;
        let mut dur = 160u64;
        for line in body.lines() {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "signal" => digit = v.trim().chars().next(),
                "duration" => dur = v.trim().parse().unwrap_or(160),
                _ => {}
            }
        }
        (digit?, dur)
    } else if ct.starts_with("application/dtmf") {
        (body.trim().chars().next()?, 160)
    } else {
        return None;
    };
    crate::dtmf::event_of(digit)?;
    Some((
        digit.to_ascii_uppercase(),
        Duration::from_millis(ms.clamp(40, 5000)),
    ))
}

impl SipUa {
    /// A user agent starting at `now`.
    pub fn new(cfg: UaConfig, now: Instant) -> SipUa {
        let mut rng = Random::new(cfg.rng_seed);
        SipUa {
            ep: Endpoint::new(cfg.timers),
            nonces: NonceIssuer::new(&rng.bytes::<32>(), now),
            rng,
            cfg,
            calls: HashMap::new(),
            by_invite_server: HashMap::new(),
            by_client: HashMap::new(),
            by_dialog: HashMap::new(),
            call_deadlines: Deadlines::default(),
            dirty: Vec::new(),
            visits: 0,
            next: 0,
            out: VecDeque::new(),
            now,
            registration: None,
        }
    }

    pub fn poll_output(&mut self) -> Option<UaOutput> {
        self.pump();
        self.out.pop_front()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        let reg = self
            .registration
            .as_ref()
            .and_then(|(r, _, _)| r.next_timeout());
        // Calls changed since their deadlines were set: at once.
        let unscheduled = (!self.dirty.is_empty()).then_some(self.now);
        [
            self.ep.next_timeout(),
            self.call_deadlines.next(),
            reg,
            unscheduled,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Sets the deadlines of the calls changed since the last time.
    fn reschedule(&mut self) {
        let linger = self.cfg.timers.t1 * 64;
        let now = self.now;
        for call in std::mem::take(&mut self.dirty) {
            self.visits += 1;
            let when = self.calls.get_mut(&call).and_then(|c| {
                if c.state == State::Ended {
                    Some(*c.ended_at.get_or_insert(now) + linger)
                } else {
                    c.ok_retx.as_ref().map(|r| r.1.min(r.3))
                }
            });
            self.call_deadlines.set(call, when);
        }
    }

    /// Notes a client transaction of `call`'s.
    fn track(&mut self, tx: ClientTxId, call: CallRef) {
        self.by_client.insert(tx, call);
        if let Some(c) = self.calls.get_mut(&call) {
            c.client_txs.push(tx);
        }
    }

    /// Starts registering to `peer` (and keeps the registration fresh).
    pub fn register(&mut self, now: Instant, mut cfg: RegisterConfig, peer: Peer) {
        cfg.contact = contact_uri(&cfg.contact, peer.transport);
        let reg = Registration::new(cfg, self.rng.call_id(), self.rng.tag(), now);
        self.registration = Some((reg, peer, None));
        self.drive_registration(now);
    }

    /// The trunk host now resolves to `trunk` (DNS): requests from those
    /// addresses pass the ACL's default (when `trunk.allowed_sources` is
    /// empty) instead of the old ones, and a registration whose address is
    /// no longer among them moves to the first at once (the old registrar's
    /// binding is left to expire).
    pub fn trunk_moved(&mut self, now: Instant, trunk: &[Peer]) {
        self.cfg
            .acl
            .set_trunk(trunk.iter().map(|p| p.addr.ip()).collect());
        let Some(&first) = trunk.first() else { return };
        let Some((reg, peer, _)) = self.registration.as_ref() else {
            return;
        };
        // A name with several addresses may list them in another order
        // each time: the registration stays while its address is listed.
        if trunk.contains(peer) {
            return;
        }
        let reg = Registration::new(
            reg.config().clone(),
            self.rng.call_id(),
            self.rng.tag(),
            now,
        );
        self.registration = Some((reg, first, None));
        self.drive_registration(now);
    }

    /// Whether the registration is current (`None` when not registering).
    pub fn registered(&self, now: Instant) -> Option<bool> {
        self.registration
            .as_ref()
            .map(|(r, _, _)| r.is_registered(now))
    }

    fn drive_registration(&mut self, now: Instant) {
        let Some((reg, peer, in_flight)) = self.registration.as_mut() else {
            return;
        };
        if in_flight.is_some() {
            return;
        }
        let top_via = via(peer.transport, &self.cfg.via_host, &self.rng.branch());
        let cnonce = self.rng.tag();
        if let Some(req) = reg.poll_request(now, top_via, &cnonce) {
            let peer = *peer;
            let tx = self.ep.send_request(now, req, peer);
            if let Some((_, _, f)) = self.registration.as_mut() {
                *f = Some(tx);
            }
        }
    }

    /// A final response (or a timeout, `None`) for the REGISTER in flight.
    fn on_register_result(&mut self, now: Instant, msg: Option<&Msg>) {
        let Some((reg, _, in_flight)) = self.registration.as_mut() else {
            return;
        };
        *in_flight = None;
        reg.on_response(now, msg);
        let code = msg.and_then(|m| m.status()).unwrap_or(408);
        // A challenge being answered is not an outcome; success and failure are.
        let outcome = match reg.state {
            RegState::Registered { .. } => Some(true),
            RegState::Failed { .. } => Some(false),
            RegState::Unregistered => None,
        };
        if let Some(registered) = outcome {
            self.emit(UaEvent::Registration { registered, code });
        }
        self.drive_registration(now);
    }

    /// Calls not yet over (for tests and admission).
    pub fn live_calls(&self) -> usize {
        self.calls
            .values()
            .filter(|c| c.state != State::Ended)
            .count()
    }

    fn new_ref(&mut self) -> CallRef {
        self.next += 1;
        CallRef(self.next)
    }

    fn emit(&mut self, e: UaEvent) {
        if let Some(call) = e.call() {
            self.dirty.push(call);
        }
        self.out.push_back(UaOutput::Event(e));
    }

    // ------------------------------------------------------------------
    // Calls we place
    // ------------------------------------------------------------------

    /// Sends an INVITE to its peer.
    pub fn invite(&mut self, now: Instant, inv: Invite<'_>) -> CallRef {
        let Invite {
            request_uri,
            from,
            to,
            headers,
            sdp,
            peer,
        } = inv;
        let call = self.new_ref();
        let tag = self.rng.tag();
        let mut m = Msg::request("INVITE", request_uri);
        m.push(
            "via",
            via(peer.transport, &self.cfg.via_host, &self.rng.branch()),
        )
        .push("max-forwards", "70")
        .push("from", format!("{from};tag={tag}"))
        .push("to", to.to_string())
        .push("call-id", self.rng.call_id())
        .push("cseq", "1 INVITE")
        .push(
            "contact",
            contact_header(&self.cfg.contact_uri, peer.transport),
        )
        .push("allow", ALLOW)
        .push(
            "user-agent",
            concat!("wa-sip-bridge/", env!("CARGO_PKG_VERSION")),
        );
        for (k, v) in headers {
            m.push(k, v.clone());
        }
        m.with_body("application/sdp", sdp.as_bytes().to_vec());
        let tx = self.ep.send_request(now, m.clone(), peer);
        self.by_client.insert(tx, call);
        self.calls.insert(
            call,
            Call {
                state: State::Calling,
                uac: true,
                invite: m,
                invite_client: Some(tx),
                invite_server: None,
                dialog: None,
                peer,
                local_tag: tag,
                auth_tries: 0,
                redirects: 0,
                got_provisional: false,
                hangup_requested: false,
                cancel_sent: false,
                ok_retx: None,
                ended_at: None,
                client_txs: vec![tx],
            },
        );
        call
    }

    /// Hangs up: CANCEL before the answer, BYE after; rejects an unanswered incoming call with 480.
    pub fn hangup(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        match c.state {
            State::Calling => {
                c.hangup_requested = true;
                // RFC 3261 §9.1: CANCEL only once a provisional arrived.
                if c.got_provisional && !c.cancel_sent {
                    self.send_cancel(now, call);
                }
            }
            State::Ringing => self.reject(now, call, 480, "Temporarily Unavailable", &[]),
            State::AwaitingAck | State::Confirmed => {
                self.send_bye(now, call, EndCause::LocalHangup)
            }
            State::Ended => {}
        }
    }

    /// The call's dialog once established, to save for [`SipUa::bye_saved`].
    pub fn dialog(&self, call: CallRef) -> Option<Dialog> {
        self.calls.get(&call)?.dialog.clone()
    }

    /// Ends a dialog saved before a restart with a BYE. No call state is kept:
    /// the BYE's transaction retransmits it and its answer is not awaited.
    pub fn bye_saved(&mut self, now: Instant, mut dialog: Dialog) {
        // RFC 3261 §12.2.1.1 only needs a higher CSeq; requests sent after
        // the dialog was saved (none are, today) are far below this.
        dialog.local_cseq = dialog.local_cseq.saturating_add(1000);
        let bye = dialog.request("BYE", &self.cfg.via_host, &self.rng.branch());
        let peer = dialog.peer;
        self.ep.send_request(now, bye, peer);
    }

    fn send_cancel(&mut self, now: Instant, call: CallRef) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.cancel_sent = true;
        // RFC 3261 §9.1: same Request-URI, Call-ID, To, From, CSeq number and top Via.
        let inv = &c.invite;
        let mut m = Msg::request("CANCEL", inv.request_uri().unwrap_or(""));
        m.push("via", inv.top_via())
            .push("max-forwards", "70")
            .push("from", inv.header("from").unwrap_or(""))
            .push("to", inv.header("to").unwrap_or(""))
            .push("call-id", inv.call_id())
            .push("cseq", format!("{} CANCEL", inv.cseq().0));
        for r in inv.all("route") {
            m.push("route", r);
        }
        let peer = c.peer;
        let tx = self.ep.send_request(now, m, peer);
        self.track(tx, call);
    }

    /// Sends our INVITE again after a final response that asks for it (a
    /// digest challenge, a redirect): same Call-ID, From and To, the next
    /// CSeq and a new branch (RFC 3261 §8.1.3.4, §22.2), optionally to a
    /// new request-URI or with a new credentials header.
    fn resend_invite(
        &mut self,
        now: Instant,
        call: CallRef,
        request_uri: Option<String>,
        credentials: Option<(&str, String)>,
    ) {
        let branch = self.rng.branch();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let mut inv = c.invite.clone();
        let cseq = inv.cseq().0 + 1;
        inv.headers.retain(|(k, _)| {
            k != "authorization" && k != "proxy-authorization" && k != "via" && k != "cseq"
        });
        inv.headers.insert(
            0,
            (
                "via".into(),
                via(c.peer.transport, &self.cfg.via_host, &branch),
            ),
        );
        inv.push("cseq", format!("{cseq} INVITE"));
        if let Some(uri) = request_uri {
            inv.start = format!("INVITE {uri} SIP/2.0");
        }
        if let Some((name, value)) = credentials {
            inv.push(name, value);
        }
        c.invite = inv.clone();
        let peer = c.peer;
        let tx = self.ep.send_request(now, inv, peer);
        if let Some(c) = self.calls.get_mut(&call) {
            c.invite_client = Some(tx);
        }
        self.track(tx, call);
    }

    fn send_bye(&mut self, now: Instant, call: CallRef, cause: EndCause) {
        let branch = self.rng.branch();
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(d) = c.dialog.as_mut() else { return };
        let bye = d.request("BYE", &self.cfg.via_host, &branch);
        let peer = d.peer;
        c.state = State::Ended;
        c.ok_retx = None;
        let tx = self.ep.send_request(now, bye, peer);
        self.track(tx, call);
        self.emit(UaEvent::Ended { call, cause });
    }

    fn on_response(&mut self, now: Instant, tx: ClientTxId, msg: Msg) {
        if self
            .registration
            .as_ref()
            .is_some_and(|(_, _, f)| *f == Some(tx))
        {
            if msg.status().is_some_and(|c| c >= 200) {
                self.on_register_result(now, Some(&msg));
            }
            return;
        }
        let Some(&call) = self.by_client.get(&tx) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(code) = msg.status() else { return };
        if c.invite_client != Some(tx) {
            // BYE/CANCEL/INFO answers need nothing more.
            return;
        }
        match code {
            100 => {}
            101..=199 => {
                c.got_provisional = true;
                let cancel_now = c.hangup_requested && !c.cancel_sent;
                let sdp = sdp_of(&msg);
                if cancel_now {
                    self.send_cancel(now, call);
                } else {
                    self.emit(UaEvent::Progress { call, code, sdp });
                }
            }
            200..=299 => {
                let first = c.dialog.is_none();
                if first {
                    c.dialog = Dialog::uac(&c.invite, &msg, c.peer);
                    if let Some(d) = &c.dialog {
                        self.by_dialog.insert(DialogKey::of(d), call);
                    }
                }
                let Some(d) = c.dialog.as_ref() else { return };
                // ACK every 2xx, retransmissions included (RFC 3261 §13.2.2.4).
                let ack = d.ack(c.invite.cseq().0, &self.cfg.via_host, &self.rng.branch());
                let peer = d.peer;
                self.ep.send_stateless(&ack, peer);
                if first {
                    c.state = State::Confirmed;
                    if c.hangup_requested {
                        self.send_bye(now, call, EndCause::LocalHangup);
                    } else {
                        self.emit(UaEvent::Answered {
                            call,
                            sdp: sdp_of(&msg),
                        });
                    }
                }
            }
            401 | 407
                if c.auth_tries < 2 && self.cfg.credentials.is_some() && !c.hangup_requested =>
            {
                let header = if code == 401 {
                    "www-authenticate"
                } else {
                    "proxy-authenticate"
                };
                let challenge = msg.header(header).and_then(|h| Challenge::parse(h).ok());
                // A stale nonce may be retried; a second plain rejection is final.
                let usable = match (challenge, self.cfg.credentials.clone()) {
                    (Some(ch), Some(creds)) if c.auth_tries == 0 || ch.stale => Ok((ch, creds)),
                    (Some(_), Some(_)) => Err("credentials rejected"),
                    _ => Err("unusable challenge"),
                };
                let (ch, (user, pass)) = match usable {
                    Ok(x) => x,
                    Err(reason) => {
                        c.state = State::Ended;
                        self.emit(UaEvent::Failed {
                            call,
                            code,
                            reason: reason.into(),
                        });
                        return;
                    }
                };
                c.auth_tries += 1;
                let uri = c.invite.request_uri().unwrap_or("").to_string();
                let cnonce = self.rng.tag();
                let auth = digest::authorize(&ch, &user, &pass, "INVITE", &uri, &cnonce, 1);
                let name = if code == 401 {
                    "authorization"
                } else {
                    "proxy-authorization"
                };
                self.resend_invite(now, call, None, Some((name, auth)));
            }
            300..=399 if c.redirects < MAX_REDIRECTS && !c.hangup_requested => {
                match redirect_uri(&c.invite, &msg) {
                    Some(uri) => {
                        tracing::info!(code, to = %uri, "the PBX redirected our INVITE; following it on the trunk");
                        c.redirects += 1;
                        // A new request-URI: the digest exchange starts over.
                        c.auth_tries = 0;
                        self.resend_invite(now, call, Some(uri), None);
                    }
                    None => {
                        c.state = State::Ended;
                        self.emit(UaEvent::Failed {
                            call,
                            code,
                            reason: "redirect without a usable Contact".into(),
                        });
                    }
                }
            }
            _ => {
                c.state = State::Ended;
                let reason = msg.start.splitn(3, ' ').nth(2).unwrap_or("").to_string();
                self.emit(UaEvent::Failed { call, code, reason });
            }
        }
    }

    // ------------------------------------------------------------------
    // Calls we receive
    // ------------------------------------------------------------------

    /// Answers a server transaction (the response fields of RFC 3261 §8.2.6).
    #[allow(clippy::too_many_arguments)]
    fn respond(
        &mut self,
        now: Instant,
        tx: ServerTxId,
        req: &Msg,
        code: u16,
        reason: &str,
        tag: Option<&str>,
        extra: &[(&str, String)],
    ) {
        let mut r = Msg::response_to(req, code, reason, tag);
        for (k, v) in extra {
            r.push(k, v.clone());
        }
        self.ep.respond(now, tx, r);
    }

    /// Sends 180 (no SDP) or 183 (with SDP, early media).
    pub fn ring(&mut self, now: Instant, call: CallRef, sdp: Option<&str>) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (Some(tx), State::Ringing) = (c.invite_server, c.state) else {
            return;
        };
        let mut r = match sdp {
            Some(_) => Msg::response_to(&c.invite, 183, "Session Progress", Some(&c.local_tag)),
            None => Msg::response_to(&c.invite, 180, "Ringing", Some(&c.local_tag)),
        };
        r.push(
            "contact",
            contact_header(&self.cfg.contact_uri, c.peer.transport),
        );
        if let Some(s) = sdp {
            r.with_body("application/sdp", s.as_bytes().to_vec());
        }
        self.ep.respond(now, tx, r);
    }

    /// Answers an incoming call with 200 and our SDP, retransmitted until the ACK.
    pub fn answer(&mut self, now: Instant, call: CallRef, sdp: &str) {
        let t1 = self.cfg.timers.t1;
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let contact = contact_header(&self.cfg.contact_uri, c.peer.transport);
        let (Some(tx), State::Ringing) = (c.invite_server, c.state) else {
            return;
        };
        let mut r = Msg::response_to(&c.invite, 200, "OK", Some(&c.local_tag));
        r.push("contact", contact).push("allow", ALLOW);
        r.with_body("application/sdp", sdp.as_bytes().to_vec());
        c.ok_retx = Some((r.to_bytes(), now + t1, t1, now + t1 * 64));
        c.state = State::AwaitingAck;
        self.dirty.push(call);
        self.ep.respond(now, tx, r);
    }

    /// Rejects an incoming call with a final response (and extra headers, e.g. Reason).
    pub fn reject(
        &mut self,
        now: Instant,
        call: CallRef,
        code: u16,
        reason: &str,
        extra: &[(&str, String)],
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let (Some(tx), State::Ringing) = (c.invite_server, c.state) else {
            return;
        };
        c.state = State::Ended;
        let (inv, tag) = (c.invite.clone(), c.local_tag.clone());
        self.dirty.push(call);
        self.respond(now, tx, &inv, code, reason, Some(&tag), extra);
    }

    /// Answers a re-INVITE/UPDATE with our SDP: 200 carrying it (the answer,
    /// or our offer when a re-INVITE came without one, RFC 3261 §14.2), but
    /// none for an UPDATE without an offer (a refresh: RFC 3311 §5.2 lets
    /// its 2xx carry no offer). `Err(code)` refuses it instead, the session
    /// unchanged (RFC 3261 §14.2): 491 Request Pending while an offer of
    /// ours is outstanding (the request may come again), 488 for an offer
    /// we cannot accept.
    pub fn answer_reoffer(
        &mut self,
        now: Instant,
        call: CallRef,
        tx: ServerTxId,
        sdp: Result<&str, u16>,
    ) {
        let Some(req) = self.ep.server_request(tx).cloned() else {
            return;
        };
        let tag = self.calls.get(&call).map(|c| c.local_tag.clone());
        let sdp = match sdp {
            Ok(sdp) => sdp,
            Err(code) => {
                let (code, phrase) = match code {
                    488 => (488, "Not Acceptable Here"),
                    491 => (491, "Request Pending"),
                    _ => (500, "Server Internal Error"),
                };
                let r = Msg::response_to(&req, code, phrase, tag.as_deref());
                self.ep.respond(now, tx, r);
                return;
            }
        };
        let transport = self
            .calls
            .get(&call)
            .map_or(Transport::Udp, |c| c.peer.transport);
        let contact = contact_header(&self.cfg.contact_uri, transport);
        let mut r = Msg::response_to(&req, 200, "OK", tag.as_deref());
        r.push("contact", contact);
        let offerless_update = req.method() == Some(Method::Update) && req.sdp().is_none();
        if !offerless_update {
            r.with_body("application/sdp", sdp.as_bytes().to_vec());
        }
        self.ep.respond(now, tx, r);
    }

    /// Whether an INVITE from `source` proves the inbound credentials; if
    /// not, it is answered 401 with a fresh nonce bound to the source's
    /// address (`stale=true` when the password was right but the nonce too
    /// old or already used with that count, RFC 7616 §3.3, §3.4).
    fn check_auth(&mut self, now: Instant, tx: ServerTxId, req: &Msg, source: Peer) -> bool {
        let Some((user, pass)) = self.cfg.inbound_credentials.clone() else {
            return true;
        };
        let realm = self.cfg.realm.clone();
        let binding = source.addr.ip().to_string();
        let verdict = req
            .header("authorization")
            .and_then(|h| Authorization::parse(h).ok())
            .map(|a| {
                let nonce = self.nonces.check(&a.nonce, &binding, now);
                let ok = a.username == user
                    && a.realm == realm
                    && a.verify(&pass, req.method().as_ref().map_or("", Method::as_str));
                (ok, nonce, a)
            });
        let stale = match verdict {
            Some((true, NonceCheck::Valid, a)) => {
                // nc is 8 hex digits (RFC 7616 §3.4); without qop there is
                // none and the nonce serves once.
                let nc = match a.nc.as_deref() {
                    Some(nc) => u32::from_str_radix(nc, 16).ok(),
                    None => Some(1),
                };
                match nc {
                    Some(nc) if self.nonces.use_count(&a.nonce, nc, now) => return true,
                    _ => {
                        tracing::info!(source = %source.addr, "digest nonce replayed (nonce-count not rising): challenged again");
                        true
                    }
                }
            }
            Some((true, NonceCheck::Stale, _)) => true,
            _ => false,
        };
        let ch = Challenge {
            realm,
            nonce: self.nonces.issue(&binding, now),
            opaque: None,
            algorithm: digest::Algorithm::Md5,
            qop_auth: true,
            stale,
        };
        let tag = self.rng.tag();
        self.respond(
            now,
            tx,
            req,
            401,
            "Unauthorized",
            Some(&tag),
            &[("www-authenticate", ch.to_header())],
        );
        false
    }

    fn on_request(&mut self, now: Instant, tx: ServerTxId, msg: Msg, source: Peer) {
        let Some(method) = msg.method() else { return };
        if !self.cfg.acl.allows(source.addr.ip()) {
            let tag = self.rng.tag();
            self.respond(
                now,
                tx,
                &msg,
                403,
                "Forbidden",
                Some(&tag),
                &[("reason", "SIP;cause=403;text=\"source not allowed\"".into())],
            );
            return;
        }
        let in_dialog = msg.to_tag().is_some();
        // RFC 3261 §8.2.2.3, for the methods handled below (an unknown
        // method gets 405 first, §8.2.1; CANCEL ignores Require, §9.2).
        // RFC 3261 §8.2.1: a method we do not implement gets 405 and
        // what we allow, in or out of a dialog, before anything else.
        if !ALLOWED.contains(&method) {
            let tag = (!in_dialog).then(|| self.rng.tag());
            self.respond(
                now,
                tx,
                &msg,
                405,
                "Method Not Allowed",
                tag.as_deref(),
                &[("allow", ALLOW.into())],
            );
            return;
        }
        if matches!(
            method,
            Method::Invite | Method::Update | Method::Info | Method::Bye | Method::Options
        ) {
            let unsupported = unsupported_required(&msg);
            if !unsupported.is_empty() {
                let unsupported = unsupported.join(", ");
                let tag = (!in_dialog).then(|| self.rng.tag());
                self.respond(
                    now,
                    tx,
                    &msg,
                    420,
                    "Bad Extension",
                    tag.as_deref(),
                    &[("unsupported", unsupported)],
                );
                return;
            }
        }
        if in_dialog {
            self.visits += 1;
            let call = self.by_dialog.get(&DialogKey::of_request(&msg)).copied();
            let Some(call) = call else {
                // RFC 3261 §12.2.2.
                let code = if method == Method::Options { 200 } else { 481 };
                let reason = if code == 200 {
                    "OK"
                } else {
                    "Call/Transaction Does Not Exist"
                };
                self.respond(
                    now,
                    tx,
                    &msg,
                    code,
                    reason,
                    None,
                    &[("allow", ALLOW.into())],
                );
                return;
            };
            match method {
                Method::Bye => {
                    self.respond(now, tx, &msg, 200, "OK", None, &[]);
                    if let Some(c) = self.calls.get_mut(&call) {
                        if c.state != State::Ended {
                            c.state = State::Ended;
                            c.ok_retx = None;
                            self.emit(UaEvent::Ended {
                                call,
                                cause: EndCause::PeerBye,
                            });
                        }
                    }
                }
                Method::Invite | Method::Update => {
                    self.emit(UaEvent::Reoffer {
                        call,
                        tx,
                        sdp: sdp_of(&msg),
                    });
                }
                Method::Info => match info_dtmf(&msg) {
                    Some((digit, duration)) => {
                        self.respond(now, tx, &msg, 200, "OK", None, &[]);
                        self.emit(UaEvent::Dtmf {
                            call,
                            digit,
                            duration,
                        });
                    }
                    None => self.respond(
                        now,
                        tx,
                        &msg,
                        415,
                        "Unsupported Media Type",
                        None,
                        &[("accept", "application/dtmf-relay, application/dtmf".into())],
                    ),
                },
                Method::Options => {
                    self.respond(now, tx, &msg, 200, "OK", None, &[("allow", ALLOW.into())])
                }
                _ => self.respond(
                    now,
                    tx,
                    &msg,
                    405,
                    "Method Not Allowed",
                    None,
                    &[("allow", ALLOW.into())],
                ),
            }
            return;
        }
        // The To tag of whatever answers this out-of-dialog request.
        let fresh_tag = self.rng.tag();
        match method {
            Method::Options => self.respond(
                now,
                tx,
                &msg,
                200,
                "OK",
                Some(&fresh_tag),
                &[
                    ("allow", ALLOW.into()),
                    ("accept", "application/sdp".into()),
                ],
            ),
            Method::Invite => {
                if !self.check_auth(now, tx, &msg, source) {
                    return;
                }
                let call = self.new_ref();
                let tag = fresh_tag;
                let dialog = Dialog::uas(&msg, &tag, source);
                if dialog.is_none() {
                    self.respond(now, tx, &msg, 400, "Missing Contact", Some(&tag), &[]);
                    return;
                }
                self.by_invite_server.insert(tx, call);
                self.calls.insert(
                    call,
                    Call {
                        state: State::Ringing,
                        uac: false,
                        invite: msg.clone(),
                        invite_client: None,
                        invite_server: Some(tx),
                        dialog,
                        peer: source,
                        local_tag: tag,
                        auth_tries: 0,
                        redirects: 0,
                        got_provisional: false,
                        hangup_requested: false,
                        cancel_sent: false,
                        ok_retx: None,
                        ended_at: None,
                        client_txs: Vec::new(),
                    },
                );
                if let Some(key) = self
                    .calls
                    .get(&call)
                    .and_then(|c| c.dialog.as_ref())
                    .map(DialogKey::of)
                {
                    self.by_dialog.insert(key, call);
                }
                self.emit(UaEvent::Incoming {
                    call,
                    invite: Box::new(msg),
                    source,
                });
            }
            Method::Cancel => {
                let inv_tx = self.ep.invite_for_cancel(&msg);
                let call = inv_tx.and_then(|t| self.by_invite_server.get(&t).copied());
                match (inv_tx, call) {
                    (Some(inv_tx), Some(call)) => {
                        self.respond(now, tx, &msg, 200, "OK", None, &[]);
                        let ringing = self
                            .calls
                            .get(&call)
                            .is_some_and(|c| c.state == State::Ringing);
                        if ringing {
                            // RFC 3261 §9.2: the INVITE gets 487.
                            let (inv, tag) = {
                                let c = &self.calls[&call];
                                (c.invite.clone(), c.local_tag.clone())
                            };
                            self.respond(
                                now,
                                inv_tx,
                                &inv,
                                487,
                                "Request Terminated",
                                Some(&tag),
                                &[],
                            );
                            if let Some(c) = self.calls.get_mut(&call) {
                                c.state = State::Ended;
                            }
                            self.emit(UaEvent::Ended {
                                call,
                                cause: EndCause::PeerCancel,
                            });
                        }
                    }
                    _ => self.respond(
                        now,
                        tx,
                        &msg,
                        481,
                        "Call/Transaction Does Not Exist",
                        None,
                        &[],
                    ),
                }
            }
            Method::Bye | Method::Info | Method::Update => self.respond(
                now,
                tx,
                &msg,
                481,
                "Call/Transaction Does Not Exist",
                None,
                &[],
            ),
            _ => self.respond(
                now,
                tx,
                &msg,
                405,
                "Method Not Allowed",
                Some(&fresh_tag),
                &[("allow", ALLOW.into())],
            ),
        }
    }

    fn on_ack(&mut self, msg: Msg) {
        let Some(&call) = self.by_dialog.get(&DialogKey::of_request(&msg)) else {
            return;
        };
        if self
            .calls
            .get(&call)
            .is_none_or(|c| c.state != State::AwaitingAck)
        {
            return;
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.ok_retx = None;
            c.state = State::Confirmed;
        }
        self.emit(UaEvent::Answered {
            call,
            sdp: sdp_of(&msg),
        });
    }

    // ------------------------------------------------------------------
    // Input
    // ------------------------------------------------------------------

    pub fn handle_message(&mut self, now: Instant, data: &[u8], source: Peer) {
        self.now = now;
        self.ep.handle_message(now, data, source);
        self.process(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        self.ep.handle_timeout(now);
        self.reschedule();
        // UAS 2xx retransmission (RFC 3261 §13.3.1.4), and ended calls
        // forgotten 64×T1 after they ended (Timer H/J: no retransmission
        // of theirs can still arrive), so a long-running UA does not grow
        // with every call it ever had.
        let t2 = self.cfg.timers.t2;
        let mut give_up = Vec::new();
        for call in self.call_deadlines.take_due(now) {
            self.visits += 1;
            let Some(c) = self.calls.get_mut(&call) else {
                continue;
            };
            self.dirty.push(call);
            if c.state == State::Ended {
                self.forget(call);
                continue;
            }
            let Some((bytes, next, interval, until)) = c.ok_retx.as_mut() else {
                continue;
            };
            if now >= *until {
                give_up.push(call);
                continue;
            }
            if now >= *next {
                *interval = (*interval * 2).min(t2);
                *next = now + *interval;
                self.out.push_back(UaOutput::Transmit {
                    to: c.peer,
                    data: bytes.clone(),
                });
            }
        }
        for call in give_up {
            self.send_bye(now, call, EndCause::NoAck);
        }
        self.drive_registration(now);
        self.process(now);
    }

    /// Drops an ended call and what finds it.
    fn forget(&mut self, call: CallRef) {
        let Some(c) = self.calls.remove(&call) else {
            return;
        };
        for tx in &c.client_txs {
            self.by_client.remove(tx);
        }
        if let Some(tx) = c.invite_server {
            self.by_invite_server.remove(&tx);
        }
        if let Some(d) = &c.dialog {
            self.by_dialog.remove(&DialogKey::of(d));
        }
        self.call_deadlines.set(call, None);
    }

    /// How many per-call and per-transaction records the UA and its
    /// endpoint have looked at so far: each lookup by key, each timer that
    /// came due, each call rescheduled. A scan of every call would count
    /// every call; the unit test holds per-message work to a constant.
    pub fn work(&self) -> u64 {
        self.visits + self.ep.visits
    }

    /// Whether the call is over on the SIP side (or unknown).
    pub fn is_ended(&self, call: CallRef) -> bool {
        self.calls
            .get(&call)
            .is_none_or(|c| c.state == State::Ended)
    }

    /// Calls held in memory, ended ones included (for the leak test).
    pub fn calls_held(&self) -> usize {
        self.calls.len()
    }

    fn process(&mut self, now: Instant) {
        while let Some(o) = self.ep.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    self.out.push_back(UaOutput::Transmit { to, data })
                }
                Output::Event(Event::Request { tx, msg, source }) => {
                    self.on_request(now, tx, msg, source)
                }
                Output::Event(Event::Ack { msg, .. }) => self.on_ack(msg),
                Output::Event(Event::Response { tx, msg }) => self.on_response(now, tx, msg),
                Output::Event(Event::ClientTimeout { tx }) => {
                    if self
                        .registration
                        .as_ref()
                        .is_some_and(|(_, _, f)| *f == Some(tx))
                    {
                        self.on_register_result(now, None);
                        continue;
                    }
                    let call = self.by_client.get(&tx).copied();
                    if let Some(call) = call {
                        let is_invite = self.calls.get(&call).is_some_and(|c| {
                            c.invite_client == Some(tx) && c.state == State::Calling
                        });
                        if is_invite {
                            if let Some(c) = self.calls.get_mut(&call) {
                                c.state = State::Ended;
                            }
                            self.emit(UaEvent::Failed {
                                call,
                                code: 408,
                                reason: "Request Timeout".into(),
                            });
                        }
                    }
                }
                Output::Event(Event::ServerTimeout { .. }) => {}
            }
        }
    }

    /// Moves what commands queued in the endpoint to our output.
    fn pump(&mut self) {
        let now = self.now;
        self.process(now);
        self.reschedule();
    }

    /// The request-URI user of an incoming INVITE (the number dialled).
    pub fn dialled_user(invite: &Msg) -> Option<String> {
        let uri = invite.request_uri()?;
        let rest = uri
            .strip_prefix("sip:")
            .or_else(|| uri.strip_prefix("sips:"))
            .or_else(|| uri.strip_prefix("tel:"))?;
        let user = rest.split('@').next()?.split(';').next()?;
        Some(user.to_string())
    }

    /// Whether the call we placed or received is the UAC side.
    pub fn is_outgoing(&self, call: CallRef) -> Option<bool> {
        self.calls.get(&call).map(|c| c.uac)
    }

    /// The remote party URI of an incoming INVITE's From.
    pub fn caller_uri(invite: &Msg) -> String {
        uri_of(invite.header("from").unwrap_or("")).to_string()
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse_incoming;

    fn info(ct: &str, body: &str) -> Msg {
        let mut m = Msg::request("INFO", "sip:bridge");
        m.push("via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK9")
            .push("from", "<sip:a@pbx>;tag=1")
            .push("to", "<sip:b@bridge>;tag=2")
            .push("call-id", "c")
            .push("cseq", "5 INFO")
            .with_body(ct, body.as_bytes().to_vec());
        parse_incoming(&m.to_bytes()).unwrap()
    }

    #[test]
    fn info_dtmf_bodies() {
        assert_eq!(
            info_dtmf(&info(
                "application/dtmf-relay",
                "Signal=5\r\nDuration=250\r\n"
            )),
            Some(('5', Duration::from_millis(250)))
        );
        assert_eq!(
            info_dtmf(&info("application/dtmf-relay", "Signal= #\r\n")),
            Some(('#', Duration::from_millis(160)))
        );
        assert_eq!(
            info_dtmf(&info("application/dtmf", "9")),
            Some(('9', Duration::from_millis(160)))
        );
        assert_eq!(
            info_dtmf(&info("application/dtmf-relay", "Signal=x\r\n")),
            None
        );
        assert_eq!(info_dtmf(&info("text/plain", "5")), None);
        assert_eq!(
            info_dtmf(&info(
                "application/dtmf-relay",
                "Signal=1\r\nDuration=999999\r\n"
            )),
            Some(('1', Duration::from_millis(5000)))
        );
    }

    fn test_ua() -> SipUa {
        SipUa::new(test_config(), Instant::now())
    }

    fn test_config() -> UaConfig {
        UaConfig {
            via_host: "127.0.0.1:5060".into(),
            contact_uri: "sip:bridge@127.0.0.1:5060".into(),
            credentials: None,
            inbound_credentials: None,
            realm: "test".into(),
            acl: SourceAcl::new(vec!["127.0.0.1/32".parse().unwrap()], vec![]),
            timers: Timers::default(),
            rng_seed: Some(1),
        }
    }

    #[test]
    fn an_unacknowledged_200_is_retransmitted_then_the_call_is_ended_with_bye() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let pbx = pbx_peer();
        let mut inv = Msg::request("INVITE", "sip:14085551234@127.0.0.1:5060");
        inv.push("via", "SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKnoack")
            .push("from", "<sip:agent@127.0.0.1:5099>;tag=p1")
            .push("to", "<sip:14085551234@127.0.0.1:5060>")
            .push("call-id", "noack-1")
            .push("cseq", "1 INVITE")
            .push("contact", "<sip:agent@127.0.0.1:5099>");
        ua.handle_message(t0, &inv.to_bytes(), pbx);
        let mut call = None;
        while let Some(o) = ua.poll_output() {
            if let UaOutput::Event(UaEvent::Incoming { call: c, .. }) = o {
                call = Some(c);
            }
        }
        let call = call.expect("incoming call");
        ua.answer(t0, call, "v=0\r\n");
        let mut oks = Vec::new();
        let mut byes = Vec::new();
        let mut ended = Vec::new();
        let mut now = t0;
        loop {
            while let Some(o) = ua.poll_output() {
                match o {
                    UaOutput::Transmit { data, .. } => {
                        let text = String::from_utf8_lossy(&data).to_string();
                        let ms = (now - t0).as_millis();
                        if text.starts_with("SIP/2.0 200") {
                            oks.push(ms);
                        } else if text.starts_with("BYE ") {
                            byes.push(ms);
                        }
                    }
                    UaOutput::Event(UaEvent::Ended { cause, .. }) => ended.push(cause),
                    UaOutput::Event(_) => {}
                }
            }
            match ua.next_timeout() {
                Some(t) if t <= t0 + Duration::from_secs(33) => {
                    now = t.max(now);
                    ua.handle_timeout(now);
                }
                _ => break,
            }
        }
        // RFC 3261 §13.3.1.4: T1, doubling to T2, until 64·T1; then BYE.
        assert_eq!(
            oks,
            vec![0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]
        );
        assert_eq!(byes.first(), Some(&32000));
        assert_eq!(ended, vec![EndCause::NoAck]);
    }

    #[test]
    fn ended_calls_are_forgotten_after_64_t1() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let pbx = pbx_peer();
        for i in 0..3 {
            let mut inv = Msg::request("INVITE", "sip:14085551234@127.0.0.1:5060");
            inv.push(
                "via",
                format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKgone{i}"),
            )
            .push("from", format!("<sip:agent@127.0.0.1:5099>;tag=g{i}"))
            .push("to", "<sip:14085551234@127.0.0.1:5060>")
            .push("call-id", format!("gone-{i}"))
            .push("cseq", "1 INVITE")
            .push("contact", "<sip:agent@127.0.0.1:5099>");
            ua.handle_message(t0, &inv.to_bytes(), pbx);
            while let Some(o) = ua.poll_output() {
                if let UaOutput::Event(UaEvent::Incoming { call, .. }) = o {
                    ua.reject(t0, call, 403, "Forbidden", &[]);
                }
            }
        }
        assert_eq!(ua.live_calls(), 0);
        assert_eq!(ua.calls_held(), 3);
        // Still held while retransmissions may arrive...
        ua.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(ua.calls_held(), 3);
        let wake = ua.next_timeout().expect("a sweep is scheduled");
        assert!(wake <= t0 + Duration::from_secs(33));
        // ...and forgotten 64·T1 (32 s) later.
        ua.handle_timeout(t0 + Duration::from_secs(34));
        assert_eq!(ua.calls_held(), 0);
    }

    /// The PBX of these tests.
    fn pbx_peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5099".parse().unwrap(),
        }
    }

    /// Feeds `msg` from the PBX and returns what the UA sent back and the
    /// events it raised.
    fn exchange(ua: &mut SipUa, now: Instant, msg: &Msg) -> (Vec<Msg>, Vec<UaEvent>) {
        let pbx = pbx_peer();
        ua.handle_message(now, &msg.to_bytes(), pbx);
        let (mut sent, mut events) = (Vec::new(), Vec::new());
        while let Some(o) = ua.poll_output() {
            match o {
                UaOutput::Transmit { data, .. } => sent.push(parse_incoming(&data).unwrap()),
                UaOutput::Event(e) => events.push(e),
            }
        }
        (sent, events)
    }

    fn pbx_invite(branch: &str, to_tag: Option<&str>, cseq: u32, extra: &[(&str, &str)]) -> Msg {
        let mut inv = Msg::request("INVITE", "sip:14085551234@127.0.0.1:5060");
        inv.push(
            "via",
            format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{branch}"),
        )
        .push("from", "<sip:agent@127.0.0.1:5099>;tag=pbx")
        .push(
            "to",
            match to_tag {
                Some(t) => format!("<sip:14085551234@127.0.0.1:5060>;tag={t}"),
                None => "<sip:14085551234@127.0.0.1:5060>".into(),
            },
        )
        .push("call-id", "require-test")
        .push("cseq", format!("{cseq} INVITE"))
        .push("contact", "<sip:agent@127.0.0.1:5099>");
        for (k, v) in extra {
            inv.push(k, *v);
        }
        inv.with_body("application/sdp", b"v=0\r\n".to_vec());
        inv
    }

    /// Inbound digest (RFC 7616): the nonce is ours, bound to the PBX's
    /// address, and a nonce-count that does not rise is a replay: the
    /// request is challenged again with `stale=true` (the password was right).
    #[test]
    fn inbound_digest_takes_a_rising_nonce_count_and_challenges_a_replay_as_stale() {
        let t0 = Instant::now();
        let mut ua = SipUa::new(
            UaConfig {
                inbound_credentials: Some(("pbx".into(), "secret".into())),
                ..test_config()
            },
            t0,
        );
        let (sent, _) = exchange(&mut ua, t0, &pbx_invite("a1", None, 1, &[]));
        let challenge = finals(&sent)[0]
            .header("www-authenticate")
            .unwrap()
            .to_string();
        let ch = Challenge::parse(&challenge).unwrap();
        assert!(!ch.stale);
        let uri = "sip:14085551234@127.0.0.1:5060";
        let auth = |nc, pass| digest::authorize(&ch, "pbx", pass, "INVITE", uri, "cn", nc);
        let attempt = |ua: &mut SipUa, branch: &str, a: String| {
            let inv = pbx_invite(branch, None, 2, &[("authorization", &a)]);
            let (sent, events) = exchange(ua, t0, &inv);
            let incoming = events.iter().any(|e| matches!(e, UaEvent::Incoming { .. }));
            let stale = finals(&sent)
                .first()
                .and_then(|r| r.header("www-authenticate"))
                .map(|h| Challenge::parse(h).unwrap().stale);
            (incoming, stale)
        };
        assert_eq!(
            attempt(&mut ua, "a2", auth(1, "wrong")),
            (false, Some(false))
        );
        assert_eq!(attempt(&mut ua, "a3", auth(1, "secret")), (true, None));
        assert_eq!(
            attempt(&mut ua, "a4", auth(1, "secret")),
            (false, Some(true)),
            "replayed nc"
        );
        assert_eq!(attempt(&mut ua, "a5", auth(2, "secret")), (true, None));
        // The same credentials from another address: not our nonce for it.
        let elsewhere = Peer {
            transport: Transport::Udp,
            addr: "127.0.0.2:5099".parse().unwrap(),
        };
        let mut acl_open = SipUa::new(
            UaConfig {
                inbound_credentials: Some(("pbx".into(), "secret".into())),
                acl: SourceAcl::new(vec!["127.0.0.0/8".parse().unwrap()], vec![]),
                ..test_config()
            },
            t0,
        );
        let (sent, _) = exchange(&mut acl_open, t0, &pbx_invite("b1", None, 1, &[]));
        let ch = Challenge::parse(finals(&sent)[0].header("www-authenticate").unwrap()).unwrap();
        let a = digest::authorize(&ch, "pbx", "secret", "INVITE", uri, "cn", 1);
        let inv = pbx_invite("b2", None, 2, &[("authorization", &a)]);
        acl_open.handle_message(t0, &inv.to_bytes(), elsewhere);
        let mut codes = Vec::new();
        while let Some(o) = acl_open.poll_output() {
            if let UaOutput::Transmit { data, .. } = o {
                codes.extend(parse_incoming(&data).unwrap().status());
            }
        }
        assert!(codes.contains(&401), "{codes:?}");
        // Past its lifetime the nonce is stale.
        let later = t0 + digest::NONCE_LIFETIME + Duration::from_secs(2);
        let inv = pbx_invite("a6", None, 2, &[("authorization", &auth(3, "secret"))]);
        let (sent, events) = exchange(&mut ua, later, &inv);
        assert!(events.is_empty());
        let h = finals(&sent)[0].header("www-authenticate").unwrap();
        assert!(Challenge::parse(h).unwrap().stale);
    }

    /// Per-message work does not grow with the number of dialogs: the
    /// UA's work (records looked at, see [`SipUa::work`]) for an in-dialog
    /// INFO, an ACK, a BYE and a timer tick is the same with 1,000
    /// concurrent dialogs as with 10.
    #[test]
    fn per_message_work_does_not_grow_with_the_number_of_dialogs() {
        fn request(method: &str, id: &str, cseq: u32, to_tag: Option<&str>) -> Msg {
            let mut m = Msg::request(method, "sip:14085551234@127.0.0.1:5060");
            m.push(
                "via",
                format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK{id}{method}{cseq}"),
            )
            .push("from", format!("<sip:agent@127.0.0.1:5099>;tag=p{id}"))
            .push(
                "to",
                match to_tag {
                    Some(t) => format!("<sip:14085551234@127.0.0.1:5060>;tag={t}"),
                    None => "<sip:14085551234@127.0.0.1:5060>".into(),
                },
            )
            .push("call-id", id.to_string())
            .push("cseq", format!("{cseq} {method}"))
            .push("contact", "<sip:agent@127.0.0.1:5099>");
            if method == "INFO" {
                m.with_body(
                    "application/dtmf-relay",
                    b"Signal=5\r\nDuration=100\r\n".to_vec(),
                );
            } else if method == "INVITE" {
                m.with_body("application/sdp", b"v=0\r\n".to_vec());
            }
            m
        }
        // The work one more call's INFO, ACK-less timer tick and BYE take
        // once `n` calls are up.
        fn work_with(n: usize) -> Vec<u64> {
            let t0 = Instant::now();
            let mut ua = test_ua();
            let mut tags = Vec::new();
            for i in 0..=n {
                let id = format!("c{i}");
                let (_, events) = exchange(&mut ua, t0, &request("INVITE", &id, 1, None));
                let call = match &events[..] {
                    [UaEvent::Incoming { call, .. }] => *call,
                    other => panic!("{other:?}"),
                };
                ua.answer(t0, call, "v=0\r\n");
                let ok = sent(&mut ua)
                    .into_iter()
                    .find(|m| m.status() == Some(200))
                    .unwrap();
                let tag = ok.to_tag().unwrap().to_string();
                exchange(&mut ua, t0, &request("ACK", &id, 1, Some(&tag)));
                tags.push(tag);
            }
            let id = format!("c{n}");
            let tag = &tags[n];
            let mut costs = Vec::new();
            let mut cost = |ua: &mut SipUa, f: &dyn Fn(&mut SipUa)| {
                let before = ua.work();
                f(ua);
                while ua.poll_output().is_some() {}
                costs.push(ua.work() - before);
            };
            cost(&mut ua, &|ua| {
                ua.handle_message(
                    t0,
                    &request("INFO", &id, 2, Some(tag)).to_bytes(),
                    pbx_peer(),
                )
            });
            cost(&mut ua, &|ua| {
                ua.handle_timeout(t0 + Duration::from_millis(1))
            });
            cost(&mut ua, &|ua| {
                ua.handle_message(
                    t0,
                    &request("BYE", &id, 3, Some(tag)).to_bytes(),
                    pbx_peer(),
                )
            });
            assert_eq!(ua.live_calls(), n);
            costs
        }
        let small = work_with(10);
        let large = work_with(1000);
        // The INFO and the BYE are looked up; a tick with nothing due looks at nothing.
        assert!(small[0] > 0 && small[1] == 0 && small[2] > 0, "{small:?}");
        assert_eq!(small, large);
    }

    /// The final responses among `sent` (an INVITE also gets 100 Trying).
    fn finals(sent: &[Msg]) -> Vec<&Msg> {
        sent.iter()
            .filter(|m| m.status().is_some_and(|c| c >= 200))
            .collect()
    }

    fn status_of(sent: &[Msg]) -> Vec<u16> {
        finals(sent).iter().filter_map(|m| m.status()).collect()
    }

    #[test]
    fn an_invite_requiring_an_extension_we_lack_gets_420_naming_it() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let inv = pbx_invite("r1", None, 1, &[("require", "100rel, Timer")]);
        let (sent, events) = exchange(&mut ua, t0, &inv);
        assert_eq!(status_of(&sent), vec![420]);
        let resp = finals(&sent)[0];
        assert_eq!(resp.all("unsupported"), vec!["100rel", "Timer"]);
        assert!(resp.to_tag().is_some(), "a final response carries a To tag");
        assert!(events.is_empty(), "no call for the call layer: {events:?}");
        assert_eq!(ua.live_calls(), 0);
    }

    #[test]
    fn extensions_only_offered_in_supported_do_not_stop_a_call() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let inv = pbx_invite("s1", None, 1, &[("supported", "100rel, timer, replaces")]);
        let (sent, events) = exchange(&mut ua, t0, &inv);
        assert!(!status_of(&sent).contains(&420), "{:?}", status_of(&sent));
        assert!(matches!(events.as_slice(), [UaEvent::Incoming { .. }]));
    }

    #[test]
    fn a_re_invite_requiring_an_extension_gets_420_and_the_call_goes_on() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let (_, tag) = answered_call(&mut ua, t0);
        let reinv = pbx_invite("c2", Some(&tag), 2, &[("require", "timer")]);
        let (sent, events) = exchange(&mut ua, t0, &reinv);
        assert_eq!(status_of(&sent), vec![420]);
        assert_eq!(finals(&sent)[0].header("unsupported"), Some("timer"));
        assert!(
            events.is_empty(),
            "no re-offer for the call layer: {events:?}"
        );
        assert_eq!(ua.live_calls(), 1, "the call itself is not ended");
    }

    /// Sets up a call from the PBX that we answered; returns it with our tag.
    fn answered_call(ua: &mut SipUa, now: Instant) -> (CallRef, String) {
        let (_, events) = exchange(ua, now, &pbx_invite("a1", None, 1, &[]));
        let Some(UaEvent::Incoming { call, .. }) = events.into_iter().next() else {
            panic!("the INVITE reaches the call layer");
        };
        ua.answer(now, call, "v=0\r\n");
        let ok = sent(ua).into_iter().next().expect("200 sent");
        (call, ok.to_tag().expect("our tag").to_string())
    }

    /// The messages the UA sends next, with where they go.
    fn transmits(ua: &mut SipUa) -> Vec<(Peer, Msg)> {
        std::iter::from_fn(|| ua.poll_output())
            .filter_map(|o| match o {
                UaOutput::Transmit { to, data } => Some((to, parse_incoming(&data).ok()?)),
                _ => None,
            })
            .collect()
    }

    /// The messages the UA sends next (its events are dropped).
    fn sent(ua: &mut SipUa) -> Vec<Msg> {
        std::iter::from_fn(|| ua.poll_output())
            .filter_map(|o| match o {
                UaOutput::Transmit { data, .. } => parse_incoming(&data).ok(),
                _ => None,
            })
            .collect()
    }

    fn pbx_update(tag: &str, cseq: u32, sdp: Option<&str>) -> Msg {
        let mut up = Msg::request("UPDATE", "sip:bridge@127.0.0.1:5060");
        up.push(
            "via",
            format!("SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bKup{cseq}"),
        )
        .push("from", "<sip:agent@127.0.0.1:5099>;tag=pbx")
        .push("to", format!("<sip:14085551234@127.0.0.1:5060>;tag={tag}"))
        .push("call-id", "require-test")
        .push("cseq", format!("{cseq} UPDATE"))
        .push("contact", "<sip:agent@127.0.0.1:5099>");
        if let Some(sdp) = sdp {
            up.with_body("application/sdp", sdp.as_bytes().to_vec());
        }
        up
    }

    /// Feeds a re-offer, answers it as the call layer would and returns the final response.
    fn reoffer_answered(ua: &mut SipUa, now: Instant, req: &Msg, ours: Result<&str, u16>) -> Msg {
        let (_, events) = exchange(ua, now, req);
        let Some(UaEvent::Reoffer { call, tx, .. }) = events.into_iter().next() else {
            panic!("the request reaches the call layer");
        };
        ua.answer_reoffer(now, call, tx, ours);
        let sent = sent(ua);
        finals(&sent)
            .first()
            .map(|m| (*m).clone())
            .expect("a final response")
    }

    #[test]
    fn an_update_without_an_offer_gets_200_without_sdp_and_one_with_an_offer_gets_our_answer() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let (_, tag) = answered_call(&mut ua, t0);
        let ours = "v=0\r\no=wa-sip-bridge 1 2 IN IP4 127.0.0.1\r\n";
        // RFC 3311 §5.2: a refresh without an offer; its 2xx carries none.
        let r = reoffer_answered(&mut ua, t0, &pbx_update(&tag, 2, None), Ok(ours));
        assert_eq!(r.status(), Some(200));
        assert!(r.body.is_empty(), "{}", r.body_str());
        let r = reoffer_answered(&mut ua, t0, &pbx_update(&tag, 3, Some("v=0\r\n")), Ok(ours));
        assert_eq!((r.status(), r.sdp()), (Some(200), Some(ours)));
        // A re-INVITE without an offer gets ours in the 200 (RFC 3261 §14.2).
        let mut reinvite = pbx_invite("ri", Some(&tag), 4, &[]);
        reinvite.body.clear();
        let r = reoffer_answered(&mut ua, t0, &reinvite, Ok(ours));
        assert_eq!((r.status(), r.sdp()), (Some(200), Some(ours)));
    }

    #[test]
    fn a_re_offer_the_call_cannot_take_gets_491_or_488_not_silence() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let (_, tag) = answered_call(&mut ua, t0);
        let r = reoffer_answered(&mut ua, t0, &pbx_update(&tag, 2, Some("v=0\r\n")), Err(491));
        assert_eq!(r.status(), Some(491));
        let r = reoffer_answered(&mut ua, t0, &pbx_update(&tag, 3, Some("v=0\r\n")), Err(488));
        assert_eq!(r.status(), Some(488));
        assert_eq!(ua.live_calls(), 1);
    }

    /// A PBX behind a SIP-I gateway answers with its SDP beside ISUP in a
    /// multipart body (RFC 3204, RFC 5621): the call layer gets the SDP part.
    #[test]
    fn an_answer_in_a_multipart_body_reaches_the_call_layer_as_its_sdp_part() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let pbx = pbx_peer();
        ua.invite(
            t0,
            Invite {
                request_uri: "sip:ivr@127.0.0.1:5099",
                from: "<sip:+15551234567@wa.example.com>",
                to: "<sip:ivr@127.0.0.1:5099>",
                headers: &[],
                sdp: "v=0\r\n",
                peer: pbx,
            },
        );
        let invite = sent(&mut ua).into_iter().next().expect("our INVITE");
        let answer = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let body = format!(
            "--gw\r\nContent-Type: application/ISUP; version=itu-t92+\r\n\r\n\u{6}\u{0}\r\n--gw\r\nContent-Type: application/sdp\r\n\r\n{answer}\r\n--gw--\r\n"
        );
        let mut ok = Msg::response_to(&invite, 200, "OK", Some("pbx-tag"));
        ok.push("contact", "<sip:ivr@127.0.0.1:5099>")
            .with_body("multipart/mixed; boundary=gw", body.into_bytes());
        let (_, events) = exchange(&mut ua, t0, &ok);
        let sdp = events.iter().find_map(|e| match e {
            UaEvent::Answered { sdp, .. } => Some(sdp.clone()),
            _ => None,
        });
        assert_eq!(sdp, Some(Some(answer.to_string())), "{events:?}");
    }

    /// A trunk reached over TCP (`trunk.uri` with `;transport=tcp`): the
    /// INVITE, its ACK and the BYE all go over TCP, each Via says TCP, and
    /// our Contact says `transport=tcp` so the PBX's requests come back the
    /// same way (a sip: URI without it means UDP, RFC 3263 §4.1).
    #[test]
    fn a_call_over_tcp_stays_on_tcp_and_says_so() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let pbx = Peer {
            transport: Transport::Tcp,
            addr: "127.0.0.1:5099".parse().unwrap(),
        };
        let call = ua.invite(
            t0,
            Invite {
                request_uri: "sip:ivr@127.0.0.1:5099",
                from: "<sip:+15551234567@wa.example.com>",
                to: "<sip:ivr@127.0.0.1:5099>",
                headers: &[],
                sdp: "v=0\r\n",
                peer: pbx,
            },
        );
        let out = transmits(&mut ua);
        let (to, invite) = &out[0];
        assert_eq!(to.transport, Transport::Tcp);
        assert!(invite.header("via").unwrap().starts_with("SIP/2.0/TCP "));
        assert_eq!(
            invite.header("contact"),
            Some("<sip:bridge@127.0.0.1:5060;transport=tcp>")
        );
        let mut ok = Msg::response_to(invite, 200, "OK", Some("pbx-tag"));
        ok.push("contact", "<sip:ivr@127.0.0.1:5099;transport=tcp>")
            .with_body("application/sdp", b"v=0\r\n".to_vec());
        ua.handle_message(t0, &ok.to_bytes(), pbx);
        let out = transmits(&mut ua);
        let (to, ack) = out
            .iter()
            .find(|(_, m)| m.method() == Some(Method::Ack))
            .expect("ACK");
        assert_eq!(to.transport, Transport::Tcp);
        assert!(ack.header("via").unwrap().starts_with("SIP/2.0/TCP "));
        ua.hangup(t0, call);
        let out = transmits(&mut ua);
        let (to, bye) = out
            .iter()
            .find(|(_, m)| m.method() == Some(Method::Bye))
            .expect("BYE");
        assert_eq!(to.transport, Transport::Tcp);
        assert!(bye.header("via").unwrap().starts_with("SIP/2.0/TCP "));
    }

    /// Places a call to the trunk and returns it with the INVITE sent.
    fn placed_call(ua: &mut SipUa, now: Instant) -> (CallRef, Msg) {
        let call = ua.invite(
            now,
            Invite {
                request_uri: "sip:ivr@127.0.0.1:5099;user=phone",
                from: "<sip:+15551234567@wa.example.com>",
                to: "<sip:ivr@127.0.0.1:5099>",
                headers: &[("x-wa-call-id", "wacid.1".to_string())],
                sdp: "v=0\r\n",
                peer: pbx_peer(),
            },
        );
        let invite = sent(ua).into_iter().next().expect("our INVITE");
        (call, invite)
    }

    fn redirect(invite: &Msg, code: u16, contacts: &[&str]) -> Msg {
        let mut r = Msg::response_to(invite, code, "Moved Temporarily", Some("pbx-tag"));
        for c in contacts {
            r.push("contact", *c);
        }
        r
    }

    /// A 3xx from the PBX (Asterisk's Transfer() before answering, a
    /// FreeSWITCH redirect) is followed as Asterisk's `redirect_method =
    /// user` does: the Contact with the highest q gives the new user, the
    /// INVITE goes again to the same trunk with the same Call-ID, From tag,
    /// To and body, the next CSeq and a new branch (RFC 3261 §8.1.3.4). The
    /// call layer sees nothing until the new target answers.
    #[test]
    fn a_redirect_is_followed_on_the_trunk_with_the_best_contacts_user() {
        let t0 = Instant::now();
        let mut ua = test_ua();
        let (call, first) = placed_call(&mut ua, t0);
        let r = redirect(
            &first,
            302,
            &[
                "<sip:2001@10.9.9.9:5060>;q=0.5, <sip:+442071234567@other.example.com;user=phone>;q=0.9",
                "<sip:3001@10.9.9.9>;q=0.1",
            ],
        );
        let (sent, events) = exchange(&mut ua, t0, &r);
        assert!(events.is_empty(), "{events:?}");
        let again = sent
            .iter()
            .find(|m| m.method() == Some(Method::Invite))
            .expect("a new INVITE");
        assert_eq!(
            again.request_uri(),
            Some("sip:+442071234567@127.0.0.1:5099;user=phone"),
            "the best Contact's user, on our trunk"
        );
        assert_eq!(again.call_id(), first.call_id());
        assert_eq!(again.from_tag(), first.from_tag());
        assert_eq!(again.header("to"), first.header("to"));
        assert_eq!(again.cseq(), (first.cseq().0 + 1, "INVITE"));
        assert_ne!(again.branch(), first.branch());
        assert_eq!(again.header("x-wa-call-id"), Some("wacid.1"));
        assert_eq!(again.body, first.body);
        // The ACK of the 3xx went to the first transaction (RFC 3261 §17.1.1.3).
        assert!(sent
            .iter()
            .any(|m| m.method() == Some(Method::Ack) && m.branch() == first.branch()));
        // The new target answers: the call layer sees the answer.
        let mut ok = Msg::response_to(again, 200, "OK", Some("agent-tag"));
        ok.push("contact", "<sip:agent@127.0.0.1:5099>")
            .with_body("application/sdp", b"v=0\r\n".to_vec());
        let (_, events) = exchange(&mut ua, t0, &ok);
        assert!(
            matches!(events.as_slice(), [UaEvent::Answered { call: c, .. }] if *c == call),
            "{events:?}"
        );
    }

    /// Redirects end the call when they cannot be followed: a Contact
    /// without a usable user (a host only, characters that would change the
    /// URI), or a loop past MAX_REDIRECTS.
    #[test]
    fn redirects_that_cannot_be_followed_fail_the_call_with_the_3xx() {
        let t0 = Instant::now();
        for contact in [
            "<sip:10.9.9.9:5060>",
            "<sip:2001%20x>",
            "<mailto:ops@example.com>",
            "<sip:20 01@10.9.9.9>",
            "*",
        ] {
            let mut ua = test_ua();
            let (_, first) = placed_call(&mut ua, t0);
            let (sent, events) = exchange(&mut ua, t0, &redirect(&first, 302, &[contact]));
            assert!(
                !sent.iter().any(|m| m.method() == Some(Method::Invite)),
                "{contact}: not followed"
            );
            assert!(
                matches!(events.as_slice(), [UaEvent::Failed { code: 302, .. }]),
                "{contact}: {events:?}"
            );
        }
        let mut ua = test_ua();
        let (_, mut invite) = placed_call(&mut ua, t0);
        for n in 0..=MAX_REDIRECTS {
            let (sent, events) =
                exchange(&mut ua, t0, &redirect(&invite, 301, &["<sip:2001@pbx>"]));
            match sent
                .into_iter()
                .find(|m| m.method() == Some(Method::Invite))
            {
                Some(next) => {
                    assert!(n < MAX_REDIRECTS);
                    invite = next;
                }
                None => {
                    assert_eq!(n, MAX_REDIRECTS, "followed {MAX_REDIRECTS} times");
                    assert!(matches!(
                        events.as_slice(),
                        [UaEvent::Failed { code: 301, .. }]
                    ));
                }
            }
        }
    }

    /// A tel: Contact gives its number; a sip: user's parameters and
    /// password are not carried over.
    #[test]
    fn a_redirects_user_comes_from_sip_sips_or_tel_contacts() {
        let invite = Msg::request("INVITE", "sip:ivr@pbx.example.com:5080");
        for (contact, want) in [
            (
                "<tel:+15559876543;phone-context=x>",
                Some("sip:+15559876543@pbx.example.com:5080"),
            ),
            ("<sips:2001;npdi@h>", Some("sip:2001@pbx.example.com:5080")),
            (
                "\"Desk\" <sip:2001:secret@h>;expires=60",
                Some("sip:2001@pbx.example.com:5080"),
            ),
            ("sip:*97@h", Some("sip:*97@pbx.example.com:5080")),
            ("<sip:>@h>", None),
        ] {
            let mut r = Msg::response_to(&invite, 302, "Moved", None);
            r.push("contact", contact);
            assert_eq!(redirect_uri(&invite, &r).as_deref(), want, "{contact}");
        }
    }

    /// The trunk host resolved elsewhere (DNS failover): with no
    /// `trunk.allowed_sources`, requests from the new address pass and the
    /// old one's get 403; the registration moves to the new address at once.
    #[test]
    fn the_acl_default_and_the_registration_follow_the_trunk_when_it_moves() {
        let t0 = Instant::now();
        let udp = |a: &str| Peer {
            transport: Transport::Udp,
            addr: a.parse().unwrap(),
        };
        let (old, new) = (udp("192.0.2.10:5060"), udp("192.0.2.20:5060"));
        let mut ua = SipUa::new(
            UaConfig {
                acl: SourceAcl::new(vec![], vec![old.addr.ip()]),
                ..test_config()
            },
            Instant::now(),
        );
        let register = RegisterConfig {
            registrar: "sip:pbx.example.com".into(),
            aor: "sip:bridge@pbx.example.com".into(),
            contact: "sip:bridge@127.0.0.1:5060".into(),
            expires: 300,
            username: "bridge".into(),
            password: "secret".into(),
        };
        ua.register(t0, register, old);
        let registers_to = |out: &[(Peer, Msg)]| -> Vec<Peer> {
            out.iter()
                .filter(|(_, m)| m.method() == Some(Method::Register))
                .map(|(p, _)| *p)
                .collect()
        };
        assert_eq!(registers_to(&transmits(&mut ua)), [old]);
        let answer_to_invite_from = |ua: &mut SipUa, from: Peer, branch: &str| -> Option<u16> {
            ua.handle_message(t0, &pbx_invite(branch, None, 1, &[]).to_bytes(), from);
            let out = transmits(ua);
            out.iter()
                .filter_map(|(_, m)| m.status())
                .find(|c| *c >= 200)
        };
        assert_eq!(answer_to_invite_from(&mut ua, new, "m1"), Some(403));

        ua.trunk_moved(t0, &[new]);
        assert_eq!(
            registers_to(&transmits(&mut ua)),
            [new],
            "registered there at once"
        );
        assert_eq!(answer_to_invite_from(&mut ua, old, "m2"), Some(403));
        assert_eq!(
            answer_to_invite_from(&mut ua, new, "m3"),
            None,
            "the INVITE from the new address reached the call layer"
        );
        // The registration's address still listed (another order, one
        // more): it stays.
        ua.trunk_moved(t0, &[udp("192.0.2.30:5060"), new]);
        assert!(registers_to(&transmits(&mut ua)).is_empty());
    }

    #[test]
    fn dialled_user_from_request_uri() {
        let mut m = Msg::request("INVITE", "sip:914085551234@bridge.example.com;user=phone");
        m.push("via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK9")
            .push("from", "<sip:a@pbx>;tag=1")
            .push("to", "<sip:b@bridge>")
            .push("call-id", "c")
            .push("cseq", "1 INVITE");
        let m = parse_incoming(&m.to_bytes()).unwrap();
        assert_eq!(SipUa::dialled_user(&m).as_deref(), Some("914085551234"));
    }
}
