//! After a crash: calls the store says were live cannot be carried on (their
//! media keys and sockets died with the process), so they are ended on both
//! sides: terminated at Wati, BYE to the PBX where the dialog was saved, and
//! each record closed with the cause `bridge_restarted`. WhatsApp calls whose
//! New Inbound Call webhook was accepted (logged, answered 200) but whose
//! task had not recorded them yet are terminated at Wati too, and recorded.

use super::EndCause;
use crate::ids::WaCallId;
use crate::sip::dialog::Dialog;
use crate::store::{now_ms, CallRow, WebhookRow};
use crate::wati::{WebhookEvent, WebhookKind};

use super::CallCtx;

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub calls: usize,
    pub terminated_at_wati: usize,
    pub byes_sent: usize,
}

/// What the last run left, read before any new call is recorded and ended
/// in the background: calls the store has as live ([`recover`]) and
/// inbound offers logged before `started_ms` that never got a record
/// ([`recover_unrecorded`]).
pub(crate) async fn at_start(ctx: &CallCtx, started_ms: i64) {
    let since = started_ms - UNRECORDED_WINDOW_MS;
    match ctx.store.unrecorded_inbound_calls(since, started_ms).await {
        Ok(offers) if !offers.is_empty() => {
            tracing::warn!(
                calls = offers.len(),
                "inbound calls were offered but not started when the bridge last stopped: ending them"
            );
            let c = ctx.clone();
            tokio::spawn(async move { recover_unrecorded(&c, offers).await });
        }
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "cannot read the inbound calls offered before the restart")
        }
    }
    match ctx.store.live_calls().await {
        Ok(live) if !live.is_empty() => {
            tracing::warn!(
                calls = live.len(),
                "calls were live when the bridge last stopped: ending them"
            );
            let c = ctx.clone();
            tokio::spawn(async move { recover(&c, live).await });
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "cannot read the calls live before the restart"),
    }
}

/// Ends the calls `live` (read from the store at start, before any new call).
pub(crate) async fn recover(ctx: &CallCtx, live: Vec<CallRow>) -> Recovered {
    let mut done = Recovered::default();
    for row in live {
        done.calls += 1;
        if let Some(id) = row
            .wa_call_id
            .as_deref()
            .and_then(|w| WaCallId::parse(w).ok())
        {
            match ctx.wati.terminate(&id).await {
                Ok(()) => done.terminated_at_wati += 1,
                Err(e) => {
                    tracing::warn!(call_id = %id, error = %e, "terminate at Wati after restart failed")
                }
            }
        }
        let dialog = row
            .sip_dialog
            .as_deref()
            .and_then(|d| serde_json::from_str::<Dialog>(d).ok());
        if let Some(d) = dialog {
            ctx.sip.bye_saved(d).await;
            done.byes_sent += 1;
        }
        if let Err(e) = ctx
            .store
            .end_call(
                row.id,
                now_ms(),
                EndCause::BridgeRestarted.to_string(),
                row.sip_code,
                None,
            )
            .await
        {
            tracing::error!(record = row.id, error = %e, "cannot close the call record");
        }
        tracing::warn!(record = row.id, wa_call_id = ?row.wa_call_id, direction = row.direction.as_str(), "call live before the restart ended");
    }
    done
}

/// How far back [`recover_unrecorded`] looks: WhatsApp gives up on a call
/// that is not accepted within 30–60 s (whatsapp-wire.md §3.6), so older
/// offers need nothing more.
pub(crate) const UNRECORDED_WINDOW_MS: i64 = 120_000;

/// Ends the inbound calls of `offers` (from
/// [`Store::unrecorded_inbound_calls`](crate::store::Store::unrecorded_inbound_calls)):
/// each is terminated at Wati (the caller would otherwise ring until
/// WhatsApp gives up) and gets its record, cause `bridge_restarted`.
pub(crate) async fn recover_unrecorded(ctx: &CallCtx, offers: Vec<WebhookRow>) {
    for row in offers {
        let Ok(WebhookEvent::InboundCall(call)) =
            crate::wati::payload::parse(WebhookKind::InboundCall, &row.raw_body)
        else {
            continue;
        };
        if let Err(e) = ctx.wati.terminate(&call.call_id).await {
            tracing::warn!(call_id = %call.call_id, error = %e, "terminate at Wati after restart failed");
        }
        let record = super::inbound_record(&call, row.received_at_ms);
        if let Err(e) = ctx
            .store
            .insert_ended_call(
                record,
                now_ms(),
                EndCause::BridgeRestarted.to_string(),
                None,
            )
            .await
        {
            tracing::error!(call_id = %call.call_id, error = %e, "cannot record the call");
        }
        tracing::warn!(call_id = %call.call_id, webhook = row.id, "inbound call offered before the restart, never started: ended");
    }
}
