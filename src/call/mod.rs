//! The call layer: the only place that knows both legs.
//!
//! Until the call flows land (the call-flow issue), accepted webhooks are
//! logged here and stay in the webhook log; permission updates are applied
//! to the permission cache, which needs no call.

pub mod sip_task;

use tokio::sync::mpsc;

use crate::store::{now_ms, PermissionState, Store};
use crate::wati::{Received, WebhookEvent};

/// Drains webhook events until every sender is gone.
pub async fn run_event_sink(mut events: mpsc::Receiver<Received>, store: Store) {
    while let Some(Received { log_id, event }) = events.recv().await {
        match event {
            WebhookEvent::Permission { waid, granted } => {
                let state = if granted {
                    PermissionState::Granted
                } else {
                    PermissionState::Denied
                };
                if let Err(e) = store
                    .set_permission(waid.to_string(), state, now_ms())
                    .await
                {
                    tracing::error!(log_id, %waid, error = %e, "could not record call permission");
                } else {
                    tracing::info!(log_id, %waid, granted, "call permission recorded");
                }
            }
            other => {
                tracing::warn!(log_id, event = ?other, "call handling is not implemented yet; event stored only");
            }
        }
    }
}
