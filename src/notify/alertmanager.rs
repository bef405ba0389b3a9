//! Prometheus Alertmanager API v2: `POST {url}/api/v2/alerts` with a JSON
//! array holding one alert.
//!
//! Alertmanager identifies an alert by its label set; the incident's dedup key
//! is a label, so trigger, reminders and resolve all address the same alert.
//! A trigger or reminder sends no `endsAt`; a resolve sends `endsAt` = the
//! page's time, which is in the past when it arrives, so Alertmanager resolves
//! the alert. Note: an alert without `endsAt` is auto-resolved by Alertmanager
//! after its `resolve_timeout` (default 5m) unless it is sent again; see
//! `docs/notifiers.md`.

use serde_json::{json, Map};

use super::missing;
use super::{rfc3339, NotifierConfig, Page, PageEvent, Request};

pub fn request(n: &NotifierConfig, page: &Page) -> Result<Request, String> {
    let base = n.url.as_deref().ok_or_else(|| missing(n, "url"))?;
    let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
    let alertname = if page.channel == "postcanary" {
        "PostcanaryDegraded"
    } else {
        "PostcanaryChannelFailing"
    };
    let mut annotations = Map::new();
    annotations.insert("summary".into(), json!(page.summary));
    annotations.insert("description".into(), json!(page.detail));
    annotations.insert("target".into(), json!(page.target));
    annotations.insert("verdict".into(), json!(page.verdict));
    if let Some(token) = &page.probe_token {
        annotations.insert("probe_token".into(), json!(token));
    }
    let mut alert = Map::new();
    alert.insert(
        "labels".into(),
        json!({
            "alertname": alertname,
            "channel": page.channel,
            "owner": page.owner,
            "severity": "page",
            "dedup_key": page.dedup_key,
        }),
    );
    alert.insert("annotations".into(), annotations.into());
    alert.insert("startsAt".into(), json!(rfc3339(page.opened_at)));
    if page.event == PageEvent::Resolve {
        alert.insert("endsAt".into(), json!(rfc3339(page.at)));
    }
    let body = serde_json::to_vec(&json!([alert])).map_err(|e| format!("alertmanager notifier `{}`: {e}", n.name))?;
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

    fn labels() -> Value {
        json!({
            "alertname": "PostcanaryChannelFailing",
            "channel": "social-family-mail",
            "owner": "social-og-familie",
            "severity": "page",
            "dedup_key": "postcanary/social-family-mail/7",
        })
    }

    fn annotations(verdict: &str) -> Value {
        json!({
            "summary": "Social og Familie (e-mail): missed - nothing arrived before the deadline",
            "description": "nothing arrived before the deadline",
            "target": "socialogfamilie@kommune.example",
            "verdict": verdict,
            "probe_token": "pc-01KB0000000000000000000000-0123456789abcdef",
        })
    }

    #[test]
    fn trigger_and_reminder_have_no_ends_at() {
        let mut n = notifier(NotifierKind::Alertmanager);
        n.url = Some("http://alertmanager:9093/".into());
        for event in [PageEvent::Trigger, PageEvent::Reminder] {
            let req = request(&n, &page(event)).unwrap();
            assert_eq!(req.url, "http://alertmanager:9093/api/v2/alerts");
            assert!(req.headers.is_empty());
            let got: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(
                got,
                json!([{
                    "labels": labels(),
                    "annotations": annotations("missed"),
                    "startsAt": "2026-11-18T11:06:40.000Z",
                }])
            );
        }
    }

    #[test]
    fn resolve_sets_ends_at_to_the_page_time() {
        let req = request(&notifier(NotifierKind::Alertmanager), &page(PageEvent::Resolve)).unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9/hook/api/v2/alerts");
        assert!(req.headers.is_empty());
        let got: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            got,
            json!([{
                "labels": labels(),
                "annotations": annotations("delivered"),
                "startsAt": "2026-11-18T11:06:40.000Z",
                "endsAt": "2026-11-18T11:07:40.000Z",
            }])
        );
    }

    #[test]
    fn own_degradation_has_its_own_alertname_and_no_token() {
        let mut p = page(PageEvent::Trigger);
        p.channel = "postcanary".into();
        p.probe_token = None;
        let req = request(&notifier(NotifierKind::Alertmanager), &p).unwrap();
        let got: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(got[0]["labels"]["alertname"], json!("PostcanaryDegraded"));
        assert_eq!(got[0]["labels"]["channel"], json!("postcanary"));
        assert!(got[0]["annotations"].get("probe_token").is_none());
        assert!(got[0].get("generatorURL").is_none());
    }

    #[test]
    fn missing_url_is_an_error() {
        let mut n = notifier(NotifierKind::Alertmanager);
        n.url = None;
        assert_eq!(
            request(&n, &page(PageEvent::Trigger)),
            Err("alertmanager notifier `oncall`: missing url".to_string())
        );
    }

    #[test]
    fn no_secret_in_the_body() {
        let req = request(&notifier(NotifierKind::Alertmanager), &page(PageEvent::Trigger)).unwrap();
        let text = String::from_utf8(req.body).unwrap();
        for s in ["hmac-key", "R0UT1NGKEY", "genie-key"] {
            assert!(!text.contains(s), "{s}");
        }
    }
}
