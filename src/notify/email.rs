//! Pages by e-mail: a subject line and a plain-text body. Sending goes through
//! the notifier's `via` sender (see `outbox`); this file only writes the text.

use super::truncate;
use super::{rfc3339, Page, PageEvent};

/// Longest subject, in characters.
pub const SUBJECT_MAX: usize = 200;

/// Subject and plain-text body of a page sent by e-mail.
pub fn message(page: &Page) -> (String, String) {
    let word = match page.event {
        PageEvent::Trigger => "TRIGGER",
        PageEvent::Reminder => "REMINDER",
        PageEvent::Resolve => "RESOLVED",
        PageEvent::Acknowledge => "ACKNOWLEDGED",
    };
    let subject = truncate(
        &one_line(&format!("[postcanary] {word}: {}", page.summary)),
        SUBJECT_MAX,
    );

    let headline = match page.event {
        PageEvent::Trigger => "A channel is failing; a new incident was opened.",
        PageEvent::Reminder => "The incident is still open: the channel keeps failing.",
        PageEvent::Resolve => "The channel works again; the incident is resolved.",
        PageEvent::Acknowledge => "An operator has acknowledged the incident; reminders stop.",
    };
    let mut body = format!("{headline}\n\n{}\n\n", one_line(&page.summary));
    let facts = [
        ("Channel", format!("{} ({})", page.channel_name, page.channel)),
        ("Owner", page.owner.clone()),
        ("Target", page.target.clone()),
        ("Verdict", page.verdict.clone()),
        ("Detail", one_line(&page.detail)),
        ("Opened", rfc3339(page.opened_at)),
        ("Paged at", rfc3339(page.at)),
        ("Probe token", page.probe_token.clone().unwrap_or_else(|| "-".into())),
        ("Incident", page.incident_id.to_string()),
        ("Dedup key", page.dedup_key.clone()),
        ("Source", page.source.clone()),
    ];
    for (label, value) in facts {
        body.push_str(&format!("{:<12} {}\n", format!("{label}:"), value));
    }
    body.push_str("\nTimeline:\n");
    if page.timeline.is_empty() {
        body.push_str("  (empty)\n");
    }
    for e in &page.timeline {
        body.push_str(&format!("  {} {}: {}\n", rfc3339(e.at), e.kind, one_line(&e.detail)));
    }
    (subject, body)
}

/// `s` with every run of CR/LF replaced by one space.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_break = false;
    for c in s.chars() {
        if c == '\r' || c == '\n' {
            if !in_break {
                out.push(' ');
            }
            in_break = true;
        } else {
            out.push(c);
            in_break = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures::page;

    const SUMMARY: &str = "Social og Familie (e-mail): missed - nothing arrived before the deadline";

    #[test]
    fn subjects_by_event() {
        assert_eq!(
            message(&page(PageEvent::Trigger)).0,
            format!("[postcanary] TRIGGER: {SUMMARY}")
        );
        assert_eq!(
            message(&page(PageEvent::Reminder)).0,
            format!("[postcanary] REMINDER: {SUMMARY}")
        );
        assert_eq!(
            message(&page(PageEvent::Resolve)).0,
            format!("[postcanary] RESOLVED: {SUMMARY}")
        );
    }

    #[test]
    fn trigger_body() {
        let (_, body) = message(&page(PageEvent::Trigger));
        assert_eq!(
            body,
            "A channel is failing; a new incident was opened.\n\
             \n\
             Social og Familie (e-mail): missed - nothing arrived before the deadline\n\
             \n\
             Channel:     Social og Familie (e-mail) (social-family-mail)\n\
             Owner:       social-og-familie\n\
             Target:      socialogfamilie@kommune.example\n\
             Verdict:     missed\n\
             Detail:      nothing arrived before the deadline\n\
             Opened:      2026-11-18T11:06:40.000Z\n\
             Paged at:    2026-11-18T11:07:40.000Z\n\
             Probe token: pc-01KB0000000000000000000000-0123456789abcdef\n\
             Incident:    7\n\
             Dedup key:   postcanary/social-family-mail/7\n\
             Source:      canary-01\n\
             \n\
             Timeline:\n  \
             2026-11-18T10:51:40.000Z sent: 250 2.0.0 Ok: queued as 4XyZ\n  \
             2026-11-18T11:06:40.000Z verdict: missed: nothing arrived before the deadline\n"
        );
    }

    #[test]
    fn reminder_and_resolve_bodies() {
        let (_, body) = message(&page(PageEvent::Reminder));
        assert!(body.starts_with("The incident is still open: the channel keeps failing.\n"));
        let (_, body) = message(&page(PageEvent::Resolve));
        assert!(body.starts_with("The channel works again; the incident is resolved.\n"));
        assert!(body.contains("\nVerdict:     delivered\n"));
    }

    #[test]
    fn subject_is_one_line_and_at_most_200_characters() {
        let mut p = page(PageEvent::Trigger);
        p.summary = "evil\r\nBcc: victim@example.org\nand more".into();
        let (subject, _) = message(&p);
        assert_eq!(subject, "[postcanary] TRIGGER: evil Bcc: victim@example.org and more");

        p.summary = "ø".repeat(300);
        let (subject, _) = message(&p);
        assert_eq!(subject.chars().count(), 200);
        assert!(subject.ends_with('…'));
        assert!(!subject.contains('\n') && !subject.contains('\r'));
    }

    #[test]
    fn timeline_entries_stay_one_line_each() {
        let mut p = page(PageEvent::Trigger);
        p.timeline[0].detail = "451 4.7.1 try\r\nagain".into();
        p.timeline.truncate(1);
        p.probe_token = None;
        let (_, body) = message(&p);
        assert!(body.contains("Probe token: -\n"));
        assert!(body.ends_with("Timeline:\n  2026-11-18T10:51:40.000Z sent: 451 4.7.1 try again\n"));

        p.timeline.clear();
        let (_, body) = message(&p);
        assert!(body.ends_with("Timeline:\n  (empty)\n"));
    }
}
