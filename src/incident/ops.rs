//! What operators add to the paging policy: acknowledging an incident (its
//! pages to the notifiers that take them) and escalating one nobody
//! acknowledged in time. Pure functions, like the rest of the policy.

use super::{pages, subject_of, timeline, Subject};
use crate::config::Config;
use crate::ledger::{Event, Incident, IncidentAction, IncidentChange, Pages};
use crate::notify::PageEvent;
use crate::verdict::Millis;

/// The subject with the notifiers its escalation has paged so far added,
/// so that they hear the acknowledgement and the all-clear too.
pub(super) fn with_escalated(config: &Config, subject: &Subject, open: &Incident) -> Subject {
    let mut s = subject.clone();
    if let Some(e) = config.paging.escalation_for(&subject.owner) {
        let paged = usize::try_from(open.escalations).unwrap_or(0).min(e.to.len());
        for n in &e.to[..paged] {
            if !s.notify.contains(n) {
                s.notify.push(n.clone());
            }
        }
    }
    s
}

/// The acknowledge pages of an open incident: one per notifier that was
/// paged for it and whose kind takes acknowledgements (PagerDuty and
/// Opsgenie acknowledge their incident by its dedup key; chat, webhook and
/// e-mail get a message). None when nobody was paged.
pub fn acknowledge_pages(config: &Config, open: &Incident, by: &str, note: &str, now: Millis, source: &str) -> Pages {
    if !open.paged {
        return Vec::new();
    }
    let Some(subject) = subject_of(config, open) else {
        return Vec::new();
    };
    let mut subject = with_escalated(config, &subject, open);
    subject
        .notify
        .retain(|n| config.notifier(n).is_some_and(|n| n.kind.forwards_acknowledge()));
    let detail = if note.is_empty() {
        format!("acknowledged by {by}")
    } else {
        note.to_string()
    };
    let mut out = pages(
        &subject,
        PageEvent::Acknowledge,
        &open.dedup_key,
        open.id,
        &open.verdict,
        &detail,
        open.opened_at,
        now,
        None,
        Vec::new(),
        source,
    );
    for (_, p) in &mut out {
        p.by = Some(by.to_string());
    }
    out
}

/// The next escalation step of an open, paged, unacknowledged incident, if
/// it is due: step k (1-based) pages `escalate_to[k-1]` once the incident
/// has been open k × `escalate_after`.
pub(super) fn escalation_due(
    config: &Config,
    subject: &Subject,
    open: &Incident,
    events: &[Event],
    now: Millis,
    source: &str,
) -> Option<IncidentChange> {
    let e = config.paging.escalation_for(&subject.owner)?;
    let done = usize::try_from(open.escalations).unwrap_or(0);
    let next = e.to.get(done)?;
    let step = i64::try_from(e.after.as_millis()).unwrap_or(i64::MAX);
    let level = i64::try_from(done + 1).unwrap_or(i64::MAX);
    if now - open.opened_at < step.saturating_mul(level) {
        return None;
    }
    let to = Subject {
        notify: vec![next.clone()],
        ..subject.clone()
    };
    let note = format!(
        "not acknowledged after {}: escalating to {next}",
        crate::verdict::human_ms(now - open.opened_at)
    );
    let pages = pages(
        &to,
        PageEvent::Trigger,
        &open.dedup_key,
        open.id,
        &open.verdict,
        &open.detail,
        open.opened_at,
        now,
        None,
        timeline(events),
        source,
    );
    Some(IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Escalate {
            incident_id: open.id,
            level,
            at: now,
            note,
            pages,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().unwrap();
        let text = r#"
[defaults]
notify = ["pd"]
[paging]
reminder_interval = "1h"
escalate_after = "30m"
escalate_to = ["og", "manager"]
[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 2525
tls = "none"
from = "canary@kommune.example"
[[notifier]]
name = "pd"
kind = "pagerduty"
routing_key = "env:PATH"
[[notifier]]
name = "og"
kind = "opsgenie"
api_key = "env:PATH"
[[notifier]]
name = "manager"
kind = "alertmanager"
url = "http://127.0.0.1:9/am"
[[owner]]
name = "quiet"
notify = ["pd"]
escalate_after = "2h"
escalate_to = ["manager"]
[[channel]]
id = "social-mail"
name = "Social"
kind = "mail"
to = "social@kommune.example"
expect = "bounce"
[[channel]]
id = "quiet-mail"
name = "Quiet"
owner = "quiet"
kind = "mail"
to = "quiet@kommune.example"
expect = "bounce"
"#;
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        (dir, c)
    }

    fn open(channel: &str) -> Incident {
        Incident {
            id: 4,
            channel: channel.into(),
            dedup_key: format!("postcanary/{channel}/p1"),
            opened_at: 1_000_000,
            opened_by: Some("p1".into()),
            verdict: "missed".into(),
            detail: "nothing arrived".into(),
            failures: 1,
            last_failure_at: 1_000_000,
            paged: true,
            last_paged_at: Some(1_000_000),
            silenced: None,
            resolved_at: None,
            resolved_by: None,
            acknowledged_at: None,
            acknowledged_by: None,
            escalations: 0,
        }
    }

    const MIN: i64 = 60_000;

    fn escalated_to(c: Option<IncidentChange>) -> Option<(i64, Vec<String>)> {
        match c.map(|c| c.action) {
            Some(IncidentAction::Escalate { level, pages, .. }) => {
                Some((level, pages.into_iter().map(|(n, _)| n).collect()))
            }
            _ => None,
        }
    }

    #[test]
    fn escalation_pages_the_next_notifier_each_step() {
        let (_d, c) = config();
        let mut o = open("social-mail");
        assert!(super::super::due_page(&c, &o, &[], 1_000_000 + 29 * MIN, "h").is_none());
        let step1 = super::super::due_page(&c, &o, &[], 1_000_000 + 30 * MIN, "h");
        assert_eq!(escalated_to(step1), Some((1, vec!["og".to_string()])));
        o.escalations = 1;
        assert!(super::super::due_page(&c, &o, &[], 1_000_000 + 59 * MIN, "h").is_none());
        let step2 = super::super::due_page(&c, &o, &[], 1_000_000 + 60 * MIN, "h");
        assert_eq!(escalated_to(step2), Some((2, vec!["manager".to_string()])));
        // Past the last step only reminders remain.
        o.escalations = 2;
        assert!(escalated_to(super::super::due_page(&c, &o, &[], 1_000_000 + 200 * MIN, "h")).is_none());
    }

    #[test]
    fn an_owner_has_its_own_escalation_and_an_acknowledged_incident_none() {
        let (_d, c) = config();
        let mut o = open("quiet-mail");
        assert!(escalated_to(super::super::due_page(&c, &o, &[], 1_000_000 + 60 * MIN, "h")).is_none());
        let step = super::super::due_page(&c, &o, &[], 1_000_000 + 120 * MIN, "h");
        assert_eq!(escalated_to(step), Some((1, vec!["manager".to_string()])));
        o.acknowledged_at = Some(1_000_000 + MIN);
        o.acknowledged_by = Some("anne".into());
        assert!(
            super::super::due_page(&c, &o, &[], 1_000_000 + 500 * MIN, "h").is_none(),
            "acknowledged: neither escalation nor reminder"
        );
    }

    #[test]
    fn acknowledge_goes_to_everyone_paged_that_takes_it() {
        let (_d, c) = config();
        let mut o = open("social-mail");
        o.escalations = 2;
        let pages = acknowledge_pages(&c, &o, "anne", "on it", 2_000_000, "h");
        let to: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(to, vec!["pd", "og"], "alertmanager takes no acknowledgement");
        let p = &pages[0].1;
        assert_eq!(p.event, PageEvent::Acknowledge);
        assert_eq!(p.dedup_key, "postcanary/social-mail/p1");
        assert_eq!(p.by.as_deref(), Some("anne"));
        assert_eq!(p.detail, "on it");
        o.paged = false;
        assert!(acknowledge_pages(&c, &o, "anne", "", 2_000_000, "h").is_empty());
    }

    #[test]
    fn a_runtime_silence_holds_back_reminders() {
        let (_d, c) = config();
        let o = open("social-mail");
        let s = crate::ledger::SilenceRecord {
            id: 1,
            channel: Some("social-mail".into()),
            owner: None,
            from: 0,
            until: 1_000_000 + 600 * MIN,
            reason: "relay migration".into(),
            created_by: "anne".into(),
            created_at: 0,
            ended_at: None,
            ended_by: None,
        };
        let at = 1_000_000 + 61 * MIN;
        assert!(super::super::due_page(&c, &o, &[], at, "h").is_some());
        assert!(super::super::due_page_with(&c, &o, &[], at, "h", std::slice::from_ref(&s)).is_none());
        let ended = crate::ledger::SilenceRecord {
            ended_at: Some(at - 1),
            ..s
        };
        assert!(super::super::due_page_with(&c, &o, &[], at, "h", &[ended]).is_some());
    }
}
