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

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Secret;
use crate::verdict::Millis;

/// What a page announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageEvent {
    /// A new incident: the channel's first failing verdict.
    Trigger,
    /// The incident is still open after the reminder interval.
    Reminder,
    /// The channel works again.
    Resolve,
}

impl PageEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            PageEvent::Trigger => "trigger",
            PageEvent::Reminder => "reminder",
            PageEvent::Resolve => "resolve",
        }
    }
}

/// One entry of an incident's timeline, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at: Millis,
    pub kind: String,
    pub detail: String,
}

/// Everything a notifier may say about an incident. Built once when the page
/// is written to the outbox and stored there as JSON, so a retry sends
/// exactly what was decided then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub event: PageEvent,
    /// Stable for the whole incident: `postcanary/<channel>/<id of the probe that opened it>` (for the prober's own degradation `postcanary/degraded/<sender>/<probe id>`).
    pub dedup_key: String,
    pub incident_id: i64,
    /// The channel id, or `postcanary` for the prober's own degradation.
    pub channel: String,
    pub channel_name: String,
    pub owner: String,
    /// What was probed: an address (mail) or a URL (form).
    pub target: String,
    /// The verdict that opened the incident, or for a resolve the one that ended it.
    pub verdict: String,
    pub detail: String,
    /// One line for titles: `Social og Familie (e-mail): missed - nothing arrived before the deadline`.
    pub summary: String,
    pub opened_at: Millis,
    /// When this page was made.
    pub at: Millis,
    /// The token of the probe behind the verdict, for finding the evidence.
    pub probe_token: Option<String>,
    pub timeline: Vec<TimelineEntry>,
    /// Which postcanary instance sent it (host name).
    pub source: String,
}

/// The built-in notifier kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    Pagerduty,
    Opsgenie,
    Teams,
    Slack,
    Webhook,
    Email,
    Alertmanager,
}

impl NotifierKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifierKind::Pagerduty => "pagerduty",
            NotifierKind::Opsgenie => "opsgenie",
            NotifierKind::Teams => "teams",
            NotifierKind::Slack => "slack",
            NotifierKind::Webhook => "webhook",
            NotifierKind::Email => "email",
            NotifierKind::Alertmanager => "alertmanager",
        }
    }
}

/// A configured notifier (validated: the keys its kind needs are present).
#[derive(Clone, Debug)]
pub struct NotifierConfig {
    pub name: String,
    pub kind: NotifierKind,
    /// Endpoint. Required for teams, slack, webhook, alertmanager (base URL);
    /// pagerduty and opsgenie default to their public APIs.
    pub url: Option<String>,
    /// PagerDuty Events API v2 integration (routing) key.
    pub routing_key: Option<Secret>,
    /// Opsgenie API key (sent as `Authorization: GenieKey <key>`).
    pub api_key: Option<Secret>,
    /// Webhook: HMAC-SHA256 key for the `X-Postcanary-Signature` header.
    pub secret: Option<Secret>,
    /// Email: the `[[sender]]` to send through (not the probed path).
    pub via: Option<String>,
    /// Email: recipients.
    pub to: Vec<String>,
    /// Another notifier to use when this one keeps failing.
    pub fallback: Option<String>,
    pub timeout: Duration,
}

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
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC, e.g. `2026-11-22T18:42:21.123Z`.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

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
