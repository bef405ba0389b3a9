//! The compliance evidence of a channel as the API and the status page show
//! it: the last 30 days of kept paths summed into one line ("last 30 days
//! (8640 canaries): every hop TLS ≥ 1.2; DMARC pass"), the newest canary's
//! path, and the open compliance finding. Read from the ledger only.

use std::fmt::Write as _;

use serde::Serialize;

use super::escape::esc;
use super::AppState;
use crate::compliance::{assess, Assessment, KeptPath, Tally, PATH_EVENT};

/// As many recent canaries as the channel view shows.
const RECENT_PATHS: usize = 30;
use crate::config::{Channel, Language};
use crate::ledger::StoreError;
use crate::verdict::Millis;

/// The window summed.
pub(super) const WINDOW_MS: i64 = 30 * 86_400_000;
/// Canaries read per channel for one summary (the newest of the window).
pub(super) const MAX_CANARIES: usize = 10_000;

/// The newest canary's kept path.
#[derive(Serialize, Clone)]
pub(super) struct NewestPath {
    pub probe: String,
    pub at: Millis,
    pub path: KeptPath,
    pub assessment: Assessment,
}

#[derive(Serialize, Clone)]
pub(super) struct ComplianceView {
    /// `last 30 days (N canaries): …`.
    pub line: String,
    /// The channel's policy as text; empty without one.
    pub policy: String,
    pub tally: Tally,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<NewestPath>,
    /// The open compliance finding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
    /// The newest canaries with a kept path, newest first: whether each met the policy.
    pub recent: Vec<RecentPath>,
}

/// One recent canary's compliance.
#[derive(Serialize, Clone)]
pub(super) struct RecentPath {
    pub probe: String,
    pub at: Millis,
    pub compliant: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weakest: Option<crate::mailpath::TlsLevel>,
}

/// One channel's compliance view at `now`.
pub(super) async fn view(s: &AppState, ch: &Channel, now: Millis) -> Result<ComplianceView, StoreError> {
    let events = s
        .store
        .channel_events(&ch.id, PATH_EVENT, now - WINDOW_MS, MAX_CANARIES)
        .await?;
    let ours = s.config().our_side(ch);
    let mut tally = Tally::new(&ch.policy);
    let mut newest = None;
    let mut recent = Vec::new();
    for (probe, e) in events {
        let Some(path) = KeptPath::from_event(&e.detail) else {
            continue;
        };
        let a = assess(&path, &ours, &ch.policy);
        tally.add(&a);
        if recent.len() < RECENT_PATHS {
            recent.push(RecentPath {
                probe: probe.clone(),
                at: e.at,
                compliant: a.breaches.is_empty(),
                weakest: a.weakest,
            });
        }
        if newest.is_none() {
            newest = Some(NewestPath {
                probe,
                at: e.at,
                path,
                assessment: a,
            });
        }
    }
    let finding = s
        .store
        .open_incident(&crate::incident::compliance_key(&ch.id))
        .await?
        .map(|i| i.detail);
    let count = if tally.canaries as usize >= MAX_CANARIES {
        format!("newest {} canaries", tally.canaries)
    } else {
        format!("{} canaries", tally.canaries)
    };
    Ok(ComplianceView {
        line: format!("last 30 days ({count}): {}", tally.line()),
        policy: ch.policy.describe(),
        tally,
        newest,
        finding,
        recent,
    })
}

/// The status page's block for one channel: the summary line, the open
/// finding, and the newest canary's hops.
pub(super) fn html(lang: Language, v: &ComplianceView) -> String {
    let (title, policy, finding, newest, none) = match lang {
        Language::Da => (
            "Overholdelse",
            "Krav",
            "Åbent fund",
            "Nyeste kanariefugls vej",
            "ingen krav",
        ),
        Language::En => ("Compliance", "Policy", "Open finding", "Newest canary's path", "none"),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<section class=\"compliance\"><h2>{title}</h2><p>{}</p><p class=\"muted\">{policy}: {}</p>",
        esc(&v.line),
        esc(if v.policy.is_empty() { none } else { &v.policy })
    );
    if let Some(f) = &v.finding {
        let _ = write!(out, "<p class=\"finding\"><strong>{finding}:</strong> {}</p>", esc(f));
    }
    if let Some(n) = &v.newest {
        let _ = write!(out, "<details><summary>{newest}</summary><ol>");
        for h in &n.path.summary.hops {
            let _ = write!(out, "<li>{}</li>", esc(h));
        }
        out.push_str("</ol>");
        if !n.path.summary.auth.is_empty() {
            let r: Vec<String> = n.path.summary.auth.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(out, "<p>{}: {}</p>", esc(&n.assessment.gateway), esc(&r.join(" ")));
        }
        for b in &n.assessment.breaches {
            let _ = write!(out, "<p class=\"finding\">{}</p>", esc(b));
        }
        out.push_str("</details>");
    }
    out.push_str("</section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_escapes_what_the_headers_say() {
        let raw = b"Authentication-Results: <b>gw</b>; dmarc=fail header.from=x\r\nReceived: from <script>x</script> ([192.0.2.1]) by mx.example with ESMTP id 1; Tue, 2 Dec 2025 10:15:03 +0100\r\n\r\n";
        let path = KeptPath::of(&crate::mailpath::parse(raw));
        let policy = crate::compliance::Policy {
            require_tls: Some(crate::mailpath::TlsVersion::Tls1_2),
            require_auth: vec![crate::compliance::AuthMethod::Dmarc],
        };
        let a = assess(&path, &crate::compliance::OurSide::Nothing, &policy);
        let mut tally = Tally::new(&policy);
        tally.add(&a);
        let v = ComplianceView {
            line: format!("last 30 days (1 canaries): {}", tally.line()),
            policy: policy.describe(),
            tally,
            newest: Some(NewestPath {
                probe: "p".into(),
                at: 1,
                path,
                assessment: a,
            }),
            finding: Some("hop <i> → mx".into()),
            recent: Vec::new(),
        };
        let html = html(Language::En, &v);
        assert!(
            !html.contains("<script>") && !html.contains("<b>") && !html.contains("<i>"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        assert!(html.contains("DMARC fail at &lt;b&gt;gw&lt;/b&gt;"), "{html}");
        assert!(html.contains("policy broken by 1 of 1"), "{html}");
        assert!(super::html(Language::Da, &v).contains("Overholdelse"));
    }
}
