//! A `kind = "graph"` inbox through the whole engine: the probe goes in by
//! SMTP (the sandbox SMTP receiver, standing in for Exchange Online's
//! front door) and is found through the Microsoft Graph double, configured
//! the way an operator writes it.

mod support;

use std::time::Duration;

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::sandbox::{MailStore, Route, Sandbox, SandboxOptions};
use postcanary::verdict::Verdict;
use support::graphdouble::{GraphDouble, CLIENT_ID, INBOX_ID, JUNK_ID};

/// A config with the sandbox relay, the given inbox table and one channel that must land there.
fn write_config(dir: &std::path::Path, smtp: u16, inbox: &str, inbox_name: &str) {
    let toml = format!(
        "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\n\
         port = {smtp}\ntls = \"none\"\nfrom = \"canary@kommune.example\"\n\n{inbox}\n[[channel]]\nid = \"social-mail\"\n\
         name = \"Social\"\nkind = \"mail\"\nto = \"social@kommune.example\"\ninbox = \"{inbox_name}\"\ndeadline = \"20s\"\n"
    );
    std::fs::write(dir.join("postcanary.toml"), toml).expect("config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_inbox_confirms_probes_sent_by_smtp() {
    let secret = "graph-client-secret-123";
    let double = std::sync::Arc::new(GraphDouble::start(secret).await);
    let store = MailStore::new();
    store.add_user("social", "x");
    store.set_route("social@kommune.example", Route::deliver("social", "INBOX"));
    let sandbox = Sandbox::start(store.clone(), SandboxOptions::default())
        .await
        .expect("sandbox");
    // Everything that lands in the sandbox mailbox appears in the Graph
    // mailbox: INBOX in the Inbox, Junk in Junk Email.
    let bridge = bridge(&store, &double, &[("INBOX", INBOX_ID), ("Junk", JUNK_ID)]);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("graph.secret"), secret).expect("secret");
    let inbox = format!(
        r#"[[inbox]]
name = "social-m365"
kind = "graph"
username = "social@kommune.example"
client_id = "{CLIENT_ID}"
client_secret = "file:graph.secret"
token_url = "{token}"
graph_url = "{graph}"
poll_interval = "500ms"
after_confirm = "move:Postcanary"
junk = "junkemail"
"#,
        token = double.token_url(),
        graph = double.base_url(),
    );
    write_config(dir.path(), sandbox.smtp_addr().port(), &inbox, "social-m365");
    double.set_mailbox("social@kommune.example");
    double.add_folder("Postcanary");
    let config = Config::load(&dir.path().join("postcanary.toml")).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(config).await.expect("engine");
    assert!(
        engine.wait_watchers_connected(Duration::from_secs(15)).await,
        "{:?}",
        engine.watcher_states()
    );
    let ch = engine.config.channel("social-mail").expect("channel").clone();
    let p = engine.check(std::slice::from_ref(&ch)).await.expect("check").remove(0);
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}");
    assert_eq!(p.found_in.as_deref(), Some("social-m365"));
    // The move follows the verdict.
    support::canary::wait_for("the probe moved to Postcanary", Duration::from_secs(10), async || {
        (double.moves().len() == 1).then_some(())
    })
    .await;

    // A spam filter starts filing the address's mail in Junk Email.
    assert!(
        engine
            .watcher_states()
            .iter()
            .any(|(name, _)| name == "social-m365 (junkemail)"),
        "{:?}",
        engine.watcher_states()
    );
    store.set_route("social@kommune.example", Route::deliver("social", "Junk"));
    let p = engine.check(&[ch]).await.expect("check").remove(0);
    assert_eq!(p.verdict, Verdict::Junked, "{p:?}");
    engine.stop().await;
    bridge.abort();
    sandbox.shutdown().await;
}

/// IMAP with SASL XOAUTH2, as Exchange Online requires: the watcher fetches a
/// client-credentials token (from the double's token endpoint) and logs in to
/// the sandbox IMAP server with it; the server accepts only that token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_with_xoauth2_confirms_probes() {
    let secret = "imap-client-secret-456";
    let double = GraphDouble::start(secret).await;
    let store = MailStore::new();
    // The first token the double issues; any other bearer is refused.
    store.add_user("social@kommune.example", "eyJ0eXAiOiJKV1Qi.double-token-1");
    store.set_route(
        "social@kommune.example",
        Route::deliver("social@kommune.example", "INBOX"),
    );
    let sandbox = Sandbox::start(store.clone(), SandboxOptions::default())
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("client.secret"), secret).expect("secret");
    let inbox = format!(
        r#"[[inbox]]
name = "social-exo"
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "social@kommune.example"
auth = "xoauth2"
client_id = "{CLIENT_ID}"
client_secret = "file:client.secret"
token_url = "{token}"
scope = "https://graph.microsoft.com/.default"
"#,
        imap = sandbox.imap_addr().port(),
        token = double.token_url(),
    );
    write_config(dir.path(), sandbox.smtp_addr().port(), &inbox, "social-exo");
    let config = Config::load(&dir.path().join("postcanary.toml")).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(config).await.expect("engine");
    assert!(
        engine.wait_watchers_connected(Duration::from_secs(15)).await,
        "{:?}",
        engine.watcher_states()
    );
    assert_eq!(double.token_requests().len(), 1, "one token for the session");
    let ch = engine.config.channel("social-mail").expect("channel").clone();
    let p = engine.check(&[ch]).await.expect("check").remove(0);
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}");
    engine.stop().await;
    sandbox.shutdown().await;
}

/// Retention canaries on a Graph inbox (issue 17): a canary confirmed in
/// the Inbox is moved to `Arkiv/Postcanary` (while the channel without
/// `retain` is cleaned up by `after_confirm = "delete"`), found there at
/// 3 s, purged from the mailbox, and at 6 s `lost` with a page; the next
/// canary's 3 s check resolves the incident, and an edit of its body in
/// the store makes its 6 s check `altered`, which pages again. Everything
/// goes through the Graph double; pages go to a local webhook receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_canary_in_a_graph_archive_folder_purged_is_lost_and_edited_is_altered() {
    use support::canary::{checked, delivered, fire, pages, paging_engine, wait_for, wait_page};
    let secret = "graph-retain-secret-789";
    let double = std::sync::Arc::new(GraphDouble::start(secret).await);
    double.set_mailbox("social@kommune.example");
    let arkiv = double.add_folder("Arkiv");
    let archive = double.add_child_folder(&arkiv, "Postcanary");
    let store = MailStore::new();
    store.add_user("social", "x");
    store.set_route("social@kommune.example", Route::deliver("social", "INBOX"));
    let sandbox = Sandbox::start(store.clone(), SandboxOptions::default())
        .await
        .expect("sandbox");
    let bridge = bridge(&store, &double, &[("INBOX", INBOX_ID)]);
    let hook = support::receiver::Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("graph.secret"), secret).expect("secret");
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = ["ops"]
schedule = "every 1h"
jitter = "1s"
deadline = "20s"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "canary@kommune.example"

[[notifier]]
name = "ops"
kind = "webhook"
url = "{hook}"

[[inbox]]
name = "social-m365"
kind = "graph"
username = "social@kommune.example"
client_id = "{CLIENT_ID}"
client_secret = "file:graph.secret"
token_url = "{token}"
graph_url = "{graph}"
poll_interval = "500ms"
after_confirm = "delete"
blind_grace = "5m"

[[channel]]
id = "archived"
name = "Archived"
kind = "mail"
to = "social@kommune.example"
inbox = "social-m365"
retain = ["3s", "6s"]
archive = "Arkiv/Postcanary"

[[channel]]
id = "plain"
name = "Plain"
kind = "mail"
to = "social@kommune.example"
inbox = "social-m365"
"#,
        smtp = sandbox.smtp_addr().port(),
        hook = hook.url("/hook"),
        token = double.token_url(),
        graph = double.base_url(),
    );
    let path = dir.path().join("postcanary.toml");
    std::fs::write(&path, toml).expect("config");
    let engine = paging_engine(&path).await;
    let ledger = std::sync::Arc::clone(&engine.store);

    let kept = fire(&engine, "archived").await;
    let plain = fire(&engine, "plain").await;
    delivered(ledger.as_ref(), &kept).await;
    delivered(ledger.as_ref(), &plain).await;
    let in_archive = wait_for(
        "the canary moved to the archive, the other one deleted",
        Duration::from_secs(10),
        async || {
            let ids = double.ids_in(&archive);
            (ids.len() == 1 && double.deletes().len() == 1).then_some(ids)
        },
    )
    .await;
    assert!(double.ids_in(INBOX_ID).iter().all(|id| !in_archive.contains(id)));
    assert!(ledger.retain_checks(&plain).await.expect("ledger").is_empty());

    let first = checked(ledger.as_ref(), &kept, "3s", Duration::from_secs(15)).await;
    assert_eq!(first.result.as_deref(), Some("kept"), "{first:?}");
    assert!(
        first.detail.as_deref().is_some_and(|d| d.contains("Arkiv/Postcanary")),
        "{first:?}"
    );
    assert!(first.content_hash.as_deref().is_some_and(|h| h.starts_with("sha256:")));

    assert!(double.purge(&in_archive[0]));
    let second = checked(ledger.as_ref(), &kept, "6s", Duration::from_secs(15)).await;
    assert_eq!(second.result.as_deref(), Some("lost"), "{second:?}");
    let detail = second.detail.clone().unwrap_or_default();
    assert!(detail.starts_with("archived canary deleted between "), "{detail}");
    assert!(
        detail.contains("not in `Arkiv/Postcanary` of `social-m365`"),
        "{detail}"
    );
    let page = wait_page(&hook, "trigger", "retention:archived", Duration::from_secs(10)).await;
    assert_eq!(page.2, "lost", "{page:?}");

    // The next canary: kept at 3 s (which resolves the incident), then its
    // body is edited in the store, and at 6 s it is `altered`.
    let next = fire(&engine, "archived").await;
    delivered(ledger.as_ref(), &next).await;
    let moved = wait_for(
        "the second canary in the archive",
        Duration::from_secs(10),
        async || double.ids_in(&archive).first().cloned(),
    )
    .await;
    let found = checked(ledger.as_ref(), &next, "3s", Duration::from_secs(15)).await;
    assert_eq!(found.result.as_deref(), Some("kept"), "{found:?}");
    wait_page(&hook, "resolve", "retention:archived", Duration::from_secs(10)).await;
    let raw = double.raw_of(&moved).expect("the archived canary");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a message with a body");
    let edited = format!("{head}\r\n\r\nThis report was edited after it arrived.\r\n{body}");
    assert!(double.rewrite(&moved, edited.as_bytes()));
    let third = checked(ledger.as_ref(), &next, "6s", Duration::from_secs(15)).await;
    assert_eq!(third.result.as_deref(), Some("altered"), "{third:?}");
    wait_for(
        "a second trigger page, for the altered canary",
        Duration::from_secs(10),
        async || {
            pages(&hook)
                .into_iter()
                .filter(|p| p.0 == "trigger" && p.1 == "retention:archived")
                .nth(1)
                .filter(|p| p.2 == "altered")
        },
    )
    .await;
    assert!(
        pages(&hook).iter().all(|p| p.1 != "archived" && p.1 != "plain"),
        "no ordinary channel page: {:?}",
        pages(&hook)
    );
    engine.stop().await;
    bridge.abort();
    sandbox.shutdown().await;
}

/// Copies everything that lands in the sandbox user's `folders` into the
/// Graph double's folder ids, so mail sent by SMTP appears in the Graph
/// mailbox. Abort the handle at the end of the test.
fn bridge(
    store: &MailStore,
    double: &std::sync::Arc<GraphDouble>,
    folders: &[(&'static str, &'static str)],
) -> tokio::task::JoinHandle<()> {
    let mut events = store.subscribe();
    let (store, double, folders) = (store.clone(), std::sync::Arc::clone(double), folders.to_vec());
    tokio::spawn(async move {
        let mut copied = vec![0; folders.len()];
        while events.recv().await.is_ok() {
            for (i, (folder, id)) in folders.iter().enumerate() {
                let msgs = store.messages("social", folder).unwrap_or_default();
                for m in msgs.iter().skip(copied[i]) {
                    double.deliver_to(id, &m.raw);
                }
                copied[i] = msgs.len();
            }
        }
    })
}
