//! IMAP inbox watcher over async-imap: one connection per inbox; IDLE where
//! the server offers it, polling otherwise; reconnects with backoff; after
//! every (re)connect it catches up from the last UID it has read, which is
//! kept in the ledger, so nothing that arrived meanwhile is missed.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::{Client, Session};
use futures::TryStreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::watchpoint::WatchPoint;
use super::{consider_message, Matcher};
use crate::config::{AfterConfirm, InboxConfig, Tls};
use crate::ledger::Cursor;
use crate::verdict::{now_millis, Millis};

/// Limit for any single IMAP round trip.
const OP_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages larger than this are searched in their first [`PARTIAL_BYTES`] only.
const MAX_BODY_BYTES: u32 = 2 * 1024 * 1024;
/// What is read of a message over [`MAX_BODY_BYTES`]: its start (the header
/// and the beginning of the body), so a hostile 40 MB header costs no more.
const PARTIAL_BYTES: u32 = 256 * 1024;
/// UIDs per FETCH command during catch-up.
const FETCH_BATCH: usize = 200;
const BACKOFF_START: Duration = Duration::from_millis(500);
/// The longest wait between reconnects while probes are pending: a watcher
/// must not stay blind long after its server is back.
const BACKOFF_MAX_PENDING: Duration = Duration::from_secs(5);
/// The longest wait between reconnects when nothing waits for this watcher.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What a watcher is doing, for health and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatcherState {
    Connecting,
    /// Connected and waiting with IDLE.
    Idle,
    /// Connected and polling every `poll_interval`.
    Polling,
    /// Disconnected, waiting to reconnect after an error.
    Backoff(String),
    Stopped,
}

impl WatcherState {
    pub fn is_connected(&self) -> bool {
        matches!(self, WatcherState::Idle | WatcherState::Polling)
    }
}

/// A plain or TLS connection; async-imap needs one concrete stream type.
pub enum ImapStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl fmt::Debug for ImapStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImapStream::Plain(_) => "ImapStream::Plain",
            ImapStream::Tls(_) => "ImapStream::Tls",
        })
    }
}

impl AsyncRead for ImapStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type ImapSession = Session<ImapStream>;

/// A watcher failure; the message names the inbox's server and never a password.
#[derive(Debug)]
struct WatchError(String);

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

async fn op<T, E: fmt::Display>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, WatchError> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(WatchError(format!("{what}: {e}"))),
        Err(_) => Err(WatchError(format!(
            "{what}: no answer within {}s",
            OP_TIMEOUT.as_secs()
        ))),
    }
}

pub(crate) fn tls_connector(ca: Option<&crate::config::ca::CaFile>) -> Result<tokio_rustls::TlsConnector, String> {
    let roots = crate::config::ca::CaFile::root_store(ca);
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

async fn tls_wrap(
    host: &str,
    tcp: TcpStream,
    ca: Option<&crate::config::ca::CaFile>,
) -> Result<ImapStream, WatchError> {
    let connector = tls_connector(ca).map_err(WatchError)?;
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| WatchError(format!("invalid TLS server name {host:?}: {e}")))?;
    let tls = op(&format!("TLS handshake with {host}"), connector.connect(name, tcp)).await?;
    Ok(ImapStream::Tls(Box::new(tls)))
}

/// Connects, secures and logs in; returns the session with the mailbox selected.
async fn open(
    cfg: &InboxConfig,
    oauth: Option<&super::oauth::TokenCache>,
) -> Result<(ImapSession, async_imap::types::Mailbox, bool), WatchError> {
    let (mut session, can_idle) = login(cfg, oauth).await?;
    let mailbox = op(&format!("SELECT {}", cfg.mailbox), session.select(&cfg.mailbox)).await?;
    Ok((session, mailbox, can_idle))
}

/// Connects, secures and logs in; returns the session and whether it offers IDLE.
async fn login(cfg: &InboxConfig, oauth: Option<&super::oauth::TokenCache>) -> Result<(ImapSession, bool), WatchError> {
    let server = format!("{}:{}", cfg.host, cfg.port);
    let tcp = op(
        &format!("connect to {server}"),
        TcpStream::connect((cfg.host.as_str(), cfg.port)),
    )
    .await?;
    let _ = tcp.set_nodelay(true);
    let stream = match cfg.tls {
        Tls::Tls => tls_wrap(&cfg.host, tcp, cfg.ca_file.as_ref()).await?,
        Tls::None | Tls::Starttls => ImapStream::Plain(tcp),
    };
    let mut client = Client::new(stream);
    match op("greeting", async { client.read_response().await.transpose() }).await? {
        Some(_) => {}
        None => {
            return Err(WatchError(format!(
                "{server} closed the connection before its greeting"
            )))
        }
    }
    if cfg.tls == Tls::Starttls {
        op("STARTTLS", client.run_command_and_check_ok("STARTTLS", None)).await?;
        let ImapStream::Plain(tcp) = client.into_inner() else {
            return Err(WatchError("STARTTLS on an already encrypted connection".into()));
        };
        client = Client::new(tls_wrap(&cfg.host, tcp, cfg.ca_file.as_ref()).await?);
    }
    let login = match oauth {
        // Exchange Online and other OAuth-only servers: SASL XOAUTH2 with a client-credentials token.
        Some(cache) => {
            let token = cache
                .bearer()
                .await
                .map_err(|e| WatchError(format!("cannot get an OAuth token for {}: {e}", cfg.username)))?;
            let auth = super::oauth::XOAuth2::new(cfg.username.clone(), token.clone());
            let r = tokio::time::timeout(OP_TIMEOUT, client.authenticate("XOAUTH2", auth)).await;
            if matches!(r, Ok(Err(_))) {
                // A refused token may have been revoked early: fetch a new one next time.
                cache.invalidate(&token).await;
            }
            r
        }
        None => tokio::time::timeout(OP_TIMEOUT, client.login(&cfg.username, cfg.password.expose())).await,
    };
    let mut session = match login {
        Ok(Ok(s)) => s,
        Ok(Err((e, _))) => return Err(WatchError(format!("{server} refused login as {}: {e}", cfg.username))),
        Err(_) => {
            return Err(WatchError(format!(
                "{server}: no answer to LOGIN within {}s",
                OP_TIMEOUT.as_secs()
            )))
        }
    };
    let caps = op("CAPABILITY", session.capabilities()).await?;
    let can_idle = caps.has_str("IDLE");
    Ok((session, can_idle))
}

/// Runs the watcher until `shutdown` turns true. Errors are logged and lead
/// to a reconnect with exponential backoff; the watcher never gives up.
pub async fn watch(
    cfg: InboxConfig,
    matcher: Matcher,
    shutdown: watch::Receiver<bool>,
    state: watch::Sender<WatcherState>,
) {
    let point = WatchPoint::new(cfg.watcher_name(), cfg.name.clone(), cfg.blind_grace);
    watch_with(cfg, matcher, point, shutdown, state).await
}

/// The next wait before a reconnect: doubling from [`BACKOFF_START`], capped
/// at [`BACKOFF_MAX_PENDING`] while probes are pending (else [`BACKOFF_MAX`]),
/// with ±20 % jitter so many watchers of one server do not reconnect in step.
pub(crate) fn next_backoff(current: Duration, pending: bool) -> Duration {
    let cap = if pending { BACKOFF_MAX_PENDING } else { BACKOFF_MAX };
    current.saturating_mul(2).min(cap)
}

pub(crate) fn jittered(d: Duration) -> Duration {
    let f: f64 = 0.8 + rand::random::<f64>() * 0.4;
    d.mul_f64(f)
}

/// [`watch`] publishing its connection and progress on `point`, and
/// scanning whenever the sweeper nudges it.
pub async fn watch_with(
    cfg: InboxConfig,
    matcher: Matcher,
    point: std::sync::Arc<WatchPoint>,
    mut shutdown: watch::Receiver<bool>,
    state: watch::Sender<WatcherState>,
) {
    let mut backoff = BACKOFF_START;
    // One token cache per watcher: a token outlives reconnects until it nears expiry.
    let oauth = cfg.oauth.clone().and_then(|creds| {
        reqwest::Client::builder()
            .timeout(OP_TIMEOUT)
            .build()
            .ok()
            .map(|http| super::oauth::TokenCache::new(creds, http))
    });
    loop {
        if *shutdown.borrow() {
            break;
        }
        let _ = state.send(WatcherState::Connecting);
        let mut connected = false;
        let result = run_session(
            &cfg,
            oauth.as_ref(),
            &matcher,
            &point,
            &mut shutdown,
            &state,
            &mut connected,
        )
        .await;
        match result {
            Ok(()) => break,
            Err(e) => {
                if connected {
                    backoff = BACKOFF_START;
                }
                point.blind(e.to_string());
                let pending = matches!(matcher.store.next_deadline().await, Ok(Some(_)));
                let wait = jittered(backoff);
                tracing::warn!(inbox = %cfg.watcher_name(), error = %e, retry_in_ms = wait.as_millis() as u64, "IMAP watcher disconnected");
                let _ = state.send(WatcherState::Backoff(e.to_string()));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
                backoff = next_backoff(backoff, pending);
            }
        }
    }
    point.blind("stopped");
    let _ = state.send(WatcherState::Stopped);
}

#[allow(clippy::too_many_arguments)]
async fn run_session(
    cfg: &InboxConfig,
    oauth: Option<&super::oauth::TokenCache>,
    matcher: &Matcher,
    point: &WatchPoint,
    shutdown: &mut watch::Receiver<bool>,
    state: &watch::Sender<WatcherState>,
    connected: &mut bool,
) -> Result<(), WatchError> {
    let (mut session, mailbox, can_idle) = open(cfg, oauth).await?;
    *connected = true;
    point.connected();
    let use_idle = can_idle && cfg.idle;
    tracing::info!(inbox = %cfg.watcher_name(), idle = use_idle, exists = mailbox.exists, "IMAP watcher connected");
    let uid_validity = mailbox.uid_validity.unwrap_or(0);
    let mut last_uid = starting_uid(cfg, matcher, &mut session, uid_validity, mailbox.uid_next).await?;
    let can_move = op("CAPABILITY", session.capabilities()).await?.has_str("MOVE");
    let cleanup = Cleanup {
        action: usable_after_confirm(cfg, &mut session).await?,
        can_move,
        archives: std::sync::Mutex::new(std::collections::HashMap::new()),
    };

    // Mail that arrives after a catch-up's UID SEARCH but before IDLE starts
    // is announced by an untagged EXISTS in the answer to some other command;
    // async-imap files those here. Checking it before waiting closes that gap.
    let unsolicited = session.unsolicited_responses.clone();
    loop {
        // Everything in the folder when this scan starts will have been read when it ends.
        let scan_started = now_millis();
        last_uid = catch_up(cfg, matcher, &mut session, uid_validity, last_uid, &cleanup).await?;
        point.caught_up(scan_started);
        if *shutdown.borrow() {
            let _ = op("LOGOUT", session.logout()).await;
            return Ok(());
        }
        if maybe_new_mail(&unsolicited) {
            continue;
        }
        if use_idle {
            let _ = state.send(WatcherState::Idle);
            let mut handle = session.idle();
            op("IDLE", handle.init()).await?;
            if maybe_new_mail(&unsolicited) {
                session = op("DONE", handle.done()).await?;
                continue;
            }
            let stop = {
                let (wait, stop) = handle.wait_with_timeout(cfg.poll_interval);
                tokio::pin!(wait);
                tokio::select! {
                    r = &mut wait => match r {
                        Ok(IdleResponse::NewData(_)) | Ok(IdleResponse::Timeout) | Ok(IdleResponse::ManualInterrupt) => {}
                        Err(e) => return Err(WatchError(format!("IDLE: {e}"))),
                    },
                    _ = tokio::time::sleep(cfg.poll_interval) => {}
                    _ = point.nudged() => {}
                    _ = shutdown.changed() => {}
                }
                stop
            };
            drop(stop);
            session = op("DONE", handle.done()).await?;
            // Servers whose IDLE does not push (Courier, Cyrus without idled)
            // notice new mail when asked: a NOOP makes them look.
            op("NOOP", session.noop()).await?;
        } else {
            let _ = state.send(WatcherState::Polling);
            tokio::select! {
                _ = tokio::time::sleep(cfg.poll_interval) => {}
                _ = point.nudged() => {}
                _ = shutdown.changed() => {}
            }
            op("NOOP", session.noop()).await?;
        }
    }
}

/// Drains the unsolicited responses; true if any could mean new mail (an
/// EXISTS or RECENT), or if the queue was full and some may have been dropped.
fn maybe_new_mail(rx: &async_channel::Receiver<async_imap::types::UnsolicitedResponse>) -> bool {
    use async_imap::types::UnsolicitedResponse as U;
    let full = rx.is_full();
    let mut new = false;
    while let Ok(r) = rx.try_recv() {
        new |= matches!(r, U::Exists(_) | U::Recent(_));
    }
    new || full
}

/// Where to start reading: the kept cursor if the mailbox is the same
/// (UIDVALIDITY unchanged); otherwise from the day before the oldest pending
/// probe was made; with no probe pending, only what arrives from now on.
async fn starting_uid(
    cfg: &InboxConfig,
    matcher: &Matcher,
    session: &mut ImapSession,
    uid_validity: u32,
    uid_next: Option<u32>,
) -> Result<u32, WatchError> {
    let store_err = |e: crate::ledger::StoreError| WatchError(e.to_string());
    if let Some(c) = matcher.store.cursor(&cfg.cursor_key()).await.map_err(store_err)? {
        if c.uid_validity == uid_validity {
            return Ok(c.last_uid);
        }
        tracing::warn!(inbox = %cfg.name, "UIDVALIDITY changed; rescanning recent mail");
    }
    let oldest_pending = matcher
        .store
        .pending()
        .await
        .map_err(store_err)?
        .iter()
        .map(|p| p.created_at)
        .min();
    let start = match oldest_pending {
        Some(created) => {
            let day_before = chrono::DateTime::from_timestamp_millis(created - 86_400_000).unwrap_or_default();
            let query = format!("SINCE {}", day_before.format("%d-%b-%Y"));
            let uids = op("UID SEARCH", session.uid_search(&query)).await?;
            uids.into_iter()
                .min()
                .map(|u| u.saturating_sub(1))
                .unwrap_or_else(|| uid_next.unwrap_or(1).saturating_sub(1))
        }
        None => uid_next.unwrap_or(1).saturating_sub(1),
    };
    matcher
        .store
        .set_cursor(
            &cfg.cursor_key(),
            Cursor {
                uid_validity,
                last_uid: start,
            },
        )
        .await
        .map_err(store_err)?;
    Ok(start)
}

/// Reads every message with a UID above `last_uid`, matches its tokens, acts
/// on the ones that are ours, and advances the cursor. Returns the new last UID.
async fn catch_up(
    cfg: &InboxConfig,
    matcher: &Matcher,
    session: &mut ImapSession,
    uid_validity: u32,
    last_uid: u32,
    cleanup: &Cleanup,
) -> Result<u32, WatchError> {
    let found = op(
        "UID SEARCH",
        session.uid_search(format!("UID {}:*", last_uid.saturating_add(1))),
    )
    .await?;
    // "n:*" also matches the highest UID when it is below n.
    let mut uids: Vec<u32> = found.into_iter().filter(|&u| u > last_uid).collect();
    uids.sort_unstable();
    let mut last = last_uid;
    for batch in uids.chunks(FETCH_BATCH) {
        let messages = fetch_batch(session, batch).await?;
        let seen_at = now_millis();
        let mut ours = Vec::new();
        let mut archive: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
        for m in &messages {
            let arrived = arrival_time(m.internal_date, seen_at);
            let fates = consider_message(matcher, &cfg.name, &cfg.folder, &m.raw, arrived)
                .await
                .map_err(|e| WatchError(e.to_string()))?;
            if fates.iter().any(|f| f.is_ours()) {
                // A retained canary stays (or goes to its archive) instead of `after_confirm`.
                match matcher
                    .retained_folder(&m.raw)
                    .await
                    .map_err(|e| WatchError(e.to_string()))?
                {
                    None => ours.push(m.uid),
                    Some(None) => {}
                    Some(Some(folder)) => archive.entry(folder).or_default().push(m.uid),
                }
            }
        }
        after_confirm(cfg, session, &ours, cleanup).await?;
        for (folder, uids) in &archive {
            to_archive(cfg, session, folder, uids, cleanup).await?;
        }
        last = batch.iter().copied().max().unwrap_or(last).max(last);
        matcher
            .store
            .set_cursor(
                &cfg.cursor_key(),
                Cursor {
                    uid_validity,
                    last_uid: last,
                },
            )
            .await
            .map_err(|e| WatchError(e.to_string()))?;
    }
    Ok(last)
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// When a message arrived: the mailbox's own time (INTERNALDATE), which IMAP
/// gives to the second — so the end of that second, and never later than
/// the moment postcanary read it (a server clock running ahead).
pub(crate) fn arrival_time(internal_date: Option<Millis>, seen_at: Millis) -> Millis {
    match internal_date {
        Some(t) => (t + 999).min(seen_at),
        None => seen_at,
    }
}

/// One fetched message.
struct Fetched {
    uid: u32,
    /// INTERNALDATE, in ms.
    internal_date: Option<Millis>,
    raw: Vec<u8>,
}

/// Fetches the messages of one batch: whole messages up to
/// [`MAX_BODY_BYTES`], only the first [`PARTIAL_BYTES`] of larger ones.
#[tracing::instrument(name = "imap_fetch", level = "info", skip_all, fields(messages = uids.len()))]
async fn fetch_batch(session: &mut ImapSession, uids: &[u32]) -> Result<Vec<Fetched>, WatchError> {
    let set = uid_set(uids);
    let sizes: Vec<(u32, u32)> = {
        let stream = op("UID FETCH", session.uid_fetch(&set, "(UID RFC822.SIZE)")).await?;
        op("UID FETCH", stream.try_collect::<Vec<_>>())
            .await?
            .iter()
            .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0))))
            .collect()
    };
    let (small, large): (Vec<_>, Vec<_>) = sizes.into_iter().partition(|&(_, size)| size <= MAX_BODY_BYTES);
    let mut out = Vec::new();
    let partial = format!("(UID INTERNALDATE BODY.PEEK[]<0.{PARTIAL_BYTES}>)");
    for (uids, query) in [(small, "(UID INTERNALDATE BODY.PEEK[])"), (large, partial.as_str())] {
        if uids.is_empty() {
            continue;
        }
        let set = uid_set(&uids.iter().map(|&(u, _)| u).collect::<Vec<_>>());
        let stream = op("UID FETCH", session.uid_fetch(&set, query)).await?;
        for f in op("UID FETCH", stream.try_collect::<Vec<_>>()).await? {
            if let (Some(uid), Some(bytes)) = (f.uid, f.body()) {
                out.push(Fetched {
                    uid,
                    internal_date: f.internal_date().map(|t| t.timestamp_millis()),
                    raw: bytes.to_vec(),
                });
            }
        }
    }
    out.sort_by_key(|m| m.uid);
    Ok(out)
}

/// What this session does with confirmed probe mail.
struct Cleanup {
    /// The configured action, or `Keep` when the move folder is unusable.
    action: AfterConfirm,
    can_move: bool,
    /// Archive folders of retained canaries, once known: usable or not.
    archives: std::sync::Mutex<std::collections::HashMap<String, bool>>,
}

/// Moves retained canaries into their archive folder (created when
/// missing). A folder the server refuses to create is logged and the
/// canaries stay where they are — the retention check looks there too.
async fn to_archive(
    cfg: &InboxConfig,
    session: &mut ImapSession,
    folder: &str,
    uids: &[u32],
    cleanup: &Cleanup,
) -> Result<(), WatchError> {
    let known = cleanup.archives.lock().ok().and_then(|m| m.get(folder).copied());
    let usable = match known {
        Some(u) => u,
        None => {
            let listed = {
                let stream = op("LIST", session.list(Some(""), Some(folder))).await?;
                op("LIST", stream.try_collect::<Vec<_>>()).await?
            };
            let usable = if listed.is_empty() {
                match op(&format!("CREATE {folder}"), session.create(folder)).await {
                    Ok(()) => {
                        tracing::info!(inbox = %cfg.watcher_name(), %folder, "created the archive folder for retained canaries");
                        true
                    }
                    Err(e) => {
                        tracing::error!(inbox = %cfg.watcher_name(), %folder, error = %e,
                            "archive = \"{folder}\": the folder does not exist and cannot be created; retained canaries stay in the inbox");
                        false
                    }
                }
            } else {
                true
            };
            if let Ok(mut m) = cleanup.archives.lock() {
                m.insert(folder.to_string(), usable);
            }
            usable
        }
    };
    if !usable {
        return Ok(());
    }
    let set = uid_set(uids);
    if cleanup.can_move {
        op(&format!("UID MOVE to {folder}"), session.uid_mv(&set, folder)).await?;
    } else {
        op(&format!("UID COPY to {folder}"), session.uid_copy(&set, folder)).await?;
        delete(session, &set).await?;
    }
    tracing::debug!(inbox = %cfg.name, uids = %set, %folder, "archived retained canaries");
    Ok(())
}

/// What a retention lookup found of one canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// In `folder`, with the SHA-256 of the message as stored (`sha256:HEX`).
    Found { folder: String, hash: String },
    /// In none of the folders looked in.
    Absent,
}

/// Looks a retained canary up again: logs in, and in each folder in turn
/// (read-only, `EXAMINE`) searches for its token in the token header, the
/// subject or the body, and keeps only a message whose token's tag verifies
/// and names `probe_id` (a copied `pc-<ULID>` proves nothing). A folder that
/// does not exist holds nothing. `Err` is our own side — connection, login,
/// timeouts — never a verdict on the canary.
pub async fn lookup(
    cfg: &InboxConfig,
    folders: &[String],
    token: &str,
    probe_id: &str,
    key: &crate::token::TokenKey,
) -> Result<Lookup, String> {
    let oauth = cfg.oauth.clone().and_then(|creds| {
        reqwest::Client::builder()
            .timeout(OP_TIMEOUT)
            .build()
            .ok()
            .map(|http| super::oauth::TokenCache::new(creds, http))
    });
    let (mut session, _) = login(cfg, oauth.as_ref()).await.map_err(|e| e.0)?;
    let result = lookup_in(&mut session, folders, token, probe_id, key).await;
    let _ = op("LOGOUT", session.logout()).await;
    result.map_err(|e| e.0)
}

async fn lookup_in(
    session: &mut ImapSession,
    folders: &[String],
    token: &str,
    probe_id: &str,
    key: &crate::token::TokenKey,
) -> Result<Lookup, WatchError> {
    use sha2::{Digest, Sha256};
    // Only the `pc-<ULID>` form is searched for: it is all the ledger keeps.
    let needle: String = token
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let query = format!("OR HEADER X-Postcanary-Token \"{needle}\" OR SUBJECT \"{needle}\" BODY \"{needle}\"");
    // Retention outlives `token.max_age`: the age window does not apply here, the tag does.
    let forever = Duration::from_secs(100 * 366 * 86_400);
    for folder in folders {
        match tokio::time::timeout(OP_TIMEOUT, session.examine(folder)).await {
            Ok(Ok(_)) => {}
            Ok(Err(async_imap::error::Error::No(_))) => continue,
            Ok(Err(e)) => return Err(WatchError(format!("EXAMINE {folder}: {e}"))),
            Err(_) => {
                return Err(WatchError(format!(
                    "EXAMINE {folder}: no answer within {}s",
                    OP_TIMEOUT.as_secs()
                )))
            }
        }
        let mut uids: Vec<u32> = op("UID SEARCH", session.uid_search(&query))
            .await?
            .into_iter()
            .collect();
        uids.sort_unstable();
        for batch in uids.chunks(FETCH_BATCH) {
            for m in fetch_batch(session, batch).await? {
                let ours = crate::token::tokens_in_message(&m.raw).iter().any(|c| {
                    key.verify(c, std::time::SystemTime::now(), forever)
                        .is_ok_and(|t| t.id() == probe_id)
                });
                if ours {
                    return Ok(Lookup::Found {
                        folder: folder.clone(),
                        hash: format!("sha256:{}", hex::encode(Sha256::digest(&m.raw))),
                    });
                }
            }
        }
    }
    Ok(Lookup::Absent)
}

/// The configured `after_confirm`, once its folder is known to exist: a
/// missing move folder is created; if the server refuses that, the error
/// names the folder and the server's hierarchy separator and the watcher
/// keeps watching (leaving probe mail where it is) — a reconnect would not
/// make the folder appear.
async fn usable_after_confirm(cfg: &InboxConfig, session: &mut ImapSession) -> Result<AfterConfirm, WatchError> {
    let AfterConfirm::Move(folder) = &cfg.after_confirm else {
        return Ok(cfg.after_confirm.clone());
    };
    let listed = {
        let stream = op("LIST", session.list(Some(""), Some(folder))).await?;
        op("LIST", stream.try_collect::<Vec<_>>()).await?
    };
    if !listed.is_empty() {
        return Ok(cfg.after_confirm.clone());
    }
    match op(&format!("CREATE {folder}"), session.create(folder)).await {
        Ok(()) => {
            tracing::info!(inbox = %cfg.watcher_name(), %folder, "created the after_confirm folder");
            Ok(cfg.after_confirm.clone())
        }
        Err(e) => {
            let separator = {
                // `LIST "" ""` (async-imap sends the pattern as given: None is `""`).
                let stream = op("LIST", session.list(Some(""), None)).await?;
                op("LIST", stream.try_collect::<Vec<_>>())
                    .await?
                    .first()
                    .and_then(|n| n.delimiter().map(str::to_string))
            };
            let hint = match separator.as_deref() {
                Some(".") => format!(
                    "; this server separates folders with \".\" and keeps them below INBOX (e.g. \"INBOX.{folder}\")"
                ),
                Some(sep) => format!("; this server separates folders with {sep:?}"),
                None => String::new(),
            };
            tracing::error!(
                inbox = %cfg.watcher_name(),
                %folder,
                error = %e,
                "after_confirm = \"move:{folder}\": the folder does not exist and cannot be created{hint}; confirmed probes stay where they are"
            );
            Ok(AfterConfirm::Keep)
        }
    }
}

async fn after_confirm(
    cfg: &InboxConfig,
    session: &mut ImapSession,
    uids: &[u32],
    cleanup: &Cleanup,
) -> Result<(), WatchError> {
    if uids.is_empty() {
        return Ok(());
    }
    let set = uid_set(uids);
    let can_move = cleanup.can_move;
    match &cleanup.action {
        AfterConfirm::Keep => return Ok(()),
        AfterConfirm::Move(folder) if can_move => {
            op(&format!("UID MOVE to {folder}"), session.uid_mv(&set, folder)).await?;
        }
        AfterConfirm::Move(folder) => {
            op(&format!("UID COPY to {folder}"), session.uid_copy(&set, folder)).await?;
            delete(session, &set).await?;
        }
        AfterConfirm::Delete => delete(session, &set).await?,
    }
    tracing::debug!(inbox = %cfg.name, uids = %set, action = ?cfg.after_confirm, "cleaned up confirmed probes");
    Ok(())
}

async fn delete(session: &mut ImapSession, set: &str) -> Result<(), WatchError> {
    {
        let stream = op("UID STORE", session.uid_store(set, "+FLAGS.SILENT (\\Deleted)")).await?;
        op("UID STORE", stream.try_collect::<Vec<_>>()).await?;
    }
    // UID EXPUNGE (UIDPLUS) removes only our messages; plain EXPUNGE would
    // also remove anything else someone flagged \Deleted.
    let stream = op("UID EXPUNGE", session.uid_expunge(set)).await?;
    op("UID EXPUNGE", stream.try_collect::<Vec<_>>()).await?;
    Ok(())
}

#[cfg(test)]
mod ca_tests {
    use super::*;

    #[tokio::test]
    async fn imap_tls_trusts_an_internal_ca_only_through_ca_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = crate::config::ca::testing::internal_ca(dir.path());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![rustls::pki_types::CertificateDer::from(cert)],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.into()),
            )
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for _ in 0..2 {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let _ = acceptor.accept(tcp).await;
            }
        });
        let ca = crate::config::ca::CaFile::read(dir.path(), "ca.pem").expect("ca_file");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        tls_wrap("127.0.0.1", tcp, Some(&ca))
            .await
            .expect("trusted through ca_file");
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let e = tls_wrap("127.0.0.1", tcp, None)
            .await
            .expect_err("not in the built-in roots");
        assert!(
            e.0.contains("TLS handshake with 127.0.0.1") && e.0.contains("UnknownIssuer"),
            "{}",
            e.0
        );
    }
}
