//! The demo's built-in PBX extension: our SIP user agent as a UAS that
//! answers the bridge's INVITE with PCMU and telephone-event, plays a 440 Hz
//! tone, sends DTMF, records what it hears, and reports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use super::audio::sine;
use super::DemoError;
use crate::config::Codec;
use crate::dtmf::{event_of, KeyPressDetector, TelephoneEvent};
use crate::media::g711::Law;
use crate::media::rtp::{write_header, RtpView};
use crate::sip::runtime::SipSocket;
use crate::sip::sdp::{self, LocalSdp};
use crate::sip::ua::{EndCause, UaEvent};

/// What the PBX side saw.
#[derive(Debug, Default)]
pub struct PbxReport {
    pub request_uri: Option<String>,
    pub x_wa_call_id: Option<String>,
    pub from: Option<String>,
    /// Decoded PCMU audio from the bridge (8 kHz).
    pub pcm: Vec<i16>,
    pub digits: String,
    pub bye_received: bool,
}

/// Answers one call, plays 440 Hz and sends `dtmf` 1.5 s after answering;
/// returns when the bridge hangs up or `limit` passes.
pub async fn answer_one_call(
    mut sip: SipSocket,
    dtmf: &str,
    limit: Duration,
) -> Result<PbxReport, DemoError> {
    let mut report = PbxReport::default();
    let rtp = UdpSocket::bind("127.0.0.1:0").await?;
    let rtp_addr = rtp.local_addr()?;
    let mut remote: Option<SocketAddr> = None;
    let mut answered_at: Option<Instant> = None;
    let mut keys = KeyPressDetector::default();
    let (mut seq, mut ts, mut n) = (1u16, 0u32, 0u64);
    let mut dtmf_plan: Vec<(u32, [u8; 4], bool)> = Vec::new();
    let mut dtmf_planned = false;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let deadline = tokio::time::Instant::now() + limit;
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return Ok(report),
            ev = sip.next_event() => match ev {
                UaEvent::Incoming { call, invite, .. } => {
                    report.request_uri = invite.request_uri().map(str::to_string);
                    report.x_wa_call_id = invite.header("x-wa-call-id").map(str::to_string);
                    report.from = invite.header("from").map(str::to_string);
                    let offer = sdp::parse(invite.body_str()).map_err(|e| DemoError(format!("bridge's SDP: {e}")))?;
                    let n = sdp::negotiate_offer(&offer, &[Codec::Pcmu]).map_err(|e| DemoError(e.to_string()))?;
                    remote = n.remote;
                    let answer = LocalSdp { session_id: 1, version: 1, addr: rtp_addr, codecs: &[Codec::Pcmu], chosen: Some(&n), direction: n.our_direction }.render();
                    let now = Instant::now();
                    sip.ua().ring(now, call, None);
                    sip.ua().answer(now, call, &answer);
                }
                UaEvent::Answered { .. } => answered_at = Some(Instant::now()),
                UaEvent::Ended { cause: EndCause::PeerBye, .. } => {
                    report.bye_received = true;
                    return Ok(report);
                }
                UaEvent::Ended { .. } => return Ok(report),
                _ => {}
            },
            r = rtp.recv_from(&mut buf) => {
                let Ok((len, _)) = r else { continue };
                let Ok(p) = RtpView::parse(&buf[..len]) else { continue };
                match p.payload_type() {
                    0 => report.pcm.extend(p.payload().iter().map(|&b| Law::Mu.decode(b))),
                    101 => {
                        if let Some(k) = keys.on_packet(p.timestamp(), p.payload()) {
                            report.digits.push(k.digit);
                        }
                    }
                    _ => {}
                }
            }
            _ = tick.tick() => {
                let (Some(to), Some(at)) = (remote, answered_at) else { continue };
                let mut pkt = [0u8; 172];
                // DTMF 1.5 s after the answer: 4 updates and 3 end packets per digit, 100 ms apart.
                if !dtmf_planned && at.elapsed() > Duration::from_millis(1500) {
                    dtmf_planned = true;
                    let mut start = ts;
                    for d in dtmf.chars() {
                        let Some(ev) = event_of(d) else { continue };
                        for k in 0..7u16 {
                            let p = TelephoneEvent { event: ev, end: k >= 4, volume: 10, duration: 160 * (k.min(4) + 1) }.to_bytes();
                            dtmf_plan.push((start, p, k == 0));
                        }
                        start = start.wrapping_add(1600);
                    }
                    dtmf_plan.reverse();
                }
                if let Some((ev_ts, payload, first)) = dtmf_plan.pop() {
                    write_header(&mut pkt, 101, first, seq, ev_ts, 0x0bad_cafe);
                    pkt[12..16].copy_from_slice(&payload);
                    let _ = rtp.send_to(&pkt[..16], to).await;
                } else {
                    write_header(&mut pkt, 0, false, seq, ts, 0x0bad_cafe);
                    let pcm = sine(440.0, 8000, n, 160);
                    Law::Mu.encode_into(&pcm, &mut pkt[12..172]);
                    let _ = rtp.send_to(&pkt, to).await;
                    n += 160;
                }
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
            }
        }
    }
}
