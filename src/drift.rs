//! DNS drift: for every domain a mail channel sends to, the records that
//! decide where its mail goes (MX, SPF, DMARC, MTA-STS) are looked up on an
//! interval and compared with the accepted baseline in the ledger. A change
//! or a disappearance opens a "routing changed" incident and pages at once —
//! before any probe has failed, since a reverted route may still deliver
//! somewhere for a while. The first look records the baseline;
//! `postcanary dns --accept DOMAIN` accepts the current records as the new
//! one. A resolver that cannot answer is our problem, logged, never a change.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{ChannelKind, Config, DnsConfig};
use crate::incident::{decide_dns, dns_key};
use crate::ledger::{DynStore, IncidentChange, StoreError};
use crate::sender::dns::{DnsSnapshot, Resolver};
use crate::verdict::now_millis;

/// The domains mail channels send to, lowercased, each once.
pub fn domains(config: &Config) -> Vec<String> {
    let set: BTreeSet<String> = config
        .channels
        .iter()
        .filter_map(|c| match &c.kind {
            ChannelKind::Mail { to, .. } => Some(to.domain().to_ascii_lowercase()),
            ChannelKind::Form { .. } => None,
        })
        .collect();
    set.into_iter().collect()
}

pub fn resolver(cfg: &DnsConfig) -> Result<Resolver, String> {
    match cfg.nameserver {
        Some(ns) => Ok(Resolver::with_nameserver(ns)),
        None => Resolver::system().map_err(|e| e.to_string()),
    }
}

/// What one look at one domain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// First look: recorded as the baseline.
    Recorded(DnsSnapshot),
    /// The same as the baseline.
    Unchanged,
    /// Differences from the baseline, for people.
    Changed(Vec<String>),
}

/// Compares a fresh snapshot with the stored baseline (recording it on the first look).
pub async fn compare(store: &DynStore, current: &DnsSnapshot) -> Result<Look, StoreError> {
    let baseline = store.dns_baseline(&current.domain).await?;
    let stored = baseline.and_then(|(json, _)| serde_json::from_str::<DnsSnapshot>(&json).ok());
    match stored {
        None => {
            let json = serde_json::to_string(current).unwrap_or_default();
            store.set_dns_baseline(&current.domain, &json, now_millis()).await?;
            Ok(Look::Recorded(current.clone()))
        }
        Some(base) => {
            let changes: Vec<String> = base.diff(current).iter().map(ToString::to_string).collect();
            Ok(if changes.is_empty() {
                Look::Unchanged
            } else {
                Look::Changed(changes)
            })
        }
    }
}

/// Looks at every domain once and applies what it means to incidents.
/// Returns whether pages were queued.
pub async fn check_once(
    config: &Config,
    store: &DynStore,
    resolver: &Resolver,
    source: &str,
) -> Result<bool, StoreError> {
    let mut queued = false;
    for domain in domains(config) {
        let snap = match resolver.snapshot(&domain).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%domain, error = %e, "DNS drift check: no answer; nothing concluded");
                continue;
            }
        };
        let changes = match compare(store, &snap).await? {
            Look::Recorded(_) => {
                tracing::info!(%domain, mx = ?snap.mx, "DNS baseline recorded");
                Vec::new()
            }
            Look::Unchanged => Vec::new(),
            Look::Changed(c) => c,
        };
        let open = store.open_incident(&dns_key(&domain)).await?;
        let action = decide_dns(config, &domain, &changes, open.as_ref(), now_millis(), source);
        let pages = matches!(
            &action,
            crate::ledger::IncidentAction::Open { pages, .. } | crate::ledger::IncidentAction::Resolve { pages, .. } if !pages.is_empty()
        );
        if !changes.is_empty() && open.is_none() {
            tracing::warn!(%domain, changes = %changes.join("; "), "mail routing changed");
        }
        store
            .apply_incident(&IncidentChange {
                probe_id: None,
                reclassify: None,
                action,
            })
            .await?;
        queued |= pages;
    }
    Ok(queued)
}

/// The drift watcher of `run`: checks every `interval` until shutdown.
pub async fn run(
    config: Arc<Config>,
    store: DynStore,
    source: String,
    outbox: crate::outbox::Wake,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(cfg) = config.dns.clone() else { return };
    let resolver = match resolver(&cfg) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "DNS drift watcher cannot set up a resolver; not watching DNS");
            return;
        }
    };
    crate::outbox::every("DNS drift watcher", cfg.interval, outbox, shutdown, || {
        check_once(&config, &store, &resolver, &source)
    })
    .await
}
