//! Ledger size and report speed (issue 17).
//!
//! 1. Bytes per probe, written through the `Store` as the daemon writes
//!    them (row, evidence trail, verdict, handled mark): a successful probe
//!    as written, the same after slimming, and a failed (`missed`) probe,
//!    which keeps its full evidence. Measured as the growth of a vacuumed
//!    SQLite file over an empty one, divided by the number of probes.
//! 2. 30 simulated days of C channels probed every 5 minutes (0.5 % misses),
//!    with the daemon's daily retention run after each day
//!    (`keep_probes`, default 90d; `POSTCANARY_KEEP_DAYS`): the ledger's
//!    size at the end. The rows are written in bulk with the exact shape
//!    the store writes (to simulate a month in minutes); retention runs
//!    through the `Store`.
//! 3. `postcanary report` over those 30 days for all C channels (the
//!    figures as `report::gather` computes them), and the status page's
//!    channel windows (`Store::channel_status`).
//!
//! Channel ids are 20 characters long, about the mean of the example
//! config's (11 to 25); each character more costs a probe two bytes (the
//! row and the channel index).
//!
//! Run: `cargo bench --bench ledger_size` (POSTCANARY_REPORT_ONLY=1: part 3
//! only; POSTCANARY_BENCH_VANTAGE=NAME: part 3's probes carry that vantage;
//! POSTCANARY_BENCH_N: channels C,
//! default 1000; the CI smoke run uses 10).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postcanary::config::{Config, Expect, LedgerConfig};
use postcanary::ledger::{
    day_start, postgres::PostgresStore, sqlite::SqliteStore, DynStore, IncidentAction, IncidentChange, NewProbe,
    PruneCut, DAY_MS,
};
use postcanary::report::figures::Period;
use postcanary::verdict::{Found, Judgement, Verdict};

#[path = "../tests/support/mod.rs"]
#[allow(dead_code)]
mod support;

const CADENCE_MS: i64 = 300_000;
const DAYS: i64 = 30;
/// 2026-11-01T00:00:00Z.
const START: i64 = 1_793_491_200_000;

/// (bytes in use, file bytes) of a ledger after folding in the WAL.
fn sizes(path: &Path) -> (u64, u64) {
    let c = rusqlite::Connection::open(path).expect("open");
    let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    let pages: u64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).expect("pages");
    let free: u64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0)).expect("free");
    let size: u64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).expect("size");
    ((pages - free) * size, pages * size)
}

fn vacuumed(path: &Path) -> u64 {
    let c = rusqlite::Connection::open(path).expect("open");
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); VACUUM;")
        .expect("vacuum");
    drop(c);
    sizes(path).1
}

fn ulid(n: u64) -> String {
    ulid::Ulid::from_parts(START as u64 + n, u128::from(n) * 7_919).to_string()
}

/// Writes `n` probes through the store; `fail`: missed, else delivered.
async fn write_probes(store: &DynStore, n: u64, fail: bool, base: u64) {
    for i in 0..n {
        let id = ulid(base + i);
        let created = START + (i as i64) * 1_000;
        store
            .insert_probe(&NewProbe {
                id: id.clone(),
                token: format!("pc-{id}"),
                // Few channels, as in a ledger with many probes per channel:
                // each channel's own rows (its latest probe, its day's
                // counts) are not a probe's cost.
                channel: format!("social-mail-{:08}", i % 10),
                kind: "mail".into(),
                expect: Expect::Deliver,
                inbox: Some("social".into()),
                target: "socialogfamilie@kommune.example".into(),
                created_at: created,
                deadline: created + 900_000,
                run_id: ulid(1),
            })
            .await
            .expect("insert");
        store
            .record_sent(&id, created + 800, "250 2.0.0 Ok: queued as 4XyZ1Abc2Def")
            .await
            .expect("sent");
        let j = if fail {
            Judgement {
                verdict: Verdict::Missed,
                detail: "nothing arrived before the deadline".into(),
                at: created + 900_000,
                found: None,
                latency_ms: None,
                fault: None,
            }
        } else {
            Judgement {
                verdict: Verdict::Delivered,
                detail: "arrived in `social` after 1.2s".into(),
                at: created + 2_000,
                found: Some(Found {
                    inbox: "social".into(),
                    at: created + 2_000,
                }),
                latency_ms: Some(1_200),
                fault: None,
            }
        };
        store.judge(&id, &j).await.expect("judge");
        store
            .apply_incident(&IncidentChange {
                probe_id: Some(id),
                reclassify: None,
                action: IncidentAction::Nothing,
            })
            .await
            .expect("handled");
    }
}

/// Slims every success written so far (as the daily retention run does for
/// those older than a day).
async fn slim_all(store: &DynStore) {
    store
        .prune(&PruneCut {
            probes_before: None,
            rollups_before: None,
            slim_before: i64::MAX,
        })
        .await
        .expect("slim");
}

async fn per_probe(n: u64) -> (f64, f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.db");
    drop(SqliteStore::open(&empty).await.expect("open"));
    let base = vacuumed(&empty);

    let ok = dir.path().join("ok.db");
    let store: DynStore = Arc::new(SqliteStore::open(&ok).await.expect("open"));
    write_probes(&store, n, false, 0).await;
    let fresh = vacuumed(&ok);
    slim_all(&store).await;
    drop(store);
    let slim = vacuumed(&ok);
    if let Ok(keep) = std::env::var("POSTCANARY_KEEP_SLIM_DB") {
        let _ = std::fs::copy(&ok, keep);
    }

    let bad = dir.path().join("bad.db");
    let store: DynStore = Arc::new(SqliteStore::open(&bad).await.expect("open"));
    write_probes(&store, n, true, 1_000_000).await;
    drop(store);
    let failed = vacuumed(&bad);
    let per = |total: u64| (total.saturating_sub(base)) as f64 / n as f64;
    (per(fresh), per(slim), per(failed))
}

/// The bytes a database's tables take with their indexes and TOAST, after
/// `VACUUM FULL` (the compacted size, as SQLite's VACUUM gives; a live
/// ledger reuses the space of slimmed and pruned rows once autovacuum has
/// been by, so it stays near this).
fn pg_size(pg: &support::postgres::Postgres, db: &str) -> u64 {
    pg.psql_on(db, "VACUUM FULL");
    let out = pg.psql_on(
        db,
        "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c \
         WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace",
    );
    if std::env::var_os("POSTCANARY_PG_SIZES").is_some() {
        eprintln!(
            "{db}:\n{}",
            pg.psql_on(
                db,
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c \
                 WHERE c.relnamespace = 'public'::regnamespace AND pg_relation_size(c.oid) > 8192 ORDER BY 2 DESC",
            )
        );
    }
    out.trim().parse().expect("a size")
}

/// [`per_probe`] on a private PostgreSQL (Debian's package, as the tests
/// start it): the growth of the ledger's tables over an empty ledger's.
async fn per_probe_pg(n: u64) -> (f64, f64, f64) {
    let pg = support::postgres::Postgres::start();
    let open = |db: &'static str| {
        pg.create_db(db);
        let cfg = pg.ledger_db(db);
        async move {
            let s: DynStore = Arc::new(PostgresStore::open(&cfg).await.expect("open"));
            s
        }
    };
    drop(open("empty").await);
    let base = pg_size(&pg, "empty");
    let store = open("ok").await;
    write_probes(&store, n, false, 0).await;
    let fresh = pg_size(&pg, "ok");
    slim_all(&store).await;
    let slim = pg_size(&pg, "ok");
    drop(store);
    let store = open("bad").await;
    write_probes(&store, n, true, 1_000_000).await;
    let failed = pg_size(&pg, "bad");
    drop(store);
    let per = |total: u64| (total.saturating_sub(base)) as f64 / n as f64;
    (per(fresh), per(slim), per(failed))
}

/// Bulk-writes one simulated day of `channels` channels, in creation order.
fn write_day(c: &mut rusqlite::Connection, day: i64, channels: usize, seq: &mut u64, events: bool) {
    let tx = c.transaction().expect("tx");
    {
        let mut probe = tx
            .prepare_cached(
                "INSERT INTO probes (id, token, channel, kind, expect, inbox, target, run_id, created_at, sent_at, \
                 deadline, verdict, judged_at, found_in, found_at, latency_ms, detail, smtp_reply, handled) \
                 VALUES (?1, ?2, ?3, 'mail', 'deliver', 'social', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, 1)",
            )
            .expect("prepare");
        let mut event = tx
            .prepare_cached("INSERT INTO probe_events (probe_id, at, kind, detail) VALUES (?1, ?2, ?3, ?4)")
            .expect("prepare");
        let run = ulid(1);
        let slots = DAY_MS / CADENCE_MS;
        for slot in 0..slots {
            for ch in 0..channels {
                *seq += 1;
                let id = ulid(*seq);
                let created = day + slot * CADENCE_MS + (ch as i64 * 7_919) % CADENCE_MS;
                let fail = (*seq).is_multiple_of(200);
                let target = format!("ch{ch}@kommune.example");
                let reply = format!("250 2.0.0 Ok: queued as 4X{:010X}", *seq);
                let (verdict, judged, found_in, found_at, latency, detail) = if fail {
                    (
                        "missed",
                        created + 900_000,
                        None,
                        None,
                        None,
                        "nothing arrived before the deadline".to_string(),
                    )
                } else {
                    (
                        "delivered",
                        created + 2_000,
                        Some("social"),
                        Some(created + 2_000),
                        Some(1_200),
                        "arrived in `social` after 1.2s".to_string(),
                    )
                };
                probe
                    .execute(rusqlite::params![
                        id,
                        format!("pc-{id}"),
                        format!("social-mail-{ch:08}"),
                        target,
                        run,
                        created,
                        created + 800,
                        created + 900_000,
                        verdict,
                        judged,
                        found_in,
                        found_at,
                        latency,
                        detail,
                        reply
                    ])
                    .expect("probe");
                if !events {
                    continue;
                }
                let created_detail = format!("probe to {target} created, deadline in 900s");
                event
                    .execute(rusqlite::params![id, created, "created", created_detail])
                    .expect("event");
                event
                    .execute(rusqlite::params![id, created + 800, "sent", reply])
                    .expect("event");
                event
                    .execute(rusqlite::params![id, judged, "verdict", format!("{verdict}: {detail}")])
                    .expect("event");
            }
        }
    }
    tx.commit().expect("commit");
}

fn config_with(dir: &Path, channels: usize) -> Config {
    let mut toml = String::from(
        "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
         port = 2525\ntls = \"none\"\nfrom = \"canary@kommune.example\"\n\n[[inbox]]\nname = \"social\"\nkind = \"imap\"\n\
         host = \"127.0.0.1\"\nport = 1143\ntls = \"none\"\nusername = \"u\"\npassword = \"env:NEVER_SET\"\n",
    );
    for ch in 0..channels {
        toml.push_str(&format!(
            "\n[[channel]]\nid = \"social-mail-{ch:08}\"\nname = \"Channel {ch}\"\nowner = \"owner-{}\"\nkind = \"mail\"\n\
             to = \"ch{ch}@kommune.example\"\ninbox = \"social\"\n",
            ch % 20
        ));
    }
    let path = dir.join("postcanary.toml");
    std::fs::write(&path, toml).expect("config");
    Config::load_offline(&path).expect("config loads")
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn main() {
    let channels: usize = std::env::var("POSTCANARY_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    let keep_days: u64 = std::env::var("POSTCANARY_KEEP_DAYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(90);
    let small = channels < 100;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // POSTCANARY_REPORT_ONLY=1 skips part 1 and the month of part 2.
        let report_only = std::env::var("POSTCANARY_REPORT_ONLY").as_deref() == Ok("1");
        if !report_only {
        let n = if small { 200 } else { 5_000 };
        let (fresh, slim, failed) = per_probe(n).await;
        // Ten times more on PostgreSQL: its tables and indexes grow by 8 KiB
        // pages, and a few pages more or less are 1.6 bytes a probe at 5,000.
        let pg_n = if small { n } else { n * 10 };
        let (pg_fresh, pg_slim, pg_failed) = per_probe_pg(pg_n).await;
        println!("| probe | SQLite bytes per probe ({n} probes) | PostgreSQL bytes per probe ({pg_n} probes) |");
        println!("|---|---|---|");
        println!("| successful, as written | {fresh:.0} | {pg_fresh:.0} |");
        println!("| successful, slimmed (older than a day) | {slim:.0} | {pg_slim:.0} |");
        println!("| failed (missed), full evidence | {failed:.0} | {pg_failed:.0} |");
        if !small {
            assert!(slim <= 300.0, "a slimmed success costs {slim:.0} bytes on SQLite (target ≤ 300)");
            assert!(pg_slim <= 300.0, "a slimmed success costs {pg_slim:.0} bytes on PostgreSQL (target ≤ 300)");
        }
        }

        // 2. A simulated month with the daily retention, at a fifth of the
        // channels (the size is linear in them); POSTCANARY_SKIP_SIM=1 skips it.
        let sim_channels = (channels / 5).max(2);
        let skip_sim = report_only || std::env::var("POSTCANARY_SKIP_SIM").as_deref() == Ok("1");
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_with(dir.path(), sim_channels);
        let path = dir.path().join("ledger.db");
        let store: DynStore = Arc::new(SqliteStore::open(&path).await.expect("open"));
        let mut bulk = rusqlite::Connection::open(&path).expect("bulk");
        bulk.busy_timeout(Duration::from_secs(30)).expect("busy");
        let ledger = LedgerConfig {
            keep_probes: Some(Duration::from_secs(keep_days * 86_400)),
            ..config.ledger.clone()
        };
        let mut seq = 10_000_000u64;
        let (mut write_s, mut retention_s) = (0.0, 0.0);
        let sim_days = if skip_sim { 1 } else { DAYS };
        for d in 0..sim_days {
            let day = START + d * DAY_MS;
            let t = Instant::now();
            write_day(&mut bulk, day, sim_channels, &mut seq, true);
            write_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            postcanary::retention::run_once(&store, &ledger, day + DAY_MS + 3_600_000)
                .await
                .expect("retention");
            retention_s += t.elapsed().as_secs_f64();
            // The ledger's size as the month goes on: with pruning in reach
            // (POSTCANARY_KEEP_DAYS below 30) it levels off.
            if (d + 1) % 5 == 0 || d + 1 == sim_days {
                let (used, _) = sizes(&path);
                println!("  after day {:>2}: {:.1} MiB in use", d + 1, mib(used));
            }
        }
        let probes = (seq - 10_000_000) as f64;
        let (used, file) = sizes(&path);
        println!();
        println!(
            "{sim_days} day(s) × {sim_channels} channels every 5 min = {probes:.0} probes, keep_probes = {keep_days}d, daily \
             retention: ledger {:.1} MiB in use ({:.1} MiB file), {:.0} bytes per probe; retention {:.2} s a day \
             (debug build); bulk write {:.1} s",
            mib(used),
            mib(file),
            used as f64 / probes,
            retention_s / sim_days as f64,
            write_s
        );
        println!(
            "  at 10,000 channels (linear in channels): {:.1} GiB",
            used as f64 * 10_000.0 / sim_channels as f64 / (1024.0 * 1024.0 * 1024.0)
        );
        drop(bulk);
        drop(store);
        drop(dir);

        // 3. The report over 30 days of all channels, rolled up as the daemon does.
        let dir = tempfile::tempdir().expect("tempdir");
        let config = config_with(dir.path(), channels);
        let path = dir.path().join("ledger.db");
        let store: DynStore = Arc::new(SqliteStore::open(&path).await.expect("open"));
        let mut bulk = rusqlite::Connection::open(&path).expect("bulk");
        let mut seq = 50_000_000u64;
        for d in 0..DAYS {
            write_day(&mut bulk, START + d * DAY_MS, channels, &mut seq, false);
        }
        // POSTCANARY_BENCH_VANTAGE=NAME: every probe was sent by that vantage,
        // as in a deployment with `[vantage]`, so the report's per-vantage
        // counts have every probe of the period to read.
        let vantage = std::env::var("POSTCANARY_BENCH_VANTAGE").ok().filter(|v| !v.is_empty());
        if let Some(v) = &vantage {
            bulk.execute("UPDATE probes SET vantage = ?1", [v]).expect("vantage");
        }
        drop(bulk);
        let now = START + DAYS * DAY_MS - 1;
        let t = Instant::now();
        store.roll_up(START, day_start(now)).await.expect("roll up");
        let roll_s = t.elapsed().as_secs_f64();
        let period = Period {
            from: START,
            to: now,
            label: "since 30d".into(),
        };
        let t = Instant::now();
        let report = postcanary::report::gather(&store, &config, &[], &[], period.clone(), now)
            .await
            .expect("report");
        let report_s = t.elapsed().as_secs_f64();
        let judged: i64 = report.channels.iter().map(|c| c.summary.availability.judged).sum();
        assert!(judged > 0);
        if vantage.is_some() {
            assert_eq!(report.vantages.len(), 1, "one vantage in the report");
        }
        let t = Instant::now();
        let html = postcanary::report::html::report(&report);
        let html_s = t.elapsed().as_secs_f64();
        let ids: Vec<String> = config.channels.iter().map(|c| c.id.clone()).collect();
        let t = Instant::now();
        store.channel_status(&ids, now, 30).await.expect("status");
        let status_s = t.elapsed().as_secs_f64();
        println!(
            "report over 30 days × {channels} channels ({judged} judged probes; 29 days from rollups, the last \
             from probes): figures {report_s:.2} s, HTML {html_s:.2} s ({:.1} MiB); status windows of all channels \
             {status_s:.2} s; rolling up the 29 days once {roll_s:.1} s",
            html.len() as f64 / (1024.0 * 1024.0)
        );
    });
}
