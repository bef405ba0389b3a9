//! The daemon's discovery watcher: every `[discover] interval` it crawls the
//! configured sites (as `postcanary discover` does) and turns what no channel
//! probes into incidents of their own kind — one per published address or
//! form nobody probes, and one per look-alike address that the domain's MX
//! accepts at RCPT time. A finding that is gone (unpublished, or probed now)
//! resolves its incident. A crawl that fails concludes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, DiscoverConfig};
use crate::discover::{crawl, report::Report, Limits};
use crate::incident::{decide_discover, discover_key};
use crate::ledger::{DynStore, IncidentAction, IncidentChange, StoreError};
use crate::verdict::now_millis;

/// The crawl budget of one round.
fn limits(cfg: &DiscoverConfig) -> Limits {
    Limits {
        max_pages: cfg.max_pages,
        max_depth: 5,
        max_bytes: 10 * 1024 * 1024,
        max_total_bytes: 500 * 1024 * 1024,
        max_decompressed: 64 * 1024 * 1024,
        delay: Duration::from_millis(500),
        timeout: Duration::from_secs(20),
        allow_hosts: cfg.allow_hosts.clone(),
        idp_hosts: Vec::new(),
        contact: crawl::DEFAULT_CONTACT.to_string(),
    }
}

/// The findings of one report that need an incident: finding key → detail.
pub fn findings(report: &Report) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let pages = |sources: &[crawl::Source]| {
        let mut urls: Vec<&str> = sources.iter().map(|s| s.url.as_str()).collect();
        urls.dedup();
        let more = urls.len().saturating_sub(3);
        let mut text = urls.into_iter().take(3).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    for a in report.unmonitored_addresses() {
        out.insert(
            format!("addr:{}", a.address),
            format!(
                "unmonitored channel published on {}: {} — no channel probes it",
                pages(&a.found_on),
                a.address
            ),
        );
    }
    for f in report.unmonitored_forms() {
        out.insert(
            format!("form:{}", f.form.action),
            format!(
                "unmonitored form published on {}: {} {} — no channel submits it",
                pages(&f.form.pages),
                f.form.method,
                f.form.action
            ),
        );
    }
    for l in &report.lookalikes {
        let accepted = report
            .addresses
            .iter()
            .find(|a| a.address == l.address)
            .and_then(|a| a.rcpt.as_ref())
            .is_some_and(|r| r.answer == "accepted");
        if accepted && !l.covered {
            out.insert(
                format!("lookalike:{}", l.address),
                format!(
                    "look-alike {} of {} is accepted at RCPT time and not probed with expect = \"bounce\" or \"forward\"",
                    l.address, l.resembles
                ),
            );
        }
    }
    out
}

/// One round: crawl, compare, open and resolve incidents. Returns whether pages were queued.
pub async fn check_once(config: &Config, store: &DynStore, source: &str) -> Result<bool, StoreError> {
    let Some(cfg) = &config.discover else {
        return Ok(false);
    };
    let found = match crawl::crawl(&cfg.sites, &limits(cfg)).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "discovery: the crawl failed; nothing concluded");
            return Ok(false);
        }
    };
    let mut report = Report::build(&cfg.sites, found, Some(config));
    if let Some(sender) = cfg.rcpt_check.as_deref().and_then(|n| config.sender(n)) {
        report.rcpt_check(sender).await;
    }
    let now = findings(&report);
    let mut queued = false;
    let mut keys: Vec<(String, Option<String>)> = now.iter().map(|(k, d)| (k.clone(), Some(d.clone()))).collect();
    for open in store.open_incidents().await? {
        if let Some(finding) = open.channel.strip_prefix("discover:") {
            if !now.contains_key(finding) {
                keys.push((finding.to_string(), None));
            }
        }
    }
    for (finding, detail) in keys {
        let open = store.open_incident(&discover_key(&finding)).await?;
        let action = decide_discover(config, &finding, detail.as_deref(), open.as_ref(), now_millis(), source);
        if let IncidentAction::Open { detail, .. } = &action {
            tracing::warn!(%finding, %detail, "discovery: unmonitored public channel");
        }
        queued |= matches!(
            &action,
            IncidentAction::Open { pages, .. } | IncidentAction::Resolve { pages, .. } if !pages.is_empty()
        );
        store
            .apply_incident(&IncidentChange {
                probe_id: None,
                reclassify: None,
                action,
            })
            .await?;
    }
    Ok(queued)
}

/// The watcher of `run`: a round every `interval` until shutdown.
pub async fn run(
    config: Arc<Config>,
    store: DynStore,
    source: String,
    outbox: crate::outbox::Wake,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(interval) = config.discover.as_ref().map(|d| d.interval) else {
        return;
    };
    crate::outbox::every("discovery watcher", interval, outbox, shutdown, || {
        check_once(&config, &store, &source)
    })
    .await
}
