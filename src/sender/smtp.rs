//! SMTP submission through a relay, driven step by step so that each failure
//! is attributed: a refusal of the recipient or the content is the
//! channel's; a failure to reach, secure or log in to our own relay is ours.
//!
//! Probes share sessions: after an accepted message the session is kept
//! (briefly, see [`IDLE_MAX`]) for the next message to the same relay,
//! which starts its own transaction with MAIL FROM (RFC 5321 §3.3), and a
//! relay gets at most `connections` connections at once. A kept session
//! the relay has closed meanwhile is replaced by a fresh one before any of
//! the message is sent; a refused or failed transaction closes its session.

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::Address;

use super::SendOutcome;
use crate::config::{SenderConfig, Tls};

/// Runs one SMTP conversation of its own within the sender's timeout.
pub async fn send(cfg: &SenderConfig, to: &Address, message: &[u8]) -> SendOutcome {
    send_with(None, cfg, to, message).await
}

/// Hands one message over a session kept in `relays` when there is one
/// (opening one when not, within the relay's connection limit), within the
/// sender's timeout — the wait for a free connection included.
pub async fn send_pooled(relays: &Relays, cfg: &SenderConfig, to: &Address, message: &[u8]) -> SendOutcome {
    send_with(Some(relays), cfg, to, message).await
}

async fn send_with(relays: Option<&Relays>, cfg: &SenderConfig, to: &Address, message: &[u8]) -> SendOutcome {
    let from = cfg.from.email.clone();
    match tokio::time::timeout(cfg.timeout, converse(relays, cfg, &from, to, message)).await {
        Ok(outcome) => outcome,
        Err(_) => SendOutcome::OwnSide {
            error: format!(
                "SMTP conversation with relay {}:{} did not finish within {}s",
                cfg.host,
                cfg.port,
                cfg.timeout.as_secs()
            ),
            retryable: true,
        },
    }
}

/// `550 5.1.1 <x@y>: Recipient address rejected` from a lettre error.
fn reply_text(e: &lettre::transport::smtp::Error) -> String {
    let text = e.source().map(|s| s.to_string()).unwrap_or_else(|| e.to_string());
    match e.status() {
        Some(code) => format!("{code} {}", text.trim()),
        None => text,
    }
}

fn response_text(r: &Response) -> String {
    format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" "))
        .trim()
        .to_string()
}

fn own(what: String, e: &lettre::transport::smtp::Error, retryable: bool) -> SendOutcome {
    SendOutcome::OwnSide {
        error: format!("{what}: {}", reply_text(e)),
        retryable,
    }
}

/// A refusal at a step where the channel's server answers for itself.
fn channel_refusal(e: &lettre::transport::smtp::Error, relay: &str) -> SendOutcome {
    if e.is_permanent() {
        SendOutcome::Refused { reply: reply_text(e) }
    } else if e.is_transient() {
        SendOutcome::Deferred { reply: reply_text(e) }
    } else {
        own(format!("connection to relay {relay} failed mid-transaction"), e, true)
    }
}

fn tls_parameters(
    host: &str,
    ca: Option<&crate::config::ca::CaFile>,
) -> Result<TlsParameters, lettre::transport::smtp::Error> {
    let mut b = TlsParameters::builder(host.to_string())
        .set_min_tls_version(lettre::transport::smtp::client::TlsVersion::Tlsv12);
    for der in ca.iter().flat_map(|c| c.certs.iter()) {
        b = b.add_root_certificate(lettre::transport::smtp::client::Certificate::from_der(der.clone())?);
    }
    b.build_rustls()
}

/// Opens a session with the relay: connect, EHLO, STARTTLS, AUTH.
async fn open(cfg: &SenderConfig, relay: &str) -> Result<AsyncSmtpConnection, SendOutcome> {
    let hello = hello(cfg);
    let tls = match cfg.tls {
        Tls::None => None,
        Tls::Tls | Tls::Starttls => match tls_parameters(&cfg.host, cfg.ca_file.as_ref()) {
            Ok(p) => Some(p),
            Err(e) => return Err(own(format!("cannot set up TLS for relay {relay}"), &e, false)),
        },
    };
    let implicit = if cfg.tls == Tls::Tls { tls.clone() } else { None };
    let connect_timeout = Some(cfg.timeout.min(Duration::from_secs(30)));
    let mut conn = match AsyncSmtpConnection::connect_tokio1(
        (cfg.host.as_str(), cfg.port),
        connect_timeout,
        &hello,
        implicit,
        None,
    )
    .await
    {
        Ok(c) => c,
        Err(e) if e.is_permanent() => return Err(own(format!("relay {relay} refused the connection"), &e, false)),
        Err(e) => return Err(own(format!("cannot connect to relay {relay}"), &e, true)),
    };

    if cfg.tls == Tls::Starttls {
        let Some(params) = tls else {
            return Err(SendOutcome::OwnSide {
                error: "internal: missing TLS parameters".into(),
                retryable: false,
            });
        };
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(SendOutcome::OwnSide {
                error: format!("relay {relay} does not offer STARTTLS, which tls = \"starttls\" requires"),
                retryable: false,
            });
        }
        if let Err(e) = conn.starttls(params, &hello).await {
            conn.abort().await;
            return Err(own(
                format!("STARTTLS with relay {relay} failed"),
                &e,
                !e.is_permanent(),
            ));
        }
    }

    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        let creds = Credentials::new(user.clone(), password.expose().to_string());
        if let Err(e) = conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds).await {
            conn.abort().await;
            return Err(own(
                format!("relay {relay} refused authentication as {user}"),
                &e,
                e.is_transient(),
            ));
        }
    }
    Ok(conn)
}

fn hello(cfg: &SenderConfig) -> ClientId {
    match &cfg.helo {
        Some(h) => ClientId::Domain(h.clone()),
        None => ClientId::default(),
    }
}

/// One transaction (MAIL, RCPT, DATA) on an open session. `Err` carries
/// the outcome when the session is of no further use; a session that
/// failed at MAIL without a permanent refusal is reported as `Stale` so a
/// reused one can be replaced by a fresh one.
async fn transaction(
    conn: &mut AsyncSmtpConnection,
    relay: &str,
    from: &Address,
    to: &Address,
    message: &[u8],
) -> Step {
    if let Err(e) = conn.command(Mail::new(Some(from.clone()), vec![])).await {
        conn.abort().await;
        if !e.is_permanent() {
            return Step::Stale(e);
        }
        return Step::Done(own(format!("relay {relay} refused our sender {from}"), &e, false));
    }
    if let Err(e) = conn.command(Rcpt::new(to.clone(), vec![])).await {
        conn.abort().await;
        return Step::Done(channel_refusal(&e, relay));
    }
    if let Err(e) = conn.command(Data).await {
        conn.abort().await;
        return Step::Done(channel_refusal(&e, relay));
    }
    match conn.message(message).await {
        Ok(r) => Step::Accepted(SendOutcome::Accepted {
            reply: response_text(&r),
            at: chrono::Utc::now().timestamp_millis(),
        }),
        Err(e) => {
            conn.abort().await;
            Step::Done(channel_refusal(&e, relay))
        }
    }
}

enum Step {
    /// The message was accepted; the session may take another.
    Accepted(SendOutcome),
    /// Finished otherwise; the session was closed.
    Done(SendOutcome),
    /// MAIL failed without a permanent refusal (a closed or timed-out
    /// session, or a 4xx); the session was closed.
    Stale(lettre::transport::smtp::Error),
}

/// MAIL failing on a fresh session: a 4xx is the relay deferring us, anything else our side.
fn stale_outcome(e: &lettre::transport::smtp::Error, relay: &str, from: &Address) -> SendOutcome {
    if e.is_transient() {
        SendOutcome::Deferred { reply: reply_text(e) }
    } else {
        own(format!("relay {relay} refused our sender {from}"), e, true)
    }
}

async fn converse(
    relays: Option<&Relays>,
    cfg: &SenderConfig,
    from: &Address,
    to: &Address,
    message: &[u8],
) -> SendOutcome {
    let relay = format!("{}:{}", cfg.host, cfg.port);
    let Some(pool) = relays.filter(|_| cfg.reuse).map(|r| r.relay(cfg)) else {
        let mut conn = match open(cfg, &relay).await {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        return match transaction(&mut conn, &relay, from, to, message).await {
            Step::Accepted(outcome) => {
                // The message is accepted by now; a failed QUIT changes nothing.
                let _ = conn.quit().await;
                outcome
            }
            Step::Done(outcome) => outcome,
            Step::Stale(e) => stale_outcome(&e, &relay, from),
        };
    };
    let Ok(_slot) = Arc::clone(&pool.slots).acquire_owned().await else {
        return SendOutcome::OwnSide {
            error: "internal: the relay's connection limit is closed".into(),
            retryable: true,
        };
    };
    // A kept session first; when it turns out closed, one fresh session.
    let mut kept = pool.take();
    loop {
        let (mut session, reused) = match kept.take() {
            Some(s) => (s, true),
            None => match open(cfg, &relay).await {
                Ok(conn) => (Session::new(conn), false),
                Err(outcome) => return outcome,
            },
        };
        match transaction(&mut session.conn, &relay, from, to, message).await {
            Step::Accepted(outcome) => {
                session.sent += 1;
                pool.put(session);
                return outcome;
            }
            Step::Done(outcome) => return outcome,
            Step::Stale(e) if reused => {
                tracing::debug!(relay = %relay, error = %reply_text(&e), "kept SMTP session was closed; opening a new one");
            }
            Step::Stale(e) => return stale_outcome(&e, &relay, from),
        }
    }
}

/// How long a kept session may wait idle for its next message. Short, as
/// Postfix's own client keeps its cached sessions (2 s), so the relay's
/// idle timeout is never met.
const IDLE_MAX: Duration = Duration::from_secs(2);
/// How long one session is used at most, and for how many messages.
const SESSION_MAX: Duration = Duration::from_secs(300);
const MESSAGES_MAX: u32 = 100;

/// An open, authenticated SMTP session between transactions.
struct Session {
    conn: AsyncSmtpConnection,
    opened: Instant,
    idle_since: Instant,
    sent: u32,
}

impl Session {
    fn new(conn: AsyncSmtpConnection) -> Session {
        let now = Instant::now();
        Session {
            conn,
            opened: now,
            idle_since: now,
            sent: 0,
        }
    }

    fn spent(&self) -> bool {
        self.sent >= MESSAGES_MAX || self.opened.elapsed() >= SESSION_MAX
    }
}

/// The SMTP sessions kept with relays, and each relay's connection limit:
/// one per distinct relay configuration (host, port, TLS, login, EHLO
/// name), so a reloaded sender with another login never uses a session
/// opened by the old one. Cheap to clone; clones share.
#[derive(Clone, Default)]
pub struct Relays(Arc<Mutex<HashMap<String, Arc<Relay>>>>);

impl fmt::Debug for Relays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Relays")
    }
}

/// One relay's kept sessions and its limit of open connections.
struct Relay {
    idle: Mutex<Vec<Session>>,
    slots: Arc<Semaphore>,
    reaping: std::sync::atomic::AtomicBool,
}

impl Relays {
    fn relay(&self, cfg: &SenderConfig) -> Arc<Relay> {
        let key = relay_key(cfg);
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(key).or_insert_with(|| {
            Arc::new(Relay {
                idle: Mutex::new(Vec::new()),
                slots: Arc::new(Semaphore::new(cfg.connections.max(1))),
                reaping: std::sync::atomic::AtomicBool::new(false),
            })
        }))
    }

    /// Sessions kept open now, over all relays (for tests and metrics).
    pub fn idle_sessions(&self) -> usize {
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .map(|r| r.idle.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

impl Relay {
    /// The most recently used kept session still fresh enough; stale ones are closed.
    fn take(self: &Arc<Self>) -> Option<Session> {
        let (fresh, stale) = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let stale = split_stale(&mut idle);
            (idle.pop(), stale)
        };
        close(stale);
        fresh
    }

    /// Keeps a session for the next message, or closes it when it is spent.
    fn put(self: &Arc<Self>, mut session: Session) {
        if session.spent() {
            close(vec![session]);
            return;
        }
        session.idle_since = Instant::now();
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(session);
        // One reaper per relay closes sessions left idle when the sends stop.
        if !self.reaping.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let relay = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(IDLE_MAX).await;
                    let (stale, left) = {
                        let mut idle = relay.idle.lock().unwrap_or_else(|p| p.into_inner());
                        let stale = split_stale(&mut idle);
                        (stale, idle.len())
                    };
                    close(stale);
                    if left == 0 {
                        relay.reaping.store(false, std::sync::atomic::Ordering::Release);
                        // A session put back after the count: look again.
                        let empty = relay.idle.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
                        if empty || relay.reaping.swap(true, std::sync::atomic::Ordering::AcqRel) {
                            return;
                        }
                    }
                }
            });
        }
    }
}

/// Takes the sessions idle too long or spent out of `idle`, leaving the rest.
fn split_stale(idle: &mut Vec<Session>) -> Vec<Session> {
    let (keep, stale): (Vec<Session>, Vec<Session>) = idle
        .drain(..)
        .partition(|s| s.idle_since.elapsed() < IDLE_MAX && !s.spent());
    *idle = keep;
    stale
}

/// Ends sessions with QUIT, in the background, each within a few seconds.
fn close(sessions: Vec<Session>) {
    if sessions.is_empty() {
        return;
    }
    tokio::spawn(async move {
        for mut s in sessions {
            let _ = tokio::time::timeout(Duration::from_secs(5), s.conn.quit()).await;
        }
    });
}

/// What sessions of a relay may be shared by: everything that decides who
/// we are to it. The password enters only as a digest.
fn relay_key(cfg: &SenderConfig) -> String {
    let mut h = Sha256::new();
    if let Some(p) = &cfg.password {
        h.update(p.expose().as_bytes());
    }
    for c in cfg.ca_file.iter().flat_map(|c| c.certs.iter()) {
        h.update(c);
    }
    format!(
        "{}\u{0}{}\u{0}{:?}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        cfg.host,
        cfg.port,
        cfg.tls,
        cfg.username.as_deref().unwrap_or_default(),
        cfg.helo.as_deref().unwrap_or_default(),
        cfg.connections,
        hex::encode(h.finalize())
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// A relay with implicit TLS under an internal CA (two connections, then it stops).
    async fn relay(cert: Vec<u8>, key: Vec<u8>) -> std::net::SocketAddr {
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
            let seen = Seen::default();
            for _ in 0..2 {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let Ok(tls) = acceptor.accept(tcp).await else { continue };
                session(tls, &seen, false, Duration::ZERO).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn smtp_relay_tls_trusts_an_internal_ca_only_through_ca_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = crate::config::ca::testing::internal_ca(dir.path());
        let addr = relay(cert, key).await;
        let ca = crate::config::ca::CaFile::read(dir.path(), "ca.pem").expect("ca_file");
        let mut cfg = SenderConfig {
            name: "relay".into(),
            host: "127.0.0.1".into(),
            port: addr.port(),
            tls: Tls::Tls,
            username: None,
            password: None,
            from: "Postcanary <canary@kommune.example>".parse().expect("from"),
            helo: Some("prober.test".into()),
            timeout: Duration::from_secs(10),
            mx: None,
            bounce_inbox: None,
            dkim: None,
            ca_file: Some(ca),
            connections: crate::config::DEFAULT_CONNECTIONS,
            reuse: true,
        };
        let to: Address = "borger@kommune.example".parse().expect("to");
        let msg = b"Subject: t\r\n\r\nbody\r\n";
        match send(&cfg, &to, msg).await {
            SendOutcome::Accepted { reply, .. } => assert!(reply.contains("queued as Q1"), "{reply}"),
            other => panic!("with ca_file: {other:?}"),
        }
        cfg.ca_file = None;
        match send(&cfg, &to, msg).await {
            SendOutcome::OwnSide { error, .. } => {
                assert!(
                    error.contains("127.0.0.1") && error.contains("UnknownIssuer"),
                    "{error}"
                )
            }
            other => panic!("without ca_file: {other:?}"),
        }
    }

    /// What a test relay saw.
    #[derive(Default)]
    struct Seen {
        connections: std::sync::atomic::AtomicUsize,
        open: std::sync::atomic::AtomicUsize,
        most_open: std::sync::atomic::AtomicUsize,
        messages: std::sync::atomic::AtomicUsize,
    }

    /// One SMTP session of the test relays: any number of messages, each
    /// answered `queued as Q1` after `hold`; `drop_after_message` closes the
    /// session right after its first message (as a relay whose idle timeout
    /// struck); RCPT to `refused@…` is 550.
    async fn session<S>(io: S, s: &Seen, drop_after_message: bool, hold: Duration)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    {
        use std::sync::atomic::Ordering::SeqCst;
        s.connections.fetch_add(1, SeqCst);
        let now = s.open.fetch_add(1, SeqCst) + 1;
        s.most_open.fetch_max(now, SeqCst);
        let (r, mut w) = tokio::io::split(io);
        let mut lines = BufReader::new(r).lines();
        let _ = w.write_all(b"220 relay.test ESMTP\r\n").await;
        let mut in_data = false;
        for _ in 0..10_000 {
            let Ok(Some(line)) = lines.next_line().await else { break };
            let reply: &[u8] = if in_data {
                if line != "." {
                    continue;
                }
                in_data = false;
                tokio::time::sleep(hold).await;
                s.messages.fetch_add(1, SeqCst);
                let _ = w.write_all(b"250 2.0.0 Ok: queued as Q1\r\n").await;
                if drop_after_message {
                    break;
                }
                continue;
            } else if line.starts_with("EHLO") {
                b"250 relay.test\r\n"
            } else if line.starts_with("RCPT TO:<refused@") {
                b"550 5.1.1 <refused@kommune.example>: Recipient address rejected\r\n"
            } else if line.starts_with("DATA") {
                in_data = true;
                b"354 go ahead\r\n"
            } else if line.starts_with("QUIT") {
                let _ = w.write_all(b"221 bye\r\n").await;
                break;
            } else {
                b"250 ok\r\n"
            };
            let _ = w.write_all(reply).await;
        }
        s.open.fetch_sub(1, SeqCst);
    }

    /// A plain relay on loopback (up to 200 connections) running [`session`].
    async fn plain_relay(drop_after_message: bool, hold: Duration) -> (u16, Arc<Seen>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Seen::default());
        let s = Arc::clone(&seen);
        tokio::spawn(async move {
            for _ in 0..200 {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let s = Arc::clone(&s);
                tokio::spawn(async move { session(tcp, &s, drop_after_message, hold).await });
            }
        });
        (port, seen)
    }

    fn plain_cfg(port: u16, connections: usize) -> SenderConfig {
        SenderConfig {
            name: "relay".into(),
            host: "127.0.0.1".into(),
            port,
            tls: Tls::None,
            username: None,
            password: None,
            from: "Postcanary <canary@kommune.example>".parse().expect("from"),
            helo: Some("prober.test".into()),
            timeout: Duration::from_secs(10),
            mx: None,
            bounce_inbox: None,
            dkim: None,
            ca_file: None,
            connections,
            reuse: true,
        }
    }

    fn accepted(o: &SendOutcome) -> bool {
        matches!(o, SendOutcome::Accepted { reply, .. } if reply.contains("queued as Q1"))
    }

    #[tokio::test]
    async fn messages_in_a_row_share_one_session_each_in_its_own_transaction() {
        use std::sync::atomic::Ordering::SeqCst;
        let (port, seen) = plain_relay(false, Duration::ZERO).await;
        let (relays, cfg) = (Relays::default(), plain_cfg(port, 4));
        let to: Address = "borger@kommune.example".parse().expect("to");
        for i in 0..5 {
            let o = send_pooled(&relays, &cfg, &to, b"Subject: t\r\n\r\nbody\r\n").await;
            assert!(accepted(&o), "message {i}: {o:?}");
        }
        assert_eq!((seen.connections.load(SeqCst), seen.messages.load(SeqCst)), (1, 5));
        assert_eq!(relays.idle_sessions(), 1);
        // A refused recipient closes the session; the next message opens a new one.
        let refused: Address = "refused@kommune.example".parse().expect("to");
        let o = send_pooled(&relays, &cfg, &refused, b"Subject: t\r\n\r\nbody\r\n").await;
        assert!(
            matches!(&o, SendOutcome::Refused { reply } if reply.starts_with("550")),
            "{o:?}"
        );
        assert_eq!(relays.idle_sessions(), 0);
        assert!(accepted(
            &send_pooled(&relays, &cfg, &to, b"Subject: t\r\n\r\nb\r\n").await
        ));
        assert_eq!(seen.connections.load(SeqCst), 2);
        // Without `reuse`, one connection per message.
        let once = SenderConfig {
            reuse: false,
            ..plain_cfg(port, 4)
        };
        assert!(accepted(
            &send_pooled(&relays, &once, &to, b"Subject: t\r\n\r\nb\r\n").await
        ));
        assert_eq!(seen.connections.load(SeqCst), 3);
        // Left idle, the kept session is closed with QUIT by the reaper.
        tokio::time::sleep(IDLE_MAX * 3).await;
        assert_eq!(relays.idle_sessions(), 0);
        assert_eq!(seen.open.load(SeqCst), 0, "every session was closed");
    }

    #[tokio::test]
    async fn a_kept_session_the_relay_closed_is_replaced_before_the_message_is_sent() {
        use std::sync::atomic::Ordering::SeqCst;
        let (port, seen) = plain_relay(true, Duration::ZERO).await;
        let (relays, cfg) = (Relays::default(), plain_cfg(port, 4));
        let to: Address = "borger@kommune.example".parse().expect("to");
        for i in 0..3 {
            let o = send_pooled(&relays, &cfg, &to, b"Subject: t\r\n\r\nbody\r\n").await;
            assert!(accepted(&o), "message {i}: {o:?}");
        }
        assert_eq!(seen.messages.load(SeqCst), 3, "each message once");
        assert_eq!(seen.connections.load(SeqCst), 3);
    }

    #[tokio::test]
    async fn a_relay_gets_at_most_its_connections_at_once() {
        use std::sync::atomic::Ordering::SeqCst;
        let (port, seen) = plain_relay(false, Duration::from_millis(50)).await;
        let (relays, cfg) = (Relays::default(), plain_cfg(port, 2));
        let to: Address = "borger@kommune.example".parse().expect("to");
        let mut sends = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let (relays, cfg, to) = (relays.clone(), cfg.clone(), to.clone());
            sends.spawn(async move { send_pooled(&relays, &cfg, &to, b"Subject: t\r\n\r\nbody\r\n").await });
        }
        while let Some(o) = sends.join_next().await {
            let o = o.expect("join");
            assert!(accepted(&o), "{o:?}");
        }
        assert_eq!(seen.messages.load(SeqCst), 12);
        assert!(
            seen.most_open.load(SeqCst) <= 2,
            "{} at once",
            seen.most_open.load(SeqCst)
        );
        assert_eq!(seen.connections.load(SeqCst), 2, "both sessions were reused");
    }
}
