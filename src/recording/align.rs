//! Two channels on one timeline, sans-IO: each side's decoded audio is
//! placed by when it arrived, so the WhatsApp user and the PBX stay in step
//! in the file however their packets were spaced.
//!
//! A side's audio runs on from where its last chunk ended while chunks come
//! about on time (jitter does not tear it apart); a chunk that arrives well
//! after that end starts a new stretch at its arrival (loss, hold, a silent
//! sender), with silence between. A side that sends nothing (hold, mute,
//! a PBX that sends no silence) does not hold the file back: audio is
//! written out once it is [`LAG_MS`] old, with silence for what is missing.

use std::collections::VecDeque;

/// A chunk this much later than its side's running end starts a new stretch.
const GAP_MS: u64 = 120;
/// How long audio waits for the other side before it is written anyway.
pub(super) const LAG_MS: u64 = 400;
/// A side may run this far ahead of its arrival times (a sender bursting
/// after a stall); chunks further ahead are dropped.
const MAX_LEAD_MS: u64 = 1000;

/// The two channels: the WhatsApp user (left) and the PBX (right).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    WhatsApp = 0,
    Pbx = 1,
}

#[derive(Default)]
struct Lane {
    /// Samples for positions `[written, end)` (none when `end <= written`).
    buf: VecDeque<i16>,
    /// One past the position of the side's last sample.
    end: u64,
    started: bool,
}

pub(super) struct Aligner {
    rate: u64,
    /// Frames handed out so far.
    written: u64,
    lanes: [Lane; 2],
    /// The latest arrival position seen, on either side.
    latest: u64,
    /// Interleaved frames being handed out.
    out: Vec<i16>,
    /// Chunks too far ahead of their arrival, dropped.
    pub(super) dropped: u64,
}

impl Aligner {
    pub(super) fn new(rate: u32) -> Aligner {
        Aligner {
            rate: u64::from(rate),
            written: 0,
            lanes: Default::default(),
            latest: 0,
            out: Vec::new(),
            dropped: 0,
        }
    }

    fn ms(&self, ms: u64) -> u64 {
        ms * self.rate / 1000
    }

    /// `pcm` of `side`, arrived at sample position `arrival` (since the
    /// recording started); `write` gets interleaved stereo frames ready for
    /// the file.
    pub(super) fn push(
        &mut self,
        side: Side,
        arrival: u64,
        pcm: &[i16],
        write: &mut impl FnMut(&[i16]),
    ) {
        let gap = self.ms(GAP_MS);
        let lead = self.ms(MAX_LEAD_MS);
        let written = self.written;
        let lane = &mut self.lanes[side as usize];
        let mut start = if !lane.started || arrival > lane.end + gap {
            arrival
        } else {
            lane.end
        };
        if start > arrival + lead {
            self.dropped += 1;
            return;
        }
        lane.started = true;
        let mut pcm = pcm;
        if start < written {
            // Its time was written out already (with silence): what is left
            // of it, if anything.
            let skip = (written - start) as usize;
            if skip >= pcm.len() {
                self.dropped += 1;
                return;
            }
            pcm = &pcm[skip..];
            start = written;
        }
        let from = lane.end.max(written);
        lane.buf
            .extend(std::iter::repeat_n(0, start.saturating_sub(from) as usize));
        lane.buf.extend(pcm);
        lane.end = start + pcm.len() as u64;
        self.latest = self.latest.max(arrival);
        let lag = self.ms(LAG_MS);
        let both = self.lanes[0].end.min(self.lanes[1].end);
        self.write_to(both.max(self.latest.saturating_sub(lag)), write);
    }

    /// Everything still held, written out (the call ended).
    pub(super) fn flush(&mut self, write: &mut impl FnMut(&[i16])) {
        let end = self.lanes[0].end.max(self.lanes[1].end);
        self.write_to(end, write);
    }

    /// Frames up to position `to`, silence where a side has none.
    fn write_to(&mut self, to: u64, write: &mut impl FnMut(&[i16])) {
        while to > self.written {
            let n = (to - self.written).min(4096) as usize;
            self.out.clear();
            for _ in 0..n {
                let l = self.lanes[0].buf.pop_front().unwrap_or(0);
                let r = self.lanes[1].buf.pop_front().unwrap_or(0);
                self.out.push(l);
                self.out.push(r);
            }
            self.written += n as u64;
            write(&self.out);
        }
    }

    /// Frames written so far.
    pub(super) fn frames(&self) -> u64 {
        self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what the aligner writes, as (left, right) frames.
    fn run(steps: &[(Side, u64, Vec<i16>)], flush: bool) -> Vec<(i16, i16)> {
        let mut a = Aligner::new(8000);
        let mut frames = Vec::new();
        let mut take = |f: &[i16]| {
            frames.extend(f.chunks(2).map(|c| (c[0], c[1])));
        };
        for (side, at, pcm) in steps {
            a.push(*side, *at, pcm, &mut take);
        }
        if flush {
            a.flush(&mut take);
        }
        frames
    }

    #[test]
    fn both_sides_on_time_interleave_in_step() {
        let f = run(
            &[
                (Side::WhatsApp, 0, vec![1; 160]),
                (Side::Pbx, 0, vec![2; 160]),
                (Side::WhatsApp, 160, vec![3; 160]),
                (Side::Pbx, 165, vec![4; 160]),
            ],
            false,
        );
        assert_eq!(f.len(), 320);
        assert!(f[..160].iter().all(|&x| x == (1, 2)));
        assert!(f[160..].iter().all(|&x| x == (3, 4)));
    }

    #[test]
    fn jitter_does_not_tear_a_side_apart() {
        // The second chunk comes 60 ms late, the third on time: still contiguous.
        let f = run(
            &[
                (Side::WhatsApp, 0, vec![1; 160]),
                (Side::WhatsApp, 640, vec![2; 160]),
                (Side::WhatsApp, 650, vec![3; 160]),
            ],
            true,
        );
        assert_eq!(f.len(), 480);
        assert!(f[160..320].iter().all(|&x| x == (2, 0)));
    }

    #[test]
    fn a_long_gap_is_silence_at_the_arrival_time() {
        let f = run(
            &[
                (Side::Pbx, 0, vec![5; 160]),
                (Side::Pbx, 8000, vec![6; 160]),
            ],
            true,
        );
        assert_eq!(f.len(), 8160);
        assert!(f[160..8000].iter().all(|&x| x == (0, 0)));
        assert!(f[8000..].iter().all(|&x| x == (0, 6)));
    }

    #[test]
    fn a_silent_side_does_not_hold_the_file_back() {
        // Two seconds of WhatsApp audio, nothing from the PBX: all but the
        // last LAG_MS is written before the end.
        let steps: Vec<_> = (0..100)
            .map(|i| (Side::WhatsApp, i * 160, vec![7; 160]))
            .collect();
        let f = run(&steps, false);
        let lag = (LAG_MS * 8) as usize;
        assert!(f.len() >= 16_000 - lag - 160, "{}", f.len());
        assert!(f.iter().all(|&x| x == (7, 0)));
    }

    #[test]
    fn a_chunk_whose_time_was_written_out_is_dropped_or_trimmed() {
        let mut a = Aligner::new(8000);
        let mut frames = 0;
        // The user's side runs on; the PBX side sent once and then fell far
        // behind (its lane ends at 160 while 2 s were written out).
        a.push(Side::Pbx, 0, &[3; 160], &mut |f| frames += f.len() / 2);
        for i in 1..100 {
            a.push(Side::WhatsApp, i * 160, &[1; 160], &mut |f| {
                frames += f.len() / 2
            });
        }
        let written = a.frames();
        assert!(written > 8000, "{written}");
        // A chunk continuing the PBX lane, its time long gone: dropped.
        a.push(Side::Pbx, 200, &[4; 160], &mut |f| frames += f.len() / 2);
        assert_eq!(a.dropped, 1);
        assert_eq!(a.lanes[1].end, 160);
        // One reaching past what was written: its remainder is kept.
        let long = vec![5; written as usize];
        a.push(Side::Pbx, 900, &long, &mut |f| frames += f.len() / 2);
        assert_eq!(a.dropped, 1);
        assert!(a.lanes[1].end > written);
    }

    #[test]
    fn a_side_bursting_far_ahead_is_dropped_not_buffered() {
        let mut a = Aligner::new(8000);
        let mut n = 0;
        // 3 s of audio all "arriving" at time 0.
        for _ in 0..150 {
            a.push(Side::WhatsApp, 0, &[1; 160], &mut |f| n += f.len());
        }
        assert!(a.dropped > 0);
        assert!(a.lanes[0].buf.len() <= 8000 + 160);
    }
}
