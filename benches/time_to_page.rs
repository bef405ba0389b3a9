//! Time to page: deadline expiry → page accepted by a local webhook.
//!
//! N channels (default 100) all probe an address that Postfix silently
//! discards, fired 50 ms apart so their deadlines (2 s) are spread out; the
//! daemon's sweeper, incident processor and outbox page each one to a local
//! HTTP receiver. For each page: receiver's arrival time − the probe's
//! deadline (both wall clock, same machine).
//!
//! Run: `cargo bench --bench time_to_page` (POSTCANARY_BENCH_N sets N).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::outbox::RealDelivery;
use support::canary::percentile;
use support::mailstack::MailStack;
use support::receiver::Receiver;

fn main() {
    let n: usize = std::env::var("POSTCANARY_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let stack = MailStack::start();
        let hook = Receiver::start();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("social.pw"), stack.password("social")).expect("pw");
        let mut toml = format!(
            "[ledger]\nurl = \"sqlite://ledger.db\"\n[defaults]\nnotify = [\"ops\"]\nschedule = \"every 1h\"\ndeadline = \"2s\"\n\
             [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"canary@kommune.example\"\n\
             [[inbox]]\nname = \"social\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"social\"\npassword = \"file:social.pw\"\n\
             [[notifier]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\n",
            stack.smtp_port,
            stack.imap_port,
            hook.url("/hook")
        );
        for i in 0..n {
            toml.push_str(&format!(
                "[[channel]]\nid = \"black-hole-{i}\"\nname = \"Black hole {i}\"\nkind = \"mail\"\nto = \"retired@kommune.example\"\ninbox = \"social\"\n"
            ));
        }
        let path = dir.path().join("postcanary.toml");
        std::fs::write(&path, toml).expect("config");
        let mut engine = Engine::start(Config::load(&path).expect("config")).await.expect("engine");
        engine.start_paging(Arc::new(RealDelivery::new(Arc::clone(&engine.config)).expect("delivery")));
        assert!(engine.wait_watchers_connected(Duration::from_secs(15)).await);
        let ctx = engine.probe_context();
        let mut tokens = Vec::new();
        for ch in engine.config.channels.clone() {
            let started = postcanary::probe::run(&ctx, &engine.config, &ch).await.expect("probe");
            tokens.push(started.token);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(60);
        while hook.accepted().len() < n && tokio::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let pages = hook.accepted();
        assert_eq!(pages.len(), n, "every black hole paged exactly once");
        let mut delays = Vec::new();
        for p in &pages {
            let v = p.json();
            let token = v["probe_token"].as_str().expect("token");
            let probe = engine.store.probe_by_token(token).await.expect("ledger").expect("probe");
            delays.push((p.at_ms - probe.deadline) as f64);
        }
        engine.stop().await;
        delays.sort_by(|a, b| a.total_cmp(b));
        println!("| measurement | n | p50 ms | p95 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| deadline → page accepted by local webhook | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            delays.len(),
            percentile(&delays, 0.5),
            percentile(&delays, 0.95),
            percentile(&delays, 0.99),
            delays[delays.len() - 1]
        );
    });
}
