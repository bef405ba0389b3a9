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
            detail: e.detail.clone(),
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

/// Decides what one verdict means for incidents. Returns the changes to
/// apply in order; the last one carries the probe id (marks it handled).
pub fn decide(config: &Config, ch: &Channel, f: &VerdictFacts<'_>, now: Millis, source: &str) -> Vec<IncidentChange> {
    let p = f.probe;
    let verdict = p.verdict;
    let detail = p.detail.clone().unwrap_or_default();
    let sender = fault_path(p, ch);
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
            let subject = Subject::degraded(config, &inbox_path(inbox));
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
    if f.newest_success.is_some_and(|t| t > p.created_at) {
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
            None if open.channel.starts_with("discover:") => {
                let finding = open.channel.strip_prefix("discover:").unwrap_or_default();
                Some(Subject::discover(config, finding))
            }
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
    let silenced = config
        .channel(&open.channel)
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
    let pages = pages(
        &subject,
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
    );
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
        let degraded_incident = self.store.open_incident(&degraded_key(fault_path(p, ch))).await?;
        let inbox_incident = match p.found_in.as_deref() {
            Some(inbox) => self.store.open_incident(&degraded_key(&inbox_path(inbox))).await?,
            None => None,
        };
        let (newest_success, newest_failure) = self.store.channel_order(&ch.id).await?;
        let probe_events = self.store.events(&p.id).await?;
        let silences = self.store.silences(Some(now_millis()), 1000).await?;
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
        for change in decide(&self.config, ch, &facts, now_millis(), &self.source) {
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

mod ops;
pub use ops::acknowledge_pages;
use ops::{escalation_due, with_escalated};

#[cfg(test)]
mod tests;
