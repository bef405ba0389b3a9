//! The daemon's own sections: `[ledger]`, `[token]`, `[server]`,
//! `[heartbeat]`, `[telemetry]`, `[dns]`, `[discover]`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ledger::{LedgerConfig, RawLedger};
use super::loader::{base_dir, Loader};
use super::ops::{build_users, parse_timezone, system_timezone, RawServerUser, ServerUser};
use super::values::{HumanDuration, Secret, SecretRef};

pub(super) const DEFAULT_TOKEN_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// `[discover]`: crawl the organisation's sites every `interval` for
/// published channels nobody probes.
#[derive(Debug, Clone)]
pub struct DiscoverConfig {
    pub sites: Vec<url::Url>,
    pub interval: Duration,
    /// Further hosts whose pages may be crawled.
    pub allow_hosts: Vec<String>,
    /// A `kind = "mx"` sender to ask each look-alike's MX at RCPT time.
    pub rcpt_check: Option<String>,
    /// Most pages requested per round.
    pub max_pages: usize,
}

/// `[dns]`: watch the routing records of every domain probed.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub interval: Duration,
    /// Ask this server instead of the system's resolver.
    pub nameserver: Option<std::net::SocketAddr>,
}

/// OpenTelemetry export.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// OTLP/HTTP base URL, e.g. `http://127.0.0.1:4318` (`/v1/traces` and `/v1/metrics` are appended).
    pub otlp_endpoint: String,
    pub service_name: String,
    pub export_interval: Duration,
}

/// Labels of the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Da,
    En,
}

/// The HTTP server: status page, JSON API, `/metrics`, `/healthz`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
    pub language: Language,
    pub title: String,
    /// Accepted `Authorization: Bearer` tokens.
    pub bearer_tokens: Vec<Secret>,
    /// Accepted HTTP basic credentials.
    pub basic: Option<(String, Secret)>,
    /// `/healthz` without credentials (default true).
    pub public_healthz: bool,
    /// `/metrics` without credentials (default false).
    pub public_metrics: bool,
    /// Named credentials with a role (`[[server.user]]`); `bearer_tokens` and
    /// `basic_user` are viewers.
    pub users: Vec<ServerUser>,
    /// The zone every time on the page is shown in (`timezone`, default the system's).
    pub timezone: chrono_tz::Tz,
}

impl ServerConfig {
    pub fn has_auth(&self) -> bool {
        !self.bearer_tokens.is_empty() || self.basic.is_some() || !self.users.is_empty()
    }
}

/// Dead-man's switch: a request to `url` every `interval` while postcanary is healthy.
#[derive(Debug, Clone)]
pub struct HeartbeatConfig {
    pub url: Secret,
    pub interval: Duration,
    pub post: bool,
}

#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// HMAC key for token tags; when `None`, one is generated once and kept in the ledger.
    pub key: Option<Secret>,
    /// Tokens older than this never count as a delivery.
    pub max_age: Duration,
}

/// `[discover]`: crawl the organisation's sites on a schedule for published channels nobody probes.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDiscover {
    /// Start URLs of the sites to crawl.
    pub(super) sites: Vec<String>,
    /// How often (default 1d).
    pub(super) interval: Option<HumanDuration>,
    /// Further hosts whose pages may be crawled.
    #[serde(default)]
    pub(super) allow_hosts: Vec<String>,
    /// A `kind = "mx"` sender for asking each look-alike's MX at RCPT time.
    pub(super) rcpt_check: Option<String>,
    /// Most pages requested per round (default 500).
    pub(super) max_pages: Option<usize>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    pub(super) otlp_endpoint: String,
    pub(super) service_name: Option<String>,
    pub(super) export_interval: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub(super) listen: String,
    pub(super) language: Option<Language>,
    pub(super) title: Option<String>,
    #[serde(default)]
    pub(super) bearer_tokens: Vec<SecretRef>,
    pub(super) basic_user: Option<String>,
    pub(super) basic_password: Option<SecretRef>,
    pub(super) public_healthz: Option<bool>,
    pub(super) public_metrics: Option<bool>,
    /// IANA time zone of the times on the page (default: the system's).
    pub(super) timezone: Option<String>,
    /// Named credentials with a role: `[[server.user]]`.
    #[serde(default)]
    pub(super) user: Vec<RawServerUser>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHeartbeat {
    pub(super) url: SecretRef,
    pub(super) interval: Option<HumanDuration>,
    pub(super) method: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDns {
    pub(super) interval: Option<HumanDuration>,
    pub(super) nameserver: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) key: Option<SecretRef>,
    pub(super) max_age: Option<HumanDuration>,
}

/// `IP` or `IP:port` (port 53 by default).
pub(super) fn parse_nameserver(n: &str) -> Option<std::net::SocketAddr> {
    n.parse::<std::net::SocketAddr>().ok().or_else(|| {
        n.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, 53))
    })
}

pub(super) fn build_ledger(loader: &mut Loader, raw: Option<RawLedger>, base: &Path) -> LedgerConfig {
    let secrets_base = base_dir(&loader.files[0].path);
    let read = loader.ledger_secrets;
    let (config, findings) = super::ledger::build(raw.unwrap_or_default(), base, &|r| {
        if read {
            r.resolve(&secrets_base)
        } else {
            loader.resolve(r, &secrets_base)
        }
    });
    for (key, msg) in findings {
        let line = loader.files[0].table_key_line("ledger", key);
        let e = loader.files[0].error(line, Some(&format!("ledger.{key}")), msg);
        loader.errors.push(e);
    }
    config
}

pub(super) fn build_token(loader: &mut Loader, raw: Option<RawToken>) -> TokenConfig {
    let raw = raw.unwrap_or(RawToken {
        key: None,
        max_age: None,
    });
    let key = raw
        .key
        .and_then(|r| match loader.resolve(&r, &base_dir(&loader.files[0].path)) {
            Ok(s) => Some(s),
            Err(m) => {
                let line = loader.files[0].table_key_line("token", "key");
                let e = loader.files[0].error(line, Some("token.key"), m);
                loader.errors.push(e);
                None
            }
        });
    let max_age = raw
        .max_age
        .map(HumanDuration::as_duration)
        .unwrap_or(DEFAULT_TOKEN_MAX_AGE);
    TokenConfig { key, max_age }
}

pub(super) fn build_server(loader: &mut Loader, raw: Option<RawServer>) -> Option<ServerConfig> {
    let raw = raw?;
    let base = base_dir(&loader.files[0].path);
    let err = |loader: &mut Loader, key: &str, msg: String| {
        let line = loader.files[0].table_key_line("server", key);
        let e = loader.files[0].error(line, Some(&format!("server.{key}")), msg);
        loader.errors.push(e);
    };
    let listen: Option<std::net::SocketAddr> = match raw.listen.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            err(
                loader,
                "listen",
                format!("{:?} is not an address:port such as \"127.0.0.1:8080\"", raw.listen),
            );
            None
        }
    };
    let mut tokens = Vec::new();
    for r in &raw.bearer_tokens {
        match loader.resolve(r, &base) {
            Ok(s) => tokens.push(s),
            Err(m) => err(loader, "bearer_tokens", m),
        }
    }
    let basic = match (&raw.basic_user, &raw.basic_password) {
        (Some(u), Some(p)) => match loader.resolve(p, &base) {
            Ok(s) => Some((u.clone(), s)),
            Err(m) => {
                err(loader, "basic_password", m);
                None
            }
        },
        (None, None) => None,
        _ => {
            err(
                loader,
                "basic_user",
                "basic_user and basic_password must be given together".into(),
            );
            None
        }
    };
    let users = build_users(loader, raw.user, &base);
    let timezone = match raw.timezone.as_deref().map(parse_timezone) {
        None => system_timezone(),
        Some(Ok(tz)) => tz,
        Some(Err(m)) => {
            err(loader, "timezone", m);
            chrono_tz::UTC
        }
    };
    let cfg = ServerConfig {
        listen: listen?,
        language: raw.language.unwrap_or(Language::En),
        title: raw.title.unwrap_or_else(|| "postcanary".into()),
        bearer_tokens: tokens,
        basic,
        public_healthz: raw.public_healthz.unwrap_or(true),
        public_metrics: raw.public_metrics.unwrap_or(false),
        users,
        timezone,
    };
    if !cfg.listen.ip().is_loopback() && !cfg.has_auth() {
        err(
            loader,
            "listen",
            format!(
                "the status page on {} would be open to anyone: set bearer_tokens or basic_user/basic_password",
                cfg.listen
            ),
        );
    }
    Some(cfg)
}

pub(super) fn build_heartbeat(loader: &mut Loader, raw: Option<RawHeartbeat>) -> Option<HeartbeatConfig> {
    let raw = raw?;
    let base = base_dir(&loader.files[0].path);
    let url = match loader.resolve(&raw.url, &base) {
        Ok(u) => u,
        Err(m) => {
            let line = loader.files[0].table_key_line("heartbeat", "url");
            let e = loader.files[0].error(line, Some("heartbeat.url"), m);
            loader.errors.push(e);
            return None;
        }
    };
    let post = match raw.method.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("get") => false,
        Some("post") => true,
        Some(other) => {
            let line = loader.files[0].table_key_line("heartbeat", "method");
            let e = loader.files[0].error(
                line,
                Some("heartbeat.method"),
                format!("method {other:?}: use \"get\" or \"post\""),
            );
            loader.errors.push(e);
            false
        }
    };
    let interval = raw
        .interval
        .map(HumanDuration::as_duration)
        .unwrap_or(Duration::from_secs(60));
    Some(HeartbeatConfig { url, interval, post })
}
