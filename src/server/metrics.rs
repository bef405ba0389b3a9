//! Prometheus text exposition from the ledger. A scrape costs what changed
//! since the last one plus one line per series, never a pass over the
//! ledger's history: the verdict counter and the latency histogram count the
//! ledger's verdict events as they come (from the newest event when this
//! server started, so they start at zero, as a process's counters do), and
//! each channel's state is its newest verdict, read once per channel at the
//! first scrape and then kept up to date from the same events. The series
//! of the counter and the histogram are per owner unless
//! `[metrics] by = "channel"`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{store_error, AppState};
use crate::config::metrics::MetricsBy;
use crate::config::Config;
use crate::ledger::{LatestVerdict, StoreError, VerdictEvent};
use crate::verdict::{now_millis, Millis};

/// Histogram bounds of `postcanary_delivery_latency_seconds`, in seconds.
const BUCKETS: [f64; 12] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Verdict events read per ledger query.
const EVENT_BATCH: usize = 10_000;
/// At most this many batches per scrape; a larger backlog is read by the next ones.
const MAX_BATCHES: usize = 100;

/// Writes `v` escaped as a label value per the exposition format.
fn label(w: &mut String, v: &str) {
    if !v.contains(['\\', '"', '\n']) {
        w.push_str(v);
        return;
    }
    for ch in v.chars() {
        match ch {
            '\\' => w.push_str("\\\\"),
            '"' => w.push_str("\\\""),
            '\n' => w.push_str("\\n"),
            c => w.push(c),
        }
    }
}

/// A label value, escaped.
fn escaped(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    label(&mut s, v);
    s
}

/// A time in ms as Prometheus's seconds.
fn seconds(ms: Millis) -> f64 {
    ms as f64 / 1000.0
}

/// One histogram: counts per bucket (not cumulative; the last is above every bound), and the sum.
#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len() + 1],
    sum_ms: i64,
}

impl Histogram {
    fn add(&mut self, ms: i64) {
        let i = BUCKETS
            .iter()
            .position(|b| ms as f64 <= b * 1000.0)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
    }
}

/// What the scrapes have counted so far.
struct Counted {
    /// The last verdict event read.
    seq: i64,
    /// (label, verdict) → verdicts recorded.
    verdicts: BTreeMap<(String, &'static str), u64>,
    /// label → delivery latencies.
    latency: BTreeMap<String, Histogram>,
    /// channel → its newest judged probe.
    latest: HashMap<String, LatestVerdict>,
    /// The config the owner map below was built from (a reload replaces it).
    config: Option<Arc<Config>>,
    owners: HashMap<String, String>,
}

impl Counted {
    fn label_of(&self, by: MetricsBy, channel: &str) -> String {
        match by {
            MetricsBy::Channel => channel.to_string(),
            MetricsBy::Owner => self.owners.get(channel).cloned().unwrap_or_default(),
        }
    }

    fn apply(&mut self, by: MetricsBy, e: VerdictEvent) {
        let key = self.label_of(by, &e.channel);
        if let Some(ms) = e.latency_ms {
            self.latency.entry(key.clone()).or_default().add(ms);
        }
        *self.verdicts.entry((key, e.verdict.as_str())).or_default() += 1;
        let newer = self.latest.get(&e.channel).is_none_or(|l| e.created_at >= l.created_at);
        if newer {
            self.latest.insert(
                e.channel.clone(),
                LatestVerdict {
                    channel: e.channel,
                    verdict: e.verdict,
                    created_at: e.created_at,
                    at: e.at,
                },
            );
        }
    }
}

/// The counters `/metrics` keeps between scrapes (one per server).
#[derive(Default)]
pub(crate) struct Tally(tokio::sync::Mutex<Option<Counted>>);

impl Tally {
    /// Brings the counts up to the ledger's newest verdict, then lets `f` read them.
    async fn with<T>(&self, s: &AppState, f: impl FnOnce(&Counted) -> T) -> Result<T, StoreError> {
        let mut guard = self.0.lock().await;
        let config: Arc<Config> = s.config();
        if guard.is_none() {
            let seq = s.store.last_event_seq().await?;
            let ids: Vec<String> = config.channels.iter().map(|c| c.id.clone()).collect();
            let latest = s
                .store
                .latest_verdicts(&ids)
                .await?
                .into_iter()
                .map(|l| (l.channel.clone(), l))
                .collect();
            *guard = Some(Counted {
                seq,
                verdicts: BTreeMap::new(),
                latency: BTreeMap::new(),
                latest,
                config: None,
                owners: HashMap::new(),
            });
        }
        let Some(counted) = guard.as_mut() else {
            return Err(StoreError("metrics counters missing".into()));
        };
        // A reload publishes a new config: owners are read again. The Arc
        // is kept, so a comparison by pointer cannot be fooled by a reused address.
        if !counted.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, &config)) {
            counted.owners = config
                .channels
                .iter()
                .map(|c| (c.id.clone(), c.owner.clone()))
                .collect();
            counted.config = Some(Arc::clone(&config));
        }
        // A ledger restored from an older copy (or emptied) numbers its events lower.
        let newest = s.store.last_event_seq().await?;
        if newest < counted.seq {
            counted.seq = newest;
        }
        let by = config.metrics.by;
        for _ in 0..MAX_BATCHES {
            let events = s.store.verdict_events(counted.seq, EVENT_BATCH).await?;
            let full = events.len() == EVENT_BATCH;
            for e in events {
                counted.seq = counted.seq.max(e.seq);
                counted.apply(by, e);
            }
            if !full {
                break;
            }
        }
        Ok(f(counted))
    }
}

pub(super) async fn render(s: &AppState) -> Result<String, StoreError> {
    let config = s.config();
    let open = s.store.open_incidents().await?;
    let pending = s.store.pending_count().await?;
    let failing: std::collections::HashSet<&str> = open.iter().map(|i| i.channel.as_str()).collect();
    let by = config.metrics.by.as_str();
    // About 130 bytes per channel for its two state series.
    let mut out = String::with_capacity(4096 + config.channels.len() * 130);
    s.metrics
        .with(s, |c| {
            let w = &mut out;
            let _ = writeln!(
                w,
                "# HELP postcanary_probes_total Verdicts recorded since this server started, by {by} and verdict \
                 (a missed probe that turns up later counts again under its new verdict)."
            );
            let _ = writeln!(w, "# TYPE postcanary_probes_total counter");
            for ((key, verdict), n) in &c.verdicts {
                w.push_str("postcanary_probes_total{");
                w.push_str(by);
                w.push_str("=\"");
                label(w, key);
                let _ = writeln!(w, "\",verdict=\"{verdict}\"}} {n}");
            }
            let _ = writeln!(
                w,
                "# HELP postcanary_delivery_latency_seconds Time from hand-over to the token being seen, \
                 delivered probes since this server started, by {by}."
            );
            let _ = writeln!(w, "# TYPE postcanary_delivery_latency_seconds histogram");
            for (key, h) in &c.latency {
                let mut cumulative = 0;
                for (i, n) in h.counts.iter().enumerate() {
                    cumulative += n;
                    w.push_str("postcanary_delivery_latency_seconds_bucket{");
                    w.push_str(by);
                    w.push_str("=\"");
                    label(w, key);
                    match BUCKETS.get(i) {
                        Some(b) => {
                            let _ = writeln!(w, "\",le=\"{b}\"}} {cumulative}");
                        }
                        None => {
                            let _ = writeln!(w, "\",le=\"+Inf\"}} {cumulative}");
                        }
                    }
                }
                for (suffix, value) in [("sum", h.sum_ms as f64 / 1000.0), ("count", cumulative as f64)] {
                    let _ = write!(w, "postcanary_delivery_latency_seconds_{suffix}{{{by}=\"");
                    label(w, key);
                    let _ = writeln!(w, "\"}} {value}");
                }
            }

            let _ = writeln!(
                w,
                "# HELP postcanary_channel_up 1 if the channel's last verdict was a success and no incident is open."
            );
            let _ = writeln!(w, "# TYPE postcanary_channel_up gauge");
            for ch in &config.channels {
                let Some(last) = c.latest.get(&ch.id) else { continue };
                let up = u8::from(last.verdict.is_success() && !failing.contains(ch.id.as_str()));
                w.push_str("postcanary_channel_up{channel=\"");
                label(w, &ch.id);
                w.push_str("\",owner=\"");
                label(w, &ch.owner);
                let _ = writeln!(w, "\"}} {up}");
            }
            let _ = writeln!(
                w,
                "# HELP postcanary_last_verdict_timestamp_seconds When each channel last got a verdict."
            );
            let _ = writeln!(w, "# TYPE postcanary_last_verdict_timestamp_seconds gauge");
            for ch in &config.channels {
                let Some(last) = c.latest.get(&ch.id) else { continue };
                w.push_str("postcanary_last_verdict_timestamp_seconds{channel=\"");
                label(w, &ch.id);
                let _ = writeln!(w, "\"}} {}", seconds(last.at));
            }
        })
        .await?;
    let w = &mut out;
    if let Some(me) = &s.config().vantage {
        // Channels × vantages: only with `[vantage]` (a handful of vantages).
        // This reads each channel's views: a scrape costs more with vantages
        // (docs/metrics.md).
        let views = super::api::views(s, None).await?;
        let _ = writeln!(
            w,
            "# HELP postcanary_vantage_up 1 if the vantage's last verdict of the channel was a success."
        );
        let _ = writeln!(w, "# TYPE postcanary_vantage_up gauge");
        for v in &views {
            for x in &v.vantages {
                let _ = writeln!(
                    w,
                    "postcanary_vantage_up{{channel=\"{}\",vantage=\"{}\"}} {}",
                    escaped(&v.id),
                    escaped(&x.vantage),
                    u8::from(x.ok)
                );
            }
        }
        let _ = writeln!(w, "# HELP postcanary_vantage_info The vantage point of this instance.");
        let _ = writeln!(w, "# TYPE postcanary_vantage_info gauge");
        let _ = writeln!(w, "postcanary_vantage_info{{vantage=\"{}\"}} 1", escaped(&me.name));
    }
    let _ = writeln!(
        w,
        "# HELP postcanary_pending_probes Probes sent and waiting for a verdict."
    );
    let _ = writeln!(w, "# TYPE postcanary_pending_probes gauge");
    let _ = writeln!(w, "postcanary_pending_probes {pending}");

    let _ = writeln!(w, "# HELP postcanary_incidents_open Open incidents.");
    let _ = writeln!(w, "# TYPE postcanary_incidents_open gauge");
    let _ = writeln!(w, "postcanary_incidents_open {}", open.len());

    let depth: std::collections::HashMap<String, i64> = s.store.outbox_depth().await?.into_iter().collect();
    let _ = writeln!(
        w,
        "# HELP postcanary_outbox_pages Pages waiting in the outbox, by notifier."
    );
    let _ = writeln!(w, "# TYPE postcanary_outbox_pages gauge");
    for n in &s.config().notifiers {
        let d = depth.get(&n.name).copied().unwrap_or(0);
        let _ = writeln!(w, "postcanary_outbox_pages{{notifier=\"{}\"}} {d}", escaped(&n.name));
    }

    let _ = writeln!(
        w,
        "# HELP postcanary_watcher_connected 1 if the inbox watcher is connected."
    );
    let _ = writeln!(w, "# TYPE postcanary_watcher_connected gauge");
    for (inbox, st) in s.watcher_states() {
        let _ = writeln!(
            w,
            "postcanary_watcher_connected{{inbox=\"{}\"}} {}",
            escaped(&inbox),
            u8::from(st.is_connected())
        );
    }

    let _ = writeln!(
        w,
        "# HELP postcanary_watcher_blind_since_timestamp_seconds Since when a watcher has been unable to look (only blind watchers)."
    );
    let _ = writeln!(w, "# TYPE postcanary_watcher_blind_since_timestamp_seconds gauge");
    for (name, since, _) in s.blind_watchers() {
        let _ = writeln!(
            w,
            "postcanary_watcher_blind_since_timestamp_seconds{{inbox=\"{}\"}} {}",
            escaped(&name),
            since as f64 / 1000.0
        );
    }
    let _ = writeln!(
        w,
        "# HELP postcanary_watcher_caught_up_timestamp_seconds Start of the watcher's last complete scan."
    );
    let _ = writeln!(w, "# TYPE postcanary_watcher_caught_up_timestamp_seconds gauge");
    for p in &s.points.0 {
        if let Some(t) = p.caught_up_at() {
            let _ = writeln!(
                w,
                "postcanary_watcher_caught_up_timestamp_seconds{{inbox=\"{}\"}} {}",
                escaped(&p.name),
                t as f64 / 1000.0
            );
        }
    }

    let _ = writeln!(
        w,
        "# HELP postcanary_scheduler_last_tick_timestamp_seconds When the scheduler loop last ran."
    );
    let _ = writeln!(w, "# TYPE postcanary_scheduler_last_tick_timestamp_seconds gauge");
    let _ = writeln!(
        w,
        "postcanary_scheduler_last_tick_timestamp_seconds {}",
        s.scheduler_tick.load(Ordering::Relaxed) as f64 / 1000.0
    );
    let _ = writeln!(w, "# HELP postcanary_scrape_timestamp_seconds When this page was made.");
    let _ = writeln!(w, "# TYPE postcanary_scrape_timestamp_seconds gauge");
    let _ = writeln!(
        w,
        "postcanary_scrape_timestamp_seconds {}",
        now_millis() as f64 / 1000.0
    );
    Ok(out)
}

pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    match render(&s).await {
        Ok(text) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Verdict;

    fn counted(owners: &[(&str, &str)]) -> Counted {
        Counted {
            seq: 0,
            verdicts: BTreeMap::new(),
            latency: BTreeMap::new(),
            latest: HashMap::new(),
            config: None,
            owners: owners.iter().map(|(c, o)| (c.to_string(), o.to_string())).collect(),
        }
    }

    fn event(seq: i64, channel: &str, verdict: Verdict, created_at: Millis, latency_ms: Option<i64>) -> VerdictEvent {
        VerdictEvent {
            seq,
            channel: channel.into(),
            verdict,
            created_at,
            at: created_at + 100,
            latency_ms,
        }
    }

    #[test]
    fn latencies_fall_in_the_first_bucket_that_holds_them() {
        let mut h = Histogram::default();
        for ms in [0, 250, 251, 1_000, 1_800_000, 1_800_001] {
            h.add(ms);
        }
        assert_eq!(h.counts[0], 2, "≤ 0.25 s, the bound included");
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[2], 1);
        assert_eq!(h.counts[BUCKETS.len() - 1], 1, "≤ 1800 s");
        assert_eq!(h.counts[BUCKETS.len()], 1, "above every bound: +Inf only");
        assert_eq!(h.sum_ms, 3_601_502);
    }

    #[test]
    fn counts_go_by_owner_or_by_channel() {
        let owners = [("a1", "social"), ("a2", "social"), ("b1", "borger")];
        let mut c = counted(&owners);
        c.apply(MetricsBy::Owner, event(1, "a1", Verdict::Delivered, 10, Some(400)));
        c.apply(MetricsBy::Owner, event(2, "a2", Verdict::Delivered, 10, Some(900)));
        c.apply(MetricsBy::Owner, event(3, "b1", Verdict::Missed, 10, None));
        c.apply(MetricsBy::Owner, event(4, "gone", Verdict::Error, 10, None));
        assert_eq!(c.verdicts.get(&("social".into(), "delivered")), Some(&2));
        assert_eq!(c.verdicts.get(&("borger".into(), "missed")), Some(&1));
        assert_eq!(
            c.verdicts.get(&(String::new(), "error")),
            Some(&1),
            "a channel no longer configured"
        );
        assert_eq!(c.latency.len(), 1, "one histogram for the owner's two channels");
        assert_eq!(c.latency["social"].counts.iter().sum::<u64>(), 2);

        let mut c = counted(&owners);
        c.apply(MetricsBy::Channel, event(1, "a1", Verdict::Delivered, 10, Some(400)));
        c.apply(MetricsBy::Channel, event(2, "a2", Verdict::Delivered, 10, Some(900)));
        assert_eq!(c.latency.len(), 2);
        assert_eq!(c.verdicts.get(&("a1".into(), "delivered")), Some(&1));
    }

    #[test]
    fn a_channel_shows_its_newest_probe_not_its_latest_correction() {
        let mut c = counted(&[("a1", "social")]);
        c.apply(MetricsBy::Owner, event(1, "a1", Verdict::Missed, 1_000, None));
        c.apply(MetricsBy::Owner, event(2, "a1", Verdict::Delivered, 2_000, Some(300)));
        // The older probe turns up late: counted, but the channel stays as its newer probe left it.
        c.apply(MetricsBy::Owner, event(3, "a1", Verdict::Late, 1_000, None));
        assert_eq!(c.latest["a1"].verdict, Verdict::Delivered);
        assert_eq!(c.verdicts.get(&("social".into(), "late")), Some(&1));
        assert_eq!(c.verdicts.get(&("social".into(), "missed")), Some(&1));
        c.apply(MetricsBy::Owner, event(4, "a1", Verdict::Rejected, 3_000, None));
        assert_eq!(c.latest["a1"].verdict, Verdict::Rejected);
        assert_eq!(c.latest["a1"].at, 3_100);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escaped("plain-owner"), "plain-owner");
        assert_eq!(escaped("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
