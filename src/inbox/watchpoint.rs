//! What the deadline sweeper needs to know of each inbox watcher before it
//! may call a probe `missed`: whether the watcher is connected, and up to
//! which moment it has looked. A watcher publishes both here; the sweeper
//! reads them and can ask a watcher to look again right now (a "nudge"), so
//! the last scan before a verdict happens after the deadline — also on
//! servers whose IDLE never pushes (Courier, Cyrus without idled).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::verdict::{now_millis, Millis};

/// No scan has completed yet.
const NEVER: Millis = i64::MIN;

/// One watcher's published view of itself.
#[derive(Debug)]
pub struct WatchPoint {
    /// The watcher's name (`social`, `social (Junk)`).
    pub name: String,
    /// The inbox it watches (`social`).
    pub inbox: String,
    /// How long past a deadline a probe waits for this watcher while it is blind.
    pub blind_grace: Duration,
    /// When its last complete scan started: everything in the folder at that
    /// moment has been matched and recorded.
    caught_up: AtomicI64,
    /// Since when it has been unable to look, and why; `None` while connected.
    blind: Mutex<Option<(Millis, String)>>,
    /// When the sweeper last asked it to look again.
    nudged: AtomicI64,
    nudge: Notify,
}

impl WatchPoint {
    pub fn new(name: impl Into<String>, inbox: impl Into<String>, blind_grace: Duration) -> Arc<WatchPoint> {
        Arc::new(WatchPoint {
            name: name.into(),
            inbox: inbox.into(),
            blind_grace,
            caught_up: AtomicI64::new(NEVER),
            // Not yet connected: blind from the start.
            blind: Mutex::new(Some((now_millis(), "connecting".to_string()))),
            nudged: AtomicI64::new(NEVER),
            nudge: Notify::new(),
        })
    }

    /// A scan that started at `started` has finished: all mail present then was read.
    pub fn caught_up(&self, started: Millis) {
        self.caught_up.fetch_max(started, Ordering::AcqRel);
    }

    /// The start of the last complete scan, if any.
    pub fn caught_up_at(&self) -> Option<Millis> {
        Some(self.caught_up.load(Ordering::Acquire)).filter(|&t| t != NEVER)
    }

    /// The watcher is connected (its scans will follow).
    pub fn connected(&self) {
        if let Ok(mut b) = self.blind.lock() {
            *b = None;
        }
    }

    /// The watcher cannot look (disconnected, login refused, …). Keeps the
    /// first moment of a blind spell; updates the reason.
    pub fn blind(&self, why: impl Into<String>) {
        if let Ok(mut b) = self.blind.lock() {
            let since = b.as_ref().map(|(t, _)| *t).unwrap_or_else(now_millis);
            *b = Some((since, why.into()));
        }
    }

    /// Since when and why it is blind, or `None` when connected.
    pub fn blind_since(&self) -> Option<(Millis, String)> {
        self.blind.lock().ok().and_then(|b| b.clone())
    }

    /// Asks the watcher to scan now (at most once per `min_gap`).
    pub fn nudge(&self, now: Millis, min_gap: Duration) {
        let gap = i64::try_from(min_gap.as_millis()).unwrap_or(i64::MAX);
        let last = self.nudged.load(Ordering::Acquire);
        if last == NEVER || now - last >= gap {
            self.nudged.store(now, Ordering::Release);
            self.nudge.notify_one();
        }
    }

    /// Resolves when the sweeper asks for a scan (a nudge given while the
    /// watcher was busy is kept and resolves at once).
    pub async fn nudged(&self) {
        self.nudge.notified().await
    }
}

/// Every watcher of the engine.
#[derive(Clone, Debug, Default)]
pub struct WatchPoints(pub Vec<Arc<WatchPoint>>);

impl WatchPoints {
    /// The watchers of one inbox (its main folder and its junk folder).
    pub fn of_inbox<'a>(&'a self, inbox: &'a str) -> impl Iterator<Item = &'a Arc<WatchPoint>> + 'a {
        self.0.iter().filter(move |p| p.inbox == inbox)
    }
}

/// Whether a probe with deadline `deadline` can be judged from what the
/// watchers `needed` have seen: each must have finished a scan that started
/// after the deadline.
pub fn watched_past(needed: &[&Arc<WatchPoint>], deadline: Millis) -> bool {
    needed.iter().all(|p| p.caught_up_at().is_some_and(|t| t >= deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_is_judgeable_only_after_a_scan_past_its_deadline() {
        let p = WatchPoint::new("social", "social", Duration::from_secs(300));
        assert!(p.blind_since().is_some(), "blind until connected");
        assert!(!watched_past(&[&p], 1_000));
        p.connected();
        assert!(p.blind_since().is_none());
        p.caught_up(900);
        assert!(!watched_past(&[&p], 1_000), "a scan that started before the deadline");
        p.caught_up(1_000);
        assert!(watched_past(&[&p], 1_000));
        p.caught_up(500);
        assert_eq!(p.caught_up_at(), Some(1_000), "never goes back");
    }

    #[test]
    fn a_blind_spell_keeps_its_start() {
        let p = WatchPoint::new("social", "social", Duration::from_secs(300));
        p.connected();
        p.blind("connection refused");
        let (since, _) = p.blind_since().expect("blind");
        std::thread::sleep(Duration::from_millis(5));
        p.blind("login refused");
        assert_eq!(p.blind_since(), Some((since, "login refused".to_string())));
    }
}
