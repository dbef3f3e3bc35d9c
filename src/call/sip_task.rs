//! The SIP side's task: owns the SIP user agent and its sockets (`sip.listen`,
//! UDP and TCP), answers the PBX's OPTIONS, keeps the registration when
//! `trunk.register = true` (state in `/readyz` and `wsb_sip_registered`),
//! places INVITEs for call tasks, hands the PBX's INVITEs (after the ACL and
//! digest checks) to the call layer, and routes each call's events to its task.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use std::collections::HashMap;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Settings, TrunkTransport};
use crate::health::{Check, Health};
use crate::metrics::Metrics;
use crate::sip::acl::SourceAcl;
use crate::sip::dialog::Dialog;
use crate::sip::endpoint::{Peer, Transport};
use crate::sip::register::RegisterConfig;
use crate::sip::runtime::SipSocket;
use crate::sip::transaction::Timers;
use crate::sip::ua::{CallRef, Invite, SipEnd, SipUa, UaConfig, UaEvent};

use super::outbound::IncomingInvite;
use super::trunk::{Trunk, RETRY_AFTER_FAILURE, TRUNK_TTL};

/// What a call task asks of the SIP side.
#[derive(Debug)]
pub(crate) enum SipCommand {
    Invite {
        request_uri: String,
        from: String,
        to: String,
        headers: Vec<(&'static str, String)>,
        sdp: String,
        peer: Peer,
        /// Where this call's events go.
        events: mpsc::Sender<UaEvent>,
        reply: oneshot::Sender<CallRef>,
    },
    Hangup(CallRef),
    /// 180 (no SDP) or 183 (with SDP) to an INVITE from the PBX.
    Ring(CallRef, Option<String>),
    /// 200 with our SDP to an INVITE from the PBX.
    Answer(CallRef, String),
    /// A final response to an INVITE from the PBX, with extra headers.
    Reject {
        call: CallRef,
        code: u16,
        phrase: &'static str,
        headers: Vec<(&'static str, String)>,
    },
    /// The call's dialog, once established.
    Dialog(CallRef, oneshot::Sender<Option<Dialog>>),
    /// BYE in a dialog saved before a restart.
    ByeSaved(Dialog),
    /// Report a transfer's progress to the PBX that asked for it (REFER).
    NotifyRefer {
        call: CallRef,
        code: u16,
        reason: String,
    },
    /// Answer a re-INVITE/UPDATE with our SDP, or refuse it with this status.
    AnswerReoffer(
        CallRef,
        crate::sip::endpoint::ServerTxId,
        Result<String, u16>,
    ),
}

/// A call task's way to the SIP side.
#[derive(Clone)]
pub(crate) struct SipHandle {
    tx: mpsc::Sender<SipCommand>,
}

impl SipHandle {
    /// Places a call; its events arrive on `events`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn invite(
        &self,
        request_uri: String,
        from: String,
        to: String,
        headers: Vec<(&'static str, String)>,
        sdp: String,
        peer: Peer,
        events: mpsc::Sender<UaEvent>,
    ) -> Option<CallRef> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(SipCommand::Invite {
                request_uri,
                from,
                to,
                headers,
                sdp,
                peer,
                events,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    pub(crate) async fn hangup(&self, call: CallRef) {
        let _ = self.tx.send(SipCommand::Hangup(call)).await;
    }

    pub(crate) async fn dialog(&self, call: CallRef) -> Option<Dialog> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(SipCommand::Dialog(call, reply)).await.ok()?;
        rx.await.ok().flatten()
    }

    pub(crate) async fn bye_saved(&self, dialog: Dialog) {
        let _ = self.tx.send(SipCommand::ByeSaved(dialog)).await;
    }

    pub(crate) async fn ring(&self, call: CallRef, sdp: Option<String>) {
        let _ = self.tx.send(SipCommand::Ring(call, sdp)).await;
    }

    pub(crate) async fn answer(&self, call: CallRef, sdp: String) {
        let _ = self.tx.send(SipCommand::Answer(call, sdp)).await;
    }

    pub(crate) async fn reject(
        &self,
        call: CallRef,
        code: u16,
        phrase: &'static str,
        headers: Vec<(&'static str, String)>,
    ) {
        let _ = self
            .tx
            .send(SipCommand::Reject {
                call,
                code,
                phrase,
                headers,
            })
            .await;
    }

    pub(crate) async fn answer_reoffer(
        &self,
        call: CallRef,
        tx: crate::sip::endpoint::ServerTxId,
        sdp: Result<String, u16>,
    ) {
        let _ = self.tx.send(SipCommand::AnswerReoffer(call, tx, sdp)).await;
    }

    pub(crate) async fn notify_refer(&self, call: CallRef, code: u16, reason: String) {
        let _ = self
            .tx
            .send(SipCommand::NotifyRefer { call, code, reason })
            .await;
    }
}

/// A command channel for [`run`] and the handle that feeds it.
pub(crate) fn channel() -> (SipHandle, mpsc::Receiver<SipCommand>) {
    let (tx, rx) = mpsc::channel(1024);
    (SipHandle { tx }, rx)
}

#[derive(Debug, thiserror::Error)]
pub enum SipStartError {
    #[error("cannot bind SIP on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("SIP over TLS: {0}")]
    Tls(#[from] crate::sip::tls::TlsError),
}

/// The SIP sockets, bound.
pub(crate) struct BoundSip {
    pub socket: SipSocket,
    /// UDP and TCP.
    pub addr: SocketAddr,
    /// The TLS listener's address and its certificate (reloadable).
    pub tls: Option<(SocketAddr, Arc<crate::sip::tls::ServerCert>)>,
}

/// Binds the SIP sockets (and TLS when configured).
pub(crate) async fn bind(
    settings: &Settings,
    trunk_ips: Vec<IpAddr>,
) -> Result<BoundSip, SipStartError> {
    let listen = settings.sip.listen;
    // With port 0 (tests, ad hoc runs) UDP picks a free port and TCP must
    // take the same one, which an outgoing TCP connection may hold as its
    // local port: then another port is tried. A configured port is tried once.
    let attempts = if listen.port() == 0 { 8 } else { 1 };
    let mut attempt = 0;
    let (udp, bound, tcp) = loop {
        attempt += 1;
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|source| SipStartError::Bind {
                addr: listen,
                source,
            })?;
        let bound = udp.local_addr().map_err(|source| SipStartError::Bind {
            addr: listen,
            source,
        })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => break (udp, bound, tcp),
            Err(_) if attempt < attempts => continue,
            Err(source) => {
                return Err(SipStartError::Bind {
                    addr: bound,
                    source,
                })
            }
        }
    };
    // The advertised address, with the real port when the configured one was 0 (tests).
    let mut public = settings.sip.public_addr.clone();
    if public.port == 0 {
        public.port = bound.port();
    }
    let via_host = public.to_string();
    let mut tls_listener = None;
    let mut tls_host = None;
    if let Some(t) = &settings.sip.tls {
        let listener = TcpListener::bind(t.listen)
            .await
            .map_err(|source| SipStartError::Bind {
                addr: t.listen,
                source,
            })?;
        let at = listener
            .local_addr()
            .map_err(|source| SipStartError::Bind {
                addr: t.listen,
                source,
            })?;
        let (config, cert) = crate::sip::tls::server(&t.cert, &t.key)?;
        tls_host = Some(format!("{}:{}", public.host, at.port()));
        tracing::info!(addr = %at, "SIP over TLS listening");
        tls_listener = Some((listener, tokio_rustls::TlsAcceptor::from(config), at, cert));
    }
    let connector = if settings.trunk.transport == TrunkTransport::Tls {
        if settings.trunk.tls.insecure_skip_verify {
            tracing::warn!(
                trunk = %settings.trunk.uri,
                "trunk.tls_insecure_skip_verify = true: the trunk's TLS certificate is NOT verified; anyone on the path can pose as the PBX"
            );
        }
        let config = crate::sip::tls::client(&settings.trunk.tls)?;
        let name = crate::sip::tls::server_name(&settings.trunk.tls_server_name)?;
        Some((tokio_rustls::TlsConnector::from(config), name))
    } else if settings.sip.tls.is_some() {
        // A PBX that calls us over TLS gets its in-dialog requests (our
        // BYE) at its Contact, over TLS too: a client for that, checked
        // as the trunk's settings say.
        let client = crate::sip::tls::client(&settings.trunk.tls).and_then(|config| {
            let name = crate::sip::tls::server_name(&settings.trunk.tls_server_name)?;
            Ok((tokio_rustls::TlsConnector::from(config), name))
        });
        match client {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "SIP over TLS: no client for requests to the PBX over TLS (set trunk.tls_ca)");
                None
            }
        }
    } else {
        None
    };
    let cfg = UaConfig {
        contact_uri: format!("sip:wa-sip-bridge@{via_host}"),
        via_host,
        tls_host,
        credentials: settings
            .trunk
            .credentials
            .as_ref()
            .map(|c| (c.username.clone(), c.password.clone())),
        inbound_credentials: settings
            .trunk
            .inbound_credentials
            .as_ref()
            .map(|c| (c.username.clone(), c.password.clone())),
        realm: settings.sip.domain.clone(),
        acl: SourceAcl::new(settings.trunk.allowed_sources.clone(), trunk_ips),
        timers: Timers::default(),
        rng_seed: None,
        session: settings.sip.session,
        auth_guard: settings.sip.auth_guard,
    };
    let tls = tls_listener
        .as_ref()
        .map(|(_, _, at, cert)| (*at, cert.clone()));
    let socket = SipSocket::with_tcp(udp, Some(tcp), SipUa::new(cfg, Instant::now())).with_tls(
        crate::sip::runtime::SipTls {
            listener: tls_listener.map(|(l, a, _, _)| (l, a)),
            connector,
        },
    );
    Ok(BoundSip {
        socket,
        addr: bound,
        tls,
    })
}

/// Where SIP for the trunk goes: `addr`, over `trunk.uri`'s transport.
pub(crate) fn trunk_peer(settings: &Settings, addr: SocketAddr) -> Peer {
    Peer {
        transport: match settings.trunk.transport {
            TrunkTransport::Udp => Transport::Udp,
            TrunkTransport::Tcp => Transport::Tcp,
            TrunkTransport::Tls => Transport::Tls,
        },
        addr,
    }
}

/// The trunk's addresses at start (for the ACL and the registration).
pub(crate) async fn resolve_trunk(settings: &Settings) -> Vec<SocketAddr> {
    super::trunk::resolve(&settings.trunk.host, settings.trunk.port_or_default()).await
}

/// What we register to the trunk with (`trunk.register`), our contact on
/// `public` (the SIP socket's address when `sip.public_addr`'s port is 0).
fn register_config(settings: &Settings, public: String) -> Option<RegisterConfig> {
    let c = settings.trunk.credentials.as_ref()?;
    let host = &settings.trunk.host;
    Some(RegisterConfig {
        registrar: format!(
            "sip:{}",
            match settings.trunk.port {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            }
        ),
        aor: format!("sip:{}@{host}", c.username),
        contact: format!(
            "sip:{}@{}",
            c.username,
            if settings.sip.public_addr.port == 0 {
                public
            } else {
                settings.sip.public_addr.to_string()
            }
        ),
        expires: settings.trunk.register_expires,
        username: c.username.clone(),
        password: c.password.clone(),
    })
}

/// Whether two answers hold the same addresses, in whatever order (a
/// resolver may rotate them).
fn same_addresses(a: &[SocketAddr], b: &[SocketAddr]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// Runs the SIP side until the task is aborted. A trunk named by DNS is
/// looked up again every [`TRUNK_TTL`] (off this task): the ACL's default
/// and the registration follow it, and a registration whose trunk did not
/// resolve at start begins once it does.
pub(crate) async fn run(
    mut sip: SipSocket,
    mut commands: mpsc::Receiver<SipCommand>,
    settings: Settings,
    trunk: Arc<Trunk>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    invites: mpsc::Sender<IncomingInvite>,
) {
    let mut routes: HashMap<CallRef, mpsc::Sender<UaEvent>> = HashMap::new();
    sip.set_metrics(metrics.clone());
    health.set_sip(Check::Ok);
    let mut known = trunk.addrs();
    let mut pending_registration = None;
    if settings.trunk.register {
        health.set_registration(Check::Failing);
        metrics.sip_registered.set(0);
        let public = sip.local_addr().map(|a| a.to_string()).unwrap_or_default();
        match (register_config(&settings, public), known.first()) {
            (Some(cfg), Some(addr)) => {
                sip.ua()
                    .register(Instant::now(), cfg, trunk_peer(&settings, *addr))
            }
            (Some(cfg), None) => {
                tracing::warn!(trunk = %settings.trunk.host, "registering once the trunk host resolves");
                pending_registration = Some(cfg);
            }
            (None, _) => {
                tracing::error!("trunk.register = true but the trunk credentials are missing")
            }
        }
    }
    let follow_dns = trunk.is_dns_name();
    let next_check = |known: &[SocketAddr]| {
        tokio::time::Instant::now()
            + if known.is_empty() {
                RETRY_AFTER_FAILURE
            } else {
                TRUNK_TTL
            }
    };
    // When to look the trunk up next; `None` while a lookup runs.
    let mut check_at = Some(next_check(&known));
    let (found_tx, mut found) = mpsc::channel::<Vec<SocketAddr>>(1);
    let mut turns = 0u32;
    loop {
        // Routes of call tasks that are gone (however they ended) are dropped now and then.
        turns = turns.wrapping_add(1);
        if turns % 1024 == 0 {
            routes.retain(|_, tx| !tx.is_closed());
        }
        let ev = tokio::select! {
            ev = sip.next_event() => ev,
            _ = tokio::time::sleep_until(check_at.unwrap_or_else(tokio::time::Instant::now)), if follow_dns && check_at.is_some() => {
                check_at = None;
                let (trunk, found_tx) = (trunk.clone(), found_tx.clone());
                // getaddrinfo may take seconds: never on this task.
                tokio::spawn(async move {
                    trunk.addr().await;
                    let _ = found_tx.send(trunk.addrs()).await;
                });
                continue;
            }
            Some(addrs) = found.recv() => {
                check_at = Some(next_check(&addrs));
                if !addrs.is_empty() && !same_addresses(&addrs, &known) {
                    tracing::info!(trunk = %settings.trunk.host, ?addrs, "the trunk moved: the ACL and the registration follow");
                    let peers: Vec<Peer> = addrs.iter().map(|a| trunk_peer(&settings, *a)).collect();
                    sip.ua().trunk_moved(Instant::now(), &peers);
                    if let (Some(first), Some(cfg)) = (peers.first(), pending_registration.take()) {
                        sip.ua().register(Instant::now(), cfg, *first);
                    }
                    known = addrs;
                }
                continue;
            }
            cmd = commands.recv() => {
                match cmd {
                    Some(SipCommand::Invite { request_uri, from, to, headers, sdp, peer, events, reply }) => {
                        let call = sip.ua().invite(
                            Instant::now(),
                            Invite { request_uri: &request_uri, from: &from, to: &to, headers: &headers, sdp: &sdp, peer },
                        );
                        routes.insert(call, events);
                        let _ = reply.send(call);
                    }
                    Some(SipCommand::Hangup(call)) => {
                        sip.ua().hangup(Instant::now(), call);
                        // The task that hung up is not waiting for the call's last events.
                        if sip.ua().is_ended(call) {
                            routes.remove(&call);
                        }
                    }
                    Some(SipCommand::Dialog(call, reply)) => {
                        let _ = reply.send(sip.ua().dialog(call));
                    }
                    Some(SipCommand::ByeSaved(d)) => sip.ua().bye_saved(Instant::now(), d),
                    Some(SipCommand::Ring(call, sdp)) => sip.ua().ring(Instant::now(), call, sdp.as_deref()),
                    Some(SipCommand::Answer(call, sdp)) => sip.ua().answer(Instant::now(), call, &sdp),
                    Some(SipCommand::Reject { call, code, phrase, headers }) => {
                        let h: Vec<(&str, String)> = headers.into_iter().collect();
                        sip.ua().reject(Instant::now(), call, code, phrase, &h);
                        // A rejected call has no more events for its task.
                        routes.remove(&call);
                    }
                    Some(SipCommand::AnswerReoffer(call, tx, sdp)) => sip.ua().answer_reoffer(Instant::now(), call, tx, sdp.as_deref().map_err(|c| *c)),
                    Some(SipCommand::NotifyRefer { call, code, reason }) => sip.ua().notify_refer(Instant::now(), call, code, &reason),
                    None => return,
                }
                continue;
            }
        };
        match ev {
            UaEvent::AuthFailed { .. } => {
                metrics.sip_auth_failures.inc();
            }
            UaEvent::SourceBlocked { source, failures } => {
                metrics.sip_sources_blocked.inc();
                tracing::warn!(source = %source.addr, failures, "SIP source blocked: too many failed authentications");
            }
            UaEvent::Registration { registered, code } => {
                health.set_registration(if registered {
                    Check::Ok
                } else {
                    Check::Failing
                });
                metrics.sip_registered.set(registered as i64);
                if registered {
                    tracing::info!(code, "registered to the PBX");
                } else {
                    tracing::warn!(code, "registration to the PBX failed; retrying");
                }
            }
            UaEvent::Incoming {
                call,
                invite,
                source,
            } if !routes.contains_key(&call) => {
                let (tx, rx) = mpsc::channel(64);
                let inc = IncomingInvite {
                    call,
                    invite: *invite,
                    source,
                    events: rx,
                };
                match invites.try_send(inc) {
                    Ok(()) => {
                        routes.insert(call, tx);
                    }
                    Err(e) => {
                        let inc = e.into_inner();
                        tracing::warn!(%source.addr, call_id = inc.invite.call_id(), "INVITE refused: the call layer is not taking calls");
                        sip.ua().reject(
                            Instant::now(),
                            call,
                            503,
                            "Service Unavailable",
                            &[("retry-after", "10".into())],
                        );
                    }
                }
            }
            other => {
                let Some(call) = other.call() else {
                    continue;
                };
                let last = matches!(other, UaEvent::Ended { .. } | UaEvent::Failed { .. });
                if let Some(tx) = routes.get(&call) {
                    match tx.try_send(other) {
                        Ok(()) => {}
                        Err(TrySendError::Closed(_)) => {
                            // The call task is gone: make sure the PBX side ends too.
                            sip.ua().hangup(Instant::now(), call);
                            routes.remove(&call);
                        }
                        Err(TrySendError::Full(_)) => {
                            // Waiting here would hold up every other call's
                            // SIP; the one that cannot keep up is ended.
                            tracing::warn!(?call, "a call's task is not taking its SIP events: hanging it up (overloaded)");
                            sip.ua().hangup(Instant::now(), call);
                            if let Some(tx) = routes.remove(&call) {
                                // Its task learns why when it reads again.
                                tokio::spawn(async move {
                                    let _ = tx
                                        .send(UaEvent::Ended {
                                            call,
                                            cause: SipEnd::Overloaded,
                                        })
                                        .await;
                                });
                            }
                        }
                    }
                }
                if last {
                    routes.remove(&call);
                }
            }
        }
        // Registration expiry is also a readiness matter between refreshes.
        if settings.trunk.register && sip.ua().registered(Instant::now()) == Some(false) {
            health.set_registration(Check::Failing);
            metrics.sip_registered.set(0);
        }
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse_incoming, Msg};
    use crate::sip::method::Method;
    use std::time::Duration;

    fn settings() -> Settings {
        crate::config::settings_from_toml_str(
            r#"
[wati]
api_endpoint = "http://127.0.0.1:9/api"
token = "t"
webhook_key = "k"
[http]
listen = "127.0.0.1:0"
[webrtc]
bind_ip = "127.0.0.1"
[sip]
listen = "127.0.0.1:0"
[trunk]
uri = "sip:127.0.0.1:5099"
allowed_sources = ["127.0.0.1/32"]
[media]
rtp_ip = "127.0.0.1"
[storage]
url = "sqlite::memory:"
"#,
            Vec::new(),
        )
        .expect("test settings are valid")
    }

    /// The PBX of this test: raw SIP over UDP on loopback.
    struct Pbx {
        sock: UdpSocket,
        bridge: SocketAddr,
        /// BYEs the bridge sent, by Call-ID.
        byes: Vec<String>,
    }

    impl Pbx {
        fn addr(&self) -> SocketAddr {
            self.sock.local_addr().unwrap()
        }

        async fn send(&self, text: String) {
            self.sock
                .send_to(text.as_bytes(), self.bridge)
                .await
                .unwrap();
        }

        fn headers(&self, id: &str, cseq: &str, to_tag: Option<&str>, branch: &str) -> String {
            let (me, b) = (self.addr(), self.bridge);
            let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
            format!("Via: SIP/2.0/UDP {me};branch=z9hG4bK-{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:agent@{me}>;tag=f-{id}\r\nTo: <sip:14085551234@{b}>{to_tag}\r\nCall-ID: {id}\r\nCSeq: {cseq}\r\nContact: <sip:agent@{me}>\r\n")
        }

        async fn invite(&self, id: &str) {
            let sdp = "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
            let h = self.headers(id, "1 INVITE", None, &format!("{id}-inv"));
            let b = self.bridge;
            self.send(format!("INVITE sip:14085551234@{b} SIP/2.0\r\n{h}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())).await;
        }

        async fn in_dialog(
            &self,
            method: &str,
            id: &str,
            cseq: u32,
            tag: &str,
            body: Option<(&str, &str)>,
        ) {
            let h = self.headers(
                id,
                &format!("{cseq} {method}"),
                Some(tag),
                &format!("{id}-{method}-{cseq}"),
            );
            let b = self.bridge;
            let (ct, body) = match body {
                Some((ct, body)) => (format!("Content-Type: {ct}\r\n"), body),
                None => (String::new(), ""),
            };
            self.send(format!(
                "{method} sip:wa-sip-bridge@{b} SIP/2.0\r\n{h}{ct}Content-Length: {}\r\n\r\n{body}",
                body.len()
            ))
            .await;
        }

        /// The next message from the bridge that `want` picks; BYEs from the
        /// bridge met on the way are answered and noted.
        async fn until(&mut self, want: impl Fn(&Msg) -> bool) -> Msg {
            let mut buf = vec![0u8; 65536];
            loop {
                let (n, _) =
                    tokio::time::timeout(Duration::from_secs(10), self.sock.recv_from(&mut buf))
                        .await
                        .expect("the bridge's SIP answers within 10 s")
                        .unwrap();
                let msg = parse_incoming(&buf[..n]).expect("the bridge sends valid SIP");
                if msg.method() == Some(&Method::Bye) {
                    let ok = Msg::response_to(&msg, 200, "OK", None);
                    self.sock
                        .send_to(&ok.to_bytes(), self.bridge)
                        .await
                        .unwrap();
                    self.byes.push(msg.call_id().to_string());
                }
                if want(&msg) {
                    return msg;
                }
            }
        }

        /// The INVITE's 200; then the ACK.
        async fn answered(&mut self, id: &str) -> String {
            let ok = self
                .until(|m| m.call_id() == id && m.status() == Some(200) && m.cseq().1 == "INVITE")
                .await;
            let tag = ok.to_tag().unwrap().to_string();
            self.in_dialog("ACK", id, 1, &tag, None).await;
            tag
        }
    }

    /// One call's task stops reading its SIP events (here: never reads
    /// them) while its PBX sends far more than its queue holds. The SIP task
    /// must not wait for it: 50 other calls are set up and torn down
    /// meanwhile, the stuck call is hung up toward the PBX, and its task,
    /// when it reads again, finds why (`Overloaded`) after what was queued.
    #[tokio::test]
    async fn a_call_that_stops_reading_its_events_is_ended_and_stalls_no_other() {
        let settings = settings();
        let BoundSip {
            socket: sip,
            addr: bridge,
            ..
        } = bind(&settings, vec![]).await.unwrap();
        let (handle, commands) = channel();
        let (invites_tx, mut invites) = mpsc::channel::<IncomingInvite>(256);
        let trunk = Arc::new(Trunk::new("127.0.0.1".into(), 5099, &[]));
        let task = tokio::spawn(run(
            sip,
            commands,
            settings,
            trunk,
            Arc::new(Health::default()),
            Arc::new(Metrics::new()),
            invites_tx,
        ));
        let mut pbx = Pbx {
            sock: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            bridge,
            byes: Vec::new(),
        };
        // The call layer of this test: answers every call; hands back the
        // stuck call's events unread, and reads every other call's to its end.
        let (ended_tx, mut ended) = mpsc::channel::<(String, Option<SipEnd>)>(256);
        let (stuck_tx, stuck_rx) = oneshot::channel();
        let layer = tokio::spawn(async move {
            let mut stuck_tx = Some(stuck_tx);
            while let Some(inc) = invites.recv().await {
                handle.answer(inc.call, "v=0\r\n".into()).await;
                let id = inc.invite.call_id().to_string();
                let mut events = inc.events;
                if id == "stuck" {
                    if let Some(tx) = stuck_tx.take() {
                        let _ = tx.send(events);
                    }
                    continue;
                }
                let ended_tx = ended_tx.clone();
                tokio::spawn(async move {
                    let mut cause = None;
                    while let Some(ev) = events.recv().await {
                        if let UaEvent::Ended { cause: c, .. } = ev {
                            cause = Some(c);
                            break;
                        }
                    }
                    let _ = ended_tx.send((id, cause)).await;
                });
            }
        });

        pbx.invite("stuck").await;
        let tag = pbx.answered("stuck").await;
        let dtmf = ("application/dtmf-relay", "Signal=5\r\nDuration=100\r\n");
        for cseq in 2..100 {
            pbx.in_dialog("INFO", "stuck", cseq, &tag, Some(dtmf)).await;
            if cseq % 16 == 0 {
                // Paced so that no datagram is lost on loopback.
                pbx.until(|m| m.call_id() == "stuck" && m.cseq() == (cseq, "INFO"))
                    .await;
            }
        }

        for i in 0..50 {
            let id = format!("other-{i}");
            pbx.invite(&id).await;
            let tag = pbx.answered(&id).await;
            pbx.in_dialog("BYE", &id, 2, &tag, None).await;
            pbx.until(|m| m.call_id() == id && m.cseq().1 == "BYE" && m.status() == Some(200))
                .await;
        }
        for _ in 0..50 {
            let (id, cause) = tokio::time::timeout(Duration::from_secs(10), ended.recv())
                .await
                .expect("each other call ends")
                .unwrap();
            assert_eq!(cause, Some(SipEnd::PeerBye), "{id}");
        }
        assert!(
            pbx.byes.iter().any(|id| id == "stuck"),
            "the stuck call was hung up toward the PBX"
        );

        let mut stuck = stuck_rx.await.unwrap();
        let mut seen = 0;
        let last = loop {
            let ev = tokio::time::timeout(Duration::from_secs(5), stuck.recv())
                .await
                .expect("the stuck call's events end")
                .expect("the channel is not closed before the ending");
            seen += 1;
            if let UaEvent::Ended { cause, .. } = ev {
                break cause;
            }
        };
        assert_eq!(last, SipEnd::Overloaded);
        assert!(seen > 60, "what was queued came first ({seen} events)");
        task.abort();
        layer.abort();
    }
}
