//! The mail canary end to end against a real Postfix + Dovecot on loopback
//! (started from temp dirs by tests/mailstack/mailstack.sh).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::ledger::{sqlite::SqliteStore, ProbeRecord, Store};
use postcanary::verdict::Verdict;
use support::canary::{imap_count, lmtp_deliver, send_raw_smtp, wait_for, Daemon, StackExt};
use support::mailstack::MailStack;

/// A config directory for one test: secrets in files, ledger inside.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn ledger(&self) -> PathBuf {
        self.dir.path().join("ledger.db")
    }
}

fn inbox_toml(stack: &MailStack, dir: &Path, name: &str, idle: bool, poll: &str) -> String {
    let pw = dir.join(format!("{name}.pw"));
    std::fs::write(&pw, format!("{}\n", stack.password(name))).unwrap();
    format!(
        "[[inbox]]\nname = \"{name}\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = \"{name}\"\npassword = \"file:{}\"\nafter_confirm = \"move:Postcanary\"\nidle = {idle}\npoll_interval = \"{poll}\"\n\n",
        stack.imap_port,
        pw.display()
    )
}

/// Writes a config with a plain relay (`relay`), an authenticated submission
/// relay (`submission`, password `submission_pw`), the inboxes social,
/// borger and closed, and the given channels.
fn setup_with(stack: &MailStack, channels: &str, submission_pw: &str, idle: bool, poll: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("submission.pw"), submission_pw).unwrap();
    let mut toml = format!(
        "[ledger]\nurl = \"sqlite://{}\"\n\n[defaults]\nschedule = \"every 1h\"\ndeadline = \"20s\"\n\n\
         [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"Postcanary <canary@kommune.example>\"\ntimeout = \"10s\"\n\n\
         [[sender]]\nname = \"submission\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = \"canary\"\npassword = \"file:submission.pw\"\nfrom = \"canary@kommune.example\"\ntimeout = \"10s\"\n\n",
        dir.path().join("ledger.db").display(),
        stack.smtp_port,
        stack.submission_port,
    );
    for name in ["social", "borger", "closed"] {
        toml.push_str(&inbox_toml(stack, dir.path(), name, idle, poll));
    }
    toml.push_str(channels);
    let config = dir.path().join("postcanary.toml");
    std::fs::write(&config, toml).unwrap();
    Setup { dir, config }
}

fn setup(stack: &MailStack, channels: &str) -> Setup {
    setup_with(stack, channels, &stack.password("canary"), true, "30s")
}

fn channel(id: &str, to: &str, extra: &str) -> String {
    format!("[[channel]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"mail\"\nto = \"{to}\"\nvia = \"relay\"\n{extra}\n\n")
}

async fn start_engine(s: &Setup) -> Engine {
    let config = Config::load(&s.config).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(config).await.unwrap();
    assert!(
        engine.wait_watchers_connected(Duration::from_secs(15)).await,
        "{:?}",
        engine.watcher_states()
    );
    engine
}

async fn check_one(engine: &Engine, id: &str) -> ProbeRecord {
    let ch = engine.config.channel(id).unwrap().clone();
    let mut out = engine.check(&[ch]).await.unwrap();
    out.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_probe_records_latency_and_queue_id() {
    let stack = MailStack::start();
    let s = setup(
        &stack,
        &channel("social-mail", "social@kommune.example", "inbox = \"social\""),
    );
    let engine = start_engine(&s).await;
    let p = check_one(&engine, "social-mail").await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{}", stack.log_tail());
    let latency = p.latency_ms.unwrap();
    assert!((0..20_000).contains(&latency), "{latency}");
    assert!(p.smtp_reply.as_deref().unwrap_or("").contains("queued as"), "{p:?}");
    assert_eq!(p.found_in.as_deref(), Some("social"));
    let kinds: Vec<String> = engine
        .store
        .events(&p.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    // The arrival keeps the path it travelled (`path`) before the verdict.
    assert_eq!(kinds, vec!["created", "sent", "path", "verdict"]);
    // after_confirm = "move:Postcanary": the confirmed message left the inbox.
    let pw = stack.password("social");
    let moved = wait_for("the probe moved to Postcanary", Duration::from_secs(10), async || {
        (imap_count(stack.imap_port, "social", &pw, "Postcanary") == 1).then_some(())
    });
    moved.await;
    assert_eq!(imap_count(stack.imap_port, "social", &pw, "INBOX"), 0);
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discarded_address_is_missed_at_the_deadline() {
    let stack = MailStack::start();
    let s = setup(
        &stack,
        &channel(
            "retired-mail",
            "retired@kommune.example",
            "inbox = \"social\"\ndeadline = \"4s\"",
        ),
    );
    let engine = start_engine(&s).await;
    let t0 = Instant::now();
    let p = check_one(&engine, "retired-mail").await;
    let took = t0.elapsed();
    assert_eq!(p.verdict, Verdict::Missed, "{p:?}");
    assert!(
        p.smtp_reply.as_deref().unwrap_or("").starts_with("250"),
        "accepted with 250: {p:?}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "judged after {took:?}"
    );
    assert!(
        p.judged_at.unwrap() - p.deadline < 1_000,
        "swept within a second of the deadline: {p:?}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliased_into_another_watched_mailbox_is_misrouted() {
    let stack = MailStack::start();
    let s = setup(
        &stack,
        &channel("familie-mail", "familie@kommune.example", "inbox = \"social\""),
    );
    let engine = start_engine(&s).await;
    let p = check_one(&engine, "familie-mail").await;
    assert_eq!(p.verdict, Verdict::Misrouted, "{p:?}");
    assert_eq!(p.found_in.as_deref(), Some("closed"));
    assert!(
        p.detail
            .as_deref()
            .unwrap_or("")
            .contains("expected in `social`, found in `closed`"),
        "{p:?}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_recipient_is_rejected_with_the_servers_words() {
    let stack = MailStack::start();
    let channels = channel("unknown-mail", "unknown@kommune.example", "inbox = \"social\"")
        + &channel("unknown-bounce", "unknown@kommune.example", "expect = \"bounce\"");
    let s = setup(&stack, &channels);
    let engine = start_engine(&s).await;
    let p = check_one(&engine, "unknown-mail").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let detail = p.detail.unwrap_or_default();
    assert!(
        detail.contains("550") && detail.contains("unknown@kommune.example"),
        "{detail}"
    );
    let p = check_one(&engine, "unknown-bounce").await;
    assert_eq!(p.verdict, Verdict::ExpectedBounce, "{p:?}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_auth_refused_is_our_error_not_the_channels() {
    let stack = MailStack::start();
    let ch = "[[channel]]\nid = \"social-sub\"\nname = \"x\"\nkind = \"mail\"\nto = \"social@kommune.example\"\n\
              via = \"submission\"\ninbox = \"social\"\n";
    // Right password: delivered through the authenticated relay.
    let s = setup(&stack, ch);
    let engine = start_engine(&s).await;
    assert_eq!(check_one(&engine, "social-sub").await.verdict, Verdict::Delivered);
    engine.stop().await;
    // Wrong password: error, naming authentication, never the password.
    let s = setup_with(&stack, ch, "wrong-password-xyz", true, "30s");
    let engine = start_engine(&s).await;
    let p = check_one(&engine, "social-sub").await;
    assert_eq!(p.verdict, Verdict::Error, "{p:?}");
    let detail = p.detail.unwrap_or_default();
    assert!(detail.contains("refused authentication"), "{detail}");
    assert!(!detail.contains("wrong-password-xyz"));
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_token_is_ignored() {
    let stack = MailStack::start();
    let s = setup(
        &stack,
        &channel(
            "retired-mail",
            "retired@kommune.example",
            "inbox = \"social\"\ndeadline = \"5s\"",
        ),
    );
    let engine = start_engine(&s).await;
    let ch = engine.config.channel("retired-mail").unwrap().clone();
    let started = postcanary::probe::run(&engine.probe_context(), &engine.config, &ch)
        .await
        .unwrap();
    // Same ULID, forged tag, sent where the probe was expected to land.
    let real = &started.message_token;
    let forged = format!("{}0000000000000000", &real[..real.len() - 16]);
    assert_ne!(&forged, real);
    send_raw_smtp(
        stack.smtp_port,
        "social@kommune.example",
        &format!("Subject: {forged}\r\nX-Postcanary-Token: {forged}\r\n\r\n{forged}\r\n"),
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let p = loop {
        let p = engine.store.probe(&started.id).await.unwrap().unwrap();
        if p.verdict.is_final() || Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(p.verdict, Verdict::Missed, "forged token must not count: {p:?}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_restart_while_pending_still_delivers() {
    let stack = MailStack::start();
    let s = setup(
        &stack,
        &channel(
            "social-mail",
            "social@kommune.example",
            "inbox = \"social\"\ndeadline = \"40s\"",
        ),
    );
    let engine = start_engine(&s).await;
    let mut states = engine.watcher_states();
    assert!(states.iter().all(|(_, st)| st.is_connected()));
    let ch = engine.config.channel("social-mail").unwrap().clone();
    // Dovecot goes down with the watcher in IDLE; the probe is sent meanwhile.
    stack.restart_imap_with(|| {
        let engine_ctx = engine.probe_context();
        let config = Arc::clone(&engine.config);
        let ch = ch.clone();
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async move {
                postcanary::probe::run(&engine_ctx, &config, &ch).await.unwrap();
            })
        });
    });
    stack.flush_queue();
    let t0 = Instant::now();
    let p = loop {
        let recent = engine.store.recent_probes("social-mail", 1).await.unwrap();
        let p = recent.into_iter().next().unwrap();
        if p.verdict.is_final() || t0.elapsed() > Duration::from_secs(45) {
            break p;
        }
        stack.flush_queue();
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{}", stack.log_tail());
    // Every watcher is (back) in IDLE; one may still be finishing a reconnect
    // its backoff had scheduled while Dovecot was down.
    let t1 = Instant::now();
    loop {
        states = engine.watcher_states();
        if states.iter().all(|(_, st)| st.is_connected()) {
            break;
        }
        assert!(t1.elapsed() < Duration::from_secs(15), "{states:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    engine.stop().await;
}

/// Six probes at once through the authenticated submission relay with
/// `connections = 1`: Postfix sees one connection and one login, six
/// transactions with six queue ids, and every probe is delivered on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_at_once_share_one_authenticated_session_with_postfix() {
    let stack = MailStack::start();
    let channels: String = (0..6)
        .map(|i| {
            channel(&format!("ch-{i}"), "social@kommune.example", "inbox = \"social\"")
                .replace("via = \"relay\"", "via = \"submission\"")
        })
        .collect();
    let s = setup(&stack, &channels);
    let text = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        text.replace("username = \"canary\"", "connections = 1\nusername = \"canary\""),
    )
    .unwrap();
    let maillog = stack.dir.path().join("postfix/maillog");
    let before = std::fs::read_to_string(&maillog).unwrap_or_default().len();
    let engine = start_engine(&s).await;
    let chs: Vec<_> = engine.config.channels.clone();
    let judged = engine.check(&chs).await.unwrap();
    let mut queue_ids = std::collections::BTreeSet::new();
    for p in &judged {
        assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{}", stack.log_tail());
        queue_ids.insert(p.smtp_reply.clone().unwrap_or_default());
    }
    assert_eq!(queue_ids.len(), 6, "six transactions, six queue ids: {queue_ids:?}");
    // The kept session is closed with QUIT once idle (2 s). (The stack's
    // own readiness checks connect too; they send no command.)
    let log = wait_for("the session to end with QUIT", Duration::from_secs(15), async || {
        let log = std::fs::read_to_string(&maillog).unwrap_or_default()[before..].to_string();
        log.lines()
            .any(|l| l.contains("disconnect from") && l.contains("quit=1"))
            .then_some(log)
    })
    .await;
    let sessions: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("postfix/submission/smtpd[") && l.contains("disconnect from"))
        .filter(|l| !l.contains("commands=0/0"))
        .collect();
    assert_eq!(sessions.len(), 1, "one session with commands:\n{log}");
    assert!(
        sessions[0].contains("auth=1") && sessions[0].contains("mail=6") && sessions[0].contains("data=6"),
        "one login, six transactions:\n{log}"
    );
    engine.stop().await;
}

/// Back-to-back arrivals, each right after the previous verdict (while the
/// watcher is still moving the last message away), are all seen by IDLE,
/// not by the next poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_arrivals_are_each_confirmed_promptly() {
    let stack = MailStack::start();
    let s = setup_with(
        &stack,
        &channel("social-mail", "social@kommune.example", "inbox = \"social\""),
        "x",
        true,
        "1h",
    );
    let engine = start_engine(&s).await;
    let ch = engine.config.channel("social-mail").unwrap().clone();
    let mut verdicts = engine.verdicts.subscribe();
    for i in 0..5 {
        // A probe row as `probe::run` writes it, then the message straight into the mailbox.
        let token = engine.key.issue(std::time::SystemTime::now());
        let now = postcanary::verdict::now_millis();
        engine
            .store
            .insert_probe(&postcanary::ledger::NewProbe {
                id: token.id(),
                token: token.to_string(),
                channel: ch.id.clone(),
                kind: "mail".into(),
                expect: ch.expect,
                inbox: ch.inbox.clone(),
                target: "social@kommune.example".into(),
                created_at: now,
                deadline: now + 60_000,
                run_id: engine.run_id.clone(),
            })
            .await
            .unwrap();
        engine.store.record_sent(&token.id(), now, "250 test").await.unwrap();
        let port = stack.lmtp_port;
        let msg = format!("Subject: {token}\r\n\r\n{token}\r\n");
        tokio::task::spawn_blocking(move || lmtp_deliver(port, "social@kommune.example", &msg))
            .await
            .unwrap();
        let t0 = Instant::now();
        let v = loop {
            let v = tokio::time::timeout(Duration::from_secs(10), verdicts.recv())
                .await
                .unwrap_or_else(|_| panic!("arrival {i} not confirmed within 10s (IDLE missed it)"))
                .unwrap();
            if v.probe_id == token.id() {
                break v;
            }
        };
        assert_eq!(v.verdict, Verdict::Delivered);
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "arrival {i} took {:?}",
            t0.elapsed()
        );
    }
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_probe_survives_kill_9_and_is_confirmed_after_restart() {
    let stack = MailStack::start();
    // Polling hourly, so the running daemon does not see the arrival: only the
    // catch-up of the restarted daemon can confirm it.
    let channels = channel(
        "social-mail",
        "social@kommune.example",
        "inbox = \"social\"\nschedule = \"every 3s\"\ndeadline = \"1m\"",
    ) + &channel(
        "retired-mail",
        "retired@kommune.example",
        "inbox = \"social\"\nschedule = \"every 3s\"\ndeadline = \"3s\"",
    );
    let s = setup_with(&stack, &channels, &stack.password("canary"), false, "1h");
    let log = s.dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&s.config, &log);
    let store = wait_for("ledger", Duration::from_secs(10), async || {
        SqliteStore::open(&s.ledger()).await.ok()
    })
    .await;
    let probe = |channel: &'static str| {
        let store = &store;
        async move || -> Option<ProbeRecord> {
            let p = store.recent_probes(channel, 10).await.ok()?;
            p.into_iter().rev().find(|p| p.sent_at.is_some())
        }
    };
    let first = wait_for("a sent social probe", Duration::from_secs(15), probe("social-mail")).await;
    let retired = wait_for("a sent retired probe", Duration::from_secs(15), probe("retired-mail")).await;
    daemon.kill9();
    // While the daemon is dead, the social probe lands and the retired one's deadline passes.
    std::thread::sleep(Duration::from_secs(4));
    let before = store.probe(&first.id).await.unwrap().unwrap();
    assert_eq!(
        before.verdict,
        Verdict::Pending,
        "nothing judged it while polling hourly: {before:?}"
    );

    let mut daemon = Daemon::start(&s.config, &log);
    let confirmed = wait_for(
        "social probe confirmed after restart",
        Duration::from_secs(20),
        async || store.probe(&first.id).await.ok()?.filter(|p| p.verdict.is_final()),
    )
    .await;
    assert_eq!(
        confirmed.verdict,
        Verdict::Delivered,
        "{confirmed:?}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let missed = wait_for(
        "retired probe judged after restart",
        Duration::from_secs(10),
        async || store.probe(&retired.id).await.ok()?.filter(|p| p.verdict.is_final()),
    )
    .await;
    assert_eq!(missed.verdict, Verdict::Missed, "{missed:?}");
    let status = daemon.terminate();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(log_text.contains("SIGTERM received"), "{log_text}");
    for line in log_text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
    }
    for name in ["social", "borger", "closed", "canary"] {
        assert!(
            !log_text.contains(&stack.password(name)),
            "a password leaked into the log"
        );
    }
}

#[test]
fn cli_check_prints_one_verdict_per_channel() {
    let stack = MailStack::start();
    let channels = channel("social-mail", "social@kommune.example", "inbox = \"social\"")
        + &channel(
            "retired-mail",
            "retired@kommune.example",
            "inbox = \"social\"\ndeadline = \"4s\"",
        )
        + &channel("familie-mail", "familie@kommune.example", "inbox = \"social\"")
        + &channel("unknown-mail", "unknown@kommune.example", "inbox = \"social\"");
    let s = setup(&stack, &channels);
    let out = Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .args(["check", "--json", "-c"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing verdict exits 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let verdicts: Vec<(String, String)> = lines
        .iter()
        .map(|v| {
            (
                v["channel"].as_str().unwrap().to_string(),
                v["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        vec![
            ("social-mail".into(), "delivered".into()),
            ("retired-mail".into(), "missed".into()),
            ("familie-mail".into(), "misrouted".into()),
            ("unknown-mail".into(), "rejected".into()),
        ],
        "{stdout}"
    );
    for l in &lines {
        assert!(l["token"].as_str().unwrap().starts_with("pc-"));
        assert!(l.get("latency_ms").is_some() && l.get("detail").is_some());
    }
    // Only the healthy channel: exit 0, and the table form.
    let out = Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .args(["check", "--channel", "social-mail", "-c"])
        .arg(&s.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("CHANNEL") && table.contains("social-mail") && table.contains("delivered"),
        "{table}"
    );
}

#[test]
fn validate_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[ledger]\nurl = \"sqlite://x.db\"\nbogus = 1\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .args(["validate", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:3: key `ledger.bogus`"), "{err}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("postcanary.example.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .args(["validate", "-c"])
        .arg(&example)
        .env("CANARY_SMTP_PASSWORD", "x")
        .env("SOCIAL_IMAP_PASSWORD", "x")
        .env("BORGER_IMAP_PASSWORD", "x")
        .env("CLOSED_IMAP_PASSWORD", "x")
        .env("POSTCANARY_TOKEN_KEY", "x")
        .env("CANARY_IMAP_PASSWORD", "x")
        .env("POSTCANARY_HEARTBEAT_URL", "https://hc.example/ping/x")
        .env("PD_ROUTING_KEY", "x")
        .env("SOCIAL_TEAMS_WEBHOOK_URL", "https://teams.example/x")
        .env("MITID_TEST_USER", "x")
        .env("MITID_TEST_PASSWORD", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("social-family-mail"), "{text}");
    assert!(text.contains("erhverv-kontakt-mitid"), "{text}");
}
