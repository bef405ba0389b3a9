//! The IMAP-watching suite against a second real IMAP server: Debian's
//! Courier IMAP (tests/otherimap/, tests/support/otherimap.rs), fed by a
//! private Postfix delivering into its Maildirs. What Courier really does,
//! as these tests found and pin down:
//!
//! - With Debian's defaults (`IMAP_ENHANCEDIDLE=0`, `IMAP_IDLE_TIMEOUT=60`)
//!   it advertises IDLE but announces new mail only when it re-reads the
//!   Maildir, every 60 s; a NOOP makes it look at once.
//! - Folders live below `INBOX.` with `.` as separator (NAMESPACE
//!   `(("INBOX." "."))`); `CREATE Missing` is refused ("Invalid mailbox
//!   name"), so `move:Missing` cannot work, and `move:INBOX.Postcanary` does.
//! - It has UIDPLUS but no MOVE: postcanary moves by UID COPY + UID STORE
//!   \Deleted + UID EXPUNGE.
//!
//! Every case is bounded in time. In CI the server must start (the test
//! fails otherwise); elsewhere it is skipped only on a machine without
//! apt-get or root, saying so.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use postcanary::engine::Engine;
use postcanary::ledger::{sqlite::SqliteStore, ProbeRecord, Store};
use postcanary::verdict::Verdict;
use support::canary::{mail_channel, paging_engine, relay_config, send_raw_smtp, wait_for, Daemon};
use support::faultproxy::FaultProxy;
use support::otherimap::Courier;
use support::receiver::Receiver;

/// A config with one relay into Courier's Postfix, the given inboxes on
/// `imap_port` (name, extra keys), a webhook notifier and `channels`.
fn config(
    dir: &Path,
    c: &Courier,
    imap_port: u16,
    hook: &str,
    inboxes: &[(&str, &str)],
    channels: &str,
) -> std::path::PathBuf {
    relay_config(
        dir,
        c.smtp_port,
        imap_port,
        &|n| c.password(n),
        hook,
        "",
        inboxes,
        channels,
    )
}

async fn check(engine: &Engine, ids: &[&str]) -> Vec<ProbeRecord> {
    let chans: Vec<_> = ids
        .iter()
        .map(|id| engine.config.channel(id).expect("channel").clone())
        .collect();
    tokio::time::timeout(Duration::from_secs(60), engine.check(&chans))
        .await
        .expect("verdicts within 60 s")
        .expect("check")
}

/// (event, channel id) of every page accepted so far.
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

/// A line-by-line IMAP client for looking at what the server itself does.
struct Raw {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Raw {
    fn login(port: u16, user: &str, password: &str) -> Raw {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
        let w = s.try_clone().expect("clone");
        let mut raw = Raw {
            r: BufReader::new(s),
            w,
        };
        raw.line();
        raw.cmd("a", &format!("LOGIN {user} {password}"));
        raw.cmd("b", "SELECT INBOX");
        raw
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("read");
        l
    }
    /// Sends a tagged command; returns every line up to its tagged OK.
    fn cmd(&mut self, tag: &str, cmd: &str) -> Vec<String> {
        write!(self.w, "{tag} {cmd}\r\n").expect("write");
        let mut out = Vec::new();
        loop {
            let l = self.line();
            if l.starts_with(&format!("{tag} ")) {
                assert!(l.starts_with(&format!("{tag} OK")), "{cmd}: {l}");
                return out;
            }
            out.push(l);
        }
    }
}

/// What Courier's IDLE really does with Debian's defaults: new mail
/// delivered during IDLE is not announced within 10 s; a NOOP after DONE
/// reports it at once. This is why the watcher never relies on IDLE alone.
#[test]
fn courier_idle_does_not_announce_new_mail_but_noop_does() {
    let Some(c) = Courier::start() else { return };
    let mut raw = Raw::login(c.imap_port, "social", &c.password("social"));
    write!(raw.w, "i IDLE\r\n").expect("write");
    assert!(raw.line().starts_with('+'), "IDLE is offered and entered");
    send_raw_smtp(
        c.smtp_port,
        "social@kommune.example",
        "Subject: during idle\r\n\r\nhello\r\n",
    );
    wait_for_sync(Duration::from_secs(10), || c.count("social", "") == 1);
    // Nothing announced for 10 s (Courier re-reads the Maildir every 60 s).
    raw.r
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut l = String::new();
    let quiet = raw.r.read_line(&mut l).is_err();
    assert!(quiet, "Courier announced new mail during IDLE after all: {l:?}");
    raw.r
        .get_ref()
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    write!(raw.w, "DONE\r\n").expect("write");
    let mut after = raw.cmd("n", "NOOP");
    after.retain(|l| l.contains("EXISTS"));
    assert!(
        after.iter().any(|l| l.trim_end() == "* 1 EXISTS")
            || raw.cmd("m", "NOOP").iter().any(|l| l.contains("1 EXISTS")),
        "NOOP makes Courier look: {after:?}"
    );
}

fn wait_for_sync(limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Delivered and misrouted, each judged by a 15 s deadline although Courier's
/// IDLE would announce the mail only after 60 s: the sweeper's nudge at the
/// deadline (DONE + NOOP + UID SEARCH) finds it, and the arrival time is
/// Courier's INTERNALDATE, before the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_and_misrouted_on_courier_within_a_15s_deadline() {
    let Some(c) = Courier::start() else { return };
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let channels = format!(
        "{}{}",
        mail_channel("ok", "social@kommune.example", "social", "deadline = \"15s\""),
        mail_channel("wrong", "borger@kommune.example", "social", "deadline = \"15s\""),
    );
    let path = config(
        dir.path(),
        &c,
        c.imap_port,
        &hook.url("/hook"),
        &[("social", ""), ("borger", "")],
        &channels,
    );
    let engine = paging_engine(&path).await;
    let t0 = Instant::now();
    let p = check(&engine, &["ok", "wrong"]).await;
    assert_eq!(p[0].verdict, Verdict::Delivered, "{:?}\n{}", p[0], c.log_tail());
    assert!(p[0].latency_ms.is_some_and(|l| l < 15_000), "{:?}", p[0]);
    assert_eq!(p[1].verdict, Verdict::Misrouted, "{:?}", p[1]);
    assert!(p[1].detail.as_deref().unwrap_or("").contains("borger"), "{:?}", p[1]);
    assert!(
        t0.elapsed() < Duration::from_secs(40),
        "judged at the deadline, not at Courier's 60 s IDLE tick: {:?}",
        t0.elapsed()
    );
    engine.stop().await;
}

/// `after_confirm = "move:INBOX.Postcanary"`: the confirmed probe leaves
/// INBOX for the folder, by UID COPY + \Deleted + UID EXPUNGE (Courier has
/// no MOVE), and another message in INBOX is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_after_confirm_on_courier_moves_only_the_probe() {
    let Some(c) = Courier::start() else { return };
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(
        dir.path(),
        &c,
        c.imap_port,
        &hook.url("/hook"),
        &[("social", "after_confirm = \"move:INBOX.Postcanary\"")],
        &mail_channel("ok", "social@kommune.example", "social", "deadline = \"10s\""),
    );
    send_raw_smtp(
        c.smtp_port,
        "social@kommune.example",
        "Subject: a citizen\r\n\r\nnot a probe\r\n",
    );
    wait_for_sync(Duration::from_secs(10), || c.count("social", "") == 1);
    let engine = paging_engine(&path).await;
    let p = check(&engine, &["ok"]).await;
    assert_eq!(p[0].verdict, Verdict::Delivered, "{:?}", p[0]);
    // COPY, then \Deleted + UID EXPUNGE: two steps, so wait for both to show.
    wait_for_sync(Duration::from_secs(15), || {
        c.count("social", "Postcanary") == 1 && c.count("social", "") == 1
    });
    assert_eq!(c.count("social", "Postcanary"), 1, "the probe is in INBOX.Postcanary");
    assert_eq!(c.count("social", ""), 1, "the citizen's message stays in INBOX");
    // What IMAP clients see agrees with the Maildir.
    let mut raw = Raw::login(c.imap_port, "social", &c.password("social"));
    let status = raw.cmd("s", "STATUS INBOX.Postcanary (MESSAGES)");
    assert!(status.iter().any(|l| l.contains("MESSAGES 1")), "{status:?}");
    engine.stop().await;
}

/// `after_confirm = "move:Missing"`: Courier refuses to create a folder
/// outside `INBOX.`; the watcher logs one error naming the folder and the
/// server's way (`INBOX.Missing`), keeps watching without moving, and does
/// not reconnect in a loop (≤ 5 connections in 30 s); probes are still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_to_a_missing_folder_on_courier_is_one_clear_error_and_no_reconnect_loop() {
    let Some(c) = Courier::start() else { return };
    let proxy = FaultProxy::start(c.imap_port);
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(
        dir.path(),
        &c,
        proxy.port,
        &hook.url("/hook"),
        &[("social", "after_confirm = \"move:Missing\"")],
        &mail_channel(
            "ok",
            "social@kommune.example",
            "social",
            "schedule = \"every 8s\"\ndeadline = \"6s\"",
        ),
    );
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&path, &log);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let logins = proxy.accepted_within(Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(logins <= 5, "{logins} IMAP connections in 30 s:\n{text}");
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("Missing"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line naming the folder:\n{text}");
    assert!(
        errors[0].contains("INBOX.Missing"),
        "the hint names Courier's form: {}",
        errors[0]
    );
    let store = SqliteStore::open(&dir.path().join("ledger.db")).await.expect("ledger");
    let probes = store.recent_probes("ok", 10).await.expect("probes");
    assert!(
        probes.iter().any(|p| p.verdict == Verdict::Delivered),
        "probes are still judged: {:?}",
        probes.iter().map(|p| p.verdict).collect::<Vec<_>>()
    );
    assert!(probes
        .iter()
        .all(|p| !matches!(p.verdict, Verdict::Missed | Verdict::Error)));
    assert!(c.count("social", "") >= 1, "probe mail stays in INBOX");
    assert!(daemon.terminate().success());
}

/// The watcher's connection to Courier is cut for 20 s with 8 probes of
/// 10 s deadline pending: nothing is judged while blind, all are
/// `delivered` after the reconnect, no page at all. Then Courier itself is
/// stopped and started again (new processes, same Maildir): the watcher
/// comes back and the next probe is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_a_cut_and_a_restart_on_courier() {
    let Some(c) = Courier::start() else { return };
    let proxy = FaultProxy::start(c.imap_port);
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 8;
    let channels: String = (0..n)
        .map(|i| {
            mail_channel(
                &format!("ch-{i}"),
                "social@kommune.example",
                "social",
                "deadline = \"10s\"",
            )
        })
        .collect();
    let path = config(
        dir.path(),
        &c,
        proxy.port,
        &hook.url("/hook"),
        &[("social", "")],
        &channels,
    );
    let engine = paging_engine(&path).await;
    proxy.cut();
    let ctx = engine.probe_context();
    let mut ids = Vec::new();
    for ch in engine.config.channels.clone() {
        ids.push(
            postcanary::probe::run(&ctx, &engine.config, &ch)
                .await
                .expect("probe")
                .id,
        );
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    for id in &ids {
        let p = engine.store.probe(id).await.expect("ledger").expect("probe");
        assert_eq!(p.verdict, Verdict::Pending, "not judged while blind: {p:?}");
    }
    wait_for_sync(Duration::from_secs(5), || c.count("social", "") == n);
    proxy.restore();
    let judged = wait_for("the cut's probes judged", Duration::from_secs(40), async || {
        let mut all = Vec::new();
        for id in &ids {
            let p = engine.store.probe(id).await.ok()??;
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
    // Courier itself goes away and comes back.
    c.stop_imap();
    c.start_imap();
    let p = check(&engine, &["ch-0"]).await;
    assert_eq!(p[0].verdict, Verdict::Delivered, "{:?}\n{}", p[0], c.log_tail());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pages(&hook).is_empty(), "{:?}", pages(&hook));
    engine.stop().await;
}
