//! `[[notifier]]`: where pages go, as validated.

use std::time::Duration;

use serde::Deserialize;

use super::Secret;

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
