//! The PostgreSQL side of reports, evidence, retention and operating it:
//! the same semantics as the SQLite store (src/ledger/sqlite_report.rs and
//! the issue-15/20 methods of src/ledger/sqlite.rs), in PostgreSQL's SQL.
//!
//! Fenced (checked against the HA lease in their own transaction, like
//! every deciding write): acknowledging, setting and ending a silence
//! (both change what is paged), rolling up and pruning (they remove or
//! rewrite what the active reads). Not fenced, because they only record
//! what already happened: watchers' blind spells and audit rows.

use std::collections::BTreeMap;

use tokio_postgres::Transaction;

use super::{
    audit_target, enqueue, get, incident_event, limit_arg, pgerr, row_to_incident, row_to_probe, successes,
    PostgresStore, INCIDENT_COLUMNS, PROBE_COLUMNS,
};
use crate::ledger::{
    add_vantage_counts, day_start, queue_id, vantage_ranges, Acknowledgement, AuditEntry, BlindSpell, ChannelLatest,
    DayCounts, Incident, NewSilence, OutboxState, PageRecord, ProbeRecord, PruneCut, PruneStats, SilenceRecord,
    StoreError, StoreResult, VantageCounts, DAY_MS,
};
use crate::verdict::Millis;

/// Days before this have been rolled up (read from `rollups`). The same
/// `meta` keys as the SQLite ledger, so `postcanary migrate` carries them.
const ROLLED_THROUGH: &str = "rollups_through";
/// Days before this have their per-vantage rollups (`vantage_rollups`).
const VANTAGES_ROLLED_THROUGH: &str = "vantage_rollups_through";
/// Probes created before this may have been pruned: those days' rollups are final.
const PRUNED_BEFORE: &str = "probes_pruned_before";
/// Successes created before this have been slimmed.
const SLIMMED_BEFORE: &str = "probes_slimmed_before";

/// Probes removed or slimmed per transaction, so the daemon's writes interleave.
const CHUNK: i64 = 5_000;

const ROLLUP_COLUMNS: &str =
    "channel, day, judged, successful, errors, pending, latency_count, latency_sum, latency_max";
const PAGE_COLUMNS: &str = "id, incident_id, notifier, event, created_at, state, attempts, sent_at, last_error";
const SILENCE_COLUMNS: &str = "id, channel, owner, from_at, until, reason, created_by, created_at, ended_at, ended_by";

/// The probes a pruning run must keep: pending ones, those an open incident
/// may need (its channel's from its first failing probe on; for postcanary's
/// own incidents the `error` probes from then on), and every incident's
/// opening and resolving probe. `p` is the probe's alias. (As on SQLite.)
const KEEP: &str = "p.verdict = 'pending' \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.opened_by = p.id) \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_by = p.id) \
    OR EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_at IS NULL \
         AND (i.channel = p.channel OR (p.verdict = 'error' AND i.channel LIKE 'postcanary:%')) \
         AND p.created_at >= COALESCE((SELECT o.created_at FROM probes o WHERE o.id = i.opened_by), i.opened_at)) \
    OR EXISTS (SELECT 1 FROM retain_checks r WHERE r.probe_id = p.id AND r.state = 'due') \
    OR EXISTS (SELECT 1 FROM retain_checks r WHERE r.probe_id = p.id AND r.result IN ('lost', 'altered'))";

fn row_to_page(r: &tokio_postgres::Row) -> StoreResult<PageRecord> {
    Ok(PageRecord {
        id: get(r, 0)?,
        incident_id: get(r, 1)?,
        notifier: get(r, 2)?,
        event: get(r, 3)?,
        created_at: get(r, 4)?,
        state: get(r, 5)?,
        attempts: get(r, 6)?,
        sent_at: get(r, 7)?,
        last_error: get(r, 8)?,
    })
}

fn row_to_counts(r: &tokio_postgres::Row) -> StoreResult<DayCounts> {
    Ok(DayCounts {
        channel: get(r, 0)?,
        day: get(r, 1)?,
        judged: get(r, 2)?,
        successful: get(r, 3)?,
        errors: get(r, 4)?,
        pending: get(r, 5)?,
        latency_count: get(r, 6)?,
        latency_sum: get(r, 7)?,
        latency_max: get(r, 8)?,
    })
}

fn row_to_silence(r: &tokio_postgres::Row) -> StoreResult<SilenceRecord> {
    Ok(SilenceRecord {
        id: get(r, 0)?,
        channel: get(r, 1)?,
        owner: get(r, 2)?,
        from: get(r, 3)?,
        until: get(r, 4)?,
        reason: get(r, 5)?,
        created_by: get(r, 6)?,
        created_at: get(r, 7)?,
        ended_at: get(r, 8)?,
        ended_by: get(r, 9)?,
    })
}

fn row_to_audit(r: &tokio_postgres::Row) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: get(r, 0)?,
        at: get(r, 1)?,
        actor: get(r, 2)?,
        action: get(r, 3)?,
        target: get(r, 4)?,
        reason: get(r, 5)?,
    })
}

/// The aggregate over `probes` that makes one [`DayCounts`] per channel and
/// day created in `[$1, $2)`, for the channels `$3` (NULL: all).
fn counts_sql() -> String {
    let ok = successes();
    format!(
        "SELECT channel, (created_at / {DAY_MS}) * {DAY_MS} AS day, \
           COUNT(*) FILTER (WHERE verdict <> 'pending'), COUNT(*) FILTER (WHERE verdict IN ({ok})), \
           COUNT(*) FILTER (WHERE verdict = 'error'), COUNT(*) FILTER (WHERE verdict = 'pending'), \
           COUNT(*) FILTER (WHERE verdict = 'delivered' AND latency_ms IS NOT NULL), \
           COALESCE(SUM(latency_ms) FILTER (WHERE verdict = 'delivered'), 0)::bigint, \
           COALESCE(MAX(latency_ms) FILTER (WHERE verdict = 'delivered'), 0)::bigint \
         FROM probes WHERE created_at >= $1 AND created_at < $2 \
           AND ($3::text[] IS NULL OR channel = ANY($3::text[])) \
         GROUP BY channel, day"
    )
}

/// `None` for "every channel", else the list.
fn channel_list(channels: &[String]) -> Option<Vec<String>> {
    (!channels.is_empty()).then(|| channels.to_vec())
}

async fn meta_i64(tx: &Transaction<'_>, key: &str) -> StoreResult<Option<i64>> {
    let v: Option<String> = match tx
        .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
        .await
        .map_err(pgerr)?
    {
        Some(r) => get(&r, 0)?,
        None => None,
    };
    Ok(v.and_then(|v| v.parse().ok()))
}

async fn set_meta_i64(tx: &Transaction<'_>, key: &str, value: i64) -> StoreResult<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&key, &value.to_string()],
    )
    .await
    .map_err(pgerr)
    .map(|_| ())
}

/// Daily counts from the rollups for the days rolled up, from the probes
/// after; ordered by channel (bytewise, like SQLite), then day.
pub(super) async fn merged_counts(
    tx: &Transaction<'_>,
    channels: &[String],
    from: Millis,
    to: Millis,
) -> StoreResult<Vec<DayCounts>> {
    let rolled = meta_i64(tx, ROLLED_THROUGH).await?.unwrap_or(i64::MIN);
    let list = channel_list(channels);
    let mut out = Vec::new();
    if from < rolled {
        let sql = format!(
            "SELECT {ROLLUP_COLUMNS} FROM rollups WHERE day >= $1 AND day < $2 \
             AND ($3::text[] IS NULL OR channel = ANY($3::text[]))"
        );
        for r in tx.query(&sql, &[&from, &to.min(rolled), &list]).await.map_err(pgerr)? {
            out.push(row_to_counts(&r)?);
        }
    }
    let live_from = from.max(rolled);
    if to > live_from {
        for r in tx
            .query(&counts_sql(), &[&live_from, &to, &list])
            .await
            .map_err(pgerr)?
        {
            out.push(row_to_counts(&r)?);
        }
    }
    out.sort_by(|a, b| (a.channel.as_str(), a.day).cmp(&(b.channel.as_str(), b.day)));
    Ok(out)
}

/// Rolls up the days in `[from, to)` that still have all their probes, and
/// every earlier day not rolled up yet (so that every day before the mark
/// has its rollup).
async fn roll_up(tx: &Transaction<'_>, from: Millis, to: Millis) -> StoreResult<i64> {
    let rolled = meta_i64(tx, ROLLED_THROUGH).await?;
    let from = day_start(from).min(rolled.unwrap_or(i64::MIN));
    let from = from.max(meta_i64(tx, PRUNED_BEFORE).await?.unwrap_or(i64::MIN));
    let to = day_start(to);
    let mut n = 0;
    if to > from {
        let sql = format!(
            "INSERT INTO rollups ({ROLLUP_COLUMNS}) {} \
             ON CONFLICT (channel, day) DO UPDATE SET judged = excluded.judged, successful = excluded.successful, \
             errors = excluded.errors, pending = excluded.pending, latency_count = excluded.latency_count, \
             latency_sum = excluded.latency_sum, latency_max = excluded.latency_max",
            counts_sql()
        );
        let all: Option<Vec<String>> = None;
        n = i64::try_from(tx.execute(&sql, &[&from, &to, &all]).await.map_err(pgerr)?).unwrap_or(i64::MAX);
    }
    if rolled.is_none_or(|r| r < to) {
        set_meta_i64(tx, ROLLED_THROUGH, to).await?;
    }
    roll_up_vantages(tx, from, to).await?;
    Ok(n)
}

/// Judged, successful, `error` and pending probes of a group: the columns
/// of a per-vantage count, from the probes and in `vantage_rollups` alike.
fn vantage_count_columns() -> String {
    let ok = successes();
    format!(
        "COUNT(*) FILTER (WHERE verdict <> 'pending'), COUNT(*) FILTER (WHERE verdict IN ({ok})), \
         COUNT(*) FILTER (WHERE verdict = 'error'), COUNT(*) FILTER (WHERE verdict = 'pending')"
    )
}

/// The per-vantage rollups of `[from, to)` (whole days) and of every day
/// after their own mark; the first run starts at the oldest probe that
/// carries a vantage, so a ledger that had vantages before these rollups
/// existed gets them for every day it still keeps.
async fn roll_up_vantages(tx: &Transaction<'_>, from: Millis, to: Millis) -> StoreResult<()> {
    let rolled = meta_i64(tx, VANTAGES_ROLLED_THROUGH).await?;
    let from = match rolled {
        Some(r) => day_start(from).min(r),
        None => {
            let oldest: Option<i64> = get(
                &tx.query_one("SELECT MIN(created_at) FROM probes WHERE vantage IS NOT NULL", &[])
                    .await
                    .map_err(pgerr)?,
                0,
            )?;
            day_start(from).min(oldest.map(day_start).unwrap_or(i64::MAX))
        }
    };
    let from = from.max(meta_i64(tx, PRUNED_BEFORE).await?.unwrap_or(i64::MIN));
    let to = day_start(to);
    if to > from {
        let sql = format!(
            "INSERT INTO vantage_rollups (channel, vantage, day, judged, successful, errors, pending) \
             SELECT channel, vantage, (created_at / {DAY_MS}) * {DAY_MS} AS day, {} \
             FROM probes WHERE created_at >= $1 AND created_at < $2 AND vantage IS NOT NULL \
             GROUP BY channel, vantage, day \
             ON CONFLICT (channel, vantage, day) DO UPDATE SET judged = excluded.judged, \
               successful = excluded.successful, errors = excluded.errors, pending = excluded.pending",
            vantage_count_columns()
        );
        tx.execute(&sql, &[&from, &to]).await.map_err(pgerr)?;
    }
    if rolled.is_none_or(|r| r < to) {
        set_meta_i64(tx, VANTAGES_ROLLED_THROUGH, to).await?;
    }
    Ok(())
}

/// What a slimmed success keeps of the server's reply: the queue id, when it names one.
fn slim_reply(reply: Option<String>) -> Option<String> {
    let reply = reply?;
    Some(match queue_id(&reply) {
        Some(id) => format!("id={id}"),
        None => reply.chars().take(40).collect(),
    })
}

fn who(channel: &Option<String>, owner: &Option<String>) -> String {
    match (channel, owner) {
        (Some(c), _) => format!("channel {c}"),
        (None, Some(o)) => format!("owner {o}"),
        (None, None) => "nothing".to_string(),
    }
}

impl PostgresStore {
    pub(super) async fn report_incidents_between(&self, from: Millis, to: Millis) -> StoreResult<Vec<Incident>> {
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE opened_at < $2 \
             AND (resolved_at IS NULL OR resolved_at >= $1) ORDER BY opened_at, id"
        );
        self.query_all(&sql, &[&from, &to], row_to_incident).await
    }

    /// The pages of the given incidents, in the order written.
    pub(super) async fn report_pages_of(&self, incident_ids: &[i64]) -> StoreResult<Vec<PageRecord>> {
        let sql = format!("SELECT {PAGE_COLUMNS} FROM outbox WHERE incident_id = ANY($1::bigint[]) ORDER BY id");
        self.query_all(&sql, &[&incident_ids.to_vec()], row_to_page).await
    }

    pub(super) async fn report_daily_counts(
        &self,
        channels: &[String],
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<DayCounts>> {
        let mut c = self.client().await?;
        // One snapshot: the rolled-up mark and the counts agree.
        let tx = Self::snapshot(&mut c).await?;
        let out = merged_counts(&tx, channels, from, to).await?;
        tx.commit().await.map_err(pgerr)?;
        Ok(out)
    }

    pub(super) async fn report_vantage_counts(
        &self,
        channels: &[String],
        from: Millis,
        to: Millis,
    ) -> StoreResult<Vec<VantageCounts>> {
        let mut c = self.client().await?;
        // One snapshot: the mark and the rows agree.
        let tx = Self::snapshot(&mut c).await?;
        let rolled = meta_i64(&tx, VANTAGES_ROLLED_THROUGH).await?.unwrap_or(i64::MIN);
        let (whole, live) = vantage_ranges(from, to, rolled);
        let list = channel_list(channels);
        let mut parts = Vec::new();
        if let Some((a, b)) = whole {
            parts.push((
                "SELECT channel, vantage, SUM(judged)::BIGINT, SUM(successful)::BIGINT, SUM(errors)::BIGINT, \
                   SUM(pending)::BIGINT \
                 FROM vantage_rollups WHERE day >= $1 AND day < $2 \
                   AND ($3::text[] IS NULL OR channel = ANY($3::text[])) \
                 GROUP BY channel, vantage"
                    .to_string(),
                a,
                b,
            ));
        }
        for (a, b) in live {
            parts.push((
                format!(
                    "SELECT channel, vantage, {} \
                     FROM probes WHERE created_at >= $1 AND created_at < $2 AND vantage IS NOT NULL \
                       AND ($3::text[] IS NULL OR channel = ANY($3::text[])) \
                     GROUP BY channel, vantage",
                    vantage_count_columns()
                ),
                a,
                b,
            ));
        }
        let mut sum: BTreeMap<(String, String), VantageCounts> = BTreeMap::new();
        for (sql, a, b) in parts {
            for r in tx.query(&sql, &[&a, &b, &list]).await.map_err(pgerr)? {
                add_vantage_counts(
                    &mut sum,
                    VantageCounts {
                        channel: get(&r, 0)?,
                        vantage: get(&r, 1)?,
                        judged: get(&r, 2)?,
                        successful: get(&r, 3)?,
                        errors: get(&r, 4)?,
                        pending: get(&r, 5)?,
                    },
                );
            }
        }
        tx.commit().await.map_err(pgerr)?;
        Ok(sum.into_values().collect())
    }

    pub(super) async fn report_roll_up(&self, from: Millis, to: Millis) -> StoreResult<i64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pgerr)?;
        self.check_fence(&tx).await?;
        let n = roll_up(&tx, from, to).await?;
        tx.commit().await.map_err(pgerr)?;
        Ok(n)
    }

    /// Every channel that has probes, by seeking the channel index once per
    /// channel (not by scanning it).
    async fn probe_channels(&self) -> StoreResult<Vec<String>> {
        self.query_all(
            "WITH RECURSIVE ch(name) AS (SELECT MIN(channel) FROM probes \
             UNION ALL SELECT (SELECT MIN(channel) FROM probes WHERE channel > ch.name) FROM ch \
             WHERE ch.name IS NOT NULL) \
             SELECT name FROM ch WHERE name IS NOT NULL",
            &[],
            |r| get(r, 0),
        )
        .await
    }

    pub(super) async fn report_prune(&self, cut: &PruneCut) -> StoreResult<PruneStats> {
        let mut stats = PruneStats::default();
        let channels = self.probe_channels().await?;
        let mut c = self.client().await?;
        if let Some(before) = cut.probes_before.map(day_start) {
            // Roll up every day about to lose probes, and freeze those
            // rollups, in one transaction before anything is removed.
            {
                let tx = c.transaction().await.map_err(pgerr)?;
                self.check_fence(&tx).await?;
                let oldest: Option<i64> = get(
                    &tx.query_one("SELECT MIN(created_at) FROM probes", &[])
                        .await
                        .map_err(pgerr)?,
                    0,
                )?;
                if let Some(oldest) = oldest.filter(|&o| o < before) {
                    roll_up(&tx, oldest, before).await?;
                }
                if meta_i64(&tx, PRUNED_BEFORE).await?.is_none_or(|p| p < before) {
                    set_meta_i64(&tx, PRUNED_BEFORE, before).await?;
                }
                tx.commit().await.map_err(pgerr)?;
            }
            let pick = format!(
                "SELECT p.id FROM probes p WHERE p.channel = $1 AND p.created_at < $2 AND NOT ({KEEP}) LIMIT {CHUNK}"
            );
            for ch in &channels {
                loop {
                    let tx = c.transaction().await.map_err(pgerr)?;
                    self.check_fence(&tx).await?;
                    let ids: Vec<String> = tx
                        .query(&pick, &[ch, &before])
                        .await
                        .map_err(pgerr)?
                        .iter()
                        .map(|r| get(r, 0))
                        .collect::<StoreResult<_>>()?;
                    if !ids.is_empty() {
                        tx.execute("DELETE FROM probe_events WHERE probe_id = ANY($1::text[])", &[&ids])
                            .await
                            .map_err(pgerr)?;
                        tx.execute("DELETE FROM retain_checks WHERE probe_id = ANY($1::text[])", &[&ids])
                            .await
                            .map_err(pgerr)?;
                        let n = tx
                            .execute("DELETE FROM probes WHERE id = ANY($1::text[])", &[&ids])
                            .await
                            .map_err(pgerr)?;
                        stats.probes_removed += i64::try_from(n).unwrap_or(i64::MAX);
                    }
                    tx.commit().await.map_err(pgerr)?;
                    if ids.is_empty() {
                        break;
                    }
                }
            }
            stats.probes_kept_for_incidents = get(
                &c.query_one(
                    "SELECT COUNT(*) FROM probes WHERE created_at < $1 AND verdict <> 'pending'",
                    &[&before],
                )
                .await
                .map_err(pgerr)?,
                0,
            )?;
        }
        if let Some(before) = cut.rollups_before {
            let tx = c.transaction().await.map_err(pgerr)?;
            self.check_fence(&tx).await?;
            let n = tx
                .execute("DELETE FROM rollups WHERE day < $1", &[&before])
                .await
                .map_err(pgerr)?
                + tx.execute("DELETE FROM vantage_rollups WHERE day < $1", &[&before])
                    .await
                    .map_err(pgerr)?;
            tx.commit().await.map_err(pgerr)?;
            stats.rollups_removed = i64::try_from(n).unwrap_or(i64::MAX);
        }
        // Slim the successes created since the last run's mark (a day
        // earlier, for those judged late): the evidence trail goes, and so do
        // the columns a success does not need (detail, target, run id, and
        // the token when it is `pc-` + the id); the reply keeps its queue id. The verdict is not touched, so the
        // channel summary's trigger does not fire.
        let ok = successes();
        let since = {
            let tx = c.transaction().await.map_err(pgerr)?;
            let m = meta_i64(&tx, SLIMMED_BEFORE).await?;
            tx.commit().await.map_err(pgerr)?;
            m.map_or(i64::MIN, |m| m - DAY_MS)
        };
        let pick = format!(
            "SELECT p.id, p.smtp_reply FROM probes p WHERE p.channel = $1 AND p.created_at >= $2 \
             AND p.created_at < $3 AND p.handled AND p.verdict IN ({ok}) AND p.run_id <> '' \
             AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.opened_by = p.id) \
             AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.resolved_by = p.id) LIMIT {CHUNK}"
        );
        for ch in &channels {
            loop {
                let tx = c.transaction().await.map_err(pgerr)?;
                self.check_fence(&tx).await?;
                let rows = tx.query(&pick, &[ch, &since, &cut.slim_before]).await.map_err(pgerr)?;
                let mut ids = Vec::with_capacity(rows.len());
                let mut replies = Vec::with_capacity(rows.len());
                for r in &rows {
                    ids.push(get::<String>(r, 0)?);
                    replies.push(slim_reply(get(r, 1)?));
                }
                if !ids.is_empty() {
                    tx.execute("DELETE FROM probe_events WHERE probe_id = ANY($1::text[])", &[&ids])
                        .await
                        .map_err(pgerr)?;
                    let n = tx
                        .execute(
                            "UPDATE probes p SET target = '', run_id = '', detail = NULL, smtp_reply = v.reply, \
                             token = CASE WHEN p.token = 'pc-' || p.id THEN '' ELSE p.token END \
                             FROM unnest($1::text[], $2::text[]) AS v(id, reply) WHERE p.id = v.id",
                            &[&ids, &replies],
                        )
                        .await
                        .map_err(pgerr)?;
                    stats.probes_slimmed += i64::try_from(n).unwrap_or(i64::MAX);
                }
                tx.commit().await.map_err(pgerr)?;
                if ids.is_empty() {
                    break;
                }
            }
        }
        let tx = c.transaction().await.map_err(pgerr)?;
        self.check_fence(&tx).await?;
        if meta_i64(&tx, SLIMMED_BEFORE).await?.is_none_or(|m| m < cut.slim_before) {
            set_meta_i64(&tx, SLIMMED_BEFORE, cut.slim_before).await?;
        }
        tx.commit().await.map_err(pgerr)?;
        Ok(stats)
    }

    pub(super) async fn report_blind_started(
        &self,
        watcher: &str,
        inbox: &str,
        since: Millis,
        why: &str,
    ) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "INSERT INTO watcher_blind (watcher, inbox, since, why) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (watcher) WHERE until IS NULL DO UPDATE SET why = excluded.why",
            &[&watcher, &inbox, &since, &why],
        )
        .await
        .map_err(pgerr)
        .map(|_| ())
    }

    pub(super) async fn report_blind_ended(&self, watcher: &str, at: Millis) -> StoreResult<()> {
        let c = self.client().await?;
        c.execute(
            "UPDATE watcher_blind SET until = GREATEST($2, since) WHERE watcher = $1 AND until IS NULL",
            &[&watcher, &at],
        )
        .await
        .map_err(pgerr)
        .map(|_| ())
    }

    pub(super) async fn report_blind_spells(&self, from: Millis, to: Millis) -> StoreResult<Vec<BlindSpell>> {
        self.query_all(
            "SELECT watcher, inbox, since, until, why FROM watcher_blind \
             WHERE since < $2 AND (until IS NULL OR until > $1) ORDER BY since, seq",
            &[&from, &to],
            |r| {
                Ok(BlindSpell {
                    watcher: get(r, 0)?,
                    inbox: get(r, 1)?,
                    since: get(r, 2)?,
                    until: get(r, 3)?,
                    why: get(r, 4)?,
                })
            },
        )
        .await
    }

    // --- operating it (issue 15)

    pub(super) async fn ops_acknowledge(&self, ack: &Acknowledgement) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pgerr)?;
        self.check_fence(&tx).await?;
        let Some(row) = tx
            .query_opt(
                "UPDATE incidents SET acknowledged_at = $2, acknowledged_by = $3 \
                 WHERE id = $1 AND resolved_at IS NULL AND acknowledged_at IS NULL RETURNING channel",
                &[&ack.incident_id, &ack.at, &ack.by],
            )
            .await
            .map_err(pgerr)?
        else {
            return Ok(false);
        };
        let channel: String = get(&row, 0)?;
        let detail = if ack.note.is_empty() {
            format!("acknowledged by {}", ack.by)
        } else {
            format!("acknowledged by {}: {}", ack.by, ack.note)
        };
        incident_event(&tx, ack.incident_id, ack.at, "acknowledged", &detail).await?;
        enqueue(&tx, ack.incident_id, ack.at, &ack.pages).await?;
        audit_target(
            &tx,
            ack.at,
            &ack.by,
            "acknowledge",
            &format!("incident {} ({channel})", ack.incident_id),
            &ack.note,
        )
        .await?;
        tx.commit().await.map_err(pgerr)?;
        Ok(true)
    }

    pub(super) async fn ops_add_silence(&self, s: &NewSilence) -> StoreResult<i64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pgerr)?;
        self.check_fence(&tx).await?;
        let row = tx
            .query_one(
                "INSERT INTO silences (channel, owner, from_at, until, reason, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                &[&s.channel, &s.owner, &s.from, &s.until, &s.reason, &s.by, &s.at],
            )
            .await
            .map_err(pgerr)?;
        let id: i64 = get(&row, 0)?;
        let target = format!(
            "silence {id}: {} until {}",
            who(&s.channel, &s.owner),
            crate::page::rfc3339(s.until)
        );
        audit_target(&tx, s.at, &s.by, "silence", &target, &s.reason).await?;
        tx.commit().await.map_err(pgerr)?;
        Ok(id)
    }

    pub(super) async fn ops_end_silence(&self, id: i64, by: &str, reason: &str, at: Millis) -> StoreResult<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pgerr)?;
        self.check_fence(&tx).await?;
        let Some(row) = tx
            .query_opt(
                "UPDATE silences SET ended_at = $2, ended_by = $3 WHERE id = $1 AND ended_at IS NULL \
                 RETURNING channel, owner",
                &[&id, &at, &by],
            )
            .await
            .map_err(pgerr)?
        else {
            return Ok(false);
        };
        let (channel, owner): (Option<String>, Option<String>) = (get(&row, 0)?, get(&row, 1)?);
        let target = format!("silence {id}: {}", who(&channel, &owner));
        audit_target(&tx, at, by, "end-silence", &target, reason).await?;
        tx.commit().await.map_err(pgerr)?;
        Ok(true)
    }

    pub(super) async fn ops_silences(
        &self,
        active_at: Option<Millis>,
        limit: usize,
    ) -> StoreResult<Vec<SilenceRecord>> {
        match active_at {
            Some(t) => {
                let sql = format!(
                    "SELECT {SILENCE_COLUMNS} FROM silences WHERE until > $1 AND from_at <= $1 \
                     AND (ended_at IS NULL OR ended_at > $1) ORDER BY id DESC LIMIT $2"
                );
                self.query_all(&sql, &[&t, &limit_arg(limit)], row_to_silence).await
            }
            None => {
                let sql = format!("SELECT {SILENCE_COLUMNS} FROM silences ORDER BY id DESC LIMIT $1");
                self.query_all(&sql, &[&limit_arg(limit)], row_to_silence).await
            }
        }
    }

    pub(super) async fn ops_add_audit(
        &self,
        at: Millis,
        actor: &str,
        action: &str,
        target: &str,
        reason: &str,
    ) -> StoreResult<i64> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(pgerr)?;
        let id = audit_target(&tx, at, actor, action, target, reason).await?;
        tx.commit().await.map_err(pgerr)?;
        Ok(id)
    }

    pub(super) async fn ops_audit_log(&self, before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        self.query_all(
            "SELECT id, at, actor, action, target, reason FROM audit WHERE id < $1 ORDER BY id DESC LIMIT $2",
            &[&before.unwrap_or(i64::MAX), &limit_arg(limit)],
            row_to_audit,
        )
        .await
    }

    // --- readers at scale (issue 20)

    pub(super) async fn ops_probes_before(
        &self,
        channel: &str,
        before: Option<(Millis, String)>,
        limit: usize,
    ) -> StoreResult<Vec<ProbeRecord>> {
        let sql = format!(
            "SELECT {PROBE_COLUMNS} FROM probes WHERE channel = $1 \
             AND ($2::bigint IS NULL OR (created_at, id) < ($2::bigint, $3::text)) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        );
        let (at, id) = match before {
            Some((at, id)) => (Some(at), id),
            None => (None, String::new()),
        };
        self.query_all(&sql, &[&channel, &at, &id, &limit_arg(limit)], row_to_probe)
            .await
    }

    pub(super) async fn ops_outbox_states(&self) -> StoreResult<Vec<OutboxState>> {
        self.query_all(
            "SELECT notifier, \
               COUNT(*) FILTER (WHERE state = 'pending'), \
               COUNT(*) FILTER (WHERE state = 'pending' AND attempts > 0), \
               COUNT(*) FILTER (WHERE state = 'failed'), \
               MIN(created_at) FILTER (WHERE state = 'pending'), \
               (SELECT o2.last_error FROM outbox o2 WHERE o2.notifier = o.notifier AND o2.last_error IS NOT NULL \
                  AND o2.state <> 'sent' ORDER BY o2.id DESC LIMIT 1), \
               MAX(sent_at) \
             FROM outbox o GROUP BY notifier ORDER BY notifier COLLATE \"C\"",
            &[],
            |r| {
                Ok(OutboxState {
                    notifier: get(r, 0)?,
                    queued: get(r, 1)?,
                    failing: get(r, 2)?,
                    given_up: get(r, 3)?,
                    oldest_queued_at: get(r, 4)?,
                    last_error: get(r, 5)?,
                    last_sent_at: get(r, 6)?,
                })
            },
        )
        .await
    }

    pub(super) async fn ops_channel_latest(&self) -> StoreResult<Vec<ChannelLatest>> {
        self.query_all(
            "SELECT p.channel, p.id, p.created_at, p.judged_at, p.verdict, p.latency_ms, p.detail \
             FROM channel_latest l JOIN probes p ON p.id = l.probe_id ORDER BY p.channel COLLATE \"C\"",
            &[],
            |r| {
                let verdict: String = get(r, 4)?;
                Ok(ChannelLatest {
                    channel: get(r, 0)?,
                    probe_id: get(r, 1)?,
                    created_at: get(r, 2)?,
                    judged_at: get(r, 3)?,
                    verdict: verdict
                        .parse()
                        .map_err(|e: String| StoreError(format!("probe row with a bad verdict: {e}")))?,
                    latency_ms: get(r, 5)?,
                    detail: get(r, 6)?,
                })
            },
        )
        .await
    }

    pub(super) async fn ops_channel_days(
        &self,
        channels: &[String],
        from_day: i64,
    ) -> StoreResult<Vec<(String, i64, i64)>> {
        let ok = successes();
        let sql = format!(
            "SELECT channel, COALESCE(SUM(n), 0)::bigint, \
               COALESCE(SUM(n) FILTER (WHERE verdict IN ({ok})), 0)::bigint \
             FROM channel_days WHERE channel = ANY($1::text[]) AND day >= $2 \
             GROUP BY channel ORDER BY channel COLLATE \"C\""
        );
        self.query_all(&sql, &[&channels.to_vec(), &from_day], |r| {
            Ok((get(r, 0)?, get(r, 1)?, get(r, 2)?))
        })
        .await
    }
}

/// The counts of the status page's 7- and 30-day windows (whole UTC days,
/// today included), per channel, read like [`merged_counts`].
pub(super) async fn day_windows(
    tx: &Transaction<'_>,
    channels: &[String],
    now: Millis,
) -> StoreResult<std::collections::HashMap<String, [(i64, i64); 2]>> {
    let today = day_start(now);
    let mut windows: std::collections::HashMap<String, [(i64, i64); 2]> = std::collections::HashMap::new();
    if channels.is_empty() {
        return Ok(windows);
    }
    for d in merged_counts(tx, channels, today - 29 * DAY_MS, today + DAY_MS).await? {
        let w = windows.entry(d.channel).or_default();
        if d.day >= today - 6 * DAY_MS {
            w[0] = (w[0].0 + d.judged, w[0].1 + d.successful);
        }
        w[1] = (w[1].0 + d.judged, w[1].1 + d.successful);
    }
    Ok(windows)
}
