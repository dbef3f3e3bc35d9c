//! The thin runtime around a [`WaLeg`]: its own UDP socket, the clock, and
//! nothing else. The call task owns one of these per call and awaits
//! [`LegSocket::next_event`] alongside its other inputs.

use std::time::Instant;

use tokio::net::UdpSocket;

use super::leg::{LegEvent, LegOutput, WaLeg};
use crate::lazy_timer::LazyTimer;
use crate::ports::PortLease;
use crate::udp_batch::RecvBatch;

pub struct LegSocket {
    socket: UdpSocket,
    leg: WaLeg,
    received: RecvBatch,
    timer: LazyTimer,
    /// Keeps the port out of the pool while the socket lives.
    _lease: Option<PortLease>,
    send_errors: u64,
}

impl LegSocket {
    pub fn new(socket: UdpSocket, leg: WaLeg, lease: Option<PortLease>) -> LegSocket {
        LegSocket {
            socket,
            leg,
            received: RecvBatch::default(),
            timer: LazyTimer::default(),
            _lease: lease,
            send_errors: 0,
        }
    }

    pub fn leg(&mut self) -> &mut WaLeg {
        &mut self.leg
    }

    pub fn leg_ref(&self) -> &WaLeg {
        &self.leg
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams the OS refused to send.
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Datagrams too big for the receive buffer, dropped.
    pub fn oversized(&self) -> u64 {
        self.received.dropped
    }

    /// Runs the leg until it has an event for the caller. Cancel-safe: a
    /// cancelled call loses at most a datagram being sent, which UDP may lose anyway.
    pub async fn next_event(&mut self) -> LegEvent {
        loop {
            match self.leg.poll_output() {
                LegOutput::Transmit { to, data, .. } => {
                    // UDP sends rarely wait: try at once, await only if the
                    // socket's buffer is full.
                    let sent = match self.socket.try_send_to(&data, to) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            // Boxed: inline, this rare wait's future (432
                            // bytes) sat in every call task for its life.
                            Box::pin(self.socket.send_to(&data, to)).await.map(|_| ())
                        }
                        r => r.map(|_| ()),
                    };
                    if sent.is_err() {
                        self.send_errors += 1;
                    }
                    self.leg.recycle(data);
                }
                LegOutput::Event(e) => return e,
                LegOutput::Timeout(at) => {
                    self.timer.arm(at);
                    tokio::select! {
                        r = self.received.recv(&self.socket) => {
                            if let Ok(slot) = r {
                                let (data, from) = self.received.get(slot);
                                self.leg.handle_receive(Instant::now(), from, data);
                            }
                        }
                        _ = self.timer.fired() => {
                            self.leg.handle_timeout(Instant::now());
                        }
                    }
                }
            }
        }
    }
}
