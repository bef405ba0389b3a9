//! PagerDuty Events API v2 (`POST https://events.pagerduty.com/v2/enqueue`).
//!
//! A trigger and every reminder are sent as `event_action: "trigger"` with the
//! incident's dedup key: PagerDuty folds them into the one open incident. A
//! resolve closes it. The routing key goes in the body, where the API wants it.
//!
//! This file also holds two small helpers the other notifier kinds share.

use serde_json::json;

use super::{missing, rfc3339, timeline, truncate, NotifierConfig, Page, PageEvent, Request};

/// The public Events API v2 endpoint.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// PagerDuty truncates (or refuses) longer summaries.
pub const SUMMARY_MAX: usize = 1024;

pub fn request(n: &NotifierConfig, page: &Page) -> Result<Request, String> {
    let routing_key = n.routing_key.as_ref().ok_or_else(|| missing(n, "routing_key"))?;
    let url = n.url.clone().unwrap_or_else(|| DEFAULT_URL.to_string());
    let body = match page.event {
        PageEvent::Resolve => json!({
            "routing_key": routing_key.expose(),
            "event_action": "resolve",
            "dedup_key": page.dedup_key,
        }),
        // The same dedup key: PagerDuty acknowledges the open incident it belongs to.
        PageEvent::Acknowledge => json!({
            "routing_key": routing_key.expose(),
            "event_action": "acknowledge",
            "dedup_key": page.dedup_key,
        }),
        PageEvent::Trigger | PageEvent::Reminder => json!({
            "routing_key": routing_key.expose(),
            "event_action": "trigger",
            "dedup_key": page.dedup_key,
            "client": "postcanary",
            "payload": {
                "summary": truncate(&page.summary, SUMMARY_MAX),
                "source": page.source,
                "severity": "critical",
                "timestamp": rfc3339(page.at),
                "component": page.channel,
                "group": page.owner,
                "class": page.verdict,
                "custom_details": {
                    "channel": page.channel,
                    "channel_name": page.channel_name,
                    "owner": page.owner,
                    "target": page.target,
                    "verdict": page.verdict,
                    "detail": page.detail,
                    "opened_at": rfc3339(page.opened_at),
                    "probe_token": page.probe_token,
                    "timeline": timeline(page),
                },
            },
        }),
    };
    let body = serde_json::to_vec(&body).map_err(|e| format!("pagerduty notifier `{}`: {e}", n.name))?;
    Ok(Request {
        url,
        headers: Vec::new(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures::{notifier, page};
    use crate::notify::NotifierKind;
    use serde_json::Value;

    fn body(req: &Request) -> Value {
        serde_json::from_slice(&req.body).unwrap()
    }

    fn trigger_body(action_page: &Page) -> Value {
        json!({
            "routing_key": "R0UT1NGKEY",
            "event_action": "trigger",
            "dedup_key": "postcanary/social-family-mail/7",
            "client": "postcanary",
            "payload": {
                "summary": "Social og Familie (e-mail): missed - nothing arrived before the deadline",
                "source": "canary-01",
                "severity": "critical",
                "timestamp": "2026-11-18T11:07:40.000Z",
                "component": "social-family-mail",
                "group": "social-og-familie",
                "class": action_page.verdict,
                "custom_details": {
                    "channel": "social-family-mail",
                    "channel_name": "Social og Familie (e-mail)",
                    "owner": "social-og-familie",
                    "target": "socialogfamilie@kommune.example",
                    "verdict": "missed",
                    "detail": "nothing arrived before the deadline",
                    "opened_at": "2026-11-18T11:06:40.000Z",
                    "probe_token": "pc-01KB0000000000000000000000-0123456789abcdef",
                    "timeline": [
                        {"at": "2026-11-18T10:51:40.000Z", "kind": "sent", "detail": "250 2.0.0 Ok: queued as 4XyZ"},
                        {"at": "2026-11-18T11:06:40.000Z", "kind": "verdict",
                         "detail": "missed: nothing arrived before the deadline"},
                    ],
                },
            },
        })
    }

    #[test]
    fn trigger_and_reminder_are_both_trigger_events() {
        let mut n = notifier(NotifierKind::Pagerduty);
        n.url = None;
        for event in [PageEvent::Trigger, PageEvent::Reminder] {
            let p = page(event);
            let req = request(&n, &p).unwrap();
            assert_eq!(req.url, "https://events.pagerduty.com/v2/enqueue");
            assert!(req.headers.is_empty());
            assert_eq!(body(&req), trigger_body(&p));
        }
    }

    #[test]
    fn resolve_carries_only_the_key_action_and_dedup_key() {
        let mut n = notifier(NotifierKind::Pagerduty);
        n.url = None;
        let req = request(&n, &page(PageEvent::Resolve)).unwrap();
        assert_eq!(req.url, DEFAULT_URL);
        assert!(req.headers.is_empty());
        assert_eq!(
            body(&req),
            json!({
                "routing_key": "R0UT1NGKEY",
                "event_action": "resolve",
                "dedup_key": "postcanary/social-family-mail/7",
            })
        );
    }

    #[test]
    fn acknowledge_is_the_acknowledge_action_with_the_same_dedup_key() {
        let mut n = notifier(NotifierKind::Pagerduty);
        n.url = None;
        let req = request(&n, &page(PageEvent::Acknowledge)).unwrap();
        assert_eq!(req.url, DEFAULT_URL);
        assert!(req.headers.is_empty());
        assert_eq!(
            body(&req),
            json!({
                "routing_key": "R0UT1NGKEY",
                "event_action": "acknowledge",
                "dedup_key": "postcanary/social-family-mail/7",
            })
        );
    }

    #[test]
    fn configured_url_is_used() {
        let req = request(&notifier(NotifierKind::Pagerduty), &page(PageEvent::Trigger)).unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9/hook");
    }

    #[test]
    fn no_probe_token_is_null() {
        let mut p = page(PageEvent::Trigger);
        p.probe_token = None;
        let req = request(&notifier(NotifierKind::Pagerduty), &p).unwrap();
        assert_eq!(body(&req)["payload"]["custom_details"]["probe_token"], Value::Null);
    }

    #[test]
    fn summary_is_cut_to_1024_characters_on_a_char_boundary() {
        let mut p = page(PageEvent::Trigger);
        p.summary = "ø".repeat(2000);
        let req = request(&notifier(NotifierKind::Pagerduty), &p).unwrap();
        let summary = body(&req)["payload"]["summary"].as_str().unwrap().to_string();
        assert_eq!(summary.chars().count(), 1024);
        assert!(summary.ends_with('…'));
        assert!(summary.starts_with("øøø"));

        p.summary = "x".repeat(1024);
        let req = request(&notifier(NotifierKind::Pagerduty), &p).unwrap();
        assert_eq!(body(&req)["payload"]["summary"], json!("x".repeat(1024)));
    }

    #[test]
    fn missing_routing_key_is_an_error() {
        let mut n = notifier(NotifierKind::Pagerduty);
        n.routing_key = None;
        assert_eq!(
            request(&n, &page(PageEvent::Trigger)),
            Err("pagerduty notifier `oncall`: missing routing_key".to_string())
        );
    }

    #[test]
    fn other_secrets_stay_out() {
        for event in [
            PageEvent::Trigger,
            PageEvent::Reminder,
            PageEvent::Resolve,
            PageEvent::Acknowledge,
        ] {
            let req = request(&notifier(NotifierKind::Pagerduty), &page(event)).unwrap();
            let text = String::from_utf8(req.body).unwrap();
            assert!(!text.contains("genie-key") && !text.contains("hmac-key"));
        }
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("æøåæ", 2), "æ…");
        assert_eq!(truncate("", 0), "");
        assert_eq!(truncate("a", 0), "");
        assert_eq!(truncate("🔴🔴", 1), "…");
    }
}
