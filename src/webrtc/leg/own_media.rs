//! RTP and RTCP with WhatsApp once DTLS is up, without str0m.
//!
//! str0m keeps what it is good at on this leg — ICE (the controlling agent,
//! consent) and the DTLS handshake — and the leg protects and checks SRTP
//! and SRTCP itself with the keys our DTLS provider exported (RFC 5764
//! §4.2), through the same libsrtp2 the PBX leg's SDES uses. Why: str0m's
//! per-packet bookkeeping for a stream (send queue, NACK register and
//! retransmission cache, per-packet `Vec`s, an already-due timeout to move
//! each packet to the wire) was ~30 % of the bridge's CPU in the loadgen's
//! profile and ~20 KiB of every call's memory, none of which an audio relay
//! without NACK uses. What it did beyond SRTP is done here: sender and
//! receiver reports (RFC 3550 §6.4, with WhatsApp's round trip and its loss
//! of our stream read from its reports), audio from any SSRC that
//! authenticates (libsrtp2's any-inbound policy; WhatsApp's SDP need not
//! announce it).
//!
//! Per packet nothing is allocated: datagrams and payloads are `Vec`s that
//! go back into a small pool ([`OwnMedia::recycle`]) once sent or relayed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::rtcp::{Reception, RtcpSession, RtcpStats, SenderInfo, MAX_REPORT};
use crate::media::rtp::{write_header, RtpView, HEADER_LEN};
use crate::media::srtp::{SrtpError, SrtpSession, MAX_TRAILER};
use crate::media::stats::ReceiveTracker;
use crate::webrtc::dtls::SrtpKeys;

/// Buffers kept for reuse: enough for the packets in flight at once (a held
/// batch, a DTMF end's repeats). Each is made with room for an audio
/// packet, its SRTP trailer and libsrtp2's working room, or an RTCP report;
/// ones much larger (a DTLS flight's) are not kept.
const SPARE_MAX: usize = 6;
const SPARE_CAPACITY: usize = 512;
/// Opus at 48 kHz.
const CLOCK: u64 = 48_000;

/// One RTP packet from WhatsApp, checked and decrypted.
#[derive(Debug)]
pub(super) struct RtpIn {
    pub(super) ssrc: u32,
    pub(super) seq: u16,
    pub(super) timestamp: u32,
    pub(super) marker: bool,
    pub(super) pt: u8,
    /// The payload alone (hand it back with [`OwnMedia::recycle`]).
    pub(super) payload: Vec<u8>,
}

/// One datagram from WhatsApp, checked and decrypted.
#[derive(Debug)]
pub(super) enum Incoming {
    Rtp(RtpIn),
    /// An SRTCP compound packet, taken into the report figures.
    Rtcp,
}

/// Why a datagram from WhatsApp was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dropped {
    /// Failed authentication or replay, or not RTP/RTCP after decryption.
    Invalid,
}

pub(super) struct OwnMedia {
    tx: SrtpSession,
    rx: SrtpSession,
    /// Where media goes: the ICE pair str0m nominated.
    pub(super) to: SocketAddr,
    ssrc: u32,
    rtcp: RtcpSession,
    /// WhatsApp's stream, for our report block: its SSRC and figures.
    rx_ssrc: Option<u32>,
    rx_track: ReceiveTracker,
    /// Our stream for the SR: packets, payload octets, the last timestamp
    /// and when it was sent.
    packets: u32,
    octets: u32,
    last_ts: Option<(Instant, u32)>,
    /// The wall clock (NTP format) at an instant, for SR and round trips.
    ntp_base: (Instant, u64),
    out: VecDeque<Vec<u8>>,
    spare: Vec<Vec<u8>>,
}

impl std::fmt::Debug for OwnMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnMedia")
            .field("to", &self.to)
            .field("ssrc", &self.ssrc)
            .finish_non_exhaustive()
    }
}

impl OwnMedia {
    /// `ntp_base`: the wall clock in NTP format at the instant given with
    /// it; `seed` spreads the report intervals.
    pub(super) fn new(
        keys: &SrtpKeys,
        to: SocketAddr,
        ssrc: u32,
        now: Instant,
        ntp_base: (Instant, u64),
        seed: u64,
    ) -> Result<OwnMedia, SrtpError> {
        Ok(OwnMedia {
            tx: SrtpSession::new(keys.suite, &keys.ours, true)?,
            rx: SrtpSession::new(keys.suite, &keys.theirs, false)?,
            to,
            ssrc,
            rtcp: RtcpSession::new(ssrc, now, seed),
            rx_ssrc: None,
            rx_track: ReceiveTracker::new(CLOCK as u32),
            packets: 0,
            octets: 0,
            last_ts: None,
            ntp_base,
            out: VecDeque::new(),
            spare: Vec::new(),
        })
    }

    fn ntp(&self, now: Instant) -> u64 {
        let (at, ntp) = self.ntp_base;
        let since = now.saturating_duration_since(at);
        // NTP: seconds in the high 32 bits, the fraction in the low.
        let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        ntp.wrapping_add(since.as_secs() << 32).wrapping_add(frac)
    }

    fn buffer(&mut self) -> Vec<u8> {
        let mut b = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(SPARE_CAPACITY));
        b.clear();
        b
    }

    /// Takes back a buffer this leg handed out (a sent datagram, a relayed
    /// payload), for the next packet.
    pub(super) fn recycle(&mut self, buf: Vec<u8>) {
        let fits = (SPARE_CAPACITY..=2 * SPARE_CAPACITY).contains(&buf.capacity());
        if self.spare.len() < SPARE_MAX && fits {
            self.spare.push(buf);
        }
    }

    /// Protects one RTP packet and queues it for [`OwnMedia::poll_transmit`].
    pub(super) fn send_rtp(
        &mut self,
        now: Instant,
        pt: u8,
        marker: bool,
        seq: u16,
        ts: u32,
        payload: &[u8],
    ) -> Result<(), SrtpError> {
        let mut buf = self.buffer();
        let len = HEADER_LEN + payload.len();
        buf.resize(len + MAX_TRAILER, 0);
        write_header(&mut buf, pt, marker, seq, ts, self.ssrc);
        buf[HEADER_LEN..len].copy_from_slice(payload);
        match self.tx.protect(&mut buf, len) {
            Ok(n) => {
                buf.truncate(n);
                self.out.push_back(buf);
                self.packets = self.packets.wrapping_add(1);
                self.octets = self.octets.wrapping_add(payload.len() as u32);
                self.last_ts = Some((now, ts));
                Ok(())
            }
            Err(e) => {
                self.recycle(buf);
                Err(e)
            }
        }
    }

    /// The next protected datagram for [`OwnMedia::to`].
    pub(super) fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    /// Checks and decrypts one datagram that looks like RTP or RTCP (RFC
    /// 7983: first byte 128..=191).
    pub(super) fn receive(&mut self, now: Instant, data: &[u8]) -> Result<Incoming, Dropped> {
        let mut buf = self.buffer();
        buf.extend_from_slice(data);
        // RFC 5761 §4: RTCP packet types where RTP has marker and payload type.
        let rtcp = data.get(1).is_some_and(|b| (192..=223).contains(b));
        if rtcp {
            let r = self.rx.unprotect_rtcp(&mut buf);
            let result = match r {
                Ok(n) => {
                    let ntp = self.ntp(now);
                    match self.rtcp.on_packet(now, ntp, &buf[..n]) {
                        Ok(()) => Ok(Incoming::Rtcp),
                        Err(_) => Err(Dropped::Invalid),
                    }
                }
                Err(_) => Err(Dropped::Invalid),
            };
            self.recycle(buf);
            return result;
        }
        let Ok(n) = self.rx.unprotect(&mut buf) else {
            self.recycle(buf);
            return Err(Dropped::Invalid);
        };
        let (ssrc, seq, timestamp, marker, pt, start, end) = match RtpView::parse(&buf[..n]) {
            Ok(v) => {
                let start = v.payload().as_ptr() as usize - buf.as_ptr() as usize;
                (
                    v.ssrc(),
                    v.sequence(),
                    v.timestamp(),
                    v.marker(),
                    v.payload_type(),
                    start,
                    start + v.payload().len(),
                )
            }
            Err(_) => {
                self.recycle(buf);
                return Err(Dropped::Invalid);
            }
        };
        if self.rx_ssrc != Some(ssrc) {
            self.rx_ssrc = Some(ssrc);
            self.rx_track.reset();
        }
        self.rx_track.on_packet(now, seq, timestamp);
        buf.copy_within(start..end, 0);
        buf.truncate(end - start);
        Ok(Incoming::Rtp(RtpIn {
            ssrc,
            seq,
            timestamp,
            marker,
            pt,
            payload: buf,
        }))
    }

    /// When our next report is due.
    pub(super) fn next_timeout(&self) -> Instant {
        self.rtcp.next_timeout()
    }

    /// Sends our report when it is due: an SR once we have sent (we always
    /// have, silence included, once connected) with a block about
    /// WhatsApp's stream once it has been heard, and SDES.
    pub(super) fn handle_timeout(&mut self, now: Instant) {
        if now < self.rtcp.next_timeout() {
            return;
        }
        let ntp = self.ntp(now);
        let sender = self.last_ts.map(|(at, ts)| {
            let since = now.saturating_duration_since(at);
            let elapsed = (since.as_micros() as u64 * CLOCK / 1_000_000) as u32;
            SenderInfo {
                ntp,
                rtp_ts: ts.wrapping_add(elapsed),
                packets: self.packets,
                octets: self.octets,
            }
        });
        let reception = match (self.rx_ssrc, self.rx_track.report()) {
            (Some(ssrc), Some(f)) => Some(Reception {
                ssrc,
                fraction_lost: f.fraction_lost,
                cumulative_lost: f.cumulative_lost,
                highest_seq: f.highest_seq,
                jitter: f.jitter,
            }),
            _ => None,
        };
        let mut buf = self.buffer();
        buf.resize(MAX_REPORT + MAX_TRAILER, 0);
        let protected = self
            .rtcp
            .poll_report(now, sender, reception, &mut buf)
            .and_then(|n| self.tx.protect_rtcp(&mut buf, n).ok());
        match protected {
            Some(n) => {
                buf.truncate(n);
                self.out.push_back(buf);
            }
            None => self.recycle(buf),
        }
    }

    /// What WhatsApp's reports said about our stream, and the round trip.
    pub(super) fn rtcp_stats(&self) -> RtcpStats {
        self.rtcp.stats
    }

    /// The round trip from WhatsApp's last report that echoed our SR.
    pub(super) fn rtt(&self) -> Option<Duration> {
        self.rtcp.stats.rtt
    }
}
