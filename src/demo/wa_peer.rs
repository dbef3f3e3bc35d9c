//! A simulated WhatsApp media peer (for `demo` and the tests): str0m configured as WhatsApp's media
//! servers behave (ICE-lite, Opus 111 with WhatsApp's fmtp, telephone-event
//! 126/8000, complete SDP), speaking str0m's frame API so that it shares no
//! code with the bridge's RTP-mode leg.
//!
//! As offerer (an inbound call) it emits the captured WhatsApp offer text
//! (whatsapp-wire.md §1.1) with its own credentials, fingerprint, address and
//! ssrc substituted. As answerer (an outbound call) it answers ICE-lite with
//! `a=setup:active`, as Meta documents.

use std::net::SocketAddr;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};

use super::DemoError;
use crate::webrtc::sdp::payload_type;

/// Datagrams to send: (destination, bytes).
pub type Transmits = Vec<(SocketAddr, Vec<u8>)>;

pub struct WaPeer {
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    pub connected: bool,
    /// Opus payloads received (pt 111).
    pub audio: Vec<Vec<u8>>,
    /// telephone-event payloads received (pt 126) with their RTP time.
    pub events: Vec<(u64, Vec<u8>)>,
    /// What the bridge's RTCP reports told this peer about its stream:
    /// (round trip, loss fraction), from str0m's egress stats; the last
    /// round trip measured is kept when a later stats event has none (an
    /// interval with no new report block carries no round trip).
    pub reported: Option<(Option<std::time::Duration>, Option<f32>)>,
    ts48: u64,
    /// Payload types in use: WhatsApp's own (111, 126) unless the offer it
    /// answers numbers them otherwise.
    opus_pt: u8,
    te_pt: u8,
}

fn config(cert: Option<DtlsCert>) -> RtcConfig {
    let mut cfg = RtcConfig::new()
        .clear_codecs()
        .set_ice_lite(true)
        .set_stats_interval(Some(std::time::Duration::from_secs(5)));
    if let Some(c) = cert {
        // A certificate of the caller's choosing may be RSA, which str0m's
        // own DTLS (dimpl: ECDSA suites only) cannot use: such a peer runs
        // the bridge's OpenSSL DTLS.
        cfg = cfg
            .set_crypto_provider(crate::webrtc::dtls::peer_crypto_provider())
            .set_dtls_cert(c);
    }
    cfg.codec_config().add_config(
        111.into(),
        None,
        Codec::Opus,
        Frequency::FORTY_EIGHT_KHZ,
        Some(2),
        FormatParams {
            min_p_time: Some(20),
            use_inband_fec: Some(true),
            ..Default::default()
        },
    );
    cfg.codec_config().add_config(
        126.into(),
        None,
        Codec::Tele,
        Frequency::EIGHT_KHZ,
        None,
        FormatParams::default(),
    );
    cfg
}

fn attr<'a>(sdp: &'a str, name: &str) -> Result<&'a str, DemoError> {
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(name))
        .map(str::trim)
        .ok_or_else(|| DemoError(format!("no {name} in str0m's offer")))
}

impl WaPeer {
    /// WhatsApp calls the business: returns the peer and its offer, WhatsApp-shaped.
    pub fn offer(
        addr: SocketAddr,
        now: Instant,
        cert: Option<DtlsCert>,
    ) -> Result<(WaPeer, String), DemoError> {
        let mut rtc = config(cert).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
        let mut api = rtc.sdp_api();
        let mid = api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| DemoError("str0m made no offer".into()))?;
        let own = offer.to_sdp_string();
        let fp = attr(&own, "a=fingerprint:sha-256 ")?;
        let ssrc: &str = attr(&own, "a=ssrc:")?.split(' ').next().unwrap_or("1");
        let ip_kind = if addr.is_ipv4() { "IP4" } else { "IP6" };
        let text = format!(
            "v=0\r\no=- 1760681506762 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mid}\r\na=msid-semantic: WMS c3867497-e6f7-4408-82b7-80dbd11b94cf\r\na=ice-lite\r\nm=audio {port} UDP/TLS/RTP/SAVPF 111 126\r\nc=IN {ip_kind} {ip}\r\na=rtcp:9 IN IP4 0.0.0.0\r\na=candidate:3935165743 1 udp 2122260223 {ip} {port} typ host generation 0 network-cost 50\r\na=candidate:2617197009 1 udp 2122262783 ::1 {port} typ host generation 0 network-cost 50\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=fingerprint:sha-256 {fp}\r\na=setup:actpass\r\na=mid:{mid}\r\na=sendrecv\r\na=msid:c3867497-e6f7-4408-82b7-80dbd11b94cf WhatsAppTrack1\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-fb:111 transport-cc\r\na=fmtp:111 maxaveragebitrate=20000;maxplaybackrate=16000;minptime=20;sprop-maxcapturerate=16000;useinbandfec=1\r\na=rtpmap:126 telephone-event/8000\r\na=maxptime:20\r\na=ptime:20\r\na=ssrc:{ssrc} cname:WhatsAppAudioStream1\r\n",
            port = addr.port(),
            ip = addr.ip(),
            ufrag = attr(&own, "a=ice-ufrag:")?,
            pwd = attr(&own, "a=ice-pwd:")?,
        );
        Ok((
            WaPeer {
                rtc,
                addr,
                mid: Some(mid),
                pending: Some(pending),
                connected: false,
                audio: vec![],
                events: vec![],
                reported: None,
                ts48: 0,
                opus_pt: 111,
                te_pt: 126,
            },
            text,
        ))
    }

    pub fn accept_answer(&mut self, answer: &str) -> Result<(), DemoError> {
        let answer = SdpAnswer::from_sdp_string(answer)?;
        let pending = self
            .pending
            .take()
            .ok_or_else(|| DemoError("no pending offer".into()))?;
        self.rtc.sdp_api().accept_answer(pending, answer)?;
        Ok(())
    }

    /// The business calls the user: the peer answers our offer (ICE-lite, DTLS active).
    pub fn answer(
        offer: &str,
        addr: SocketAddr,
        now: Instant,
        cert: Option<DtlsCert>,
    ) -> Result<(WaPeer, String), DemoError> {
        let mut rtc = config(cert).build(now);
        rtc.add_local_candidate(Candidate::host(addr, "udp")?);
        {
            let mut d = rtc.direct_api();
            d.start_dtls(true)?;
            d.set_ice_controlling(false);
        }
        let opus_pt = payload_type(offer, "opus", 48_000).unwrap_or(111);
        let te_pt = payload_type(offer, "telephone-event", 8_000).unwrap_or(126);
        let offer = SdpOffer::from_sdp_string(offer)?;
        let answer = rtc.sdp_api().accept_offer(offer)?.to_sdp_string();
        Ok((
            WaPeer {
                rtc,
                addr,
                mid: None,
                pending: None,
                connected: false,
                audio: vec![],
                events: vec![],
                reported: None,
                ts48: 0,
                opus_pt,
                te_pt,
            },
            answer,
        ))
    }

    pub fn handle_receive(&mut self, now: Instant, from: SocketAddr, data: &[u8]) {
        if let Ok(r) = Receive::new(Protocol::Udp, from, self.addr, data) {
            let input = Input::Receive(now, r);
            if self.rtc.accepts(&input) {
                let _ = self.rtc.handle_input(input);
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), DemoError> {
        self.rtc.handle_input(Input::Timeout(now))?;
        Ok(())
    }

    /// Drains str0m; returns transmits (to, data) and the next timeout.
    pub fn poll(&mut self) -> Result<(Transmits, Instant), DemoError> {
        let mut out = Vec::new();
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok((out, t)),
                Output::Transmit(t) => out.push((t.destination, t.contents.into())),
                Output::Event(e) => match e {
                    Event::Connected => self.connected = true,
                    Event::MediaAdded(m) => self.mid = Some(m.mid),
                    Event::MediaEgressStats(s) if s.loss.is_some() || s.rtt.is_some() => {
                        let last_rtt = self.reported.and_then(|(rtt, _)| rtt);
                        self.reported = Some((s.rtt.or(last_rtt), s.loss));
                    }
                    Event::MediaData(d) => {
                        if *d.pt == self.opus_pt {
                            self.audio.push(d.data.to_vec());
                        } else if *d.pt == self.te_pt {
                            self.events.push((d.time.numer(), d.data.to_vec()));
                        }
                    }
                    _ => {}
                },
            }
        }
    }

    /// Sends one 20 ms Opus packet.
    pub fn send_audio(&mut self, now: Instant, packet: &[u8]) {
        let Some(mid) = self.mid else { return };
        let t = MediaTime::new(self.ts48, Frequency::FORTY_EIGHT_KHZ);
        self.ts48 += 960;
        if let Some(w) = self.rtc.writer(mid) {
            let _ = w.write(self.opus_pt.into(), now, t, packet.to_vec());
        }
    }

    /// Sends one RFC 4733 packet at `ts8k` (8 kHz clock).
    pub fn send_event(&mut self, now: Instant, ts8k: u64, payload: [u8; 4], first: bool) {
        let Some(mid) = self.mid else { return };
        if let Some(w) = self.rtc.writer(mid) {
            let _ = w.start_of_talkspurt(first).write(
                self.te_pt.into(),
                now,
                MediaTime::new(ts8k, Frequency::EIGHT_KHZ),
                payload.to_vec(),
            );
        }
    }
}
