//! The per-call media relay, sans-IO: WhatsApp frames in → RTP datagrams to
//! the PBX out, and PBX datagrams in → frames to the WhatsApp leg out.
//!
//! Modes, chosen from the SIP negotiation:
//! * **Opus passthrough**: payload bytes untouched; payload type, SSRC,
//!   sequence number and timestamp rewritten so the outgoing stream stays
//!   continuous across source changes ([`SeqTsRewriter`]); marker bit kept.
//! * **G.711**: Opus decoded at 8 kHz with FEC/PLC on loss, repacketised to the
//!   PBX's packet time; G.711 from the PBX encoded to 20 ms Opus.
//!
//! RFC 4733 events cross both ways (see [`super::dtmf_map`]). A leg silent
//! for the RTP timeout is reported once (not the PBX while it holds the call).
//!
//! The per-packet functions write into one buffer owned by the relay and call
//! the caller's `send` closure with a borrowed datagram: no allocation, no
//! lock, no logging per packet.

use std::time::{Duration, Instant};

use super::dtmf_map::{EventMapper, KeyTracker};
use super::g711::Law;
use super::opus::samples_48k;
use super::rewrite::SeqTsRewriter;
use super::rtp::{write_header, RtpError, RtpView, HEADER_LEN};
use super::stats::{LegCounters, ReceiveTracker};
use super::transcode::{G711ToOpus, OpusEncoderSettings, OpusToG711, TranscodeError};
use crate::recording::{Payload, Side, Tap};

/// Comfort noise (RFC 3389): accepted from the PBX and ignored.
const PT_CN: u8 = 13;
/// Longest G.711 loss (8 kHz samples) filled with silence rather than skipped.
const MAX_FILL_8K: u32 = 800;
/// Largest datagram the relay builds.
const MAX_DATAGRAM: usize = 1500;

/// What the PBX side speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SipCodec {
    Opus { pt: u8 },
    G711 { law: Law, pt: u8, ptime_ms: u32 },
}

impl SipCodec {
    pub fn clock(self) -> u32 {
        match self {
            SipCodec::Opus { .. } => 48_000,
            SipCodec::G711 { .. } => 8_000,
        }
    }
    fn pt(self) -> u8 {
        match self {
            SipCodec::Opus { pt } | SipCodec::G711 { pt, .. } => pt,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub sip_codec: SipCodec,
    /// The PBX's telephone-event payload type and clock, when negotiated.
    pub sip_te: Option<(u8, u32)>,
    /// WhatsApp's telephone-event clock (8000).
    pub wa_te_clock: u32,
    pub rtp_timeout: Duration,
    pub opus: OpusEncoderSettings,
    /// Our SSRC toward the PBX.
    pub ssrc: u32,
    /// Random start of our sequence numbers and timestamps toward the PBX.
    pub first_seq: u16,
    pub first_ts: u32,
}

/// What the relay hands to the WhatsApp leg (the call layer implements it
/// for the WhatsApp session; tests implement it with recorders).
pub trait ToWhatsApp {
    fn audio(&mut self, now: Instant, opus: &[u8], samples_48k: u32);
    /// Audio the PBX sent was lost: advance the WhatsApp stream's timeline by
    /// this much, so WhatsApp's receiver conceals the gap instead of hearing
    /// time squeezed together.
    fn gap(&mut self, samples_48k: u32);
    fn key(&mut self, digit: char, duration: Duration);
}

/// A leg that went silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaTimeout {
    WhatsAppSilent,
    PbxSilent,
}

/// How the relay carries audio: Opus untouched, or transcoded to and from G.711.
enum Mode {
    Passthrough,
    Transcode {
        to_g711: Box<OpusToG711>,
        to_opus: Box<G711ToOpus>,
        /// Our own sequence counter toward the PBX.
        seq: u16,
    },
}

pub struct Relay {
    cfg: RelayConfig,
    mode: Mode,
    rewriter: SeqTsRewriter,
    /// Where our outgoing PBX stream's timeline was at the last audio packet,
    /// and when (for placing DTMF events between audio packets).
    sip_ts_now: u32,
    sip_ts_at: Option<Instant>,
    /// Start of the previous DTMF event on the PBX stream.
    last_event_ts: Option<u32>,
    /// The PBX's next expected RTP timestamp (in its clock), to detect loss.
    sip_expected_ts: Option<u32>,
    events_out: EventMapper,
    keys_in: KeyTracker,
    wa_rx: ReceiveTracker,
    sip_rx: ReceiveTracker,
    sip_source: Option<u32>,
    /// The highest RTP sequence number of the PBX's audio so far (of this
    /// source): what tells a late packet from a new timeline.
    sip_last_seq: Option<u16>,
    pub wa: LegCounters,
    pub sip: LegCounters,
    buf: Box<[u8; MAX_DATAGRAM]>,
    started: Instant,
    last_wa_rx: Option<Instant>,
    last_sip_rx: Option<Instant>,
    pbx_on_hold: bool,
    timed_out: bool,
    /// The call's recording, when it is recorded: each side's audio as it
    /// crossed the bridge.
    tap: Option<Tap>,
}

impl Relay {
    pub fn new(cfg: RelayConfig, now: Instant) -> Result<Relay, TranscodeError> {
        let mode = match cfg.sip_codec {
            SipCodec::Opus { .. } => Mode::Passthrough,
            SipCodec::G711 { law, ptime_ms, .. } => Mode::Transcode {
                to_g711: Box::new(OpusToG711::new(law, ptime_ms)?),
                to_opus: Box::new(G711ToOpus::new(law, cfg.opus)?),
                seq: cfg.first_seq,
            },
        };
        let clock = cfg.sip_codec.clock();
        let te_clock = cfg.sip_te.map(|(_, c)| c).unwrap_or(clock);
        Ok(Relay {
            rewriter: SeqTsRewriter::new(clock, cfg.first_seq, cfg.first_ts),
            sip_ts_now: cfg.first_ts,
            sip_ts_at: None,
            last_event_ts: None,
            sip_expected_ts: None,
            events_out: EventMapper::new(cfg.wa_te_clock, te_clock),
            keys_in: KeyTracker::new(te_clock),
            wa_rx: ReceiveTracker::new(48_000),
            sip_rx: ReceiveTracker::new(clock),
            sip_source: None,
            sip_last_seq: None,
            wa: LegCounters::default(),
            sip: LegCounters::default(),
            buf: Box::new([0; MAX_DATAGRAM]),
            started: now,
            last_wa_rx: None,
            last_sip_rx: None,
            pbx_on_hold: false,
            timed_out: false,
            tap: None,
            mode,
            cfg,
        })
    }

    /// The PBX moved the call to another codec, payload type, packet time
    /// or telephone-event in a re-offer (RFC 3264 §8.3.2): relaying goes on
    /// with `cfg`. Our stream toward the PBX starts afresh under `cfg`'s SSRC
    /// (RFC 7160 §4.1: a stream does not change its clock rate; the PBX's
    /// jitter buffer starts over either way). What the call has counted and
    /// when each side was last heard carry over, so the call record and the
    /// media timeout do not restart. On error (no Opus coder) the relay is
    /// left as it was.
    pub fn change_codec(&mut self, cfg: RelayConfig, now: Instant) -> Result<(), TranscodeError> {
        let next = Relay::new(cfg, now)?;
        let old = std::mem::replace(self, next);
        self.wa = old.wa;
        self.sip = old.sip;
        self.wa_rx = old.wa_rx;
        self.started = old.started;
        self.last_wa_rx = old.last_wa_rx;
        self.last_sip_rx = old.last_sip_rx;
        self.pbx_on_hold = old.pbx_on_hold;
        self.timed_out = old.timed_out;
        self.tap = old.tap;
        Ok(())
    }

    /// Records the call from here on through `tap`.
    pub fn set_tap(&mut self, tap: Tap) {
        self.tap = Some(tap);
    }

    /// The recording's tap, to close it (the call ended).
    pub fn take_tap(&mut self) -> Option<Tap> {
        self.tap.take()
    }

    /// The payload format the PBX side's audio has (what a recording decodes).
    fn sip_payload(&self) -> Payload {
        match self.cfg.sip_codec {
            SipCodec::Opus { .. } => Payload::Opus,
            SipCodec::G711 { law, .. } => Payload::G711(law),
        }
    }

    /// What the relay was built with.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// One Opus packet from WhatsApp; `send` gets each datagram for the PBX.
    /// (The arguments are the RTP fields the WhatsApp leg hands over.)
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn from_whatsapp_audio(
        &mut self,
        now: Instant,
        ssrc: u32,
        seq: u16,
        ts48: u32,
        marker: bool,
        opus: &[u8],
        send: &mut impl FnMut(&[u8]),
    ) {
        self.last_wa_rx = Some(now);
        self.wa.rx.packets += 1;
        self.wa.rx.bytes += opus.len() as u64;
        self.wa.lost += self.wa_rx.on_packet(now, seq, ts48);
        self.wa.jitter_ms = self.wa_rx.jitter_ms();
        let ssrc_out = self.cfg.ssrc;
        let sip_payload = self.sip_payload();
        match &mut self.mode {
            Mode::Passthrough => {
                if opus.len() > MAX_DATAGRAM - HEADER_LEN {
                    self.wa.dropped += 1;
                    return;
                }
                if let Some(t) = self.tap.as_mut() {
                    t.audio(Side::WhatsApp, Payload::Opus, now, opus);
                }
                let (out_seq, out_ts) = self.rewriter.rewrite(ssrc, seq, ts48, now);
                self.sip_ts_now = out_ts;
                self.sip_ts_at = Some(now);
                let pt = self.cfg.sip_codec.pt();
                write_header(&mut self.buf[..], pt, marker, out_seq, out_ts, ssrc_out);
                let len = HEADER_LEN + opus.len();
                self.buf[HEADER_LEN..len].copy_from_slice(opus);
                self.sip.tx.packets += 1;
                self.sip.tx.bytes += len as u64;
                send(&self.buf[..len]);
            }
            Mode::Transcode {
                to_g711,
                seq: out_seq,
                ..
            } => {
                let pt = self.cfg.sip_codec.pt();
                let base = self.cfg.first_ts;
                let buf = &mut self.buf;
                let tx = &mut self.sip.tx;
                let ts_now = &mut self.sip_ts_now;
                let tap = &mut self.tap;
                self.sip_ts_at = Some(now);
                to_g711.push(seq, opus, &mut |g711: &[u8], ts8k: u32| {
                    if let Some(t) = tap.as_mut() {
                        t.audio(Side::WhatsApp, sip_payload, now, g711);
                    }
                    let ts = base.wrapping_add(ts8k);
                    write_header(&mut buf[..], pt, false, *out_seq, ts, ssrc_out);
                    *out_seq = out_seq.wrapping_add(1);
                    let len = HEADER_LEN + g711.len();
                    buf[HEADER_LEN..len].copy_from_slice(g711);
                    tx.packets += 1;
                    tx.bytes += len as u64;
                    *ts_now = ts.wrapping_add(g711.len() as u32);
                    send(&buf[..len]);
                });
            }
        }
    }

    /// One RFC 4733 packet from WhatsApp (in WhatsApp's sequence space).
    #[inline]
    pub fn from_whatsapp_event(
        &mut self,
        now: Instant,
        ssrc: u32,
        seq: u16,
        ts: u32,
        payload: &[u8; 4],
        send: &mut impl FnMut(&[u8]),
    ) {
        self.last_wa_rx = Some(now);
        self.wa.rx.packets += 1;
        self.wa.rx.bytes += 4;
        let Some((te_pt, _)) = self.cfg.sip_te else {
            // The PBX did not negotiate telephone-event: nothing to send it as RTP.
            self.wa.dropped += 1;
            return;
        };
        // A new event starts "now" on the PBX stream's timeline: the last audio
        // timestamp advanced by the time since, and never on a previous event's start.
        let clock = self.cfg.sip_codec.clock();
        let elapsed = self
            .sip_ts_at
            .map(|at| now.saturating_duration_since(at))
            .unwrap_or_default();
        let mut out_now = self
            .sip_ts_now
            .wrapping_add((elapsed.as_micros() as u64 * clock as u64 / 1_000_000) as u32);
        if self.last_event_ts == Some(out_now) {
            out_now = out_now.wrapping_add(1);
        }
        let Some(mapped) = self.events_out.map(ts, payload, out_now) else {
            self.wa.dropped += 1;
            return;
        };
        let out_seq = match &mut self.mode {
            // Same sequence space as the audio: map it the same way.
            Mode::Passthrough => self.rewriter.rewrite(ssrc, seq, self.sip_ts_now, now).0,
            Mode::Transcode { seq: s, .. } => {
                let v = *s;
                *s = s.wrapping_add(1);
                v
            }
        };
        self.last_event_ts = Some(mapped.timestamp);
        write_header(
            &mut self.buf[..],
            te_pt,
            mapped.marker,
            out_seq,
            mapped.timestamp,
            self.cfg.ssrc,
        );
        self.buf[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&mapped.payload);
        self.sip.tx.packets += 1;
        self.sip.tx.bytes += (HEADER_LEN + 4) as u64;
        send(&self.buf[..HEADER_LEN + 4]);
    }

    /// One datagram from the PBX's RTP port. Malformed packets, RTCP on the
    /// RTP port and unknown payload types are dropped and counted.
    #[inline]
    pub fn from_sip(
        &mut self,
        now: Instant,
        datagram: &[u8],
        wa: &mut impl ToWhatsApp,
    ) -> Result<(), RtpError> {
        let p = match RtpView::parse(datagram) {
            Ok(p) => p,
            Err(e) => {
                self.sip.dropped += 1;
                return Err(e);
            }
        };
        self.last_sip_rx = Some(now);
        self.sip.rx.packets += 1;
        self.sip.rx.bytes += datagram.len() as u64;
        if self.sip_source != Some(p.ssrc()) {
            self.sip_source = Some(p.ssrc());
            self.sip_rx.reset();
            self.sip_expected_ts = None;
            self.sip_last_seq = None;
            if let Mode::Transcode { to_opus, .. } = &mut self.mode {
                to_opus.reset_partial();
            }
        }
        let pt = p.payload_type();
        if Some(pt) == self.cfg.sip_te.map(|(pt, _)| pt) {
            // Events share the stream's sequence numbers: counted (or their
            // numbers would read as loss), not timed (their timestamp stays
            // at the key's start).
            self.sip.lost += self
                .sip_rx
                .on_packet_timed(now, p.sequence(), p.timestamp(), false);
            if let Some((digit, duration)) = self.keys_in.on_packet(now, p.timestamp(), p.payload())
            {
                wa.key(digit, duration);
            }
            return Ok(());
        }
        if pt != self.cfg.sip_codec.pt() {
            if pt != PT_CN {
                self.sip.dropped += 1;
            }
            return Ok(());
        }
        self.sip.lost += self.sip_rx.on_packet(now, p.sequence(), p.timestamp());
        self.sip.jitter_ms = self.sip_rx.jitter_ms();
        let clock = self.cfg.sip_codec.clock();
        // RFC 3550 §5.1: the sequence number orders packets; the timestamp
        // may jump either way when the PBX switches what it plays (music on
        // hold, unhold, a transfer, a conference) without a new SSRC. A
        // packet not newer than the last one is late or a duplicate: its
        // time has passed. A newer packet is always played; when its
        // timestamp is behind what we expected, the timeline was rebased:
        // follow it (re-anchor) instead of dropping all that follows.
        // A sequence number far behind (more than RFC 3550 A.1's
        // MAX_MISORDER, 100) is not a late packet but a restarted sequence.
        let step = self
            .sip_last_seq
            .map(|last| p.sequence().wrapping_sub(last) as i16);
        if step.is_some_and(|d| (-100..=0).contains(&d)) {
            return Ok(());
        }
        self.sip_last_seq = Some(p.sequence());
        if let Some(expected) = self.sip_expected_ts {
            let gap = p.timestamp().wrapping_sub(expected);
            if gap >= 0x8000_0000 {
                // Rebased backwards (or overlapping by a few samples): a new
                // timeline from here, nothing to fill.
                self.sip_expected_ts = None;
            }
            // Up to 10 s is loss to bridge over; more is a new timeline.
            if gap > 0 && gap <= clock * 10 {
                match &mut self.mode {
                    // Short losses of G.711 are filled with silence before
                    // encoding: the Opus encoder then sees the tone resume in
                    // phase, which conceals far better than squeezing time or
                    // leaving WhatsApp to conceal a stream whose encoder never
                    // saw the hole.
                    Mode::Transcode { to_opus, .. } if gap <= MAX_FILL_8K => {
                        let tx = &mut self.wa.tx;
                        to_opus.push_silence(gap as usize, &mut |opus: &[u8], samples: u32| {
                            tx.packets += 1;
                            tx.bytes += opus.len() as u64;
                            wa.audio(now, opus, samples);
                        });
                    }
                    Mode::Transcode { to_opus, .. } => {
                        let tx = &mut self.wa.tx;
                        to_opus.flush_partial(&mut |opus: &[u8], samples: u32| {
                            tx.packets += 1;
                            tx.bytes += opus.len() as u64;
                            wa.audio(now, opus, samples);
                        });
                        wa.gap((gap as u64 * 48_000 / clock as u64) as u32);
                    }
                    Mode::Passthrough => wa.gap((gap as u64 * 48_000 / clock as u64) as u32),
                }
            }
        }
        let payload_samples = match self.mode {
            Mode::Passthrough => samples_48k(p.payload()).map(|s| s as u64 * clock as u64 / 48_000),
            Mode::Transcode { .. } => Some(p.payload().len() as u64),
        };
        if let Some(n) = payload_samples {
            self.sip_expected_ts = Some(p.timestamp().wrapping_add(n as u32));
        }
        let sip_payload = self.sip_payload();
        if let Some(t) = self.tap.as_mut() {
            t.audio(Side::Pbx, sip_payload, now, p.payload());
        }
        match &mut self.mode {
            Mode::Passthrough => match samples_48k(p.payload()) {
                Some(samples) => {
                    self.wa.tx.packets += 1;
                    self.wa.tx.bytes += p.payload().len() as u64;
                    wa.audio(now, p.payload(), samples);
                }
                None => self.sip.dropped += 1,
            },
            Mode::Transcode { to_opus, .. } => {
                let tx = &mut self.wa.tx;
                to_opus.push(p.payload(), &mut |opus: &[u8], samples: u32| {
                    tx.packets += 1;
                    tx.bytes += opus.len() as u64;
                    wa.audio(now, opus, samples);
                });
            }
        }
        Ok(())
    }

    /// A key press the PBX sent as SIP INFO: it reaches WhatsApp as RFC 4733.
    pub fn sip_info_dtmf(&mut self, digit: char, duration: Duration, wa: &mut impl ToWhatsApp) {
        if crate::dtmf::event_of(digit).is_some() {
            wa.key(digit, duration);
        }
    }

    /// The PBX put the call on hold (sendonly/inactive) or took it off.
    pub fn set_pbx_on_hold(&mut self, on_hold: bool, now: Instant) {
        self.pbx_on_hold = on_hold;
        if !on_hold {
            // The clock starts again when the hold ends.
            self.last_sip_rx = Some(now);
        }
    }

    /// What our RTCP sender report says about the stream we send the PBX
    /// (`ntp`: the wall clock now): our SSRC's RTP time now, on the
    /// timeline of the last packet sent, with packets and payload octets
    /// so far. `None` when nothing was sent in the last 10 s (RFC 3550
    /// §6.4: then an RR).
    pub fn rtcp_sender(&self, now: Instant, ntp: u64) -> Option<super::rtcp::SenderInfo> {
        let at = self.sip_ts_at?;
        let since = now.checked_duration_since(at)?;
        if since > Duration::from_secs(10) {
            return None;
        }
        let clock = u64::from(self.cfg.sip_codec.clock());
        let elapsed = (since.as_micros() as u64 * clock / 1_000_000) as u32;
        let packets = self.sip.tx.packets;
        Some(super::rtcp::SenderInfo {
            ntp,
            rtp_ts: self.sip_ts_now.wrapping_add(elapsed),
            packets: packets as u32,
            octets: self
                .sip
                .tx
                .bytes
                .saturating_sub(HEADER_LEN as u64 * packets) as u32,
        })
    }

    /// Our report block about the PBX's stream (RFC 3550 A.3), and the
    /// start of the next interval; `None` before its first packet.
    pub fn rtcp_reception(&mut self) -> Option<super::rtcp::Reception> {
        let ssrc = self.sip_source?;
        let f = self.sip_rx.report()?;
        Some(super::rtcp::Reception {
            ssrc,
            fraction_lost: f.fraction_lost,
            cumulative_lost: f.cumulative_lost,
            highest_seq: f.highest_seq,
            jitter: f.jitter,
        })
    }

    /// Timers: key presses whose end never came, and media timeouts (reported once).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        wa: &mut impl ToWhatsApp,
    ) -> Option<MediaTimeout> {
        if let Some((digit, duration)) = self.keys_in.on_timeout(now) {
            wa.key(digit, duration);
        }
        if self.timed_out {
            return None;
        }
        let limit = self.cfg.rtp_timeout;
        let silent = |last: Option<Instant>| now >= last.unwrap_or(self.started) + limit;
        let cause = if silent(self.last_wa_rx) {
            Some(MediaTimeout::WhatsAppSilent)
        } else if !self.pbx_on_hold && silent(self.last_sip_rx) {
            Some(MediaTimeout::PbxSilent)
        } else {
            None
        };
        self.timed_out = cause.is_some();
        cause
    }

    /// When [`Relay::handle_timeout`] should run next.
    pub fn next_timeout(&self) -> Instant {
        let limit = self.cfg.rtp_timeout;
        let wa = self.last_wa_rx.unwrap_or(self.started) + limit;
        let sip = if self.pbx_on_hold {
            wa
        } else {
            self.last_sip_rx.unwrap_or(self.started) + limit
        };
        let t = wa.min(sip);
        match self.keys_in.next_timeout() {
            Some(k) => t.min(k),
            None => t,
        }
    }
}
