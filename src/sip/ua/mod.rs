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
//! Calls are found by key (their transactions, their dialog's
//! identifiers), and each call's next timer sits in one ordered structure,
//! so a message's work does not grow with the number of calls.
//!
//! By role: `uac` (calls we place), `uas` (calls we receive), `in_dialog`
//! (requests within a call), `auth` (digest both ways), `redirect` (3xx),
//! `registration` (REGISTER to the trunk); this file holds the calls, the
//! events and the input and timer handling they share.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::acl::SourceAcl;
use super::auth_guard::{AuthGuard, GuardConfig};
use super::deadlines::Deadlines;
use super::dialog::{Dialog, DialogKey};
use super::digest::{self, Authorization, Challenge, NonceCheck, NonceIssuer};
use super::endpoint::{
    in_invite_transaction, via, ClientTxId, Endpoint, Event, Output, Peer, ServerTxId, Transport,
};
use super::message::{CSeq, Msg, NameAddr};
use super::method::Method;
use super::random::Random;
use super::register::{RegState, RegisterConfig, Registration};
use super::transaction::Timers;
pub use refer::ReferRequest;
use session_timer::Session;
pub use session_timer::{SessionTimerConfig, ABSOLUTE_MIN_SE};

/// The 403's reason for a source outside `trunk.allowed_sources`.
const SOURCE_NOT_ALLOWED: &str = "source not allowed";

pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, PRACK";

/// Digest credentials for a request: `Authorization` (after a 401) or
/// `Proxy-Authorization` (after a 407).
pub(super) enum Credentials {
    Www(String),
    Proxy(String),
}

/// [`ALLOW`] as the Allow header's list.
fn allowed() -> Vec<String> {
    ALLOWED.iter().map(|m| m.to_string()).collect()
}

/// The methods of [`ALLOW`].
const ALLOWED: [Method; 9] = [
    Method::Invite,
    Method::Ack,
    Method::Cancel,
    Method::Bye,
    Method::Options,
    Method::Info,
    Method::Update,
    Method::Refer,
    Method::Prack,
];

/// SIP extensions (option tags, RFC 3261 §19.2) the bridge implements, as
/// our `Supported` lists them: session timers (RFC 4028, `session_timer`)
/// and reliable provisional responses (RFC 3262, `prack`).
const OPTION_TAGS: &[&str] = &["timer", "100rel"];

/// The option tags a request's `Require` names that the bridge does not
/// implement. RFC 3261 §8.2.2.3: such a request gets 420 listing them.
/// How many 3xx responses one call follows: a loop between redirecting
/// targets ends here, with the last 3xx as the call's failure.
pub const MAX_REDIRECTS: u8 = 3;

fn unsupported_required(msg: &Msg) -> Vec<&str> {
    msg.require
        .iter()
        .map(String::as_str)
        .filter(|tag| !OPTION_TAGS.iter().any(|t| t.eq_ignore_ascii_case(tag)))
        .collect()
}

/// Our handle for one call's SIP side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SipEnd {
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
    /// No session refresh in time, or the PBX answered ours with 408/481
    /// (RFC 4028 §10, RFC 5057): BYE sent.
    SessionExpired,
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
    Ended { call: CallRef, cause: SipEnd },
    /// A re-INVITE or UPDATE in the call: answer with [`SipUa::answer_reoffer`].
    Reoffer {
        call: CallRef,
        tx: ServerTxId,
        sdp: Option<String>,
    },
    /// The registration's outcome changed: registered, or failed with this code.
    Registration { registered: bool, code: u16 },
    /// The PBX transfers the call (REFER, already accepted with 202): place
    /// the INVITE to `refer.target`, report with [`SipUa::notify_refer`].
    /// Boxed for the same reason as `Incoming`'s INVITE: inline, this rare
    /// event made every event 120 bytes, every call's event channel 3.9 KiB.
    Refer {
        call: CallRef,
        refer: Box<ReferRequest>,
    },
    /// The connection our INVITE needed could not be opened (TCP refused,
    /// TLS handshake or certificate refused): the call failed before any
    /// response (RFC 3261 §8.1.3.1).
    TransportFailed {
        call: CallRef,
        transport: Transport,
        reason: String,
    },
    /// A request from `source` carried digest credentials that did not
    /// verify (a wrong password, user or realm).
    AuthFailed { source: Peer },
    /// `source` failed digest too often (`sip.auth_max_failures` within
    /// `sip.auth_failure_window_s`): it gets 403 for `sip.auth_block_s`.
    SourceBlocked { source: Peer, failures: u32 },
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
            | UaEvent::Refer { call, .. }
            | UaEvent::TransportFailed { call, .. }
            | UaEvent::Dtmf { call, .. } => Some(*call),
            UaEvent::Registration { .. }
            | UaEvent::AuthFailed { .. }
            | UaEvent::SourceBlocked { .. } => None,
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
    /// host:port we put in Via and Contact (UDP and TCP).
    pub via_host: String,
    /// host:port of our TLS listener, for Via and Contact over TLS.
    pub tls_host: Option<String>,
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
    /// Session timers (RFC 4028).
    pub session: SessionTimerConfig,
    /// Blocking sources that keep failing digest (`sip.auth_*`).
    pub auth_guard: GuardConfig,
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
    /// The session timer agreed, if any (RFC 4028).
    session: Option<Session>,
    /// Our latest session refresh: its transaction, CSeq and method.
    refresh: Option<(ClientTxId, u32, Method)>,
    /// The SDP we last sent the PBX (a re-INVITE refresh repeats it).
    local_sdp: Option<String>,
    /// The PBX's Allow lists UPDATE (refresh with it rather than re-INVITE).
    peer_allows_update: bool,
    /// 422s answered by asking again with the PBX's Min-SE.
    se_retries: u8,
    /// A transfer the PBX asked for (REFER) has no final NOTIFY yet.
    refer_active: bool,
    /// UAC: the early dialog of the PBX's first provisional with a To tag.
    early: Option<Dialog>,
    /// UAC: the RSeq of the last reliable provisional we PRACKed.
    prack_rseq: Option<u32>,
    /// UAS: the RSeq of our last reliable provisional.
    last_rseq: Option<u32>,
    /// UAS: a reliable provisional of ours without its PRACK yet.
    reliable: Option<prack::Reliable>,
    /// UAS: our 2xx's SDP, held until that PRACK comes (RFC 3262 §3).
    answer_after_prack: Option<String>,
}

impl Call {
    /// A call at its start: `state` Calling (ours) or Ringing (theirs).
    fn new(state: State, invite: Msg, peer: Peer, local_tag: String) -> Call {
        Call {
            state,
            invite,
            invite_client: None,
            invite_server: None,
            dialog: None,
            peer,
            local_tag,
            auth_tries: 0,
            redirects: 0,
            got_provisional: false,
            hangup_requested: false,
            cancel_sent: false,
            ok_retx: None,
            ended_at: None,
            client_txs: Vec::new(),
            session: None,
            refresh: None,
            local_sdp: None,
            peer_allows_update: false,
            se_retries: 0,
            refer_active: false,
            early: None,
            prack_rseq: None,
            last_rseq: None,
            reliable: None,
            answer_after_prack: None,
        }
    }
}

pub struct SipUa {
    cfg: UaConfig,
    ep: Endpoint,
    /// Boxed: a `Call` is 1.6 KiB, and the map's room (up to twice its
    /// calls, and never less than its busiest moment) held that much per slot.
    calls: HashMap<CallRef, Box<Call>>,
    by_invite_server: HashMap<ServerTxId, CallRef>,
    /// The calls each source address started (until forgotten), for
    /// `sip.max_dialogs_per_source` without a look at every call.
    by_source: HashMap<std::net::IpAddr, std::collections::HashSet<CallRef>>,
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
    guard: AuthGuard,
    rng: Random,
    next: u64,
    out: VecDeque<UaOutput>,
    /// The latest instant fed in.
    now: Instant,
    /// Registration to the PBX, its peer and the REGISTER in flight.
    registration: Option<(Registration, Peer, Option<ClientTxId>)>,
}

/// Our contact URI for a call or registration over `t`. Over TCP and TLS
/// it says so: a sip: URI without a transport parameter means UDP
/// (RFC 3263 §4.1), and the PBX's requests should come the way the call
/// (or the registration, RFC 3261 §10.2.1) did; over TLS it names our TLS
/// listener (`sip.tls_listen`).
fn contact_uri(cfg: &UaConfig, t: Transport) -> String {
    let uri = &cfg.contact_uri;
    match t {
        Transport::Udp => uri.clone(),
        Transport::Tcp => format!("{uri};transport=tcp"),
        Transport::Tls => match &cfg.tls_host {
            Some(host) => format!("sip:wa-sip-bridge@{host};transport=tls"),
            None => format!("{uri};transport=tls"),
        },
    }
}

/// [`contact_uri`] as a Contact header value.
fn contact_header(cfg: &UaConfig, t: Transport) -> String {
    format!("<{}>", contact_uri(cfg, t))
}

/// host:port in our Via over `t` (the TLS listener's over TLS).
fn sent_by(cfg: &UaConfig, t: Transport) -> &str {
    match (t, &cfg.tls_host) {
        (Transport::Tls, Some(host)) => host,
        _ => &cfg.via_host,
    }
}

fn sdp_of(msg: &Msg) -> Option<String> {
    msg.sdp().map(str::to_string)
}

mod auth;
mod in_dialog;
mod prack;
mod redirect;
mod refer;
mod registration;
mod session_timer;
mod uac;
mod uas;

impl SipUa {
    /// A user agent starting at `now`.
    pub fn new(cfg: UaConfig, now: Instant) -> SipUa {
        let mut rng = Random::new(cfg.rng_seed);
        SipUa {
            ep: Endpoint::new(cfg.timers),
            nonces: NonceIssuer::new(&rng.bytes::<32>(), now),
            guard: AuthGuard::new(cfg.auth_guard),
            rng,
            cfg,
            calls: HashMap::new(),
            by_invite_server: HashMap::new(),
            by_source: HashMap::new(),
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
                    let retx = c.ok_retx.as_ref().map(|r| r.1.min(r.3));
                    let session = c.session.as_ref().map(Session::deadline);
                    let reliable = c.reliable.as_ref().map(|r| r.next.min(r.until));
                    retx.into_iter().chain(session).chain(reliable).min()
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

    /// A connection to `peer` could not be opened: every call still
    /// waiting for its INVITE's first response there fails now, with
    /// `reason`, rather than after Timer B; so does a REGISTER in flight
    /// there (its retry backs off from 5 s instead of waiting out Timer F's
    /// 32 s first; RFC 3261 §8.1.3.1 makes a transport error a failure of
    /// the request). (A scan of the calls: this is rare, and needs no index
    /// kept on every call's path.)
    pub fn transport_failed(&mut self, now: Instant, peer: Peer, reason: &str) {
        self.now = now;
        if self
            .registration
            .as_ref()
            .is_some_and(|(_, p, in_flight)| *p == peer && in_flight.is_some())
        {
            self.on_register_result(now, None);
        }
        let failed: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, c)| c.state == State::Calling && c.peer == peer && !c.got_provisional)
            .map(|(r, _)| *r)
            .collect();
        for call in failed {
            if let Some(c) = self.calls.get_mut(&call) {
                c.state = State::Ended;
            }
            self.emit(UaEvent::TransportFailed {
                call,
                transport: peer.transport,
                reason: reason.to_string(),
            });
        }
    }

    /// Whether a connection from `ip` is worth accepting: the ACL admits
    /// it and it is not blocked for failing digest (the trunk never is).
    pub fn admits(&self, ip: std::net::IpAddr, now: Instant) -> bool {
        self.refusal(ip, now).is_none()
    }

    /// Why requests from `ip` are refused (the 403's reason text), if they are.
    pub(super) fn refusal(&self, ip: std::net::IpAddr, now: Instant) -> Option<&'static str> {
        if !self.cfg.acl.allows(ip) {
            Some(SOURCE_NOT_ALLOWED)
        } else if self.guard.is_blocked(ip, now) && !self.cfg.acl.is_trunk(ip) {
            Some("too many failed authentications")
        } else {
            None
        }
    }

    /// Whether `ip` (not the trunk's) has `sip.max_dialogs_per_source`
    /// calls not yet over — or has started four times as many within the
    /// time ended calls are remembered (64×T1): a flood of short calls is
    /// refused too, and this look stays bounded by the limit.
    pub(super) fn dialogs_full(&self, ip: std::net::IpAddr) -> bool {
        let max = self.cfg.auth_guard.max_dialogs_per_source as usize;
        if max == 0 || self.cfg.acl.is_trunk(ip) {
            return false;
        }
        let Some(started) = self.by_source.get(&ip) else {
            return false;
        };
        started.len() >= 4 * max
            || started.len() >= max
                && started
                    .iter()
                    .filter(|c| self.calls.get(c).is_some_and(|c| c.state != State::Ended))
                    .nth(max - 1)
                    .is_some()
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
        let mut sessions = Vec::new();
        let mut reliables = Vec::new();
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
            if c.session.as_ref().is_some_and(|s| now >= s.deadline()) {
                sessions.push(call);
            }
            if c.reliable
                .as_ref()
                .is_some_and(|r| now >= r.next.min(r.until))
            {
                reliables.push(call);
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
            self.send_bye(now, call, SipEnd::NoAck);
        }
        for call in reliables {
            self.retransmit_reliable(now, call);
        }
        for call in sessions {
            if !self.is_ended(call) {
                self.on_session_deadline(now, call);
            }
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
            let ip = c.peer.addr.ip();
            if let Some(set) = self.by_source.get_mut(&ip) {
                set.remove(&call);
                if set.is_empty() {
                    self.by_source.remove(&ip);
                }
            }
        }
        for d in c.dialog.iter().chain(&c.early) {
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

    /// Calls held in memory, ended ones included, and their entries in
    /// the per-source index (for the leak test).
    pub fn calls_held(&self) -> usize {
        self.calls.len() + self.by_source.values().map(|s| s.len()).sum::<usize>()
    }

    fn process(&mut self, now: Instant) {
        while let Some(o) = self.ep.poll_output() {
            match o {
                Output::Transmit { to, data } => {
                    self.out.push_back(UaOutput::Transmit { to, data })
                }
                Output::Event(Event::Request { tx, msg, source }) => {
                    self.on_request(now, tx, *msg, source)
                }
                Output::Event(Event::Ack { msg, .. }) => self.on_ack(*msg),
                Output::Event(Event::Response { tx, msg }) => self.on_response(now, tx, *msg),
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
}

#[cfg(test)]
mod prack_tests;
#[cfg(test)]
mod refer_tests;
#[cfg(test)]
mod session_timer_tests;
#[cfg(test)]
mod tests;
