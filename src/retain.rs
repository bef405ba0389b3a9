//! The retention checker: every due retention check (a row in the ledger,
//! written when its canary was delivered) looks the canary up again where
//! its channel keeps it — a mail folder through `inbox::imap::lookup` or
//! `inbox::graph::lookup`, or a document system over HTTP — and records what it found: `kept`, `lost`
//! (gone) or `altered` (changed). A lost or altered canary opens the
//! channel's retention incident and pages (`incident::retained`). A check
//! that cannot look is our fault, never `lost`: it stays due, is tried again
//! with backoff, and once it has failed for the channel's grace
//! (`incident::retained::retain_grace`) pages "postcanary degraded"; the
//! backoff is capped so that a retry lands at the grace. A check with
//! nothing left to look with (its channel, the channel's `retain` or its
//! canary's probe gone) is closed as `skipped`.
//! Because the checks are ledger rows with their due times, a restart only
//! delays them.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{fill, Channel, Config, HttpExpect, RetainHttp, RetainPlace};
use crate::inbox::imap::{lookup, Lookup};
use crate::incident::degraded_key;
use crate::incident::retained::{decide_retain_fault, decide_retention, retain_grace, retain_path, retention_key};
use crate::ledger::{DynStore, IncidentAction, IncidentChange, ProbeRecord, RetainCheck, RetainResult, StoreError};
use crate::page::rfc3339;
use crate::token::TokenKey;
use crate::verdict::{now_millis, Millis, Verdict};

/// How often the checker looks for due checks.
pub const TICK: Duration = Duration::from_secs(1);
/// Due checks handled per round.
const BATCH: usize = 50;
/// The first retry after a fault of ours; doubled per try up to [`RETRY_MAX`].
const RETRY_START: Duration = Duration::from_secs(2);
const RETRY_MAX: Duration = Duration::from_secs(15 * 60);
/// The most of a document body that is read.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// What one look found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// There; with the content hash when one is compared.
    There { hash: Option<String>, detail: String },
    /// Not there any more.
    Gone(String),
    /// There, but not as it was.
    Changed { hash: Option<String>, detail: String },
}

/// The delay before retry `attempts` (1-based) of a check that failed on our side.
pub fn retry_after(attempts: i64) -> Duration {
    let shift = u32::try_from(attempts.clamp(1, 20) - 1).unwrap_or(0);
    RETRY_START.saturating_mul(1u32 << shift.min(16)).min(RETRY_MAX)
}

/// When a check that failed on our side at `now` (try `attempts`, failing
/// since `since`) is tried next: after the backoff, but no later than
/// `since + grace` while that is still ahead, so that the try that decides
/// the "degraded" page comes at the grace and not at the next doubled delay.
pub fn next_try(now: Millis, since: Millis, attempts: i64, grace: Duration) -> Millis {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4);
    let backoff = now.saturating_add(ms(retry_after(attempts)));
    let at_grace = since.saturating_add(ms(grace));
    if now < at_grace {
        backoff.min(at_grace)
    } else {
        backoff
    }
}

/// The receipt number a form probe kept (`…; receipt R` in its reply).
pub fn receipt_of(p: &ProbeRecord) -> Option<String> {
    let reply = p.smtp_reply.as_deref()?;
    let at = reply.rfind("; receipt ")?;
    let r = reply[at + "; receipt ".len()..].trim();
    (!r.is_empty()).then(|| r.to_string())
}

/// The first content hash recorded for this canary, by the earliest check that kept one.
fn first_hash(checks: &[RetainCheck]) -> Option<String> {
    checks
        .iter()
        .filter(|c| c.state == "done")
        .find_map(|c| c.content_hash.clone())
}

/// When the canary was last seen: the latest earlier check that found it, else its arrival.
fn last_seen(p: &ProbeRecord, checks: &[RetainCheck], this: &RetainCheck) -> Millis {
    checks
        .iter()
        .filter(|c| c.id != this.id && c.state == "done" && c.result.as_deref() != Some("lost"))
        .filter_map(|c| c.checked_at)
        .max()
        .or(p.found_at)
        .unwrap_or(p.created_at)
}

/// Looks a canary up in the mailbox it landed in, over IMAP or Microsoft
/// Graph as the inbox is configured: in the archive folder (and, should the
/// move not have happened yet, the inbox's own folder) or where it landed.
async fn look_mailbox(
    config: &Config,
    ch: &Channel,
    p: &ProbeRecord,
    archive: Option<&str>,
    key: &TokenKey,
) -> Result<Seen, String> {
    let inbox_name = p.found_in.as_deref().or(ch.inbox.as_deref()).unwrap_or_default();
    let inbox = config
        .inbox(inbox_name)
        .ok_or_else(|| format!("inbox {inbox_name:?} is not configured any more"))?;
    let mut folders = Vec::new();
    if let Some(a) = archive {
        folders.push(a.to_string());
    }
    folders.push(inbox.mailbox.clone());
    let place = match archive {
        Some(a) => format!("`{a}` of `{inbox_name}`"),
        None => format!("`{}` of `{inbox_name}`", inbox.mailbox),
    };
    let (found, how) = match inbox.graph_config() {
        Some(graph) => {
            let wanted = crate::inbox::graph::Wanted {
                token: &p.token,
                probe_id: &p.id,
                created_at: p.created_at,
                found_at: p.found_at,
            };
            (
                crate::inbox::graph::lookup(&graph, &folders, &wanted, key).await,
                "Graph",
            )
        }
        None => (lookup(inbox, &folders, &p.token, &p.id, key).await, "IMAP"),
    };
    match found {
        Ok(Lookup::Found { folder, hash }) => Ok(Seen::There {
            hash: Some(hash),
            detail: format!("found in `{folder}` of `{inbox_name}`"),
        }),
        Ok(Lookup::Absent) => Ok(Seen::Gone(format!("not in {place}"))),
        Err(e) => Err(format!("{how} lookup in `{inbox_name}`: {e}")),
    }
}

/// Looks a document up over HTTP. 404/410 and other refusals of the document
/// itself are `Gone`; 5xx, 401/403/407/408/429, timeouts and connection
/// failures are ours (`Err`).
pub async fn look_http(check: &RetainHttp, p: &ProbeRecord) -> Result<Seen, String> {
    let receipt = receipt_of(p);
    let url = match fill(&check.url, &p.token, receipt.as_deref(), true) {
        Ok(u) => u,
        // No receipt kept: nothing to look up by, which is not the document's fault.
        Err(e) => return Err(e),
    };
    let mut builder = reqwest::Client::builder()
        .timeout(check.timeout)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("postcanary/", env!("CARGO_PKG_VERSION"), " (retention check)"));
    if let Some(ca) = &check.ca_file {
        for der in &ca.certs {
            let cert = reqwest::Certificate::from_der(der).map_err(|e| format!("ca_file {}: {e}", ca.path))?;
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let mut req = client.get(&url);
    for (name, value) in &check.headers {
        req = req.header(name.as_str(), value.expose());
    }
    // The URL may hold a receipt number; shown without its query.
    let shown = show_url(&url);
    let mut resp = req
        .send()
        .await
        .map_err(|e| format!("GET {shown}: {}", without_url(&e)))?;
    let status = resp.status().as_u16();
    if status != check.expect_status {
        return match status {
            500..=599 | 401 | 403 | 407 | 408 | 429 => Err(format!("GET {shown}: HTTP {status}")),
            _ => Ok(Seen::Gone(format!(
                "GET {shown} answered HTTP {status}, expected {}",
                check.expect_status
            ))),
        };
    }
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                body.extend_from_slice(&c);
                if body.len() > MAX_BODY {
                    return Err(format!("GET {shown}: the body is over {} MiB", MAX_BODY >> 20));
                }
            }
            Ok(None) => break,
            Err(e) => return Err(format!("GET {shown}: reading the body: {}", without_url(&e))),
        }
    }
    let hash = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    match &check.expect {
        HttpExpect::Status => Ok(Seen::There {
            hash: None,
            detail: format!("GET {shown}: HTTP {status}"),
        }),
        HttpExpect::Sha256 => Ok(Seen::There {
            hash: Some(hash),
            detail: format!("GET {shown}: HTTP {status}, {} bytes", body.len()),
        }),
        HttpExpect::Text(t) => {
            let want = fill(t, &p.token, receipt.as_deref(), false)?;
            if String::from_utf8_lossy(&body).contains(&want) {
                Ok(Seen::There {
                    hash: None,
                    detail: format!("GET {shown}: HTTP {status}, the expected text is there"),
                })
            } else {
                Ok(Seen::Changed {
                    hash: None,
                    detail: format!("GET {shown}: HTTP {status}, but the expected text is not in the document"),
                })
            }
        }
    }
}

fn show_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut url) => {
            url.set_query(None);
            url.set_fragment(None);
            let _ = url.set_password(None);
            let _ = url.set_username("");
            url.to_string()
        }
        Err(_) => "(the check's URL)".into(),
    }
}

/// A reqwest error without the URL it carries (its query may hold a receipt).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "request failed"
    };
    let mut source = std::error::Error::source(e);
    let mut why = String::new();
    while let Some(s) = source {
        why = s.to_string();
        source = s.source();
    }
    if why.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {why}")
    }
}

/// What a check's [`Seen`] becomes, against the first hash kept for its canary.
fn judge(seen: Seen, first: Option<&str>, since: Millis, now: Millis, http: bool) -> (Option<Verdict>, RetainResult) {
    let between = format!("between {} and {}", rfc3339(since), rfc3339(now));
    let (verdict, detail, hash) = match seen {
        Seen::Gone(why) => {
            let what = if http {
                "retained document gone"
            } else {
                "archived canary deleted"
            };
            (Some(Verdict::Lost), format!("{what} {between}: {why}"), None)
        }
        Seen::Changed { hash, detail } => (Some(Verdict::Altered), format!("changed {between}: {detail}"), hash),
        Seen::There { hash, detail } => match (first, &hash) {
            (Some(f), Some(h)) if f != h => (
                Some(Verdict::Altered),
                format!("changed {between}: {detail}, content {h} instead of {f}"),
                hash,
            ),
            _ => (None, detail, hash),
        },
    };
    let result = match verdict {
        Some(v) => v.as_str().to_string(),
        None => "kept".to_string(),
    };
    (
        verdict,
        RetainResult {
            at: now,
            result,
            detail,
            content_hash: hash,
        },
    )
}

/// Runs one due check; returns whether pages were queued.
pub async fn check_one(
    config: &Config,
    store: &DynStore,
    key: &TokenKey,
    check: &RetainCheck,
    source: &str,
) -> Result<bool, StoreError> {
    let now = now_millis();
    let Some(ch) = config.channel(&check.channel) else {
        return skip(store, check, now, "the channel is not configured any more").await;
    };
    let Some(retain) = &ch.retain else {
        return skip(store, check, now, "the channel has no `retain` any more").await;
    };
    let Some(probe) = store.probe(&check.probe_id).await? else {
        return skip(store, check, now, "the canary's probe is not in the ledger any more").await;
    };
    let looked = match &retain.place {
        RetainPlace::Inbox => look_mailbox(config, ch, &probe, None, key).await,
        RetainPlace::Archive(a) => look_mailbox(config, ch, &probe, Some(a), key).await,
        RetainPlace::Http(h) => look_http(h, &probe).await,
    };
    let degraded = store.open_incident(&degraded_key(&retain_path(&ch.id))).await?;
    let seen = match looked {
        Ok(s) => s,
        Err(why) => {
            let attempts = check.attempts + 1;
            // The store keeps the first fault of the run the same way.
            let since = check.fault_since.unwrap_or(now);
            let retry_at = next_try(now, since, attempts, retain_grace(config, ch));
            tracing::warn!(channel = %ch.id, age = %check.age, attempts, error = %why, "retention check could not look; trying again");
            store.retain_fault(check.id, now, &why, retry_at).await?;
            let action = decide_retain_fault(config, ch, Some((&why, since)), degraded.as_ref(), now, source);
            return apply(store, action).await;
        }
    };
    let mut queued = false;
    if degraded.is_some() {
        let action = decide_retain_fault(config, ch, None, degraded.as_ref(), now, source);
        queued |= apply(store, action).await?;
    }
    let checks = store.retain_checks(&probe.id).await?;
    let first = first_hash(&checks);
    let since = last_seen(&probe, &checks, check);
    let http = matches!(retain.place, RetainPlace::Http(_));
    let (verdict, result) = judge(seen, first.as_deref(), since, now, http);
    if !store.retain_record(check.id, &result).await? {
        return Ok(queued);
    }
    match verdict {
        Some(v) => {
            tracing::warn!(channel = %ch.id, age = %check.age, verdict = %v, detail = %result.detail, "retained canary failed its check")
        }
        None => tracing::info!(channel = %ch.id, age = %check.age, detail = %result.detail, "retained canary kept"),
    }
    let open = store.open_incident(&retention_key(&ch.id)).await?;
    let silences = store.silences(Some(now), 1_000).await?;
    let action = decide_retention(
        config,
        ch,
        &probe,
        verdict,
        &result.detail,
        open.as_ref(),
        &silences,
        now,
        source,
    );
    queued |= apply(store, action).await?;
    Ok(queued)
}

/// Closes a check that has nothing left to look with; never a result, never a page.
async fn skip(store: &DynStore, check: &RetainCheck, now: Millis, why: &str) -> Result<bool, StoreError> {
    if store.retain_skip(check.id, now, why).await? {
        tracing::info!(channel = %check.channel, age = %check.age, probe = %check.probe_id, reason = why, "retention check closed as skipped");
    }
    Ok(false)
}

async fn apply(store: &DynStore, action: IncidentAction) -> Result<bool, StoreError> {
    let pages = matches!(
        &action,
        IncidentAction::Open { pages, .. } | IncidentAction::Resolve { pages, .. } if !pages.is_empty()
    );
    if matches!(action, IncidentAction::Nothing) {
        return Ok(false);
    }
    store
        .apply_incident(&IncidentChange {
            probe_id: None,
            reclassify: None,
            action,
        })
        .await?;
    Ok(pages)
}

/// Runs every check due now (a batch at a time); returns whether pages were queued.
pub async fn check_due(config: &Config, store: &DynStore, key: &TokenKey, source: &str) -> Result<bool, StoreError> {
    let mut queued = false;
    for check in store.retain_due(now_millis(), BATCH).await? {
        queued |= check_one(config, store, key, &check, source).await?;
    }
    Ok(queued)
}

/// The checker of `run`: looks for due checks every [`TICK`] until shutdown.
pub async fn run(
    config: Arc<Config>,
    store: DynStore,
    key: TokenKey,
    source: String,
    outbox: crate::outbox::Wake,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    crate::outbox::every("retention checker", TICK, outbox, shutdown, || {
        check_due(&config, &store, &key, &source)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(reply: Option<&str>) -> ProbeRecord {
        ProbeRecord {
            id: "01J".into(),
            token: "pc-01J".into(),
            channel: "c".into(),
            kind: "form".into(),
            expect: "deliver".into(),
            inbox: None,
            target: String::new(),
            created_at: 0,
            sent_at: None,
            deadline: 0,
            verdict: Verdict::Delivered,
            judged_at: None,
            found_in: None,
            found_at: Some(1_000),
            latency_ms: None,
            detail: None,
            smtp_reply: reply.map(str::to_string),
            fault: None,
            vantage: None,
        }
    }

    #[test]
    fn the_receipt_is_read_from_the_form_reply() {
        assert_eq!(
            receipt_of(&probe(Some(
                "form submitted: HTTP 200 at https://x/; receipt SAG-2026/17"
            )))
            .as_deref(),
            Some("SAG-2026/17")
        );
        assert_eq!(receipt_of(&probe(Some("form submitted: HTTP 200"))), None);
        assert_eq!(receipt_of(&probe(None)), None);
    }

    #[test]
    fn retries_back_off_and_are_capped() {
        assert_eq!(retry_after(1), Duration::from_secs(2));
        assert_eq!(retry_after(2), Duration::from_secs(4));
        assert_eq!(retry_after(50), RETRY_MAX);
    }

    #[test]
    fn a_retry_is_capped_at_the_grace_and_backs_off_after_it() {
        let grace = Duration::from_secs(300);
        // Early tries: the plain backoff.
        assert_eq!(next_try(0, 0, 1, grace), 2_000);
        assert_eq!(next_try(6_000, 0, 3, grace), 14_000);
        // 256 s of backoff at +290 s would pass the grace: capped at it.
        assert_eq!(next_try(290_000, 0, 8, grace), 300_000);
        // At or past the grace: the backoff again (the page has been decided).
        assert_eq!(next_try(300_000, 0, 9, grace), 300_000 + 512_000);
        assert_eq!(next_try(1_000_000, 0, 30, grace), 1_000_000 + 900_000);
        // A fault run that began earlier (another try of the same check).
        assert_eq!(next_try(100_000, 50_000, 1, Duration::from_secs(51)), 101_000);
        // No grace: nothing to cap.
        assert_eq!(next_try(10, 10, 1, Duration::ZERO), 2_010);
    }

    #[test]
    fn a_gone_canary_is_lost_and_a_changed_hash_altered() {
        let (v, r) = judge(Seen::Gone("not in `Arkiv`".into()), None, 0, 60_000, false);
        assert_eq!(v, Some(Verdict::Lost));
        assert!(
            r.detail
                .starts_with("archived canary deleted between 1970-01-01T00:00:00.000Z and 1970-01-01T00:01:00.000Z"),
            "{}",
            r.detail
        );
        let there = |h: &str| Seen::There {
            hash: Some(h.into()),
            detail: "found".into(),
        };
        let (v, r) = judge(there("sha256:b"), Some("sha256:a"), 0, 1, true);
        assert_eq!((v, r.result.as_str()), (Some(Verdict::Altered), "altered"));
        let (v, r) = judge(there("sha256:a"), Some("sha256:a"), 0, 1, true);
        assert_eq!((v, r.result.as_str()), (None, "kept"));
        let (v, r) = judge(there("sha256:a"), None, 0, 1, true);
        assert_eq!((v, r.content_hash.as_deref()), (None, Some("sha256:a")));
    }

    #[test]
    fn urls_are_shown_without_query_or_credentials() {
        assert_eq!(
            show_url("https://u:p@sag.example/doc?receipt=1#x"),
            "https://sag.example/doc"
        );
    }

    #[test]
    fn the_retry_schedule_lands_a_try_at_the_grace() {
        use crate::incident::retained::{self, decide_retain_fault};
        use crate::incident::tests::retain_config;
        use crate::ledger::IncidentAction;
        let c = retain_config();
        let kept = c.channel("kept-mail").unwrap().clone();
        let grace = retained::retain_grace(&c, &kept);
        // Follow the schedule of a check that keeps failing from `since`.
        let since = 5_000_000;
        let (mut now, mut attempts, mut tries) = (since, 0, Vec::new());
        let paged_at = loop {
            attempts += 1;
            tries.push(now - since);
            if let IncidentAction::Open { .. } =
                decide_retain_fault(&c, &kept, Some(("refused", since)), None, now, "h")
            {
                break now;
            }
            assert!(attempts < 50, "never paged: {tries:?}");
            now = next_try(now, since, attempts, grace);
        };
        assert_eq!(
            paged_at - since,
            120_000,
            "the page comes at the grace, not at the next doubled delay: {tries:?}"
        );
        // 2, 4, 8, 16, 32 s of backoff, then capped at the grace.
        assert_eq!(tries, [0, 2_000, 6_000, 14_000, 30_000, 62_000, 120_000]);
    }
}
