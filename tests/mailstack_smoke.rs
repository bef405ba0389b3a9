//! Smoke tests of the loopback Postfix + Dovecot stack itself
//! (tests/mailstack/mailstack.sh, tests/support/mailstack.rs), over raw
//! SMTP and IMAP: the routing the other integration tests rely on.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::mailstack::MailStack;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(15);

fn token(label: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!("smoke-{label}-{}-{nanos}", std::process::id())
}

fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_encodes() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"\0u\0p"), "AHUAcA==");
}

// ------------------------------------------------------------------ SMTP

struct Smtp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Smtp {
    fn connect(port: u16) -> Smtp {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect smtp");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let w = stream.try_clone().unwrap();
        let mut s = Smtp {
            r: BufReader::new(stream),
            w,
        };
        let (code, text) = s.reply();
        assert_eq!(code, 220, "greeting: {text}");
        let (code, text) = s.cmd("EHLO smoke.test.invalid");
        assert_eq!(code, 250, "EHLO: {text}");
        s
    }

    /// One whole (possibly multi-line) reply: its code and all its lines.
    fn reply(&mut self) -> (u16, String) {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).expect("read smtp reply");
            assert!(n > 0, "smtp connection closed; so far: {all:?}");
            all.push_str(&line);
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return (code, all);
            }
        }
    }

    fn cmd(&mut self, line: &str) -> (u16, String) {
        write!(self.w, "{line}\r\n").unwrap();
        self.reply()
    }

    /// MAIL, RCPT, DATA with a message whose subject is `subject`; every step must succeed.
    fn send(&mut self, to: &str, subject: &str) {
        let (code, text) = self.cmd("MAIL FROM:<tester@example.net>");
        assert_eq!(code, 250, "MAIL: {text}");
        let (code, text) = self.cmd(&format!("RCPT TO:<{to}>"));
        assert_eq!(code, 250, "RCPT {to}: {text}");
        let (code, text) = self.cmd("DATA");
        assert_eq!(code, 354, "DATA: {text}");
        let (code, text) = self.cmd(&format!(
            "From: tester@example.net\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n."
        ));
        assert_eq!(code, 250, "end of DATA: {text}");
    }

    fn quit(mut self) {
        let _ = write!(self.w, "QUIT\r\n");
    }
}

fn send(port: u16, to: &str, subject: &str) {
    let mut s = Smtp::connect(port);
    s.send(to, subject);
    s.quit();
}

// ------------------------------------------------------------------ IMAP

struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    next: u32,
}

impl Imap {
    fn login(port: u16, user: &str, password: &str) -> Result<Imap, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect imap: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let w = stream.try_clone().unwrap();
        let mut imap = Imap {
            r: BufReader::new(stream),
            w,
            next: 0,
        };
        let mut greeting = String::new();
        imap.r
            .read_line(&mut greeting)
            .map_err(|e| format!("imap greeting: {e}"))?;
        if !greeting.starts_with("* OK") {
            return Err(format!("imap greeting: {greeting:?}"));
        }
        let (_, done) = imap.cmd(&format!("LOGIN {user} {password}"));
        if done.contains(" OK") {
            Ok(imap)
        } else {
            Err(format!("LOGIN {user}: {done}"))
        }
    }

    /// Untagged lines and the tagged completion line.
    fn cmd(&mut self, cmd: &str) -> (Vec<String>, String) {
        self.next += 1;
        let tag = format!("t{}", self.next);
        write!(self.w, "{tag} {cmd}\r\n").unwrap();
        let mut untagged = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).expect("read imap");
            assert!(n > 0, "imap connection closed during {cmd:?}; so far {untagged:?}");
            if line.starts_with(&format!("{tag} ")) {
                return (untagged, line.trim_end().to_string());
            }
            untagged.push(line.trim_end().to_string());
        }
    }

    /// Number of messages in `mailbox` whose subject contains `needle`.
    fn count_subject(&mut self, mailbox: &str, needle: &str) -> usize {
        let (_, done) = self.cmd(&format!("EXAMINE \"{mailbox}\""));
        assert!(done.contains(" OK"), "EXAMINE {mailbox}: {done}");
        let (lines, done) = self.cmd(&format!("SEARCH SUBJECT \"{needle}\""));
        assert!(done.contains(" OK"), "SEARCH: {done}");
        lines
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .map(|rest| rest.split_whitespace().count())
            .sum()
    }

    fn logout(mut self) {
        let _ = self.cmd("LOGOUT");
    }
}

fn count_in(stack: &MailStack, user: &str, mailbox: &str, needle: &str) -> usize {
    let mut imap = Imap::login(stack.imap_port, user, &stack.password(user))
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.log_tail()));
    let n = imap.count_subject(mailbox, needle);
    imap.logout();
    n
}

/// Polls until `user`'s `mailbox` holds a message with `needle` in its subject.
fn wait_delivered(stack: &MailStack, user: &str, mailbox: &str, needle: &str) {
    let start = Instant::now();
    loop {
        if count_in(stack, user, mailbox, needle) > 0 {
            return;
        }
        assert!(
            start.elapsed() < DELIVERY_TIMEOUT,
            "{needle} not delivered to {user}/{mailbox} within {DELIVERY_TIMEOUT:?}\n{}",
            stack.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls the Postfix log for the final status line of a recipient.
fn wait_log_line(stack: &MailStack, needles: &[&str]) -> String {
    let start = Instant::now();
    loop {
        let log = std::fs::read_to_string(stack.dir.path().join("postfix/maillog")).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
            return line.to_string();
        }
        assert!(
            start.elapsed() < DELIVERY_TIMEOUT,
            "no log line with {needles:?} within {DELIVERY_TIMEOUT:?}\n{}",
            stack.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether any file under `dir` contains `needle`.
fn any_file_contains(dir: &Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let p = e.path();
        if p.is_dir() {
            any_file_contains(&p, needle)
        } else {
            std::fs::read(&p)
                .map(|b| String::from_utf8_lossy(&b).contains(needle))
                .unwrap_or(false)
        }
    })
}

const USERS: [&str; 5] = ["social", "borger", "closed", "canary", "ops"];

// ------------------------------------------------------------------ tests

#[test]
fn smtp_to_social_lands_in_its_inbox_and_folders_exist() {
    let stack = MailStack::start();
    let env = std::fs::read_to_string(stack.dir.path().join("env")).unwrap();
    for key in ["SMTP_PORT", "SUBMISSION_PORT", "IMAP_PORT", "LMTP_PORT"] {
        assert!(
            env.lines().any(|l| l.starts_with(&format!("{key}="))),
            "{key} missing in env:\n{env}"
        );
    }
    let passwords: std::collections::HashSet<String> = USERS.iter().map(|u| stack.password(u)).collect();
    assert_eq!(passwords.len(), USERS.len(), "passwords are random per user");

    let subject = token("social");
    send(stack.smtp_port, "social@kommune.example", &subject);
    wait_delivered(&stack, "social", "INBOX", &subject);
    assert_eq!(count_in(&stack, "borger", "INBOX", &subject), 0);

    for user in USERS {
        let mut imap = Imap::login(stack.imap_port, user, &stack.password(user))
            .unwrap_or_else(|e| panic!("{e}\n{}", stack.log_tail()));
        let (lines, done) = imap.cmd("LIST \"\" \"*\"");
        assert!(done.contains(" OK"), "{done}");
        let listed = |name: &str| {
            lines
                .iter()
                .any(|l| l.ends_with(&format!(" {name}")) || l.ends_with(&format!(" \"{name}\"")))
        };
        for folder in ["INBOX", "Junk", "Postcanary"] {
            assert!(listed(folder), "{user}: {folder} not in {lines:?}");
        }
        assert!(
            lines.iter().any(|l| l.contains("\\Junk") && l.contains("Junk")),
            "{user}: no \\Junk in {lines:?}"
        );
        imap.logout();
    }
}

#[test]
fn retired_is_accepted_and_discarded() {
    let stack = MailStack::start();
    let subject = token("retired");
    send(stack.smtp_port, "retired@kommune.example", &subject);
    let line = wait_log_line(&stack, &["to=<retired@kommune.example>", "status="]);
    assert!(
        line.contains("postfix/discard") && line.contains("status=sent"),
        "{line}"
    );
    // Also deliver a marker after it, to be sure the queue has moved on.
    let marker = token("after-retired");
    send(stack.smtp_port, "ops@kommune.example", &marker);
    wait_delivered(&stack, "ops", "INBOX", &marker);
    assert!(
        !any_file_contains(&stack.dir.path().join("mail"), &subject),
        "the discarded message was stored somewhere\n{}",
        stack.log_tail()
    );
    for user in USERS {
        assert_eq!(count_in(&stack, user, "INBOX", &subject), 0, "{user}");
    }
}

#[test]
fn unknown_recipient_is_refused_at_rcpt() {
    let stack = MailStack::start();
    let mut s = Smtp::connect(stack.smtp_port);
    let (code, text) = s.cmd("MAIL FROM:<tester@example.net>");
    assert_eq!(code, 250, "{text}");
    let (code, text) = s.cmd("RCPT TO:<unknown@kommune.example>");
    assert!((500..600).contains(&code), "RCPT unknown@: {text}");
    assert_eq!(code, 550, "{text}");
    // A known one in the same transaction still works.
    let (code, text) = s.cmd("RCPT TO:<borger@kommune.example>");
    assert_eq!(code, 250, "{text}");
    s.quit();
}

#[test]
fn familie_lands_in_closed() {
    let stack = MailStack::start();
    let subject = token("familie");
    send(stack.smtp_port, "familie@kommune.example", &subject);
    wait_delivered(&stack, "closed", "INBOX", &subject);
    let line = wait_log_line(&stack, &["orig_to=<familie@kommune.example>", "status=sent"]);
    assert!(line.contains("to=<closed@kommune.example>"), "{line}");
}

#[test]
fn submission_requires_auth() {
    let stack = MailStack::start();
    let canary_pw = stack.password("canary");

    // Advertised, and required.
    let mut s = Smtp::connect(stack.submission_port);
    let (_, ehlo) = s.cmd("EHLO again.test.invalid");
    assert!(
        ehlo.contains("AUTH") && ehlo.contains("PLAIN") && ehlo.contains("LOGIN"),
        "{ehlo}"
    );
    let (code, text) = s.cmd("MAIL FROM:<canary@kommune.example>");
    let refused = if code == 250 {
        s.cmd("RCPT TO:<social@kommune.example>")
    } else {
        (code, text)
    };
    assert!(
        (500..600).contains(&refused.0),
        "unauthenticated submission accepted: {refused:?}"
    );
    s.quit();

    // Wrong password: 535.
    let mut s = Smtp::connect(stack.submission_port);
    let (code, text) = s.cmd(&format!("AUTH PLAIN {}", base64(b"\0canary\0wrong-password")));
    assert_eq!(code, 535, "{text}");
    s.quit();

    // Right password with PLAIN: accepted and delivered.
    let mut s = Smtp::connect(stack.submission_port);
    let (code, text) = s.cmd(&format!(
        "AUTH PLAIN {}",
        base64(format!("\0canary\0{canary_pw}").as_bytes())
    ));
    assert_eq!(code, 235, "{text}\n{}", stack.log_tail());
    let subject = token("submission");
    s.send("social@kommune.example", &subject);
    s.quit();
    wait_delivered(&stack, "social", "INBOX", &subject);

    // And with LOGIN.
    let mut s = Smtp::connect(stack.submission_port);
    assert_eq!(s.cmd("AUTH LOGIN").0, 334);
    assert_eq!(s.cmd(&base64(b"canary")).0, 334);
    let (code, text) = s.cmd(&base64(canary_pw.as_bytes()));
    assert_eq!(code, 235, "{text}");
    s.quit();
}

#[test]
fn imap_and_lmtp_work_after_restart_imap() {
    let stack = MailStack::start();
    Imap::login(stack.imap_port, "borger", &stack.password("borger"))
        .unwrap()
        .logout();

    stack.restart_imap();

    let mut imap = Imap::login(stack.imap_port, "borger", &stack.password("borger"))
        .unwrap_or_else(|e| panic!("{e}\n{}", stack.log_tail()));
    let (_, done) = imap.cmd("SELECT INBOX");
    assert!(done.contains(" OK"), "{done}");
    imap.logout();
    assert!(Imap::login(stack.imap_port, "borger", "not-the-password").is_err());

    let subject = token("after-restart");
    send(stack.smtp_port, "borger@kommune.example", &subject);
    wait_delivered(&stack, "borger", "INBOX", &subject);
}

#[test]
fn set_map_reroutes_after_reload() {
    let stack = MailStack::start();
    stack.set_map("virtual", "familie@kommune.example ops@kommune.example\n");
    let subject = token("rerouted");
    send(stack.smtp_port, "familie@kommune.example", &subject);
    wait_delivered(&stack, "ops", "INBOX", &subject);
    assert_eq!(count_in(&stack, "closed", "INBOX", &subject), 0);
}
