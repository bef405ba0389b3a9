//! The Microsoft Graph inbox watcher end to end against an in-process double
//! of the identity platform and Graph (tests/support/graphdouble.rs): a real
//! SQLite ledger, real tokens, real MIME.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use postcanary::config::{AfterConfirm, Expect, Secret};
use postcanary::inbox::graph::{self, GraphConfig};
use postcanary::inbox::imap::WatcherState;
use postcanary::inbox::oauth::ClientCredentials;
use postcanary::inbox::Matcher;
use postcanary::ledger::{sqlite::SqliteStore, DynStore, NewProbe, ProbeRecord};
use postcanary::token::TokenKey;
use postcanary::verdict::VerdictSink;
use postcanary::verdict::{now_millis, Verdict};
use support::graphdouble::{GraphDouble, CLIENT_ID, INBOX_ID, JUNK_ID, MAILBOX};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const SECRET: &str = "Xq8~client.secret-value_0123456789";
const INBOX: &str = "m365";

struct Setup {
    _dir: tempfile::TempDir,
    store: DynStore,
    matcher: Matcher,
    double: GraphDouble,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: DynStore = Arc::new(SqliteStore::open(&dir.path().join("ledger.db")).await.expect("ledger"));
    let matcher = Matcher {
        store: Arc::clone(&store),
        key: TokenKey::generate(),
        max_age: Duration::from_secs(86_400),
        verdicts: VerdictSink::default(),
        return_paths: Default::default(),
        retain: Default::default(),
    };
    let double = GraphDouble::start(SECRET).await;
    Setup {
        _dir: dir,
        store,
        matcher,
        double,
    }
}

impl Setup {
    fn config(&self, after_confirm: AfterConfirm) -> GraphConfig {
        self.config_with_secret(after_confirm, SECRET)
    }

    fn config_with_secret(&self, after_confirm: AfterConfirm, secret: &str) -> GraphConfig {
        let mut cfg = GraphConfig::new(
            INBOX,
            MAILBOX,
            ClientCredentials {
                token_url: self.double.token_url(),
                client_id: CLIENT_ID.into(),
                client_secret: Secret::new(secret),
                scope: graph::GRAPH_SCOPE.into(),
            },
        );
        cfg.base_url = self.double.base_url();
        cfg.poll_interval = Duration::from_millis(100);
        cfg.after_confirm = after_confirm;
        cfg
    }

    /// A pending probe expecting delivery to this inbox; returns (id, token).
    async fn probe(&self) -> (String, String) {
        let token = self.matcher.key.issue(SystemTime::now());
        let now = now_millis();
        self.store
            .insert_probe(&NewProbe {
                id: token.id(),
                token: token.to_string(),
                channel: "borgerservice".into(),
                kind: "mail".into(),
                expect: Expect::Deliver,
                inbox: Some(INBOX.into()),
                target: "post@kommune.dk".into(),
                created_at: now,
                deadline: now + 60_000,
                run_id: "graph-e2e".into(),
            })
            .await
            .expect("insert probe");
        (token.id(), token.to_string())
    }

    fn run(&self, cfg: GraphConfig) -> Running {
        let (stop, shutdown) = watch::channel(false);
        let (tx, state) = watch::channel(WatcherState::Connecting);
        let states = Arc::new(Mutex::new(Vec::new()));
        let mut rx = state.clone();
        let seen = Arc::clone(&states);
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let s = rx.borrow_and_update().clone();
                seen.lock().unwrap().push(s);
            }
        });
        let task = tokio::spawn(graph::watch(cfg, self.matcher.clone(), shutdown, tx));
        Running {
            stop,
            state,
            states,
            task,
        }
    }

    async fn wait_verdict(&self, id: &str, want: Verdict) -> ProbeRecord {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let p = self.store.probe(id).await.expect("probe").expect("exists");
            if p.verdict == want {
                return p;
            }
            assert!(Instant::now() < until, "probe never became {want}: {p:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Setup {
    /// Runs a watcher that cannot start; returns the first error it reports.
    async fn first_error(&self, cfg: GraphConfig) -> String {
        let w = self.run(cfg);
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let now = w.state.borrow().clone();
            if let WatcherState::Backoff(m) = now {
                let states = w.stop().await;
                assert!(!states.contains(&WatcherState::Polling), "{states:?}");
                return m;
            }
            assert!(Instant::now() < until, "no error reported");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits until `id` has been moved; returns its new id.
async fn wait_moved(double: &GraphDouble, id: &str) -> String {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((_, _, new)) = double.moves().into_iter().find(|(old, _, _)| old == id) {
            return new;
        }
        assert!(Instant::now() < until, "not moved: {:?}", double.moves());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Running {
    stop: watch::Sender<bool>,
    state: watch::Receiver<WatcherState>,
    states: Arc<Mutex<Vec<WatcherState>>>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) -> Vec<WatcherState> {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("watcher stops")
            .expect("watcher task");
        assert_eq!(*self.state.borrow(), WatcherState::Stopped);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let states = self.states.lock().unwrap().clone();
        states
    }
}

fn mime(subject: &str, body: &str) -> Vec<u8> {
    format!(
        "From: Borgerservice <post@kommune.dk>\r\nTo: {MAILBOX}\r\nSubject: {subject}\r\n\
         Message-ID: <{}@kommune.dk>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n",
        ulid::Ulid::new()
    )
    .into_bytes()
}

#[tokio::test]
async fn probe_is_delivered_and_moved_to_the_named_folder() {
    let s = setup().await;
    s.double.add_folder("Postcanary");
    let (id, token) = s.probe().await;
    let unrelated = s.double.deliver(&mime("Nyhedsbrev", "Intet token her"));
    let foreign = s.double.deliver(&mime(
        "Forkert",
        "pc-01JD0000000000000000000000-0123456789abcdef er ikke vores",
    ));
    let ours = s.double.deliver(&mime("Postcanary probe", &format!("Token: {token}")));

    let w = s.run(s.config(AfterConfirm::Move("Postcanary".into())));
    let p = s.wait_verdict(&id, Verdict::Delivered).await;
    assert_eq!(p.found_in.as_deref(), Some(INBOX));
    let moved = wait_moved(&s.double, &ours).await;
    // Graph's move is a copy under a new id; the original id is gone.
    assert_ne!(moved, ours);
    assert_eq!(s.double.folder_of(&moved).as_deref(), Some("Postcanary"));
    assert_eq!(s.double.folder_of(&ours), None);
    // Only our message is touched.
    assert_eq!(s.double.moves().len(), 1);
    assert_eq!(s.double.folder_of(&unrelated).as_deref(), Some("Inbox"));
    assert_eq!(s.double.folder_of(&foreign).as_deref(), Some("Inbox"));
    assert!(s.double.deletes().is_empty());

    // One token, sent as a bearer on every Graph request.
    let tokens = s.double.token_requests();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(tokens[0].contains("grant_type=client_credentials"));
    assert!(tokens[0].contains("scope=https%3A%2F%2Fgraph.microsoft.com%2F.default"));
    let auth = s.double.auth_headers();
    assert!(!auth.is_empty());
    assert!(
        auth.iter().all(|a| a == "Bearer eyJ0eXAiOiJKV1Qi.double-token-1"),
        "{auth:?}"
    );

    let states = w.stop().await;
    assert!(states.contains(&WatcherState::Polling), "{states:?}");
    assert!(
        !states.iter().any(|s| matches!(s, WatcherState::Backoff(_))),
        "{states:?}"
    );
}

#[tokio::test]
async fn delete_after_confirm_and_missing_move_folder_is_a_clear_error() {
    let s = setup().await;
    let (id, token) = s.probe().await;
    let ours = s.double.deliver(&mime("probe", &token));

    // No "Postcanary" folder: the watcher refuses to start and says why.
    let msg = s.first_error(s.config(AfterConfirm::Move("Postcanary".into()))).await;
    assert!(msg.contains("no folder \"Postcanary\" at the top level"), "{msg}");
    assert_eq!(s.store.probe(&id).await.unwrap().unwrap().verdict, Verdict::Pending);

    let w = s.run(s.config(AfterConfirm::Delete));
    s.wait_verdict(&id, Verdict::Delivered).await;
    let until = Instant::now() + Duration::from_secs(5);
    while s.double.deletes() != vec![ours.clone()] {
        assert!(Instant::now() < until, "not deleted: {:?}", s.double.deletes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    w.stop().await;
}

#[tokio::test]
async fn pages_are_followed() {
    let s = setup().await;
    s.double.set_page_size(2);
    let (first_id, first) = s.probe().await;
    let (last_id, last) = s.probe().await;
    s.double.deliver(&mime("1", &first));
    s.double.deliver(&mime("2", "nothing"));
    s.double.deliver(&mime("3", "nothing"));
    s.double.deliver(&mime("4", &last));

    let w = s.run(s.config(AfterConfirm::Keep));
    s.wait_verdict(&first_id, Verdict::Delivered).await;
    s.wait_verdict(&last_id, Verdict::Delivered).await;
    w.stop().await;
    let reqs = s.double.requests();
    assert!(
        reqs.iter()
            .any(|r| r.target.contains("%24skip=2") || r.target.contains("$skip=2")),
        "no second page: {:#?}",
        reqs.iter().map(|r| &r.target).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_watcher_goes_on() {
    let s = setup().await;
    s.double.expire_tokens_after(3);
    let (a_id, a) = s.probe().await;
    s.double.deliver(&mime("a", &a));
    let w = s.run(s.config(AfterConfirm::Keep));
    s.wait_verdict(&a_id, Verdict::Delivered).await;
    // Let a few polls run into the expiry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (b_id, b) = s.probe().await;
    s.double.deliver(&mime("b", &b));
    s.wait_verdict(&b_id, Verdict::Delivered).await;
    let states = w.stop().await;

    let reqs = s.double.requests();
    let graph: Vec<_> = reqs.iter().filter(|r| r.target.starts_with("/v1.0/")).collect();
    let refused = graph.iter().filter(|r| r.status == 401).count();
    assert!(refused >= 1, "the token never expired");
    // Every 401 costs exactly one token request, and is never followed by another 401.
    assert_eq!(s.double.token_requests().len(), refused + 1);
    for pair in graph.windows(2) {
        assert!(!(pair[0].status == 401 && pair[1].status == 401), "two 401s in a row");
    }
    assert!(
        !states.iter().any(|s| matches!(s, WatcherState::Backoff(_))),
        "{states:?}"
    );
}

#[tokio::test]
async fn throttling_waits_for_retry_after() {
    let s = setup().await;
    s.double.throttle_next(1);
    let (id, token) = s.probe().await;
    s.double.deliver(&mime("probe", &token));
    let w = s.run(s.config(AfterConfirm::Keep));
    s.wait_verdict(&id, Verdict::Delivered).await;
    let states = w.stop().await;

    let reqs = s.double.requests();
    let graph: Vec<_> = reqs.iter().filter(|r| r.target.starts_with("/v1.0/")).collect();
    let i = graph.iter().position(|r| r.status == 429).expect("a 429");
    let gap = graph[i + 1].at - graph[i].at;
    assert!(gap >= Duration::from_millis(950), "retried after {gap:?}");
    assert_eq!(graph[i + 1].target, graph[i].target, "the same request is retried");
    assert!(
        !states.iter().any(|s| matches!(s, WatcherState::Backoff(_))),
        "{states:?}"
    );
}

#[tokio::test]
async fn a_restart_neither_rejudges_nor_skips_same_second_mail() {
    let s = setup().await;
    let (a_id, a) = s.probe().await;
    let (b_id, b) = s.probe().await;
    let second = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap();
    s.double.deliver_at(&mime("a", &a), second);

    let w = s.run(s.config(AfterConfirm::Keep));
    let before = s.wait_verdict(&a_id, Verdict::Delivered).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.stop().await;
    let cursor = s.store.cursor(INBOX).await.unwrap().expect("cursor kept");
    assert_eq!(i64::from(cursor.last_uid), second.timestamp());
    let events_before = s.store.events(&a_id).await.unwrap();

    // Arrives in the same second as the cursor, while no watcher runs.
    s.double.deliver_at(&mime("b", &b), second);
    let w = s.run(s.config(AfterConfirm::Keep));
    s.wait_verdict(&b_id, Verdict::Delivered).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.stop().await;

    let after = s.store.probe(&a_id).await.unwrap().unwrap();
    assert_eq!(after.verdict, Verdict::Delivered);
    assert_eq!(after.judged_at, before.judged_at);
    assert_eq!(after.found_at, before.found_at);
    assert_eq!(s.store.events(&a_id).await.unwrap(), events_before);
}

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Current-thread runtime: the watcher runs on this thread, under this subscriber.
#[tokio::test]
async fn neither_the_secret_nor_the_token_reaches_logs_or_errors() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let s = setup().await;
    s.double.echo_secret_in_errors();
    s.double.expire_tokens_after(2);
    s.double.throttle_next(0);
    let (id, token) = s.probe().await;
    s.double.deliver(&mime("probe", &token));

    // A wrong secret that the (hostile) endpoint echoes back.
    let wrong = "Wr0ng~secret-value_echoed";
    let w = s.run(s.config_with_secret(AfterConfirm::Keep, wrong));
    tokio::time::sleep(Duration::from_millis(700)).await;
    let states = w.stop().await;
    let errors: Vec<String> = states
        .iter()
        .filter_map(|s| match s {
            WatcherState::Backoff(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert!(!errors.is_empty(), "{states:?}");
    assert!(errors.iter().all(|e| e.contains("invalid_client")), "{errors:?}");
    assert!(s.double.token_requests().iter().any(|r| r.contains("Wr0ng")));

    // The right secret, through an expiry and a 429.
    let w = s.run(s.config(AfterConfirm::Keep));
    s.wait_verdict(&id, Verdict::Delivered).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    w.stop().await;

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    // That the capture works: the watcher's own lines are there. (Not its
    // "connected" line, which some CI runs did not capture though the probe
    // was delivered; the cause is not found yet.)
    assert!(text.contains("postcanary::inbox::graph"), "no logs captured:\n{text}");
    assert!(text.contains("refused the access token"), "{text}");
    for (what, needle) in [
        ("secret", SECRET),
        ("wrong secret", wrong),
        ("access token", "double-token-"),
    ] {
        assert!(!text.contains(needle), "{what} in logs:\n{text}");
        assert!(
            !errors.iter().any(|e| e.contains(needle)),
            "{what} in errors: {errors:?}"
        );
    }
}

#[tokio::test]
async fn folders_below_the_inbox_are_found_by_path() {
    let s = setup().await;
    let canary = s.double.add_child_folder(INBOX_ID, "Postcanary");
    s.double.add_child_folder(INBOX_ID, "Behandlet");
    // A top-level folder of the same name must not be taken for the child.
    s.double.add_folder("Behandlet");
    let (id, token) = s.probe().await;
    // The transport rule files probes below the Inbox.
    let ours = s
        .double
        .deliver_to(&canary, &mime("Postcanary probe", &format!("Token: {token}")));
    let in_inbox = s.double.deliver(&mime("probe copy", &format!("Token: {token}")));

    let mut cfg = s.config(AfterConfirm::Move("Inbox/Behandlet".into()));
    cfg.folder = "Inbox/Postcanary".into();
    let w = s.run(cfg);
    let p = s.wait_verdict(&id, Verdict::Delivered).await;
    assert_eq!(p.found_in.as_deref(), Some(INBOX));
    let moved = wait_moved(&s.double, &ours).await;
    w.stop().await;
    assert_eq!(s.double.folder_of(&moved).as_deref(), Some("Behandlet"));
    let (_, dest, _) = s.double.moves().into_iter().next().expect("a move");
    assert!(dest.starts_with("AAMkAGI2-folder-"), "moved by folder id, got {dest}");
    assert_eq!(s.double.moves().len(), 1);
    // The Inbox itself is not read.
    assert_eq!(s.double.folder_of(&in_inbox).as_deref(), Some("Inbox"));
    let reqs = s.double.requests();
    assert!(
        reqs.iter().any(|r| r.target.contains("/childFolders?")),
        "{:#?}",
        reqs.iter().map(|r| &r.target).collect::<Vec<_>>()
    );

    // A path to nowhere names the part that is missing and where.
    let mut cfg = s.config(AfterConfirm::Keep);
    cfg.folder = "Inbox/Postkanarie".into();
    let msg = s.first_error(cfg).await;
    assert!(msg.contains("no folder \"Postkanarie\" under \"Inbox\""), "{msg}");
    let mut cfg = s.config(AfterConfirm::Keep);
    cfg.folder = "Inbox//Postcanary".into();
    let msg = s.first_error(cfg).await;
    assert!(msg.contains("empty part"), "{msg}");
}

#[tokio::test]
async fn a_probe_in_the_junk_email_folder_is_junked() {
    let s = setup().await;
    let (id, token) = s.probe().await;
    s.double
        .deliver_to(JUNK_ID, &mime("Postcanary probe", &format!("Token: {token}")));

    let mut cfg = s.config(AfterConfirm::Keep);
    // The well-known name works whatever the folder is called in the mailbox's language.
    cfg.folder = "junkemail".into();
    cfg.role = postcanary::inbox::Folder::Junk("junkemail".into());
    let w = s.run(cfg);
    let p = s.wait_verdict(&id, Verdict::Junked).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.stop().await;
    assert!(p.detail.unwrap_or_default().contains("junkemail"));
    // The junk watcher keeps its own cursor beside the main one.
    assert!(s.store.cursor(&format!("{INBOX}#junkemail")).await.unwrap().is_some());
    assert!(s.store.cursor(INBOX).await.unwrap().is_none());
}

#[tokio::test]
async fn a_message_too_large_to_download_is_searched_in_its_text_body() {
    let s = setup().await;
    let (id, token) = s.probe().await;
    // A probe with an 11 MiB attachment: more than the watcher downloads.
    let attachment = "QUFB".repeat(11 * 1024 * 1024 / 4);
    let raw = format!(
        "From: Borgerservice <post@kommune.dk>\r\nTo: {MAILBOX}\r\nSubject: Bilag\r\n\
         Message-ID: <big@kommune.dk>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nSe bilag. Token: {token}\r\n--b\r\n\
         Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b--\r\n"
    );
    s.double.deliver(raw.as_bytes());
    let w = s.run(s.config(AfterConfirm::Keep));
    s.wait_verdict(&id, Verdict::Delivered).await;
    w.stop().await;

    let reqs = s.double.requests();
    // Listing asks for no bodies; the one body read asks for text.
    let lists: Vec<_> = reqs.iter().filter(|r| r.target.contains("/messages?")).collect();
    assert!(!lists.is_empty());
    assert!(lists.iter().all(|r| !r.target.contains("body")), "{lists:#?}");
    let summary = reqs
        .iter()
        .find(|r| r.target.contains("$select=subject,body") || r.target.contains("%24select=subject%2Cbody"))
        .expect("the body was read");
    assert_eq!(summary.prefer.as_deref(), Some("outlook.body-content-type=\"text\""));
}

#[tokio::test]
async fn a_wrong_mailbox_and_a_refused_mailbox_are_named_errors() {
    let s = setup().await;
    let mut cfg = s.config(AfterConfirm::Keep);
    cfg.mailbox = "kanary@kommune.dk".into();
    let msg = s.first_error(cfg).await;
    assert!(msg.contains("ErrorInvalidUser"), "{msg}");
    assert!(msg.contains("kanary@kommune.dk"), "{msg}");

    // An application access policy that leaves the mailbox out.
    s.double.deny_access(true);
    let msg = s.first_error(s.config(AfterConfirm::Keep)).await;
    assert!(msg.contains("HTTP 403"), "{msg}");
    assert!(msg.contains("ErrorAccessDenied"), "{msg}");
    assert!(msg.contains("application access policy"), "{msg}");
    assert!(msg.contains(MAILBOX), "{msg}");
    assert!(!msg.contains("double-token-") && !msg.contains(SECRET), "{msg}");

    // Fixed in Exchange: the same watcher config reads the mailbox again.
    s.double.deny_access(false);
    let (id, token) = s.probe().await;
    s.double.deliver(&mime("probe", &token));
    let w = s.run(s.config(AfterConfirm::Keep));
    s.wait_verdict(&id, Verdict::Delivered).await;
    w.stop().await;
}

/// The double holds postcanary to Graph's documented rules, so the tests
/// above could fail the way Graph would.
#[tokio::test]
async fn the_double_refuses_what_graph_refuses() {
    let s = setup().await;
    let http = reqwest::Client::new();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", CLIENT_ID),
        ("client_secret", SECRET),
        ("scope", graph::GRAPH_SCOPE),
    ];
    let tok: serde_json::Value = http
        .post(s.double.token_url())
        .form(&form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = tok["access_token"].as_str().unwrap().to_string();
    assert_eq!(tok["token_type"], "Bearer");
    let get = |url: String| {
        let http = http.clone();
        let bearer = bearer.clone();
        async move {
            let r = http.get(url).bearer_auth(bearer).send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let base = format!("{}/users/{MAILBOX}", s.double.base_url());

    // $orderby on a property that does not lead $filter.
    let (status, body) = get(format!(
        "{base}/mailFolders/inbox/messages?$filter=subject eq 'x' and receivedDateTime ge 2024-05-01T10:00:00Z&$orderby=receivedDateTime"
    ))
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "InefficientFilter");

    // Bodies are HTML unless text is asked for.
    s.double.deliver(&mime("s", "a < b"));
    let (status, body) = get(format!("{base}/mailFolders/inbox/messages?$select=id,body")).await;
    assert_eq!(status, 200);
    assert_eq!(body["value"][0]["body"]["contentType"], "html");
    assert!(body["value"][0]["body"]["content"]
        .as_str()
        .unwrap()
        .contains("a &lt; b"));
    assert!(body["value"][0].get("subject").is_none(), "$select is honoured");

    // Only top-level folders under mailFolders.
    let child = s.double.add_child_folder(INBOX_ID, "Postcanary");
    let (_, body) = get(format!("{base}/mailFolders?$filter=displayName eq 'Postcanary'")).await;
    assert_eq!(body["value"].as_array().unwrap().len(), 0);
    let (_, body) = get(format!(
        "{base}/mailFolders/inbox/childFolders?$filter=displayName eq 'Postcanary'"
    ))
    .await;
    assert_eq!(body["value"][0]["id"], child.as_str());
}

#[tokio::test]
async fn with_the_subject_filter_citizens_mail_is_never_read() {
    let s = setup().await;
    let (id, token) = s.probe().await;
    let (body_only_id, body_only) = s.probe().await;
    let citizen = s.double.deliver(&mime(
        "Bekymring for et barn",
        "Personfølsomme oplysninger, som prober ikke skal læse.",
    ));
    // Mail from a form whose subject field was not given the token.
    let form = s.double.deliver(&mime("Webformular", &format!("Token: {body_only}")));
    let ours = s.double.deliver(&mime(
        &format!("[postcanary test] Automatisk test / automated test - {token}"),
        "test",
    ));

    let mut cfg = s.config(AfterConfirm::Keep);
    cfg.subject_filter = true;
    let w = s.run(cfg);
    s.wait_verdict(&id, Verdict::Delivered).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    w.stop().await;

    let reqs = s.double.requests();
    let lists: Vec<_> = reqs.iter().filter(|r| r.target.contains("/messages?")).collect();
    assert!(
        lists
            .iter()
            .all(|r| r.target.contains("contains%28subject%2C%27pc-%27%29")),
        "{lists:#?}"
    );
    // Ids go into paths percent-encoded ('=' as %3D).
    let read = |id: &str| reqs.iter().any(|r| r.target.contains(&id.replace('=', "%3D")));
    assert!(read(&ours));
    for other in [&citizen, &form] {
        assert!(!read(other), "{other} was read");
    }
    // The price: a token only in the body is not seen.
    let p = s.store.probe(&body_only_id).await.unwrap().unwrap();
    assert_eq!(p.verdict, Verdict::Pending);
}
