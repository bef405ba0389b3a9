//! Issue 12, "verdicts you can trust", the remaining cases against the real
//! Postfix + Dovecot (trust_e2e.rs has IDLE without push, the missing move
//! folder and the IMAP cut): a refused IMAP login, a deadline longer than the
//! interval with a channel flapping, a copied token mailed in by someone
//! else, and a forged DSN in the main inbox. Pages go to a local webhook
//! receiver; verdicts are read from the ledger. Every wait is bounded.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use postcanary::engine::Engine;
use postcanary::ledger::{sqlite::SqliteStore, ProbeRecord, Store};
use postcanary::verdict::Verdict;
use support::canary::{
    lmtp_deliver, mail_channel, paging_engine, relay_config, send_raw_smtp, wait_for, Daemon, StackExt,
};
use support::mailstack::MailStack;
use support::receiver::Receiver;

/// The config: a relay (with `sender_extra`), the inboxes (name, extra keys),
/// all through `imap_port`, a webhook notifier, and `channels`.
fn config(
    dir: &Path,
    stack: &MailStack,
    imap_port: u16,
    hook: &str,
    sender_extra: &str,
    inboxes: &[(&str, &str)],
    channels: &str,
) -> std::path::PathBuf {
    relay_config(
        dir,
        stack.smtp_port,
        imap_port,
        &|n| stack.password(n),
        hook,
        sender_extra,
        inboxes,
        channels,
    )
}

/// Fires one channel now; returns its probe id.
async fn fire(engine: &Engine, id: &str) -> String {
    let ch = engine.config.channel(id).expect("channel").clone();
    postcanary::probe::run(&engine.probe_context(), &engine.config, &ch)
        .await
        .expect("probe")
        .id
}

async fn probes(store: &dyn Store, ids: &[String]) -> Vec<ProbeRecord> {
    let mut out = Vec::new();
    for id in ids {
        out.push(store.probe(id).await.expect("ledger").expect("probe"));
    }
    out
}

async fn wait_final(store: &dyn Store, ids: &[String], limit: Duration) -> Vec<ProbeRecord> {
    wait_for("final verdicts", limit, async || {
        let p = probes(store, ids).await;
        p.iter().all(|p| p.verdict.is_final()).then_some(p)
    })
    .await
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

fn channel_pages(hook: &Receiver) -> Vec<(String, String)> {
    pages(hook).into_iter().filter(|(_, ch)| ch != "postcanary").collect()
}

/// Replaces `user`'s password in the test Dovecot's passwd-file (read again
/// on every login) and kicks the user's sessions, as an admin would.
fn break_password(stack: &MailStack, user: &str, password: &str) {
    let users = stack.dir.path().join("dovecot/users");
    let text = std::fs::read_to_string(&users).expect("users");
    let out: String = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{user}:")) {
                format!("{user}:{{PLAIN}}{password}::::::\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&users, out).expect("write users");
    kick(stack, user);
}

/// Ends `user`'s IMAP sessions with `doveadm kick`.
fn kick(stack: &MailStack, user: &str) {
    let conf = stack.dir.path().join("dovecot/dovecot.conf");
    let kick = Command::new("doveadm")
        .arg("-c")
        .arg(&conf)
        .args(["kick", user])
        .output()
        .expect("doveadm");
    // doveadm kick exits 68 ("no such user") when nobody was connected: fine.
    assert!(
        kick.status.success() || kick.status.code() == Some(68),
        "doveadm kick: {}\n{}",
        String::from_utf8_lossy(&kick.stdout),
        String::from_utf8_lossy(&kick.stderr)
    );
}

/// (b) The watcher's password is changed on the server and its session
/// kicked while 10 probes are pending: the watcher is refused at every
/// login, nothing is judged while it is blind, no channel is paged; after
/// the password is repaired every probe is `delivered`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_imap_login_pages_no_channel_and_after_repair_every_probe_is_delivered() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 10;
    let channels: String = (0..n)
        .map(|i| {
            mail_channel(
                &format!("ch-{i}"),
                "social@kommune.example",
                "social",
                "deadline = \"8s\"",
            )
        })
        .collect();
    let path = config(
        dir.path(),
        &stack,
        stack.imap_port,
        &hook.url("/hook"),
        "",
        &[("social", "")],
        &channels,
    );
    let engine = paging_engine(&path).await;
    let good = stack.password("social");
    // The watcher first logs in, so the kick below meets a live session
    // (a login racing the kick would otherwise outlive the password change).
    wait_for("the watcher to connect", Duration::from_secs(15), async || {
        engine
            .watcher_states()
            .iter()
            .any(|(_, s)| s.is_connected())
            .then_some(())
    })
    .await;
    break_password(&stack, "social", "not-the-watchers-password");
    let mut kicked = Instant::now();
    let refused = wait_for("the watcher to be refused", Duration::from_secs(20), async || {
        let states = engine.watcher_states();
        if states.iter().any(|(_, s)| s.is_connected()) && kicked.elapsed() > Duration::from_secs(2) {
            // Still in the session it had before the change: kick it again.
            kick(&stack, "social");
            kicked = Instant::now();
        }
        states
            .iter()
            .find(
                |(_, s)| matches!(s, postcanary::inbox::imap::WatcherState::Backoff(e) if e.contains("refused login")),
            )
            .cloned()
    })
    .await;
    assert!(!refused.1.is_connected());
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(fire(&engine, &format!("ch-{i}")).await);
    }
    // Twice the deadline with the watcher refused: Postfix delivered them all.
    tokio::time::sleep(Duration::from_secs(16)).await;
    let during = probes(engine.store.as_ref(), &ids).await;
    assert!(
        during.iter().all(|p| p.verdict == Verdict::Pending),
        "nothing is judged while the watcher is refused: {:?}",
        during.iter().map(|p| p.verdict).collect::<Vec<_>>()
    );
    assert_eq!(
        support::canary::imap_count(stack.imap_port, "social", "not-the-watchers-password", "INBOX"),
        n as u32,
        "every probe reached the mailbox"
    );
    // The admin puts the password back; the watcher's next login (backoff ≤ 5 s) succeeds.
    break_password(&stack, "social", &good);
    let judged = wait_final(engine.store.as_ref(), &ids, Duration::from_secs(30)).await;
    for p in &judged {
        assert_eq!(p.verdict, Verdict::Delivered, "{p:?}");
        assert!(
            p.latency_ms.is_some_and(|l| l < 8_000),
            "the arrival is the mailbox's time, not the moment of the reconnect: {p:?}"
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(channel_pages(&hook).is_empty(), "{:?}", channel_pages(&hook));
    let triggers = pages(&hook).iter().filter(|(e, _)| e == "trigger").count();
    assert!(triggers <= 1, "at most one degraded page: {:?}", pages(&hook));
    engine.stop().await;
}

/// The test Postfix's virtual alias map with `extra` lines added to its own.
fn aliases(stack: &MailStack, extra: &str) {
    stack.set_map(
        "virtual",
        &format!(
            "familie@kommune.example closed@kommune.example\n\
             spamfiltered@kommune.example social+Junk@kommune.example\n{extra}"
        ),
    );
}

/// Routes `flap@` into borger's mailbox, or into the black hole (`retired@`
/// is accepted and discarded).
fn route_flap(stack: &MailStack, working: bool) {
    let to = if working { "borger" } else { "retired" };
    aliases(stack, &format!("flap@kommune.example {to}@kommune.example\n"));
}

/// (d) A deadline longer than the interval (every 4 s, deadline 10 s) and a
/// channel black-holed for 16 s, then routed back: older probes' `missed`
/// arrive after newer probes' successes, and still the outage is exactly one
/// trigger and one resolve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flap_with_the_deadline_longer_than_the_interval_is_one_trigger_and_one_resolve() {
    let stack = MailStack::start();
    route_flap(&stack, true);
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(
        dir.path(),
        &stack,
        stack.imap_port,
        &hook.url("/hook"),
        "",
        &[("borger", "")],
        &mail_channel(
            "flap",
            "flap@kommune.example",
            "borger",
            "schedule = \"every 4s\"\ndeadline = \"10s\"",
        ),
    );
    let mut daemon = Daemon::start(&path, &dir.path().join("daemon.log"));
    let store = wait_for("ledger", Duration::from_secs(10), async || {
        SqliteStore::open(&dir.path().join("ledger.db")).await.ok()
    })
    .await;
    wait_for("two delivered probes", Duration::from_secs(30), async || {
        let p = store.recent_probes("flap", 10).await.ok()?;
        (p.iter().filter(|p| p.verdict == Verdict::Delivered).count() >= 2).then_some(())
    })
    .await;
    route_flap(&stack, false);
    tokio::time::sleep(Duration::from_secs(16)).await;
    route_flap(&stack, true);
    let restored_at = postcanary::verdict::now_millis();
    // Wait until the probes of the outage are all judged (their deadlines
    // come after the first successes of the repaired route) and three probes
    // made after the repair are delivered.
    let all = wait_for(
        "the outage judged and three deliveries after it",
        Duration::from_secs(60),
        async || {
            let p = store.recent_probes("flap", 100).await.ok()?;
            let before: Vec<_> = p.iter().filter(|p| p.created_at < restored_at).collect();
            let after = p
                .iter()
                .filter(|p| p.created_at > restored_at + 1_000 && p.verdict == Verdict::Delivered)
                .count();
            (before.iter().all(|p| p.verdict.is_final()) && after >= 3).then_some(p)
        },
    )
    .await;
    let missed = all.iter().filter(|p| p.verdict == Verdict::Missed).count();
    assert!(
        missed >= 2,
        "the black hole was caught: {:?}",
        all.iter().map(|p| p.verdict).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = channel_pages(&hook);
    assert_eq!(
        p,
        vec![
            ("trigger".to_string(), "flap".to_string()),
            ("resolve".to_string(), "flap".to_string())
        ],
        "one outage, one trigger and one resolve; verdicts oldest first: {:?}",
        all.iter().rev().map(|p| p.verdict).collect::<Vec<_>>()
    );
    assert!(daemon.terminate().success());
}

/// (e) The channel's address is black-holed; someone copies its pending
/// token as postcanary shows it (API, ledger, logs: `pc-<ULID>`, with or
/// without a made-up tag) and mails it from another sender into the watched
/// inbox. The probe stays `missed`, the copy is the probe's evidence, and
/// nothing resolves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_token_from_another_sender_changes_no_verdict() {
    let stack = MailStack::start();
    route_flap(&stack, false);
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(
        dir.path(),
        &stack,
        stack.imap_port,
        &hook.url("/hook"),
        "",
        &[("borger", "")],
        &mail_channel("hole", "flap@kommune.example", "borger", "deadline = \"12s\""),
    );
    let engine = paging_engine(&path).await;
    let first = fire(&engine, "hole").await;
    let missed = wait_final(
        engine.store.as_ref(),
        std::slice::from_ref(&first),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(missed[0].verdict, Verdict::Missed, "{:?}", missed[0]);
    wait_for("the trigger", Duration::from_secs(10), async || {
        (!channel_pages(&hook).is_empty()).then_some(())
    })
    .await;
    // The next probe, still black-holed; its token copied while pending.
    let id = fire(&engine, "hole").await;
    let shown = engine.store.probe(&id).await.expect("ledger").expect("probe").token;
    assert_eq!(shown.len(), 29, "postcanary shows pc-<ULID> only: {shown}");
    let copy = format!(
        "Subject: Re: {shown}\r\nMessage-ID: <copy-{shown}@example.net>\r\n\r\n\
         Forwarding {shown} and {shown}-0123456789abcdef as seen on the status page.\r\n"
    );
    send_raw_smtp(stack.smtp_port, "borger@kommune.example", &copy);
    let judged = wait_final(
        engine.store.as_ref(),
        std::slice::from_ref(&id),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(judged[0].verdict, Verdict::Missed, "{:?}", judged[0]);
    let events = engine.store.events(&id).await.expect("events");
    let foreign: Vec<_> = events.iter().filter(|e| e.kind == "foreign").collect();
    assert_eq!(foreign.len(), 1, "the copy is kept as evidence, once: {events:?}");
    assert!(
        foreign[0].detail.contains("foreign message with token") && foreign[0].detail.contains(&shown),
        "{foreign:?}"
    );
    assert!(
        !foreign[0].detail.contains("0123456789abcdef"),
        "the evidence shows the token without a tag: {foreign:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        channel_pages(&hook),
        vec![("trigger".to_string(), "hole".to_string())],
        "the copy resolved nothing"
    );
    engine.stop().await;
}

/// Defers (or releases) every delivery of the test Postfix to Dovecot: the
/// message waits in the queue, where its full token can be read.
fn hold_deliveries(stack: &MailStack, hold: bool) {
    let value = if hold {
        "defer_transports=lmtp"
    } else {
        "defer_transports="
    };
    let out = Command::new("postconf")
        .arg("-c")
        .arg(stack.dir.path().join("postfix"))
        .args(["-e", value])
        .output()
        .expect("postconf");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stack.reload_postfix();
    if !hold {
        stack.flush_queue();
    }
}

/// The whole message of the one mail in the test Postfix's queue.
fn queued_message(stack: &MailStack) -> String {
    let conf = stack.dir.path().join("postfix");
    let q = Command::new("postqueue")
        .arg("-c")
        .arg(&conf)
        .arg("-j")
        .output()
        .expect("postqueue");
    let line = String::from_utf8_lossy(&q.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("postqueue -j: {e}: {line:?}"));
    let id = v["queue_id"].as_str().expect("queue_id").to_string();
    let cat = Command::new("postcat")
        .arg("-c")
        .arg(&conf)
        .args(["-bh", "-q", &id])
        .output()
        .expect("postcat");
    String::from_utf8_lossy(&cat.stdout).to_string()
}

/// (f) A forged DSN naming a healthy channel's probe — with its real token
/// and Message-ID, read from the queue while the probe was held up — dropped
/// into the main inbox rather than the relay's return path (`bounce_inbox`):
/// it is evidence, not a verdict; the probe is `delivered`, nobody is paged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_dsn_in_the_main_inbox_is_ignored() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = config(
        dir.path(),
        &stack,
        stack.imap_port,
        &hook.url("/hook"),
        "bounce_inbox = \"canary\"",
        &[("social", ""), ("canary", "")],
        &mail_channel("healthy", "social@kommune.example", "social", "deadline = \"40s\""),
    );
    let engine = paging_engine(&path).await;
    hold_deliveries(&stack, true);
    let id = fire(&engine, "healthy").await;
    let message = wait_for("the probe in the queue", Duration::from_secs(10), async || {
        let m = queued_message(&stack);
        m.contains("Message-ID").then_some(m)
    })
    .await;
    let shown = engine.store.probe(&id).await.expect("ledger").expect("probe").token;
    let token = postcanary::token::find_candidates(message.as_bytes())
        .into_iter()
        .find(|t| t.starts_with(&shown))
        .unwrap_or_else(|| panic!("no full token in the queued probe:\n{message}"));
    let message_id = message
        .lines()
        .find_map(|l| {
            l.strip_prefix("Message-ID: ")
                .or_else(|| l.strip_prefix("Message-Id: "))
        })
        .expect("Message-ID")
        .trim()
        .to_string();
    let dsn = format!(
        "From: MAILER-DAEMON@mx.kommune.example\r\nTo: canary@kommune.example\r\n\
         Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n\r\n\
         --b\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver your message.\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.kommune.example\r\n\r\n\
         Final-Recipient: rfc822; social@kommune.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\
         Diagnostic-Code: smtp; 550 5.1.1 User unknown\r\n\r\n\
         --b\r\nContent-Type: text/rfc822-headers\r\n\r\nSubject: {token}\r\nX-Postcanary-Token: {token}\r\n\
         Message-ID: {message_id}\r\n\r\n--b--\r\n"
    );
    // Straight into social's INBOX over Dovecot's LMTP (Postfix is holding deliveries).
    lmtp_deliver(stack.lmtp_port, "social@kommune.example", &dsn);
    let noted = wait_for(
        "the forged DSN noted as evidence",
        Duration::from_secs(15),
        async || {
            let events = engine.store.events(&id).await.ok()?;
            events
                .into_iter()
                .find(|e| e.kind == "foreign" && e.detail.contains("not in the return path"))
        },
    )
    .await;
    assert!(
        noted.detail.contains("`social`") && noted.detail.contains("`canary`"),
        "{noted:?}"
    );
    let p = engine.store.probe(&id).await.expect("ledger").expect("probe");
    assert_eq!(p.verdict, Verdict::Pending, "the forgery decided nothing: {p:?}");
    hold_deliveries(&stack, false);
    let judged = wait_final(
        engine.store.as_ref(),
        std::slice::from_ref(&id),
        Duration::from_secs(45),
    )
    .await;
    assert_eq!(
        judged[0].verdict,
        Verdict::Delivered,
        "{:?}\n{}",
        judged[0],
        stack.log_tail()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(pages(&hook).is_empty(), "{:?}", pages(&hook));
    engine.stop().await;
}
