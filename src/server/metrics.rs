//! Prometheus text exposition, computed from the ledger at scrape time, so
//! the counters survive restarts and agree with the status page.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{store_error, AppState};
use crate::ledger::StoreError;
use crate::verdict::now_millis;

/// Histogram bounds of `postcanary_delivery_latency_seconds`, in seconds.
const BUCKETS: [f64; 12] = [0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// Escapes a label value per the exposition format.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(super) async fn render(s: &AppState) -> Result<String, StoreError> {
    let mut out = String::new();
    let w = &mut out;

    let _ = writeln!(
        w,
        "# HELP postcanary_probes_total Probes judged, by channel and verdict."
    );
    let _ = writeln!(w, "# TYPE postcanary_probes_total counter");
    for (channel, verdict, n) in s.store.verdict_counts().await? {
        let _ = writeln!(
            w,
            "postcanary_probes_total{{channel=\"{}\",verdict=\"{}\"}} {n}",
            label(&channel),
            label(&verdict)
        );
    }

    let bounds: Vec<i64> = BUCKETS.iter().map(|b| (b * 1000.0) as i64).collect();
    let (counts, n, sum_ms) = s.store.latency_histogram(&bounds).await?;
    let _ = writeln!(
        w,
        "# HELP postcanary_delivery_latency_seconds Time from hand-over to the token being seen, delivered probes."
    );
    let _ = writeln!(w, "# TYPE postcanary_delivery_latency_seconds histogram");
    for (b, c) in BUCKETS.iter().zip(&counts) {
        let _ = writeln!(w, "postcanary_delivery_latency_seconds_bucket{{le=\"{b}\"}} {c}");
    }
    let _ = writeln!(w, "postcanary_delivery_latency_seconds_bucket{{le=\"+Inf\"}} {n}");
    let _ = writeln!(w, "postcanary_delivery_latency_seconds_sum {}", sum_ms as f64 / 1000.0);
    let _ = writeln!(w, "postcanary_delivery_latency_seconds_count {n}");

    let views = super::api::views(s, None).await?;
    let _ = writeln!(
        w,
        "# HELP postcanary_channel_up 1 if the channel's last verdict was a success and no incident is open."
    );
    let _ = writeln!(w, "# TYPE postcanary_channel_up gauge");
    for v in &views {
        if v.state != "unknown" {
            let up = u8::from(v.state == "ok");
            let _ = writeln!(
                w,
                "postcanary_channel_up{{channel=\"{}\",owner=\"{}\"}} {up}",
                label(&v.id),
                label(&v.owner)
            );
        }
    }
    let _ = writeln!(
        w,
        "# HELP postcanary_last_verdict_timestamp_seconds When each channel last got a verdict."
    );
    let _ = writeln!(w, "# TYPE postcanary_last_verdict_timestamp_seconds gauge");
    for v in &views {
        if let Some(last) = &v.last {
            let _ = writeln!(
                w,
                "postcanary_last_verdict_timestamp_seconds{{channel=\"{}\"}} {}",
                label(&v.id),
                last.at as f64 / 1000.0
            );
        }
    }
    if let Some(me) = &s.config().vantage {
        // Channels × vantages: only with `[vantage]`, a handful of vantages.
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
                    label(&v.id),
                    label(&x.vantage),
                    u8::from(x.ok)
                );
            }
        }
        let _ = writeln!(w, "# HELP postcanary_vantage_info The vantage point of this instance.");
        let _ = writeln!(w, "# TYPE postcanary_vantage_info gauge");
        let _ = writeln!(w, "postcanary_vantage_info{{vantage=\"{}\"}} 1", label(&me.name));
    }
    let pending: i64 = views.iter().map(|v| v.pending).sum();
    let _ = writeln!(
        w,
        "# HELP postcanary_pending_probes Probes sent and waiting for a verdict."
    );
    let _ = writeln!(w, "# TYPE postcanary_pending_probes gauge");
    let _ = writeln!(w, "postcanary_pending_probes {pending}");

    let open = s.store.open_incidents().await?.len();
    let _ = writeln!(w, "# HELP postcanary_incidents_open Open incidents.");
    let _ = writeln!(w, "# TYPE postcanary_incidents_open gauge");
    let _ = writeln!(w, "postcanary_incidents_open {open}");

    let depth: std::collections::HashMap<String, i64> = s.store.outbox_depth().await?.into_iter().collect();
    let _ = writeln!(
        w,
        "# HELP postcanary_outbox_pages Pages waiting in the outbox, by notifier."
    );
    let _ = writeln!(w, "# TYPE postcanary_outbox_pages gauge");
    for n in &s.config().notifiers {
        let d = depth.get(&n.name).copied().unwrap_or(0);
        let _ = writeln!(w, "postcanary_outbox_pages{{notifier=\"{}\"}} {d}", label(&n.name));
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
            label(&inbox),
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
            label(&name),
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
                label(&p.name),
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
