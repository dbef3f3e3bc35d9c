//! The thin runtime around [`SipUa`]: a UDP socket and a TCP listener on the
//! same address, the clock, and nothing else.
//!
//! TCP connections (accepted, or opened toward a peer when a message must go
//! there) each run a small task that frames the byte stream
//! ([`super::framing`]) and writes what the UA sends; messages reach the UA
//! through one channel, so the UA stays single-owner. Connections are reused
//! per peer address (RFC 3261 §18.1.1, §18.2.2: responses go back on the
//! connection the request came on).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::endpoint::{Peer, Transport};
use super::framing::{Frame, StreamFramer};
use super::ua::{SipUa, UaEvent, UaOutput};

/// Outgoing messages queued per TCP connection.
const CONN_QUEUE: usize = 256;

enum FromConn {
    Message(SocketAddr, Vec<u8>),
    /// A connection we opened is ready; its sender.
    Opened(SocketAddr, mpsc::Sender<Vec<u8>>),
    Closed(SocketAddr),
}

pub struct SipSocket {
    udp: UdpSocket,
    tcp: Option<TcpListener>,
    ua: SipUa,
    buf: Box<[u8; 65536]>,
    conns: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    /// Messages waiting for a connection being opened.
    pending: HashMap<SocketAddr, Vec<Vec<u8>>>,
    from_conns_tx: mpsc::Sender<FromConn>,
    from_conns: mpsc::Receiver<FromConn>,
}

async fn serve_conn(
    stream: TcpStream,
    peer: SocketAddr,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    to_ua: mpsc::Sender<FromConn>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut framer = StreamFramer::new();
    let mut buf = vec![0u8; 8192];
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
                if wr.write_all(&m).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to_ua.send(FromConn::Closed(peer)).await;
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
            ua,
            buf: Box::new([0; 65536]),
            conns: HashMap::new(),
            pending: HashMap::new(),
            from_conns_tx: tx,
            from_conns: rx,
        }
    }

    pub fn ua(&mut self) -> &mut SipUa {
        &mut self.ua
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.udp.local_addr()
    }

    fn send_tcp(&mut self, to: SocketAddr, data: Vec<u8>) {
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
        let back = self.from_conns_tx.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(std::time::Duration::from_secs(5), TcpStream::connect(to))
                    .await
            else {
                let _ = back.send(FromConn::Closed(to)).await;
                return;
            };
            let (tx, rx) = mpsc::channel(CONN_QUEUE);
            if back.send(FromConn::Opened(to, tx)).await.is_err() {
                return;
            }
            serve_conn(stream, to, rx, back).await;
        });
    }

    /// Sends what the UA has queued and runs until it has an event. Cancel-safe.
    pub async fn next_event(&mut self) -> UaEvent {
        loop {
            match self.ua.poll_output() {
                Some(UaOutput::Transmit { to, data }) => match to.transport {
                    Transport::Udp => {
                        let _ = self.udp.send_to(&data, to.addr).await;
                    }
                    Transport::Tcp => self.send_tcp(to.addr, data),
                },
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
                    tokio::select! {
                        r = self.udp.recv_from(&mut self.buf[..]) => {
                            if let Ok((n, from)) = r {
                                let peer = Peer { transport: Transport::Udp, addr: from };
                                self.ua.handle_message(Instant::now(), &self.buf[..n], peer);
                            }
                        }
                        Some((stream, addr)) = accept => {
                            let (tx, rx) = mpsc::channel(CONN_QUEUE);
                            self.conns.insert(addr, tx);
                            tokio::spawn(serve_conn(stream, addr, rx, self.from_conns_tx.clone()));
                        }
                        Some(m) = self.from_conns.recv() => match m {
                            FromConn::Message(addr, data) => {
                                let peer = Peer { transport: Transport::Tcp, addr };
                                self.ua.handle_message(Instant::now(), &data, peer);
                            }
                            FromConn::Opened(addr, tx) => {
                                for data in self.pending.remove(&addr).unwrap_or_default() {
                                    let _ = tx.try_send(data);
                                }
                                self.conns.insert(addr, tx);
                            }
                            FromConn::Closed(addr) => {
                                self.conns.remove(&addr);
                                self.pending.remove(&addr);
                            }
                        },
                        _ = sleep => self.ua.handle_timeout(Instant::now()),
                    }
                }
            }
        }
    }
}
