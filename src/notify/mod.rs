//! Notifiers: where pages go. Each kind has its own file with a pure function
//! that turns a [`Page`] into the request (or mail) that kind expects; sending,
//! retries and ordering are shared (see `outbox`). Adding a kind means: a file
//! here, a variant of [`NotifierKind`], and one arm in [`build_request`].

pub mod alertmanager;
pub mod email;
pub mod opsgenie;
pub mod pagerduty;
pub mod slack;
pub mod teams;
pub mod webhook;

pub use crate::config::{NotifierConfig, NotifierKind};
pub use crate::page::{rfc3339, Page, PageEvent, TimelineEntry};

/// An HTTP request a notifier wants sent: always a POST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    /// Extra headers (Content-Type is always `application/json`).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Builds the HTTP request for an HTTP notifier. Pure: no clock, no network.
/// `Err` names what is missing or unusable; e-mail is not HTTP and is
/// refused here (see [`email::message`]).
pub fn build_request(n: &NotifierConfig, page: &Page) -> Result<Request, String> {
    match n.kind {
        NotifierKind::Pagerduty => pagerduty::request(n, page),
        NotifierKind::Opsgenie => opsgenie::request(n, page),
        NotifierKind::Teams => teams::request(n, page),
        NotifierKind::Slack => slack::request(n, page),
        NotifierKind::Webhook => webhook::request(n, page),
        NotifierKind::Alertmanager => alertmanager::request(n, page),
        NotifierKind::Email => Err("e-mail notifiers send mail, not HTTP requests".into()),
    }
}

// Helpers shared by the payload builders.

/// The incident's timeline as JSON: `[{"at": rfc3339, "kind", "detail"}]`.
pub(crate) fn timeline(page: &Page) -> serde_json::Value {
    serde_json::Value::Array(
        page.timeline
            .iter()
            .map(|e| serde_json::json!({ "at": rfc3339(e.at), "kind": e.kind, "detail": e.detail }))
            .collect(),
    )
}

/// The error for a config value a notifier needs but does not have.
pub(crate) fn missing(n: &NotifierConfig, key: &str) -> String {
    format!("{} notifier `{}`: missing {key}", n.kind.as_str(), n.name)
}

/// `s` cut to at most `max` characters (not bytes), on a character boundary;
/// a cut text ends in `…` (counted in `max`).
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some(_) if max == 0 => String::new(),
        Some(_) => {
            // max >= 1 here: keep max - 1 characters and the ellipsis.
            let end = s.char_indices().nth(max - 1).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..end])
        }
    }
}

/// The title line: an emoji by event, then the summary.
pub(crate) fn title(page: &Page) -> String {
    match page.event {
        PageEvent::Trigger => format!("🔴 {}", page.summary),
        PageEvent::Reminder => format!("🔁 Still failing: {}", page.summary),
        PageEvent::Resolve => format!("✅ Resolved: {}", page.summary),
        PageEvent::Acknowledge => format!(
            "👀 Acknowledged by {}: {}",
            page.by.as_deref().unwrap_or("an operator"),
            page.summary
        ),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::Duration;

    use super::*;
    use crate::config::Secret;

    /// A page as the incident logic makes it, for the payload tests.
    pub fn page(event: PageEvent) -> Page {
        Page {
            event,
            dedup_key: "postcanary/social-family-mail/7".into(),
            incident_id: 7,
            channel: "social-family-mail".into(),
            channel_name: "Social og Familie (e-mail)".into(),
            owner: "social-og-familie".into(),
            target: "socialogfamilie@kommune.example".into(),
            verdict: if event == PageEvent::Resolve {
                "delivered"
            } else {
                "missed"
            }
            .into(),
            detail: "nothing arrived before the deadline".into(),
            summary: "Social og Familie (e-mail): missed - nothing arrived before the deadline".into(),
            opened_at: 1_795_000_000_000,
            at: 1_795_000_060_000,
            probe_token: Some("pc-01KB0000000000000000000000-0123456789abcdef".into()),
            timeline: vec![
                TimelineEntry {
                    at: 1_794_999_100_000,
                    kind: "sent".into(),
                    detail: "250 2.0.0 Ok: queued as 4XyZ".into(),
                },
                TimelineEntry {
                    at: 1_795_000_000_000,
                    kind: "verdict".into(),
                    detail: "missed: nothing arrived before the deadline".into(),
                },
            ],
            source: "canary-01".into(),
            by: (event == PageEvent::Acknowledge).then(|| "anne".to_string()),
        }
    }

    pub fn notifier(kind: NotifierKind) -> NotifierConfig {
        NotifierConfig {
            name: "oncall".into(),
            kind,
            url: Some("http://127.0.0.1:9/hook".into()),
            routing_key: Some(Secret::new("R0UT1NGKEY")),
            api_key: Some(Secret::new("genie-key")),
            secret: Some(Secret::new("hmac-key")),
            via: Some("mailer".into()),
            to: vec!["oncall@kommune.example".into()],
            fallback: None,
            timeout: Duration::from_secs(10),
        }
    }
}
