//! The engine wires the flow together: it opens the ledger, settles the token
//! key, and runs the inbox watchers and the deadline sweeper. `run` adds the
//! scheduler; `check` fires the selected channels once and waits for verdicts.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::config::{Channel, Config};
use crate::inbox::imap::WatcherState;
use crate::inbox::watchpoint::{watched_past, WatchPoint, WatchPoints};
use crate::ledger::{self, DynStore, ProbeRecord, StoreError};
use crate::probe::{self, ProbeContext, Started};
use crate::token::TokenKey;
use crate::verdict::{now_millis, Judgement, Millis, Verdict, VerdictSink};

/// Why the engine could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the token key kept in the ledger is unreadable; restore it or configure [token] key")]
    BadStoredKey,
}

/// The sweeper looks at least this often, so a probe is judged at most this
/// late after its deadline.
const SWEEP_TICK: Duration = Duration::from_millis(250);
/// The scheduler wakes at least this often, to show it is alive.
const SCHEDULER_LIVENESS: Duration = Duration::from_secs(5);
/// At most this many probes are being sent at once.
const MAX_CONCURRENT_SENDS: usize = 64;

pub struct Engine {
    pub config: Arc<Config>,
    pub store: DynStore,
    pub key: TokenKey,
    pub run_id: String,
    pub verdicts: VerdictSink,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    watcher_states: HashMap<String, watch::Receiver<WatcherState>>,
    /// What each watcher has looked at, for the sweeper.
    pub watch_points: WatchPoints,
    /// When the scheduler loop last ran (ms), for the heartbeat.
    scheduler_tick: Arc<AtomicI64>,
    /// SMTP sessions kept with the relays (see `sender::smtp`).
    relays: crate::sender::smtp::Relays,
    /// The sends (mail and forms) in progress at once, see [`MAX_CONCURRENT_SENDS`].
    sends: Arc<Semaphore>,
    /// With `[ledger] ha`: this instance's role, shown by `/healthz` (set by `ha::run`).
    pub role: Option<String>,
    /// With `[vantage]` and `ha`: who holds the paging lease, as a `/healthz`
    /// line (`paging: NAME (generation N)`), kept current by `ha::run`.
    pub leases: Option<watch::Receiver<String>>,
    /// The config in force (replaced by a reload); `config` is the one it started with.
    live: watch::Sender<Arc<Config>>,
    slots: Arc<tokio::sync::Mutex<reload::Slots>>,
    reload_status: watch::Sender<reload::ReloadStatus>,
    reload_busy: Arc<tokio::sync::Mutex<()>>,
}

pub mod reload;
pub use crate::page::hostname;
pub use reload::{ReloadStatus, Reloader};

impl Engine {
    /// Opens the ledger and starts the watchers and the sweeper.
    pub async fn start(config: Config) -> Result<Engine, EngineError> {
        let vantage = config.vantage.as_ref().map(|v| v.name.as_str());
        let store = ledger::backend::open_as(&config.ledger.backend, vantage).await?;
        Engine::start_with_store(config, store).await
    }

    /// [`Engine::start`] on a ledger already open (`ha::run` passes its fenced store).
    pub async fn start_with_store(config: Config, store: DynStore) -> Result<Engine, EngineError> {
        let mut engine = Engine::idle_with_store(config, store).await?;
        engine.start_watchers();
        engine.start_sweeper();
        Ok(engine)
    }

    /// An engine on a ledger that runs nothing yet: no watcher, no sweeper
    /// (with vantages, `ha::run` starts only the paging on one of these).
    pub async fn idle_with_store(config: Config, store: DynStore) -> Result<Engine, EngineError> {
        let key = match &config.token.key {
            Some(secret) => TokenKey::new(secret.expose().as_bytes().to_vec()),
            None => {
                let fresh = TokenKey::generate().to_hex();
                let kept = store.meta_get_or_put("token_key", &fresh).await?;
                TokenKey::from_hex(&kept).ok_or(EngineError::BadStoredKey)?
            }
        };
        let run_id = ulid::Ulid::new().to_string();
        let (shutdown, _) = watch::channel(false);
        let config = Arc::new(config);
        let (live, _) = watch::channel(Arc::clone(&config));
        let engine = Engine {
            live,
            slots: Arc::default(),
            reload_status: watch::channel(ReloadStatus::default()).0,
            reload_busy: Arc::default(),
            config,
            store,
            key,
            run_id,
            verdicts: VerdictSink::default(),
            shutdown,
            tasks: JoinSet::new(),
            watcher_states: HashMap::new(),
            watch_points: WatchPoints::default(),
            scheduler_tick: Arc::new(AtomicI64::new(now_millis())),
            role: None,
            leases: None,
            relays: crate::sender::smtp::Relays::default(),
            sends: Arc::new(Semaphore::new(MAX_CONCURRENT_SENDS)),
        };
        Ok(engine)
    }

    pub fn probe_context(&self) -> ProbeContext {
        ProbeContext {
            store: Arc::clone(&self.store),
            key: self.key.clone(),
            run_id: self.run_id.clone(),
            verdicts: self.verdicts.clone(),
            relays: self.relays.clone(),
            sends: Arc::clone(&self.sends),
        }
    }

    fn start_watchers(&mut self) {
        let matcher = reload::matcher(&self.config, &self.store, &self.key, &self.verdicts);
        let Ok(mut slots) = self.slots.try_lock() else {
            return;
        };
        // One watcher per inbox, and one more for its junk folder when it has one.
        for inbox in reload::watcher_configs(&self.config) {
            let (tx, rx) = watch::channel(WatcherState::Connecting);
            self.watcher_states.insert(inbox.watcher_name(), rx);
            let point = WatchPoint::new(inbox.watcher_name(), inbox.name.clone(), inbox.blind_grace);
            self.watch_points.0.push(Arc::clone(&point));
            let name = inbox.watcher_name();
            let slot = reload::spawn_watcher(inbox, matcher.clone(), point, tx, self.shutdown.subscribe());
            slots.watchers.insert(name, slot);
        }
    }

    /// The config in force, following reloads.
    pub fn live(&self) -> watch::Receiver<Arc<Config>> {
        self.live.subscribe()
    }

    /// A handle that reloads the config (SIGHUP, `POST /api/reload`).
    pub fn reloader(&self) -> Reloader {
        Reloader {
            live: self.live.clone(),
            slots: Arc::clone(&self.slots),
            status: self.reload_status.clone(),
            store: Arc::clone(&self.store),
            key: self.key.clone(),
            verdicts: self.verdicts.clone(),
            shutdown: self.shutdown.subscribe(),
            busy: Arc::clone(&self.reload_busy),
        }
    }

    fn start_sweeper(&mut self) {
        let store = Arc::clone(&self.store);
        let verdicts = self.verdicts.clone();
        let run_id = self.run_id.clone();
        let points = self.watch_points.clone();
        let mut shutdown = self.shutdown.subscribe();
        self.tasks.spawn(async move {
            loop {
                let wait = match store.next_deadline().await {
                    Ok(Some(d)) => Duration::from_millis(u64::try_from(d - now_millis()).unwrap_or(0)).min(SWEEP_TICK),
                    Ok(None) => SWEEP_TICK,
                    Err(e) => {
                        tracing::error!(error = %e, "sweeper cannot read the ledger");
                        SWEEP_TICK
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return,
                }
                if let Err(e) = sweep_watched(&store, &verdicts, &points, &run_id, now_millis()).await {
                    tracing::error!(error = %e, "sweeper cannot update the ledger");
                }
            }
        });
    }

    /// Starts what `run` adds to `check`: the incident processor, one outbox
    /// worker per notifier, and the heartbeat.
    pub fn start_paging(&mut self, delivery: Arc<dyn crate::outbox::Deliver>) {
        self.start_paging_only(delivery);
        self.start_companions();
    }

    /// The paging tasks alone: the incident processor and the outbox
    /// workers (with drift and discovery), as one reloadable generation.
    pub fn start_paging_only(&mut self, delivery: Arc<dyn crate::outbox::Deliver>) {
        let paging = reload::spawn_paging(
            &self.config,
            &self.store,
            Arc::clone(&delivery),
            &self.verdicts,
            self.shutdown.subscribe(),
            &hostname(),
            &self.key,
        );
        if let Ok(mut slots) = self.slots.try_lock() {
            slots.delivery = Some(delivery);
            slots.paging = Some(paging);
        }
    }

    /// What goes with the prober in `run`: the watchers' blind-spell log
    /// (both ledgers; on HA only the vantage's active runs an engine) and
    /// the heartbeat.
    pub fn start_companions(&mut self) {
        // The watchers' blind spells, for reports.
        self.tasks.spawn(crate::blindlog::run(
            Arc::clone(&self.store),
            self.watch_points.clone(),
            self.shutdown.subscribe(),
        ));
        if let Some(hb) = self.config.heartbeat.clone() {
            let watchers = self
                .watcher_states
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let fut = crate::heartbeat::run(
                hb,
                Arc::clone(&self.scheduler_tick),
                watchers,
                self.shutdown.subscribe(),
            );
            self.tasks.spawn(fut);
        }
        for ch in &self.config.channels {
            if ch.notify.is_empty() && !ch.control {
                tracing::warn!(channel = %ch.id, "no notifier: failures of this channel are recorded but page nobody");
            }
        }
    }

    /// Runs a long-lived task of the readers (the HTTP server) with the
    /// engine's tasks: it gets the shutdown signal and is awaited by [`Engine::stop`].
    pub fn spawn_service<F>(&mut self, task: impl FnOnce(watch::Receiver<bool>) -> F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let fut = task(self.shutdown.subscribe());
        self.tasks.spawn(fut);
    }

    /// The watchers' connection states, by watcher name, as the readers see them.
    pub fn watcher_receivers(&self) -> HashMap<String, watch::Receiver<WatcherState>> {
        self.watcher_states.clone()
    }

    /// When the scheduler loop last ran (ms), for the readers' health check.
    pub fn scheduler_tick(&self) -> Arc<AtomicI64> {
        Arc::clone(&self.scheduler_tick)
    }

    /// The state of each inbox watcher.
    pub fn watcher_states(&self) -> Vec<(String, WatcherState)> {
        let mut v: Vec<_> = self
            .watcher_states
            .iter()
            .map(|(k, rx)| (k.clone(), rx.borrow().clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Waits (up to `limit`) until every watcher is connected; returns whether they are.
    pub async fn wait_watchers_connected(&self, limit: Duration) -> bool {
        let all = |s: &Engine| s.watcher_states.values().all(|rx| rx.borrow().is_connected());
        let end = tokio::time::Instant::now() + limit;
        while !all(self) {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stops watchers and the sweeper and waits for them (bounded).
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        reload::stop_all(&self.slots).await;
        let drain = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
            tracing::warn!("some tasks did not stop within 10s; aborting them");
            self.tasks.abort_all();
        }
    }

    /// Probes the given channels once, now, and waits for every verdict.
    /// Returns the probes in the order of `channels`.
    pub async fn check(&self, channels: &[Channel]) -> Result<Vec<ProbeRecord>, EngineError> {
        let ctx = self.probe_context();
        let mut sends = JoinSet::new();
        for (i, ch) in channels.iter().enumerate() {
            let ctx = ctx.clone();
            let config = Arc::clone(&self.config);
            let ch = ch.clone();
            sends.spawn(async move { (i, probe::run(&ctx, &config, &ch).await) });
        }
        let mut started: Vec<Option<Started>> = vec![None; channels.len()];
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok((i, Ok(s))) => started[i] = Some(s),
                Ok((_, Err(e))) => return Err(e.into()),
                Err(e) => return Err(StoreError(format!("probe task failed: {e}")).into()),
            }
        }
        let started: Vec<Started> = started.into_iter().flatten().collect();
        let mut verdicts = self.verdicts.subscribe();
        let mut out: Vec<Option<ProbeRecord>> = vec![None; started.len()];
        loop {
            for (i, s) in started.iter().enumerate() {
                if out[i].is_none() {
                    if let Some(p) = self.store.probe(&s.id).await? {
                        if p.verdict.is_final() {
                            out[i] = Some(p);
                        }
                    }
                }
            }
            if out.iter().all(Option::is_some) {
                return Ok(out.into_iter().flatten().collect());
            }
            tokio::select! {
                _ = verdicts.recv() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// The daemon's main loop: fires every channel on its schedule until
    /// `stop` turns true, then waits for sends in flight (bounded).
    pub async fn run_scheduler(&self, mut stop: watch::Receiver<bool>) {
        let ctx = self.probe_context();
        let mut in_flight = JoinSet::new();
        let mut live = self.live.subscribe();
        let mut config: Arc<Config> = Arc::clone(&live.borrow_and_update());
        let mut queue = schedule_all(&config, &HashMap::new());
        if let Some(Reverse((t, i))) = queue.peek() {
            tracing::info!(channels = config.channels.len(), first = %config.channels[*i].id, at = %t, "scheduler started");
        }
        loop {
            self.scheduler_tick.store(now_millis(), Ordering::Relaxed);
            let next = queue.peek().copied();
            // Wake at least every few seconds so the heartbeat sees a live scheduler.
            let wait = next
                .map(|Reverse((due, _))| (due - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(SCHEDULER_LIVENESS);
            tokio::select! {
                _ = tokio::time::sleep(wait.min(SCHEDULER_LIVENESS)) => {}
                _ = stop.changed() => break,
                changed = live.changed() => {
                    if changed.is_ok() {
                        // A reload: channels whose schedule is unchanged keep their next firing.
                        let kept: HashMap<String, (String, Duration, DateTime<Utc>)> = queue
                            .iter()
                            .map(|Reverse((t, i))| {
                                let c = &config.channels[*i];
                                (c.id.clone(), (c.schedule.to_string(), c.jitter_offset, *t))
                            })
                            .collect();
                        config = Arc::clone(&live.borrow_and_update());
                        queue = schedule_all(&config, &kept);
                        tracing::info!(channels = config.channels.len(), "scheduler took the reloaded config");
                    }
                    continue;
                }
            }
            if *stop.borrow() {
                break;
            }
            let Some(Reverse((due, i))) = next else {
                continue;
            };
            if Utc::now() < due {
                continue;
            }
            queue.pop();
            let ch = &config.channels[i];
            let lateness = (Utc::now() - due).num_milliseconds();
            tracing::debug!(channel = %ch.id, lateness_ms = lateness, "firing");
            let (ctx, cfg, channel) = (ctx.clone(), Arc::clone(&config), ch.clone());
            in_flight.spawn(async move {
                if let Err(e) = probe::run(&ctx, &cfg, &channel).await {
                    tracing::error!(channel = %channel.id, error = %e, "probe could not be recorded");
                }
            });
            while in_flight.try_join_next().is_some() {}
            if let Some(next) = ch.schedule.next_after(due.max(Utc::now()), ch.jitter_offset) {
                queue.push(Reverse((next, i)));
            }
        }
        tracing::info!(
            in_flight = in_flight.len(),
            "scheduler stopping; waiting for sends in flight"
        );
        let drain = async { while in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(30), drain).await.is_err() {
            tracing::warn!("sends still in flight after 30s; their probes stay pending and are resumed on restart");
            in_flight.abort_all();
        }
    }
}

/// The firing queue of a config: each channel's next firing, or the one it
/// had (`kept`: id → (schedule, jitter, next)) when its schedule is unchanged.
fn schedule_all(
    config: &Config,
    kept: &HashMap<String, (String, Duration, DateTime<Utc>)>,
) -> BinaryHeap<Reverse<(DateTime<Utc>, usize)>> {
    let mut queue = BinaryHeap::new();
    let now = Utc::now();
    for (i, ch) in config.channels.iter().enumerate() {
        let keep = kept
            .get(&ch.id)
            .filter(|(schedule, jitter, _)| *schedule == ch.schedule.to_string() && *jitter == ch.jitter_offset)
            .map(|(_, _, t)| *t);
        match keep.or_else(|| ch.schedule.next_after(now, ch.jitter_offset)) {
            Some(t) => queue.push(Reverse((t, i))),
            None => {
                tracing::error!(channel = %ch.id, schedule = %ch.schedule, "schedule has no next firing; channel not scheduled")
            }
        }
    }
    queue
}

/// How often the sweeper may ask one watcher to look again.
const NUDGE_GAP: Duration = Duration::from_secs(1);

/// The watchers that must have looked past a probe's deadline before it can
/// be judged: every watcher, for a probe that must arrive (found in any other
/// watched inbox it is `misrouted`, not `missed`; on servers whose IDLE does
/// not push, such as Courier, that inbox is only read when nudged) or must
/// bounce (a bounce may come back to any of them).
fn needed_for<'a>(p: &'a ProbeRecord, points: &'a WatchPoints) -> Vec<&'a Arc<WatchPoint>> {
    match (p.inbox.as_deref(), p.expect()) {
        (Some(_), _) | (None, crate::config::Expect::Bounce) => points.0.iter().collect(),
        (None, _) => Vec::new(),
    }
}

/// Judges the probes whose deadline has passed — but only those whose
/// watchers have looked after the deadline. A probe whose watcher is blind
/// waits (the watcher is nudged to look as soon as it can); once it has
/// waited the watcher's `blind_grace` it becomes `error`, blaming that inbox
/// (one "postcanary degraded" incident), never `missed`.
pub async fn sweep_watched(
    store: &DynStore,
    verdicts: &VerdictSink,
    points: &WatchPoints,
    run_id: &str,
    now: Millis,
) -> Result<(), StoreError> {
    let due = store.due(now).await?;
    if due.is_empty() {
        return Ok(());
    }
    let mut ready = Vec::new();
    for p in &due {
        let needed = needed_for(p, points);
        // An unsent probe is judged by the send rules alone.
        if p.sent_at.is_none() || watched_past(&needed, p.deadline) {
            ready.push(p.id.clone());
            continue;
        }
        let behind: Vec<&Arc<WatchPoint>> = needed
            .into_iter()
            .filter(|w| w.caught_up_at().is_none_or(|t| t < p.deadline))
            .collect();
        for w in &behind {
            w.nudge(now, NUDGE_GAP);
        }
        let overdue = behind.iter().find(|w| {
            let grace = i64::try_from(w.blind_grace.as_millis()).unwrap_or(i64::MAX);
            now.saturating_sub(p.deadline) >= grace
        });
        if let Some(w) = overdue {
            let why = match w.blind_since() {
                Some((since, why)) => format!(
                    "{why} (blind since {})",
                    chrono::DateTime::from_timestamp_millis(since)
                        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
                        .unwrap_or_default()
                ),
                None => "it has not finished a scan since the deadline".to_string(),
            };
            let j = Judgement {
                verdict: Verdict::Error,
                detail: format!(
                    "inbox `{}` was not watched after the deadline: {why}; whether the probe arrived is unknown",
                    w.name
                ),
                at: now,
                found: None,
                latency_ms: None,
                fault: Some(crate::incident::inbox_path(&w.inbox)),
            };
            tracing::warn!(channel = %p.channel, token = %p.token, inbox = %w.name, "probe not judged: its inbox was not watched");
            crate::ledger::record_with(store, verdicts, &p.id, &p.channel, j).await?;
        }
    }
    if ready.is_empty() {
        return Ok(());
    }
    for p in store.sweep_only(now, run_id, Some(&ready)).await? {
        let detail = p.detail.clone().unwrap_or_default();
        tracing::warn!(channel = %p.channel, token = %p.token, verdict = %p.verdict, %detail, "deadline passed");
        verdicts.report(&p.channel, &p.id, p.verdict, &detail);
    }
    Ok(())
}
