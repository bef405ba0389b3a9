//! The real sender (src/sender/smtp.rs) and the real IMAP watcher
//! (src/inbox/imap.rs) against the sandbox, without the engine: a probe is
//! written to an in-memory ledger, sent, found, judged and moved away; then
//! the IMAP connection is dropped mid-IDLE and the watcher must recover.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use postcanary::config::values::Secret;
use postcanary::config::{AfterConfirm, Expect, InboxConfig, SenderConfig, Tls};
use postcanary::inbox::imap::{watch as run_watcher, WatcherState};
use postcanary::inbox::Matcher;
use postcanary::ledger::{sqlite::SqliteStore, DynStore, NewProbe};
use postcanary::sandbox::*;
use postcanary::sender::message::{build, ProbeMessage};
use postcanary::sender::SendOutcome;
use postcanary::token::TokenKey;
use postcanary::verdict::VerdictSink;
use postcanary::verdict::{now_millis, Verdict};

struct Rig {
    sandbox: Sandbox,
    ledger: DynStore,
    key: TokenKey,
    verdicts: VerdictSink,
    sender: SenderConfig,
    to: lettre::Address,
}

impl Rig {
    /// Writes a probe to the ledger and sends it through the real sender.
    async fn probe(&self) -> (String, SendOutcome) {
        let token = self.key.issue(SystemTime::now());
        let now = now_millis();
        self.ledger
            .insert_probe(&NewProbe {
                id: token.id(),
                token: token.to_string(),
                channel: "sandbox-mail".into(),
                kind: "mail".into(),
                expect: Expect::Deliver,
                inbox: Some("sandbox".into()),
                target: self.to.to_string(),
                created_at: now,
                deadline: now + 30_000,
                run_id: "test".into(),
            })
            .await
            .unwrap();
        let token_text = token.to_string();
        let message = build(&ProbeMessage {
            token: &token_text,
            channel_id: "sandbox-mail",
            channel_name: "Sandbox",
            from: &self.sender.from,
            to: &self.to,
            dkim: None,
        })
        .unwrap()
        .formatted();
        let outcome = postcanary::sender::smtp::send(&self.sender, &self.to, &message).await;
        (token.id(), outcome)
    }

    async fn verdict_for(
        &self,
        rx: &mut tokio::sync::broadcast::Receiver<postcanary::verdict::VerdictReport>,
        id: &str,
    ) -> Verdict {
        let wait = async {
            loop {
                let r = rx.recv().await.unwrap();
                if r.probe_id == id {
                    return r.verdict;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait).await.unwrap()
    }
}

async fn wait_state(rx: &mut watch::Receiver<WatcherState>, want: WatcherState) {
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| *s == want))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn real_sender_and_watcher_confirm_a_probe_through_the_sandbox() {
    let store = MailStore::new();
    store.add_user("canary", "secret");
    store.create_folder("canary", "Confirmed").unwrap();
    store.set_route("canary@sandbox.test", Route::deliver("canary", "INBOX"));
    let sandbox = Sandbox::start(store.clone(), SandboxOptions::default()).await.unwrap();
    let rig = Rig {
        ledger: Arc::new(SqliteStore::in_memory().unwrap()),
        key: TokenKey::generate(),
        verdicts: VerdictSink::default(),
        sender: SenderConfig {
            name: "sandbox".into(),
            host: "127.0.0.1".into(),
            port: sandbox.smtp_addr().port(),
            tls: Tls::None,
            username: Some("canary".into()),
            password: Some(Secret::new("secret")),
            from: "Postcanary <prober@example.net>".parse().unwrap(),
            helo: Some("prober.test".into()),
            timeout: Duration::from_secs(5),
            mx: None,
            bounce_inbox: None,
            dkim: None,
            ca_file: None,
            connections: postcanary::config::DEFAULT_CONNECTIONS,
            reuse: true,
        },
        to: "canary@sandbox.test".parse().unwrap(),
        sandbox,
    };
    let inbox = InboxConfig {
        name: "sandbox".into(),
        host: "127.0.0.1".into(),
        port: rig.sandbox.imap_addr().port(),
        tls: Tls::None,
        username: "canary".into(),
        password: Secret::new("secret"),
        mailbox: "INBOX".into(),
        after_confirm: AfterConfirm::Move("Confirmed".into()),
        poll_interval: Duration::from_secs(30),
        blind_grace: Duration::from_secs(300),
        idle: true,
        junk: None,
        folder: postcanary::inbox::Folder::Main,
        graph: None,
        oauth: None,
        ca_file: None,
    };
    let matcher = Matcher {
        store: Arc::clone(&rig.ledger),
        key: rig.key.clone(),
        max_age: Duration::from_secs(3600),
        verdicts: rig.verdicts.clone(),
        return_paths: Default::default(),
        retain: Default::default(),
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let (state_tx, mut state_rx) = watch::channel(WatcherState::Connecting);
    let watcher = tokio::spawn(run_watcher(inbox, matcher, stop_rx, state_tx));
    let mut verdicts = rig.verdicts.subscribe();
    wait_state(&mut state_rx, WatcherState::Idle).await;

    let (id, outcome) = rig.probe().await;
    assert!(
        matches!(&outcome, SendOutcome::Accepted { reply, .. } if reply.contains("queued as")),
        "{outcome:?}"
    );
    assert_eq!(rig.verdict_for(&mut verdicts, &id).await, Verdict::Delivered);
    // after_confirm = move:Confirmed, done with UID MOVE.
    let moved = async {
        while store.messages("canary", "Confirmed").unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), moved).await.unwrap();
    assert!(store.messages("canary", "INBOX").unwrap().is_empty());

    // The connection drops mid-IDLE: the watcher backs off, reconnects and
    // still finds the next probe.
    rig.sandbox.imap().drop_connections();
    tokio::time::timeout(
        Duration::from_secs(5),
        state_rx.wait_for(|s| matches!(s, WatcherState::Backoff(_))),
    )
    .await
    .unwrap()
    .unwrap();
    let (id2, outcome) = rig.probe().await;
    assert!(matches!(outcome, SendOutcome::Accepted { .. }), "{outcome:?}");
    assert_eq!(rig.verdict_for(&mut verdicts, &id2).await, Verdict::Delivered);

    // A 4xx storm is a deferral for the sender; a routing change a refusal.
    rig.sandbox.smtp().faults().tempfail_next_rcpts(1);
    let (_, outcome) = rig.probe().await;
    assert!(
        matches!(&outcome, SendOutcome::Deferred { reply } if reply.starts_with("451")),
        "{outcome:?}"
    );
    store.set_route("canary@sandbox.test", Route::unknown_user());
    let (_, outcome) = rig.probe().await;
    assert!(
        matches!(&outcome, SendOutcome::Refused { reply } if reply.starts_with("550")),
        "{outcome:?}"
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .unwrap()
        .unwrap();
    rig.sandbox.shutdown().await;
}
