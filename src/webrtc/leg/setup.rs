//! Setting the leg up: the process's DTLS certificate, str0m's
//! configuration for WhatsApp (ICE-lite peer, Opus 111, telephone-event),
//! answering WhatsApp's offer and making ours, applying the user's answer.

use super::*;
use crate::media::rtcp::cname_for;

/// The process' DTLS certificate, shared by every leg. A certificate per
/// call cost a key generation and a signature at every call setup for
/// nothing: the SDP fingerprint binds whichever certificate we use, and each
/// DTLS session still agrees fresh (ECDHE) keys. It is replaced after
/// [`CERT_LIFETIME`]: the certificates str0m makes are valid for a year,
/// and a bridge runs longer than that. `None` if none could be made; str0m
/// then makes one per leg.
pub(super) fn shared_cert(now: Instant) -> Option<DtlsCert> {
    static CERT: Mutex<Option<(Instant, DtlsCert)>> = Mutex::new(None);
    // Call set-up only. A panic while holding the lock cannot leave a
    // half-written value, so poisoning is ignored.
    let mut current = CERT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((made, cert)) = current.as_ref() {
        if now.saturating_duration_since(*made) < CERT_LIFETIME {
            return Some(cert.clone());
        }
    }
    let cert = super::dtls::crypto_provider()
        .dtls_provider
        .generate_certificate()?;
    *current = Some((now, cert.clone()));
    Some(cert)
}

/// Makes the process certificate and its DTLS context before any call needs
/// them. The first certificate costs ~60 ms (aws-lc seeds its random
/// generator at first use) and its context ~6 ms: the first call after a
/// start would otherwise wait that long before its SDP answer.
pub(crate) fn prepare(now: Instant) -> Result<(), String> {
    let cert = shared_cert(now).ok_or("no certificate could be made")?;
    dtls::prepare(&cert).map_err(|e| e.to_string())
}

pub(super) fn base_config(now: Instant) -> RtcConfig {
    let mut cfg = RtcConfig::new().set_crypto_provider(super::dtls::crypto_provider());
    if let Some(cert) = shared_cert(now) {
        cfg = cfg.set_dtls_cert(cert);
    }
    let mut cfg = cfg
        .clear_codecs()
        .set_rtp_mode(true)
        // The relay paces audio itself; str0m must not hold packets back.
        .set_send_buffer_audio(50)
        // Round trip and WhatsApp's loss of our stream, from its RTCP
        // receiver reports, for the call's quality figures.
        .set_stats_interval(Some(std::time::Duration::from_secs(5)))
        // No RTP header extensions: WhatsApp's offers carry none, and offering
        // transport-wide-cc (str0m's default) makes the peer send TWCC
        // feedback we have no use for (no bandwidth estimation on a relayed
        // audio call) and that cost ~15 % of the bridge's CPU in the loadgen.
        .clear_extension_map();
    cfg.codec_config().enable_opus(false, false);
    cfg
}

/// Builds the session and picks up its DTLS instance's [`DtlsLink`].
pub(super) fn build_rtc(rc: RtcConfig, now: Instant) -> (Rtc, Option<DtlsLink>) {
    let _stale = dtls::take_created();
    let rtc = rc.build(now);
    (rtc, dtls::take_created())
}

/// Opus as WhatsApp wants it: FEC on, 20 ms minimum packet time.
pub(super) fn opus_params() -> str0m::format::FormatParams {
    str0m::format::FormatParams {
        min_p_time: Some(10),
        use_inband_fec: Some(true),
        ..Default::default()
    }
}

impl WaLeg {
    pub(super) fn add_candidate(rtc: &mut Rtc, cfg: &LegConfig) -> Result<(), LegError> {
        let c = Candidate::host(cfg.advertised, "udp").map_err(rtc_err)?;
        rtc.add_local_candidate(c);
        Ok(())
    }

    /// Answers WhatsApp's offer (an inbound call). Returns the leg and the
    /// complete SDP answer to send to Wati.
    pub fn answer(offer: &str, cfg: LegConfig, now: Instant) -> Result<(WaLeg, String), LegError> {
        let remote = sdp::prepare_remote(offer, cfg.local.ip())?;
        let mut rc = base_config(now);
        // Answer with the offer's own payload type numbers.
        rc.codec_config().add_config(
            remote.opus_pt.into(),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            opus_params(),
        );
        if let Some((pt, clock)) = remote.telephone_event {
            rc.codec_config().add_config(
                pt.into(),
                None,
                Codec::Tele,
                Frequency::new(clock).unwrap_or(Frequency::EIGHT_KHZ),
                None,
                Default::default(),
            );
        }
        let (mut rtc, peer_finished) = build_rtc(rc, now);
        Self::add_candidate(&mut rtc, &cfg)?;
        let ssrc = our_ssrc(cfg.rtp_seed);
        {
            let mut d = rtc.direct_api();
            // DTLS client: our answer says a=setup:active, as WhatsApp requires.
            d.start_dtls(true).map_err(rtc_err)?;
            // start_dtls pre-inits DTLS, which skips str0m's own "remote is
            // ice-lite, so we control" decision: make it explicitly.
            d.set_ice_controlling(true);
        }
        // When WhatsApp receives (it always does), str0m is shown an offer
        // it only has to receive from, and our answer declares the stream
        // the leg sends itself (see `sdp::for_str0m`).
        let we_send = matches!(sdp::audio_direction(&remote.text), "sendrecv" | "recvonly");
        let shown = sdp::for_str0m(&remote.text, we_send);
        let parsed =
            SdpOffer::from_sdp_string(&shown).map_err(|e| SdpError::Parse(e.to_string()))?;
        let answer = rtc.sdp_api().accept_offer(parsed).map_err(rtc_err)?;
        let mut text = answer.to_sdp_string();
        if we_send {
            text = sdp::declare_our_stream(&text, ssrc, &cname_for(ssrc, cfg.rtp_seed))?;
        }
        let text = sdp::finish_local(&text, cfg.advertised)?;
        let mut leg = WaLeg::new(rtc, peer_finished, cfg, now);
        leg.opus_pt = remote.opus_pt.into();
        leg.te = remote.telephone_event.map(|(pt, c)| (pt.into(), c));
        // As in `apply_answer`: str0m's agents re-arm on a timeout.
        leg.rtc.handle_input(Input::Timeout(now)).map_err(rtc_err)?;
        Ok((leg, text))
    }

    /// Creates a complete offer for an outbound call (`a=setup:actpass`, Opus
    /// 111, telephone-event/8000 126). Apply WhatsApp's answer with [`WaLeg::apply_answer`].
    pub fn offer(cfg: LegConfig, now: Instant) -> Result<(WaLeg, String), LegError> {
        let mut rc = base_config(now);
        rc.codec_config().add_config(
            111.into(),
            None,
            Codec::Opus,
            Frequency::FORTY_EIGHT_KHZ,
            Some(2),
            opus_params(),
        );
        rc.codec_config().add_config(
            126.into(),
            None,
            Codec::Tele,
            Frequency::EIGHT_KHZ,
            None,
            Default::default(),
        );
        let (mut rtc, peer_finished) = build_rtc(rc, now);
        Self::add_candidate(&mut rtc, &cfg)?;
        // We are the full agent facing an ICE-lite peer: always controlling.
        rtc.direct_api().set_ice_controlling(true);
        let mut api = rtc.sdp_api();
        // str0m announces a send stream for any media it offers; the offer
        // carries our SSRC and CNAME instead of str0m's.
        api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        // The pending offer is dropped, never accepted: WhatsApp's answer
        // is applied through the direct API (`apply_answer`), since
        // accepting it would declare the send stream the offer carries.
        let (offer, _pending) = api
            .apply()
            .ok_or(LegError::Rtc("no offer produced".into()))?;
        let ssrc = our_ssrc(cfg.rtp_seed);
        let text =
            sdp::declare_our_stream(&offer.to_sdp_string(), ssrc, &cname_for(ssrc, cfg.rtp_seed))?;
        let text = sdp::finish_local(&text, cfg.advertised)?;
        let mut leg = WaLeg::new(rtc, peer_finished, cfg, now);
        leg.offered = true;
        leg.te = Some((126.into(), 8000));
        Ok((leg, text))
    }

    /// Applies WhatsApp's SDP answer to our offer. WhatsApp answers ICE-lite;
    /// its `a=setup` decides our DTLS role (it usually takes `active`, making us the server).
    /// The connect timeout runs from `now`: ringing may have taken a minute.
    ///
    /// str0m parses the answer, but it is applied through str0m's direct
    /// API (remote ICE credentials and candidates, the fingerprint, the DTLS
    /// role), as str0m's `accept_answer` does: accepting it would also
    /// declare the send stream our offer announced (7.3 KiB a call kept in
    /// str0m's stream map), for media the leg sends itself.
    pub fn apply_answer(&mut self, now: Instant, answer: &str) -> Result<(), LegError> {
        if !self.offered {
            return Err(LegError::NoPendingOffer);
        }
        self.offered = false;
        self.started = now;
        let remote = sdp::prepare_remote(answer, self.cfg.local.ip())?;
        if remote.opus_pt != 111 {
            return Err(LegError::AnswerWithoutOpus);
        }
        let parsed =
            SdpAnswer::from_sdp_string(&remote.text).map_err(|e| SdpError::Parse(e.to_string()))?;
        let audio = parsed
            .media_lines
            .iter()
            .find(|m| m.typ.to_string() == "audio")
            .ok_or(SdpError::NoAudio)?;
        let creds = parsed
            .session
            .ice_creds()
            .or_else(|| audio.ice_creds())
            .ok_or(SdpError::NoIceCredentials)?;
        let fingerprint = parsed
            .session
            .fingerprint()
            .or_else(|| audio.fingerprint())
            .ok_or(SdpError::NoFingerprint)?;
        let candidates: Vec<Candidate> = parsed
            .session
            .ice_candidates()
            .chain(audio.ice_candidates())
            .cloned()
            .collect();
        {
            let mut d = self.rtc.direct_api();
            d.set_remote_ice_credentials(creds);
            d.set_remote_fingerprint(fingerprint);
            // RFC 5763 §5: the answerer takes `active` or `passive`; one
            // that says `actpass` or nothing is taken as active, as str0m does.
            let we_are_client = remote.setup.as_deref() == Some("passive");
            d.start_dtls(we_are_client).map_err(rtc_err)?;
            // We are the full agent facing an ICE-lite peer: controlling.
            d.set_ice_controlling(true);
        }
        for c in candidates {
            self.rtc.add_remote_candidate(c);
        }
        // The answer may leave telephone-event out; WhatsApp then still uses 126 at 8 kHz.
        self.te = Some(
            remote
                .telephone_event
                .map(|(pt, c)| (pt.into(), c))
                .unwrap_or((126.into(), 8000)),
        );
        // str0m re-reads its ICE agent's deadline only when it handles a
        // timeout: without this its connectivity checks would wait for the
        // next deadline it did report.
        self.rtc
            .handle_input(Input::Timeout(now))
            .map_err(rtc_err)?;
        Ok(())
    }
}

/// The SSRC the leg sends with, drawn from the leg's seed (RFC 3550 §8.1:
/// random; never 0). Multiplying by an odd constant mixes every bit of the
/// seed into the high half, which the sequence number and timestamp (the
/// seed's low 48 bits) do not use as such.
pub(super) fn our_ssrc(seed: u64) -> u32 {
    let mixed = (seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
    mixed.max(1)
}
