//! RTCP with the PBX (RFC 3550 §6), sans-IO: our compound reports (SR when
//! we sent audio since the last one, else RR; one report block about the
//! PBX's stream; SDES CNAME, §6.1), and what the PBX's reports tell us
//! (its view of our stream: loss and jitter; the round trip from LSR/DLSR,
//! §6.4.1). Time comes in: a monotonic `Instant` for scheduling and the
//! wall clock as a 64-bit NTP timestamp for the reports.
//!
//! Written here rather than taken from a crate: str0m's RTCP types can be
//! read but not written outside str0m, and webrtc-rs' `rtcp` allocates per
//! packet; SR, RR and SDES are a few fixed layouts.

use std::time::{Duration, Instant};

const PT_SR: u8 = 200;
const PT_RR: u8 = 201;
const PT_SDES: u8 = 202;
const SDES_CNAME: u8 = 1;
/// Room a report needs: SR (28) + one block (24) + SDES with a CNAME of up
/// to 32 bytes (44).
pub const MAX_REPORT: usize = 28 + 24 + 44;
/// RFC 3550 §6.2: the minimum interval, 5 s; each one drawn from
/// [0.5, 1.5] times it (§6.3.1) so that reports do not synchronise.
const INTERVAL: Duration = Duration::from_secs(5);

/// What an SR says about its sender's stream (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    /// The source reported on.
    pub ssrc: u32,
    pub fraction_lost: u8,
    /// 24-bit signed in the packet.
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
    /// The middle 32 bits of the NTP time of the last SR from that source.
    pub lsr: u32,
    /// Since that SR, in 1/65536 s.
    pub dlsr: u32,
}

/// What we know of the PBX's stream for our report block (from
/// [`super::stats::ReceiveTracker::report`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reception {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    pub jitter: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RtcpError {
    #[error("not RTCP version 2")]
    Version,
    #[error("a length past the end of the packet")]
    Length,
    #[error("a compound packet must start with SR or RR")]
    NotReport,
}

/// Per-call figures from RTCP, for the call record and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RtcpStats {
    pub sent: u64,
    pub received: u64,
    /// Round trip to the PBX (RFC 3550 §6.4.1: A − LSR − DLSR), the last one.
    pub rtt: Option<Duration>,
    /// The PBX's view of our stream, from its last report block about it.
    pub peer_fraction_lost: Option<u8>,
    pub peer_cumulative_lost: Option<i32>,
    /// In timestamp units of our stream.
    pub peer_jitter: Option<u32>,
}

/// One call's RTCP session with the PBX.
#[derive(Debug)]
pub struct RtcpSession {
    ssrc: u32,
    cname: [u8; 16],
    next_at: Instant,
    rng: u64,
    /// The PBX's last SR: LSR (middle NTP bits) and when it arrived.
    peer_sr: Option<(u32, Instant)>,
    pub stats: RtcpStats,
}

fn put_u16(b: &mut [u8], v: u16) {
    b[..2].copy_from_slice(&v.to_be_bytes());
}

fn put_u32(b: &mut [u8], v: u32) {
    b[..4].copy_from_slice(&v.to_be_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The middle 32 bits of an NTP timestamp (LSR's unit: 1/65536 s).
pub fn ntp_middle(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// The wall clock as an NTP timestamp (seconds since 1900, 32.32 fixed).
pub fn ntp_now(wall: std::time::SystemTime) -> u64 {
    const EPOCH_DELTA: u64 = 2_208_988_800;
    let d = wall
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + EPOCH_DELTA;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

fn write_block(b: &mut [u8], r: &ReportBlock) {
    put_u32(&mut b[0..], r.ssrc);
    let lost = (r.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32) & 0x00ff_ffff;
    put_u32(&mut b[4..], (u32::from(r.fraction_lost) << 24) | lost);
    put_u32(&mut b[8..], r.highest_seq);
    put_u32(&mut b[12..], r.jitter);
    put_u32(&mut b[16..], r.lsr);
    put_u32(&mut b[20..], r.dlsr);
}

fn read_block(b: &[u8]) -> ReportBlock {
    let word = u32_at(b, 4);
    // Sign-extend the 24-bit cumulative loss.
    let cumulative_lost = ((word << 8) as i32) >> 8;
    ReportBlock {
        ssrc: u32_at(b, 0),
        fraction_lost: (word >> 24) as u8,
        cumulative_lost,
        highest_seq: u32_at(b, 8),
        jitter: u32_at(b, 12),
        lsr: u32_at(b, 16),
        dlsr: u32_at(b, 20),
    }
}

/// Writes one compound packet into `buf` (at least [`MAX_REPORT`] bytes):
/// an SR when `sender` is given, else an RR; `block` as its report block;
/// then SDES with our CNAME. Returns its length.
pub fn write_compound(
    buf: &mut [u8],
    ssrc: u32,
    sender: Option<&SenderInfo>,
    block: Option<&ReportBlock>,
    cname: &[u8],
) -> usize {
    let count = u8::from(block.is_some());
    let mut n = 0;
    let words = |bytes: usize| (bytes / 4 - 1) as u16;
    match sender {
        Some(s) => {
            let len = 28 + 24 * usize::from(count);
            buf[0] = 0x80 | count;
            buf[1] = PT_SR;
            put_u16(&mut buf[2..], words(len));
            put_u32(&mut buf[4..], ssrc);
            put_u32(&mut buf[8..], (s.ntp >> 32) as u32);
            put_u32(&mut buf[12..], s.ntp as u32);
            put_u32(&mut buf[16..], s.rtp_ts);
            put_u32(&mut buf[20..], s.packets);
            put_u32(&mut buf[24..], s.octets);
            n += 28;
        }
        None => {
            let len = 8 + 24 * usize::from(count);
            buf[0] = 0x80 | count;
            buf[1] = PT_RR;
            put_u16(&mut buf[2..], words(len));
            put_u32(&mut buf[4..], ssrc);
            n += 8;
        }
    }
    if let Some(b) = block {
        write_block(&mut buf[n..], b);
        n += 24;
    }
    // SDES: one chunk, CNAME, then a null item and padding to 32 bits.
    let cname = &cname[..cname.len().min(32)];
    let items = 2 + cname.len() + 1;
    let chunk = 4 + items.div_ceil(4) * 4;
    let len = 4 + chunk;
    let s = &mut buf[n..n + len];
    s.fill(0);
    s[0] = 0x81;
    s[1] = PT_SDES;
    put_u16(&mut s[2..], words(len));
    put_u32(&mut s[4..], ssrc);
    s[8] = SDES_CNAME;
    s[9] = cname.len() as u8;
    s[10..10 + cname.len()].copy_from_slice(cname);
    n + len
}

/// What a compound packet holds that we use, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// An SR's sender information.
    Sender { ssrc: u32, info: SenderInfo },
    /// A report block from `reporter`'s SR or RR.
    Block { reporter: u32, block: ReportBlock },
}

/// Reads a compound packet (RFC 3550 §6.1), handing each SR's sender
/// information and each report block to `on`; other packet types (SDES,
/// BYE, APP, feedback) are stepped over. Nothing is allocated.
pub fn read_compound(data: &[u8], mut on: impl FnMut(Item)) -> Result<(), RtcpError> {
    let mut rest = data;
    let mut first = true;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RtcpError::Length);
        }
        if rest[0] >> 6 != 2 {
            return Err(RtcpError::Version);
        }
        let count = usize::from(rest[0] & 0x1f);
        let pt = rest[1];
        let len = (usize::from(u16::from_be_bytes([rest[2], rest[3]])) + 1) * 4;
        if len > rest.len() {
            return Err(RtcpError::Length);
        }
        let p = &rest[..len];
        if first && pt != PT_SR && pt != PT_RR {
            return Err(RtcpError::NotReport);
        }
        first = false;
        let blocks_at = match pt {
            PT_SR if len >= 28 => {
                let ssrc = u32_at(p, 4);
                let ntp = (u64::from(u32_at(p, 8)) << 32) | u64::from(u32_at(p, 12));
                on(Item::Sender {
                    ssrc,
                    info: SenderInfo {
                        ntp,
                        rtp_ts: u32_at(p, 16),
                        packets: u32_at(p, 20),
                        octets: u32_at(p, 24),
                    },
                });
                Some(28)
            }
            PT_RR if len >= 8 => Some(8),
            PT_SR | PT_RR => return Err(RtcpError::Length),
            _ => None,
        };
        if let Some(at) = blocks_at {
            let reporter = u32_at(p, 4);
            if at + 24 * count > len {
                return Err(RtcpError::Length);
            }
            for i in 0..count {
                on(Item::Block {
                    reporter,
                    block: read_block(&p[at + 24 * i..]),
                });
            }
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// An opaque CNAME per call (RFC 7022 allows a random one): the SSRC and
/// seed in hex, "wsb-" first; 16 characters. The WhatsApp leg's SDP
/// declares the same one its RTCP reports carry.
pub fn cname_for(ssrc: u32, seed: u64) -> String {
    format!("wsb-{:08x}{:04x}", ssrc, seed as u16)
}

impl RtcpSession {
    /// `seed` draws the report intervals (RFC 3550 §6.3.1's randomisation);
    /// the first report goes out half an interval after `now`.
    pub fn new(ssrc: u32, now: Instant, seed: u64) -> RtcpSession {
        let mut cname = [0u8; 16];
        let text = cname_for(ssrc, seed);
        cname[..text.len().min(16)].copy_from_slice(&text.as_bytes()[..text.len().min(16)]);
        RtcpSession {
            ssrc,
            cname,
            next_at: now + INTERVAL / 2,
            rng: seed | 1,
            peer_sr: None,
            stats: RtcpStats::default(),
        }
    }

    /// Our SSRC from now on (the relay draws a new one with a new codec).
    pub fn set_ssrc(&mut self, ssrc: u32) {
        self.ssrc = ssrc;
    }

    /// When the next report is due.
    pub fn next_timeout(&self) -> Instant {
        self.next_at
    }

    fn draw_interval(&mut self) -> Duration {
        // xorshift64: the spread needs no cryptographic randomness.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        INTERVAL / 2 + INTERVAL.mul_f64((self.rng % 1000) as f64 / 1000.0)
    }

    /// The report due at `now`, written into `buf` (at least
    /// [`MAX_REPORT`] bytes): `sender` when we sent audio since the last
    /// report, `reception` when the PBX's stream has been heard.
    pub fn poll_report(
        &mut self,
        now: Instant,
        sender: Option<SenderInfo>,
        reception: Option<Reception>,
        buf: &mut [u8],
    ) -> Option<usize> {
        if now < self.next_at {
            return None;
        }
        self.next_at = now + self.draw_interval();
        let block = reception.map(|r| {
            let (lsr, dlsr) = match self.peer_sr {
                Some((lsr, at)) if r.ssrc != 0 => {
                    let since = now.saturating_duration_since(at);
                    (lsr, (since.as_secs_f64() * 65536.0) as u32)
                }
                _ => (0, 0),
            };
            ReportBlock {
                ssrc: r.ssrc,
                fraction_lost: r.fraction_lost,
                cumulative_lost: r.cumulative_lost,
                highest_seq: r.highest_seq,
                jitter: r.jitter,
                lsr,
                dlsr,
            }
        });
        let cname_len = self.cname.iter().position(|b| *b == 0).unwrap_or(16);
        let n = write_compound(
            buf,
            self.ssrc,
            sender.as_ref(),
            block.as_ref(),
            &self.cname[..cname_len],
        );
        self.stats.sent += 1;
        Some(n)
    }

    /// A compound packet from the PBX, arrived at `now` (`ntp`: the wall
    /// clock then). Its SR is remembered for our next LSR/DLSR; a block
    /// about our stream updates the PBX's view and, when it echoes an SR of
    /// ours, the round trip.
    pub fn on_packet(&mut self, now: Instant, ntp: u64, data: &[u8]) -> Result<(), RtcpError> {
        let ssrc = self.ssrc;
        let mut sr = None;
        let mut ours = None;
        read_compound(data, |item| match item {
            Item::Sender { info, .. } => sr = Some(ntp_middle(info.ntp)),
            Item::Block { block, .. } if block.ssrc == ssrc => ours = Some(block),
            Item::Block { .. } => {}
        })?;
        self.stats.received += 1;
        if let Some(lsr) = sr {
            self.peer_sr = Some((lsr, now));
        }
        if let Some(b) = ours {
            self.stats.peer_fraction_lost = Some(b.fraction_lost);
            self.stats.peer_cumulative_lost = Some(b.cumulative_lost);
            self.stats.peer_jitter = Some(b.jitter);
            if b.lsr != 0 {
                // RFC 3550 §6.4.1: RTT = A − LSR − DLSR, in 1/65536 s.
                let rtt = ntp_middle(ntp).wrapping_sub(b.lsr).wrapping_sub(b.dlsr);
                // A negative result (clocks, or a forged block) is no RTT.
                if rtt < 0x8000_0000 {
                    self.stats.rtt = Some(Duration::from_secs_f64(f64::from(rtt) / 65536.0));
                }
            }
        }
        Ok(())
    }
}

// `unwrap` in these tests is the assertion.
#[cfg(test)]
mod tests {
    use super::*;

    fn items(data: &[u8]) -> Vec<Item> {
        let mut v = Vec::new();
        read_compound(data, |i| v.push(i)).unwrap();
        v
    }

    /// An SR with a block and SDES reads back as written; the lengths are
    /// 32-bit words minus one, the SDES chunk null-terminated and padded.
    #[test]
    fn reports_read_back_as_written() {
        let info = SenderInfo {
            ntp: 0x1234_5678_9abc_def0,
            rtp_ts: 160_000,
            packets: 1000,
            octets: 160_000,
        };
        let block = ReportBlock {
            ssrc: 0xfeed,
            fraction_lost: 25,
            cumulative_lost: -3,
            highest_seq: 0x0001_0005,
            jitter: 40,
            lsr: 0xabcd_0001,
            dlsr: 65536,
        };
        let mut buf = [0u8; MAX_REPORT];
        let n = write_compound(&mut buf, 7, Some(&info), Some(&block), b"wsb-test");
        assert_eq!(n % 4, 0);
        assert_eq!(&buf[..4], &[0x81, 200, 0, 12], "SR header: 13 words");
        assert_eq!(
            items(&buf[..n]),
            vec![
                Item::Sender { ssrc: 7, info },
                Item::Block { reporter: 7, block }
            ]
        );
        // SDES: header, SSRC, CNAME item "wsb-test", null, padded to 20 bytes.
        assert_eq!(&buf[52..56], &[0x81, 202, 0, 4]);
        assert_eq!(&buf[60..70], b"\x01\x08wsb-test");
        let n = write_compound(&mut buf, 7, None, None, b"x");
        assert_eq!(&buf[..8], &[0x80, 201, 0, 1, 0, 0, 0, 7], "an empty RR");
        assert_eq!(items(&buf[..n]), vec![]);
    }

    #[test]
    fn malformed_compounds_are_errors() {
        assert_eq!(
            read_compound(&[0x80, 201, 0], |_| {}),
            Err(RtcpError::Length)
        );
        assert_eq!(
            read_compound(&[0x40, 201, 0, 1, 0, 0, 0, 0], |_| {}),
            Err(RtcpError::Version)
        );
        assert_eq!(
            read_compound(&[0x80, 201, 0, 9, 0, 0, 0, 0], |_| {}),
            Err(RtcpError::Length)
        );
        // An RR claiming a block it does not carry.
        assert_eq!(
            read_compound(&[0x81, 201, 0, 1, 0, 0, 0, 0], |_| {}),
            Err(RtcpError::Length)
        );
        assert_eq!(
            read_compound(&[0x81, 202, 0, 1, 0, 0, 0, 0], |_| {}),
            Err(RtcpError::NotReport)
        );
    }

    /// The PBX echoes our SR's middle bits as LSR with 250 ms of DLSR; its
    /// RR arrives 300 ms after our SR left: 50 ms round trip. Its SR is
    /// echoed in our next block with the delay since it arrived.
    #[test]
    fn round_trip_and_lsr_dlsr() {
        let t0 = Instant::now();
        let mut s = RtcpSession::new(7, t0, 42);
        assert_eq!(s.next_timeout(), t0 + Duration::from_millis(2500));
        let mut buf = [0u8; MAX_REPORT];
        assert!(
            s.poll_report(t0, None, None, &mut buf).is_none(),
            "not due yet"
        );
        let sent_ntp = 0x0000_1000_0000_0000u64;
        let t1 = t0 + Duration::from_millis(2500);
        let info = SenderInfo {
            ntp: sent_ntp,
            rtp_ts: 0,
            packets: 1,
            octets: 160,
        };
        assert!(s.poll_report(t1, Some(info), None, &mut buf).is_some());
        let next = s.next_timeout() - t1;
        assert!(
            next >= Duration::from_millis(2500) && next <= Duration::from_millis(7500),
            "{next:?}"
        );
        // The PBX's SR with a block about us.
        let pbx_ntp = 0x0000_2000_8000_0000u64;
        let block = ReportBlock {
            ssrc: 7,
            fraction_lost: 64,
            cumulative_lost: 12,
            highest_seq: 500,
            jitter: 80,
            lsr: ntp_middle(sent_ntp),
            dlsr: 65536 / 4,
        };
        let pbx_info = SenderInfo {
            ntp: pbx_ntp,
            rtp_ts: 9,
            packets: 2,
            octets: 320,
        };
        let mut p = [0u8; MAX_REPORT];
        let n = write_compound(&mut p, 99, Some(&pbx_info), Some(&block), b"pbx");
        let arrival = sent_ntp + (3u64 << 32) / 10; // 300 ms later
        s.on_packet(t1 + Duration::from_millis(300), arrival, &p[..n])
            .unwrap();
        let rtt = s.stats.rtt.unwrap();
        assert!((rtt.as_secs_f64() - 0.050).abs() < 0.001, "{rtt:?}");
        assert_eq!(s.stats.peer_fraction_lost, Some(64));
        assert_eq!(s.stats.peer_cumulative_lost, Some(12));
        assert_eq!(s.stats.peer_jitter, Some(80));
        // Our next report echoes the PBX's SR: LSR and the time since.
        let due = s.next_timeout();
        let since_sr = due - (t1 + Duration::from_millis(300));
        let rx = Reception {
            ssrc: 99,
            fraction_lost: 0,
            cumulative_lost: 0,
            highest_seq: 70,
            jitter: 3,
        };
        let n = s.poll_report(due, None, Some(rx), &mut buf).unwrap();
        let got = items(&buf[..n]);
        let Item::Block { block, .. } = got[0] else {
            panic!("{got:?}")
        };
        assert_eq!(block.lsr, ntp_middle(pbx_ntp));
        let dlsr = Duration::from_secs_f64(f64::from(block.dlsr) / 65536.0);
        assert!((dlsr.as_secs_f64() - since_sr.as_secs_f64()).abs() < 0.001);
        assert_eq!((block.ssrc, block.highest_seq, block.jitter), (99, 70, 3));
        assert_eq!(s.stats.sent, 2);
        assert_eq!(s.stats.received, 1);
    }

    #[test]
    fn ntp_of_the_unix_epoch_is_1970_in_ntp_seconds() {
        assert_eq!(ntp_now(std::time::UNIX_EPOCH), 2_208_988_800u64 << 32);
        let half = std::time::UNIX_EPOCH + Duration::from_millis(500);
        assert_eq!(ntp_now(half) & 0xffff_ffff, 1 << 31);
    }
}
