//! The quorum rule of vantage points, as pure functions.
//!
//! Several instances in different places (`[vantage] name`) probe every
//! channel on their own, on the same schedule. Whether a channel failure is
//! the channel's or one vantage's is decided from what each vantage saw **in
//! the same window** as the probe being handled (created at `t`, schedule
//! interval `I`, deadline `D`):
//!
//! * its **round**: the vantage's probes created in `[t − I/2, t + I/2)` —
//!   each vantage fires once per interval, so this is its probe of the same
//!   firing whatever its phase; the newest one counts, and one still pending
//!   makes the vantage *pending*;
//! * a vantage without a probe in the round counts with its newest judged
//!   verdict created in `[t − W, t)`, `W = I + D` (plus `[vantage] slack`);
//! * a vantage with neither is not present.
//!
//! An `error` (postcanary's own fault) says nothing of the channel and is
//! skipped everywhere. A vantage that no instance probes for any more (its
//! probing lease expired longer ago than a takeover takes) counts only with
//! a probe it judged in the round ([`Tally::only_live`]): its old successes
//! must not make the others' failure look like theirs alone.
//!
//! With `failing`, `succeeding` and `pending` vantages so counted and
//! `present` their sum, the quorum in force is `min(quorum, present)` (a
//! vantage that has no verdict in the window cannot outvote the others, so a
//! vantage that is down never silences a real failure):
//!
//! * at least that many vantages fail → [`Outcome::Channel`]: the channel's
//!   incident opens (or is updated) as with one vantage;
//! * fewer fail, some are pending → [`Outcome::Wait`]: decided by the pending
//!   vantages' verdicts when they come;
//! * fewer fail and the rest succeed → [`Outcome::Alone`]: those vantages are
//!   degraded (one `vantage:NAME` incident each), the channel is not paged;
//! * none fail → [`Outcome::Clear`].
//!
//! A channel incident resolves at a success once the outcome is no longer
//! `Channel` (fewer than the quorum fail); with one vantage that is the next
//! success, as before. A `vantage:NAME` incident resolves at that vantage's
//! first success after one window without a failure of its own alone.

use std::collections::BTreeMap;

use crate::ledger::ProbeRecord;
use crate::verdict::{Millis, Verdict};

/// The vantage name of probes written without one.
pub const NO_VANTAGE: &str = "";

/// The incident key of one vantage's degradation.
pub fn vantage_key(vantage: &str) -> String {
    format!("vantage:{vantage}")
}

/// The verdict text of a vantage's degraded incident.
pub const VANTAGE_DEGRADED: &str = "vantage_degraded";

/// What a vantage's latest probe in the window says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Failing,
    Succeeding,
    Pending,
}

/// Each vantage's verdict in the window, by vantage name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// What counts for each present vantage: (seen, created_at, probe id).
    pub latest: BTreeMap<String, (Seen, Millis, String)>,
    /// Each vantage's newest successful probe in the probes read (created_at, id).
    pub newest_success: BTreeMap<String, (Millis, String)>,
}

fn seen(v: Verdict) -> Option<Seen> {
    match v {
        Verdict::Error => None,
        Verdict::Pending => Some(Seen::Pending),
        v if v.is_success() => Some(Seen::Succeeding),
        _ => Some(Seen::Failing),
    }
}

fn keep_newest(m: &mut BTreeMap<String, (Seen, Millis, String)>, v: &str, s: Seen, p: &ProbeRecord) {
    let newer = m.get(v).is_none_or(|(_, at, id)| (p.created_at, &p.id) > (*at, id));
    if newer {
        m.insert(v.to_string(), (s, p.created_at, p.id.clone()));
    }
}

/// The round of a probe created at `at` with schedule `interval`:
/// `[at − I/2, at + I/2)` (see the module doc).
fn round_of(at: Millis, interval: Millis) -> std::ops::Range<Millis> {
    let half = interval / 2;
    at.saturating_sub(half)..at.saturating_add(interval - half)
}

impl Tally {
    /// Counts `probes` (one channel's, any order) for a probe created at
    /// `at`: rounds of `interval`, the window back to `since` (see the module doc).
    pub fn of(probes: &[ProbeRecord], at: Millis, interval: Millis, since: Millis) -> Tally {
        let this_round = round_of(at, interval);
        let mut round: BTreeMap<String, (Seen, Millis, String)> = BTreeMap::new();
        let mut before: BTreeMap<String, (Seen, Millis, String)> = BTreeMap::new();
        let mut newest_success: BTreeMap<String, (Millis, String)> = BTreeMap::new();
        for p in probes {
            let Some(s) = seen(p.verdict) else { continue };
            let v = p.vantage.as_deref().unwrap_or(NO_VANTAGE);
            if s == Seen::Succeeding {
                let newer = newest_success
                    .get(v)
                    .is_none_or(|(c, id)| (p.created_at, &p.id) > (*c, id));
                if newer {
                    newest_success.insert(v.to_string(), (p.created_at, p.id.clone()));
                }
            }
            if this_round.contains(&p.created_at) {
                keep_newest(&mut round, v, s, p);
            } else if p.created_at >= since && p.created_at < at && s != Seen::Pending {
                keep_newest(&mut before, v, s, p);
            }
        }
        for (v, x) in before {
            round.entry(v).or_insert(x);
        }
        Tally {
            latest: round,
            newest_success,
        }
    }

    /// Leaves out the vantages that no instance probes for any more (not in
    /// `live`) unless they judged a probe of this round: their pending probe
    /// will never be judged, and their verdict from before the round is
    /// what they saw before they went down — counted, it would make a real
    /// failure seen by the others look like theirs alone. `keep` (the
    /// handled probe's vantage) always stays.
    pub fn only_live(&mut self, live: &[String], at: Millis, interval: Millis, keep: &str) {
        let round = round_of(at, interval);
        self.latest.retain(|v, (seen, created, _)| {
            v == keep || live.contains(v) || (*seen != Seen::Pending && round.contains(created))
        });
    }

    /// The vantages whose latest verdict is `seen`.
    pub fn with(&self, seen: Seen) -> Vec<String> {
        self.latest
            .iter()
            .filter(|(_, (s, _, _))| *s == seen)
            .map(|(v, _)| v.clone())
            .collect()
    }

    /// What `vantage` says now, if it has a verdict in the window.
    pub fn of_vantage(&self, vantage: &str) -> Option<Seen> {
        self.latest.get(vantage).map(|(s, _, _)| *s)
    }

    /// Whether `vantage` has a probe newer than (`created_at`, `id`) that succeeded.
    pub fn newer_success(&self, vantage: &str, created_at: Millis, id: &str) -> bool {
        self.newest_success
            .get(vantage)
            .is_some_and(|(at, pid)| (*at, pid.as_str()) > (created_at, id))
    }
}

/// What the vantages' latest verdicts mean for the channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// At least the quorum in force fails: the channel's incident.
    Channel,
    /// Fewer fail and the others succeed: these vantages are degraded.
    Alone(Vec<String>),
    /// Fewer fail and some vantages are still pending: nothing yet.
    Wait,
    /// No vantage fails.
    Clear,
}

/// The quorum rule (see the module doc).
pub fn outcome(t: &Tally, quorum: u32) -> Outcome {
    let failing = t.with(Seen::Failing);
    if failing.is_empty() {
        return Outcome::Clear;
    }
    let present = t.latest.len();
    let needed = usize::try_from(quorum).unwrap_or(usize::MAX).clamp(1, present.max(1));
    if failing.len() >= needed {
        Outcome::Channel
    } else if !t.with(Seen::Pending).is_empty() {
        Outcome::Wait
    } else {
        Outcome::Alone(failing)
    }
}

/// The window `W` of a channel: schedule interval + deadline + slack, in ms.
pub fn window_ms(interval: std::time::Duration, deadline: std::time::Duration, slack: std::time::Duration) -> Millis {
    Millis::try_from((interval + deadline + slack).as_millis()).unwrap_or(Millis::MAX)
}

/// Whether a vantage's degraded incident may resolve at one of its
/// successes at `now`: no failure of that vantage alone for one window.
pub fn vantage_recovered(last_failure_at: Millis, now: Millis, window: Millis) -> bool {
    now.saturating_sub(last_failure_at) >= window
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, vantage: &str, created_at: Millis, verdict: Verdict) -> ProbeRecord {
        ProbeRecord {
            id: id.into(),
            token: format!("pc-{id}"),
            channel: "ch".into(),
            kind: "mail".into(),
            expect: "deliver".into(),
            inbox: Some("social".into()),
            target: "x@kommune.example".into(),
            created_at,
            sent_at: Some(created_at + 10),
            deadline: created_at + 5_000,
            verdict,
            judged_at: None,
            found_in: None,
            found_at: None,
            latency_ms: None,
            detail: None,
            smtp_reply: None,
            fault: None,
            vantage: (!vantage.is_empty()).then(|| vantage.to_string()),
        }
    }

    use Verdict::{Delivered, Error, Missed, Pending, Rejected};

    /// The outcome for a probe created at 1_000 (rounds of 1 s, window back to `since`).
    fn out(probes: &[ProbeRecord], since: Millis, quorum: u32) -> Outcome {
        outcome(&Tally::of(probes, 1_000, 1_000, since), quorum)
    }

    #[test]
    fn one_vantage_is_the_old_rule() {
        // No vantage configured: every failure is the channel's; a success clears.
        assert_eq!(out(&[p("a", "", 1_000, Missed)], 0, 1), Outcome::Channel);
        assert_eq!(
            out(&[p("a", "", 1_000, Missed)], 0, 2),
            Outcome::Channel,
            "a quorum above the vantages present is capped"
        );
        // A later round does not change what this round says; the newer success is seen apart.
        let later = [p("b", "", 2_000, Delivered), p("a", "", 1_000, Missed)];
        assert_eq!(out(&later, 0, 1), Outcome::Channel);
        assert!(Tally::of(&later, 1_000, 1_000, 0).newer_success("", 1_000, "a"));
        // Two probes in one round (a check beside the schedule): the newest counts, whatever the order read.
        let twice = [p("b", "", 1_300, Delivered), p("a", "", 1_000, Missed)];
        assert_eq!(out(&twice, 0, 1), Outcome::Clear);
    }

    #[test]
    fn a_vantage_that_went_down_is_not_present() {
        // East fails in its round; west is down: its last success is from
        // before the round and its probe of the round stays pending.
        let probes = [
            p("e1", "east", 1_000, Missed),
            p("w0", "west", 100, Delivered),
            p("w1", "west", 1_050, Pending),
        ];
        let live = vec!["east".to_string(), "west".to_string()];
        let mut t = Tally::of(&probes, 1_000, 1_000, 0);
        t.only_live(&live, 1_000, 1_000, "east");
        assert_eq!(outcome(&t, 2), Outcome::Wait, "west is alive: its verdict decides");
        let mut t = Tally::of(&probes, 1_000, 1_000, 0);
        t.only_live(&live[..1], 1_000, 1_000, "east");
        assert_eq!(
            outcome(&t, 2),
            Outcome::Channel,
            "west is gone: east alone is the quorum in force"
        );
        // Without its pending probe, west's old success no longer makes east's failure east's alone.
        let mut t = Tally::of(&probes[..2], 1_000, 1_000, 0);
        assert_eq!(outcome(&t, 2), Outcome::Alone(vec!["east".into()]));
        t.only_live(&live[..1], 1_000, 1_000, "east");
        assert_eq!(outcome(&t, 2), Outcome::Channel);
        // A verdict west judged in this round still counts, lease or not.
        let judged = [p("e1", "east", 1_000, Missed), p("w1", "west", 1_050, Delivered)];
        let mut t = Tally::of(&judged, 1_000, 1_000, 0);
        t.only_live(&live[..1], 1_000, 1_000, "east");
        assert_eq!(outcome(&t, 2), Outcome::Alone(vec!["east".into()]));
        // The handled probe's own vantage always stays.
        let mut t = Tally::of(&probes, 1_000, 1_000, 0);
        t.only_live(&[], 1_000, 1_000, "east");
        assert_eq!(t.latest.keys().collect::<Vec<_>>(), vec!["east"]);
    }

    #[test]
    fn quorum_two_of_two() {
        let one_fails = [p("e1", "east", 1_000, Missed), p("w1", "west", 1_100, Delivered)];
        assert_eq!(out(&one_fails, 0, 2), Outcome::Alone(vec!["east".into()]));
        let both = [p("e1", "east", 1_000, Missed), p("w1", "west", 1_100, Rejected)];
        assert_eq!(out(&both, 0, 2), Outcome::Channel);
        let waiting = [p("e1", "east", 1_000, Missed), p("w1", "west", 1_100, Pending)];
        assert_eq!(out(&waiting, 0, 2), Outcome::Wait);
        // West's round is still pending although its previous round succeeded: wait for it.
        let previous = [
            p("w0", "west", 100, Delivered),
            p("e1", "east", 1_000, Missed),
            p("w1", "west", 1_100, Pending),
        ];
        assert_eq!(out(&previous, 0, 2), Outcome::Wait);
        // West fires in another phase (half an interval off): still its probe of this round.
        let phase = [p("e1", "east", 1_000, Missed), p("w1", "west", 1_499, Delivered)];
        assert_eq!(out(&phase, 0, 2), Outcome::Alone(vec!["east".into()]));
        // With quorum 1, one failing vantage is enough even while another succeeds.
        assert_eq!(out(&one_fails, 0, 1), Outcome::Channel);
    }

    #[test]
    fn the_window_and_errors() {
        // West has no probe in the round: its newest verdict in the window counts.
        let earlier = [p("w0", "west", 100, Delivered), p("e1", "east", 1_000, Missed)];
        assert_eq!(out(&earlier, 0, 2), Outcome::Alone(vec!["east".into()]));
        // ... but not once it is older than the window: east alone decides.
        assert_eq!(out(&earlier, 200, 2), Outcome::Channel);
        // West's own error says nothing of the channel: skipped, so its older success counts.
        let err = [
            p("w0", "west", 100, Delivered),
            p("w1", "west", 1_000, Error),
            p("e1", "east", 1_000, Missed),
        ];
        assert_eq!(out(&err, 0, 2), Outcome::Alone(vec!["east".into()]));
        // Only errors: the vantage is not present.
        let only_err = [p("w1", "west", 1_000, Error), p("e1", "east", 1_000, Missed)];
        assert_eq!(out(&only_err, 0, 2), Outcome::Channel);
    }

    #[test]
    fn three_vantages_quorum_two() {
        let v = |e, w, n| {
            [
                p("e", "east", 1_000, e),
                p("w", "west", 1_000, w),
                p("n", "north", 1_000, n),
            ]
        };
        assert_eq!(
            out(&v(Missed, Delivered, Delivered), 0, 2),
            Outcome::Alone(vec!["east".into()])
        );
        assert_eq!(out(&v(Missed, Missed, Delivered), 0, 2), Outcome::Channel);
        assert_eq!(out(&v(Missed, Pending, Delivered), 0, 2), Outcome::Wait);
        assert_eq!(out(&v(Delivered, Delivered, Delivered), 0, 2), Outcome::Clear);
        assert_eq!(out(&v(Delivered, Pending, Delivered), 0, 2), Outcome::Clear);
    }

    #[test]
    fn newer_success_and_recovery() {
        let t = Tally::of(
            &[p("e1", "east", 1_000, Missed), p("e2", "east", 2_000, Delivered)],
            1_000,
            1_000,
            0,
        );
        assert!(t.newer_success("east", 1_000, "e1"));
        assert!(!t.newer_success("east", 2_000, "e2"));
        assert!(!t.newer_success("west", 0, ""));
        assert_eq!(t.of_vantage("east"), Some(Seen::Failing));
        assert!(vantage_recovered(1_000, 11_000, 10_000));
        assert!(!vantage_recovered(1_000, 10_999, 10_000));
        assert_eq!(
            window_ms(
                std::time::Duration::from_secs(300),
                std::time::Duration::from_secs(60),
                std::time::Duration::ZERO
            ),
            360_000
        );
    }
}
