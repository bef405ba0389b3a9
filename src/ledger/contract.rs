//! The store contract: one suite, run against every backend.

use super::{Acknowledgement, Cursor, DynStore, IncidentAction, IncidentChange, NewProbe, NewSilence};
use crate::page::{Page, PageEvent};
use crate::verdict::Expect;
use crate::verdict::{Found, Judgement, Verdict};

fn probe(n: u32, expect: Expect, created: i64, deadline: i64, run: &str) -> NewProbe {
    NewProbe {
        id: format!("id-{n}"),
        token: format!("pc-tok-{n}"),
        channel: "social-mail".into(),
        kind: "mail".into(),
        expect,
        inbox: Some("social".into()),
        target: "social@kommune.example".into(),
        created_at: created,
        deadline,
        run_id: run.into(),
    }
}

fn delivered(at: i64) -> Judgement {
    Judgement {
        verdict: Verdict::Delivered,
        detail: "ok".into(),
        at,
        found: Some(Found {
            inbox: "social".into(),
            at,
        }),
        latency_ms: Some(at - 100),
        fault: None,
    }
}

pub async fn run_all(s: DynStore) {
    // meta: first writer wins, later ones read it.
    assert_eq!(s.meta_get_or_put("token_key", "aaa").await.unwrap(), "aaa");
    assert_eq!(s.meta_get_or_put("token_key", "bbb").await.unwrap(), "aaa");

    // DNS baselines: none until recorded; a later one replaces it.
    assert_eq!(s.dns_baseline("kommune.example").await.unwrap(), None);
    s.set_dns_baseline("kommune.example", "{\"mx\":[]}", 5).await.unwrap();
    s.set_dns_baseline("kommune.example", "{\"mx\":[\"10 mx\"]}", 9)
        .await
        .unwrap();
    assert_eq!(
        s.dns_baseline("kommune.example").await.unwrap(),
        Some(("{\"mx\":[\"10 mx\"]}".to_string(), 9))
    );

    // A probe is pending until judged; the row exists before the send.
    s.insert_probe(&probe(1, Expect::Deliver, 100, 1_000, "run-a"))
        .await
        .unwrap();
    let p = s.probe_by_token("pc-tok-1").await.unwrap().unwrap();
    assert_eq!(p.verdict, Verdict::Pending);
    assert_eq!(p.sent_at, None);
    assert!(
        s.insert_probe(&probe(1, Expect::Deliver, 100, 1_000, "run-a"))
            .await
            .is_err(),
        "ids are unique"
    );
    s.record_sent("id-1", 150, "250 2.0.0 Ok: queued as ABC").await.unwrap();
    let p = s.probe("id-1").await.unwrap().unwrap();
    assert_eq!(p.sent_at, Some(150));
    assert_eq!(p.smtp_reply.as_deref(), Some("250 2.0.0 Ok: queued as ABC"));

    // Judged once: a second verdict does not replace the first.
    assert!(s.judge("id-1", &delivered(400)).await.unwrap());
    let mut again = delivered(500);
    again.verdict = Verdict::Misrouted;
    assert!(!s.judge("id-1", &again).await.unwrap());
    let p = s.probe("id-1").await.unwrap().unwrap();
    assert_eq!(
        (p.verdict, p.latency_ms, p.found_in.as_deref()),
        (Verdict::Delivered, Some(300), Some("social"))
    );

    // The sweeper: sent probes past the deadline are missed; black holes say so;
    // unsent probes of this run are left to their sender until the grace ends,
    // those of another (dead) run are errors at once.
    s.insert_probe(&probe(2, Expect::Deliver, 100, 1_000, "run-a"))
        .await
        .unwrap();
    s.record_sent("id-2", 120, "250 ok").await.unwrap();
    s.insert_probe(&probe(3, Expect::Bounce, 100, 1_000, "run-a"))
        .await
        .unwrap();
    s.record_sent("id-3", 120, "250 ok").await.unwrap();
    s.insert_probe(&probe(4, Expect::Deliver, 100, 1_000, "run-a"))
        .await
        .unwrap();
    s.insert_probe(&probe(5, Expect::Deliver, 100, 1_000, "run-old"))
        .await
        .unwrap();
    s.insert_probe(&probe(6, Expect::Deliver, 100, 500_000, "run-a"))
        .await
        .unwrap();
    s.record_sent("id-6", 120, "250 ok").await.unwrap();
    assert_eq!(s.next_deadline().await.unwrap(), Some(1_000));
    let due: Vec<String> = s.due(1_000).await.unwrap().into_iter().map(|p| p.id).collect();
    assert_eq!(
        due,
        vec!["id-2", "id-3", "id-4", "id-5"],
        "due: pending at or past the deadline"
    );
    assert!(
        s.sweep_only(1_000, "run-a", Some(&["id-3".to_string()]))
            .await
            .unwrap()
            .iter()
            .map(|p| p.id.as_str())
            .eq(["id-3"]),
        "sweep_only judges only the probes it names"
    );

    assert!(
        s.sweep(999, "run-a").await.unwrap().is_empty(),
        "nothing is due before its deadline"
    );
    let mut swept = s.sweep(1_000, "run-a").await.unwrap();
    swept.sort_by(|a, b| a.id.cmp(&b.id));
    let got: Vec<_> = swept.iter().map(|p| (p.id.as_str(), p.verdict)).collect();
    assert_eq!(got, vec![("id-2", Verdict::Missed), ("id-5", Verdict::Error)]);
    let black_hole = s.probe("id-3").await.unwrap().unwrap();
    assert_eq!(black_hole.verdict, Verdict::Missed);
    assert!(black_hole.detail.as_deref().unwrap_or("").contains("black hole"));
    assert!(
        s.sweep(1_000, "run-a").await.unwrap().is_empty(),
        "no probe is swept twice"
    );
    // Ordering for the incident logic: unhandled failures do not count yet.
    let (newest_success, newest_failure) = s.channel_order("social-mail").await.unwrap();
    assert_eq!(newest_failure, None, "no failure has been handled yet");
    assert_eq!(
        newest_success,
        s.probe("id-1")
            .await
            .unwrap()
            .filter(|p| p.verdict.is_success())
            .map(|p| p.created_at)
    );
    let late_sweep = s.sweep(1_000 + 120_000, "run-a").await.unwrap();
    assert_eq!(
        late_sweep.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec!["id-4"]
    );
    assert_eq!(
        s.pending()
            .await
            .unwrap()
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>(),
        vec!["id-6"]
    );

    // An arrival after a miss may turn it into late (or misrouted), nothing else may.
    let mut late = delivered(2_000);
    late.verdict = Verdict::Late;
    assert!(s.judge("id-2", &late).await.unwrap());
    assert_eq!(s.probe("id-2").await.unwrap().unwrap().verdict, Verdict::Late);
    assert!(
        !s.judge("id-3", &delivered(2_000)).await.unwrap(),
        "delivered cannot replace missed"
    );

    // Evidence trail in order.
    let ev = s.events("id-2").await.unwrap();
    let kinds: Vec<_> = ev.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["created", "sent", "verdict", "verdict"]);
    s.add_event("id-2", 2_500, "note", "hello").await.unwrap();
    assert_eq!(s.events("id-2").await.unwrap().last().unwrap().detail, "hello");

    // Recent probes, newest first.
    let recent = s.recent_probes("social-mail", 2).await.unwrap();
    assert_eq!(recent.len(), 2);

    // Cursors.
    assert_eq!(s.cursor("social").await.unwrap(), None);
    s.set_cursor(
        "social",
        Cursor {
            uid_validity: 7,
            last_uid: 3,
        },
    )
    .await
    .unwrap();
    s.set_cursor(
        "social",
        Cursor {
            uid_validity: 7,
            last_uid: 9,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.cursor("social").await.unwrap(),
        Some(Cursor {
            uid_validity: 7,
            last_uid: 9
        })
    );
    run_ops(&s).await;
}

fn page(event: PageEvent, by: Option<&str>) -> Page {
    Page {
        event,
        dedup_key: "postcanary/social-mail/id-1".into(),
        incident_id: 0,
        channel: "social-mail".into(),
        channel_name: "Social".into(),
        owner: "social".into(),
        target: "social@kommune.example".into(),
        verdict: "missed".into(),
        detail: "d".into(),
        summary: "Social: missed - d".into(),
        opened_at: 10_000,
        at: 10_000,
        probe_token: None,
        timeline: Vec::new(),
        source: "contract".into(),
        by: by.map(str::to_string),
    }
}

/// Acknowledge, silences, the audit log, escalation, and the readers at
/// scale (issues 15 and 20). Runs after the probe cases above, on the same store.
async fn run_ops(s: &DynStore) {
    // An incident to act on.
    let open = IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Open {
            channel: "ops-chan".into(),
            dedup_key: "postcanary/ops-chan/p".into(),
            verdict: "missed".into(),
            detail: "nothing arrived".into(),
            at: 10_000,
            silenced: None,
            pages: vec![("pd".into(), page(PageEvent::Trigger, None))],
        },
    };
    let id = s.apply_incident(&open).await.unwrap().unwrap();
    let i = s.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (i.acknowledged_at, i.acknowledged_by.clone(), i.escalations),
        (None, None, 0)
    );

    // Escalation: a step is paged once; a lower or equal level changes nothing.
    let escalate = |level: i64, at: i64| IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Escalate {
            incident_id: id,
            level,
            at,
            note: format!("escalating to step {level}"),
            pages: vec![("og".into(), page(PageEvent::Trigger, None))],
        },
    };
    s.apply_incident(&escalate(1, 11_000)).await.unwrap();
    s.apply_incident(&escalate(1, 11_500)).await.unwrap();
    assert_eq!(s.incident(id).await.unwrap().unwrap().escalations, 1);
    let kinds: Vec<String> = s
        .incident_events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "escalated").count(), 1, "{kinds:?}");

    // Who was paged when: every page of the incident, oldest first.
    let pages = s.incident_pages(&[id]).await.unwrap();
    let got: Vec<(&str, &str, &str)> = pages
        .iter()
        .map(|p| (p.notifier.as_str(), p.event.as_str(), p.state.as_str()))
        .collect();
    assert_eq!(got, vec![("pd", "trigger", "pending"), ("og", "trigger", "pending")]);
    assert!(s.incident_pages(&[id + 1000]).await.unwrap().is_empty());

    // Acknowledge: once, with its timeline entry, pages and audit row.
    let ack = Acknowledgement {
        incident_id: id,
        by: "anne".into(),
        note: "looking at the relay".into(),
        at: 12_000,
        pages: vec![("pd".into(), page(PageEvent::Acknowledge, Some("anne")))],
    };
    assert!(s.acknowledge(&ack).await.unwrap());
    let i = s.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (i.acknowledged_at, i.acknowledged_by.as_deref()),
        (Some(12_000), Some("anne"))
    );
    let ev = s.incident_events(id).await.unwrap();
    assert!(ev
        .iter()
        .any(|e| e.kind == "acknowledged" && e.detail == "acknowledged by anne: looking at the relay"));
    assert!(!s.acknowledge(&ack).await.unwrap(), "acknowledged once");
    // An acknowledged incident escalates no further.
    s.apply_incident(&escalate(2, 13_000)).await.unwrap();
    assert_eq!(s.incident(id).await.unwrap().unwrap().escalations, 1);
    let pd = s.outbox_head("pd").await.unwrap().unwrap();
    assert_eq!(pd.event, "trigger");
    s.page_sent(pd.id, 12_500).await.unwrap();
    let pd = s.outbox_head("pd").await.unwrap().unwrap();
    assert_eq!(
        (pd.event.as_str(), pd.page.by.as_deref()),
        ("acknowledge", Some("anne"))
    );
    assert_eq!(pd.page.incident_id, id, "the store fills in the incident id");

    // The notifiers' queues.
    s.page_failed(pd.id, 12_600, "HTTP 503", 20_000, false).await.unwrap();
    let states = s.outbox_states().await.unwrap();
    let pd_state = states.iter().find(|o| o.notifier == "pd").unwrap();
    assert_eq!((pd_state.queued, pd_state.failing, pd_state.given_up), (1, 1, 0));
    assert_eq!(pd_state.last_error.as_deref(), Some("HTTP 503"));
    assert_eq!(pd_state.last_sent_at, Some(12_500));
    assert_eq!(pd_state.oldest_queued_at, Some(12_000));
    let og_state = states.iter().find(|o| o.notifier == "og").unwrap();
    assert_eq!((og_state.queued, og_state.failing), (1, 0));

    // A resolved incident cannot be acknowledged.
    let resolve = IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Resolve {
            incident_id: id,
            at: 14_000,
            detail: "ok".into(),
            pages: Vec::new(),
        },
    };
    s.apply_incident(&resolve).await.unwrap();
    let open2 = IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Open {
            channel: "ops-chan".into(),
            dedup_key: "postcanary/ops-chan/q".into(),
            verdict: "missed".into(),
            detail: "again".into(),
            at: 15_000,
            silenced: None,
            pages: Vec::new(),
        },
    };
    let id2 = s.apply_incident(&open2).await.unwrap().unwrap();
    s.apply_incident(&IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Resolve {
            incident_id: id2,
            at: 16_000,
            detail: "ok".into(),
            pages: Vec::new(),
        },
    })
    .await
    .unwrap();
    assert!(!s
        .acknowledge(&Acknowledgement {
            incident_id: id2,
            at: 17_000,
            ..ack.clone()
        })
        .await
        .unwrap());

    // Silences: set, in force in their window only, ended once.
    let sid = s
        .add_silence(&NewSilence {
            channel: Some("ops-chan".into()),
            owner: None,
            from: 20_000,
            until: 80_000,
            reason: "relay migration".into(),
            by: "anne".into(),
            at: 20_000,
        })
        .await
        .unwrap();
    let oid = s
        .add_silence(&NewSilence {
            channel: None,
            owner: Some("social".into()),
            from: 20_000,
            until: 30_000,
            reason: "short".into(),
            by: "bo".into(),
            at: 20_001,
        })
        .await
        .unwrap();
    let active: Vec<i64> = s
        .silences(Some(25_000), 10)
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(active, vec![oid, sid], "newest first");
    let active: Vec<i64> = s
        .silences(Some(30_000), 10)
        .await
        .unwrap()
        .iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(active, vec![sid], "until is exclusive");
    assert!(
        s.silences(Some(19_999), 10).await.unwrap().is_empty(),
        "not before from"
    );
    let rec = s.silences(None, 10).await.unwrap();
    assert_eq!(rec.len(), 2);
    let first = rec.iter().find(|x| x.id == sid).unwrap();
    assert!(first.covers("ops-chan", "anyone", 25_000));
    assert!(!first.covers("other", "anyone", 25_000));
    assert_eq!(
        (first.reason.as_str(), first.created_by.as_str(), first.created_at),
        ("relay migration", "anne", 20_000)
    );
    assert!(s.end_silence(sid, "bo", "done early", 40_000).await.unwrap());
    assert!(!s.end_silence(sid, "bo", "again", 41_000).await.unwrap(), "ended once");
    assert!(!s.end_silence(99_999, "bo", "none", 41_000).await.unwrap());
    assert!(s.silences(Some(40_000), 10).await.unwrap().is_empty());
    let ended = s
        .silences(None, 10)
        .await
        .unwrap()
        .into_iter()
        .find(|x| x.id == sid)
        .unwrap();
    assert_eq!((ended.ended_at, ended.ended_by.as_deref()), (Some(40_000), Some("bo")));

    // The audit log: every action, newest first, with who, when, what and why.
    s.add_audit(50_000, "anne", "reload", "config", "schedule changed")
        .await
        .unwrap();
    let log = s.audit_log(None, 10).await.unwrap();
    let rows: Vec<(&str, &str, &str)> = log
        .iter()
        .map(|a| (a.actor.as_str(), a.action.as_str(), a.reason.as_str()))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("anne", "reload", "schedule changed"),
            ("bo", "end-silence", "done early"),
            ("bo", "silence", "short"),
            ("anne", "silence", "relay migration"),
            ("anne", "acknowledge", "looking at the relay"),
        ]
    );
    assert_eq!(log[4].target, format!("incident {id} (ops-chan)"));
    assert!(log[3].target.contains("channel ops-chan"), "{}", log[3].target);
    assert!(log[2].target.contains("owner social"), "{}", log[2].target);
    assert_eq!(log[4].at, 12_000);
    let older = s.audit_log(Some(log[1].id), 2).await.unwrap();
    assert_eq!(
        older.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![log[2].id, log[3].id]
    );

    // History pages: newest first, strictly before the cursor.
    for n in 0..5i64 {
        let mut p = probe(100 + n as u32, Expect::Bounce, 100_000 + n * 1000, 900_000, "run-a");
        p.channel = "paged-chan".into();
        s.insert_probe(&p).await.unwrap();
    }
    let page1 = s.probes_before("paged-chan", None, 2).await.unwrap();
    assert_eq!(
        page1.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec!["id-104", "id-103"]
    );
    let cursor = page1.last().map(|p| (p.created_at, p.id.clone()));
    let page2 = s.probes_before("paged-chan", cursor, 10).await.unwrap();
    assert_eq!(
        page2.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec!["id-102", "id-101", "id-100"]
    );

    // The latest judged probe per channel and verdicts per UTC day follow
    // every verdict change: judge, sweep, a late arrival after a miss.
    let day = 86_400_000i64;
    for (n, created) in [(200u32, 3 * day + 10), (201, 3 * day + 20), (202, 5 * day)] {
        let mut p = probe(n, Expect::Deliver, created, created + 1000, "run-a");
        p.channel = "roll-chan".into();
        s.insert_probe(&p).await.unwrap();
        s.record_sent(&p.id, created, "250 ok").await.unwrap();
    }
    assert!(s.judge("id-200", &delivered(3 * day + 500)).await.unwrap());
    let latest = |all: Vec<super::ChannelLatest>| all.into_iter().find(|l| l.channel == "roll-chan");
    let l = latest(s.channel_latest().await.unwrap()).unwrap();
    assert_eq!((l.probe_id.as_str(), l.verdict), ("id-200", Verdict::Delivered));
    s.sweep_only(3 * day + 2000, "run-a", Some(&["id-201".to_string()]))
        .await
        .unwrap();
    let l = latest(s.channel_latest().await.unwrap()).unwrap();
    assert_eq!((l.probe_id.as_str(), l.verdict), ("id-201", Verdict::Missed));
    let days = s.channel_days(&["roll-chan".to_string()], 3).await.unwrap();
    assert_eq!(days, vec![("roll-chan".to_string(), 2, 1)]);
    let mut late = delivered(3 * day + 5000);
    late.verdict = Verdict::Late;
    assert!(s.judge("id-201", &late).await.unwrap());
    let l = latest(s.channel_latest().await.unwrap()).unwrap();
    assert_eq!(l.verdict, Verdict::Late);
    assert_eq!(
        s.channel_days(&["roll-chan".to_string()], 3).await.unwrap(),
        vec![("roll-chan".to_string(), 2, 1)],
        "missed became late: still judged twice, one success"
    );
    assert!(s.judge("id-202", &delivered(5 * day + 100)).await.unwrap());
    let l = latest(s.channel_latest().await.unwrap()).unwrap();
    assert_eq!(l.probe_id, "id-202");
    assert_eq!(
        s.channel_days(&["roll-chan".to_string()], 3).await.unwrap(),
        vec![("roll-chan".to_string(), 3, 2)]
    );
    assert_eq!(
        s.channel_days(&["roll-chan".to_string()], 4).await.unwrap(),
        vec![("roll-chan".to_string(), 1, 1)],
        "days before from_day do not count"
    );
    assert!(s.channel_days(&["nobody".to_string()], 0).await.unwrap().is_empty());
    assert!(
        latest(s.channel_latest().await.unwrap()).is_some()
            && s.channel_latest()
                .await
                .unwrap()
                .iter()
                .all(|l| l.channel != "paged-chan"),
        "a channel with only pending probes has no latest"
    );
}
