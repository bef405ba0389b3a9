//! The outbox: pages are written to the ledger before they are sent, and one
//! worker per notifier sends them in order, retrying with backoff until the
//! notifier accepts. A restart or an outage loses no page; a page is marked
//! sent only after the notifier accepted it, so a crash in between resends it
//! once, which the dedup key makes harmless.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::ledger::DynStore;
use crate::notify::{self, NotifierConfig, NotifierKind, Page};
use crate::sender::{smtp, SendOutcome};
use crate::verdict::now_millis;

/// Why a notifier did not take a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    pub message: String,
    /// Worth trying again (network, 5xx, 429); otherwise the page is given up.
    pub retryable: bool,
}

/// Something that can deliver a page. The real one speaks HTTP or SMTP; tests
/// may put in their own.
#[async_trait]
pub trait Deliver: Send + Sync {
    async fn deliver(&self, n: &NotifierConfig, page: &Page) -> Result<(), DeliveryError>;

    /// The same delivery for a reloaded config (`None`: this one serves any config).
    fn reconfigure(&self, _config: Arc<Config>) -> Option<Arc<dyn Deliver>> {
        None
    }
}

/// Delivers over HTTP (all kinds but e-mail) and SMTP (e-mail).
pub struct RealDelivery {
    config: Arc<Config>,
    client: reqwest::Client,
}

impl RealDelivery {
    pub fn new(config: Arc<Config>) -> Result<RealDelivery, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("postcanary/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(RealDelivery { config, client })
    }

    async fn http(&self, n: &NotifierConfig, page: &Page) -> Result<(), DeliveryError> {
        let req = notify::build_request(n, page).map_err(|m| DeliveryError {
            message: m,
            retryable: false,
        })?;
        let mut builder = self
            .client
            .post(&req.url)
            .timeout(n.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(req.body);
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        // Error texts never carry the URL: for Slack and Teams it is the credential.
        let resp = builder.send().await.map_err(|e| DeliveryError {
            message: format!("request failed: {}", e.without_url()),
            retryable: true,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body: String = resp.text().await.unwrap_or_default().chars().take(300).collect();
        Err(DeliveryError {
            message: format!("HTTP {status}: {}", body.trim()),
            retryable: status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408,
        })
    }

    async fn email(&self, n: &NotifierConfig, page: &Page) -> Result<(), DeliveryError> {
        let fail = |m: String| DeliveryError {
            message: m,
            retryable: false,
        };
        let via = n.via.as_deref().ok_or_else(|| fail("no `via` sender".into()))?;
        let sender = self
            .config
            .sender(via)
            .ok_or_else(|| fail(format!("no sender named {via:?}")))?;
        let (subject, body) = notify::email::message(page);
        for to in &n.to {
            let addr: lettre::Address = to.parse().map_err(|e| fail(format!("invalid address {to:?}: {e}")))?;
            let msg = lettre::Message::builder()
                .from(sender.from.clone())
                .to(lettre::message::Mailbox::new(None, addr.clone()))
                .subject(subject.clone())
                .header(lettre::message::header::ContentType::TEXT_PLAIN)
                .body(body.clone())
                .map_err(|e| fail(format!("cannot build the page mail: {e}")))?;
            match smtp::send(sender, &addr, &msg.formatted()).await {
                SendOutcome::Accepted { .. } => {}
                SendOutcome::Refused { reply } => return Err(fail(format!("{to}: {reply}"))),
                SendOutcome::Deferred { reply } => {
                    return Err(DeliveryError {
                        message: format!("{to}: {reply}"),
                        retryable: true,
                    })
                }
                SendOutcome::OwnSide { error, retryable } => {
                    return Err(DeliveryError {
                        message: error,
                        retryable,
                    })
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Deliver for RealDelivery {
    fn reconfigure(&self, config: Arc<Config>) -> Option<Arc<dyn Deliver>> {
        Some(Arc::new(RealDelivery {
            config,
            client: self.client.clone(),
        }))
    }

    async fn deliver(&self, n: &NotifierConfig, page: &Page) -> Result<(), DeliveryError> {
        match n.kind {
            NotifierKind::Email => self.email(n, page).await,
            _ => self.http(n, page).await,
        }
    }
}

/// Wakes every outbox worker; a wake-up sent while a worker is busy is kept
/// for its next wait, so none is lost.
#[derive(Clone, Default)]
pub struct Wake(Arc<std::sync::Mutex<Vec<Arc<Notify>>>>);

impl Wake {
    pub fn register(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        if let Ok(mut v) = self.0.lock() {
            v.push(Arc::clone(&n));
        }
        n
    }
    pub fn all(&self) {
        if let Ok(v) = self.0.lock() {
            for n in v.iter() {
                n.notify_one();
            }
        }
    }
}

const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Without a wake-up, a worker looks at its queue this often.
const IDLE_CHECK: Duration = Duration::from_secs(1);

fn backoff(attempts: i64) -> Duration {
    let shift = u32::try_from(attempts.clamp(0, 16)).unwrap_or(16);
    (BACKOFF_START * 2u32.saturating_pow(shift)).min(BACKOFF_MAX)
}

/// One notifier's sending loop.
pub struct Worker {
    pub notifier: NotifierConfig,
    pub store: DynStore,
    pub delivery: Arc<dyn Deliver>,
    pub fallback_after: Duration,
    /// This worker's own wake-up.
    pub notified: Arc<Notify>,
    /// Everyone's, to wake the fallback's worker.
    pub wake: Wake,
}

impl Worker {
    /// Sends the head of the queue if it is due. Returns how long to wait
    /// before looking again (`None`: the queue is empty).
    pub async fn step(&self) -> Option<Duration> {
        let name = &self.notifier.name;
        let head = match self.store.outbox_head(name).await {
            Ok(h) => h?,
            Err(e) => {
                tracing::error!(notifier = %name, error = %e, "outbox cannot read the ledger");
                return Some(IDLE_CHECK);
            }
        };
        let now = now_millis();
        if head.next_attempt_at > now {
            return Some(Duration::from_millis(
                u64::try_from(head.next_attempt_at - now).unwrap_or(0),
            ));
        }
        let result = self.delivery.deliver(&self.notifier, &head.page).await;
        let now = now_millis();
        let outcome = match result {
            Ok(()) => {
                tracing::info!(notifier = %name, event = %head.event, dedup_key = %head.dedup_key, "page accepted");
                self.store.page_sent(head.id, now).await
            }
            Err(e) => {
                let wait = backoff(head.attempts);
                let permanent = !e.retryable;
                tracing::warn!(notifier = %name, error = %e.message, attempt = head.attempts + 1, permanent, "page not accepted");
                let next = now + i64::try_from(wait.as_millis()).unwrap_or(60_000);
                let failed = self.store.page_failed(head.id, now, &e.message, next, permanent).await;
                let failing_for =
                    Duration::from_millis(u64::try_from(now - head.first_failed_at.unwrap_or(now)).unwrap_or(0));
                match &self.notifier.fallback {
                    Some(fb) if !head.fallback_done && (permanent || failing_for >= self.fallback_after) => {
                        tracing::warn!(notifier = %name, fallback = %fb, "using the fallback notifier");
                        let r = self.store.page_fallback(head.id, fb, now).await;
                        self.wake.all();
                        failed.and(r)
                    }
                    _ => failed,
                }
            }
        };
        if let Err(e) = outcome {
            tracing::error!(notifier = %name, error = %e, "outbox cannot update the ledger");
        }
        Some(Duration::ZERO)
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let wait = self.step().await.unwrap_or(IDLE_CHECK).min(IDLE_CHECK);
            if wait.is_zero() {
                if *shutdown.borrow() {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.notified.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Starts one worker per configured notifier.
/// Runs `round` now and then every `interval` until `shutdown`, waking the
/// outbox workers after a round that queued pages: the loop of the DNS drift
/// and discovery watchers. A ledger error is logged (`what` names the
/// watcher) and the next round tries again.
pub async fn every<F, Fut>(
    what: &str,
    interval: Duration,
    outbox: Wake,
    mut shutdown: watch::Receiver<bool>,
    mut round: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, crate::ledger::StoreError>>,
{
    loop {
        match round().await {
            Ok(true) => outbox.all(),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "{what} cannot use the ledger"),
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

pub fn spawn_workers(
    config: &Config,
    store: &DynStore,
    delivery: Arc<dyn Deliver>,
    wake: &Wake,
    shutdown: &watch::Sender<bool>,
    tasks: &mut tokio::task::JoinSet<()>,
) {
    let mut seen: HashMap<&str, ()> = HashMap::new();
    for n in &config.notifiers {
        if seen.insert(n.name.as_str(), ()).is_some() {
            continue;
        }
        let worker = Worker {
            notifier: n.clone(),
            store: Arc::clone(store),
            delivery: Arc::clone(&delivery),
            fallback_after: config.paging.fallback_after,
            notified: wake.register(),
            wake: wake.clone(),
        };
        tasks.spawn(worker.run(shutdown.subscribe()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(0), Duration::from_millis(500));
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(30), Duration::from_secs(60));
    }
}
