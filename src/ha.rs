//! High availability: several `postcanary run` instances on one PostgreSQL
//! ledger (`[ledger] ha = true`), exactly one of them active.
//!
//! The active instance holds the lease, one row of `ha_lease` with a holder,
//! a **generation** (the fencing token, raised by every takeover) and an
//! expiry in the database's own clock. It renews every third of the lease.
//! A standby tries to take the row over every second; it succeeds only once
//! the row has expired, and then starts the whole engine — watchers,
//! sweeper, scheduler, incident processor, outbox — on a store fenced with
//! its new generation (`PostgresStore::fenced`): every write that starts
//! work or decides something checks, in its own transaction, that the
//! generation is still current. A standby runs nothing but this loop and a
//! `/healthz` that says so.
//!
//! The active stops its engine by itself when it has not renewed within the
//! lease less a margin (measured from when it *sent* its last successful
//! renewal, so its own view always ends before the database's), before any
//! standby can take over; a former active that still tries a write after a
//! takeover (cut off, paused, slow) is refused by the fence. Pages are
//! claimed by the fenced `outbox_head`, so a stale instance never gets a
//! page to send.
//!
//! With `[vantage]` the work is split between two leases. Each vantage has
//! its own lease row, `vantage:NAME`, for its probing work — scheduler,
//! watchers, sweeper, status page — so every vantage has one active prober;
//! its store stamps probes with the vantage and sweeps only its own. The
//! paging work — incident processor, outbox workers, reminders, DNS and
//! discovery watchers — runs under the one global lease row `active`, on
//! whichever instance of any vantage holds it, so a page is never doubled.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::watch;

use crate::config::{Config, LedgerBackend};
use crate::engine::Engine;
use crate::ledger::postgres::{pgerr, vantage_lease, Fence, PostgresStore, LEASE_NAME};
use crate::ledger::{DynStore, StoreError, StoreResult};

/// The `/healthz` paging line while the ledger cannot be asked who pages.
const PAGING_UNKNOWN: &str = "paging: unknown (cannot reach the ledger)\n";

/// How often a standby tries to take the lease over.
const ACQUIRE_EVERY: Duration = Duration::from_secs(1);

/// The lease row, seen through one (unfenced) store.
#[derive(Clone)]
pub struct Lease {
    store: PostgresStore,
    /// The lease row: `active`, or a vantage's `vantage:NAME`.
    pub name: String,
    pub holder: String,
    pub lease: Duration,
}

/// Who holds the lease now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub holder: String,
    pub generation: i64,
    pub live: bool,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Lease {
    pub fn new(store: PostgresStore, holder: impl Into<String>, lease: Duration) -> Lease {
        Lease::named(store, LEASE_NAME, holder, lease)
    }

    /// The lease of another row (a vantage's probing lease).
    pub fn named(store: PostgresStore, name: &str, holder: impl Into<String>, lease: Duration) -> Lease {
        Lease {
            store,
            name: name.to_string(),
            holder: holder.into(),
            lease,
        }
    }

    /// Takes the lease if nobody holds a live one; returns the new generation.
    pub async fn try_acquire(&self) -> StoreResult<Option<i64>> {
        let c = self.store.client().await?;
        let row = c
            .query_opt(
                "INSERT INTO ha_lease (name, holder, generation, acquired_at, expires_at) \
                 VALUES ($1, $2, 1, now(), now() + $3::float8 * interval '1 millisecond') \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                   generation = ha_lease.generation + 1, acquired_at = now(), expires_at = excluded.expires_at \
                 WHERE ha_lease.expires_at <= now() \
                 RETURNING generation",
                &[&self.name, &self.holder, &(millis(self.lease) as f64)],
            )
            .await
            .map_err(pgerr)?;
        row.map(|r| r.try_get(0).map_err(pgerr)).transpose()
    }

    /// Extends a live lease of this generation; false when it is gone.
    pub async fn renew(&self, generation: i64) -> StoreResult<bool> {
        let c = self.store.client().await?;
        let n = c
            .execute(
                "UPDATE ha_lease SET expires_at = now() + $4::float8 * interval '1 millisecond' \
                 WHERE name = $1 AND holder = $2 AND generation = $3 AND expires_at > now()",
                &[&self.name, &self.holder, &generation, &(millis(self.lease) as f64)],
            )
            .await
            .map_err(pgerr)?;
        Ok(n == 1)
    }

    /// Gives the lease up at once (a clean stop), so a standby need not wait it out.
    pub async fn release(&self, generation: i64) -> StoreResult<()> {
        let c = self.store.client().await?;
        c.execute(
            "UPDATE ha_lease SET expires_at = now() WHERE name = $1 AND holder = $2 AND generation = $3",
            &[&self.name, &self.holder, &generation],
        )
        .await
        .map_err(pgerr)
        .map(|_| ())
    }

    pub async fn current(&self) -> StoreResult<Option<Holder>> {
        let c = self.store.client().await?;
        let row = c
            .query_opt(
                "SELECT holder, generation, expires_at > now() FROM ha_lease WHERE name = $1",
                &[&self.name],
            )
            .await
            .map_err(pgerr)?;
        row.map(|r| {
            Ok(Holder {
                holder: r.try_get(0).map_err(pgerr)?,
                generation: r.try_get(1).map_err(pgerr)?,
                live: r.try_get(2).map_err(pgerr)?,
            })
        })
        .transpose()
    }

    /// How long before the database's expiry this instance gives up on its own.
    pub fn margin(&self) -> Duration {
        (self.lease / 5).max(Duration::from_secs(1))
    }

    /// Renews every third of the lease until `stop`; returns when the lease
    /// is lost (not renewed within the lease less the margin, or taken).
    /// `since`: when the request that took or last renewed the lease was sent.
    pub async fn hold(&self, generation: i64, since: Instant, mut stop: watch::Receiver<bool>) -> LeaseEnd {
        let every = self.lease / 3;
        let give_up = self.lease.saturating_sub(self.margin());
        let mut renewed_at = since;
        loop {
            let until_give_up = give_up.saturating_sub(renewed_at.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(every.min(until_give_up)) => {}
                _ = stop.changed() => return LeaseEnd::Stopped,
            }
            if *stop.borrow() {
                return LeaseEnd::Stopped;
            }
            if renewed_at.elapsed() >= give_up {
                return LeaseEnd::Lost(format!(
                    "not renewed for {}s (lease {}s)",
                    renewed_at.elapsed().as_secs(),
                    self.lease.as_secs()
                ));
            }
            let sent = Instant::now();
            let left = give_up.saturating_sub(renewed_at.elapsed());
            match tokio::time::timeout(left, self.renew(generation)).await {
                Ok(Ok(true)) => renewed_at = sent,
                Ok(Ok(false)) => return LeaseEnd::Lost("another instance holds the lease".into()),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot renew the lease"),
                Err(_) => tracing::warn!("the lease renewal got no answer"),
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum LeaseEnd {
    Stopped,
    Lost(String),
}

/// This instance's name in the lease: configured, or host name and a random suffix.
fn instance_name(config: &Config) -> String {
    if let Some(name) = config.ledger.ha.as_ref().and_then(|h| h.instance.clone()) {
        return name;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postcanary".to_string());
    let id = ulid::Ulid::new().to_string();
    format!("{host}-{}", &id[id.len() - 6..])
}

/// The standby's HTTP server: `/healthz` says standby and names the active
/// instance; everything else answers 503 (the status page is the active's).
async fn serve_standby(
    listener: tokio::net::TcpListener,
    active: watch::Receiver<Option<Holder>>,
    me: String,
    vantage: Option<String>,
    paging: Option<watch::Receiver<String>>,
    mut shutdown: watch::Receiver<bool>,
) {
    use axum::routing::get;
    let vantage = vantage.map(|v| format!("vantage: {v}\n")).unwrap_or_default();
    let health = {
        let vantage = vantage.clone();
        let active = active.clone();
        let me = me.clone();
        move || {
            let active = active.borrow().clone();
            let paging = paging.as_ref().map(|p| p.borrow().clone()).unwrap_or_default();
            async move {
                let who = match active {
                    Some(h) if h.live => format!("active: {} (generation {})\n", h.holder, h.generation),
                    _ => "active: none (taking over)\n".to_string(),
                };
                crate::server::with_role(
                    StatusCode::OK,
                    format!("ok\n{vantage}role: standby ({me})\n{who}{paging}"),
                    "standby",
                )
            }
        }
    };
    let rest = move || {
        let active = active.borrow().clone();
        async move {
            let who = active.map(|h| h.holder).unwrap_or_else(|| "none".into());
            crate::server::with_role(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("this instance is a standby; the active one is {who}\n"),
                "standby",
            )
        }
    };
    let app = axum::Router::new().route("/healthz", get(health)).fallback(rest);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!(error = %e, "standby HTTP server failed");
    }
}

/// Binds the configured listen address, retrying briefly (the previous
/// server of this process may still be closing).
async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, String> {
    let mut last = String::new();
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("cannot listen on {addr}: {last}"))
}

/// `postcanary run` with `[ledger] ha`: stand by until this instance holds
/// the lease, work while it does, stand by again when it is lost.
pub async fn run(config: Config, stop: impl std::future::Future<Output = ()> + Send + 'static) -> ExitCode {
    let (LedgerBackend::Postgres(pg), Some(ha)) = (config.ledger.backend.clone(), config.ledger.ha.clone()) else {
        tracing::error!("[ledger] ha needs a postgres:// ledger");
        return ExitCode::from(2);
    };
    let base = match PostgresStore::open(&pg).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the ledger");
            return ExitCode::from(1);
        }
    };
    let me = instance_name(&config);
    let vantage = config.vantage.as_ref().map(|v| v.name.clone());
    // With vantages: probing under the vantage's lease, paging under `active`.
    let (base, lease_name) = match &vantage {
        Some(v) => (base.with_vantage(Some(v)), vantage_lease(v)),
        None => (base, LEASE_NAME.to_string()),
    };
    let lease = Lease::named(base.clone(), &lease_name, me.clone(), ha.lease);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    let config = Arc::new(config);
    // With vantages, who pages for all of them, as a `/healthz` line.
    let (paging_tx, paging_rx) = watch::channel(String::new());
    let paging_rx = vantage.is_some().then_some(paging_rx);
    let paging = vantage.is_some().then(|| {
        tokio::spawn(page_while_held(
            Arc::clone(&config),
            Lease::new(base.clone(), me.clone(), ha.lease),
            paging_tx,
            stop_rx.clone(),
        ))
    });
    let stop_paging = || async {
        if let Some(p) = paging {
            let _ = tokio::time::timeout(Duration::from_secs(15), p).await;
        }
    };
    tracing::info!(instance = %me, vantage = vantage.as_deref().unwrap_or(""), lease = %lease_name, lease_s = ha.lease.as_secs(), ledger = %pg.display(), "postcanary standing by for the lease");
    loop {
        let Some((generation, since)) = stand_by(&config, &lease, paging_rx.clone(), stop_rx.clone()).await else {
            stop_paging().await;
            tracing::info!("stopped");
            return ExitCode::SUCCESS;
        };
        tracing::info!(instance = %me, generation, "lease acquired: this instance is active");
        let fenced: DynStore = Arc::new(base.fenced_on(
            &lease_name,
            Fence {
                holder: me.clone(),
                generation,
            },
        ));
        match work(
            &config,
            &lease,
            (generation, since),
            fenced,
            paging_rx.clone(),
            stop_rx.clone(),
        )
        .await
        {
            Ok(LeaseEnd::Stopped) => {
                if let Err(e) = lease.release(generation).await {
                    tracing::warn!(error = %e, "cannot release the lease; a standby takes over when it expires");
                }
                stop_paging().await;
                tracing::info!("stopped");
                return ExitCode::SUCCESS;
            }
            Ok(LeaseEnd::Lost(why)) => {
                tracing::error!(instance = %me, generation, reason = %why, "lease lost: stopped working, standing by");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot work as the active instance; standing by");
                let _ = lease.release(generation).await;
                tokio::time::sleep(ACQUIRE_EVERY).await;
            }
        }
    }
}

/// Waits for the lease, serving the standby `/healthz`; `None` when stopped.
async fn stand_by(
    config: &Config,
    lease: &Lease,
    paging: Option<watch::Receiver<String>>,
    mut stop: watch::Receiver<bool>,
) -> Option<(i64, Instant)> {
    let (active_tx, active_rx) = watch::channel(None);
    let (server_stop_tx, server_stop_rx) = watch::channel(false);
    let server = match &config.server {
        Some(s) => match bind(s.listen).await {
            Ok(l) => Some(tokio::spawn(serve_standby(
                l,
                active_rx,
                lease.holder.clone(),
                config.vantage.as_ref().map(|v| v.name.clone()),
                paging,
                server_stop_rx,
            ))),
            Err(e) => {
                tracing::error!(error = %e, "standby HTTP server not started");
                None
            }
        },
        None => None,
    };
    let mut logged_error = false;
    let got = loop {
        if *stop.borrow() {
            break None;
        }
        let sent = Instant::now();
        match lease.try_acquire().await {
            Ok(Some(g)) => break Some((g, sent)),
            Ok(None) => {
                logged_error = false;
                if let Ok(h) = lease.current().await {
                    let _ = active_tx.send(h);
                }
            }
            Err(e) => {
                if !logged_error {
                    tracing::warn!(error = %e, "cannot reach the ledger to take the lease");
                    logged_error = true;
                }
                let _ = active_tx.send(None);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(ACQUIRE_EVERY) => {}
            _ = stop.changed() => {}
        }
    };
    let _ = server_stop_tx.send(true);
    if let Some(s) = server {
        let _ = tokio::time::timeout(Duration::from_secs(5), s).await;
    }
    got
}

/// Runs the engine while the lease holds; returns why it ended.
async fn work(
    config: &Arc<Config>,
    lease: &Lease,
    (generation, since): (i64, Instant),
    store: DynStore,
    paging: Option<watch::Receiver<String>>,
    stop: watch::Receiver<bool>,
) -> Result<LeaseEnd, StoreError> {
    // The lease is held from here on, also while the engine starts.
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let holder = {
        let lease = lease.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let end = lease.hold(generation, since, stop).await;
            if matches!(end, LeaseEnd::Lost(_)) {
                let _ = lost_tx.send(true);
            }
            end
        })
    };
    let mut engine = match Engine::start_with_store((**config).clone(), store).await {
        Ok(e) => e,
        Err(e) => {
            holder.abort();
            return Err(StoreError(e.to_string()));
        }
    };
    let started = match &config.vantage {
        // The paging runs under its own lease (`page_while_held`).
        Some(v) => {
            engine.role = Some(format!(
                "active ({}, generation {generation}, vantage {})",
                lease.holder, v.name
            ));
            engine.leases = paging;
            engine.start_companions();
            crate::server::start(&mut engine).await
        }
        None => {
            engine.role = Some(format!("active ({}, generation {generation})", lease.holder));
            match crate::outbox::RealDelivery::new(Arc::clone(&engine.config)) {
                Ok(d) => {
                    engine.start_paging(Arc::new(d));
                    crate::server::start(&mut engine).await
                }
                Err(e) => Err(format!("cannot start paging: {e}")),
            }
        }
    };
    if let Err(e) = started {
        engine.stop().await;
        holder.abort();
        return Err(StoreError(e));
    }
    let mut verdicts = engine.verdicts.subscribe();
    let log = tokio::spawn(async move {
        while let Ok(v) = verdicts.recv().await {
            tracing::info!(channel = %v.channel, verdict = %v.verdict, detail = %v.detail, "verdict");
        }
    });
    tracing::info!(run_id = %engine.run_id, channels = engine.config.channels.len(), "postcanary running (active)");
    // A signal stops the scheduler, which finishes the sends in flight; a
    // lost lease drops it at once, sends and all.
    tokio::select! {
        _ = engine.run_scheduler(stop.clone()) => {}
        _ = lost_rx.wait_for(|lost| *lost) => {}
    }
    engine.stop().await;
    log.abort();
    let end = holder
        .await
        .unwrap_or_else(|e| LeaseEnd::Lost(format!("lease task failed: {e}")));
    Ok(end)
}

/// With vantages: the paging work (incident processor, outbox, reminders,
/// DNS and discovery watchers) of all vantages, on whichever instance holds
/// the global `active` lease; its store is fenced on that lease.
/// `shown` gets the `/healthz` line naming who pages.
async fn page_while_held(config: Arc<Config>, lease: Lease, shown: watch::Sender<String>, stop: watch::Receiver<bool>) {
    loop {
        // Take the lease, or wait for it.
        let (generation, since) = loop {
            if *stop.borrow() {
                return;
            }
            let sent = Instant::now();
            match lease.try_acquire().await {
                Ok(Some(g)) => break (g, sent),
                Ok(None) => {
                    let line = match lease.current().await {
                        Ok(Some(h)) if h.live => format!("paging: {} (generation {})\n", h.holder, h.generation),
                        Ok(_) => "paging: none (taking over)\n".to_string(),
                        Err(_) => PAGING_UNKNOWN.to_string(),
                    };
                    shown.send_replace(line);
                }
                Err(e) => {
                    shown.send_replace(PAGING_UNKNOWN.to_string());
                    tracing::debug!(error = %e, "cannot reach the ledger to take the paging lease")
                }
            }
            let mut s = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(ACQUIRE_EVERY) => {}
                _ = s.changed() => {}
            }
        };
        tracing::info!(instance = %lease.holder, generation, "paging lease acquired: this instance pages for every vantage");
        shown.send_replace(format!(
            "paging: this instance ({}, generation {generation})\n",
            lease.holder
        ));
        let store: DynStore = Arc::new(lease.store.fenced(Fence {
            holder: lease.holder.clone(),
            generation,
        }));
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let holder = {
            let lease = lease.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let end = lease.hold(generation, since, stop).await;
                if matches!(end, LeaseEnd::Lost(_)) {
                    let _ = lost_tx.send(true);
                }
                end
            })
        };
        let engine = match Engine::idle_with_store((*config).clone(), store).await {
            Ok(mut e) => match crate::outbox::RealDelivery::new(Arc::clone(&e.config)) {
                Ok(d) => {
                    e.start_paging_only(Arc::new(d));
                    Some(e)
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot start paging");
                    e.stop().await;
                    None
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "cannot start paging");
                None
            }
        };
        let Some(engine) = engine else {
            holder.abort();
            let _ = lease.release(generation).await;
            tokio::time::sleep(ACQUIRE_EVERY).await;
            continue;
        };
        let mut s = stop.clone();
        tokio::select! {
            _ = lost_rx.wait_for(|lost| *lost) => {}
            _ = s.wait_for(|stop| *stop) => {}
        }
        engine.stop().await;
        shown.send_replace("paging: none (this instance lost the lease)\n".to_string());
        match holder.await {
            Ok(LeaseEnd::Lost(why)) => {
                tracing::error!(instance = %lease.holder, generation, reason = %why, "paging lease lost: stopped paging")
            }
            _ => {
                if let Err(e) = lease.release(generation).await {
                    tracing::warn!(error = %e, "cannot release the paging lease");
                }
                return;
            }
        }
    }
}

/// The `ha_lease` row's generation now (for tests and `/healthz`).
pub async fn generation(store: &PostgresStore) -> StoreResult<Option<i64>> {
    let c = store.client().await?;
    let r = c
        .query_opt("SELECT generation FROM ha_lease WHERE name = $1", &[&LEASE_NAME])
        .await
        .map_err(pgerr)?;
    r.map(|r| r.try_get(0).map_err(pgerr)).transpose()
}
