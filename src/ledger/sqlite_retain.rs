//! The SQLite side of retention canaries: the `retain_checks` rows.

use rusqlite::types::Value;
use rusqlite::{params, Row};

use super::{limit_arg, text, SqliteStore};
use crate::ledger::{NewRetainCheck, RetainCheck, RetainCounts, RetainResult, StoreResult};
use crate::verdict::Millis;

const COLUMNS: &str = "id, probe_id, channel, age, age_ms, due_at, next_at, state, checked_at, result, detail, \
     content_hash, attempts, fault_since";

fn row_to_check(r: &Row<'_>) -> rusqlite::Result<RetainCheck> {
    Ok(RetainCheck {
        id: r.get(0)?,
        probe_id: r.get(1)?,
        channel: r.get(2)?,
        age: r.get(3)?,
        age_ms: r.get(4)?,
        due_at: r.get(5)?,
        next_at: r.get(6)?,
        state: r.get(7)?,
        checked_at: r.get(8)?,
        result: r.get(9)?,
        detail: r.get(10)?,
        content_hash: r.get(11)?,
        attempts: r.get(12)?,
        fault_since: r.get(13)?,
    })
}

impl SqliteStore {
    pub(super) async fn retain_schedule_rows(&self, checks: Vec<NewRetainCheck>) -> StoreResult<()> {
        self.with(move |c| {
            let tx = c.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO retain_checks (probe_id, channel, age, age_ms, due_at, next_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT (probe_id, age_ms) DO NOTHING",
                )?;
                for k in &checks {
                    ins.execute(params![k.probe_id, k.channel, k.age, k.age_ms, k.due_at])?;
                }
            }
            tx.commit()
        })
        .await
    }

    pub(super) async fn retain_due_rows(&self, now: Millis, limit: usize) -> StoreResult<Vec<RetainCheck>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM retain_checks WHERE state = 'due' AND next_at <= ?1 ORDER BY next_at, id LIMIT ?2"
        );
        self.all(sql, vec![Value::Integer(now), limit_arg(limit)], row_to_check)
            .await
    }

    pub(super) async fn retain_next_row(&self) -> StoreResult<Option<Millis>> {
        self.with(|c| {
            c.query_row("SELECT MIN(next_at) FROM retain_checks WHERE state = 'due'", [], |r| {
                r.get(0)
            })
        })
        .await
    }

    pub(super) async fn retain_record_row(&self, id: i64, r: RetainResult) -> StoreResult<bool> {
        self.with(move |c| {
            let tx = c.transaction()?;
            let changed = tx.execute(
                "UPDATE retain_checks SET state = 'done', checked_at = ?2, result = ?3, detail = ?4, content_hash = ?5, \
                 fault_since = NULL WHERE id = ?1 AND state = 'due'",
                params![id, r.at, r.result, r.detail, r.content_hash],
            )?;
            if changed == 1 && r.result == "lost" {
                tx.execute(
                    "UPDATE retain_checks SET state = 'skipped', detail = 'the canary was lost at an earlier check' \
                     WHERE state = 'due' AND probe_id = (SELECT probe_id FROM retain_checks WHERE id = ?1) \
                     AND age_ms > (SELECT age_ms FROM retain_checks WHERE id = ?1)",
                    params![id],
                )?;
            }
            tx.commit()?;
            Ok(changed == 1)
        })
        .await
    }

    pub(super) async fn retain_fault_row(
        &self,
        id: i64,
        at: Millis,
        error: String,
        retry_at: Millis,
    ) -> StoreResult<()> {
        self.with(move |c| {
            c.execute(
                "UPDATE retain_checks SET attempts = attempts + 1, detail = ?2, next_at = MAX(?3, ?4), \
                 fault_since = COALESCE(fault_since, ?4) WHERE id = ?1 AND state = 'due'",
                params![id, error, retry_at, at],
            )
            .map(|_| ())
        })
        .await
    }

    pub(super) async fn retain_skip_row(&self, id: i64, at: Millis, reason: String) -> StoreResult<bool> {
        self.with(move |c| {
            c.execute(
                "UPDATE retain_checks SET state = 'skipped', detail = ?3, checked_at = ?2, fault_since = NULL \
                 WHERE id = ?1 AND state = 'due'",
                params![id, at, reason],
            )
            .map(|n| n == 1)
        })
        .await
    }

    pub(super) async fn retain_span_rows(
        &self,
        channel: &str,
        from: Millis,
        to: Millis,
        limit: usize,
    ) -> StoreResult<Vec<RetainCheck>> {
        let sql = format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM retain_checks WHERE channel = ?1 AND result = 'kept' \
             AND checked_at < ?2 ORDER BY checked_at DESC, id DESC LIMIT 1) \
             UNION ALL SELECT {COLUMNS} FROM retain_checks WHERE channel = ?1 AND checked_at >= ?2 \
             AND checked_at <= ?3 ORDER BY 9, 1 LIMIT ?4"
        );
        self.all(
            sql,
            vec![
                text(channel),
                Value::Integer(from),
                Value::Integer(to),
                limit_arg(limit),
            ],
            row_to_check,
        )
        .await
    }

    pub(super) async fn retain_probe_rows(&self, probe_id: &str) -> StoreResult<Vec<RetainCheck>> {
        let sql = format!("SELECT {COLUMNS} FROM retain_checks WHERE probe_id = ?1 ORDER BY age_ms");
        self.all(sql, vec![text(probe_id)], row_to_check).await
    }

    pub(super) async fn retain_channel_rows(&self, channel: &str, limit: usize) -> StoreResult<Vec<RetainCheck>> {
        let sql =
            format!("SELECT {COLUMNS} FROM retain_checks WHERE channel = ?1 ORDER BY due_at DESC, id DESC LIMIT ?2");
        self.all(sql, vec![text(channel), limit_arg(limit)], row_to_check).await
    }

    pub(super) async fn retain_count_rows(&self, from: Millis, to: Millis) -> StoreResult<Vec<RetainCounts>> {
        let sql = "SELECT channel, SUM(result = 'kept'), SUM(result = 'lost'), SUM(result = 'altered') \
                   FROM retain_checks WHERE checked_at >= ?1 AND checked_at < ?2 AND state = 'done' \
                   GROUP BY channel ORDER BY channel";
        self.all(sql.into(), vec![Value::Integer(from), Value::Integer(to)], |r| {
            Ok(RetainCounts {
                channel: r.get(0)?,
                kept: r.get(1)?,
                lost: r.get(2)?,
                altered: r.get(3)?,
            })
        })
        .await
    }
}
