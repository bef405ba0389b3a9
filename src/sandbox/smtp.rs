//! The sandbox's SMTP receiver: plain ESMTP on 127.0.0.1 that routes each
//! recipient through the [`MailStore`]'s table (deliver, black-hole or
//! reject) and stores accepted mail with a `Return-Path` and a `Received`
//! header. Faults can be switched on at run time through [`SmtpFaults`]: a
//! delay before every reply, a storm of 451s on RCPT, dropped connections.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::conn::{trim_eol, Conn, End, Line, ServerCore, Signal};
use super::store::{MailStore, Route, StoreError};

/// How the SMTP receiver behaves.
#[derive(Clone, Debug)]
pub struct SmtpOptions {
    /// Name in the greeting, EHLO reply and `Received` header.
    pub hostname: String,
    /// Advertise and accept AUTH PLAIN and AUTH LOGIN (any store user).
    pub auth: bool,
    /// Refuse MAIL until the client has authenticated.
    pub require_auth: bool,
    pub max_sessions: usize,
    /// Longest command or message line, terminator included.
    pub max_line_len: usize,
    pub max_recipients: usize,
    /// A session with no traffic for this long is closed.
    pub timeout: Duration,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        SmtpOptions {
            hostname: "sandbox.postcanary.invalid".into(),
            auth: true,
            require_auth: false,
            max_sessions: 32,
            max_line_len: 4096,
            max_recipients: 100,
            timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct FaultState {
    delay: Duration,
    tempfail_rcpts: u32,
    drop_after: Option<u32>,
}

/// Run-time fault switches; clones control the same server.
#[derive(Clone, Debug, Default)]
pub struct SmtpFaults(Arc<Mutex<FaultState>>);

impl SmtpFaults {
    fn lock(&self) -> MutexGuard<'_, FaultState> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// Waits this long before every reply (greeting included): a slow relay.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }
    /// The next `n` RCPT commands, whatever their route, get `451 4.7.1`.
    pub fn tempfail_next_rcpts(&self, n: u32) {
        self.lock().tempfail_rcpts = n;
    }
    /// Every connection is dropped (reset, no reply) when it sends command
    /// number `n + 1`; `None` turns this off.
    pub fn drop_after_commands(&self, n: Option<u32>) {
        self.lock().drop_after = n;
    }
    /// Turns every fault off.
    pub fn clear(&self) {
        *self.lock() = FaultState::default();
    }
    fn delay(&self) -> Duration {
        self.lock().delay
    }
    fn drop_after(&self) -> Option<u32> {
        self.lock().drop_after
    }
    fn take_tempfail(&self) -> bool {
        let mut f = self.lock();
        if f.tempfail_rcpts > 0 {
            f.tempfail_rcpts -= 1;
            true
        } else {
            false
        }
    }
}

/// A running SMTP receiver; dropping it stops it too (without waiting).
pub struct SmtpServer {
    core: ServerCore,
    faults: SmtpFaults,
}

struct Shared {
    store: MailStore,
    options: SmtpOptions,
    faults: SmtpFaults,
}

impl SmtpServer {
    /// Binds 127.0.0.1 on an ephemeral port and starts accepting.
    pub async fn start(store: MailStore, options: SmtpOptions) -> io::Result<SmtpServer> {
        let faults = SmtpFaults::default();
        let shared = Arc::new(Shared {
            store,
            options,
            faults: faults.clone(),
        });
        let max = shared.options.max_sessions;
        let core = ServerCore::start(
            max,
            b"421 4.7.0 Too many connections, try again later\r\n",
            move |tcp, rx| session(Arc::clone(&shared), tcp, rx),
        )
        .await?;
        Ok(SmtpServer { core, faults })
    }

    pub fn addr(&self) -> SocketAddr {
        self.core.addr()
    }

    pub fn port(&self) -> u16 {
        self.core.addr().port()
    }

    pub fn faults(&self) -> &SmtpFaults {
        &self.faults
    }

    /// Resets every open connection now.
    pub fn drop_connections(&self) {
        self.core.kick_all();
    }

    /// Stops accepting, ends every session and waits for them.
    pub async fn shutdown(self) {
        self.core.shutdown().await;
    }
}

async fn session(shared: Arc<Shared>, tcp: TcpStream, signals: watch::Receiver<Signal>) {
    let mut conn = Conn::new(
        tcp,
        signals,
        shared.options.max_line_len.max(64),
        shared.options.timeout,
    );
    let mut s = Session {
        shared: &shared,
        helo: None,
        authed: None,
        txn: None,
        commands: 0,
    };
    if let Err(end) = s.run(&mut conn).await {
        conn.finish(&end);
    }
}

struct Transaction {
    from: String,
    rcpts: Vec<(String, Route)>,
}

struct Session<'a> {
    shared: &'a Shared,
    helo: Option<String>,
    authed: Option<String>,
    txn: Option<Transaction>,
    commands: u32,
}

fn queue_id() -> String {
    const CHARS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789";
    let mut rng = rand::thread_rng();
    (0..12)
        .map(|_| char::from(CHARS[rng.gen_range(0..CHARS.len())]))
        .collect()
}

/// The address inside `<...>` after `FROM:`/`TO:`, and the parameters after it.
fn path_arg<'a>(arg: &'a str, keyword: &str) -> Option<(&'a str, &'a str)> {
    let head = arg.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = arg[keyword.len()..].trim_start();
    if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        Some((inner[..end].trim(), inner[end + 1..].trim()))
    } else {
        // Lenient: a bare address, as some clients send.
        let mut parts = rest.splitn(2, ' ');
        let addr = parts.next().unwrap_or("");
        Some((addr, parts.next().unwrap_or("").trim()))
    }
}

fn plausible_address(addr: &str) -> bool {
    addr.len() <= 254
        && addr
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty())
        && !addr
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
}

impl Session<'_> {
    async fn reply(&self, conn: &mut Conn, text: &str) -> Result<(), End> {
        let delay = self.shared.faults.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut out = String::with_capacity(text.len() + 2);
        out.push_str(text);
        out.push_str("\r\n");
        conn.write(out.as_bytes()).await
    }

    async fn run(&mut self, conn: &mut Conn) -> Result<(), End> {
        let host = self.shared.options.hostname.clone();
        self.reply(conn, &format!("220 {host} ESMTP postcanary sandbox"))
            .await?;
        loop {
            let line = match conn.read_line().await? {
                Line::Full(l) => l,
                Line::TooLong => {
                    self.reply(conn, "500 5.5.2 Line too long").await?;
                    continue;
                }
            };
            self.commands = self.commands.saturating_add(1);
            if self.shared.faults.drop_after().is_some_and(|n| self.commands > n) {
                return Err(End::Kicked);
            }
            let text = String::from_utf8_lossy(trim_eol(&line)).into_owned();
            let (verb, arg) = match text.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                None => (text.trim().to_ascii_uppercase(), String::new()),
            };
            match verb.as_str() {
                "EHLO" | "HELO" => {
                    if arg.is_empty() {
                        self.reply(conn, "501 5.5.4 Syntax: EHLO hostname").await?;
                        continue;
                    }
                    self.helo = Some(arg.clone());
                    self.txn = None;
                    if verb == "HELO" {
                        self.reply(conn, &format!("250 {host}")).await?;
                        continue;
                    }
                    let mut lines = vec![
                        format!("{host} Hello {arg}"),
                        format!("SIZE {}", self.shared.store.limits().max_message_bytes),
                        "8BITMIME".to_string(),
                        "ENHANCEDSTATUSCODES".to_string(),
                    ];
                    if self.shared.options.auth {
                        lines.push("AUTH PLAIN LOGIN".to_string());
                    }
                    let n = lines.len();
                    let text = lines
                        .iter()
                        .enumerate()
                        .map(|(i, l)| format!("250{}{l}", if i + 1 == n { ' ' } else { '-' }))
                        .collect::<Vec<_>>()
                        .join("\r\n");
                    self.reply(conn, &text).await?;
                }
                "AUTH" => {
                    let r = self.auth(conn, &arg).await?;
                    self.reply(conn, r).await?;
                }
                "MAIL" => {
                    let r = self.mail(&arg);
                    self.reply(conn, &r).await?;
                }
                "RCPT" => {
                    let r = self.rcpt(&arg);
                    self.reply(conn, &r).await?;
                }
                "DATA" => self.data(conn).await?,
                "RSET" => {
                    self.txn = None;
                    self.reply(conn, "250 2.0.0 Ok").await?;
                }
                "NOOP" => self.reply(conn, "250 2.0.0 Ok").await?,
                "VRFY" => self.reply(conn, "252 2.5.2 Cannot VRFY user").await?,
                "STARTTLS" => self.reply(conn, "454 4.7.0 TLS not available").await?,
                "QUIT" => {
                    self.reply(conn, "221 2.0.0 Bye").await?;
                    return Ok(());
                }
                _ => self.reply(conn, "500 5.5.2 Error: command not recognized").await?,
            }
        }
    }

    async fn auth(&mut self, conn: &mut Conn, arg: &str) -> Result<&'static str, End> {
        if !self.shared.options.auth {
            return Ok("502 5.5.1 AUTH not enabled");
        }
        if self.helo.is_none() {
            return Ok("503 5.5.1 Send EHLO first");
        }
        if self.authed.is_some() {
            return Ok("503 5.5.1 Already authenticated");
        }
        if self.txn.is_some() {
            return Ok("503 5.5.1 AUTH not allowed during a mail transaction");
        }
        let (mech, initial) = match arg.split_once(' ') {
            Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
            None => (arg.to_ascii_uppercase(), None),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let (user, password) = match mech.as_str() {
            "PLAIN" => {
                let resp = match initial {
                    Some(i) => i,
                    None => match self.challenge(conn, "334 ").await? {
                        Some(r) => r,
                        None => return Ok("501 5.7.0 Authentication cancelled"),
                    },
                };
                let Ok(decoded) = b64.decode(resp.as_bytes()) else {
                    return Ok("501 5.5.2 Invalid base64 data");
                };
                // authzid NUL authcid NUL password; the authzid is ignored.
                let mut parts = decoded.split(|&b| b == 0);
                let (_, Some(u), Some(p), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
                    return Ok("501 5.5.2 Invalid PLAIN response");
                };
                (
                    String::from_utf8_lossy(u).into_owned(),
                    String::from_utf8_lossy(p).into_owned(),
                )
            }
            "LOGIN" => {
                let user_b64 = match initial {
                    Some(i) => i,
                    None => match self.challenge(conn, "334 VXNlcm5hbWU6").await? {
                        Some(r) => r,
                        None => return Ok("501 5.7.0 Authentication cancelled"),
                    },
                };
                let pass_b64 = match self.challenge(conn, "334 UGFzc3dvcmQ6").await? {
                    Some(r) => r,
                    None => return Ok("501 5.7.0 Authentication cancelled"),
                };
                match (b64.decode(user_b64.as_bytes()), b64.decode(pass_b64.as_bytes())) {
                    (Ok(u), Ok(p)) => (
                        String::from_utf8_lossy(&u).into_owned(),
                        String::from_utf8_lossy(&p).into_owned(),
                    ),
                    _ => return Ok("501 5.5.2 Invalid base64 data"),
                }
            }
            _ => return Ok("504 5.5.4 Unrecognized authentication type"),
        };
        if self.shared.store.check_password(&user, &password) {
            self.authed = Some(user);
            Ok("235 2.7.0 Authentication successful")
        } else {
            Ok("535 5.7.8 Authentication credentials invalid")
        }
    }

    /// Sends a 334 challenge and reads the answer; `None` if the client cancels.
    async fn challenge(&self, conn: &mut Conn, prompt: &str) -> Result<Option<String>, End> {
        self.reply(conn, prompt).await?;
        match conn.read_line().await? {
            Line::TooLong => Ok(None),
            Line::Full(l) => {
                let text = String::from_utf8_lossy(trim_eol(&l)).trim().to_string();
                Ok(if text == "*" { None } else { Some(text) })
            }
        }
    }

    fn mail(&mut self, arg: &str) -> String {
        if self.helo.is_none() {
            return "503 5.5.1 Send EHLO first".into();
        }
        if self.shared.options.require_auth && self.authed.is_none() {
            return "530 5.7.0 Authentication required".into();
        }
        if self.txn.is_some() {
            return "503 5.5.1 Nested MAIL command".into();
        }
        let Some((from, params)) = path_arg(arg, "FROM:") else {
            return "501 5.5.4 Syntax: MAIL FROM:<address>".into();
        };
        if !from.is_empty() && !plausible_address(from) {
            return "553 5.1.7 Bad sender address syntax".into();
        }
        let max = self.shared.store.limits().max_message_bytes;
        for p in params.split_whitespace() {
            if let Some(size) = p.get(..5).filter(|k| k.eq_ignore_ascii_case("SIZE=")).map(|_| &p[5..]) {
                match size.parse::<u64>() {
                    Ok(n) if n > max as u64 => {
                        return format!("552 5.3.4 Message size exceeds fixed limit of {max} bytes")
                    }
                    Ok(_) => {}
                    Err(_) => return "501 5.5.4 Bad SIZE parameter".into(),
                }
            }
        }
        self.txn = Some(Transaction {
            from: from.to_string(),
            rcpts: Vec::new(),
        });
        "250 2.1.0 Ok".into()
    }

    fn rcpt(&mut self, arg: &str) -> String {
        let max_rcpts = self.shared.options.max_recipients;
        let Some(txn) = self.txn.as_mut() else {
            return "503 5.5.1 Need MAIL before RCPT".into();
        };
        let Some((to, _)) = path_arg(arg, "TO:") else {
            return "501 5.5.4 Syntax: RCPT TO:<address>".into();
        };
        if !plausible_address(to) {
            return "501 5.1.3 Bad recipient address syntax".into();
        }
        if txn.rcpts.len() >= max_rcpts {
            return "452 4.5.3 Too many recipients".into();
        }
        if self.shared.faults.take_tempfail() {
            return "451 4.7.1 Try again later".into();
        }
        match self.shared.store.route_for(to) {
            Route::Reject { code, text } => format!("{code} {text}"),
            route => {
                txn.rcpts.push((to.to_string(), route));
                "250 2.1.5 Ok".into()
            }
        }
    }

    async fn data(&mut self, conn: &mut Conn) -> Result<(), End> {
        let ready = match &self.txn {
            None => Some("503 5.5.1 Need MAIL command"),
            Some(t) if t.rcpts.is_empty() => Some("554 5.5.1 No valid recipients"),
            Some(_) => None,
        };
        if let Some(r) = ready {
            return self.reply(conn, r).await;
        }
        self.reply(conn, "354 End data with <CR><LF>.<CR><LF>").await?;
        let max = self.shared.store.limits().max_message_bytes;
        let mut body = Vec::new();
        let (mut too_big, mut too_long) = (false, false);
        loop {
            let line = match conn.read_line().await? {
                Line::TooLong => {
                    too_long = true;
                    continue;
                }
                Line::Full(l) => l,
            };
            let content = trim_eol(&line);
            if content == b"." {
                break;
            }
            // Dot-unstuffing (RFC 5321 4.5.2).
            let content = content.strip_prefix(b".").unwrap_or(content);
            if body.len() + content.len() + 2 > max {
                too_big = true;
            }
            if !too_big {
                body.extend_from_slice(content);
                body.extend_from_slice(b"\r\n");
            }
        }
        let Some(txn) = self.txn.take() else {
            return self.reply(conn, "503 5.5.1 Need MAIL command").await;
        };
        if too_long {
            return self.reply(conn, "500 5.5.2 Line too long").await;
        }
        if too_big {
            return self
                .reply(
                    conn,
                    &format!("552 5.3.4 Message size exceeds fixed limit of {max} bytes"),
                )
                .await;
        }
        let id = queue_id();
        let r = self.deliver(&txn, &id, &body, &conn.peer_ip());
        self.reply(conn, &r).await
    }

    fn deliver(&self, txn: &Transaction, id: &str, body: &[u8], peer: &str) -> String {
        let o = &self.shared.options;
        let with = if self.authed.is_some() { "ESMTPA" } else { "ESMTP" };
        let helo = self.helo.as_deref().unwrap_or("unknown");
        let date = chrono::Utc::now().to_rfc2822();
        let mut failed: Option<StoreError> = None;
        for (rcpt, route) in &txn.rcpts {
            let Route::Deliver { user, folder } = route else {
                continue; // Discard: accepted and dropped.
            };
            let mut raw = format!(
                "Return-Path: <{}>\r\nReceived: from {helo} ([{peer}])\r\n\tby {} (postcanary sandbox) with {with} id {id}\r\n\tfor <{rcpt}>; {date}\r\n",
                txn.from, o.hostname
            )
            .into_bytes();
            raw.extend_from_slice(body);
            if let Err(e) = self.shared.store.deliver(user, folder, raw) {
                tracing::debug!(%rcpt, error = %e, "sandbox SMTP could not store a message");
                failed = Some(e);
            }
        }
        match failed {
            None => format!("250 2.0.0 Ok: queued as {id}"),
            Some(e @ (StoreError::TooLarge { .. } | StoreError::FolderFull { .. })) => {
                format!("552 5.2.2 Mailbox full or message too large: {e}")
            }
            Some(e) => format!("451 4.3.0 Local error in processing: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn store() -> MailStore {
        let store = MailStore::new();
        store.add_user("canary", "secret");
        store.set_route("canary@sandbox.test", Route::deliver("canary", "INBOX"));
        store.set_route("junk@sandbox.test", Route::deliver("canary", "Junk"));
        store.set_route("hole@sandbox.test", Route::Discard);
        store.set_route(
            "gone@sandbox.test",
            Route::reject(550, "5.1.1 <gone@sandbox.test>: no such user"),
        );
        store
    }

    fn transport(server: &SmtpServer) -> AsyncSmtpTransport<Tokio1Executor> {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(server.port())
            .timeout(Some(Duration::from_secs(5)))
            .build()
    }

    fn message(to: &str, body: &str) -> Message {
        Message::builder()
            .from("Prober <prober@example.net>".parse().unwrap())
            .to(to.parse().unwrap())
            .subject("sandbox test")
            .body(body.to_string())
            .unwrap()
    }

    #[tokio::test]
    async fn lettre_delivers_into_the_store_with_trace_headers() {
        let store = store();
        let server = SmtpServer::start(store.clone(), SmtpOptions::default()).await.unwrap();
        let body = "line one\r\n.starts with a dot\r\n..two dots\r\n";
        let r = transport(&server)
            .send(message("Canary@Sandbox.test", body))
            .await
            .unwrap();
        let reply = r.message().collect::<Vec<_>>().join(" ");
        assert!(reply.contains("queued as "), "{reply}");
        let msgs = store.messages("canary", "INBOX").unwrap();
        assert_eq!(msgs.len(), 1);
        let raw = String::from_utf8(msgs[0].raw.to_vec()).unwrap();
        assert!(
            raw.starts_with("Return-Path: <prober@example.net>\r\nReceived: from "),
            "{raw}"
        );
        assert!(raw.contains("for <Canary@Sandbox.test>"));
        assert!(raw.contains("\r\n.starts with a dot\r\n..two dots\r\n"), "{raw}");
        server.shutdown().await;
    }

    #[tokio::test]
    async fn discard_accepts_and_drops_and_reject_gives_550() {
        let store = store();
        let server = SmtpServer::start(store.clone(), SmtpOptions::default()).await.unwrap();
        let t = transport(&server);
        t.send(message("hole@sandbox.test", "into the void")).await.unwrap();
        assert!(store.messages("canary", "INBOX").unwrap().is_empty());

        let e = t.send(message("gone@sandbox.test", "x")).await.unwrap_err();
        assert!(e.is_permanent());
        assert_eq!(e.status().map(|c| c.to_string()), Some("550".into()));

        let e = t.send(message("unknown@sandbox.test", "x")).await.unwrap_err();
        assert!(e.to_string().contains("5.1.1"), "{e}");

        // A routing change takes effect at once.
        store.set_route("hole@sandbox.test", Route::deliver("canary", "Junk"));
        t.send(message("hole@sandbox.test", "back")).await.unwrap();
        assert_eq!(store.messages("canary", "Junk").unwrap().len(), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn tempfail_storm_gives_451_then_recovers() {
        let store = store();
        let server = SmtpServer::start(store.clone(), SmtpOptions::default()).await.unwrap();
        server.faults().tempfail_next_rcpts(2);
        let t = transport(&server);
        for _ in 0..2 {
            let e = t.send(message("canary@sandbox.test", "x")).await.unwrap_err();
            assert!(e.is_transient(), "{e}");
            assert_eq!(e.status().map(|c| c.to_string()), Some("451".into()));
        }
        t.send(message("canary@sandbox.test", "x")).await.unwrap();
        assert_eq!(store.messages("canary", "INBOX").unwrap().len(), 1);
        server.shutdown().await;
    }

    #[tokio::test]
    async fn auth_and_delay_and_dropped_connections() {
        let store = store();
        let options = SmtpOptions {
            require_auth: true,
            ..SmtpOptions::default()
        };
        let server = SmtpServer::start(store.clone(), options).await.unwrap();
        let authed = |user: &str, pass: &str| {
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
                .port(server.port())
                .credentials(Credentials::new(user.into(), pass.into()))
                .timeout(Some(Duration::from_secs(5)))
                .build()
        };
        let e = transport(&server)
            .send(message("canary@sandbox.test", "x"))
            .await
            .unwrap_err();
        assert_eq!(e.status().map(|c| c.to_string()), Some("530".into()));
        let e = authed("canary", "wrong")
            .send(message("canary@sandbox.test", "x"))
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("535") || e.status().is_some_and(|c| c.to_string() == "535"),
            "{e}"
        );
        authed("canary", "secret")
            .send(message("canary@sandbox.test", "x"))
            .await
            .unwrap();

        server.faults().set_delay(Duration::from_millis(30));
        let started = std::time::Instant::now();
        authed("canary", "secret")
            .send(message("canary@sandbox.test", "x"))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30 * 6));
        server.faults().set_delay(Duration::ZERO);

        server.faults().drop_after_commands(Some(2));
        let e = authed("canary", "secret")
            .send(message("canary@sandbox.test", "x"))
            .await
            .unwrap_err();
        assert!(e.status().is_none(), "a dropped connection has no reply code: {e}");
        server.faults().clear();
        authed("canary", "secret")
            .send(message("canary@sandbox.test", "x"))
            .await
            .unwrap();
        assert_eq!(store.messages("canary", "INBOX").unwrap().len(), 3);
        server.shutdown().await;
    }

    async fn raw_client(
        addr: SocketAddr,
    ) -> (
        BufReader<tokio::net::tcp::OwnedReadHalf>,
        tokio::net::tcp::OwnedWriteHalf,
    ) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (r, w) = tcp.into_split();
        (BufReader::new(r), w)
    }

    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    #[tokio::test]
    async fn hostile_input_gets_errors_and_the_server_stays_up() {
        let store = store();
        let server = SmtpServer::start(store.clone(), SmtpOptions::default()).await.unwrap();
        let (mut r, mut w) = raw_client(server.addr()).await;
        assert!(reply(&mut r).await.starts_with("220 "));
        w.write_all(b"\xff\xfe garbage \x00\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("500 "));
        w.write_all(&vec![b'A'; 100_000]).await.unwrap();
        w.write_all(b"\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("500 5.5.2 Line too long"));
        w.write_all(b"RCPT TO:<canary@sandbox.test>\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("503 "));
        w.write_all(b"MAIL FROM:<a@b.c>\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("503 "), "EHLO first");
        w.write_all(b"EHLO me\r\n").await.unwrap();
        let ehlo = reply(&mut r).await;
        assert!(
            ehlo.contains("250-AUTH PLAIN LOGIN") || ehlo.contains("250 AUTH PLAIN LOGIN"),
            "{ehlo}"
        );
        w.write_all(b"MAIL FROM:<a@b.c> SIZE=999999999999\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("552 "));
        w.write_all(b"AUTH PLAIN !!!notbase64\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("501 "));
        w.write_all(b"AUTH LOGIN\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("334 "));
        w.write_all(b"*\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("501 "));
        w.write_all(b"DATA\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("503 "));
        w.write_all(b"NOOP\r\nQUIT\r\n").await.unwrap();
        assert!(reply(&mut r).await.starts_with("250 "));
        assert!(reply(&mut r).await.starts_with("221 "));
        // Still serving.
        transport(&server)
            .send(message("canary@sandbox.test", "x"))
            .await
            .unwrap();
        server.shutdown().await;
    }

    #[tokio::test]
    async fn oversized_messages_get_552_and_sessions_are_bounded() {
        let store = MailStore::with_limits(crate::sandbox::store::StoreLimits {
            max_messages_per_folder: 10,
            max_message_bytes: 2048,
        });
        store.add_user("canary", "secret");
        store.set_route("canary@sandbox.test", Route::deliver("canary", "INBOX"));
        let options = SmtpOptions {
            max_sessions: 1,
            ..SmtpOptions::default()
        };
        let server = SmtpServer::start(store.clone(), options).await.unwrap();
        let e = transport(&server)
            .send(message("canary@sandbox.test", &"x".repeat(70).repeat(60)))
            .await
            .unwrap_err();
        assert_eq!(e.status().map(|c| c.to_string()), Some("552".into()));

        let (mut r1, _w1) = raw_client(server.addr()).await;
        assert!(reply(&mut r1).await.starts_with("220 "));
        let (mut r2, _w2) = raw_client(server.addr()).await;
        assert!(reply(&mut r2).await.starts_with("421 "));
        server.shutdown().await;
    }
}
