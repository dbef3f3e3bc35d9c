//! The five webhook routes (axum): authenticate, bound, log durably, parse,
//! hand the typed event to the call layer, answer.
//!
//! Order of checks for each request:
//! 1. `Authorization: Bearer <webhook_key>`, compared in constant time → 401.
//!    Nothing from an unauthenticated request is stored.
//! 2. A `Content-Type` that is present and not JSON → 415.
//! 3. Body over 256 KiB → 413.
//! 4. Parse; a payload we cannot use → 400 `{"error": "<field>: ..."}`,
//!    logged with its error for operators.
//! 5. Log the raw body durably; only then answer 200. A duplicate delivery
//!    is logged too, answered 200, and not handed on.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;

use super::payload::{self, WebhookEvent, WebhookKind};
use crate::metrics::Metrics;
use crate::store::{now_ms, Logged, NewWebhook, Store};

/// Largest webhook body accepted (design.md §4).
pub(crate) const MAX_BODY: usize = 256 * 1024;

/// An accepted webhook on its way to the call layer.
#[derive(Debug, Clone)]
pub struct Received {
    /// Row id in the webhook log.
    pub log_id: i64,
    pub event: WebhookEvent,
}

#[derive(Clone)]
pub(crate) struct WebhookState {
    pub webhook_key: Arc<str>,
    pub store: Store,
    pub events: mpsc::Sender<Received>,
    pub metrics: Arc<Metrics>,
}

/// The routes under `/webhooks/wati/`, with their authentication layer.
pub(crate) fn routes(state: WebhookState) -> Router {
    let mut router = Router::new();
    for kind in WebhookKind::ALL {
        router = router.route(
            &format!("/webhooks/wati/{}", kind.route()),
            post(
                move |s: State<WebhookState>, h: HeaderMap, b: Result<Bytes, BytesRejection>| {
                    handle(kind, s, h, b)
                },
            ),
        );
    }
    router
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Which kind a path belongs to, for counting requests that fail before routing.
fn kind_of(path: &str) -> &'static str {
    WebhookKind::ALL
        .iter()
        .find(|k| path.ends_with(k.route()))
        .map(|k| k.label())
        .unwrap_or("unknown")
}

/// Checks the bearer key before the body is read.
async fn authenticate(State(state): State<WebhookState>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .map(|k| k.trim_ascii());
    let ok = match presented {
        // `ct_eq` on slices of different lengths is false, in time independent of the contents.
        Some(k) => bool::from(k.ct_eq(state.webhook_key.as_bytes())),
        None => false,
    };
    if !ok {
        state.metrics.webhook(kind_of(req.uri().path()), 401);
        tracing::warn!(path = %req.uri().path(), "webhook rejected: missing or wrong Authorization key");
        let mut resp = error(
            StatusCode::UNAUTHORIZED,
            "missing or wrong Authorization: Bearer key",
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return resp;
    }
    next.run(req).await
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        // Absent: lenient, try to parse it.
        None => true,
        Some(v) => {
            let Ok(s) = v.to_str() else { return false };
            let mime = s
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            mime == "application/json" || mime.ends_with("+json") || mime == "text/json"
        }
    }
}

async fn handle(
    kind: WebhookKind,
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let response = process(kind, &state, &headers, body).await;
    state
        .metrics
        .webhook(kind.label(), response.status().as_u16());
    response
}

async fn process(
    kind: WebhookKind,
    state: &WebhookState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !is_json_content_type(headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content-type: must be application/json",
        );
    }
    let body = match body {
        Ok(b) => b,
        Err(rejection) => {
            let status = rejection.status();
            return if status == StatusCode::PAYLOAD_TOO_LARGE {
                error(status, format!("body: larger than {} KiB", MAX_BODY / 1024))
            } else {
                // Any other failure to read the body is the client's (e.g. it hung up).
                error(StatusCode::BAD_REQUEST, format!("body: {rejection}"))
            };
        }
    };
    let received_at_ms = now_ms();
    let parsed = payload::parse(kind, &body);
    let (status, error_text, key) = match &parsed {
        Ok(event) => (200, None, event.dedupe_key()),
        Err(e) => (400, Some(e.to_string()), None),
    };
    let logged = state
        .store
        .log_webhook(NewWebhook {
            route: kind.route(),
            received_at_ms,
            raw_body: &body,
            status,
            error: error_text.as_deref(),
            dedupe_key: key.as_deref(),
        })
        .await;

    let event = match parsed {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(route = kind.route(), error = %e, "webhook payload rejected");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let log_id = match logged {
        Ok(Logged::New(id)) => id,
        Ok(Logged::Duplicate { id, first }) => {
            tracing::info!(
                route = kind.route(),
                log_id = id,
                first,
                "duplicate webhook delivery ignored"
            );
            return (
                StatusCode::OK,
                Json(json!({ "ok": true, "duplicate": true })),
            )
                .into_response();
        }
        Err(e) => {
            // Not the sender's fault and not recorded: ask for a retry rather than lose it.
            tracing::error!(route = kind.route(), error = %e, "webhook could not be stored");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store unavailable, retry later",
            );
        }
    };
    tracing::info!(route = kind.route(), log_id, call_id = ?event.call_id().map(|c| c.as_str()), "webhook accepted");
    if state.events.send(Received { log_id, event }).await.is_err() {
        // The call layer is gone (shutting down); the event is in the log.
        tracing::error!(
            log_id,
            "call layer not running; webhook stored but not handled"
        );
    }
    (StatusCode::OK, Json(json!({ "ok": true }))).into_response()
}
