//! The ledger with a month of history (issue 20): what is asked once per
//! verdict (`channel_order`, for incident order) must not walk a channel's
//! history, or 50,000 channels every 5 minutes would not keep up.

use std::sync::Arc;

use postcanary::ledger::{sqlite::SqliteStore, DynStore};
use postcanary::verdict::now_millis;

/// 30 days of probes every 5 minutes for one channel, all delivered, one
/// missed a week ago (handled) and one missed just now (not handled yet);
/// a second channel that never failed.
fn history(path: &std::path::Path) -> (i64, i64) {
    let mut c = rusqlite::Connection::open(path).unwrap();
    let tx = c.transaction().unwrap();
    let t0 = now_millis() - 30 * 86_400_000;
    let n = 30 * 288;
    let (mut newest_ok, mut handled_miss) = (0, 0);
    for ch in ["busy", "healthy"] {
        for i in 0..n {
            let at = t0 + i * 300_000;
            let verdict = match (ch, i) {
                ("busy", i) if i == n - 7 * 288 => "missed",
                ("busy", i) if i == n - 1 => "missed",
                _ => "delivered",
            };
            let handled = i != n - 1;
            if ch == "busy" && verdict == "delivered" {
                newest_ok = at;
            }
            if ch == "busy" && verdict == "missed" && handled {
                handled_miss = at;
            }
            let id = format!("{ch}-{i:06}");
            tx.execute(
                "INSERT INTO probes (id, token, channel, kind, expect, inbox, target, run_id, created_at, deadline, \
                 verdict, judged_at, handled) VALUES (?1, ?2, ?3, 'mail', 'deliver', 'social', 'x', 'r', ?4, ?5, ?6, ?7, ?8)",
                rusqlite::params![id, format!("pc-{id}"), ch, at, at + 120_000, verdict, at + 900, handled],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    (newest_ok, handled_miss)
}

#[tokio::test]
async fn channel_order_is_a_seek_not_a_walk_through_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(SqliteStore::open(&path).await.unwrap());
    let (newest_ok, handled_miss) = history(&path);
    let s: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());

    assert_eq!(
        s.channel_order("busy").await.unwrap(),
        (Some(newest_ok), Some(handled_miss)),
        "the newest success, and the newest failure already handled (not the one still waiting)"
    );
    let (ok, failure) = s.channel_order("healthy").await.unwrap();
    assert!(ok.is_some());
    assert_eq!(failure, None, "a channel that never failed");
    assert_eq!(s.channel_order("unknown").await.unwrap(), (None, None));

    // The plan: the newest failure through the failing probes' index, the
    // newest success by walking the channel index from its newest probe.
    let c = rusqlite::Connection::open(&path).unwrap();
    let plan: Vec<String> = c
        .prepare(
            "EXPLAIN QUERY PLAN SELECT created_at FROM probes INDEXED BY probes_channel_failing \
             WHERE channel = ?1 AND verdict IN ('late', 'missed', 'bounced', 'rejected', 'misrouted', 'junked') \
             AND handled = 1 ORDER BY created_at DESC LIMIT 1",
        )
        .unwrap()
        .query_map(["healthy"], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(plan.iter().any(|p| p.contains("probes_channel_failing")), "{plan:?}");
    assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "no sort: {plan:?}");

    // And the time: a thousand calls on 17,280 probes in well under the
    // time the walk took (about 6 ms a call).
    let started = std::time::Instant::now();
    for _ in 0..1_000 {
        s.channel_order("healthy").await.unwrap();
    }
    let per_call = started.elapsed() / 1_000;
    assert!(per_call.as_micros() < 2_000, "channel_order took {per_call:?} a call");
    println!("channel_order with a month of history: {per_call:?} a call");
}
