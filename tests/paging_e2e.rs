//! Paging end to end: the real daemon, a real Postfix + Dovecot, and a local
//! HTTP receiver as the webhook notifier.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use postcanary::ledger::{sqlite::SqliteStore, Store};
use postcanary::verdict::Verdict;
use support::canary::{wait_for, Daemon};
use support::mailstack::MailStack;
use support::receiver::Receiver;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// A daemon config: one relay, the `social` inbox, a webhook notifier to
/// `hook`, and a channel to retired@ (discarded by Postfix) that must land in
/// `social`, probed every 4 s with a 3 s deadline.
fn setup(stack: &MailStack, hook: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("social.pw"), stack.password("social")).unwrap();
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = ["ops"]

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "canary@kommune.example"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "social"
password = "file:social.pw"

[[notifier]]
name = "ops"
kind = "webhook"
url = "{hook}"

[[channel]]
id = "retired-mail"
name = "Retired address"
kind = "mail"
to = "retired@kommune.example"
inbox = "social"
schedule = "every 4s"
deadline = "3s"
"#,
        smtp = stack.smtp_port,
        imap = stack.imap_port,
    );
    let config = dir.path().join("postcanary.toml");
    std::fs::write(&config, toml).unwrap();
    Setup { dir, config }
}

fn events(r: &Receiver) -> Vec<(String, String)> {
    r.accepted()
        .iter()
        .map(|p| {
            let v = p.json();
            (
                v["event"].as_str().unwrap_or("").to_string(),
                v["dedup_key"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn black_hole_pages_once_within_2s_of_the_deadline_and_resolves_when_fixed() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    let s = setup(&stack, &hook.url("/hook"));
    let log = s.dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&s.config, &log);

    let trigger = wait_for("the trigger page", Duration::from_secs(30), async || {
        hook.accepted().into_iter().next()
    })
    .await;
    let page = trigger.json();
    assert_eq!(page["event"], "trigger", "{page}");
    assert_eq!(page["channel"]["id"], "retired-mail");
    assert_eq!(page["verdict"], "missed");
    let store = SqliteStore::open(&s.dir.path().join("ledger.db")).await.unwrap();
    let token = page["probe_token"].as_str().unwrap().to_string();
    let probe = store.probe_by_token(&token).await.unwrap().unwrap();
    assert_eq!(probe.verdict, Verdict::Missed);
    let delay = trigger.at_ms - probe.deadline;
    assert!(
        (0..2_000).contains(&delay),
        "page arrived {delay} ms after the deadline"
    );

    // More misses follow while it stays broken: they page nobody.
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(events(&hook).len(), 1, "{:?}", events(&hook));

    // Fix the route: retired@ now lands in social.
    stack.set_map("transport", "");
    stack.set_map(
        "virtual",
        "familie@kommune.example closed@kommune.example\nretired@kommune.example social@kommune.example\n",
    );
    wait_for("the resolve page", Duration::from_secs(30), async || {
        (events(&hook).len() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ev = events(&hook);
    assert_eq!(ev.len(), 2, "exactly one trigger and one resolve: {ev:?}");
    assert_eq!((ev[0].0.as_str(), ev[1].0.as_str()), ("trigger", "resolve"));
    assert_eq!(ev[0].1, ev[1].1, "same dedup key");
    let incidents = store.open_incidents().await.unwrap();
    assert!(incidents.is_empty(), "{incidents:?}");
    assert!(daemon.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_written_but_not_sent_goes_out_once_after_kill_9() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    hook.set_status(503);
    let s = setup(&stack, &hook.url("/hook"));
    let log = s.dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&s.config, &log);
    // The page is in the outbox and the notifier refused it, and the
    // daemon has written down the refusal (killed any earlier, between the
    // 503 and that write, it has no `page-failed` to show).
    wait_for("a refused attempt", Duration::from_secs(30), async || {
        hook.received().into_iter().next()
    })
    .await;
    let ledger = SqliteStore::open(&s.dir.path().join("ledger.db")).await.unwrap();
    wait_for("the refusal in the ledger", Duration::from_secs(30), async || {
        let open = ledger.open_incidents().await.ok()?;
        let events = ledger.incident_events(open.first()?.id).await.ok()?;
        events.iter().any(|e| e.kind == "page-failed").then_some(())
    })
    .await;
    drop(ledger);
    daemon.kill9();
    hook.set_status(202);
    let mut daemon = Daemon::start(&s.config, &log);
    wait_for("the page after restart", Duration::from_secs(30), async || {
        hook.accepted().into_iter().next()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let ev = events(&hook);
    assert_eq!(ev.len(), 1, "sent exactly once: {ev:?}");
    assert_eq!(ev[0].0, "trigger");
    assert!(daemon.terminate().success());
    let store = SqliteStore::open(&s.dir.path().join("ledger.db")).await.unwrap();
    let open = store.open_incidents().await.unwrap();
    assert_eq!(open.len(), 1);
    let kinds: Vec<String> = store
        .incident_events(open[0].id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(
        kinds.contains(&"page-failed".to_string()) && kinds.contains(&"page-accepted".to_string()),
        "{kinds:?}"
    );
}

/// A config with no inbox: channels that must bounce, sent through `relay_port`.
fn bare_config(dir: &std::path::Path, relay_port: u16, hook: &str, extra: &str) -> PathBuf {
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = ["ops"]
schedule = "every 2s"
deadline = "3s"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {relay_port}
tls = "none"
from = "canary@kommune.example"
timeout = "2s"

[[notifier]]
name = "ops"
kind = "webhook"
url = "{hook}"

[[channel]]
id = "old-address-a"
name = "Old address A"
kind = "mail"
to = "a@kommune.example"
expect = "bounce"

[[channel]]
id = "old-address-b"
name = "Old address B"
kind = "mail"
to = "b@kommune.example"
expect = "bounce"
{extra}
"#
    );
    let path = dir.join("postcanary.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_relay_pages_once_as_postcanary_degraded_not_per_channel() {
    let hook = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let config = bare_config(dir.path(), closed_port(), &hook.url("/hook"), "");
    let mut daemon = Daemon::start(&config, &dir.path().join("daemon.log"));
    let first = wait_for("the degraded page", Duration::from_secs(30), async || {
        hook.accepted().into_iter().next()
    })
    .await;
    // Both channels keep failing for a while.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let pages = hook.accepted();
    assert_eq!(
        pages.len(),
        1,
        "one page for the prober, none per channel: {:?}",
        events(&hook)
    );
    let v = first.json();
    assert_eq!(v["channel"]["id"], "postcanary", "{v}");
    assert_eq!(v["verdict"], "error");
    assert!(
        v["detail"].as_str().unwrap_or("").contains("cannot connect to relay"),
        "{v}"
    );
    assert!(daemon.terminate().success());
    let store = SqliteStore::open(&dir.path().join("ledger.db")).await.unwrap();
    for ch in ["old-address-a", "old-address-b"] {
        let recent = store.recent_probes(ch, 5).await.unwrap();
        assert!(
            recent
                .iter()
                .filter(|p| p.verdict.is_final())
                .all(|p| p.verdict == Verdict::Error),
            "{recent:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_pings_while_healthy_and_stops_when_an_inbox_is_lost() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    let hb = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hb.url"), hb.url("/ping/abc")).unwrap();
    std::fs::write(dir.path().join("social.pw"), stack.password("social")).unwrap();
    let extra = format!(
        "[heartbeat]\nurl = \"file:hb.url\"\ninterval = \"1s\"\n\n[[inbox]]\nname = \"social\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\n\
         port = {}\ntls = \"none\"\nusername = \"social\"\npassword = \"file:social.pw\"\n",
        stack.imap_port
    );
    let config = bare_config(dir.path(), stack.smtp_port, &hook.url("/hook"), &extra);
    let mut daemon = Daemon::start(&config, &dir.path().join("daemon.log"));
    wait_for("three pings", Duration::from_secs(20), async || {
        (hb.accepted().len() >= 3).then_some(())
    })
    .await;
    assert!(hb.accepted().iter().all(|r| r.method == "GET" && r.path == "/ping/abc"));
    // Dovecot goes away: the watcher cannot connect, so postcanary is not healthy.
    let log_path = dir.path().join("daemon.log");
    let disconnects = || {
        std::fs::read_to_string(&log_path)
            .unwrap_or_default()
            .matches("IMAP watcher disconnected")
            .count()
    };
    let seen = disconnects();
    support::canary::StackExt::restart_imap_with(&stack, || {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while disconnects() == seen {
            assert!(
                std::time::Instant::now() < end,
                "the watcher never noticed Dovecot going away"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // A ping whose health check passed just before may still be on its way.
        std::thread::sleep(Duration::from_millis(1500));
        let before = hb.accepted().len();
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(
            hb.accepted().len(),
            before,
            "no heartbeat while an inbox is unreachable"
        );
    });
    let after = hb.accepted().len();
    wait_for("pings again", Duration::from_secs(20), async || {
        (hb.accepted().len() > after).then_some(())
    })
    .await;
    assert!(daemon.terminate().success());
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
    assert!(
        !log.contains("/ping/abc"),
        "the ping URL is a credential and must not be logged"
    );
}
