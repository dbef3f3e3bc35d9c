//! The call layer: the only place that knows both legs.
//!
//! Webhook events arrive here through a channel. A New Inbound Call starts a
//! call task ([`inbound`]) that owns that call's WebRTC leg, RTP socket,
//! relay and SIP dialog; later webhooks for the same call (Terminate) are
//! forwarded to it. Permission updates go to the permission cache. The
//! outbound flow (the PBX calling a WhatsApp user) is not built yet.

pub mod inbound;
pub mod sip_task;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Settings;
use crate::ids::WaCallId;
use crate::metrics::Metrics;
use crate::ports::SharedPortPool;
use crate::store::{now_ms, PermissionState, Store};
use crate::wati::{Received, WatiClient, WebhookEvent};
use sip_task::SipHandle;

/// What every call task needs.
#[derive(Clone)]
pub struct CallCtx {
    pub settings: Settings,
    pub store: Store,
    pub wati: WatiClient,
    pub metrics: Arc<Metrics>,
    pub sip: SipHandle,
    pub webrtc_ports: SharedPortPool,
    pub rtp_ports: SharedPortPool,
    /// The trunk's address (resolved at start).
    pub trunk: Option<SocketAddr>,
}

/// Messages from the call layer to one call's task.
#[derive(Debug)]
pub enum CallCommand {
    /// The WhatsApp side ended the call (Terminate webhook).
    Terminated,
}

/// Drains webhook events until every sender is gone, starting and feeding call tasks.
pub async fn run_calls(mut events: mpsc::Receiver<Received>, ctx: CallCtx) {
    let mut calls: HashMap<WaCallId, mpsc::Sender<CallCommand>> = HashMap::new();
    while let Some(Received { log_id, event }) = events.recv().await {
        calls.retain(|_, tx| !tx.is_closed());
        match event {
            WebhookEvent::InboundCall(call) => {
                if calls.contains_key(&call.call_id) {
                    continue;
                }
                if calls.len() >= ctx.settings.calls.max_concurrent as usize {
                    tracing::warn!(log_id, call_id = %call.call_id, "over calls.max_concurrent: refusing the call");
                    ctx.metrics.call_ended("inbound", "refused_capacity");
                    let wati = ctx.wati.clone();
                    let id = call.call_id.clone();
                    tokio::spawn(async move {
                        let _ = wati.terminate(&id).await;
                    });
                    continue;
                }
                let (tx, rx) = mpsc::channel(8);
                calls.insert(call.call_id.clone(), tx);
                tracing::info!(log_id, call_id = %call.call_id, "inbound call");
                tokio::spawn(inbound::run(ctx.clone(), call, rx));
            }
            WebhookEvent::Terminate { call_id } => match calls.get(&call_id) {
                Some(tx) => {
                    let _ = tx.send(CallCommand::Terminated).await;
                }
                None => tracing::info!(log_id, %call_id, "terminate for a call that is not live"),
            },
            WebhookEvent::Permission { waid, granted } => {
                let state = if granted {
                    PermissionState::Granted
                } else {
                    PermissionState::Denied
                };
                if let Err(e) = ctx
                    .store
                    .set_permission(waid.to_string(), state, now_ms())
                    .await
                {
                    tracing::error!(log_id, %waid, error = %e, "could not record call permission");
                } else {
                    tracing::info!(log_id, %waid, granted, "call permission recorded");
                }
            }
            other => {
                tracing::warn!(log_id, call_id = ?other.call_id().map(|c| c.as_str()), "outbound calls are not implemented yet; event stored only");
            }
        }
    }
}
