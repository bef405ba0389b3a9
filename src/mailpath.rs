//! The path a delivered message travelled, read from its own headers.
//!
//! Every relay prepends a `Received` field (RFC 5321 §4.4) naming the hop —
//! from which host, by which host, with which protocol — and, as Postfix,
//! Exim, Sendmail, Exchange Online and Gmail write it, the TLS version and
//! cipher of that hop. The receiving gateway adds `Authentication-Results`
//! (RFC 8601) with its SPF, DKIM, DMARC and ARC verdicts, and an ARC chain
//! (RFC 8617) carries the verdicts of earlier gateways. [`parse`] turns the
//! header block of one raw message into a [`MailPath`]: hops oldest first
//! with per-hop delays, the authentication results, the ARC chain status.
//!
//! Nothing here verifies a signature or trusts a header: it reports what the
//! headers say. Only hops written by systems you trust (those after your own
//! submission) are evidence; [`MailPath::min_tls`] takes the hops to skip.
//!
//! The input is hostile. Bounds, all applied before any other work:
//! - at most [`MAX_HEADER_BYTES`] of the message are read (the header block
//!   ends at the first empty line or there);
//! - at most [`MAX_FIELDS`] header fields are read, each value unfolded and
//!   cut to [`MAX_FIELD_BYTES`];
//! - at most [`MAX_HOPS`] Received fields become hops — the newest ones, as
//!   they come first; [`MailPath::hops_truncated`] says when more were there;
//! - at most [`MAX_AUTH_HEADERS`] Authentication-Results and ARC fields, and
//!   [`MAX_RESULTS`] results in each, are kept; comment nesting is followed
//!   to [`MAX_COMMENT_DEPTH`].
//!
//! Every loop is bounded by the capped input, nothing indexes without a
//! check, and nothing panics.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

/// Bytes of a message read at all; the header block must end before this.
pub const MAX_HEADER_BYTES: usize = 256 << 10;
/// Header fields read from the header block.
pub const MAX_FIELDS: usize = 2000;
/// Bytes kept of one (unfolded) header value.
pub const MAX_FIELD_BYTES: usize = 8 << 10;
/// Received fields turned into hops (the newest ones).
pub const MAX_HOPS: usize = 64;
/// Authentication-Results, ARC-Authentication-Results and ARC-Seal fields kept (each kind).
pub const MAX_AUTH_HEADERS: usize = 16;
/// Results kept from one Authentication-Results field.
pub const MAX_RESULTS: usize = 32;
/// Nesting of comments followed; deeper parentheses are taken as text.
pub const MAX_COMMENT_DEPTH: usize = 8;
/// Characters kept of one host name, cipher, protocol or property value.
const MAX_ITEM: usize = 255;

/// A TLS protocol version as a Received field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TlsVersion {
    #[serde(rename = "SSLv3")]
    Ssl3,
    #[serde(rename = "TLSv1.0")]
    Tls1_0,
    #[serde(rename = "TLSv1.1")]
    Tls1_1,
    #[serde(rename = "TLSv1.2")]
    Tls1_2,
    #[serde(rename = "TLSv1.3")]
    Tls1_3,
}

impl TlsVersion {
    pub fn as_str(&self) -> &'static str {
        match self {
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls1_0 => "TLSv1.0",
            TlsVersion::Tls1_1 => "TLSv1.1",
            TlsVersion::Tls1_2 => "TLSv1.2",
            TlsVersion::Tls1_3 => "TLSv1.3",
        }
    }

    /// Reads `TLSv1.2`, `TLS1.2`, `TLS1_2`, `tlsv1.3`, `SSLv3`, and `1.2` (as in `require_tls = "1.2"`).
    pub fn parse(s: &str) -> Option<TlsVersion> {
        let l = s.trim().to_ascii_lowercase();
        if l == "sslv3" || l == "ssl3" {
            return Some(TlsVersion::Ssl3);
        }
        let rest = l.strip_prefix("tlsv").or_else(|| l.strip_prefix("tls")).unwrap_or(&l);
        match rest.replace('_', ".").as_str() {
            "1" | "1.0" => Some(TlsVersion::Tls1_0),
            "1.1" => Some(TlsVersion::Tls1_1),
            "1.2" => Some(TlsVersion::Tls1_2),
            "1.3" => Some(TlsVersion::Tls1_3),
            _ => None,
        }
    }
}

impl std::fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How well one hop was protected, weakest first: plaintext, TLS of a
/// version the header does not state, then by version. `Ord` follows that,
/// so the minimum over hops is the weakest hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsLevel {
    /// The header shows no TLS: an RFC 3848 protocol without TLS (`with
    /// ESMTP`, `with SMTP`, `with ESMTPA`, …) and no TLS comment.
    Plain,
    /// The header does not say: no `with` clause, or a protocol outside
    /// RFC 3848 (`with Microsoft SMTP Server` without a version) and no TLS comment.
    Unknown,
    /// TLS (e.g. `with ESMTPS`), version not stated.
    UnknownVersion,
    Tls(TlsVersion),
}

impl TlsLevel {
    /// True for TLS of `min` or later.
    pub fn at_least(&self, min: TlsVersion) -> bool {
        matches!(self, TlsLevel::Tls(v) if *v >= min)
    }
}

impl std::fmt::Display for TlsLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TlsLevel::Plain => f.write_str("no TLS"),
            TlsLevel::Unknown => f.write_str("TLS unknown"),
            TlsLevel::UnknownVersion => f.write_str("TLS (version not stated)"),
            TlsLevel::Tls(v) => write!(f, "{v}"),
        }
    }
}

/// TLS of one hop as its Received field states it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<TlsVersion>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cipher: Option<String>,
}

/// One Received field: one hop of the path.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Hop {
    /// The name the sending host gave (HELO/EHLO), or its address literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The sending host's reverse-DNS name as the receiver recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_rdns: Option<String>,
    /// The sending host's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_ip: Option<String>,
    /// The receiving host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The `with` protocol as written (`ESMTPS`, `LMTP`, `Microsoft SMTP Server`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// TLS on this hop; `None` when the header shows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// The sender authenticated (`ESMTPA`, `ESMTPSA`, RFC 3848).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authenticated: bool,
    /// When the receiving host took the message (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<i64>,
    /// Seconds since the previous hop's timestamp (negative with skewed clocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_s: Option<i64>,
}

impl Hop {
    /// How this hop was protected.
    pub fn tls_level(&self) -> TlsLevel {
        match &self.tls {
            None if self.states_plain() => TlsLevel::Plain,
            None => TlsLevel::Unknown,
            Some(Tls { version: Some(v), .. }) => TlsLevel::Tls(*v),
            Some(_) => TlsLevel::UnknownVersion,
        }
    }

    /// Whether the protocol is one of RFC 3848's keywords without TLS
    /// (`SMTP`, `ESMTP`, `ESMTPA`, `LMTP`, `LMTPA`, `UTF8SMTP`, …): the
    /// header then says the hop had no TLS (the keywords with TLS end in `S`/`SA`).
    fn states_plain(&self) -> bool {
        let first = self
            .protocol
            .as_deref()
            .and_then(|p| p.split(' ').next())
            .unwrap_or_default()
            .to_ascii_uppercase();
        matches!(
            first.as_str(),
            "SMTP" | "ESMTP" | "ESMTPA" | "LMTP" | "LMTPA" | "UTF8SMTP" | "UTF8SMTPA" | "UTF8LMTP" | "UTF8LMTPA"
        )
    }

    /// A hop inside one machine, not in transit: `with local`, `with LMTP`
    /// (RFC 2033: delivery into the mail store, not meant for transit), no
    /// sending host at all (a local pickup, or a provider's internal hop such
    /// as Gmail's `by 2002:… with SMTP`), or from a loopback address where
    /// one side is this machine by name — the sender greets as `localhost`
    /// or an address literal, the receiver calls itself `localhost`, or both
    /// name the same host (a content filter such as amavis handing back to
    /// Postfix). A loopback hop between two differently named MTAs (a relay
    /// and an MX on one machine, or behind a tunnel) is in transit: the
    /// header cannot show that a tunnel protects it.
    pub fn is_local(&self) -> bool {
        let loopback = self
            .from_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_loopback());
        let local_proto = self
            .protocol
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case("local") || p.eq_ignore_ascii_case("lmtp"));
        let this_machine = |name: Option<&str>| {
            name.is_none_or(|n| {
                let n = n.to_ascii_lowercase();
                n == "localhost" || n.starts_with("localhost.") || n.starts_with('[') || n.parse::<IpAddr>().is_ok()
            })
        };
        let same_host = match (self.from.as_deref(), self.by.as_deref()) {
            (Some(f), Some(b)) => f.eq_ignore_ascii_case(b),
            _ => false,
        };
        let loopback_local =
            loopback && (this_machine(self.from.as_deref()) || this_machine(self.by.as_deref()) || same_host);
        loopback_local || local_proto || (self.from.is_none() && self.from_ip.is_none())
    }
}

/// One result of an Authentication-Results field, e.g. `dkim=pass header.d=example.org`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthResult {
    /// Lower-case method: `spf`, `dkim`, `dmarc`, `arc`, `iprev`, `auth`, `compauth`, …
    pub method: String,
    /// Lower-case result: `pass`, `fail`, `softfail`, `neutral`, `none`, `temperror`, `permerror`, …
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `ptype.property` → value (`header.d`, `smtp.mailfrom`, `header.from`, …), and
    /// other `name=value` pairs (Exchange's `action`); the first of repeated names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub props: BTreeMap<String, String>,
}

/// One Authentication-Results field.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthResults {
    /// Who wrote it. Exchange Online omits it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authserv_id: Option<String>,
    pub results: Vec<AuthResult>,
}

/// One ARC set (RFC 8617) as far as it is read: instance, the seal's chain
/// validation status and signing domain, and the ARC-Authentication-Results.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ArcSet {
    pub instance: u32,
    /// `cv=` of the ARC-Seal: `none` (first set), `pass` or `fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<String>,
    /// `d=` of the ARC-Seal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub results: Option<AuthResults>,
}

/// What the headers of one message say about its way here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MailPath {
    /// Oldest hop first.
    pub hops: Vec<Hop>,
    /// More than [`MAX_HOPS`] Received fields, or the header block was cut:
    /// the oldest hops are missing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hops_truncated: bool,
    /// Authentication-Results fields, newest (topmost) first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth: Vec<AuthResults>,
    /// ARC sets by instance, lowest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arc: Vec<ArcSet>,
}

/// The compact form kept with a probe: each hop in one line of text, the
/// gateway's results by method, the weakest TLS and the ARC status.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PathSummary {
    /// `from → by, protocol, TLS, delay` per hop, oldest first.
    pub hops: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hops_truncated: bool,
    /// The weakest protection of a hop in transit (local hops left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tls: Option<TlsLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authserv_id: Option<String>,
    /// The receiving gateway's result by method (`spf`, `dkim`, `dmarc`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub auth: BTreeMap<String, String>,
    /// `cv=` of the newest ARC-Seal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arc_cv: Option<String>,
}

impl MailPath {
    /// The weakest protection over the hops in transit from index `skip` on
    /// (oldest is 0; pass the index after your own submission hop, see
    /// [`MailPath::hop_by`]). Local hops ([`Hop::is_local`]) do not count.
    /// `None` when no hop is left to judge.
    pub fn min_tls(&self, skip: usize) -> Option<TlsLevel> {
        self.hops
            .iter()
            .skip(skip)
            .filter(|h| !h.is_local())
            .map(Hop::tls_level)
            .min()
    }

    /// Index of the oldest hop received by `host` (case-insensitive, a
    /// trailing dot ignored).
    pub fn hop_by(&self, host: &str) -> Option<usize> {
        let want = host.trim_end_matches('.');
        self.hops.iter().position(|h| {
            h.by.as_deref()
                .is_some_and(|b| b.trim_end_matches('.').eq_ignore_ascii_case(want))
        })
    }

    /// The authserv-id of the receiving gateway: that of the topmost
    /// Authentication-Results field.
    pub fn gateway(&self) -> Option<&str> {
        self.auth.first().and_then(|a| a.authserv_id.as_deref())
    }

    /// The receiving gateway's result for `method` (`"spf"`, `"dkim"`,
    /// `"dmarc"`, `"arc"`): the first found in the topmost field and the
    /// fields below it with the same authserv-id (OpenDKIM, OpenDMARC and
    /// the SPF policy daemon each add their own). Fields of other
    /// authserv-ids (which a sender can forge) are not consulted.
    pub fn auth_result(&self, method: &str) -> Option<&AuthResult> {
        let first = self.auth.first()?;
        self.auth
            .iter()
            .take_while(|a| a.authserv_id == first.authserv_id)
            .flat_map(|a| a.results.iter())
            .find(|r| r.method.eq_ignore_ascii_case(method))
    }

    /// `cv=` of the newest ARC set.
    pub fn arc_cv(&self) -> Option<&str> {
        self.arc.last().and_then(|s| s.cv.as_deref())
    }

    pub fn summary(&self) -> PathSummary {
        let mut auth = BTreeMap::new();
        for m in ["spf", "dkim", "dmarc", "arc"] {
            if let Some(r) = self.auth_result(m) {
                auth.insert(m.to_string(), r.result.clone());
            }
        }
        PathSummary {
            hops: self.hops.iter().map(describe_hop).collect(),
            hops_truncated: self.hops_truncated,
            min_tls: self.min_tls(0),
            authserv_id: self.gateway().map(str::to_string),
            auth,
            arc_cv: self.arc_cv().map(str::to_string),
        }
    }
}

/// One line for a hop: `mail.example.org [192.0.2.1] → mx.example.com, ESMTPS, TLSv1.3 TLS_AES_256_GCM_SHA384, +2s`.
pub fn describe_hop(h: &Hop) -> String {
    let mut s = String::new();
    s.push_str(h.from.as_deref().or(h.from_rdns.as_deref()).unwrap_or("(local)"));
    if let Some(ip) = &h.from_ip {
        s.push_str(&format!(" [{ip}]"));
    }
    s.push_str(" → ");
    s.push_str(h.by.as_deref().unwrap_or("?"));
    if let Some(p) = &h.protocol {
        s.push_str(&format!(", {p}"));
    }
    match &h.tls {
        None if h.tls_level() == TlsLevel::Plain => s.push_str(", no TLS"),
        None => s.push_str(", TLS unknown"),
        Some(t) => {
            s.push_str(", ");
            s.push_str(t.version.map(|v| v.as_str()).unwrap_or("TLS"));
            if let Some(c) = &t.cipher {
                s.push(' ');
                s.push_str(c);
            }
        }
    }
    if let Some(d) = h.delay_s {
        s.push_str(&format!(", +{d}s"));
    }
    s
}

/// Reads the path from a raw message (or just its header block). Never
/// panics; what cannot be read is left out.
pub fn parse(raw: &[u8]) -> MailPath {
    let (fields, cut) = header_fields(raw);
    let mut path = MailPath::default();
    let mut received_seen = 0usize;
    let mut newest_first = Vec::new();
    let mut seals: Vec<(u32, Option<String>, Option<String>)> = Vec::new();
    let mut aars: Vec<(u32, AuthResults)> = Vec::new();
    for (name, value) in &fields {
        if name.eq_ignore_ascii_case("received") {
            received_seen += 1;
            if newest_first.len() < MAX_HOPS {
                newest_first.push(parse_received(value));
            }
        } else if name.eq_ignore_ascii_case("authentication-results") {
            if path.auth.len() < MAX_AUTH_HEADERS {
                path.auth.push(parse_auth_results(value, true));
            }
        } else if name.eq_ignore_ascii_case("arc-authentication-results") {
            if aars.len() < MAX_AUTH_HEADERS {
                if let Some((i, rest)) = split_instance(value) {
                    aars.push((i, parse_auth_results(rest, true)));
                }
            }
        } else if name.eq_ignore_ascii_case("arc-seal") && seals.len() < MAX_AUTH_HEADERS {
            let tags = tag_list(value);
            if let Some(i) = tags.get("i").and_then(|v| v.parse::<u32>().ok()) {
                seals.push((
                    i,
                    tags.get("cv").map(|v| v.to_ascii_lowercase()),
                    tags.get("d").map(|v| v.to_string()),
                ));
            }
        }
    }
    path.hops_truncated = cut || received_seen > newest_first.len();
    newest_first.reverse();
    let mut prev: Option<i64> = None;
    for mut hop in newest_first {
        if let (Some(p), Some(t)) = (prev, hop.at) {
            hop.delay_s = Some(t.saturating_sub(p));
        }
        if hop.at.is_some() {
            prev = hop.at;
        }
        path.hops.push(hop);
    }
    let mut instances: Vec<u32> = seals.iter().map(|s| s.0).chain(aars.iter().map(|a| a.0)).collect();
    instances.sort_unstable();
    instances.dedup();
    for i in instances.into_iter().take(MAX_AUTH_HEADERS) {
        let seal = seals.iter().find(|s| s.0 == i);
        path.arc.push(ArcSet {
            instance: i,
            cv: seal.and_then(|s| s.1.clone()),
            domain: seal.and_then(|s| s.2.clone()),
            results: aars.iter().find(|a| a.0 == i).map(|a| a.1.clone()),
        });
    }
    path
}

// ---------------------------------------------------------------------------
// Header block

/// The header fields (name, unfolded value) of the message, and whether the
/// header block was cut by a cap.
fn header_fields(raw: &[u8]) -> (Vec<(String, String)>, bool) {
    let mut cut = raw.len() > MAX_HEADER_BYTES;
    let raw = raw.get(..MAX_HEADER_BYTES).unwrap_or(raw);
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut ended = false;
    for line in raw.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            ended = true;
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            if let Some((_, v)) = fields.last_mut() {
                append_capped(v, line);
            }
            continue;
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            // Not a field: garbage between fields is skipped.
            continue;
        };
        if fields.len() >= MAX_FIELDS {
            cut = true;
            break;
        }
        let name = String::from_utf8_lossy(line.get(..colon).unwrap_or_default())
            .trim()
            .to_string();
        let mut value = String::new();
        append_capped(&mut value, line.get(colon + 1..).unwrap_or_default());
        fields.push((name, value));
    }
    if !ended && raw.len() >= MAX_HEADER_BYTES {
        cut = true;
    }
    (fields, cut)
}

/// Appends a folded line to a value (folding whitespace becomes one space), up to the cap.
fn append_capped(v: &mut String, line: &[u8]) {
    if v.len() >= MAX_FIELD_BYTES {
        return;
    }
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return;
    }
    if !v.is_empty() {
        v.push(' ');
    }
    let room = MAX_FIELD_BYTES.saturating_sub(v.len());
    v.push_str(crate::bounce::cut(text, room));
}

fn item(s: &str) -> String {
    crate::bounce::cut(s, MAX_ITEM).to_string()
}

// ---------------------------------------------------------------------------
// Lexing shared by Received and Authentication-Results

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A run of text without whitespace, parentheses, `;` or `=` (quoted strings unquoted).
    Word(String),
    /// A comment's text, inner comments included.
    Comment(String),
    Semi,
    Eq,
}

/// Splits a value into tokens. `eq` makes `=` a token of its own
/// (Authentication-Results); in Received fields it is part of words.
fn lex(value: &str, eq: bool) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut chars = value.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, toks: &mut Vec<Tok>| {
        if !word.is_empty() {
            toks.push(Tok::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '(' => {
                flush(&mut word, &mut toks);
                let mut depth = 1usize;
                let mut text = String::new();
                for c in chars.by_ref() {
                    match c {
                        '(' => {
                            depth += 1;
                            if depth <= MAX_COMMENT_DEPTH {
                                text.push(c);
                            }
                        }
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                            if depth < MAX_COMMENT_DEPTH {
                                text.push(c);
                            }
                        }
                        '\\' => {}
                        _ => text.push(c),
                    }
                }
                toks.push(Tok::Comment(text));
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        word.push(c);
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    } else {
                        word.push(c);
                    }
                }
                if word.is_empty() {
                    toks.push(Tok::Word(String::new()));
                }
            }
            ';' => {
                flush(&mut word, &mut toks);
                toks.push(Tok::Semi);
            }
            '=' if eq => {
                flush(&mut word, &mut toks);
                toks.push(Tok::Eq);
            }
            c if c.is_whitespace() => flush(&mut word, &mut toks),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut toks);
    toks
}

// ---------------------------------------------------------------------------
// Received

#[derive(Clone, Copy, PartialEq, Eq)]
enum Clause {
    None,
    From,
    By,
    Via,
    With,
    Id,
    For,
}

fn clause_of(word: &str) -> Option<Clause> {
    match word.to_ascii_lowercase().as_str() {
        "from" => Some(Clause::From),
        "by" => Some(Clause::By),
        "via" => Some(Clause::Via),
        "with" => Some(Clause::With),
        "id" => Some(Clause::Id),
        "for" => Some(Clause::For),
        _ => None,
    }
}

fn regexes() -> Option<&'static [Regex; 4]> {
    static RE: OnceLock<Option<[Regex; 4]>> = OnceLock::new();
    RE.get_or_init(|| {
        Some([
            // A version: Postfix `using TLSv1.3`, Sendmail `version=TLSv1.3`,
            // Exchange `version=TLS1_2`, Gmail `version=TLS1_3`, Exim `(TLS1.3)`.
            Regex::new(r"(?i)(?:^|[\s=(,:])(TLSv?1[._][0-3]|TLSv?1(?:\b|$)|SSLv3)").ok()?,
            // A cipher after `cipher` (Postfix `with cipher X`, `cipher=X`).
            Regex::new(r"(?i)\bcipher\s*[= ]\s*([A-Za-z0-9_\-]+)").ok()?,
            // Exim before 4.92: `(TLS1.2:ECDHE_RSA_AES_256_GCM_SHA384:256)`.
            Regex::new(r"(?i)^\s*TLSv?1[._][0-3]:([A-Za-z0-9_\-]+)").ok()?,
            // An address and optional port in a comment: `[192.0.2.1]`, `[IPv6:2001:db8::1]:25`.
            Regex::new(r"\[(?:IPv6:)?([0-9A-Fa-f:.]+)\]").ok()?,
        ])
    })
    .as_ref()
}

/// Parses one Received value. Unknown shapes give a hop with what was found.
fn parse_received(value: &str) -> Hop {
    let mut hop = Hop::default();
    // The date follows the last `;` outside comments.
    let toks = lex(value, false);
    let last_semi = toks.iter().rposition(|t| *t == Tok::Semi);
    let (clauses, date) = match last_semi {
        Some(i) => (toks.get(..i).unwrap_or_default(), toks.get(i + 1..).unwrap_or_default()),
        None => (&toks[..], &[][..]),
    };
    let date_text: Vec<&str> = date
        .iter()
        .filter_map(|t| match t {
            Tok::Word(w) => Some(w.as_str()),
            _ => None,
        })
        .collect();
    hop.at = mail_parser::DateTime::parse_rfc822(&date_text.join(" ")).map(|d| d.to_timestamp());

    let mut clause = Clause::None;
    let mut from_comments: Vec<&str> = Vec::new();
    let mut with_words: Vec<&str> = Vec::new();
    let mut all_comments: Vec<&str> = Vec::new();
    let mut exim_tls_cipher: Option<&str> = None;
    let mut after_tls_word = false;
    for t in clauses {
        match t {
            Tok::Word(w) => {
                if let Some(c) = clause_of(w) {
                    // `for` and `id` take one word; a keyword right after `with`
                    // opens a new clause as well.
                    clause = c;
                    after_tls_word = false;
                    continue;
                }
                match clause {
                    Clause::From if hop.from.is_none() => {
                        hop.from = Some(item(w.trim_end_matches('.')));
                    }
                    Clause::By if hop.by.is_none() => {
                        hop.by = Some(item(w.trim_end_matches('.')));
                    }
                    Clause::With => {
                        if after_tls_word {
                            if exim_tls_cipher.is_none() {
                                exim_tls_cipher = Some(w);
                            }
                            after_tls_word = false;
                        } else if w.eq_ignore_ascii_case("tls") && !with_words.is_empty() {
                            after_tls_word = true;
                        } else if with_words.len() < 8 {
                            with_words.push(w);
                        }
                    }
                    _ => {}
                }
            }
            Tok::Comment(c) => {
                if clause == Clause::From {
                    from_comments.push(c);
                }
                if all_comments.len() < 32 {
                    all_comments.push(c);
                }
            }
            Tok::Semi | Tok::Eq => {}
        }
    }
    if !with_words.is_empty() {
        hop.protocol = Some(item(&with_words.join(" ")));
    }
    // The sending host's address and reverse name from the from-comments.
    for c in &from_comments {
        read_from_comment(c, &mut hop);
    }
    if hop.from_ip.is_none() {
        if let Some(ip) = hop.from.as_deref().and_then(address_literal) {
            hop.from_ip = Some(ip);
        }
    }
    // Exim without a reverse name: `from [192.0.2.1] (helo=mail.example)`:
    // the name the host gave is in the comment.
    if hop.from.as_deref().is_some_and(|f| f.starts_with('[')) {
        let helo = from_comments.iter().find_map(|c| {
            c.split_whitespace()
                .find_map(|w| w.strip_prefix("helo=").or_else(|| w.strip_prefix("HELO=")))
                .map(|h| h.trim_matches(|ch| ch == ',' || ch == ';' || ch == ')'))
                .filter(|h| !h.is_empty())
        });
        if let Some(h) = helo {
            hop.from = Some(item(h.trim_end_matches('.')));
        }
    }
    // TLS.
    let proto_upper = hop.protocol.as_deref().unwrap_or_default().to_ascii_uppercase();
    let first_proto = proto_upper.split(' ').next().unwrap_or_default().to_string();
    hop.authenticated = matches!(
        first_proto.as_str(),
        "ESMTPA" | "ESMTPSA" | "UTF8SMTPA" | "UTF8SMTPSA" | "LMTPA" | "LMTPSA"
    );
    let proto_says_tls = matches!(
        first_proto.as_str(),
        "ESMTPS" | "ESMTPSA" | "UTF8SMTPS" | "UTF8SMTPSA" | "LMTPS" | "LMTPSA" | "SMTPS" | "HTTPS"
    );
    let mut tls = Tls::default();
    if let Some(re) = regexes() {
        for c in &all_comments {
            if tls.version.is_none() {
                if let Some(m) = re[0].captures(c).and_then(|m| m.get(1)) {
                    tls.version = TlsVersion::parse(m.as_str());
                }
            }
            if tls.cipher.is_none() {
                if let Some(m) = re[1].captures(c).and_then(|m| m.get(1)) {
                    tls.cipher = Some(item(m.as_str()));
                } else if let Some(m) = re[2].captures(c).and_then(|m| m.get(1)) {
                    tls.cipher = Some(item(m.as_str()));
                }
            }
        }
    }
    if tls.cipher.is_none() {
        tls.cipher = exim_tls_cipher.map(item);
    }
    if tls.version.is_some() || tls.cipher.is_some() || proto_says_tls {
        hop.tls = Some(tls);
    }
    hop
}

/// Reads `(rdns [ip])`, `(rdns. [ip])`, `([ip]:port helo=x)`, `(192.0.2.25)`,
/// `(2603:10a6::15)`, `(HELO x)` comments of the from clause.
fn read_from_comment(c: &str, hop: &mut Hop) {
    if hop.from_ip.is_none() {
        if let Some(ip) = regexes()
            .and_then(|re| re[3].captures(c))
            .and_then(|m| m.get(1))
            .and_then(|m| m.as_str().parse::<IpAddr>().ok())
        {
            hop.from_ip = Some(ip.to_string());
        }
    }
    for w in c.split_whitespace().take(16) {
        let w = w.trim_matches(|ch| ch == ',' || ch == ';');
        if w.starts_with('[') || w.contains('=') {
            continue;
        }
        if let Ok(ip) = w.parse::<IpAddr>() {
            if hop.from_ip.is_none() {
                hop.from_ip = Some(ip.to_string());
            }
            continue;
        }
        if hop.from_rdns.is_none()
            && w.contains('.')
            && !w.eq_ignore_ascii_case("helo")
            && w.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' || ch == '_')
        {
            hop.from_rdns = Some(item(w.trim_end_matches('.')));
        }
    }
}

/// `[192.0.2.1]`, `[IPv6:2001:db8::1]` or `[192.0.2.1]:25` as an address.
fn address_literal(s: &str) -> Option<String> {
    let inner = s.strip_prefix('[')?;
    let end = inner.find(']')?;
    let inner = inner.get(..end)?;
    let inner = inner.strip_prefix("IPv6:").unwrap_or(inner);
    inner.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

// ---------------------------------------------------------------------------
// Authentication-Results (RFC 8601) and ARC

/// `i=1; rest` → (1, rest).
fn split_instance(value: &str) -> Option<(u32, &str)> {
    let (first, rest) = value.split_once(';')?;
    let (k, v) = first.split_once('=')?;
    if !k.trim().eq_ignore_ascii_case("i") {
        return None;
    }
    Some((v.trim().parse().ok()?, rest))
}

/// A DKIM-style tag list `a=b; c=d` (ARC-Seal); the first of repeated tags, capped.
fn tag_list(value: &str) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    for part in value.split(';').take(32) {
        if let Some((k, v)) = part.split_once('=') {
            let k = k.trim().to_ascii_lowercase();
            let v: String = v.split_whitespace().collect();
            tags.entry(item(&k)).or_insert_with(|| item(&v));
        }
    }
    tags
}

/// Parses an Authentication-Results value: `authserv-id [version]; method=result
/// [reason=…] [ptype.prop=value …]; …`, or (Exchange) the results without an id.
fn parse_auth_results(value: &str, _with_id: bool) -> AuthResults {
    let toks = lex(value, true);
    let mut out = AuthResults::default();
    let segments: Vec<&[Tok]> = toks.split(|t| *t == Tok::Semi).collect();
    let mut iter = segments.into_iter().peekable();
    // The authserv-id segment has no `=`.
    if let Some(first) = iter.peek() {
        if !first.contains(&Tok::Eq) {
            out.authserv_id = first.iter().find_map(|t| match t {
                Tok::Word(w) => Some(item(&w.to_ascii_lowercase())),
                _ => None,
            });
            iter.next();
        }
    }
    for seg in iter {
        if out.results.len() >= MAX_RESULTS {
            break;
        }
        let words: Vec<&Tok> = seg.iter().filter(|t| !matches!(t, Tok::Comment(_))).collect();
        let mut pairs: Vec<(String, String)> = Vec::new();
        let mut i = 0usize;
        while i < words.len() && pairs.len() < 64 {
            match (words.get(i), words.get(i + 1), words.get(i + 2)) {
                (Some(Tok::Word(k)), Some(Tok::Eq), Some(Tok::Word(v))) => {
                    pairs.push((k.clone(), v.clone()));
                    i += 3;
                }
                _ => i += 1,
            }
        }
        let mut pairs = pairs.into_iter();
        let Some((method, result)) = pairs.next() else {
            continue;
        };
        let method = method.split('/').next().unwrap_or_default().to_ascii_lowercase();
        if method.is_empty() {
            continue;
        }
        let mut r = AuthResult {
            method: item(&method),
            result: item(&result.to_ascii_lowercase()),
            ..AuthResult::default()
        };
        for (k, v) in pairs {
            let k = k.to_ascii_lowercase();
            if k == "reason" && r.reason.is_none() {
                r.reason = Some(item(&v));
            } else {
                r.props.entry(item(&k)).or_insert_with(|| item(&v));
            }
        }
        out.results.push(r);
    }
    out
}

#[cfg(test)]
mod tests;
