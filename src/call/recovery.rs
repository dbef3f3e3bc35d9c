//! After a crash: calls the store says were live cannot be carried on (their
//! media keys and sockets died with the process), so they are ended on both
//! sides: terminated at Wati, BYE to the PBX where the dialog was saved, and
//! each record closed with the cause `bridge_restarted`.

use crate::ids::WaCallId;
use crate::sip::dialog::Dialog;
use crate::store::{now_ms, CallRow};

use super::CallCtx;

/// What [`recover`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub calls: usize,
    pub terminated_at_wati: usize,
    pub byes_sent: usize,
}

/// Ends the calls `live` (read from the store at start, before any new call).
pub async fn recover(ctx: &CallCtx, live: Vec<CallRow>) -> Recovered {
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
                "bridge_restarted".into(),
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
