//! The call layer: the only place that knows both legs.
//!
//! Webhook events and the PBX's INVITEs arrive here. A New Inbound Call
//! starts an [`inbound`] task, an INVITE an [`outbound`] task; each owns its
//! call's WebRTC leg, RTP socket, relay and SIP dialog. Later webhooks for a
//! call (status, answer, Terminate) go to its task through the [`registry`].
//! Permission updates go to the permission cache in the store.

pub(crate) mod end_cause;
pub(crate) mod inbound;
pub(crate) mod inbound_state;
pub(crate) mod media_path;
pub(crate) mod outbound;
pub(crate) mod outbound_state;
pub(crate) mod recovery;
pub(crate) mod registry;
pub(crate) mod sip_task;
pub(crate) mod transfer;
pub(crate) mod trunk;

pub(crate) use end_cause::EndCause;

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::ports::SharedPortPool;
use crate::store::{now_ms, Direction, NewCall, PermissionState, Store};
use crate::wati::{Received, WatiClient, WebhookEvent};
use outbound::IncomingInvite;
use registry::{CallCommand, Registry, Routed};
use sip_task::SipHandle;

/// What every call task needs.
#[derive(Clone)]
pub(crate) struct CallCtx {
    pub settings: Settings,
    pub store: Store,
    pub wati: WatiClient,
    pub metrics: Arc<Metrics>,
    pub sip: SipHandle,
    pub registry: Arc<Registry>,
    pub webrtc_ports: SharedPortPool,
    pub rtp_ports: SharedPortPool,
    /// The trunk's address (resolved at start, and again as DNS ages).
    pub trunk: Arc<trunk::Trunk>,
    /// `[recording]`, when on.
    pub recorder: Option<Arc<crate::recording::Recorder>>,
}

/// Puts a step a call takes once (set-up, its end at Wati, its record) on
/// the heap for its `.await`. A task's future is as large as its largest
/// await, and tokio keeps that size for the task's whole life: inline, these
/// steps (reqwest futures, the record's write) made a call task 7–8.5 KiB
/// that its steady state (relaying) never needs. (A plain function: an
/// `async fn` would hold `step` inline again.)
pub(crate) fn cold<F: std::future::Future>(step: F) -> std::pin::Pin<Box<F>> {
    Box::pin(step)
}

/// What a call's state machine has to say: the actions it asked for, in
/// order, and, once the call is over, how it ended. The ending is handed out
/// only after the actions are drained (the BYE goes out before the record).
pub(crate) struct Steps<A> {
    actions: std::collections::VecDeque<A>,
    ending: Option<Ending>,
}

impl<A> Default for Steps<A> {
    fn default() -> Self {
        Steps {
            actions: Default::default(),
            ending: None,
        }
    }
}

impl<A> Steps<A> {
    pub(crate) fn push(&mut self, action: A) {
        self.actions.push_back(action);
    }

    /// The next action, until `None`.
    pub(crate) fn poll(&mut self) -> Option<A> {
        self.actions.pop_front()
    }

    pub(crate) fn end(&mut self, e: Ending) {
        self.ending = Some(e);
    }

    /// How the call ended, once it has and its actions are drained.
    pub(crate) fn ending(&mut self) -> Option<Ending> {
        if self.actions.is_empty() {
            self.ending.take()
        } else {
            None
        }
    }
}

/// How a call ended, for its record.
pub(crate) struct Ending {
    pub cause: EndCause,
    /// The final response or the 200 of an answered call.
    pub sip_code: Option<u16>,
    /// Tell Wati to hang up the WhatsApp side.
    pub terminate_at_wati: bool,
}

/// The PBX side is hung up where the ending is decided; this records the rest.
pub(crate) fn ending(cause: EndCause, sip_code: Option<u16>, terminate_at_wati: bool) -> Ending {
    Ending {
        cause,
        sip_code,
        terminate_at_wati,
    }
}

/// Handles a SIP event that concerns only the call's media, whatever the
/// call's state: a re-offer (answered by the media path, RFC 3264 §8) or a
/// SIP INFO key press (sent on to WhatsApp). Any other event is handed back
/// for the call's state machine.
async fn media_only(
    ctx: &CallCtx,
    path: &mut media_path::MediaPath,
    call: crate::sip::ua::CallRef,
    ev: crate::sip::ua::UaEvent,
) -> Option<crate::sip::ua::UaEvent> {
    use crate::sip::ua::UaEvent;
    match ev {
        UaEvent::Reoffer { tx, sdp, .. } => {
            let answer = path.answer_reoffer(sdp.as_deref(), &ctx.settings.media.codecs);
            ctx.sip.answer_reoffer(call, tx, answer).await;
            None
        }
        UaEvent::Dtmf {
            digit, duration, ..
        } => {
            path.sip_info_dtmf(digit, duration);
            None
        }
        other => Some(other),
    }
}

/// A call's recording file name: its record id (what `GET /calls/history`
/// and the pushed record call `id`), or, without a record (the store
/// failing), the live call's id and the time.
fn recording_name(record: Option<i64>, live_id: u64) -> String {
    match record {
        Some(id) => id.to_string(),
        None => format!("live-{live_id}-{}", now_ms()),
    }
}

/// Saves the SIP dialog of an answered call, for a BYE after a crash.
async fn save_dialog(ctx: &CallCtx, record: Option<i64>, call: crate::sip::ua::CallRef) {
    let (Some(id), Some(d)) = (record, ctx.sip.dialog(call).await) else {
        return;
    };
    if let Ok(json) = serde_json::to_string(&d) {
        let _ = ctx.store.save_dialog(id, json).await;
    }
}

/// Writes the call record's end and the metrics of a finished call. The
/// media path (if the call got one) is read for its counters, then closed
/// (sockets and ports released) before the record is written.
async fn finish(
    ctx: &CallCtx,
    direction: &'static str,
    record: Option<i64>,
    end: Ending,
    mut path: Option<media_path::MediaPath>,
) {
    // The recording's file completed first: its path and size go in the record.
    let recorded = match path.as_mut() {
        Some(p) => p.stop_recording().await,
        None => None,
    };
    if let Some(r) = &recorded {
        ctx.metrics.recording(r);
        tracing::info!(
            record = ?record,
            path = ?r.path,
            bytes = r.bytes,
            seconds = r.seconds,
            dropped = r.dropped,
            error = ?r.error,
            "call recording"
        );
    }
    let mut media = path.as_ref().and_then(media_path::MediaPath::counters);
    if let Some(m) = media.as_mut() {
        m.recording = recorded.and_then(|r| serde_json::to_string(&r).ok());
    }
    if let Some(p) = &path {
        ctx.metrics.rtcp_packets("pbx", "in", p.rtcp_received());
        ctx.metrics.rtcp_packets("pbx", "out", p.rtcp_sent());
        if let Some(q) = p.quality() {
            ctx.metrics.call_quality(&q);
            tracing::info!(
                record = ?record,
                whatsapp_mos = q.whatsapp.mos,
                whatsapp_lost = q.whatsapp.rx_lost,
                whatsapp_jitter_ms = q.whatsapp.rx_jitter_ms,
                whatsapp_rtt_ms = ?q.whatsapp.rtt_ms,
                pbx_mos = q.pbx.mos,
                pbx_lost = q.pbx.rx_lost,
                pbx_jitter_ms = q.pbx.rx_jitter_ms,
                pbx_rtt_ms = ?q.pbx.rtt_ms,
                "call quality"
            );
        }
        if let Some(r) = p.rtcp_stats().filter(|r| r.received > 0) {
            tracing::info!(
                record = ?record,
                rtt_ms = ?r.rtt.map(|d| d.as_secs_f64() * 1000.0),
                pbx_saw_lost = ?r.peer_cumulative_lost,
                pbx_saw_fraction_lost = ?r.peer_fraction_lost,
                rtcp_in = r.received,
                rtcp_out = r.sent,
                "PBX leg per RTCP"
            );
        }
    }
    if let Some(mut p) = path {
        for (leg, reason, n) in p.dropped() {
            ctx.metrics.media_dropped(leg, reason, n);
        }
    }
    if let Some(m) = &media {
        ctx.metrics.rtp_packets("whatsapp", "in", m.wa_rx);
        ctx.metrics.rtp_packets("whatsapp", "out", m.wa_tx);
        ctx.metrics.rtp_packets("pbx", "in", m.pbx_rx);
        ctx.metrics.rtp_packets("pbx", "out", m.pbx_tx);
    }
    let answered = end.sip_code == Some(200);
    if let Some(id) = record {
        let ended = (now_ms(), end.cause.to_string(), end.sip_code);
        let written = ctx
            .store
            .end_call(id, ended.0, ended.1.clone(), ended.2, media.clone())
            .await;
        if let Err(e) = written {
            tracing::error!(record = id, error = %e, "could not write the end of the call record; retrying");
            tokio::spawn(retry_end(ctx.store.clone(), id, ended, media));
        }
    }
    ctx.metrics.call_finished(direction);
    ctx.metrics.call_ending(direction, end.cause.kind());
    ctx.metrics.call_ended(
        direction,
        if answered { "answered" } else { "not_answered" },
    );
}

/// Writes a call record's end that the store refused (a full disk), again
/// and again, backing off from 2 s to a minute, until it goes through: the
/// call is over, its record must not stay open. (Should the bridge stop
/// first, the record is still open at the next start and recovery ends it.)
async fn retry_end(
    store: crate::store::Store,
    id: i64,
    (at_ms, cause, sip_code): (i64, String, Option<u16>),
    media: Option<crate::store::MediaCounters>,
) {
    let mut wait = std::time::Duration::from_secs(2);
    loop {
        tokio::time::sleep(wait).await;
        match store
            .end_call(id, at_ms, cause.clone(), sip_code, media.clone())
            .await
        {
            Ok(_) => {
                tracing::info!(record = id, "the end of the call record is written");
                return;
            }
            Err(_) => wait = (wait * 2).min(std::time::Duration::from_secs(60)),
        }
    }
}

/// Drains webhook events and the PBX's INVITEs until both sources are gone,
/// starting and feeding call tasks.
pub(crate) async fn run_calls(
    mut events: mpsc::Receiver<Received>,
    mut invites: mpsc::Receiver<IncomingInvite>,
    ctx: CallCtx,
) {
    // Shared, not cloned per call: the settings alone are 720 bytes plus
    // their strings, and every call task held them twice.
    let ctx = Arc::new(ctx);
    let max = ctx.settings.calls.max_concurrent as usize;
    // What refused calls still have to do (terminate at Wati, the record):
    // off this loop, but waited for before it returns, so that a shutdown
    // right after a refusal does not cut them short.
    let mut refusals = JoinSet::new();
    let (mut events_open, mut invites_open) = (true, true);
    while events_open || invites_open {
        tokio::select! {
            ev = events.recv(), if events_open => match ev {
                Some(r) => on_webhook(&ctx, r, max, &mut refusals).await,
                None => events_open = false,
            },
            inc = invites.recv(), if invites_open => match inc {
                Some(inc) => on_invite(&ctx, inc, max, &mut refusals).await,
                None => invites_open = false,
            },
            Some(_) = refusals.join_next(), if !refusals.is_empty() => {}
        }
    }
    while refusals.join_next().await.is_some() {}
}

async fn on_invite(
    ctx: &Arc<CallCtx>,
    inc: IncomingInvite,
    max: usize,
    refusals: &mut JoinSet<()>,
) {
    let sip_call_id = inc.invite.call_id().to_string();
    match ctx
        .registry
        .admit("outbound", max, None, None, Some(sip_call_id.clone()))
    {
        Ok((id, rx)) => {
            tokio::spawn(outbound::run(ctx.clone(), id, Box::new(inc), rx));
        }
        Err(refusal) => {
            tracing::warn!(%sip_call_id, ?refusal, "INVITE refused");
            ctx.metrics.call_ended("outbound", refusal.label());
            let waid = outbound::waid_from_request_uri(
                &inc.invite,
                &ctx.settings.routing.outbound_strip_prefix,
            );
            let record = NewCall {
                direction: Direction::Outbound,
                wa_call_id: None,
                sip_call_id: Some(sip_call_id.clone()),
                waid: waid.ok().map(|w| w.to_string()),
                business_number: None,
                offered_at_ms: now_ms(),
            };
            refusals.spawn(record_refused(
                ctx.store.clone(),
                record,
                refusal,
                Some(503),
            ));
            let (retry, text) = match refusal {
                registry::Refusal::Capacity => (10, "calls.max_concurrent calls in progress"),
                registry::Refusal::Draining => (60, "the bridge is shutting down"),
            };
            ctx.sip
                .reject(
                    inc.call,
                    503,
                    "Service Unavailable",
                    vec![
                        ("retry-after", retry.to_string()),
                        ("reason", format!("SIP;cause=503;text=\"{text}\"")),
                    ],
                )
                .await;
        }
    }
}

/// The start of a WhatsApp caller's call record.
fn inbound_record(call: &crate::wati::InboundCall, offered_at_ms: i64) -> NewCall {
    NewCall {
        direction: Direction::Inbound,
        wa_call_id: Some(call.call_id.to_string()),
        sip_call_id: None,
        waid: call.caller.as_ref().map(|c| c.to_string()),
        business_number: call.business_number.as_ref().map(|b| b.to_string()),
        offered_at_ms,
    }
}

/// A refused call leaves a record like every other way a call ends
/// (design §2), started and ended at its offer. Written off the dispatch
/// loop (the next webhook or INVITE does not wait for the store), which
/// waits for it before it ends.
async fn record_refused(
    store: Store,
    call: NewCall,
    refusal: registry::Refusal,
    sip_code: Option<u16>,
) {
    let at = call.offered_at_ms;
    if let Err(e) = store
        .insert_ended_call(call, at, refusal.cause().to_string(), sip_code)
        .await
    {
        tracing::error!(error = %e, "could not record a refused call");
    }
}

async fn on_webhook(ctx: &Arc<CallCtx>, r: Received, max: usize, refusals: &mut JoinSet<()>) {
    let Received { log_id, event } = r;
    let (wa, cmd) = match event {
        WebhookEvent::InboundCall(call) => {
            if ctx.registry.has_wa_call(&call.call_id) {
                return;
            }
            match ctx.registry.admit(
                "inbound",
                max,
                Some(call.call_id.clone()),
                call.caller.as_ref().map(|c| c.to_string()),
                None,
            ) {
                Ok((id, rx)) => {
                    tracing::info!(log_id, call_id = %call.call_id, "inbound call");
                    tokio::spawn(inbound::run(ctx.clone(), id, Box::new(call), rx));
                }
                Err(refusal) => {
                    tracing::warn!(log_id, call_id = %call.call_id, ?refusal, "inbound call refused: terminated at Wati");
                    ctx.metrics.call_ended("inbound", refusal.label());
                    let record = inbound_record(&call, now_ms());
                    let wati = ctx.wati.clone();
                    let store = ctx.store.clone();
                    let id = call.call_id.clone();
                    refusals.spawn(async move {
                        if let Err(e) = wati.terminate(&id).await {
                            tracing::warn!(call_id = %id, error = %e, "terminate at Wati failed");
                        }
                        record_refused(store, record, refusal, None).await;
                    });
                }
            }
            return;
        }
        WebhookEvent::Permission { waid, granted } => {
            let state = if granted {
                PermissionState::Granted
            } else {
                PermissionState::Denied
            };
            match ctx
                .store
                .set_permission(waid.to_string(), state, now_ms())
                .await
            {
                Err(e) => {
                    tracing::error!(log_id, %waid, error = %e, "could not record call permission")
                }
                Ok(()) => tracing::info!(log_id, %waid, granted, "call permission recorded"),
            }
            return;
        }
        WebhookEvent::Terminate { call_id } => (call_id, CallCommand::Terminated),
        WebhookEvent::OutboundStatus { call_id, status } => (call_id, CallCommand::Status(status)),
        WebhookEvent::OutboundAnswer { call_id, sdp } => (call_id, CallCommand::Answer(sdp)),
    };
    match ctx.registry.route(&wa, cmd, Instant::now()) {
        Routed::To(tx, cmd) => {
            // A call task reads its channel promptly; one busy ending itself
            // must not hold up every other call's webhooks.
            if let Err(mpsc::error::TrySendError::Full(cmd)) = tx.try_send(cmd) {
                tokio::spawn(async move {
                    let _ = tx.send(cmd).await;
                });
            }
        }
        Routed::Kept => {
            tracing::info!(log_id, call_id = %wa, "webhook for a call id not known yet: kept")
        }
        Routed::Unknown => {
            tracing::info!(log_id, call_id = %wa, "webhook for a call that is not live")
        }
    }
}
