//! Opsgenie Alert API v2.
//!
//! A trigger or reminder creates an alert (`POST {base}/v2/alerts`) whose
//! alias is the incident's dedup key: Opsgenie de-duplicates a second create
//! with the alias of an open alert (it counts it instead of opening another).
//! A resolve closes the alert by alias
//! (`POST {base}/v2/alerts/{alias}/close?identifierType=alias`). The API key
//! travels only in the `Authorization: GenieKey <key>` header.

use serde_json::{json, Map};

use super::{missing, truncate};
use super::{rfc3339, NotifierConfig, Page, PageEvent, Request};

/// The public (US) API; EU accounts use `https://api.eu.opsgenie.com`.
pub const DEFAULT_BASE: &str = "https://api.opsgenie.com";

// Field limits from the Alert API documentation.
const MESSAGE_MAX: usize = 130;
const ALIAS_MAX: usize = 512;
const DESCRIPTION_MAX: usize = 15_000;
const TAG_MAX: usize = 50;
const ENTITY_MAX: usize = 512;
const SOURCE_MAX: usize = 100;
const NOTE_MAX: usize = 25_000;
const USER_MAX: usize = 100;

pub fn request(n: &NotifierConfig, page: &Page) -> Result<Request, String> {
    let api_key = n.api_key.as_ref().ok_or_else(|| missing(n, "api_key"))?;
    let base = n.url.as_deref().unwrap_or(DEFAULT_BASE).trim_end_matches('/');
    // The alias is cut without an ellipsis: the same key always gives the same alias.
    let alias: String = page.dedup_key.chars().take(ALIAS_MAX).collect();
    let source = truncate(&page.source, SOURCE_MAX);
    let (url, body) = match page.event {
        PageEvent::Trigger | PageEvent::Reminder => {
            let mut details = Map::new();
            details.insert("channel".into(), json!(page.channel));
            details.insert("owner".into(), json!(page.owner));
            details.insert("target".into(), json!(page.target));
            details.insert("verdict".into(), json!(page.verdict));
            if let Some(token) = &page.probe_token {
                details.insert("probe_token".into(), json!(token));
            }
            let tags: Vec<String> = ["postcanary", &page.channel, &page.owner, &page.verdict]
                .iter()
                .map(|t| truncate(t, TAG_MAX))
                .collect();
            let body = json!({
                "message": truncate(&page.summary, MESSAGE_MAX),
                "alias": alias,
                "description": truncate(&description(page), DESCRIPTION_MAX),
                "tags": tags,
                "details": details,
                "entity": truncate(&page.channel, ENTITY_MAX),
                "source": source,
                "priority": "P1",
            });
            (format!("{base}/v2/alerts"), body)
        }
        PageEvent::Resolve => {
            let body = json!({
                "source": source,
                "note": truncate(&format!("Resolved: {}", page.summary), NOTE_MAX),
            });
            let url = format!("{base}/v2/alerts/{}/close?identifierType=alias", encode_path(&alias));
            (url, body)
        }
        PageEvent::Acknowledge => {
            let mut body = Map::new();
            if let Some(by) = &page.by {
                body.insert("user".into(), json!(truncate(by, USER_MAX)));
            }
            body.insert("source".into(), json!(source));
            body.insert(
                "note".into(),
                json!(truncate(
                    &format!("Acknowledged in postcanary: {}", page.detail),
                    NOTE_MAX
                )),
            );
            let url = format!(
                "{base}/v2/alerts/{}/acknowledge?identifierType=alias",
                encode_path(&alias)
            );
            (url, serde_json::Value::Object(body))
        }
    };
    let body = serde_json::to_vec(&body).map_err(|e| format!("opsgenie notifier `{}`: {e}", n.name))?;
    Ok(Request {
        url,
        headers: vec![("Authorization".to_string(), format!("GenieKey {}", api_key.expose()))],
        body,
    })
}

/// The detail, then the timeline, one line per entry.
fn description(page: &Page) -> String {
    let mut s = page.detail.clone();
    if !page.timeline.is_empty() {
        s.push_str("\n\nTimeline:");
        for e in &page.timeline {
            s.push_str(&format!("\n{} {}: {}", rfc3339(e.at), e.kind, e.detail));
        }
    }
    s
}

/// Percent-encodes everything but RFC 3986 unreserved characters, so the
/// alias (which contains `/`) is one path segment.
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

    fn auth() -> Vec<(String, String)> {
        vec![("Authorization".to_string(), "GenieKey genie-key".to_string())]
    }

    #[test]
    fn trigger_and_reminder_create_the_same_alert() {
        let mut n = notifier(NotifierKind::Opsgenie);
        n.url = None;
        for event in [PageEvent::Trigger, PageEvent::Reminder] {
            let req = request(&n, &page(event)).unwrap();
            assert_eq!(req.url, "https://api.opsgenie.com/v2/alerts");
            assert_eq!(req.headers, auth());
            assert_eq!(
                body(&req),
                json!({
                    "message": "Social og Familie (e-mail): missed - nothing arrived before the deadline",
                    "alias": "postcanary/social-family-mail/7",
                    "description": "nothing arrived before the deadline\n\nTimeline:\n\
                        2026-11-18T10:51:40.000Z sent: 250 2.0.0 Ok: queued as 4XyZ\n\
                        2026-11-18T11:06:40.000Z verdict: missed: nothing arrived before the deadline",
                    "tags": ["postcanary", "social-family-mail", "social-og-familie", "missed"],
                    "details": {
                        "channel": "social-family-mail",
                        "owner": "social-og-familie",
                        "target": "socialogfamilie@kommune.example",
                        "verdict": "missed",
                        "probe_token": "pc-01KB0000000000000000000000-0123456789abcdef",
                    },
                    "entity": "social-family-mail",
                    "source": "canary-01",
                    "priority": "P1",
                })
            );
        }
    }

    #[test]
    fn resolve_closes_by_encoded_alias() {
        let mut n = notifier(NotifierKind::Opsgenie);
        n.url = Some("https://api.eu.opsgenie.com/".into());
        let req = request(&n, &page(PageEvent::Resolve)).unwrap();
        assert_eq!(
            req.url,
            "https://api.eu.opsgenie.com/v2/alerts/postcanary%2Fsocial-family-mail%2F7/close?identifierType=alias"
        );
        assert_eq!(req.headers, auth());
        assert_eq!(
            body(&req),
            json!({
                "source": "canary-01",
                "note": "Resolved: Social og Familie (e-mail): missed - nothing arrived before the deadline",
            })
        );
    }

    #[test]
    fn acknowledge_acknowledges_by_encoded_alias_with_user_and_note() {
        let mut n = notifier(NotifierKind::Opsgenie);
        n.url = None;
        let mut p = page(PageEvent::Acknowledge);
        p.detail = "looking at the relay".into();
        let req = request(&n, &p).unwrap();
        assert_eq!(
            req.url,
            "https://api.opsgenie.com/v2/alerts/postcanary%2Fsocial-family-mail%2F7/acknowledge?identifierType=alias"
        );
        assert_eq!(req.headers, auth());
        assert_eq!(
            body(&req),
            json!({
                "user": "anne",
                "source": "canary-01",
                "note": "Acknowledged in postcanary: looking at the relay",
            })
        );
        p.by = None;
        assert!(body(&request(&n, &p).unwrap()).get("user").is_none());
    }

    #[test]
    fn configured_base_is_used() {
        let req = request(&notifier(NotifierKind::Opsgenie), &page(PageEvent::Trigger)).unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9/hook/v2/alerts");
    }

    #[test]
    fn limits_are_kept() {
        let mut p = page(PageEvent::Trigger);
        p.summary = "å".repeat(500);
        p.dedup_key = format!("postcanary/{}/7", "k".repeat(600));
        p.detail = "d".repeat(20_000);
        p.probe_token = None;
        let req = request(&notifier(NotifierKind::Opsgenie), &p).unwrap();
        let b = body(&req);
        let message = b["message"].as_str().unwrap();
        assert_eq!(message.chars().count(), 130);
        assert!(message.ends_with('…'));
        let alias = b["alias"].as_str().unwrap();
        assert_eq!(alias.chars().count(), 512);
        assert!(p.dedup_key.starts_with(alias));
        assert_eq!(b["description"].as_str().unwrap().chars().count(), 15_000);
        assert!(b["details"].get("probe_token").is_none());

        let mut r = p.clone();
        r.event = PageEvent::Resolve;
        let req = request(&notifier(NotifierKind::Opsgenie), &r).unwrap();
        assert!(req.url.contains(&encode_path(alias)));
    }

    #[test]
    fn encode_path_escapes_reserved_bytes() {
        assert_eq!(encode_path("a/b c?d#é~_.-"), "a%2Fb%20c%3Fd%23%C3%A9~_.-");
    }

    #[test]
    fn missing_api_key_is_an_error() {
        let mut n = notifier(NotifierKind::Opsgenie);
        n.api_key = None;
        for event in [PageEvent::Trigger, PageEvent::Resolve] {
            assert_eq!(
                request(&n, &page(event)),
                Err("opsgenie notifier `oncall`: missing api_key".to_string())
            );
        }
    }

    #[test]
    fn the_key_is_only_in_the_header() {
        for event in [PageEvent::Trigger, PageEvent::Reminder, PageEvent::Resolve] {
            let req = request(&notifier(NotifierKind::Opsgenie), &page(event)).unwrap();
            let text = String::from_utf8(req.body).unwrap();
            assert!(!text.contains("genie-key") && !text.contains("R0UT1NGKEY") && !text.contains("hmac-key"));
            assert!(!req.url.contains("genie-key"));
        }
    }
}
