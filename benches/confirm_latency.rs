//! Confirmation latency against a real Postfix + Dovecot on loopback.
//!
//! 1. arrival → verdict: a probe's message is delivered straight into the
//!    mailbox over LMTP; the clock runs from Dovecot's `250` (the message is in
//!    the mailbox) to the verdict being recorded, with the watcher in IMAP IDLE.
//! 2. end to end: `probe::run` through Postfix; the ledger's latency (relay's
//!    `250` → token seen), which adds Postfix's queueing.
//!
//! Run: `cargo bench --bench confirm_latency` (POSTCANARY_BENCH_N sets the
//! number of arrivals, default 300). Prints a Markdown table.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant, SystemTime};

use postcanary::config::{Config, Expect};
use postcanary::engine::Engine;
use postcanary::ledger::NewProbe;
use postcanary::verdict::{now_millis, Verdict};
use support::canary::lmtp_deliver;
use support::canary::percentile;
use support::mailstack::MailStack;

fn summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
        v[v.len() - 1]
    )
}

fn main() {
    let n: usize = std::env::var("POSTCANARY_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let stack = MailStack::start();
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("social.pw"), stack.password("social")).expect("pw");
        let toml = format!(
            "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
             port = {}\ntls = \"none\"\nfrom = \"canary@kommune.example\"\n\n[[inbox]]\nname = \"social\"\nkind = \"imap\"\n\
             host = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nusername = \"social\"\npassword = \"file:social.pw\"\n\
             after_confirm = \"move:Postcanary\"\n\n[[channel]]\nid = \"social-mail\"\nname = \"Social\"\nkind = \"mail\"\n\
             to = \"social@kommune.example\"\ninbox = \"social\"\ndeadline = \"1m\"\n",
            stack.smtp_port, stack.imap_port
        );
        let path = dir.path().join("postcanary.toml");
        std::fs::write(&path, toml).expect("config");
        let engine = Engine::start(Config::load(&path).expect("config")).await.expect("engine");
        assert!(engine.wait_watchers_connected(Duration::from_secs(15)).await);
        let mut verdicts = engine.verdicts.subscribe();

        // 1. arrival → verdict, IDLE.
        let mut arrival = Vec::with_capacity(n);
        for _ in 0..n {
            let token = engine.key.issue(SystemTime::now());
            let id = token.id();
            let now = now_millis();
            engine
                .store
                .insert_probe(&NewProbe {
                    id: id.clone(),
                    token: token.to_string(),
                    channel: "social-mail".into(),
                    kind: "mail".into(),
                    expect: Expect::Deliver,
                    inbox: Some("social".into()),
                    target: "social@kommune.example".into(),
                    created_at: now,
                    deadline: now + 60_000,
                    run_id: engine.run_id.clone(),
                })
                .await
                .expect("insert");
            engine.store.record_sent(&id, now, "250 bench").await.expect("sent");
            let msg = format!(
                "From: bench@example.net\r\nTo: social@kommune.example\r\nSubject: [postcanary test] {token}\r\n\
                 X-Postcanary-Token: {token}\r\n\r\nToken: {token}\r\n"
            );
            let port = stack.lmtp_port;
            let arrived = tokio::task::spawn_blocking(move || {
                lmtp_deliver(port, "social@kommune.example", &msg);
                Instant::now()
            })
            .await
            .expect("lmtp");
            let confirmed = loop {
                let v = tokio::time::timeout(Duration::from_secs(30), verdicts.recv())
                    .await
                    .unwrap_or_else(|_| panic!("no verdict within 30s for arrival {} ({token})", arrival.len()))
                    .expect("verdict stream");
                if v.probe_id == id {
                    assert_eq!(v.verdict, Verdict::Delivered, "{v:?}");
                    break Instant::now();
                }
            };
            arrival.push(confirmed.duration_since(arrived).as_secs_f64() * 1000.0);
        }

        // 2. end to end through Postfix.
        let e2e_n = (n / 10).max(10);
        let ch = engine.config.channel("social-mail").expect("channel").clone();
        let mut e2e = Vec::with_capacity(e2e_n);
        for _ in 0..e2e_n {
            let done = engine.check(std::slice::from_ref(&ch)).await.expect("check");
            let p = &done[0];
            assert_eq!(p.verdict, Verdict::Delivered, "{p:?}");
            e2e.push(p.latency_ms.unwrap_or(0) as f64);
        }
        engine.stop().await;

        println!("| measurement | n | p50 ms | p95 ms | p99 ms | max ms |");
        println!("|---|---|---|---|---|---|");
        println!("{}", summary("arrival in mailbox (LMTP 250) → verdict recorded, IMAP IDLE", arrival));
        println!("{}", summary("relay 250 → token seen, through Postfix (ledger latency)", e2e));
    });
}
