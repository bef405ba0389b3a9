//! Reload without restart (SIGHUP, `POST /api/reload`): the new config is
//! loaded and validated first; on any error the running one stays and the
//! errors are kept for the status page's banner. A valid config is
//! published to every reader of [`Engine::live`]; the scheduler keeps the
//! next firing of every channel whose schedule did not change; the paging
//! tasks (incident processor, outbox workers, DNS drift, discovery) start
//! again with it; and only the inbox watchers whose inbox config changed
//! reconnect. Pending probes and open incidents live in the ledger and are
//! not touched.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Mutex};
use tokio::task::{JoinHandle, JoinSet};

use crate::config::{Config, InboxConfig};
use crate::inbox::imap::WatcherState;
use crate::inbox::watchpoint::WatchPoint;
use crate::inbox::Matcher;
use crate::ledger::DynStore;
use crate::verdict::{now_millis, Millis, VerdictSink};

/// One inbox watcher that can be replaced on its own.
pub(super) struct WatcherSlot {
    pub(super) inbox: InboxConfig,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
    state: watch::Sender<WatcherState>,
    point: Arc<WatchPoint>,
}

/// The paging tasks of one config generation.
pub(super) struct PagingSlot {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

/// What can be replaced at run time.
#[derive(Default)]
pub(super) struct Slots {
    pub(super) watchers: HashMap<String, WatcherSlot>,
    pub(super) paging: Option<PagingSlot>,
    pub(super) delivery: Option<Arc<dyn crate::outbox::Deliver>>,
}

/// The outcome of the last reload, for the page and the API.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct ReloadStatus {
    /// When the last reload was tried; `None`: never since start.
    pub at: Option<Millis>,
    pub ok: bool,
    /// The errors of a refused config (file, line, key, message); empty when it was taken.
    pub errors: Vec<String>,
    /// What changed: watchers reconnected, channels added or removed.
    pub changes: Vec<String>,
}

/// Everything a reload needs, cloneable into the server and the signal task.
#[derive(Clone)]
pub struct Reloader {
    pub(super) live: watch::Sender<Arc<Config>>,
    pub(super) slots: Arc<Mutex<Slots>>,
    pub(super) status: watch::Sender<ReloadStatus>,
    pub(super) store: DynStore,
    pub(super) key: crate::token::TokenKey,
    pub(super) verdicts: VerdictSink,
    pub(super) shutdown: watch::Receiver<bool>,
    /// Serialises reloads: two at once would race over the slots.
    pub(super) busy: Arc<Mutex<()>>,
}

/// The matcher every watcher of a config uses.
pub(super) fn matcher(
    config: &Config,
    store: &DynStore,
    key: &crate::token::TokenKey,
    verdicts: &VerdictSink,
) -> Matcher {
    Matcher {
        store: Arc::clone(store),
        key: key.clone(),
        max_age: config.token.max_age,
        verdicts: verdicts.clone(),
        return_paths: Arc::new(
            config
                .channels
                .iter()
                .filter_map(|c| match &c.kind {
                    crate::config::ChannelKind::Mail { via, .. } => config
                        .sender(via)
                        .and_then(|s| s.bounce_inbox.clone())
                        .map(|b| (c.id.clone(), b)),
                    crate::config::ChannelKind::Form { .. } => None,
                })
                .collect(),
        ),
        retain: Arc::new(
            config
                .channels
                .iter()
                .filter_map(|c| c.retain.clone().map(|r| (c.id.clone(), r)))
                .collect(),
        ),
    }
}

/// Every watcher of a config: one per inbox, one more for a junk folder.
pub(super) fn watcher_configs(config: &Config) -> Vec<InboxConfig> {
    config
        .inboxes
        .iter()
        .flat_map(|i| std::iter::once(i.clone()).chain(i.junk_watcher()))
        .collect()
}

/// Starts one watcher in its own slot.
pub(super) fn spawn_watcher(
    inbox: InboxConfig,
    matcher: Matcher,
    point: Arc<WatchPoint>,
    state: watch::Sender<WatcherState>,
    shutdown: watch::Receiver<bool>,
) -> WatcherSlot {
    let (stop, mut stopped) = watch::channel(false);
    let fut: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match inbox.graph_config() {
        Some(g) => Box::pin(crate::inbox::graph::watch_with(
            g,
            matcher,
            Arc::clone(&point),
            shutdown,
            state.clone(),
        )),
        None => Box::pin(crate::inbox::imap::watch_with(
            inbox.clone(),
            matcher,
            Arc::clone(&point),
            shutdown,
            state.clone(),
        )),
    };
    // A replaced watcher is dropped where it stands, as a crash would: its
    // cursor only ever advanced past what was recorded, so nothing is skipped.
    let handle = tokio::spawn(async move {
        tokio::select! {
            _ = fut => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    });
    WatcherSlot {
        inbox,
        stop,
        handle,
        state,
        point,
    }
}

/// Starts the paging tasks of a config: one outbox worker per notifier,
/// the incident processor, DNS drift and discovery when configured. They
/// stop on the engine's shutdown or when the next generation replaces them.
pub(super) fn spawn_paging(
    config: &Arc<Config>,
    store: &DynStore,
    delivery: Arc<dyn crate::outbox::Deliver>,
    verdicts: &VerdictSink,
    mut shutdown: watch::Receiver<bool>,
    source: &str,
    key: &crate::token::TokenKey,
) -> PagingSlot {
    let (stop, _) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let wake = crate::outbox::Wake::default();
    crate::outbox::spawn_workers(config, store, delivery, &wake, &stop, &mut tasks);
    if config.dns.is_some() {
        tasks.spawn(crate::drift::run(
            Arc::clone(config),
            Arc::clone(store),
            source.to_string(),
            wake.clone(),
            stop.subscribe(),
        ));
    }
    if config.discover.is_some() {
        tasks.spawn(crate::discover_watch::run(
            Arc::clone(config),
            Arc::clone(store),
            source.to_string(),
            wake.clone(),
            stop.subscribe(),
        ));
    }
    // Rollups, slimming and pruning, daily (both ledgers; on HA only the
    // active runs an engine, and its store is fenced).
    tasks.spawn(crate::retention::run(
        Arc::clone(store),
        config.ledger.clone(),
        wake.clone(),
        stop.subscribe(),
    ));
    if config.channels.iter().any(|c| c.retain.is_some()) {
        // Retention canaries: due checks looked up again, lost/altered paged.
        tasks.spawn(crate::retain::run(
            Arc::clone(config),
            Arc::clone(store),
            key.clone(),
            source.to_string(),
            wake.clone(),
            stop.subscribe(),
        ));
    }
    let processor = crate::incident::Processor {
        config: Arc::clone(config),
        store: Arc::clone(store),
        source: source.to_string(),
        outbox: wake,
    };
    tasks.spawn(processor.run(verdicts.clone(), stop.subscribe()));
    // The engine's shutdown stops this generation too.
    let forward = stop.clone();
    tasks.spawn(async move {
        let mut own = forward.subscribe();
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => { let _ = forward.send(true); }
            _ = own.wait_for(|s| *s) => {}
        }
    });
    PagingSlot { stop, tasks }
}

/// Stops a paging generation and waits for it (bounded).
pub(super) async fn stop_paging(mut p: PagingSlot) {
    let _ = p.stop.send(true);
    let drain = async { while p.tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(10), drain).await.is_err() {
        tracing::warn!("paging tasks did not stop within 10s; aborting them");
        p.tasks.abort_all();
    }
}

/// Stops every slot (at engine shutdown), bounded.
pub(super) async fn stop_all(slots: &Mutex<Slots>) {
    let mut s = slots.lock().await;
    if let Some(p) = s.paging.take() {
        stop_paging(p).await;
    }
    for (_, w) in s.watchers.drain() {
        // The engine's shutdown already asked the watcher to end cleanly.
        if tokio::time::timeout(Duration::from_secs(10), w.handle).await.is_err() {
            tracing::warn!(watcher = %w.inbox.watcher_name(), "watcher did not stop within 10s");
        }
    }
}

impl Reloader {
    /// The running config.
    pub fn current(&self) -> Arc<Config> {
        Arc::clone(&self.live.borrow())
    }

    /// The outcome of the last reload.
    pub fn status(&self) -> ReloadStatus {
        self.status.borrow().clone()
    }

    /// Loads the config from `path` (the running config's file when `None`)
    /// and, if it is valid, puts it in force. `actor` is recorded in the audit log.
    pub async fn reload(&self, path: Option<PathBuf>, actor: &str) -> ReloadStatus {
        let _one = self.busy.lock().await;
        let path = path.unwrap_or_else(|| self.current().path.clone());
        let loaded = tokio::task::spawn_blocking(move || Config::load(&path)).await;
        let now = now_millis();
        let new = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(errors)) => {
                let errors: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
                return self.refused(now, actor, errors).await;
            }
            Err(e) => {
                return self
                    .refused(now, actor, vec![format!("the config could not be read: {e}")])
                    .await
            }
        };
        let old = self.current();
        if let Some(why) = not_reloadable(&old, &new) {
            return self.refused(now, actor, vec![why]).await;
        }
        let new = Arc::new(new);
        let changes = self.apply(&old, &new).await;
        let status = ReloadStatus {
            at: Some(now),
            ok: true,
            errors: Vec::new(),
            changes: changes.clone(),
        };
        let summary = if changes.is_empty() {
            "no change that needs a reconnect".to_string()
        } else {
            changes.join("; ")
        };
        tracing::info!(by = actor, %summary, "config reloaded");
        if let Err(e) = self.store.add_audit(now, actor, "reload", "config", &summary).await {
            tracing::error!(error = %e, "the reload could not be written to the audit log");
        }
        self.status.send_replace(status.clone());
        status
    }

    async fn refused(&self, now: Millis, actor: &str, errors: Vec<String>) -> ReloadStatus {
        for e in &errors {
            tracing::error!(by = actor, error = %e, "reload refused; the running config stays");
        }
        let status = ReloadStatus {
            at: Some(now),
            ok: false,
            errors,
            changes: Vec::new(),
        };
        let reason = status.errors.join("; ");
        if let Err(e) = self
            .store
            .add_audit(now, actor, "reload-failed", "config", &reason)
            .await
        {
            tracing::error!(error = %e, "the refused reload could not be written to the audit log");
        }
        self.status.send_replace(status.clone());
        status
    }

    /// Puts a valid config in force; returns what changed, in words.
    async fn apply(&self, old: &Arc<Config>, new: &Arc<Config>) -> Vec<String> {
        let mut changes = Vec::new();
        for ch in &new.channels {
            if old.channel(&ch.id).is_none() {
                changes.push(format!("channel {} added", ch.id));
            }
        }
        for ch in &old.channels {
            match new.channel(&ch.id) {
                None => changes.push(format!("channel {} removed", ch.id)),
                Some(n) if n.schedule.to_string() != ch.schedule.to_string() => {
                    changes.push(format!("channel {} schedule {} → {}", ch.id, ch.schedule, n.schedule))
                }
                Some(_) => {}
            }
        }
        let mut slots = self.slots.lock().await;
        // Publish first: the scheduler and the readers switch at once.
        self.live.send_replace(Arc::clone(new));
        let matcher = matcher(new, &self.store, &self.key, &self.verdicts);
        // The watchers' matcher knows where retained canaries stay: a change
        // of any channel's `retain` reaches them by a reconnect.
        let retain_of = |c: &Config| -> Vec<String> {
            c.channels
                .iter()
                .map(|ch| format!("{}={:?}", ch.id, ch.retain))
                .collect()
        };
        let retain_changed = retain_of(old) != retain_of(new);
        if retain_changed {
            changes.push("retention settings changed: every watcher reconnects".into());
        }
        for inbox in watcher_configs(new) {
            let name = inbox.watcher_name();
            let Some(slot) = slots.watchers.remove(&name) else {
                continue;
            };
            if slot.inbox == inbox && !retain_changed {
                slots.watchers.insert(name, slot);
                continue;
            }
            let _ = slot.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), slot.handle).await;
            slot.state.send_replace(WatcherState::Connecting);
            let fresh = spawn_watcher(inbox, matcher.clone(), slot.point, slot.state, self.shutdown.clone());
            changes.push(format!("watcher {name} reconnects (its inbox config changed)"));
            slots.watchers.insert(name, fresh);
        }
        if let Some(p) = slots.paging.take() {
            stop_paging(p).await;
            let delivery = match &slots.delivery {
                Some(d) => d.reconfigure(Arc::clone(new)).unwrap_or_else(|| Arc::clone(d)),
                None => return changes,
            };
            slots.delivery = Some(Arc::clone(&delivery));
            slots.paging = Some(spawn_paging(
                new,
                &self.store,
                delivery,
                &self.verdicts,
                self.shutdown.clone(),
                &crate::page::hostname(),
                &self.key,
            ));
        }
        changes
    }
}

/// What a reload cannot change while running (the answer names the restart).
fn not_reloadable(old: &Config, new: &Config) -> Option<String> {
    let names = |c: &Config| {
        let mut v: Vec<String> = watcher_configs(c).iter().map(InboxConfig::watcher_name).collect();
        v.sort();
        v
    };
    if names(old) != names(new) {
        return Some(
            "inboxes were added or removed (or a junk folder set or dropped): that needs a restart; \
             the running config stays"
                .into(),
        );
    }
    if old.ledger.backend != new.ledger.backend {
        return Some("[ledger] url changed: that needs a restart; the running config stays".into());
    }
    let listen = |c: &Config| c.server.as_ref().map(|s| s.listen);
    if listen(old) != listen(new) {
        return Some("[server] listen changed: that needs a restart; the running config stays".into());
    }
    let key = |c: &Config| c.token.key.as_ref().map(|k| k.expose().to_string());
    if key(old) != key(new) {
        return Some("[token] key changed: that needs a restart; the running config stays".into());
    }
    if old.heartbeat.is_some() != new.heartbeat.is_some() || old.telemetry.is_some() != new.telemetry.is_some() {
        return Some(
            "[heartbeat] or [telemetry] added or removed: that needs a restart; the running config stays".into(),
        );
    }
    None
}
