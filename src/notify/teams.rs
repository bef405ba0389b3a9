//! Microsoft Teams through a Workflows ("When a Teams webhook request is
//! received") incoming webhook, the replacement of the retired Office 365
//! connectors. The body is a `message` with one Adaptive Card 1.4 attachment.
//! The webhook URL is the credential; it is never echoed anywhere else.

use serde_json::{json, Value};

use super::{missing, truncate};
use super::{rfc3339, title, NotifierConfig, Page, Request};

/// Keeps a very long detail from pushing the card over the Workflows payload
/// limit (about 28 KB).
const DETAIL_MAX: usize = 10_000;

pub fn request(n: &NotifierConfig, page: &Page) -> Result<Request, String> {
    let url = n.url.clone().ok_or_else(|| missing(n, "url"))?;
    let body = json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card(page),
        }],
    });
    let body = serde_json::to_vec(&body).map_err(|e| format!("teams notifier `{}`: {e}", n.name))?;
    Ok(Request {
        url,
        headers: Vec::new(),
        body,
    })
}

fn card(page: &Page) -> Value {
    let fact = |title: &str, value: &str| json!({ "title": title, "value": value });
    json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": title(page),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": true,
            },
            {
                "type": "FactSet",
                "facts": [
                    fact("Channel", &format!("{} ({})", page.channel_name, page.channel)),
                    fact("Owner", &page.owner),
                    fact("Target", &page.target),
                    fact("Verdict", &page.verdict),
                    fact("Opened", &rfc3339(page.opened_at)),
                    fact("Incident dedup key", &page.dedup_key),
                ],
            },
            {
                "type": "TextBlock",
                "text": truncate(&page.detail, DETAIL_MAX),
                "wrap": true,
            },
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures::{notifier, page};
    use crate::notify::{NotifierKind, PageEvent};

    fn expected(title: &str, verdict: &str) -> Value {
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": title, "weight": "Bolder", "size": "Medium", "wrap": true},
                        {"type": "FactSet", "facts": [
                            {"title": "Channel", "value": "Social og Familie (e-mail) (social-family-mail)"},
                            {"title": "Owner", "value": "social-og-familie"},
                            {"title": "Target", "value": "socialogfamilie@kommune.example"},
                            {"title": "Verdict", "value": verdict},
                            {"title": "Opened", "value": "2026-11-18T11:06:40.000Z"},
                            {"title": "Incident dedup key", "value": "postcanary/social-family-mail/7"},
                        ]},
                        {"type": "TextBlock", "text": "nothing arrived before the deadline", "wrap": true},
                    ],
                },
            }],
        })
    }

    const SUMMARY: &str = "Social og Familie (e-mail): missed - nothing arrived before the deadline";

    #[test]
    fn every_event_builds_the_card() {
        let n = notifier(NotifierKind::Teams);
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
    fn long_detail_is_cut() {
        let mut p = page(PageEvent::Trigger);
        p.detail = "é".repeat(DETAIL_MAX + 5);
        let req = request(&notifier(NotifierKind::Teams), &p).unwrap();
        let got: Value = serde_json::from_slice(&req.body).unwrap();
        let text = got["attachments"][0]["content"]["body"][2]["text"].as_str().unwrap();
        assert_eq!(text.chars().count(), DETAIL_MAX);
    }

    #[test]
    fn missing_url_is_an_error() {
        let mut n = notifier(NotifierKind::Teams);
        n.url = None;
        assert_eq!(
            request(&n, &page(PageEvent::Trigger)),
            Err("teams notifier `oncall`: missing url".to_string())
        );
    }

    #[test]
    fn no_secret_in_the_body() {
        for event in [PageEvent::Trigger, PageEvent::Reminder, PageEvent::Resolve] {
            let req = request(&notifier(NotifierKind::Teams), &page(event)).unwrap();
            let text = String::from_utf8(req.body).unwrap();
            for s in ["R0UT1NGKEY", "genie-key", "hmac-key", "127.0.0.1"] {
                assert!(!text.contains(s), "{s}");
            }
        }
    }
}
