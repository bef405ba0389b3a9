//! Issue 12, "verdicts you can trust", end to end: the real daemon, a real
//! Postfix + Dovecot, a fault proxy (tests/support/faultproxy.rs) between the
//! daemon's IMAP watcher and Dovecot, and a webhook receiver recording pages.
//! Verdicts are read from the ledger. Each case is bounded in time.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use postcanary::ledger::{sqlite::SqliteStore, Store};
use postcanary::verdict::Verdict;
use support::canary::{wait_for, Daemon};
use support::faultproxy::FaultProxy;
use support::mailstack::MailStack;
use support::receiver::Receiver;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// One relay, the `social` inbox reached through `imap_port` (the proxy),
/// a webhook notifier, and `n` channels to social@ every `schedule` with `deadline`.
fn setup(
    stack: &MailStack,
    imap_port: u16,
    hook: &str,
    n: usize,
    schedule: &str,
    deadline: &str,
    inbox_extra: &str,
) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("social.pw"), stack.password("social")).unwrap();
    let mut toml = format!(
        "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[defaults]\nnotify = [\"ops\"]\njitter = \"1s\"\n\n\
         [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"canary@kommune.example\"\ntimeout = \"10s\"\n\n\
         [[inbox]]\nname = \"social\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imap_port}\ntls = \"none\"\n\
         username = \"social\"\npassword = \"file:social.pw\"\nblind_grace = \"5m\"\n{inbox_extra}\n\n\
         [[notifier]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\n",
        stack.smtp_port
    );
    for i in 0..n {
        toml.push_str(&format!(
            "[[channel]]\nid = \"ch-{i}\"\nname = \"ch-{i}\"\nkind = \"mail\"\nto = \"social@kommune.example\"\n\
             inbox = \"social\"\nschedule = \"{schedule}\"\ndeadline = \"{deadline}\"\n\n"
        ));
    }
    let config = dir.path().join("postcanary.toml");
    std::fs::write(&config, toml).unwrap();
    Setup { dir, config }
}

fn channel_pages(r: &Receiver) -> Vec<String> {
    r.accepted()
        .iter()
        .map(|p| p.json())
        .filter(|v| v["channel"]["id"] != "postcanary" && v["channel"] != "postcanary")
        .map(|v| v.to_string())
        .collect()
}

/// (c) IDLE that never pushes: the proxy drops every untagged EXISTS/RECENT.
/// With a 30 s deadline every probe must still be `delivered`, no channel paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_without_push_still_delivers_within_a_30s_deadline() {
    let stack = MailStack::start();
    let proxy = FaultProxy::start(stack.imap_port);
    proxy.swallow_exists(true);
    let hook = Receiver::start();
    // First firing within one interval (35 s), judged by its 30 s deadline.
    let s = setup(&stack, proxy.port, &hook.url("/hook"), 5, "every 35s", "30s", "");
    let mut daemon = Daemon::start(&s.config, &s.dir.path().join("daemon.log"));
    let store = wait_for("ledger", Duration::from_secs(10), async || {
        SqliteStore::open(&s.dir.path().join("ledger.db")).await.ok()
    })
    .await;
    let judged = wait_for("five judged probes", Duration::from_secs(120), async || {
        let mut all = Vec::new();
        for i in 0..5 {
            let p = store
                .recent_probes(&format!("ch-{i}"), 1)
                .await
                .ok()?
                .into_iter()
                .next()?;
            if !p.verdict.is_final() {
                return None;
            }
            all.push(p);
        }
        Some(all)
    })
    .await;
    for p in &judged {
        assert_eq!(p.verdict, Verdict::Delivered, "{p:?}");
    }
    assert!(channel_pages(&hook).is_empty(), "{:?}", channel_pages(&hook));
    assert!(daemon.terminate().success());
}

/// (g) `after_confirm = "move:Missing"` to a folder that does not exist: a
/// clear error naming the folder, and at most 5 logins in 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_to_a_missing_folder_is_a_clear_error_not_a_reconnect_loop() {
    let stack = MailStack::start();
    let proxy = FaultProxy::start(stack.imap_port);
    let hook = Receiver::start();
    let s = setup(
        &stack,
        proxy.port,
        &hook.url("/hook"),
        1,
        "every 5m",
        "20s",
        "after_confirm = \"move:Missing\"",
    );
    let log = s.dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&s.config, &log);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let logins = proxy.accepted_within(Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logins <= 5, "{logins} IMAP connections in 30 s");
    // Dovecot lets the watcher create the folder; a server that refuses gets
    // an error naming the folder and its separator. Either way, one line says so.
    assert!(
        text.lines()
            .any(|l| l.contains("Missing") && (l.contains("created the after_confirm folder") || l.contains("ERROR"))),
        "no line naming the folder `Missing` in the log:\n{text}"
    );
    let _ = daemon.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_cut_for_60s_with_50_channels_pages_no_channel_and_every_probe_is_delivered() {
    let stack = MailStack::start();
    let proxy = FaultProxy::start(stack.imap_port);
    let hook = Receiver::start();
    // The figure: 50 channels pending behind one blind IMAP server.
    let n = 50;
    let s = setup(&stack, proxy.port, &hook.url("/hook"), n, "every 35s", "20s", "");
    let mut daemon = Daemon::start(&s.config, &s.dir.path().join("daemon.log"));
    let store = wait_for("ledger", Duration::from_secs(10), async || {
        SqliteStore::open(&s.dir.path().join("ledger.db")).await.ok()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The watcher goes blind; Postfix keeps delivering over LMTP. A probe
    // found before the cut may already be delivered; nothing is judged after.
    let cut_at = postcanary::verdict::now_millis();
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let during: Vec<_> = {
        let mut v = Vec::new();
        for i in 0..n {
            v.extend(store.recent_probes(&format!("ch-{i}"), 10).await.unwrap_or_default());
        }
        v
    };
    assert!(!during.is_empty(), "probes were sent during the outage");
    assert!(
        during.iter().any(|p| p.created_at >= cut_at),
        "probes were sent during the outage"
    );
    assert!(
        during.iter().all(|p| p.verdict == Verdict::Pending
            || (p.verdict == Verdict::Delivered && p.judged_at.is_some_and(|j| j < cut_at))),
        "nothing is judged while the inbox is not watched: {:?}",
        during
            .iter()
            .map(|p| (p.verdict, p.created_at >= cut_at, p.judged_at.map(|j| j >= cut_at)))
            .collect::<Vec<_>>()
    );
    proxy.restore();
    let ids: Vec<String> = during.iter().map(|p| p.id.clone()).collect();
    let judged = wait_for("the outage's probes judged", Duration::from_secs(60), async || {
        let mut all = Vec::new();
        for id in &ids {
            let p = store.probe(id).await.ok()??;
            if !p.verdict.is_final() {
                return None;
            }
            all.push(p);
        }
        Some(all)
    })
    .await;
    for p in &judged {
        assert_eq!(p.verdict, Verdict::Delivered, "{p:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(channel_pages(&hook).is_empty(), "{:?}", channel_pages(&hook));
    let degraded = hook
        .accepted()
        .iter()
        .filter(|p| p.json()["event"] == "trigger")
        .count();
    assert!(degraded <= 1, "{degraded} triggers");
    assert!(daemon.terminate().success());
}
