//! The SQLite side of reports, evidence and retention: read queries over
//! probes, incidents and the outbox, and the watchers' blind spells.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Row};

use super::{row_to_incident, text, SqliteStore, INCIDENT_COLUMNS};
use crate::ledger::{BlindSpell, DayCounts, Incident, PageRecord, StoreResult, DAY_MS};
use crate::verdict::{Millis, Verdict};

/// The SQL list of the success verdicts (from [`Verdict::is_success`]).
pub(super) fn success_list() -> String {
    Verdict::ALL
        .iter()
        .filter(|v| v.is_success())
        .map(|v| format!("'{}'", v.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row_to_page(r: &Row<'_>) -> rusqlite::Result<PageRecord> {
    Ok(PageRecord {
        id: r.get(0)?,
        incident_id: r.get(1)?,
        notifier: r.get(2)?,
        event: r.get(3)?,
        created_at: r.get(4)?,
        state: r.get(5)?,
        attempts: r.get(6)?,
        sent_at: r.get(7)?,
        last_error: r.get(8)?,
    })
}

pub(super) fn row_to_counts(r: &Row<'_>) -> rusqlite::Result<DayCounts> {
    Ok(DayCounts {
        channel: r.get(0)?,
        day: r.get(1)?,
        judged: r.get(2)?,
        successful: r.get(3)?,
        errors: r.get(4)?,
        pending: r.get(5)?,
        latency_count: r.get(6)?,
        latency_sum: r.get(7)?,
        latency_max: r.get(8)?,
    })
}

fn row_to_spell(r: &Row<'_>) -> rusqlite::Result<BlindSpell> {
    Ok(BlindSpell {
        watcher: r.get(0)?,
        inbox: r.get(1)?,
        since: r.get(2)?,
        until: r.get(3)?,
        why: r.get(4)?,
    })
}

/// The aggregate over `probes` that makes one [`DayCounts`] per channel and
/// day; `{filter}` is replaced by extra conditions.
pub(super) fn counts_sql(filter: &str) -> String {
    let ok = success_list();
    format!(
        "SELECT channel, (created_at / {DAY_MS}) * {DAY_MS} AS day, \
           COALESCE(SUM(verdict <> 'pending'), 0), COALESCE(SUM(verdict IN ({ok})), 0), \
           COALESCE(SUM(verdict = 'error'), 0), COALESCE(SUM(verdict = 'pending'), 0), \
           COALESCE(SUM(verdict = 'delivered' AND latency_ms IS NOT NULL), 0), \
           COALESCE(SUM(CASE WHEN verdict = 'delivered' THEN latency_ms END), 0), \
           COALESCE(MAX(CASE WHEN verdict = 'delivered' THEN latency_ms END), 0) \
         FROM probes WHERE created_at >= ?1 AND created_at < ?2 {filter} \
         GROUP BY channel, day ORDER BY channel, day"
    )
}

/// `AND channel IN (?3, ?4, …)` for a non-empty list, with its arguments.
pub(super) fn channel_filter(channels: &[String], first: usize) -> (String, Vec<Value>) {
    if channels.is_empty() {
        return (String::new(), Vec::new());
    }
    let marks: Vec<String> = (0..channels.len()).map(|i| format!("?{}", first + i)).collect();
    (
        format!("AND channel IN ({})", marks.join(", ")),
        channels.iter().map(|c| text(c)).collect(),
    )
}

impl SqliteStore {
    pub(super) async fn report_incidents_between(&self, from: Millis, to: Millis) -> StoreResult<Vec<Incident>> {
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE opened_at < ?2 \
             AND (resolved_at IS NULL OR resolved_at >= ?1) ORDER BY opened_at, id"
        );
        self.all(sql, vec![from.into(), to.into()], row_to_incident).await
    }

    pub(super) async fn report_incident_pages(&self, incident_id: i64) -> StoreResult<Vec<PageRecord>> {
        let sql = "SELECT id, incident_id, notifier, event, created_at, state, attempts, sent_at, last_error \
                   FROM outbox WHERE incident_id = ?1 ORDER BY id";
        self.all(sql.into(), vec![Value::Integer(incident_id)], row_to_page)
            .await
    }

    pub(super) async fn report_daily_counts(
        &self,
        channels: &[String],
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<DayCounts>> {
        let (filter, mut args) = channel_filter(channels, 3);
        let mut all = vec![Value::Integer(from), Value::Integer(to)];
        all.append(&mut args);
        self.with(move |c| {
            let mut stmt = c.prepare(&counts_sql(&filter))?;
            let rows = stmt.query_map(params_from_iter(all), row_to_counts)?;
            rows.collect()
        })
        .await
    }

    pub(super) async fn report_blind_started(
        &self,
        watcher: &str,
        inbox: &str,
        since: Millis,
        why: &str,
    ) -> StoreResult<()> {
        let (watcher, inbox, why) = (watcher.to_string(), inbox.to_string(), why.to_string());
        self.with(move |c| {
            let tx = c.transaction()?;
            let updated = tx.execute(
                "UPDATE watcher_blind SET why = ?2 WHERE watcher = ?1 AND until IS NULL",
                params![watcher, why],
            )?;
            if updated == 0 {
                tx.execute(
                    "INSERT INTO watcher_blind (watcher, inbox, since, why) VALUES (?1, ?2, ?3, ?4)",
                    params![watcher, inbox, since, why],
                )?;
            }
            tx.commit()
        })
        .await
    }

    pub(super) async fn report_blind_ended(&self, watcher: &str, at: Millis) -> StoreResult<()> {
        let watcher = watcher.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE watcher_blind SET until = MAX(?2, since) WHERE watcher = ?1 AND until IS NULL",
                params![watcher, at],
            )
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn report_blind_spells(&self, from: Millis, to: Millis) -> StoreResult<Vec<BlindSpell>> {
        let sql = "SELECT watcher, inbox, since, until, why FROM watcher_blind \
                   WHERE since < ?2 AND (until IS NULL OR until > ?1) ORDER BY since, rowid";
        self.all(sql.into(), vec![from.into(), to.into()], row_to_spell).await
    }
}
