//! The path as the real test stack writes it: a probe handed to the test
//! Postfix over STARTTLS, delivered by Dovecot LMTP, read back over IMAP,
//! and parsed by `mailpath` — the Postfix hop must show TLS 1.2 or later
//! with its cipher, and the Dovecot hop must be there (local, not judged);
//! with OpenDKIM as Postfix's milter, a DKIM-signed probe reads `dkim=pass`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use postcanary::mailpath::{self, TlsLevel, TlsVersion};
use postcanary::sender::message::{build, ProbeMessage};
use postcanary::token::TokenKey;
use support::mailstack::MailStack;

/// The headers of every message in INBOX of `user`, by IMAP over plain loopback.
fn imap_headers(port: u16, user: &str, password: &str) -> Vec<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect imap");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let mut out = Vec::new();
    for (tag, cmd) in [
        ("a", format!("LOGIN {user} {password}")),
        ("b", "SELECT INBOX".to_string()),
        ("c", "FETCH 1:* (BODY.PEEK[HEADER])".to_string()),
    ] {
        write!(w, "{tag} {cmd}\r\n").unwrap();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if let Some(n) = line
                .trim_end()
                .strip_suffix('}')
                .and_then(|l| l.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
            {
                let mut buf = vec![0u8; n];
                r.read_exact(&mut buf).unwrap();
                out.push(String::from_utf8_lossy(&buf).into_owned());
                continue;
            }
            if line.starts_with(&format!("{tag} ")) {
                // FETCH on an empty mailbox is a BAD/NO for `1:*` on some servers; no messages then.
                break;
            }
        }
    }
    let _ = write!(w, "d LOGOUT\r\n");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn postfix_starttls_hop_reads_as_tls_1_2_or_later() {
    let stack = MailStack::start();
    let token = TokenKey::generate().issue(SystemTime::now()).to_string();
    let from: lettre::message::Mailbox = "Postcanary <canary@example.net>".parse().unwrap();
    let to: lettre::Address = "social@kommune.example".parse().unwrap();
    let message = build(&ProbeMessage {
        token: &token,
        channel_id: "social-mail",
        channel_name: "Social",
        from: &from,
        to: &to,
        dkim: None,
    })
    .unwrap();
    // STARTTLS to the test MX (its certificate is a throwaway: not verified, as between MTAs).
    send_starttls(stack.smtp_port, message).await;
    let header = read_back(&stack, &token).await;
    let path = mailpath::parse(header.as_bytes());
    println!("{header}");
    for (i, h) in path.hops.iter().enumerate() {
        println!("{i}. {}", mailpath::describe_hop(h));
    }
    let smtp = path
        .hops
        .iter()
        .find(|h| {
            h.protocol
                .as_deref()
                .is_some_and(|p| p.to_ascii_uppercase().starts_with("ESMTP"))
        })
        .expect("the Postfix hop");
    assert_eq!(smtp.protocol.as_deref(), Some("ESMTPS"), "{header}");
    assert_eq!(smtp.from_ip.as_deref(), Some("127.0.0.1"));
    let level = smtp.tls_level();
    assert!(level.at_least(TlsVersion::Tls1_2), "{level} in {header}");
    assert!(matches!(level, TlsLevel::Tls(_)));
    assert!(
        smtp.tls
            .as_ref()
            .and_then(|t| t.cipher.as_deref())
            .is_some_and(|c| !c.is_empty()),
        "{header}"
    );
    assert!(smtp.at.is_some());
    // Postfix hands over to Dovecot by LMTP: a hop of its own, later than the SMTP one.
    let smtp_index = path.hops.iter().position(|h| std::ptr::eq(h, smtp)).unwrap();
    let lmtp = path.hops.get(smtp_index + 1).expect("the LMTP hop after Postfix");
    assert!(
        lmtp.protocol.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("lmtp")),
        "{header}"
    );
    assert!(lmtp.is_local());
    assert!(lmtp.delay_s.is_some_and(|d| (0..10).contains(&d)));
}

/// `opendkim` as a milter on loopback, killed when dropped.
struct Milter(std::process::Child);

impl Drop for Milter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sh(cmd: &str, dir: &std::path::Path) {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn send_starttls(port: u16, message: lettre::Message) {
    let tls = TlsParameters::builder("mx.kommune.example".into())
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build_rustls()
        .unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(Tls::Required(tls))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport.send(message).await.expect("the test Postfix takes the probe");
}

async fn read_back(stack: &MailStack, token: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = imap_headers(stack.imap_port, "social", &stack.password("social"))
            .into_iter()
            .find(|h| h.contains(token));
        if let Some(h) = found {
            return h;
        }
        assert!(Instant::now() < deadline, "probe not delivered: {}", stack.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A DKIM-signed probe through the test Postfix with OpenDKIM as its milter:
/// the gateway's Authentication-Results say `dkim=pass` for the probe's domain.
#[tokio::test(flavor = "multi_thread")]
async fn dkim_signed_probe_passes_opendkim_on_the_test_postfix() {
    if !std::path::Path::new("/usr/sbin/opendkim").exists() {
        eprintln!("SKIP: opendkim not installed (scripts/test.sh installs it)");
        return;
    }
    let stack = MailStack::start();
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    sh(
        "openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>/dev/null",
        d,
    );
    sh(
        "openssl pkey -in rsa.pem -pubout -outform DER | base64 -w0 > rsa.pub",
        d,
    );
    let public = std::fs::read_to_string(d.join("rsa.pub")).unwrap();
    std::fs::write(
        d.join("keys"),
        format!("pc2025._domainkey.example.net v=DKIM1; k=rsa; p={public}\n"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        d.join("opendkim.conf"),
        format!(
            "Mode v\nSocket inet:{port}@127.0.0.1\nTestPublicKeys {keys}\nAuthservID mx.kommune.example\nSyslog no\nBackground no\nPidFile {pid}\n",
            keys = d.join("keys").display(),
            pid = d.join("opendkim.pid").display()
        ),
    )
    .unwrap();
    let _milter = Milter(
        std::process::Command::new("/usr/sbin/opendkim")
            .args(["-f", "-x"])
            .arg(d.join("opendkim.conf"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(d.join("opendkim.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "opendkim did not listen: {}",
            std::fs::read_to_string(d.join("opendkim.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let main_cf = stack.dir.path().join("postfix/main.cf");
    let mut cf = std::fs::read_to_string(&main_cf).unwrap();
    cf.push_str(&format!(
        "smtpd_milters = inet:127.0.0.1:{port}\nmilter_default_action = tempfail\n"
    ));
    std::fs::write(&main_cf, cf).unwrap();
    stack.reload_postfix();

    let signer = postcanary::dkim::DkimSigner::new(
        "example.net",
        "pc2025",
        &std::fs::read_to_string(d.join("rsa.pem")).unwrap(),
    )
    .unwrap();
    let token = TokenKey::generate().issue(SystemTime::now()).to_string();
    let from: lettre::message::Mailbox = "Postcanary <canary@example.net>".parse().unwrap();
    let to: lettre::Address = "social@kommune.example".parse().unwrap();
    let message = build(&ProbeMessage {
        token: &token,
        channel_id: "social-mail",
        channel_name: "Social",
        from: &from,
        to: &to,
        dkim: Some(&signer),
    })
    .unwrap();
    // Postfix reloads asynchronously; the milter is in place once a new smtpd starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send_starttls(stack.smtp_port, message).await;
    let header = read_back(&stack, &token).await;
    println!("{header}");
    let path = mailpath::parse(header.as_bytes());
    assert_eq!(path.gateway(), Some("mx.kommune.example"), "{header}");
    let dkim = path.auth_result("dkim").expect("a dkim result");
    assert_eq!(dkim.result, "pass", "{header}");
    assert_eq!(dkim.props.get("header.d").map(String::as_str), Some("example.net"));
    assert_eq!(dkim.props.get("header.s").map(String::as_str), Some("pc2025"));
    assert_eq!(path.summary().auth.get("dkim").map(String::as_str), Some("pass"));
}
