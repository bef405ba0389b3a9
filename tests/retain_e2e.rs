//! Issue 17, retention canaries, against the real Postfix + Dovecot (and an
//! HTTP document double in this process): a canary archived in a Dovecot
//! folder and deleted there with `doveadm expunge` between two checks is
//! `lost` and pages; the checks survive a restart of the engine; a refused
//! IMAP login during a check is never `lost` (retried, then "degraded");
//! a document system that edits or deletes the document gives `altered` /
//! `lost`, and one that answers 503 is our problem. Ages are seconds, every
//! wait is bounded; pages go to a local webhook receiver.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postcanary::ledger::Store;
use support::canary::{checked, delivered, fire, imap_count, mail_channel, pages, paging_engine, wait_for, wait_page};
use support::mailstack::MailStack;
use support::receiver::Receiver;

/// The inbox waits `blind_grace = "5m"` unless `inbox_extra` sets its own.
fn config(dir: &Path, stack: &MailStack, hook: &str, inbox_extra: &str, channels: &str) -> std::path::PathBuf {
    let grace = if inbox_extra.contains("blind_grace") {
        ""
    } else {
        "blind_grace = \"5m\"\n"
    };
    std::fs::write(dir.join("social.pw"), stack.password("social")).expect("pw");
    let toml = format!(
        "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[defaults]\nnotify = [\"ops\"]\nschedule = \"every 1h\"\njitter = \"1s\"\n\
         deadline = \"20s\"\n\n\
         [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         from = \"canary@kommune.example\"\ntimeout = \"10s\"\n\n\
         [[notifier]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\n\
         [[inbox]]\nname = \"social\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = \"social\"\npassword = \"file:social.pw\"\n{grace}{inbox_extra}\n\n{channels}",
        stack.smtp_port, stack.imap_port
    );
    let path = dir.join("postcanary.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

fn doveadm(stack: &MailStack, args: &[&str]) {
    let conf = stack.dir.path().join("dovecot/dovecot.conf");
    let out = Command::new("doveadm")
        .arg("-c")
        .arg(&conf)
        .args(args)
        .output()
        .expect("doveadm");
    assert!(
        out.status.success(),
        "doveadm {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Replaces `user`'s password in the test Dovecot's passwd-file (read on
/// every login), as an admin would.
fn set_password(stack: &MailStack, user: &str, password: &str) {
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
}

/// The archive path end to end: a canary confirmed in INBOX is moved to
/// `Arkiv/Postcanary` (not deleted by `after_confirm = "delete"`, which
/// still cleans up the channel without `retain`), found there at 3 s,
/// deleted with `doveadm expunge`, and at 6 s `lost` with a page — resolved
/// by nothing but a later check that finds its canary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_canary_expunged_between_two_checks_is_lost_and_paged() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let channels = format!(
        "{}{}",
        mail_channel(
            "archived",
            "social@kommune.example",
            "social",
            "retain = [\"3s\", \"6s\"]\narchive = \"Arkiv/Postcanary\"",
        ),
        mail_channel("plain", "social@kommune.example", "social", ""),
    );
    let path = config(
        dir.path(),
        &stack,
        &hook.url("/hook"),
        "after_confirm = \"delete\"",
        &channels,
    );
    let engine = paging_engine(&path).await;
    let store = Arc::clone(&engine.store);
    let kept = fire(&engine, "archived").await;
    let plain = fire(&engine, "plain").await;
    delivered(store.as_ref(), &kept).await;
    delivered(store.as_ref(), &plain).await;
    let pw = stack.password("social");
    wait_for(
        "the canary in the archive, the other one deleted",
        Duration::from_secs(10),
        async || {
            (imap_count(stack.imap_port, "social", &pw, "Arkiv/Postcanary") == 1
                && imap_count(stack.imap_port, "social", &pw, "INBOX") == 0)
                .then_some(())
        },
    )
    .await;
    assert!(store.retain_checks(&plain).await.expect("ledger").is_empty());

    let first = checked(store.as_ref(), &kept, "3s", Duration::from_secs(15)).await;
    assert_eq!(first.result.as_deref(), Some("kept"), "{first:?}");
    assert!(
        first.detail.as_deref().is_some_and(|d| d.contains("Arkiv/Postcanary")),
        "{first:?}"
    );
    assert!(first.content_hash.as_deref().is_some_and(|h| h.starts_with("sha256:")));

    doveadm(
        &stack,
        &["expunge", "-u", "social", "mailbox", "Arkiv/Postcanary", "all"],
    );
    assert_eq!(imap_count(stack.imap_port, "social", &pw, "Arkiv/Postcanary"), 0);

    let second = checked(store.as_ref(), &kept, "6s", Duration::from_secs(15)).await;
    assert_eq!(second.result.as_deref(), Some("lost"), "{second:?}");
    let detail = second.detail.clone().unwrap_or_default();
    assert!(detail.starts_with("archived canary deleted between "), "{detail}");
    let page = wait_page(&hook, "trigger", "retention:archived", Duration::from_secs(10)).await;
    assert_eq!(page.2, "lost");
    assert!(page.3.contains("archived canary deleted between"), "{page:?}");
    let open = store
        .open_incident("retention:archived")
        .await
        .expect("ledger")
        .expect("open retention incident");
    assert_eq!(open.verdict, "lost");

    // An ordinary delivered canary of the channel does not resolve it.
    let next = fire(&engine, "archived").await;
    delivered(store.as_ref(), &next).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(store
        .open_incident("retention:archived")
        .await
        .expect("ledger")
        .is_some());
    // Its own 3 s check, which finds it, does.
    let found = checked(store.as_ref(), &next, "3s", Duration::from_secs(15)).await;
    assert_eq!(found.result.as_deref(), Some("kept"), "{found:?}");
    wait_page(&hook, "resolve", "retention:archived", Duration::from_secs(10)).await;
    assert!(
        pages(&hook).iter().all(|p| p.1 != "archived" && p.1 != "plain"),
        "no ordinary channel page: {:?}",
        pages(&hook)
    );
    // The report counts the checks and the retention incident as the channel's.
    let now = postcanary::verdict::now_millis();
    let period = postcanary::report::figures::Period {
        from: now - 3_600_000,
        to: now + 1_000,
        label: "since 1h".into(),
    };
    let report = postcanary::report::gather(&store, &engine.config, &["archived".to_string()], &[], period, now)
        .await
        .expect("report");
    let ch = &report.channels[0];
    // Canary 1 at 3 s, canary 2 at 3 s (and perhaps already at 6 s).
    assert!(ch.retention.kept >= 2, "{ch:?}");
    assert_eq!((ch.retention.lost, ch.retention.altered), (1, 0), "{ch:?}");
    assert!(
        ch.incidents
            .iter()
            .any(|i| i.verdict == "lost" && i.resolved_at.is_some()),
        "{ch:?}"
    );
    assert!(ch.summary.incidents_opened >= 1);

    // Its evidence holds the checks: the 3 s `kept` that bounds the
    // deletion, the 6 s `lost` that opened it, the `kept` that resolved it,
    // and both canaries.
    let ev = postcanary::report::evidence::gather(&store, &engine.config, open.id, now)
        .await
        .expect("evidence")
        .expect("the incident");
    let results: Vec<(&str, &str, Option<&str>)> = ev
        .retain_checks
        .iter()
        .map(|c| (c.probe_id.as_str(), c.age.as_str(), c.result.as_deref()))
        .collect();
    assert_eq!(
        &results[..3],
        &[
            (kept.as_str(), "3s", Some("kept")),
            (kept.as_str(), "6s", Some("lost")),
            (next.as_str(), "3s", Some("kept")),
        ],
        "{results:?}"
    );
    assert!(ev.probes.iter().any(|p| p.probe.id == kept), "{:?}", ev.probes);
    assert!(ev.probes.iter().any(|p| p.probe.id == next && p.role == "retained"));
    assert_eq!(ev.channel.as_ref().map(|c| c.id.as_str()), Some("archived"));
    let html = postcanary::report::evidence::to_html(&ev);
    assert!(html.contains("Retention checks (") && html.contains("archived canary deleted between"));
    engine.stop().await;
}

/// The checks are ledger rows: an engine stopped between the first and the
/// second check leaves the second due, and the next engine runs it. The
/// canary stays in INBOX (no `archive`), untouched by `after_confirm`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_checks_survive_a_restart_and_in_place_canaries_stay_in_the_inbox() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let channels = mail_channel("kept", "social@kommune.example", "social", "retain = [\"3s\", \"10s\"]");
    let path = config(
        dir.path(),
        &stack,
        &hook.url("/hook"),
        "after_confirm = \"move:Done\"",
        &channels,
    );
    let engine = paging_engine(&path).await;
    let store = Arc::clone(&engine.store);
    let id = fire(&engine, "kept").await;
    delivered(store.as_ref(), &id).await;
    let first = checked(store.as_ref(), &id, "3s", Duration::from_secs(15)).await;
    assert_eq!(first.result.as_deref(), Some("kept"), "{first:?}");
    engine.stop().await;
    drop(store);

    let ledger = postcanary::ledger::sqlite::SqliteStore::open(&dir.path().join("ledger.db"))
        .await
        .expect("ledger");
    let rows = ledger.retain_checks(&id).await.expect("rows");
    assert_eq!(
        rows.iter()
            .map(|c| (c.age.as_str(), c.state.as_str()))
            .collect::<Vec<_>>(),
        [("3s", "done"), ("10s", "due")]
    );
    drop(ledger);
    let pw = stack.password("social");
    assert_eq!(imap_count(stack.imap_port, "social", &pw, "INBOX"), 1);
    // Stopped past the second check's due time, then started again.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let engine = paging_engine(&path).await;
    let second = checked(engine.store.as_ref(), &id, "10s", Duration::from_secs(15)).await;
    assert_eq!(second.result.as_deref(), Some("kept"), "{second:?}");
    assert_eq!(second.content_hash, first.content_hash, "the same message, unchanged");
    assert_eq!(imap_count(stack.imap_port, "social", &pw, "INBOX"), 1);
    assert_eq!(imap_count(stack.imap_port, "social", &pw, "Done"), 0);
    assert!(pages(&hook).is_empty(), "{:?}", pages(&hook));
    engine.stop().await;
}

/// A refused IMAP login during a check is ours: the check stays due and is
/// retried, never `lost`; once it has failed for the inbox's `blind_grace`
/// (10 s here: tries at 0, 2, 6 and 10 s) "postcanary degraded" pages;
/// once the password is back the check finds the canary and the degraded
/// incident resolves. No retention page at any time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_during_a_check_is_not_lost() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let channels = mail_channel("kept", "social@kommune.example", "social", "retain = [\"3s\"]");
    let path = config(
        dir.path(),
        &stack,
        &hook.url("/hook"),
        "blind_grace = \"10s\"",
        &channels,
    );
    let engine = paging_engine(&path).await;
    let store = Arc::clone(&engine.store);
    let id = fire(&engine, "kept").await;
    delivered(store.as_ref(), &id).await;
    let good = stack.password("social");
    set_password(&stack, "social", "not-the-checkers-password");

    let page = wait_page(&hook, "trigger", "postcanary", Duration::from_secs(30)).await;
    assert!(page.3.contains("refused login"), "{page:?}");
    let rows = store.retain_checks(&id).await.expect("ledger");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].state, "due", "{rows:?}");
    assert!(rows[0].attempts >= 3, "{rows:?}");
    assert!(rows[0].result.is_none(), "{rows:?}");

    set_password(&stack, "social", &good);
    let done = checked(store.as_ref(), &id, "3s", Duration::from_secs(40)).await;
    assert_eq!(done.result.as_deref(), Some("kept"), "{done:?}");
    wait_page(&hook, "resolve", "postcanary", Duration::from_secs(10)).await;
    assert!(
        pages(&hook)
            .iter()
            .all(|p| !p.1.starts_with("retention:") && p.1 != "kept"),
        "{:?}",
        pages(&hook)
    );
    engine.stop().await;
}

/// A document system double: `/doc/{id}` answers what the test put there.
#[derive(Clone, Default)]
struct Docs(Arc<Mutex<HashMap<String, (u16, String)>>>);

impl Docs {
    fn put(&self, id: &str, status: u16, body: &str) {
        self.0
            .lock()
            .expect("docs")
            .insert(id.to_string(), (status, body.to_string()));
    }
    fn remove(&self, id: &str) {
        self.0.lock().expect("docs").remove(id);
    }
    async fn serve(&self) -> u16 {
        use axum::extract::{Path as UrlPath, State};
        use axum::http::StatusCode;
        async fn doc(State(d): State<Docs>, UrlPath(id): UrlPath<String>) -> (StatusCode, String) {
            match d.0.lock().expect("docs").get(&id) {
                Some((s, b)) => (StatusCode::from_u16(*s).unwrap_or(StatusCode::OK), b.clone()),
                None => (StatusCode::NOT_FOUND, "no such document".into()),
            }
        }
        let app = axum::Router::new()
            .route("/doc/{id}", axum::routing::get(doc))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        port
    }
}

/// HTTP checks: an edited document (hash) is `altered`, a deleted one
/// (text) `lost`, both paged; a 503 is ours — retried, never lost, and
/// "postcanary degraded" once it has lasted the check's `blind_grace`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_system_that_edits_or_deletes_the_document_gives_altered_and_lost() {
    let stack = MailStack::start();
    let hook = Receiver::start();
    let docs = Docs::default();
    let port = docs.serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |extra: &str| {
        format!(
            "retain = [\"3s\", \"6s\"]\n[channel.retain_check]\nurl = \"http://127.0.0.1:{port}/doc/{{token}}\"\n{extra}"
        )
    };
    let channels = format!(
        "{}{}{}",
        mail_channel(
            "doc-hash",
            "social@kommune.example",
            "social",
            &check("expect_hash = \"sha256\"")
        ),
        mail_channel(
            "doc-text",
            "social@kommune.example",
            "social",
            &check("expect_text = \"Sag {token}\"")
        ),
        mail_channel(
            "doc-flaky",
            "social@kommune.example",
            "social",
            &check("blind_grace = \"8s\""),
        ),
    );
    let path = config(dir.path(), &stack, &hook.url("/hook"), "", &channels);
    let engine = paging_engine(&path).await;
    let store = Arc::clone(&engine.store);
    let mut ids = HashMap::new();
    for ch in ["doc-hash", "doc-text", "doc-flaky"] {
        let id = fire(&engine, ch).await;
        let token = store.probe(&id).await.expect("ledger").expect("probe").token;
        // The case system files the document as the canary arrives.
        match ch {
            "doc-hash" => docs.put(&token, 200, "Sag 1, version 1"),
            "doc-text" => docs.put(&token, 200, &format!("<p>Sag {token}</p>")),
            _ => docs.put(&token, 503, "down for maintenance"),
        }
        ids.insert(ch, (id, token));
    }
    for (id, _) in ids.values() {
        delivered(store.as_ref(), id).await;
    }
    for ch in ["doc-hash", "doc-text"] {
        let c = checked(store.as_ref(), &ids[ch].0, "3s", Duration::from_secs(15)).await;
        assert_eq!(c.result.as_deref(), Some("kept"), "{ch}: {c:?}");
    }
    docs.put(&ids["doc-hash"].1, 200, "Sag 1, version 2");
    docs.remove(&ids["doc-text"].1);

    let altered = checked(store.as_ref(), &ids["doc-hash"].0, "6s", Duration::from_secs(15)).await;
    assert_eq!(altered.result.as_deref(), Some("altered"), "{altered:?}");
    let lost = checked(store.as_ref(), &ids["doc-text"].0, "6s", Duration::from_secs(15)).await;
    assert_eq!(lost.result.as_deref(), Some("lost"), "{lost:?}");
    assert!(
        lost.detail.as_deref().is_some_and(|d| d.contains("HTTP 404")),
        "{lost:?}"
    );
    let p = wait_page(&hook, "trigger", "retention:doc-hash", Duration::from_secs(10)).await;
    assert_eq!(p.2, "altered");
    let p = wait_page(&hook, "trigger", "retention:doc-text", Duration::from_secs(10)).await;
    assert_eq!(p.2, "lost");

    // The 503: still due after several tries, no retention page; then degraded.
    let rows = store.retain_checks(&ids["doc-flaky"].0).await.expect("ledger");
    assert!(rows.iter().all(|c| c.state == "due" && c.result.is_none()), "{rows:?}");
    assert!(rows[0].attempts >= 1, "{rows:?}");
    assert!(
        rows[0].detail.as_deref().is_some_and(|d| d.contains("HTTP 503")),
        "{rows:?}"
    );
    assert!(
        pages(&hook).iter().all(|p| p.1 != "retention:doc-flaky"),
        "{:?}",
        pages(&hook)
    );
    let degraded = wait_page(&hook, "trigger", "postcanary", Duration::from_secs(20)).await;
    assert!(degraded.3.contains("HTTP 503"), "{degraded:?}");
    engine.stop().await;
}
