//! `[metrics]`: what `/metrics` breaks its series down by.

use serde::Deserialize;

/// The label of `postcanary_probes_total` and of
/// `postcanary_delivery_latency_seconds`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MetricsBy {
    /// One series per owner (and verdict, or histogram bucket): a few
    /// hundred series however many channels an owner has. The default.
    #[default]
    Owner,
    /// One series per channel: 15 lines of histogram per channel, for a
    /// few hundred channels at most (about 60 MB a scrape at 50,000).
    Channel,
}

impl MetricsBy {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsBy::Owner => "owner",
            MetricsBy::Channel => "channel",
        }
    }
}

/// `[metrics]`. The per-channel state (`postcanary_channel_up`,
/// `postcanary_last_verdict_timestamp_seconds`) is always there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricsConfig {
    pub by: MetricsBy,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// Break the verdict counter and the latency histogram down by "owner"
    /// (default) or "channel" (one histogram per channel: small deployments only).
    pub(super) by: Option<MetricsBy>,
}

pub(super) fn build_metrics(raw: Option<RawMetrics>) -> MetricsConfig {
    MetricsConfig {
        by: raw.and_then(|r| r.by).unwrap_or_default(),
    }
}
