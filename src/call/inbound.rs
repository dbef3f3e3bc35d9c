//! A WhatsApp user calls the business (design.md §2, inbound): one task owns
//! the call's WebRTC leg, its RTP socket, its relay and its SIP dialog.
//!
//! Webhook → WebRTC answer → INVITE to the trunk → on the PBX's 200: Wati
//! accept with our SDP answer, media relayed both ways → ends on whichever
//! side ends first, the other side hung up, one call record with its cause.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::{CallCommand, CallCtx};
use crate::config::Codec;
use crate::media::g711::Law;
use crate::media::relay::{MediaTimeout, Relay, RelayConfig, SipCodec, ToWhatsApp};
use crate::media::socket::RtpSocket;
use crate::ports::bind_udp;
use crate::sip::endpoint::{Peer, Transport};
use crate::sip::sdp::{self, Direction, LocalSdp};
use crate::sip::ua::{EndCause as SipEnd, UaEvent};
use crate::store::{now_ms, Direction as CallDirection, NewCall};
use crate::wati::InboundCall;
use crate::webrtc::udp::LegSocket;
use crate::webrtc::{LegConfig, LegEvent, WaLeg};

/// The relay's view of the WhatsApp leg.
struct WaSink<'a>(&'a mut WaLeg);

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

/// Expands `routing.inbound_user`.
fn inbound_user(template: &str, call: &InboundCall) -> String {
    let number =
        |w: &Option<crate::ids::Waid>| w.as_ref().map(|w| w.to_string()).unwrap_or_default();
    template
        .replace("{business_number}", &number(&call.business_number))
        .replace("{caller}", &number(&call.caller))
}

fn relay_config(n: &sdp::Negotiated, rtp_timeout: Duration) -> RelayConfig {
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
    let seed = crate::sip::endpoint::random_token();
    let r = u64::from_str_radix(&seed, 16).unwrap_or(0x1234_5678_9abc_def0);
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

/// How the call ended, for the record.
struct Ending {
    cause: String,
    sip_code: Option<u16>,
    /// Tell Wati to hang up the WhatsApp side.
    terminate_at_wati: bool,
}

/// The PBX side is hung up where the ending is decided; this records the rest.
fn ending(cause: impl Into<String>, sip_code: Option<u16>, terminate_at_wati: bool) -> Ending {
    Ending {
        cause: cause.into(),
        sip_code,
        terminate_at_wati,
    }
}

pub async fn run(ctx: CallCtx, call: InboundCall, mut commands: mpsc::Receiver<CallCommand>) {
    let started = Instant::now();
    let record = ctx
        .store
        .insert_call(NewCall {
            direction: CallDirection::Inbound,
            wa_call_id: Some(call.call_id.to_string()),
            sip_call_id: None,
            waid: call.caller.as_ref().map(|c| c.to_string()),
            business_number: call.business_number.as_ref().map(|b| b.to_string()),
            offered_at_ms: now_ms(),
        })
        .await
        .ok();
    ctx.metrics.call_started("inbound");
    let mut relay = None;
    let end = run_call(&ctx, &call, &mut commands, &mut relay, record).await;
    if let Some(r) = &relay {
        ctx.metrics.rtp_packets("whatsapp", "in", r.wa.rx.packets);
        ctx.metrics.rtp_packets("whatsapp", "out", r.wa.tx.packets);
        ctx.metrics.rtp_packets("pbx", "in", r.sip.rx.packets);
        ctx.metrics.rtp_packets("pbx", "out", r.sip.tx.packets);
    }
    ctx.metrics.call_finished("inbound");
    tracing::info!(call_id = %call.call_id, cause = %end.cause, sip_code = ?end.sip_code, secs = started.elapsed().as_secs(), "inbound call ended");
    if end.terminate_at_wati {
        if let Err(e) = ctx.wati.terminate(&call.call_id).await {
            tracing::warn!(call_id = %call.call_id, error = %e, "terminate at Wati failed");
        }
    }
    if let Some(id) = record {
        let _ = ctx
            .store
            .end_call(id, now_ms(), end.cause, end.sip_code)
            .await;
    }
    ctx.metrics.call_ended(
        "inbound",
        if end.sip_code == Some(200) {
            "answered"
        } else {
            "not_answered"
        },
    );
}

async fn run_call(
    ctx: &CallCtx,
    call: &InboundCall,
    commands: &mut mpsc::Receiver<CallCommand>,
    relay: &mut Option<Relay>,
    record: Option<i64>,
) -> Ending {
    let s = &ctx.settings;
    // The WhatsApp leg: a port of its own, and our complete SDP answer.
    let (udp, lease) = match bind_udp(&ctx.webrtc_ports, s.webrtc.bind_ip) {
        Ok(x) => x,
        Err(e) => return ending(format!("webrtc_ports: {e}"), None, true),
    };
    let Ok(local) = udp.local_addr() else {
        return ending("webrtc_socket", None, true);
    };
    let Ok(udp) = tokio::net::UdpSocket::from_std(udp) else {
        return ending("webrtc_socket", None, true);
    };
    let advertised = SocketAddr::new(s.webrtc.public_ip, local.port());
    let (leg, answer) =
        match WaLeg::answer(&call.sdp, LegConfig::new(local, advertised), Instant::now()) {
            Ok(x) => x,
            Err(e) => return ending(format!("bad_offer: {e}"), None, true),
        };
    let mut leg = LegSocket::new(udp, leg, Some(lease));

    // The PBX leg: an RTP pair and our offer.
    let mut rtp = match RtpSocket::bind(&ctx.rtp_ports, s.media.rtp_ip) {
        Ok(r) => r,
        Err(e) => return ending(format!("rtp_ports: {e}"), None, true),
    };
    let offer = LocalSdp {
        session_id: now_ms() as u64,
        version: 1,
        addr: SocketAddr::new(s.media.public_ip, rtp.port()),
        codecs: &s.media.codecs,
        chosen: None,
        direction: Direction::SendRecv,
    }
    .render();
    let Some(trunk) = ctx.trunk else {
        return ending("trunk_unresolved", None, true);
    };
    let host = match s.trunk.port {
        Some(p) => format!("{}:{p}", s.trunk.host),
        None => s.trunk.host.clone(),
    };
    let user = inbound_user(&s.routing.inbound_user, call);
    let request_uri = format!("sip:{user}@{host}");
    let from = match &call.caller {
        Some(c) => format!("<sip:+{c}@{}>", s.sip.domain),
        None => "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string(),
    };
    let mut headers = vec![("x-wa-call-id", call.call_id.to_string())];
    if let Some(b) = &call.business_number {
        headers.push(("x-wa-business-number", b.to_string()));
    }
    if let Some(c) = &call.caller {
        headers.push(("x-wa-caller", c.to_string()));
    }
    let (events_tx, mut sip_events) = mpsc::channel(64);
    let peer = Peer {
        transport: Transport::Udp,
        addr: trunk,
    };
    let Some(sip_call) = ctx
        .sip
        .invite(
            request_uri.clone(),
            from,
            format!("<{request_uri}>"),
            headers,
            offer,
            peer,
            events_tx,
        )
        .await
    else {
        return ending("sip_unavailable", None, true);
    };

    // The codec in use, for answering re-INVITEs with the same media.
    let mut negotiated: Option<sdp::Negotiated> = None;
    let local_media = SocketAddr::new(s.media.public_ip, rtp.port());
    let mut buf = vec![0u8; 2048];
    loop {
        let relay_deadline = relay.as_ref().map(|r| r.next_timeout());
        let relay_timer = async {
            match relay_deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = leg.next_event() => match ev {
                LegEvent::Audio { ssrc, timestamp, seq, marker, payload } => {
                    if let Some(r) = relay.as_mut() {
                        r.from_whatsapp_audio(Instant::now(), ssrc, seq, timestamp, marker, &payload, &mut |d| rtp.send(d));
                    }
                }
                LegEvent::TelephoneEvent { ssrc, seq, timestamp, payload } => {
                    if let Some(r) = relay.as_mut() {
                        r.from_whatsapp_event(Instant::now(), ssrc, seq, timestamp, &payload, &mut |d| rtp.send(d));
                    }
                }
                LegEvent::Connected => tracing::info!(call_id = %call.call_id, "WhatsApp media connected"),
                LegEvent::Dtmf(k) => tracing::debug!(digit = %k.digit, "DTMF from WhatsApp"),
                LegEvent::Ended(cause) => {
                    ctx.sip.hangup(sip_call).await;
                    return ending(format!("whatsapp_leg: {cause:?}"), None, true);
                }
            },
            ev = sip_events.recv() => match ev {
                Some(UaEvent::Answered { sdp: Some(answer_sdp), .. }) => {
                    let outcome = sdp::parse(&answer_sdp).and_then(|m| sdp::negotiate_answer(&m, &s.media.codecs));
                    let n = match outcome {
                        Ok(n) => n,
                        Err(e) => {
                            ctx.sip.hangup(sip_call).await;
                            return ending(format!("pbx_sdp: {e}"), Some(200), true);
                        }
                    };
                    rtp.set_remote(n.remote);
                    let cfg = relay_config(&n, s.media.rtp_timeout);
                    match Relay::new(cfg, Instant::now()) {
                        Ok(r) => *relay = Some(r),
                        Err(e) => {
                            ctx.sip.hangup(sip_call).await;
                            return ending(format!("relay: {e}"), Some(200), true);
                        }
                    }
                    if let Err(e) = ctx.wati.accept(&call.call_id, &answer).await {
                        ctx.sip.hangup(sip_call).await;
                        return ending(format!("wati_accept: {e}"), Some(200), true);
                    }
                    tracing::info!(call_id = %call.call_id, codec = n.codec.name(), "call answered by the PBX and accepted at Wati");
                    if let Some(id) = record {
                        let _ = ctx.store.call_answered(id, now_ms()).await;
                    }
                    negotiated = Some(n);
                }
                Some(UaEvent::Answered { sdp: None, .. }) => {
                    ctx.sip.hangup(sip_call).await;
                    return ending("pbx_answer_without_sdp", Some(200), true);
                }
                Some(UaEvent::Failed { code, .. }) => return ending(format!("pbx_rejected_{code}"), Some(code), true),
                Some(UaEvent::Ended { cause: SipEnd::PeerBye, .. }) => return ending("pbx_bye", Some(200), true),
                Some(UaEvent::Ended { cause, .. }) => return ending(format!("sip: {cause:?}"), Some(200), true),
                Some(UaEvent::Reoffer { tx, sdp: offer, .. }) => {
                    // Hold, resume or a new address: answered with our current
                    // media (RFC 3264 §8), the same codec, the mirrored direction.
                    let Some(current) = negotiated.as_ref() else { continue };
                    let remote = offer.as_deref().and_then(|o| sdp::parse(o).ok());
                    let mut n = current.clone();
                    if let Some(m) = &remote {
                        n.our_direction = m.direction.answer_to();
                        if !m.is_hold() || m.rtp.is_some() {
                            rtp.set_remote(m.rtp);
                        }
                        if let Some(r) = relay.as_mut() {
                            r.set_pbx_on_hold(m.is_hold(), Instant::now());
                        }
                    }
                    let answer = LocalSdp {
                        session_id: 1,
                        version: now_ms() as u64,
                        addr: local_media,
                        codecs: &s.media.codecs,
                        chosen: Some(&n),
                        direction: n.our_direction,
                    }
                    .render();
                    ctx.sip.answer_reoffer(sip_call, tx, answer).await;
                }
                Some(UaEvent::Dtmf { digit, duration, .. }) => {
                    if let Some(r) = relay.as_mut() {
                        r.sip_info_dtmf(digit, duration, &mut WaSink(leg.leg()));
                    }
                }
                Some(_) => {}
                None => return ending("sip_gone", None, true),
            },
            r = rtp.recv(&mut buf), if relay.is_some() => {
                if let (Ok((n, from)), Some(rl)) = (r, relay.as_mut()) {
                    if rl.from_sip(Instant::now(), &buf[..n], &mut WaSink(leg.leg())).is_ok() {
                        rtp.latch(from);
                    }
                }
            }
            _ = relay_timer => {
                if let Some(r) = relay.as_mut() {
                    if let Some(t) = r.handle_timeout(Instant::now(), &mut WaSink(leg.leg())) {
                        ctx.sip.hangup(sip_call).await;
                        let cause = match t {
                            MediaTimeout::WhatsAppSilent => "media_timeout_whatsapp",
                            MediaTimeout::PbxSilent => "media_timeout_pbx",
                        };
                        return ending(cause, Some(200), true);
                    }
                }
            }
            cmd = commands.recv() => match cmd {
                Some(CallCommand::Terminated) | None => {
                    ctx.sip.hangup(sip_call).await;
                    leg.leg().close();
                    return ending("whatsapp_terminated", relay.as_ref().map(|_| 200), false);
                }
            },
        }
    }
}
