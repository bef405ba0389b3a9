//! The ledger reads behind `/metrics` (issue 20) on SQLite and on a real
//! PostgreSQL: verdict events in the order written (corrections included),
//! read from a watermark; each channel's newest judged probe; the pending
//! count. Also the cost that matters at scale: a scrape reads what is new,
//! not the ledger's history.

mod support;

use std::sync::Arc;

use postcanary::config::Expect;
use postcanary::ledger::{postgres::PostgresStore, sqlite::SqliteStore, DynStore, NewProbe};
use postcanary::verdict::{now_millis, Judgement, Verdict};

async fn probe(s: &DynStore, id: &str, channel: &str, created_at: i64) {
    s.insert_probe(&NewProbe {
        id: id.into(),
        token: format!("pc-{id}"),
        channel: channel.into(),
        kind: "mail".into(),
        expect: Expect::Deliver,
        inbox: Some("social".into()),
        target: "x@kommune.example".into(),
        created_at,
        deadline: created_at + 10_000,
        run_id: "other-run".into(),
    })
    .await
    .unwrap();
    s.record_sent(id, created_at + 10, "250 2.0.0 Ok").await.unwrap();
}

fn judgement(verdict: Verdict, at: i64, latency_ms: Option<i64>) -> Judgement {
    Judgement {
        verdict,
        detail: format!("{verdict} for the test"),
        at,
        found: None,
        latency_ms,
        fault: None,
    }
}

/// The reads on one (empty) ledger. Every time lies a minute or more in the
/// past (PostgreSQL holds back events younger than a few seconds).
async fn reads_for_metrics(s: DynStore) {
    let t = now_millis() - 600_000;
    assert_eq!(s.last_event_seq().await.unwrap(), 0, "an empty ledger");
    assert!(s.verdict_events(0, 100).await.unwrap().is_empty());

    probe(&s, "a1", "chan-a", t).await;
    probe(&s, "a2", "chan-a", t + 1_000).await;
    probe(&s, "a3", "chan-a", t + 2_000).await;
    probe(&s, "b1", "chan-b", t).await;
    assert_eq!(s.pending_count().await.unwrap(), 4);
    let before = s.last_event_seq().await.unwrap();
    assert!(before > 0, "created and sent events are numbered too");
    assert!(
        s.verdict_events(before, 100).await.unwrap().is_empty(),
        "no verdict yet"
    );

    assert!(s
        .judge("a1", &judgement(Verdict::Delivered, t + 1_300, Some(1_290)))
        .await
        .unwrap());
    assert!(s.judge("b1", &judgement(Verdict::Error, t + 500, None)).await.unwrap());
    // a2 and a3 pass their deadline unseen: the sweeper calls them missed.
    let swept = s.sweep(t + 60_000, "this-run").await.unwrap();
    assert_eq!(swept.len(), 2);
    // a2 turns up after all: a correction is a further event.
    assert!(s
        .judge("a2", &judgement(Verdict::Late, t + 70_000, Some(69_000)))
        .await
        .unwrap());
    assert_eq!(s.pending_count().await.unwrap(), 0);

    let events = s.verdict_events(before, 100).await.unwrap();
    let seen: Vec<(&str, Verdict, Option<i64>)> = events
        .iter()
        .map(|e| (e.channel.as_str(), e.verdict, e.latency_ms))
        .collect();
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!(seen[0], ("chan-a", Verdict::Delivered, Some(1_290)));
    assert_eq!(seen[1], ("chan-b", Verdict::Error, None));
    let mut swept_events: Vec<_> = seen[2..4].to_vec();
    swept_events.sort_by_key(|e| e.0);
    assert_eq!(
        swept_events,
        vec![("chan-a", Verdict::Missed, None), ("chan-a", Verdict::Missed, None)]
    );
    // Only a delivered verdict carries a latency (late keeps its own in the probe).
    assert_eq!(seen[4], ("chan-a", Verdict::Late, None));
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "in the order written");
    assert_eq!(events[0].at, t + 1_300);
    assert_eq!(events[0].created_at, t);

    // From a watermark, and at most `limit`.
    let rest = s.verdict_events(events[1].seq, 100).await.unwrap();
    assert_eq!(rest.len(), 3);
    assert_eq!(rest[0].seq, events[2].seq);
    let two = s.verdict_events(before, 2).await.unwrap();
    assert_eq!(two, events[..2].to_vec());
    assert!(s.last_event_seq().await.unwrap() >= events[4].seq);

    // The newest judged probe per channel, by creation: a3 (missed), not
    // a2 whose correction came last; b1; none for a channel without probes.
    probe(&s, "a4", "chan-a", t + 3_000).await; // pending: not a verdict
    let latest = s
        .latest_verdicts(&["chan-a".into(), "chan-b".into(), "chan-c".into()])
        .await
        .unwrap();
    let latest: Vec<(&str, Verdict, i64)> = latest
        .iter()
        .map(|l| (l.channel.as_str(), l.verdict, l.created_at))
        .collect();
    assert_eq!(
        latest,
        vec![("chan-a", Verdict::Missed, t + 2_000), ("chan-b", Verdict::Error, t)]
    );
    assert_eq!(s.pending_count().await.unwrap(), 1);
}

#[tokio::test]
async fn sqlite_in_memory_serves_the_metrics_reads() {
    reads_for_metrics(Arc::new(SqliteStore::in_memory().unwrap())).await;
}

#[tokio::test]
async fn sqlite_file_serves_the_metrics_reads_on_its_reader_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let s: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());
    reads_for_metrics(Arc::clone(&s)).await;
    // The reader sees what the writer committed, at once.
    probe(&s, "z1", "chan-z", now_millis() - 60_000).await;
    assert!(s
        .judge("z1", &judgement(Verdict::Delivered, now_millis() - 59_000, Some(900)))
        .await
        .unwrap());
    let latest = s.latest_verdicts(&["chan-z".into()]).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(latest[0].verdict, Verdict::Delivered);
}

/// A scrape reads what is new: with 200,000 judged probes in the ledger,
/// reading the verdicts after the watermark takes a few milliseconds, and
/// the newest verdict of 2,000 channels one seek each.
#[tokio::test]
async fn sqlite_metrics_reads_do_not_grow_with_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    {
        // History written in bulk, as months of probes would have left it.
        let s = SqliteStore::open(&path).await.unwrap();
        drop(s);
        let mut c = rusqlite::Connection::open(&path).unwrap();
        let tx = c.transaction().unwrap();
        let t = now_millis() - 30 * 86_400_000;
        for i in 0..200_000i64 {
            let id = format!("h{i:08}");
            let ch = format!("c{}", i % 2_000);
            tx.execute(
                "INSERT INTO probes (id, token, channel, kind, expect, inbox, target, run_id, created_at, deadline, \
                 verdict, judged_at, latency_ms) VALUES (?1, ?2, ?3, 'mail', 'deliver', 'social', 'x', 'r', ?4, ?5, \
                 'delivered', ?6, 900)",
                rusqlite::params![
                    id,
                    format!("pc-{id}"),
                    ch,
                    t + i * 13,
                    t + i * 13 + 120_000,
                    t + i * 13 + 900
                ],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO probe_events (probe_id, at, kind, detail) VALUES (?1, ?2, 'verdict', 'delivered: ok')",
                rusqlite::params![id, t + i * 13 + 900],
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let s: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap());
    let mark = s.last_event_seq().await.unwrap();
    assert_eq!(mark, 200_000);
    probe(&s, "new1", "c7", now_millis() - 60_000).await;
    assert!(s
        .judge("new1", &judgement(Verdict::Delivered, now_millis() - 59_000, Some(800)))
        .await
        .unwrap());

    let started = std::time::Instant::now();
    let events = s.verdict_events(mark, 10_000).await.unwrap();
    let incremental = started.elapsed();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].channel, "c7");

    let channels: Vec<String> = (0..2_000).map(|i| format!("c{i}")).collect();
    let started = std::time::Instant::now();
    let latest = s.latest_verdicts(&channels).await.unwrap();
    let seeks = started.elapsed();
    assert_eq!(latest.len(), 2_000);
    assert!(latest.iter().all(|l| l.verdict == Verdict::Delivered));

    // Generous bounds (a debug build on a loaded 2-core machine): a pass over
    // the 200,000 rows takes far longer than either.
    assert!(
        incremental.as_millis() < 200,
        "verdicts after the mark took {incremental:?}"
    );
    assert!(seeks.as_millis() < 2_000, "2,000 channel seeks took {seeks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_serves_the_metrics_reads() {
    let pg = support::postgres::Postgres::start();
    pg.create_db("metrics");
    let s: DynStore = Arc::new(PostgresStore::open(&pg.ledger_db("metrics")).await.unwrap());
    reads_for_metrics(s).await;
}
