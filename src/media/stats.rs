//! Per-leg media counters for the call record and metrics: packets and bytes
//! each way, packets lost (from sequence gaps) and interarrival jitter
//! (RFC 3550 §6.4.1, A.8).

use std::time::Instant;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DirectionStats {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegCounters {
    pub rx: DirectionStats,
    pub tx: DirectionStats,
    /// Received packets that were malformed or not for us, dropped.
    pub dropped: u64,
    /// Packets missing from the received sequence.
    pub lost: u64,
    /// Interarrival jitter, milliseconds.
    pub jitter_ms: f64,
}

/// Tracks loss and jitter of one received stream.
#[derive(Debug, Clone)]
pub struct ReceiveTracker {
    clock: u32,
    last_seq: Option<u16>,
    last: Option<(Instant, u32)>,
    jitter: f64,
    /// RFC 3550 A.1/A.3 for the report block: the extended first and
    /// highest sequence numbers, packets received, and the same figures at
    /// the previous report (for the fraction lost in between).
    base_ext: u32,
    max_ext: u32,
    received: u32,
    expected_prior: u32,
    received_prior: u32,
}

/// What a reception report says about a stream (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceptionFigures {
    pub fraction_lost: u8,
    pub cumulative_lost: i32,
    pub highest_seq: u32,
    /// Interarrival jitter, in timestamp units.
    pub jitter: u32,
}

impl ReceiveTracker {
    pub fn new(clock: u32) -> ReceiveTracker {
        ReceiveTracker {
            clock: clock.max(1),
            last_seq: None,
            last: None,
            jitter: 0.0,
            base_ext: 0,
            max_ext: 0,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
        }
    }

    /// One packet of the stream: returns how many sequence numbers it
    /// skipped (lost, unless they come late). Jitter follows the audio's
    /// timestamps; `timing: false` (a telephone-event packet, whose
    /// timestamp stays at the event's start) counts the packet only.
    #[inline]
    pub fn on_packet(&mut self, now: Instant, seq: u16, ts: u32) -> u64 {
        self.on_packet_timed(now, seq, ts, true)
    }

    #[inline]
    pub fn on_packet_timed(&mut self, now: Instant, seq: u16, ts: u32, timing: bool) -> u64 {
        self.received = self.received.wrapping_add(1);
        let mut lost = 0;
        match self.last_seq {
            Some(last) => {
                let gap = seq.wrapping_sub(last);
                if gap == 0 || gap >= 0x8000 {
                    return 0;
                }
                lost = (gap - 1) as u64;
                if seq < last {
                    // Wrapped: a new cycle of 65536 (RFC 3550 A.1).
                    self.max_ext = self.max_ext.wrapping_add(0x1_0000);
                }
                self.max_ext = (self.max_ext & 0xffff_0000) | u32::from(seq);
            }
            None => {
                self.base_ext = u32::from(seq);
                self.max_ext = u32::from(seq);
                self.expected_prior = 0;
                self.received = 1;
                self.received_prior = 0;
            }
        }
        self.last_seq = Some(seq);
        if !timing {
            return lost;
        }
        if let Some((at, last_ts)) = self.last {
            let arrival = now.saturating_duration_since(at).as_secs_f64() * self.clock as f64;
            let sent = ts.wrapping_sub(last_ts) as i32 as f64;
            let d = (arrival - sent).abs();
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.last = Some((now, ts));
        lost
    }

    pub fn jitter_ms(&self) -> f64 {
        self.jitter * 1000.0 / self.clock as f64
    }

    /// The figures for a report block, and the start of the next interval
    /// (RFC 3550 A.3); `None` before the first packet.
    pub fn report(&mut self) -> Option<ReceptionFigures> {
        self.last_seq?;
        let expected = self.max_ext.wrapping_sub(self.base_ext).wrapping_add(1);
        let lost = i64::from(expected) - i64::from(self.received);
        let expected_interval = expected.wrapping_sub(self.expected_prior);
        let received_interval = self.received.wrapping_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = i64::from(expected_interval) - i64::from(received_interval);
        let fraction_lost = if expected_interval == 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / i64::from(expected_interval)).min(255) as u8
        };
        Some(ReceptionFigures {
            fraction_lost,
            cumulative_lost: lost.clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_seq: self.max_ext,
            jitter: self.jitter as u32,
        })
    }

    /// A new source: the sequence and timing start again.
    pub fn reset(&mut self) {
        self.last_seq = None;
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn loss_and_jitter() {
        let t = Instant::now();
        let mut r = ReceiveTracker::new(8000);
        assert_eq!(r.on_packet(t, 1, 0), 0);
        assert_eq!(r.on_packet(t + Duration::from_millis(20), 2, 160), 0);
        assert_eq!(r.on_packet(t + Duration::from_millis(80), 5, 640), 2);
        assert_eq!(r.on_packet(t + Duration::from_millis(80), 4, 480), 0); // late
        assert_eq!(r.jitter_ms(), 0.0);
        // 10 ms late arrivals raise jitter.
        for k in 0..50u32 {
            let late = if k % 2 == 0 { 10 } else { 0 };
            r.on_packet(
                t + Duration::from_millis(100 + 20 * k as u64 + late),
                6 + k as u16,
                800 + 160 * k,
            );
        }
        assert!(r.jitter_ms() > 3.0, "{}", r.jitter_ms());
    }

    /// RFC 3550 A.3: expected from the extended sequence numbers across a
    /// wrap, cumulative loss, and the fraction lost since the last report.
    #[test]
    fn report_figures_across_a_wrap() {
        let t = Instant::now();
        let mut r = ReceiveTracker::new(8000);
        assert_eq!(r.report(), None);
        // 65530..=65535, then 0..=9 with 3 and 4 missing: 16 expected... 14 received.
        let mut ts = 0;
        for seq in (65530u16..=65535).chain((0..10).filter(|s| *s != 3 && *s != 4)) {
            r.on_packet(t, seq, ts);
            ts += 160;
        }
        let f = r.report().unwrap();
        assert_eq!(f.highest_seq, 0x0001_0009);
        assert_eq!(f.cumulative_lost, 2);
        assert_eq!(f.fraction_lost, (2 * 256 / 16) as u8);
        // Nothing lost since: fraction 0, cumulative stays.
        for seq in 10..20u16 {
            r.on_packet(t, seq, ts);
            ts += 160;
        }
        let f = r.report().unwrap();
        assert_eq!(
            (f.fraction_lost, f.cumulative_lost, f.highest_seq),
            (0, 2, 0x0001_0013)
        );
        // A telephone-event packet counts but leaves jitter alone.
        let j = r.jitter_ms();
        r.on_packet_timed(t + std::time::Duration::from_secs(3), 20, 0, false);
        assert_eq!(r.jitter_ms(), j);
        assert_eq!(r.report().unwrap().fraction_lost, 0);
    }
}
