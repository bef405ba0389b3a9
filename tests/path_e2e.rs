//! The path as the real test stack writes it: a probe handed to the test
//! Postfix over STARTTLS, delivered by Dovecot LMTP, read back over IMAP,
//! and parsed by `mailpath` — the Postfix hop must show TLS 1.2 or later
//! with its cipher, and the Dovecot hop must be there (local, not judged).

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
    let tls = TlsParameters::builder("mx.kommune.example".into())
        .dangerous_accept_invalid_certs(true)
        .dangerous_accept_invalid_hostnames(true)
        .build_rustls()
        .unwrap();
    let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(stack.smtp_port)
        .tls(Tls::Required(tls))
        .timeout(Some(Duration::from_secs(10)))
        .build();
    transport
        .send(message)
        .await
        .expect("the test Postfix takes the probe over STARTTLS");

    let deadline = Instant::now() + Duration::from_secs(20);
    let header = loop {
        let found = imap_headers(stack.imap_port, "social", &stack.password("social"))
            .into_iter()
            .find(|h| h.contains(&token));
        if let Some(h) = found {
            break h;
        }
        assert!(Instant::now() < deadline, "probe not delivered: {}", stack.log_tail());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
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
