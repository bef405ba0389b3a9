//! SQLite ledger (the embedded default). One connection in WAL mode behind a
//! mutex; every call runs on tokio's blocking pool. A committed write survives
//! a kill -9 of the process.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::{
    swept_verdict, Acknowledgement, AuditEntry, ChannelLatest, ChannelStatus, Cursor, Event, Incident, IncidentAction,
    IncidentChange, NewProbe, NewSilence, OutboxEntry, OutboxState, PageRecord, Pages, ProbeRecord, SilenceRecord,
    Store, StoreError, StoreResult,
};
use crate::config::Expect;
use crate::verdict::{Judgement, Millis, Verdict};

/// What `/metrics` reads (on the reader connection).
#[path = "sqlite_metrics.rs"]
mod metrics;
/// Reports, evidence and retention (the queries behind the `Store` methods of those).
#[path = "sqlite_report.rs"]
mod report;

/// Retention canaries' checks (the `retain_*` methods of `Store`).
#[path = "sqlite_retain.rs"]
mod retain;

/// Schema migrations, applied in order; `PRAGMA user_version` counts how many ran.
/// Append only: a later change adds a new entry.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE probes (
    id          TEXT PRIMARY KEY,
    token       TEXT NOT NULL UNIQUE,
    channel     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    expect      TEXT NOT NULL,
    inbox       TEXT,
    target      TEXT NOT NULL,
    run_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    sent_at     INTEGER,
    deadline    INTEGER NOT NULL,
    verdict     TEXT NOT NULL DEFAULT 'pending',
    judged_at   INTEGER,
    found_in    TEXT,
    found_at    INTEGER,
    latency_ms  INTEGER,
    detail      TEXT,
    smtp_reply  TEXT
);
CREATE INDEX probes_pending ON probes (verdict, deadline);
CREATE INDEX probes_channel ON probes (channel, created_at);
CREATE TABLE probe_events (
    probe_id TEXT NOT NULL REFERENCES probes (id),
    at       INTEGER NOT NULL,
    kind     TEXT NOT NULL,
    detail   TEXT NOT NULL
);
CREATE INDEX probe_events_probe ON probe_events (probe_id, at);
CREATE TABLE inbox_cursors (
    inbox        TEXT PRIMARY KEY,
    uid_validity INTEGER NOT NULL,
    last_uid     INTEGER NOT NULL
);
"#,
    r#"
ALTER TABLE probes ADD COLUMN handled INTEGER NOT NULL DEFAULT 0;
UPDATE probes SET handled = 1 WHERE verdict <> 'pending';
CREATE INDEX probes_unhandled ON probes (handled, judged_at);
CREATE TABLE incidents (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel         TEXT NOT NULL,
    dedup_key       TEXT NOT NULL UNIQUE,
    opened_at       INTEGER NOT NULL,
    opened_by       TEXT,
    verdict         TEXT NOT NULL,
    detail          TEXT NOT NULL,
    failures        INTEGER NOT NULL DEFAULT 1,
    last_failure_at INTEGER NOT NULL,
    paged           INTEGER NOT NULL DEFAULT 0,
    last_paged_at   INTEGER,
    silenced        TEXT,
    resolved_at     INTEGER,
    resolved_by     TEXT
);
CREATE UNIQUE INDEX incidents_one_open ON incidents (channel) WHERE resolved_at IS NULL;
CREATE TABLE incident_events (
    incident_id INTEGER NOT NULL REFERENCES incidents (id),
    at          INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    detail      TEXT NOT NULL
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, at);
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id     INTEGER NOT NULL REFERENCES incidents (id),
    notifier        TEXT NOT NULL,
    event           TEXT NOT NULL,
    dedup_key       TEXT NOT NULL,
    page            TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    first_failed_at INTEGER,
    last_error      TEXT,
    fallback_done   INTEGER NOT NULL DEFAULT 0,
    sent_at         INTEGER
);
CREATE INDEX outbox_pending ON outbox (notifier, state, id);
"#,
    r#"
CREATE TABLE dns_baselines (
    domain      TEXT PRIMARY KEY,
    snapshot    TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);
"#,
    // Tokens are kept without their tag (the tag is each probe's proof and
    // is never stored or shown); errors name the path of ours that failed.
    r#"
UPDATE probes SET token = substr(token, 1, 29) WHERE length(token) > 29;
ALTER TABLE probes ADD COLUMN fault TEXT;
"#,
    // Reports and evidence: inbox watchers' blind spells, pages by incident,
    // incidents by opening time.
    r#"
CREATE TABLE watcher_blind (
    watcher TEXT NOT NULL,
    inbox   TEXT NOT NULL,
    since   INTEGER NOT NULL,
    until   INTEGER,
    why     TEXT NOT NULL
);
CREATE UNIQUE INDEX watcher_blind_open ON watcher_blind (watcher) WHERE until IS NULL;
CREATE INDEX watcher_blind_since ON watcher_blind (since);
CREATE INDEX outbox_incident ON outbox (incident_id, id);
CREATE INDEX incidents_opened ON incidents (opened_at);
"#,
    // Retention: daily rollups per channel; slimmer indexes (only the few
    // pending and unhandled probes are indexed by state).
    r#"
CREATE TABLE rollups (
    channel       TEXT NOT NULL,
    day           INTEGER NOT NULL,
    judged        INTEGER NOT NULL,
    successful    INTEGER NOT NULL,
    errors        INTEGER NOT NULL,
    pending       INTEGER NOT NULL,
    latency_count INTEGER NOT NULL,
    latency_sum   INTEGER NOT NULL,
    latency_max   INTEGER NOT NULL,
    PRIMARY KEY (channel, day)
) WITHOUT ROWID;
DROP INDEX probes_pending;
CREATE INDEX probes_pending ON probes (deadline) WHERE verdict = 'pending';
DROP INDEX probes_unhandled;
CREATE INDEX probes_unhandled ON probes (judged_at) WHERE handled = 0;
CREATE INDEX incidents_opened_by ON incidents (opened_by);
CREATE INDEX incidents_resolved_by ON incidents (resolved_by);
"#,
    // Operating it (issue 15): acknowledgements, escalation, run-time
    // silences, the audit log. Reading it at scale (issue 20): each
    // channel's latest judged probe and its verdicts per UTC day, kept up to
    // date by triggers on every verdict change (judge, sweep, reclassify),
    // so the status page reads one row per channel instead of scanning.
    r#"
ALTER TABLE incidents ADD COLUMN acknowledged_at INTEGER;
ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
ALTER TABLE incidents ADD COLUMN escalations INTEGER NOT NULL DEFAULT 0;
CREATE TABLE silences (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    channel    TEXT,
    owner      TEXT,
    from_at    INTEGER NOT NULL,
    until      INTEGER NOT NULL,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    ended_at   INTEGER,
    ended_by   TEXT
);
CREATE INDEX silences_until ON silences (until);
CREATE TABLE audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE channel_latest (
    channel    TEXT PRIMARY KEY,
    probe_id   TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE channel_days (
    channel TEXT NOT NULL,
    day     INTEGER NOT NULL,
    verdict TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (channel, day, verdict)
) WITHOUT ROWID;
INSERT INTO channel_days (channel, day, verdict, n)
    SELECT channel, created_at / 86400000, verdict, COUNT(*) FROM probes WHERE verdict <> 'pending' GROUP BY 1, 2, 3;
INSERT INTO channel_latest (channel, probe_id, created_at)
    SELECT channel, id, created_at FROM (
        SELECT channel, id, created_at,
               ROW_NUMBER() OVER (PARTITION BY channel ORDER BY created_at DESC, id DESC) AS r
        FROM probes WHERE verdict <> 'pending')
    WHERE r = 1;
CREATE TRIGGER probes_verdict_rollup AFTER UPDATE OF verdict ON probes
WHEN OLD.verdict <> NEW.verdict
BEGIN
    UPDATE channel_days SET n = n - 1
        WHERE OLD.verdict <> 'pending' AND channel = OLD.channel AND day = OLD.created_at / 86400000
          AND verdict = OLD.verdict;
    INSERT INTO channel_days (channel, day, verdict, n)
        SELECT NEW.channel, NEW.created_at / 86400000, NEW.verdict, 1 WHERE NEW.verdict <> 'pending'
        ON CONFLICT (channel, day, verdict) DO UPDATE SET n = n + 1;
    INSERT INTO channel_latest (channel, probe_id, created_at)
        SELECT NEW.channel, NEW.id, NEW.created_at WHERE NEW.verdict <> 'pending'
        ON CONFLICT (channel) DO UPDATE SET probe_id = excluded.probe_id, created_at = excluded.created_at
        WHERE excluded.created_at > channel_latest.created_at
           OR (excluded.created_at = channel_latest.created_at AND excluded.probe_id >= channel_latest.probe_id);
END;
"#,
    // Incidents follow probe order (`channel_order`, once per verdict): each
    // channel's failing probes, so that its newest handled failure is one
    // seek instead of a walk through all of its history (6 ms a verdict for
    // a channel with a month of probes every 5 minutes). The list is
    // `FAILING`.
    r#"
CREATE INDEX probes_channel_failing ON probes (channel, created_at)
    WHERE verdict IN ('late', 'missed', 'bounced', 'rejected', 'misrouted', 'junked');
"#,
    // Vantage points: each probe carries the vantage that sent it (NULL: none configured).
    r#"
ALTER TABLE probes ADD COLUMN vantage TEXT;
"#,
    // Retention canaries (issue 17): a delivered canary's lookups at its
    // `retain` ages, each a row with its due time, so they survive restarts.
    r#"
CREATE TABLE retain_checks (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    probe_id     TEXT NOT NULL,
    channel      TEXT NOT NULL,
    age          TEXT NOT NULL,
    age_ms       INTEGER NOT NULL,
    due_at       INTEGER NOT NULL,
    next_at      INTEGER NOT NULL,
    state        TEXT NOT NULL DEFAULT 'due',
    checked_at   INTEGER,
    result       TEXT,
    detail       TEXT,
    content_hash TEXT,
    attempts     INTEGER NOT NULL DEFAULT 0,
    UNIQUE (probe_id, age_ms)
);
CREATE INDEX retain_checks_next ON retain_checks (next_at) WHERE state = 'due';
CREATE INDEX retain_checks_channel ON retain_checks (channel, due_at);
CREATE INDEX retain_checks_checked ON retain_checks (checked_at) WHERE checked_at IS NOT NULL;
"#,
    // Retention checks that cannot look (ours) page "degraded" only after a
    // grace: the first fault of the current run of faults, cleared by a result.
    r#"
ALTER TABLE retain_checks ADD COLUMN fault_since INTEGER;
"#,
    // The report's per-vantage counts (`vantage_counts`) read only the probes
    // that carry a vantage: without this index they scanned every probe of
    // the period (24 s for 1,000 channels × 30 days, where none had a
    // vantage). A ledger without vantages keeps it empty.
    r#"
CREATE INDEX probes_vantage ON probes (created_at) WHERE vantage IS NOT NULL;
"#,
    // Daily rollups per channel and vantage, so that the report's
    // per-vantage counts read whole days from them as the channel figures
    // do (`vantage_rollups_through` marks how far they go).
    r#"
CREATE TABLE vantage_rollups (
    channel    TEXT NOT NULL,
    vantage    TEXT NOT NULL,
    day        INTEGER NOT NULL,
    judged     INTEGER NOT NULL,
    successful INTEGER NOT NULL,
    errors     INTEGER NOT NULL,
    pending    INTEGER NOT NULL,
    PRIMARY KEY (channel, vantage, day)
) WITHOUT ROWID;
"#,
];

/// The verdicts that fail a channel and can open its incident: all but the
/// successes, `pending`, `error` (ours) and the retention checks' `lost` and
/// `altered` (kept with the checks, never on a probe). Spelled as the partial index
/// `probes_channel_failing` spells it, which a query must repeat to use it.
const FAILING: &str = "'late', 'missed', 'bounced', 'rejected', 'misrouted', 'junked'";

/// A send not confirmed by its own process is given this long past its
/// deadline before the sweeper calls it an error (covers the last attempt).
const SEND_GRACE_MS: i64 = 120_000;

const PROBE_COLUMNS: &str = "id, token, channel, kind, expect, inbox, target, created_at, sent_at, deadline, \
     verdict, judged_at, found_in, found_at, latency_ms, detail, smtp_reply, fault, vantage";

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// A second connection for the reads of `/metrics`, so that a scrape
    /// never waits for, or holds up, the writers (WAL lets it read while
    /// they write). The same connection as `conn` for an in-memory ledger.
    reader: Arc<Mutex<Connection>>,
    /// The vantage this process's probes are stamped with (`[vantage] name`).
    vantage: Option<String>,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

fn row_to_event(r: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        at: r.get(0)?,
        kind: r.get(1)?,
        detail: r.get(2)?,
    })
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// A LIMIT argument (SQLite takes a signed 64-bit integer).
fn limit_arg(limit: usize) -> Value {
    Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX))
}

fn row_to_probe(r: &Row<'_>) -> rusqlite::Result<ProbeRecord> {
    let verdict: String = r.get(10)?;
    Ok(ProbeRecord {
        id: r.get(0)?,
        token: r.get(1)?,
        channel: r.get(2)?,
        kind: r.get(3)?,
        expect: r.get(4)?,
        inbox: r.get(5)?,
        target: r.get(6)?,
        created_at: r.get(7)?,
        sent_at: r.get(8)?,
        deadline: r.get(9)?,
        verdict: verdict.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(10, rusqlite::types::Type::Text, e.into())
        })?,
        judged_at: r.get(11)?,
        found_in: r.get(12)?,
        found_at: r.get(13)?,
        latency_ms: r.get(14)?,
        detail: r.get(15)?,
        smtp_reply: r.get(16)?,
        fault: r.get(17)?,
        vantage: r.get(18)?,
    })
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger file and brings its schema up to date.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        let path = path.to_path_buf();
        let conn = tokio::task::spawn_blocking(move || -> StoreResult<(Connection, Connection)> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
            }
            let mut conn = Connection::open(&path).map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
            conn.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
            // Switching a new database to WAL takes an exclusive lock and SQLite
            // does not wait for it, so processes opening a fresh ledger at once
            // (a `check` beside the daemon) retry for a while instead of failing.
            let mut tries = 0;
            loop {
                match conn.pragma_update(None, "journal_mode", "WAL") {
                    Ok(()) => break,
                    Err(rusqlite::Error::SqliteFailure(e, _))
                        if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 100 =>
                    {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            conn.pragma_update(None, "synchronous", "NORMAL").map_err(err)?;
            conn.pragma_update(None, "foreign_keys", "ON").map_err(err)?;
            migrate(&mut conn)?;
            let reader = Connection::open(&path).map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
            reader.busy_timeout(std::time::Duration::from_secs(10)).map_err(err)?;
            Ok((conn, reader))
        })
        .await
        .map_err(err)??;
        let (conn, reader) = conn;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            reader: Arc::new(Mutex::new(reader)),
            vantage: None,
        })
    }

    /// [`SqliteStore::open`] taking its path by value (for spawned tasks).
    pub async fn open_owned(path: std::path::PathBuf) -> StoreResult<SqliteStore> {
        SqliteStore::open(&path).await
    }

    /// Runs a query for at most one row.
    async fn one<T: Send + 'static>(
        &self,
        sql: String,
        args: Vec<Value>,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        self.with(move |c| c.query_row(&sql, params_from_iter(args), map).optional())
            .await
    }

    /// Runs a query for every row.
    async fn all<T: Send + 'static>(
        &self,
        sql: String,
        args: Vec<Value>,
        map: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        self.with(move |c| {
            let mut stmt = c.prepare_cached(&sql)?;
            let rows = stmt.query_map(params_from_iter(args), map)?;
            rows.collect()
        })
        .await
    }

    /// The same ledger, stamping the probes it writes with `vantage`.
    pub fn with_vantage(mut self, vantage: Option<&str>) -> SqliteStore {
        self.vantage = vantage.map(str::to_string);
        self
    }

    /// An in-memory ledger, for tests.
    pub fn in_memory() -> StoreResult<SqliteStore> {
        let mut conn = Connection::open_in_memory().map_err(err)?;
        migrate(&mut conn)?;
        let conn = Arc::new(Mutex::new(conn));
        Ok(SqliteStore {
            reader: Arc::clone(&conn),
            conn,
            vantage: None,
        })
    }

    /// Runs a read on the reader connection (see [`SqliteStore::reader`]).
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.reader);
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| err("ledger connection poisoned by an earlier panic"))?;
            f(&guard).map_err(err)
        })
        .await
        .map_err(err)?
    }

    async fn with<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| err("ledger connection poisoned by an earlier panic"))?;
            f(&mut guard).map_err(err)
        })
        .await
        .map_err(err)?
    }
}

const INCIDENT_COLUMNS: &str = "id, channel, dedup_key, opened_at, opened_by, verdict, detail, failures, \
     last_failure_at, paged, last_paged_at, silenced, resolved_at, resolved_by, acknowledged_at, acknowledged_by, \
     escalations";

fn row_to_incident(r: &Row<'_>) -> rusqlite::Result<Incident> {
    Ok(Incident {
        id: r.get(0)?,
        channel: r.get(1)?,
        dedup_key: r.get(2)?,
        opened_at: r.get(3)?,
        opened_by: r.get(4)?,
        verdict: r.get(5)?,
        detail: r.get(6)?,
        failures: r.get(7)?,
        last_failure_at: r.get(8)?,
        paged: r.get(9)?,
        last_paged_at: r.get(10)?,
        silenced: r.get(11)?,
        resolved_at: r.get(12)?,
        resolved_by: r.get(13)?,
        acknowledged_at: r.get(14)?,
        acknowledged_by: r.get(15)?,
        escalations: r.get(16)?,
    })
}

const SILENCE_COLUMNS: &str = "id, channel, owner, from_at, until, reason, created_by, created_at, ended_at, ended_by";

fn row_to_silence(r: &Row<'_>) -> rusqlite::Result<SilenceRecord> {
    Ok(SilenceRecord {
        id: r.get(0)?,
        channel: r.get(1)?,
        owner: r.get(2)?,
        from: r.get(3)?,
        until: r.get(4)?,
        reason: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        ended_at: r.get(8)?,
        ended_by: r.get(9)?,
    })
}

fn row_to_audit(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        reason: r.get(5)?,
    })
}

fn audit(
    tx: &rusqlite::Transaction<'_>,
    at: Millis,
    actor: &str,
    action: &str,
    target: &str,
    reason: &str,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, target, reason) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, actor, action, target, reason],
    )?;
    Ok(tx.last_insert_rowid())
}

fn incident_event(
    tx: &rusqlite::Transaction<'_>,
    id: i64,
    at: Millis,
    kind: &str,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO incident_events (incident_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
        params![id, at, kind, detail],
    )
    .map(|_| ())
}

/// Queues pages for an incident, filling in its id; records each in the timeline.
fn enqueue(tx: &rusqlite::Transaction<'_>, incident_id: i64, at: Millis, pages: &Pages) -> rusqlite::Result<()> {
    for (notifier, page) in pages {
        let mut page = page.clone();
        page.incident_id = incident_id;
        let json = serde_json::to_string(&page).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
        tx.execute(
            "INSERT INTO outbox (incident_id, notifier, event, dedup_key, page, created_at, next_attempt_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![incident_id, notifier, page.event.as_str(), page.dedup_key, json, at],
        )?;
        incident_event(
            tx,
            incident_id,
            at,
            "page-queued",
            &format!("{} page queued for {notifier}", page.event.as_str()),
        )?;
    }
    Ok(())
}

fn apply_change(tx: &rusqlite::Transaction<'_>, change: &IncidentChange) -> rusqlite::Result<Option<i64>> {
    if let (Some(probe), Some(detail)) = (&change.probe_id, &change.reclassify) {
        tx.execute(
            "UPDATE probes SET verdict = 'error', detail = ?2 WHERE id = ?1",
            params![probe, detail],
        )?;
        tx.execute(
            "INSERT INTO probe_events (probe_id, at, kind, detail) \
             VALUES (?1, (SELECT COALESCE(judged_at, created_at) FROM probes WHERE id = ?1), 'verdict', ?2)",
            params![probe, format!("error: {detail}")],
        )?;
    }
    if let Some(probe) = &change.probe_id {
        tx.execute("UPDATE probes SET handled = 1 WHERE id = ?1", params![probe])?;
    }
    let touched = match &change.action {
        IncidentAction::Nothing => None,
        IncidentAction::Open {
            channel,
            dedup_key,
            verdict,
            detail,
            at,
            silenced,
            pages,
        } => {
            tx.execute(
                "INSERT INTO incidents (channel, dedup_key, opened_at, opened_by, verdict, detail, last_failure_at, paged, \
                 last_paged_at, silenced) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?3, ?7, ?8, ?9)",
                params![
                    channel,
                    dedup_key,
                    at,
                    change.probe_id,
                    verdict,
                    detail,
                    !pages.is_empty(),
                    (!pages.is_empty()).then_some(*at),
                    silenced
                ],
            )?;
            let id = tx.last_insert_rowid();
            incident_event(tx, id, *at, "opened", &format!("{verdict}: {detail}"))?;
            if let Some(reason) = silenced {
                incident_event(tx, id, *at, "silenced", &format!("not paged: {reason}"))?;
            }
            enqueue(tx, id, *at, pages)?;
            Some(id)
        }
        IncidentAction::Update {
            incident_id,
            verdict,
            detail,
            at,
        } => {
            tx.execute(
                "UPDATE incidents SET verdict = ?2, detail = ?3, failures = failures + 1, last_failure_at = ?4 \
                 WHERE id = ?1 AND resolved_at IS NULL",
                params![incident_id, verdict, detail, at],
            )?;
            incident_event(tx, *incident_id, *at, "failure", &format!("{verdict}: {detail}"))?;
            Some(*incident_id)
        }
        IncidentAction::Page {
            incident_id,
            at,
            note,
            pages,
        } => {
            tx.execute(
                "UPDATE incidents SET paged = 1, last_paged_at = ?2 WHERE id = ?1 AND resolved_at IS NULL",
                params![incident_id, at],
            )?;
            incident_event(tx, *incident_id, *at, "page", note)?;
            enqueue(tx, *incident_id, *at, pages)?;
            Some(*incident_id)
        }
        IncidentAction::Resolve {
            incident_id,
            at,
            detail,
            pages,
        } => {
            tx.execute(
                "UPDATE incidents SET resolved_at = ?2, resolved_by = ?3 WHERE id = ?1 AND resolved_at IS NULL",
                params![incident_id, at, change.probe_id],
            )?;
            incident_event(tx, *incident_id, *at, "resolved", detail)?;
            enqueue(tx, *incident_id, *at, pages)?;
            Some(*incident_id)
        }
        IncidentAction::Escalate {
            incident_id,
            level,
            at,
            note,
            pages,
        } => {
            let changed = tx.execute(
                "UPDATE incidents SET escalations = ?2 WHERE id = ?1 AND resolved_at IS NULL \
                 AND acknowledged_at IS NULL AND escalations < ?2",
                params![incident_id, level],
            )?;
            if changed == 1 {
                incident_event(tx, *incident_id, *at, "escalated", note)?;
                enqueue(tx, *incident_id, *at, pages)?;
            }
            Some(*incident_id)
        }
    };
    Ok(touched)
}

fn row_to_outbox(r: &Row<'_>) -> rusqlite::Result<OutboxEntry> {
    let json: String = r.get(5)?;
    let page = serde_json::from_str(&json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e)))?;
    Ok(OutboxEntry {
        id: r.get(0)?,
        incident_id: r.get(1)?,
        notifier: r.get(2)?,
        event: r.get(3)?,
        dedup_key: r.get(4)?,
        page,
        created_at: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        first_failed_at: r.get(9)?,
        fallback_done: r.get(10)?,
    })
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    // One IMMEDIATE transaction, with the version read inside it: two
    // processes opening a new ledger at once (a `check` beside the daemon)
    // apply each migration exactly once.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(err)?;
    let version: usize = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
    if version > MIGRATIONS.len() {
        return Err(err(format!(
            "the ledger's schema (version {version}) is newer than this postcanary knows ({})",
            MIGRATIONS.len()
        )));
    }
    for sql in MIGRATIONS.iter().skip(version) {
        tx.execute_batch(sql).map_err(err)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len()).map_err(err)?;
    tx.commit().map_err(err)
}

#[async_trait]
impl Store for SqliteStore {
    async fn meta_get_or_put(&self, key: &str, value: &str) -> StoreResult<String> {
        let (key, value) = (key.to_string(), value.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, value],
            )?;
            c.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
        })
        .await
    }

    async fn insert_probe(&self, p: &NewProbe) -> StoreResult<()> {
        let p = p.clone();
        let vantage = self.vantage.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "INSERT INTO probes (id, token, channel, kind, expect, inbox, target, run_id, created_at, deadline, vantage) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    p.id,
                    p.token,
                    p.channel,
                    p.kind,
                    p.expect.as_str(),
                    p.inbox,
                    p.target,
                    p.run_id,
                    p.created_at,
                    p.deadline,
                    vantage
                ],
            )?;
            tx.execute(
                "INSERT INTO probe_events (probe_id, at, kind, detail) VALUES (?1, ?2, 'created', ?3)",
                params![
                    p.id,
                    p.created_at,
                    format!(
                        "probe to {} created, deadline in {}s",
                        p.target,
                        (p.deadline - p.created_at) / 1000
                    )
                ],
            )?;
            tx.commit()
        })
        .await
    }

    async fn record_sent(&self, id: &str, sent_at: Millis, reply: &str) -> StoreResult<()> {
        let (id, reply) = (id.to_string(), reply.to_string());
        self.with(move |c| {
            let tx = c.transaction()?;
            tx.execute(
                "UPDATE probes SET sent_at = ?2, smtp_reply = ?3 WHERE id = ?1",
                params![id, sent_at, reply],
            )?;
            tx.execute(
                "INSERT INTO probe_events (probe_id, at, kind, detail) VALUES (?1, ?2, 'sent', ?3)",
                params![id, sent_at, reply],
            )?;
            tx.commit()
        })
        .await
    }

    async fn add_event(&self, id: &str, at: Millis, kind: &str, detail: &str) -> StoreResult<()> {
        let (id, kind, detail) = (id.to_string(), kind.to_string(), detail.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO probe_events (probe_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)",
                params![id, at, kind, detail],
            )
            .map(|_| ())
        })
        .await
    }

    async fn judge(&self, id: &str, j: &Judgement) -> StoreResult<bool> {
        let id = id.to_string();
        let j = j.clone();
        self.with(move |c| {
            let tx = c.transaction()?;
            // Verdicts that can still correct a `missed`: the message turned up after
            // all (late, elsewhere, in junk), or a bounce explains where it went.
            let arrival = matches!(
                j.verdict,
                Verdict::Late | Verdict::Misrouted | Verdict::Junked | Verdict::Bounced
            );
            let (found_in, found_at) = match &j.found {
                Some(f) => (Some(f.inbox.clone()), Some(f.at)),
                None => (None, None),
            };
            let changed = tx.execute(
                "UPDATE probes SET verdict = ?2, detail = ?3, judged_at = ?4, found_in = ?5, found_at = ?6, latency_ms = ?7, \
                 fault = ?9 \
                 WHERE id = ?1 AND (verdict = 'pending' OR (?8 AND verdict = 'missed'))",
                params![id, j.verdict.as_str(), j.detail, j.at, found_in, found_at, j.latency_ms, arrival, j.fault],
            )?;
            if changed == 1 {
                tx.execute(
                    "INSERT INTO probe_events (probe_id, at, kind, detail) VALUES (?1, ?2, 'verdict', ?3)",
                    params![id, j.at, format!("{}: {}", j.verdict, j.detail)],
                )?;
            }
            tx.commit()?;
            Ok(changed == 1)
        })
        .await
    }

    async fn due(&self, now: Millis) -> StoreResult<Vec<ProbeRecord>> {
        let sql = format!(
            "SELECT {PROBE_COLUMNS} FROM probes WHERE verdict = 'pending' AND deadline <= ?1 ORDER BY deadline, id"
        );
        self.all(sql, vec![Value::Integer(now)], row_to_probe).await
    }

    async fn channel_order(&self, channel: &str) -> StoreResult<(Option<Millis>, Option<Millis>)> {
        let channel = channel.to_string();
        let successes = Verdict::ALL
            .iter()
            .filter(|v| v.is_success())
            .map(|v| format!("'{}'", v.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        self.with(move |c| {
            // Newest first, stopping at the first match: the newest success
            // walks back from the channel's newest probe (past a failing
            // streak at most); the newest handled failure walks the
            // channel's failures only (past the few not handled yet).
            let mut stmt = c.prepare_cached(&format!(
                "SELECT \
                   (SELECT created_at FROM probes WHERE channel = ?1 AND verdict IN ({successes}) \
                      ORDER BY created_at DESC LIMIT 1), \
                   (SELECT created_at FROM probes INDEXED BY probes_channel_failing \
                      WHERE channel = ?1 AND verdict IN ({FAILING}) AND handled = 1 \
                      ORDER BY created_at DESC LIMIT 1)"
            ))?;
            stmt.query_row(params![channel], |r| Ok((r.get(0)?, r.get(1)?)))
        })
        .await
    }

    async fn sweep_only(&self, now: Millis, run_id: &str, only: Option<&[String]>) -> StoreResult<Vec<ProbeRecord>> {
        let run_id = run_id.to_string();
        let only: Option<String> = only.map(|ids| serde_json::Value::from(ids.to_vec()).to_string());
        let (_, unsent) = swept_verdict(Expect::Deliver, false);
        let (_, black_hole) = swept_verdict(Expect::Bounce, true);
        let (_, missed) = swept_verdict(Expect::Deliver, true);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let sql = format!(
                "UPDATE probes SET \
                   verdict = CASE WHEN sent_at IS NULL THEN 'error' ELSE 'missed' END, \
                   detail = CASE WHEN sent_at IS NULL THEN ?3 WHEN expect = 'bounce' THEN ?4 ELSE ?5 END, \
                   judged_at = ?1 \
                 WHERE verdict = 'pending' AND deadline <= ?1 \
                   AND (sent_at IS NOT NULL OR run_id <> ?2 OR deadline + {SEND_GRACE_MS} <= ?1) \
                   AND (?6 IS NULL OR id IN (SELECT value FROM json_each(?6))) \
                 RETURNING {PROBE_COLUMNS}"
            );
            let swept: Vec<ProbeRecord> = {
                let mut stmt = tx.prepare(&sql)?;
                let rows = stmt.query_map(params![now, run_id, unsent, black_hole, missed, only], row_to_probe)?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for p in &swept {
                tx.execute(
                    "INSERT INTO probe_events (probe_id, at, kind, detail) VALUES (?1, ?2, 'verdict', ?3)",
                    params![
                        p.id,
                        now,
                        format!("{}: {}", p.verdict, p.detail.as_deref().unwrap_or(""))
                    ],
                )?;
            }
            tx.commit()?;
            Ok(swept)
        })
        .await
    }

    async fn probe(&self, id: &str) -> StoreResult<Option<ProbeRecord>> {
        self.one(
            format!("SELECT {PROBE_COLUMNS} FROM probes WHERE id = ?1"),
            vec![text(id)],
            row_to_probe,
        )
        .await
    }

    async fn probe_by_token(&self, token: &str) -> StoreResult<Option<ProbeRecord>> {
        self.one(
            format!("SELECT {PROBE_COLUMNS} FROM probes WHERE token = ?1"),
            vec![text(token)],
            row_to_probe,
        )
        .await
    }

    async fn pending(&self) -> StoreResult<Vec<ProbeRecord>> {
        let sql = format!("SELECT {PROBE_COLUMNS} FROM probes WHERE verdict = 'pending' ORDER BY deadline");
        self.all(sql, vec![], row_to_probe).await
    }

    async fn next_deadline(&self) -> StoreResult<Option<Millis>> {
        self.with(|c| {
            c.query_row("SELECT MIN(deadline) FROM probes WHERE verdict = 'pending'", [], |r| {
                r.get(0)
            })
        })
        .await
    }

    async fn recent_probes(&self, channel: &str, limit: usize) -> StoreResult<Vec<ProbeRecord>> {
        let sql =
            format!("SELECT {PROBE_COLUMNS} FROM probes WHERE channel = ?1 ORDER BY created_at DESC, id DESC LIMIT ?2");
        self.all(sql, vec![text(channel), limit_arg(limit)], row_to_probe).await
    }

    async fn events(&self, id: &str) -> StoreResult<Vec<Event>> {
        let sql = "SELECT at, kind, detail FROM probe_events WHERE probe_id = ?1 ORDER BY at, rowid";
        self.all(sql.into(), vec![text(id)], row_to_event).await
    }

    async fn cursor(&self, inbox: &str) -> StoreResult<Option<Cursor>> {
        let inbox = inbox.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT uid_validity, last_uid FROM inbox_cursors WHERE inbox = ?1",
                params![inbox],
                |r| {
                    Ok(Cursor {
                        uid_validity: r.get(0)?,
                        last_uid: r.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn unhandled_verdicts(&self, limit: usize) -> StoreResult<Vec<ProbeRecord>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {PROBE_COLUMNS} FROM probes WHERE handled = 0 AND verdict <> 'pending' \
                 ORDER BY judged_at, id LIMIT ?1"
            ))?;
            let rows = stmt.query_map(params![limit], row_to_probe)?;
            rows.collect()
        })
        .await
    }

    async fn apply_incident(&self, change: &IncidentChange) -> StoreResult<Option<i64>> {
        let change = change.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let id = apply_change(&tx, &change)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn open_incident(&self, channel: &str) -> StoreResult<Option<Incident>> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE channel = ?1 AND resolved_at IS NULL");
        self.one(sql, vec![text(channel)], row_to_incident).await
    }

    async fn open_incidents(&self) -> StoreResult<Vec<Incident>> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE resolved_at IS NULL ORDER BY id");
        self.all(sql, vec![], row_to_incident).await
    }

    async fn incident(&self, id: i64) -> StoreResult<Option<Incident>> {
        self.one(
            format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = ?1"),
            vec![Value::Integer(id)],
            row_to_incident,
        )
        .await
    }

    async fn incident_events(&self, id: i64) -> StoreResult<Vec<Event>> {
        let sql = "SELECT at, kind, detail FROM incident_events WHERE incident_id = ?1 ORDER BY at, rowid";
        self.all(sql.into(), vec![Value::Integer(id)], row_to_event).await
    }

    async fn outbox_head(&self, notifier: &str) -> StoreResult<Option<OutboxEntry>> {
        let notifier = notifier.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT id, incident_id, notifier, event, dedup_key, page, created_at, attempts, next_attempt_at, \
                 first_failed_at, fallback_done FROM outbox WHERE notifier = ?1 AND state = 'pending' ORDER BY id LIMIT 1",
                params![notifier],
                row_to_outbox,
            )
            .optional()
        })
        .await
    }

    async fn page_sent(&self, id: i64, at: Millis) -> StoreResult<()> {
        self.with(move |c| {
            let tx = c.transaction()?;
            let (incident, notifier, event): (i64, String, String) = tx.query_row(
                "UPDATE outbox SET state = 'sent', sent_at = ?2 WHERE id = ?1 RETURNING incident_id, notifier, event",
                params![id, at],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            incident_event(
                &tx,
                incident,
                at,
                "page-accepted",
                &format!("{event} page accepted by {notifier}"),
            )?;
            tx.commit()
        })
        .await
    }

    async fn page_failed(&self, id: i64, at: Millis, error: &str, next: Millis, permanent: bool) -> StoreResult<()> {
        let error = error.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let (incident, notifier, attempts): (i64, String, i64) = tx.query_row(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?3, next_attempt_at = ?4, \
                 first_failed_at = COALESCE(first_failed_at, ?2), \
                 state = CASE WHEN ?5 THEN 'failed' ELSE state END \
                 WHERE id = ?1 RETURNING incident_id, notifier, attempts",
                params![id, at, error, next, permanent],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            // The first failure and a final one go into the timeline; retries in between only to the log.
            if attempts == 1 || permanent {
                let what = if permanent { "page-rejected" } else { "page-failed" };
                incident_event(&tx, incident, at, what, &format!("{notifier}: {error}"))?;
            }
            tx.commit()
        })
        .await
    }

    async fn page_fallback(&self, id: i64, fallback: &str, at: Millis) -> StoreResult<()> {
        let fallback = fallback.to_string();
        self.with(move |c| {
            let tx = c.transaction()?;
            let changed = tx.execute(
                "UPDATE outbox SET fallback_done = 1 WHERE id = ?1 AND fallback_done = 0",
                params![id],
            )?;
            if changed == 1 {
                let (incident, notifier): (i64, String) = tx.query_row(
                    "SELECT incident_id, notifier FROM outbox WHERE id = ?1",
                    params![id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                tx.execute(
                    "INSERT INTO outbox (incident_id, notifier, event, dedup_key, page, created_at, next_attempt_at) \
                     SELECT incident_id, ?2, event, dedup_key, page, ?3, ?3 FROM outbox WHERE id = ?1",
                    params![id, fallback, at],
                )?;
                incident_event(
                    &tx,
                    incident,
                    at,
                    "page-fallback",
                    &format!("{notifier} keeps failing; sent to {fallback}"),
                )?;
            }
            tx.commit()
        })
        .await
    }

    async fn outbox_depth(&self) -> StoreResult<Vec<(String, i64)>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT notifier, COUNT(*) FROM outbox WHERE state = 'pending' GROUP BY notifier ORDER BY notifier",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
    }

    async fn channel_status(&self, channels: &[String], now: Millis, recent: usize) -> StoreResult<Vec<ChannelStatus>> {
        let channels = channels.to_vec();
        let recent = i64::try_from(recent).unwrap_or(i64::MAX);
        self.with(move |c| {
            let mut last = c.prepare_cached(&format!(
                "SELECT {PROBE_COLUMNS} FROM probes WHERE channel = ?1 AND verdict <> 'pending' \
                 ORDER BY created_at DESC, id DESC LIMIT ?2"
            ))?;
            // The success verdicts come from `Verdict::is_success`, the one place that defines them.
            let ok = Verdict::ALL
                .iter()
                .filter(|v| v.is_success())
                .map(|v| format!("'{}'", v.as_str()))
                .collect::<Vec<_>>()
                .join(", ");
            let mut window = c.prepare_cached(&format!(
                "SELECT COUNT(*), COALESCE(SUM(verdict IN ({ok})), 0) FROM probes \
                 WHERE channel = ?1 AND verdict <> 'pending' AND created_at >= ?2"
            ))?;
            // Pending probes of every channel in one pass over the (partial) pending index:
            // per channel, the planner would walk all of the channel's probes.
            let mut pending_of: std::collections::HashMap<String, i64> = c
                .prepare_cached(
                    "SELECT channel, COUNT(*) FROM probes INDEXED BY probes_pending WHERE verdict = 'pending' \
                     GROUP BY channel",
                )?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            // 7 and 30 days: whole UTC days (today included), from the daily
            // rollups where the days are rolled up; 24 h from the probes.
            let today = super::day_start(now);
            let mut windows: std::collections::HashMap<String, [(i64, i64); 2]> = std::collections::HashMap::new();
            for d in report::merged_counts(c, &channels, today - 29 * super::DAY_MS, today + super::DAY_MS)? {
                let w = windows.entry(d.channel).or_default();
                if d.day >= today - 6 * super::DAY_MS {
                    w[0] = (w[0].0 + d.judged, w[0].1 + d.successful);
                }
                w[1] = (w[1].0 + d.judged, w[1].1 + d.successful);
            }
            let mut out = Vec::with_capacity(channels.len());
            for ch in channels {
                let recent: Vec<ProbeRecord> = last
                    .query_map(params![ch, recent], row_to_probe)?
                    .collect::<rusqlite::Result<_>>()?;
                let window_24h = window.query_row(params![ch, now - 86_400_000], |r| Ok((r.get(0)?, r.get(1)?)))?;
                let [window_7d, window_30d] = windows.get(&ch).copied().unwrap_or_default();
                let pending = pending_of.remove(&ch).unwrap_or(0);
                out.push(ChannelStatus {
                    channel: ch,
                    recent,
                    window_24h,
                    window_7d,
                    window_30d,
                    pending,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn probes_since(&self, channel: &str, since: Millis, limit: usize) -> StoreResult<Vec<ProbeRecord>> {
        let sql = format!(
            "SELECT {PROBE_COLUMNS} FROM probes WHERE channel = ?1 AND created_at >= ?2 ORDER BY created_at, id LIMIT ?3"
        );
        self.all(sql, vec![text(channel), since.into(), limit_arg(limit)], row_to_probe)
            .await
    }

    async fn channel_events(
        &self,
        channel: &str,
        kind: &str,
        since: Millis,
        limit: usize,
    ) -> StoreResult<Vec<(String, Event)>> {
        // The newest event of that kind per probe (a probe keeps one path).
        let sql = "SELECT p.id, e.at, e.kind, e.detail FROM probes p JOIN probe_events e ON e.probe_id = p.id \
                   WHERE p.channel = ?1 AND p.created_at >= ?2 AND e.kind = ?3 \
                   AND e.rowid = (SELECT MAX(rowid) FROM probe_events WHERE probe_id = p.id AND kind = ?3) \
                   ORDER BY p.created_at DESC, p.id DESC LIMIT ?4";
        self.all(
            sql.into(),
            vec![text(channel), since.into(), text(kind), limit_arg(limit)],
            |r| {
                Ok((
                    r.get(0)?,
                    Event {
                        at: r.get(1)?,
                        kind: r.get(2)?,
                        detail: r.get(3)?,
                    },
                ))
            },
        )
        .await
    }

    async fn recent_incidents(&self, limit: usize) -> StoreResult<Vec<Incident>> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents ORDER BY id DESC LIMIT ?1");
        self.all(sql, vec![limit_arg(limit)], row_to_incident).await
    }

    async fn verdict_counts(&self) -> StoreResult<Vec<(String, String, i64)>> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT channel, verdict, COUNT(*) FROM probes WHERE verdict <> 'pending' \
                 GROUP BY channel, verdict ORDER BY channel, verdict",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            rows.collect()
        })
        .await
    }

    async fn latency_histogram(&self, bounds_ms: &[i64]) -> StoreResult<(Vec<i64>, i64, i64)> {
        let bounds = bounds_ms.to_vec();
        self.with(move |c| {
            let mut counts = Vec::with_capacity(bounds.len());
            let mut stmt = c.prepare_cached(
                "SELECT COUNT(*) FROM probes WHERE verdict = 'delivered' AND latency_ms IS NOT NULL AND latency_ms <= ?1",
            )?;
            for b in &bounds {
                counts.push(stmt.query_row(params![b], |r| r.get(0))?);
            }
            let (n, sum) = c.query_row(
                "SELECT COUNT(*), COALESCE(SUM(latency_ms), 0) FROM probes WHERE verdict = 'delivered' AND latency_ms IS NOT NULL",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            Ok((counts, n, sum))
        })
        .await
    }

    async fn pending_count(&self) -> StoreResult<i64> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM probes WHERE verdict = 'pending'", [], |r| {
                r.get(0)
            })
        })
        .await
    }

    async fn last_event_seq(&self) -> StoreResult<i64> {
        self.read(metrics::last_event_seq).await
    }

    async fn verdict_events(&self, after: i64, limit: usize) -> StoreResult<Vec<super::VerdictEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| metrics::verdict_events(c, after, limit)).await
    }

    async fn latest_verdicts(&self, channels: &[String]) -> StoreResult<Vec<super::LatestVerdict>> {
        let channels = channels.to_vec();
        self.read(move |c| metrics::latest_verdicts(c, &channels)).await
    }

    async fn incidents_between(&self, from: Millis, to: Millis) -> StoreResult<Vec<Incident>> {
        self.report_incidents_between(from, to).await
    }

    async fn incident_pages(&self, incident_id: i64) -> StoreResult<Vec<super::PageRecord>> {
        self.report_incident_pages(incident_id).await
    }

    async fn daily_counts(&self, channels: &[String], from: Millis, to: Millis) -> StoreResult<Vec<super::DayCounts>> {
        self.report_daily_counts(channels, from, to).await
    }

    async fn live_vantages(&self, _grace: std::time::Duration) -> StoreResult<Option<Vec<String>>> {
        Ok(None)
    }

    async fn vantage_counts(
        &self,
        channels: &[String],
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<super::VantageCounts>> {
        self.report_vantage_counts(channels, from, to).await
    }

    async fn roll_up(&self, from: Millis, to: Millis) -> StoreResult<i64> {
        self.report_roll_up(from, to).await
    }

    async fn prune(&self, cut: &super::PruneCut) -> StoreResult<super::PruneStats> {
        self.report_prune(cut.clone()).await
    }

    async fn blind_started(&self, watcher: &str, inbox: &str, since: Millis, why: &str) -> StoreResult<()> {
        self.report_blind_started(watcher, inbox, since, why).await
    }

    async fn blind_ended(&self, watcher: &str, at: Millis) -> StoreResult<()> {
        self.report_blind_ended(watcher, at).await
    }

    async fn blind_spells(&self, from: Millis, to: Millis) -> StoreResult<Vec<super::BlindSpell>> {
        self.report_blind_spells(from, to).await
    }

    async fn dns_baseline(&self, domain: &str) -> StoreResult<Option<(String, Millis)>> {
        let domain = domain.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT snapshot, recorded_at FROM dns_baselines WHERE domain = ?1",
                params![domain],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })
        .await
    }

    async fn set_dns_baseline(&self, domain: &str, snapshot: &str, at: Millis) -> StoreResult<()> {
        let (domain, snapshot) = (domain.to_string(), snapshot.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO dns_baselines (domain, snapshot, recorded_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (domain) DO UPDATE SET snapshot = excluded.snapshot, recorded_at = excluded.recorded_at",
                params![domain, snapshot, at],
            )
            .map(|_| ())
        })
        .await
    }

    async fn set_cursor(&self, inbox: &str, cur: Cursor) -> StoreResult<()> {
        let inbox = inbox.to_string();
        self.with(move |c| {
            c.execute(
                "INSERT INTO inbox_cursors (inbox, uid_validity, last_uid) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (inbox) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid",
                params![inbox, cur.uid_validity, cur.last_uid],
            )
            .map(|_| ())
        })
        .await
    }

    async fn acknowledge(&self, ack: &Acknowledgement) -> StoreResult<bool> {
        let ack = ack.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE incidents SET acknowledged_at = ?2, acknowledged_by = ?3 \
                 WHERE id = ?1 AND resolved_at IS NULL AND acknowledged_at IS NULL",
                params![ack.incident_id, ack.at, ack.by],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            let channel: String = tx.query_row(
                "SELECT channel FROM incidents WHERE id = ?1",
                params![ack.incident_id],
                |r| r.get(0),
            )?;
            let detail = if ack.note.is_empty() {
                format!("acknowledged by {}", ack.by)
            } else {
                format!("acknowledged by {}: {}", ack.by, ack.note)
            };
            incident_event(&tx, ack.incident_id, ack.at, "acknowledged", &detail)?;
            enqueue(&tx, ack.incident_id, ack.at, &ack.pages)?;
            audit(
                &tx,
                ack.at,
                &ack.by,
                "acknowledge",
                &format!("incident {} ({channel})", ack.incident_id),
                &ack.note,
            )?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn add_silence(&self, s: &NewSilence) -> StoreResult<i64> {
        let s = s.clone();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute(
                "INSERT INTO silences (channel, owner, from_at, until, reason, created_by, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![s.channel, s.owner, s.from, s.until, s.reason, s.by, s.at],
            )?;
            let id = tx.last_insert_rowid();
            let who = match (&s.channel, &s.owner) {
                (Some(c), _) => format!("channel {c}"),
                (None, Some(o)) => format!("owner {o}"),
                (None, None) => "nothing".to_string(),
            };
            let target = format!("silence {id}: {who} until {}", crate::page::rfc3339(s.until));
            audit(&tx, s.at, &s.by, "silence", &target, &s.reason)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn end_silence(&self, id: i64, by: &str, reason: &str, at: Millis) -> StoreResult<bool> {
        let (by, reason) = (by.to_string(), reason.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let who: Option<(Option<String>, Option<String>)> = tx
                .query_row(
                    "UPDATE silences SET ended_at = ?2, ended_by = ?3 WHERE id = ?1 AND ended_at IS NULL \
                     RETURNING channel, owner",
                    params![id, at, by],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((channel, owner)) = who else {
                return Ok(false);
            };
            let what = match (channel, owner) {
                (Some(c), _) => format!("channel {c}"),
                (None, Some(o)) => format!("owner {o}"),
                (None, None) => "nothing".to_string(),
            };
            audit(&tx, at, &by, "end-silence", &format!("silence {id}: {what}"), &reason)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn silences(&self, active_at: Option<Millis>, limit: usize) -> StoreResult<Vec<SilenceRecord>> {
        match active_at {
            Some(t) => {
                let sql = format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences WHERE until > ?1 AND from_at <= ?1 \
                     AND (ended_at IS NULL OR ended_at > ?1) ORDER BY id DESC LIMIT ?2"
                );
                self.all(sql, vec![Value::Integer(t), limit_arg(limit)], row_to_silence)
                    .await
            }
            None => {
                let sql = format!("SELECT {SILENCE_COLUMNS} FROM silences ORDER BY id DESC LIMIT ?1");
                self.all(sql, vec![limit_arg(limit)], row_to_silence).await
            }
        }
    }

    async fn add_audit(&self, at: Millis, actor: &str, action: &str, target: &str, reason: &str) -> StoreResult<i64> {
        let (actor, action, target, reason) = (
            actor.to_string(),
            action.to_string(),
            target.to_string(),
            reason.to_string(),
        );
        self.with(move |c| {
            let tx = c.transaction()?;
            let id = audit(&tx, at, &actor, &action, &target, &reason)?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    async fn audit_log(&self, before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let sql = "SELECT id, at, actor, action, target, reason FROM audit WHERE id < ?1 ORDER BY id DESC LIMIT ?2";
        self.all(
            sql.into(),
            vec![Value::Integer(before.unwrap_or(i64::MAX)), limit_arg(limit)],
            row_to_audit,
        )
        .await
    }

    async fn probes_before(
        &self,
        channel: &str,
        before: Option<(Millis, String)>,
        limit: usize,
    ) -> StoreResult<Vec<ProbeRecord>> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let sql = format!(
            "SELECT {PROBE_COLUMNS} FROM probes WHERE channel = ?1 AND (created_at < ?2 OR (created_at = ?2 AND id < ?3)) \
             ORDER BY created_at DESC, id DESC LIMIT ?4"
        );
        self.all(
            sql,
            vec![text(channel), Value::Integer(at), text(&id), limit_arg(limit)],
            row_to_probe,
        )
        .await
    }

    async fn pages_of(&self, incident_ids: &[i64]) -> StoreResult<Vec<PageRecord>> {
        let ids = serde_json::Value::from(incident_ids.to_vec()).to_string();
        let sql =
            "SELECT id, incident_id, notifier, event, created_at, state, attempts, sent_at, last_error FROM outbox \
                   WHERE incident_id IN (SELECT value FROM json_each(?1)) ORDER BY id";
        self.all(sql.into(), vec![Value::Text(ids)], report::row_to_page).await
    }

    async fn outbox_states(&self) -> StoreResult<Vec<OutboxState>> {
        let sql = "SELECT notifier, \
                     COALESCE(SUM(state = 'pending'), 0), \
                     COALESCE(SUM(state = 'pending' AND attempts > 0), 0), \
                     COALESCE(SUM(state = 'failed'), 0), \
                     MIN(CASE WHEN state = 'pending' THEN created_at END), \
                     (SELECT o2.last_error FROM outbox o2 WHERE o2.notifier = o.notifier AND o2.last_error IS NOT NULL \
                        AND o2.state <> 'sent' ORDER BY o2.id DESC LIMIT 1), \
                     MAX(sent_at) \
                   FROM outbox o GROUP BY notifier ORDER BY notifier";
        self.all(sql.into(), vec![], |r| {
            Ok(OutboxState {
                notifier: r.get(0)?,
                queued: r.get(1)?,
                failing: r.get(2)?,
                given_up: r.get(3)?,
                oldest_queued_at: r.get(4)?,
                last_error: r.get(5)?,
                last_sent_at: r.get(6)?,
            })
        })
        .await
    }

    async fn channel_latest(&self) -> StoreResult<Vec<ChannelLatest>> {
        let sql = "SELECT p.channel, p.id, p.created_at, p.judged_at, p.verdict, p.latency_ms, p.detail \
                   FROM channel_latest l JOIN probes p ON p.id = l.probe_id ORDER BY p.channel";
        self.all(sql.into(), vec![], |r| {
            let verdict: String = r.get(4)?;
            Ok(ChannelLatest {
                channel: r.get(0)?,
                probe_id: r.get(1)?,
                created_at: r.get(2)?,
                judged_at: r.get(3)?,
                verdict: verdict.parse().map_err(|e: String| {
                    rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
                })?,
                latency_ms: r.get(5)?,
                detail: r.get(6)?,
            })
        })
        .await
    }

    async fn retain_schedule(&self, checks: &[super::NewRetainCheck]) -> StoreResult<()> {
        self.retain_schedule_rows(checks.to_vec()).await
    }
    async fn retain_due(&self, now: Millis, limit: usize) -> StoreResult<Vec<super::RetainCheck>> {
        self.retain_due_rows(now, limit).await
    }
    async fn retain_next(&self) -> StoreResult<Option<Millis>> {
        self.retain_next_row().await
    }
    async fn retain_record(&self, id: i64, r: &super::RetainResult) -> StoreResult<bool> {
        self.retain_record_row(id, r.clone()).await
    }
    async fn retain_fault(&self, id: i64, at: Millis, error: &str, retry_at: Millis) -> StoreResult<()> {
        self.retain_fault_row(id, at, error.to_string(), retry_at).await
    }
    async fn retain_skip(&self, id: i64, at: Millis, reason: &str) -> StoreResult<bool> {
        self.retain_skip_row(id, at, reason.to_string()).await
    }
    async fn retain_checks(&self, probe_id: &str) -> StoreResult<Vec<super::RetainCheck>> {
        self.retain_probe_rows(probe_id).await
    }
    async fn retain_span(
        &self,
        channel: &str,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> StoreResult<Vec<super::RetainCheck>> {
        self.retain_span_rows(channel, from, to, limit).await
    }
    async fn retain_channel(&self, channel: &str, limit: usize) -> StoreResult<Vec<super::RetainCheck>> {
        self.retain_channel_rows(channel, limit).await
    }
    async fn retain_counts(&self, from: Millis, to: Millis) -> StoreResult<Vec<super::RetainCounts>> {
        self.retain_count_rows(from, to).await
    }

    async fn channel_days(&self, channels: &[String], from_day: i64) -> StoreResult<Vec<(String, i64, i64)>> {
        let ok = Verdict::ALL
            .iter()
            .filter(|v| v.is_success())
            .map(|v| format!("'{}'", v.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        let ids = serde_json::Value::from(channels.to_vec()).to_string();
        let sql = format!(
            "SELECT channel, COALESCE(SUM(n), 0), COALESCE(SUM(CASE WHEN verdict IN ({ok}) THEN n ELSE 0 END), 0) \
             FROM channel_days WHERE channel IN (SELECT value FROM json_each(?1)) AND day >= ?2 \
             GROUP BY channel ORDER BY channel"
        );
        self.all(sql, vec![Value::Text(ids), Value::Integer(from_day)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_is_every_verdict_but_success_pending_and_error() {
        let failing: Vec<String> = Verdict::ALL
            .iter()
            // `lost`/`altered` are retention checks' verdicts (retain_checks
            // rows, their own incident), never a probe's.
            .filter(|v| {
                !v.is_success() && !matches!(v, Verdict::Pending | Verdict::Error | Verdict::Lost | Verdict::Altered)
            })
            .map(|v| format!("'{}'", v.as_str()))
            .collect();
        assert_eq!(FAILING, failing.join(", "));
        assert!(MIGRATIONS
            .iter()
            .any(|m| m.contains(&format!("WHERE verdict IN ({FAILING})"))));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_first_opens_migrate_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let opens: Vec<_> = (0..6)
            .map(|_| tokio::spawn(SqliteStore::open_owned(path.clone())))
            .collect();
        for o in opens {
            o.await.unwrap().unwrap();
        }
    }
}
