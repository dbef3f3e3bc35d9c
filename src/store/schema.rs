//! Schema migrations, applied in order; `PRAGMA user_version` records how
//! many have run. Append new steps; never edit a released one.

use rusqlite::Connection;

use super::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: webhook log, call records, permission cache.
    "CREATE TABLE webhook_log (
        id             INTEGER PRIMARY KEY,
        route          TEXT    NOT NULL,
        received_at_ms INTEGER NOT NULL,
        raw_body       BLOB    NOT NULL,
        status         INTEGER NOT NULL,
        error          TEXT,
        dedupe_key     TEXT UNIQUE,
        duplicate_of   INTEGER REFERENCES webhook_log(id)
    );
    CREATE TABLE calls (
        id               INTEGER PRIMARY KEY,
        direction        TEXT    NOT NULL CHECK (direction IN ('inbound', 'outbound')),
        wa_call_id       TEXT,
        sip_call_id      TEXT,
        waid             TEXT,
        business_number  TEXT,
        offered_at_ms    INTEGER NOT NULL,
        answered_at_ms   INTEGER,
        ended_at_ms      INTEGER,
        end_cause        TEXT,
        sip_code         INTEGER
    );
    CREATE INDEX calls_wa_call_id ON calls(wa_call_id);
    CREATE INDEX calls_live ON calls(ended_at_ms) WHERE ended_at_ms IS NULL;
    CREATE TABLE permissions (
        waid                     TEXT PRIMARY KEY,
        state                    TEXT CHECK (state IN ('granted', 'denied')),
        updated_at_ms            INTEGER NOT NULL,
        request_pending_since_ms INTEGER
    );",
    // 2: media counters and the codec in each call record; the SIP dialog of a live call.
    "ALTER TABLE calls ADD COLUMN codec TEXT;
    ALTER TABLE calls ADD COLUMN wa_rx_packets INTEGER;
    ALTER TABLE calls ADD COLUMN wa_tx_packets INTEGER;
    ALTER TABLE calls ADD COLUMN pbx_rx_packets INTEGER;
    ALTER TABLE calls ADD COLUMN pbx_tx_packets INTEGER;
    ALTER TABLE calls ADD COLUMN sip_dialog TEXT;",
    // Transfers by the PBX (REFER): one line per attempt, target and outcome.
    "ALTER TABLE calls ADD COLUMN transfers TEXT;",
    // 4: call records waiting to be pushed to `cdr.webhook_url` (written in
    // the transaction that ends the call; removed once delivered).
    "CREATE TABLE cdr_outbox (
        id          INTEGER PRIMARY KEY,
        call_id     INTEGER NOT NULL REFERENCES calls(id),
        attempts    INTEGER NOT NULL DEFAULT 0,
        next_at_ms  INTEGER NOT NULL,
        last_error  TEXT
    );
    CREATE INDEX cdr_outbox_due ON cdr_outbox(next_at_ms);
    CREATE INDEX calls_ended ON calls(ended_at_ms) WHERE ended_at_ms IS NOT NULL;",
    // 5: per-leg quality (loss, jitter, round trip, MOS) as JSON.
    "ALTER TABLE calls ADD COLUMN quality TEXT;",
    // 6: the call's recording (path, size, format, seconds), JSON.
    "ALTER TABLE calls ADD COLUMN recording TEXT;",
    // 7: one row rewritten by each readiness check: proof that a write
    // goes through, not only a read.
    "CREATE TABLE health_probe (
        id     INTEGER PRIMARY KEY CHECK (id = 1),
        at_ms  INTEGER NOT NULL
    );",
];

pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::SchemaTooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_refuse_newer_schemas() {
        let c = Connection::open_in_memory().unwrap();
        migrate(&c).unwrap();
        migrate(&c).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        c.pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(
            migrate(&c),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }
}
