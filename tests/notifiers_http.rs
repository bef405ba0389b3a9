//! Every notifier through the real delivery path (reqwest / SMTP) against
//! local receivers: what arrives is exactly what the payload builder made.

mod support;

use std::sync::Arc;
use std::time::Duration;

use postcanary::config::{Config, Secret};
use postcanary::notify::{build_request, NotifierConfig, NotifierKind, Page, PageEvent, TimelineEntry};
use postcanary::outbox::{Deliver, RealDelivery};
use support::canary::imap_count;
use support::mailstack::MailStack;
use support::receiver::Receiver;

fn page(event: PageEvent) -> Page {
    Page {
        event,
        dedup_key: "postcanary/social-family-mail/01KB".into(),
        incident_id: 3,
        channel: "social-family-mail".into(),
        channel_name: "Social og Familie (e-mail)".into(),
        owner: "social-og-familie".into(),
        target: "socialogfamilie@kommune.example".into(),
        verdict: "missed".into(),
        detail: "nothing arrived before the deadline".into(),
        summary: "Social og Familie (e-mail): missed - nothing arrived before the deadline".into(),
        opened_at: 1_795_000_000_000,
        at: 1_795_000_001_000,
        probe_token: Some("pc-01KB0000000000000000000000-0123456789abcdef".into()),
        timeline: vec![TimelineEntry {
            at: 1_794_999_000_000,
            kind: "sent".into(),
            detail: "250 2.0.0 Ok".into(),
        }],
        source: "canary-01".into(),
        by: None,
    }
}

fn notifier(kind: NotifierKind, url: String) -> NotifierConfig {
    NotifierConfig {
        name: kind.as_str().into(),
        kind,
        url: Some(url),
        routing_key: Some(Secret::new("routing-key-1")),
        api_key: Some(Secret::new("genie-key-1")),
        secret: Some(Secret::new("hmac-key-1")),
        via: None,
        to: Vec::new(),
        fallback: None,
        timeout: Duration::from_secs(5),
    }
}

fn empty_config() -> Arc<Config> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, "").unwrap();
    Arc::new(Config::load(&p).unwrap())
}

#[tokio::test]
async fn every_http_notifier_delivers_exactly_its_payload() {
    let rx = Receiver::start();
    let delivery = RealDelivery::new(empty_config()).unwrap();
    for kind in [
        NotifierKind::Pagerduty,
        NotifierKind::Opsgenie,
        NotifierKind::Teams,
        NotifierKind::Slack,
        NotifierKind::Webhook,
        NotifierKind::Alertmanager,
    ] {
        for event in [PageEvent::Trigger, PageEvent::Reminder, PageEvent::Resolve] {
            let n = notifier(kind, rx.url(&format!("/{}", kind.as_str())));
            let p = page(event);
            let expected = build_request(&n, &p).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            let before = rx.received().len();
            delivery
                .deliver(&n, &p)
                .await
                .unwrap_or_else(|e| panic!("{kind:?} {event:?}: {e:?}"));
            let got = rx.received();
            assert_eq!(got.len(), before + 1, "{kind:?} {event:?}: one request");
            let r = &got[before];
            assert_eq!(r.method, "POST");
            assert_eq!(rx.url(&r.path), expected.url, "{kind:?} {event:?}");
            assert_eq!(r.body, expected.body, "{kind:?} {event:?}: body as built");
            assert_eq!(r.header("content-type"), Some("application/json"));
            for (k, v) in &expected.headers {
                assert_eq!(r.header(k), Some(v.as_str()), "{kind:?}: header {k}");
            }
            // The body is JSON and names the incident.
            let text = String::from_utf8_lossy(&r.body);
            assert!(
                text.contains("social-family-mail") || kind == NotifierKind::Opsgenie,
                "{kind:?}: {text}"
            );
        }
    }
}

#[tokio::test]
async fn notifier_failures_are_classified() {
    let rx = Receiver::start();
    let delivery = RealDelivery::new(empty_config()).unwrap();
    let n = notifier(NotifierKind::Webhook, rx.url("/hook"));
    rx.set_status(503);
    let e = delivery.deliver(&n, &page(PageEvent::Trigger)).await.unwrap_err();
    assert!(e.retryable && e.message.contains("503"), "{e:?}");
    rx.set_status(429);
    assert!(
        delivery
            .deliver(&n, &page(PageEvent::Trigger))
            .await
            .unwrap_err()
            .retryable
    );
    rx.set_status(400);
    let e = delivery.deliver(&n, &page(PageEvent::Trigger)).await.unwrap_err();
    assert!(!e.retryable, "{e:?}");
    // Nobody listening: retryable, and the URL (a credential for Slack/Teams) is not in the error.
    let dead = notifier(NotifierKind::Slack, "http://127.0.0.1:9/services/SECRETPART".into());
    let e = delivery.deliver(&dead, &page(PageEvent::Trigger)).await.unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(!e.message.contains("SECRETPART"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_notifier_sends_through_its_own_relay() {
    let stack = MailStack::start();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[[sender]]\nname = \"alarm\"\nkind = \"smtp\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
             from = \"postcanary@kommune.example\"\n\n[[notifier]]\nname = \"mail\"\nkind = \"email\"\nvia = \"alarm\"\n\
             to = [\"ops@kommune.example\"]\n",
            stack.smtp_port
        ),
    )
    .unwrap();
    let config = Arc::new(Config::load(&p).unwrap());
    let n = config.notifier("mail").unwrap().clone();
    let delivery = RealDelivery::new(Arc::clone(&config)).unwrap();
    delivery.deliver(&n, &page(PageEvent::Trigger)).await.unwrap();
    let pw = stack.password("ops");
    support::canary::wait_for("the page mail", Duration::from_secs(15), async || {
        (imap_count(stack.imap_port, "ops", &pw, "INBOX") == 1).then_some(())
    })
    .await;
    // A refused recipient is permanent.
    let mut bad = n.clone();
    bad.to = vec!["nobody@kommune.example".into()];
    let e = delivery.deliver(&bad, &page(PageEvent::Trigger)).await.unwrap_err();
    assert!(!e.retryable && e.message.contains("550"), "{e:?}");
}
