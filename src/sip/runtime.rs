//! The thin runtime around [`SipUa`]: a UDP socket and a TCP listener on the
//! same address, optionally a TLS listener (`sip.tls_listen`) and a TLS
//! client toward the trunk, the clock, and nothing else.
//!
//! Stream connections (TCP or TLS; accepted, or opened toward a peer when a
//! message must go there) each run a small task that frames the byte
//! stream ([`super::framing`]) and writes what the UA sends; messages reach
//! the UA through one channel, so the UA stays single-owner. Connections
//! are reused per peer (transport and address; RFC 3261 §18.1.1, §18.2.2:
//! responses go back on the connection the request came on); one that is
//! lost is opened again by the next message. Connections we open send a
//! CRLF keep-alive every 30 s (RFC 5626 §4.4.1), so NATs and the PBX keep
//! them. A TLS connection that cannot be opened (TCP refused, handshake
//! failed, certificate refused) is reported to the UA, which fails the
//! calls waiting on that peer with the reason, and logged with the peer.
//!
//! Accepted connections are bounded: a source the UA would refuse (outside
//! `trunk.allowed_sources`, or blocked for failing digest) is closed at
//! once, and one address may hold at most [`MAX_ACCEPTED_PER_SOURCE`] of
//! them (TLS handshakes in progress included), all sources together
//! [`MAX_ACCEPTED`]: a scanner cannot pin down tasks and descriptors.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::endpoint::{Peer, Transport};
use super::framing::{Frame, StreamFramer};
use super::ua::{SipUa, UaEvent, UaOutput};

/// Outgoing messages queued per stream connection.
const CONN_QUEUE: usize = 256;
/// How long opening a connection (TCP, and the TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 5626 §4.4.1 keep-alive on the connections we open.
const KEEPALIVE: Duration = Duration::from_secs(30);
/// Accepted TCP/TLS connections one source address may hold.
pub const MAX_ACCEPTED_PER_SOURCE: u32 = 16;
/// Accepted TCP/TLS connections in all.
pub const MAX_ACCEPTED: usize = 512;

enum FromConn {
    Message(Peer, Vec<u8>),
    /// A connection is ready (opened by us, or accepted and its TLS
    /// handshake done); its sender.
    Opened(Peer, mpsc::Sender<Vec<u8>>),
    Closed(Peer),
    /// A connection we tried to open failed, with why.
    Failed(Peer, String),
}

/// TLS for SIP: the listener's acceptor and the trunk's connector with the
/// name its certificate must carry.
pub struct SipTls {
    pub listener: Option<(TcpListener, TlsAcceptor)>,
    pub connector: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

pub struct SipSocket {
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    tls: SipTls,
    ua: SipUa,
    buf: Box<[u8; 65536]>,
    conns: HashMap<Peer, mpsc::Sender<Vec<u8>>>,
    /// Messages waiting for a connection being opened.
    pending: HashMap<Peer, Vec<Vec<u8>>>,
    from_conns_tx: mpsc::Sender<FromConn>,
    from_conns: mpsc::Receiver<FromConn>,
    /// Connections accepted and not closed yet, and how many per address.
    accepted: HashSet<Peer>,
    accepted_per_ip: HashMap<IpAddr, u32>,
    /// Counts SIP responses each way (`wsb_sip_responses_total`), when set.
    metrics: Option<std::sync::Arc<crate::metrics::Metrics>>,
}

async fn serve_conn<S>(
    stream: S,
    peer: Peer,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    to_ua: mpsc::Sender<FromConn>,
    keepalive: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 8192];
    let mut ping = tokio::time::interval(KEEPALIVE);
    ping.reset();
    loop {
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                if framer.push(&buf[..n]).is_err() {
                    break;
                }
                loop {
                    match framer.next_frame() {
                        Ok(Some(Frame::Message(m))) => {
                            if to_ua.send(FromConn::Message(peer, m)).await.is_err() {
                                return;
                            }
                        }
                        // RFC 5626 §4.4.1: answer a double-CRLF ping with one CRLF.
                        Ok(Some(Frame::Ping)) => {
                            if wr.write_all(b"\r\n").await.is_err() {
                                break;
                            }
                        }
                        Ok(None) => break,
                        // An unframeable stream cannot be resynchronised: close it.
                        Err(_) => {
                            let _ = to_ua.send(FromConn::Closed(peer)).await;
                            return;
                        }
                    }
                }
            }
            m = outgoing.recv() => {
                let Some(m) = m else { break };
                if wr.write_all(&m).await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
            _ = ping.tick(), if keepalive => {
                if wr.write_all(b"\r\n\r\n").await.is_err() || wr.flush().await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to_ua.send(FromConn::Closed(peer)).await;
}

/// `f` within [`CONNECT_TIMEOUT`], its error as text.
async fn in_time<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("{what} timed out")),
    }
}

/// Opens a connection to `peer` (TCP, then TLS when it says so) and
/// serves it; a failure is reported with its reason.
async fn open_conn(
    peer: Peer,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
    back: mpsc::Sender<FromConn>,
) {
    let tcp = match in_time("connect", TcpStream::connect(peer.addr)).await {
        Ok(s) => s,
        Err(reason) => {
            let _ = back.send(FromConn::Failed(peer, reason)).await;
            return;
        }
    };
    let _ = tcp.set_nodelay(true);
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    match (peer.transport, tls) {
        (Transport::Tls, Some((connector, name))) => {
            let stream = match in_time("TLS handshake", connector.connect(name, tcp)).await {
                Ok(s) => s,
                Err(reason) => {
                    let _ = back.send(FromConn::Failed(peer, reason)).await;
                    return;
                }
            };
            if back.send(FromConn::Opened(peer, tx)).await.is_err() {
                return;
            }
            serve_conn(stream, peer, rx, back, true).await;
        }
        (Transport::Tls, None) => {
            let _ = back
                .send(FromConn::Failed(peer, "no TLS client configured".into()))
                .await;
        }
        _ => {
            if back.send(FromConn::Opened(peer, tx)).await.is_err() {
                return;
            }
            serve_conn(tcp, peer, rx, back, true).await;
        }
    }
}

/// Serves a TLS connection accepted from `addr` once its handshake is done.
async fn serve_accepted_tls(
    tcp: TcpStream,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    back: mpsc::Sender<FromConn>,
) {
    let peer = Peer {
        transport: Transport::Tls,
        addr,
    };
    let stream = match in_time("TLS handshake", acceptor.accept(tcp)).await {
        Ok(s) => s,
        Err(reason) => {
            tracing::warn!(peer = %addr, %reason, "SIP over TLS: a handshake from the peer failed");
            let _ = back.send(FromConn::Closed(peer)).await;
            return;
        }
    };
    let (tx, rx) = mpsc::channel(CONN_QUEUE);
    if back.send(FromConn::Opened(peer, tx)).await.is_err() {
        return;
    }
    serve_conn(stream, peer, rx, back, false).await;
}

impl SipSocket {
    /// UDP only.
    pub fn new(udp: UdpSocket, ua: SipUa) -> SipSocket {
        Self::with_tcp(udp, None, ua)
    }

    /// UDP and TCP (the listener usually on the same address).
    pub fn with_tcp(udp: UdpSocket, tcp: Option<TcpListener>, ua: SipUa) -> SipSocket {
        let (tx, rx) = mpsc::channel(1024);
        SipSocket {
            udp,
            tcp,
            tls: SipTls {
                listener: None,
                connector: None,
            },
            ua,
            buf: Box::new([0; 65536]),
            conns: HashMap::new(),
            pending: HashMap::new(),
            from_conns_tx: tx,
            from_conns: rx,
            accepted: HashSet::new(),
            accepted_per_ip: HashMap::new(),
            metrics: None,
        }
    }

    /// Counts the responses sent and received in `metrics`.
    pub(crate) fn set_metrics(&mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) {
        self.metrics = Some(metrics);
    }

    /// Whether a connection from `peer` may be accepted; counts it if so.
    fn admit(&mut self, peer: Peer) -> bool {
        let ip = peer.addr.ip();
        let count = self.accepted_per_ip.get(&ip).copied().unwrap_or(0);
        if !self.ua.admits(ip, Instant::now())
            || count >= MAX_ACCEPTED_PER_SOURCE
            || self.accepted.len() >= MAX_ACCEPTED
        {
            tracing::debug!(peer = %peer.addr, count, "SIP connection refused");
            return false;
        }
        self.accepted.insert(peer);
        *self.accepted_per_ip.entry(ip).or_insert(0) += 1;
        true
    }

    /// An accepted connection is gone.
    fn release(&mut self, peer: Peer) {
        if self.accepted.remove(&peer) {
            let ip = peer.addr.ip();
            if let Some(n) = self.accepted_per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.accepted_per_ip.remove(&ip);
                }
            }
        }
    }

    /// Adds TLS: a listener, a client toward the trunk, or both.
    pub fn with_tls(mut self, tls: SipTls) -> SipSocket {
        self.tls = tls;
        self
    }

    pub fn ua(&mut self) -> &mut SipUa {
        &mut self.ua
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    /// The TLS listener's address, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
            .listener
            .as_ref()
            .and_then(|(l, _)| l.local_addr().ok())
    }

    fn send_stream(&mut self, to: Peer, data: Vec<u8>) {
        if let Some(tx) = self.conns.get(&to) {
            if tx.try_send(data).is_err() {
                // Full or closed: drop it; SIP over TCP has no retransmission,
                // the transaction will time out and the TU hears of it.
                self.conns.remove(&to);
            }
            return;
        }
        if let Some(q) = self.pending.get_mut(&to) {
            q.push(data);
            return;
        }
        self.pending.insert(to, vec![data]);
        let tls = self.tls.connector.clone();
        tokio::spawn(open_conn(to, tls, self.from_conns_tx.clone()));
    }

    /// Sends what the UA has queued and runs until it has an event. Cancel-safe.
    pub async fn next_event(&mut self) -> UaEvent {
        loop {
            match self.ua.poll_output() {
                Some(UaOutput::Transmit { to, data }) => {
                    if let Some(m) = &self.metrics {
                        m.sip_message("out", &data);
                    }
                    match to.transport {
                        Transport::Udp => {
                            let _ = self.udp.send_to(&data, to.addr).await;
                        }
                        Transport::Tcp | Transport::Tls => self.send_stream(to, data),
                    }
                }
                Some(UaOutput::Event(e)) => return e,
                None => {
                    let deadline = self.ua.next_timeout();
                    let sleep = async {
                        match deadline {
                            Some(d) => {
                                tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await
                            }
                            None => std::future::pending::<()>().await,
                        }
                    };
                    let accept = async {
                        match &self.tcp {
                            Some(l) => l.accept().await.ok(),
                            None => std::future::pending().await,
                        }
                    };
                    let accept_tls = async {
                        match &self.tls.listener {
                            Some((l, a)) => {
                                l.accept().await.ok().map(|(s, addr)| (s, addr, a.clone()))
                            }
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        r = self.udp.recv_from(&mut self.buf[..]) => {
                            if let Ok((n, from)) = r {
                                let peer = Peer { transport: Transport::Udp, addr: from };
                                if let Some(m) = &self.metrics {
                                    m.sip_message("in", &self.buf[..n]);
                                }
                                self.ua.handle_message(Instant::now(), &self.buf[..n], peer);
                            }
                        }
                        Some((stream, addr)) = accept => {
                            let peer = Peer { transport: Transport::Tcp, addr };
                            if self.admit(peer) {
                                let (tx, rx) = mpsc::channel(CONN_QUEUE);
                                self.conns.insert(peer, tx);
                                tokio::spawn(serve_conn(stream, peer, rx, self.from_conns_tx.clone(), false));
                            }
                        }
                        Some((stream, addr, acceptor)) = accept_tls => {
                            if self.admit(Peer { transport: Transport::Tls, addr }) {
                                tokio::spawn(serve_accepted_tls(stream, addr, acceptor, self.from_conns_tx.clone()));
                            }
                        }
                        Some(m) = self.from_conns.recv() => match m {
                            FromConn::Message(peer, data) => {
                                if let Some(m) = &self.metrics {
                                    m.sip_message("in", &data);
                                }
                                self.ua.handle_message(Instant::now(), &data, peer);
                            }
                            FromConn::Opened(peer, tx) => {
                                for data in self.pending.remove(&peer).unwrap_or_default() {
                                    let _ = tx.try_send(data);
                                }
                                self.conns.insert(peer, tx);
                            }
                            FromConn::Closed(peer) => {
                                self.conns.remove(&peer);
                                self.pending.remove(&peer);
                                self.release(peer);
                            }
                            FromConn::Failed(peer, reason) => {
                                self.pending.remove(&peer);
                                if peer.transport == Transport::Tls {
                                    tracing::warn!(peer = %peer.addr, %reason, "SIP over TLS: no connection to the peer");
                                }
                                self.ua.transport_failed(Instant::now(), peer, &reason);
                            }
                        },
                        _ = sleep => self.ua.handle_timeout(Instant::now()),
                    }
                }
            }
        }
    }
}
