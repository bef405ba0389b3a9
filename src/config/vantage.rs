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

#[cfg(test)]
mod tests {
    use super::valid_vantage_name;
    use crate::config::Config;

    fn load(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path).map_err(|e| e.to_string())
    }

    #[test]
    fn vantage_section_and_its_errors() {
        let c = load("[vantage]\nname = \"east\"\n").unwrap();
        let v = c.vantage.unwrap();
        assert_eq!(
            (v.name.as_str(), v.quorum, v.slack),
            ("east", 1, std::time::Duration::ZERO)
        );
        assert!(load("").unwrap().vantage.is_none());

        let e = load("# comment\n[vantage]\nname = \"two words\"\nquorum = 0\n").unwrap_err();
        assert!(e.contains("c.toml:3") && e.contains("vantage.name"), "{e}");
        assert!(
            e.contains("c.toml:4") && e.contains("vantage.quorum") && e.contains("at least 1"),
            "{e}"
        );
        // A quorum above 1 needs several instances on one PostgreSQL ledger.
        let e = load("[vantage]\nname = \"east\"\nquorum = 2\n").unwrap_err();
        assert!(e.contains("c.toml:3") && e.contains("ha = true"), "{e}");
        let e = load("[vantage]\nname = \"east\"\nwhere = \"x\"\n").unwrap_err();
        assert!(e.contains("where"), "unknown keys are errors: {e}");
    }

    #[test]
    fn vantage_names() {
        assert!(valid_vantage_name("aarhus-dc1"));
        assert!(valid_vantage_name("a.b_c"));
        assert!(!valid_vantage_name(""));
        assert!(!valid_vantage_name("two words"));
        assert!(!valid_vantage_name("x/y"));
        assert!(!valid_vantage_name(&"x".repeat(65)));
    }
}
