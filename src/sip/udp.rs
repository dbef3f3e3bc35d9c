//! The thin runtime around [`SipUa`] for UDP: one socket, the clock, and
//! nothing else. TCP (framing is in [`super::framing`]) is not wired yet.

use std::time::Instant;

use tokio::net::UdpSocket;

use super::endpoint::{Peer, Transport};
use super::ua::{SipUa, UaEvent, UaOutput};

pub struct SipSocket {
    socket: UdpSocket,
    ua: SipUa,
    buf: Box<[u8; 65536]>,
}

impl SipSocket {
    pub fn new(socket: UdpSocket, ua: SipUa) -> SipSocket {
        SipSocket {
            socket,
            ua,
            buf: Box::new([0; 65536]),
        }
    }

    pub fn ua(&mut self) -> &mut SipUa {
        &mut self.ua
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }

    /// Sends what the UA has queued and runs until it has an event. Cancel-safe.
    pub async fn next_event(&mut self) -> UaEvent {
        loop {
            match self.ua.poll_output() {
                Some(UaOutput::Transmit { to, data }) => {
                    if to.transport == Transport::Udp {
                        let _ = self.socket.send_to(&data, to.addr).await;
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
                    tokio::select! {
                        r = self.socket.recv_from(&mut self.buf[..]) => {
                            if let Ok((n, from)) = r {
                                let peer = Peer { transport: Transport::Udp, addr: from };
                                self.ua.handle_message(Instant::now(), &self.buf[..n], peer);
                            }
                        }
                        _ = sleep => self.ua.handle_timeout(Instant::now()),
                    }
                }
            }
        }
    }
}
