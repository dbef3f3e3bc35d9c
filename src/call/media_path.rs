//! One call's media: the WhatsApp leg on its UDP socket, the PBX's RTP pair
//! and the relay between them. [`MediaPath::next`] forwards packets both ways
//! and returns only what the call's logic must decide on.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::Codec;
use crate::lazy_timer::LazyTimer;
use crate::media::g711::Law;
use crate::media::quality::{self, CallQuality};
use crate::media::relay::{MediaTimeout, Relay, RelayConfig, SipCodec, ToWhatsApp};
use crate::media::rtcp::{ntp_now, RtcpSession, RtcpStats};
use crate::media::sdes::{self, Agreement, SrtpPolicy};
use crate::media::socket::{Received, RtpSocket};
use crate::media::srtp::{SrtpError, SrtpSession};
use crate::media::transcode::TranscodeError;
use crate::sip::sdp::{self, LocalSdp, MediaDirection, Negotiated, SdpOrigin};
use crate::store::{now_ms, MediaCounters};
use crate::webrtc::udp::LegSocket;
use crate::webrtc::{LegEnd, LegEvent, WaLeg};

/// Why the relay could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error(transparent)]
    Transcode(#[from] TranscodeError),
    /// The call has no media path (a bug in the call's rules if it happens).
    #[error("no media path")]
    NoMediaPath,
    /// SDES could not agree on SRTP with the PBX (`media.srtp`).
    #[error("srtp: {0}")]
    Sdes(#[from] sdes::SdesError),
    #[error("srtp: {0}")]
    Srtp(#[from] SrtpError),
}

/// The relay's view of the WhatsApp leg.
pub(crate) struct WaSink<'a>(pub &'a mut WaLeg);

impl ToWhatsApp for WaSink<'_> {
    fn audio(&mut self, now: Instant, opus: &[u8], samples: u32) {
        self.0.send_audio(now, opus, samples);
    }
    fn gap(&mut self, samples: u32) {
        self.0.skip(samples);
    }
    fn key(&mut self, digit: char, duration: Duration) {
        self.0.send_dtmf(digit, duration);
    }
}

/// What the call's logic hears from its media.
#[derive(Debug)]
pub(crate) enum PathEvent {
    /// ICE and DTLS-SRTP with WhatsApp are up.
    Connected,
    /// The WhatsApp leg failed or closed.
    LegEnded(LegEnd),
    /// No RTP from one side for `media.rtp_timeout_s`.
    Timeout(MediaTimeout),
}

pub(crate) fn relay_config(n: &Negotiated, rtp_timeout: Duration) -> RelayConfig {
    let sip_codec = match n.codec {
        Codec::Opus => SipCodec::Opus { pt: n.pt },
        Codec::Pcmu => SipCodec::G711 {
            law: Law::Mu,
            pt: n.pt,
            ptime_ms: n.ptime,
        },
        Codec::Pcma => SipCodec::G711 {
            law: Law::A,
            pt: n.pt,
            ptime_ms: n.ptime,
        },
    };
    // RFC 3550 §5.1, §8: random SSRC and starting points (ThreadRng: a CSPRNG).
    let r: u64 = rand::random();
    RelayConfig {
        sip_codec,
        sip_te: n.telephone_event,
        wa_te_clock: 8000,
        rtp_timeout,
        opus: Default::default(),
        ssrc: r as u32,
        first_seq: (r >> 32) as u16,
        first_ts: (r >> 16) as u32,
    }
}

/// Our SDP (an offer of `codecs`, or the answer for `chosen`) under the
/// call's `o=` line.
fn stamped_sdp(
    origin: &mut SdpOrigin,
    addr: SocketAddr,
    codecs: &[Codec],
    chosen: Option<&Negotiated>,
    sdes: (bool, &[sdes::CryptoLine]),
) -> String {
    let direction = chosen.map_or(MediaDirection::SendRecv, |n| n.our_direction);
    origin.stamp(|session_id, version| {
        let sdp = LocalSdp {
            session_id,
            version,
            addr,
            codecs,
            chosen,
            direction,
        }
        .render();
        sdes::add_to_sdp(sdp, sdes.0, sdes.1)
    })
}

/// A fresh SRTP master key and salt from the OS's CSPRNG (never logged).
fn new_key(len: usize) -> Vec<u8> {
    let mut k = vec![0u8; len];
    rand::fill(&mut k[..]);
    k
}

pub(crate) struct MediaPath {
    pub leg: LegSocket,
    pub rtp: RtpSocket,
    relay: Option<Relay>,
    negotiated: Option<Negotiated>,
    /// Our RTP address as written in SDP.
    pub local_media: SocketAddr,
    /// The `o=` line of every SDP the call sends the PBX.
    origin: SdpOrigin,
    /// The relay's timer (media timeout, SIP INFO key ends): its deadline
    /// moves later with every packet.
    relay_timer: LazyTimer,
    /// `media.srtp`, our offer's `a=crypto` lines (once we offered), and
    /// the line of ours SRTP runs under (once agreed).
    srtp: SrtpPolicy,
    sdes_offer: Vec<sdes::CryptoLine>,
    sdes_agreed: Option<sdes::CryptoLine>,
    /// The PBX's line SRTP runs under.
    sdes_theirs: Option<sdes::CryptoLine>,
    /// RTCP with the PBX (RFC 3550), once the relay runs, and its timer.
    rtcp: Option<RtcpSession>,
    rtcp_timer: LazyTimer,
    /// Where the live call's quality is shown (`GET /calls`): the registry
    /// and the call's id there.
    live: Option<(std::sync::Arc<crate::call::registry::Registry>, u64)>,
}

impl MediaPath {
    pub(crate) fn new(
        leg: LegSocket,
        rtp: RtpSocket,
        public_ip: std::net::IpAddr,
        srtp: SrtpPolicy,
    ) -> MediaPath {
        let local_media = SocketAddr::new(public_ip, rtp.port());
        MediaPath {
            leg,
            rtp,
            relay: None,
            negotiated: None,
            local_media,
            origin: SdpOrigin::new(now_ms() as u64),
            relay_timer: LazyTimer::default(),
            srtp,
            sdes_offer: Vec::new(),
            sdes_agreed: None,
            sdes_theirs: None,
            rtcp: None,
            rtcp_timer: LazyTimer::default(),
            live: None,
        }
    }

    /// Starts relaying with the codec agreed with the PBX.
    pub(crate) fn start_relay(
        &mut self,
        n: Negotiated,
        rtp_timeout: Duration,
    ) -> Result<(), RelayError> {
        self.agree_srtp(&n)?;
        self.rtp.set_remote(n.remote);
        self.rtp.set_rtcp_mux(n.rtcp_mux);
        let cfg = relay_config(&n, rtp_timeout);
        let now = Instant::now();
        self.rtcp = Some(RtcpSession::new(cfg.ssrc, now, rand::random()));
        self.relay = Some(Relay::new(cfg, now)?);
        self.negotiated = Some(n);
        Ok(())
    }

    /// Records the call from here on (`[recording]`) into `<name>.<ext>`:
    /// 8 kHz when the PBX speaks G.711, 16 kHz when Opus passes through.
    pub(crate) fn record(&mut self, recorder: &crate::recording::Recorder, name: String) {
        let Some(r) = self.relay.as_mut() else { return };
        let rate = match r.config().sip_codec {
            SipCodec::G711 { .. } => 8000,
            SipCodec::Opus { .. } => 16000,
        };
        if let Some(tap) = recorder.open(name, rate) {
            r.set_tap(tap);
        }
    }

    /// Shows the call's quality in the registry's entry `id` from now on,
    /// with each RTCP report.
    pub(crate) fn show_quality(
        &mut self,
        registry: std::sync::Arc<crate::call::registry::Registry>,
        id: u64,
    ) {
        self.live = Some((registry, id));
    }

    /// Completes the call's recording, if it has one.
    pub(crate) async fn stop_recording(&mut self) -> Option<crate::recording::Recorded> {
        let tap = self.relay.as_mut()?.take_tap()?;
        Some(tap.close().await)
    }

    /// The PBX moved its media (a 200 after a 183 with another address).
    pub(crate) fn set_pbx_remote(&mut self, remote: Option<SocketAddr>) {
        if remote.is_some() {
            self.rtp.set_remote(remote);
        }
    }

    pub(crate) fn codec(&self) -> Option<Codec> {
        self.negotiated.as_ref().map(|n| n.codec)
    }

    /// Our first RTP offer (an inbound call's INVITE): every codec of
    /// `codecs`, and with `media.srtp` our `a=crypto` lines (the same keys
    /// for every offer of the call: a transfer's INVITE too).
    pub(crate) fn offer_sdp(&mut self, codecs: &[Codec]) -> String {
        if self.srtp != SrtpPolicy::Off && self.sdes_offer.is_empty() {
            self.sdes_offer = sdes::offer(new_key);
        }
        let savp = self.srtp == SrtpPolicy::Required;
        stamped_sdp(
            &mut self.origin,
            self.local_media,
            codecs,
            None,
            (savp, &self.sdes_offer),
        )
    }

    /// SDES for the PBX's SDP in `n` (RFC 4568): an answer to our offer
    /// when we made one, else its offer; the socket goes SRTP or plain as
    /// agreed. `Err` when `media.srtp` cannot be met (the call's 488).
    pub(crate) fn agree_srtp(&mut self, n: &Negotiated) -> Result<(), RelayError> {
        let agreement = if self.sdes_offer.is_empty() {
            sdes::on_offer(self.srtp, n.remote_savp, &n.remote_crypto, new_key)?
        } else {
            sdes::on_answer(self.srtp, &self.sdes_offer, n.remote_savp, &n.remote_crypto)?
        };
        self.use_agreement(agreement)
    }

    /// SDES for a re-offer from the PBX: its lines decide again; our key
    /// stays while the suite does (RFC 4568 §7.1.4: new keys only when the
    /// parameters change), and the contexts are rebuilt when either key
    /// changed.
    fn agree_srtp_reoffer(&mut self, n: &Negotiated) -> Result<(), RelayError> {
        let current = self.sdes_agreed.clone();
        let agreement =
            sdes::on_offer(
                self.srtp,
                n.remote_savp,
                &n.remote_crypto,
                |len| match &current {
                    Some(c) if c.key.len() == len => c.key.clone(),
                    _ => new_key(len),
                },
            )?;
        self.use_agreement(agreement)
    }

    fn use_agreement(&mut self, agreement: Agreement) -> Result<(), RelayError> {
        match agreement {
            Agreement::Plain => {
                self.rtp.set_srtp(None);
                self.sdes_agreed = None;
                self.sdes_theirs = None;
            }
            Agreement::Srtp { ours, theirs } => {
                // The same keys again (a repeated SDP): the contexts stay,
                // with their rollover counters and replay windows.
                let same = self.sdes_agreed.as_ref() == Some(&ours)
                    && self.sdes_theirs.as_ref() == Some(&theirs)
                    && self.rtp.has_srtp();
                if !same {
                    let tx = SrtpSession::new(ours.suite, &ours.key, true)?;
                    let rx = SrtpSession::new(theirs.suite, &theirs.key, false)?;
                    self.rtp.set_srtp(Some((tx, rx)));
                    tracing::info!(suite = ours.suite.name(), "SRTP with the PBX (SDES)");
                }
                self.sdes_agreed = Some(ours);
                self.sdes_theirs = Some(theirs);
            }
        }
        Ok(())
    }

    /// Our RTP SDP for the agreed codec (an answer, or our offer when a
    /// re-INVITE came without one).
    pub(crate) fn local_sdp(&mut self, codecs: &[Codec]) -> Option<String> {
        let n = self.negotiated.as_ref()?;
        // Our answer carries the line SRTP runs under; after our own offer
        // the offer's lines stand.
        let (savp, lines): (bool, &[sdes::CryptoLine]) = match &self.sdes_agreed {
            Some(l) => (
                n.remote_savp || self.srtp == SrtpPolicy::Required,
                std::slice::from_ref(l),
            ),
            None => (false, &[]),
        };
        Some(stamped_sdp(
            &mut self.origin,
            self.local_media,
            codecs,
            Some(n),
            (savp, lines),
        ))
    }

    /// Answers a re-INVITE/UPDATE (hold, resume, a new address, another
    /// codec; RFC 3264 §8): the call's codec while the offer keeps it, else
    /// the first of `codecs` it has, with the relay rebuilt for it; the
    /// mirrored direction. An offerless re-INVITE gets our current media as
    /// the offer. `Err` is the SIP status instead: 491 before our media is
    /// negotiated, 488 for an offer we cannot read or share no codec with,
    /// 500 when the new codec's coder cannot be made; the session then stays
    /// as it was (RFC 3261 §14.2).
    pub(crate) fn answer_reoffer(
        &mut self,
        offer: Option<&str>,
        codecs: &[Codec],
    ) -> Result<String, u16> {
        let current = self.negotiated.clone().ok_or(491u16)?;
        let current = &current;
        if let Some(text) = offer {
            let m = sdp::parse(text).map_err(|_| 488u16)?;
            let next = sdp::negotiate_reoffer(current, &m, codecs).map_err(|_| 488u16)?;
            self.agree_srtp_reoffer(&next).map_err(|e| {
                tracing::info!(error = %e, "a re-offer's SRTP cannot be met");
                488u16
            })?;
            let now = Instant::now();
            if let Some(r) = self.relay.as_mut() {
                if current.relays_differently(&next) {
                    let cfg = relay_config(&next, r.config().rtp_timeout);
                    r.change_codec(cfg, now).map_err(|e| {
                        tracing::warn!(error = %e, "a re-offer's codec could not be set up");
                        500u16
                    })?;
                }
                r.set_pbx_on_hold(m.is_hold(), now);
            }
            self.rtp.set_remote(next.remote);
            self.rtp.set_rtcp_mux(next.rtcp_mux);
            self.negotiated = Some(next);
        }
        self.local_sdp(codecs).ok_or(491)
    }

    /// Moves the PBX side to a new dialog's media (a transfer's target
    /// answered our offer): its codec (the relay rebuilt when it differs),
    /// its address, not on hold. The WhatsApp leg is untouched: it is the
    /// same leg throughout (WhatsApp refuses re-INVITEs). A new source's
    /// SSRC and timestamps are followed by the relay like any new source.
    pub(crate) fn switch_pbx(&mut self, next: Negotiated) -> Result<(), RelayError> {
        // A new dialog: its SRTP too (the answer to our offer's lines).
        self.sdes_theirs = None;
        self.agree_srtp(&next)?;
        let now = Instant::now();
        if let Some(r) = self.relay.as_mut() {
            let rebuild = self
                .negotiated
                .as_ref()
                .is_none_or(|current| current.relays_differently(&next));
            if rebuild {
                let cfg = relay_config(&next, r.config().rtp_timeout);
                r.change_codec(cfg, now)?;
            }
            r.set_pbx_on_hold(false, now);
        }
        self.rtp.set_remote(next.remote);
        self.rtp.set_rtcp_mux(next.rtcp_mux);
        self.negotiated = Some(next);
        Ok(())
    }

    /// A key press the PBX sent as SIP INFO.
    pub(crate) fn sip_info_dtmf(&mut self, digit: char, duration: Duration) {
        if let Some(r) = self.relay.as_mut() {
            r.sip_info_dtmf(digit, duration, &mut WaSink(self.leg.leg()));
        }
    }

    /// RTCP datagrams received from the PBX, and sent to it.
    pub(crate) fn rtcp_received(&self) -> u64 {
        self.rtp.rtcp_rx
    }

    pub(crate) fn rtcp_sent(&self) -> u64 {
        self.rtp.rtcp_tx
    }

    /// What RTCP told about the PBX leg (round trip, the PBX's view of our
    /// stream).
    pub(crate) fn rtcp_stats(&self) -> Option<RtcpStats> {
        self.rtcp.as_ref().map(|r| r.stats)
    }

    /// Our RTCP report is due: SR or RR with a block about the PBX's stream.
    fn send_rtcp_report(&mut self) {
        let (Some(session), Some(relay)) = (self.rtcp.as_mut(), self.relay.as_mut()) else {
            return;
        };
        let now = Instant::now();
        if now < session.next_timeout() {
            return;
        }
        // The relay's SSRC changes with its codec (a re-offer, a transfer).
        session.set_ssrc(relay.config().ssrc);
        let sender = relay.rtcp_sender(now, ntp_now(std::time::SystemTime::now()));
        let reception = relay.rtcp_reception();
        self.rtp
            .send_rtcp(|buf| session.poll_report(now, sender, reception, buf));
        if let Some((registry, id)) = &self.live {
            if let Some(q) = self.quality() {
                registry.set_quality(*id, q);
            }
        }
    }

    /// Packet counts for the call record and the metrics.
    pub(crate) fn counters(&self) -> Option<MediaCounters> {
        let r = self.relay.as_ref()?;
        Some(MediaCounters {
            codec: self.codec().map(|c| c.name().to_string()),
            wa_rx: r.wa.rx.packets,
            wa_tx: r.wa.tx.packets,
            pbx_rx: r.sip.rx.packets,
            pbx_tx: r.sip.tx.packets,
            quality: self.quality().and_then(|q| serde_json::to_string(&q).ok()),
            recording: None,
        })
    }

    /// Both legs' loss, jitter, round trip and MOS ([`quality`]): the
    /// WhatsApp leg's from what we received and WhatsApp's RTCP reports
    /// (read by the leg), the PBX leg's from what we received and the PBX's
    /// RTCP reports.
    pub(crate) fn quality(&self) -> Option<CallQuality> {
        let r = self.relay.as_ref()?;
        let leg = self.leg.leg_ref().stats();
        let rtcp = self.rtcp.as_ref().map(|s| s.stats).unwrap_or_default();
        let pbx_codec = match self.codec() {
            Some(Codec::Opus) => quality::OPUS,
            _ => quality::G711,
        };
        Some(CallQuality {
            whatsapp: quality::leg(
                quality::OPUS,
                r.wa.rx.packets,
                r.wa.lost,
                r.wa.jitter_ms,
                leg.peer_loss_permille.map(|p| f64::from(p) / 10.0),
                leg.rtt,
            ),
            pbx: quality::leg(
                pbx_codec,
                r.sip.rx.packets,
                r.sip.lost,
                r.sip.jitter_ms,
                rtcp.peer_fraction_lost
                    .map(|f| f64::from(f) * 100.0 / 256.0),
                rtcp.rtt,
            ),
        })
    }

    /// Datagrams the call's sockets and legs dropped, as
    /// `(leg, reason, count)` for `wsb_media_dropped_total`.
    pub(crate) fn dropped(&mut self) -> [(&'static str, &'static str, u64); 8] {
        [
            ("whatsapp", "invalid", self.leg.leg().stats().dropped),
            (
                "whatsapp",
                "held_overflow",
                self.leg.leg().stats().held_dropped,
            ),
            ("whatsapp", "oversized", self.leg.oversized()),
            ("whatsapp", "send_failed", self.leg.send_errors()),
            ("pbx", "foreign_source", self.rtp.foreign),
            ("pbx", "oversized", self.rtp.oversized()),
            ("pbx", "send_failed", self.rtp.send_dropped),
            ("pbx", "srtp_failed", self.rtp.srtp_failed),
        ]
    }

    /// Relays media until something the call must decide on happens. Cancel-safe.
    pub(crate) async fn next(&mut self) -> PathEvent {
        loop {
            if let Some(d) = self.relay.as_ref().map(|r| r.next_timeout()) {
                self.relay_timer.arm(d);
            }
            if let Some(d) = self.rtcp.as_ref().map(|r| r.next_timeout()) {
                self.rtcp_timer.arm(d);
            }
            let relaying = self.relay.is_some();
            tokio::select! {
                ev = self.leg.next_event() => match ev {
                    LegEvent::Audio { ssrc, timestamp, seq, marker, payload } => {
                        if let Some(r) = self.relay.as_mut() {
                            let rtp = &mut self.rtp;
                            r.from_whatsapp_audio(Instant::now(), ssrc, seq, timestamp, marker, &payload, &mut |d| rtp.send(d));
                        }
                        self.leg.leg().recycle(payload);
                    }
                    LegEvent::TelephoneEvent { ssrc, seq, timestamp, payload } => {
                        if let Some(r) = self.relay.as_mut() {
                            let rtp = &mut self.rtp;
                            r.from_whatsapp_event(Instant::now(), ssrc, seq, timestamp, &payload, &mut |d| rtp.send(d));
                        }
                    }
                    LegEvent::Dtmf(k) => tracing::debug!(digit = %k.digit, "DTMF from WhatsApp"),
                    LegEvent::Connected => return PathEvent::Connected,
                    LegEvent::Ended(cause) => return PathEvent::LegEnded(cause),
                },
                r = self.rtp.recv(), if relaying => match r {
                    Ok(Received::Rtp(slot, from)) => {
                        if let Some(rl) = self.relay.as_mut() {
                            if rl.from_sip(Instant::now(), self.rtp.datagram(slot), &mut WaSink(self.leg.leg())).is_ok() {
                                self.rtp.latch(from);
                            }
                        }
                    }
                    Ok(Received::Rtcp(len)) => {
                        if let Some(s) = self.rtcp.as_mut() {
                            let ntp = ntp_now(std::time::SystemTime::now());
                            if let Err(e) = s.on_packet(Instant::now(), ntp, self.rtp.rtcp_datagram(len)) {
                                tracing::debug!(error = %e, "RTCP from the PBX not understood");
                            }
                        }
                    }
                    Err(_) => {}
                },
                _ = self.rtcp_timer.fired(), if relaying => self.send_rtcp_report(),
                _ = self.relay_timer.fired() => {
                    if let Some(r) = self.relay.as_mut() {
                        if let Some(t) = r.handle_timeout(Instant::now(), &mut WaSink(self.leg.leg())) {
                            return PathEvent::Timeout(t);
                        }
                    }
                }
            }
        }
    }
}
