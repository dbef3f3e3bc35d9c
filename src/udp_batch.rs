//! Receiving from a per-call UDP socket without the empty read per packet.
//!
//! A tokio socket learns that its queue is empty only from a read that fails
//! with `EWOULDBLOCK`, so one datagram every 20 ms costs two `recvfrom`
//! calls. [`RecvBatch`] asks `recvmmsg(2)` for two datagrams at once: when
//! fewer come back the queue was empty at that moment, and the socket's
//! readiness is cleared without the extra call. (Tokio clears it only if no
//! new readiness event arrived meanwhile, so a datagram that lands just after
//! the read still wakes the task.) Datagrams read together wait in the batch
//! for the next call, so nothing is lost when a `select!` drops the future.
//!
//! Why not share one socket across calls and batch for real: Meta's media
//! servers answer from a handful of ports (3480–3484 in captured offers), so
//! two calls may share a remote address and SRTP carries no ICE credentials
//! to tell them apart; a PBX behind NAT is told apart only by the port it
//! was given. One local port per call per leg is what keeps calls apart.

use std::cell::RefCell;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Largest datagram kept (SRTP, DTLS, STUN and RTP stay under the MTU);
/// longer ones are dropped as truncated.
pub(crate) const MAX_DATAGRAM: usize = 2048;
/// Datagrams asked for per read: two tell "one arrived" from "more wait".
const BATCH: usize = 2;

/// A datagram's slot in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot(usize);

pub(crate) struct RecvBatch {
    /// The datagrams of the last read, back to back: sized by what arrives
    /// (a few hundred bytes of audio), not by [`MAX_DATAGRAM`] per slot.
    held: Vec<u8>,
    /// Where each kept datagram ends in `held`.
    ends: [usize; BATCH],
    from: [SocketAddr; BATCH],
    count: usize,
    next: usize,
    /// Datagrams longer than [`MAX_DATAGRAM`] (or from no IP address), dropped.
    pub dropped: u64,
}

/// `held` is given back to the allocator when it grew past this (DTLS
/// flights at set-up) and the audio that follows would fit in far less.
const HELD_SHRINK_ABOVE: usize = 1024;
const HELD_KEEP: usize = 512;

thread_local! {
    /// Where the kernel writes: one set of full-size buffers per thread, not
    /// per socket (two sockets per call at 4 KiB each were 8 KiB of every
    /// call). Borrowed only inside [`RecvBatch::read`], which never yields,
    /// and what came is copied out to the socket's own `held`.
    static SCRATCH: RefCell<Box<[[u8; MAX_DATAGRAM]; BATCH]>> =
        RefCell::new(Box::new([[0; MAX_DATAGRAM]; BATCH]));
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            held: Vec::new(),
            ends: [0; BATCH],
            from: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
            count: 0,
            next: 0,
            dropped: 0,
        }
    }
}

impl RecvBatch {
    /// The next datagram: one already read, or the next from `socket`.
    /// Cancel-safe.
    pub(crate) async fn recv(&mut self, socket: &UdpSocket) -> io::Result<Slot> {
        loop {
            if self.next < self.count {
                let slot = Slot(self.next);
                self.next += 1;
                return Ok(slot);
            }
            socket.readable().await?;
            let mut got = 0;
            let res = socket.try_io(Interest::READABLE, || {
                got = self.read(socket)?;
                if got < BATCH {
                    // The queue is empty: let tokio clear the readiness now.
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(())
            });
            match res {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The datagram in `slot` and its source.
    pub(crate) fn get(&self, slot: Slot) -> (&[u8], SocketAddr) {
        let start = match slot.0 {
            0 => 0,
            i => self.ends[i - 1],
        };
        (&self.held[start..self.ends[slot.0]], self.from[slot.0])
    }

    /// One `recvmmsg` without blocking; keeps what came (truncated datagrams
    /// dropped) and returns how many the kernel handed over.
    fn read(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        SCRATCH.with(|scratch| {
            // Never fails: nothing else borrows it on this thread meanwhile.
            let Ok(mut bufs) = scratch.try_borrow_mut() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            self.read_into(socket, &mut bufs)
        })
    }

    fn read_into(
        &mut self,
        socket: &UdpSocket,
        bufs: &mut [[u8; MAX_DATAGRAM]; BATCH],
    ) -> io::Result<usize> {
        // SAFETY: every pointer handed to the kernel points into `names`,
        // `iovs` or `bufs`, which outlive the call; lengths are theirs.
        let mut names: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            };
            hdrs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` holds BATCH initialised headers (see above).
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        self.count = 0;
        self.next = 0;
        self.held.clear();
        for i in 0..n {
            let h = &hdrs[i];
            let from = sockaddr_of(&names[i]);
            match from {
                Some(from) if h.msg_hdr.msg_flags & libc::MSG_TRUNC == 0 => {
                    let k = self.count;
                    self.held.extend_from_slice(&bufs[i][..h.msg_len as usize]);
                    self.ends[k] = self.held.len();
                    self.from[k] = from;
                    self.count += 1;
                }
                _ => self.dropped += 1,
            }
        }
        if self.held.capacity() > HELD_SHRINK_ABOVE && self.held.len() <= HELD_KEEP {
            self.held.shrink_to(HELD_KEEP);
        }
        Ok(n)
    }
}

fn sockaddr_of(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET; storage is
            // large and aligned enough for it.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for AF_INET6 and sockaddr_in6.
            let a = unsafe { &*(s as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn pair(ip: &str) -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind((ip, 0)).await.unwrap();
        let b = UdpSocket::bind((ip, 0)).await.unwrap();
        (a, b)
    }

    async fn next(batch: &mut RecvBatch, s: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let slot = tokio::time::timeout(Duration::from_secs(5), batch.recv(s))
            .await
            .expect("datagram")
            .unwrap();
        let (d, from) = batch.get(slot);
        (d.to_vec(), from)
    }

    #[tokio::test]
    async fn datagrams_arrive_in_order_with_their_source_v4_and_v6() {
        for ip in ["127.0.0.1", "::1"] {
            let Ok(_) = std::net::UdpSocket::bind((ip, 0)) else {
                continue; // no IPv6 on this machine
            };
            let (rx, tx) = pair(ip).await;
            let mut batch = RecvBatch::default();
            // Five queued at once (read two at a time), then one more later.
            for i in 0..5u8 {
                tx.send_to(&[i; 3], rx.local_addr().unwrap()).await.unwrap();
            }
            for i in 0..5u8 {
                let (d, from) = next(&mut batch, &rx).await;
                assert_eq!(d, vec![i; 3]);
                assert_eq!(from, tx.local_addr().unwrap());
            }
            // The queue is empty now; a later datagram still wakes the reader.
            let late = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                tx.send_to(b"late", rx.local_addr().unwrap()).await.unwrap();
            };
            let (got, _) = tokio::join!(next(&mut batch, &rx), late);
            assert_eq!(got.0, b"late");
        }
    }

    #[tokio::test]
    async fn an_oversized_datagram_is_dropped_and_counted() {
        let (rx, tx) = pair("127.0.0.1").await;
        let mut batch = RecvBatch::default();
        tx.send_to(&vec![7u8; MAX_DATAGRAM + 1], rx.local_addr().unwrap())
            .await
            .unwrap();
        tx.send_to(b"ok", rx.local_addr().unwrap()).await.unwrap();
        let (d, _) = next(&mut batch, &rx).await;
        assert_eq!(d, b"ok");
        assert_eq!(batch.dropped, 1);
    }

    #[tokio::test]
    async fn a_read_cancelled_while_waiting_loses_nothing() {
        let (rx, tx) = pair("127.0.0.1").await;
        let mut batch = RecvBatch::default();
        // Nothing queued: the read waits, and is dropped (as a select! does).
        let waited = tokio::time::timeout(Duration::from_millis(20), batch.recv(&rx)).await;
        assert!(waited.is_err());
        for i in 0..3u8 {
            tx.send_to(&[i], rx.local_addr().unwrap()).await.unwrap();
        }
        for i in 0..3u8 {
            assert_eq!(next(&mut batch, &rx).await.0, vec![i]);
        }
    }

    #[tokio::test]
    async fn a_datagram_read_ahead_survives_another_sockets_read() {
        let (rx, tx) = pair("127.0.0.1").await;
        let (other, _) = pair("127.0.0.1").await;
        let (mut batch, mut other_batch) = (RecvBatch::default(), RecvBatch::default());
        tx.send_to(b"first", rx.local_addr().unwrap())
            .await
            .unwrap();
        tx.send_to(b"second", rx.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(next(&mut batch, &rx).await.0, b"first");
        assert_eq!(batch.count, 2, "both were read at once");
        // Another socket's read on this thread reuses the kernel's buffers.
        tx.send_to(b"XXXXXXXXXXXX", other.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(next(&mut other_batch, &other).await.0, b"XXXXXXXXXXXX");
        assert_eq!(next(&mut batch, &rx).await.0, b"second");
    }

    #[tokio::test]
    async fn a_large_flight_is_not_kept_once_small_datagrams_follow() {
        let (rx, tx) = pair("127.0.0.1").await;
        let mut batch = RecvBatch::default();
        tx.send_to(&[1u8; 1400], rx.local_addr().unwrap())
            .await
            .unwrap();
        tx.send_to(&[2u8; 1400], rx.local_addr().unwrap())
            .await
            .unwrap();
        next(&mut batch, &rx).await;
        next(&mut batch, &rx).await;
        assert!(batch.held.capacity() >= 2800);
        tx.send_to(&[3u8; 160], rx.local_addr().unwrap())
            .await
            .unwrap();
        assert_eq!(next(&mut batch, &rx).await.0, vec![3u8; 160]);
        assert!(
            batch.held.capacity() <= HELD_SHRINK_ABOVE,
            "{}",
            batch.held.capacity()
        );
    }
}
