//! What a page says: the event, the incident it belongs to and its timeline.
//! Written to the outbox as JSON when the incident logic decides, read by
//! every notifier kind and by the readers; plain data, no I/O.

use serde::{Deserialize, Serialize};

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
    /// An operator has taken the incident (stops reminders and escalation).
    Acknowledge,
}

impl PageEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            PageEvent::Trigger => "trigger",
            PageEvent::Reminder => "reminder",
            PageEvent::Resolve => "resolve",
            PageEvent::Acknowledge => "acknowledge",
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
    /// For an acknowledgement: who acknowledged (a `[[server.user]]` name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// Milliseconds since the epoch as RFC 3339 UTC, e.g. `2026-11-22T18:42:21.123Z`.
pub fn rfc3339(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// This machine's name, for the `source` of pages.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postcanary".to_string())
}
