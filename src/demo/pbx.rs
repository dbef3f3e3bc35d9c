//! The demo's built-in PBX extension: our SIP user agent with PCMU and
//! telephone-event, as a UAS that answers the bridge's INVITE or as a UAC
//! that dials a WhatsApp user through the bridge. It plays a tone, sends DTMF
//! (RFC 4733), records what it hears, and reports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::audio::sine;
use super::DemoError;
use crate::config::Codec;
use crate::dtmf::{event_of, KeyPressDetector, TelephoneEvent};
use crate::media::g711::Law;
use crate::media::rtp::{write_header, RtpView};
use crate::sip::endpoint::{Peer, Transport};
use crate::sip::runtime::SipSocket;
use crate::sip::sdp::{self, LocalSdp, MediaDirection};
use crate::sip::ua::{Invite, SipEnd, UaEvent};

/// What the PBX side saw.
#[derive(Debug, Default)]
pub struct PbxReport {
    pub request_uri: Option<String>,
    pub x_wa_call_id: Option<String>,
    pub from: Option<String>,
    /// Provisional responses to our INVITE (UAC).
    pub provisional: Vec<u16>,
    /// The final response to our INVITE (UAC), with its reason phrase.
    pub final_code: Option<u16>,
    pub final_reason: String,
    /// Decoded PCMU audio from the bridge (8 kHz).
    pub pcm: Vec<i16>,
    pub digits: String,
    pub bye_received: bool,
}

/// The extension's RTP: PCMU tone out, DTMF after 1.5 s, PCMU and events in.
struct PbxMedia {
    rtp: UdpSocket,
    remote: Option<SocketAddr>,
    te_pt: u8,
    tone_hz: f64,
    answered_at: Option<Instant>,
    keys: KeyPressDetector,
    seq: u16,
    ts: u32,
    n: u64,
    plan: Vec<(u32, [u8; 4], bool)>,
    planned: bool,
    dtmf: String,
}

impl PbxMedia {
    async fn bind(tone_hz: f64, dtmf: &str) -> Result<PbxMedia, DemoError> {
        Ok(PbxMedia {
            rtp: UdpSocket::bind("127.0.0.1:0").await?,
            remote: None,
            te_pt: 101,
            tone_hz,
            answered_at: None,
            keys: KeyPressDetector::default(),
            seq: 1,
            ts: 0,
            n: 0,
            plan: Vec::new(),
            planned: false,
            dtmf: dtmf.to_string(),
        })
    }

    fn on_rtp(&mut self, data: &[u8], report: &mut PbxReport) {
        let Ok(p) = RtpView::parse(data) else { return };
        if p.payload_type() == 0 {
            report
                .pcm
                .extend(p.payload().iter().map(|&b| Law::Mu.decode(b)));
        } else if p.payload_type() == self.te_pt {
            if let Some(k) = self.keys.on_packet(p.timestamp(), p.payload()) {
                report.digits.push(k.digit);
            }
        }
    }

    /// One 20 ms tick: a tone packet, or the next DTMF packet (4 updates and
    /// 3 end packets per key, 100 ms apart) once 1.5 s passed since the answer.
    async fn tick(&mut self) {
        let (Some(to), Some(at)) = (self.remote, self.answered_at) else {
            return;
        };
        let mut pkt = [0u8; 172];
        if !self.planned && at.elapsed() > Duration::from_millis(1500) {
            self.planned = true;
            let mut start = self.ts;
            for d in self.dtmf.chars() {
                let Some(ev) = event_of(d) else { continue };
                for k in 0..7u16 {
                    let p = TelephoneEvent {
                        event: ev,
                        end: k >= 4,
                        volume: 10,
                        duration: 160 * (k.min(4) + 1),
                    }
                    .to_bytes();
                    self.plan.push((start, p, k == 0));
                }
                start = start.wrapping_add(1600);
            }
            self.plan.reverse();
        }
        if let Some((ev_ts, payload, first)) = self.plan.pop() {
            write_header(&mut pkt, self.te_pt, first, self.seq, ev_ts, 0x0bad_cafe);
            pkt[12..16].copy_from_slice(&payload);
            let _ = self.rtp.send_to(&pkt[..16], to).await;
        } else {
            write_header(&mut pkt, 0, false, self.seq, self.ts, 0x0bad_cafe);
            let pcm = sine(self.tone_hz, 8000, self.n, 160);
            Law::Mu.encode_into(&pcm, &mut pkt[12..172]);
            let _ = self.rtp.send_to(&pkt, to).await;
            self.n += 160;
        }
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(160);
    }
}

/// Answers one call, plays 440 Hz and sends `dtmf` 1.5 s after answering;
/// returns when the bridge hangs up or `limit` passes.
pub async fn answer_one_call(
    mut sip: SipSocket,
    dtmf: &str,
    limit: Duration,
) -> Result<PbxReport, DemoError> {
    let mut report = PbxReport::default();
    let mut media = PbxMedia::bind(440.0, dtmf).await?;
    let rtp_addr = media.rtp.local_addr()?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(report),
            ev = sip.next_event() => match ev {
                UaEvent::Incoming { call, invite, .. } => {
                    report.request_uri = invite.request_uri().map(str::to_string);
                    report.x_wa_call_id = invite.wa_call_id.clone();
                    report.from = invite.from.as_ref().map(|f| f.to_string());
                    let offer = sdp::parse(invite.body_str()).map_err(|e| DemoError(format!("bridge's SDP: {e}")))?;
                    let n = sdp::negotiate_offer(&offer, &[Codec::Pcmu]).map_err(|e| DemoError(e.to_string()))?;
                    media.remote = n.remote;
                    if let Some((pt, _)) = n.telephone_event {
                        media.te_pt = pt;
                    }
                    let answer = LocalSdp { session_id: 1, version: 1, addr: rtp_addr, codecs: &[Codec::Pcmu], chosen: Some(&n), direction: n.our_direction }.render();
                    let now = Instant::now();
                    sip.ua().ring(now, call, None);
                    sip.ua().answer(now, call, &answer);
                }
                UaEvent::Answered { .. } => media.answered_at = Some(Instant::now()),
                UaEvent::Ended { cause: SipEnd::PeerBye, .. } => {
                    report.bye_received = true;
                    return Ok(report);
                }
                UaEvent::Ended { .. } => return Ok(report),
                _ => {}
            },
            r = media.rtp.recv_from(&mut buf) => {
                if let Ok((len, _)) = r {
                    media.on_rtp(&buf[..len], &mut report);
                }
            }
            _ = tick.tick() => media.tick().await,
        }
    }
}

/// A call for [`place_call`] to make.
#[derive(Debug, Clone)]
pub struct Dial {
    pub number: String,
    pub tone_hz: f64,
    /// Sent 1.5 s after the answer.
    pub dtmf: String,
    /// Hang up (BYE) this long after the answer.
    pub talk: Duration,
    /// Hang up (CANCEL) this long after the first provisional response, if not answered.
    pub cancel_after: Option<Duration>,
    /// Give up waiting after this long.
    pub limit: Duration,
}

impl Dial {
    pub fn new(number: &str) -> Dial {
        Dial {
            number: number.to_string(),
            tone_hz: 440.0,
            dtmf: String::new(),
            talk: Duration::from_secs(3),
            cancel_after: None,
            limit: Duration::from_secs(30),
        }
    }
}

/// Dials through the bridge at `bridge` (PCMU + telephone-event), plays a
/// tone and sends DTMF after the answer, hangs up after `talk` (see [`Dial`]).
/// Returns when the call is over or `limit` passes.
pub async fn place_call(
    mut sip: SipSocket,
    bridge: SocketAddr,
    dial: Dial,
) -> Result<PbxReport, DemoError> {
    let Dial {
        number,
        tone_hz,
        dtmf,
        talk,
        cancel_after,
        limit,
    } = dial;
    let dtmf = dtmf.as_str();
    let mut report = PbxReport::default();
    let mut media = PbxMedia::bind(tone_hz, dtmf).await?;
    let rtp_addr = media.rtp.local_addr()?;
    let local = sip.local_addr()?;
    let offer = LocalSdp {
        session_id: 7,
        version: 1,
        addr: rtp_addr,
        codecs: &[Codec::Pcmu],
        chosen: None,
        direction: MediaDirection::SendRecv,
    }
    .render();
    let request_uri = format!("sip:{number}@{bridge}");
    let call = sip.ua().invite(
        Instant::now(),
        Invite {
            request_uri: &request_uri,
            from: &format!("<sip:agent@{local}>"),
            to: &format!("<{request_uri}>"),
            headers: &[],
            sdp: &offer,
            peer: Peer {
                transport: Transport::Udp,
                addr: bridge,
            },
        },
    );
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut deadline = tokio::time::Instant::now() + limit;
    let mut hang_up_at: Option<tokio::time::Instant> = None;
    let mut buf = [0u8; 2048];
    loop {
        let hang_up = async {
            match hang_up_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(report),
            _ = hang_up => {
                hang_up_at = None;
                sip.ua().hangup(Instant::now(), call);
            }
            ev = sip.next_event() => match ev {
                UaEvent::Progress { code, .. } => {
                    if report.provisional.is_empty() {
                        if let Some(after) = cancel_after {
                            hang_up_at = Some(tokio::time::Instant::now() + after);
                        }
                    }
                    report.provisional.push(code);
                }
                UaEvent::Answered { sdp: answer, .. } => {
                    report.final_code = Some(200);
                    let n = answer
                        .as_deref()
                        .ok_or_else(|| DemoError("200 without SDP".into()))
                        .and_then(|a| sdp::parse(a).map_err(|e| DemoError(e.to_string())))
                        .and_then(|m| sdp::negotiate_answer(&m, &[Codec::Pcmu]).map_err(|e| DemoError(e.to_string())))?;
                    media.remote = n.remote;
                    if let Some((pt, _)) = n.telephone_event {
                        media.te_pt = pt;
                    }
                    media.answered_at = Some(Instant::now());
                    hang_up_at = Some(tokio::time::Instant::now() + talk);
                }
                UaEvent::Failed { code, reason, .. } => {
                    report.final_code = Some(code);
                    report.final_reason = reason;
                    return Ok(report);
                }
                UaEvent::Ended { cause: SipEnd::LocalHangup, .. } => {
                    // Our BYE is out: keep the socket a moment for its retransmissions and 200.
                    deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                }
                UaEvent::Ended { cause, .. } => {
                    report.bye_received = cause == SipEnd::PeerBye;
                    return Ok(report);
                }
                _ => {}
            },
            r = media.rtp.recv_from(&mut buf) => {
                if let Ok((len, _)) = r {
                    media.on_rtp(&buf[..len], &mut report);
                }
            }
            _ = tick.tick() => media.tick().await,
        }
    }
}

/// The extension's SIP socket on 127.0.0.1 (any port), taking calls from loopback only.
pub async fn extension_socket(user: &str) -> Result<SipSocket, DemoError> {
    extension_socket_at(user, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// [`extension_socket`] on `addr` (a PBX that comes back on its port).
pub async fn extension_socket_at(user: &str, addr: SocketAddr) -> Result<SipSocket, DemoError> {
    use crate::sip::acl::SourceAcl;
    use crate::sip::transaction::Timers;
    use crate::sip::ua::{SipUa, UaConfig};
    let sock = UdpSocket::bind(addr).await?;
    let addr = sock.local_addr()?;
    let loopback = "127.0.0.0/8"
        .parse()
        .map_err(|_| DemoError("loopback network".into()))?;
    let ua = SipUa::new(
        UaConfig {
            via_host: addr.to_string(),
            tls_host: None,
            contact_uri: format!("sip:{user}@{addr}"),
            credentials: None,
            inbound_credentials: None,
            realm: "pbx".into(),
            acl: SourceAcl::new(vec![loopback], vec![]),
            timers: Timers::default(),
            rng_seed: None,
            session: Default::default(),
            // The bridge is the only source and places every call: no
            // per-source dialog limit (its default, 100, refused the 101st).
            auth_guard: crate::sip::auth_guard::GuardConfig {
                max_dialogs_per_source: 0,
                ..Default::default()
            },
        },
        Instant::now(),
    );
    Ok(SipSocket::new(sock, ua))
}
