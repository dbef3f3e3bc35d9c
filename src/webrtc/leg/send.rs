//! What the leg sends toward WhatsApp: the relay's Opus, the silence that
//! keeps WhatsApp from hanging up before the PBX speaks (it drops a call
//! after ~20 s without media), audio held while ICE and DTLS come up, and
//! RFC 4733 key presses.

use super::*;

impl WaLeg {
    /// Sends one Opus packet from the relay; `samples` is its length at 48 kHz.
    /// Dropped while a DTMF event is being sent (RFC 4733 §2.5.1.1 lets the
    /// event replace the audio) or once the leg has ended; held (the newest
    /// [`HELD_MAX`]) while it connects, and sent as soon as it has.
    pub fn send_audio(&mut self, now: Instant, payload: &[u8], samples: u32) {
        if self.ended || self.dtmf.is_some() {
            return;
        }
        // Until the held audio is out, new audio queues behind it.
        if !self.connected || !self.held.is_empty() {
            if self.held.len() == HELD_MAX {
                self.held.pop_front();
                self.stats.held_dropped += 1;
            }
            self.held.push_back((payload.to_vec(), samples));
            return;
        }
        self.now = self.now.max(now);
        // After a pause the timeline jumps by the time that passed, so the
        // receiver's playout stays in step with the sender's clock.
        if let Some(last) = self.last_sent {
            let gap = now.saturating_duration_since(last);
            if gap > IDLE_AFTER {
                let missing = gap - FRAME;
                self.ts = self
                    .ts
                    .wrapping_add((missing.as_micros() as u64 * 48 / 1000) as u32);
            }
        }
        self.last_audio = Some(now);
        let pt = self.opus_pt;
        self.write(now, pt, false, payload);
        self.ts = self.ts.wrapping_add(samples);
    }

    /// Sends the next [`HELD_PER_ROUND`] packets of the audio held while the
    /// leg connected, back to back on one timeline: they are WhatsApp's
    /// first SRTP packets (it waits for ours), and its jitter buffer plays
    /// them out from there. `poll_output` calls it again until none is left.
    pub(super) fn send_held(&mut self) {
        let now = self.now;
        let pt = self.opus_pt;
        for _ in 0..HELD_PER_ROUND {
            let Some((payload, samples)) = self.held.pop_front() else {
                break;
            };
            self.write(now, pt, false, &payload);
            self.ts = self.ts.wrapping_add(samples);
            self.stats.held_packets += 1;
            self.last_audio = Some(now);
        }
        if self.held.is_empty() {
            // Give the second's worth of room back.
            self.held = VecDeque::new();
        }
    }

    /// Advances the outgoing timeline over audio that was lost before it
    /// reached us, so WhatsApp's receiver conceals the gap in place.
    pub fn skip(&mut self, samples: u32) {
        if self.dtmf.is_none() {
            self.ts = self.ts.wrapping_add(samples);
        }
    }

    /// Queues a key press to send as RFC 4733 events; unknown digits are ignored.
    pub fn send_dtmf(&mut self, digit: char, duration: Duration) {
        if let Some(ev) = dtmf::event_of(digit) {
            let duration = duration.clamp(Duration::from_millis(40), Duration::from_secs(5));
            self.dtmf_queue.push_back((ev, duration));
        }
    }

    pub(super) fn write(&mut self, now: Instant, pt: Pt, marker: bool, payload: &[u8]) {
        let Some(own) = self.own.as_mut() else {
            return;
        };
        let seq = self.seq as u16;
        self.seq += 1;
        if own
            .send_rtp(now, *pt, marker, seq, self.ts, payload)
            .is_err()
        {
            // Only a packet too big for any datagram gets here.
            self.stats.dropped += 1;
            return;
        }
        self.stats.tx_packets += 1;
        self.last_sent = Some(now);
    }

    pub(super) fn drive_silence(&mut self, now: Instant) {
        if self.dtmf.is_some() {
            return;
        }
        let relay_active = self.last_audio.is_some_and(|t| now < t + IDLE_AFTER);
        if relay_active {
            self.next_silence = None;
            return;
        }
        let due = self.next_silence.unwrap_or(now);
        if now >= due {
            let pt = self.opus_pt;
            self.write(now, pt, false, &OPUS_SILENCE);
            self.ts = self.ts.wrapping_add(FRAME_48K);
            self.stats.silence_packets += 1;
            // Stay on a 20 ms grid even when called late.
            let mut next = due + FRAME;
            if next <= now {
                next = now + FRAME;
            }
            self.next_silence = Some(next);
        }
    }

    pub(super) fn drive_dtmf(&mut self, now: Instant) {
        let Some((te_pt, clock)) = self.te else {
            self.dtmf_queue.clear();
            return;
        };
        if self.dtmf.is_none() {
            if self.dtmf_not_before.is_some_and(|t| now < t) {
                return;
            }
            let Some((event, duration)) = self.dtmf_queue.pop_front() else {
                return;
            };
            let total =
                (duration.as_millis() as u64 * clock as u64 / 1000).min(u16::MAX as u64) as u32;
            self.dtmf = Some(DtmfSend {
                event,
                timestamp: self.ts,
                total,
                sent: 0,
                ends_left: DTMF_END_REPEATS,
                first: true,
                next_at: now,
            });
        }
        let Some(mut d) = self.dtmf else { return };
        if now < d.next_at {
            return;
        }
        let step = clock / 50; // 20 ms of the event clock
        let end = d.sent >= d.total;
        if !end {
            d.sent = (d.sent + step).min(d.total);
        }
        let payload = TelephoneEvent {
            event: d.event,
            end,
            volume: DTMF_VOLUME,
            duration: d.sent as u16,
        }
        .to_bytes();
        // Every packet of one event carries the event's start timestamp (RFC 4733 §2.3.4).
        let saved = self.ts;
        self.ts = d.timestamp;
        self.write(now, te_pt, d.first, &payload);
        self.ts = saved;
        d.first = false;
        d.next_at = now + FRAME;
        if end {
            d.ends_left -= 1;
            if d.ends_left == 0 {
                // Audio resumes after the event, its time accounted for.
                let elapsed_48k = (d.total as u64 * 48_000 / clock as u64) as u32;
                self.ts = d.timestamp.wrapping_add(elapsed_48k.max(FRAME_48K));
                self.dtmf = None;
                self.dtmf_not_before = Some(now + DTMF_GAP);
                self.next_silence = Some(now + FRAME);
                return;
            }
            // The repeats of the end packet go out back to back (5 ms apart).
            d.next_at = now + Duration::from_millis(5);
        }
        self.dtmf = Some(d);
    }
}
