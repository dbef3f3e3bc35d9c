//! A blind transfer by the PBX (REFER, RFC 3515) of an answered call: the
//! bridge INVITEs the `Refer-To` target on the trunk with our full offer
//! (the WhatsApp user as From, `Referred-By` as the REFER said), reports
//! each step to the PBX in a NOTIFY, and when the target answers moves the
//! PBX side of the relay to the new dialog; the old one is ended by the
//! transferor on the final NOTIFY (RFC 5589 §6.1), or by our BYE 2 s later.
//! The WhatsApp leg is never touched: it is the same leg throughout
//! (WhatsApp refuses re-INVITEs). When the target fails, the final NOTIFY
//! says how and the original call goes on as it was.
//!
//! Both call directions use it: a call from a WhatsApp user answered by an
//! agent, and an agent's call to a WhatsApp user.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::media_path::MediaPath;
use super::{save_dialog, CallCtx};
use crate::sip::sdp;
use crate::sip::ua::{CallRef, ReferRequest, UaEvent};

/// How long the transferor has to end the old dialog itself after our
/// final NOTIFY before we send the BYE (a no-op when it did).
const OLD_DIALOG_GRACE: Duration = Duration::from_secs(2);

/// A transfer in progress: the INVITE to the target and its events.
pub(crate) struct Transfer {
    /// The target's call (the new dialog).
    call: CallRef,
    events: mpsc::Receiver<UaEvent>,
    target: String,
    /// The target must answer by then (`calls.ring_timeout_s`).
    deadline: Instant,
}

/// What a transfer's step did to the call.
pub(crate) enum Step {
    /// Still ringing (or a step the call need not know).
    Pending(Transfer),
    /// The target answered: the call's SIP side is now `call`, its events
    /// on `events`; the old dialog is being ended.
    Moved {
        call: CallRef,
        events: mpsc::Receiver<UaEvent>,
    },
    /// The transfer failed; the original call goes on.
    Failed,
}

impl Transfer {
    /// Places the INVITE to the REFER's target. `None` when the SIP side is
    /// gone (the PBX then hears 503 in the final NOTIFY).
    pub(crate) async fn start(
        ctx: &CallCtx,
        path: &mut MediaPath,
        current: CallRef,
        refer: ReferRequest,
        wa_call_id: Option<String>,
    ) -> Option<Transfer> {
        let s = &ctx.settings;
        let offer = path.offer_sdp(&s.media.codecs);
        let mut headers = Vec::new();
        if !refer.referred_by.is_empty() {
            headers.push(("referred-by", refer.referred_by.clone()));
        }
        if let Some(id) = wa_call_id {
            headers.push(("x-wa-call-id", id));
        }
        // Events of the target's call come here, apart from the call's own.
        let (tx, events) = mpsc::channel(32);
        let call = ctx
            .sip
            .invite(
                refer.target.clone(),
                refer.identity.clone(),
                format!("<{}>", refer.target),
                headers,
                offer,
                refer.peer,
                tx,
            )
            .await;
        let Some(call) = call else {
            ctx.sip
                .notify_refer(current, 503, "Service Unavailable".into())
                .await;
            return None;
        };
        Some(Transfer {
            call,
            events,
            target: refer.target,
            deadline: Instant::now() + s.calls.ring_timeout.max(Duration::from_secs(1)),
        })
    }

    /// The target's next event; `None` when its SIP side is gone or it did
    /// not answer in time.
    pub(crate) async fn next(&mut self) -> Option<UaEvent> {
        tokio::time::timeout_at(self.deadline, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// Takes the target's event (`None`: gone or too late) for the call
    /// whose SIP side is `current`, with call record `record`.
    pub(crate) async fn step(
        self,
        ctx: &CallCtx,
        path: &mut MediaPath,
        current: CallRef,
        record: Option<i64>,
        ev: Option<UaEvent>,
    ) -> Step {
        let fail = |code: u16, reason: String| (code, reason);
        let failure = match ev {
            None => {
                ctx.sip.hangup(self.call).await;
                fail(408, "Request Timeout".into())
            }
            Some(UaEvent::Progress { code, .. }) => {
                if code == 180 || code == 183 {
                    let phrase = if code == 180 {
                        "Ringing"
                    } else {
                        "Session Progress"
                    };
                    ctx.sip.notify_refer(current, code, phrase.into()).await;
                }
                return Step::Pending(self);
            }
            Some(UaEvent::Answered { sdp: answer, .. }) => {
                let codecs = &ctx.settings.media.codecs;
                let negotiated = answer
                    .as_deref()
                    .ok_or(sdp::SdpError::NoAudio)
                    .and_then(sdp::parse)
                    .and_then(|m| sdp::negotiate_answer(&m, codecs));
                match negotiated.map(|n| path.switch_pbx(n)) {
                    Ok(Ok(())) => {
                        tracing::info!(target = %self.target, codec = ?path.codec().map(|c| c.name()), "transfer: the target answered; the call moves to it");
                        ctx.sip.notify_refer(current, 200, "OK".into()).await;
                        // RFC 5589 §6.1: the transferor ends the old dialog
                        // once it has the NOTIFY; ours goes only if it did
                        // not. An immediate BYE raced the NOTIFY: Asterisk's
                        // Transfer() then never saw its outcome.
                        let sip = ctx.sip.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(OLD_DIALOG_GRACE).await;
                            sip.hangup(current).await;
                        });
                        note(ctx, record, &self.target, 200).await;
                        save_dialog(ctx, record, self.call).await;
                        return Step::Moved {
                            call: self.call,
                            events: self.events,
                        };
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(target = %self.target, error = %e, "transfer: the target's codec could not be relayed");
                        ctx.sip.hangup(self.call).await;
                        fail(500, "Server Internal Error".into())
                    }
                    Err(e) => {
                        tracing::warn!(target = %self.target, error = %e, "transfer: the target's answer is unusable");
                        ctx.sip.hangup(self.call).await;
                        fail(488, "Not Acceptable Here".into())
                    }
                }
            }
            Some(UaEvent::Failed { code, reason, .. }) => fail(code, reason),
            Some(UaEvent::Ended { .. }) => fail(487, "Request Terminated".into()),
            // An early re-offer from the target before it answered: the
            // call's media is still the old dialog's.
            Some(UaEvent::Reoffer { call, tx, .. }) => {
                ctx.sip.answer_reoffer(call, tx, Err(491)).await;
                return Step::Pending(self);
            }
            Some(_) => return Step::Pending(self),
        };
        let (code, reason) = failure;
        tracing::info!(target = %self.target, code, reason = %reason, "transfer failed; the call stays with the PBX's first dialog");
        ctx.sip.notify_refer(current, code, reason).await;
        note(ctx, record, &self.target, code).await;
        Step::Failed
    }
}

impl Transfer {
    /// The call ends while its transfer rings: the target's INVITE is
    /// cancelled (or its dialog ended), nothing is left half-open.
    pub(crate) async fn abandon(self, ctx: &CallCtx, record: Option<i64>) {
        ctx.sip.hangup(self.call).await;
        note(ctx, record, &self.target, 487).await;
    }
}

/// The record's line for a transfer attempt.
async fn note(ctx: &CallCtx, record: Option<i64>, target: &str, code: u16) {
    if let Some(id) = record {
        let _ = ctx
            .store
            .note_transfer(id, format!("{target} {code}"))
            .await;
    }
}

/// Waits for a transfer's next event, or forever when there is none (a
/// `select!` branch guarded by the transfer's presence).
pub(crate) async fn next_event(t: &mut Option<Transfer>) -> Option<UaEvent> {
    match t {
        Some(t) => t.next().await,
        None => std::future::pending().await,
    }
}
