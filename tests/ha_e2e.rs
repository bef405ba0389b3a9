//! High availability on a real PostgreSQL: the fence refuses a former
//! active's writes; three `postcanary run` daemons on one ledger — kill -9
//! the active with probes pending and pages queued, a standby takes over
//! within the lease + 5 s, nothing is lost, judged twice or paged twice; cut
//! the active's connection to Postgres (a TCP proxy), a standby takes over
//! and the former active, back, pages nothing twice.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postcanary::config::Expect;
use postcanary::ha::Lease;
use postcanary::ledger::postgres::Fence;
use postcanary::ledger::{postgres::PostgresStore, IncidentAction, IncidentChange, NewProbe, Store};
use postcanary::sandbox::Route;
use postcanary::verdict::Verdict;
use support::faultproxy::FaultProxy;
use support::hadaemons::{accepted, count, logs, queued, setup, wait_active, wait_until, Daemon, Setup, LEASE};
use support::postgres::Postgres;

fn new_probe(id: &str) -> NewProbe {
    NewProbe {
        id: id.into(),
        token: format!("pc-{id}"),
        channel: "ch".into(),
        kind: "mail".into(),
        expect: Expect::Deliver,
        inbox: Some("social".into()),
        target: "ch@sandbox.test".into(),
        created_at: 1_000,
        deadline: 2_000,
        run_id: "run".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_generation_can_neither_judge_nor_page() {
    let pg = Postgres::start();
    let base = PostgresStore::open(&pg.ledger()).await.unwrap();
    let a = Lease::new(base.clone(), "a", LEASE);
    let b = Lease::new(base.clone(), "b", LEASE);
    let ga = a.try_acquire().await.unwrap().expect("a takes the free lease");
    assert_eq!(b.try_acquire().await.unwrap(), None, "a live lease is not taken over");
    let sa = base.fenced(Fence {
        holder: "a".into(),
        generation: ga,
    });
    sa.insert_probe(&new_probe("p1")).await.unwrap();
    sa.record_sent("p1", 1_100, "250 ok").await.unwrap();
    sa.insert_probe(&new_probe("p2")).await.unwrap();
    sa.record_sent("p2", 1_100, "250 ok").await.unwrap();
    let open = IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Open {
            channel: "ch".into(),
            dedup_key: "postcanary/ch/p0".into(),
            verdict: "missed".into(),
            detail: "nothing".into(),
            at: 1_500,
            silenced: None,
            pages: vec![],
        },
    };
    let incident = sa.apply_incident(&open).await.unwrap().unwrap();
    assert!(a.renew(ga).await.unwrap());

    // a's lease runs out (as when it is cut off), b takes over with a higher generation.
    pg.psql_on("postcanary", "UPDATE ha_lease SET expires_at = now()");
    assert!(!a.renew(ga).await.unwrap(), "an expired lease is not renewed");
    let gb = b.try_acquire().await.unwrap().expect("b takes the expired lease");
    assert!(gb > ga);
    let sb = base.fenced(Fence {
        holder: "b".into(),
        generation: gb,
    });

    // Everything a judges or pages is refused; what it only records passes.
    let refused = |r: Result<(), postcanary::ledger::StoreError>, what: &str| {
        let e = r.expect_err(what).to_string();
        assert!(e.contains("write refused"), "{what}: {e}");
    };
    refused(sa.insert_probe(&new_probe("p3")).await, "insert_probe");
    let j = postcanary::verdict::Judgement {
        verdict: Verdict::Delivered,
        detail: "ok".into(),
        at: 1_600,
        found: None,
        latency_ms: Some(500),
        fault: None,
    };
    refused(sa.judge("p1", &j).await.map(|_| ()), "judge");
    refused(sa.sweep(2_000, "other").await.map(|_| ()), "sweep");
    let page = postcanary::notify::Page {
        event: postcanary::notify::PageEvent::Reminder,
        dedup_key: "postcanary/ch/p0".into(),
        incident_id: 0,
        channel: "ch".into(),
        channel_name: "ch".into(),
        owner: "ops".into(),
        target: "ch@sandbox.test".into(),
        verdict: "missed".into(),
        detail: "nothing".into(),
        summary: "ch: missed".into(),
        opened_at: 1_500,
        at: 1_700,
        probe_token: None,
        timeline: vec![],
        source: "test".into(),
        by: None,
    };
    let remind = IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Page {
            incident_id: incident,
            at: 1_700,
            note: "reminder".into(),
            pages: vec![("ops".into(), page)],
        },
    };
    refused(sa.apply_incident(&remind).await.map(|_| ()), "apply_incident");
    refused(sa.set_dns_baseline("x.example", "{}", 1).await, "set_dns_baseline");
    sa.add_event("p1", 1_650, "note", "evidence still lands").await.unwrap();
    assert_eq!(
        sa.probe("p1").await.unwrap().unwrap().verdict,
        Verdict::Pending,
        "reads work"
    );

    // b works; the page it queues is claimed by b, and a cannot claim it.
    assert!(sb.judge("p1", &j).await.unwrap());
    assert_eq!(sb.sweep(2_000, "other").await.unwrap().len(), 1);
    sb.apply_incident(&remind).await.unwrap();
    refused(sa.outbox_head("ops").await.map(|_| ()), "outbox_head");
    let head = sb.outbox_head("ops").await.unwrap().expect("b's page");
    assert_eq!(
        pg.psql_on(
            "postcanary",
            &format!(
                "SELECT claimed_by || ':' || claimed_generation FROM outbox WHERE id = {}",
                head.id
            )
        ),
        format!("b:{gb}")
    );
    refused(sa.page_failed(head.id, 1_800, "x", 1_900, false).await, "page_failed");
    refused(sa.page_fallback(head.id, "mail", 1_800).await, "page_fallback");
    // A former active whose notifier accepted a page may still say so: it prevents a resend.
    sa.page_sent(head.id, 1_800).await.unwrap();
    assert!(sb.outbox_head("ops").await.unwrap().is_none());
    // Once b releases, a may come back with a new generation.
    b.release(gb).await.unwrap();
    assert_eq!(a.try_acquire().await.unwrap(), Some(gb + 1));
}

fn assert_once_each(s: &Setup, ds: &[Daemon]) {
    let got = accepted(&s.hook);
    let doubled: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "pages accepted twice: {doubled:?}\n{}", logs(ds));
    let sent: BTreeSet<_> = got.keys().cloned().collect();
    assert_eq!(sent, queued(&s.pg), "every queued page was accepted once\n{}", logs(ds));
    let twice = s.pg.psql_on(
        "postcanary",
        "SELECT probe_id FROM probe_events WHERE kind = 'verdict' GROUP BY probe_id HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "probes judged twice: {twice}\n{}", logs(ds));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_of_the_active_hands_over_within_the_lease_and_loses_nothing() {
    let s = setup(4, 2, "4s").await;
    let config = s.config.replace("@PGPORT@", &s.pg.port.to_string());
    s.hook.set_status(503);
    let pw = s.pg.password.clone();
    let mut ds: Vec<Daemon> = ["d1", "d2", "d3"]
        .iter()
        .map(|n| Daemon::start(s.dir.path(), n, &config, &pw))
        .collect();
    let active = wait_active(&ds, &[0, 1, 2], Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no instance became active\n{}", logs(&ds)));
    // The others stand by once they are up (one may still be waiting for
    // the first one's migrations when another is already active).
    for (i, d) in ds.iter().enumerate() {
        if i != active {
            let started = std::time::Instant::now();
            let mut role = d.role().await;
            while role != "standby" && started.elapsed() < Duration::from_secs(20) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                role = d.role().await;
            }
            assert_eq!(role, "standby", "{}\n{}", d.name, logs(&ds));
        }
    }
    // Pages queued (the receiver is down) and probes pending.
    let ready = wait_until(Duration::from_secs(40), || {
        count(&s.pg, "SELECT count(*) FROM outbox WHERE state = 'pending'") >= 2
            && count(&s.pg, "SELECT count(*) FROM probes WHERE verdict = 'pending'") >= 1
    })
    .await;
    assert!(ready, "no pages queued and probes pending\n{}", logs(&ds));
    let before: BTreeSet<String> =
        s.pg.psql_on("postcanary", "SELECT id FROM probes")
            .lines()
            .map(str::to_string)
            .collect();
    let generation = count(&s.pg, "SELECT generation FROM ha_lease");
    let killed = Instant::now();
    ds[active].kill9();
    let others: Vec<usize> = (0..3).filter(|i| *i != active).collect();
    let next = wait_active(&ds, &others, LEASE + Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no standby took over within lease + 5 s\n{}", logs(&ds)));
    let takeover = killed.elapsed();
    assert!(takeover <= LEASE + Duration::from_secs(5), "{takeover:?}");
    assert!(count(&s.pg, "SELECT generation FROM ha_lease") > generation);
    eprintln!("takeover by {} after {takeover:?}", ds[next].name);

    // The receiver comes back: every page goes out once; every probe gets a verdict.
    s.hook.set_status(202);
    let ids = before.iter().map(|i| format!("'{i}'")).collect::<Vec<_>>().join(",");
    let done = wait_until(Duration::from_secs(40), || {
        count(
            &s.pg,
            &format!("SELECT count(*) FROM probes WHERE verdict = 'pending' AND id IN ({ids})"),
        ) == 0
            && count(&s.pg, "SELECT count(*) FROM outbox WHERE state = 'pending'") == 0
    })
    .await;
    assert!(done, "probes still pending or pages still queued\n{}", logs(&ds));
    // Stop the rest before counting, so no page is in flight.
    for d in &mut ds {
        d.kill9();
    }
    assert_eq!(
        count(&s.pg, &format!("SELECT count(*) FROM probes WHERE id IN ({ids})")),
        i64::try_from(before.len()).unwrap(),
        "no probe lost"
    );
    assert!(
        !accepted(&s.hook).is_empty()
            && accepted(&s.hook)
                .keys()
                .any(|(k, e)| k.contains("hole-") && e == "trigger"),
        "the black holes were paged: {:?}",
        accepted(&s.hook)
    );
    assert_once_each(&s, &ds);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_active_is_replaced_and_pages_nothing_twice_when_it_returns() {
    let s = setup(3, 2, "4s").await;
    let proxy = Arc::new(FaultProxy::start(s.pg.port));
    let pw = s.pg.password.clone();
    let via_proxy = s.config.replace("@PGPORT@", &proxy.port.to_string());
    let direct = s.config.replace("@PGPORT@", &s.pg.port.to_string());
    // d1 (through the proxy) first, so it is the active one.
    let mut ds = vec![Daemon::start(s.dir.path(), "d1", &via_proxy, &pw)];
    assert_eq!(
        wait_active(&ds, &[0], Duration::from_secs(30)).await,
        Some(0),
        "{}",
        logs(&ds)
    );
    ds.push(Daemon::start(s.dir.path(), "d2", &direct, &pw));
    ds.push(Daemon::start(s.dir.path(), "d3", &direct, &pw));
    let end = Instant::now() + Duration::from_secs(20);
    while ds[1].role().await != "standby" || ds[2].role().await != "standby" {
        assert!(Instant::now() < end, "d2 and d3 do not stand by\n{}", logs(&ds));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Pages flow while d1 is active.
    let paged = wait_until(Duration::from_secs(40), || {
        count(&s.pg, "SELECT count(*) FROM outbox WHERE state = 'sent'") >= 2
    })
    .await;
    assert!(paged, "no pages sent by the first active\n{}", logs(&ds));
    // New failures keep coming while d1 is cut off: the holes' probes are missed again,
    // and a channel whose mail now vanishes opens a new incident (a new page).
    let cut = Instant::now();
    proxy.cut();
    s.sandbox.store().set_route("ch0@sandbox.test", Route::Discard);
    let next = wait_active(&ds, &[1, 2], LEASE + Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("no standby took over within lease + 5 s\n{}", logs(&ds)));
    eprintln!("takeover by {} after {:?}", ds[next].name, cut.elapsed());
    assert_ne!(ds[0].role().await, "active", "the cut-off instance stopped working");
    let new_page = wait_until(Duration::from_secs(40), || {
        s.pg.psql_on(
            "postcanary",
            "SELECT count(*) FROM outbox WHERE dedup_key LIKE 'postcanary/ch-0/%' AND state = 'sent'",
        ) == "1"
    })
    .await;
    assert!(
        new_page,
        "the new incident was not paged by the new active\n{}",
        logs(&ds)
    );
    // d1 comes back: it finds the lease taken and stands by.
    proxy.restore();
    tokio::time::sleep(LEASE + Duration::from_secs(3)).await;
    assert_eq!(ds[0].role().await, "standby", "{}", logs(&ds));
    let quiet = wait_until(Duration::from_secs(20), || {
        count(&s.pg, "SELECT count(*) FROM outbox WHERE state = 'pending'") == 0
    })
    .await;
    assert!(quiet, "pages still queued\n{}", logs(&ds));
    for d in &mut ds {
        d.kill9();
    }
    assert_once_each(&s, &ds);
}
