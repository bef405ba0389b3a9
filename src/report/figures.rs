//! The report's figures as pure functions of what the ledger holds: daily
//! probe counts, the incidents of the period with their first failing probe
//! and their pages, and the watchers' blind spells. docs/report.md says how
//! each figure is computed; the tests here check it against hand-made data.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ledger::{BlindSpell, DayCounts, Incident, PageRecord, ProbeRecord, DAY_MS};
use crate::verdict::Millis;

/// The reported period, `[from, to)`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Period {
    pub from: Millis,
    pub to: Millis,
    /// How it was asked for: `since 30d` or `month 2026-11`.
    pub label: String,
}

/// A channel as the config names it.
#[derive(Clone, Debug)]
pub struct ChannelInfo {
    pub id: String,
    pub name: String,
    pub owner: String,
}

/// One incident with what its figures need.
#[derive(Clone, Debug)]
pub struct IncidentFacts {
    pub incident: Incident,
    /// The probe that opened it (`None`: not opened by a probe, or pruned).
    pub first_failure: Option<ProbeRecord>,
    pub pages: Vec<PageRecord>,
}

/// Everything a report is computed from.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub period: Period,
    /// When the report is made: open incidents and spells are open until then.
    pub now: Millis,
    pub channels: Vec<ChannelInfo>,
    /// Daily counts of the period's days (of the selected channels).
    pub counts: Vec<DayCounts>,
    /// Incidents open at some moment of the period.
    pub incidents: Vec<IncidentFacts>,
    /// The watchers the config has: (watcher, inbox).
    pub watchers: Vec<(String, String)>,
    /// Blind spells overlapping the period.
    pub spells: Vec<BlindSpell>,
    /// Whether incidents that are no channel's (postcanary's own, DNS,
    /// discovery) are reported too (no channel or owner filter).
    pub other_incidents: bool,
    /// Retention checks done in the period, per channel.
    pub retention: Vec<crate::ledger::RetainCounts>,
    /// Probe counts per channel and vantage point (`[vantage]`; empty without).
    pub vantages: Vec<crate::ledger::VantageCounts>,
}

/// Whether an incident belongs to a channel: its own, or its retention
/// canaries' (`retention:CHANNEL`), which count as the channel's failures.
pub fn incident_of(incident_channel: &str, channel: &str) -> bool {
    incident_channel == channel || incident_channel.strip_prefix("retention:") == Some(channel)
}

/// Retention checks of one channel done in the period (docs/retention.md).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct RetentionFigures {
    /// Canaries found as kept.
    pub kept: i64,
    /// Canaries gone (`lost`).
    pub lost: i64,
    /// Canaries changed (`altered`).
    pub altered: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    pub period: Period,
    pub generated_at: Millis,
    /// Caveats that apply to the whole report.
    pub notes: Vec<String>,
    pub channels: Vec<ChannelReport>,
    pub owners: Vec<OwnerReport>,
    /// Per vantage point (with `[vantage]`): its probes of the selected
    /// channels and its own "vantage degraded" incidents. Empty without vantages.
    pub vantages: Vec<VantageReport>,
    pub watchers: Vec<WatcherReport>,
    /// Incidents of postcanary itself, DNS drift and discovery.
    pub other_incidents: Vec<IncidentReport>,
}

/// One vantage point's figures over the selected channels.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct VantageReport {
    pub vantage: String,
    /// Its probes of the selected channels (latency is not split: `None`).
    pub availability: Availability,
    /// Its "vantage degraded" incidents (`vantage:NAME`) open at some moment of the period.
    pub incidents: Vec<IncidentReport>,
}

/// One channel's figures from one vantage point.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChannelVantage {
    pub vantage: String,
    pub availability: Availability,
}

/// Availability figures: successful / judged probes.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Availability {
    pub judged: i64,
    pub successful: i64,
    /// `error` verdicts among the judged (postcanary's own failures; they count as not successful).
    pub errors: i64,
    /// Probes created in the period and still pending when the report was made (not counted).
    pub pending: i64,
    /// successful / judged × 100; `None` without judged probes.
    pub percent: Option<f64>,
    /// Mean latency of delivered probes (ms).
    pub mean_latency_ms: Option<i64>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DayReport {
    /// Start of the UTC day.
    pub day: Millis,
    /// `YYYY-MM-DD`.
    pub date: String,
    #[serde(flatten)]
    pub availability: Availability,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct IncidentReport {
    pub id: i64,
    pub channel: String,
    pub verdict: String,
    pub detail: String,
    pub failures: i64,
    pub opened_at: Millis,
    pub resolved_at: Option<Millis>,
    /// When the first failing probe was sent (else created; else the incident's opening).
    pub started_at: Millis,
    /// When a notifier first accepted a trigger page.
    pub first_page_accepted_at: Option<Millis>,
    /// started_at → first trigger page accepted.
    pub time_to_detect_ms: Option<i64>,
    /// started_at → acknowledged by an operator (page or API); `None` when nobody did.
    pub time_to_acknowledge_ms: Option<i64>,
    /// started_at → resolved.
    pub time_to_resolve_ms: Option<i64>,
    /// Pages of this incident accepted by a notifier within the period.
    pub pages_sent: i64,
    /// How long it was open within the period.
    pub open_in_period_ms: i64,
    /// Opened before the period began (its figures are not in the period's means).
    pub opened_before_period: bool,
    /// Still open at the end of the period.
    pub open_at_end: bool,
    /// Held back by a maintenance window.
    pub silenced: Option<String>,
}

/// Figures shared by a channel and an owner.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    #[serde(flatten)]
    pub availability: Availability,
    /// Incidents opened within the period.
    pub incidents_opened: i64,
    /// Incidents open at some moment of the period (including those opened before it).
    pub incidents_in_period: i64,
    /// Pages accepted by notifiers within the period.
    pub pages_sent: i64,
    /// Means over the incidents opened in the period that have the figure.
    pub mean_time_to_detect_ms: Option<i64>,
    pub mean_time_to_acknowledge_ms: Option<i64>,
    pub mean_time_to_resolve_ms: Option<i64>,
    /// Sum of the incidents' open time within the period.
    pub incident_time_ms: i64,
    /// Compliance incidents (`compliance:CHANNEL`: an arrived canary broke
    /// `require_tls`/`require_auth`) opened within the period. They do not
    /// count against availability: the canary arrived.
    pub compliance_findings: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChannelReport {
    pub id: String,
    pub name: String,
    pub owner: String,
    #[serde(flatten)]
    pub summary: Summary,
    pub days: Vec<DayReport>,
    pub incidents: Vec<IncidentReport>,
    /// The channel's compliance incidents open at some moment of the period.
    pub compliance_incidents: Vec<IncidentReport>,
    /// Retention checks done in the period (channels with `retain`).
    pub retention: RetentionFigures,
    /// The channel's probes per vantage point (with `[vantage]`), by name.
    pub vantages: Vec<ChannelVantage>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct OwnerReport {
    pub owner: String,
    pub channels: Vec<String>,
    #[serde(flatten)]
    pub summary: Summary,
    /// The owner's channels together, per UTC day.
    pub days: Vec<DayReport>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WatcherReport {
    pub watcher: String,
    pub inbox: String,
    /// Blind spells overlapping the period.
    pub spells: i64,
    /// Their total length within the period.
    pub blind_ms: i64,
    /// The longest, clipped to the period.
    pub longest: Option<Spell>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Spell {
    pub since: Millis,
    /// `None`: still blind at the end of the period.
    pub until: Option<Millis>,
    pub ms: i64,
    pub why: String,
}

pub const NOTE_ACKS: &str = "time to acknowledge: from the first failing probe sent to an operator's \
     acknowledgement on the status page or the API; \u{2014} for incidents nobody acknowledged";

/// The UTC date of a day start.
pub fn date(day: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(day)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn percent(ok: i64, judged: i64) -> Option<f64> {
    (judged > 0).then(|| ok as f64 * 100.0 / judged as f64)
}

#[derive(Default, Clone, Copy)]
struct Tally {
    judged: i64,
    successful: i64,
    errors: i64,
    pending: i64,
    latency_count: i64,
    latency_sum: i64,
}

impl Tally {
    fn add_vantage(&mut self, c: &crate::ledger::VantageCounts) {
        self.judged += c.judged;
        self.successful += c.successful;
        self.errors += c.errors;
        self.pending += c.pending;
    }
    fn add(&mut self, c: &DayCounts) {
        self.judged += c.judged;
        self.successful += c.successful;
        self.errors += c.errors;
        self.pending += c.pending;
        self.latency_count += c.latency_count;
        self.latency_sum += c.latency_sum;
    }
    fn merge(&mut self, o: &Tally) {
        self.judged += o.judged;
        self.successful += o.successful;
        self.errors += o.errors;
        self.pending += o.pending;
        self.latency_count += o.latency_count;
        self.latency_sum += o.latency_sum;
    }
    fn availability(&self) -> Availability {
        Availability {
            judged: self.judged,
            successful: self.successful,
            errors: self.errors,
            pending: self.pending,
            percent: percent(self.successful, self.judged),
            mean_latency_ms: (self.latency_count > 0).then(|| self.latency_sum / self.latency_count),
        }
    }
}

/// The figures of one incident within `period`, as of `now`.
pub fn incident_report(f: &IncidentFacts, period: &Period, now: Millis) -> IncidentReport {
    let i = &f.incident;
    let started_at = f
        .first_failure
        .as_ref()
        .map(|p| p.sent_at.unwrap_or(p.created_at))
        .unwrap_or(i.opened_at);
    let first_page_accepted_at = f
        .pages
        .iter()
        .filter(|p| p.event == "trigger" && p.state == "sent")
        .filter_map(|p| p.sent_at)
        .min();
    let end = i.resolved_at.unwrap_or(now).min(period.to);
    let begin = i.opened_at.max(period.from);
    IncidentReport {
        id: i.id,
        channel: i.channel.clone(),
        verdict: i.verdict.clone(),
        detail: i.detail.clone(),
        failures: i.failures,
        opened_at: i.opened_at,
        resolved_at: i.resolved_at,
        started_at,
        first_page_accepted_at,
        time_to_detect_ms: first_page_accepted_at.map(|t| (t - started_at).max(0)),
        time_to_acknowledge_ms: i.acknowledged_at.map(|t| (t - started_at).max(0)),
        time_to_resolve_ms: i.resolved_at.map(|t| (t - started_at).max(0)),
        pages_sent: f
            .pages
            .iter()
            .filter(|p| p.state == "sent" && p.sent_at.is_some_and(|t| t >= period.from && t < period.to))
            .count() as i64,
        open_in_period_ms: (end - begin).max(0),
        opened_before_period: i.opened_at < period.from,
        open_at_end: i.resolved_at.is_none_or(|t| t >= period.to),
        silenced: i.silenced.clone(),
    }
}

fn mean(values: impl Iterator<Item = Option<i64>>) -> Option<i64> {
    let v: Vec<i64> = values.flatten().collect();
    (!v.is_empty()).then(|| v.iter().sum::<i64>() / v.len() as i64)
}

fn summary(tally: &Tally, incidents: &[&IncidentReport], compliance: &[&IncidentReport]) -> Summary {
    let opened: Vec<&&IncidentReport> = incidents.iter().filter(|i| !i.opened_before_period).collect();
    Summary {
        availability: tally.availability(),
        incidents_opened: opened.len() as i64,
        incidents_in_period: incidents.len() as i64,
        pages_sent: incidents.iter().map(|i| i.pages_sent).sum(),
        mean_time_to_detect_ms: mean(opened.iter().map(|i| i.time_to_detect_ms)),
        mean_time_to_acknowledge_ms: mean(opened.iter().map(|i| i.time_to_acknowledge_ms)),
        mean_time_to_resolve_ms: mean(opened.iter().map(|i| i.time_to_resolve_ms)),
        incident_time_ms: incidents.iter().map(|i| i.open_in_period_ms).sum(),
        compliance_findings: compliance.iter().filter(|i| !i.opened_before_period).count() as i64,
    }
}

/// The length of a spell within the period, as of `now`.
fn clip(s: &BlindSpell, period: &Period, now: Millis) -> (Millis, Option<Millis>, i64) {
    let since = s.since.max(period.from);
    let end = s.until.unwrap_or(now).min(period.to);
    let until = s.until.filter(|&u| u < period.to);
    (since, until, (end - since).max(0))
}

/// Computes the report.
pub fn compute(inp: &Inputs) -> Report {
    let period = &inp.period;
    let mut per_channel: BTreeMap<&str, (Tally, Vec<DayReport>)> = BTreeMap::new();
    for c in &inp.counts {
        let entry = per_channel.entry(c.channel.as_str()).or_default();
        entry.0.add(c);
        let mut day = Tally::default();
        day.add(c);
        entry.1.push(DayReport {
            day: c.day,
            date: date(c.day),
            availability: day.availability(),
        });
    }
    let incidents: Vec<IncidentReport> = inp
        .incidents
        .iter()
        .map(|f| incident_report(f, period, inp.now))
        .collect();

    let mut channels = Vec::new();
    #[allow(clippy::type_complexity)]
    let mut owners: BTreeMap<&str, (Vec<String>, Tally, Vec<&IncidentReport>, Vec<&IncidentReport>)> = BTreeMap::new();
    let mut owner_days: BTreeMap<(&str, Millis), Tally> = BTreeMap::new();
    for c in &inp.counts {
        if let Some(ch) = inp.channels.iter().find(|ch| ch.id == c.channel) {
            owner_days.entry((ch.owner.as_str(), c.day)).or_default().add(c);
        }
    }
    for ch in &inp.channels {
        let (tally, mut days) = per_channel.remove(ch.id.as_str()).unwrap_or_default();
        days.sort_by_key(|d| d.day);
        let mine: Vec<&IncidentReport> = incidents.iter().filter(|i| incident_of(&i.channel, &ch.id)).collect();
        let retention = inp
            .retention
            .iter()
            .find(|r| r.channel == ch.id)
            .map(|r| RetentionFigures {
                kept: r.kept,
                lost: r.lost,
                altered: r.altered,
            })
            .unwrap_or_default();
        let key = crate::incident::compliance_key(&ch.id);
        let findings: Vec<&IncidentReport> = incidents.iter().filter(|i| i.channel == key).collect();
        let o = owners.entry(ch.owner.as_str()).or_default();
        o.0.push(ch.id.clone());
        o.1.merge(&tally);
        o.2.extend(mine.iter().copied());
        o.3.extend(findings.iter().copied());
        let vantages = inp
            .vantages
            .iter()
            .filter(|v| v.channel == ch.id)
            .map(|v| {
                let mut t = Tally::default();
                t.add_vantage(v);
                ChannelVantage {
                    vantage: v.vantage.clone(),
                    availability: t.availability(),
                }
            })
            .collect();
        channels.push(ChannelReport {
            vantages,
            id: ch.id.clone(),
            name: ch.name.clone(),
            owner: ch.owner.clone(),
            summary: summary(&tally, &mine, &findings),
            days,
            incidents: mine.into_iter().cloned().collect(),
            compliance_incidents: findings.into_iter().cloned().collect(),
            retention,
        });
    }
    let owners = owners
        .into_iter()
        .map(|(owner, (chs, tally, incs, findings))| OwnerReport {
            owner: owner.to_string(),
            channels: chs,
            summary: summary(&tally, &incs, &findings),
            days: owner_days
                .range((owner, Millis::MIN)..=(owner, Millis::MAX))
                .map(|((_, day), t)| DayReport {
                    day: *day,
                    date: date(*day),
                    availability: t.availability(),
                })
                .collect(),
        })
        .collect();

    let mut watchers: Vec<(String, String)> = inp.watchers.clone();
    for s in &inp.spells {
        if !watchers.iter().any(|(w, _)| *w == s.watcher) {
            watchers.push((s.watcher.clone(), s.inbox.clone()));
        }
    }
    let watchers = watchers
        .into_iter()
        .map(|(watcher, inbox)| {
            let mine: Vec<&BlindSpell> = inp.spells.iter().filter(|s| s.watcher == watcher).collect();
            let mut longest: Option<Spell> = None;
            let mut blind_ms = 0;
            for s in &mine {
                let (since, until, ms) = clip(s, period, inp.now);
                blind_ms += ms;
                if longest.as_ref().is_none_or(|l| ms > l.ms) {
                    longest = Some(Spell {
                        since,
                        until,
                        ms,
                        why: s.why.clone(),
                    });
                }
            }
            WatcherReport {
                watcher,
                inbox,
                spells: mine.len() as i64,
                blind_ms,
                longest,
            }
        })
        .collect();

    // Vantage points: every one with probes of the selected channels, and
    // every one with an incident of its own in the period.
    let mut per_vantage: BTreeMap<String, Tally> = BTreeMap::new();
    for v in &inp.vantages {
        if inp.channels.iter().any(|c| c.id == v.channel) {
            per_vantage.entry(v.vantage.clone()).or_default().add_vantage(v);
        }
    }
    for i in &incidents {
        if let Some(v) = i.channel.strip_prefix("vantage:") {
            per_vantage.entry(v.to_string()).or_default();
        }
    }
    let vantages: Vec<VantageReport> = per_vantage
        .into_iter()
        .map(|(vantage, t)| VantageReport {
            incidents: incidents
                .iter()
                .filter(|i| i.channel == crate::incident::quorum::vantage_key(&vantage))
                .cloned()
                .collect(),
            availability: t.availability(),
            vantage,
        })
        .collect();
    let other_incidents = if inp.other_incidents {
        incidents
            .iter()
            .filter(|i| {
                !i.channel.starts_with("vantage:")
                    && !inp.channels.iter().any(|c| {
                        incident_of(&i.channel, &c.id) || i.channel.strip_prefix("compliance:") == Some(c.id.as_str())
                    })
            })
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    let mut notes = vec![NOTE_ACKS.to_string()];
    if period.to > inp.now {
        notes.push("the period has not ended: its last day is counted up to the moment of the report".into());
    }
    if !vantages.is_empty() {
        notes.push(
            "per vantage point: the probes each vantage sent, whole days from the daily per-vantage rollups; \
             days pruned before a ledger had those rollups count in the channel's figures only"
                .into(),
        );
    }
    Report {
        period: period.clone(),
        generated_at: inp.now,
        notes,
        channels,
        owners,
        vantages,
        watchers,
        other_incidents,
    }
}

/// The days of a period as day starts, for charts: every UTC day that
/// overlaps `[from, to)`.
pub fn days_of(period: &Period) -> Vec<Millis> {
    let mut out = Vec::new();
    let mut d = crate::ledger::day_start(period.from);
    while d < period.to && out.len() < 400 {
        out.push(d);
        d += DAY_MS;
    }
    out
}
