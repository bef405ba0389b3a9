//! Verdicts and the pure rules that produce them from what was observed.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// What a channel is expected to do with a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    /// Must arrive in `inbox` within `deadline`.
    Deliver,
    /// Must be refused at SMTP time or bounce within `deadline`.
    Bounce,
    /// Must arrive in `inbox`, a different mailbox than the address suggests.
    Forward,
    /// A form whose login cannot be automated (production MitID): the hand-off
    /// to the IdP must be right. Nothing is submitted.
    Handoff,
}

impl Expect {
    pub fn as_str(self) -> &'static str {
        match self {
            Expect::Deliver => "deliver",
            Expect::Bounce => "bounce",
            Expect::Forward => "forward",
            Expect::Handoff => "handoff",
        }
    }
}

impl FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "deliver" => Ok(Expect::Deliver),
            "bounce" => Ok(Expect::Bounce),
            "forward" => Ok(Expect::Forward),
            "handoff" => Ok(Expect::Handoff),
            _ => Err(format!("unknown expectation {s:?}")),
        }
    }
}

/// Milliseconds since the Unix epoch; the ledger's time unit.
pub type Millis = i64;

/// The current time in [`Millis`].
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

/// The state of a probe. Everything but `Pending` is a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pending,
    Delivered,
    Late,
    Missed,
    Bounced,
    Rejected,
    Misrouted,
    Junked,
    ExpectedBounce,
    /// A login hand-off that was checked and found right (`expect = "handoff"`).
    HandedOff,
    Error,
    /// A retained canary that a retention check no longer finds where it was kept.
    Lost,
    /// A retained canary that a retention check finds changed.
    Altered,
}

impl Verdict {
    pub const ALL: [Verdict; 13] = [
        Verdict::Pending,
        Verdict::Delivered,
        Verdict::Late,
        Verdict::Missed,
        Verdict::Bounced,
        Verdict::Rejected,
        Verdict::Misrouted,
        Verdict::Junked,
        Verdict::ExpectedBounce,
        Verdict::HandedOff,
        Verdict::Error,
        Verdict::Lost,
        Verdict::Altered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pending => "pending",
            Verdict::Delivered => "delivered",
            Verdict::Late => "late",
            Verdict::Missed => "missed",
            Verdict::Bounced => "bounced",
            Verdict::Rejected => "rejected",
            Verdict::Misrouted => "misrouted",
            Verdict::Junked => "junked",
            Verdict::ExpectedBounce => "expected_bounce",
            Verdict::HandedOff => "handed_off",
            Verdict::Error => "error",
            Verdict::Lost => "lost",
            Verdict::Altered => "altered",
        }
    }

    /// Only `delivered`, `expected_bounce` and `handed_off` are success.
    pub fn is_success(self) -> bool {
        matches!(self, Verdict::Delivered | Verdict::ExpectedBounce | Verdict::HandedOff)
    }

    pub fn is_final(self) -> bool {
        self != Verdict::Pending
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Verdict::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown verdict {s:?}"))
    }
}

/// A verdict to record, with what supports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub detail: String,
    /// When the verdict was reached.
    pub at: Millis,
    /// Where and when the token was seen, for arrivals.
    pub found: Option<Found>,
    /// found − sent, for arrivals.
    pub latency_ms: Option<i64>,
    /// For an `error`: which of postcanary's own paths failed
    /// (`sender:NAME`, `inbox:NAME`), so that failures of one path are one
    /// "postcanary degraded" incident. `None`: the probe's sender.
    pub fault: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub inbox: String,
    pub at: Millis,
}

/// What the rules need to know about a probe.
#[derive(Clone, Debug)]
pub struct ProbeFacts<'a> {
    pub verdict: Verdict,
    pub expect: Expect,
    pub inbox: Option<&'a str>,
    pub sent_at: Option<Millis>,
    pub created_at: Millis,
    pub deadline: Millis,
}

/// The verdict for a probe whose token was just seen in `found_in` at
/// `found_at`. `None` when the sighting changes nothing: the probe already has
/// a verdict that an arrival cannot improve on (a second copy, say).
///
/// A pending or `missed` probe can still be judged by its arrival: in the
/// right inbox before the deadline it is `delivered`, after it `late`; in any
/// other watched inbox it is `misrouted`.
pub fn judge_arrival(p: &ProbeFacts<'_>, found_in: &str, found_at: Millis) -> Option<Judgement> {
    judge_arrival_in(p, found_in, None, found_at)
}

/// [`judge_arrival`] for a message found in a folder of `found_in`: with
/// `junk` set (the junk folder's name), a delivery there is `junked` — the
/// mail arrived, but nobody reads that folder.
pub fn judge_arrival_in(p: &ProbeFacts<'_>, found_in: &str, junk: Option<&str>, found_at: Millis) -> Option<Judgement> {
    if !matches!(p.verdict, Verdict::Pending | Verdict::Missed) {
        return None;
    }
    if let (Some(folder), false) = (junk, p.expect == Expect::Bounce) {
        let sent = p.sent_at.unwrap_or(p.created_at);
        return Some(Judgement {
            verdict: Verdict::Junked,
            detail: format!(
                "arrived in the junk folder `{folder}` of `{found_in}` after {}",
                human_ms(found_at - sent)
            ),
            at: found_at,
            found: Some(Found {
                inbox: found_in.to_string(),
                at: found_at,
            }),
            latency_ms: Some((found_at - sent).max(0)),
            fault: None,
        });
    }
    let sent = p.sent_at.unwrap_or(p.created_at);
    let latency = (found_at - sent).max(0);
    let late = found_at > p.deadline;
    let found = Some(Found {
        inbox: found_in.to_string(),
        at: found_at,
    });
    let (verdict, detail) = match (p.expect, p.inbox) {
        (Expect::Bounce, _) => (
            Verdict::Misrouted,
            format!("address should refuse or bounce mail, but the probe was delivered to inbox `{found_in}`"),
        ),
        (_, Some(expected)) if expected == found_in => {
            if late {
                (
                    Verdict::Late,
                    format!("arrived {} after the deadline", human_ms(found_at - p.deadline)),
                )
            } else {
                (
                    Verdict::Delivered,
                    format!("arrived in `{found_in}` after {}", human_ms(latency)),
                )
            }
        }
        (_, expected) => (
            Verdict::Misrouted,
            format!(
                "expected in `{}`, found in `{found_in}`{}",
                expected.unwrap_or("?"),
                if late { " (after the deadline)" } else { "" }
            ),
        ),
    };
    Some(Judgement {
        verdict,
        detail,
        at: found_at,
        found,
        latency_ms: Some(latency),
        fault: None,
    })
}

/// A bounce (DSN) for a probe: `expected_bounce` for an address that must
/// bounce, else `bounced` with the remote reason — at once, without waiting
/// for the deadline. A bounce also replaces a `missed` on a deliver probe (it
/// says why); a bounce that comes after a must-bounce probe was already
/// judged a black hole does not undo that.
pub fn judge_bounce(p: &ProbeFacts<'_>, reason: &str, at: Millis) -> Option<Judgement> {
    let (verdict, detail) = match (p.expect, p.verdict) {
        (Expect::Bounce, Verdict::Pending) => (Verdict::ExpectedBounce, format!("bounced as expected: {reason}")),
        (Expect::Bounce, _) => return None,
        (_, Verdict::Pending | Verdict::Missed) => (Verdict::Bounced, format!("bounced: {reason}")),
        _ => return None,
    };
    Some(Judgement {
        verdict,
        detail,
        at,
        found: None,
        latency_ms: None,
        fault: None,
    })
}

/// Formats milliseconds for people: `850ms`, `3.2s`, `4m10s`.
pub fn human_ms(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        let s = ms / 1000;
        if s < 3600 {
            format!("{}m{}s", s / 60, s % 60)
        } else {
            format!("{}h{}m", s / 3600, (s % 3600) / 60)
        }
    }
}

/// A verdict as it is reached, for whoever listens (logs now; incidents next).
/// The ledger stays the record: a listener that misses one can read it there.
#[derive(Clone, Debug)]
pub struct VerdictReport {
    pub channel: String,
    pub probe_id: String,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Clone)]
pub struct VerdictSink(tokio::sync::broadcast::Sender<VerdictReport>);

impl Default for VerdictSink {
    fn default() -> Self {
        VerdictSink(tokio::sync::broadcast::channel(4096).0)
    }
}

impl VerdictSink {
    pub fn report(&self, channel: &str, probe_id: &str, verdict: Verdict, detail: &str) {
        // No receiver is fine: the verdict is in the ledger already.
        let _ = self.0.send(VerdictReport {
            channel: channel.to_string(),
            probe_id: probe_id.to_string(),
            verdict,
            detail: detail.to_string(),
        });
    }
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<VerdictReport> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(verdict: Verdict, expect: Expect, inbox: Option<&str>) -> ProbeFacts<'_> {
        ProbeFacts {
            verdict,
            expect,
            inbox,
            sent_at: Some(1_000),
            created_at: 900,
            deadline: 61_000,
        }
    }

    #[test]
    fn junk_folder_arrivals_are_junked_even_after_a_miss() {
        for v in [Verdict::Pending, Verdict::Missed] {
            let j = judge_arrival_in(
                &facts(v, Expect::Deliver, Some("social")),
                "social",
                Some("Junk"),
                3_000,
            )
            .expect("judged");
            assert_eq!(j.verdict, Verdict::Junked);
            assert_eq!(j.detail, "arrived in the junk folder `Junk` of `social` after 2.0s");
            assert_eq!(j.latency_ms, Some(2_000));
        }
        let j = judge_arrival_in(
            &facts(Verdict::Pending, Expect::Bounce, None),
            "social",
            Some("Junk"),
            3_000,
        )
        .expect("judged");
        assert_eq!(
            j.verdict,
            Verdict::Misrouted,
            "a must-bounce address that delivers anywhere is a failure"
        );
        assert!(judge_arrival_in(
            &facts(Verdict::Delivered, Expect::Deliver, Some("social")),
            "social",
            Some("Junk"),
            3_000
        )
        .is_none());
    }

    #[test]
    fn bounces_end_probes_and_explain_misses() {
        let r = "550 5.1.1 unknown (reported by mx)";
        let j = judge_bounce(&facts(Verdict::Pending, Expect::Deliver, Some("social")), r, 5).expect("judged");
        assert_eq!(
            (j.verdict, j.detail.as_str()),
            (Verdict::Bounced, "bounced: 550 5.1.1 unknown (reported by mx)")
        );
        let j = judge_bounce(&facts(Verdict::Missed, Expect::Forward, Some("social")), r, 5).expect("judged");
        assert_eq!(j.verdict, Verdict::Bounced);
        let j = judge_bounce(&facts(Verdict::Pending, Expect::Bounce, None), r, 5).expect("judged");
        assert_eq!(j.verdict, Verdict::ExpectedBounce);
        assert!(
            judge_bounce(&facts(Verdict::Missed, Expect::Bounce, None), r, 5).is_none(),
            "a black hole stays one"
        );
        assert!(judge_bounce(&facts(Verdict::Delivered, Expect::Deliver, Some("social")), r, 5).is_none());
    }

    #[test]
    fn right_inbox_in_time_is_delivered_with_latency() {
        let j = judge_arrival(
            &facts(Verdict::Pending, Expect::Deliver, Some("social")),
            "social",
            3_500,
        )
        .unwrap();
        assert_eq!(j.verdict, Verdict::Delivered);
        assert_eq!(j.latency_ms, Some(2_500));
        assert_eq!(
            j.found,
            Some(Found {
                inbox: "social".into(),
                at: 3_500
            })
        );
    }

    #[test]
    fn right_inbox_after_deadline_is_late_even_if_already_missed() {
        for v in [Verdict::Pending, Verdict::Missed] {
            let j = judge_arrival(&facts(v, Expect::Deliver, Some("social")), "social", 70_000).unwrap();
            assert_eq!(j.verdict, Verdict::Late);
            assert_eq!(j.latency_ms, Some(69_000));
        }
    }

    #[test]
    fn other_inbox_is_misrouted() {
        let j = judge_arrival(
            &facts(Verdict::Pending, Expect::Forward, Some("social")),
            "closed",
            2_000,
        )
        .unwrap();
        assert_eq!(j.verdict, Verdict::Misrouted);
        assert!(j.detail.contains("`social`") && j.detail.contains("`closed`"));
    }

    #[test]
    fn a_bounce_channel_that_delivers_is_misrouted() {
        let j = judge_arrival(&facts(Verdict::Pending, Expect::Bounce, None), "closed", 2_000).unwrap();
        assert_eq!(j.verdict, Verdict::Misrouted);
    }

    #[test]
    fn judged_probes_are_not_judged_again() {
        for v in [
            Verdict::Delivered,
            Verdict::Late,
            Verdict::Misrouted,
            Verdict::Rejected,
            Verdict::Error,
        ] {
            assert!(
                judge_arrival(&facts(v, Expect::Deliver, Some("social")), "social", 2_000).is_none(),
                "{v}"
            );
        }
    }

    #[test]
    fn only_delivered_expected_bounce_and_handed_off_succeed() {
        let ok: Vec<_> = Verdict::ALL.into_iter().filter(|v| v.is_success()).collect();
        assert_eq!(
            ok,
            vec![Verdict::Delivered, Verdict::ExpectedBounce, Verdict::HandedOff]
        );
        for v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>(), Ok(v));
        }
    }

    #[test]
    fn human_times() {
        assert_eq!(human_ms(850), "850ms");
        assert_eq!(human_ms(3_250), "3.2s");
        assert_eq!(human_ms(250_000), "4m10s");
    }
}
