//! The reads behind `/metrics` on SQLite: what was judged since the last
//! scrape (a range of the events table's rowids) and each channel's newest
//! verdict (one seek of the channel index per channel). Neither scans the
//! ledger's history, so a scrape costs the same on the first day and the hundredth.

use rusqlite::{params, Connection, OptionalExtension};

use crate::ledger::{event_verdict, LatestVerdict, VerdictEvent};
use crate::verdict::Verdict;

pub(super) fn last_event_seq(c: &Connection) -> rusqlite::Result<i64> {
    c.query_row("SELECT COALESCE(MAX(rowid), 0) FROM probe_events", [], |r| r.get(0))
}

pub(super) fn verdict_events(c: &Connection, after: i64, limit: i64) -> rusqlite::Result<Vec<VerdictEvent>> {
    let mut stmt = c.prepare_cached(
        "SELECT e.rowid, p.channel, e.detail, p.created_at, e.at, p.latency_ms \
         FROM probe_events e JOIN probes p ON p.id = e.probe_id \
         WHERE e.rowid > ?1 AND e.kind = 'verdict' ORDER BY e.rowid LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after, limit], |r| {
        let detail: String = r.get(2)?;
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            event_verdict(&detail),
            r.get::<_, i64>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, Option<i64>>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, channel, verdict, created_at, at, latency_ms) = row?;
        // An event whose detail names no verdict (none such is written) is passed over.
        let Some(verdict) = verdict else { continue };
        out.push(VerdictEvent {
            seq,
            channel,
            verdict,
            created_at,
            at,
            latency_ms: latency_ms.filter(|_| verdict == Verdict::Delivered),
        });
    }
    Ok(out)
}

pub(super) fn latest_verdicts(c: &Connection, channels: &[String]) -> rusqlite::Result<Vec<LatestVerdict>> {
    // The newest judged creation time by walking the channel index backwards
    // (past the few pending probes), then the newest id among probes made
    // in that same millisecond: no sort of the channel's history.
    let mut stmt = c.prepare_cached(
        "SELECT verdict, created_at, COALESCE(judged_at, created_at) FROM probes \
         WHERE channel = ?1 AND verdict <> 'pending' AND created_at = \
           (SELECT created_at FROM probes WHERE channel = ?1 AND verdict <> 'pending' \
            ORDER BY created_at DESC LIMIT 1) \
         ORDER BY id DESC LIMIT 1",
    )?;
    let mut out = Vec::with_capacity(channels.len());
    for ch in channels {
        let row = stmt
            .query_row(params![ch], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
            .optional()?;
        if let Some((verdict, created_at, at)) = row {
            if let Ok(verdict) = verdict.parse::<Verdict>() {
                out.push(LatestVerdict {
                    channel: ch.clone(),
                    verdict,
                    created_at,
                    at,
                });
            }
        }
    }
    Ok(out)
}
