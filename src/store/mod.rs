//! Durable state in SQLite: the webhook log, one record per call, and the
//! call-permission cache.
//!
//! SQLite runs in WAL mode with `synchronous = FULL`, so a webhook is on disk
//! before the bridge answers `200` for it. One thread owns the connection
//! and commits what is queued in groups ([`writer`]): a burst of call
//! set-ups pays one disk flush per group, not one per write. The store is
//! never on the per-packet path.

mod cdr;
pub use cdr::CdrItem;
mod schema;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension};

use crate::config::StorageSettings;
use crate::health::Health;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database schema version {found} is newer than this build knows ({known})")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("the database worker stopped: {0}")]
    Worker(String),
}

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Which way a call goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A WhatsApp user calls the business.
    Inbound,
    /// The PBX calls a WhatsApp user.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
    fn parse(s: &str) -> Direction {
        if s == "outbound" {
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }
}

/// A webhook request to be logged.
#[derive(Debug, Clone)]
pub struct NewWebhook<'a> {
    pub route: &'a str,
    pub received_at_ms: i64,
    pub raw_body: &'a [u8],
    /// HTTP status answered (200, or 400 for a payload we could not use).
    pub status: u16,
    /// Why a 400 was answered.
    pub error: Option<&'a str>,
    /// Identity of the event; a second request with the same key is a duplicate delivery.
    pub dedupe_key: Option<&'a str>,
}

/// What logging a webhook found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logged {
    /// First delivery; its row id.
    New(i64),
    /// The same event was logged before as `first`; this delivery's own row is `id`.
    Duplicate { id: i64, first: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: i64,
    pub route: String,
    pub received_at_ms: i64,
    pub raw_body: Vec<u8>,
    pub status: u16,
    pub error: Option<String>,
    pub dedupe_key: Option<String>,
    pub duplicate_of: Option<i64>,
}

/// The start of a call record.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub direction: Direction,
    pub wa_call_id: Option<String>,
    pub sip_call_id: Option<String>,
    pub waid: Option<String>,
    pub business_number: Option<String>,
    pub offered_at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRow {
    pub id: i64,
    pub direction: Direction,
    pub wa_call_id: Option<String>,
    pub sip_call_id: Option<String>,
    pub waid: Option<String>,
    pub business_number: Option<String>,
    pub offered_at_ms: i64,
    pub answered_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub end_cause: Option<String>,
    pub sip_code: Option<u16>,
    pub media: Option<MediaCounters>,
    /// The SIP dialog (JSON) while the call is answered, for a BYE after a crash.
    pub sip_dialog: Option<String>,
    /// The PBX's transfers (REFER) of the call, one line per attempt:
    /// `<Refer-To target> <final SIP status>`.
    pub transfers: Option<String>,
}

/// Packets relayed in a call, per leg and direction, and the PBX-side codec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaCounters {
    pub codec: Option<String>,
    pub wa_rx: u64,
    pub wa_tx: u64,
    pub pbx_rx: u64,
    pub pbx_tx: u64,
    /// Per-leg quality, JSON ([`crate::media::quality::CallQuality`]).
    pub quality: Option<String>,
    /// The call's recording, JSON ([`crate::recording::Recorded`]).
    pub recording: Option<String>,
}

/// What the cache knows about a user's call permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PermissionState {
    Granted,
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionRow {
    pub waid: String,
    pub state: Option<PermissionState>,
    pub updated_at_ms: i64,
    pub request_pending_since_ms: Option<i64>,
}

#[derive(Clone)]
pub struct Store {
    writer: writer::Writer,
    health: Arc<Health>,
    /// Whether ended calls are queued for `cdr.webhook_url` ([`cdr`]).
    cdr_outbox: Arc<std::sync::atomic::AtomicBool>,
    /// When an operation last failed (ms since the epoch; 0: never).
    last_failure_ms: Arc<std::sync::atomic::AtomicI64>,
}

/// How long writes must go through after a failure before the store is
/// reported healthy again. A full disk lets some writes through (those that
/// fit in pages SQLite already has) while others fail; without this,
/// readiness would flap with each.
const STORE_SETTLE_MS: i64 = 10_000;

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub fn open(settings: &StorageSettings, health: Arc<Health>) -> Result<Store, StoreError> {
        let conn = match settings {
            StorageSettings::SqliteFile(path) => Self::open_file(path)?,
            StorageSettings::SqliteMemory => Connection::open_in_memory()?,
        };
        schema::migrate(&conn)?;
        health.set_store_ok(true);
        Ok(Store {
            writer: writer::Writer::start(conn)?,
            health,
            cdr_outbox: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            last_failure_ms: Arc::new(std::sync::atomic::AtomicI64::new(0)),
        })
    }

    fn open_file(path: &Path) -> Result<Connection, StoreError> {
        let conn = Connection::open(path)?;
        // WAL lets readers (admin API, readiness) proceed during writes; FULL
        // makes a commit durable before we acknowledge what it records.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    /// Runs `f` on the connection (committed with whatever else is queued)
    /// and answers once it is on disk; any failure turns readiness red, and
    /// it turns green again with a success [`STORE_SETTLE_MS`] after the
    /// last failure.
    async fn with<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let result = self
            .writer
            .submit(f)
            .await
            .unwrap_or_else(|_| Err(StoreError::Worker("the store thread is gone".into())));
        use std::sync::atomic::Ordering::Relaxed;
        let now = now_ms();
        match &result {
            Err(e) => {
                self.last_failure_ms.store(now, Relaxed);
                self.health.set_store_ok(false);
                tracing::error!(error = %e, "store operation failed");
            }
            Ok(_) if now - self.last_failure_ms.load(Relaxed) >= STORE_SETTLE_MS => {
                self.health.set_store_ok(true);
            }
            Ok(_) => {}
        }
        result
    }

    /// A small write, for readiness: a read goes through on a full or
    /// read-only disk, and says nothing about whether the next call's record
    /// can be written.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let at = now_ms();
        self.with(move |c| {
            c.execute(
                "INSERT INTO health_probe (id, at_ms) VALUES (1, ?1)
                 ON CONFLICT(id) DO UPDATE SET at_ms = excluded.at_ms",
                params![at],
            )?;
            Ok(())
        })
        .await
    }

    /// Records a webhook request. Returns whether its event was seen before
    /// (same `dedupe_key`); the request itself is always logged.
    pub async fn log_webhook(&self, w: NewWebhook<'_>) -> Result<Logged, StoreError> {
        let route = w.route.to_string();
        let body = w.raw_body.to_vec();
        let error = w.error.map(str::to_string);
        let key = w.dedupe_key.map(str::to_string);
        let (at, status) = (w.received_at_ms, w.status);
        // All-or-nothing: every request runs in a savepoint of its own.
        self.with(move |tx| {
            let first: Option<i64> = match &key {
                Some(k) => tx
                    .query_row(
                        "SELECT id FROM webhook_log WHERE dedupe_key = ?1",
                        [k],
                        |r| r.get(0),
                    )
                    .optional()?,
                None => None,
            };
            // The unique index covers only first deliveries: duplicates keep their
            // key in `duplicate_of` instead.
            tx.execute(
                "INSERT INTO webhook_log (route, received_at_ms, raw_body, status, error, dedupe_key, duplicate_of)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    route,
                    at,
                    body,
                    status,
                    error,
                    if first.is_some() { None } else { key.as_deref() },
                    first
                ],
            )?;
            let id = tx.last_insert_rowid();
            Ok(match first {
                Some(first) => Logged::Duplicate { id, first },
                None => Logged::New(id),
            })
        })
        .await
    }

    pub async fn webhook(&self, id: i64) -> Result<Option<WebhookRow>, StoreError> {
        self.with(move |c| {
            Ok(c.query_row(
                &format!("{WEBHOOK_SELECT} WHERE id = ?1"),
                [id],
                webhook_row,
            )
            .optional()?)
        })
        .await
    }

    /// The most recent `limit` webhook log rows, newest first.
    pub async fn recent_webhooks(&self, limit: u32) -> Result<Vec<WebhookRow>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!("{WEBHOOK_SELECT} ORDER BY id DESC LIMIT ?1"))?;
            let rows = stmt.query_map([limit], webhook_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Starts a call record; returns its id.
    pub async fn insert_call(&self, call: NewCall) -> Result<i64, StoreError> {
        self.with(move |c| {
            c.execute(
                "INSERT INTO calls (direction, wa_call_id, sip_call_id, waid, business_number, offered_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    call.direction.as_str(),
                    call.wa_call_id,
                    call.sip_call_id,
                    call.waid,
                    call.business_number,
                    call.offered_at_ms
                ],
            )?;
            Ok(c.last_insert_rowid())
        })
        .await
    }

    /// Records a call that ended without ever running (refused at its offer
    /// for capacity or draining; offered before a crash): started and ended
    /// in one statement, so it leaves a record like any other call and never
    /// a live one.
    pub async fn insert_ended_call(
        &self,
        call: NewCall,
        ended_at_ms: i64,
        cause: String,
        sip_code: Option<u16>,
    ) -> Result<i64, StoreError> {
        let cdr = self.cdr_outbox_on();
        self.with(move |c| {
            c.execute(
                "INSERT INTO calls (direction, wa_call_id, sip_call_id, waid, business_number, offered_at_ms,
                                    ended_at_ms, end_cause, sip_code)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    call.direction.as_str(),
                    call.wa_call_id,
                    call.sip_call_id,
                    call.waid,
                    call.business_number,
                    call.offered_at_ms,
                    ended_at_ms,
                    cause,
                    sip_code
                ],
            )?;
            let id = c.last_insert_rowid();
            if cdr {
                cdr::enqueue(c, id, ended_at_ms)?;
            }
            Ok(id)
        })
        .await
    }

    /// Fills in ids learnt after the record was started (e.g. the Wati call id of an outbound call).
    pub async fn set_call_ids(
        &self,
        id: i64,
        wa_call_id: Option<String>,
        sip_call_id: Option<String>,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "UPDATE calls SET wa_call_id = COALESCE(?2, wa_call_id),
                                  sip_call_id = COALESCE(?3, sip_call_id) WHERE id = ?1",
                params![id, wa_call_id, sip_call_id],
            )?;
            Ok(())
        })
        .await
    }

    /// Saves the call's SIP dialog (JSON) so that a restarted bridge can end it.
    pub async fn save_dialog(&self, id: i64, dialog: String) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "UPDATE calls SET sip_dialog = ?2 WHERE id = ?1 AND ended_at_ms IS NULL",
                params![id, dialog],
            )?;
            Ok(())
        })
        .await
    }

    /// Notes a transfer attempt (a line: target and final status) in the record.
    pub async fn note_transfer(&self, id: i64, line: String) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "UPDATE calls SET transfers = COALESCE(transfers || char(10), '') || ?2 WHERE id = ?1",
                params![id, line],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn call_answered(&self, id: i64, at_ms: i64) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "UPDATE calls SET answered_at_ms = ?2 WHERE id = ?1 AND answered_at_ms IS NULL",
                params![id, at_ms],
            )?;
            Ok(())
        })
        .await
    }

    /// Ends a call record. The first end wins: a call ends once, with one cause.
    /// Returns false when the call had already ended.
    pub async fn end_call(
        &self,
        id: i64,
        at_ms: i64,
        cause: String,
        sip_code: Option<u16>,
        media: Option<MediaCounters>,
    ) -> Result<bool, StoreError> {
        let cdr = self.cdr_outbox_on();
        self.with(move |c| {
            let m = media.as_ref();
            let n = c.execute(
                "UPDATE calls SET ended_at_ms = ?2, end_cause = ?3, sip_code = ?4, codec = ?5, sip_dialog = NULL,
                     wa_rx_packets = ?6, wa_tx_packets = ?7, pbx_rx_packets = ?8, pbx_tx_packets = ?9,
                     quality = ?10, recording = ?11
                 WHERE id = ?1 AND ended_at_ms IS NULL",
                params![
                    id,
                    at_ms,
                    cause,
                    sip_code,
                    m.and_then(|m| m.codec.clone()),
                    m.map(|m| m.wa_rx as i64),
                    m.map(|m| m.wa_tx as i64),
                    m.map(|m| m.pbx_rx as i64),
                    m.map(|m| m.pbx_tx as i64),
                    m.and_then(|m| m.quality.clone()),
                    m.and_then(|m| m.recording.clone())
                ],
            )?;
            // Queued in the same transaction as the end: never an ended call
            // without its push, never a push of a call still live.
            if n == 1 && cdr {
                cdr::enqueue(c, id, at_ms)?;
            }
            Ok(n == 1)
        })
        .await
    }

    pub async fn call(&self, id: i64) -> Result<Option<CallRow>, StoreError> {
        self.with(move |c| {
            Ok(
                c.query_row(&format!("{CALL_SELECT} WHERE id = ?1"), [id], call_row)
                    .optional()?,
            )
        })
        .await
    }

    /// The newest `limit` call records, newest first.
    pub async fn recent_calls(&self, limit: u32) -> Result<Vec<CallRow>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!("{CALL_SELECT} ORDER BY id DESC LIMIT ?1"))?;
            let rows = stmt.query_map([limit], call_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Every record of a WhatsApp call id (normally one).
    pub async fn calls_by_wa_call_id(
        &self,
        wa_call_id: String,
    ) -> Result<Vec<CallRow>, StoreError> {
        self.with(move |c| {
            let mut stmt =
                c.prepare(&format!("{CALL_SELECT} WHERE wa_call_id = ?1 ORDER BY id"))?;
            let rows = stmt.query_map([wa_call_id], call_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// New Inbound Call webhooks received in `since_ms..until_ms` (first
    /// deliveries answered 200) whose call has no record: offered calls a
    /// crash stopped before their task recorded them. Oldest first.
    pub async fn unrecorded_inbound_calls(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<WebhookRow>, StoreError> {
        self.with(move |c| {
            // 'inbound-call:' is 13 characters; the call id follows it.
            let mut stmt = c.prepare(&format!(
                "{WEBHOOK_SELECT} w WHERE w.route = 'inbound-call' AND w.status = 200
                   AND w.dedupe_key LIKE 'inbound-call:%'
                   AND w.received_at_ms >= ?1 AND w.received_at_ms < ?2
                   AND NOT EXISTS (SELECT 1 FROM calls c WHERE c.wa_call_id = substr(w.dedupe_key, 14))
                 ORDER BY w.id"
            ))?;
            let rows = stmt.query_map([since_ms, until_ms], webhook_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Calls that have not ended: after a crash, these are the ones to clean up.
    pub async fn live_calls(&self) -> Result<Vec<CallRow>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{CALL_SELECT} WHERE ended_at_ms IS NULL ORDER BY id"
            ))?;
            let rows = stmt.query_map([], call_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Records the user's answer to a permission request; clears any pending request.
    pub async fn set_permission(
        &self,
        waid: String,
        state: PermissionState,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        let state = match state {
            PermissionState::Granted => "granted",
            PermissionState::Denied => "denied",
        };
        self.with(move |c| {
            c.execute(
                "INSERT INTO permissions (waid, state, updated_at_ms, request_pending_since_ms)
                 VALUES (?1, ?2, ?3, NULL)
                 ON CONFLICT(waid) DO UPDATE SET state = excluded.state,
                     updated_at_ms = excluded.updated_at_ms, request_pending_since_ms = NULL",
                params![waid, state, at_ms],
            )?;
            Ok(())
        })
        .await
    }

    pub async fn permission(&self, waid: String) -> Result<Option<PermissionRow>, StoreError> {
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT waid, state, updated_at_ms, request_pending_since_ms FROM permissions WHERE waid = ?1",
                [waid],
                |r| {
                    let state: Option<String> = r.get(1)?;
                    Ok(PermissionRow {
                        waid: r.get(0)?,
                        state: match state.as_deref() {
                            Some("granted") => Some(PermissionState::Granted),
                            Some("denied") => Some(PermissionState::Denied),
                            _ => None,
                        },
                        updated_at_ms: r.get(2)?,
                        request_pending_since_ms: r.get(3)?,
                    })
                },
            )
            .optional()?)
        })
        .await
    }

    /// Marks a permission request as sent at `at_ms`, unless one is already
    /// pending and younger than `pending_for_ms`. Returns true when the caller
    /// should send the request (it won the race to mark it).
    pub async fn claim_permission_request(
        &self,
        waid: String,
        at_ms: i64,
        pending_for_ms: i64,
    ) -> Result<bool, StoreError> {
        self.with(move |c| {
            let n = c.execute(
                "INSERT INTO permissions (waid, state, updated_at_ms, request_pending_since_ms)
                 VALUES (?1, NULL, ?2, ?2)
                 ON CONFLICT(waid) DO UPDATE SET request_pending_since_ms = ?2, updated_at_ms = ?2
                 WHERE request_pending_since_ms IS NULL OR request_pending_since_ms <= ?2 - ?3",
                params![waid, at_ms, pending_for_ms],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Gives back a claim of [`Store::claim_permission_request`] whose
    /// request never reached Wati (its REST call failed), so that the next
    /// call asks again instead of waiting out the pending time for a request
    /// the user never got. Only the claim made at `at_ms` is released.
    pub async fn release_permission_request(
        &self,
        waid: String,
        at_ms: i64,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "UPDATE permissions SET request_pending_since_ms = NULL
                 WHERE waid = ?1 AND request_pending_since_ms = ?2",
                params![waid, at_ms],
            )?;
            Ok(())
        })
        .await
    }
}

const WEBHOOK_SELECT: &str = "SELECT id, route, received_at_ms, raw_body, status, error, dedupe_key, duplicate_of FROM webhook_log";

fn webhook_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WebhookRow> {
    Ok(WebhookRow {
        id: r.get(0)?,
        route: r.get(1)?,
        received_at_ms: r.get(2)?,
        raw_body: r.get(3)?,
        status: r.get(4)?,
        error: r.get(5)?,
        dedupe_key: r.get(6)?,
        duplicate_of: r.get(7)?,
    })
}

const CALL_SELECT: &str = "SELECT id, direction, wa_call_id, sip_call_id, waid, business_number, offered_at_ms, answered_at_ms, ended_at_ms, end_cause, sip_code, codec, wa_rx_packets, wa_tx_packets, pbx_rx_packets, pbx_tx_packets, sip_dialog, transfers, quality, recording FROM calls";

fn call_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CallRow> {
    call_row_from(r, 0)
}

/// A call record from the row's columns `at..`, in [`CALL_SELECT`]'s order.
fn call_row_from(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<CallRow> {
    let direction: String = r.get(at + 1)?;
    Ok(CallRow {
        id: r.get(at)?,
        direction: Direction::parse(&direction),
        wa_call_id: r.get(at + 2)?,
        sip_call_id: r.get(at + 3)?,
        waid: r.get(at + 4)?,
        business_number: r.get(at + 5)?,
        offered_at_ms: r.get(at + 6)?,
        answered_at_ms: r.get(at + 7)?,
        ended_at_ms: r.get(at + 8)?,
        end_cause: r.get(at + 9)?,
        sip_code: r.get(at + 10)?,
        media: match r.get::<_, Option<i64>>(at + 12)? {
            None => None,
            Some(wa_rx) => Some(MediaCounters {
                codec: r.get(at + 11)?,
                wa_rx: wa_rx as u64,
                wa_tx: r.get::<_, Option<i64>>(at + 13)?.unwrap_or(0) as u64,
                pbx_rx: r.get::<_, Option<i64>>(at + 14)?.unwrap_or(0) as u64,
                pbx_tx: r.get::<_, Option<i64>>(at + 15)?.unwrap_or(0) as u64,
                quality: r.get(at + 18)?,
                recording: r.get(at + 19)?,
            }),
        },
        sip_dialog: r.get(at + 16)?,
        transfers: r.get(at + 17)?,
    })
}

// `unwrap`/`expect` in these tests are set-up and assertions: a failure is
// the test's failure; none is reachable from the bridge's input.
#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::open(&StorageSettings::SqliteMemory, Arc::new(Health::default())).unwrap()
    }

    fn hook<'a>(key: Option<&'a str>, body: &'a [u8]) -> NewWebhook<'a> {
        NewWebhook {
            route: "inbound-call",
            received_at_ms: 1000,
            raw_body: body,
            status: 200,
            error: None,
            dedupe_key: key,
        }
    }

    #[tokio::test]
    async fn webhook_round_trip_and_dedupe() {
        let s = store();
        let first = s
            .log_webhook(hook(Some("inbound-call:A"), b"{1}"))
            .await
            .unwrap();
        let Logged::New(id) = first else {
            panic!("{first:?}")
        };
        let again = s
            .log_webhook(hook(Some("inbound-call:A"), b"{2}"))
            .await
            .unwrap();
        assert!(matches!(again, Logged::Duplicate { first, .. } if first == id));
        let other = s
            .log_webhook(hook(Some("inbound-call:B"), b"{3}"))
            .await
            .unwrap();
        assert!(matches!(other, Logged::New(_)));
        // Requests without an identity are never duplicates.
        assert!(matches!(
            s.log_webhook(hook(None, b"x")).await.unwrap(),
            Logged::New(_)
        ));
        assert!(matches!(
            s.log_webhook(hook(None, b"x")).await.unwrap(),
            Logged::New(_)
        ));

        let row = s.webhook(id).await.unwrap().unwrap();
        assert_eq!(row.raw_body, b"{1}");
        assert_eq!(row.route, "inbound-call");
        assert_eq!(s.recent_webhooks(10).await.unwrap().len(), 5);
    }

    /// Offers that a crash left without a record: in the window, answered
    /// 200, first deliveries, and no call record with their call id.
    #[tokio::test]
    async fn unrecorded_inbound_offers_are_found_once_and_only_in_the_window() {
        let s = store();
        let at = |key: &'static str, ms: i64, status: u16| NewWebhook {
            received_at_ms: ms,
            status,
            ..hook(Some(key), b"{}")
        };
        s.log_webhook(at("inbound-call:old", 100, 200))
            .await
            .unwrap();
        s.log_webhook(at("inbound-call:lost", 1000, 200))
            .await
            .unwrap();
        s.log_webhook(at("inbound-call:lost", 1001, 200))
            .await
            .unwrap(); // a duplicate
        s.log_webhook(at("inbound-call:bad", 1002, 400))
            .await
            .unwrap();
        s.log_webhook(at("inbound-call:ran", 1003, 200))
            .await
            .unwrap();
        s.log_webhook(at("inbound-call:new", 5000, 200))
            .await
            .unwrap();
        s.insert_call(NewCall {
            direction: Direction::Inbound,
            wa_call_id: Some("ran".into()),
            sip_call_id: None,
            waid: None,
            business_number: None,
            offered_at_ms: 1003,
        })
        .await
        .unwrap();
        let found = s.unrecorded_inbound_calls(500, 5000).await.unwrap();
        let keys: Vec<_> = found.iter().map(|r| r.dedupe_key.as_deref()).collect();
        assert_eq!(keys, [Some("inbound-call:lost")]);
    }

    #[tokio::test]
    async fn a_refused_call_is_recorded_ended() {
        let s = store();
        let id = s
            .insert_ended_call(
                NewCall {
                    direction: Direction::Inbound,
                    wa_call_id: Some("wacid.refused".into()),
                    sip_call_id: None,
                    waid: Some("14085551234".into()),
                    business_number: Some("15550001111".into()),
                    offered_at_ms: 7,
                },
                7,
                "refused_capacity".into(),
                None,
            )
            .await
            .unwrap();
        assert!(s.live_calls().await.unwrap().is_empty());
        let row = s.call(id).await.unwrap().unwrap();
        assert_eq!(row.ended_at_ms, Some(7));
        assert_eq!(row.end_cause.as_deref(), Some("refused_capacity"));
        assert_eq!(row.answered_at_ms, None);
        assert_eq!(row.waid.as_deref(), Some("14085551234"));
        assert!(!s.end_call(id, 9, "late".into(), None, None).await.unwrap());
    }

    #[tokio::test]
    async fn a_call_ends_once() {
        let s = store();
        let id = s
            .insert_call(NewCall {
                direction: Direction::Outbound,
                wa_call_id: None,
                sip_call_id: Some("abc@pbx".into()),
                waid: Some("14085551234".into()),
                business_number: None,
                offered_at_ms: 5,
            })
            .await
            .unwrap();
        s.set_call_ids(id, Some("wacid.1".into()), None)
            .await
            .unwrap();
        assert_eq!(s.live_calls().await.unwrap().len(), 1);
        s.call_answered(id, 6).await.unwrap();
        assert!(s
            .end_call(
                id,
                9,
                "pbx_bye".into(),
                Some(200),
                Some(MediaCounters {
                    codec: Some("PCMU".into()),
                    wa_rx: 1,
                    wa_tx: 2,
                    pbx_rx: 3,
                    pbx_tx: 4,
                    quality: Some("{\"whatsapp\":{\"mos\":4.4}}".into()),
                    recording: Some("{\"path\":\"/r/1.wav\"}".into()),
                }),
            )
            .await
            .unwrap());
        assert!(!s
            .end_call(id, 10, "terminate_webhook".into(), None, None)
            .await
            .unwrap());
        let row = s.call(id).await.unwrap().unwrap();
        assert_eq!(row.wa_call_id.as_deref(), Some("wacid.1"));
        assert_eq!(row.sip_call_id.as_deref(), Some("abc@pbx"));
        assert_eq!(row.direction, Direction::Outbound);
        assert_eq!(row.answered_at_ms, Some(6));
        assert_eq!(row.end_cause.as_deref(), Some("pbx_bye"));
        assert_eq!(row.ended_at_ms, Some(9));
        let m = row.media.unwrap();
        assert_eq!((m.wa_rx, m.wa_tx, m.pbx_rx, m.pbx_tx), (1, 2, 3, 4));
        assert_eq!(m.codec.as_deref(), Some("PCMU"));
        assert!(s.live_calls().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn permission_requests_are_not_repeated_while_pending() {
        let s = store();
        let w = || "14085551234".to_string();
        assert!(s
            .claim_permission_request(w(), 1_000, 60_000)
            .await
            .unwrap());
        assert!(!s
            .claim_permission_request(w(), 2_000, 60_000)
            .await
            .unwrap());
        // After the pending window a new request may go out.
        assert!(s
            .claim_permission_request(w(), 62_000, 60_000)
            .await
            .unwrap());
        s.set_permission(w(), PermissionState::Granted, 63_000)
            .await
            .unwrap();
        let row = s.permission(w()).await.unwrap().unwrap();
        assert_eq!(row.state, Some(PermissionState::Granted));
        assert_eq!(row.request_pending_since_ms, None);
        assert!(s.permission("999999".into()).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn file_database_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StorageSettings::SqliteFile(dir.path().join("t.db"));
        {
            let s = Store::open(&settings, Arc::new(Health::default())).unwrap();
            s.log_webhook(hook(Some("k"), b"body")).await.unwrap();
        }
        let s = Store::open(&settings, Arc::new(Health::default())).unwrap();
        let rows = s.recent_webhooks(5).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].raw_body, b"body");
    }

    /// The wall clock went back an hour after a push failed: the retry
    /// set for (old) now + 2 s is due at once, not an hour later. A failed
    /// permission request's claim is given back (only that claim).
    #[tokio::test]
    async fn wall_clock_going_back_does_not_delay_what_is_due() {
        let s = store();
        s.enable_cdr_outbox();
        let t = 10_000_000;
        let id = s
            .insert_call(NewCall {
                direction: Direction::Inbound,
                wa_call_id: Some("w".into()),
                sip_call_id: None,
                waid: None,
                business_number: None,
                offered_at_ms: t,
            })
            .await
            .unwrap();
        s.end_call(id, t + 1000, "pbx_bye".into(), None, None)
            .await
            .unwrap();
        let due = s.cdr_due(t + 1000, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        s.cdr_retry(due[0].outbox_id, t + 3000, "refused".into())
            .await
            .unwrap();
        assert!(s.cdr_due(t + 2000, 10).await.unwrap().is_empty());
        let back = t + 2000 - 3_600_000;
        assert_eq!(s.cdr_due(back, 10).await.unwrap().len(), 1);

        assert!(s
            .claim_permission_request("447".into(), t, 1000)
            .await
            .unwrap());
        s.release_permission_request("447".into(), t - 1)
            .await
            .unwrap();
        assert!(!s
            .claim_permission_request("447".into(), t + 1, 1000)
            .await
            .unwrap());
        s.release_permission_request("447".into(), t).await.unwrap();
        assert!(s
            .claim_permission_request("447".into(), t + 2, 1000)
            .await
            .unwrap());
    }

    #[test]
    fn unopenable_file_is_an_error() {
        let settings = StorageSettings::SqliteFile("/nonexistent-dir/x/y.db".into());
        assert!(Store::open(&settings, Arc::new(Health::default())).is_err());
    }
}
