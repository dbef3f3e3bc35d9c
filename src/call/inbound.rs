//! A WhatsApp user calls the business (design.md §2, inbound): one task owns
//! the call's WebRTC leg, its RTP socket, its relay and its SIP dialog.
//!
//! Webhook → WebRTC answer → INVITE to the trunk → on the PBX's 200: Wati
//! accept with our SDP answer, media relayed both ways → ends on whichever
//! side ends first, the other side hung up, one call record with its cause.
//! With `calls.answer_mode = "immediate"` the call is accepted at Wati right
//! after the INVITE goes out, and the PBX's early media (183) reaches the caller.
//!
//! Setting the call up (ports, SDP, the INVITE) is done here; from then on
//! the call's rules live in the sans-IO [`super::inbound_state`], which this
//! task feeds and whose actions it carries out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::inbound_state::{Action, InboundState, Input};
use super::media_path::{MediaPath, PathEvent};
use super::registry::{CallCommand, ENDING};
use super::transfer::{self, Step, Transfer};
use super::{cold, ending, finish, media_only, save_dialog, CallCtx, EndCause, Ending};
use crate::config::AnswerMode;
use crate::media::socket::RtpSocket;
use crate::ports::bind_udp;
use crate::sip::endpoint::Transport;
use crate::sip::ua::{SipEnd, UaEvent};
use crate::store::now_ms;
use crate::wati::InboundCall;
use crate::webrtc::udp::LegSocket;
use crate::webrtc::{LegConfig, WaLeg};

/// Expands `routing.inbound_user`.
fn inbound_user(template: &str, call: &InboundCall) -> String {
    let number =
        |w: &Option<crate::ids::Waid>| w.as_ref().map(|w| w.to_string()).unwrap_or_default();
    template
        .replace("{business_number}", &number(&call.business_number))
        .replace("{caller}", &number(&call.caller))
}

/// The INVITE's request-URI. No business number from Wati and a template of
/// only that leaves no user: `sip:@host` is not a SIP URI (RFC 3261 §25.1;
/// PJSIP drops it as a syntax error), so the user part is left out.
fn request_uri(user: &str, host: &str) -> String {
    if user.is_empty() {
        format!("sip:{host}")
    } else {
        format!("sip:{user}@{host}")
    }
}

/// The INVITE's From: the caller's number on `sip.domain`, with their
/// WhatsApp profile name (Wati's contact name) as the display name so the
/// agent's phone shows it; anonymous without a caller (RFC 3323 §4.1.1.3).
fn from_header(call: &InboundCall, domain: &str) -> String {
    match &call.caller {
        Some(c) => match call.caller_name.as_deref().map(display_name) {
            Some(name) if !name.is_empty() => format!("\"{name}\" <sip:+{c}@{domain}>"),
            _ => format!("<sip:+{c}@{domain}>"),
        },
        None => "\"Anonymous\" <sip:anonymous@anonymous.invalid>".to_string(),
    }
}

/// A name from the webhook as the inside of a SIP quoted-string (RFC 3261
/// §25.1): control characters (CR/LF would split the header) dropped, `"`
/// and `\` escaped, whitespace collapsed, at most 64 characters.
fn display_name(raw: &str) -> String {
    let words = raw
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty());
    let mut out = String::new();
    let mut kept = 0;
    for (i, w) in words.enumerate() {
        for c in (i > 0).then_some(' ').into_iter().chain(w.chars()) {
            if kept == 64 {
                return out;
            }
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
            kept += 1;
        }
    }
    out
}

/// Runs a call a WhatsApp user placed. The webhook's call comes boxed (an
/// `async fn` keeps its arguments twice over in its future, for the call's
/// whole life), and its SDP offer is let go once answered.
pub(crate) async fn run(
    ctx: Arc<CallCtx>,
    live_id: u64,
    mut call: Box<InboundCall>,
    mut commands: mpsc::Receiver<CallCommand>,
) {
    let _live = ctx.registry.guard(live_id);
    let started = Instant::now();
    let record = ctx
        .store
        .insert_call(super::inbound_record(&call, now_ms()))
        .await
        .ok();
    ctx.metrics.call_started("inbound");
    let mut path = None;
    let end = run_call(
        &ctx,
        live_id,
        &mut call,
        &mut commands,
        &mut path,
        record,
        started,
    )
    .await;
    ctx.registry.set_state(live_id, ENDING);
    if end.terminate_at_wati {
        if let Err(e) = cold(ctx.wati.terminate(&call.call_id)).await {
            tracing::warn!(call_id = %call.call_id, error = %e, "terminate at Wati failed");
        }
    }
    tracing::info!(call_id = %call.call_id, cause = %end.cause, sip_code = ?end.sip_code, secs = started.elapsed().as_secs(), "inbound call ended");
    cold(finish(&ctx, "inbound", record, end, path)).await;
}

async fn run_call(
    ctx: &CallCtx,
    live_id: u64,
    call: &mut InboundCall,
    commands: &mut mpsc::Receiver<CallCommand>,
    path_slot: &mut Option<MediaPath>,
    record: Option<i64>,
    started: Instant,
) -> Ending {
    let s = &ctx.settings;
    // The WhatsApp leg: a port of its own, and our complete SDP answer.
    let (udp, lease) = match bind_udp(&ctx.webrtc_ports, s.webrtc.bind_ip) {
        Ok(x) => x,
        Err(e) => return ending(EndCause::WebrtcPorts(e.to_string()), None, true),
    };
    let Ok(local) = udp.local_addr() else {
        return ending(EndCause::WebrtcSocket, None, true);
    };
    let Ok(udp) = tokio::net::UdpSocket::from_std(udp) else {
        return ending(EndCause::WebrtcSocket, None, true);
    };
    let advertised = SocketAddr::new(s.webrtc.public_ip, local.port());
    let (leg, mut answer) =
        match WaLeg::answer(&call.sdp, LegConfig::new(local, advertised), Instant::now()) {
            Ok(x) => x,
            Err(e) => return ending(EndCause::BadOffer(e), None, true),
        };
    // Answered: WhatsApp's offer (~1 KiB) is not needed again.
    drop(std::mem::take(&mut call.sdp));
    let leg = LegSocket::new(udp, leg, Some(lease));

    // The PBX leg: an RTP pair and our offer.
    let rtp = match RtpSocket::bind(&ctx.rtp_ports, s.media.rtp_ip) {
        Ok(r) => r,
        Err(e) => return ending(EndCause::RtpPorts(e.to_string()), None, true),
    };
    let path = path_slot.insert(MediaPath::new(leg, rtp, s.media.public_ip, s.media.srtp));
    let offer = path.offer_sdp(&s.media.codecs);
    let Some(trunk) = ctx.trunk.addr().await else {
        return ending(EndCause::TrunkUnresolved, None, true);
    };
    let host = match s.trunk.port {
        Some(p) => format!("{}:{p}", s.trunk.host),
        None => s.trunk.host.clone(),
    };
    let user = inbound_user(&s.routing.inbound_user, call);
    let request_uri = request_uri(&user, &host);
    let from = from_header(call, &s.sip.domain);
    let mut headers = vec![("x-wa-call-id", call.call_id.to_string())];
    if let Some(b) = &call.business_number {
        headers.push(("x-wa-business-number", b.to_string()));
    }
    if let Some(c) = &call.caller {
        headers.push(("x-wa-caller", c.to_string()));
    }
    let (events_tx, mut sip_events) = mpsc::channel(64);
    let peer = super::sip_task::trunk_peer(s, trunk);
    let Some(mut sip_call) = cold(ctx.sip.invite(
        request_uri.clone(),
        from,
        format!("<{request_uri}>"),
        headers,
        offer,
        peer,
        events_tx,
    ))
    .await
    else {
        return ending(EndCause::SipUnavailable, None, true);
    };

    let immediate = s.calls.answer_mode == AnswerMode::Immediate;
    if immediate {
        // Accepted once (here or at `AcceptAtWati`): the answer goes with it.
        let answer = std::mem::take(&mut answer);
        if let Err(e) = cold(ctx.wati.accept(&call.call_id, &answer)).await {
            ctx.sip.hangup(sip_call).await;
            return ending(EndCause::WatiAccept(e), None, true);
        }
        tracing::info!(call_id = %call.call_id, "call accepted at Wati before the PBX answered (answer_mode = immediate)");
    }
    ctx.registry.set_state(live_id, "ringing");
    // The call's rules are in `InboundState`; this loop turns what happens
    // into its inputs and carries out its actions.
    let mut state = InboundState::new(immediate, &s.media.codecs);
    let mut transfer: Option<Transfer> = None;
    loop {
        let input = tokio::select! {
            ev = transfer::next_event(&mut transfer), if transfer.is_some() => {
                if let Some(t) = transfer.take() {
                    match t.step(ctx, path, sip_call, record, ev).await {
                        Step::Pending(t) => transfer = Some(t),
                        Step::Moved { call, events } => {
                            sip_call = call;
                            sip_events = events;
                        }
                        Step::Failed => {}
                    }
                }
                continue;
            }
            ev = path.next() => match ev {
                PathEvent::Connected => {
                    tracing::info!(call_id = %call.call_id, "WhatsApp media connected");
                    Input::LegConnected
                }
                PathEvent::LegEnded(cause) => Input::LegEnded(cause),
                PathEvent::Timeout(t) => Input::MediaTimeout(t),
            },
            ev = sip_events.recv() => match ev {
                None => Input::SipGone,
                // A dialog the call has left (a transfer's old one).
                Some(ev) if ev.call() != Some(sip_call) => continue,
                Some(UaEvent::Refer { refer, .. }) => {
                    if transfer.is_none() {
                        transfer = Transfer::start(ctx, path, sip_call, *refer, Some(call.call_id.to_string())).await;
                    }
                    continue;
                }
                Some(ev) => match media_only(ctx, path, sip_call, ev).await {
                    Some(UaEvent::Progress { sdp, .. }) => Input::PbxProgress { sdp },
                    Some(UaEvent::Answered { sdp, .. }) => Input::PbxAnswered { sdp },
                    Some(UaEvent::Failed { code, .. }) => Input::PbxFailed { code },
                    Some(UaEvent::TransportFailed { transport, reason, .. }) => {
                        tracing::warn!(call_id = %call.call_id, %reason, "no connection to the trunk");
                        Input::Hangup(EndCause::TrunkConnection { tls: transport == Transport::Tls, reason })
                    }
                    Some(UaEvent::Ended { cause: SipEnd::PeerBye, .. }) => Input::PbxBye,
                        Some(UaEvent::Ended { cause: SipEnd::Overloaded, .. }) => Input::Hangup(EndCause::Overloaded),
                    Some(UaEvent::Ended { cause, .. }) => Input::SipEnded(cause),
                    _ => continue,
                },
            },
            cmd = commands.recv() => match cmd {
                Some(CallCommand::Terminated) | None => Input::WhatsAppTerminated,
                Some(CallCommand::Hangup(why)) => Input::Hangup(*why),
                // Outbound-call webhooks are not about an inbound call.
                Some(CallCommand::Status(_) | CallCommand::Answer(_)) => continue,
            },
        };
        state.handle(input);
        while let Some(action) = state.poll_action() {
            match action {
                Action::StartRelay(n) => {
                    let relay = path.start_relay(n, s.media.rtp_timeout);
                    if relay.is_ok() {
                        tracing::info!(call_id = %call.call_id, codec = ?path.codec().map(|c| c.name()), "relaying media with the PBX");
                        path.show_quality(ctx.registry.clone(), live_id);
                        if let Some(rec) = &ctx.recorder {
                            path.record(rec, super::recording_name(record, live_id));
                        }
                    }
                    state.handle(Input::RelayStarted(relay));
                }
                Action::MovePbxMedia(remote) => path.set_pbx_remote(remote),
                Action::AcceptAtWati => {
                    let answer = std::mem::take(&mut answer);
                    let accepted = cold(ctx.wati.accept(&call.call_id, &answer)).await;
                    state.handle(Input::Accepted(accepted));
                }
                Action::Answered => {
                    ctx.metrics
                        .call_setup("inbound", started.elapsed().as_secs_f64());
                    ctx.registry.set_state(live_id, "answered");
                    tracing::info!(call_id = %call.call_id, codec = ?path.codec().map(|c| c.name()), "call answered by the PBX");
                    if let Some(id) = record {
                        let _ = ctx.store.call_answered(id, now_ms()).await;
                    }
                    save_dialog(ctx, record, sip_call).await;
                }
                Action::HangUpPbx => ctx.sip.hangup(sip_call).await,
                Action::CloseLeg => path.leg.leg().close(),
            }
        }
        if let Some(end) = state.ending() {
            if let Some(t) = transfer.take() {
                t.abandon(ctx, record).await;
            }
            return end;
        }
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_uri_without_a_user_has_no_at_sign() {
        assert_eq!(request_uri("", "pbx:5060"), "sip:pbx:5060");
        assert_eq!(request_uri("1555", "pbx"), "sip:1555@pbx");
    }

    #[test]
    fn the_from_header_carries_the_callers_name_safely() {
        let call = |name: Option<&str>, caller: Option<&str>| InboundCall {
            call_id: crate::ids::WaCallId::parse("c").unwrap(),
            sdp: String::new(),
            business_number: None,
            caller: caller.map(|c| crate::ids::Waid::parse(c).unwrap()),
            caller_name: name.map(str::to_string),
        };
        assert_eq!(
            from_header(
                &call(Some("Ana  María"), Some("447700900123")),
                "wa.example.com"
            ),
            "\"Ana María\" <sip:+447700900123@wa.example.com>"
        );
        assert_eq!(
            from_header(&call(None, Some("447700900123")), "d"),
            "<sip:+447700900123@d>"
        );
        assert_eq!(
            from_header(&call(Some(" \r\n "), Some("447700900123")), "d"),
            "<sip:+447700900123@d>"
        );
        assert_eq!(
            from_header(&call(Some("x"), None), "d"),
            "\"Anonymous\" <sip:anonymous@anonymous.invalid>"
        );
        // A header cannot be split or the quoted string left early.
        assert_eq!(display_name("Eve\"\r\nVia: x\\"), "Eve\\\" Via: x\\\\");
        assert_eq!(display_name(&"a".repeat(100)).len(), 64);
    }

    #[test]
    fn inbound_user_template_expands_both_numbers() {
        let call = InboundCall {
            call_id: crate::ids::WaCallId::parse("c").unwrap(),
            sdp: String::new(),
            business_number: crate::ids::Waid::parse("15551441906").ok(),
            caller: None,
            caller_name: None,
        };
        assert_eq!(inbound_user("{business_number}", &call), "15551441906");
        assert_eq!(inbound_user("wa-{caller}", &call), "wa-");
    }
}
