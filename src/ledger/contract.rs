//! The store contract: one suite, run against every backend.

use super::{
    Acknowledgement, Cursor, DynStore, IncidentAction, IncidentChange, NewProbe, NewSilence, PruneCut, DAY_MS,
};
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
    // Judged, so that nothing of this case is left pending for the later parts.
    for n in 901..=904 {
        assert!(s.judge(&format!("id-{n}"), &delivered(40_000)).await.unwrap());
    }
}

/// A probe of channel `channel` created at `created`, for the report cases.
fn at(channel: &str, n: u32, created: i64) -> NewProbe {
    NewProbe {
        id: format!("r-{channel}-{n}"),
        token: format!("pc-r-{channel}-{n}"),
        channel: channel.into(),
        kind: "mail".into(),
        expect: Expect::Deliver,
        inbox: Some("social".into()),
        target: "x@kommune.example".into(),
        created_at: created,
        deadline: created + 60_000,
        run_id: "run-r".into(),
    }
}

fn judged(verdict: Verdict, at: i64, latency: Option<i64>) -> Judgement {
    Judgement {
        verdict,
        detail: verdict.to_string(),
        at,
        found: latency.map(|_| Found {
            inbox: "social".into(),
            at,
        }),
        latency_ms: latency,
        fault: None,
    }
}

/// Reports and evidence: daily counts, incidents of a period, pages, blind spells.
async fn reports(s: &DynStore) {
    // Day 20,000 (2024-10-04) and the next, far from the other cases.
    let d0 = 20_000 * DAY_MS;
    let d1 = d0 + DAY_MS;
    let rows = [
        ("rep-a", 1, d0 + 1_000, Some((Verdict::Delivered, Some(2_000)))),
        ("rep-a", 2, d0 + 2_000, Some((Verdict::Delivered, Some(4_000)))),
        ("rep-a", 3, d0 + 3_000, Some((Verdict::Missed, None))),
        ("rep-a", 4, d0 + 4_000, Some((Verdict::Error, None))),
        ("rep-a", 5, d1 - 1, None),
        ("rep-a", 6, d1, Some((Verdict::ExpectedBounce, None))),
        ("rep-b", 1, d0 + 5, Some((Verdict::Rejected, None))),
    ];
    for (ch, n, created, verdict) in rows {
        s.insert_probe(&at(ch, n, created)).await.unwrap();
        if let Some((v, lat)) = verdict {
            assert!(s
                .judge(&format!("r-{ch}-{n}"), &judged(v, created + 10, lat))
                .await
                .unwrap());
        }
    }
    let a = s.daily_counts(&["rep-a".to_string()], d0, d1 + DAY_MS).await.unwrap();
    assert_eq!(a.len(), 2, "one entry per day with probes: {a:?}");
    let day0 = &a[0];
    assert_eq!(
        (
            day0.channel.as_str(),
            day0.day,
            day0.judged,
            day0.successful,
            day0.errors,
            day0.pending
        ),
        ("rep-a", d0, 4, 2, 1, 1)
    );
    assert_eq!(
        (day0.latency_count, day0.latency_sum, day0.latency_max),
        (2, 6_000, 4_000)
    );
    assert_eq!(
        (a[1].day, a[1].judged, a[1].successful),
        (d1, 1, 1),
        "a probe counts on its creation day"
    );
    let only_d0 = s.daily_counts(&[], d0, d1).await.unwrap();
    let chans: Vec<&str> = only_d0.iter().map(|c| c.channel.as_str()).collect();
    assert_eq!(chans, vec!["rep-a", "rep-b"], "no filter: every channel, by name");

    // Incidents of a period: open at any moment of it.
    let open = |channel: &str, key: &str, at: i64, pages: bool| IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Open {
            channel: channel.into(),
            dedup_key: key.into(),
            verdict: "missed".into(),
            detail: "nothing".into(),
            at,
            silenced: None,
            pages: if pages {
                vec![(
                    "oncall".to_string(),
                    page(crate::page::PageEvent::Trigger, "postcanary/social-mail/r"),
                )]
            } else {
                Vec::new()
            },
        },
    };
    let early = s
        .apply_incident(&open("rep-a", "k-early", d0 + 3_100, true))
        .await
        .unwrap()
        .unwrap();
    s.apply_incident(&IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Resolve {
            incident_id: early,
            at: d0 + 50_000,
            detail: "delivered".into(),
            pages: Vec::new(),
        },
    })
    .await
    .unwrap();
    let later = s
        .apply_incident(&open("rep-b", "k-later", d1 + 10, false))
        .await
        .unwrap()
        .unwrap();
    let ids = |v: Vec<super::Incident>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(ids(s.incidents_between(d0, d1).await.unwrap()), vec![early]);
    assert_eq!(
        ids(s.incidents_between(d0 + 50_000, d1 + 20).await.unwrap()),
        vec![early, later],
        "resolved at the period's first moment still counts; an open one counts"
    );
    assert_eq!(
        ids(s.incidents_between(d0 + 50_001, d1).await.unwrap()),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(s.incidents_between(d1 + 11, d1 + DAY_MS).await.unwrap()),
        vec![later]
    );

    // Pages: written pending, accepted with their time.
    let pages = s.incident_pages(early).await.unwrap();
    assert_eq!(pages.len(), 1);
    assert_eq!(
        (
            pages[0].notifier.as_str(),
            pages[0].event.as_str(),
            pages[0].state.as_str(),
            pages[0].sent_at
        ),
        ("oncall", "trigger", "pending", None)
    );
    s.page_sent(pages[0].id, d0 + 3_900).await.unwrap();
    let pages = s.incident_pages(early).await.unwrap();
    assert_eq!((pages[0].state.as_str(), pages[0].sent_at), ("sent", Some(d0 + 3_900)));
    assert!(s.incident_pages(later).await.unwrap().is_empty());

    // Blind spells: the first moment is kept, a second report only updates
    // the reason; the end closes it; overlap selects.
    s.blind_started("social", "social", d0 + 100, "connecting")
        .await
        .unwrap();
    s.blind_started("social", "social", d0 + 200, "login refused")
        .await
        .unwrap();
    s.blind_ended("social", d0 + 1_100).await.unwrap();
    s.blind_ended("social", d0 + 9_999).await.unwrap();
    s.blind_started("social (Junk)", "social", d0 + 5_000, "connection refused")
        .await
        .unwrap();
    let spells = s.blind_spells(d0, d1).await.unwrap();
    let got: Vec<_> = spells
        .iter()
        .map(|b| (b.watcher.as_str(), b.since, b.until, b.why.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("social", d0 + 100, Some(d0 + 1_100), "login refused"),
            ("social (Junk)", d0 + 5_000, None, "connection refused"),
        ]
    );
    assert_eq!(
        s.blind_spells(d0 + 1_100, d0 + 5_000).await.unwrap().len(),
        0,
        "touching is not overlapping"
    );
    assert_eq!(
        s.blind_spells(d1, d1 + 1).await.unwrap().len(),
        1,
        "an open spell lasts"
    );
}

/// Retention: rollups outlive their probes, pruning keeps what incidents
/// need, successes are slimmed, status windows read the rollups.
async fn retention(s: &DynStore) {
    let d0 = 21_000 * DAY_MS;
    let (d1, d2) = (d0 + DAY_MS, d0 + 2 * DAY_MS);
    let handled = |id: &str| IncidentChange {
        probe_id: Some(id.to_string()),
        reclassify: None,
        action: IncidentAction::Nothing,
    };
    let mut ids = Vec::new();
    for (ch, n, created, v) in [
        ("ret-a", 1, d0 + 1_000, Verdict::Delivered),
        ("ret-a", 2, d0 + 2_000, Verdict::Delivered),
        ("ret-a", 3, d0 + 3_000, Verdict::Missed),
        ("ret-a", 4, d1 + 1_000, Verdict::Delivered),
        ("ret-a", 5, d2 + 1_000, Verdict::Delivered),
        ("ret-b", 1, d0 + 500, Verdict::Delivered),
        ("ret-b", 2, d0 + 4_000, Verdict::Missed),
        ("ret-b", 3, d0 + 9_000, Verdict::Missed),
    ] {
        s.insert_probe(&at(ch, n, created)).await.unwrap();
        let id = format!("r-{ch}-{n}");
        let lat = v.is_success().then_some(1_000);
        assert!(s.judge(&id, &judged(v, created + 10, lat)).await.unwrap());
        ids.push(id);
    }
    for id in ["r-ret-a-1", "r-ret-a-2", "r-ret-a-5", "r-ret-b-1", "r-ret-b-3"] {
        s.apply_incident(&handled(id)).await.unwrap();
    }
    let open = |channel: &str, probe: &str, at: i64| IncidentChange {
        probe_id: Some(probe.into()),
        reclassify: None,
        action: IncidentAction::Open {
            channel: channel.into(),
            dedup_key: format!("k-{probe}"),
            verdict: "missed".into(),
            detail: "nothing".into(),
            at,
            silenced: None,
            pages: Vec::new(),
        },
    };
    // ret-a: resolved incident (opened by its miss, resolved by the next delivery); ret-b: still open.
    let a = s
        .apply_incident(&open("ret-a", "r-ret-a-3", d0 + 4_000))
        .await
        .unwrap()
        .unwrap();
    s.apply_incident(&IncidentChange {
        probe_id: Some("r-ret-a-4".into()),
        reclassify: None,
        action: IncidentAction::Resolve {
            incident_id: a,
            at: d1 + 2_000,
            detail: "delivered".into(),
            pages: Vec::new(),
        },
    })
    .await
    .unwrap();
    s.apply_incident(&open("ret-b", "r-ret-b-2", d0 + 5_000)).await.unwrap();

    let live = s
        .daily_counts(&["ret-a".to_string()], d0, d0 + 3 * DAY_MS)
        .await
        .unwrap();
    assert!(s.roll_up(d0, d1).await.unwrap() >= 2, "ret-a and ret-b on day 0");
    let rolled = s
        .daily_counts(&["ret-a".to_string()], d0, d0 + 3 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(live, rolled, "a rollup says what the probes say");

    let stats = s
        .prune(&PruneCut {
            probes_before: Some(d2),
            rollups_before: None,
            slim_before: d2 + DAY_MS,
        })
        .await
        .unwrap();
    assert!(stats.probes_removed >= 3, "{stats:?}");
    for gone in ["r-ret-a-1", "r-ret-a-2", "r-ret-b-1"] {
        assert!(s.probe(gone).await.unwrap().is_none(), "{gone} pruned");
        assert!(s.events(gone).await.unwrap().is_empty(), "{gone}'s evidence pruned");
    }
    for kept in ["r-ret-a-3", "r-ret-a-4", "r-ret-b-2", "r-ret-b-3"] {
        assert!(s.probe(kept).await.unwrap().is_some(), "{kept} kept for an incident");
    }
    assert!(
        !s.events("r-ret-b-3").await.unwrap().is_empty(),
        "an open incident's failure keeps its evidence"
    );
    assert!(
        s.probe("id-6").await.unwrap().is_some(),
        "a pending probe is never pruned"
    );
    let after = s
        .daily_counts(&["ret-a".to_string()], d0, d0 + 3 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(after, live, "pruned days are counted from their rollups");
    // A later roll-up cannot recount a pruned day from the probes left.
    s.roll_up(d0, d0 + 3 * DAY_MS).await.unwrap();
    assert_eq!(
        s.daily_counts(&["ret-a".to_string()], d0, d0 + 3 * DAY_MS)
            .await
            .unwrap(),
        live
    );

    // The slimmed success keeps its verdict, times, place and reply; not its trail.
    let slim = s.probe("r-ret-a-5").await.unwrap().unwrap();
    assert_eq!(
        (
            slim.verdict,
            slim.found_in.as_deref(),
            slim.latency_ms,
            slim.detail.as_deref()
        ),
        (Verdict::Delivered, Some("social"), Some(1_000), None)
    );
    assert_eq!(slim.created_at, d2 + 1_000);
    // Its token reads as written (a backend may keep it as `pc-` + id) and still finds it.
    assert_eq!(slim.token, "pc-r-ret-a-5");
    let by_token = s.probe_by_token("pc-r-ret-a-5").await.unwrap().unwrap();
    assert_eq!(
        (by_token.id.as_str(), by_token.token.as_str()),
        ("r-ret-a-5", "pc-r-ret-a-5")
    );
    assert!(s.probe_by_token("pc-r-ret-a-9").await.unwrap().is_none());
    assert!(s.events("r-ret-a-5").await.unwrap().is_empty());
    assert!(
        !s.events("r-ret-a-4").await.unwrap().is_empty(),
        "the success that resolved an incident keeps its evidence"
    );

    // Status windows (whole UTC days) read the rollups of pruned days.
    let st = s
        .channel_status(&["ret-a".to_string()], d2 + 3_600_000, 5)
        .await
        .unwrap();
    assert_eq!(st[0].window_30d, (5, 4));
    assert_eq!(st[0].window_7d, (5, 4));
    assert_eq!(st[0].window_24h, (1, 1));

    // Old rollups go.
    let stats = s
        .prune(&PruneCut {
            probes_before: None,
            rollups_before: Some(d1),
            slim_before: d2 + DAY_MS,
        })
        .await
        .unwrap();
    assert!(stats.rollups_removed >= 2, "{stats:?}");
    let left = s
        .daily_counts(&["ret-a".to_string()], d0, d0 + 3 * DAY_MS)
        .await
        .unwrap();
    assert_eq!(left.iter().map(|d| d.day).collect::<Vec<_>>(), vec![d1, d2]);
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
        by: None,
    }
}

/// Incidents, the outbox and the readers: what paging and the status page rely on.
/// Reports and retention (rollups, pruning, blind spells); after `run_all` on the same store.
pub async fn run_reports(s: DynStore) {
    reports(&s).await;
    retention(&s).await;
}

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

fn ops_page(event: PageEvent, by: Option<&str>) -> Page {
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
pub async fn run_ops(s: DynStore) {
    let s = &s;
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
            pages: vec![("pd".into(), ops_page(PageEvent::Trigger, None))],
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
            pages: vec![("og".into(), ops_page(PageEvent::Trigger, None))],
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
    let pages = s.pages_of(&[id]).await.unwrap();
    let got: Vec<(&str, &str, &str)> = pages
        .iter()
        .map(|p| (p.notifier.as_str(), p.event.as_str(), p.state.as_str()))
        .collect();
    assert_eq!(got, vec![("pd", "trigger", "pending"), ("og", "trigger", "pending")]);
    assert!(s.pages_of(&[id + 1000]).await.unwrap().is_empty());

    // Acknowledge: once, with its timeline entry, pages and audit row.
    let ack = Acknowledgement {
        incident_id: id,
        by: "anne".into(),
        note: "looking at the relay".into(),
        at: 12_000,
        pages: vec![("pd".into(), ops_page(PageEvent::Acknowledge, Some("anne")))],
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

/// Retention canaries' checks: scheduled once per age, due in order, a
/// fault of ours keeps the check due (later), a result is recorded once, a
/// `lost` closes the later checks of its canary, counts per channel, and
/// pruning keeps a canary while a check is due.
pub async fn run_retain(s: DynStore) {
    use super::{NewRetainCheck, RetainResult};
    let t0 = 40 * DAY_MS;
    s.insert_probe(&probe(70, Expect::Deliver, t0, t0 + 1_000, "run-r"))
        .await
        .unwrap();
    assert!(s.judge("id-70", &delivered(t0 + 500)).await.unwrap());
    let check = |age: &str, age_ms: i64| NewRetainCheck {
        probe_id: "id-70".into(),
        channel: "social-mail".into(),
        age: age.into(),
        age_ms,
        due_at: t0 + 500 + age_ms,
    };
    let ages = [check("1d", DAY_MS), check("7d", 7 * DAY_MS), check("30d", 30 * DAY_MS)];
    s.retain_schedule(&ages).await.unwrap();
    // Scheduling again (a second copy of the canary) changes nothing.
    s.retain_schedule(&ages[..1]).await.unwrap();
    let all = s.retain_checks("id-70").await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    assert!(all
        .iter()
        .all(|c| c.state == "due" && c.attempts == 0 && c.result.is_none()));
    assert_eq!(s.retain_next().await.unwrap(), Some(t0 + 500 + DAY_MS));
    assert!(s.retain_due(t0 + DAY_MS, 10).await.unwrap().is_empty());
    let due = s.retain_due(t0 + 500 + DAY_MS, 10).await.unwrap();
    assert_eq!(due.iter().map(|c| c.age.as_str()).collect::<Vec<_>>(), ["1d"]);
    let first = due[0].id;

    // Our own fault: still due, tried again later, the reason kept.
    s.retain_fault(first, t0 + 500 + DAY_MS, "IMAP login refused", t0 + 2 * DAY_MS)
        .await
        .unwrap();
    assert!(s.retain_due(t0 + 500 + DAY_MS, 10).await.unwrap().is_empty());
    let again = s.retain_due(t0 + 2 * DAY_MS, 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    assert_eq!(again[0].state, "due");
    assert_eq!(again[0].detail.as_deref(), Some("IMAP login refused"));
    assert_eq!(again[0].due_at, t0 + 500 + DAY_MS, "the due time itself stays");
    assert_eq!(
        again[0].fault_since,
        Some(t0 + 500 + DAY_MS),
        "a run of faults starts at its first"
    );
    // More faults: counted, the newest reason kept, `fault_since` still the first's.
    s.retain_fault(
        first,
        t0 + 2 * DAY_MS,
        "IMAP: connection refused",
        t0 + 2 * DAY_MS + 4_000,
    )
    .await
    .unwrap();
    s.retain_fault(first, t0 + 2 * DAY_MS + 4_000, "IMAP: timed out", t0 + 2 * DAY_MS)
        .await
        .unwrap();
    let again = s.retain_due(t0 + 2 * DAY_MS + 4_000, 10).await.unwrap();
    assert_eq!(again.len(), 1, "a retry never goes back before the fault: {again:?}");
    assert_eq!(again[0].next_at, t0 + 2 * DAY_MS + 4_000);
    assert_eq!(again[0].attempts, 3);
    assert_eq!(again[0].detail.as_deref(), Some("IMAP: timed out"));
    assert_eq!(again[0].fault_since, Some(t0 + 500 + DAY_MS), "{again:?}");

    // Kept: recorded once, with its hash.
    let kept = RetainResult {
        at: t0 + 2 * DAY_MS,
        result: "kept".into(),
        detail: "found in Arkiv/Postcanary".into(),
        content_hash: Some("sha256:aa".into()),
    };
    assert!(s.retain_record(first, &kept).await.unwrap());
    assert!(
        !s.retain_record(first, &kept).await.unwrap(),
        "a result is recorded once"
    );
    let done = s.retain_checks("id-70").await.unwrap();
    assert_eq!(done[0].fault_since, None, "a result ends the run of faults");
    assert_eq!(s.retain_next().await.unwrap(), Some(t0 + 500 + 7 * DAY_MS));

    // Pruning everything before the canary's day keeps it: a check is due.
    let cut = PruneCut {
        probes_before: Some(t0 + 60 * DAY_MS),
        rollups_before: None,
        slim_before: t0,
    };
    s.prune(&cut).await.unwrap();
    assert!(
        s.probe("id-70").await.unwrap().is_some(),
        "a canary with a due check is kept"
    );

    // Lost at 7d: the 30d check is closed with it.
    let seven = s.retain_due(t0 + 500 + 7 * DAY_MS, 10).await.unwrap();
    assert_eq!(seven.len(), 1);
    let lost = RetainResult {
        at: t0 + 500 + 7 * DAY_MS,
        result: "lost".into(),
        detail: "archived canary deleted between … and …".into(),
        content_hash: None,
    };
    assert!(s.retain_record(seven[0].id, &lost).await.unwrap());
    assert_eq!(s.retain_next().await.unwrap(), None);
    let all = s.retain_checks("id-70").await.unwrap();
    let states: Vec<(&str, Option<&str>)> = all.iter().map(|c| (c.state.as_str(), c.result.as_deref())).collect();
    assert_eq!(
        states,
        [("done", Some("kept")), ("done", Some("lost")), ("skipped", None)]
    );
    assert_eq!(all[0].content_hash.as_deref(), Some("sha256:aa"));
    assert_eq!(all[0].checked_at, Some(t0 + 2 * DAY_MS));

    // The channel's checks, newest due first; counts per channel in a period.
    let ch = s.retain_channel("social-mail", 2).await.unwrap();
    assert_eq!(ch.iter().map(|c| c.age.as_str()).collect::<Vec<_>>(), ["30d", "7d"]);
    let counts = s.retain_counts(t0, t0 + 31 * DAY_MS).await.unwrap();
    assert_eq!(
        counts,
        [super::RetainCounts {
            channel: "social-mail".into(),
            kept: 1,
            lost: 1,
            altered: 0
        }]
    );
    assert!(s.retain_counts(t0, t0 + DAY_MS).await.unwrap().is_empty());
    // A lost canary's probe stays for good (its evidence).
    if s.prune(&cut).await.is_ok() {
        assert!(s.probe("id-70").await.unwrap().is_some(), "a lost canary is kept");
    }

    // The evidence of a retention incident opened at 7d: the last kept
    // check before it, then every check of the channel checked in its span.
    let span = s
        .retain_span("social-mail", t0 + 500 + 7 * DAY_MS, t0 + 8 * DAY_MS, 100)
        .await
        .unwrap();
    let seen: Vec<(&str, Option<&str>)> = span.iter().map(|c| (c.age.as_str(), c.result.as_deref())).collect();
    assert_eq!(seen, [("1d", Some("kept")), ("7d", Some("lost"))], "{span:?}");
    assert_eq!(
        span[1].detail.as_deref(),
        Some("archived canary deleted between … and …")
    );
    let later = s
        .retain_span("social-mail", t0 + 8 * DAY_MS, t0 + 9 * DAY_MS, 100)
        .await
        .unwrap();
    assert_eq!(
        later.iter().map(|c| c.age.as_str()).collect::<Vec<_>>(),
        ["1d"],
        "only the last kept check before the span: {later:?}"
    );
    assert!(s
        .retain_span("other-channel", t0, t0 + 9 * DAY_MS, 100)
        .await
        .unwrap()
        .is_empty());

    // An orphaned check (channel gone, `retain` gone, probe pruned) is closed
    // as `skipped` with the reason, once; it is not due any more and counts
    // as no result.
    s.insert_probe(&probe(71, Expect::Deliver, t0, t0 + 1_000, "run-r"))
        .await
        .unwrap();
    assert!(s.judge("id-71", &delivered(t0 + 500)).await.unwrap());
    s.retain_schedule(&[NewRetainCheck {
        probe_id: "id-71".into(),
        channel: "gone-channel".into(),
        age: "1d".into(),
        age_ms: DAY_MS,
        due_at: t0 + 500 + DAY_MS,
    }])
    .await
    .unwrap();
    let orphan = s.retain_due(t0 + 500 + DAY_MS, 10).await.unwrap();
    assert_eq!(orphan.len(), 1, "{orphan:?}");
    s.retain_fault(orphan[0].id, t0 + 500 + DAY_MS, "IMAP login refused", t0 + 600 + DAY_MS)
        .await
        .unwrap();
    let at = t0 + 700 + DAY_MS;
    assert!(s
        .retain_skip(orphan[0].id, at, "the channel is not configured any more")
        .await
        .unwrap());
    assert!(
        !s.retain_skip(orphan[0].id, at + 1, "again").await.unwrap(),
        "only a due check is closed"
    );
    assert!(s.retain_due(t0 + 30 * DAY_MS, 10).await.unwrap().is_empty());
    let closed = s.retain_checks("id-71").await.unwrap();
    assert_eq!(closed[0].state, "skipped");
    assert_eq!(closed[0].result, None);
    assert_eq!(closed[0].checked_at, Some(at));
    assert_eq!(closed[0].fault_since, None);
    assert_eq!(
        closed[0].detail.as_deref(),
        Some("the channel is not configured any more")
    );
    let kept_result = RetainResult {
        at: at + 2,
        result: "kept".into(),
        detail: "late".into(),
        content_hash: None,
    };
    assert!(
        !s.retain_record(closed[0].id, &kept_result).await.unwrap(),
        "a skipped check takes no result"
    );
    assert!(s
        .retain_counts(t0, t0 + 31 * DAY_MS)
        .await
        .unwrap()
        .iter()
        .all(|c| c.channel != "gone-channel"));
}

/// Per-vantage counts: `east` and `west` are the same ledger seen by two
/// vantage points' stores, `plain` by one without a vantage (its probes are
/// not split). Probes count by creation time in `[from, to)`.
pub async fn run_vantages(east: DynStore, west: DynStore, plain: DynStore) {
    let d0 = 30_000 * DAY_MS;
    let rows: [(&DynStore, &str, u32, i64, Option<Verdict>); 8] = [
        (&east, "van-a", 1, d0 + 1_000, Some(Verdict::Delivered)),
        (&east, "van-a", 2, d0 + 2_000, Some(Verdict::Missed)),
        (&east, "van-a", 3, d0 + 3_000, Some(Verdict::Error)),
        (&east, "van-a", 4, d0 + 4_000, None),
        (&west, "van-a", 5, d0 + 1_000, Some(Verdict::Delivered)),
        (&west, "van-b", 6, d0 + 1_000, Some(Verdict::ExpectedBounce)),
        (&plain, "van-a", 7, d0 + 1_000, Some(Verdict::Missed)),
        // After the period's end: not counted.
        (&west, "van-a", 8, d0 + DAY_MS, Some(Verdict::Missed)),
    ];
    for (s, ch, n, created, verdict) in rows {
        s.insert_probe(&at(ch, n, created)).await.unwrap();
        if let Some(v) = verdict {
            assert!(s
                .judge(&format!("r-{ch}-{n}"), &judged(v, created + 10, None))
                .await
                .unwrap());
        }
    }
    // (channel, vantage, judged, successful, errors, pending) of each count.
    fn tuples(counts: &[super::VantageCounts]) -> Vec<(&str, &str, i64, i64, i64, i64)> {
        counts
            .iter()
            .map(|c| {
                (
                    c.channel.as_str(),
                    c.vantage.as_str(),
                    c.judged,
                    c.successful,
                    c.errors,
                    c.pending,
                )
            })
            .collect()
    }
    let all = plain.vantage_counts(&[], d0, d0 + DAY_MS).await.unwrap();
    assert_eq!(
        tuples(&all),
        vec![
            ("van-a", "east", 3, 1, 1, 1),
            ("van-a", "west", 1, 1, 0, 0),
            ("van-b", "west", 1, 1, 0, 0),
        ],
        "per channel and vantage; probes without a vantage and after the period not counted"
    );
    let only_b = east
        .vantage_counts(&["van-b".to_string()], d0, d0 + DAY_MS)
        .await
        .unwrap();
    assert_eq!(only_b.len(), 1, "{only_b:?}");
    assert_eq!(only_b[0].vantage, "west", "any store reads every vantage's counts");
    assert!(east
        .vantage_counts(&["nobody".to_string()], d0, d0 + DAY_MS)
        .await
        .unwrap()
        .is_empty());

    // Rolled up, the whole day is read from the per-vantage rollups and
    // says what its probes said; a period that starts mid-day counts its
    // partial day from the probes.
    plain.roll_up(d0, d0 + 2 * DAY_MS).await.unwrap();
    assert_eq!(
        plain.vantage_counts(&[], d0, d0 + DAY_MS).await.unwrap(),
        all,
        "rollups = probes"
    );
    let tail = plain.vantage_counts(&[], d0 + 1_500, d0 + DAY_MS).await.unwrap();
    assert_eq!(
        tuples(&tail),
        vec![("van-a", "east", 2, 0, 1, 1)],
        "a partial day from its probes"
    );
    // The day's probes pruned (but the pending one): the rollups still split it per vantage.
    plain
        .prune(&PruneCut {
            probes_before: Some(d0 + DAY_MS),
            rollups_before: None,
            slim_before: d0,
        })
        .await
        .unwrap();
    assert_eq!(
        plain.vantage_counts(&[], d0, d0 + DAY_MS).await.unwrap(),
        all,
        "a pruned day is counted from its per-vantage rollups"
    );
    // Rollups past keep_rollups go, the per-vantage ones with them.
    let stats = plain
        .prune(&PruneCut {
            probes_before: None,
            rollups_before: Some(d0 + DAY_MS),
            slim_before: d0,
        })
        .await
        .unwrap();
    assert!(stats.rollups_removed >= 3 + 2, "{stats:?}");
}
