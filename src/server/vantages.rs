//! Per-vantage results for the readers: each vantage's newest judged probe
//! of a channel, for the API (`/api/channels/{id}` → `vantages`), the
//! channel page's small table and the `postcanary_vantage_up` metric. Read
//! from the channel's recent probes the views already hold, so no extra
//! query; shown only when `[vantage]` is configured.

use serde::Serialize;

use super::escape::esc;
use crate::config::Language;
use crate::incident::quorum::NO_VANTAGE;
use crate::ledger::ProbeRecord;
use crate::verdict::Verdict;

/// One vantage's last verdict of one channel.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub(super) struct VantageView {
    /// The vantage name ("" for probes written before vantages were configured).
    pub vantage: String,
    pub verdict: String,
    pub ok: bool,
    /// When it was judged (ms).
    pub at: i64,
    pub latency_ms: Option<i64>,
    pub detail: String,
}

/// The newest judged probe per vantage among `recent` (any order), by name.
pub(super) fn per_vantage(recent: &[ProbeRecord]) -> Vec<VantageView> {
    let mut newest: std::collections::BTreeMap<&str, &ProbeRecord> = std::collections::BTreeMap::new();
    for p in recent.iter().filter(|p| p.verdict != Verdict::Pending) {
        let v = p.vantage.as_deref().unwrap_or(NO_VANTAGE);
        if newest
            .get(v)
            .is_none_or(|q| (p.created_at, &p.id) > (q.created_at, &q.id))
        {
            newest.insert(v, p);
        }
    }
    newest
        .into_iter()
        .map(|(v, p)| VantageView {
            vantage: v.to_string(),
            verdict: p.verdict.to_string(),
            ok: p.verdict.is_success(),
            at: p.judged_at.unwrap_or(p.created_at),
            latency_ms: p.latency_ms,
            detail: p.detail.clone().unwrap_or_default(),
        })
        .collect()
}

/// The channel page's table of the vantages' last verdicts (empty without any).
pub(super) fn html(lang: Language, views: &[VantageView], time: impl Fn(i64) -> String) -> String {
    if views.is_empty() {
        return String::new();
    }
    let (title, vantage, verdict, when, detail, none) = match lang {
        Language::Da => ("Målepunkter", "Målepunkt", "Resultat", "Tid", "Detaljer", "(uden navn)"),
        Language::En => ("Vantage points", "Vantage", "Verdict", "Time", "Detail", "(unnamed)"),
    };
    let mut out = format!(
        "<section class=\"vantages\"><h2>{title}</h2><table><thead><tr><th>{vantage}</th><th>{verdict}</th><th>{when}</th><th>{detail}</th></tr></thead><tbody>"
    );
    for v in views {
        let name = if v.vantage.is_empty() {
            none.to_string()
        } else {
            esc(&v.vantage)
        };
        out.push_str(&format!(
            "<tr data-verdict=\"{}\"><td>{name}</td><td>{}</td><td>{}</td><td class=\"detail\">{}</td></tr>",
            esc(&v.verdict),
            esc(&v.verdict),
            esc(&time(v.at)),
            esc(&v.detail)
        ));
    }
    out.push_str("</tbody></table></section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, vantage: Option<&str>, created_at: i64, verdict: Verdict) -> ProbeRecord {
        ProbeRecord {
            id: id.into(),
            token: format!("pc-{id}"),
            channel: "ch".into(),
            kind: "mail".into(),
            expect: "deliver".into(),
            inbox: None,
            target: "x@kommune.example".into(),
            created_at,
            sent_at: None,
            deadline: created_at + 1,
            verdict,
            judged_at: Some(created_at + 1),
            found_in: None,
            found_at: None,
            latency_ms: None,
            detail: Some(format!("<{verdict}>")),
            smtp_reply: None,
            fault: None,
            vantage: vantage.map(str::to_string),
        }
    }

    #[test]
    fn the_newest_judged_probe_of_each_vantage() {
        let recent = [
            p("e2", Some("east"), 2_000, Verdict::Missed),
            p("w1", Some("west"), 1_000, Verdict::Delivered),
            p("e1", Some("east"), 1_000, Verdict::Delivered),
            p("w2", Some("west"), 2_000, Verdict::Pending),
        ];
        let v = per_vantage(&recent);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].vantage.as_str(), v[0].verdict.as_str(), v[0].ok),
            ("east", "missed", false)
        );
        assert_eq!(
            (v[1].vantage.as_str(), v[1].verdict.as_str(), v[1].ok),
            ("west", "delivered", true)
        );
        let html = html(Language::En, &v, |t| t.to_string());
        assert!(
            html.contains("<td>east</td><td>missed</td><td>2001</td><td class=\"detail\">&lt;missed&gt;</td>"),
            "{html}"
        );
        assert!(super::html(Language::Da, &v, |t| t.to_string()).contains("Målepunkter"));
        assert_eq!(super::html(Language::En, &[], |t| t.to_string()), "");
    }
}
