//! The PBX dials a WhatsApp user through the trunk (design.md §2, outbound):
//! one task owns the call's SIP server transaction and dialog, its WebRTC
//! leg, RTP socket and relay.
//!
//! INVITE (ACL and digest already passed in the SIP task) → waid from the
//! request-URI → codec check → call permission (cache, else Wati) → WebRTC
//! offer → Wati outbound-call → status webhooks (RINGING → 180) → the user's
//! SDP answer → ICE/DTLS up → 200 with our RTP answer → relay. Every way out
//! gives the PBX a final response or a BYE and ends the WhatsApp side.
//!
//! The call's rules, from the INVITE on, live in the sans-IO
//! [`super::outbound_state`]; this task carries out its steps (the Wati
//! requests, the ports and our WebRTC offer, the SIP responses) and feeds it
//! what happens.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::media_path::{MediaPath, PathEvent, RelayError};
use super::outbound_state::{
    Action, Input, MediaSetup, NotAWaid, OutboundState, Permit, RequestOutcome,
};
use super::registry::{CallCommand, ENDING};
use super::transfer::{self, Step, Transfer};
use super::{cold, finish, media_only, save_dialog, CallCtx, EndCause, Ending};
use crate::config::Settings;
use crate::ids::{WaCallId, Waid};
use crate::media::socket::RtpSocket;
use crate::ports::bind_udp;
use crate::sip::endpoint::Peer;
use crate::sip::message::Msg;
use crate::sip::sdp::{self, Negotiated, SdpError};
use crate::sip::ua::{CallRef, SipEnd, SipUa, UaEvent};
use crate::store::{now_ms, Direction, NewCall, PermissionState};
use crate::wati::WatiError;
use crate::webrtc::udp::LegSocket;
use crate::webrtc::{LegConfig, LegError, WaLeg};

/// An INVITE from the PBX that passed the ACL and authentication.
#[derive(Debug)]
pub(crate) struct IncomingInvite {
    pub call: CallRef,
    pub invite: Msg,
    pub source: Peer,
    /// The rest of this call's SIP events (CANCEL, ACK, BYE, re-INVITE, INFO).
    pub events: mpsc::Receiver<UaEvent>,
}

/// A grant from the Call Permission webhook or from Wati's answer is trusted
/// this long; after that Wati is asked again (grants expire and can be revoked).
pub(crate) const PERMISSION_CACHE: Duration = Duration::from_secs(3600);
/// A permission request is not repeated for a user within this time
/// (Meta allows one request per user per 24 hours).
pub(crate) const PERMISSION_REQUEST_PENDING: Duration = Duration::from_secs(24 * 3600);

/// The WhatsApp number the PBX dialled: the request-URI user without
/// `routing.outbound_strip_prefix` (when it starts with it) and without `+`.
pub(crate) fn waid_from_request_uri(invite: &Msg, strip_prefix: &str) -> Result<Waid, NotAWaid> {
    let user = SipUa::dialled_user(invite).unwrap_or_default();
    // RFC 3261 §19.1.2: '+' may arrive escaped in the user part.
    let user = user.replace("%2B", "+").replace("%2b", "+");
    let rest = if !strip_prefix.is_empty() {
        user.strip_prefix(strip_prefix).unwrap_or(&user)
    } else {
        &user
    };
    Waid::parse(rest).map_err(|why| NotAWaid(format!("{user:?} {why}")))
}

/// Cache first, then Wati; asks the user for permission when allowed and not pending.
async fn check_permission(ctx: &CallCtx, waid: &Waid) -> Result<Permit, WatiError> {
    let now = now_ms();
    if let Ok(Some(row)) = ctx.store.permission(waid.to_string()).await {
        // A grant from "the future" (the wall clock went back since) is
        // not trusted for the jump's length on top of the cache time.
        let age = now - row.updated_at_ms;
        if row.state == Some(PermissionState::Granted)
            && (0..PERMISSION_CACHE.as_millis() as i64).contains(&age)
        {
            return Ok(Permit::Granted);
        }
    }
    let p = ctx.wati.permission(waid).await?;
    if p.can_call {
        let _ = ctx
            .store
            .set_permission(waid.to_string(), PermissionState::Granted, now)
            .await;
        return Ok(Permit::Granted);
    }
    if !ctx.settings.routing.request_permission || p.can_request == Some(false) {
        return Ok(Permit::Refused(RequestOutcome::NotSent));
    }
    let claimed = ctx
        .store
        .claim_permission_request(
            waid.to_string(),
            now,
            PERMISSION_REQUEST_PENDING.as_millis() as i64,
        )
        .await
        .unwrap_or(false);
    if !claimed {
        return Ok(Permit::Refused(RequestOutcome::AlreadyPending));
    }
    match ctx.wati.request_permission(waid).await {
        Ok(()) => Ok(Permit::Refused(RequestOutcome::Sent)),
        Err(e) => {
            tracing::warn!(%waid, error = %e, "call permission request failed");
            // Not sent: the next call may try again.
            let _ = ctx
                .store
                .release_permission_request(waid.to_string(), now)
                .await;
            Ok(Permit::Refused(RequestOutcome::Failed))
        }
    }
}

/// The PBX's offer, negotiated against `media.codecs`. `Ok(None)` for an
/// INVITE without a body: a delayed offer (RFC 3261 §13.2.1), so our 200
/// carries the offer and the PBX answers in its ACK. A body that is not a
/// usable offer is a 488.
fn pbx_offer(invite: &Msg, s: &Settings) -> Result<Option<Negotiated>, SdpError> {
    if !invite.has_body() {
        return Ok(None);
    }
    let m = sdp::parse(invite.sdp().unwrap_or(""))?;
    let n = sdp::negotiate_offer(&m, &s.media.codecs)?;
    // `media.srtp` must be met by the offer (SDES, RFC 4568), or 488 now.
    crate::media::sdes::on_offer(s.media.srtp, n.remote_savp, &n.remote_crypto, |len| {
        vec![0; len]
    })?;
    Ok(Some(n))
}

fn reason_header(code: u16, text: &str) -> (&'static str, String) {
    let text = text.replace(['"', '\\'], "'");
    ("reason", format!("SIP;cause={code};text=\"{text}\""))
}

/// Runs a call the PBX placed. The INVITE comes boxed and is read once here
/// (its SDP offer, the user it calls) and dropped: an `async fn` keeps its
/// arguments twice over in its future (as passed and as moved into the
/// body), for the call's whole life, and the message's own strings with them.
pub(crate) async fn run(
    ctx: Arc<CallCtx>,
    live_id: u64,
    inc: Box<IncomingInvite>,
    mut commands: mpsc::Receiver<CallCommand>,
) {
    let _live = ctx.registry.guard(live_id);
    let started = Instant::now();
    let IncomingInvite {
        call,
        invite,
        source,
        mut events,
    } = *inc;
    let sip_call_id = invite.call_id().to_string();
    let waid = waid_from_request_uri(&invite, &ctx.settings.routing.outbound_strip_prefix);
    let offer = pbx_offer(&invite, &ctx.settings);
    drop(invite);
    let record = ctx
        .store
        .insert_call(NewCall {
            direction: Direction::Outbound,
            wa_call_id: None,
            sip_call_id: Some(sip_call_id.clone()),
            waid: waid.as_ref().ok().map(|w| w.to_string()),
            business_number: None,
            offered_at_ms: now_ms(),
        })
        .await;
    let record = match record {
        Ok(id) => Some(id),
        Err(e) => {
            // A call that cannot be recorded is not placed: the PBX may try
            // another route, and no call goes unrecorded (the store says
            // why in its log and readiness).
            tracing::error!(%sip_call_id, error = %e, "INVITE refused: the call cannot be recorded");
            ctx.metrics.call_ended("outbound", "refused_store");
            ctx.sip
                .reject(
                    call,
                    503,
                    "Service Unavailable",
                    vec![
                        ("retry-after", "30".to_string()),
                        reason_header(503, "the bridge cannot record calls now"),
                    ],
                )
                .await;
            return;
        }
    };
    ctx.metrics.call_started("outbound");
    let mut path = None;
    let mut wa_call = None;
    let out = run_call(
        &ctx,
        live_id,
        Pbx {
            call,
            source: source.addr,
            events: &mut events,
            offer,
        },
        waid,
        &mut commands,
        &mut path,
        &mut wa_call,
        record,
        started,
    )
    .await;
    ctx.registry.set_state(live_id, ENDING);
    let end = out;
    if end.terminate_at_wati {
        if let Some(id) = &wa_call {
            if let Err(e) = cold(ctx.wati.terminate(id)).await {
                tracing::warn!(call_id = %id, error = %e, "terminate at Wati failed");
            }
        }
    }
    tracing::info!(%sip_call_id, wa_call_id = ?wa_call.as_ref().map(|w| w.as_str()), cause = %end.cause, sip_code = ?end.sip_code, secs = started.elapsed().as_secs(), "outbound call ended");
    cold(finish(&ctx, "outbound", record, end, path)).await;
}

/// Binds the call's WebRTC port and RTP pair and makes our WebRTC offer.
fn prepare_media(ctx: &CallCtx) -> Result<(MediaPath, String), MediaSetup> {
    let s = &ctx.settings;
    let (udp, lease) = bind_udp(&ctx.webrtc_ports, s.webrtc.bind_ip)
        .map_err(|e| MediaSetup::NoWebrtcPort(e.to_string()))?;
    let local = udp.local_addr().map_err(|_| MediaSetup::WebrtcSocket)?;
    let udp = tokio::net::UdpSocket::from_std(udp).map_err(|_| MediaSetup::WebrtcSocket)?;
    let advertised = SocketAddr::new(s.webrtc.public_ip, local.port());
    let (leg, offer) = WaLeg::offer(LegConfig::new(local, advertised), Instant::now())
        .map_err(|e| MediaSetup::WebrtcOffer(e.to_string()))?;
    let rtp = RtpSocket::bind(&ctx.rtp_ports, s.media.rtp_ip)
        .map_err(|e| MediaSetup::NoRtpPort(e.to_string()))?;
    let path = MediaPath::new(
        LegSocket::new(udp, leg, Some(lease)),
        rtp,
        s.media.public_ip,
        s.media.srtp,
    );
    Ok((path, offer))
}

/// The media path's next event, once the call has one.
async fn next_path_event(path: &mut Option<MediaPath>) -> PathEvent {
    match path {
        Some(p) => p.next().await,
        None => std::future::pending().await,
    }
}

/// The PBX's side of the call as [`run_call`] needs it.
struct Pbx<'a> {
    call: CallRef,
    source: SocketAddr,
    events: &'a mut mpsc::Receiver<UaEvent>,
    offer: Result<Option<Negotiated>, SdpError>,
}

/// A Wati request in flight, and what its outcome feeds the state machine.
type Request<'a> = Pin<Box<dyn Future<Output = Input> + Send + 'a>>;

async fn in_flight(request: &mut Option<Request<'_>>) -> Input {
    match request {
        Some(r) => r.await,
        None => std::future::pending().await,
    }
}

/// Carries out the call: the Wati requests and the media set-up the state
/// machine asks for, the SIP side, the media path; everything that happens
/// is fed to [`OutboundState`]. A Wati request runs to completion while the
/// PBX's events and hang-up commands keep arriving (the machine holds what
/// would end the call until the request is back).
#[allow(clippy::too_many_arguments)]
async fn run_call(
    ctx: &CallCtx,
    live_id: u64,
    pbx: Pbx<'_>,
    waid: Result<Waid, NotAWaid>,
    commands: &mut mpsc::Receiver<CallCommand>,
    path: &mut Option<MediaPath>,
    wa_call: &mut Option<WaCallId>,
    record: Option<i64>,
    started: Instant,
) -> Ending {
    let s = &ctx.settings;
    let Pbx {
        mut call,
        source,
        events: sip_events,
        offer,
    } = pbx;
    let mut transfer: Option<Transfer> = None;
    if let (Ok(w), Ok(n)) = (&waid, &offer) {
        tracing::info!(waid = %w, %source, codec = n.as_ref().map(|n| n.codec.name()), "call from the PBX to a WhatsApp user");
    }
    let called = waid.as_ref().map(|_| ()).map_err(Clone::clone);
    let mut state = OutboundState::new(called, offer, &s.media.codecs);
    let ring_deadline = tokio::time::Instant::from_std(started + s.calls.ring_timeout);
    let mut request: Option<Request<'_>> = None;
    let mut webrtc_offer = String::new();
    let mut queued: VecDeque<CallCommand> = VecDeque::new();
    let (mut sip_open, mut commands_open) = (true, true);
    loop {
        while let Some(action) = state.poll_action() {
            match action {
                Action::CheckPermission => {
                    if let Ok(w) = &waid {
                        let w = w.clone();
                        request = Some(Box::pin(async move {
                            let p = check_permission(ctx, &w).await;
                            if let Ok(Permit::Refused(outcome)) = &p {
                                tracing::info!(waid = %w, ?outcome, "no call permission");
                            }
                            Input::Permission(p)
                        }));
                    }
                }
                Action::PrepareMedia => {
                    let prepared = prepare_media(ctx).map(|(p, offer)| {
                        *path = Some(p);
                        webrtc_offer = offer;
                    });
                    state.handle(Input::MediaPrepared(prepared));
                }
                Action::PlaceCall => {
                    if let Ok(w) = &waid {
                        // Placed once (the machine asks once): the offer
                        // is not kept for the call's life.
                        let (w, offer) = (w.clone(), std::mem::take(&mut webrtc_offer));
                        request = Some(Box::pin(async move {
                            let placed = ctx.wati.outbound_call(&w, &offer).await;
                            Input::Placed(placed)
                        }));
                    }
                }
                Action::CallPlaced(id) => {
                    tracing::info!(wa_call_id = %id, "WhatsApp call placed");
                    if let Some(r) = record {
                        let _ = ctx.store.set_call_ids(r, Some(id.to_string()), None).await;
                    }
                    queued.extend(ctx.registry.bind_wa(live_id, id.clone()));
                    *wa_call = Some(id);
                }
                Action::Ring => ctx.sip.ring(call, None).await,
                Action::ShowState(name) => ctx.registry.set_state(live_id, name),
                Action::ApplyAnswer(sdp) => {
                    let applied = match path.as_mut() {
                        Some(p) => p.leg.leg().apply_answer(Instant::now(), &sdp),
                        // No leg: nothing offered that an answer could apply to.
                        None => Err(LegError::NoPendingOffer),
                    };
                    state.handle(Input::AnswerApplied(applied));
                }
                Action::StartRelay(n) => {
                    let relay = match path.as_mut() {
                        Some(p) => p.start_relay(n, s.media.rtp_timeout),
                        None => Err(RelayError::NoMediaPath),
                    };
                    if relay.is_ok() {
                        tracing::info!(wa_call_id = ?wa_call.as_ref().map(|w| w.as_str()), codec = ?path.as_ref().and_then(|p| p.codec()).map(|c| c.name()), "relaying media with the PBX");
                        if let Some(p) = path.as_mut() {
                            p.show_quality(ctx.registry.clone(), live_id);
                            if let Some(rec) = &ctx.recorder {
                                p.record(rec, super::recording_name(record, live_id));
                            }
                        }
                    }
                    state.handle(Input::RelayStarted(relay));
                }
                Action::AnswerPbx { offer } => {
                    let ours = path.as_mut().and_then(|p| {
                        if offer {
                            Some(p.offer_sdp(&s.media.codecs))
                        } else {
                            p.local_sdp(&s.media.codecs)
                        }
                    });
                    let sent = ours.is_some();
                    if let Some(sdp) = ours {
                        ctx.sip.answer(call, sdp).await;
                    }
                    state.handle(Input::PbxAnswerSent(sent));
                }
                Action::Answered => {
                    ctx.metrics
                        .call_setup("outbound", started.elapsed().as_secs_f64());
                    ctx.registry.set_state(live_id, "answered");
                    if let Some(id) = record {
                        let _ = ctx.store.call_answered(id, now_ms()).await;
                    }
                    tracing::info!(wa_call_id = ?wa_call.as_ref().map(|w| w.as_str()), codec = ?path.as_ref().and_then(|p| p.codec()).map(|c| c.name()), "WhatsApp user answered; 200 to the PBX");
                }
                Action::SaveDialog => save_dialog(ctx, record, call).await,
                Action::Reject(f) => {
                    // No longer counted: the PBX may place its next call as
                    // soon as it has this response.
                    ctx.registry.set_state(live_id, ENDING);
                    let mut headers = Vec::new();
                    if let Some(r) = &f.reason {
                        headers.push(reason_header(f.code, r));
                    }
                    ctx.sip.reject(call, f.code, f.phrase, headers).await;
                }
                Action::HangUpPbx => ctx.sip.hangup(call).await,
                Action::CloseLeg => {
                    if let Some(p) = path.as_mut() {
                        p.leg.leg().close();
                    }
                }
            }
        }
        if let Some(end) = state.ending() {
            if let Some(t) = transfer.take() {
                t.abandon(ctx, record).await;
            }
            return end;
        }
        let commands_ready = commands_open || !queued.is_empty();
        let next_cmd = async {
            match queued.pop_front() {
                Some(c) => Some(c),
                None => commands.recv().await,
            }
        };
        let input = tokio::select! {
            ev = transfer::next_event(&mut transfer), if transfer.is_some() => {
                if let (Some(t), Some(p)) = (transfer.take(), path.as_mut()) {
                    match t.step(ctx, p, call, record, ev).await {
                        Step::Pending(t) => transfer = Some(t),
                        Step::Moved { call: moved, events } => {
                            call = moved;
                            *sip_events = events;
                        }
                        Step::Failed => {}
                    }
                }
                continue;
            }
            done = in_flight(&mut request), if request.is_some() => {
                request = None;
                done
            }
            _ = tokio::time::sleep_until(ring_deadline), if state.awaiting_answer() => {
                tracing::info!(wa_call_id = ?wa_call.as_ref().map(|w| w.as_str()), "no answer within calls.ring_timeout_s");
                Input::RingTimeout
            }
            cmd = next_cmd, if commands_ready => match cmd {
                Some(CallCommand::Status(st)) => Input::Status(st),
                Some(CallCommand::Answer(sdp)) => Input::WhatsAppAnswer(sdp),
                Some(CallCommand::Terminated) => Input::WhatsAppTerminated,
                Some(CallCommand::Hangup(why)) => Input::Hangup(*why),
                None => {
                    commands_open = false;
                    Input::CallLayerGone
                }
            },
            ev = next_path_event(path), if state.is_placed() => match ev {
                PathEvent::Connected => Input::LegConnected,
                PathEvent::LegEnded(cause) => Input::LegEnded(cause),
                PathEvent::Timeout(t) => Input::MediaTimeout(t),
            },
            ev = sip_events.recv(), if sip_open => match ev {
                None => {
                    sip_open = false;
                    Input::SipGone
                }
                // A dialog the call has left (a transfer's old one).
                Some(ev) if ev.call() != Some(call) => continue,
                Some(UaEvent::Refer { refer, .. }) => {
                    if let (None, Some(p)) = (&transfer, path.as_mut()) {
                        let id = wa_call.as_ref().map(|w| w.to_string());
                        transfer = Transfer::start(ctx, p, call, *refer, id).await;
                    }
                    continue;
                }
                Some(ev) => {
                    let ev = match path.as_mut() {
                        Some(p) => media_only(ctx, p, call, ev).await,
                        None => Some(ev),
                    };
                    match ev {
                        Some(UaEvent::Ended { cause: SipEnd::PeerCancel, .. }) => Input::PbxCancelled,
                        Some(UaEvent::Ended { cause: SipEnd::PeerBye, .. }) => Input::PbxBye,
                        Some(UaEvent::Ended { cause: SipEnd::Overloaded, .. }) => Input::Hangup(EndCause::Overloaded),
                        Some(UaEvent::Ended { cause, .. }) => Input::SipEnded(cause),
                        // Our 200 was acknowledged.
                        Some(UaEvent::Answered { sdp, .. }) => Input::PbxAck { sdp },
                        _ => continue,
                    }
                }
            },
            // Nothing left that could move the call on.
            else => Input::CallLayerGone,
        };
        state.handle(input);
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse_incoming;

    fn invite(content_type: Option<&str>, body: &str) -> Msg {
        let mut m = Msg::request(
            crate::sip::method::Method::Invite,
            "sip:447700900123@bridge",
        );
        m.push("via", "SIP/2.0/UDP 192.0.2.10;branch=z9hG4bK9")
            .push("from", "<sip:a@pbx>;tag=1")
            .push("to", "<sip:447700900123@bridge>")
            .push("call-id", "c")
            .push("cseq", "1 INVITE");
        match content_type {
            Some(ct) => {
                m.with_body(ct, body.as_bytes().to_vec());
            }
            None => m.body = body.as_bytes().to_vec(),
        }
        parse_incoming(&m.to_bytes()).unwrap()
    }

    /// RFC 3261 §13.2.1: an INVITE without a body leaves the offer to our
    /// 200; a body that is not a usable offer is refused (488), not taken
    /// for a delayed offer.
    #[test]
    fn only_an_invite_without_a_body_is_a_delayed_offer() {
        let s =
            crate::config::settings_from_toml_str(crate::config::tests::VALID, std::iter::empty())
                .unwrap();
        assert!(matches!(pbx_offer(&invite(None, ""), &s), Ok(None)));
        assert!(matches!(pbx_offer(&invite(None, "\r\n"), &s), Ok(None)));
        let pcmu = "v=0\r\no=pbx 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
        let n = pbx_offer(&invite(Some("application/sdp"), pcmu), &s)
            .unwrap()
            .expect("an offer");
        assert_eq!(n.codec.name(), "pcmu");
        assert!(pbx_offer(&invite(Some("text/plain"), "hello"), &s).is_err());
        assert!(pbx_offer(&invite(Some("application/sdp"), "v=0\r\n"), &s).is_err());
    }
}
