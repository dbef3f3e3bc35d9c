//! RFC 4733 telephone events: the payload format and the rule that turns a
//! stream of event packets into key presses, shared by both media legs.
//!
//! RFC 4733 §2.3: one event is a series of packets with the same RTP
//! timestamp (the event's start); its `duration` grows; the last packets
//! carry the E bit and are usually sent three times (§2.5.1.4). A receiver
//! must therefore recognise a key press by its timestamp, not by its packets.

/// One telephone-event payload (RFC 4733 §2.3, 4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// 0–9, 10 = `*`, 11 = `#`, 12–15 = A–D (RFC 4733 §3.2).
    pub event: u8,
    pub end: bool,
    /// Power level in -dBm0, 0–63.
    pub volume: u8,
    /// In units of the telephone-event clock rate.
    pub duration: u16,
}

impl TelephoneEvent {
    pub fn parse(payload: &[u8]) -> Option<TelephoneEvent> {
        // Several events may be packed in one payload (§2.3.7 redundancy is a
        // separate PT); only the first 4 bytes describe the current event.
        let b: &[u8; 4] = payload.get(..4)?.try_into().ok()?;
        Some(TelephoneEvent {
            event: b[0],
            end: b[1] & 0x80 != 0,
            volume: b[1] & 0x3f,
            duration: u16::from_be_bytes([b[2], b[3]]),
        })
    }

    pub fn to_bytes(self) -> [u8; 4] {
        let d = self.duration.to_be_bytes();
        [
            self.event,
            (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3f),
            d[0],
            d[1],
        ]
    }
}

/// `0123456789*#ABCD` → event code.
pub fn event_of(digit: char) -> Option<u8> {
    match digit.to_ascii_uppercase() {
        d @ '0'..='9' => Some(d as u8 - b'0'),
        '*' => Some(10),
        '#' => Some(11),
        d @ 'A'..='D' => Some(d as u8 - b'A' + 12),
        _ => None,
    }
}

/// Event code → `0123456789*#ABCD`.
pub fn digit_of(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

/// A key press recognised on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPress {
    pub digit: char,
    /// RTP timestamp of the event's start, as sent.
    pub timestamp: u32,
}

/// Turns event packets into key presses, each exactly once.
#[derive(Debug, Default, Clone)]
pub struct KeyPressDetector {
    /// Timestamp of the last event reported.
    last: Option<u32>,
}

impl KeyPressDetector {
    /// Feeds one telephone-event packet; returns the key press when this packet
    /// starts a new event (a new timestamp), whether or not its first packets were lost.
    pub fn on_packet(&mut self, timestamp: u32, payload: &[u8]) -> Option<KeyPress> {
        let ev = TelephoneEvent::parse(payload)?;
        let digit = digit_of(ev.event)?;
        if self.last == Some(timestamp) {
            return None;
        }
        self.last = Some(timestamp);
        Some(KeyPress { digit, timestamp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let e = TelephoneEvent {
            event: 11,
            end: true,
            volume: 10,
            duration: 1600,
        };
        assert_eq!(e.to_bytes(), [11, 0x8a, 0x06, 0x40]);
        assert_eq!(TelephoneEvent::parse(&e.to_bytes()), Some(e));
        assert_eq!(TelephoneEvent::parse(&[1, 2, 3]), None);
    }

    #[test]
    fn digits() {
        for (c, e) in [
            ('0', 0),
            ('9', 9),
            ('*', 10),
            ('#', 11),
            ('A', 12),
            ('d', 15),
        ] {
            assert_eq!(event_of(c), Some(e));
            assert_eq!(digit_of(e), Some(c.to_ascii_uppercase()));
        }
        assert_eq!(event_of('x'), None);
        assert_eq!(digit_of(16), None);
    }

    #[test]
    fn one_key_press_per_event_despite_repeats_and_loss() {
        let mut d = KeyPressDetector::default();
        let pkt = |ev: u8, end: bool, dur: u16| {
            TelephoneEvent {
                event: ev,
                end,
                volume: 10,
                duration: dur,
            }
            .to_bytes()
        };
        let mut got = Vec::new();
        // '1': three updates and three end packets.
        for (end, dur) in [
            (false, 160),
            (false, 320),
            (false, 480),
            (true, 640),
            (true, 640),
            (true, 640),
        ] {
            got.extend(d.on_packet(1000, &pkt(1, end, dur)));
        }
        // '1' again, pressed twice: a new timestamp is a new press; only its end packets arrive.
        got.extend(d.on_packet(5000, &pkt(1, true, 800)));
        got.extend(d.on_packet(5000, &pkt(1, true, 800)));
        // '#'.
        got.extend(d.on_packet(9000, &pkt(11, false, 160)));
        let digits: String = got.iter().map(|k| k.digit).collect();
        assert_eq!(digits, "11#");
        assert_eq!(d.on_packet(9999, &[200, 0, 0, 0]), None);
    }
}
