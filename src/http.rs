//! The HTTP server's own routes: liveness, readiness and metrics, joined with
//! the webhook routes into one router served on `http.listen`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::health::{Check, Health};
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub struct OpsState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
}

pub fn routes(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn check(c: Check) -> &'static str {
    match c {
        Check::NotApplicable => "n/a",
        Check::Ok => "ok",
        Check::Failing => "failing",
    }
}

async fn readyz(State(s): State<OpsState>) -> Response {
    // Touch the database so that a store that broke since the last write shows.
    let _ = s.store.ping().await;
    let h = &s.health;
    let body = json!({
        "ready": h.ready(),
        "checks": {
            "store": if h.store_ok() { "ok" } else { "failing" },
            "wati_token": if h.wati_token_ok() { "ok" } else { "rejected (password changed?)" },
            "sip": check(h.sip()),
            "registration": check(h.registration()),
        }
    });
    let status = if h.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<OpsState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}
