//! `postcanary inspect`: what postcanary reads in a raw message — tokens and
//! whether each verifies, bounce facts, auto-reply, the hops with their TLS,
//! and the gateway's authentication results. For "why did this not count?".

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::{Config, LedgerBackend};
use crate::mailpath::{self, MailPath};
use crate::token::TokenKey;

/// Bytes read of one message; more is cut (the parsers cap lower still).
const MAX_MESSAGE: u64 = 64 << 20;

/// Where the token key came from, or why there is none.
pub enum KeySource {
    Known {
        key: TokenKey,
        max_age: Duration,
        from: String,
    },
    Unknown(String),
}

/// The key as `check`/`run` would use it: `[token] key` of the config, else
/// the key kept in the ledger (read only; never generated here).
pub fn key_source(config: Option<&Config>) -> KeySource {
    let Some(config) = config else {
        return KeySource::Unknown("unknown key: no config (-c FILE) to find the token key in".into());
    };
    let max_age = config.token.max_age;
    if let Some(secret) = &config.token.key {
        return KeySource::Known {
            key: TokenKey::new(secret.expose().as_bytes().to_vec()),
            max_age,
            from: "[token] key".into(),
        };
    }
    let path = match &config.ledger.backend {
        LedgerBackend::Sqlite(path) => path,
        LedgerBackend::Postgres(pg) => {
            return KeySource::Unknown(format!(
                "unknown key: inspect reads kept keys from SQLite ledgers only, not {}; configure [token] key",
                pg.display()
            ))
        }
    };
    match ledger_key(path) {
        Ok(Some(key)) => KeySource::Known {
            key,
            max_age,
            from: format!("the ledger {}", path.display()),
        },
        Ok(None) => KeySource::Unknown(format!(
            "unknown key: no [token] key and none kept in the ledger {}",
            path.display()
        )),
        Err(e) => KeySource::Unknown(format!("unknown key: cannot read the ledger {}: {e}", path.display())),
    }
}

/// Reads `meta.token_key` from a SQLite ledger opened read-only.
fn ledger_key(path: &Path) -> Result<Option<TokenKey>, String> {
    use rusqlite::{OpenFlags, OptionalExtension};
    if !path.exists() {
        return Ok(None);
    }
    let conn =
        rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| e.to_string())?;
    let hex: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = 'token_key'", [], |r| r.get(0))
        .optional()
        .map_err(|e| e.to_string())?;
    match hex {
        None => Ok(None),
        Some(h) => TokenKey::from_hex(&h)
            .map(Some)
            .ok_or_else(|| "the kept token key is not hex".to_string()),
    }
}

#[derive(Serialize)]
pub struct TokenReport {
    pub token: String,
    /// `valid`, `bad tag`, `expired`, `malformed` or `unknown key`.
    pub status: String,
    /// Creation time of a token whose tag verifies (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued: Option<String>,
}

#[derive(Serialize)]
pub struct BounceReport {
    pub kind: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reporting_mta: Option<String>,
    pub recipients: Vec<RecipientReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_message_id: Option<String>,
    pub tokens: Vec<String>,
}

#[derive(Serialize)]
pub struct RecipientReport {
    pub address: String,
    pub action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_mta: Option<String>,
}

/// What postcanary reads in one message.
#[derive(Serialize)]
pub struct Report {
    pub file: String,
    pub bytes: usize,
    /// Where the token key came from, or why none is known.
    pub key: String,
    pub tokens: Vec<TokenReport>,
    /// A failure, delay or delivery report (not an auto-reply).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bounce: Option<BounceReport>,
    pub auto_reply: bool,
    pub path: MailPath,
    pub summary: mailpath::PathSummary,
}

/// Reads one message and says what postcanary sees in it.
pub fn inspect(file: &str, raw: &[u8], key: &KeySource, now: SystemTime) -> Report {
    let tokens = crate::token::tokens_in_message(raw)
        .into_iter()
        .map(|t| token_report(t, key, now))
        .collect();
    let bounce = crate::bounce::parse(raw);
    let auto_reply = bounce
        .as_ref()
        .is_some_and(|b| b.kind == crate::bounce::BounceKind::AutoReply);
    let bounce = bounce.filter(|_| !auto_reply).map(|b| BounceReport {
        kind: b.kind.as_str().to_string(),
        reason: b.reason,
        reporting_mta: b.reporting_mta,
        recipients: b
            .recipients
            .into_iter()
            .map(|r| RecipientReport {
                address: r.address,
                action: r.action,
                status: r.status,
                diagnostic: r.diagnostic,
                remote_mta: r.remote_mta,
            })
            .collect(),
        original_message_id: b.original_message_id,
        tokens: b.tokens.iter().map(|t| crate::token::public_form(t)).collect(),
    });
    let path = mailpath::parse(raw);
    let summary = path.summary();
    Report {
        file: file.to_string(),
        bytes: raw.len(),
        key: match key {
            KeySource::Known { from, .. } => from.clone(),
            KeySource::Unknown(why) => why.clone(),
        },
        tokens,
        bounce,
        auto_reply,
        path,
        summary,
    }
}

fn token_report(token: String, key: &KeySource, now: SystemTime) -> TokenReport {
    let (status, issued) = match key {
        KeySource::Unknown(_) => ("unknown key".to_string(), None),
        KeySource::Known { key, max_age, .. } => match key.verify(&token, now, *max_age) {
            Ok(t) => {
                let issued = ulid::Ulid::from_string(&t.id())
                    .ok()
                    .and_then(|u| i64::try_from(u.timestamp_ms()).ok())
                    .and_then(chrono::DateTime::<chrono::Utc>::from_timestamp_millis)
                    .map(|d| d.to_rfc3339());
                ("valid".to_string(), issued)
            }
            Err(crate::token::TokenError::BadTag) => ("bad tag (forged, altered or another prober's)".into(), None),
            Err(crate::token::TokenError::Expired) => ("expired (older than [token] max_age)".into(), None),
            Err(crate::token::TokenError::Malformed) => ("malformed".into(), None),
        },
    };
    // The tag is a probe's proof: shown nowhere, not even here.
    TokenReport {
        token: crate::token::public_form(&token),
        status,
        issued,
    }
}

/// Reads `-` (stdin) or a file, up to [`MAX_MESSAGE`] bytes.
pub fn read_input(file: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    if file == Path::new("-") {
        std::io::stdin().lock().take(MAX_MESSAGE).read_to_end(&mut buf)?;
    } else {
        std::fs::File::open(file)?.take(MAX_MESSAGE).read_to_end(&mut buf)?;
    }
    Ok(buf)
}

/// Prints one report as text.
pub fn print_text(r: &Report) {
    println!("{} ({} bytes)", r.file, r.bytes);
    if r.tokens.is_empty() {
        println!("  tokens: none");
    }
    for t in &r.tokens {
        match &t.issued {
            Some(at) => println!("  token {}: {} (issued {at})", t.token, t.status),
            None => println!("  token {}: {}", t.token, t.status),
        }
    }
    println!("  key: {}", r.key);
    match &r.bounce {
        Some(b) => {
            println!("  bounce: {} — {}", b.kind, b.reason);
            if let Some(m) = &b.reporting_mta {
                println!("    reporting MTA: {m}");
            }
            for rc in &b.recipients {
                println!(
                    "    {} {} {} {}",
                    rc.address,
                    rc.action,
                    rc.status.as_deref().unwrap_or("-"),
                    rc.diagnostic.as_deref().unwrap_or("")
                );
            }
            if let Some(id) = &b.original_message_id {
                println!("    original: {id}");
            }
        }
        None => println!("  bounce: no"),
    }
    println!("  auto-reply: {}", if r.auto_reply { "yes" } else { "no" });
    if r.path.hops.is_empty() {
        println!("  hops: none");
    } else {
        println!(
            "  hops (oldest first{}):",
            if r.path.hops_truncated { "; older ones cut" } else { "" }
        );
        for (i, h) in r.path.hops.iter().enumerate() {
            let at =
                h.at.and_then(|s| chrono::DateTime::<chrono::Utc>::from_timestamp(s, 0))
                    .map(|d| d.format("%Y-%m-%d %H:%M:%SZ").to_string())
                    .unwrap_or_else(|| "-".into());
            let local = if h.is_local() { " (local)" } else { "" };
            println!("    {i}. {at}  {}{local}", mailpath::describe_hop(h));
        }
    }
    match &r.summary.min_tls {
        Some(l) => println!("  weakest hop in transit: {l}"),
        None => println!("  weakest hop in transit: -"),
    }
    match r.path.auth.first() {
        None => println!("  authentication results: none"),
        Some(_) => {
            println!(
                "  authentication results ({}):",
                r.path.gateway().unwrap_or("no authserv-id")
            );
            for m in ["spf", "dkim", "dmarc", "arc"] {
                match r.path.auth_result(m) {
                    Some(res) => {
                        let props: Vec<String> = res.props.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        println!("    {m}={} {}", res.result, props.join(" "));
                    }
                    None => println!("    {m}: -"),
                }
            }
        }
    }
    if let Some(cv) = r.path.arc_cv() {
        println!("  ARC: {} set(s), newest cv={cv}", r.path.arc.len());
    }
}

/// `postcanary inspect`: 0 when every input was read, 2 when one could not be.
pub fn run(config: Option<&Config>, files: &[PathBuf], json: bool) -> u8 {
    let key = key_source(config);
    let now = SystemTime::now();
    let mut code = 0u8;
    for (i, f) in files.iter().enumerate() {
        let name = f.display().to_string();
        let raw = match read_input(f) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{name}: cannot read: {e}");
                code = 2;
                continue;
            }
        };
        let report = inspect(&name, &raw, &key, now);
        if json {
            match serde_json::to_string(&report) {
                Ok(s) => println!("{s}"),
                Err(e) => {
                    eprintln!("{name}: cannot encode: {e}");
                    code = 2;
                }
            }
        } else {
            if i > 0 {
                println!();
            }
            print_text(&report);
        }
    }
    code
}
