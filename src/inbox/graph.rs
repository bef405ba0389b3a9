//! Microsoft Graph inbox watcher, for Microsoft 365 mailboxes where IMAP is
//! off or unwanted. It polls one mail folder of one mailbox with an app-only
//! token (client credentials), reads the MIME of every message newer than a
//! cursor kept in the ledger, and hands the tokens it finds to the
//! [`Matcher`] exactly as the IMAP watcher does.
//!
//! The cursor: Graph has no UIDs, only `receivedDateTime` (whole seconds)
//! and opaque ids. The ledger's [`Cursor`] keeps the `receivedDateTime` in
//! `last_uid` (Unix seconds) and a fingerprint of mailbox and folder in
//! `uid_validity`, so pointing the inbox elsewhere starts over like an IMAP
//! UIDVALIDITY change. Each poll asks for everything received since the
//! cursor minus [`OVERLAP`] (inclusive), because several messages share a
//! second and a message can become visible in the folder a little after its
//! `receivedDateTime`; ids read within that window are remembered so they
//! are not read twice. After a restart that memory is gone and the window is
//! read again: harmless, because the ledger judges a probe only once.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use tokio::sync::watch;

use super::imap::WatcherState;
use super::oauth::TokenCache;
use super::watchpoint::WatchPoint;
use super::{consider_message, Matcher};
use crate::config::AfterConfirm;
use crate::ledger::Cursor;
use crate::token::find_candidates;
use crate::verdict::now_millis;

pub use crate::config::{GraphConfig, DEFAULT_BASE_URL, DEFAULT_FOLDER, GRAPH_SCOPE};
/// Asks Graph for text bodies; without it `body` is HTML.
const PREFER_TEXT_BODY: &str = "outlook.body-content-type=\"text\"";

/// Messages per page (`$top`).
const PAGE_SIZE: u32 = 50;
/// Pages read per poll; if there are more, the next poll continues at once
/// from the last `@odata.nextLink`, so a flood cannot starve the rest.
const MAX_PAGES_PER_POLL: usize = 20;
/// MIME larger than this is not downloaded; the subject and the body Graph
/// lists are searched instead.
const MAX_MIME_BYTES: usize = 10 * 1024 * 1024;
/// A page of 50 listed messages with their bodies.
const MAX_PAGE_BYTES: usize = 32 * 1024 * 1024;
/// Folder lookups and error bodies.
const MAX_SMALL_BYTES: usize = 1024 * 1024;
/// Limit for any single HTTP round trip.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// How far back each poll re-reads before the cursor; see the module doc.
const OVERLAP: Duration = Duration::from_secs(120);
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Throttling answers (429, 503) waited out in a row before giving up and
/// reconnecting with backoff.
const MAX_THROTTLED: u32 = 5;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Folder names Graph accepts in place of an id. Matched case-insensitively.
const WELL_KNOWN_FOLDERS: &[&str] = &[
    "archive",
    "clutter",
    "conflicts",
    "conversationhistory",
    "deleteditems",
    "drafts",
    "inbox",
    "junkemail",
    "localfailures",
    "msgfolderroot",
    "outbox",
    "recoverableitemsdeletions",
    "scheduled",
    "searchfolders",
    "sentitems",
    "serverfailures",
    "syncissues",
];

/// A watcher failure; names the operation, never a token or secret.
#[derive(Debug)]
struct WatchError(String);

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One message as listed.
#[derive(Deserialize)]
struct Listed {
    id: String,
    #[serde(rename = "receivedDateTime")]
    received: Option<String>,
    subject: Option<String>,
    #[serde(rename = "internetMessageId")]
    internet_message_id: Option<String>,
}

#[derive(Deserialize)]
struct ItemBody {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<Listed>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Deserialize)]
struct FolderList {
    #[serde(default)]
    value: Vec<ListedFolder>,
}

#[derive(Deserialize)]
struct ListedFolder {
    id: String,
}

/// A message's subject and text body, asked for only when its MIME is too
/// large to download.
#[derive(Deserialize)]
struct Summary {
    subject: Option<String>,
    body: Option<ItemBody>,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: Option<GraphErrorInner>,
}

#[derive(Deserialize)]
struct GraphErrorInner {
    code: Option<String>,
    message: Option<String>,
}

/// An HTTP client bound to one mailbox and its token.
struct Graph<'a> {
    cfg: &'a GraphConfig,
    http: &'a reqwest::Client,
    tokens: &'a TokenCache,
    /// `scheme://host:port` of `base_url`: the token is only ever sent there.
    origin: url::Origin,
    base: String,
}

/// The result of a request that may legitimately find nothing.
enum Fetched {
    Ok(reqwest::Response),
    /// 404, with Graph's `code: message` (an unknown mailbox is
    /// `ErrorInvalidUser`, a gone message `ErrorItemNotFound`).
    NotFound(String),
}

impl<'a> Graph<'a> {
    fn new(cfg: &'a GraphConfig, http: &'a reqwest::Client, tokens: &'a TokenCache) -> Result<Self, WatchError> {
        let base = cfg.base_url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base).map_err(|e| WatchError(format!("invalid Graph base URL {base:?}: {e}")))?;
        Ok(Graph {
            cfg,
            http,
            tokens,
            origin: parsed.origin(),
            base,
        })
    }

    fn user(&self) -> String {
        format!("{}/users/{}", self.base, enc(&self.cfg.mailbox))
    }

    /// Sends a request with the bearer token. A 401 gets one fresh token and
    /// one retry; 429 and 503 are waited out as `Retry-After` says.
    async fn send(
        &self,
        what: &str,
        method: Method,
        url: &str,
        body: Option<&serde_json::Value>,
        prefer_text: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Fetched, WatchError> {
        let mut refreshed = false;
        let mut throttled = 0;
        loop {
            let token = self
                .tokens
                .bearer()
                .await
                .map_err(|e| WatchError(format!("{what}: {e}")))?;
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(&token)
                .timeout(OP_TIMEOUT);
            if let Some(b) = body {
                req = req.json(b);
            }
            if prefer_text {
                // Bodies come as HTML unless asked otherwise.
                req = req.header("Prefer", PREFER_TEXT_BODY);
            }
            let mut resp = req
                .send()
                .await
                .map_err(|e| WatchError(format!("{what}: {}", e.without_url())))?;
            let status = resp.status();
            if status.is_success() {
                return Ok(Fetched::Ok(resp));
            }
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                // Expired or revoked early: one new token, one more try.
                tracing::info!(inbox = %self.cfg.watcher_name(), "Graph refused the access token; fetching a new one");
                self.tokens.invalidate(&token).await;
                refreshed = true;
                continue;
            }
            if matches!(status, StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE)
                && throttled < MAX_THROTTLED
            {
                let wait = retry_after(&resp, throttled);
                throttled += 1;
                tracing::warn!(inbox = %self.cfg.watcher_name(), %status, wait_ms = wait.as_millis() as u64, "Graph is throttling; waiting as asked");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                if *shutdown.borrow() {
                    return Err(WatchError(format!("{what}: shutting down")));
                }
                continue;
            }
            let detail = read_capped(&mut resp, MAX_SMALL_BYTES)
                .await
                .ok()
                .flatten()
                .and_then(|b| serde_json::from_slice::<GraphErrorBody>(&b).ok())
                .and_then(|b| b.error)
                .map(|e| {
                    let text = format!("{}: {}", e.code.unwrap_or_default(), e.message.unwrap_or_default());
                    super::oauth::scrub(&text, &[&token])
                })
                .unwrap_or_default();
            if status == StatusCode::NOT_FOUND {
                return Ok(Fetched::NotFound(detail));
            }
            let hint = if status == StatusCode::FORBIDDEN {
                format!(
                    " (the app registration needs the Mail.ReadWrite application permission with admin consent, \
                     and an Exchange application access policy or RBAC for Applications scope must include {})",
                    self.cfg.mailbox
                )
            } else {
                String::new()
            };
            return Err(WatchError(format!("{what}: HTTP {status} {detail}{hint}")));
        }
    }

    /// GETs JSON. A 404 is `None` (the thing is gone); with `prefer_text`
    /// bodies come as text.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
        limit: usize,
        prefer_text: bool,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Option<T>, WatchError> {
        match self.send(what, Method::GET, url, None, prefer_text, shutdown).await? {
            Fetched::Ok(resp) => read_json(what, resp, limit).await.map(Some),
            Fetched::NotFound(_) => Ok(None),
        }
    }

    /// Like [`Graph::json`], but a 404 is an error naming what Graph said
    /// (for lists, where it means the mailbox or folder is wrong).
    async fn json_required<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: &str,
        limit: usize,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<T, WatchError> {
        match self.send(what, Method::GET, url, None, false, shutdown).await? {
            Fetched::Ok(resp) => read_json(what, resp, limit).await,
            Fetched::NotFound(detail) => Err(WatchError(format!("{what}: HTTP 404 Not Found {detail}"))),
        }
    }

    /// The path segment for a folder. `name` is a `/`-separated path: its
    /// first part a well-known name (used as is) or the display name of a
    /// top-level folder, each further part the display name of a child of the
    /// one before (`Inbox/Postcanary`). Graph lists only top-level folders
    /// under `mailFolders`; children are under `childFolders`. A missing
    /// folder is an error: postcanary does not create folders in someone's
    /// mailbox.
    async fn folder_id(&self, name: &str, shutdown: &mut watch::Receiver<bool>) -> Result<String, WatchError> {
        match self.find_folder(name, shutdown).await? {
            Ok(id) => Ok(id),
            Err(missing) => Err(WatchError(format!(
                "{missing}; create it or fix the inbox's folder / after_confirm"
            ))),
        }
    }

    /// [`Graph::folder_id`], with a folder that does not exist as
    /// `Ok(Err(what is missing))` rather than an error.
    async fn find_folder(
        &self,
        name: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Result<String, String>, WatchError> {
        let parts: Vec<&str> = name.split('/').map(str::trim).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(WatchError(format!(
                "folder {name:?} has an empty part; write a path of display names such as \"Inbox/Postcanary\""
            )));
        }
        let what = format!("look up folder {name:?} in {}", self.cfg.mailbox);
        let mut found: Option<String> = None;
        for (depth, part) in parts.iter().enumerate() {
            let lower = part.to_ascii_lowercase();
            if depth == 0 && WELL_KNOWN_FOLDERS.contains(&lower.as_str()) {
                found = Some(lower);
                continue;
            }
            let filter = format!("displayName eq '{}'", part.replace('\'', "''"));
            let (list_url, under) = match &found {
                None => (format!("{}/mailFolders", self.user()), "at the top level".to_string()),
                Some(parent) => (
                    format!("{}/mailFolders/{}/childFolders", self.user(), enc(parent)),
                    format!("under {:?}", parts[..depth].join("/")),
                ),
            };
            let url = format!("{list_url}?$filter={}&$select=id,displayName", enc(&filter));
            let list: FolderList = self.json_required(&what, &url, MAX_SMALL_BYTES, shutdown).await?;
            match list.value.into_iter().next() {
                Some(f) => found = Some(f.id),
                None => {
                    return Ok(Err(format!(
                        "mailbox {} has no folder {part:?} {under}",
                        self.cfg.mailbox
                    )))
                }
            }
        }
        found
            .map(Ok)
            .ok_or_else(|| WatchError(format!("folder {name:?} is empty")))
    }

    /// The first page of messages received at or after `since` (Unix seconds).
    fn first_page_url(&self, folder: &str, since: i64) -> String {
        let since = chrono::DateTime::from_timestamp(since, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ");
        // receivedDateTime leads the filter, as Graph requires of the $orderby property.
        let mut filter = format!("receivedDateTime ge {since}");
        if self.cfg.subject_filter {
            filter.push_str(&format!(" and contains(subject,'{}')", crate::token::PREFIX));
        }
        format!(
            "{}/mailFolders/{}/messages?$filter={}&$select=id,subject,receivedDateTime,internetMessageId&$orderby=receivedDateTime&$top={PAGE_SIZE}",
            self.user(),
            enc(folder),
            enc(&filter),
        )
    }

    /// Follows only links to the Graph host: a nextLink elsewhere would get our token.
    fn check_next_link(&self, link: &str) -> Result<(), WatchError> {
        match url::Url::parse(link) {
            Ok(u) if u.origin() == self.origin => Ok(()),
            _ => Err(WatchError(format!(
                "refusing @odata.nextLink outside {}",
                self.origin.ascii_serialization()
            ))),
        }
    }

    /// The message's MIME, or `None` if it is gone or too large.
    async fn mime(&self, m: &Listed, shutdown: &mut watch::Receiver<bool>) -> Result<Option<Vec<u8>>, WatchError> {
        let url = format!("{}/messages/{}/$value", self.user(), enc(&m.id));
        let mut resp = match self
            .send("fetch MIME", Method::GET, &url, None, false, shutdown)
            .await?
        {
            Fetched::Ok(r) => r,
            Fetched::NotFound(_) => {
                tracing::info!(inbox = %self.cfg.watcher_name(), message_id = ?m.internet_message_id, "message vanished before it could be read");
                return Ok(None);
            }
        };
        let raw = read_capped(&mut resp, MAX_MIME_BYTES)
            .await
            .map_err(|e| WatchError(format!("fetch MIME: {e}")))?;
        if raw.is_none() {
            tracing::warn!(
                inbox = %self.cfg.watcher_name(),
                message_id = ?m.internet_message_id,
                max_bytes = MAX_MIME_BYTES,
                "message too large; searching only its subject and text body"
            );
        }
        Ok(raw)
    }

    /// Subject and text body of a message too large to download whole.
    async fn summary(&self, m: &Listed, shutdown: &mut watch::Receiver<bool>) -> Result<Option<Summary>, WatchError> {
        let url = format!("{}/messages/{}?$select=subject,body", self.user(), enc(&m.id));
        self.json("read subject and body", &url, MAX_PAGE_BYTES, true, shutdown)
            .await
    }

    /// Moves a retained canary into its archive folder, resolved once per
    /// session (`archives`). A folder that does not exist is logged once and
    /// the canary stays where it is — postcanary does not create folders in
    /// someone's mailbox, and the retention check looks in the watched
    /// folder too.
    async fn to_archive(
        &self,
        m: &Listed,
        folder: &str,
        archives: &mut HashMap<String, Option<String>>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), WatchError> {
        let dest = match archives.get(folder) {
            Some(d) => d.clone(),
            None => {
                let d = match self.find_folder(folder, shutdown).await? {
                    Ok(id) => Some(id),
                    Err(missing) => {
                        tracing::error!(inbox = %self.cfg.watcher_name(), %folder,
                            "archive = \"{folder}\": {missing}; retained canaries stay in {:?} until it is created", self.cfg.folder);
                        None
                    }
                };
                archives.insert(folder.to_string(), d.clone());
                d
            }
        };
        let Some(dest) = dest else {
            return Ok(());
        };
        let url = format!("{}/messages/{}/move", self.user(), enc(&m.id));
        let body = serde_json::json!({ "destinationId": dest });
        let done = self
            .send(
                &format!("move to {folder}"),
                Method::POST,
                &url,
                Some(&body),
                false,
                shutdown,
            )
            .await?;
        if matches!(done, Fetched::NotFound(_)) {
            tracing::info!(inbox = %self.cfg.watcher_name(), message_id = ?m.internet_message_id, "retained canary already gone before its move");
        } else {
            tracing::debug!(inbox = %self.cfg.watcher_name(), message_id = ?m.internet_message_id, %folder, "archived retained canary");
        }
        Ok(())
    }

    async fn after_confirm(
        &self,
        m: &Listed,
        destination: Option<&str>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), WatchError> {
        let url = format!("{}/messages/{}", self.user(), enc(&m.id));
        let done = match (&self.cfg.after_confirm, destination) {
            (AfterConfirm::Keep, _) => return Ok(()),
            (AfterConfirm::Move(folder), Some(dest)) => {
                let body = serde_json::json!({ "destinationId": dest });
                self.send(
                    &format!("move to {folder}"),
                    Method::POST,
                    &format!("{url}/move"),
                    Some(&body),
                    false,
                    shutdown,
                )
                .await?
            }
            (AfterConfirm::Move(folder), None) => {
                return Err(WatchError(format!("move to {folder}: folder not resolved")));
            }
            (AfterConfirm::Delete, _) => self.send("delete", Method::DELETE, &url, None, false, shutdown).await?,
        };
        if matches!(done, Fetched::NotFound(_)) {
            tracing::info!(inbox = %self.cfg.watcher_name(), message_id = ?m.internet_message_id, "confirmed message already gone");
        } else {
            tracing::debug!(inbox = %self.cfg.watcher_name(), message_id = ?m.internet_message_id, action = ?self.cfg.after_confirm, "cleaned up confirmed probe");
        }
        Ok(())
    }
}

/// Runs the watcher until `shutdown` turns true. Errors are logged and lead
/// to a new session after exponential backoff; the watcher never gives up.
pub async fn watch(
    cfg: GraphConfig,
    matcher: Matcher,
    shutdown: watch::Receiver<bool>,
    state: watch::Sender<WatcherState>,
) {
    let point = WatchPoint::new(cfg.watcher_name(), cfg.name.clone(), crate::config::DEFAULT_BLIND_GRACE);
    watch_with(cfg, matcher, point, shutdown, state).await
}

/// [`watch`] publishing its connection and progress on `point`, and polling
/// at once whenever the sweeper nudges it.
pub async fn watch_with(
    cfg: GraphConfig,
    matcher: Matcher,
    point: std::sync::Arc<WatchPoint>,
    mut shutdown: watch::Receiver<bool>,
    state: watch::Sender<WatcherState>,
) {
    let mut backoff = BACKOFF_START;
    // Kept across sessions: a reconnect needs neither a new token nor to
    // re-read what this process has read already.
    let mut client: Option<(reqwest::Client, TokenCache)> = None;
    let mut seen = Seen::default();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let _ = state.send(WatcherState::Connecting);
        let mut connected = false;
        if client.is_none() {
            // Building fails only if the TLS backend cannot start or a
            // `ca_file` certificate is unusable; retried like any error.
            client = match http_client(&cfg) {
                Ok(http) => Some((http.clone(), TokenCache::new(cfg.credentials.clone(), http))),
                Err(e) => {
                    tracing::error!(inbox = %cfg.watcher_name(), error = %e, "Graph watcher cannot start its HTTP client");
                    None
                }
            };
        }
        let result = match &client {
            Some((http, tokens)) => {
                run_session(
                    &cfg,
                    &matcher,
                    &point,
                    http,
                    tokens,
                    &mut seen,
                    &mut shutdown,
                    &state,
                    &mut connected,
                )
                .await
            }
            None => Err(WatchError("cannot build an HTTP client".into())),
        };
        match result {
            Ok(()) => break,
            Err(e) => {
                if *shutdown.borrow() {
                    break;
                }
                if connected {
                    backoff = BACKOFF_START;
                }
                point.blind(e.to_string());
                let pending = matches!(matcher.store.next_deadline().await, Ok(Some(_)));
                let wait = super::imap::jittered(backoff);
                tracing::warn!(inbox = %cfg.watcher_name(), error = %e, retry_in_ms = wait.as_millis() as u64, "Graph watcher disconnected");
                let _ = state.send(WatcherState::Backoff(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = super::imap::next_backoff(backoff, pending).min(BACKOFF_MAX);
            }
        }
    }
    let _ = state.send(WatcherState::Stopped);
}

/// Ids already read, with their `receivedDateTime`; only ids that a poll
/// can return again (within [`OVERLAP`] of the cursor) are kept.
#[derive(Default)]
struct Seen(HashMap<String, i64>);

impl Seen {
    fn prune(&mut self, cursor: i64) {
        let horizon = cursor - OVERLAP.as_secs() as i64;
        self.0.retain(|_, &mut t| t >= horizon);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    cfg: &GraphConfig,
    matcher: &Matcher,
    point: &WatchPoint,
    http: &reqwest::Client,
    tokens: &TokenCache,
    seen: &mut Seen,
    shutdown: &mut watch::Receiver<bool>,
    state: &watch::Sender<WatcherState>,
    connected: &mut bool,
) -> Result<(), WatchError> {
    let graph = Graph::new(cfg, http, tokens)?;
    let folder = graph.folder_id(&cfg.folder, shutdown).await?;
    let destination = match &cfg.after_confirm {
        AfterConfirm::Move(name) => Some(graph.folder_id(name, shutdown).await?),
        _ => None,
    };
    let fingerprint = fingerprint(&cfg.mailbox, &cfg.folder);
    let mut cursor = starting_cursor(cfg, matcher, fingerprint).await?;
    tracing::info!(inbox = %cfg.watcher_name(), mailbox = %cfg.mailbox, folder = %cfg.folder, "Graph watcher connected");
    let mut resume: Option<String> = None;
    let mut poll_started = now_millis();
    // Archive folders of retained canaries, resolved once per session (None: missing).
    let mut archives: HashMap<String, Option<String>> = HashMap::new();
    loop {
        if resume.is_none() {
            poll_started = now_millis();
        }
        let url = resume
            .take()
            .unwrap_or_else(|| graph.first_page_url(&folder, cursor - OVERLAP.as_secs() as i64));
        let (next, new_cursor) = poll(
            &graph,
            matcher,
            seen,
            url,
            destination.as_deref(),
            &mut archives,
            cursor,
            shutdown,
        )
        .await?;
        if new_cursor != cursor {
            cursor = new_cursor;
            store_cursor(cfg, matcher, fingerprint, cursor).await?;
        }
        seen.prune(cursor);
        if !*connected {
            *connected = true;
            point.connected();
        }
        let _ = state.send(WatcherState::Polling);
        if *shutdown.borrow() {
            return Ok(());
        }
        if next.is_some() {
            resume = next;
            continue;
        }
        point.caught_up(poll_started);
        tokio::select! {
            _ = tokio::time::sleep(cfg.poll_interval) => {}
            _ = point.nudged() => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return Ok(());
        }
    }
}

/// Reads up to [`MAX_PAGES_PER_POLL`] pages starting at `url`; returns the
/// nextLink to continue from (if the page limit cut it short) and the new cursor.
#[allow(clippy::too_many_arguments)]
async fn poll(
    graph: &Graph<'_>,
    matcher: &Matcher,
    seen: &mut Seen,
    mut url: String,
    destination: Option<&str>,
    archives: &mut HashMap<String, Option<String>>,
    mut cursor: i64,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(Option<String>, i64), WatchError> {
    let cfg = graph.cfg;
    let what = format!("list messages in {:?} of {}", cfg.folder, cfg.mailbox);
    for _ in 0..MAX_PAGES_PER_POLL {
        let page: Page = graph.json_required(&what, &url, MAX_PAGE_BYTES, shutdown).await?;
        let seen_at = now_millis();
        for m in &page.value {
            if seen.0.contains_key(&m.id) {
                continue;
            }
            let received = m.received.as_deref().and_then(parse_time);
            // The mailbox's own arrival time (to the second), never later than now.
            let arrived = super::imap::arrival_time(received.map(|s| s.saturating_mul(1000)), seen_at);
            let raw = graph.mime(m, shutdown).await?;
            // Whole messages go through the bounce-aware path, as IMAP's do.
            let store_err = |e: crate::ledger::StoreError| WatchError(e.to_string());
            let (fates, candidates) = match &raw {
                Some(raw) => (
                    consider_message(matcher, &cfg.name, &cfg.role, raw, arrived)
                        .await
                        .map_err(store_err)?,
                    crate::token::tokens_in_message(raw),
                ),
                None => {
                    let summary = graph.summary(m, shutdown).await?;
                    let candidates = summary_candidates(m, summary.as_ref());
                    let fates = if candidates.is_empty() {
                        Vec::new()
                    } else {
                        matcher
                            .consider_in(&cfg.name, &cfg.role, &candidates, arrived)
                            .await
                            .map_err(store_err)?
                    };
                    (fates, candidates)
                }
            };
            if fates.iter().any(|f| f.is_ours()) {
                // A retained canary stays (or goes to its archive) instead of `after_confirm`.
                match matcher.retained_folder_in(&candidates).await.map_err(store_err)? {
                    None => graph.after_confirm(m, destination, shutdown).await?,
                    Some(None) => {}
                    Some(Some(folder)) => graph.to_archive(m, &folder, archives, shutdown).await?,
                }
            }
            // Listed in receivedDateTime order, so everything before is done.
            let t = received.unwrap_or(cursor);
            seen.0.insert(m.id.clone(), t);
            cursor = cursor.max(t);
        }
        match page.next_link {
            Some(next) => {
                graph.check_next_link(&next)?;
                url = next;
            }
            None => return Ok((None, cursor)),
        }
    }
    tracing::info!(inbox = %cfg.watcher_name(), pages = MAX_PAGES_PER_POLL, "many new messages; continuing right away");
    Ok((Some(url), cursor))
}

/// The HTTP client for the Graph and token endpoints: the system's roots
/// and the inbox's `ca_file`, if any.
fn http_client(cfg: &GraphConfig) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder();
    if let Some(ca) = &cfg.ca_file {
        for der in &ca.certs {
            let cert = reqwest::Certificate::from_der(der).map_err(|e| format!("ca_file {}: {e}", ca.path))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("cannot build an HTTP client: {e}"))
}

/// How far before a probe was made, and after it was found, a retention
/// lookup lists messages by `receivedDateTime` (which a move keeps): clock
/// skew between us and Exchange, and a canary seen late.
const LOOKUP_SLACK_SECS: i64 = 600;
/// Messages in a lookup's time window whose MIME is read, at most.
const LOOKUP_MAX_MESSAGES: usize = 500;

/// The canary a retention lookup looks for.
pub struct Wanted<'a> {
    /// `pc-<ULID>`, as the ledger keeps it.
    pub token: &'a str,
    pub probe_id: &'a str,
    /// When the probe was made and when it was found (Unix ms).
    pub created_at: i64,
    pub found_at: Option<i64>,
}

/// Looks a retained canary up again in a Graph mailbox: in each folder in
/// turn (a folder that does not exist holds nothing), the messages received
/// between the probe's making and its finding (± [`LOOKUP_SLACK_SECS`]) —
/// those whose subject carries the token first — are read, and only one
/// whose token's tag verifies and names the probe counts (a copied
/// `pc-<ULID>` proves nothing). When the window holds more than
/// [`LOOKUP_MAX_MESSAGES`], or a message carrying the token is too large to
/// read, "not there" is not certain and the lookup fails (our side). The
/// hash is [`content_hash`]: Exchange
/// renders a message's MIME from its store, so the raw bytes are not what
/// is compared. `Err` is our own side (token endpoint, network, throttling,
/// permissions), never a verdict on the canary.
pub async fn lookup(
    cfg: &GraphConfig,
    folders: &[String],
    wanted: &Wanted<'_>,
    key: &crate::token::TokenKey,
) -> Result<super::imap::Lookup, String> {
    let http = http_client(cfg)?;
    let tokens = TokenCache::new(cfg.credentials.clone(), http.clone());
    let graph = Graph::new(cfg, &http, &tokens).map_err(|e| e.0)?;
    // Nothing ends a lookup early but its own timeouts.
    let (_keep, mut shutdown) = watch::channel(false);
    lookup_in(&graph, folders, wanted, key, &mut shutdown)
        .await
        .map_err(|e| e.0)
}

async fn lookup_in(
    graph: &Graph<'_>,
    folders: &[String],
    wanted: &Wanted<'_>,
    key: &crate::token::TokenKey,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<super::imap::Lookup, WatchError> {
    let from = wanted.created_at.div_euclid(1000) - LOOKUP_SLACK_SECS;
    let until = wanted.found_at.unwrap_or(wanted.created_at).div_euclid(1000) + LOOKUP_SLACK_SECS;
    // Retention outlives `token.max_age`: the age window does not apply here, the tag does.
    let forever = Duration::from_secs(100 * 366 * 86_400);
    // Why "not found" would not be certain: then it is our failure to look, never `lost`.
    let mut uncertain: Option<String> = None;
    for name in folders {
        let folder = match graph.find_folder(name, shutdown).await? {
            Ok(id) => id,
            Err(_) => continue,
        };
        // Subject filtering would miss a canary whose subject a gateway rewrote; the time window bounds the reads instead.
        let since = chrono::DateTime::from_timestamp(from, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ");
        let filter = format!("receivedDateTime ge {since}");
        let mut url = format!(
            "{}/mailFolders/{}/messages?$filter={}&$select=id,subject,receivedDateTime,internetMessageId&$orderby=receivedDateTime&$top={PAGE_SIZE}",
            graph.user(),
            enc(&folder),
            enc(&filter),
        );
        let what = format!("look up a retained canary in {name:?} of {}", graph.cfg.mailbox);
        let mut listed: Vec<Listed> = Vec::new();
        'pages: loop {
            let page: Page = graph.json_required(&what, &url, MAX_PAGE_BYTES, shutdown).await?;
            for m in page.value {
                let t = m.received.as_deref().and_then(parse_time);
                if t.is_some_and(|t| t > until) {
                    break 'pages;
                }
                listed.push(m);
                if listed.len() >= LOOKUP_MAX_MESSAGES {
                    uncertain = Some(format!(
                        "more than {LOOKUP_MAX_MESSAGES} messages in {name:?} around the canary's arrival; \
                         keep retained canaries in an `archive` folder of their own"
                    ));
                    break 'pages;
                }
            }
            match page.next_link {
                Some(next) => {
                    graph.check_next_link(&next)?;
                    url = next;
                }
                None => break,
            }
        }
        // Those that carry the token in their subject are read first.
        listed.sort_by_key(|m| !m.subject.as_deref().is_some_and(|s| s.contains(wanted.token)));
        for m in &listed {
            let Some(raw) = graph.mime(m, shutdown).await? else {
                if m.subject.as_deref().is_some_and(|s| s.contains(wanted.token)) {
                    uncertain = Some(format!(
                        "a message in {name:?} with the canary's token is too large to read"
                    ));
                }
                continue;
            };
            let ours = crate::token::tokens_in_message(&raw).iter().any(|c| {
                key.verify(c, std::time::SystemTime::now(), forever)
                    .is_ok_and(|t| t.id() == wanted.probe_id)
            });
            if ours {
                return Ok(super::imap::Lookup::Found {
                    folder: name.clone(),
                    hash: content_hash(&raw),
                });
            }
        }
    }
    match uncertain {
        Some(why) => Err(WatchError(why)),
        None => Ok(super::imap::Lookup::Absent),
    }
}

/// What of a message a Graph retention check compares: the SHA-256 of its
/// subject, Message-ID, Date, From and decoded text body, each
/// whitespace-normalised (`sha256:HEX`). Exchange renders a message's MIME
/// from its store (boundaries, header folding and transfer encodings may
/// differ between two reads), so hashing the raw bytes would call an
/// untouched canary altered; an edit of what a person reads is caught.
pub fn content_hash(raw: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut h = Sha256::new();
    match mail_parser::MessageParser::default().parse(raw) {
        Some(msg) => {
            let from = msg
                .from()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let date = msg.date().map(|d| d.to_timestamp().to_string()).unwrap_or_default();
            let body = msg.body_text(0).map(|b| norm(&b)).unwrap_or_default();
            for part in [
                norm(msg.subject().unwrap_or_default()),
                msg.message_id().unwrap_or_default().to_string(),
                date,
                from,
                body,
            ] {
                h.update(part.as_bytes());
                h.update([0u8]);
            }
        }
        // Not a message mail-parser can read: the bytes are all there is.
        None => h.update(raw),
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Tokens in the subject and text body of a message too large to download.
fn summary_candidates(m: &Listed, summary: Option<&Summary>) -> Vec<String> {
    let mut out = Vec::new();
    let texts = [
        m.subject.as_deref(),
        summary.and_then(|s| s.subject.as_deref()),
        summary.and_then(|s| s.body.as_ref()).and_then(|b| b.content.as_deref()),
    ];
    for text in texts.into_iter().flatten() {
        for c in find_candidates(text.as_bytes()) {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out
}

/// Where to start: the kept cursor if it is for this mailbox and folder;
/// otherwise the day before the oldest pending probe was made; with no
/// probe pending, now.
async fn starting_cursor(cfg: &GraphConfig, matcher: &Matcher, fingerprint: u32) -> Result<i64, WatchError> {
    let store_err = |e: crate::ledger::StoreError| WatchError(e.to_string());
    if let Some(c) = matcher.store.cursor(&cfg.cursor_key()).await.map_err(store_err)? {
        if c.uid_validity == fingerprint {
            return Ok(i64::from(c.last_uid));
        }
        tracing::warn!(inbox = %cfg.watcher_name(), "mailbox or folder changed; rescanning recent mail");
    }
    let oldest_pending = matcher
        .store
        .pending()
        .await
        .map_err(store_err)?
        .iter()
        .map(|p| p.created_at)
        .min();
    let start_ms = match oldest_pending {
        Some(created) => created - 86_400_000,
        None => now_millis(),
    };
    let start = start_ms.div_euclid(1000);
    store_cursor(cfg, matcher, fingerprint, start).await?;
    Ok(start)
}

async fn store_cursor(cfg: &GraphConfig, matcher: &Matcher, fingerprint: u32, secs: i64) -> Result<(), WatchError> {
    // u32 seconds reach 2106.
    let last_uid = u32::try_from(secs.max(0)).unwrap_or(u32::MAX);
    matcher
        .store
        .set_cursor(
            &cfg.cursor_key(),
            Cursor {
                uid_validity: fingerprint,
                last_uid,
            },
        )
        .await
        .map_err(|e| WatchError(e.to_string()))
}

/// FNV-1a of mailbox and folder, the Graph stand-in for UIDVALIDITY.
fn fingerprint(mailbox: &str, folder: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in format!("graph:{}/{}", mailbox.to_lowercase(), folder.to_lowercase()).bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn parse_time(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp())
}

/// How long a throttling answer asks us to wait: `Retry-After` in seconds
/// (capped), or exponential from 1 s when it does not say.
fn retry_after(resp: &reqwest::Response, attempt: u32) -> Duration {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or_else(|| Duration::from_secs(1 << attempt.min(6)))
        .min(MAX_RETRY_AFTER)
}

/// Reads a JSON answer of at most `limit` bytes.
async fn read_json<T: serde::de::DeserializeOwned>(
    what: &str,
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<T, WatchError> {
    let body = read_capped(&mut resp, limit)
        .await
        .map_err(|e| WatchError(format!("{what}: {e}")))?
        .ok_or_else(|| WatchError(format!("{what}: answer larger than {limit} bytes")))?;
    serde_json::from_slice(&body).map_err(|e| WatchError(format!("{what}: unexpected answer: {e}")))
}

/// Reads a body of at most `limit` bytes; `None` if it is larger.
async fn read_capped(resp: &mut reqwest::Response, limit: usize) -> Result<Option<Vec<u8>>, String> {
    if resp.content_length().is_some_and(|n| n > limit as u64) {
        return Ok(None);
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// Percent-encodes a path segment or query value ('@' stays, as UPNs read better).
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        assert_eq!(
            enc("receivedDateTime ge 2024-05-01T10:00:00Z"),
            "receivedDateTime%20ge%202024-05-01T10%3A00%3A00Z"
        );
        assert_eq!(enc("canary@kommune.dk"), "canary@kommune.dk");
        assert_eq!(enc("AAMk+/=="), "AAMk%2B%2F%3D%3D");
    }

    #[test]
    fn fingerprint_ignores_case_but_not_folder() {
        assert_eq!(fingerprint("A@x.dk", "Inbox"), fingerprint("a@X.dk", "inbox"));
        assert_ne!(fingerprint("a@x.dk", "Inbox"), fingerprint("a@x.dk", "Other"));
    }

    /// A canary as sent, and as Exchange may render it on a later read:
    /// headers refolded and reordered, the body quoted-printable, a header
    /// of its own added.
    const SENT: &str = "From: Postcanary <canary@kommune.example>\r\nTo: social@kommune.example\r\n\
        Subject: [postcanary test] pc-01JDXYZ\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\
        Message-ID: <pc-01JDXYZ@kommune.example>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
        This is a test message from postcanary.\r\nToken: pc-01JDXYZ\r\n";
    const RENDERED: &str = "Received: from mx (10.0.0.1) by exchange; Tue, 01 Dec 2026 10:00:01 +0000\r\n\
        Message-ID: <pc-01JDXYZ@kommune.example>\r\nSubject:\r\n [postcanary test] pc-01JDXYZ\r\n\
        From: \"Postcanary\" <CANARY@kommune.example>\r\nTo: social@kommune.example\r\n\
        Date: Tue, 1 Dec 2026 11:00:00 +0100\r\nX-MS-Exchange-Organization-SCL: -1\r\nMIME-Version: 1.0\r\n\
        Content-Type: text/plain; charset=\"utf-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
        This is a test message from =\r\npostcanary.\r\nToken: pc-01JDXYZ\r\n";

    #[test]
    fn a_rendered_copy_hashes_as_the_original_an_edit_does_not() {
        assert_eq!(content_hash(SENT.as_bytes()), content_hash(RENDERED.as_bytes()));
        let edited = SENT.replace("a test message", "an edited message");
        assert_ne!(content_hash(SENT.as_bytes()), content_hash(edited.as_bytes()));
        let resubjected = SENT.replace("[postcanary test]", "[ekstern]");
        assert_ne!(content_hash(SENT.as_bytes()), content_hash(resubjected.as_bytes()));
        assert!(content_hash(b"\xff\xfe not mail").starts_with("sha256:"));
    }

    #[test]
    fn times_are_whole_seconds() {
        assert_eq!(parse_time("2024-05-01T10:00:00Z"), Some(1_714_557_600));
        assert_eq!(parse_time("not a time"), None);
    }
}
