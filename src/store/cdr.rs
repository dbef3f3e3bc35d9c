//! The call-record outbox (`cdr.webhook_url`): ended calls queued in the
//! transaction that ends them, handed to the pusher when due, removed once
//! delivered, put back with a later time when not (at least once, across
//! restarts); and the history of ended calls for pull-style integrations.

use rusqlite::{params, Connection};

use super::{call_row, CallRow, Store, StoreError, CALL_SELECT};

/// One queued record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdrItem {
    pub outbox_id: i64,
    pub attempts: u32,
    pub call: CallRow,
}

pub(super) fn enqueue(c: &Connection, call_id: i64, now_ms: i64) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO cdr_outbox (call_id, attempts, next_at_ms) VALUES (?1, 0, ?2)",
        params![call_id, now_ms],
    )?;
    Ok(())
}

impl Store {
    /// From now on, calls that end are queued for the pusher.
    pub fn enable_cdr_outbox(&self) {
        self.cdr_outbox
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn cdr_outbox_on(&self) -> bool {
        self.cdr_outbox.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Up to `limit` queued records due at `now_ms`, oldest first. A
    /// retry time further ahead than the longest backoff was set before the
    /// wall clock went back: it is due now, not after the jump is made up.
    pub async fn cdr_due(&self, now_ms: i64, limit: u32) -> Result<Vec<CdrItem>, StoreError> {
        self.with(move |c| {
            // CALL_SELECT's columns, qualified (the outbox has an id too).
            let columns = CALL_SELECT
                .trim_start_matches("SELECT ")
                .trim_end_matches(" FROM calls")
                .split(", ")
                .map(|col| format!("calls.{col}"))
                .collect::<Vec<_>>()
                .join(", ");
            let select = format!(
                "SELECT o.id, o.attempts, {columns} FROM cdr_outbox o JOIN calls ON calls.id = o.call_id"
            );
            let mut stmt = c.prepare(&format!(
                "{select} WHERE o.next_at_ms <= ?1 OR o.next_at_ms > ?1 + ?3
                 ORDER BY o.next_at_ms, o.id LIMIT ?2"
            ))?;
            let longest = crate::cdr::backoff(u32::MAX).as_millis() as i64;
            let rows = stmt.query_map(params![now_ms, limit, longest], |r| {
                let outbox_id: i64 = r.get(0)?;
                let attempts: i64 = r.get(1)?;
                // The call's columns follow the two of the outbox.
                let call = call_row_at(r, 2)?;
                Ok(CdrItem {
                    outbox_id,
                    attempts: attempts.clamp(0, u32::MAX as i64) as u32,
                    call,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    /// Delivered: off the queue.
    pub async fn cdr_delivered(&self, outbox_id: i64) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute("DELETE FROM cdr_outbox WHERE id = ?1", [outbox_id])?;
            Ok(())
        })
        .await
    }

    /// Not delivered: try again at `next_at_ms`, with why it failed.
    pub async fn cdr_retry(
        &self,
        outbox_id: i64,
        next_at_ms: i64,
        error: String,
    ) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute(
                "UPDATE cdr_outbox SET attempts = attempts + 1, next_at_ms = ?2, last_error = ?3 WHERE id = ?1",
                params![outbox_id, next_at_ms, error],
            )?;
            Ok(())
        })
        .await
    }

    /// Records waiting to be delivered.
    pub async fn cdr_pending(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            let n: i64 = c.query_row("SELECT COUNT(*) FROM cdr_outbox", [], |r| r.get(0))?;
            Ok(n.max(0) as u64)
        })
        .await
    }

    /// Ended calls that ended after `since_ms`, in the order they ended
    /// (`GET /calls/history?since=`), at most `limit`.
    pub async fn calls_history(
        &self,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<CallRow>, StoreError> {
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "{CALL_SELECT} WHERE ended_at_ms > ?1 ORDER BY ended_at_ms, id LIMIT ?2"
            ))?;
            let rows = stmt.query_map(params![since_ms, limit], call_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

/// [`call_row`] for a row whose call columns start at `at`.
fn call_row_at(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<CallRow> {
    super::call_row_from(r, at)
}
