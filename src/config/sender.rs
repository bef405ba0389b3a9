//! `[[sender]]`: how probes leave — a relay (`smtp`) or the recipient
//! domain's MX (`mx`), with DKIM signing.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::loader::{base_dir, check_name, check_tls_host, Loader, Origin};
use super::service::parse_nameserver;
use super::values::{HumanDuration, Secret, SecretRef, Tls};

#[derive(Debug, Clone)]
pub struct SenderConfig {
    pub name: String,
    pub host: String,
    pub port: u16,
    pub tls: Tls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The From header and envelope sender.
    pub from: lettre::message::Mailbox,
    /// Name sent in EHLO; defaults to the machine's host name.
    pub helo: Option<String>,
    /// Limit for one SMTP conversation.
    pub timeout: Duration,
    /// `kind = "mx"`: deliver straight to the recipient domain's MX hosts.
    pub mx: Option<MxOptions>,
    /// The inbox this sender's bounces come back to (its `from` mailbox).
    /// When set, a bounce about one of its probes counts only there; found
    /// anywhere else it is evidence.
    pub bounce_inbox: Option<String>,
    /// Sign probes with DKIM (`dkim_domain`, `dkim_selector`, `dkim_key`).
    pub dkim: Option<crate::dkim::DkimSigner>,
    /// Extra trust anchors for the relay's TLS (`kind = "smtp"`).
    pub ca_file: Option<super::ca::CaFile>,
    /// `kind = "smtp"`: the most SMTP connections open to the relay at once
    /// (so the most messages handed over at once).
    pub connections: usize,
    /// `kind = "smtp"`: hand several messages over one SMTP session, one
    /// transaction each, instead of one connection per message.
    pub reuse: bool,
}

/// The relay connections a sender opens at most, when `connections` is not set.
pub const DEFAULT_CONNECTIONS: usize = 20;
/// The most `connections` may be set to.
const MAX_CONNECTIONS: usize = 500;

/// How a `kind = "mx"` sender delivers.
#[derive(Debug, Clone)]
pub struct MxOptions {
    /// Port of the MX hosts (25; other values for tests and lab setups).
    pub port: u16,
    /// Fail the probe unless the receiving side does STARTTLS with TLS 1.2 or later.
    pub require_tls: bool,
    /// Ask this DNS server instead of the system's resolver.
    pub nameserver: Option<std::net::SocketAddr>,
}

#[derive(Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum SenderKind {
    Smtp,
    Mx,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSender {
    pub(super) name: String,
    pub(super) kind: SenderKind,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) tls: Option<Tls>,
    pub(super) username: Option<String>,
    pub(super) password: Option<SecretRef>,
    pub(super) from: String,
    pub(super) helo: Option<String>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) require_tls: Option<bool>,
    pub(super) nameserver: Option<String>,
    pub(super) bounce_inbox: Option<String>,
    pub(super) dkim_selector: Option<String>,
    pub(super) dkim_domain: Option<String>,
    pub(super) dkim_key: Option<SecretRef>,
    /// `kind = "smtp"`: a PEM file of extra CA certificates (an internal CA) for the relay's TLS.
    pub(super) ca_file: Option<String>,
    /// `kind = "smtp"`: the most connections open to the relay at once (default 20, at most 500).
    pub(super) connections: Option<usize>,
    /// `kind = "smtp"`: send several probes over one SMTP session, one
    /// transaction each (default true); false opens a connection per message.
    pub(super) reuse: Option<bool>,
}

pub(super) fn build_senders(
    loader: &mut Loader,
    raw: Vec<(Origin, RawSender)>,
    inboxes: &[String],
) -> Vec<SenderConfig> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (origin, s) in raw {
        check_name(loader, &mut seen, &origin, "sender", &s.name);
        if let Some(b) = s.bounce_inbox.as_deref().filter(|b| !inboxes.iter().any(|i| i == b)) {
            loader.err(&origin, "sender", "bounce_inbox", format!("no [[inbox]] named {b:?}"));
        }
        let (host, tls, port, mx) = match s.kind {
            SenderKind::Smtp => {
                for (key, set) in [
                    ("require_tls", s.require_tls.is_some()),
                    ("nameserver", s.nameserver.is_some()),
                ] {
                    if set {
                        loader.err(&origin, "sender", key, format!("`{key}` is for kind = \"mx\""));
                    }
                }
                let host = s.host.clone().unwrap_or_else(|| {
                    loader.err(&origin, "sender", "kind", "kind = \"smtp\" needs `host`, the relay");
                    String::new()
                });
                let tls = s.tls.unwrap_or(Tls::Starttls);
                check_tls_host(loader, &origin, "sender", tls, &host);
                let port = s.port.unwrap_or(match tls {
                    Tls::Tls => 465,
                    Tls::Starttls => 587,
                    Tls::None => 25,
                });
                (host, tls, port, None)
            }
            SenderKind::Mx => {
                for (key, set) in [
                    ("host", s.host.is_some()),
                    ("tls", s.tls.is_some()),
                    ("username", s.username.is_some()),
                ] {
                    if set {
                        loader.err(
                            &origin,
                            "sender",
                            key,
                            format!("`{key}` is for kind = \"smtp\"; an MX sender finds its hosts in DNS and uses STARTTLS when offered (`require_tls` to insist)"),
                        );
                    }
                }
                for (key, set) in [("connections", s.connections.is_some()), ("reuse", s.reuse.is_some())] {
                    if set {
                        loader.err(
                            &origin,
                            "sender",
                            key,
                            format!("`{key}` is for kind = \"smtp\" (sessions with a relay); an MX sender opens one connection per message to the recipient's MX"),
                        );
                    }
                }
                let nameserver = s.nameserver.as_deref().and_then(|n| {
                    let a = parse_nameserver(n);
                    if a.is_none() {
                        loader.err(
                            &origin,
                            "sender",
                            "nameserver",
                            format!("{n:?} is not an IP address (with an optional :port)"),
                        );
                    }
                    a
                });
                let port = s.port.unwrap_or(25);
                let mx = MxOptions {
                    port,
                    require_tls: s.require_tls.unwrap_or(false),
                    nameserver,
                };
                (
                    "(MX of the recipient domain)".to_string(),
                    Tls::Starttls,
                    port,
                    Some(mx),
                )
            }
        };
        let from = match s.from.parse::<lettre::message::Mailbox>() {
            Ok(m) => Some(m),
            Err(e) => {
                loader.err(&origin, "sender", "from", format!("invalid address {:?}: {e}", s.from));
                None
            }
        };
        let password = match &s.password {
            Some(r) => loader.secret(&origin, "sender", "password", r),
            None => None,
        };
        if s.password.is_some() != s.username.is_some() {
            loader.err(
                &origin,
                "sender",
                "username",
                "username and password must be given together",
            );
        }
        let timeout = s
            .timeout
            .map(HumanDuration::as_duration)
            .unwrap_or(Duration::from_secs(60));
        let connections = match s.connections {
            None => DEFAULT_CONNECTIONS,
            Some(n) if (1..=MAX_CONNECTIONS).contains(&n) => n,
            Some(n) => {
                loader.err(
                    &origin,
                    "sender",
                    "connections",
                    format!("{n} is not between 1 and {MAX_CONNECTIONS}"),
                );
                DEFAULT_CONNECTIONS
            }
        };
        let dkim = build_dkim(loader, &origin, &s, from.as_ref());
        let ca_file = s.ca_file.as_deref().and_then(|p| {
            if s.kind != SenderKind::Smtp {
                loader.err(
                    &origin,
                    "sender",
                    "ca_file",
                    "`ca_file` is for kind = \"smtp\" (a relay you run); an mx sender meets public MX hosts",
                );
                return None;
            }
            let base = base_dir(&loader.files[origin.file].path);
            super::ca::CaFile::read(&base, p)
                .map_err(|m| loader.err(&origin, "sender", "ca_file", m))
                .ok()
        });
        if let Some(from) = from {
            out.push(SenderConfig {
                name: s.name,
                host,
                port,
                tls,
                username: s.username,
                password,
                from,
                helo: s.helo,
                timeout,
                mx,
                bounce_inbox: s.bounce_inbox,
                dkim,
                ca_file,
                connections,
                reuse: s.reuse.unwrap_or(true),
            });
        }
    }
    out
}

/// `dkim_domain`, `dkim_selector` and `dkim_key` together or not at all; the
/// key must load, and the From domain must be the DKIM domain or below it
/// (else DMARC cannot align).
pub(super) fn build_dkim(
    loader: &mut Loader,
    origin: &Origin,
    s: &RawSender,
    from: Option<&lettre::message::Mailbox>,
) -> Option<crate::dkim::DkimSigner> {
    let (domain, selector, key) = match (&s.dkim_domain, &s.dkim_selector, &s.dkim_key) {
        (None, None, None) => return None,
        (Some(d), Some(sel), Some(k)) => (d, sel, k),
        _ => {
            let missing: Vec<&str> = [
                ("dkim_domain", s.dkim_domain.is_none()),
                ("dkim_selector", s.dkim_selector.is_none()),
                ("dkim_key", s.dkim_key.is_none()),
            ]
            .into_iter()
            .filter(|(_, m)| *m)
            .map(|(k, _)| k)
            .collect();
            loader.err(
                origin,
                "sender",
                missing.first().copied().unwrap_or("dkim_key"),
                format!(
                    "DKIM signing needs dkim_domain, dkim_selector and dkim_key together; missing {}",
                    missing.join(", ")
                ),
            );
            return None;
        }
    };
    let label_ok = |v: &str| {
        !v.is_empty()
            && v.split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    };
    if !label_ok(selector) {
        loader.err(
            origin,
            "sender",
            "dkim_selector",
            format!("{selector:?} is not a DNS label (letters, digits, -, _)"),
        );
        return None;
    }
    if !label_ok(domain) || !domain.contains('.') {
        loader.err(
            origin,
            "sender",
            "dkim_domain",
            format!("{domain:?} is not a domain name"),
        );
        return None;
    }
    if let Some(from) = from {
        let fd = from.email.domain().to_ascii_lowercase();
        let d = domain.to_ascii_lowercase();
        if fd != d && !fd.ends_with(&format!(".{d}")) {
            loader.err(
                origin,
                "sender",
                "dkim_domain",
                format!("{domain:?} is not the From domain {fd:?} nor a parent of it: DMARC would not align"),
            );
        }
    }
    let secret = loader.secret(origin, "sender", "dkim_key", key)?;
    match crate::dkim::DkimSigner::new(domain, selector, secret.expose()) {
        Ok(signer) => Some(signer),
        Err(e) => {
            loader.err(origin, "sender", "dkim_key", e);
            None
        }
    }
}
