//! Inbox watchers. One long-lived watcher per inbox serves every pending
//! probe: it reads each new message, pulls out everything shaped like a
//! token and hands it to the [`Matcher`], which checks the tag and the ledger
//! and records the verdict. The kind-specific part (IMAP now) only knows how
//! to find new messages and act on them.

pub mod graph;
pub mod imap;
pub mod oauth;
pub mod watchpoint;

use std::time::{Duration, SystemTime};

use crate::bounce::{Bounce, BounceKind};
use crate::ledger::record_with;
use crate::ledger::{DynStore, StoreError};
use crate::token::{tokens_in_message, TokenError, TokenKey};
use crate::verdict::{judge_arrival_in, judge_bounce, Judgement, Millis, ProbeFacts, Verdict};

pub use crate::config::Folder;

/// What one message means: a bounce or auto-reply about probes, or an
/// arrival. A bounce carries the original probe (and its token) inside; it
/// must never count as that probe arriving. `arrived` is the mailbox's own
/// arrival time of the message (IMAP INTERNALDATE, Graph receivedDateTime).
pub async fn consider_message(
    matcher: &Matcher,
    inbox: &str,
    folder: &Folder,
    raw: &[u8],
    arrived: Millis,
) -> Result<Vec<TokenFate>, StoreError> {
    if let Some(b) = crate::bounce::parse(raw) {
        return matcher.consider_report(inbox, &b, arrived).await;
    }
    let candidates = tokens_in_message(raw);
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    // The path the message travelled, kept with the probe it proves arrived.
    let path = crate::compliance::KeptPath::of(&crate::mailpath::parse(raw));
    matcher
        .consider_with_path(inbox, folder, &candidates, arrived, Some(&path))
        .await
}

/// At most this many token-shaped strings of one message are looked at: a
/// message stuffed with thousands costs no more than a few.
pub const MAX_CANDIDATES_PER_MESSAGE: usize = 32;

/// What became of one token-shaped string found in a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenFate {
    /// Ours, and it decided the probe's verdict.
    Judged(Verdict),
    /// Ours, but the probe already had its verdict (a second copy, say).
    AlreadyJudged,
    /// The tag verifies but no such probe is in this ledger.
    Unknown,
    /// Not ours: the tag does not verify, or the token is too old.
    Refused(TokenError),
}

impl TokenFate {
    /// Whether the message carrying it belongs to this prober (and may be
    /// moved or deleted after confirmation).
    pub fn is_ours(&self) -> bool {
        matches!(self, TokenFate::Judged(_) | TokenFate::AlreadyJudged)
    }
}

/// Checks tokens against the key and the ledger and records arrivals.
#[derive(Clone)]
pub struct Matcher {
    pub store: DynStore,
    pub key: TokenKey,
    pub max_age: Duration,
    pub verdicts: crate::verdict::VerdictSink,
    /// Channel id → the inbox its sender's bounces return to (`bounce_inbox`),
    /// for channels whose sender names one: their bounces count only there.
    pub return_paths: std::sync::Arc<std::collections::HashMap<String, String>>,
    /// Channel id → its retention canaries (`retain`), for channels that
    /// have them: a delivered canary's checks are written, and the watcher
    /// keeps it where `retain` says instead of `after_confirm`.
    pub retain: std::sync::Arc<std::collections::HashMap<String, crate::config::Retain>>,
}

/// The age as people write it (`7d`, `36h`, `90s`).
fn age_label(d: Duration) -> String {
    crate::config::HumanDuration(d).to_string()
}

/// A delivered canary's retention checks, due at each age after it was found.
pub fn retention_checks(
    probe: &crate::ledger::ProbeRecord,
    retain: &crate::config::Retain,
    found_at: Millis,
) -> Vec<crate::ledger::NewRetainCheck> {
    retain
        .ages
        .iter()
        .map(|&age| {
            let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX / 2);
            crate::ledger::NewRetainCheck {
                probe_id: probe.id.clone(),
                channel: probe.channel.clone(),
                age: age_label(age),
                age_ms,
                due_at: found_at.saturating_add(age_ms),
            }
        })
        .collect()
}

/// A token-shaped string that is not ours, with what it claims to be.
fn refusal_note(inbox: &str, candidate: &str, e: TokenError) -> String {
    format!(
        "foreign message with token {} in `{inbox}` ignored: {e}",
        crate::token::public_form(candidate)
    )
}

impl Matcher {
    /// Where a message of ours must stay for its channel's retention checks:
    /// `Some(None)` in the folder it is in, `Some(Some(folder))` moved to that
    /// archive folder; `None` when `after_confirm` applies (no `retain`, an
    /// HTTP-checked channel, or a canary that was not delivered).
    pub async fn retained_folder(&self, raw: &[u8]) -> Result<Option<Option<String>>, StoreError> {
        if self.retain.is_empty() {
            return Ok(None);
        }
        self.retained_folder_in(&tokens_in_message(raw)).await
    }

    /// [`Matcher::retained_folder`] for the token-shaped strings already found in a message.
    pub async fn retained_folder_in(&self, candidates: &[String]) -> Result<Option<Option<String>>, StoreError> {
        if self.retain.is_empty() {
            return Ok(None);
        }
        for candidate in candidates.iter().take(MAX_CANDIDATES_PER_MESSAGE) {
            let Ok(token) = self.key.verify(candidate, SystemTime::now(), self.max_age) else {
                continue;
            };
            let Some(probe) = self.store.probe(&token.id()).await? else {
                continue;
            };
            let Some(place) = self.retain.get(&probe.channel).and_then(|r| r.place.folder()) else {
                continue;
            };
            if probe.verdict == Verdict::Delivered {
                return Ok(Some(place.map(str::to_string)));
            }
        }
        Ok(None)
    }

    /// Considers every token-shaped string of one message seen in `inbox` at `seen_at`.
    pub async fn consider(
        &self,
        inbox: &str,
        candidates: &[String],
        seen_at: Millis,
    ) -> Result<Vec<TokenFate>, StoreError> {
        self.consider_in(inbox, &Folder::Main, candidates, seen_at).await
    }

    /// [`Matcher::consider`] for a message found in a given folder of `inbox`.
    pub async fn consider_in(
        &self,
        inbox: &str,
        folder: &Folder,
        candidates: &[String],
        seen_at: Millis,
    ) -> Result<Vec<TokenFate>, StoreError> {
        self.consider_with_path(inbox, folder, candidates, seen_at, None).await
    }

    /// [`Matcher::consider_in`] with the message's path: an arrival it
    /// decides keeps the path as the probe's `path` event, written before
    /// the verdict so that whoever handles the verdict finds it.
    pub async fn consider_with_path(
        &self,
        inbox: &str,
        folder: &Folder,
        candidates: &[String],
        seen_at: Millis,
        path: Option<&crate::compliance::KeptPath>,
    ) -> Result<Vec<TokenFate>, StoreError> {
        let mut fates = Vec::with_capacity(candidates.len().min(MAX_CANDIDATES_PER_MESSAGE));
        for c in candidates.iter().take(MAX_CANDIDATES_PER_MESSAGE) {
            fates.push(self.consider_one(inbox, folder, c, seen_at, path).await?);
        }
        let refused = fates.iter().filter(|f| matches!(f, TokenFate::Refused(_))).count();
        if refused > 0 {
            // One line per message, however many strings it carries.
            tracing::debug!(
                inbox,
                refused,
                shaped = candidates.len(),
                "token-shaped strings that are not ours"
            );
        }
        Ok(fates)
    }

    /// A bounce, delay notice or auto-reply: a failure report ends its
    /// probes at once (`bounced`, or `expected_bounce` for an address that
    /// must bounce); the others are kept as evidence only.
    pub async fn consider_report(
        &self,
        inbox: &str,
        b: &Bounce,
        seen_at: Millis,
    ) -> Result<Vec<TokenFate>, StoreError> {
        let mut fates = Vec::new();
        for candidate in b.tokens.iter().take(MAX_CANDIDATES_PER_MESSAGE) {
            let Some((token, probe)) = self.lookup(inbox, candidate).await? else {
                continue;
            };
            if let Some(home) = self.return_paths.get(&probe.channel).filter(|home| *home != inbox) {
                // Not the way this probe's bounces come back: evidence, not a verdict.
                let note = format!(
                    "bounce report found in `{inbox}`, not in the return path `{home}`: {}",
                    b.reason
                );
                self.store.add_event(&probe.id, seen_at, "foreign", &note).await?;
                tracing::warn!(inbox, channel = %probe.channel, token = %token.public(), "{note}");
                fates.push(TokenFate::AlreadyJudged);
                continue;
            }
            let facts = ProbeFacts {
                verdict: probe.verdict,
                expect: probe.expect(),
                inbox: probe.inbox.as_deref(),
                sent_at: probe.sent_at,
                created_at: probe.created_at,
                deadline: probe.deadline,
            };
            let judged = match b.kind {
                BounceKind::Failed => judge_bounce(&facts, &b.reason, seen_at),
                other => {
                    let kind = match other {
                        BounceKind::AutoReply => "auto-reply",
                        BounceKind::Delayed => "dsn-delayed",
                        _ => "dsn",
                    };
                    self.store.add_event(&probe.id, seen_at, kind, &b.reason).await?;
                    tracing::info!(inbox, channel = %probe.channel, token = %token.public(), kind, reason = %b.reason, "report about a probe");
                    fates.push(TokenFate::AlreadyJudged);
                    continue;
                }
            };
            fates.push(self.record_judgement(inbox, &probe, token.as_str(), judged).await?);
        }
        Ok(fates)
    }

    /// Verifies a candidate and finds its probe; `None` (logged) if it is not ours.
    async fn lookup(
        &self,
        inbox: &str,
        candidate: &str,
    ) -> Result<Option<(crate::token::Token, crate::ledger::ProbeRecord)>, StoreError> {
        let token = match self.key.verify(candidate, SystemTime::now(), self.max_age) {
            Ok(t) => t,
            Err(e) => {
                self.note_foreign(inbox, candidate, e).await?;
                return Ok(None);
            }
        };
        match self.store.probe(&token.id()).await? {
            Some(p) => Ok(Some((token, p))),
            None => {
                tracing::info!(inbox, token = %token.public(), "token verifies but is not in this ledger");
                Ok(None)
            }
        }
    }

    /// A token-shaped string whose tag does not verify: a copied or forged
    /// token. If it names one of our probes, that probe keeps it as evidence
    /// (and it is logged, once per probe); it never changes a verdict.
    async fn note_foreign(&self, inbox: &str, candidate: &str, e: TokenError) -> Result<(), StoreError> {
        if e != TokenError::BadTag {
            return Ok(());
        }
        let Some(id) = crate::token::claimed_id(candidate) else {
            return Ok(());
        };
        let Some(probe) = self.store.probe(&id).await? else {
            return Ok(());
        };
        let note = refusal_note(inbox, candidate, e);
        let events = self.store.events(&probe.id).await?;
        if events.iter().any(|ev| ev.kind == "foreign" && ev.detail == note) {
            return Ok(());
        }
        self.store
            .add_event(&probe.id, crate::verdict::now_millis(), "foreign", &note)
            .await?;
        tracing::warn!(inbox, channel = %probe.channel, token = %probe.token, "{note}");
        Ok(())
    }

    async fn record_judgement(
        &self,
        inbox: &str,
        probe: &crate::ledger::ProbeRecord,
        token: &str,
        judged: Option<Judgement>,
    ) -> Result<TokenFate, StoreError> {
        let Some(j) = judged else {
            return Ok(TokenFate::AlreadyJudged);
        };
        let verdict = j.verdict;
        crate::telemetry::probe_step(
            &probe.id,
            "token_found",
            vec![
                opentelemetry::KeyValue::new("postcanary.inbox", inbox.to_string()),
                opentelemetry::KeyValue::new("postcanary.verdict", verdict.as_str()),
            ],
        );
        let changed = record_with(&self.store, &self.verdicts, &probe.id, &probe.channel, j).await?;
        if changed {
            tracing::info!(inbox, channel = %probe.channel, token = %crate::token::public_form(token), %verdict, "token found");
            Ok(TokenFate::Judged(verdict))
        } else {
            Ok(TokenFate::AlreadyJudged)
        }
    }

    async fn consider_one(
        &self,
        inbox: &str,
        folder: &Folder,
        candidate: &str,
        seen_at: Millis,
        path: Option<&crate::compliance::KeptPath>,
    ) -> Result<TokenFate, StoreError> {
        let token = match self.key.verify(candidate, SystemTime::now(), self.max_age) {
            Ok(t) => t,
            Err(e) => {
                self.note_foreign(inbox, candidate, e).await?;
                return Ok(TokenFate::Refused(e));
            }
        };
        let Some(probe) = self.store.probe(&token.id()).await? else {
            tracing::info!(inbox, token = %token.public(), "token verifies but is not in this ledger");
            return Ok(TokenFate::Unknown);
        };
        let expect = probe.expect();
        let facts = ProbeFacts {
            verdict: probe.verdict,
            expect,
            inbox: probe.inbox.as_deref(),
            sent_at: probe.sent_at,
            created_at: probe.created_at,
            deadline: probe.deadline,
        };
        let junk = match folder {
            Folder::Main => None,
            Folder::Junk(name) => Some(name.as_str()),
        };
        let judged = judge_arrival_in(&facts, inbox, junk, seen_at);
        if let (Some(j), Some(retain)) = (&judged, self.retain.get(&probe.channel)) {
            // Written before the verdict: a delivered canary never lacks its checks.
            if j.verdict == Verdict::Delivered {
                let found_at = j.found.as_ref().map_or(seen_at, |f| f.at);
                self.store
                    .retain_schedule(&retention_checks(&probe, retain, found_at))
                    .await?;
            }
        }
        if let (Some(j), Some(path)) = (&judged, path) {
            if matches!(
                j.verdict,
                Verdict::Delivered | Verdict::Late | Verdict::Misrouted | Verdict::Junked
            ) {
                self.store
                    .add_event(&probe.id, seen_at, crate::compliance::PATH_EVENT, &path.to_event())
                    .await?;
            }
        }
        self.record_judgement(inbox, &probe, token.as_str(), judged).await
    }
}
