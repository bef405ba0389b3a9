//! Extra helpers for the postcanary integration tests on top of the mail stack.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mailstack::MailStack;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mailstack/mailstack.sh")
}

fn run_script(stack: &MailStack, sub: &str) {
    let out = Command::new("bash")
        .arg(script())
        .arg(sub)
        .arg(stack.dir.path())
        .output()
        .expect("run mailstack.sh");
    assert!(
        out.status.success(),
        "mailstack.sh {sub} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub trait StackExt {
    /// Stops Dovecot, runs `during`, starts Dovecot again.
    fn restart_imap_with(&self, during: impl FnOnce());
    /// Asks Postfix to retry its deferred mail now.
    fn flush_queue(&self);
}

impl StackExt for MailStack {
    fn restart_imap_with(&self, during: impl FnOnce()) {
        run_script(self, "stop-imap");
        during();
        run_script(self, "start-imap");
    }
    fn flush_queue(&self) {
        run_script(self, "flush");
    }
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank; for benchmarks.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len().saturating_sub(1))]
}

/// Delivers a message straight into a mailbox over Dovecot's LMTP; when this
/// returns, the message is in the mailbox.
pub fn lmtp_deliver(port: u16, rcpt: &str, message: &str) {
    converse(port, "LHLO", rcpt, message);
}

/// Sends a raw message over plain SMTP on loopback, asserting it is accepted.
pub fn send_raw_smtp(port: u16, to: &str, message: &str) {
    converse(port, "EHLO", to, message);
}

fn converse(port: u16, hello: &str, to: &str, message: &str) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).ok();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect("220");
    for (cmd, code) in [
        (format!("{hello} test.invalid"), "250"),
        ("MAIL FROM:<tester@example.net>".to_string(), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_string(), "354"),
    ] {
        write!(w, "{cmd}\r\n").unwrap();
        expect(code);
    }
    write!(w, "From: tester@example.net\r\nTo: {to}\r\n{message}\r\n.\r\n").unwrap();
    expect("250");
    write!(w, "QUIT\r\n").unwrap();
}

/// Number of messages in `mailbox` of `user`, by IMAP STATUS over plain loopback.
pub fn imap_count(port: u16, user: &str, password: &str, mailbox: &str) -> u32 {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect imap");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut count = None;
    for (tag, cmd) in [
        ("a", format!("LOGIN {user} {password}")),
        ("b", format!("STATUS {mailbox} (MESSAGES)")),
    ] {
        write!(w, "{tag} {cmd}\r\n").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if let Some(rest) = line.strip_prefix("* STATUS ") {
                let n = rest.split("MESSAGES ").nth(1).and_then(|t| t.split(')').next());
                count = n.and_then(|n| n.trim().parse().ok());
            }
            if line.starts_with(&format!("{tag} ")) {
                assert!(line.starts_with(&format!("{tag} OK")), "{cmd}: {line}");
                break;
            }
        }
    }
    let _ = write!(w, "c LOGOUT\r\n");
    count.expect("STATUS MESSAGES")
}

/// `postcanary run` as a child process, logging JSON to a file.
pub struct Daemon(Child);

impl Daemon {
    pub fn start(config: &Path, log: &Path) -> Daemon {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_postcanary"))
            .args(["run", "--log-format", "json", "-c"])
            .arg(config)
            .env("RUST_LOG", "postcanary=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Daemon(child)
    }
    pub fn kill9(&mut self) {
        // SIGKILL: no chance to clean up.
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `f` every 100 ms until it gives a value; panics after `limit`.
pub async fn wait_for<T>(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A scripted SMTP server on loopback that offers no STARTTLS and answers
/// every RCPT with `rcpt_reply` (e.g. `"250 ok"`, or a 550 for a mailbox
/// server that refuses a deleted mailbox); everything else gets 250.
pub async fn scripted_smtp(host: &'static str, rcpt_reply: &'static str) -> u16 {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (r, mut w) = sock.into_split();
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(format!("220 {host} ESMTP\r\n").as_bytes()).await;
                while let Ok(Some(line)) = lines.next_line().await {
                    let cmd = line.to_ascii_uppercase();
                    let reply = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        format!("250-{host}\r\n250 8BITMIME\r\n")
                    } else if cmd.starts_with("RCPT") {
                        format!("{rcpt_reply}\r\n")
                    } else if cmd.starts_with("QUIT") {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        break;
                    } else {
                        "250 ok\r\n".to_string()
                    };
                    let _ = w.write_all(reply.as_bytes()).await;
                }
            });
        }
    });
    port
}

/// A config with one relay (`smtp_port`, with `sender_extra` keys), the
/// given inboxes on `imap_port` (name, extra keys; each password written to
/// `NAME.pw` and read back as a `file:` secret), a webhook notifier and
/// `channels`; written to `dir/postcanary.toml`.
#[allow(clippy::too_many_arguments)]
pub fn relay_config(
    dir: &Path,
    smtp_port: u16,
    imap_port: u16,
    password: &dyn Fn(&str) -> String,
    hook: &str,
    sender_extra: &str,
    inboxes: &[(&str, &str)],
    channels: &str,
) -> std::path::PathBuf {
    let mut toml = format!(
        "[ledger]\nurl = \"sqlite://ledger.db\"\n\n[defaults]\nnotify = [\"ops\"]\nschedule = \"every 1h\"\njitter = \"1s\"\n\n\
         [[sender]]\nname = \"relay\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {smtp_port}\ntls = \"none\"\n\
         from = \"canary@kommune.example\"\ntimeout = \"10s\"\n{sender_extra}\n\n\
         [[notifier]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{hook}\"\n\n"
    );
    for (name, extra) in inboxes {
        std::fs::write(dir.join(format!("{name}.pw")), password(name)).expect("pw");
        toml.push_str(&format!(
            "[[inbox]]\nname = \"{name}\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imap_port}\ntls = \"none\"\n\
             username = \"{name}\"\npassword = \"file:{name}.pw\"\nblind_grace = \"5m\"\n{extra}\n\n"
        ));
    }
    toml.push_str(channels);
    let path = dir.join("postcanary.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

/// A `[[channel]]` table of a mail channel, with extra keys.
pub fn mail_channel(id: &str, to: &str, inbox: &str, extra: &str) -> String {
    format!(
        "[[channel]]\nid = \"{id}\"\nname = \"{id}\"\nkind = \"mail\"\nto = \"{to}\"\ninbox = \"{inbox}\"\n{extra}\n\n"
    )
}

/// The real engine in this process, paging through the config's notifiers,
/// once its watchers are connected.
pub async fn paging_engine(config: &Path) -> postcanary::engine::Engine {
    let cfg = postcanary::config::Config::load(config).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = postcanary::engine::Engine::start(cfg).await.expect("engine");
    let delivery = postcanary::outbox::RealDelivery::new(std::sync::Arc::clone(&engine.config)).expect("delivery");
    engine.start_paging(std::sync::Arc::new(delivery));
    assert!(
        engine.wait_watchers_connected(Duration::from_secs(15)).await,
        "{:?}",
        engine.watcher_states()
    );
    engine
}

/// Runs one probe of channel `id` now; returns its id.
pub async fn fire(engine: &postcanary::engine::Engine, id: &str) -> String {
    let ch = engine.config.channel(id).expect("channel").clone();
    postcanary::probe::run(&engine.probe_context(), &engine.config, &ch)
        .await
        .expect("probe")
        .id
}

/// Waits until probe `id` is judged, and asserts `delivered`.
pub async fn delivered(store: &dyn postcanary::ledger::Store, id: &str) {
    let p = wait_for("the canary to be delivered", Duration::from_secs(30), async || {
        let p = store.probe(id).await.expect("ledger").expect("probe");
        p.verdict.is_final().then_some(p)
    })
    .await;
    assert_eq!(p.verdict, postcanary::verdict::Verdict::Delivered, "{p:?}");
}

/// Waits until the check at `age` of a probe is no longer due; returns it.
pub async fn checked(
    store: &dyn postcanary::ledger::Store,
    probe: &str,
    age: &str,
    limit: Duration,
) -> postcanary::ledger::RetainCheck {
    wait_for(&format!("the {age} retention check"), limit, async || {
        store
            .retain_checks(probe)
            .await
            .expect("ledger")
            .into_iter()
            .find(|c| c.age == age && c.state != "due")
    })
    .await
}

/// (event, channel id, verdict, detail) of every page accepted so far.
pub fn pages(hook: &super::receiver::Receiver) -> Vec<(String, String, String, String)> {
    hook.accepted()
        .iter()
        .map(|p| {
            let v = p.json();
            let s = |x: &serde_json::Value| x.as_str().unwrap_or("").to_string();
            (
                s(&v["event"]),
                s(&v["channel"]["id"]),
                s(&v["verdict"]),
                s(&v["detail"]),
            )
        })
        .collect()
}

pub async fn wait_page(
    hook: &super::receiver::Receiver,
    event: &str,
    channel: &str,
    limit: Duration,
) -> (String, String, String, String) {
    wait_for(&format!("a {event} page for {channel}"), limit, async || {
        pages(hook).into_iter().find(|p| p.0 == event && p.1 == channel)
    })
    .await
}
