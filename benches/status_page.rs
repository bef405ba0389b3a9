//! Weight and render time of the status page for many channels (issue 20).
//!
//! Fills a ledger with N channels (default 10,000) in 12 owners, each with
//! 30 days of history (POSTCANARY_BENCH_PROBES judged probes spread over 30
//! days, default 120: one every 6 h — the page reads rollups, so the count
//! per day costs nothing at read time), a few failing, one channel in ten with
//! an open incident; serves it, and measures: bytes of `/` and of one
//! owner's page, server time per request, and — when Debian's chromium is
//! installed — the page's load in a running headless Chromium (Navigation
//! Timing: navigation start to the end of the load event, each load a fresh
//! navigation with the cache off; what a person at the page waits for), and
//! the wall time of a cold `chromium --dump-dom` of the page against the
//! same for a near-empty page (browser start-up included; the difference is
//! the page's own cost).
//! The ledger is filled with SQL in one transaction (pending rows, then the
//! verdicts as an UPDATE, so the ledger's own triggers keep the rollups).
//!
//! Run: `cargo bench --bench status_page` (POSTCANARY_BENCH_N sets N).

use std::sync::Arc;
use std::time::{Duration, Instant};

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::verdict::now_millis;

#[path = "../tests/support/cdp.rs"]
mod cdp;

/// Loads `url` `runs` times in one running headless Chromium, cache off;
/// returns the sorted `loadEventEnd` of each navigation (ms from its start).
fn navigation_ms(url: &str, runs: usize) -> Option<Vec<f64>> {
    let bin = cdp::chromium()?;
    let mut browser = cdp::Browser::launch(bin);
    let tab = browser.tab("Bearer none", 1280, 900);
    browser.call(
        Some(tab.session.as_str()),
        "Network.setCacheDisabled",
        serde_json::json!({ "cacheDisabled": true }),
    );
    let mut out = Vec::new();
    // One navigation first, so that the browser's own start-up is not counted.
    browser.goto(&tab, "about:blank");
    for _ in 0..runs {
        browser.goto(&tab, url);
        let v = browser.eval(
            &tab,
            "(() => { const n = performance.getEntriesByType('navigation')[0]; return n ? n.loadEventEnd - n.startTime : -1; })()",
        );
        let ms = v.as_f64()?;
        if ms <= 0.0 {
            return None;
        }
        out.push(ms);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    Some(out)
}

fn chromium_ms(url: &str) -> Option<f64> {
    let bin = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let profile = tempfile::tempdir().ok()?;
        let t = Instant::now();
        let out = std::process::Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                "--disable-component-update",
                "--disable-sync",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(url)
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    Some(best)
}

fn main() {
    let n: usize = std::env::var("POSTCANARY_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut toml = String::from(
            "[ledger]\nurl = \"sqlite://ledger.db\"\n[server]\nlisten = \"127.0.0.1:0\"\ntitle = \"Bench\"\n\
             [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = 9\ntls = \"none\"\nfrom = \"c@kommune.example\"\n",
        );
        for i in 0..n {
            toml.push_str(&format!(
                "[[channel]]\nid = \"channel-{i}\"\nname = \"Kanal nummer {i}\"\nowner = \"team-{}\"\nkind = \"mail\"\nto = \"c{i}@kommune.example\"\nexpect = \"bounce\"\n",
                i % 12
            ));
        }
        let path = dir.path().join("postcanary.toml");
        std::fs::write(&path, toml).expect("config");
        let probes: i64 = std::env::var("POSTCANARY_BENCH_PROBES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120);
        let t = Instant::now();
        let db = dir.path().join("ledger.db");
        drop(postcanary::ledger::sqlite::SqliteStore::open(&db).await.expect("ledger"));
        {
            let mut conn = rusqlite::Connection::open(&db).expect("open");
            let tx = conn.transaction().expect("tx");
            let step = 30 * 86_400_000 / probes;
            let base = now_millis() - 30 * 86_400_000;
            {
                let mut ins = tx
                    .prepare(
                        "INSERT INTO probes (id, token, channel, kind, expect, target, run_id, created_at, sent_at, deadline, handled) \
                         VALUES (?1, ?2, ?3, 'mail', 'bounce', 'x', 'bench', ?4, ?4, ?5, 1)",
                    )
                    .expect("prepare");
                let mut judge = tx
                    .prepare(
                        "UPDATE probes SET verdict = ?2, judged_at = ?3, latency_ms = ?4, detail = 'bench' WHERE id = ?1",
                    )
                    .expect("prepare");
                for i in 0..n {
                    for k in 0..probes {
                        let id = format!("{:010}{:016}", i, k);
                        let created = base + k * step;
                        ins.execute(rusqlite::params![id, format!("pc-{id}"), format!("channel-{i}"), created, created + 86_400_000])
                            .expect("insert");
                        let fail = i % 10 == 0 && k == probes - 1 || (i + k as usize).is_multiple_of(97);
                        let (verdict, latency) = if fail { ("missed", None) } else { ("delivered", Some(400 + (k * 37) % 900)) };
                        judge.execute(rusqlite::params![id, verdict, created + 500, latency]).expect("judge");
                    }
                }
            }
            tx.commit().expect("commit");
        }
        let mut engine = Engine::start(Config::load(&path).expect("config")).await.expect("engine");
        // The open incidents: the newest probe of one channel in ten failed.
        for i in (0..n).step_by(10) {
            let id = format!("{:010}{:016}", i, probes - 1);
            let change = postcanary::ledger::IncidentChange {
                probe_id: Some(id.clone()),
                reclassify: None,
                action: postcanary::ledger::IncidentAction::Open {
                    channel: format!("channel-{i}"),
                    dedup_key: format!("postcanary/channel-{i}/{id}"),
                    verdict: "missed".into(),
                    detail: "bench".into(),
                    at: now_millis(),
                    silenced: None,
                    pages: Vec::new(),
                },
            };
            engine.store.apply_incident(&change).await.expect("incident");
        }
        let processor = postcanary::incident::Processor {
            config: Arc::clone(&engine.config),
            store: Arc::clone(&engine.store),
            source: "bench".into(),
            outbox: postcanary::outbox::Wake::default(),
        };
        processor.drain().await.expect("incidents");
        eprintln!("ledger filled in {:?}", t.elapsed());
        let addr = postcanary::server::start(&mut engine).await.expect("server").expect("addr");
        let url = format!("http://{addr}/");
        let client = reqwest::Client::new();
        let measure = |url: String| {
            let client = client.clone();
            async move {
                let mut times = Vec::new();
                let mut bytes = 0;
                for _ in 0..10 {
                    let t = Instant::now();
                    let body = client.get(&url).send().await.expect("get").bytes().await.expect("body");
                    times.push(t.elapsed().as_secs_f64() * 1000.0);
                    bytes = body.len();
                }
                times.sort_by(|a, b| a.total_cmp(b));
                (times, bytes)
            }
        };
        let (times, bytes) = measure(url.clone()).await;
        let (owner_times, owner_bytes) = measure(format!("http://{addr}/owners/team-1")).await;
        let open = engine.store.open_incidents().await.expect("incidents").len();
        let page_ms = tokio::task::spawn_blocking({
            let url = url.clone();
            move || chromium_ms(&url)
        })
        .await
        .ok()
        .flatten();
        let empty_ms = tokio::task::spawn_blocking(move || chromium_ms(&format!("http://{addr}/api/openapi.json"))).await.ok().flatten();
        let nav = tokio::task::spawn_blocking({
            let url = url.clone();
            move || navigation_ms(&url, 7)
        })
        .await
        .ok()
        .flatten();
        engine.stop().await;
        println!("| channels | probes | open incidents | bytes of / | server p50 ms | server max ms | bytes of an owner's page | its p50 ms | chromium load ms (page / near-empty) |");
        println!("|---|---|---|---|---|---|---|---|---|");
        println!(
            "| {n} | {} | {open} | {bytes} | {:.0} | {:.0} | {owner_bytes} | {:.0} | {} |",
            n as i64 * probes,
            times[times.len() / 2],
            times[times.len() - 1],
            owner_times[owner_times.len() / 2],
            match (page_ms, empty_ms) {
                (Some(p), Some(e)) => format!("{p:.0} / {e:.0}"),
                _ => "chromium not installed".into(),
            }
        );
        match nav {
            Some(t) => println!(
                "\nthe page in a running headless Chromium (Navigation Timing, navigation start → load event end, \
                 cache off, {} loads): p50 {:.0} ms, max {:.0} ms",
                t.len(),
                t[t.len() / 2],
                t[t.len() - 1]
            ),
            None => println!("\nthe page in a running headless Chromium: chromium not installed"),
        }
        let _ = Duration::ZERO;
    });
}
