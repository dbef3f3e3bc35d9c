//! The HTTP server's own routes: liveness, readiness, metrics and the admin
//! API, joined with the webhook routes into one router served on `http.listen`.
//!
//! Admin API (off unless `http.admin_token` is set; `Authorization: Bearer
//! <admin_token>`): `GET /calls` lists live calls as JSON, `DELETE
//! /calls/{id}` hangs one up on both sides, `GET /calls/history?since=<ms>
//! &limit=<n>` lists ended calls that ended after `since` (epoch ms), in
//! the order they ended, at most `limit` (100 by default, 1000 at most):
//! pull-style integrations ask again with the last `ended_at_ms` they saw.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::call::registry::{CallCommand, Registry};
use crate::health::{Check, Health};
use crate::metrics::Metrics;
use crate::store::Store;

#[derive(Clone)]
pub(crate) struct OpsState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub registry: Arc<Registry>,
    /// `None`: the admin API is off (404).
    pub admin_token: Option<Arc<str>>,
}

pub(crate) fn routes(state: OpsState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/calls", get(list_calls))
        .route("/calls/history", get(history))
        .route("/calls/{id}", axum::routing::delete(hang_up))
        .with_state(state)
}

/// `Err` is the response to send: 404 when the admin API is off, 401 on a wrong token.
fn admin(s: &OpsState, headers: &HeaderMap) -> Result<(), Box<Response>> {
    use subtle::ConstantTimeEq;
    let Some(token) = s.admin_token.as_deref() else {
        return Err(Box::new(
            (
                StatusCode::NOT_FOUND,
                "admin API off (http.admin_token is empty)\n",
            )
                .into_response(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(token.as_bytes())) => Ok(()),
        _ => Err(Box::new(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "admin token missing or wrong\n",
            )
                .into_response(),
        )),
    }
}

async fn list_calls(State(s): State<OpsState>, headers: HeaderMap) -> Response {
    if let Err(r) = admin(&s, &headers) {
        return *r;
    }
    Json(json!({ "calls": s.registry.list() })).into_response()
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    since: Option<String>,
    limit: Option<String>,
}

async fn history(
    State(s): State<OpsState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Err(r) = admin(&s, &headers) {
        return *r;
    }
    let bad = |msg: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response();
    let Ok(axum::extract::Query(q)) = query else {
        return bad("query: expected since=<epoch ms>&limit=<n>");
    };
    let since = match q.since.as_deref().map(str::parse::<i64>) {
        None => 0,
        Some(Ok(v)) => v,
        Some(Err(_)) => return bad("since: must be milliseconds since the epoch"),
    };
    let limit = match q.limit.as_deref().map(str::parse::<u32>) {
        None => 100,
        Some(Ok(v)) if (1..=1000).contains(&v) => v,
        Some(_) => return bad("limit: must be between 1 and 1000"),
    };
    match s.store.calls_history(since, limit).await {
        Ok(rows) => {
            let calls: Vec<_> = rows.iter().map(crate::cdr::record_json).collect();
            Json(json!({ "calls": calls })).into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!("store: {e}")})),
        )
            .into_response(),
    }
}

async fn hang_up(
    State(s): State<OpsState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = admin(&s, &headers) {
        return *r;
    }
    let Ok(id) = id.parse::<u64>() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "id: must be a live call's numeric id (GET /calls)"})),
        )
            .into_response();
    };
    match s.registry.sender(id) {
        Some(tx) => {
            let _ = tx
                .send(CallCommand::Hangup(Box::new(
                    crate::call::EndCause::AdminHangup,
                )))
                .await;
            (
                StatusCode::ACCEPTED,
                Json(json!({"id": id, "status": "hanging up"})),
            )
                .into_response()
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no live call with this id"})),
        )
            .into_response(),
    }
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

/// Serves `app` over HTTPS (`http.tls_cert`): each accepted connection's
/// TLS handshake (10 s at most) then HTTP/1.1 by hyper, until `stopped`;
/// then connections still open finish the request in hand and close (as
/// `axum::serve`'s graceful shutdown does: the webhook queue's senders
/// live in them). A handshake that fails costs only its own connection.
pub(crate) async fn serve_https(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((tcp, peer)) = accepted else { continue };
                let (acceptor, app) = (acceptor.clone(), app.clone());
                let mut stop = stop_rx.clone();
                conns.spawn(async move {
                    let handshake = tokio::time::timeout(
                        std::time::Duration::from_secs(10),
                        acceptor.accept(tcp),
                    );
                    let tls = match handshake.await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service);
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    Ok(())
}
