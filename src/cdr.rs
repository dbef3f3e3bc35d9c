//! Call records pushed out (`cdr.webhook_url`): each finished call's record
//! as JSON, POSTed at least once, from the store's durable outbox. A push
//! that fails (connection refused, timeout, a status other than 2xx) is
//! tried again later, backing off from 2 s to 5 min; the queue survives a
//! restart. The receiver may see a record twice (a push whose answer was
//! lost): `Idempotency-Key` and the record's `id` say which it is.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::CdrSettings;
use crate::metrics::Metrics;
use crate::store::{now_ms, CallRow, Store};

/// Records taken from the outbox at once.
const BATCH: u32 = 16;
/// How often an empty (or not yet due) outbox is looked at again.
const POLL: Duration = Duration::from_secs(1);

/// The wait before attempt `attempts + 1` (after `attempts` failures).
pub(crate) fn backoff(attempts: u32) -> Duration {
    let secs = 2u64.saturating_mul(1u64 << attempts.min(16));
    Duration::from_secs(secs.min(300))
}

/// A call record as pushed and as `GET /calls/history` lists it (the SIP
/// dialog a live call keeps for crash recovery is not part of it).
pub(crate) fn record_json(r: &CallRow) -> Value {
    let m = r.media.as_ref();
    json!({
        "id": r.id,
        "direction": r.direction.as_str(),
        "wa_call_id": r.wa_call_id,
        "sip_call_id": r.sip_call_id,
        "waid": r.waid,
        "business_number": r.business_number,
        "offered_at_ms": r.offered_at_ms,
        "answered_at_ms": r.answered_at_ms,
        "ended_at_ms": r.ended_at_ms,
        "end_cause": r.end_cause,
        "sip_code": r.sip_code,
        "codec": m.and_then(|m| m.codec.clone()),
        "packets": m.map(|m| json!({
            "whatsapp_in": m.wa_rx, "whatsapp_out": m.wa_tx,
            "pbx_in": m.pbx_rx, "pbx_out": m.pbx_tx,
        })),
        "transfers": r.transfers,
        "quality": m
            .and_then(|m| m.quality.as_deref())
            .and_then(|q| serde_json::from_str::<Value>(q).ok()),
        "recording": m
            .and_then(|m| m.recording.as_deref())
            .and_then(|q| serde_json::from_str::<Value>(q).ok()),
    })
}

/// Pushes queued records until `stop` says so.
pub(crate) async fn run(
    store: Store,
    settings: CdrSettings,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder().timeout(settings.timeout).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "CDR push: no HTTP client; records stay queued");
            return;
        }
    };
    tracing::info!(url = %settings.webhook_url, "pushing call records");
    loop {
        let due = store.cdr_due(now_ms(), BATCH).await.unwrap_or_default();
        for item in &due {
            let mut req = client
                .post(settings.webhook_url.clone())
                .header("idempotency-key", format!("wsb-call-{}", item.call.id))
                .json(&record_json(&item.call));
            if let Some(t) = &settings.bearer_token {
                req = req.bearer_auth(t);
            }
            let outcome = match req.send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
                Err(e) if e.is_timeout() => Err("timeout".to_string()),
                Err(e) if e.is_connect() => Err("connection failed".to_string()),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(()) => {
                    metrics.cdr_push("ok");
                    let _ = store.cdr_delivered(item.outbox_id).await;
                }
                Err(error) => {
                    metrics.cdr_push("failed");
                    let wait = backoff(item.attempts);
                    tracing::warn!(call = item.call.id, attempts = item.attempts + 1, %error, retry_in_s = wait.as_secs(), "CDR push failed");
                    let next = now_ms() + wait.as_millis() as i64;
                    let _ = store.cdr_retry(item.outbox_id, next, error).await;
                }
            }
            if *stop.borrow() {
                return;
            }
        }
        if due.len() < BATCH as usize {
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = stop.changed() => return,
            }
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_to_five_minutes() {
        let waits: Vec<u64> = (0..12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }
}
