//! The SIP side's RTP socket: an even port for RTP and the odd one above for
//! RTCP (or RTP alone when rtcp-mux is negotiated), from the media port pool,
//! with symmetric RTP (RFC 4961): once a valid packet arrives, we send to
//! where it came from, which gets media through NATs in front of the PBX.

use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use super::rtcp::MAX_REPORT;
use super::srtp::{SrtpSession, MAX_TRAILER};
use crate::ports::{bind_consecutive, PortError, PortLease, SharedPortPool};
use crate::udp_batch::{RecvBatch, Slot};

/// The largest RTP packet protected or unprotected (audio is far smaller).
const SRTP_MAX_PACKET: usize = 1500;

/// SRTP on the socket (SDES): our sending context, the PBX's receiving
/// one, and the buffers packets are processed in — fixed, so a packet
/// costs a copy and no allocation.
struct SrtpIo {
    tx: SrtpSession,
    rx: SrtpSession,
    out: Box<[u8; SRTP_MAX_PACKET + MAX_TRAILER]>,
    inb: Box<[u8; SRTP_MAX_PACKET]>,
    in_len: usize,
}

pub(crate) struct RtpSocket {
    rtp: UdpSocket,
    rtcp: UdpSocket,
    lease: PortLease,
    /// Where the PBX's SDP says to send (`None`: not known yet, or `c=0.0.0.0` hold).
    signalled: Option<SocketAddr>,
    /// Where its packets actually come from, once one was valid.
    latched: Option<SocketAddr>,
    /// Datagrams from neither the signalled nor the latched address, dropped.
    pub foreign: u64,
    /// Datagrams the OS would not send (full buffer), dropped.
    pub send_dropped: u64,
    /// RTCP datagrams from the peer on the RTCP port (counted; reports are
    /// not interpreted yet).
    pub rtcp_rx: u64,
    /// SRTP packets from the PBX that failed authentication or replay
    /// checks (or were too long), dropped.
    pub srtp_failed: u64,
    /// RTCP compound packets sent to the PBX.
    pub rtcp_tx: u64,
    batch: RecvBatch,
    srtp: Option<SrtpIo>,
    /// RTCP on the RTP port both ways (RFC 5761), as negotiated.
    rtcp_mux: bool,
    /// Where the PBX's valid RTCP came from: ours goes there (symmetric
    /// RTCP, RFC 4961), else to the RTP address's port + 1 (or the RTP
    /// address itself with rtcp-mux).
    rtcp_latched: Option<SocketAddr>,
    /// The last RTCP packet received (unprotected in place with SRTCP):
    /// as long as the longest one so far (a PBX's reports are ~100 bytes),
    /// not a 1,500-byte buffer per call; datagrams are read on the stack.
    rtcp_in: Vec<u8>,
}

/// What [`RtpSocket::recv`] got from the PBX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// An RTP datagram: read it with [`RtpSocket::datagram`].
    Rtp(Slot, SocketAddr),
    /// An RTCP compound packet of this length: read it with
    /// [`RtpSocket::rtcp_datagram`].
    Rtcp(usize),
}

impl RtpSocket {
    /// Binds an RTP/RTCP pair on `ip` from `pool` (which must hand out even ports).
    pub(crate) fn bind(pool: &SharedPortPool, ip: IpAddr) -> Result<RtpSocket, PortError> {
        let (mut socks, lease) = bind_consecutive(pool, ip, 2)?;
        let to_tokio = |s: std::net::UdpSocket| {
            let addr = s.local_addr().ok();
            UdpSocket::from_std(s).map_err(|e| PortError::Bind {
                addr: addr.unwrap_or_else(|| SocketAddr::new(ip, 0)),
                reason: e.to_string(),
            })
        };
        let (Some(rtcp), Some(rtp)) = (socks.pop(), socks.pop()) else {
            return Err(PortError::Bind {
                addr: SocketAddr::new(ip, lease.port()),
                reason: "pair not bound".into(),
            });
        };
        Ok(RtpSocket {
            rtp: to_tokio(rtp)?,
            rtcp: to_tokio(rtcp)?,
            lease,
            signalled: None,
            latched: None,
            foreign: 0,
            send_dropped: 0,
            rtcp_rx: 0,
            srtp_failed: 0,
            rtcp_tx: 0,
            batch: RecvBatch::default(),
            srtp: None,
            rtcp_mux: false,
            rtcp_latched: None,
            rtcp_in: Vec::new(),
        })
    }

    /// Datagrams too big for the receive buffer, dropped.
    pub(crate) fn oversized(&self) -> u64 {
        self.batch.dropped
    }

    /// The RTP port (even); RTCP is on the next one.
    pub(crate) fn port(&self) -> u16 {
        self.lease.port()
    }

    /// The peer's address from its SDP (a re-INVITE may change it). An
    /// unspecified address (`c=0.0.0.0`, old-style hold) means: send nothing.
    pub(crate) fn set_remote(&mut self, addr: Option<SocketAddr>) {
        let addr = addr.filter(|a| !a.ip().is_unspecified() && a.port() != 0);
        if addr != self.signalled {
            self.signalled = addr;
            // A new negotiation: learn the source again.
            self.latched = None;
            self.rtcp_latched = None;
        }
    }

    /// Whether RTCP shares the RTP port (RFC 5761: both offered and answered).
    pub(crate) fn set_rtcp_mux(&mut self, mux: bool) {
        self.rtcp_mux = mux;
    }

    /// Sends one RTCP report: `write` fills the buffer it is given (at
    /// least [`MAX_REPORT`] bytes) and says how much it wrote; with SRTP it
    /// goes out as SRTCP. Nothing is sent while the PBX's address is not
    /// known (or on `c=0.0.0.0` hold).
    pub(crate) fn send_rtcp(&mut self, write: impl FnOnce(&mut [u8]) -> Option<usize>) {
        let Some(rtp_to) = self.remote() else { return };
        let to = self.rtcp_latched.unwrap_or(if self.rtcp_mux {
            rtp_to
        } else {
            SocketAddr::new(rtp_to.ip(), rtp_to.port().wrapping_add(1))
        });
        // A report every few seconds: its buffer is on the stack.
        let mut out = [0u8; MAX_REPORT + MAX_TRAILER];
        let Some(n) = write(&mut out[..MAX_REPORT]) else {
            return;
        };
        let len = match self.srtp.as_mut() {
            None => n,
            Some(io) => match io.tx.protect_rtcp(&mut out[..], n) {
                Ok(len) => len,
                Err(_) => {
                    self.send_dropped += 1;
                    return;
                }
            },
        };
        let sock = if self.rtcp_mux { &self.rtp } else { &self.rtcp };
        if sock.try_send_to(&out[..len], to).is_ok() {
            self.rtcp_tx += 1;
        } else {
            self.send_dropped += 1;
        }
    }

    /// The RTCP packet [`RtpSocket::recv`] returned.
    pub(crate) fn rtcp_datagram(&self, len: usize) -> &[u8] {
        &self.rtcp_in[..len]
    }

    /// RTCP from `from` (its first `n` bytes in `rtcp_in`): from the PBX's
    /// address, and with SRTP authentic. Returns the RTCP length.
    fn accept_rtcp(&mut self, n: usize, from: SocketAddr) -> Option<usize> {
        let peer_ip = self.latched.or(self.signalled).map(|a| a.ip());
        if peer_ip.is_some_and(|ip| ip != from.ip()) {
            self.foreign += 1;
            return None;
        }
        self.rtcp_rx += 1;
        let len = match self.srtp.as_mut() {
            None => n,
            Some(io) => match io.rx.unprotect_rtcp(&mut self.rtcp_in[..n]) {
                Ok(len) => len,
                Err(_) => {
                    self.srtp_failed += 1;
                    return None;
                }
            },
        };
        if self.rtcp_latched.is_none() && peer_ip.is_some() {
            self.rtcp_latched = Some(from);
        }
        Some(len)
    }

    /// Where RTP goes now.
    pub(crate) fn remote(&self) -> Option<SocketAddr> {
        self.signalled?;
        self.latched.or(self.signalled)
    }

    /// Sends one RTP datagram to the peer without waiting; a full socket
    /// buffer drops the packet (late media is useless).
    #[inline]
    pub(crate) fn send(&mut self, datagram: &[u8]) {
        let Some(to) = self.remote() else { return };
        let sent = match self.srtp.as_mut() {
            None => self.rtp.try_send_to(datagram, to).is_ok(),
            Some(io) if datagram.len() <= SRTP_MAX_PACKET => {
                io.out[..datagram.len()].copy_from_slice(datagram);
                match io.tx.protect(&mut io.out[..], datagram.len()) {
                    Ok(n) => self.rtp.try_send_to(&io.out[..n], to).is_ok(),
                    Err(_) => false,
                }
            }
            Some(_) => false,
        };
        if !sent {
            self.send_dropped += 1;
        }
    }

    /// Whether SRTP is on.
    pub(crate) fn has_srtp(&self) -> bool {
        self.srtp.is_some()
    }

    /// SRTP from now on with these contexts (ours, the PBX's), or plain
    /// RTP with `None` (SDES agreed, or not, RFC 4568).
    pub(crate) fn set_srtp(&mut self, sessions: Option<(SrtpSession, SrtpSession)>) {
        self.srtp = sessions.map(|(tx, rx)| SrtpIo {
            tx,
            rx,
            out: Box::new([0; SRTP_MAX_PACKET + MAX_TRAILER]),
            inb: Box::new([0; SRTP_MAX_PACKET]),
            in_len: 0,
        });
    }

    /// Receives the next RTP or RTCP datagram from the peer (RTCP on the
    /// next port up, or on the RTP port where RFC 5761 tells them apart by
    /// payload type). Datagrams from other sources are dropped (and counted) once
    /// the peer is known; with SRTP, packets failing authentication or
    /// replay are dropped and counted. Call [`RtpSocket::latch`] when an
    /// RTP datagram turned out to be valid RTP. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> std::io::Result<Received> {
        loop {
            let slot = tokio::select! {
                // RTP first: the hot path, and no random branch order to draw.
                biased;
                slot = self.batch.recv(&self.rtp) => slot?,
                r = self.rtcp.readable() => {
                    r?;
                    let mut datagram = [0u8; SRTP_MAX_PACKET];
                    if let Ok((n, from)) = self.rtcp.try_recv_from(&mut datagram) {
                        self.rtcp_in.clear();
                        self.rtcp_in.extend_from_slice(&datagram[..n]);
                        if let Some(len) = self.accept_rtcp(n, from) {
                            return Ok(Received::Rtcp(len));
                        }
                    }
                    continue;
                }
            };
            let (data, from) = self.batch.get(slot);
            let known =
                self.latched == Some(from) || self.signalled.map(|s| s.ip()) == Some(from.ip());
            if !(self.latched.is_none() || known) {
                self.foreign += 1;
                continue;
            }
            // RFC 5761 §4: on a shared port, 192..=223 in the second byte
            // is an RTCP packet type (RTP's marker and payload type never
            // take those values in an audio session).
            if data.len() >= 8 && (192..=223).contains(&data[1]) {
                let n = data.len().min(SRTP_MAX_PACKET);
                self.rtcp_in.clear();
                self.rtcp_in.extend_from_slice(&data[..n]);
                if let Some(len) = self.accept_rtcp(n, from) {
                    return Ok(Received::Rtcp(len));
                }
                continue;
            }
            if let Some(io) = self.srtp.as_mut() {
                if data.len() > SRTP_MAX_PACKET {
                    self.srtp_failed += 1;
                    continue;
                }
                io.inb[..data.len()].copy_from_slice(data);
                match io.rx.unprotect(&mut io.inb[..data.len()]) {
                    Ok(n) => io.in_len = n,
                    Err(_) => {
                        self.srtp_failed += 1;
                        continue;
                    }
                }
            }
            return Ok(Received::Rtp(slot, from));
        }
    }

    /// The datagram [`RtpSocket::recv`] returned.
    pub(crate) fn datagram(&self, slot: Slot) -> &[u8] {
        match &self.srtp {
            Some(io) => &io.inb[..io.in_len],
            None => self.batch.get(slot).0,
        }
    }

    /// Symmetric RTP: send to `from` from now on (it sent us valid RTP).
    pub(crate) fn latch(&mut self, from: SocketAddr) {
        if self.latched.is_none() {
            self.latched = Some(from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortPool;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    fn pool() -> SharedPortPool {
        // A pair range picked by the OS would be nicer; take a high range and let bind skip busy ports.
        Arc::new(Mutex::new(PortPool::new(
            46000..=46999,
            2,
            Duration::from_secs(30),
        )))
    }

    /// RTCP on port + 1 is handed over and counted while RTP is received;
    /// RTCP from another address than the peer's is counted as foreign.
    #[tokio::test]
    async fn rtcp_from_the_peer_is_counted_and_rtp_still_arrives() {
        let pool = pool();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut s = RtpSocket::bind(&pool, ip).unwrap();
        let pbx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.set_remote(Some(pbx.local_addr().unwrap()));
        let rtcp_port = s.port() + 1;
        for _ in 0..3 {
            pbx.send_to(&[0x80, 200, 0, 6], ("127.0.0.1", rtcp_port))
                .await
                .unwrap();
        }
        let other = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
        other
            .send_to(&[0x80, 200, 0, 6], ("127.0.0.1", rtcp_port))
            .await
            .unwrap();
        // Let the RTCP arrive first, then RTP.
        tokio::time::sleep(Duration::from_millis(50)).await;
        pbx.send_to(b"rtp-1", ("127.0.0.1", s.port()))
            .await
            .unwrap();
        let mut rtcp = 0;
        let slot = loop {
            match tokio::time::timeout(Duration::from_secs(5), s.recv())
                .await
                .unwrap()
                .unwrap()
            {
                Received::Rtcp(len) => {
                    assert_eq!(s.rtcp_datagram(len), &[0x80, 200, 0, 6]);
                    rtcp += 1;
                }
                Received::Rtp(slot, _) => break slot,
            }
        };
        assert_eq!(s.datagram(slot), b"rtp-1");
        assert_eq!((rtcp, s.rtcp_rx), (3, 3));
        assert_eq!(s.foreign, 1);
    }

    #[tokio::test]
    async fn symmetric_rtp_latches_to_the_real_source() {
        let pool = pool();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let mut s = RtpSocket::bind(&pool, ip).unwrap();
        assert_eq!(s.port() % 2, 0);
        // The PBX signals one port but sends from another (a NAT in between).
        let pbx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let signalled: SocketAddr = "127.0.0.1:9".parse().unwrap();
        s.set_remote(Some(signalled));
        assert_eq!(s.remote(), Some(signalled));
        pbx.send_to(b"rtp-1", ("127.0.0.1", s.port()))
            .await
            .unwrap();
        let Received::Rtp(slot, from) = tokio::time::timeout(Duration::from_secs(5), s.recv())
            .await
            .unwrap()
            .unwrap()
        else {
            panic!("RTP expected");
        };
        assert_eq!(s.datagram(slot), b"rtp-1");
        s.latch(from);
        assert_eq!(s.remote(), Some(pbx.local_addr().unwrap()));
        s.send(b"back");
        let mut buf = [0u8; 100];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), pbx.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], b"back");
        // Hold with c=0.0.0.0: nothing is sent.
        s.set_remote(Some("0.0.0.0:4000".parse().unwrap()));
        assert_eq!(s.remote(), None);
        // The pair comes back to the pool (into quarantine) when dropped.
        let port = s.port();
        drop(s);
        let mut p = pool.lock().unwrap();
        assert_eq!(p.in_use(), 0);
        assert!(p.allocate(std::time::Instant::now()).unwrap() != port);
    }
}
