//! SMTP submission through a relay, one conversation per attempt, driven step
//! by step so that each failure is attributed: a refusal of the recipient or
//! the content is the channel's; a failure to reach, secure or log in to our
//! own relay is ours.

use std::error::Error as _;
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::Address;

use super::SendOutcome;
use crate::config::{SenderConfig, Tls};

/// Runs one SMTP conversation within the sender's timeout.
pub async fn send(cfg: &SenderConfig, to: &Address, message: &[u8]) -> SendOutcome {
    let from = cfg.from.email.clone();
    match tokio::time::timeout(cfg.timeout, converse(cfg, &from, to, message)).await {
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

async fn converse(cfg: &SenderConfig, from: &Address, to: &Address, message: &[u8]) -> SendOutcome {
    let relay = format!("{}:{}", cfg.host, cfg.port);
    let hello = match &cfg.helo {
        Some(h) => ClientId::Domain(h.clone()),
        None => ClientId::default(),
    };
    let tls = match cfg.tls {
        Tls::None => None,
        Tls::Tls | Tls::Starttls => match tls_parameters(&cfg.host, cfg.ca_file.as_ref()) {
            Ok(p) => Some(p),
            Err(e) => return own(format!("cannot set up TLS for relay {relay}"), &e, false),
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
        Err(e) if e.is_permanent() => return own(format!("relay {relay} refused the connection"), &e, false),
        Err(e) => return own(format!("cannot connect to relay {relay}"), &e, true),
    };

    if cfg.tls == Tls::Starttls {
        let Some(params) = tls else {
            return SendOutcome::OwnSide {
                error: "internal: missing TLS parameters".into(),
                retryable: false,
            };
        };
        if !conn.can_starttls() {
            conn.abort().await;
            return SendOutcome::OwnSide {
                error: format!("relay {relay} does not offer STARTTLS, which tls = \"starttls\" requires"),
                retryable: false,
            };
        }
        if let Err(e) = conn.starttls(params, &hello).await {
            conn.abort().await;
            return own(format!("STARTTLS with relay {relay} failed"), &e, !e.is_permanent());
        }
    }

    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        let creds = Credentials::new(user.clone(), password.expose().to_string());
        if let Err(e) = conn.auth(&[Mechanism::Plain, Mechanism::Login], &creds).await {
            conn.abort().await;
            return own(
                format!("relay {relay} refused authentication as {user}"),
                &e,
                e.is_transient(),
            );
        }
    }

    if let Err(e) = conn.command(Mail::new(Some(from.clone()), vec![])).await {
        conn.abort().await;
        if e.is_transient() {
            return SendOutcome::Deferred { reply: reply_text(&e) };
        }
        return own(
            format!("relay {relay} refused our sender {from}"),
            &e,
            !e.is_permanent(),
        );
    }
    if let Err(e) = conn.command(Rcpt::new(to.clone(), vec![])).await {
        conn.abort().await;
        return channel_refusal(&e, &relay);
    }
    if let Err(e) = conn.command(Data).await {
        conn.abort().await;
        return channel_refusal(&e, &relay);
    }
    let outcome = match conn.message(message).await {
        Ok(r) => SendOutcome::Accepted {
            reply: response_text(&r),
            at: chrono::Utc::now().timestamp_millis(),
        },
        Err(e) => channel_refusal(&e, &relay),
    };
    // The message is accepted or not by now; a failed QUIT changes nothing.
    let _ = conn.quit().await;
    outcome
}

#[cfg(test)]
mod ca_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    use super::*;

    /// A relay with implicit TLS under an internal CA that accepts one message per connection.
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
            for _ in 0..2 {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let Ok(tls) = acceptor.accept(tcp).await else { continue };
                let (r, mut w) = tokio::io::split(tls);
                let mut lines = BufReader::new(r).lines();
                let _ = w.write_all(b"220 relay.test ESMTP\r\n").await;
                let mut in_data = false;
                for _ in 0..100 {
                    let Ok(Some(line)) = lines.next_line().await else { break };
                    let reply: &[u8] = if in_data {
                        if line != "." {
                            continue;
                        }
                        in_data = false;
                        b"250 2.0.0 Ok: queued as T1\r\n"
                    } else if line.starts_with("EHLO") {
                        b"250 relay.test\r\n"
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
        };
        let to: Address = "borger@kommune.example".parse().expect("to");
        let msg = b"Subject: t\r\n\r\nbody\r\n";
        match send(&cfg, &to, msg).await {
            SendOutcome::Accepted { reply, .. } => assert!(reply.contains("queued as T1"), "{reply}"),
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
}
