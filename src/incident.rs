//! Incidents: one per failing channel, opened by its first failing verdict
//! (paged at once), resolved by its next success. Failures on our own side
//! (`error` verdicts, or a failing control channel) are grouped into one
//! "postcanary degraded" incident per sender instead of paging every channel.
//!
//! The decisions are pure functions of (verdict, open incidents, config); the
//! [`Processor`] feeds them from the ledger and applies each in one
//! transaction that also marks the verdict handled, so a restart neither
//! loses nor repeats a page.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::{Channel, ChannelKind, Config};
use crate::ledger::{
    DynStore, Event, Incident, IncidentAction, IncidentChange, Pages, ProbeRecord, SilenceRecord, StoreError,
};
use crate::notify::{Page, PageEvent, TimelineEntry};
use crate::verdict::VerdictSink;
use crate::verdict::{now_millis, Millis, Verdict};

pub mod quorum;
use quorum::{outcome, vantage_key, vantage_recovered, Outcome, Tally, NO_VANTAGE, VANTAGE_DEGRADED};

/// The incident key of the prober's own degradation through one sender.
pub fn degraded_key(sender: &str) -> String {
    format!("postcanary:{sender}")
}

/// The path of ours that an `error` verdict blames: its `fault` when it
/// names one (a blind inbox watcher: `inbox:NAME`), else the channel's sender.
pub fn fault_path<'a>(p: &'a ProbeRecord, ch: &'a Channel) -> &'a str {
    match (&p.verdict, p.fault.as_deref()) {
        (Verdict::Error, Some(path)) => path,
        _ => sender_of(ch),
    }
}

/// A path of ours as seen from the probe's vantage: with vantages each
/// has its own relay and watchers, so `relay` of `east` is `relay@east`
/// (one "degraded" incident per vantage and path). Without a vantage the
/// path itself, as before.
pub fn scoped(path: &str, p: &ProbeRecord) -> String {
    match &p.vantage {
        Some(v) => format!("{path}@{v}"),
        None => path.to_string(),
    }
}

/// The vantage name of a probe ([`NO_VANTAGE`] when it has none).
pub fn vantage_of(p: &ProbeRecord) -> &str {
    p.vantage.as_deref().unwrap_or(NO_VANTAGE)
}

/// The path name of an inbox's watcher, as an `error`'s `fault`.
pub fn inbox_path(inbox: &str) -> String {
    format!("inbox:{inbox}")
}

/// The path out that a channel's probes share with others: its mail sender,
/// or, for forms, the prober's own web access (one "degraded" incident when
/// postcanary itself cannot submit forms).
fn sender_of(ch: &Channel) -> &str {
    match &ch.kind {
        ChannelKind::Mail { via, .. } => via,
        ChannelKind::Form { .. } => FORMS_PATH,
    }
}

/// The incident key of a domain's mail routing (DNS drift).
pub fn dns_key(domain: &str) -> String {
    format!("dns:{domain}")
}

/// The pseudo-sender of form channels.
pub const FORMS_PATH: &str = "web";

fn target_of(ch: &Channel) -> String {
    ch.kind.target()
}

fn timeline(events: &[Event]) -> Vec<TimelineEntry> {
    events
        .iter()
        .map(|e| TimelineEntry {
            at: e.at,
            kind: e.kind.clone(),
            // A kept path is JSON for readers; a page gets its one-line form.
            detail: match e.kind.as_str() {
                crate::compliance::PATH_EVENT => crate::compliance::KeptPath::from_event(&e.detail)
                    .map(|k| k.line())
                    .unwrap_or_default(),
                _ => e.detail.clone(),
            },
        })
        .collect()
}

/// Who an incident is about, for pages.
#[derive(Clone)]
struct Subject {
    channel: String,
    name: String,
    owner: String,
    target: String,
    notify: Vec<String>,
}

impl Subject {
    fn channel(ch: &Channel) -> Subject {
        Subject {
            channel: ch.id.clone(),
            name: ch.name.clone(),
            owner: ch.owner.clone(),
            target: target_of(ch),
            notify: ch.notify.clone(),
        }
    }

    fn degraded(config: &Config, sender: &str) -> Subject {
        if let Some((path, v)) = sender
            .rsplit_once('@')
            .filter(|(_, v)| crate::config::valid_vantage_name(v))
        {
            let mut s = Subject::degraded(config, path);
            s.name = format!("{} at vantage `{v}`", s.name);
            return s;
        }
        if let Some(channel) = sender.strip_prefix("retain:") {
            return Subject {
                channel: "postcanary".into(),
                name: format!("postcanary itself (retention checks of `{channel}` cannot look)"),
                owner: "postcanary".into(),
                target: config.channel(channel).map(target_of).unwrap_or_default(),
                notify: config.paging.default_notify.clone(),
            };
        }
        if let Some(inbox) = sender.strip_prefix("inbox:") {
            return Subject {
                channel: "postcanary".into(),
                name: format!("postcanary itself (inbox `{inbox}` not watched)"),
                owner: "postcanary".into(),
                target: config
                    .inbox(inbox)
                    .map(|i| format!("{}:{}", i.host, i.port))
                    .unwrap_or_default(),
                notify: config.paging.default_notify.clone(),
            };
        }
        Subject {
            channel: "postcanary".into(),
            name: if sender == FORMS_PATH {
                "postcanary itself (form submissions)".to_string()
            } else {
                format!("postcanary itself (sender `{sender}`)")
            },
            owner: "postcanary".into(),
            target: config
                .sender(sender)
                .map(|s| format!("{}:{}", s.host, s.port))
                .unwrap_or_default(),
            notify: config.paging.default_notify.clone(),
        }
    }
}

impl Subject {
    /// One vantage point whose probes fail where the other vantages' succeed.
    fn vantage(config: &Config, vantage: &str) -> Subject {
        Subject {
            channel: vantage_key(vantage),
            name: format!("postcanary vantage `{vantage}` (fails where other vantages succeed)"),
            owner: "postcanary".into(),
            target: vantage.to_string(),
            notify: config.paging.default_notify.clone(),
        }
    }

    /// A domain's mail routing: paged to the teams whose channels send there.
    fn dns(config: &Config, domain: &str) -> Subject {
        let channels: Vec<&Channel> = config
            .channels
            .iter()
            .filter(|c| matches!(&c.kind, ChannelKind::Mail { to, .. } if to.domain().eq_ignore_ascii_case(domain)))
            .collect();
        let mut notify: Vec<String> = Vec::new();
        for n in channels.iter().flat_map(|c| c.notify.iter()) {
            if !notify.contains(n) {
                notify.push(n.clone());
            }
        }
        if notify.is_empty() {
            notify = config.paging.default_notify.clone();
        }
        Subject {
            channel: dns_key(domain),
            name: format!("mail routing of {domain} (DNS)"),
            owner: channels
                .first()
                .map(|c| c.owner.clone())
                .unwrap_or_else(|| "postcanary".into()),
            target: domain.to_string(),
            notify,
        }
    }
}

/// What a DNS check of `domain` means: `changes` against the accepted
/// baseline (empty: as accepted) and the domain's open incident, if any. A
/// change opens a "routing changed" incident and pages at once, before any
/// probe has failed; going back to the baseline (or accepting the new
/// records) resolves it.
pub fn decide_dns(
    config: &Config,
    domain: &str,
    changes: &[String],
    open: Option<&Incident>,
    now: Millis,
    source: &str,
) -> IncidentAction {
    let subject = Subject::dns(config, domain);
    if changes.is_empty() {
        return match open {
            Some(o) => resolve(
                config,
                &subject,
                o,
                "the DNS records are as accepted again",
                now,
                source,
            ),
            None => IncidentAction::Nothing,
        };
    }
    let detail = changes.join("; ");
    match open {
        Some(o) if o.detail == detail => IncidentAction::Nothing,
        Some(o) => IncidentAction::Update {
            incident_id: o.id,
            verdict: ROUTING_CHANGED.into(),
            detail,
            at: now,
        },
        None => {
            let key = format!("postcanary/dns/{domain}/{now}");
            IncidentAction::Open {
                channel: dns_key(domain),
                pages: pages(
                    &subject,
                    PageEvent::Trigger,
                    &key,
                    0,
                    ROUTING_CHANGED,
                    &detail,
                    now,
                    now,
                    None,
                    Vec::new(),
                    source,
                ),
                dedup_key: key,
                verdict: ROUTING_CHANGED.into(),
                detail,
                at: now,
                silenced: None,
            }
        }
    }
}

/// The verdict text of a DNS drift incident.
pub const ROUTING_CHANGED: &str = "routing_changed";

/// The verdict text of a discovery incident.
pub const UNMONITORED: &str = "unmonitored_channel";

/// The incident key of one discovery finding (`addr:x@y`, `form:URL`, `lookalike:x@y`).
pub fn discover_key(finding: &str) -> String {
    format!("discover:{finding}")
}

impl Subject {
    /// A published channel nobody probes: paged to the default notifiers.
    fn discover(config: &Config, finding: &str) -> Subject {
        let target = finding.split_once(':').map(|(_, t)| t).unwrap_or(finding).to_string();
        Subject {
            channel: discover_key(finding),
            name: format!("unmonitored public channel {target}"),
            owner: "postcanary".into(),
            target,
            notify: config.paging.default_notify.clone(),
        }
    }
}

/// What one discovery round means for one finding: `detail` says where it
/// is published (`None`: it is not, or it is probed now). A new finding
/// opens an incident and pages; a finding that is gone resolves it.
pub fn decide_discover(
    config: &Config,
    finding: &str,
    detail: Option<&str>,
    open: Option<&Incident>,
    now: Millis,
    source: &str,
) -> IncidentAction {
    let subject = Subject::discover(config, finding);
    match (detail, open) {
        (None, Some(o)) => resolve(config, &subject, o, "no longer published, or probed now", now, source),
        (None, None) | (Some(_), Some(_)) => IncidentAction::Nothing,
        (Some(detail), None) => {
            let key = format!("postcanary/discover/{finding}/{now}");
            IncidentAction::Open {
                channel: discover_key(finding),
                pages: pages(
                    &subject,
                    PageEvent::Trigger,
                    &key,
                    0,
                    UNMONITORED,
                    detail,
                    now,
                    now,
                    None,
                    Vec::new(),
                    source,
                ),
                dedup_key: key,
                verdict: UNMONITORED.into(),
                detail: detail.to_string(),
                at: now,
                silenced: None,
            }
        }
    }
}

/// The pages of an open incident as it stands (its verdict, detail and
/// timeline): reminders, held-back triggers, escalations.
fn pages_of_open(s: &Subject, event: PageEvent, open: &Incident, events: &[Event], now: Millis, source: &str) -> Pages {
    pages(
        s,
        event,
        &open.dedup_key,
        open.id,
        &open.verdict,
        &open.detail,
        open.opened_at,
        now,
        None,
        timeline(events),
        source,
    )
}

#[allow(clippy::too_many_arguments)]
fn pages(
    s: &Subject,
    event: PageEvent,
    dedup_key: &str,
    incident_id: i64,
    verdict: &str,
    detail: &str,
    opened_at: Millis,
    at: Millis,
    probe_token: Option<String>,
    timeline: Vec<TimelineEntry>,
    source: &str,
) -> Pages {
    let summary = format!("{}: {verdict} - {detail}", s.name);
    s.notify
        .iter()
        .map(|n| {
            (
                n.clone(),
                Page {
                    event,
                    dedup_key: dedup_key.to_string(),
                    incident_id,
                    channel: s.channel.clone(),
                    channel_name: s.name.clone(),
                    owner: s.owner.clone(),
                    target: s.target.clone(),
                    verdict: verdict.to_string(),
                    detail: detail.to_string(),
                    summary: summary.clone(),
                    opened_at,
                    at,
                    probe_token: probe_token.clone(),
                    timeline: timeline.clone(),
                    source: source.to_string(),
                    by: None,
                },
            )
        })
        .collect()
}

/// What is known when a verdict is handled.
pub struct VerdictFacts<'a> {
    pub probe: &'a ProbeRecord,
    /// The probe's evidence trail, for the trigger page's timeline.
    pub probe_events: &'a [Event],
    pub channel_incident: Option<&'a Incident>,
    /// The open "postcanary degraded" incident of [`fault_path`].
    pub degraded_incident: Option<&'a Incident>,
    /// The open "degraded" incident of the watcher of the probe's inbox.
    pub inbox_incident: Option<&'a Incident>,
    /// Creation time of the channel's newest successful probe (see [`crate::ledger::Store::channel_order`]).
    pub newest_success: Option<Millis>,
    /// Creation time of the channel's newest failing probe already handled.
    pub newest_failure: Option<Millis>,
    /// Silences set at run time (in the ledger), besides the config's.
    pub silences: &'a [SilenceRecord],
}

/// What the vantages say of the channel, when `[vantage]` is configured
/// (see [`quorum`]).
pub struct QuorumFacts<'a> {
    pub quorum: u32,
    /// The channel's window `W` (ms).
    pub window: Millis,
    /// Each vantage's latest verdict in the window of the handled probe.
    pub tally: &'a Tally,
    /// The open `vantage:NAME` incidents of the probe's vantage and of the
    /// vantages failing alone, by vantage name.
    pub open: &'a [(String, Incident)],
}

impl QuorumFacts<'_> {
    fn open_of(&self, vantage: &str) -> Option<&Incident> {
        self.open.iter().find(|(v, _)| v == vantage).map(|(_, i)| i)
    }
}

/// Decides what one verdict means for incidents. Returns the changes to
/// apply in order; the last one carries the probe id (marks it handled).
pub fn decide(config: &Config, ch: &Channel, f: &VerdictFacts<'_>, now: Millis, source: &str) -> Vec<IncidentChange> {
    decide_with(config, ch, f, None, now, source)
}

/// Opens or updates the `vantage:NAME` incident of a vantage failing alone.
#[allow(clippy::too_many_arguments)]
fn vantage_alone(
    config: &Config,
    vantage: &str,
    open: Option<&Incident>,
    why: String,
    probe: Option<&ProbeRecord>,
    events: &[Event],
    now: Millis,
    source: &str,
) -> IncidentAction {
    match open {
        Some(o) => IncidentAction::Update {
            incident_id: o.id,
            verdict: VANTAGE_DEGRADED.into(),
            detail: why,
            at: now,
        },
        None => {
            let subject = Subject::vantage(config, vantage);
            let key = format!(
                "postcanary/vantage/{vantage}/{}",
                probe.map(|p| p.id.clone()).unwrap_or_else(|| now.to_string())
            );
            IncidentAction::Open {
                channel: vantage_key(vantage),
                pages: pages(
                    &subject,
                    PageEvent::Trigger,
                    &key,
                    0,
                    VANTAGE_DEGRADED,
                    &why,
                    now,
                    now,
                    probe.map(|p| p.token.clone()),
                    timeline(events),
                    source,
                ),
                dedup_key: key,
                verdict: VANTAGE_DEGRADED.into(),
                detail: why,
                at: now,
                silenced: None,
            }
        }
    }
}

/// Why a vantage is degraded, in words.
fn alone_why(ch: &Channel, failing: &str, t: &Tally, verdict: &str) -> String {
    let others = t.with(quorum::Seen::Succeeding).join("`, `");
    format!(
        "channel `{}`: {verdict} from vantage `{failing}` while `{others}` succeeded",
        ch.id
    )
}

/// [`decide`] with the vantages' view of the channel (`None`: no vantages, today's rule).
pub fn decide_with(
    config: &Config,
    ch: &Channel,
    f: &VerdictFacts<'_>,
    q: Option<&QuorumFacts<'_>>,
    now: Millis,
    source: &str,
) -> Vec<IncidentChange> {
    let p = f.probe;
    let verdict = p.verdict;
    let detail = p.detail.clone().unwrap_or_default();
    let scoped_sender = scoped(fault_path(p, ch), p);
    let sender = scoped_sender.as_str();
    let me = vantage_of(p);
    let mut changes = Vec::new();
    let last = |action: IncidentAction, reclassify: Option<String>| IncidentChange {
        probe_id: Some(p.id.clone()),
        reclassify,
        action,
    };

    if verdict.is_success() {
        // A success through a sender proves the prober works through it.
        if let Some(d) = f.degraded_incident {
            let subject = Subject::degraded(config, sender);
            changes.push(IncidentChange {
                probe_id: None,
                reclassify: None,
                action: resolve(
                    config,
                    &subject,
                    d,
                    &format!("channel `{}` succeeded through `{sender}`", ch.id),
                    now,
                    source,
                ),
            });
        }
        // An arrival in its inbox proves that inbox is watched again.
        if let (Some(d), Some(inbox)) = (f.inbox_incident, p.found_in.as_deref()) {
            let subject = Subject::degraded(config, &scoped(&inbox_path(inbox), p));
            changes.push(IncidentChange {
                probe_id: None,
                reclassify: None,
                action: resolve(
                    config,
                    &subject,
                    d,
                    &format!("channel `{}`: a probe was found in `{inbox}`", ch.id),
                    now,
                    source,
                ),
            });
        }
        if let Some(q) = q {
            // This vantage works for this channel: its own degradation ends
            // once it has not failed alone for a window.
            if let Some(v) = q.open_of(me) {
                if vantage_recovered(v.last_failure_at, now, q.window) {
                    changes.push(IncidentChange {
                        probe_id: None,
                        reclassify: None,
                        action: resolve(
                            config,
                            &Subject::vantage(config, me),
                            v,
                            &format!("channel `{}` succeeded from vantage `{me}`", ch.id),
                            now,
                            source,
                        ),
                    });
                }
            }
            let out = outcome(q.tally, q.quorum);
            // A vantage that failed while this one was still pending fails alone now.
            if let Outcome::Alone(vs) = &out {
                for v in vs.iter().filter(|v| *v != me && q.open_of(v).is_none()) {
                    let why = alone_why(ch, v, q.tally, "failed");
                    changes.push(IncidentChange {
                        probe_id: None,
                        reclassify: None,
                        action: vantage_alone(config, v, None, why, None, &[], now, source),
                    });
                }
            }
            // The channel's incident ends when fewer than the quorum fail.
            let action = match f.channel_incident {
                Some(open) if out != Outcome::Channel => resolve(
                    config,
                    &Subject::channel(ch),
                    open,
                    &format!("{verdict} from vantage `{me}`: {detail}"),
                    now,
                    source,
                ),
                _ => IncidentAction::Nothing,
            };
            changes.push(last(action, None));
            return changes;
        }
        // Incidents follow probe order: a success older than the failure that
        // keeps the incident open says nothing about the channel now.
        let newer_failure = f.newest_failure.is_some_and(|t| t > p.created_at);
        let action = match f.channel_incident {
            Some(_) if newer_failure => IncidentAction::Nothing,
            Some(open) => resolve(
                config,
                &Subject::channel(ch),
                open,
                &format!("{verdict}: {detail}"),
                now,
                source,
            ),
            None => IncidentAction::Nothing,
        };
        changes.push(last(action, None));
        return changes;
    }

    let ours = verdict == Verdict::Error || ch.control;
    if ours {
        let why = if ch.control {
            format!("control channel `{}`: {verdict}: {detail}", ch.id)
        } else {
            format!("channel `{}`: {detail}", ch.id)
        };
        let action = match f.degraded_incident {
            Some(d) => IncidentAction::Update {
                incident_id: d.id,
                verdict: verdict.to_string(),
                detail: why,
                at: now,
            },
            None => {
                let subject = Subject::degraded(config, sender);
                let key = format!("postcanary/degraded/{sender}/{}", p.id);
                let tl = timeline(f.probe_events);
                IncidentAction::Open {
                    channel: degraded_key(sender),
                    pages: pages(
                        &subject,
                        PageEvent::Trigger,
                        &key,
                        0,
                        verdict.as_str(),
                        &why,
                        now,
                        now,
                        Some(p.token.clone()),
                        tl,
                        source,
                    ),
                    dedup_key: key,
                    verdict: verdict.to_string(),
                    detail: why,
                    at: now,
                    silenced: None,
                }
            }
        };
        changes.push(last(action, None));
        return changes;
    }

    // A failure of a probe older than the channel's newest success is
    // history: the channel has worked since. It opens and re-opens nothing.
    // With vantages: the newest success of the same vantage.
    let history = match q {
        Some(q) => q.tally.newer_success(me, p.created_at, &p.id),
        None => f.newest_success.is_some_and(|t| t > p.created_at),
    };
    if history {
        changes.push(last(IncidentAction::Nothing, None));
        return changes;
    }

    // A channel failure while the prober is degraded through the same sender
    // is not the channel's: record it as our error under the degraded incident.
    if let Some(d) = f.degraded_incident {
        let note = format!("postcanary degraded ({}); channel saw {verdict}: {detail}", d.detail);
        let action = IncidentAction::Update {
            incident_id: d.id,
            verdict: Verdict::Error.to_string(),
            detail: format!("channel `{}` affected: {verdict}", ch.id),
            at: now,
        };
        changes.push(last(action, Some(note)));
        return changes;
    }

    // With vantages, the channel's incident needs the quorum.
    if let Some(q) = q {
        match outcome(q.tally, q.quorum) {
            Outcome::Channel => {}
            Outcome::Alone(vs) if vs.iter().any(|v| v == me) => {
                let why = alone_why(ch, me, q.tally, verdict.as_str());
                let action = vantage_alone(config, me, q.open_of(me), why, Some(p), f.probe_events, now, source);
                changes.push(last(action, None));
                return changes;
            }
            Outcome::Alone(_) | Outcome::Wait | Outcome::Clear => {
                changes.push(last(IncidentAction::Nothing, None));
                return changes;
            }
        }
    }

    let action = match f.channel_incident {
        Some(open) => IncidentAction::Update {
            incident_id: open.id,
            verdict: verdict.to_string(),
            detail,
            at: now,
        },
        None => {
            let subject = Subject::channel(ch);
            let key = format!("postcanary/{}/{}", ch.id, p.id);
            let silence = silence_reason(config, f.silences, ch, now);
            let pages = match silence {
                Some(_) => Vec::new(),
                None => pages(
                    &subject,
                    PageEvent::Trigger,
                    &key,
                    0,
                    verdict.as_str(),
                    &detail,
                    now,
                    now,
                    Some(p.token.clone()),
                    timeline(f.probe_events),
                    source,
                ),
            };
            IncidentAction::Open {
                channel: ch.id.clone(),
                dedup_key: key,
                verdict: verdict.to_string(),
                detail,
                at: now,
                silenced: silence,
                pages,
            }
        }
    };
    changes.push(last(action, None));
    changes
}

/// A finding about a channel that is not a failed delivery (a compliance
/// breach, a retention check): a later one updates the open incident of
/// `subject`; the first opens it, paging `subject`'s notifiers unless a
/// silence of the channel holds the page back.
struct Finding<'a> {
    key: String,
    verdict: &'a str,
    detail: String,
    token: &'a str,
    timeline: Vec<TimelineEntry>,
}

#[allow(clippy::too_many_arguments)]
fn finding(
    config: &Config,
    subject: &Subject,
    ch: &Channel,
    open: Option<&Incident>,
    f: Finding<'_>,
    runtime: &[SilenceRecord],
    now: Millis,
    source: &str,
) -> IncidentAction {
    if let Some(o) = open {
        return IncidentAction::Update {
            incident_id: o.id,
            verdict: f.verdict.to_string(),
            detail: f.detail,
            at: now,
        };
    }
    let silence = silence_reason(config, runtime, ch, now);
    let pages = match silence {
        Some(_) => Vec::new(),
        None => pages(
            subject,
            PageEvent::Trigger,
            &f.key,
            0,
            f.verdict,
            &f.detail,
            now,
            now,
            Some(f.token.to_string()),
            f.timeline,
            source,
        ),
    };
    IncidentAction::Open {
        channel: subject.channel.clone(),
        dedup_key: f.key,
        verdict: f.verdict.to_string(),
        detail: f.detail,
        at: now,
        silenced: silence,
        pages,
    }
}

fn resolve(
    config: &Config,
    subject: &Subject,
    open: &Incident,
    detail: &str,
    now: Millis,
    source: &str,
) -> IncidentAction {
    // Nobody was paged (a silence held it back): nobody needs the all-clear.
    let pages = if open.paged {
        pages(
            &with_escalated(config, subject, open),
            PageEvent::Resolve,
            &open.dedup_key,
            open.id,
            "resolved",
            detail,
            open.opened_at,
            now,
            None,
            Vec::new(),
            source,
        )
    } else {
        Vec::new()
    };
    IncidentAction::Resolve {
        incident_id: open.id,
        at: now,
        detail: detail.to_string(),
        pages,
    }
}

/// Who an open incident is about (`None`: a key no config part knows).
fn subject_of(config: &Config, open: &Incident) -> Option<Subject> {
    match config.channel(&open.channel) {
        Some(ch) => Some(Subject::channel(ch)),
        None => match open.channel.strip_prefix("dns:") {
            Some(domain) => Some(Subject::dns(config, domain)),
            None if open.channel.starts_with("compliance:") => {
                let ch = config.channel(open.channel.strip_prefix("compliance:").unwrap_or_default())?;
                Some(Subject::compliance(ch))
            }
            None if open.channel.starts_with("retention:") => {
                let ch = config.channel(open.channel.strip_prefix("retention:").unwrap_or_default())?;
                Some(Subject::retention(ch))
            }
            None if open.channel.starts_with("discover:") => {
                let finding = open.channel.strip_prefix("discover:").unwrap_or_default();
                Some(Subject::discover(config, finding))
            }
            None if open.channel.starts_with("vantage:") => Some(Subject::vantage(
                config,
                open.channel.strip_prefix("vantage:").unwrap_or_default(),
            )),
            None => {
                let sender = open.channel.strip_prefix("postcanary:")?;
                Some(Subject::degraded(config, sender))
            }
        },
    }
}

/// Why a channel's pages are held back at `now`: a maintenance window of
/// the config or a silence set at run time.
fn silence_reason(config: &Config, runtime: &[SilenceRecord], ch: &Channel, now: Millis) -> Option<String> {
    if let Some(s) = config.silences.iter().find(|s| s.covers(&ch.id, &ch.owner, now)) {
        return Some(format!(
            "maintenance window until {}: {}",
            crate::notify::rfc3339(s.until),
            s.reason
        ));
    }
    runtime.iter().find(|s| s.covers(&ch.id, &ch.owner, now)).map(|s| {
        format!(
            "silenced by {} until {}: {}",
            s.created_by,
            crate::notify::rfc3339(s.until),
            s.reason
        )
    })
}

/// Reminders and held-back triggers for one open incident at `now`.
pub fn due_page(
    config: &Config,
    open: &Incident,
    events: &[Event],
    now: Millis,
    source: &str,
) -> Option<IncidentChange> {
    due_page_with(config, open, events, now, source, &[])
}

/// [`due_page`] with the silences set at run time; also escalates an
/// incident nobody acknowledged in time. An acknowledged incident gets no
/// reminder and no escalation; a silenced one neither.
pub fn due_page_with(
    config: &Config,
    open: &Incident,
    events: &[Event],
    now: Millis,
    source: &str,
    runtime: &[SilenceRecord],
) -> Option<IncidentChange> {
    let subject = subject_of(config, open)?;
    // A compliance incident is silenced with its channel.
    let silenced = config
        .channel(open.channel.strip_prefix("compliance:").unwrap_or(&open.channel))
        .is_some_and(|ch| silence_reason(config, runtime, ch, now).is_some());
    if open.paged && !silenced && open.acknowledged_at.is_none() {
        if let Some(change) = escalation_due(config, &subject, open, events, now, source) {
            return Some(change);
        }
    }
    let (event, note) = if !open.paged {
        // Held back only by a maintenance window; without one there is nothing to catch up.
        if silenced || open.silenced.is_none() {
            return None;
        }
        (
            PageEvent::Trigger,
            "maintenance window over and still failing: paging".to_string(),
        )
    } else {
        if silenced || open.acknowledged_at.is_some() {
            return None;
        }
        let every = config.paging.reminder_interval?;
        let last = open.last_paged_at.unwrap_or(open.opened_at);
        if now - last < i64::try_from(every.as_millis()).unwrap_or(i64::MAX) {
            return None;
        }
        (
            PageEvent::Reminder,
            format!("still failing after {}", crate::verdict::human_ms(now - open.opened_at)),
        )
    };
    let pages = pages_of_open(&subject, event, open, events, now, source);
    Some(IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Page {
            incident_id: open.id,
            at: now,
            note,
            pages,
        },
    })
}

/// How often reminders and ended maintenance windows are looked at.
const TICK: Duration = Duration::from_secs(5);
/// How often the ledger is polled for verdicts made elsewhere (e.g. `check`).
const POLL: Duration = Duration::from_millis(500);

/// Feeds verdicts from the ledger through [`decide`], and reminders through [`due_page`].
pub struct Processor {
    pub config: Arc<Config>,
    pub store: DynStore,
    pub source: String,
    /// Woken when pages were queued.
    pub outbox: crate::outbox::Wake,
}

impl Processor {
    /// Handles every verdict not handled yet. Returns how many.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let batch = self.store.unhandled_verdicts(100).await?;
            if batch.is_empty() {
                return Ok(n);
            }
            for p in batch {
                self.handle(&p).await?;
                n += 1;
            }
        }
    }

    async fn handle(&self, p: &ProbeRecord) -> Result<(), StoreError> {
        // Once per verdict (the `handled` mark makes it so across restarts).
        crate::telemetry::record_verdict(
            &p.id,
            &p.channel,
            &p.token,
            p.verdict,
            p.created_at,
            p.judged_at.unwrap_or_else(now_millis),
            p.latency_ms,
        );
        let Some(ch) = self.config.channel(&p.channel) else {
            // The channel left the config; its old verdicts page nobody.
            let change = IncidentChange {
                probe_id: Some(p.id.clone()),
                reclassify: None,
                action: IncidentAction::Nothing,
            };
            self.store.apply_incident(&change).await?;
            return Ok(());
        };
        let channel_incident = self.store.open_incident(&ch.id).await?;
        let degraded_incident = self
            .store
            .open_incident(&degraded_key(&scoped(fault_path(p, ch), p)))
            .await?;
        let inbox_incident = match p.found_in.as_deref() {
            Some(inbox) => {
                self.store
                    .open_incident(&degraded_key(&scoped(&inbox_path(inbox), p)))
                    .await?
            }
            None => None,
        };
        let vantages = self.vantage_facts(ch, p).await?;
        let (newest_success, newest_failure) = self.store.channel_order(&ch.id).await?;
        let probe_events = self.store.events(&p.id).await?;
        let silences = self.store.silences(Some(now_millis()), 1000).await?;
        // A compliance finding first: the verdict's own change marks it handled.
        let compliance = self.compliance(ch, p, &probe_events, &silences).await?;
        let facts = VerdictFacts {
            probe: p,
            probe_events: &probe_events,
            channel_incident: channel_incident.as_ref(),
            degraded_incident: degraded_incident.as_ref(),
            inbox_incident: inbox_incident.as_ref(),
            newest_success,
            newest_failure,
            silences: &silences,
        };
        let mut queued = false;
        let quorum = vantages.as_ref().map(|(quorum, window, tally, open)| QuorumFacts {
            quorum: *quorum,
            window: *window,
            tally,
            open,
        });
        let decided = decide_with(&self.config, ch, &facts, quorum.as_ref(), now_millis(), &self.source);
        for change in compliance.into_iter().chain(decided) {
            queued |= has_pages(&change.action);
            if let Some(id) = self.store.apply_incident(&change).await? {
                log_change(&change.action, id);
            }
        }
        if queued {
            self.outbox.all();
        }
        Ok(())
    }

    /// With `[vantage]`: each vantage's latest verdict of the channel in the
    /// window of `p`, and the open incidents of the vantages concerned.
    async fn vantage_facts(
        &self,
        ch: &Channel,
        p: &ProbeRecord,
    ) -> Result<Option<(u32, Millis, Tally, Vec<(String, Incident)>)>, StoreError> {
        let Some(vc) = &self.config.vantage else {
            return Ok(None);
        };
        let window = quorum::window_ms(ch.schedule.nominal_interval(), ch.deadline, vc.slack);
        let since = p.created_at.saturating_sub(window);
        let probes = self.store.probes_since(&ch.id, since, 10_000).await?;
        let interval = Millis::try_from(ch.schedule.nominal_interval().as_millis()).unwrap_or(Millis::MAX);
        let mut tally = Tally::of(&probes, p.created_at, interval, since);
        // A vantage down for longer than a takeover (two leases) is not present.
        let lease = self
            .config
            .ledger
            .ha
            .as_ref()
            .map_or(crate::config::ledger::DEFAULT_LEASE, |h| h.lease);
        if let Some(live) = self.store.live_vantages(lease * 2).await? {
            tally.only_live(&live, p.created_at, interval, vantage_of(p));
        }
        let mut names = vec![vantage_of(p).to_string()];
        if let Outcome::Alone(vs) = outcome(&tally, vc.quorum) {
            names.extend(vs.into_iter().filter(|v| v != vantage_of(p)));
        }
        let mut open = Vec::new();
        for n in names {
            if let Some(i) = self.store.open_incident(&vantage_key(&n)).await? {
                open.push((n, i));
            }
        }
        Ok(Some((vc.quorum, window, tally, open)))
    }

    /// Queues reminders and held-back triggers that are due.
    pub async fn tick(&self) -> Result<(), StoreError> {
        let now = now_millis();
        let silences = self.store.silences(Some(now), 1000).await?;
        for open in self.store.open_incidents().await? {
            let events = self.store.incident_events(open.id).await?;
            if let Some(change) = due_page_with(&self.config, &open, &events, now, &self.source, &silences) {
                self.store.apply_incident(&change).await?;
                log_change(&change.action, open.id);
                self.outbox.all();
            }
        }
        Ok(())
    }

    /// Runs until `shutdown`: on every reported verdict, every [`POLL`], and
    /// reminders every [`TICK`].
    pub async fn run(self, verdicts: VerdictSink, mut shutdown: watch::Receiver<bool>) {
        let mut rx = verdicts.subscribe();
        let mut tick = tokio::time::interval(TICK);
        loop {
            if let Err(e) = self.drain().await {
                tracing::error!(error = %e, "incident processor cannot use the ledger");
            }
            tokio::select! {
                _ = rx.recv() => {}
                _ = tokio::time::sleep(POLL) => {}
                _ = tick.tick() => {
                    if let Err(e) = self.tick().await {
                        tracing::error!(error = %e, "incident reminders cannot use the ledger");
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn has_pages(a: &IncidentAction) -> bool {
    match a {
        IncidentAction::Open { pages, .. }
        | IncidentAction::Page { pages, .. }
        | IncidentAction::Escalate { pages, .. }
        | IncidentAction::Resolve { pages, .. } => !pages.is_empty(),
        IncidentAction::Nothing | IncidentAction::Update { .. } => false,
    }
}

fn log_change(a: &IncidentAction, id: i64) {
    match a {
        IncidentAction::Open {
            channel,
            verdict,
            silenced,
            pages,
            ..
        } => {
            tracing::warn!(incident = id, %channel, %verdict, silenced = silenced.is_some(), pages = pages.len(), "incident opened")
        }
        IncidentAction::Resolve { pages, .. } => {
            tracing::info!(incident = id, pages = pages.len(), "incident resolved")
        }
        IncidentAction::Page { note, pages, .. } => {
            tracing::warn!(incident = id, %note, pages = pages.len(), "paging again")
        }
        IncidentAction::Escalate { note, pages, .. } => {
            tracing::warn!(incident = id, %note, pages = pages.len(), "escalating")
        }
        IncidentAction::Update { .. } | IncidentAction::Nothing => {}
    }
}

pub mod retained {
    //! Retention canaries: a delivered canary looked up again at its
    //! `retain` ages. `lost` or `altered` opens the channel's retention
    //! incident (`retention:CHANNEL`), paged to the channel's notifiers like
    //! any failure; it is resolved only by a later retention check of that
    //! channel that finds its canary as kept — never by an ordinary delivered
    //! probe, which says nothing about what happens to mail after it lands.
    //! A check that cannot look (login refused, HTTP 5xx, timeouts) is ours:
    //! once it has failed for the channel's [`retain_grace`] (from the first
    //! fault of the current run, `RetainCheck::fault_since`) it opens the
    //! "postcanary degraded" incident `postcanary:retain:CHANNEL`, resolved
    //! by the next check of that channel that could look. A blip shorter
    //! than the grace pages nothing. `crate::retain` feeds these.

    use super::*;
    use crate::config::RetainPlace;

    /// How long a channel's retention checks may fail on our side before
    /// "postcanary degraded" pages: for an IMAP place (inbox or archive) the
    /// channel's inbox's `blind_grace` — the knob that decides when an
    /// unwatched probe becomes `error` — and for the HTTP check its own
    /// `[channel.retain_check] blind_grace`.
    pub fn retain_grace(config: &Config, ch: &Channel) -> Duration {
        match ch.retain.as_ref().map(|r| &r.place) {
            Some(RetainPlace::Http(h)) => h.blind_grace,
            _ => ch
                .inbox
                .as_deref()
                .and_then(|i| config.inbox(i))
                .map_or(crate::config::DEFAULT_BLIND_GRACE, |i| i.blind_grace),
        }
    }

    /// The incident key of a channel's retention failures.
    pub fn retention_key(channel: &str) -> String {
        format!("retention:{channel}")
    }

    /// The path of ours whose failure stops a channel's retention checks.
    pub fn retain_path(channel: &str) -> String {
        format!("retain:{channel}")
    }

    impl Subject {
        pub(super) fn retention(ch: &Channel) -> Subject {
            Subject {
                channel: retention_key(&ch.id),
                name: format!("{} (retention)", ch.name),
                owner: ch.owner.clone(),
                target: target_of(ch),
                notify: ch.notify.clone(),
            }
        }
    }

    /// What one retention check's result means for the channel's retention
    /// incident: `verdict` is `Lost` or `Altered` (a failure) or `None` (the
    /// canary was found as kept).
    #[allow(clippy::too_many_arguments)]
    pub fn decide_retention(
        config: &Config,
        ch: &Channel,
        probe: &ProbeRecord,
        verdict: Option<Verdict>,
        detail: &str,
        open: Option<&Incident>,
        runtime: &[SilenceRecord],
        now: Millis,
        source: &str,
    ) -> IncidentAction {
        let subject = Subject::retention(ch);
        let Some(verdict) = verdict else {
            return match open {
                Some(o) => resolve(
                    config,
                    &subject,
                    o,
                    &format!("a retained canary was found: {detail}"),
                    now,
                    source,
                ),
                None => IncidentAction::Nothing,
            };
        };
        finding(
            config,
            &subject,
            ch,
            open,
            Finding {
                key: format!("postcanary/retention/{}/{}/{now}", ch.id, probe.id),
                verdict: verdict.as_str(),
                detail: detail.to_string(),
                token: &probe.token,
                timeline: Vec::new(),
            },
            runtime,
            now,
            source,
        )
    }

    /// A check of `ch` that could not look (`Some((why, since))`, failing on
    /// our side since `since`, the first fault of its current run) or could
    /// (`None`), against the open degraded incident of its retention checks.
    /// The incident opens only once the faults have lasted the channel's
    /// [`retain_grace`].
    pub fn decide_retain_fault(
        config: &Config,
        ch: &Channel,
        fault: Option<(&str, Millis)>,
        open: Option<&Incident>,
        now: Millis,
        source: &str,
    ) -> IncidentAction {
        let path = retain_path(&ch.id);
        let subject = Subject::degraded(config, &path);
        let grace = i64::try_from(retain_grace(config, ch).as_millis()).unwrap_or(i64::MAX);
        match (fault, open) {
            (None, Some(o)) => resolve(
                config,
                &subject,
                o,
                &format!("the retention checks of `{}` can look again", ch.id),
                now,
                source,
            ),
            (None, None) => IncidentAction::Nothing,
            (Some((why, _)), Some(o)) => IncidentAction::Update {
                incident_id: o.id,
                verdict: Verdict::Error.to_string(),
                detail: why.to_string(),
                at: now,
            },
            (Some((_, since)), None) if now.saturating_sub(since) < grace => IncidentAction::Nothing,
            (Some((why, since)), None) => {
                let why = format!(
                    "{why} (the retention checks of `{}` have failed on our side since {})",
                    ch.id,
                    crate::page::rfc3339(since)
                );
                let why = why.as_str();
                let key = format!("postcanary/degraded/{path}/{now}");
                IncidentAction::Open {
                    channel: degraded_key(&path),
                    pages: pages(
                        &subject,
                        PageEvent::Trigger,
                        &key,
                        0,
                        Verdict::Error.as_str(),
                        why,
                        now,
                        now,
                        None,
                        Vec::new(),
                        source,
                    ),
                    dedup_key: key,
                    verdict: Verdict::Error.to_string(),
                    detail: why.to_string(),
                    at: now,
                    silenced: None,
                }
            }
        }
    }
}

pub mod compliance {
    //! Compliance findings: a delivered canary whose path breaks its channel's
    //! policy (`require_tls`, `require_auth`) keeps its verdict — it arrived —
    //! and opens the channel's compliance incident (`compliance:CHANNEL`),
    //! paged to the channel's notifiers; the next compliant canary of that
    //! channel resolves it. Like [`super::decide_dns`], the decision is a pure
    //! function; [`Processor::compliance`] feeds it from the ledger.

    use super::*;
    use crate::compliance::{assess, Assessment, KeptPath, PATH_EVENT};

    /// The verdict text of a compliance incident.
    pub const COMPLIANCE_BREACH: &str = "compliance_breach";

    /// The incident key of a channel's compliance findings.
    pub fn compliance_key(channel: &str) -> String {
        format!("compliance:{channel}")
    }

    impl Subject {
        /// A channel's compliance: the channel's own owner and notifiers.
        pub(super) fn compliance(ch: &Channel) -> Subject {
            Subject {
                channel: compliance_key(&ch.id),
                name: format!("{} (compliance)", ch.name),
                owner: ch.owner.clone(),
                target: target_of(ch),
                notify: ch.notify.clone(),
            }
        }
    }

    /// The newest path kept with a probe, if any.
    pub fn kept_path(events: &[Event]) -> Option<KeptPath> {
        events
            .iter()
            .rev()
            .find(|e| e.kind == PATH_EVENT)
            .and_then(|e| KeptPath::from_event(&e.detail))
    }

    /// What one arrived canary's assessment means for its channel's compliance incident.
    #[allow(clippy::too_many_arguments)]
    pub fn decide_compliance(
        config: &Config,
        ch: &Channel,
        probe: &ProbeRecord,
        probe_events: &[Event],
        a: &Assessment,
        open: Option<&Incident>,
        runtime: &[SilenceRecord],
        now: Millis,
        source: &str,
    ) -> IncidentAction {
        let subject = Subject::compliance(ch);
        if a.breaches.is_empty() {
            return match open {
                // A compliant canary sent before the one that opened the
                // finding says nothing about the path since (canaries may
                // arrive out of order): only a later one resolves it. Probe
                // ids are ULIDs, so they sort by creation time.
                Some(o)
                    if o.dedup_key
                        .rsplit('/')
                        .next()
                        .is_some_and(|opener| probe.id.as_str() < opener) =>
                {
                    IncidentAction::Nothing
                }
                Some(o) => resolve(
                    config,
                    &subject,
                    o,
                    &format!("a compliant canary: {}", ch.policy.describe()),
                    now,
                    source,
                ),
                None => IncidentAction::Nothing,
            };
        }
        // Every breaching canary counts (`failures`), also with the same finding.
        finding(
            config,
            &subject,
            ch,
            open,
            Finding {
                key: format!("postcanary/compliance/{}/{}", ch.id, probe.id),
                verdict: COMPLIANCE_BREACH,
                detail: a.finding(),
                token: &probe.token,
                timeline: timeline(probe_events),
            },
            runtime,
            now,
            source,
        )
    }

    /// Whether a verdict says the canary arrived (its path is the channel's).
    pub fn arrived(v: Verdict) -> bool {
        matches!(
            v,
            Verdict::Delivered | Verdict::Late | Verdict::Misrouted | Verdict::Junked
        )
    }

    impl Processor {
        /// The compliance change an arrived canary makes, if its channel has a
        /// policy and its path was kept (a message read without its headers
        /// concludes nothing).
        pub(super) async fn compliance(
            &self,
            ch: &Channel,
            p: &ProbeRecord,
            probe_events: &[Event],
            runtime: &[SilenceRecord],
        ) -> Result<Option<IncidentChange>, StoreError> {
            if ch.policy.is_empty() || !arrived(p.verdict) {
                return Ok(None);
            }
            let Some(path) = kept_path(probe_events) else {
                return Ok(None);
            };
            let a = assess(&path, &self.config.our_side(ch), &ch.policy);
            if !a.breaches.is_empty() {
                tracing::warn!(channel = %ch.id, token = %p.token, finding = %a.finding(), "compliance breach");
            }
            let open = self.store.open_incident(&compliance_key(&ch.id)).await?;
            let action = decide_compliance(
                &self.config,
                ch,
                p,
                probe_events,
                &a,
                open.as_ref(),
                runtime,
                now_millis(),
                &self.source,
            );
            Ok(Some(IncidentChange {
                probe_id: None,
                reclassify: None,
                action,
            }))
        }
    }

    #[cfg(test)]
    mod tests {
        use std::sync::Arc;

        use super::*;
        use crate::ledger::sqlite::SqliteStore;
        use crate::ledger::{DynStore, NewProbe};
        use crate::verdict::Judgement;

        fn config(channel_keys: &str) -> Result<Config, crate::config::ConfigErrors> {
            let dir = tempfile::tempdir().unwrap();
            let text = format!(
                r#"
    [defaults]
    notify = ["ops"]
    require_auth = ["dmarc"]
    [[sender]]
    name = "relay"
    kind = "smtp"
    host = "127.0.0.1"
    port = 2525
    tls = "none"
    from = "canary@kommune.example"
    [[notifier]]
    name = "ops"
    kind = "webhook"
    url = "http://127.0.0.1:9/ops"
    [[channel]]
    id = "social-mail"
    name = "Social"
    kind = "mail"
    to = "social@kommune.example"
    expect = "bounce"
    {channel_keys}
    [[channel]]
    id = "plain-mail"
    name = "Plain"
    kind = "mail"
    to = "borger@kommune.example"
    expect = "bounce"
    require_auth = []
    "#
            );
            let path = dir.path().join("c.toml");
            std::fs::write(&path, text).unwrap();
            Config::load(&path)
        }

        const PLAIN_HOP: &str = "Authentication-Results: mx.kommune.example; dmarc=pass header.from=kommune.example\r\n\
    Received: from relay.kommune.example (localhost [127.0.0.1])\r\n\tby mx.kommune.example (Postfix) with ESMTP id 1; Tue,  2 Dec 2025 10:15:03 +0100\r\n\
    Received: from prober (localhost [127.0.0.1])\r\n\tby relay.kommune.example (Postfix) with ESMTP id 2; Tue,  2 Dec 2025 10:15:02 +0100\r\n\r\n";

        fn tls_path() -> String {
            PLAIN_HOP.replacen(
                "with ESMTP id 1",
                "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) with ESMTPS id 1",
                1,
            )
        }

        async fn arrive(store: &DynStore, id: &str, created_at: Millis, headers: &str) {
            store
                .insert_probe(&NewProbe {
                    id: id.into(),
                    token: format!("pc-{id}"),
                    channel: "social-mail".into(),
                    kind: "mail".into(),
                    expect: crate::config::Expect::Deliver,
                    inbox: None,
                    target: "social@kommune.example".into(),
                    created_at,
                    deadline: created_at + 60_000,
                    run_id: "r".into(),
                })
                .await
                .unwrap();
            store.record_sent(id, created_at, "250 ok").await.unwrap();
            let kept = KeptPath::of(&crate::mailpath::parse(headers.as_bytes()));
            store
                .add_event(id, created_at + 1, PATH_EVENT, &kept.to_event())
                .await
                .unwrap();
            let j = Judgement {
                verdict: Verdict::Delivered,
                detail: "found".into(),
                at: created_at + 2,
                found: None,
                latency_ms: Some(2),
                fault: None,
            };
            assert!(store.judge(id, &j).await.unwrap());
        }

        #[test]
        fn policy_keys_in_defaults_and_channels_with_clear_errors() {
            let c = config("require_tls = \"1.2\"").unwrap();
            let social = c.channel("social-mail").unwrap();
            assert_eq!(social.policy.require_tls, Some(crate::mailpath::TlsVersion::Tls1_2));
            assert_eq!(social.policy.require_auth, vec![crate::compliance::AuthMethod::Dmarc]);
            // `require_auth = []` turns the default off for one channel.
            assert!(c.channel("plain-mail").unwrap().policy.is_empty());
            let e = config("require_tls = \"1.9\"").unwrap_err().to_string();
            assert!(e.contains("channel.require_tls") && e.contains("\"1.9\""), "{e}");
            let e = config("require_auth = [\"dmarc\", \"bimi\"]").unwrap_err().to_string();
            assert!(e.contains("channel.require_auth") && e.contains("bimi"), "{e}");
            let e = config("require_auth = [\"spf\", \"SPF\"]").unwrap_err().to_string();
            assert!(e.contains("twice"), "{e}");
            assert!(config("require_tls = \"none\"")
                .unwrap()
                .channel("social-mail")
                .unwrap()
                .policy
                .require_tls
                .is_none());
        }

        #[tokio::test]
        async fn a_plain_hop_opens_a_compliance_incident_and_a_compliant_canary_resolves_it() {
            let config = Arc::new(config("require_tls = \"1.2\"").unwrap());
            let store: DynStore = Arc::new(SqliteStore::in_memory().unwrap());
            let processor = Processor {
                config: Arc::clone(&config),
                store: Arc::clone(&store),
                source: "t".into(),
                outbox: crate::outbox::Wake::default(),
            };
            arrive(&store, "p1", 1_000, PLAIN_HOP).await;
            assert_eq!(processor.drain().await.unwrap(), 1);
            // Still delivered: it arrived.
            assert_eq!(store.probe("p1").await.unwrap().unwrap().verdict, Verdict::Delivered);
            assert!(store.open_incident("social-mail").await.unwrap().is_none());
            let open = store
                .open_incident("compliance:social-mail")
                .await
                .unwrap()
                .expect("opened");
            assert_eq!(open.verdict, COMPLIANCE_BREACH);
            assert_eq!(
                open.detail,
                "hop relay.kommune.example → mx.kommune.example without TLS"
            );
            let page = store.outbox_head("ops").await.unwrap().expect("paged");
            assert_eq!(page.page.channel, "compliance:social-mail");
            assert_eq!(
                page.page.summary,
                "Social (compliance): compliance_breach - hop relay.kommune.example → mx.kommune.example without TLS"
            );
            let path_line = page.page.timeline.iter().find(|t| t.kind == PATH_EVENT).unwrap();
            assert!(
                path_line
                    .detail
                    .contains("relay.kommune.example [127.0.0.1] → mx.kommune.example, ESMTP, no TLS"),
                "{}",
                path_line.detail
            );
            store.page_sent(page.id, 2_000).await.unwrap();
            // A compliant canary sent before the finding, arriving late, does not resolve it.
            arrive(&store, "p0", 500, &tls_path()).await;
            processor.drain().await.unwrap();
            assert!(store.open_incident("compliance:social-mail").await.unwrap().is_some());
            // A second breach counts; a TLS canary resolves and pages the all-clear.
            arrive(&store, "p2", 3_000, PLAIN_HOP).await;
            processor.drain().await.unwrap();
            assert_eq!(
                store
                    .open_incident("compliance:social-mail")
                    .await
                    .unwrap()
                    .unwrap()
                    .failures,
                2
            );
            arrive(&store, "p3", 5_000, &tls_path()).await;
            processor.drain().await.unwrap();
            assert!(store.open_incident("compliance:social-mail").await.unwrap().is_none());
            let resolve = store.outbox_head("ops").await.unwrap().expect("resolve page");
            assert_eq!(resolve.page.event, PageEvent::Resolve);
            assert_eq!(resolve.page.dedup_key, open.dedup_key);
            // A DMARC fail alone breaks the default `require_auth`.
            arrive(&store, "p4", 7_000, &tls_path().replace("dmarc=pass", "dmarc=fail")).await;
            processor.drain().await.unwrap();
            let open = store.open_incident("compliance:social-mail").await.unwrap().unwrap();
            assert_eq!(open.detail, "DMARC fail at mx.kommune.example");
        }
    }
}
pub use compliance::{compliance_key, decide_compliance, COMPLIANCE_BREACH};
mod ops {
    //! What operators add to the paging policy: acknowledging an incident (its
    //! pages to the notifiers that take them) and escalating one nobody
    //! acknowledged in time. Pure functions, like the rest of the policy.

    use super::{pages, pages_of_open, subject_of, Subject};
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
    pub fn acknowledge_pages(
        config: &Config,
        open: &Incident,
        by: &str,
        note: &str,
        now: Millis,
        source: &str,
    ) -> Pages {
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
        let pages = pages_of_open(&to, PageEvent::Trigger, open, events, now, source);
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
}
pub use ops::acknowledge_pages;
use ops::{escalation_due, with_escalated};

#[cfg(test)]
pub(crate) mod tests;
