//! `/metrics` at 1,000, 10,000 and 50,000 channels (issue 20): scrape size
//! and time, per owner (the default) and per channel (`[metrics] by`).
//!
//! For each size a SQLite ledger is filled with POSTCANARY_METRICS_HISTORY
//! judged probes per channel (default 24: two hours every 5 minutes; a few
//! missed), the daemon's HTTP server is started on it, and measured: the
//! first scrape (which reads each channel's newest verdict once), then
//! steady scrapes, each after the verdicts a 15 s scrape interval brings at a
//! 5-minute cadence (N / 20 of them). Beside it, the time the ledger reads of
//! the old `/metrics` take on the same ledger (verdict counts and a latency
//! histogram over all probes, the status of every channel) — a pass over the
//! whole history that grows with every probe kept.
//!
//! Run: `cargo bench --bench metrics_scrape` (POSTCANARY_BENCH_N: one size
//! instead of the three; the CI smoke run uses 10).

use std::time::Instant;

use postcanary::config::{Config, Expect};
use postcanary::engine::Engine;
use postcanary::ledger::NewProbe;
use postcanary::verdict::{now_millis, Judgement, Verdict};

const BOUNDS_MS: [i64; 12] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
];

fn config(dir: &std::path::Path, n: usize, by: &str) -> std::path::PathBuf {
    let mut toml = format!(
        "[ledger]\nurl = \"sqlite://ledger.db\"\n[server]\nlisten = \"127.0.0.1:0\"\npublic_metrics = true\n\
         [metrics]\nby = \"{by}\"\n\
         [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nfrom = \"c@kommune.example\"\n"
    );
    for i in 0..n {
        toml.push_str(&format!(
            "[[channel]]\nid = \"channel-{i}\"\nname = \"Kanal {i}\"\nowner = \"owner-{}\"\nkind = \"mail\"\n\
             to = \"c{i}@kommune.example\"\nexpect = \"bounce\"\n",
            i / 100
        ));
    }
    let path = dir.join(format!("postcanary-{by}.toml"));
    std::fs::write(&path, toml).expect("config");
    path
}

/// `history` judged probes per channel, each with its verdict event, in one transaction.
fn fill(path: &std::path::Path, n: usize, history: i64) {
    let mut c = rusqlite::Connection::open(path).expect("ledger");
    let tx = c.transaction().expect("tx");
    let t0 = now_millis() - (history + 1) * 300_000;
    {
        let mut probe = tx
            .prepare(
                "INSERT INTO probes (id, token, channel, kind, expect, inbox, target, run_id, created_at, sent_at, \
                 deadline, verdict, judged_at, latency_ms, detail, handled) \
                 VALUES (?1, ?2, ?3, 'mail', 'deliver', 'social', 'x@kommune.example', 'fill', ?4, ?4, ?5, ?6, ?7, ?8, \
                 'bench', 1)",
            )
            .expect("insert");
        let mut event = tx
            .prepare("INSERT INTO probe_events (probe_id, at, kind, detail) VALUES (?1, ?2, 'verdict', ?3)")
            .expect("insert");
        for i in 0..n {
            for k in 0..history {
                let id = format!("{i:010}{k:016}");
                let created = t0 + k * 300_000 + (i as i64 % 300) * 1_000;
                let missed = (i as i64 + k) % 97 == 0;
                let (verdict, latency) = if missed {
                    ("missed", None)
                } else {
                    ("delivered", Some(300 + (k * 37 + i as i64) % 2_000))
                };
                let judged = created + latency.unwrap_or(120_000);
                probe
                    .execute(rusqlite::params![
                        id,
                        format!("pc-{id}"),
                        format!("channel-{i}"),
                        created,
                        created + 120_000,
                        verdict,
                        judged,
                        latency
                    ])
                    .expect("probe");
                event
                    .execute(rusqlite::params![id, judged, format!("{verdict}: bench")])
                    .expect("event");
            }
        }
    }
    tx.commit().expect("commit");
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Row {
    n: usize,
    probes: i64,
    by: &'static str,
    bytes: usize,
    lines: usize,
    first_ms: f64,
    steady_ms: f64,
    old_ms: f64,
}

async fn measure(n: usize, history: i64) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    drop(
        postcanary::ledger::sqlite::SqliteStore::open(&ledger)
            .await
            .expect("ledger"),
    );
    let t = Instant::now();
    fill(&ledger, n, history);
    eprintln!("{n} channels: ledger filled in {:?}", t.elapsed());
    let mut rows = Vec::new();
    let mut fresh = 0u64;
    for by in ["owner", "channel"] {
        let cfg = Config::load(&config(dir.path(), n, by)).expect("config");
        let ids: Vec<String> = cfg.channels.iter().map(|c| c.id.clone()).collect();
        let mut engine = Engine::start(cfg).await.expect("engine");
        let addr = postcanary::server::start(&mut engine)
            .await
            .expect("server")
            .expect("[server]");
        let url = format!("http://{addr}/metrics");
        let http = reqwest::Client::new();
        let scrape = || async {
            let t = Instant::now();
            let body = http.get(&url).send().await.expect("scrape").text().await.expect("body");
            (t.elapsed().as_secs_f64() * 1000.0, body)
        };
        let (first_ms, _) = scrape().await;
        let mut steady = Vec::new();
        let mut body = String::new();
        for _ in 0..5 {
            // What a 15 s interval brings at a 5-minute cadence: N / 20 verdicts.
            for k in 0..(n / 20).max(1) {
                fresh += 1;
                let id = format!("fresh{fresh:021}");
                let created = now_millis() - 60_000;
                engine
                    .store
                    .insert_probe(&NewProbe {
                        id: id.clone(),
                        token: format!("pc-{id}"),
                        channel: format!("channel-{}", (fresh as usize * 7 + k) % n),
                        kind: "mail".into(),
                        expect: Expect::Deliver,
                        inbox: Some("social".into()),
                        target: "x@kommune.example".into(),
                        created_at: created,
                        deadline: created + 120_000,
                        run_id: "bench".into(),
                    })
                    .await
                    .expect("insert");
                let j = Judgement {
                    verdict: Verdict::Delivered,
                    detail: "bench".into(),
                    at: created + 700,
                    found: None,
                    latency_ms: Some(700),
                    fault: None,
                };
                engine.store.judge(&id, &j).await.expect("judge");
            }
            let (ms, b) = scrape().await;
            steady.push(ms);
            body = b;
        }
        assert!(body.contains("postcanary_channel_up{"), "channel states in the scrape");
        assert!(
            body.contains("postcanary_probes_total{"),
            "verdicts since the first scrape"
        );
        // The ledger reads of the old /metrics, on the same ledger.
        let t = Instant::now();
        engine.store.verdict_counts().await.expect("counts");
        engine.store.latency_histogram(&BOUNDS_MS).await.expect("histogram");
        engine
            .store
            .channel_status(&ids, now_millis(), 30)
            .await
            .expect("status");
        let old_ms = t.elapsed().as_secs_f64() * 1000.0;
        let probes: i64 = rusqlite::Connection::open(&ledger)
            .expect("ledger")
            .query_row("SELECT COUNT(*) FROM probes", [], |r| r.get(0))
            .expect("count");
        rows.push(Row {
            n,
            probes,
            by,
            bytes: body.len(),
            lines: body.lines().filter(|l| !l.starts_with('#')).count(),
            first_ms,
            steady_ms: median(steady),
            old_ms,
        });
        engine.stop().await;
    }
    rows
}

fn main() {
    let sizes: Vec<usize> = match std::env::var("POSTCANARY_BENCH_N").ok().and_then(|s| s.parse().ok()) {
        Some(n) => vec![n],
        None => vec![1_000, 10_000, 50_000],
    };
    let history: i64 = std::env::var("POSTCANARY_METRICS_HISTORY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(24);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rows = Vec::new();
    for n in sizes {
        rows.extend(rt.block_on(measure(n, history)));
    }
    println!(
        "| channels | probes in ledger | by | scrape size | series | first scrape | scrape p50 | old /metrics ledger reads |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.0} KiB | {} | {:.0} ms | {:.0} ms | {:.0} ms |",
            r.n,
            r.probes,
            r.by,
            r.bytes as f64 / 1024.0,
            r.lines,
            r.first_ms,
            r.steady_ms,
            r.old_ms
        );
    }
}
