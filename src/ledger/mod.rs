//! The ledger: the persistent record of probes, their evidence trail and the
//! inbox watchers' cursors. Everything that judges a probe goes through
//! [`Store::judge`] or [`Store::sweep`], both of which only change a probe that
//! has not been judged yet, in one atomic statement — so no probe is judged
//! twice, whoever races.

pub mod backend;
/// The store contract suite; tests/ledger_contract.rs runs it on every backend.
#[doc(hidden)]
pub mod contract;
pub mod migrate;
pub mod postgres;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::page::Page;
use crate::verdict::Expect;
use crate::verdict::{Judgement, Millis, Verdict};

/// Errors of the store itself (I/O, corruption): never a probe's fault.
#[derive(Debug, thiserror::Error)]
#[error("ledger: {0}")]
pub struct StoreError(pub String);

pub type StoreResult<T> = Result<T, StoreError>;

/// A probe as written before anything is sent.
#[derive(Clone, Debug)]
pub struct NewProbe {
    pub id: String,
    pub token: String,
    pub channel: String,
    pub kind: String,
    pub expect: Expect,
    pub inbox: Option<String>,
    pub target: String,
    pub created_at: Millis,
    pub deadline: Millis,
    /// Identifies the process that wrote it, so the sweeper can tell a send
    /// still in flight from one abandoned by a crash.
    pub run_id: String,
}

/// A probe row.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeRecord {
    pub id: String,
    pub token: String,
    pub channel: String,
    pub kind: String,
    pub expect: String,
    pub inbox: Option<String>,
    pub target: String,
    pub created_at: Millis,
    pub sent_at: Option<Millis>,
    pub deadline: Millis,
    pub verdict: Verdict,
    pub judged_at: Option<Millis>,
    pub found_in: Option<String>,
    pub found_at: Option<Millis>,
    pub latency_ms: Option<i64>,
    pub detail: Option<String>,
    pub smtp_reply: Option<String>,
    /// For an `error`: the path of postcanary's own that failed (see [`Judgement::fault`]).
    pub fault: Option<String>,
    /// The vantage point that sent it (`[vantage] name`); `None`: none configured.
    pub vantage: Option<String>,
}

impl ProbeRecord {
    pub fn expect(&self) -> Expect {
        self.expect.parse().unwrap_or(Expect::Deliver)
    }
}

/// One entry of a probe's evidence trail.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Event {
    pub at: Millis,
    pub kind: String,
    pub detail: String,
}

/// Where an inbox watcher has read up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// An incident row.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Incident {
    pub id: i64,
    pub channel: String,
    pub dedup_key: String,
    pub opened_at: Millis,
    pub opened_by: Option<String>,
    /// The latest failing verdict and its detail.
    pub verdict: String,
    pub detail: String,
    pub failures: i64,
    pub last_failure_at: Millis,
    /// Whether a trigger page has been queued.
    pub paged: bool,
    pub last_paged_at: Option<Millis>,
    /// Why it was not paged when opened (a maintenance window).
    pub silenced: Option<String>,
    pub resolved_at: Option<Millis>,
    pub resolved_by: Option<String>,
    /// When and by whom it was acknowledged (stops reminders and escalation).
    pub acknowledged_at: Option<Millis>,
    pub acknowledged_by: Option<String>,
    /// How many escalation steps have been paged.
    pub escalations: i64,
}

/// A page queued for one notifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: i64,
    pub incident_id: i64,
    pub notifier: String,
    pub event: String,
    pub dedup_key: String,
    pub page: Page,
    pub created_at: Millis,
    pub attempts: i64,
    pub next_attempt_at: Millis,
    pub first_failed_at: Option<Millis>,
    pub fallback_done: bool,
}

/// Pages to queue: (notifier name, page). The incident id in each page is
/// filled in by the store when it opens the incident.
pub type Pages = Vec<(String, Page)>;

/// What the incident logic decided for one verdict (or one reminder tick);
/// applied by [`Store::apply_incident`] in one transaction.
#[derive(Clone, Debug)]
pub struct IncidentChange {
    /// The probe whose verdict this handles; marked handled in the same transaction.
    pub probe_id: Option<String>,
    /// Turn that probe's verdict into `error` with this detail (prober degraded).
    pub reclassify: Option<String>,
    pub action: IncidentAction,
}

#[derive(Clone, Debug)]
pub enum IncidentAction {
    Nothing,
    Open {
        channel: String,
        dedup_key: String,
        verdict: String,
        detail: String,
        at: Millis,
        silenced: Option<String>,
        pages: Pages,
    },
    /// Another failure while open.
    Update {
        incident_id: i64,
        verdict: String,
        detail: String,
        at: Millis,
    },
    /// Queue pages for an open incident (a reminder, or the trigger held back by a silence).
    Page {
        incident_id: i64,
        at: Millis,
        note: String,
        pages: Pages,
    },
    Resolve {
        incident_id: i64,
        at: Millis,
        detail: String,
        pages: Pages,
    },
    /// Not acknowledged in time: page escalation step `level` (1-based).
    Escalate {
        incident_id: i64,
        level: i64,
        at: Millis,
        note: String,
        pages: Pages,
    },
}

/// An operator's acknowledgement of an open incident, applied by
/// [`Store::acknowledge`] in one transaction with its audit row and pages.
#[derive(Clone, Debug)]
pub struct Acknowledgement {
    pub incident_id: i64,
    pub by: String,
    pub note: String,
    pub at: Millis,
    /// Acknowledge pages for the notifiers that take them.
    pub pages: Pages,
}

/// A silence set at run time (an operator's, kept in the ledger).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct SilenceRecord {
    pub id: i64,
    pub channel: Option<String>,
    pub owner: Option<String>,
    pub from: Millis,
    pub until: Millis,
    pub reason: String,
    pub created_by: String,
    pub created_at: Millis,
    pub ended_at: Option<Millis>,
    pub ended_by: Option<String>,
}

impl SilenceRecord {
    /// Whether it holds back pages of this channel at `at`.
    pub fn covers(&self, channel: &str, owner: &str, at: Millis) -> bool {
        let who = self.channel.as_deref() == Some(channel) || self.owner.as_deref() == Some(owner);
        who && self.from <= at && at < self.until && self.ended_at.is_none_or(|e| at < e)
    }
}

/// A silence to set: exactly one of `channel` or `owner`.
#[derive(Clone, Debug)]
pub struct NewSilence {
    pub channel: Option<String>,
    pub owner: Option<String>,
    pub from: Millis,
    pub until: Millis,
    pub reason: String,
    pub by: String,
    pub at: Millis,
}

/// One row of the audit log: who did what, when, and why.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Millis,
    pub actor: String,
    /// `acknowledge`, `silence`, `end-silence`, `reload`, `reload-failed`.
    pub action: String,
    /// What it was done to, in words (`incident 4 (social-mail)`, `channel social-mail`).
    pub target: String,
    pub reason: String,
}

/// A notifier's queue as the readers see it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct OutboxState {
    pub notifier: String,
    /// Pages waiting to be sent.
    pub queued: i64,
    /// Of those, pages that have failed at least once.
    pub failing: i64,
    /// Pages given up (refused for good).
    pub given_up: i64,
    pub oldest_queued_at: Option<Millis>,
    pub last_error: Option<String>,
    pub last_sent_at: Option<Millis>,
}

/// One channel's latest judged probe, and its success counts per UTC day
/// (kept up to date by the ledger itself as verdicts are written).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ChannelLatest {
    pub channel: String,
    pub probe_id: String,
    pub created_at: Millis,
    pub judged_at: Option<Millis>,
    pub verdict: Verdict,
    pub latency_ms: Option<i64>,
    pub detail: Option<String>,
}

/// One verdict as the ledger wrote it (a `verdict` event), for `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerdictEvent {
    /// The event's sequence number (ascending in the order written).
    pub seq: i64,
    pub channel: String,
    pub verdict: Verdict,
    /// The probe's creation time (orders a channel's probes).
    pub created_at: Millis,
    /// When the verdict was reached.
    pub at: Millis,
    /// Hand-over to token seen, for a `delivered` verdict.
    pub latency_ms: Option<i64>,
}

/// A channel's newest judged probe, for `/metrics`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatestVerdict {
    pub channel: String,
    pub verdict: Verdict,
    pub created_at: Millis,
    /// When it was judged (its creation time if the ledger has none).
    pub at: Millis,
}

/// The verdict a `verdict` event's detail starts with (`"missed: …"`).
pub fn event_verdict(detail: &str) -> Option<Verdict> {
    detail.split_once(':').and_then(|(v, _)| v.trim().parse().ok())
}

/// What the status page, API and metrics need to know about one channel.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelStatus {
    pub channel: String,
    /// Newest judged probes, newest first (at most the requested number).
    pub recent: Vec<ProbeRecord>,
    /// (judged, successful) probes created in the last 24 h, 7 d and 30 d.
    pub window_24h: (i64, i64),
    pub window_7d: (i64, i64),
    pub window_30d: (i64, i64),
    pub pending: i64,
}

/// A half-open time range `[start, end)`.
pub type Span = (Millis, Millis);

/// Where the per-vantage counts of `[from, to)` come from, given that the
/// days before `rolled` have their rollups: the whole days inside the
/// period that are rolled up (from the rollups), and the rest of the period
/// (from the probes) — the partial days at its edges and the days after
/// the mark.
pub fn vantage_ranges(from: Millis, to: Millis, rolled: Millis) -> (Option<Span>, Vec<Span>) {
    let first_whole = if day_start(from) == from {
        from
    } else {
        day_start(from).saturating_add(DAY_MS)
    };
    let end_whole = day_start(to).min(rolled);
    if first_whole >= end_whole {
        return (None, if to > from { vec![(from, to)] } else { Vec::new() });
    }
    let live = [(from, first_whole), (end_whole, to)]
        .into_iter()
        .filter(|(a, b)| b > a)
        .collect();
    (Some((first_whole, end_whole)), live)
}

/// Adds `c` to the counts of its channel and vantage in `sum`.
pub fn add_vantage_counts(sum: &mut std::collections::BTreeMap<(String, String), VantageCounts>, c: VantageCounts) {
    let e = sum
        .entry((c.channel.clone(), c.vantage.clone()))
        .or_insert_with(|| VantageCounts {
            channel: c.channel.clone(),
            vantage: c.vantage.clone(),
            ..VantageCounts::default()
        });
    e.judged += c.judged;
    e.successful += c.successful;
    e.errors += c.errors;
    e.pending += c.pending;
}

/// Probe counts of one channel from one vantage point in a period.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct VantageCounts {
    pub channel: String,
    pub vantage: String,
    /// Probes with a verdict (every verdict but `pending`).
    pub judged: i64,
    /// Judged probes whose verdict is a success ([`Verdict::is_success`]).
    pub successful: i64,
    /// Judged probes whose verdict is `error` (postcanary's own failure).
    pub errors: i64,
    /// Probes still pending when counted.
    pub pending: i64,
}

/// Probe counts of one channel on one UTC day (a probe counts on the day it
/// was created), from the probes or from the kept daily rollup.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DayCounts {
    pub channel: String,
    /// Start of the UTC day.
    pub day: Millis,
    /// Probes with a verdict (every verdict but `pending`).
    pub judged: i64,
    /// Judged probes whose verdict is a success ([`Verdict::is_success`]).
    pub successful: i64,
    /// Judged probes whose verdict is `error` (postcanary's own failure).
    pub errors: i64,
    /// Probes still pending when counted.
    pub pending: i64,
    /// Delivered probes with a latency: how many, their sum and their maximum (ms).
    pub latency_count: i64,
    pub latency_sum: i64,
    pub latency_max: i64,
}

/// A page in the outbox, as the readers, reports and evidence show it:
/// who was paged when, and how it went.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PageRecord {
    pub id: i64,
    pub incident_id: i64,
    pub notifier: String,
    /// `trigger`, `reminder`, `acknowledge` or `resolve`.
    pub event: String,
    pub created_at: Millis,
    /// `pending`, `sent` (accepted by the notifier) or `failed` (given up).
    pub state: String,
    pub attempts: i64,
    /// When the notifier accepted it.
    pub sent_at: Option<Millis>,
    pub last_error: Option<String>,
}

/// A spell during which an inbox watcher could not look.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BlindSpell {
    pub watcher: String,
    pub inbox: String,
    pub since: Millis,
    /// `None`: still blind (or the process stopped while blind and has not
    /// seen the watcher connected since).
    pub until: Option<Millis>,
    pub why: String,
}

/// What a pruning run removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruneCut {
    /// Probes created before this (a day start) go, with their evidence; `None`: all are kept.
    pub probes_before: Option<Millis>,
    /// Rollups of days before this go; `None`: all are kept.
    pub rollups_before: Option<Millis>,
    /// Successful probes created before this lose their evidence trail and
    /// the columns a success does not need (detail, target, run id): the
    /// row keeps times, verdict, where found, latency and the server's reply.
    pub slim_before: Millis,
}

/// What one pruning run removed and kept.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct PruneStats {
    pub probes_removed: i64,
    /// Probes older than the cut kept because an open incident needs them.
    pub probes_kept_for_incidents: i64,
    pub rollups_removed: i64,
    /// Successful probes whose evidence trail was slimmed away.
    pub probes_slimmed: i64,
}

/// The ledger's operations. One implementation per backend; the contract
/// tests (`contract`, run by tests/ledger_contract.rs) are written against this trait.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Returns the value under `key`, storing `value` first if there was none.
    async fn meta_get_or_put(&self, key: &str, value: &str) -> StoreResult<String>;

    /// Writes a new pending probe. Called before the message is sent.
    async fn insert_probe(&self, p: &NewProbe) -> StoreResult<()>;

    /// Records that the message was handed over, with the server's reply.
    async fn record_sent(&self, id: &str, sent_at: Millis, reply: &str) -> StoreResult<()>;

    /// Appends to a probe's evidence trail.
    async fn add_event(&self, id: &str, at: Millis, kind: &str, detail: &str) -> StoreResult<()>;

    /// Records a verdict if the probe is still pending — or, for an arrival
    /// (`late`/`misrouted`/`junked`) or a bounce, if it was `missed`. Returns whether it changed.
    async fn judge(&self, id: &str, j: &Judgement) -> StoreResult<bool>;

    /// Turns every pending probe whose deadline is at or before `now` into a
    /// verdict in one atomic update, and returns those probes. Sends still in
    /// flight in this process (`run_id`) are left to their sender.
    async fn sweep(&self, now: Millis, run_id: &str) -> StoreResult<Vec<ProbeRecord>> {
        self.sweep_only(now, run_id, None).await
    }

    /// [`Store::sweep`] limited to the probes `only` names (`None`: all):
    /// the sweeper passes the probes whose watchers have looked past their
    /// deadline.
    async fn sweep_only(&self, now: Millis, run_id: &str, only: Option<&[String]>) -> StoreResult<Vec<ProbeRecord>>;

    /// Pending probes whose deadline is at or before `now`, earliest first.
    async fn due(&self, now: Millis) -> StoreResult<Vec<ProbeRecord>>;

    /// For the incident logic's ordering: the creation time of the channel's
    /// newest judged successful probe, and of its newest failing probe whose
    /// verdict has been handled (an `error` does not count: it says nothing
    /// of the channel).
    async fn channel_order(&self, channel: &str) -> StoreResult<(Option<Millis>, Option<Millis>)>;
    /// The vantage points some instance probes for: those whose probing
    /// lease (`vantage:NAME`) is held, or expired less than `grace` ago (a
    /// standby is taking over). `None` where the ledger keeps no leases
    /// (SQLite: one instance, one vantage).
    async fn live_vantages(&self, grace: std::time::Duration) -> StoreResult<Option<Vec<String>>>;

    async fn probe(&self, id: &str) -> StoreResult<Option<ProbeRecord>>;
    async fn probe_by_token(&self, token: &str) -> StoreResult<Option<ProbeRecord>>;
    async fn pending(&self) -> StoreResult<Vec<ProbeRecord>>;
    /// The earliest deadline among pending probes, for the sweeper's timer.
    async fn next_deadline(&self) -> StoreResult<Option<Millis>>;
    /// The newest probes of a channel, newest first.
    async fn recent_probes(&self, channel: &str, limit: usize) -> StoreResult<Vec<ProbeRecord>>;
    async fn events(&self, id: &str) -> StoreResult<Vec<Event>>;

    async fn cursor(&self, inbox: &str) -> StoreResult<Option<Cursor>>;
    async fn set_cursor(&self, inbox: &str, c: Cursor) -> StoreResult<()>;

    /// The accepted DNS records of a domain (a JSON snapshot) and when they were recorded.
    async fn dns_baseline(&self, domain: &str) -> StoreResult<Option<(String, Millis)>>;
    /// Accepts a domain's current DNS records as its baseline.
    async fn set_dns_baseline(&self, domain: &str, snapshot: &str, at: Millis) -> StoreResult<()>;

    // --- incidents and the outbox

    /// Judged probes whose verdict the incident logic has not handled yet, oldest first.
    async fn unhandled_verdicts(&self, limit: usize) -> StoreResult<Vec<ProbeRecord>>;
    /// Applies one incident decision atomically; returns the incident id it touched.
    async fn apply_incident(&self, change: &IncidentChange) -> StoreResult<Option<i64>>;
    async fn open_incident(&self, channel: &str) -> StoreResult<Option<Incident>>;
    async fn open_incidents(&self) -> StoreResult<Vec<Incident>>;
    async fn incident(&self, id: i64) -> StoreResult<Option<Incident>>;
    async fn incident_events(&self, id: i64) -> StoreResult<Vec<Event>>;
    /// The oldest unsent page for a notifier: pages go out in order.
    async fn outbox_head(&self, notifier: &str) -> StoreResult<Option<OutboxEntry>>;
    async fn page_sent(&self, id: i64, at: Millis) -> StoreResult<()>;
    /// Records a failed attempt; `permanent` gives the page up (it will not be retried).
    async fn page_failed(
        &self,
        id: i64,
        at: Millis,
        error: &str,
        next_attempt_at: Millis,
        permanent: bool,
    ) -> StoreResult<()>;
    /// Queues a copy of a page for the fallback notifier (once per page).
    async fn page_fallback(&self, id: i64, fallback: &str, at: Millis) -> StoreResult<()>;
    /// Pages waiting to be sent, per notifier.
    async fn outbox_depth(&self) -> StoreResult<Vec<(String, i64)>>;

    // --- readers (status page, API, metrics)

    /// A status snapshot per channel; `recent` holds up to `recent` judged probes.
    async fn channel_status(&self, channels: &[String], now: Millis, recent: usize) -> StoreResult<Vec<ChannelStatus>>;
    /// Probes of a channel created at or after `since`, oldest first.
    async fn probes_since(&self, channel: &str, since: Millis, limit: usize) -> StoreResult<Vec<ProbeRecord>>;
    /// The newest incidents, open or resolved, newest first.
    async fn recent_incidents(&self, limit: usize) -> StoreResult<Vec<Incident>>;
    /// Judged probes per (channel, verdict), all time.
    async fn verdict_counts(&self) -> StoreResult<Vec<(String, String, i64)>>;
    /// Latencies (ms) of delivered probes, all time, for the histogram: counts
    /// of latencies ≤ each bound, plus (count, sum).
    async fn latency_histogram(&self, bounds_ms: &[i64]) -> StoreResult<(Vec<i64>, i64, i64)>;
    /// The ledger's newest event sequence number (0 when empty): where
    /// [`Store::verdict_events`] starts for a reader that wants only what comes next.
    async fn last_event_seq(&self) -> StoreResult<i64>;
    /// Verdicts written after event `after`, in the order written, at most
    /// `limit` (a correction — a `missed` probe that turns up, a
    /// reclassification — is a further event). What `/metrics` counts: a
    /// scrape reads only what happened since the last one.
    async fn verdict_events(&self, after: i64, limit: usize) -> StoreResult<Vec<VerdictEvent>>;
    /// Each named channel's newest judged probe (by creation, as the status
    /// page orders them); channels without one are left out. One index seek per channel.
    async fn latest_verdicts(&self, channels: &[String]) -> StoreResult<Vec<LatestVerdict>>;
    /// How many probes wait for a verdict (one pass over the pending index).
    async fn pending_count(&self) -> StoreResult<i64>;

    // --- reports and evidence (read only)

    /// Incidents open at any moment of `[from, to)`: opened before `to` and
    /// not resolved before `from`; oldest first.
    async fn incidents_between(&self, from: Millis, to: Millis) -> StoreResult<Vec<Incident>>;
    /// Every page of an incident, in the order written.
    async fn incident_pages(&self, incident_id: i64) -> StoreResult<Vec<PageRecord>>;
    /// Probe counts per channel and UTC day for the days starting in
    /// `[from, to)` (both day starts); `channels` empty means all. Days with
    /// no probe have no entry. Ordered by channel, then day. Days that have
    /// been rolled up ([`Store::roll_up`]) are read from their rollups (so
    /// they outlive their probes), later days are counted from the probes.
    async fn daily_counts(&self, channels: &[String], from: Millis, to: Millis) -> StoreResult<Vec<DayCounts>>;
    /// Probe counts per channel and vantage point for the probes created in
    /// `[from, to)` that carry a vantage (`[vantage] name`); `channels`
    /// empty means all. Whole days that have their per-vantage rollups
    /// (`vantage_rollups`, written by [`Store::roll_up`]) are read from them,
    /// the rest of the period (its partial edge days, the days since) from
    /// the probes ([`vantage_ranges`]); days pruned before those rollups
    /// existed are not split. Ordered by channel, then vantage.
    async fn vantage_counts(&self, channels: &[String], from: Millis, to: Millis) -> StoreResult<Vec<VantageCounts>>;

    // --- retention

    /// (Re)computes the daily rollups of the UTC days in `[from, to)` (day
    /// starts) from the probes — and of any earlier day not rolled up yet —
    /// and marks the days before `to` as rolled up. A day whose probes have
    /// already been pruned keeps the rollup it has. Returns the number of
    /// rollups written.
    async fn roll_up(&self, from: Millis, to: Millis) -> StoreResult<i64>;
    /// Removes what [`PruneCut`] says, never a pending probe, a probe of an
    /// open incident, or the probe that opened or resolved any incident;
    /// rolls up the days it prunes first, so their counts remain.
    async fn prune(&self, cut: &PruneCut) -> StoreResult<PruneStats>;

    // --- inbox watchers' blind spells

    /// A watcher went blind at `since`. Opens a spell unless one is open
    /// (then only its reason is updated).
    async fn blind_started(&self, watcher: &str, inbox: &str, since: Millis, why: &str) -> StoreResult<()>;
    /// A watcher can look again: closes its open spell at `at`.
    async fn blind_ended(&self, watcher: &str, at: Millis) -> StoreResult<()>;
    /// Spells that overlap `[from, to)` (open ones included), oldest first.
    async fn blind_spells(&self, from: Millis, to: Millis) -> StoreResult<Vec<BlindSpell>>;
    /// The events of one `kind` of a channel's probes created at or after
    /// `since`, as (probe id, event), newest probe first, at most `limit`
    /// (the compliance summary reads the kept paths this way). The default
    /// asks per probe; a backend may answer it in one query.
    async fn channel_events(
        &self,
        channel: &str,
        kind: &str,
        since: Millis,
        limit: usize,
    ) -> StoreResult<Vec<(String, Event)>> {
        let mut probes = self.probes_since(channel, since, usize::MAX >> 1).await?;
        probes.reverse();
        let mut out = Vec::new();
        for p in probes {
            if out.len() >= limit {
                break;
            }
            if let Some(e) = self.events(&p.id).await?.into_iter().rev().find(|e| e.kind == kind) {
                out.push((p.id, e));
            }
        }
        Ok(out)
    }

    // --- operating it: acknowledge, silence, audit (issue 15)

    /// Acknowledges an open, unacknowledged incident: sets who and when,
    /// adds an `acknowledged` timeline entry, queues the pages and writes the
    /// audit row, in one transaction. `false` (and nothing written) when the
    /// incident is resolved, unknown or already acknowledged.
    async fn acknowledge(&self, ack: &Acknowledgement) -> StoreResult<bool>;
    /// Sets a silence and writes its audit row; returns its id.
    async fn add_silence(&self, s: &NewSilence) -> StoreResult<i64>;
    /// Ends a silence early and writes the audit row; `false` when it is
    /// unknown or already ended (nothing written).
    async fn end_silence(&self, id: i64, by: &str, reason: &str, at: Millis) -> StoreResult<bool>;
    /// Silences in force at `active_at` (not ended, `from <= at < until`), or
    /// with `None` the newest ones (ended or not); newest first.
    async fn silences(&self, active_at: Option<Millis>, limit: usize) -> StoreResult<Vec<SilenceRecord>>;
    /// Writes an audit row (for actions that change no ledger row, like a reload).
    async fn add_audit(&self, at: Millis, actor: &str, action: &str, target: &str, reason: &str) -> StoreResult<i64>;
    /// The audit log, newest first, rows with an id below `before` (all when `None`).
    async fn audit_log(&self, before: Option<i64>, limit: usize) -> StoreResult<Vec<AuditEntry>>;

    // --- readers at scale (issue 20)

    /// A channel's probes, newest first, strictly older than the cursor
    /// `(created_at, id)` when one is given: the pages of its history.
    async fn probes_before(
        &self,
        channel: &str,
        before: Option<(Millis, String)>,
        limit: usize,
    ) -> StoreResult<Vec<ProbeRecord>>;
    /// The pages of the given incidents, oldest first.
    async fn pages_of(&self, incident_ids: &[i64]) -> StoreResult<Vec<PageRecord>>;
    /// Every notifier's queue (notifiers that ever had a page).
    async fn outbox_states(&self) -> StoreResult<Vec<OutboxState>>;
    /// The latest judged probe of every channel that has one, in one read.
    async fn channel_latest(&self) -> StoreResult<Vec<ChannelLatest>>;
    /// (judged, successful) probes per channel created on UTC days
    /// `from_day..` (days since the epoch), summed per channel.
    async fn channel_days(&self, channels: &[String], from_day: i64) -> StoreResult<Vec<(String, i64, i64)>>;

    // --- retention canaries (issue 17)

    /// Writes a delivered canary's retention checks; a check already
    /// written (same probe and age) is left as it is.
    async fn retain_schedule(&self, checks: &[NewRetainCheck]) -> StoreResult<()>;
    /// Checks still due whose next try is at or before `now`, earliest first.
    async fn retain_due(&self, now: Millis, limit: usize) -> StoreResult<Vec<RetainCheck>>;
    /// The earliest next try of a due check, for the checker's timer.
    async fn retain_next(&self) -> StoreResult<Option<Millis>>;
    /// Records what a due check found, if it is still due; returns whether
    /// it changed. A `lost` canary's later checks of the same probe are
    /// closed with it (state `skipped`): there is nothing left to look up.
    async fn retain_record(&self, id: i64, r: &RetainResult) -> StoreResult<bool>;
    /// A check that could not look (our own fault): counts the attempt,
    /// keeps the reason and tries again at `retry_at`; it stays due.
    /// `fault_since` becomes `at` unless a run of faults already set it.
    async fn retain_fault(&self, id: i64, at: Millis, error: &str, retry_at: Millis) -> StoreResult<()>;
    /// Closes a due check that has nothing left to look with (its channel,
    /// the channel's `retain` or its canary's probe is gone): state
    /// `skipped`, the reason in `detail`, `checked_at = at`. Never a result,
    /// so never `lost` and never a page. Returns whether it changed.
    async fn retain_skip(&self, id: i64, at: Millis, reason: &str) -> StoreResult<bool>;
    /// Every check of one probe, by age.
    async fn retain_checks(&self, probe_id: &str) -> StoreResult<Vec<RetainCheck>>;
    /// A channel's checks, newest due first, at most `limit`.
    async fn retain_channel(&self, channel: &str, limit: usize) -> StoreResult<Vec<RetainCheck>>;
    /// A channel's checks for the evidence of its retention incident: the
    /// newest `kept` check with `checked_at` before `from` (it bounds "deleted
    /// between … and …"), then every check with `checked_at` in
    /// `[from, to]`; ordered by `checked_at`, then id; at most `limit`.
    async fn retain_span(&self, channel: &str, from: Millis, to: Millis, limit: usize)
        -> StoreResult<Vec<RetainCheck>>;
    /// Checks done (`kept`, `lost`, `altered`) with `checked_at` in `[from, to)`,
    /// counted per channel: (channel, kept, lost, altered).
    async fn retain_counts(&self, from: Millis, to: Millis) -> StoreResult<Vec<RetainCounts>>;
}

/// A retention check to write when a canary is delivered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewRetainCheck {
    pub probe_id: String,
    pub channel: String,
    /// The age as configured (`7d`), for people.
    pub age: String,
    pub age_ms: i64,
    /// Found time + age.
    pub due_at: Millis,
}

/// One retention check of a delivered canary.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RetainCheck {
    pub id: i64,
    pub probe_id: String,
    pub channel: String,
    pub age: String,
    pub age_ms: i64,
    pub due_at: Millis,
    /// When it is tried next (the due time, later after a fault of ours).
    pub next_at: Millis,
    /// `due`, `done` or `skipped` (closed by an earlier `lost`, or with
    /// nothing left to look with: see [`Store::retain_skip`]).
    pub state: String,
    pub checked_at: Option<Millis>,
    /// Once done: `kept`, `lost` or `altered`.
    pub result: Option<String>,
    /// What was found, or while due the last fault of ours.
    pub detail: Option<String>,
    /// The content hash seen by this check (`sha256:…`).
    pub content_hash: Option<String>,
    /// Tries that failed on our side.
    pub attempts: i64,
    /// The first fault of the current run of faults of ours (`None` when
    /// the last try could look, or none failed); cleared when a result is
    /// recorded. The "postcanary degraded" page waits for its grace from here.
    pub fault_since: Option<Millis>,
}

/// What a retention check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetainResult {
    pub at: Millis,
    /// `kept`, `lost` or `altered`.
    pub result: String,
    pub detail: String,
    pub content_hash: Option<String>,
}

/// Retention checks done in a period, per channel.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RetainCounts {
    pub channel: String,
    pub kept: i64,
    pub lost: i64,
    pub altered: i64,
}

pub type DynStore = Arc<dyn Store>;

/// Milliseconds in a day; days in the ledger are UTC days.
pub const DAY_MS: Millis = 86_400_000;

/// The start of the UTC day that holds `t`; `i64::MIN` (an unbounded
/// start) stays `i64::MIN`.
pub fn day_start(t: Millis) -> Millis {
    t.div_euclid(DAY_MS).saturating_mul(DAY_MS)
}

/// Records a verdict and, if it was the one that counted, reports it to the
/// incident processor.
pub async fn record_with(
    store: &DynStore,
    verdicts: &crate::verdict::VerdictSink,
    id: &str,
    channel: &str,
    j: Judgement,
) -> Result<bool, StoreError> {
    let changed = store.judge(id, &j).await?;
    if changed {
        verdicts.report(channel, id, j.verdict, &j.detail);
    }
    Ok(changed)
}

/// The queue id an SMTP server names in its reply to the message:
/// Postfix/Sendmail `queued as ID`, Exim `id=ID`, Exchange `InternalId=ID`
/// (and `id=ID`, all that a slimmed success keeps of its reply).
pub fn queue_id(reply: &str) -> Option<String> {
    let clean = |s: &str| {
        let id: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .collect();
        (!id.is_empty()).then_some(id)
    };
    let lower = reply.to_ascii_lowercase();
    // A slimmed success keeps only `id=ID`.
    if let Some(rest) = lower.strip_prefix("id=") {
        return clean(&reply[reply.len() - rest.len()..]);
    }
    for marker in ["queued as ", "internalid=", " id="] {
        if let Some(at) = lower.find(marker) {
            if let Some(id) = clean(&reply[at + marker.len()..]) {
                return Some(id);
            }
        }
    }
    None
}

/// The detail recorded for a pending probe swept at its deadline.
pub fn swept_verdict(expect: Expect, sent: bool) -> (Verdict, &'static str) {
    match (sent, expect) {
        (false, _) => (
            Verdict::Error,
            "the send was never confirmed (the prober stopped while sending)",
        ),
        (true, Expect::Bounce) => (
            Verdict::Missed,
            "black hole: the address accepted the message and neither bounced nor refused it",
        ),
        (true, _) => (Verdict::Missed, "nothing arrived before the deadline"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vantage_counts_read_whole_rolled_days_from_rollups_and_the_rest_from_probes() {
        let d = |n: i64| n * DAY_MS;
        // Mid-day to mid-day, rolled up through day 10: days 2–9 whole from
        // the rollups, the edges and day 10 on from the probes.
        assert_eq!(
            vantage_ranges(d(1) + 5, d(12) + 7, d(10)),
            (Some((d(2), d(10))), vec![(d(1) + 5, d(2)), (d(10), d(12) + 7)])
        );
        // Day-aligned and all rolled: no probes read.
        assert_eq!(vantage_ranges(d(3), d(8), d(10)), (Some((d(3), d(8))), vec![]));
        // Nothing rolled (no mark) or the period inside one day: probes only.
        assert_eq!(vantage_ranges(d(3), d(8), i64::MIN), (None, vec![(d(3), d(8))]));
        assert_eq!(
            vantage_ranges(d(3) + 1, d(3) + 9, d(10)),
            (None, vec![(d(3) + 1, d(3) + 9)])
        );
        assert_eq!(vantage_ranges(d(3), d(3), d(10)), (None, vec![]));
    }

    #[test]
    fn vantage_counts_add_up_per_channel_and_vantage() {
        let mut sum = std::collections::BTreeMap::new();
        let c = |ch: &str, v: &str, judged| VantageCounts {
            channel: ch.into(),
            vantage: v.into(),
            judged,
            successful: judged - 1,
            errors: 1,
            pending: 2,
        };
        add_vantage_counts(&mut sum, c("b", "x", 5));
        add_vantage_counts(&mut sum, c("a", "y", 3));
        add_vantage_counts(&mut sum, c("b", "x", 7));
        let out: Vec<VantageCounts> = sum.into_values().collect();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].channel.as_str(), out[0].judged), ("a", 3));
        assert_eq!(
            (out[1].judged, out[1].successful, out[1].errors, out[1].pending),
            (12, 10, 2, 4)
        );
    }
}
