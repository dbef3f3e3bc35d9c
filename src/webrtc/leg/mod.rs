//! The WhatsApp media leg as a sans-IO state machine around str0m.
//!
//! A [`WaLeg`] is fed datagrams ([`WaLeg::handle_receive`]) and time
//! ([`WaLeg::handle_timeout`]) and is drained with [`WaLeg::poll_output`] until
//! it returns [`LegOutput::Timeout`], like str0m itself. It never touches a
//! socket or a clock, so tests run it in memory with simulated time.
//!
//! What it adds to str0m, all rules WhatsApp imposes:
//! * full ICE agent in the controlling role, DTLS client when answering
//!   (`a=setup:active`), complete SDP (see [`super::sdp`]);
//! * we send first: from the moment DTLS-SRTP is up, 20 ms Opus silence goes
//!   out whenever the relay has nothing to send, so WhatsApp never sees a
//!   silent leg (it hangs up after ~20 s without our media); str0m's RTCP
//!   reports keep flowing with it;
//! * RTP mode: the leg owns the outgoing sequence numbers and timestamps, so
//!   audio from the relay, silence and RFC 4733 events form one continuous
//!   stream; incoming Opus payloads are handed on untouched;
//! * exactly one [`LegEvent::Ended`] with its cause: connect timeout (ICE or
//!   DTLS never completed), consent lost (RFC 7675), DTLS/SRTP failure, or closed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};

use super::dtls::{self, DtlsLink};
use super::sdp::{self, SdpError};
use crate::dtmf::{self, KeyPress, KeyPressDetector, TelephoneEvent};

/// 20 ms of Opus silence: TOC 0xF8 (CELT, fullband, 20 ms, mono, one frame)
/// followed by a frame that decodes to silence (the usual DTX comfort frame).
pub(crate) const OPUS_SILENCE: [u8; 3] = [0xf8, 0xff, 0xfe];

/// Samples per 20 ms at Opus' 48 kHz RTP clock.
const FRAME_48K: u32 = 960;
const FRAME: Duration = Duration::from_millis(20);
/// Without audio from the relay for this long, the leg fills in silence itself.
const IDLE_AFTER: Duration = Duration::from_millis(60);
/// RFC 4733 §5: a gap between successive events.
const DTMF_GAP: Duration = Duration::from_millis(50);
/// RFC 4733 §2.5.1.4: the end packet is sent three times.
const DTMF_END_REPEATS: u8 = 3;
const DTMF_VOLUME: u8 = 10;
/// Deadlines that may run late share one grid of this step (from the leg's
/// start): str0m's housekeeping once connected (ICE keep-alives and consent,
/// RTCP reports, pause checks) and our check for the relay going quiet.
/// While media flows, due housekeeping runs on the next packet anyway (due
/// timeouts are handled in `poll_output`); the grid only stops these from
/// asking for wake-ups of their own: they were about 50 a second per leg,
/// each a full str0m timeout sweep, and are at most 10 on the grid.
const LAZY_GRID: Duration = Duration::from_millis(100);
/// Already-due str0m timeouts handled within one `poll_output` call.
const MAX_DUE_TIMEOUTS: u32 = 4;
/// Audio from the PBX held while the leg connects, in 20 ms frames (1 s).
/// An inbound call is accepted at Wati when the PBX answers, and WhatsApp
/// can only start ICE and DTLS once it has our answer, so the PBX's first
/// words (an IVR greeting) come before the leg can carry them. Meta's
/// advice for that clipping is to hold the audio until the leg is up; the
/// newest second is kept, which bounds the extra delay the caller's jitter
/// buffer then has to absorb.
const HELD_MAX: usize = 50;
/// Held packets handed to str0m at a time (each batch goes out before the
/// next is written): its send queue keeps the capacity it once grew to, and
/// a whole second written at once would stay allocated for the call.
const HELD_PER_ROUND: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LegError {
    #[error("SDP: {0}")]
    Sdp(#[from] SdpError),
    #[error("str0m: {0}")]
    Rtc(String),
    #[error("no pending offer to apply an answer to")]
    NoPendingOffer,
    #[error("the answer has no Opus")]
    AnswerWithoutOpus,
}

fn rtc_err(e: impl std::fmt::Display) -> LegError {
    LegError::Rtc(e.to_string())
}

/// Why a leg ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEnd {
    /// ICE and DTLS did not complete within the connect timeout.
    ConnectTimeout,
    /// Connectivity checks went unanswered for the consent timeout (RFC 7675).
    ConsentLost,
    /// DTLS or SRTP failed, or str0m refused to go on.
    Failed(String),
    /// [`WaLeg::close`] was called.
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegEvent {
    /// ICE and DTLS-SRTP are up; media flows.
    Connected,
    /// An Opus packet from WhatsApp, payload untouched. Hand the payload
    /// back with [`WaLeg::recycle`] once used, and no packet allocates.
    Audio {
        ssrc: u32,
        /// RTP timestamp (48 kHz).
        timestamp: u32,
        seq: u16,
        marker: bool,
        payload: Vec<u8>,
    },
    /// A key press (RFC 4733), once per event.
    Dtmf(KeyPress),
    /// Every RFC 4733 packet as received (updates, repeats, end packets), for
    /// relaying the event packet by packet.
    TelephoneEvent {
        ssrc: u32,
        seq: u16,
        timestamp: u32,
        payload: [u8; 4],
    },
    /// The leg is over; nothing more will come out of it except its transmits.
    Ended(LegEnd),
}

#[derive(Debug)]
pub enum LegOutput {
    /// A datagram to send; hand `data` back with [`WaLeg::recycle`] once sent.
    Transmit {
        from: SocketAddr,
        to: SocketAddr,
        data: Vec<u8>,
    },
    Event(LegEvent),
    /// Call [`WaLeg::handle_timeout`] at this instant (or on the next input).
    Timeout(Instant),
}

/// Where the leg's socket is and how long it may take to connect.
#[derive(Debug, Clone)]
pub struct LegConfig {
    /// The local address of this call's UDP socket.
    pub local: SocketAddr,
    /// The address advertised in our candidate (public IP, same port).
    pub advertised: SocketAddr,
    pub connect_timeout: Duration,
    /// RFC 7675: consent expires 30 s after the last successful check.
    pub consent_timeout: Duration,
    /// Where our RTP sequence number and timestamp start (RFC 3550 §5.1:
    /// random); [`LegConfig::new`] draws it, a test may fix it.
    pub rtp_seed: u64,
    /// The wall clock in NTP format when the leg is made (our RTCP sender
    /// reports and round trips); [`LegConfig::new`] reads it.
    pub ntp_at_start: u64,
}

impl LegConfig {
    pub fn new(local: SocketAddr, advertised: SocketAddr) -> LegConfig {
        LegConfig {
            local,
            advertised,
            connect_timeout: Duration::from_secs(15),
            consent_timeout: Duration::from_secs(30),
            rtp_seed: rand::random(),
            ntp_at_start: crate::media::rtcp::ntp_now(std::time::SystemTime::now()),
        }
    }
}

/// Counters for the call record and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LegStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub silence_packets: u64,
    /// Audio held before the leg connected and sent once it did.
    pub held_packets: u64,
    /// Audio held before the leg connected that [`HELD_MAX`] pushed out.
    pub held_dropped: u64,
    /// Datagrams that were not ours or not valid, dropped.
    pub dropped: u64,
    /// The round trip to WhatsApp and its loss of our stream (‰), from its
    /// last RTCP report about our stream.
    pub rtt: Option<std::time::Duration>,
    pub peer_loss_permille: Option<u32>,
}

/// One RFC 4733 event being sent.
#[derive(Debug, Clone, Copy)]
struct DtmfSend {
    event: u8,
    /// RTP timestamp of the event start (in the audio's 48 kHz timeline).
    timestamp: u32,
    /// Total length in telephone-event clock units.
    total: u32,
    /// Sent so far, in telephone-event clock units.
    sent: u32,
    ends_left: u8,
    first: bool,
    next_at: Instant,
}

pub struct WaLeg {
    /// Boxed: str0m's session is ~10 KiB, and inline it would be copied into
    /// every call-task state that holds the leg (it was, twice over, in the
    /// outbound call's future).
    rtc: Box<Rtc>,
    cfg: LegConfig,
    /// Our offer is out and WhatsApp's answer not applied yet.
    offered: bool,
    opus_pt: Pt,
    /// (payload type, clock rate) of telephone-event, when negotiated.
    te: Option<(Pt, u32)>,
    /// The SSRC we send with ([`setup::our_ssrc`]), declared in our SDP.
    ssrc: u32,
    seq: u64,
    ts: u32,
    connected: bool,
    ended: bool,
    started: Instant,
    /// When the leg was made: the instant of [`LegConfig::ntp_at_start`].
    created: Instant,
    /// The latest instant fed in (events from str0m carry no time of their own).
    now: Instant,
    /// Last time any RTP went out (audio, silence or event).
    last_sent: Option<Instant>,
    /// Last time the relay gave us audio.
    last_audio: Option<Instant>,
    next_silence: Option<Instant>,
    /// Relay audio (payload, samples) that came before the leg connected.
    held: VecDeque<(Vec<u8>, u32)>,
    /// Where str0m sent DTLS last: the nominated ICE pair, where SRTP goes.
    media_to: Option<SocketAddr>,
    /// RTP and RTCP once connected (see [`own_media`]).
    own: Option<OwnMedia>,
    dtmf_queue: VecDeque<(u8, Duration)>,
    dtmf: Option<DtmfSend>,
    dtmf_not_before: Option<Instant>,
    disconnected_since: Option<Instant>,
    keys: KeyPressDetector,
    events: VecDeque<LegEvent>,
    stats: LegStats,
    /// Shared with the DTLS association: its SRTP keys, and our word at the
    /// peer's first SRTP packet that its handshake is over (see
    /// [`super::dtls::DtlsLink`]).
    link: Option<DtlsLink>,
    peer_finished_told: bool,
}

/// How long one process certificate is used: well inside its one-year
/// validity, so that no call ever presents an expired certificate.
const CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

mod own_media;
mod send;
mod setup;

use own_media::{Incoming, OwnMedia, RtpIn};

pub(crate) use setup::prepare;

impl WaLeg {
    fn new(rtc: Rtc, link: Option<DtlsLink>, cfg: LegConfig, now: Instant) -> WaLeg {
        let seed = cfg.rtp_seed;
        WaLeg {
            rtc: Box::new(rtc),
            offered: false,
            opus_pt: 111.into(),
            te: None,
            ssrc: setup::our_ssrc(seed),
            seq: seed & 0x7fff,
            ts: (seed >> 16) as u32,
            connected: false,
            ended: false,
            started: now,
            created: now,
            now,
            last_sent: None,
            last_audio: None,
            next_silence: None,
            held: VecDeque::new(),
            media_to: None,
            own: None,
            dtmf_queue: VecDeque::new(),
            dtmf: None,
            dtmf_not_before: None,
            disconnected_since: None,
            keys: KeyPressDetector::default(),
            events: VecDeque::new(),
            stats: LegStats::default(),
            link,
            peer_finished_told: false,
            cfg,
        }
    }

    pub fn stats(&self) -> LegStats {
        let mut s = self.stats;
        if let Some(own) = &self.own {
            let r = own.rtcp_stats();
            s.rtt = own.rtt();
            s.peer_loss_permille = r.peer_fraction_lost.map(|f| (u32::from(f) * 1000) / 256);
        }
        s
    }

    /// Takes back a buffer the leg handed out (a sent datagram's, an audio
    /// event's payload) for its next packet.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        if let Some(own) = self.own.as_mut() {
            own.recycle(buf);
        }
    }

    /// Whether the leg has told its DTLS association that the peer's
    /// handshake is over (its first SRTP arrived), so that a DTLS server
    /// frees its state. For tests.
    #[doc(hidden)]
    pub fn told_dtls_peer_finished(&self) -> bool {
        self.peer_finished_told
    }

    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Feeds one datagram received on the leg's socket. Anything that is not
    /// for this session, or is malformed, is dropped and counted.
    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if self.ended {
            return;
        }
        self.now = self.now.max(now);
        // RFC 7983 §7: 128..=191 is RTP or RTCP, ours once connected; STUN
        // and DTLS are str0m's.
        if data.first().is_some_and(|b| (128..=191).contains(b)) {
            self.receive_media(now, from, data);
            return;
        }
        let Ok(recv) = Receive::new(Protocol::Udp, from, self.cfg.local, data) else {
            self.stats.dropped += 1;
            return;
        };
        let input = Input::Receive(now, recv);
        if !self.rtc.accepts(&input) {
            self.stats.dropped += 1;
            return;
        }
        self.stats.rx_bytes += data.len() as u64;
        if let Err(e) = self.rtc.handle_input(input) {
            // A bad packet from the peer's address: drop it, the session goes on.
            self.stats.dropped += 1;
            tracing::debug!(error = %e, "WhatsApp leg: input dropped");
        }
    }

    /// SRTP or SRTCP from WhatsApp: from the address we send media to (or
    /// another pair ICE validated), checked and decrypted with the keys of
    /// this leg's DTLS. Audio from any SSRC that authenticates is taken:
    /// WhatsApp's offer need not announce it (some carry no `a=ssrc`, and a
    /// media server may switch streams); only WhatsApp has the key.
    fn receive_media(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        let Some(own) = self.own.as_mut() else {
            self.stats.dropped += 1;
            return;
        };
        if from != own.to {
            let known = Receive::new(Protocol::Udp, from, self.cfg.local, data)
                .is_ok_and(|r| self.rtc.accepts(&Input::Receive(now, r)));
            if !known {
                self.stats.dropped += 1;
                return;
            }
        }
        match own.receive(now, data) {
            Ok(Incoming::Rtp(p)) => {
                self.stats.rx_bytes += data.len() as u64;
                self.stats.rx_packets += 1;
                if !self.peer_finished_told {
                    if let Some(h) = &self.link {
                        h.set_peer_finished();
                        self.peer_finished_told = true;
                    }
                }
                self.on_rtp(p);
            }
            Ok(Incoming::Rtcp) => self.stats.rx_bytes += data.len() as u64,
            Err(_) => self.stats.dropped += 1,
        }
    }

    fn on_rtp(&mut self, p: RtpIn) {
        let RtpIn {
            ssrc,
            seq,
            timestamp,
            marker,
            pt,
            payload,
        } = p;
        let pt = Pt::from(pt);
        if pt == self.opus_pt {
            self.events.push_back(LegEvent::Audio {
                ssrc,
                timestamp,
                seq,
                marker,
                payload,
            });
            return;
        }
        if self.te.is_some_and(|(te, _)| te == pt) {
            if let Some(k) = self.keys.on_packet(timestamp, &payload) {
                self.events.push_back(LegEvent::Dtmf(k));
            }
            if let Some(b) = payload.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) {
                self.events.push_back(LegEvent::TelephoneEvent {
                    ssrc,
                    seq,
                    timestamp,
                    payload: b,
                });
            }
        }
        self.recycle(payload);
    }

    /// Advances the leg's clock: str0m's timers, silence, DTMF, deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.ended {
            return;
        }
        self.now = self.now.max(now);
        if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
            self.end(LegEnd::Failed(e.to_string()));
            return;
        }
        if !self.connected && now >= self.started + self.cfg.connect_timeout {
            self.end(LegEnd::ConnectTimeout);
            return;
        }
        if let Some(since) = self.disconnected_since {
            if now >= since + self.cfg.consent_timeout {
                self.end(LegEnd::ConsentLost);
                return;
            }
        }
        if self.connected {
            self.drive_dtmf(now);
            self.drive_silence(now);
            if let Some(own) = self.own.as_mut() {
                own.handle_timeout(now);
            }
        }
    }

    /// Ends the leg (the call is over). A final RTCP BYE is not required by
    /// WhatsApp; the terminate API call tells it.
    pub fn close(&mut self) {
        self.end(LegEnd::Closed);
        self.rtc.disconnect();
    }

    fn end(&mut self, cause: LegEnd) {
        if !self.ended {
            self.ended = true;
            self.events.push_back(LegEvent::Ended(cause));
        }
    }

    /// The first point of the [`LAZY_GRID`] at or after `t`.
    fn on_grid(&self, t: Instant) -> Instant {
        let step = LAZY_GRID.as_nanos();
        let since = t.saturating_duration_since(self.started).as_nanos();
        let steps = since.div_ceil(step);
        self.started + Duration::from_nanos((steps * step).min(u64::MAX as u128) as u64)
    }

    fn next_own_timeout(&self) -> Option<Instant> {
        if self.ended {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut consider = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        if !self.connected {
            consider(Some(self.started + self.cfg.connect_timeout));
        } else {
            if let Some(d) = &self.dtmf {
                consider(Some(d.next_at));
            } else if !self.dtmf_queue.is_empty() {
                consider(Some(self.dtmf_not_before.unwrap_or(self.now)));
            }
            if let Some(own) = &self.own {
                consider(Some(self.on_grid(own.next_timeout())));
            }
            let relay_active_until = self.last_audio.map(|t| self.on_grid(t + IDLE_AFTER));
            match self.next_silence {
                Some(s) => consider(Some(s)),
                // Silence starts once the relay has been quiet for a while (or at once).
                None => consider(Some(relay_active_until.unwrap_or(self.now))),
            }
        }
        if let Some(since) = self.disconnected_since {
            consider(Some(since + self.cfg.consent_timeout));
        }
        t
    }

    /// Drains what the leg has to say; call until it returns [`LegOutput::Timeout`].
    pub fn poll_output(&mut self) -> LegOutput {
        // str0m moves a written RTP packet to the wire only on its next
        // timeout, which it reports as already due. Handling such timeouts
        // here, with the time last fed in, sends the packet now instead of
        // after a round through the runtime's timer: that round was one
        // wake-up per sent packet. Bounded, in case a deadline stays due.
        let mut due_handled = 0;
        loop {
            if let Some(e) = self.events.pop_front() {
                return LegOutput::Event(e);
            }
            if let Some(own) = self.own.as_mut() {
                if let Some(data) = own.poll_transmit() {
                    return LegOutput::Transmit {
                        from: self.cfg.local,
                        to: own.to,
                        data,
                    };
                }
            }
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    self.end(LegEnd::Failed(e.to_string()));
                    continue;
                }
            };
            match out {
                Output::Transmit(t) => {
                    // RFC 7983: DTLS goes only to the nominated pair.
                    if t.contents.first().is_some_and(|b| (20..=63).contains(b)) {
                        self.media_to = Some(t.destination);
                    }
                    return LegOutput::Transmit {
                        from: t.source,
                        to: t.destination,
                        data: t.contents.into(),
                    };
                }
                Output::Timeout(rtc_at)
                    if rtc_at <= self.now && due_handled < MAX_DUE_TIMEOUTS && !self.ended =>
                {
                    due_handled += 1;
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(self.now)) {
                        self.end(LegEnd::Failed(e.to_string()));
                    }
                }
                // Nothing due: the next batch of held audio, if any.
                Output::Timeout(rtc_at)
                    if rtc_at > self.now
                        && self.connected
                        && !self.ended
                        && !self.held.is_empty() =>
                {
                    self.send_held();
                }
                Output::Timeout(rtc_at) => {
                    let rtc_at =
                        if self.connected && is_housekeeping(self.rtc.last_timeout_reason()) {
                            self.on_grid(rtc_at.max(self.now))
                        } else {
                            rtc_at
                        };
                    let at = match self.next_own_timeout() {
                        Some(own) => own.min(rtc_at),
                        None => rtc_at,
                    };
                    return LegOutput::Timeout(at);
                }
                Output::Event(e) => self.on_rtc_event(e),
            }
        }
    }

    /// Connected: the keys our DTLS exported (str0m has checked the peer's
    /// certificate against the SDP fingerprint by now), to the address str0m
    /// sent DTLS to.
    fn start_own_media(&mut self) -> Result<(), String> {
        let keys = self
            .link
            .as_ref()
            .and_then(DtlsLink::take_keys)
            .ok_or("DTLS gave no SRTP keys")?;
        let to = self.media_to.ok_or("no ICE pair for media")?;
        let ssrc = self.ssrc;
        let base = (self.created, self.cfg.ntp_at_start);
        let own = OwnMedia::new(&keys, to, ssrc, self.now, base, self.cfg.rtp_seed)
            .map_err(|e| format!("SRTP: {e}"))?;
        self.own = Some(own);
        Ok(())
    }

    fn on_rtc_event(&mut self, e: Event) {
        match e {
            Event::Connected if !self.connected && !self.ended => {
                self.connected = true;
                if let Err(why) = self.start_own_media() {
                    self.end(LegEnd::Failed(why));
                    return;
                }
                // Held audio goes out from `poll_output`, in batches.
                self.events.push_back(LegEvent::Connected);
            }
            Event::IceConnectionStateChange(state) => match state {
                IceConnectionState::Disconnected
                    if self.connected && self.disconnected_since.is_none() =>
                {
                    self.disconnected_since = Some(self.now);
                }
                IceConnectionState::Connected | IceConnectionState::Completed => {
                    self.disconnected_since = None;
                }
                _ => {}
            },
            Event::PeerStats(s) => {
                // ICE may move to another pair; media follows it.
                if let (Some(own), Some(pair)) = (self.own.as_mut(), s.selected_candidate_pair) {
                    own.to = pair.remote.addr;
                }
            }
            _ => {}
        }
    }
}

/// str0m deadlines that may wait for the [`LAZY_GRID`]: nothing here moves
/// media or the handshake (those are DTLS, SendStream, Pacer, Nack).
fn is_housekeeping(reason: str0m::Reason) -> bool {
    use str0m::Reason::*;
    matches!(reason, Ice | Feedback | PauseCheck | Stats | NotHappening)
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::setup::shared_cert;
    use super::*;
    use str0m::media::Mid;

    #[test]
    fn the_process_certificate_is_replaced_before_it_expires() {
        let now = Instant::now();
        let first = shared_cert(now).unwrap();
        let an_hour_on = shared_cert(now + Duration::from_secs(3600)).unwrap();
        assert_eq!(an_hour_on.certificate, first.certificate, "shared");
        let later = now + CERT_LIFETIME;
        let renewed = shared_cert(later).unwrap();
        assert_ne!(renewed.certificate, first.certificate, "replaced");
        let after = shared_cert(later + Duration::from_secs(1)).unwrap();
        assert_eq!(after.certificate, renewed.certificate);
        // Each one is valid well past the time it is used for.
        let x509 = openssl::x509::X509::from_der(&renewed.certificate).unwrap();
        let used_until = openssl::asn1::Asn1Time::days_from_now(2 * 30).unwrap();
        assert!(x509.not_after() > used_until, "{}", x509.not_after());
    }

    fn ssrc_lines(sdp: &str) -> Vec<&str> {
        sdp.lines().filter(|l| l.starts_with("a=ssrc:")).collect()
    }

    /// The `a=mid` of our (single-section) SDP.
    fn mid_of(sdp: &str) -> Mid {
        sdp.lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .expect("our SDP has a=mid")
            .into()
    }

    #[test]
    fn str0m_keeps_no_rtp_stream_and_the_sdp_declares_the_one_the_leg_sends() {
        // Test code: every unwrap is on an SDP or address this test made;
        // one failing is the test failing.
        let now = Instant::now();
        let addr: SocketAddr = "127.0.0.1:40002".parse().unwrap();
        let mut cfg = LegConfig::new(addr, addr);
        cfg.rtp_seed = 0x0123_4567_89ab_cdef;
        let ssrc = setup::our_ssrc(cfg.rtp_seed);
        let cname = crate::media::rtcp::cname_for(ssrc, cfg.rtp_seed);
        let offer = crate::webrtc::sdp::tests::WA_OFFER;

        let (mut leg, answer) = WaLeg::answer(offer, cfg.clone(), now).unwrap();
        assert_eq!(leg.ssrc, ssrc);
        assert!(answer.contains("\r\na=sendrecv\r\n"), "{answer}");
        assert_eq!(
            ssrc_lines(&answer),
            [
                format!("a=ssrc:{ssrc} cname:{cname}"),
                format!("a=ssrc:{ssrc} msid:c3867497-e6f7-4408-82b7-80dbd11b94cf WhatsAppTrack1"),
            ]
        );
        let mid = mid_of(&answer);
        let mut api = leg.rtc.direct_api();
        assert!(api.stream_tx_by_mid(mid, None).is_none());
        assert!(api.stream_rx_by_mid(mid, None).is_none());

        // An offer WhatsApp only sends in: answered recvonly, nothing declared.
        let sendonly = offer.replace("a=sendrecv", "a=sendonly");
        let (_, answer) = WaLeg::answer(&sendonly, cfg.clone(), now).unwrap();
        assert!(answer.contains("\r\na=recvonly\r\n"), "{answer}");
        assert!(ssrc_lines(&answer).is_empty(), "{answer}");
        // One it only receives in: we send only.
        let recvonly = offer.replace("a=sendrecv", "a=recvonly");
        let (_, answer) = WaLeg::answer(&recvonly, cfg.clone(), now).unwrap();
        assert!(answer.contains("\r\na=sendonly\r\n"), "{answer}");
        assert_eq!(ssrc_lines(&answer).len(), 2, "{answer}");

        // Our offer carries our SSRC and CNAME, not str0m's.
        let (mut leg, offer) = WaLeg::offer(cfg, now).unwrap();
        assert_eq!(leg.ssrc, ssrc);
        assert!(offer.contains("\r\na=sendrecv\r\n"), "{offer}");
        let lines = ssrc_lines(&offer);
        assert_eq!(lines.len(), 2, "{offer}");
        assert_eq!(lines[0], format!("a=ssrc:{ssrc} cname:{cname}"));
        assert!(
            lines[1].starts_with(&format!("a=ssrc:{ssrc} msid:")),
            "{offer}"
        );
        // WhatsApp's answer is applied without str0m declaring the stream
        // the offer announced.
        let peer_addr: SocketAddr = "127.0.0.1:3484".parse().unwrap();
        let (_peer, answer) =
            crate::demo::wa_peer::WaPeer::answer(&offer, peer_addr, now, None).unwrap();
        leg.apply_answer(now, &answer).unwrap();
        let mid = mid_of(&offer);
        let mut api = leg.rtc.direct_api();
        assert!(api.stream_tx_by_mid(mid, None).is_none());
        assert!(api.stream_rx_by_mid(mid, None).is_none());
        // Only once.
        assert!(matches!(
            leg.apply_answer(now, &answer),
            Err(LegError::NoPendingOffer)
        ));
    }
}
