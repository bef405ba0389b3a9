//! The SQLite side of reports, evidence and retention: read queries over
//! probes, incidents and the outbox, and the watchers' blind spells.

use std::collections::BTreeMap;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};

use super::{row_to_incident, text, SqliteStore, INCIDENT_COLUMNS};
use crate::ledger::{
    add_vantage_counts, day_start, vantage_ranges, BlindSpell, DayCounts, Incident, PageRecord, PruneCut, PruneStats,
    StoreResult, VantageCounts, DAY_MS,
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

pub(super) fn row_to_page(r: &Row<'_>) -> rusqlite::Result<PageRecord> {
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

/// The channel lists of one query each: all channels (`&[]`) when none are
/// named, else chunks SQLite's parameter limit allows.
fn channel_groups(channels: &[String]) -> Vec<&[String]> {
    if channels.is_empty() {
        vec![&[]]
    } else {
        channels.chunks(CHANNELS_PER_QUERY).collect()
    }
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

    pub(super) async fn report_vantage_counts(
        &self,
        channels: &[String],
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<VantageCounts>> {
        let channels = channels.to_vec();
        self.with(move |c| {
            // One read transaction: the mark and the rows agree.
            let tx = c.transaction()?;
            let rolled = meta_i64(&tx, VANTAGES_ROLLED_THROUGH)?.unwrap_or(i64::MIN);
            let (whole, live) = vantage_ranges(from, to, rolled);
            let mut sum: BTreeMap<(String, String), VantageCounts> = BTreeMap::new();
            for group in channel_groups(&channels) {
                let (filter, args) = channel_filter(group, 3);
                let mut parts = Vec::new();
                if let Some((a, b)) = whole {
                    parts.push((
                        format!(
                            "SELECT channel, vantage, SUM(judged), SUM(successful), SUM(errors), SUM(pending) \
                             FROM vantage_rollups WHERE day >= ?1 AND day < ?2 {filter} GROUP BY channel, vantage"
                        ),
                        a,
                        b,
                    ));
                }
                for &(a, b) in &live {
                    parts.push((vantage_counts_sql(&filter), a, b));
                }
                for (sql, a, b) in parts {
                    let mut all = vec![Value::Integer(a), Value::Integer(b)];
                    all.extend(args.iter().cloned());
                    let mut stmt = tx.prepare_cached(&sql)?;
                    let rows = stmt.query_map(params_from_iter(all), |r| {
                        Ok(VantageCounts {
                            channel: r.get(0)?,
                            vantage: r.get(1)?,
                            judged: r.get(2)?,
                            successful: r.get(3)?,
                            errors: r.get(4)?,
                            pending: r.get(5)?,
                        })
                    })?;
                    for r in rows {
                        add_vantage_counts(&mut sum, r?);
                    }
                }
            }
            tx.commit()?;
            Ok(sum.into_values().collect())
        })
        .await
    }

    pub(super) async fn report_roll_up(&self, from: Millis, to: Millis) -> StoreResult<i64> {
        self.with(move |c| roll_up_by_day(c, from, to)).await
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
/// Days before this have their per-vantage rollups (`vantage_rollups`).
const VANTAGES_ROLLED_THROUGH: &str = "vantage_rollups_through";
/// Probes created before this may have been pruned: those days' rollups are final.
const PRUNED_BEFORE: &str = "probes_pruned_before";
/// Successes created before this have been slimmed.
const SLIMMED_BEFORE: &str = "probes_slimmed_before";

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
    for group in channel_groups(channels) {
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

/// [`roll_up`] of `[from, to)` and every earlier day not rolled up yet,
/// one day per transaction: the first roll-up of a large ledger (months of
/// probes) never holds the write lock for more than a day's worth, so
/// probes keep being written while it runs. The mark advances day by day,
/// so an interrupted run resumes where it stopped.
fn roll_up_by_day(c: &mut Connection, from: Millis, to: Millis) -> rusqlite::Result<i64> {
    let rolled = meta_i64(c, ROLLED_THROUGH)?;
    let oldest: Option<i64> = c.query_row("SELECT MIN(created_at) FROM probes", [], |r| r.get(0))?;
    let mut start = day_start(from);
    match rolled {
        Some(r) => start = start.min(r),
        None => start = start.min(oldest.map(day_start).unwrap_or(start)),
    }
    // The per-vantage rollups catch up day by day too (from their first
    // run on a ledger that already had vantages).
    let vantage_start = match meta_i64(c, VANTAGES_ROLLED_THROUGH)? {
        Some(r) => Some(r),
        None => oldest_vantage_day(c)?,
    };
    let start = start.min(vantage_start.unwrap_or(start));
    let start = start.max(meta_i64(c, PRUNED_BEFORE)?.unwrap_or(i64::MIN));
    let to = day_start(to);
    let mut n = 0;
    let mut day = start;
    while day < to {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        n += roll_up(&tx, day, day + DAY_MS)?;
        tx.commit()?;
        day += DAY_MS;
    }
    if to > start || rolled.is_none_or(|r| r < to) {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if meta_i64(&tx, ROLLED_THROUGH)?.is_none_or(|r| r < to) {
            set_meta_i64(&tx, ROLLED_THROUGH, to)?;
        }
        tx.commit()?;
    }
    Ok(n)
}

/// Rolls up the days in `[from, to)` that still have all their probes, and
/// every earlier day not rolled up yet after the mark (so that every day
/// before the mark has its rollup). Without a mark, only `[from, to)`:
/// [`roll_up_by_day`] starts at the oldest probe.
fn roll_up(c: &Connection, from: Millis, to: Millis) -> rusqlite::Result<i64> {
    let from = match meta_i64(c, ROLLED_THROUGH)? {
        Some(r) => day_start(from).min(r),
        None => day_start(from),
    };
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
    roll_up_vantages(c, from, to)?;
    Ok(n)
}

/// The per-vantage rollups of `[from, to)` (whole days) and of every day
/// after their own mark; the first run starts at the oldest probe that
/// carries a vantage, so a ledger that had vantages before these rollups
/// existed gets them for every day it still keeps.
fn roll_up_vantages(c: &Connection, from: Millis, to: Millis) -> rusqlite::Result<()> {
    let from = match meta_i64(c, VANTAGES_ROLLED_THROUGH)? {
        Some(r) => day_start(from).min(r),
        None => day_start(from).min(oldest_vantage_day(c)?.unwrap_or(i64::MAX)),
    };
    let from = from.max(meta_i64(c, PRUNED_BEFORE)?.unwrap_or(i64::MIN));
    let to = day_start(to);
    if to > from {
        c.execute(
            &format!(
                "INSERT INTO vantage_rollups (channel, vantage, day, judged, successful, errors, pending) \
                 SELECT channel, vantage, (created_at / {DAY_MS}) * {DAY_MS} AS day, {} \
                 FROM probes WHERE created_at >= ?1 AND created_at < ?2 AND vantage IS NOT NULL \
                 GROUP BY channel, vantage, day \
                 ON CONFLICT (channel, vantage, day) DO UPDATE SET judged = excluded.judged, \
                   successful = excluded.successful, errors = excluded.errors, pending = excluded.pending",
                vantage_count_columns()
            ),
            params![from, to],
        )?;
    }
    if meta_i64(c, VANTAGES_ROLLED_THROUGH)?.is_none_or(|r| r < to) {
        set_meta_i64(c, VANTAGES_ROLLED_THROUGH, to)?;
    }
    Ok(())
}

/// The day of the oldest probe that carries a vantage (found by the
/// partial index `probes_vantage`).
fn oldest_vantage_day(c: &Connection) -> rusqlite::Result<Option<Millis>> {
    let oldest: Option<i64> = c.query_row(
        "SELECT MIN(created_at) FROM probes WHERE vantage IS NOT NULL",
        [],
        |r| r.get(0),
    )?;
    Ok(oldest.map(day_start))
}

/// Judged, successful, `error` and pending probes of a group: the columns
/// of a per-vantage count, from the probes and in `vantage_rollups` alike.
fn vantage_count_columns() -> String {
    let ok = success_list();
    format!(
        "COALESCE(SUM(verdict <> 'pending'), 0), COALESCE(SUM(verdict IN ({ok})), 0), \
         COALESCE(SUM(verdict = 'error'), 0), COALESCE(SUM(verdict = 'pending'), 0)"
    )
}

/// Per-vantage counts of the probes in `[?1, ?2)`.
fn vantage_counts_sql(filter: &str) -> String {
    format!(
        "SELECT channel, vantage, {} \
         FROM probes WHERE created_at >= ?1 AND created_at < ?2 AND vantage IS NOT NULL {filter} \
         GROUP BY channel, vantage",
        vantage_count_columns()
    )
}

/// The probes a pruning run must keep: pending ones, those an open incident
/// may need (its channel's from its first failing probe on; for postcanary's
/// own incidents the `error` probes from then on), and every incident's
/// opening and resolving probe — and a retained canary while one of its
/// retention checks is due, or for good once one found it lost or altered
/// (its evidence). `p` is the probe's alias.
const KEEP: &str = "p.verdict = 'pending' \
    OR EXISTS (SELECT 1 FROM retain_checks r WHERE r.probe_id = p.id AND r.state = 'due') \
    OR EXISTS (SELECT 1 FROM retain_checks r WHERE r.probe_id = p.id AND r.result IN ('lost', 'altered')) \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.opened_by = p.id) \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_by = p.id) \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_at IS NULL \
         AND (i.channel = p.channel OR (p.verdict = 'error' AND i.channel LIKE 'postcanary:%')) \
         AND p.created_at >= COALESCE((SELECT o.created_at FROM probes o WHERE o.id = i.opened_by), i.opened_at))";

/// Every channel that has probes, by seeking the channel index once per
/// channel (not by scanning it).
fn probe_channels(c: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = c.prepare(
        "WITH RECURSIVE ch(name) AS (SELECT MIN(channel) FROM probes \
         UNION ALL SELECT (SELECT MIN(channel) FROM probes WHERE channel > ch.name) FROM ch WHERE ch.name IS NOT NULL) \
         SELECT name FROM ch WHERE name IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}

/// What a slimmed success keeps of the server's reply: the queue id, when it names one.
fn slim_reply(reply: Option<String>) -> Option<String> {
    let reply = reply?;
    Some(match crate::ledger::queue_id(&reply) {
        Some(id) => format!("id={id}"),
        None => reply.chars().take(40).collect(),
    })
}

fn prune(c: &mut Connection, cut: &PruneCut) -> rusqlite::Result<PruneStats> {
    let mut stats = PruneStats::default();
    c.execute_batch("CREATE TEMP TABLE IF NOT EXISTS prune_ids (id TEXT PRIMARY KEY); DELETE FROM prune_ids;")?;
    let channels = probe_channels(c)?;
    if let Some(before) = cut.probes_before.map(day_start) {
        // Roll up every day about to lose probes (a day per transaction),
        // then, before anything is removed, bring those days up to date and
        // freeze them in one short transaction.
        let oldest: Option<i64> = c.query_row("SELECT MIN(created_at) FROM probes", [], |r| r.get(0))?;
        if let Some(oldest) = oldest.filter(|&o| o < before) {
            roll_up_by_day(c, oldest, before)?;
        }
        {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            // Only the day before the cut can have changed since (verdicts
            // of late probes): re-roll it inside the freeze.
            roll_up(&tx, before - DAY_MS, before)?;
            if meta_i64(&tx, PRUNED_BEFORE)?.is_none_or(|p| p < before) {
                set_meta_i64(&tx, PRUNED_BEFORE, before)?;
            }
            tx.commit()?;
        }
        let pick = format!(
            "INSERT INTO prune_ids SELECT p.id FROM probes p WHERE p.channel = ?1 AND p.created_at < ?2 \
             AND NOT ({KEEP}) LIMIT {CHUNK}"
        );
        for ch in &channels {
            loop {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let n = tx.execute(&pick, params![ch, before])?;
                if n > 0 {
                    tx.execute(
                        "DELETE FROM probe_events WHERE probe_id IN (SELECT id FROM prune_ids)",
                        [],
                    )?;
                    tx.execute(
                        "DELETE FROM retain_checks WHERE probe_id IN (SELECT id FROM prune_ids)",
                        [],
                    )?;
                    stats.probes_removed +=
                        tx.execute("DELETE FROM probes WHERE id IN (SELECT id FROM prune_ids)", [])? as i64;
                    tx.execute("DELETE FROM prune_ids", [])?;
                }
                tx.commit()?;
                if n == 0 {
                    break;
                }
            }
        }
        stats.probes_kept_for_incidents = c.query_row(
            "SELECT COUNT(*) FROM probes WHERE created_at < ?1 AND verdict <> 'pending'",
            params![before],
            |r| r.get(0),
        )?;
    }
    if let Some(before) = cut.rollups_before {
        stats.rollups_removed = c.execute("DELETE FROM rollups WHERE day < ?1", params![before])? as i64
            + c.execute("DELETE FROM vantage_rollups WHERE day < ?1", params![before])? as i64;
    }
    // Slim the successes created since the last run's mark (a day earlier,
    // for those judged late): the evidence trail goes, and the row is
    // written anew without what a success does not need — so the old,
    // now sparse pages are freed and reused instead of staying half empty.
    let ok = success_list();
    let since = meta_i64(c, SLIMMED_BEFORE)?.map_or(i64::MIN, |m| m - DAY_MS);
    let pick = format!(
        "INSERT INTO prune_ids SELECT p.id FROM probes p WHERE p.channel = ?1 AND p.created_at >= ?2 \
         AND p.created_at < ?3 AND p.handled = 1 AND p.verdict IN ({ok}) AND p.run_id <> '' \
         AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.opened_by = p.id) \
         AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_by = p.id) LIMIT {CHUNK}"
    );
    for ch in &channels {
        loop {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let n = tx.execute(&pick, params![ch, since, cut.slim_before])?;
            if n > 0 {
                tx.execute(
                    "DELETE FROM probe_events WHERE probe_id IN (SELECT id FROM prune_ids)",
                    [],
                )?;
                let rows: Vec<super::ProbeRecord> = {
                    let mut stmt = tx.prepare(&format!(
                        "SELECT {} FROM probes WHERE id IN (SELECT id FROM prune_ids)",
                        super::PROBE_COLUMNS
                    ))?;
                    let rows = stmt.query_map([], super::row_to_probe)?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                tx.execute("DELETE FROM probes WHERE id IN (SELECT id FROM prune_ids)", [])?;
                {
                    let mut ins = tx.prepare_cached(
                        "INSERT INTO probes (id, token, channel, kind, expect, inbox, target, run_id, created_at, \
                         sent_at, deadline, verdict, judged_at, found_in, found_at, latency_ms, detail, smtp_reply, \
                         fault, handled) VALUES (?1, ?2, ?3, ?4, ?5, ?6, '', '', ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, \
                         NULL, ?15, ?16, 1)",
                    )?;
                    for p in rows {
                        ins.execute(params![
                            p.id,
                            p.token,
                            p.channel,
                            p.kind,
                            p.expect,
                            p.inbox,
                            p.created_at,
                            p.sent_at,
                            p.deadline,
                            p.verdict.as_str(),
                            p.judged_at,
                            p.found_in,
                            p.found_at,
                            p.latency_ms,
                            slim_reply(p.smtp_reply),
                            p.fault
                        ])?;
                        stats.probes_slimmed += 1;
                    }
                }
                tx.execute("DELETE FROM prune_ids", [])?;
            }
            tx.commit()?;
            if n == 0 {
                break;
            }
        }
    }
    if meta_i64(c, SLIMMED_BEFORE)?.is_none_or(|m| m < cut.slim_before) {
        set_meta_i64(c, SLIMMED_BEFORE, cut.slim_before)?;
    }
    Ok(stats)
}
