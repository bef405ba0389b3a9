//! Direct delivery to the recipient domain's MX, as a citizen's mail server
//! does: look up the MX hosts, try them in preference order on port 25,
//! STARTTLS when offered (or required), and record which host took the
//! message with which TLS version and cipher. A small SMTP client of its own,
//! because the TLS facts are the point and relay libraries hide them.
//!
//! Whose fault: our resolver failing is ours (`OwnSide`); everything the
//! receiving side does — no mail server, unreachable, no TLS when it is
//! required, 4xx/5xx — is the channel's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::SendOutcome;
use crate::config::{MxOptions, SenderConfig};
use crate::sender::dns::{DnsError, MxHost, Resolver};

/// Longest reply line and reply we read; a hostile server cannot make us buffer more.
const MAX_LINE: usize = 4096;
const MAX_REPLY_LINES: usize = 100;

/// A server's reply: code and text lines.
#[derive(Debug, Clone)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" ")).trim().to_string()
    }
    fn ok(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// What came of one MX host.
enum HostResult {
    Done(SendOutcome),
    /// Could not talk to this host (connect, greeting, TLS fallback): try the next.
    Next(String),
}

/// The TLS facts of a session.
#[derive(Debug, Clone)]
struct TlsFacts {
    version: String,
    cipher: String,
}

pub async fn send(cfg: &SenderConfig, mx: &MxOptions, to: &lettre::Address, message: &[u8]) -> SendOutcome {
    match tokio::time::timeout(cfg.timeout, deliver(cfg, mx, to, message)).await {
        Ok(o) => o,
        Err(_) => SendOutcome::Deferred {
            reply: format!(
                "delivery to the MX of {} did not finish within {}s",
                to.domain(),
                cfg.timeout.as_secs()
            ),
        },
    }
}

async fn deliver(cfg: &SenderConfig, mx: &MxOptions, to: &lettre::Address, message: &[u8]) -> SendOutcome {
    let resolver = match mx.nameserver {
        Some(ns) => Resolver::with_nameserver(ns),
        None => match Resolver::system() {
            Ok(r) => r,
            Err(e) => {
                return SendOutcome::OwnSide {
                    error: format!("cannot set up DNS resolution: {e}"),
                    retryable: false,
                }
            }
        },
    };
    let domain = to.domain();
    let hosts = match resolver.mx(domain).await {
        Ok(h) => h,
        Err(DnsError::NullMx(_)) => {
            return SendOutcome::Refused {
                reply: format!("{domain} publishes a null MX: it accepts no mail"),
            }
        }
        Err(DnsError::NxDomain(_)) => {
            return SendOutcome::Refused {
                reply: format!("{domain} does not exist in DNS"),
            }
        }
        Err(e) => {
            return SendOutcome::OwnSide {
                error: format!("cannot look up the MX of {domain}: {e}"),
                retryable: true,
            }
        }
    };
    let mut tried = Vec::new();
    for host in &hosts {
        for addr in &host.addrs {
            match try_host(cfg, mx, host, *addr, to, message).await {
                HostResult::Done(o) => return o,
                HostResult::Next(why) => {
                    tracing::info!(mx = %host.host, %addr, %why, "MX host did not take the message; trying the next");
                    tried.push(format!("{} [{addr}]: {why}", host.host));
                }
            }
        }
    }
    if tried.is_empty() {
        return SendOutcome::Refused {
            reply: format!("no MX host of {domain} has an address"),
        };
    }
    SendOutcome::Deferred {
        reply: format!("no MX host of {domain} took the message: {}", tried.join("; ")),
    }
}

async fn try_host(
    cfg: &SenderConfig,
    mx: &MxOptions,
    host: &MxHost,
    ip: IpAddr,
    to: &lettre::Address,
    message: &[u8],
) -> HostResult {
    let addr = SocketAddr::new(ip, mx.port);
    let tcp = match tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return HostResult::Next(format!("cannot connect: {e}")),
        Err(_) => return HostResult::Next("connect timed out".into()),
    };
    let helo = cfg.helo.clone().unwrap_or_else(|| "postcanary.invalid".into());
    let mut s = Conn::new(tcp);
    match s.reply().await {
        Ok(r) if r.code == 220 => {}
        Ok(r) => return HostResult::Next(format!("greeting {}", r.text())),
        Err(e) => return HostResult::Next(e),
    }
    let ehlo = match s.command(&format!("EHLO {helo}")).await {
        Ok(r) if r.ok() => r,
        Ok(r) => return HostResult::Next(format!("EHLO refused: {}", r.text())),
        Err(e) => return HostResult::Next(e),
    };
    let offers_tls = ehlo.lines.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS"));
    let where_ = format!("{} [{}]:{}", host.host, ip, mx.port);
    if !offers_tls {
        if mx.require_tls {
            let _ = s.command("QUIT").await;
            return HostResult::Done(SendOutcome::Refused {
                reply: format!("{where_} does not offer STARTTLS, and this sender requires TLS 1.2 or later"),
            });
        }
        return HostResult::Done(transaction(s, cfg, to, message, &helo, &where_, None, false).await);
    }
    match s.command("STARTTLS").await {
        Ok(r) if r.code == 220 => {}
        Ok(r) if !mx.require_tls => {
            tracing::info!(mx = %where_, reply = %r.text(), "STARTTLS refused; going on in plain text");
            return HostResult::Done(transaction(s, cfg, to, message, &helo, &where_, None, false).await);
        }
        Ok(r) => {
            return HostResult::Done(SendOutcome::Refused {
                reply: format!("{where_} refused STARTTLS: {}", r.text()),
            })
        }
        Err(e) => return HostResult::Next(e),
    }
    match s.starttls(&host.host).await {
        Ok((tls_conn, facts)) => {
            HostResult::Done(transaction(tls_conn, cfg, to, message, &helo, &where_, Some(facts), true).await)
        }
        Err(e) if mx.require_tls => HostResult::Done(SendOutcome::Refused {
            reply: format!("TLS with {where_} failed ({e}), and this sender requires TLS 1.2 or later"),
        }),
        // Opportunistic TLS: a failed handshake leaves the connection unusable; the next MX host is tried.
        // (MTAs often retry the same host in plain text; a probe that did so would hide the TLS fault.)
        Err(e) => HostResult::Next(format!("TLS handshake failed: {e}")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn transaction<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: Conn<S>,
    cfg: &SenderConfig,
    to: &lettre::Address,
    message: &[u8],
    helo: &str,
    where_: &str,
    tls: Option<TlsFacts>,
    again: bool,
) -> SendOutcome {
    if again {
        match s.command(&format!("EHLO {helo}")).await {
            Ok(r) if r.ok() => {}
            Ok(r) => return classify(&r, where_),
            Err(e) => {
                return SendOutcome::Deferred {
                    reply: format!("{where_}: {e}"),
                }
            }
        }
    }
    let from = &cfg.from.email;
    for cmd in [
        format!("MAIL FROM:<{from}>"),
        format!("RCPT TO:<{to}>"),
        "DATA".to_string(),
    ] {
        match s.command(&cmd).await {
            Ok(r) if r.ok() => {}
            Ok(r) => {
                let _ = s.command("QUIT").await;
                return classify(&r, where_);
            }
            Err(e) => {
                return SendOutcome::Deferred {
                    reply: format!("{where_}: {e}"),
                }
            }
        }
    }
    let outcome = match s.data(message).await {
        Ok(r) if r.ok() => {
            let tls = match &tls {
                Some(t) => format!("{} {}", t.version, t.cipher),
                None => "no TLS".to_string(),
            };
            SendOutcome::Accepted {
                reply: format!("{} — by {where_}, {tls}", r.text()),
                at: chrono::Utc::now().timestamp_millis(),
            }
        }
        Ok(r) => classify(&r, where_),
        Err(e) => SendOutcome::Deferred {
            reply: format!("{where_}: {e}"),
        },
    };
    let _ = s.command("QUIT").await;
    outcome
}

/// What a domain's MX said at RCPT time about one address (no message is sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcptAnswer {
    /// 2xx to RCPT TO: the address takes mail.
    Accepted(String),
    /// 5xx to RCPT TO: the address is refused.
    Refused(String),
    /// 4xx, or no MX host could be asked: not known.
    Unknown(String),
}

/// Asks the MX of `domain` whether each address (all in that domain) is
/// accepted: EHLO, STARTTLS when offered, MAIL FROM, one RCPT TO per
/// address, RSET, QUIT — never DATA. Hosts are tried in preference order
/// until one answers; the answers come back in the order of `addrs`.
pub async fn rcpt_check(
    cfg: &SenderConfig,
    mx: &MxOptions,
    domain: &str,
    addrs: &[lettre::Address],
) -> Vec<RcptAnswer> {
    let unknown = |why: String| {
        addrs
            .iter()
            .map(|_| RcptAnswer::Unknown(why.clone()))
            .collect::<Vec<_>>()
    };
    let resolver = match mx.nameserver {
        Some(ns) => Resolver::with_nameserver(ns),
        None => match Resolver::system() {
            Ok(r) => r,
            Err(e) => return unknown(format!("cannot set up DNS resolution: {e}")),
        },
    };
    let hosts = match resolver.mx(domain).await {
        Ok(h) => h,
        Err(e) => return unknown(format!("cannot look up the MX of {domain}: {e}")),
    };
    let mut tried = Vec::new();
    for host in &hosts {
        for ip in &host.addrs {
            let asked = tokio::time::timeout(cfg.timeout, rcpt_host(cfg, mx, host, *ip, addrs)).await;
            match asked {
                Ok(Ok(answers)) => return answers,
                Ok(Err(why)) => tried.push(format!("{} [{ip}]: {why}", host.host)),
                Err(_) => tried.push(format!(
                    "{} [{ip}]: no answer within {}s",
                    host.host,
                    cfg.timeout.as_secs()
                )),
            }
        }
    }
    unknown(format!("no MX host of {domain} answered: {}", tried.join("; ")))
}

async fn rcpt_host(
    cfg: &SenderConfig,
    mx: &MxOptions,
    host: &MxHost,
    ip: IpAddr,
    addrs: &[lettre::Address],
) -> Result<Vec<RcptAnswer>, String> {
    let tcp = TcpStream::connect(SocketAddr::new(ip, mx.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let helo = cfg.helo.clone().unwrap_or_else(|| "postcanary.invalid".into());
    let mut s = Conn::new(tcp);
    let greeting = s.reply().await?;
    if greeting.code != 220 {
        return Err(format!("greeting {}", greeting.text()));
    }
    let ehlo = s.command(&format!("EHLO {helo}")).await?;
    if !ehlo.ok() {
        return Err(format!("EHLO refused: {}", ehlo.text()));
    }
    if ehlo.lines.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")) && s.command("STARTTLS").await?.code == 220 {
        let (mut t, _) = s.starttls(&host.host).await?;
        let again = t.command(&format!("EHLO {helo}")).await?;
        if !again.ok() {
            return Err(format!("EHLO refused: {}", again.text()));
        }
        return rcpts(t, cfg, addrs).await;
    }
    rcpts(s, cfg, addrs).await
}

async fn rcpts<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: Conn<S>,
    cfg: &SenderConfig,
    addrs: &[lettre::Address],
) -> Result<Vec<RcptAnswer>, String> {
    let from = s.command(&format!("MAIL FROM:<{}>", cfg.from.email)).await?;
    if !from.ok() {
        return Err(format!("MAIL FROM refused: {}", from.text()));
    }
    let mut out = Vec::with_capacity(addrs.len());
    for a in addrs {
        let r = s.command(&format!("RCPT TO:<{a}>")).await?;
        out.push(match r.code {
            200..=299 => RcptAnswer::Accepted(r.text()),
            500..=599 => RcptAnswer::Refused(r.text()),
            _ => RcptAnswer::Unknown(r.text()),
        });
    }
    let _ = s.command("RSET").await;
    let _ = s.command("QUIT").await;
    Ok(out)
}

fn classify(r: &Reply, where_: &str) -> SendOutcome {
    let reply = format!("{} (from {where_})", r.text());
    if r.code >= 500 {
        SendOutcome::Refused { reply }
    } else {
        SendOutcome::Deferred { reply }
    }
}

/// One SMTP connection, plain or TLS.
struct Conn<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Conn<S> {
        Conn { io: BufReader::new(io) }
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = tokio::time::timeout(
                Duration::from_secs(60),
                (&mut self.io).take(MAX_LINE as u64 + 2).read_until(b'\n', &mut buf),
            )
            .await
            .map_err(|_| "the server did not answer within 60 s".to_string())?
            .map_err(|e| format!("read failed: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            let line = String::from_utf8_lossy(&buf).trim_end().to_string();
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .ok_or_else(|| format!("not an SMTP reply: {:?}", line.chars().take(80).collect::<String>()))?;
            let more = line.as_bytes().get(3) == Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if !more {
                return Ok(Reply { code, lines });
            }
            if lines.len() > MAX_REPLY_LINES {
                return Err("reply too long".into());
            }
        }
    }

    async fn command(&mut self, cmd: &str) -> Result<Reply, String> {
        let w = self.io.get_mut();
        w.write_all(format!("{cmd}\r\n").as_bytes())
            .await
            .map_err(|e| format!("write failed: {e}"))?;
        w.flush().await.map_err(|e| format!("write failed: {e}"))?;
        self.reply().await
    }

    /// Sends the message, dot-stuffed, and the final dot.
    async fn data(&mut self, message: &[u8]) -> Result<Reply, String> {
        let mut out = Vec::with_capacity(message.len() + 64);
        for line in message.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        let w = self.io.get_mut();
        w.write_all(&out).await.map_err(|e| format!("write failed: {e}"))?;
        w.flush().await.map_err(|e| format!("write failed: {e}"))?;
        self.reply().await
    }
}

impl Conn<TcpStream> {
    async fn starttls(
        self,
        host: &str,
    ) -> Result<(Conn<tokio_rustls::client::TlsStream<TcpStream>>, TlsFacts), String> {
        let config = tls_config().map_err(|e| format!("TLS setup: {e}"))?;
        let name = ServerName::try_from(host.to_string()).map_err(|e| format!("bad host name {host:?}: {e}"))?;
        let tcp = self.io.into_inner();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = stream.get_ref();
        let facts = TlsFacts {
            version: session
                .protocol_version()
                .map(|v| format!("{v:?}").replace("TLSv1_", "TLSv1."))
                .unwrap_or_default(),
            cipher: session
                .negotiated_cipher_suite()
                .map(|c| format!("{:?}", c.suite()))
                .unwrap_or_default(),
        };
        Ok((Conn::new(stream), facts))
    }
}

/// Opportunistic TLS between mail servers does not authenticate the peer
/// (RFC 7435); the facts recorded are the protocol and cipher. rustls speaks
/// TLS 1.2 and 1.3 only, which is the floor `require_tls` asks for.
fn tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unauthenticated(provider)))
        .with_no_client_auth())
}

#[derive(Debug)]
struct Unauthenticated(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unauthenticated {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replies_parse_and_hostile_servers_are_bounded() {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let _ = server
                .write_all(b"250-mx.kommune.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
                .await;
            let long = vec![b'x'; 10_000];
            let _ = server.write_all(&long).await;
        });
        let mut c = Conn::new(client);
        let r = c.reply().await.expect("reply");
        assert_eq!(r.code, 250);
        assert_eq!(r.lines, vec!["mx.kommune.example", "PIPELINING", "STARTTLS"]);
        assert!(c.reply().await.is_err(), "a 10 kB line without a code is refused");
    }

    #[tokio::test]
    async fn data_is_dot_stuffed() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let reader = tokio::spawn(async move {
            let mut r = BufReader::new(server);
            let mut got = Vec::new();
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).await.unwrap_or(0) == 0 {
                    break;
                }
                got.extend_from_slice(&line);
                if line == b".\r\n" {
                    let _ = r.get_mut().write_all(b"250 2.0.0 Ok: queued as ABC\r\n").await;
                    break;
                }
            }
            got
        });
        let mut c = Conn::new(client);
        let r = c.data(b"Subject: x\r\n\r\n.hidden\r\nend").await.expect("reply");
        assert_eq!(r.text(), "250 2.0.0 Ok: queued as ABC");
        let got = reader.await.expect("reader");
        assert_eq!(got, b"Subject: x\r\n\r\n..hidden\r\nend\r\n.\r\n");
    }
}
