//! OpenTelemetry recorders (the exporters are set up in `export`, when
//! `[telemetry]` is set):
//! the `tracing` spans (the SMTP conversation, the IMAP catch-up, probe
//! sending) through tracing-opentelemetry; one `probe` span per probe from its
//! creation to its verdict, with explicit timestamps, since a probe's life
//! spans several tasks; and metrics: `postcanary.probes` (counter by channel
//! and verdict) and `postcanary.delivery.latency` (histogram, seconds).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod export;

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::{Span, SpanKind, TraceContextExt, Tracer};
use opentelemetry::{global, Context, KeyValue};

use crate::verdict::{Millis, Verdict};

struct Instruments {
    probes: Counter<u64>,
    latency: Histogram<f64>,
}

fn instruments() -> &'static Instruments {
    static I: OnceLock<Instruments> = OnceLock::new();
    I.get_or_init(|| {
        let meter = global::meter("postcanary");
        Instruments {
            probes: meter
                .u64_counter("postcanary.probes")
                .with_description("Probes judged")
                .build(),
            latency: meter
                .f64_histogram("postcanary.delivery.latency")
                .with_unit("s")
                .with_description("Hand-over to token seen, delivered probes")
                .build(),
        }
    })
}

fn at(ms: Millis) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The open `probe` spans of this process, by probe id, from the send to the verdict.
fn open_probes() -> &'static Mutex<HashMap<String, Context>> {
    static OPEN: OnceLock<Mutex<HashMap<String, Context>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Opens the `probe` span of a new probe; the returned context is the parent
/// of the spans of its steps (SMTP conversation, token found).
pub fn start_probe(id: &str, channel: &str, token: &str) -> Context {
    let tracer = global::tracer("postcanary");
    let span = tracer
        .span_builder("probe")
        .with_kind(SpanKind::Internal)
        .with_attributes(vec![
            KeyValue::new("postcanary.channel", channel.to_string()),
            KeyValue::new("postcanary.token", token.to_string()),
        ])
        .start(&tracer);
    let cx = Context::new().with_span(span);
    if let Ok(mut open) = open_probes().lock() {
        open.insert(id.to_string(), cx.clone());
    }
    cx
}

/// A short child span of an open probe (e.g. its token found in an inbox).
pub fn probe_step(id: &str, name: &'static str, attributes: Vec<KeyValue>) {
    let cx = open_probes().lock().ok().and_then(|open| open.get(id).cloned());
    if let Some(cx) = cx {
        let tracer = global::tracer("postcanary");
        let mut span = tracer
            .span_builder(name)
            .with_attributes(attributes)
            .start_with_context(&tracer, &cx);
        span.end();
    }
}

/// Records a verdict: ends the probe's span (or, for a probe sent by another
/// process or before a restart, emits one from its creation to its verdict),
/// and the metrics. Without `[telemetry]` the global providers are no-ops.
pub fn record_verdict(
    id: &str,
    channel: &str,
    token: &str,
    verdict: Verdict,
    created_at: Millis,
    judged_at: Millis,
    latency_ms: Option<i64>,
) {
    let mut attrs = vec![KeyValue::new("postcanary.verdict", verdict.as_str())];
    if let Some(l) = latency_ms {
        attrs.push(KeyValue::new("postcanary.latency_ms", l));
    }
    let end = at(judged_at.max(created_at));
    let open = open_probes().lock().ok().and_then(|mut open| open.remove(id));
    match open {
        Some(cx) => {
            let span = cx.span();
            span.set_attributes(attrs);
            if !verdict.is_success() {
                span.set_status(opentelemetry::trace::Status::error(verdict.as_str()));
            }
            span.end_with_timestamp(end);
        }
        None => {
            let tracer = global::tracer("postcanary");
            attrs.push(KeyValue::new("postcanary.channel", channel.to_string()));
            attrs.push(KeyValue::new("postcanary.token", token.to_string()));
            let mut span = tracer
                .span_builder("probe")
                .with_kind(SpanKind::Internal)
                .with_start_time(at(created_at))
                .with_attributes(attrs)
                .start(&tracer);
            if !verdict.is_success() {
                span.set_status(opentelemetry::trace::Status::error(verdict.as_str()));
            }
            span.end_with_timestamp(end);
        }
    }
    let i = instruments();
    let labels = [
        KeyValue::new("channel", channel.to_string()),
        KeyValue::new("verdict", verdict.as_str()),
    ];
    i.probes.add(1, &labels);
    if let (Verdict::Delivered, Some(l)) = (verdict, latency_ms) {
        i.latency
            .record(l as f64 / 1000.0, &[KeyValue::new("channel", channel.to_string())]);
    }
}
