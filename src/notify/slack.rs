//! Slack incoming webhook: `POST <webhook URL>` with a fallback `text` (used
//! for notifications) and Block Kit `blocks`. Every text that Slack parses as
//! mrkdwn has `&`, `<` and `>` escaped as Slack asks, so a detail such as
//! `<!channel>` or `<http://evil|click>` shows as typed instead of pinging or
//! linking. The webhook URL is the credential; it appears nowhere else.

use serde_json::json;

use super::title;
use super::{missing, truncate};
use super::{rfc3339, NotifierConfig, Page, Request};

// Block Kit limits, in characters.
const HEADER_MAX: usize = 150;
const FIELD_MAX: usize = 2000;
const SECTION_MAX: usize = 3000;
const TEXT_MAX: usize = 3000;

pub fn request(n: &NotifierConfig, page: &Page) -> Result<Request, String> {
    let url = n.url.clone().ok_or_else(|| missing(n, "url"))?;
    let field = |label: &str, value: &str| json!({ "type": "mrkdwn", "text": format!("*{label}*\n{}", escape_cut(value, FIELD_MAX - label.len() - 3)) });
    let body = json!({
        "text": escape_cut(&title(page), TEXT_MAX),
        "blocks": [
            {
                "type": "header",
                // plain_text is shown as typed: no mrkdwn, no escaping.
                "text": { "type": "plain_text", "text": truncate(&title(page), HEADER_MAX), "emoji": true },
            },
            {
                "type": "section",
                "fields": [
                    field("Channel", &format!("{} ({})", page.channel_name, page.channel)),
                    field("Owner", &page.owner),
                    field("Verdict", &page.verdict),
                    field("Target", &page.target),
                ],
            },
            {
                "type": "section",
                "text": { "type": "mrkdwn", "text": escape_cut(&page.detail, SECTION_MAX) },
            },
            {
                "type": "context",
                "elements": [{
                    "type": "mrkdwn",
                    "text": format!(
                        "Dedup key {} · opened {}",
                        escape_cut(&page.dedup_key, 1000),
                        rfc3339(page.opened_at)
                    ),
                }],
            },
        ],
    });
    let body = serde_json::to_vec(&body).map_err(|e| format!("slack notifier `{}`: {e}", n.name))?;
    Ok(Request {
        url,
        headers: Vec::new(),
        body,
    })
}

/// Escapes `&`, `<`, `>` for mrkdwn, keeping the result within `max`
/// characters without splitting an entity; a cut text ends in `…`.
fn escape_cut(s: &str, max: usize) -> String {
    let escaped_len: usize = s.chars().map(|c| escaped(c).chars().count()).sum();
    let budget = if escaped_len <= max { max } else { max.saturating_sub(1) };
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let piece = escaped(c);
        let len = piece.chars().count();
        if used + len > budget {
            out.push('…');
            return out;
        }
        out.push_str(&piece);
        used += len;
    }
    out
}

fn escaped(c: char) -> String {
    match c {
        '&' => "&amp;".to_string(),
        '<' => "&lt;".to_string(),
        '>' => "&gt;".to_string(),
        c => c.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures::{notifier, page};
    use crate::notify::{NotifierKind, PageEvent};
    use serde_json::Value;

    const SUMMARY: &str = "Social og Familie (e-mail): missed - nothing arrived before the deadline";

    fn expected(title: &str, verdict: &str) -> Value {
        json!({
            "text": title,
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": true}},
                {"type": "section", "fields": [
                    {"type": "mrkdwn", "text": "*Channel*\nSocial og Familie (e-mail) (social-family-mail)"},
                    {"type": "mrkdwn", "text": "*Owner*\nsocial-og-familie"},
                    {"type": "mrkdwn", "text": format!("*Verdict*\n{verdict}")},
                    {"type": "mrkdwn", "text": "*Target*\nsocialogfamilie@kommune.example"},
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text": "nothing arrived before the deadline"}},
                {"type": "context", "elements": [{"type": "mrkdwn",
                    "text": "Dedup key postcanary/social-family-mail/7 · opened 2026-11-18T11:06:40.000Z"}]},
            ],
        })
    }

    #[test]
    fn every_event_builds_the_message() {
        let n = notifier(NotifierKind::Slack);
        let cases = [
            (PageEvent::Trigger, format!("🔴 {SUMMARY}"), "missed"),
            (PageEvent::Reminder, format!("🔁 Still failing: {SUMMARY}"), "missed"),
            (PageEvent::Resolve, format!("✅ Resolved: {SUMMARY}"), "delivered"),
        ];
        for (event, title, verdict) in cases {
            let req = request(&n, &page(event)).unwrap();
            assert_eq!(req.url, "http://127.0.0.1:9/hook");
            assert!(req.headers.is_empty());
            let got: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(got, expected(&title, verdict), "{event:?}");
        }
    }

    #[test]
    fn mrkdwn_is_escaped_and_plain_text_is_not() {
        let mut p = page(PageEvent::Trigger);
        p.summary = "A&B <!channel>".into();
        p.detail = "550 <user@x> rejected & <http://evil|click>".into();
        p.owner = "r&d".into();
        p.channel_name = "<Mail>".into();
        let req = request(&notifier(NotifierKind::Slack), &p).unwrap();
        let got: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(got["text"], json!("🔴 A&amp;B &lt;!channel&gt;"));
        assert_eq!(got["blocks"][0]["text"]["text"], json!("🔴 A&B <!channel>"));
        assert_eq!(
            got["blocks"][1]["fields"][0]["text"],
            json!("*Channel*\n&lt;Mail&gt; (social-family-mail)")
        );
        assert_eq!(got["blocks"][1]["fields"][1]["text"], json!("*Owner*\nr&amp;d"));
        assert_eq!(
            got["blocks"][2]["text"]["text"],
            json!("550 &lt;user@x&gt; rejected &amp; &lt;http://evil|click&gt;")
        );
    }

    #[test]
    fn limits_are_kept_without_splitting_entities() {
        assert_eq!(escape_cut("a<b", 10), "a&lt;b");
        assert_eq!(escape_cut("a<b", 6), "a&lt;b");
        assert_eq!(escape_cut("a<b", 5), "a…");
        assert_eq!(escape_cut("ab<", 6), "ab&lt;");
        assert_eq!(escape_cut("ab<", 5), "ab…");
        assert_eq!(escape_cut("æøå", 3), "æøå");
        assert_eq!(escape_cut("æøåx", 3), "æø…");

        let mut p = page(PageEvent::Trigger);
        p.summary = "<".repeat(1000);
        p.detail = "&".repeat(1000);
        let req = request(&notifier(NotifierKind::Slack), &p).unwrap();
        let got: Value = serde_json::from_slice(&req.body).unwrap();
        let header = got["blocks"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(header.chars().count(), HEADER_MAX);
        let detail = got["blocks"][2]["text"]["text"].as_str().unwrap();
        assert!(detail.chars().count() <= SECTION_MAX);
        assert!(detail.ends_with("&amp;…"));
        let text = got["text"].as_str().unwrap();
        assert!(text.chars().count() <= TEXT_MAX && text.ends_with("&lt;…"));
    }

    #[test]
    fn missing_url_is_an_error() {
        let mut n = notifier(NotifierKind::Slack);
        n.url = None;
        assert_eq!(
            request(&n, &page(PageEvent::Resolve)),
            Err("slack notifier `oncall`: missing url".to_string())
        );
    }

    #[test]
    fn no_secret_in_the_body() {
        for event in [PageEvent::Trigger, PageEvent::Reminder, PageEvent::Resolve] {
            let req = request(&notifier(NotifierKind::Slack), &page(event)).unwrap();
            let text = String::from_utf8(req.body).unwrap();
            for s in ["R0UT1NGKEY", "genie-key", "hmac-key", "127.0.0.1"] {
                assert!(!text.contains(s), "{s}");
            }
        }
    }
}
