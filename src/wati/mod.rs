//! The Wati provider: its REST API ([`client`]) and its webhooks
//! ([`payload`] for the typed events, [`webhook`] for the axum routes).
//! Knows HTTP and Wati's JSON, nothing of SIP or media.

pub(crate) mod client;
pub(crate) mod payload;
pub(crate) mod webhook;

pub use client::{Permission, WatiClient, WatiError, WatiOp};
pub use payload::{InboundCall, OutboundStatus, WebhookEvent, WebhookKind};
pub use webhook::Received;
