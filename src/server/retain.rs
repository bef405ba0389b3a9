//! A channel's retention canaries on its page: where its canaries are kept,
//! the ages, and its newest retention checks with what each found. Read
//! from the ledger only; everything from outside is escaped.

use std::fmt::Write as _;

use super::escape::esc;
use crate::config::{Channel, Language, RetainPlace};
use crate::ledger::RetainCheck;
use crate::verdict::Millis;

/// Checks shown on the channel page.
pub(super) const SHOWN: usize = 20;

/// The section, or nothing for a channel without `retain`.
pub(super) fn html(lang: Language, ch: &Channel, checks: &[RetainCheck], time: &dyn Fn(Millis) -> String) -> String {
    let Some(r) = &ch.retain else {
        return String::new();
    };
    let da = lang == Language::Da;
    let title = if da { "Opbevaring" } else { "Retention" };
    let place = match &r.place {
        RetainPlace::Inbox if da => format!("i indbakken `{}`", ch.inbox.as_deref().unwrap_or("")),
        RetainPlace::Inbox => format!("in the inbox `{}`", ch.inbox.as_deref().unwrap_or("")),
        RetainPlace::Archive(f) if da => format!("i mappen `{f}` i `{}`", ch.inbox.as_deref().unwrap_or("")),
        RetainPlace::Archive(f) => format!("in the folder `{f}` of `{}`", ch.inbox.as_deref().unwrap_or("")),
        RetainPlace::Http(_) if da => "i dokumentsystemet (HTTP-opslag)".to_string(),
        RetainPlace::Http(_) => "in the document system (HTTP check)".to_string(),
    };
    let ages: Vec<String> = r
        .ages
        .iter()
        .map(|a| crate::config::HumanDuration(*a).to_string())
        .collect();
    let (kept_at, cols) = if da {
        (
            "Kanariefugle gemmes",
            ["Alder", "Forfalder", "Resultat", "Set", "Detalje"],
        )
    } else {
        ("Canaries kept", ["Age", "Due", "Result", "Checked", "Detail"])
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "<section class=\"retention\"><h2>{title}</h2><p>{kept_at} {} · {}</p>",
        esc(&place),
        esc(&ages.join(", "))
    );
    if checks.is_empty() {
        out.push_str("</section>");
        return out;
    }
    let _ = write!(out, "<table><thead><tr>");
    for c in cols {
        let _ = write!(out, "<th>{c}</th>");
    }
    out.push_str("</tr></thead><tbody>");
    for k in checks {
        let result = match (k.state.as_str(), k.result.as_deref()) {
            ("due", _) if k.attempts > 0 => format!("due (retrying, {} tries)", k.attempts),
            ("due", _) => "due".to_string(),
            ("skipped", _) => "skipped".to_string(),
            (_, Some(r)) => r.to_string(),
            (s, None) => s.to_string(),
        };
        let _ = write!(
            out,
            "<tr data-verdict=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"detail\">{}<div class=\"muted\">{}</div></td></tr>",
            esc(k.result.as_deref().unwrap_or(&k.state)),
            esc(&k.age),
            time(k.due_at),
            esc(&result),
            k.checked_at.map(time).unwrap_or_else(|| "–".into()),
            esc(k.detail.as_deref().unwrap_or("")),
            esc(&k.probe_id)
        );
    }
    out.push_str("</tbody></table></section>");
    out
}
