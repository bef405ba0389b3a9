//! Ledger retention: once a day the daemon rolls the last days up into
//! per-channel daily counts, slims the successful probes older than a day
//! (their evidence trail goes; the row keeps times, verdict, where found,
//! latency and the server's reply), prunes probes older than
//! `[ledger] keep_probes` (never a pending one, an open incident's, or the
//! probe that opened or resolved any incident) and rollups older than
//! `keep_rollups`. `postcanary prune` runs the same once, now.

use std::time::Duration;

use tokio::sync::watch;

use crate::config::LedgerConfig;
use crate::ledger::{day_start, DynStore, PruneCut, PruneStats, StoreResult, DAY_MS};
use crate::verdict::{now_millis, Millis};

/// How often the daemon runs retention.
pub const INTERVAL: Duration = Duration::from_secs(86_400);
/// Days re-rolled at each run, so that verdicts reached after a day ended
/// (a probe pending at midnight, a late arrival) reach its rollup.
pub const REROLL_DAYS: i64 = 3;
/// Successes older than this are slimmed.
pub const SLIM_AFTER_MS: Millis = DAY_MS;

fn ms(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What a run at `now` removes under `cfg`: probes and rollups older than
/// their keep time, counted in whole UTC days.
pub fn cut(cfg: &LedgerConfig, now: Millis) -> PruneCut {
    PruneCut {
        probes_before: cfg.keep_probes.map(|k| day_start(now.saturating_sub(ms(k)))),
        rollups_before: Some(day_start(now.saturating_sub(ms(cfg.keep_rollups)))),
        slim_before: now - SLIM_AFTER_MS,
    }
}

/// One retention run at `now`.
pub async fn run_once(store: &DynStore, cfg: &LedgerConfig, now: Millis) -> StoreResult<PruneStats> {
    let today = day_start(now);
    store.roll_up(today - REROLL_DAYS * DAY_MS, today).await?;
    store.prune(&cut(cfg, now)).await
}

/// The daemon's daily run (now, then every [`INTERVAL`]) until `shutdown`.
pub async fn run(store: DynStore, cfg: LedgerConfig, wake: crate::outbox::Wake, shutdown: watch::Receiver<bool>) {
    crate::outbox::every("retention", INTERVAL, wake, shutdown, || {
        let (store, cfg) = (store.clone(), cfg.clone());
        async move {
            let stats = run_once(&store, &cfg, now_millis()).await?;
            tracing::info!(
                removed = stats.probes_removed,
                kept_for_incidents = stats.probes_kept_for_incidents,
                slimmed = stats.probes_slimmed,
                rollups_removed = stats.rollups_removed,
                "ledger retention"
            );
            Ok(false)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LedgerBackend;

    #[test]
    fn cuts_are_whole_days() {
        let cfg = LedgerConfig {
            backend: LedgerBackend::Sqlite("x".into()),
            ha: None,
            keep_probes: Some(Duration::from_secs(90 * 86_400)),
            keep_rollups: Duration::from_secs(400 * 86_400),
        };
        let now = 20_000 * DAY_MS + 5 * 3_600_000;
        let c = cut(&cfg, now);
        assert_eq!(c.probes_before, Some((20_000 - 90) * DAY_MS));
        assert_eq!(c.rollups_before, Some((20_000 - 400) * DAY_MS));
        assert_eq!(c.slim_before, now - DAY_MS);
        let keep_all = LedgerConfig {
            keep_probes: None,
            ..cfg
        };
        assert_eq!(cut(&keep_all, now).probes_before, None);
    }
}
