//! The SQLite side of reports, evidence and retention: read queries over
//! probes, incidents and the outbox, and the watchers' blind spells.

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::{row_to_incident, text, SqliteStore, INCIDENT_COLUMNS};
use crate::ledger::{
    day_start, BlindSpell, DayCounts, Incident, PageRecord, PruneCut, PruneStats, StoreResult, DAY_MS,
};
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
        let channels = channels.to_vec();
        self.with(move |c| merged_counts(c, &channels, from, to)).await
    }

    pub(super) async fn report_roll_up(&self, from: Millis, to: Millis) -> StoreResult<i64> {
        self.with(move |c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = roll_up(&tx, from, to)?;
            tx.commit()?;
            Ok(n)
        })
        .await
    }

    pub(super) async fn report_prune(&self, cut: PruneCut) -> StoreResult<PruneStats> {
        self.with(move |c| prune(c, &cut)).await
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

fn meta_i64(c: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    let v: Option<String> = c
        .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| r.get(0))
        .optional()?;
    Ok(v.and_then(|v| v.parse().ok()))
}

fn set_meta_i64(c: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    c.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value.to_string()],
    )
    .map(|_| ())
}

/// Days before this have been rolled up (read from `rollups`).
const ROLLED_THROUGH: &str = "rollups_through";
/// Probes created before this may have been pruned: those days' rollups are final.
const PRUNED_BEFORE: &str = "probes_pruned_before";
/// Probes up to this rowid have been looked at for slimming.
const SLIMMED_ROWID: &str = "probes_slimmed_rowid";

/// Channels per query (SQLite limits the number of parameters).
const CHANNELS_PER_QUERY: usize = 500;
/// Probes removed or slimmed per transaction, so the daemon's writes interleave.
const CHUNK: i64 = 5_000;

const ROLLUP_COLUMNS: &str =
    "channel, day, judged, successful, errors, pending, latency_count, latency_sum, latency_max";

/// Daily counts from the rollups for the days rolled up, from the probes after.
pub(super) fn merged_counts(
    c: &Connection,
    channels: &[String],
    from: Millis,
    to: Millis,
) -> rusqlite::Result<Vec<DayCounts>> {
    let rolled = meta_i64(c, ROLLED_THROUGH)?.unwrap_or(i64::MIN);
    let mut out = Vec::new();
    let groups: Vec<&[String]> = if channels.is_empty() {
        vec![&[]]
    } else {
        channels.chunks(CHANNELS_PER_QUERY).collect()
    };
    for group in groups {
        let (filter, args) = channel_filter(group, 3);
        if from < rolled {
            let sql = format!(
                "SELECT {ROLLUP_COLUMNS} FROM rollups WHERE day >= ?1 AND day < ?2 {filter} ORDER BY channel, day"
            );
            let mut all = vec![Value::Integer(from), Value::Integer(to.min(rolled))];
            all.extend(args.iter().cloned());
            let mut stmt = c.prepare_cached(&sql)?;
            for r in stmt.query_map(params_from_iter(all), row_to_counts)? {
                out.push(r?);
            }
        }
        let live_from = from.max(rolled);
        if to > live_from {
            let mut all = vec![Value::Integer(live_from), Value::Integer(to)];
            all.extend(args);
            let mut stmt = c.prepare_cached(&counts_sql(&filter))?;
            for r in stmt.query_map(params_from_iter(all), row_to_counts)? {
                out.push(r?);
            }
        }
    }
    out.sort_by(|a, b| (a.channel.as_str(), a.day).cmp(&(b.channel.as_str(), b.day)));
    Ok(out)
}

/// Rolls up the days in `[from, to)` that still have all their probes, and
/// every earlier day not rolled up yet (so that every day before the mark
/// has its rollup).
fn roll_up(c: &Connection, from: Millis, to: Millis) -> rusqlite::Result<i64> {
    let from = day_start(from).min(meta_i64(c, ROLLED_THROUGH)?.unwrap_or(i64::MIN));
    let from = from.max(meta_i64(c, PRUNED_BEFORE)?.unwrap_or(i64::MIN));
    let to = day_start(to);
    let mut n = 0;
    if to > from {
        let sql = format!(
            "INSERT INTO rollups ({ROLLUP_COLUMNS}) {} \
             ON CONFLICT (channel, day) DO UPDATE SET judged = excluded.judged, successful = excluded.successful, \
             errors = excluded.errors, pending = excluded.pending, latency_count = excluded.latency_count, \
             latency_sum = excluded.latency_sum, latency_max = excluded.latency_max",
            counts_sql("")
        );
        n = c.execute(&sql, params![from, to])? as i64;
    }
    if meta_i64(c, ROLLED_THROUGH)?.is_none_or(|r| r < to) {
        set_meta_i64(c, ROLLED_THROUGH, to)?;
    }
    Ok(n)
}

/// The probes a pruning run must keep: pending ones, those an open incident
/// may need (its channel's from its first failing probe on; for postcanary's
/// own incidents the `error` probes from then on), and every incident's
/// opening and resolving probe. `p` is the probe's alias.
const KEEP: &str = "p.verdict = 'pending' \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.opened_by = p.id) \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_by = p.id) \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_at IS NULL \
         AND (i.channel = p.channel OR (p.verdict = 'error' AND i.channel LIKE 'postcanary:%')) \
         AND p.created_at >= COALESCE((SELECT o.created_at FROM probes o WHERE o.id = i.opened_by), i.opened_at))";

fn prune(c: &mut Connection, cut: &PruneCut) -> rusqlite::Result<PruneStats> {
    let mut stats = PruneStats::default();
    if let Some(before) = cut.probes_before.map(day_start) {
        // Roll up every day about to lose probes, and freeze those rollups,
        // in one transaction before anything is removed.
        {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let oldest: Option<i64> = tx.query_row("SELECT MIN(created_at) FROM probes", [], |r| r.get(0))?;
            if let Some(oldest) = oldest.filter(|&o| o < before) {
                roll_up(&tx, oldest, before)?;
            }
            if meta_i64(&tx, PRUNED_BEFORE)?.is_none_or(|p| p < before) {
                set_meta_i64(&tx, PRUNED_BEFORE, before)?;
            }
            tx.commit()?;
        }
        // Oldest first, in rowid order (probes are written as they are created).
        let mut after: i64 = 0;
        loop {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let (last, old): (Option<i64>, i64) = tx.query_row(
                "SELECT MAX(rowid), COALESCE(SUM(created_at < ?3), 0) FROM \
                 (SELECT rowid, created_at FROM probes WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)",
                params![after, CHUNK, before],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let Some(last) = last.filter(|_| old > 0) else {
                tx.commit()?;
                break;
            };
            let doomed = format!(
                "SELECT p.id FROM probes p WHERE p.rowid > ?1 AND p.rowid <= ?2 AND p.created_at < ?3 AND NOT ({KEEP})"
            );
            tx.execute(
                &format!("DELETE FROM probe_events WHERE probe_id IN ({doomed})"),
                params![after, last, before],
            )?;
            let removed = tx.execute(
                &format!("DELETE FROM probes WHERE id IN ({doomed})"),
                params![after, last, before],
            )?;
            stats.probes_removed += removed as i64;
            tx.commit()?;
            after = last;
        }
        stats.probes_kept_for_incidents = c.query_row(
            "SELECT COUNT(*) FROM probes WHERE created_at < ?1 AND verdict <> 'pending'",
            params![before],
            |r| r.get(0),
        )?;
    }
    if let Some(before) = cut.rollups_before {
        stats.rollups_removed = c.execute("DELETE FROM rollups WHERE day < ?1", params![before])? as i64;
    }
    // Slim the successes: rowids after the last run's, created before the cut.
    let ok = success_list();
    let mut after = meta_i64(c, SLIMMED_ROWID)?.unwrap_or(0);
    let end: Option<i64> = c.query_row(
        "SELECT MAX(rowid) FROM probes WHERE rowid > ?1 AND created_at < ?2",
        params![after, cut.slim_before],
        |r| r.get(0),
    )?;
    if let Some(end) = end {
        while after < end {
            let upto = (after + CHUNK).min(end);
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let slim = format!(
                "SELECT p.id FROM probes p WHERE p.rowid > ?1 AND p.rowid <= ?2 AND p.created_at < ?3 \
                 AND p.handled = 1 AND p.verdict IN ({ok}) AND p.run_id <> '' \
                 AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.opened_by = p.id) \
                 AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_by = p.id)"
            );
            tx.execute(
                &format!("DELETE FROM probe_events WHERE probe_id IN ({slim})"),
                params![after, upto, cut.slim_before],
            )?;
            let n = tx.execute(
                &format!("UPDATE probes SET detail = NULL, target = '', run_id = '' WHERE id IN ({slim})"),
                params![after, upto, cut.slim_before],
            )?;
            stats.probes_slimmed += n as i64;
            set_meta_i64(&tx, SLIMMED_ROWID, upto)?;
            tx.commit()?;
            after = upto;
        }
    }
    Ok(stats)
}
