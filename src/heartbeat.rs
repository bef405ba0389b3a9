//! Dead-man's switch: while the scheduler runs and every inbox watcher is
//! connected, request the configured URL (healthchecks.io style) every
//! interval. When postcanary dies or loses its inboxes, the pings stop and
//! the outside service raises the alarm.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::HeartbeatConfig;
use crate::inbox::imap::WatcherState;
use crate::verdict::now_millis;

/// The scheduler counts as alive if it ticked this recently.
pub const SCHEDULER_STALE_MS: i64 = 30_000;

/// Why postcanary is unhealthy, or `None` when it is healthy.
pub fn unhealthy(scheduler_tick: i64, now: i64, watchers: &[(String, WatcherState)]) -> Option<String> {
    if now - scheduler_tick > SCHEDULER_STALE_MS {
        return Some(format!(
            "scheduler has not ticked for {}s",
            (now - scheduler_tick) / 1000
        ));
    }
    let down: Vec<&str> = watchers
        .iter()
        .filter(|(_, s)| !s.is_connected())
        .map(|(n, _)| n.as_str())
        .collect();
    if !down.is_empty() {
        return Some(format!("inbox watcher(s) not connected: {}", down.join(", ")));
    }
    None
}

pub async fn run(
    cfg: HeartbeatConfig,
    scheduler_tick: Arc<AtomicI64>,
    watchers: Vec<(String, watch::Receiver<WatcherState>)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .user_agent(concat!("postcanary/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "heartbeat disabled: cannot build the HTTP client");
            return;
        }
    };
    let mut every = tokio::time::interval(cfg.interval);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.changed() => return,
        }
        let states: Vec<(String, WatcherState)> = watchers
            .iter()
            .map(|(n, rx)| (n.clone(), rx.borrow().clone()))
            .collect();
        if let Some(why) = unhealthy(scheduler_tick.load(Ordering::Relaxed), now_millis(), &states) {
            tracing::warn!(reason = %why, "unhealthy: heartbeat withheld");
            continue;
        }
        let url = cfg.url.expose();
        let req = if cfg.post { client.post(url) } else { client.get(url) };
        match req.send().await {
            Ok(r) if r.status().is_success() => tracing::debug!("heartbeat sent"),
            Ok(r) => tracing::warn!(status = %r.status(), "heartbeat not accepted"),
            // Never log the URL: a ping URL is a credential.
            Err(e) => tracing::warn!(error = %e.without_url(), "heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_only_with_a_live_scheduler_and_connected_watchers() {
        let ok = vec![
            ("social".to_string(), WatcherState::Idle),
            ("closed".to_string(), WatcherState::Polling),
        ];
        assert_eq!(unhealthy(1_000, 5_000, &ok), None);
        assert!(unhealthy(1_000, 40_000, &ok).unwrap().contains("scheduler"));
        let down = vec![("social".to_string(), WatcherState::Backoff("refused".into()))];
        assert!(unhealthy(1_000, 5_000, &down).unwrap().contains("social"));
    }
}
