//! Our own blind spots never page a channel: the real engine (scheduler off,
//! probes fired by hand) against the in-process sandbox, whose IMAP server
//! can refuse logins, drop connections and advertise an IDLE that never
//! pushes; pages go to a local webhook receiver. The same cases against real
//! servers (Postfix + Dovecot, a second IMAP server) are in trust_e2e.rs.

mod support;

use std::sync::Arc;
use std::time::Duration;

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::outbox::RealDelivery;
use postcanary::sandbox::{Route, Sandbox, SandboxOptions};
use postcanary::verdict::Verdict;
use support::receiver::Receiver;

const CHANNELS: usize = 20;

struct Rig {
    _dir: tempfile::TempDir,
    sandbox: Sandbox,
    hook: Receiver,
    engine: Engine,
}

/// `CHANNELS` mail channels into one sandbox inbox, deadline `deadline`,
/// blind grace `grace`.
async fn rig(deadline: &str, grace: &str) -> Rig {
    let store = postcanary::sandbox::MailStore::new();
    store.add_user("canary", "secret");
    store.set_default_route(Route::deliver("canary", "INBOX"));
    let sandbox = Sandbox::start(store, SandboxOptions::default()).await.expect("sandbox");
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pw"), "secret").expect("pw");
    let mut toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = ["ops"]
schedule = "every 1h"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "canary@sandbox.test"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "canary"
password = "file:pw"
poll_interval = "60s"
blind_grace = "{grace}"

[[notifier]]
name = "ops"
kind = "webhook"
url = "{url}"
"#,
        smtp = sandbox.smtp_addr().port(),
        imap = sandbox.imap_addr().port(),
        url = hook.url("/hook"),
    );
    for i in 0..CHANNELS {
        toml.push_str(&format!(
            "\n[[channel]]\nid = \"ch-{i}\"\nname = \"Channel {i}\"\nkind = \"mail\"\nto = \"ch{i}@sandbox.test\"\ninbox = \"social\"\ndeadline = \"{deadline}\"\n"
        ));
    }
    let path = dir.path().join("postcanary.toml");
    std::fs::write(&path, toml).expect("config");
    let mut engine = Engine::start(Config::load(&path).expect("config"))
        .await
        .expect("engine");
    engine.start_paging(Arc::new(
        RealDelivery::new(Arc::clone(&engine.config)).expect("delivery"),
    ));
    assert!(engine.wait_watchers_connected(Duration::from_secs(10)).await);
    Rig {
        _dir: dir,
        sandbox,
        hook,
        engine,
    }
}

/// Fires every channel once; returns the probe ids.
async fn fire(r: &Rig) -> Vec<String> {
    let ctx = r.engine.probe_context();
    let mut ids = Vec::new();
    for ch in r.engine.config.channels.clone() {
        let s = postcanary::probe::run(&ctx, &r.engine.config, &ch)
            .await
            .expect("probe");
        ids.push(s.id);
    }
    ids
}

async fn verdicts(r: &Rig, ids: &[String]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for id in ids {
        out.push(r.engine.store.probe(id).await.expect("ledger").expect("probe").verdict);
    }
    out
}

async fn wait_final(r: &Rig, ids: &[String], limit: Duration) -> Vec<Verdict> {
    let end = tokio::time::Instant::now() + limit;
    loop {
        let v = verdicts(r, ids).await;
        if v.iter().all(|v| v.is_final()) || tokio::time::Instant::now() > end {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (event, channel) of every page accepted so far.
fn pages(hook: &Receiver) -> Vec<(String, String)> {
    hook.accepted()
        .iter()
        .map(|p| {
            let v = p.json();
            (
                v["event"].as_str().unwrap_or("").to_string(),
                v["channel"]["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_blind_past_every_deadline_pages_no_channel_and_all_arrive() {
    let r = rig("2s", "5m").await;
    // The IMAP server refuses the watcher; mail keeps being delivered.
    r.sandbox.imap().faults().refuse_logins(true);
    r.sandbox.imap().drop_connections();
    let ids = fire(&r).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(
        verdicts(&r, &ids).await.iter().all(|v| *v == Verdict::Pending),
        "no verdict while the inbox is not watched"
    );
    r.sandbox.imap().faults().refuse_logins(false);
    let v = wait_final(&r, &ids, Duration::from_secs(30)).await;
    assert!(v.iter().all(|v| *v == Verdict::Delivered), "{v:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p = pages(&r.hook);
    assert!(p.iter().all(|(_, ch)| ch == "postcanary"), "no channel page: {p:?}");
    assert!(p.iter().filter(|(e, _)| e == "trigger").count() <= 1, "{p:?}");
    r.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_blind_past_its_grace_is_one_degraded_page() {
    let r = rig("1s", "3s").await;
    r.sandbox.imap().faults().refuse_logins(true);
    r.sandbox.imap().drop_connections();
    let ids = fire(&r).await;
    let v = wait_final(&r, &ids, Duration::from_secs(20)).await;
    assert!(v.iter().all(|v| *v == Verdict::Error), "{v:?}");
    let p = r.engine.store.probe(&ids[0]).await.expect("ledger").expect("probe");
    let detail = p.detail.unwrap_or_default();
    assert!(detail.contains("inbox `social` was not watched"), "{detail}");
    assert_eq!(p.fault.as_deref(), Some("inbox:social"));
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while pages(&r.hook).is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p = pages(&r.hook);
    assert_eq!(
        p,
        vec![("trigger".to_string(), "postcanary".to_string())],
        "one degraded page"
    );
    // The watcher comes back; the next delivery through it resolves the incident.
    r.sandbox.imap().faults().refuse_logins(false);
    let ch = r.engine.config.channels[0].clone();
    let s = postcanary::probe::run(&r.engine.probe_context(), &r.engine.config, &ch)
        .await
        .expect("probe");
    let v = wait_final(&r, &[s.id], Duration::from_secs(20)).await;
    assert_eq!(v, vec![Verdict::Delivered]);
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while pages(&r.hook).len() < 2 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        pages(&r.hook),
        vec![
            ("trigger".to_string(), "postcanary".to_string()),
            ("resolve".to_string(), "postcanary".to_string())
        ]
    );
    r.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_that_never_pushes_still_gives_deliveries_before_a_short_deadline() {
    let r = rig("3s", "5m").await;
    // IDLE advertised, never announcing anything; the watcher's poll is 60 s.
    r.sandbox.imap().faults().silent_idle(true);
    let ids = fire(&r).await;
    let v = wait_final(&r, &ids, Duration::from_secs(20)).await;
    assert!(v.iter().all(|v| *v == Verdict::Delivered), "{v:?}");
    assert!(pages(&r.hook).is_empty(), "{:?}", pages(&r.hook));
    r.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_as_shown_never_count_and_are_never_shown_whole() {
    let r = rig("3s", "5m").await;
    // The channel's mail goes nowhere; a copy of what the ledger shows is mailed in.
    r.sandbox.store().set_route("ch0@sandbox.test", Route::Discard);
    let ids = fire(&r).await;
    let p = r.engine.store.probe(&ids[0]).await.expect("ledger").expect("probe");
    assert_eq!(p.token.len(), 29, "the ledger keeps pc-<ULID>, no tag: {}", p.token);
    let copy = format!("Subject: {t}\r\nX-Postcanary-Token: {t}\r\n\r\n{t}\r\n", t = p.token);
    r.sandbox
        .store()
        .deliver("canary", "INBOX", copy.into_bytes())
        .expect("deliver");
    let v = wait_final(&r, &ids[..1], Duration::from_secs(20)).await;
    assert_eq!(v, vec![Verdict::Missed]);
    r.engine.stop().await;
}
