//! `[[notifier]]`, `[[owner]]`, `[[silence]]` and `[paging]`: where pages go,
//! to whom, and when not.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use super::channel::Channel;
use super::loader::{check_name, check_notify_list, Loader, Origin};
use super::ops::{build_escalation, Escalation};
use super::values::{HumanDuration, Secret, SecretRef};

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

    /// Whether an acknowledgement is forwarded to this kind: PagerDuty and
    /// Opsgenie acknowledge their incident, chat, webhook and e-mail get a
    /// message; Alertmanager has no acknowledgement (it would re-fire).
    pub fn forwards_acknowledge(self) -> bool {
        !matches!(self, NotifierKind::Alertmanager)
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

/// Paging policy.
#[derive(Debug, Clone)]
pub struct PagingConfig {
    /// Notifiers for pages about the prober itself and for channels that name none.
    pub default_notify: Vec<String>,
    /// Re-page an open incident this often; `None`: never.
    pub reminder_interval: Option<Duration>,
    /// Use a notifier's fallback once it has failed for this long.
    pub fallback_after: Duration,
    /// Escalation of unacknowledged incidents (`[paging]`); owners may override it.
    pub escalation: Option<Escalation>,
    /// Per-owner escalation (`[[owner]]` `escalate_after`/`escalate_to`).
    pub owner_escalation: Vec<(String, Escalation)>,
}

impl PagingConfig {
    /// The escalation that applies to an owner's incidents.
    pub fn escalation_for(&self, owner: &str) -> Option<&Escalation> {
        self.owner_escalation
            .iter()
            .find(|(o, _)| o == owner)
            .map(|(_, e)| e)
            .or(self.escalation.as_ref())
    }
}

/// A maintenance window: failures are recorded but not paged until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Silence {
    pub channel: Option<String>,
    pub owner: Option<String>,
    pub from: Option<crate::verdict::Millis>,
    pub until: crate::verdict::Millis,
    pub reason: String,
}

impl Silence {
    pub fn covers(&self, channel: &str, owner: &str, at: crate::verdict::Millis) -> bool {
        let who = self.channel.as_deref() == Some(channel) || self.owner.as_deref() == Some(owner);
        who && self.from.is_none_or(|f| f <= at) && at < self.until
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotifier {
    pub(super) name: String,
    pub(super) kind: NotifierKind,
    pub(super) url: Option<String>,
    pub(super) routing_key: Option<SecretRef>,
    pub(super) api_key: Option<SecretRef>,
    pub(super) secret: Option<SecretRef>,
    pub(super) via: Option<String>,
    #[serde(default)]
    pub(super) to: Vec<String>,
    pub(super) fallback: Option<String>,
    pub(super) timeout: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOwner {
    pub(super) name: String,
    pub(super) notify: Vec<String>,
    /// Page `escalate_to` when this owner's incident is not acknowledged in time
    /// (overrides `[paging]`).
    pub(super) escalate_after: Option<HumanDuration>,
    /// Notifiers paged one after another, each `escalate_after` later.
    pub(super) escalate_to: Option<Vec<String>>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSilence {
    pub(super) channel: Option<String>,
    pub(super) owner: Option<String>,
    pub(super) from: Option<String>,
    pub(super) until: String,
    pub(super) reason: String,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPaging {
    pub(super) reminder_interval: Option<HumanDuration>,
    pub(super) fallback_after: Option<HumanDuration>,
    /// Page `escalate_to` when an incident is not acknowledged this long after its trigger page.
    pub(super) escalate_after: Option<HumanDuration>,
    /// Notifiers paged one after another, each `escalate_after` later.
    pub(super) escalate_to: Option<Vec<String>>,
}

/// `url` may be a literal or a secret reference; webhook URLs of Slack and
/// Teams carry their credential and must be a reference.
pub(super) fn notifier_url(loader: &mut Loader, origin: &Origin, kind: NotifierKind, raw: &str) -> Option<String> {
    if raw.starts_with("env:") || raw.starts_with("file:") {
        let r: SecretRef = match raw.parse() {
            Ok(r) => r,
            Err(m) => {
                loader.err(origin, "notifier", "url", m);
                return None;
            }
        };
        return loader
            .secret(origin, "notifier", "url", &r)
            .map(|s| s.expose().to_string());
    }
    if matches!(kind, NotifierKind::Slack | NotifierKind::Teams) {
        loader.err(
            origin,
            "notifier",
            "url",
            format!(
                "a {} webhook URL carries its credential; give it as \"env:NAME\" or \"file:PATH\"",
                kind.as_str()
            ),
        );
        return None;
    }
    if !(raw.starts_with("http://") || raw.starts_with("https://")) {
        loader.err(origin, "notifier", "url", format!("{raw:?} is not an http(s) URL"));
        return None;
    }
    Some(raw.to_string())
}

pub(super) fn build_notifiers(
    loader: &mut Loader,
    raw: Vec<(Origin, RawNotifier)>,
    senders: &[String],
) -> Vec<NotifierConfig> {
    const A: &str = "notifier";
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let names: Vec<String> = raw.iter().map(|(_, n)| n.name.clone()).collect();
    for (origin, n) in raw {
        check_name(loader, &mut seen, &origin, A, &n.name);
        let url = n.url.as_deref().and_then(|u| notifier_url(loader, &origin, n.kind, u));
        let mut secret = |key: &str, r: &Option<SecretRef>| r.as_ref().and_then(|r| loader.secret(&origin, A, key, r));
        let routing_key = secret("routing_key", &n.routing_key);
        let api_key = secret("api_key", &n.api_key);
        let hmac = secret("secret", &n.secret);
        let need = |present: bool, key: &str, loader: &mut Loader| {
            if !present {
                loader.err(&origin, A, key, format!("kind = \"{}\" needs `{key}`", n.kind.as_str()));
            }
        };
        match n.kind {
            NotifierKind::Pagerduty => need(n.routing_key.is_some(), "routing_key", loader),
            NotifierKind::Opsgenie => need(n.api_key.is_some(), "api_key", loader),
            NotifierKind::Teams | NotifierKind::Slack | NotifierKind::Webhook | NotifierKind::Alertmanager => {
                need(n.url.is_some(), "url", loader)
            }
            NotifierKind::Email => {
                need(!n.to.is_empty(), "to", loader);
                match &n.via {
                    None => need(false, "via", loader),
                    Some(v) if !senders.contains(v) => {
                        loader.err(&origin, A, "via", format!("no [[sender]] named {v:?}"))
                    }
                    Some(_) => {}
                }
                for t in &n.to {
                    if t.parse::<lettre::Address>().is_err() {
                        loader.err(&origin, A, "to", format!("invalid address {t:?}"));
                    }
                }
            }
        }
        match &n.fallback {
            Some(f) if f == &n.name => loader.err(&origin, A, "fallback", "a notifier cannot be its own fallback"),
            Some(f) if !names.contains(f) => loader.err(&origin, A, "fallback", format!("no [[notifier]] named {f:?}")),
            _ => {}
        }
        out.push(NotifierConfig {
            name: n.name,
            kind: n.kind,
            url,
            routing_key,
            api_key,
            secret: hmac,
            via: n.via,
            to: n.to,
            fallback: n.fallback,
            timeout: n
                .timeout
                .map(HumanDuration::as_duration)
                .unwrap_or(Duration::from_secs(10)),
        });
    }
    out
}

pub(super) fn build_owners(
    loader: &mut Loader,
    raw: Vec<(Origin, RawOwner)>,
    notifiers: &[String],
    escalations: &mut Vec<(String, Escalation)>,
) -> Vec<(String, Vec<String>)> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (origin, o) in raw {
        if let Some(e) = build_escalation(
            loader,
            Some(&origin),
            "owner",
            o.escalate_after,
            o.escalate_to.clone(),
            notifiers,
        ) {
            escalations.push((o.name.clone(), e));
        }
        if !seen.insert(o.name.clone()) {
            loader.err(
                &origin,
                "owner",
                "name",
                format!("owner {:?} is already defined", o.name),
            );
        }
        check_notify_list(loader, &origin, "owner", &o.notify, notifiers);
        out.push((o.name, o.notify));
    }
    out
}

pub(super) fn parse_time(s: &str) -> Result<crate::verdict::Millis, String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("invalid time {s:?}: {e} (use RFC 3339, e.g. \"2026-11-23T06:00:00+01:00\")"))
}

pub(super) fn build_silences(
    loader: &mut Loader,
    raw: Vec<(Origin, RawSilence)>,
    channels: &[Channel],
) -> Vec<Silence> {
    const A: &str = "silence";
    let mut out = Vec::new();
    for (origin, r) in raw {
        match (&r.channel, &r.owner) {
            (None, None) | (Some(_), Some(_)) => loader.err(
                &origin,
                A,
                "channel",
                "a silence names exactly one of `channel` or `owner`",
            ),
            (Some(c), None) if !channels.iter().any(|ch| &ch.id == c) => {
                loader.err(&origin, A, "channel", format!("no channel with id {c:?}"))
            }
            (None, Some(o)) if !channels.iter().any(|ch| &ch.owner == o) => {
                loader.err(&origin, A, "owner", format!("no channel has owner {o:?}"))
            }
            _ => {}
        }
        let until = parse_time(&r.until)
            .map_err(|m| loader.err(&origin, A, "until", m))
            .ok();
        let from = match &r.from {
            Some(f) => match parse_time(f) {
                Ok(t) => Some(t),
                Err(m) => {
                    loader.err(&origin, A, "from", m);
                    None
                }
            },
            None => None,
        };
        if let Some(until) = until {
            out.push(Silence {
                channel: r.channel,
                owner: r.owner,
                from,
                until,
                reason: r.reason,
            });
        }
    }
    out
}
