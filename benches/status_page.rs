//! Weight and render time of the status page for 1,000 channels.
//!
//! Fills a ledger with N channels (default 1000) × 30 judged probes (a few
//! failing, one open incident in ten), serves it, and measures: bytes of `/`,
//! requests it needs (the page has no sub-resources: inline CSS and SVG, no
//! scripts), server time per request, and — when Debian's chromium is
//! installed — the wall time of a headless Chromium load of the page against
//! the same for a near-empty page (the difference is the page's own cost).
//!
//! Run: `cargo bench --bench status_page` (POSTCANARY_BENCH_N sets N).

use std::sync::Arc;
use std::time::{Duration, Instant};

use postcanary::config::{Config, Expect};
use postcanary::engine::Engine;
use postcanary::ledger::NewProbe;
use postcanary::verdict::{now_millis, Judgement, Verdict};

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
        .unwrap_or(1000);
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
        let mut engine = Engine::start(Config::load(&path).expect("config")).await.expect("engine");
        let t = Instant::now();
        let base = now_millis() - 31 * 600_000;
        for i in 0..n {
            for k in 0..30i64 {
                let id = format!("{:010}{:016}", i, k);
                let created = base + k * 600_000;
                engine
                    .store
                    .insert_probe(&NewProbe {
                        id: id.clone(),
                        token: format!("pc-{id}"),
                        channel: format!("channel-{i}"),
                        kind: "mail".into(),
                        expect: Expect::Bounce,
                        inbox: None,
                        target: "x".into(),
                        created_at: created,
                        deadline: created + 86_400_000,
                        run_id: "bench".into(),
                    })
                    .await
                    .expect("insert");
                let fail = i % 10 == 0 && k == 29 || (i + k as usize).is_multiple_of(97);
                let j = Judgement {
                    verdict: if fail { Verdict::Missed } else { Verdict::Delivered },
                    detail: "bench".into(),
                    at: created + 500,
                    found: None,
                    latency_ms: (!fail).then_some(400 + (k * 37) % 900),
                    fault: None,
                };
                engine.store.judge(&id, &j).await.expect("judge");
            }
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
        let mut times = Vec::new();
        let mut bytes = 0;
        for _ in 0..10 {
            let t = Instant::now();
            let body = client.get(&url).send().await.expect("get").bytes().await.expect("body");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = body.len();
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let open = engine.store.open_incidents().await.expect("incidents").len();
        let page_ms = tokio::task::spawn_blocking({
            let url = url.clone();
            move || chromium_ms(&url)
        })
        .await
        .ok()
        .flatten();
        let empty_ms = tokio::task::spawn_blocking(move || chromium_ms(&format!("http://{addr}/api/openapi.json"))).await.ok().flatten();
        engine.stop().await;
        println!("| channels | probes | open incidents | bytes of / | requests | server p50 ms | server max ms | chromium load ms (page / near-empty) |");
        println!("|---|---|---|---|---|---|---|---|");
        println!(
            "| {n} | {} | {open} | {bytes} | 1 | {:.0} | {:.0} | {} |",
            n * 30,
            times[times.len() / 2],
            times[times.len() - 1],
            match (page_ms, empty_ms) {
                (Some(p), Some(e)) => format!("{p:.0} / {e:.0}"),
                _ => "chromium not installed".into(),
            }
        );
        let _ = Duration::ZERO;
    });
}
