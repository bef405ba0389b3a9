//! Inbox watchers. One long-lived watcher per inbox serves every pending
//! probe: it reads each new message, pulls out everything shaped like a
//! token and hands it to the [`Matcher`], which checks the tag and the ledger
//! and records the verdict. The kind-specific part (IMAP now) only knows how
//! to find new messages and act on them.

pub mod graph;
pub mod imap;
pub mod oauth;

use std::time::{Duration, SystemTime};

use crate::ledger::{DynStore, StoreError};
use crate::probe::record_with;
use crate::token::{find_candidates, TokenError, TokenKey};
use crate::verdict::{judge_arrival, Millis, ProbeFacts, Verdict};

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
    pub verdicts: crate::engine::VerdictSink,
}

impl Matcher {
    /// Considers every token-shaped string of one message seen in `inbox` at `seen_at`.
    pub async fn consider(
        &self,
        inbox: &str,
        candidates: &[String],
        seen_at: Millis,
    ) -> Result<Vec<TokenFate>, StoreError> {
        let mut fates = Vec::with_capacity(candidates.len());
        for c in candidates {
            fates.push(self.consider_one(inbox, c, seen_at).await?);
        }
        Ok(fates)
    }

    async fn consider_one(&self, inbox: &str, candidate: &str, seen_at: Millis) -> Result<TokenFate, StoreError> {
        let token = match self.key.verify(candidate, SystemTime::now(), self.max_age) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(inbox, candidate, reason = %e, "ignoring token that is not ours");
                return Ok(TokenFate::Refused(e));
            }
        };
        let Some(probe) = self.store.probe_by_token(token.as_str()).await? else {
            tracing::info!(inbox, token = %token, "token verifies but is not in this ledger");
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
        let Some(j) = judge_arrival(&facts, inbox, seen_at) else {
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
            tracing::info!(inbox, channel = %probe.channel, token = %token, %verdict, "token found");
            Ok(TokenFate::Judged(verdict))
        } else {
            Ok(TokenFate::AlreadyJudged)
        }
    }
}

/// Every token-shaped string in a raw message: in the raw bytes (headers,
/// plain bodies) and in the decoded subject and text/HTML parts (quoted-
/// printable or base64 bodies, encoded-word subjects). Never fails: broken
/// or hostile content just yields fewer candidates.
pub fn tokens_in_message(raw: &[u8]) -> Vec<String> {
    let mut out = find_candidates(raw);
    // mail-parser's accessors index parts[0]; a broken message may have none.
    if let Some(msg) = mail_parser::MessageParser::default()
        .parse(raw)
        .filter(|m| !m.parts.is_empty())
    {
        let mut add = |text: &str| {
            for c in find_candidates(text.as_bytes()) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        };
        if let Some(s) = msg.subject() {
            add(s);
        }
        for i in 0..msg.text_body.len() {
            if let Some(t) = msg.body_text(i) {
                add(&t);
            }
        }
        for i in 0..msg.html_body.len() {
            if let Some(h) = msg.body_html(i) {
                add(&h);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "pc-01JD0000000000000000000000-0123456789abcdef";

    #[test]
    fn finds_tokens_in_encoded_bodies_and_subjects() {
        let b64 = "VG9rZW46IHBjLTAxSkQwMDAwMDAwMDAwMDAwMDAwMDAwMDAwLTAxMjM0NTY3ODlhYmNkZWYK"; // "Token: <T>\n"
        let raw =
            format!("Subject: hello\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n");
        assert_eq!(tokens_in_message(raw.as_bytes()), vec![T.to_string()]);

        let subject = "Subject: =?utf-8?q?Formular_pc-01JD0000000000000000000000-0123456789abcdef?=\r\n\r\nbody\r\n";
        assert_eq!(tokens_in_message(subject.as_bytes()), vec![T.to_string()]);

        let qp_html = "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                       <p class=3D\"t\">pc-01JD00000000000=\r\n00000000000-0123456789abcdef</p>\r\n";
        assert_eq!(tokens_in_message(qp_html.as_bytes()), vec![T.to_string()]);
    }

    #[test]
    fn hostile_content_yields_nothing_and_does_not_panic() {
        for raw in [
            &b""[..],
            b"\xff\xfe\x00garbage",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n",
            b"Subject: =?utf-8?b?!!!!?=\r\n\r\n",
        ] {
            assert!(tokens_in_message(raw).is_empty());
        }
        let deep = "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n".repeat(2000);
        let _ = tokens_in_message(deep.as_bytes());
    }
}
