//! Compliance evidence from delivered canaries: what is kept of a canary's
//! path, the per-channel policies (`require_tls`, `require_auth`) and the
//! judgement of one path against them — pure functions, no I/O.
//!
//! A watcher keeps a [`KeptPath`] with every arrival as the probe event
//! [`PATH_EVENT`] (JSON, at most [`MAX_EVENT_BYTES`]). The incident
//! processor judges it with [`assess`] against the channel's [`Policy`]: a
//! breach does not change the verdict (the canary arrived), it opens the
//! channel's compliance incident. Readers sum the assessments of a window in
//! a [`Tally`] ("last 30 days: every hop TLS ≥ 1.2; DMARC pass").
//!
//! Which hops count: every hop after postcanary's own submission
//! ([`OurSide`]), except local ones ([`crate::mailpath::Hop::is_local`]).
//! A hop whose header does not establish TLS of the required version — no
//! TLS, an older version, TLS without a stated version, or no statement at
//! all — breaks `require_tls`; the last two are reported as "TLS unknown".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::bounce::cut;
use crate::mailpath::{describe_hop, Hop, MailPath, PathSummary, TlsLevel, TlsVersion};

/// The kind of the probe event that keeps a canary's path.
pub const PATH_EVENT: &str = "path";
/// Hops kept with a probe: the oldest [`KEPT_OLDEST`] and the newest rest.
pub const MAX_KEPT_HOPS: usize = 24;
/// Oldest hops always kept (our submission is among them).
pub const KEPT_OLDEST: usize = 4;
/// Bytes of one hop's text line kept.
const MAX_HOP_TEXT: usize = 240;
/// Bytes of a host name kept in the facts.
const MAX_HOST: usize = 100;
/// Upper bound of a path event's JSON (the caps above keep it below).
pub const MAX_EVENT_BYTES: usize = 16 << 10;
/// Breaches named one by one in a finding; more are counted.
const MAX_NAMED_BREACHES: usize = 4;

/// What policies judge of one hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HopFacts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    pub tls: TlsLevel,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local: bool,
}

impl HopFacts {
    fn of(h: &Hop) -> HopFacts {
        let host = |s: Option<&str>| s.map(|s| cut(s, MAX_HOST).to_string());
        HopFacts {
            from: host(h.from.as_deref().or(h.from_rdns.as_deref()).or(h.from_ip.as_deref())),
            by: host(h.by.as_deref()),
            tls: h.tls_level(),
            local: h.is_local(),
        }
    }

    /// `from → by`.
    pub fn name(&self) -> String {
        format!(
            "{} → {}",
            self.from.as_deref().unwrap_or("(unnamed)"),
            self.by.as_deref().unwrap_or("(unnamed)")
        )
    }
}

/// What is kept of a delivered canary's path: the compact summary for
/// people, and per hop (aligned with `summary.hops`) what policies judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptPath {
    pub summary: PathSummary,
    pub facts: Vec<HopFacts>,
    /// Hops left out between the oldest and the newest kept ones.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl KeptPath {
    /// The compact form of a parsed path, within the caps.
    pub fn of(path: &MailPath) -> KeptPath {
        let mut summary = path.summary();
        let n = path.hops.len();
        let keep: Vec<usize> = if n <= MAX_KEPT_HOPS {
            (0..n).collect()
        } else {
            (0..KEPT_OLDEST).chain(n - (MAX_KEPT_HOPS - KEPT_OLDEST)..n).collect()
        };
        let hops: Vec<&Hop> = keep.iter().filter_map(|i| path.hops.get(*i)).collect();
        summary.hops = hops
            .iter()
            .map(|h| cut(&describe_hop(h), MAX_HOP_TEXT).to_string())
            .collect();
        if let Some(id) = &summary.authserv_id {
            summary.authserv_id = Some(cut(id, MAX_HOST).to_string());
        }
        for v in summary.auth.values_mut() {
            *v = cut(v, 32).to_string();
        }
        if let Some(cv) = &summary.arc_cv {
            summary.arc_cv = Some(cut(cv, 32).to_string());
        }
        KeptPath {
            summary,
            facts: hops.iter().map(|h| HopFacts::of(h)).collect(),
            omitted: n.saturating_sub(MAX_KEPT_HOPS),
        }
    }

    /// One line for pages and logs: the hops, then the gateway's results.
    pub fn line(&self) -> String {
        let mut s = self.summary.hops.join(" | ");
        if self.omitted > 0 {
            s.push_str(&format!(" ({} hops left out)", self.omitted));
        }
        if !self.summary.auth.is_empty() {
            let r: Vec<String> = self.summary.auth.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!(
                "; at {}: {}",
                self.summary.authserv_id.as_deref().unwrap_or("the gateway"),
                r.join(" ")
            ));
        }
        s
    }

    /// The probe event's detail.
    pub fn to_event(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a probe event's detail back; `None` for anything else.
    pub fn from_event(detail: &str) -> Option<KeptPath> {
        if detail.len() > MAX_EVENT_BYTES * 2 {
            return None;
        }
        serde_json::from_str(detail).ok()
    }
}

/// A gateway check that `require_auth` can demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    Spf,
    Dkim,
    Dmarc,
    Arc,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 4] = [AuthMethod::Spf, AuthMethod::Dkim, AuthMethod::Dmarc, AuthMethod::Arc];

    pub fn as_str(&self) -> &'static str {
        match self {
            AuthMethod::Spf => "spf",
            AuthMethod::Dkim => "dkim",
            AuthMethod::Dmarc => "dmarc",
            AuthMethod::Arc => "arc",
        }
    }

    pub fn label(&self) -> &'static str {
        match self {
            AuthMethod::Spf => "SPF",
            AuthMethod::Dkim => "DKIM",
            AuthMethod::Dmarc => "DMARC",
            AuthMethod::Arc => "ARC",
        }
    }

    pub fn parse(s: &str) -> Option<AuthMethod> {
        AuthMethod::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

/// A channel's compliance policy (`require_tls`, `require_auth`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Every hop after our submission must show TLS of this version or later.
    pub require_tls: Option<TlsVersion>,
    /// The receiving gateway's result for each must be `pass`.
    pub require_auth: Vec<AuthMethod>,
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        self.require_tls.is_none() && self.require_auth.is_empty()
    }

    /// `TLS ≥ 1.2, SPF, DKIM, DMARC pass`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(v) = self.require_tls {
            parts.push(format!("every hop TLS ≥ {}", short(v)));
        }
        if !self.require_auth.is_empty() {
            let l: Vec<&str> = self.require_auth.iter().map(AuthMethod::label).collect();
            parts.push(format!("{} pass", l.join(", ")));
        }
        parts.join("; ")
    }
}

/// `1.2` for TLSv1.2.
pub fn short(v: TlsVersion) -> &'static str {
    match v {
        TlsVersion::Ssl3 => "SSLv3",
        TlsVersion::Tls1_0 => "1.0",
        TlsVersion::Tls1_1 => "1.1",
        TlsVersion::Tls1_2 => "1.2",
        TlsVersion::Tls1_3 => "1.3",
    }
}

/// How a channel's canaries enter the path, which decides the hop that is
/// postcanary's own submission (not judged: its TLS is the sender's `tls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OurSide {
    /// Through our relay (a `kind = "smtp"` sender at `host`): the hop the
    /// relay wrote on taking the canary is ours — the oldest hop received
    /// `by` that host, else the oldest hop; if the oldest hop comes `from`
    /// that host, the relay left its own line out and no hop is ours.
    Relay { host: String },
    /// Nothing of ours is in the path: a `kind = "mx"` sender (the first
    /// hop is the channel's MX taking the canary from us, in transit like
    /// any other), or a form (the form site's mail system sends).
    Nothing,
}

impl OurSide {
    /// How many of the oldest hops are ours.
    pub fn skip(&self, facts: &[HopFacts]) -> usize {
        let OurSide::Relay { host } = self else {
            return 0;
        };
        let host = host.trim_end_matches('.');
        let named = |s: Option<&str>| s.is_some_and(|s| s.trim_end_matches('.').eq_ignore_ascii_case(host));
        if let Some(i) = facts.iter().position(|f| named(f.by.as_deref())) {
            return i + 1;
        }
        match facts.first() {
            Some(f) if named(f.from.as_deref()) => 0,
            Some(_) => 1,
            None => 0,
        }
    }
}

/// One canary's path judged against a policy.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Assessment {
    /// The weakest hop in transit after our submission, and its name;
    /// `None` when no hop is left to judge.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weakest: Option<TlsLevel>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weakest_hop: Option<String>,
    /// The path is incomplete (hops cut or left out): TLS cannot be established.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub incomplete: bool,
    /// The gateway's result per method (missing: no result).
    pub auth: BTreeMap<String, String>,
    /// Who gave those results: the authserv-id, else the last hop's receiver.
    pub gateway: String,
    /// Each way the canary broke the policy; empty: compliant.
    pub breaches: Vec<String>,
}

impl Assessment {
    /// One finding text: the breaches, the first few by name.
    pub fn finding(&self) -> String {
        let mut s = self
            .breaches
            .iter()
            .take(MAX_NAMED_BREACHES)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if self.breaches.len() > MAX_NAMED_BREACHES {
            s.push_str(&format!("; and {} more", self.breaches.len() - MAX_NAMED_BREACHES));
        }
        s
    }
}

/// Judges a kept path against `policy`.
pub fn assess(path: &KeptPath, ours: &OurSide, policy: &Policy) -> Assessment {
    let skip = ours.skip(&path.facts);
    let transit: Vec<&HopFacts> = path.facts.iter().skip(skip).filter(|f| !f.local).collect();
    let weakest = transit.iter().min_by_key(|f| f.tls);
    let incomplete = path.omitted > 0 || path.summary.hops_truncated;
    let gateway = path
        .summary
        .authserv_id
        .clone()
        .or_else(|| path.facts.iter().rev().find(|f| !f.local).and_then(|f| f.by.clone()))
        .or_else(|| path.facts.last().and_then(|f| f.by.clone()))
        .unwrap_or_else(|| "the receiving gateway".to_string());
    let mut breaches = Vec::new();
    if let Some(min) = policy.require_tls {
        if path.facts.is_empty() {
            breaches.push("TLS unknown: the canary carries no Received line".to_string());
        } else if incomplete {
            breaches.push(format!(
                "TLS unknown: the path was cut ({} hops not read or kept)",
                if path.omitted > 0 {
                    path.omitted.to_string()
                } else {
                    "older".to_string()
                }
            ));
        }
        for f in &transit {
            if f.tls.at_least(min) {
                continue;
            }
            let hop = f.name();
            breaches.push(match f.tls {
                TlsLevel::Plain => format!("hop {hop} without TLS"),
                TlsLevel::Tls(v) => format!("hop {hop} with {v}, below TLS {}", short(min)),
                TlsLevel::UnknownVersion => format!("hop {hop}: TLS unknown (TLS without a stated version)"),
                TlsLevel::Unknown => format!("hop {hop}: TLS unknown (the header does not say)"),
            });
        }
    }
    let mut auth = BTreeMap::new();
    for (k, v) in &path.summary.auth {
        auth.insert(k.clone(), v.clone());
    }
    for m in &policy.require_auth {
        match auth.get(m.as_str()).map(String::as_str) {
            Some("pass") => {}
            Some(r) => breaches.push(format!("{} {r} at {gateway}", m.label())),
            None => breaches.push(format!("{} unknown: no {} result at {gateway}", m.label(), m.label())),
        }
    }
    Assessment {
        weakest: weakest.map(|f| f.tls),
        weakest_hop: weakest.map(|f| f.name()),
        incomplete,
        auth,
        gateway,
        breaches,
    }
}

/// The assessments of one channel's canaries over a window, summed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Tally {
    /// Canaries whose path was kept.
    pub canaries: u64,
    /// The weakest hop in transit over all of them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weakest: Option<TlsLevel>,
    /// Canaries with a hop without TLS.
    pub plain: u64,
    /// Canaries whose TLS could not be established on some hop.
    pub unknown: u64,
    /// Canaries with a hop below the required version (or, without a requirement, below TLS 1.2).
    pub below: u64,
    /// The newest weak hop seen, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weak_hop: Option<String>,
    /// Per method, per result, how many canaries (a missing result counts as `none`).
    pub auth: BTreeMap<String, BTreeMap<String, u64>>,
    /// Canaries that broke the channel's policy.
    pub breaches: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_breach: Option<String>,
    /// The policy, as text (empty: none).
    pub policy: String,
    #[serde(skip)]
    required: Vec<AuthMethod>,
    #[serde(skip)]
    min: Option<TlsVersion>,
}

impl Tally {
    pub fn new(policy: &Policy) -> Tally {
        Tally {
            policy: policy.describe(),
            required: policy.require_auth.clone(),
            min: policy.require_tls,
            ..Tally::default()
        }
    }

    /// Adds one canary's assessment; call newest first so `last_*` are the newest.
    pub fn add(&mut self, a: &Assessment) {
        self.canaries += 1;
        if let Some(w) = a.weakest {
            self.weakest = Some(self.weakest.map_or(w, |x| x.min(w)));
        }
        let min = self.min.unwrap_or(TlsVersion::Tls1_2);
        let weak = match a.weakest {
            Some(TlsLevel::Plain) => {
                self.plain += 1;
                true
            }
            Some(TlsLevel::Unknown | TlsLevel::UnknownVersion) => {
                self.unknown += 1;
                true
            }
            Some(TlsLevel::Tls(v)) if v < min => {
                self.below += 1;
                true
            }
            _ if a.incomplete => {
                self.unknown += 1;
                false
            }
            _ => false,
        };
        if weak && self.weak_hop.is_none() {
            self.weak_hop = a.weakest_hop.clone();
        }
        for m in AuthMethod::ALL {
            let r = a.auth.get(m.as_str()).cloned().unwrap_or_else(|| "none".to_string());
            *self
                .auth
                .entry(m.as_str().to_string())
                .or_default()
                .entry(r)
                .or_default() += 1;
        }
        if !a.breaches.is_empty() {
            self.breaches += 1;
            if self.last_breach.is_none() {
                self.last_breach = Some(a.finding());
            }
        }
    }

    /// "every hop TLS ≥ 1.2; SPF pass, DKIM pass, DMARC pass" — or what failed, how often.
    pub fn line(&self) -> String {
        let n = self.canaries;
        if n == 0 {
            return "no delivered canary with its path".to_string();
        }
        let mut parts = Vec::new();
        let weak = self.plain + self.unknown + self.below;
        if weak == 0 {
            match self.weakest {
                Some(TlsLevel::Tls(v)) => parts.push(format!("every hop TLS ≥ {}", short(v))),
                _ => parts.push("no hop in transit after ours".to_string()),
            }
        } else {
            if self.plain > 0 {
                parts.push(format!("a hop without TLS in {} of {n}", self.plain));
            }
            if self.unknown > 0 {
                parts.push(format!("TLS unknown on a hop in {} of {n}", self.unknown));
            }
            if self.below > 0 {
                parts.push(format!(
                    "a hop below TLS {} in {} of {n}",
                    short(self.min.unwrap_or(TlsVersion::Tls1_2)),
                    self.below
                ));
            }
            if let Some(h) = &self.weak_hop {
                parts.push(format!("newest weak hop {h}"));
            }
        }
        let mut auth = Vec::new();
        for m in AuthMethod::ALL {
            let Some(results) = self.auth.get(m.as_str()) else {
                continue;
            };
            let seen = results.iter().any(|(r, _)| r != "none");
            if !seen && !self.required.contains(&m) {
                continue;
            }
            let pass = results.get("pass").copied().unwrap_or(0);
            if pass == n {
                auth.push(format!("{} pass", m.label()));
            } else {
                let others: Vec<String> = results
                    .iter()
                    .filter(|(r, _)| r.as_str() != "pass")
                    .map(|(r, c)| format!("{r} {c}"))
                    .collect();
                auth.push(format!("{} pass {pass} of {n} ({})", m.label(), others.join(", ")));
            }
        }
        if !auth.is_empty() {
            parts.push(auth.join(", "));
        }
        if !self.policy.is_empty() {
            match (self.breaches, &self.last_breach) {
                (0, _) => parts.push("policy met by every canary".to_string()),
                (b, Some(last)) => parts.push(format!("policy broken by {b} of {n} (newest: {last})")),
                (b, None) => parts.push(format!("policy broken by {b} of {n}")),
            }
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests;
