//! Records the inbox watchers' blind spells in the ledger, for reports: it
//! samples every watcher's [`WatchPoint`] once a second and writes a spell
//! when a watcher has been blind on two samples in a row (with the moment
//! the watcher itself says it went blind), and closes it when the watcher
//! is seen connected. A spell open when the daemon stops stays open until a
//! later run sees that watcher connected: nobody was looking in between.
//!
//! Runs in the daemon only (`run`), so a `check` beside it writes nothing.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::watch;

use crate::inbox::watchpoint::WatchPoints;
use crate::ledger::DynStore;
use crate::verdict::{now_millis, Millis};

/// How often the watchers are looked at.
pub const SAMPLE: Duration = Duration::from_secs(1);

/// What the recorder last saw of one watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    Connected,
    /// Blind since, why, and whether the spell was written yet.
    Blind(Millis, String, bool),
}

/// One sampling round; returns what to remember. Pure apart from the ledger writes.
async fn sample(store: &DynStore, points: &WatchPoints, seen: &mut HashMap<String, Seen>, now: Millis) {
    for p in &points.0 {
        let prev = seen.get(&p.name).cloned();
        let next = match p.blind_since() {
            None => {
                // First sight, or back from a spell: close whatever is open
                // (also a spell left open by an earlier run).
                if !matches!(prev, Some(Seen::Connected)) {
                    if let Err(e) = store.blind_ended(&p.name, now).await {
                        tracing::warn!(watcher = %p.name, error = %e, "cannot record the end of a blind spell");
                        continue;
                    }
                }
                Seen::Connected
            }
            Some((since, why)) => {
                let written = match &prev {
                    Some(Seen::Blind(s, w, written)) if *s == since => {
                        if !*written || *w != why {
                            match store.blind_started(&p.name, &p.inbox, since, &why).await {
                                Ok(()) => true,
                                Err(e) => {
                                    tracing::warn!(watcher = %p.name, error = %e, "cannot record a blind spell");
                                    *written
                                }
                            }
                        } else {
                            true
                        }
                    }
                    // Seen blind once: written on the next sample if it lasts.
                    _ => false,
                };
                Seen::Blind(since, why, written)
            }
        };
        seen.insert(p.name.clone(), next);
    }
}

/// Runs until `shutdown`.
pub async fn run(store: DynStore, points: WatchPoints, mut shutdown: watch::Receiver<bool>) {
    let mut seen = HashMap::new();
    loop {
        sample(&store, &points, &mut seen, now_millis()).await;
        tokio::select! {
            _ = tokio::time::sleep(SAMPLE) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::watchpoint::WatchPoint;
    use crate::ledger::sqlite::SqliteStore;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_lasting_spell_is_recorded_with_its_start_and_closed() {
        let store: DynStore = Arc::new(SqliteStore::in_memory().unwrap());
        let p = WatchPoint::new("social", "social", Duration::from_secs(60));
        let points = WatchPoints(vec![Arc::clone(&p)]);
        let mut seen = HashMap::new();
        // A spell left open by an earlier run is closed when the watcher is seen connected.
        store.blind_started("social", "social", 10, "connecting").await.unwrap();
        p.connected();
        sample(&store, &points, &mut seen, 500).await;
        let s = store.blind_spells(0, i64::MAX).await.unwrap();
        assert_eq!((s[0].since, s[0].until), (10, Some(500)));

        p.blind("connection refused");
        let (since, _) = p.blind_since().unwrap();
        sample(&store, &points, &mut seen, since + 10).await;
        assert_eq!(
            store.blind_spells(since, i64::MAX).await.unwrap().len(),
            0,
            "one sample is not yet a spell"
        );
        sample(&store, &points, &mut seen, since + 1_010).await;
        p.blind("login refused");
        sample(&store, &points, &mut seen, since + 2_010).await;
        p.connected();
        sample(&store, &points, &mut seen, since + 3_010).await;
        let s = store.blind_spells(since, i64::MAX).await.unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].since, s[0].until, s[0].why.as_str()),
            (since, Some(since + 3_010), "login refused")
        );
    }
}
