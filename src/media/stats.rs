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
    /// (arrival, rtp timestamp) of the previous packet.
    last: Option<(Instant, u32)>,
    /// Jitter in clock units, RFC 3550 A.8 estimator.
    jitter: f64,
}

impl ReceiveTracker {
    pub fn new(clock: u32) -> ReceiveTracker {
        ReceiveTracker {
            clock: clock.max(1),
            last_seq: None,
            last: None,
            jitter: 0.0,
        }
    }

    /// Accounts one received packet; returns how many packets were lost before it.
    #[inline]
    pub fn on_packet(&mut self, now: Instant, seq: u16, ts: u32) -> u64 {
        let mut lost = 0;
        if let Some(last) = self.last_seq {
            let gap = seq.wrapping_sub(last);
            if gap == 0 || gap >= 0x8000 {
                // Duplicate or reordered: no new loss, no jitter sample.
                return 0;
            }
            lost = (gap - 1) as u64;
        }
        self.last_seq = Some(seq);
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

    /// Forgets the stream (a new source follows).
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
}
