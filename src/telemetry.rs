//! OpenTelemetry export over OTLP (HTTP/JSON), when `[telemetry]` is set:
//! the `tracing` spans (the SMTP conversation, the IMAP catch-up, probe
//! sending) through tracing-opentelemetry; one `probe` span per probe from its
//! creation to its verdict, with explicit timestamps, since a probe's life
//! spans several tasks; and metrics: `postcanary.probes` (counter by channel
//! and verdict) and `postcanary.delivery.latency` (histogram, seconds).

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::{Span, SpanKind, Tracer, TracerProvider};
use opentelemetry::{global, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;
use crate::verdict::{Millis, Verdict};

/// The installed providers; flushed and stopped by [`Telemetry::shutdown`].
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
}

impl Telemetry {
    /// Builds the exporters and installs the global providers. Returns the
    /// tracer for the tracing layer. Must run outside the async runtime (the
    /// exporters' HTTP client is a blocking one on its own thread).
    pub fn init(cfg: &TelemetryConfig) -> Result<(Telemetry, opentelemetry_sdk::trace::Tracer), String> {
        let base = cfg.otlp_endpoint.trim_end_matches('/');
        let resource = Resource::builder().with_service_name(cfg.service_name.clone()).build();
        let spans = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("OTLP trace exporter: {e}"))?;
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(spans)
            .with_resource(resource.clone())
            .build();
        let metrics = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(format!("{base}/v1/metrics"))
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("OTLP metric exporter: {e}"))?;
        let reader = PeriodicReader::builder(metrics)
            .with_interval(cfg.export_interval)
            .build();
        let meter_provider = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource)
            .build();
        global::set_tracer_provider(tracer_provider.clone());
        global::set_meter_provider(meter_provider.clone());
        let tracer = tracer_provider.tracer("postcanary");
        Ok((
            Telemetry {
                tracer: tracer_provider,
                meter: meter_provider,
            },
            tracer,
        ))
    }

    /// Flushes what is buffered and stops the exporters.
    pub fn shutdown(self) {
        if let Err(e) = self.tracer.shutdown() {
            eprintln!("OpenTelemetry traces: {e}");
        }
        if let Err(e) = self.meter.shutdown() {
            eprintln!("OpenTelemetry metrics: {e}");
        }
    }
}

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

/// Records a verdict: the `probe` span from creation to verdict, and the
/// metrics. Without `[telemetry]` the global providers are no-ops.
pub fn record_verdict(
    channel: &str,
    token: &str,
    verdict: Verdict,
    created_at: Millis,
    judged_at: Millis,
    latency_ms: Option<i64>,
) {
    let tracer = global::tracer("postcanary");
    let mut span = tracer
        .span_builder("probe")
        .with_kind(SpanKind::Internal)
        .with_start_time(at(created_at))
        .with_attributes(vec![
            KeyValue::new("postcanary.channel", channel.to_string()),
            KeyValue::new("postcanary.token", token.to_string()),
            KeyValue::new("postcanary.verdict", verdict.as_str()),
        ])
        .start(&tracer);
    if let Some(l) = latency_ms {
        span.set_attribute(KeyValue::new("postcanary.latency_ms", l));
    }
    if !verdict.is_success() {
        span.set_status(opentelemetry::trace::Status::error(verdict.as_str()));
    }
    span.end_with_timestamp(at(judged_at.max(created_at)));
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
