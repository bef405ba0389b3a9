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
    channel_events(&s).await;
}

/// `channel_events`: the newest event of a kind per probe of one channel
/// since a time, newest probe first, at most `limit`.
async fn channel_events(s: &DynStore) {
    for (n, created) in [(1u32, 10_000i64), (2, 20_000), (3, 30_000), (4, 5_000)] {
        let mut p = probe(900 + n, Expect::Deliver, created, created + 1_000, "run-e");
        p.channel = "path-mail".into();
        s.insert_probe(&p).await.unwrap();
    }
    s.add_event("id-901", 10_001, "path", "{\"a\":1}").await.unwrap();
    s.add_event("id-902", 20_001, "path", "{\"a\":2}").await.unwrap();
    s.add_event("id-902", 20_002, "path", "{\"a\":3}").await.unwrap();
    s.add_event("id-903", 30_001, "foreign", "x").await.unwrap();
    s.add_event("id-904", 5_001, "path", "{\"a\":0}").await.unwrap();
    let got = s.channel_events("path-mail", "path", 6_000, 10).await.unwrap();
    let got: Vec<(&str, &str)> = got.iter().map(|(id, e)| (id.as_str(), e.detail.as_str())).collect();
    assert_eq!(got, vec![("id-902", "{\"a\":3}"), ("id-901", "{\"a\":1}")]);
    assert_eq!(s.channel_events("path-mail", "path", 0, 1).await.unwrap().len(), 1);
    assert!(s.channel_events("social-mail", "path", 0, 10).await.unwrap().is_empty());
}
