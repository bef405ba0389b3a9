//! OpenTelemetry export over OTLP (HTTP/JSON) from `[telemetry]`: installs
//! the global tracer and meter providers the recorders in `telemetry` use.

use std::time::Duration;

use opentelemetry::global;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

use crate::config::TelemetryConfig;

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
