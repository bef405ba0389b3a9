//! `[ledger]`: where the ledger lives (SQLite file or PostgreSQL server) and,
//! on PostgreSQL, whether several instances share it with one active at a
//! time (`ha`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{HumanDuration, Secret, SecretRef};

#[derive(Deserialize, schemars::JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLedger {
    /// "sqlite://PATH" (default "sqlite://postcanary.db") or
    /// "postgres://USER@HOST[:PORT]/DATABASE" (no password in the URL).
    pub url: Option<String>,
    /// PostgreSQL only: the password, as "env:NAME" or "file:PATH".
    pub password: Option<SecretRef>,
    /// PostgreSQL only: "require" (default; TLS, the server's certificate
    /// verified) or "none" (plain, accepted only for a loopback host).
    pub tls: Option<LedgerTls>,
    /// PostgreSQL only: PEM file of the CA(s) that sign the server's
    /// certificate; without it the Mozilla roots (webpki-roots) are used.
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL only: the most connections kept open (default 16).
    pub pool_size: Option<usize>,
    /// PostgreSQL only: run as one of several instances on this database;
    /// one holds the lease and works, the others stand by.
    pub ha: Option<bool>,
    /// With `ha`: how long the active instance's lease lasts without a
    /// renewal (default "15s"); a standby takes over within it.
    pub lease: Option<HumanDuration>,
    /// With `ha`: this instance's name in the lease and in /healthz
    /// (default: the host name and a random suffix).
    pub instance: Option<String>,
    /// Prune probes and their evidence older than this (whole days, at least
    /// "1d"), daily; unset: keep every probe. Open incidents keep theirs.
    pub keep_probes: Option<HumanDuration>,
    /// Prune daily per-channel rollups older than this (default "400d").
    pub keep_rollups: Option<HumanDuration>,
}

/// Transport security of the connection to PostgreSQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LedgerTls {
    Require,
    None,
}

/// A PostgreSQL ledger. `Debug` shows no password.
#[derive(Clone, Debug)]
pub struct PostgresLedger {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub password: Option<Secret>,
    pub tls: LedgerTls,
    pub ca_file: Option<PathBuf>,
    pub pool_size: usize,
}

impl PartialEq for PostgresLedger {
    fn eq(&self, o: &Self) -> bool {
        (
            &self.host,
            self.port,
            &self.user,
            &self.dbname,
            self.tls,
            &self.ca_file,
            self.pool_size,
        ) == (&o.host, o.port, &o.user, &o.dbname, o.tls, &o.ca_file, o.pool_size)
            && self.password.as_ref().map(Secret::expose) == o.password.as_ref().map(Secret::expose)
    }
}
impl Eq for PostgresLedger {}

impl PostgresLedger {
    /// The URL without any secret, for logs and errors.
    pub fn display(&self) -> String {
        format!("postgres://{}@{}:{}/{}", self.user, self.host, self.port, self.dbname)
    }
}

/// `[ledger] ha`: several instances, one active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HaConfig {
    pub lease: Duration,
    pub instance: Option<String>,
}

pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
const DEFAULT_POOL: usize = 16;

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host.starts_with('/')
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Reads a `postgres://` URL (also `postgresql://`). The password is never
/// taken from the URL: it would end up in logs and process lists.
pub fn parse_postgres(
    url: &str,
    password: Option<Secret>,
    tls: Option<LedgerTls>,
    ca_file: Option<PathBuf>,
    pool_size: Option<usize>,
) -> Result<PostgresLedger, (&'static str, String)> {
    let u = url::Url::parse(url).map_err(|e| ("url", format!("not a postgres:// URL: {e}")))?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        return Err(("url", "expected \"postgres://USER@HOST[:PORT]/DATABASE\"".into()));
    }
    if u.password().is_some() {
        return Err((
            "url",
            "the URL holds a password; put it in `password = \"env:NAME\"` (or \"file:PATH\") instead".into(),
        ));
    }
    let host = match u.host_str() {
        Some(h) if !h.is_empty() => h.to_string(),
        _ => return Err(("url", "the URL names no host".into())),
    };
    let user = percent_encoding::percent_decode_str(u.username())
        .decode_utf8_lossy()
        .to_string();
    if user.is_empty() {
        return Err(("url", "the URL names no user (postgres://USER@HOST/DATABASE)".into()));
    }
    let dbname = u.path().trim_start_matches('/').to_string();
    if dbname.is_empty() || dbname.contains('/') {
        return Err((
            "url",
            "the URL names no database (postgres://USER@HOST/DATABASE)".into(),
        ));
    }
    if let Some((k, _)) = u.query_pairs().next() {
        return Err((
            "url",
            format!("unsupported URL parameter {k:?}: use the [ledger] keys tls, ca_file, pool_size"),
        ));
    }
    let tls = tls.unwrap_or(LedgerTls::Require);
    if tls == LedgerTls::None && !is_loopback(&host) {
        return Err((
            "tls",
            format!("tls = \"none\" is accepted only for a loopback host, not {host}"),
        ));
    }
    if tls == LedgerTls::None && ca_file.is_some() {
        return Err(("ca_file", "ca_file is set but tls = \"none\"".into()));
    }
    let pool_size = pool_size.unwrap_or(DEFAULT_POOL);
    if pool_size == 0 {
        return Err(("pool_size", "must be at least 1".into()));
    }
    Ok(PostgresLedger {
        host,
        port: u.port().unwrap_or(5432),
        user,
        dbname,
        password,
        tls,
        ca_file,
        pool_size,
    })
}

/// A finding of [`build`]: the `[ledger]` key and the message.
pub(super) type Finding = (&'static str, String);

/// Builds the ledger config; `resolve` reads secrets (or stands in for them offline).
pub(super) fn build(
    raw: RawLedger,
    base: &Path,
    resolve: &dyn Fn(&SecretRef) -> Result<Secret, String>,
) -> (LedgerConfig, Vec<Finding>) {
    let mut findings = Vec::new();
    let (keep_probes, keep_rollups) = (raw.keep_probes.map(|d| d.0), raw.keep_rollups.map(|d| d.0));
    for (key, value) in [("keep_probes", keep_probes), ("keep_rollups", keep_rollups)] {
        if let Some(d) = value.filter(|d| d.as_secs() < 86_400 || d.as_secs() % 86_400 != 0) {
            findings.push((
                key,
                format!(
                    "{} is not whole days: give at least \"1d\", such as \"90d\"",
                    super::values::format_duration(d)
                ),
            ));
        }
    }
    let keep_rollups = keep_rollups.unwrap_or(DEFAULT_KEEP_ROLLUPS);
    let url = raw.url.unwrap_or_else(|| "sqlite://postcanary.db".to_string());
    let sqlite = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"));
    let fallback = LedgerBackend::Sqlite(base.join("postcanary.db"));
    let backend = if let Some(p) = sqlite {
        if p.is_empty() {
            findings.push((
                "url",
                format!("unsupported ledger url {url:?}: expected \"sqlite://PATH\""),
            ));
            fallback
        } else {
            for (key, set) in [
                ("password", raw.password.is_some()),
                ("tls", raw.tls.is_some()),
                ("ca_file", raw.ca_file.is_some()),
                ("pool_size", raw.pool_size.is_some()),
            ] {
                if set {
                    findings.push((key, format!("`{key}` is for a postgres:// ledger, not SQLite")));
                }
            }
            if raw.ha == Some(true) {
                findings.push((
                    "ha",
                    "several instances need a shared ledger: use a postgres:// URL".to_string(),
                ));
            }
            let p = PathBuf::from(p);
            LedgerBackend::Sqlite(if p.is_absolute() { p } else { base.join(p) })
        }
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let password = match raw.password.as_ref().map(resolve) {
            Some(Ok(s)) => Some(s),
            Some(Err(m)) => {
                findings.push(("password", m));
                None
            }
            None => None,
        };
        let ca_file = raw.ca_file.map(|p| if p.is_absolute() { p } else { base.join(p) });
        match parse_postgres(&url, password, raw.tls, ca_file, raw.pool_size) {
            Ok(pg) => LedgerBackend::Postgres(pg),
            Err(f) => {
                findings.push(f);
                fallback
            }
        }
    } else {
        findings.push((
            "url",
            format!("unsupported ledger url {url:?}: expected \"sqlite://PATH\" or \"postgres://USER@HOST/DATABASE\""),
        ));
        fallback
    };
    let ha = match raw.ha {
        Some(true) => {
            let lease = raw.lease.map(HumanDuration::as_duration).unwrap_or(DEFAULT_LEASE);
            if lease < Duration::from_secs(3) {
                findings.push(("lease", "must be at least 3s".to_string()));
            }
            if let Some(name) = &raw.instance {
                if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                    findings.push(("instance", "must be 1 to 100 printable characters".to_string()));
                }
            }
            Some(HaConfig {
                lease,
                instance: raw.instance,
            })
        }
        _ => {
            for (key, set) in [("lease", raw.lease.is_some()), ("instance", raw.instance.is_some())] {
                if set {
                    findings.push((key, format!("`{key}` needs `ha = true`")));
                }
            }
            None
        }
    };
    (
        LedgerConfig {
            backend,
            ha,
            keep_probes,
            keep_rollups,
        },
        findings,
    )
}

#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// Where the ledger lives.
    pub backend: LedgerBackend,
    /// Several instances on one (PostgreSQL) ledger, one active (`ha = true`).
    pub ha: Option<HaConfig>,
    /// Probes (with their evidence) older than this are pruned daily; `None`: kept for ever.
    pub keep_probes: Option<Duration>,
    /// Daily per-channel rollups older than this are pruned.
    pub keep_rollups: Duration,
}

/// How long daily rollups are kept by default (a year and a month).
pub const DEFAULT_KEEP_ROLLUPS: Duration = Duration::from_secs(400 * 86_400);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerBackend {
    Sqlite(PathBuf),
    Postgres(PostgresLedger),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls() {
        let pg = parse_postgres("postgres://canary@db.example:6432/ledger", None, None, None, None).unwrap();
        assert_eq!(
            (pg.host.as_str(), pg.port, pg.user.as_str(), pg.dbname.as_str(), pg.tls),
            ("db.example", 6432, "canary", "ledger", LedgerTls::Require)
        );
        assert_eq!(pg.display(), "postgres://canary@db.example:6432/ledger");
        let e = parse_postgres("postgres://canary:hunter2@db/ledger", None, None, None, None).unwrap_err();
        assert_eq!(e.0, "url");
        assert!(!e.1.contains("hunter2"), "{}", e.1);
        assert!(parse_postgres("postgres://db/ledger", None, None, None, None).is_err());
        assert!(parse_postgres("postgres://u@db/", None, None, None, None).is_err());
        assert!(parse_postgres("postgres://u@db/x?sslmode=disable", None, None, None, None).is_err());
        assert_eq!(
            parse_postgres("postgres://u@db.example/x", None, Some(LedgerTls::None), None, None)
                .unwrap_err()
                .0,
            "tls"
        );
        assert!(parse_postgres("postgres://u@127.0.0.1:5/x", None, Some(LedgerTls::None), None, None).is_ok());
        assert!(parse_postgres("postgres://u@localhost/x", None, None, None, Some(0)).is_err());
    }
}
