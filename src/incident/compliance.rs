//! Compliance findings: a delivered canary whose path breaks its channel's
//! policy (`require_tls`, `require_auth`) keeps its verdict — it arrived —
//! and opens the channel's compliance incident (`compliance:CHANNEL`),
//! paged to the channel's notifiers; the next compliant canary of that
//! channel resolves it. Like [`super::decide_dns`], the decision is a pure
//! function; [`Processor::compliance`] feeds it from the ledger.

use super::*;
use crate::compliance::{assess, Assessment, KeptPath, PATH_EVENT};

/// The verdict text of a compliance incident.
pub const COMPLIANCE_BREACH: &str = "compliance_breach";

/// The incident key of a channel's compliance findings.
pub fn compliance_key(channel: &str) -> String {
    format!("compliance:{channel}")
}

impl Subject {
    /// A channel's compliance: the channel's own owner and notifiers.
    pub(super) fn compliance(ch: &Channel) -> Subject {
        Subject {
            channel: compliance_key(&ch.id),
            name: format!("{} (compliance)", ch.name),
            owner: ch.owner.clone(),
            target: target_of(ch),
            notify: ch.notify.clone(),
        }
    }
}

/// The newest path kept with a probe, if any.
pub fn kept_path(events: &[Event]) -> Option<KeptPath> {
    events
        .iter()
        .rev()
        .find(|e| e.kind == PATH_EVENT)
        .and_then(|e| KeptPath::from_event(&e.detail))
}

/// What one arrived canary's assessment means for its channel's compliance incident.
#[allow(clippy::too_many_arguments)]
pub fn decide_compliance(
    config: &Config,
    ch: &Channel,
    probe: &ProbeRecord,
    probe_events: &[Event],
    a: &Assessment,
    open: Option<&Incident>,
    now: Millis,
    source: &str,
) -> IncidentAction {
    let subject = Subject::compliance(ch);
    if a.breaches.is_empty() {
        return match open {
            Some(o) => resolve(
                &subject,
                o,
                &format!("a compliant canary: {}", ch.policy.describe()),
                now,
                source,
            ),
            None => IncidentAction::Nothing,
        };
    }
    let detail = a.finding();
    match open {
        // Every breaching canary counts (`failures`), also with the same finding.
        Some(o) => IncidentAction::Update {
            incident_id: o.id,
            verdict: COMPLIANCE_BREACH.into(),
            detail,
            at: now,
        },
        None => {
            let key = format!("postcanary/compliance/{}/{}", ch.id, probe.id);
            let silence = config.silences.iter().find(|s| s.covers(&ch.id, &ch.owner, now));
            let pages = match silence {
                Some(_) => Vec::new(),
                None => pages(
                    &subject,
                    PageEvent::Trigger,
                    &key,
                    0,
                    COMPLIANCE_BREACH,
                    &detail,
                    now,
                    now,
                    Some(probe.token.clone()),
                    timeline(probe_events),
                    source,
                ),
            };
            IncidentAction::Open {
                channel: compliance_key(&ch.id),
                dedup_key: key,
                verdict: COMPLIANCE_BREACH.into(),
                detail,
                at: now,
                silenced: silence.map(|s| {
                    format!(
                        "maintenance window until {}: {}",
                        crate::notify::rfc3339(s.until),
                        s.reason
                    )
                }),
                pages,
            }
        }
    }
}

/// Whether a verdict says the canary arrived (its path is the channel's).
pub fn arrived(v: Verdict) -> bool {
    matches!(
        v,
        Verdict::Delivered | Verdict::Late | Verdict::Misrouted | Verdict::Junked
    )
}

impl Processor {
    /// The compliance change an arrived canary makes, if its channel has a
    /// policy and its path was kept (a message read without its headers
    /// concludes nothing).
    pub(super) async fn compliance(
        &self,
        ch: &Channel,
        p: &ProbeRecord,
        probe_events: &[Event],
    ) -> Result<Option<IncidentChange>, StoreError> {
        if ch.policy.is_empty() || !arrived(p.verdict) {
            return Ok(None);
        }
        let Some(path) = kept_path(probe_events) else {
            return Ok(None);
        };
        let a = assess(&path, &self.config.our_side(ch), &ch.policy);
        if !a.breaches.is_empty() {
            tracing::warn!(channel = %ch.id, token = %p.token, finding = %a.finding(), "compliance breach");
        }
        let open = self.store.open_incident(&compliance_key(&ch.id)).await?;
        let action = decide_compliance(
            &self.config,
            ch,
            p,
            probe_events,
            &a,
            open.as_ref(),
            now_millis(),
            &self.source,
        );
        Ok(Some(IncidentChange {
            probe_id: None,
            reclassify: None,
            action,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ledger::sqlite::SqliteStore;
    use crate::ledger::{DynStore, NewProbe};
    use crate::verdict::Judgement;

    fn config(channel_keys: &str) -> Result<Config, crate::config::ConfigErrors> {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[defaults]
notify = ["ops"]
require_auth = ["dmarc"]
[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 2525
tls = "none"
from = "canary@kommune.example"
[[notifier]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/ops"
[[channel]]
id = "social-mail"
name = "Social"
kind = "mail"
to = "social@kommune.example"
expect = "bounce"
{channel_keys}
[[channel]]
id = "plain-mail"
name = "Plain"
kind = "mail"
to = "borger@kommune.example"
expect = "bounce"
require_auth = []
"#
        );
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    const PLAIN_HOP: &str = "Authentication-Results: mx.kommune.example; dmarc=pass header.from=kommune.example\r\n\
Received: from relay.kommune.example (localhost [127.0.0.1])\r\n\tby mx.kommune.example (Postfix) with ESMTP id 1; Tue,  2 Dec 2025 10:15:03 +0100\r\n\
Received: from prober (localhost [127.0.0.1])\r\n\tby relay.kommune.example (Postfix) with ESMTP id 2; Tue,  2 Dec 2025 10:15:02 +0100\r\n\r\n";

    fn tls_path() -> String {
        PLAIN_HOP.replacen(
            "with ESMTP id 1",
            "(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)) with ESMTPS id 1",
            1,
        )
    }

    async fn arrive(store: &DynStore, id: &str, created_at: Millis, headers: &str) {
        store
            .insert_probe(&NewProbe {
                id: id.into(),
                token: format!("pc-{id}"),
                channel: "social-mail".into(),
                kind: "mail".into(),
                expect: crate::config::Expect::Deliver,
                inbox: None,
                target: "social@kommune.example".into(),
                created_at,
                deadline: created_at + 60_000,
                run_id: "r".into(),
            })
            .await
            .unwrap();
        store.record_sent(id, created_at, "250 ok").await.unwrap();
        let kept = KeptPath::of(&crate::mailpath::parse(headers.as_bytes()));
        store
            .add_event(id, created_at + 1, PATH_EVENT, &kept.to_event())
            .await
            .unwrap();
        let j = Judgement {
            verdict: Verdict::Delivered,
            detail: "found".into(),
            at: created_at + 2,
            found: None,
            latency_ms: Some(2),
            fault: None,
        };
        assert!(store.judge(id, &j).await.unwrap());
    }

    #[test]
    fn policy_keys_in_defaults_and_channels_with_clear_errors() {
        let c = config("require_tls = \"1.2\"").unwrap();
        let social = c.channel("social-mail").unwrap();
        assert_eq!(social.policy.require_tls, Some(crate::mailpath::TlsVersion::Tls1_2));
        assert_eq!(social.policy.require_auth, vec![crate::compliance::AuthMethod::Dmarc]);
        // `require_auth = []` turns the default off for one channel.
        assert!(c.channel("plain-mail").unwrap().policy.is_empty());
        let e = config("require_tls = \"1.9\"").unwrap_err().to_string();
        assert!(e.contains("channel.require_tls") && e.contains("\"1.9\""), "{e}");
        let e = config("require_auth = [\"dmarc\", \"bimi\"]").unwrap_err().to_string();
        assert!(e.contains("channel.require_auth") && e.contains("bimi"), "{e}");
        let e = config("require_auth = [\"spf\", \"SPF\"]").unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        assert!(config("require_tls = \"none\"")
            .unwrap()
            .channel("social-mail")
            .unwrap()
            .policy
            .require_tls
            .is_none());
    }

    #[tokio::test]
    async fn a_plain_hop_opens_a_compliance_incident_and_a_compliant_canary_resolves_it() {
        let config = Arc::new(config("require_tls = \"1.2\"").unwrap());
        let store: DynStore = Arc::new(SqliteStore::in_memory().unwrap());
        let processor = Processor {
            config: Arc::clone(&config),
            store: Arc::clone(&store),
            source: "t".into(),
            outbox: crate::outbox::Wake::default(),
        };
        arrive(&store, "p1", 1_000, PLAIN_HOP).await;
        assert_eq!(processor.drain().await.unwrap(), 1);
        // Still delivered: it arrived.
        assert_eq!(store.probe("p1").await.unwrap().unwrap().verdict, Verdict::Delivered);
        assert!(store.open_incident("social-mail").await.unwrap().is_none());
        let open = store
            .open_incident("compliance:social-mail")
            .await
            .unwrap()
            .expect("opened");
        assert_eq!(open.verdict, COMPLIANCE_BREACH);
        assert_eq!(
            open.detail,
            "hop relay.kommune.example → mx.kommune.example without TLS"
        );
        let page = store.outbox_head("ops").await.unwrap().expect("paged");
        assert_eq!(page.page.channel, "compliance:social-mail");
        assert_eq!(
            page.page.summary,
            "Social (compliance): compliance_breach - hop relay.kommune.example → mx.kommune.example without TLS"
        );
        let path_line = page.page.timeline.iter().find(|t| t.kind == PATH_EVENT).unwrap();
        assert!(
            path_line
                .detail
                .contains("relay.kommune.example [127.0.0.1] → mx.kommune.example, ESMTP, no TLS"),
            "{}",
            path_line.detail
        );
        store.page_sent(page.id, 2_000).await.unwrap();
        // A second breach counts; a TLS canary resolves and pages the all-clear.
        arrive(&store, "p2", 3_000, PLAIN_HOP).await;
        processor.drain().await.unwrap();
        assert_eq!(
            store
                .open_incident("compliance:social-mail")
                .await
                .unwrap()
                .unwrap()
                .failures,
            2
        );
        arrive(&store, "p3", 5_000, &tls_path()).await;
        processor.drain().await.unwrap();
        assert!(store.open_incident("compliance:social-mail").await.unwrap().is_none());
        let resolve = store.outbox_head("ops").await.unwrap().expect("resolve page");
        assert_eq!(resolve.page.event, PageEvent::Resolve);
        assert_eq!(resolve.page.dedup_key, open.dedup_key);
        // A DMARC fail alone breaks the default `require_auth`.
        arrive(&store, "p4", 7_000, &tls_path().replace("dmarc=pass", "dmarc=fail")).await;
        processor.drain().await.unwrap();
        let open = store.open_incident("compliance:social-mail").await.unwrap().unwrap();
        assert_eq!(open.detail, "DMARC fail at mx.kommune.example");
    }
}
