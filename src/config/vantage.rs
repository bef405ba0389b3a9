//! `[vantage]`: where this instance probes from. Instances in different
//! places (each with its own relay and network path) share one PostgreSQL
//! ledger; each probes every channel on its own and stamps its probes with
//! its vantage name. A channel incident opens only when `quorum` vantages see
//! the channel fail in the same window (see `incident::quorum`).

use std::time::Duration;

use serde::Deserialize;

use super::ledger::{LedgerBackend, LedgerConfig};
use super::loader::Loader;
use super::values::HumanDuration;

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVantage {
    /// This instance's vantage point: letters, digits, '-', '_' and '.', at
    /// most 64 characters (e.g. "aarhus-dc1"). Every instance of one place
    /// (HA standbys included) has the same name.
    pub name: String,
    /// How many vantages must see a channel fail in the same window before
    /// its incident opens and pages (default 1). Set the same value on every
    /// instance; the one that pages decides with its own.
    pub quorum: Option<u32>,
    /// How far back a vantage's latest verdict still counts, besides the
    /// channel's schedule interval plus its deadline (default "0s"): raise
    /// it when the vantages' clocks or schedules drift apart.
    pub slack: Option<HumanDuration>,
}

/// A checked `[vantage]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VantageConfig {
    pub name: String,
    pub quorum: u32,
    pub slack: Duration,
}

/// Whether a vantage name is acceptable (it goes into lease names, incident
/// keys and metric labels).
pub fn valid_vantage_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub(super) fn build_vantage(
    loader: &mut Loader,
    raw: Option<RawVantage>,
    ledger: &LedgerConfig,
) -> Option<VantageConfig> {
    let raw = raw?;
    let mut ok = true;
    let mut err = |loader: &mut Loader, key: &str, msg: String| {
        let line = loader.files[0].table_key_line("vantage", key);
        let e = loader.files[0].error(line, Some(&format!("vantage.{key}")), msg);
        loader.errors.push(e);
        ok = false;
    };
    if !valid_vantage_name(&raw.name) {
        err(
            loader,
            "name",
            format!(
                "{:?} is not a vantage name: use 1 to 64 letters, digits, '-', '_' or '.'",
                raw.name
            ),
        );
    }
    let quorum = raw.quorum.unwrap_or(1);
    if quorum == 0 {
        err(loader, "quorum", "must be at least 1".into());
    }
    // Several vantages share one ledger only on PostgreSQL, and then their
    // paging must be single: only `ha` runs the incident processor on one
    // instance of all.
    if quorum > 1 && !(matches!(ledger.backend, LedgerBackend::Postgres(_)) && ledger.ha.is_some()) {
        err(
            loader,
            "quorum",
            "a quorum above 1 needs several vantages on one ledger: a postgres:// [ledger] with ha = true".into(),
        );
    }
    ok.then(|| VantageConfig {
        name: raw.name,
        quorum,
        slack: raw.slack.map(HumanDuration::as_duration).unwrap_or_default(),
    })
}
