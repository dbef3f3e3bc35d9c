//! Keeps an outgoing RTP stream continuous when its source is not: a new
//! SSRC from the peer (a restart, a re-INVITE, a PBX transfer) must not show
//! up as a jump in our sequence numbers or timestamps (RFC 3550 §5.1: a
//! receiver reads such jumps as loss or as a very late packet).
//!
//! Within one source, gaps are kept (they are real loss, and the receiver's
//! jitter buffer and PLC need to see them); across a change of source, the
//! new stream continues right after the old one, advanced by the time that
//! passed.

use std::time::Instant;

/// Maps incoming (ssrc, seq, ts) to outgoing (seq, ts).
#[derive(Debug, Clone)]
pub(crate) struct SeqTsRewriter {
    /// RTP clock of the outgoing stream, Hz.
    clock: u32,
    source: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    last_out: Option<(u16, u32, Instant)>,
}

/// Largest sequence jump within one source still treated as loss, not as a new stream.
const MAX_SEQ_JUMP: u16 = 1000;

impl SeqTsRewriter {
    /// `first_seq` and `first_ts` are where the outgoing stream starts (random per RFC 3550).
    pub(crate) fn new(clock: u32, first_seq: u16, first_ts: u32) -> SeqTsRewriter {
        SeqTsRewriter {
            clock,
            source: None,
            seq_offset: first_seq,
            ts_offset: first_ts,
            last_out: None,
        }
    }

    /// Rewrites one packet's numbers. `ts` must already be in the outgoing clock.
    #[inline]
    pub(crate) fn rewrite(&mut self, ssrc: u32, seq: u16, ts: u32, now: Instant) -> (u16, u32) {
        let restart = match (self.source, self.last_out) {
            (Some(s), Some((last_seq, _, _))) if s == ssrc => {
                let expected = seq.wrapping_add(self.seq_offset);
                let jump = expected.wrapping_sub(last_seq.wrapping_add(1));
                // A big jump forward or back within one source is a restart too.
                jump > MAX_SEQ_JUMP && jump < u16::MAX - MAX_SEQ_JUMP
            }
            _ => true,
        };
        if restart {
            match self.last_out {
                Some((last_seq, last_ts, at)) => {
                    let elapsed = now.saturating_duration_since(at);
                    let advance = ((elapsed.as_micros() as u64 * self.clock as u64) / 1_000_000)
                        .max(1) as u32;
                    self.seq_offset = last_seq.wrapping_add(1).wrapping_sub(seq);
                    self.ts_offset = last_ts.wrapping_add(advance).wrapping_sub(ts);
                }
                None => {
                    self.seq_offset = self.seq_offset.wrapping_sub(seq);
                    self.ts_offset = self.ts_offset.wrapping_sub(ts);
                }
            }
            self.source = Some(ssrc);
        }
        let out = (
            seq.wrapping_add(self.seq_offset),
            ts.wrapping_add(self.ts_offset),
        );
        // Track the newest packet only (a late one must not pull the reference back).
        let newer = match self.last_out {
            Some((last_seq, _, _)) => out.0.wrapping_sub(last_seq) < 0x8000,
            None => true,
        };
        if newer || restart {
            self.last_out = Some((out.0, out.1, now));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn ssrc_change_keeps_the_output_continuous() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(8000, 100, 5000);
        assert_eq!(r.rewrite(1, 7, 1000, t0), (100, 5000));
        assert_eq!(
            r.rewrite(1, 8, 1160, t0 + Duration::from_millis(20)),
            (101, 5160)
        );
        // Loss within a source stays visible.
        assert_eq!(
            r.rewrite(1, 10, 1480, t0 + Duration::from_millis(60)),
            (103, 5480)
        );
        // New SSRC with unrelated numbers, 20 ms later: continues from 103/5480.
        assert_eq!(
            r.rewrite(2, 60000, 90_000, t0 + Duration::from_millis(80)),
            (104, 5640)
        );
        assert_eq!(
            r.rewrite(2, 60001, 90_160, t0 + Duration::from_millis(100)),
            (105, 5800)
        );
    }

    #[test]
    fn wraparound_is_not_a_restart() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(48_000, 0, 0);
        let (s1, t1) = r.rewrite(9, 65535, u32::MAX - 959, t0);
        let (s2, t2) = r.rewrite(9, 0, 0, t0 + Duration::from_millis(20));
        assert_eq!(s2, s1.wrapping_add(1));
        assert_eq!(t2, t1.wrapping_add(960));
    }

    #[test]
    fn a_late_packet_does_not_move_the_reference() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(8000, 0, 0);
        r.rewrite(1, 10, 1600, t0);
        r.rewrite(1, 12, 1920, t0);
        assert_eq!(r.rewrite(1, 11, 1760, t0), (1, 160));
        // Switch source: continues after seq 2 (the newest), not after the late 1.
        assert_eq!(r.rewrite(2, 500, 0, t0 + Duration::from_millis(20)).0, 3);
    }

    #[test]
    fn a_huge_jump_in_one_source_is_treated_as_a_restart() {
        let t0 = Instant::now();
        let mut r = SeqTsRewriter::new(8000, 0, 0);
        r.rewrite(1, 10, 0, t0);
        assert_eq!(
            r.rewrite(1, 30_000, 777_777, t0 + Duration::from_millis(20)),
            (1, 160)
        );
    }
}
