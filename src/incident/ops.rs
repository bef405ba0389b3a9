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
