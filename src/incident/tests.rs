//! The incident rules, and the incident + outbox flow through a real store
//! with an in-process notifier.

use std::sync::{Arc, Mutex};

use super::*;
use crate::ledger::sqlite::SqliteStore;
use crate::outbox::{Deliver, DeliveryError, Wake, Worker};

fn config(extra: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[defaults]
notify = ["ops"]
[paging]
reminder_interval = "1h"
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
[[notifier]]
name = "social-team"
kind = "webhook"
url = "http://127.0.0.1:9/social"
fallback = "ops"
[[owner]]
name = "social"
notify = ["social-team"]
[[channel]]
id = "social-mail"
name = "Social"
owner = "social"
kind = "mail"
to = "social@kommune.example"
expect = "bounce"
[[channel]]
id = "borger-mail"
name = "Borger"
kind = "mail"
to = "borger@kommune.example"
expect = "bounce"
notify = ["ops", "social-team"]
[[channel]]
id = "canary-self"
name = "Control"
kind = "mail"
to = "canary@kommune.example"
expect = "bounce"
{extra}
"#
    );
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    // The control channel must expect delivery; the test config has no inbox, so set it here.
    if let Some(ch) = c.channels.iter_mut().find(|c| c.id == "canary-self") {
        ch.control = true;
    }
    c
}

fn probe(id: &str, channel: &str, verdict: Verdict) -> ProbeRecord {
    ProbeRecord {
        id: id.into(),
        token: format!("pc-{id}"),
        channel: channel.into(),
        kind: "mail".into(),
        expect: "deliver".into(),
        inbox: Some("social".into()),
        target: "x@kommune.example".into(),
        created_at: 1_000,
        sent_at: Some(1_100),
        deadline: 61_000,
        verdict,
        judged_at: Some(61_000),
        found_in: None,
        found_at: None,
        latency_ms: None,
        detail: Some(format!("{verdict} detail")),
        smtp_reply: Some("250 ok".into()),
        fault: None,
        vantage: None,
    }
}

fn facts<'a>(p: &'a ProbeRecord, ch: Option<&'a Incident>, d: Option<&'a Incident>) -> VerdictFacts<'a> {
    VerdictFacts {
        probe: p,
        probe_events: &[],
        channel_incident: ch,
        degraded_incident: d,
        inbox_incident: None,
        newest_success: None,
        newest_failure: None,
        silences: &[],
    }
}

fn incident(id: i64, channel: &str, paged: bool) -> Incident {
    Incident {
        id,
        channel: channel.into(),
        dedup_key: format!("postcanary/{channel}/x"),
        opened_at: 50_000,
        opened_by: Some("p0".into()),
        verdict: "missed".into(),
        detail: "d".into(),
        failures: 1,
        last_failure_at: 50_000,
        paged,
        last_paged_at: paged.then_some(50_000),
        silenced: None,
        resolved_at: None,
        resolved_by: None,
        acknowledged_at: None,
        acknowledged_by: None,
        escalations: 0,
    }
}

#[test]
fn first_failure_opens_and_pages_the_owners_notifiers() {
    let c = config("");
    let ch = c.channel("social-mail").unwrap();
    let p = probe("p1", "social-mail", Verdict::Missed);
    let changes = decide(&c, ch, &facts(&p, None, None), 70_000, "host");
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].probe_id.as_deref(), Some("p1"));
    match &changes[0].action {
        IncidentAction::Open {
            channel,
            dedup_key,
            pages,
            silenced,
            ..
        } => {
            assert_eq!(channel, "social-mail");
            assert_eq!(dedup_key, "postcanary/social-mail/p1");
            assert!(silenced.is_none());
            let to: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(to, vec!["social-team"], "owner route");
            assert_eq!(pages[0].1.event, PageEvent::Trigger);
            assert_eq!(pages[0].1.probe_token.as_deref(), Some("pc-p1"));
        }
        other => panic!("{other:?}"),
    }
    // A channel's own notify list wins over its owner's and the defaults.
    let ch = c.channel("borger-mail").unwrap();
    let p = probe("p2", "borger-mail", Verdict::Rejected);
    match &decide(&c, ch, &facts(&p, None, None), 70_000, "host")[0].action {
        IncidentAction::Open { pages, .. } => assert_eq!(pages.len(), 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn further_failures_update_and_success_resolves_once() {
    let c = config("");
    let ch = c.channel("social-mail").unwrap();
    let open = incident(3, "social-mail", true);
    let p = probe("p2", "social-mail", Verdict::Misrouted);
    assert!(matches!(
        decide(&c, ch, &facts(&p, Some(&open), None), 80_000, "h")[0].action,
        IncidentAction::Update { incident_id: 3, .. }
    ));
    let ok = probe("p3", "social-mail", Verdict::Delivered);
    match &decide(&c, ch, &facts(&ok, Some(&open), None), 90_000, "h")[0].action {
        IncidentAction::Resolve { incident_id, pages, .. } => {
            assert_eq!(*incident_id, 3);
            assert_eq!(pages.len(), 1);
            assert_eq!(pages[0].1.event, PageEvent::Resolve);
            assert_eq!(
                pages[0].1.dedup_key, open.dedup_key,
                "resolve uses the trigger's dedup key"
            );
        }
        other => panic!("{other:?}"),
    }
    // Success without an incident: nothing.
    assert!(matches!(
        decide(&c, ch, &facts(&ok, None, None), 90_000, "h")[0].action,
        IncidentAction::Nothing
    ));
    // An incident nobody was paged for resolves silently.
    let quiet = incident(4, "social-mail", false);
    match &decide(&c, ch, &facts(&ok, Some(&quiet), None), 90_000, "h")[0].action {
        IncidentAction::Resolve { pages, .. } => assert!(pages.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn maintenance_window_records_without_paging_then_pages_when_over() {
    let c =
        config("[[silence]]\nowner = \"social\"\nuntil = \"2026-11-23T06:00:00Z\"\nreason = \"mailbox migration\"\n");
    let ch = c.channel("social-mail").unwrap();
    let during = chrono::DateTime::parse_from_rfc3339("2026-11-23T05:00:00Z")
        .unwrap()
        .timestamp_millis();
    let after = during + 2 * 3_600_000;
    let p = probe("p1", "social-mail", Verdict::Missed);
    match &decide(&c, ch, &facts(&p, None, None), during, "h")[0].action {
        IncidentAction::Open { pages, silenced, .. } => {
            assert!(pages.is_empty());
            assert!(silenced.as_deref().unwrap_or("").contains("mailbox migration"));
        }
        other => panic!("{other:?}"),
    }
    let mut open = incident(5, "social-mail", false);
    open.opened_at = during;
    // As the ledger keeps it when a silence held the trigger back.
    open.silenced = Some("maintenance window until 2026-11-23T06:00:00Z: mailbox migration".into());
    assert!(
        due_page(&c, &open, &[], during + 60_000, "h").is_none(),
        "still silenced"
    );
    match due_page(&c, &open, &[], after, "h").map(|c| c.action) {
        Some(IncidentAction::Page { pages, .. }) => assert_eq!(pages[0].1.event, PageEvent::Trigger),
        other => panic!("{other:?}"),
    }
    // A channel of another owner is not silenced.
    let other = c.channel("borger-mail").unwrap();
    let p = probe("p9", "borger-mail", Verdict::Missed);
    assert!(
        matches!(&decide(&c, other, &facts(&p, None, None), during, "h")[0].action, IncidentAction::Open { pages, .. } if !pages.is_empty())
    );
}

#[test]
fn reminders_follow_the_interval() {
    let c = config("");
    let open = incident(6, "social-mail", true);
    assert!(due_page(&c, &open, &[], 50_000 + 3_599_000, "h").is_none());
    match due_page(&c, &open, &[], 50_000 + 3_600_000, "h").map(|c| c.action) {
        Some(IncidentAction::Page { pages, .. }) => assert_eq!(pages[0].1.event, PageEvent::Reminder),
        other => panic!("{other:?}"),
    }
}

#[test]
fn our_errors_and_control_failures_page_once_as_degraded() {
    let c = config("");
    let ch = c.channel("social-mail").unwrap();
    let p = probe("p1", "social-mail", Verdict::Error);
    match &decide(&c, ch, &facts(&p, None, None), 70_000, "h")[0].action {
        IncidentAction::Open { channel, pages, .. } => {
            assert_eq!(channel, &degraded_key("relay"));
            assert_eq!(
                pages.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
                vec!["ops"],
                "defaults.notify"
            );
            assert_eq!(pages[0].1.channel, "postcanary");
        }
        other => panic!("{other:?}"),
    }
    let control = c.channel("canary-self").unwrap();
    let p = probe("c1", "canary-self", Verdict::Missed);
    assert!(
        matches!(&decide(&c, control, &facts(&p, None, None), 70_000, "h")[0].action, IncidentAction::Open { channel, .. } if channel == &degraded_key("relay"))
    );

    // While degraded, a channel's miss becomes our error under the degraded incident.
    let degraded = incident(7, &degraded_key("relay"), true);
    let p = probe("p2", "borger-mail", Verdict::Missed);
    let ch = c.channel("borger-mail").unwrap();
    let changes = decide(&c, ch, &facts(&p, None, Some(&degraded)), 80_000, "h");
    assert_eq!(changes.len(), 1);
    assert!(changes[0]
        .reclassify
        .as_deref()
        .unwrap_or("")
        .contains("postcanary degraded"));
    assert!(matches!(
        changes[0].action,
        IncidentAction::Update { incident_id: 7, .. }
    ));

    // A success through the sender resolves the degradation.
    let ok = probe("p3", "borger-mail", Verdict::Delivered);
    let changes = decide(&c, ch, &facts(&ok, None, Some(&degraded)), 90_000, "h");
    assert_eq!(changes.len(), 2);
    assert!(matches!(
        changes[0].action,
        IncidentAction::Resolve { incident_id: 7, .. }
    ));
    assert_eq!(changes[0].probe_id, None);
    assert_eq!(changes[1].probe_id.as_deref(), Some("p3"));
}

/// Records deliveries; fails while `down` is set.
#[derive(Default)]
struct Recorder {
    sent: Mutex<Vec<(String, PageEvent, String)>>,
    down: Mutex<bool>,
}

#[async_trait::async_trait]
impl Deliver for Recorder {
    async fn deliver(&self, n: &crate::notify::NotifierConfig, page: &Page) -> Result<(), DeliveryError> {
        if *self.down.lock().unwrap() {
            return Err(DeliveryError {
                message: "HTTP 503".into(),
                retryable: true,
            });
        }
        self.sent
            .lock()
            .unwrap()
            .push((n.name.clone(), page.event, page.dedup_key.clone()));
        Ok(())
    }
}

async fn judged(store: &crate::ledger::DynStore, id: &str, channel: &str, verdict: Verdict) {
    store
        .insert_probe(&crate::ledger::NewProbe {
            id: id.into(),
            token: format!("pc-{id}"),
            channel: channel.into(),
            kind: "mail".into(),
            expect: crate::config::Expect::Deliver,
            inbox: None,
            target: "x@y".into(),
            created_at: 1,
            deadline: 2,
            run_id: "r".into(),
        })
        .await
        .unwrap();
    store.record_sent(id, 1, "250 ok").await.unwrap();
    let j = crate::verdict::Judgement {
        verdict,
        detail: "d".into(),
        at: now_millis(),
        found: None,
        latency_ms: None,
        fault: None,
    };
    assert!(store.judge(id, &j).await.unwrap());
}

/// A store, the incident processor, a notifier that is down, and the
/// `social-team` worker using it.
fn harness(fallback_after: std::time::Duration) -> (crate::ledger::DynStore, Processor, Arc<Recorder>, Worker) {
    let config = Arc::new(config(""));
    let store: crate::ledger::DynStore = Arc::new(SqliteStore::in_memory().unwrap());
    let wake = Wake::default();
    let processor = Processor {
        config: Arc::clone(&config),
        store: Arc::clone(&store),
        source: "h".into(),
        outbox: wake.clone(),
    };
    let rec = Arc::new(Recorder::default());
    *rec.down.lock().unwrap() = true;
    let worker = Worker {
        notifier: config.notifier("social-team").unwrap().clone(),
        store: Arc::clone(&store),
        delivery: rec.clone(),
        fallback_after,
        notified: wake.register(),
        wake: wake.clone(),
    };
    (store, processor, rec, worker)
}

#[tokio::test]
async fn pages_go_out_once_in_order_after_an_outage() {
    let (store, processor, rec, worker) = harness(std::time::Duration::from_secs(3600));
    // Fail, recover, fail again: trigger, resolve, trigger.
    judged(&store, "a", "social-mail", Verdict::Missed).await;
    processor.drain().await.unwrap();
    judged(&store, "b", "social-mail", Verdict::Delivered).await;
    processor.drain().await.unwrap();
    judged(&store, "c", "social-mail", Verdict::Rejected).await;
    assert_eq!(processor.drain().await.unwrap(), 1);
    assert_eq!(processor.drain().await.unwrap(), 0, "each verdict handled once");

    // Notifier down: nothing leaves, nothing is lost.
    assert!(worker.step().await.is_some());
    assert!(rec.sent.lock().unwrap().is_empty());
    assert_eq!(
        store.outbox_depth().await.unwrap(),
        vec![("social-team".to_string(), 3)]
    );

    *rec.down.lock().unwrap() = false;
    for _ in 0..50 {
        match worker.step().await {
            None => break,
            Some(wait) => tokio::time::sleep(wait.min(std::time::Duration::from_millis(600))).await,
        }
    }
    let sent = rec.sent.lock().unwrap().clone();
    let events: Vec<PageEvent> = sent.iter().map(|s| s.1).collect();
    assert_eq!(events, vec![PageEvent::Trigger, PageEvent::Resolve, PageEvent::Trigger]);
    assert_eq!(sent[0].2, sent[1].2, "trigger and resolve share the dedup key");
    assert_ne!(sent[0].2, sent[2].2, "a new incident has a new key");
    assert!(store.outbox_depth().await.unwrap().is_empty());

    // The incident's timeline has the whole story.
    let first = store.incident(1).await.unwrap().unwrap();
    let kinds: Vec<String> = store
        .incident_events(first.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            "opened",
            "page-queued",
            "resolved",
            "page-queued",
            "page-failed",
            "page-accepted",
            "page-accepted"
        ]
    );
}

#[tokio::test]
async fn a_failing_notifier_hands_over_to_its_fallback() {
    let (store, processor, _down, primary) = harness(std::time::Duration::ZERO);
    judged(&store, "a", "social-mail", Verdict::Missed).await;
    processor.drain().await.unwrap();
    primary.step().await;
    primary.step().await;
    assert_eq!(
        store.outbox_depth().await.unwrap(),
        vec![("ops".to_string(), 1), ("social-team".to_string(), 1)]
    );
    // The fallback copy is queued once, however often the primary fails.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    primary.step().await;
    assert_eq!(
        store.outbox_depth().await.unwrap(),
        vec![("ops".to_string(), 1), ("social-team".to_string(), 1)]
    );
}

#[test]
fn dns_changes_open_once_update_and_resolve_to_the_senders_owners() {
    let c = config("");
    let changes = vec!["MX changed: [10 mx.kommune.example] → [10 mx.closed.example]".to_string()];
    let IncidentAction::Open {
        channel,
        verdict,
        detail,
        pages,
        ..
    } = decide_dns(&c, "kommune.example", &changes, None, 1_000, "host")
    else {
        panic!("a change opens an incident")
    };
    assert_eq!(channel, "dns:kommune.example");
    assert_eq!(verdict, "routing_changed");
    assert_eq!(detail, changes[0]);
    // Every team with a channel to the domain: the owner route of social, and borger's own list.
    let mut to: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, vec!["ops", "social-team"]);
    assert!(pages[0].1.summary.contains("mail routing of kommune.example (DNS)"));

    let mut open = incident(7, "dns:kommune.example", true);
    open.detail = changes[0].clone();
    assert!(matches!(
        decide_dns(&c, "kommune.example", &changes, Some(&open), 2_000, "host"),
        IncidentAction::Nothing
    ));
    let more = vec![changes[0].clone(), "DMARC removed (was v=DMARC1; p=reject)".to_string()];
    assert!(matches!(
        decide_dns(&c, "kommune.example", &more, Some(&open), 2_000, "host"),
        IncidentAction::Update { incident_id: 7, .. }
    ));
    let IncidentAction::Resolve { pages, .. } = decide_dns(&c, "kommune.example", &[], Some(&open), 3_000, "host")
    else {
        panic!("back to the baseline resolves")
    };
    assert_eq!(pages.len(), 2);
    assert!(matches!(
        decide_dns(&c, "kommune.example", &[], None, 3_000, "host"),
        IncidentAction::Nothing
    ));
    // Reminders for an open DNS incident find their subject.
    assert!(due_page(&c, &open, &[], 50_000 + 3_600_001, "host").is_some());
}

#[test]
fn an_unpaged_incident_without_a_silence_is_not_called_a_maintenance_window() {
    let c = config("");
    let open = incident(7, "social-mail", false);
    assert!(due_page(&c, &open, &[], 50_000 + 60_000, "h").is_none());
}

#[test]
fn verdicts_follow_probe_order() {
    let c = config("");
    let ch = c.channel("social-mail").unwrap();
    // An old probe's miss, judged after a newer probe's success: history.
    let mut old = probe("p1", "social-mail", Verdict::Missed);
    old.created_at = 1_000;
    let mut f = facts(&old, None, None);
    f.newest_success = Some(2_000);
    let changes = decide(&c, ch, &f, 20_000, "h");
    assert!(
        matches!(
            changes[..],
            [IncidentChange {
                action: IncidentAction::Nothing,
                ..
            }]
        ),
        "{changes:?}"
    );
    // An old probe's success does not resolve an incident a newer failure keeps open.
    let open = incident(8, "social-mail", true);
    let mut ok = probe("p2", "social-mail", Verdict::Delivered);
    ok.created_at = 1_000;
    let mut f = facts(&ok, Some(&open), None);
    f.newest_failure = Some(1_500);
    let changes = decide(&c, ch, &f, 20_000, "h");
    assert!(
        matches!(changes.last().map(|c| &c.action), Some(IncidentAction::Nothing)),
        "{changes:?}"
    );
    // A newer success does.
    ok.created_at = 2_000;
    let mut f = facts(&ok, Some(&open), None);
    f.newest_failure = Some(1_500);
    let changes = decide(&c, ch, &f, 20_000, "h");
    assert!(
        matches!(changes.last().map(|c| &c.action), Some(IncidentAction::Resolve { .. })),
        "{changes:?}"
    );
}

#[test]
fn a_blind_inbox_is_one_degraded_incident_not_a_channel_page() {
    let c = config("");
    let ch = c.channel("social-mail").unwrap();
    let mut p = probe("p1", "social-mail", Verdict::Error);
    p.fault = Some("inbox:social".into());
    let changes = decide(&c, ch, &facts(&p, None, None), 20_000, "h");
    match &changes[0].action {
        IncidentAction::Open { channel, pages, .. } => {
            assert_eq!(channel, "postcanary:inbox:social");
            assert!(pages.iter().all(|(_, page)| page.channel == "postcanary"));
            assert!(pages[0].1.channel_name.contains("inbox `social`"), "{:?}", pages[0].1);
        }
        other => panic!("{other:?}"),
    }
    // A second blind probe of another channel updates the same incident.
    let open = incident(9, "postcanary:inbox:social", true);
    let other = c.channel("borger-mail").unwrap();
    let mut q = probe("p2", "borger-mail", Verdict::Error);
    q.fault = Some("inbox:social".into());
    let changes = decide(&c, other, &facts(&q, None, Some(&open)), 21_000, "h");
    assert!(
        matches!(changes[0].action, IncidentAction::Update { incident_id: 9, .. }),
        "{changes:?}"
    );
    // A delivery found in that inbox resolves it.
    let mut ok = probe("p3", "social-mail", Verdict::Delivered);
    ok.found_in = Some("social".into());
    let mut f = facts(&ok, None, None);
    f.inbox_incident = Some(&open);
    let changes = decide(&c, ch, &f, 22_000, "h");
    assert!(
        matches!(changes[0].action, IncidentAction::Resolve { incident_id: 9, .. }),
        "{changes:?}"
    );
}

// --- vantage points (the quorum rule itself is tested in `quorum`)

fn at_vantage(id: &str, vantage: &str, verdict: Verdict) -> ProbeRecord {
    let mut p = probe(id, "social-mail", verdict);
    p.vantage = Some(vantage.into());
    p
}

fn quorum_facts<'a>(tally: &'a Tally, open: &'a [(String, Incident)], quorum: u32) -> QuorumFacts<'a> {
    QuorumFacts {
        quorum,
        window: 10_000,
        tally,
        open,
    }
}

#[test]
fn a_vantage_failing_alone_opens_its_own_incident_and_no_channel_page() {
    let c = config("");
    let ch = c.channel("social-mail").unwrap();
    let east = at_vantage("e1", "east", Verdict::Missed);
    let west = at_vantage("w1", "west", Verdict::Delivered);
    let tally = Tally::of(&[east.clone(), west], 1_000, 60_000, 0);
    let changes = decide_with(
        &c,
        ch,
        &facts(&east, None, None),
        Some(&quorum_facts(&tally, &[], 2)),
        70_000,
        "h",
    );
    assert_eq!(changes.len(), 1);
    match &changes[0].action {
        IncidentAction::Open {
            channel,
            verdict,
            pages,
            ..
        } => {
            assert_eq!(channel, "vantage:east");
            assert_eq!(verdict, quorum::VANTAGE_DEGRADED);
            assert_eq!(pages.len(), 1, "paged once, to the default notifiers");
            assert_eq!(pages[0].0, "ops");
            assert!(
                pages[0].1.detail.contains("while `west` succeeded"),
                "{}",
                pages[0].1.detail
            );
        }
        other => panic!("{other:?}"),
    }
    // Open already: the next failure only updates it.
    let open = [("east".to_string(), incident(9, "vantage:east", true))];
    let changes = decide_with(
        &c,
        ch,
        &facts(&east, None, None),
        Some(&quorum_facts(&tally, &open, 2)),
        71_000,
        "h",
    );
    assert!(matches!(
        changes[0].action,
        IncidentAction::Update { incident_id: 9, .. }
    ));
    // With quorum 1 the same verdicts page the channel, as without vantages.
    let changes = decide_with(
        &c,
        ch,
        &facts(&east, None, None),
        Some(&quorum_facts(&tally, &[], 1)),
        70_000,
        "h",
    );
    assert!(matches!(&changes[0].action, IncidentAction::Open { channel, .. } if channel == "social-mail"));
}

#[test]
fn two_failing_vantages_meet_the_quorum_and_a_success_below_it_resolves() {
    let c = config("");
    let ch = c.channel("social-mail").unwrap();
    let east = at_vantage("e1", "east", Verdict::Missed);
    let west = at_vantage("w1", "west", Verdict::Missed);
    let tally = Tally::of(&[east.clone(), west.clone()], 1_000, 60_000, 0);
    let changes = decide_with(
        &c,
        ch,
        &facts(&west, None, None),
        Some(&quorum_facts(&tally, &[], 2)),
        70_000,
        "h",
    );
    assert!(
        matches!(&changes[0].action, IncidentAction::Open { channel, pages, .. } if channel == "social-mail" && pages.len() == 1)
    );
    // Waiting for the other vantage's verdict: nothing yet.
    let pending = at_vantage("w1", "west", Verdict::Pending);
    let t = Tally::of(&[east.clone(), pending], 1_000, 60_000, 0);
    let changes = decide_with(
        &c,
        ch,
        &facts(&east, None, None),
        Some(&quorum_facts(&t, &[], 2)),
        70_000,
        "h",
    );
    assert!(matches!(changes[0].action, IncidentAction::Nothing));

    // West recovers, east still fails: fewer than the quorum fail → resolve, and east is alone now.
    let open = incident(3, "social-mail", true);
    let ok = at_vantage("w2", "west", Verdict::Delivered);
    let t = Tally::of(&[east.clone(), ok.clone()], 1_000, 60_000, 0);
    let changes = decide_with(
        &c,
        ch,
        &facts(&ok, Some(&open), None),
        Some(&quorum_facts(&t, &[], 2)),
        80_000,
        "h",
    );
    assert!(matches!(&changes[0].action, IncidentAction::Open { channel, .. } if channel == "vantage:east"));
    assert!(matches!(
        changes[1].action,
        IncidentAction::Resolve { incident_id: 3, .. }
    ));
    // With quorum 1 east's failure keeps the channel's incident open.
    let changes = decide_with(
        &c,
        ch,
        &facts(&ok, Some(&open), None),
        Some(&quorum_facts(&t, &[], 1)),
        80_000,
        "h",
    );
    assert_eq!(changes.len(), 1);
    assert!(matches!(changes[0].action, IncidentAction::Nothing));
}

#[test]
fn a_vantage_incident_resolves_after_a_quiet_window_and_our_errors_are_per_vantage() {
    let c = config("");
    let ch = c.channel("social-mail").unwrap();
    let ok = at_vantage("e2", "east", Verdict::Delivered);
    let t = Tally::of(std::slice::from_ref(&ok), 1_000, 60_000, 0);
    let mut v = incident(5, "vantage:east", true);
    v.last_failure_at = 75_000;
    let open = [("east".to_string(), v)];
    // Failed alone 5 s ago (window 10 s): stays open.
    let changes = decide_with(
        &c,
        ch,
        &facts(&ok, None, None),
        Some(&quorum_facts(&t, &open, 2)),
        80_000,
        "h",
    );
    assert_eq!(changes.len(), 1);
    // A window later: resolved.
    let changes = decide_with(
        &c,
        ch,
        &facts(&ok, None, None),
        Some(&quorum_facts(&t, &open, 2)),
        85_000,
        "h",
    );
    assert!(matches!(
        changes[0].action,
        IncidentAction::Resolve { incident_id: 5, .. }
    ));

    // Our own error at a vantage: the degraded incident of that vantage's relay.
    let err = at_vantage("e3", "east", Verdict::Error);
    let changes = decide_with(
        &c,
        ch,
        &facts(&err, None, None),
        Some(&quorum_facts(&t, &[], 2)),
        80_000,
        "h",
    );
    match &changes[0].action {
        IncidentAction::Open { channel, pages, .. } => {
            assert_eq!(channel, &degraded_key("relay@east"));
            assert!(
                pages[0].1.channel_name.contains("vantage `east`"),
                "{}",
                pages[0].1.channel_name
            );
        }
        other => panic!("{other:?}"),
    }
}

/// An IMAP inbox with a 2-minute `blind_grace`, a channel archiving there and
/// one whose canaries are checked over HTTP with a 10-minute grace.
pub(crate) fn retain_config() -> Config {
    std::env::set_var("POSTCANARY_TEST_RETAIN_PW", "x");
    config(
        r#"
[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "social"
password = "env:POSTCANARY_TEST_RETAIN_PW"
blind_grace = "2m"
[[channel]]
id = "kept-mail"
name = "Kept"
kind = "mail"
to = "social@kommune.example"
inbox = "social"
retain = ["1d"]
archive = "Arkiv"
[[channel]]
id = "doc-mail"
name = "Doc"
kind = "mail"
to = "social@kommune.example"
inbox = "social"
retain = ["1d"]
[channel.retain_check]
url = "https://sag.example/doc/{token}"
blind_grace = "10m"
"#,
    )
}

#[test]
fn the_retention_grace_is_the_inboxs_blind_grace_or_the_http_checks_own() {
    use retained::retain_grace;
    let c = retain_config();
    let ch = |id: &str| c.channel(id).unwrap().clone();
    assert_eq!(retain_grace(&c, &ch("kept-mail")), Duration::from_secs(120));
    assert_eq!(retain_grace(&c, &ch("doc-mail")), Duration::from_secs(600));
}

#[test]
fn a_retention_check_that_cannot_look_pages_degraded_only_after_its_grace() {
    use retained::{decide_retain_fault, retain_path};
    let c = retain_config();
    let kept = c.channel("kept-mail").unwrap().clone();
    let doc = c.channel("doc-mail").unwrap().clone();
    let since = 1_000_000;
    let why = "IMAP lookup in `social`: refused login";
    // Before the grace: nothing, however many tries (2 s, 4 s, … backoff).
    for now in [since, since + 6_000, since + 60_000, since + 119_999] {
        let a = decide_retain_fault(&c, &kept, Some((why, since)), None, now, "h");
        assert!(matches!(a, IncidentAction::Nothing), "at +{}: {a:?}", now - since);
    }
    // At the grace: "postcanary degraded" for the channel's retention checks.
    match decide_retain_fault(&c, &kept, Some((why, since)), None, since + 120_000, "h") {
        IncidentAction::Open {
            channel, pages, detail, ..
        } => {
            assert_eq!(channel, degraded_key(&retain_path("kept-mail")));
            assert!(detail.starts_with(why), "{detail}");
            assert!(detail.contains("since 1970-01-01T00:16:40.000Z"), "{detail}");
            assert!(!pages.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // The HTTP check waits for its own, longer grace.
    let a = decide_retain_fault(&c, &doc, Some(("GET x: HTTP 503", since)), None, since + 599_999, "h");
    assert!(matches!(a, IncidentAction::Nothing), "{a:?}");
    let a = decide_retain_fault(&c, &doc, Some(("GET x: HTTP 503", since)), None, since + 700_000, "h");
    assert!(matches!(a, IncidentAction::Open { .. }), "{a:?}");
    // Once open, further faults update it and a check that can look resolves it.
    let open = incident(9, &degraded_key(&retain_path("kept-mail")), true);
    let a = decide_retain_fault(&c, &kept, Some((why, since)), Some(&open), since + 130_000, "h");
    assert!(matches!(a, IncidentAction::Update { incident_id: 9, .. }), "{a:?}");
    let a = decide_retain_fault(&c, &kept, None, Some(&open), since + 140_000, "h");
    assert!(matches!(a, IncidentAction::Resolve { .. }), "{a:?}");
    assert!(matches!(
        decide_retain_fault(&c, &kept, None, None, since + 140_000, "h"),
        IncidentAction::Nothing
    ));
}
