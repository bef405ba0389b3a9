//! The store contract: one suite, run against every backend.

use super::{Cursor, DynStore, NewProbe};
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
}

fn page(event: crate::page::PageEvent, key: &str) -> crate::page::Page {
    crate::page::Page {
        event,
        dedup_key: key.into(),
        incident_id: 0,
        channel: "social-mail".into(),
        channel_name: "Social".into(),
        owner: "ops".into(),
        target: "social@kommune.example".into(),
        verdict: "missed".into(),
        detail: "nothing arrived".into(),
        summary: "Social: missed".into(),
        opened_at: 1_000,
        at: 1_000,
        probe_token: Some("pc-tok-2".into()),
        timeline: Vec::new(),
        source: "test".into(),
    }
}

/// Incidents, the outbox and the readers: what paging and the status page rely on.
pub async fn run_paging(s: DynStore) {
    use super::{IncidentAction, IncidentChange};
    use crate::page::PageEvent;
    // Its own channel, so it also runs on a store that has been through `run_all`.
    let paging = |n, created, deadline| NewProbe {
        channel: "paging-mail".into(),
        ..probe(n, Expect::Deliver, created, deadline, "run-p")
    };
    let (_, n_before, sum_before) = s.latency_histogram(&[]).await.unwrap();
    s.insert_probe(&paging(10, 10_000, 11_000)).await.unwrap();
    s.record_sent("id-10", 10_100, "250 ok").await.unwrap();
    assert_eq!(s.sweep(11_000, "run-p").await.unwrap().len(), 1);
    let unhandled: Vec<String> = s
        .unhandled_verdicts(100)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    assert!(unhandled.contains(&"id-10".to_string()), "{unhandled:?}");

    // Open: incident, its pages and the probe's handled mark in one go.
    let open = IncidentChange {
        probe_id: Some("id-10".into()),
        reclassify: None,
        action: IncidentAction::Open {
            channel: "paging-mail".into(),
            dedup_key: "postcanary/social-mail/id-10".into(),
            verdict: "missed".into(),
            detail: "nothing arrived".into(),
            at: 11_000,
            silenced: None,
            pages: vec![
                ("ops".into(), page(PageEvent::Trigger, "postcanary/social-mail/id-10")),
                ("mail".into(), page(PageEvent::Trigger, "postcanary/social-mail/id-10")),
            ],
        },
    };
    let id = s.apply_incident(&open).await.unwrap().unwrap();
    assert!(!s.unhandled_verdicts(100).await.unwrap().iter().any(|p| p.id == "id-10"));
    let inc = s.open_incident("paging-mail").await.unwrap().unwrap();
    assert_eq!((inc.id, inc.paged, inc.failures), (id, true, 1));
    assert!(
        s.apply_incident(&open).await.is_err(),
        "one open incident per channel, one incident per dedup key"
    );
    assert_eq!(s.open_incidents().await.unwrap().len(), 1);
    let (_, newest_failure) = s.channel_order("paging-mail").await.unwrap();
    assert_eq!(newest_failure, Some(10_000));

    // The outbox: per notifier, oldest first; the page carries the incident id.
    let head = s.outbox_head("ops").await.unwrap().unwrap();
    assert_eq!((head.page.incident_id, head.attempts), (id, 0));
    assert_eq!(
        s.outbox_depth().await.unwrap(),
        vec![("mail".to_string(), 1), ("ops".to_string(), 1)]
    );
    s.page_failed(head.id, 11_100, "503", 12_000, false).await.unwrap();
    let again = s.outbox_head("ops").await.unwrap().unwrap();
    assert_eq!(
        (again.id, again.attempts, again.next_attempt_at, again.first_failed_at),
        (head.id, 1, 12_000, Some(11_100))
    );
    s.page_fallback(head.id, "mail", 11_200).await.unwrap();
    s.page_fallback(head.id, "mail", 11_300).await.unwrap();
    assert_eq!(
        s.outbox_depth().await.unwrap(),
        vec![("mail".to_string(), 2), ("ops".to_string(), 1)],
        "one fallback copy per page"
    );
    assert!(s.outbox_head("ops").await.unwrap().unwrap().fallback_done);
    s.page_sent(head.id, 12_100).await.unwrap();
    assert!(s.outbox_head("ops").await.unwrap().is_none());
    let mail = s.outbox_head("mail").await.unwrap().unwrap();
    s.page_failed(mail.id, 12_200, "550 no", 13_000, true).await.unwrap();
    let mail2 = s.outbox_head("mail").await.unwrap().unwrap();
    assert_ne!(mail2.id, mail.id, "a permanent failure gives the page up");
    s.page_sent(mail2.id, 12_300).await.unwrap();
    assert!(s.outbox_depth().await.unwrap().is_empty());

    // Update, reminder, resolve; the timeline records each step in order.
    let upd = IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Update {
            incident_id: id,
            verdict: "rejected".into(),
            detail: "550".into(),
            at: 13_000,
        },
    };
    s.apply_incident(&upd).await.unwrap();
    let remind = IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Page {
            incident_id: id,
            at: 14_000,
            note: "reminder".into(),
            pages: vec![("ops".into(), page(PageEvent::Reminder, "postcanary/social-mail/id-10"))],
        },
    };
    s.apply_incident(&remind).await.unwrap();
    let inc = s.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (inc.failures, inc.verdict.as_str(), inc.last_paged_at),
        (2, "rejected", Some(14_000))
    );
    s.insert_probe(&paging(11, 15_000, 16_000)).await.unwrap();
    assert!(s.judge("id-11", &delivered(15_500)).await.unwrap());
    let resolve = IncidentChange {
        probe_id: Some("id-11".into()),
        reclassify: None,
        action: IncidentAction::Resolve {
            incident_id: id,
            at: 15_500,
            detail: "delivered again".into(),
            pages: vec![("ops".into(), page(PageEvent::Resolve, "postcanary/social-mail/id-10"))],
        },
    };
    s.apply_incident(&resolve).await.unwrap();
    assert!(s.open_incident("paging-mail").await.unwrap().is_none());
    let inc = s.incident(id).await.unwrap().unwrap();
    assert_eq!(
        (inc.resolved_at, inc.resolved_by.as_deref()),
        (Some(15_500), Some("id-11"))
    );
    let kinds: Vec<String> = s
        .incident_events(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "opened",
            "page-queued",
            "page-queued",
            "page-failed",
            "page-fallback",
            "page-accepted",
            "page-rejected",
            "page-accepted",
            "failure",
            "page",
            "page-queued",
            "resolved",
            "page-queued"
        ]
    );
    assert_eq!(s.recent_incidents(10).await.unwrap()[0].id, id);

    // Reclassify: a verdict turned into our own error, with its trail.
    s.insert_probe(&paging(12, 17_000, 18_000)).await.unwrap();
    s.record_sent("id-12", 17_100, "250 ok").await.unwrap();
    s.sweep(18_000, "run-p").await.unwrap();
    s.apply_incident(&IncidentChange {
        probe_id: Some("id-12".into()),
        reclassify: Some("relay down".into()),
        action: IncidentAction::Nothing,
    })
    .await
    .unwrap();
    let p = s.probe("id-12").await.unwrap().unwrap();
    assert_eq!((p.verdict, p.detail.as_deref()), (Verdict::Error, Some("relay down")));
    assert_eq!(
        s.events("id-12").await.unwrap().last().unwrap().detail,
        "error: relay down"
    );

    // Readers.
    let st = s
        .channel_status(&["paging-mail".to_string(), "nothing".to_string()], 20_000, 2)
        .await
        .unwrap();
    assert_eq!(st.len(), 2);
    assert_eq!(st[0].recent.len(), 2);
    assert_eq!(st[0].recent[0].id, "id-12", "newest first");
    let (judged, ok) = st[0].window_24h;
    assert!(judged >= 3 && ok >= 1 && ok < judged, "{:?}", st[0].window_24h);
    assert_eq!(st[1].window_30d, (0, 0));
    let since = s.probes_since("paging-mail", 15_000, 10).await.unwrap();
    assert_eq!(
        since.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        vec!["id-11", "id-12"]
    );
    let counts = s.verdict_counts().await.unwrap();
    assert!(
        counts.contains(&("paging-mail".to_string(), "delivered".to_string(), 1)),
        "{counts:?}"
    );
    assert!(
        counts.contains(&("paging-mail".to_string(), "error".to_string(), 1)),
        "{counts:?}"
    );
    let (le, n, sum) = s.latency_histogram(&[1]).await.unwrap();
    assert_eq!((le, n - n_before, sum - sum_before), (vec![0], 1, 15_400));
}
