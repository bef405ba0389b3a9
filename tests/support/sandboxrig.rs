//! The real engine against the in-process sandbox, with a webhook receiver
//! for pages: the rig of the blind-watcher tests and the fault matrix.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::outbox::RealDelivery;
use postcanary::sandbox::{Route, Sandbox, SandboxOptions};
use postcanary::verdict::Verdict;

use super::receiver::Receiver;

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub sandbox: Sandbox,
    pub hook: Receiver,
    pub engine: Engine,
}

/// `channels` mail channels into one sandbox inbox, deadline `deadline`,
/// blind grace `grace`; with `relay_port`, the sender points there instead
/// of the sandbox (a dead relay).
pub async fn rig(channels: usize, deadline: &str, grace: &str, relay_port: Option<u16>) -> Rig {
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
        smtp = relay_port.unwrap_or(sandbox.smtp_addr().port()),
        imap = sandbox.imap_addr().port(),
        url = hook.url("/hook"),
    );
    for i in 0..channels {
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
        dir,
        sandbox,
        hook,
        engine,
    }
}

/// Fires every channel once; returns the probe ids.
pub async fn fire(r: &Rig) -> Vec<String> {
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

pub async fn verdicts(r: &Rig, ids: &[String]) -> Vec<Verdict> {
    let mut out = Vec::new();
    for id in ids {
        out.push(r.engine.store.probe(id).await.expect("ledger").expect("probe").verdict);
    }
    out
}

pub async fn wait_final(r: &Rig, ids: &[String], limit: Duration) -> Vec<Verdict> {
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
pub fn pages(hook: &Receiver) -> Vec<(String, String)> {
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
