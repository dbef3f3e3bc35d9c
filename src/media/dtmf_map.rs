//! RFC 4733 events across the relay.
//!
//! WhatsApp → PBX, packet by packet ([`EventMapper`]): each incoming event
//! packet becomes one outgoing packet with the PBX's payload type, the
//! event's start placed on the PBX stream's timeline, and the duration
//! scaled between clock rates (WhatsApp uses telephone-event/8000; a PBX
//! using Opus may use /48000). Repeats and the three end packets keep the
//! same mapped timestamp and duration, so the receiver sees one event.
//!
//! PBX → WhatsApp ([`KeyTracker`]): the WhatsApp leg generates its own event
//! packets, so here a key press is recognised once, with its duration, when
//! its end arrives (or when its packets stop coming).

use std::time::{Duration, Instant};

use crate::dtmf::{digit_of, TelephoneEvent};

/// One mapped event packet to send on the other leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MappedEvent {
    /// Start of the event on the outgoing stream's timeline.
    pub timestamp: u32,
    /// Set on the first packet of an event (RFC 4733 §2.5.1.2).
    pub marker: bool,
    pub payload: [u8; 4],
}

#[derive(Debug, Clone)]
pub struct EventMapper {
    in_clock: u32,
    out_clock: u32,
    /// (incoming start timestamp, outgoing start timestamp) of the current event.
    current: Option<(u32, u32)>,
}

impl EventMapper {
    pub fn new(in_clock: u32, out_clock: u32) -> EventMapper {
        EventMapper {
            in_clock: in_clock.max(1),
            out_clock: out_clock.max(1),
            current: None,
        }
    }

    /// Maps one incoming packet. `out_now` is where the outgoing stream's
    /// timeline is at this moment (used when a new event starts).
    #[inline]
    pub fn map(&mut self, in_ts: u32, payload: &[u8], out_now: u32) -> Option<MappedEvent> {
        let mut ev = TelephoneEvent::parse(payload)?;
        digit_of(ev.event)?;
        let (marker, out_ts) = match self.current {
            Some((start, out)) if start == in_ts => (false, out),
            _ => {
                self.current = Some((in_ts, out_now));
                (true, out_now)
            }
        };
        let scaled = ev.duration as u64 * self.out_clock as u64 / self.in_clock as u64;
        ev.duration = scaled.min(u16::MAX as u64) as u16;
        Some(MappedEvent {
            timestamp: out_ts,
            marker,
            payload: ev.to_bytes(),
        })
    }
}

fn duration(clock: u32, units: u16) -> Duration {
    Duration::from_micros(units as u64 * 1_000_000 / clock as u64)
}

/// How long after an event's last packet it counts as ended without an end packet.
const STALE_AFTER: Duration = Duration::from_millis(500);

/// Recognises key presses with their durations from RFC 4733 packets.
#[derive(Debug, Clone)]
pub struct KeyTracker {
    clock: u32,
    /// Current event: (start timestamp, digit, duration units, last packet at, reported).
    current: Option<(u32, char, u16, Instant, bool)>,
}

impl KeyTracker {
    pub fn new(clock: u32) -> KeyTracker {
        KeyTracker {
            clock: clock.max(1),
            current: None,
        }
    }

    /// Feeds one packet; returns a finished key press (digit, duration) at most once per event.
    pub fn on_packet(&mut self, now: Instant, ts: u32, payload: &[u8]) -> Option<(char, Duration)> {
        let ev = TelephoneEvent::parse(payload)?;
        let digit = digit_of(ev.event)?;
        let clock = self.clock;
        let mut finished = None;
        match &mut self.current {
            Some((start, _, dur, at, reported)) if *start == ts => {
                *dur = (*dur).max(ev.duration);
                *at = now;
                if ev.end && !*reported {
                    *reported = true;
                    finished = Some((digit, duration(clock, *dur)));
                }
            }
            _ => {
                // A new event; an unfinished previous one is reported first.
                if let Some((_, d, dur, _, false)) = self.current {
                    finished = Some((d, duration(clock, dur)));
                }
                self.current = Some((ts, digit, ev.duration, now, false));
                if ev.end && finished.is_none() {
                    self.current = Some((ts, digit, ev.duration, now, true));
                    return Some((digit, duration(clock, ev.duration)));
                }
                // Rare: both finish at once; report the older, keep this one pending.
            }
        }
        finished
    }

    /// An event whose packets stopped without an end packet is reported once.
    pub fn on_timeout(&mut self, now: Instant) -> Option<(char, Duration)> {
        let clock = self.clock;
        match &mut self.current {
            Some((_, digit, dur, at, reported)) if !*reported && now >= *at + STALE_AFTER => {
                *reported = true;
                let (d, u) = (*digit, *dur);
                Some((d, duration(clock, u)))
            }
            _ => None,
        }
    }

    /// When [`KeyTracker::on_timeout`] should be called next.
    pub fn next_timeout(&self) -> Option<Instant> {
        match self.current {
            Some((_, _, _, at, false)) => Some(at + STALE_AFTER),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(ev: u8, end: bool, dur: u16) -> [u8; 4] {
        TelephoneEvent {
            event: ev,
            end,
            volume: 10,
            duration: dur,
        }
        .to_bytes()
    }

    #[test]
    fn mapping_scales_duration_and_keeps_one_timestamp_per_event() {
        let mut m = EventMapper::new(8000, 48000);
        let a = m.map(1000, &pkt(5, false, 160), 777_000).unwrap();
        assert!(a.marker);
        assert_eq!(a.timestamp, 777_000);
        assert_eq!(TelephoneEvent::parse(&a.payload).unwrap().duration, 960);
        // The outgoing timeline moved on; the event keeps its start.
        let b = m.map(1000, &pkt(5, true, 800), 780_000).unwrap();
        assert!(!b.marker);
        assert_eq!(b.timestamp, 777_000);
        let e = TelephoneEvent::parse(&b.payload).unwrap();
        assert!(e.end);
        assert_eq!(e.duration, 4800);
        // The repeated end packets map identically.
        assert_eq!(m.map(1000, &pkt(5, true, 800), 790_000), Some(b));
        // Next key press.
        let c = m.map(5000, &pkt(11, false, 160), 800_000).unwrap();
        assert!(c.marker);
        assert_eq!(c.timestamp, 800_000);
        // Downscaling saturates nothing and rounds down.
        let mut down = EventMapper::new(48000, 8000);
        let d = down.map(1, &pkt(1, false, 65535), 0).unwrap();
        assert_eq!(TelephoneEvent::parse(&d.payload).unwrap().duration, 10922);
        assert_eq!(m.map(9, &[1, 2], 0), None);
        assert_eq!(m.map(9, &pkt(99, false, 1), 0), None);
    }

    #[test]
    fn key_tracker_reports_each_press_once_with_its_duration() {
        let t = Instant::now();
        let mut k = KeyTracker::new(8000);
        assert_eq!(k.on_packet(t, 100, &pkt(1, false, 160)), None);
        assert_eq!(k.on_packet(t, 100, &pkt(1, false, 320)), None);
        assert_eq!(
            k.on_packet(t, 100, &pkt(1, true, 800)),
            Some(('1', Duration::from_millis(100)))
        );
        assert_eq!(k.on_packet(t, 100, &pkt(1, true, 800)), None);
        assert_eq!(k.on_packet(t, 100, &pkt(1, true, 800)), None);
        // A press whose end packets are all lost: reported when its packets stop.
        assert_eq!(k.on_packet(t, 900, &pkt(11, false, 400)), None);
        assert_eq!(k.on_timeout(t + Duration::from_millis(100)), None);
        assert_eq!(
            k.on_timeout(t + Duration::from_millis(600)),
            Some(('#', Duration::from_millis(50)))
        );
        assert_eq!(k.on_timeout(t + Duration::from_secs(5)), None);
        // Or when the next one starts.
        assert_eq!(k.on_packet(t, 2000, &pkt(2, false, 160)), None);
        assert_eq!(
            k.on_packet(t, 3000, &pkt(3, false, 160)),
            Some(('2', Duration::from_millis(20)))
        );
        // Only end packets of a press (start lost).
        let mut k = KeyTracker::new(48000);
        assert_eq!(
            k.on_packet(t, 5, &pkt(0, true, 4800)),
            Some(('0', Duration::from_millis(100)))
        );
        assert_eq!(k.on_packet(t, 5, &pkt(0, true, 4800)), None);
    }
}
