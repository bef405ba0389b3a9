//! The PostgreSQL ledger against a real PostgreSQL (Debian's package, a
//! private cluster on loopback): the store contract, TLS with the
//! operator's CA file, concurrent first opens, and `postcanary migrate` from
//! a SQLite ledger with history, after which the ledger goes on working.

mod support;

use std::sync::Arc;

use postcanary::config::ledger::LedgerTls;
use postcanary::config::Secret;
use postcanary::ledger::{
    contract, postgres::PostgresStore, sqlite::SqliteStore, DynStore, IncidentAction, IncidentChange, Store, DAY_MS,
};
use support::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_meets_the_store_contract_over_tls_and_takes_a_migrated_sqlite_ledger() {
    let pg = Postgres::start();

    // The contract, plain TCP on loopback.
    pg.create_db("contract");
    let store: DynStore = Arc::new(PostgresStore::open(&pg.ledger_db("contract")).await.unwrap());
    contract::run_all(Arc::clone(&store)).await;
    contract::run_reports(Arc::clone(&store)).await;
    contract::run_ops(Arc::clone(&store)).await;
    pg.create_db("paging");
    contract::run_paging(Arc::new(PostgresStore::open(&pg.ledger_db("paging")).await.unwrap())).await;
    pg.create_db("vantages");
    let vantages = PostgresStore::open(&pg.ledger_db("vantages")).await.unwrap();
    contract::run_vantages(
        Arc::new(vantages.with_vantage(Some("east"))),
        Arc::new(vantages.with_vantage(Some("west"))),
        Arc::new(vantages),
    )
    .await;
    // Live vantages: a held probing lease, or one expired less than the grace ago.
    let leases = PostgresStore::open(&pg.ledger_db("vantages")).await.unwrap();
    assert_eq!(
        leases.live_vantages(std::time::Duration::from_secs(1)).await.unwrap(),
        Some(vec![])
    );
    let east = postcanary::ha::Lease::named(leases.clone(), "vantage:east", "e1", std::time::Duration::from_secs(60));
    let west = postcanary::ha::Lease::named(
        leases.clone(),
        "vantage:west",
        "w1",
        std::time::Duration::from_millis(300),
    );
    let paging = postcanary::ha::Lease::new(leases.clone(), "e1", std::time::Duration::from_secs(60));
    assert!(east.try_acquire().await.unwrap().is_some());
    assert!(west.try_acquire().await.unwrap().is_some());
    assert!(paging.try_acquire().await.unwrap().is_some());
    let live = |grace_ms: u64| {
        let leases = leases.clone();
        async move {
            leases
                .live_vantages(std::time::Duration::from_millis(grace_ms))
                .await
                .unwrap()
        }
    };
    assert_eq!(live(0).await, Some(vec!["east".to_string(), "west".to_string()]));
    tokio::time::sleep(std::time::Duration::from_millis(1_000)).await;
    assert_eq!(
        live(0).await,
        Some(vec!["east".to_string()]),
        "west's lease ran out; `active` is no vantage"
    );
    assert_eq!(
        live(60_000).await,
        Some(vec!["east".to_string(), "west".to_string()]),
        "within the grace a standby may still take west over"
    );
    pg.create_db("retain");
    contract::run_retain(Arc::new(PostgresStore::open(&pg.ledger_db("retain")).await.unwrap())).await;
    // Reopening applies no migration twice and keeps the data.
    let again = PostgresStore::open(&pg.ledger_db("contract")).await.unwrap();
    // (pc-tok-6 is pending, so the retention case kept it.)
    assert!(again.probe_by_token("pc-tok-6").await.unwrap().is_some());
    assert_eq!(
        pg.psql_on("contract", "SELECT version FROM schema_version"),
        "11",
        "one schema_version row, at the newest migration"
    );

    // Instances starting at once on a new database migrate it exactly once.
    pg.create_db("race");
    let opens: Vec<_> = (0..5)
        .map(|_| {
            let cfg = pg.ledger_db("race");
            tokio::spawn(async move { PostgresStore::open(&cfg).await.map(|_| ()) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    assert_eq!(pg.psql_on("race", "SELECT count(*) FROM schema_version"), "1");

    // TLS, verified against the CA file.
    let tls = PostgresStore::open(&pg.ledger_tls()).await.unwrap();
    assert_eq!(tls.meta_get_or_put("tls-check", "yes").await.unwrap(), "yes");
    let ssl = pg.psql("SELECT count(*) FROM pg_stat_ssl WHERE ssl");
    assert_ne!(ssl, "0", "a TLS session is open");
    // A CA that did not sign the server's certificate: refused, and the error
    // names neither the password nor anything but the URL without it.
    let mut wrong = pg.ledger_tls();
    wrong.ca_file = Some(pg.cluster.join("server.pem"));
    wrong.pool_size = 1;
    let e = PostgresStore::open(&wrong)
        .await
        .err()
        .expect("an unknown CA is refused");
    assert!(!e.to_string().contains(&pg.password), "{e}");
    // Bad password: an error without the password.
    let mut bad = pg.ledger();
    bad.password = Some(Secret::new("not-the-password"));
    let e = PostgresStore::open(&bad).await.err().expect("bad password is refused");
    assert!(e.to_string().contains("password"), "{e}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    assert_eq!(bad.tls, LedgerTls::None);

    // A SQLite ledger with history → `postcanary migrate` → counts verified.
    let dir = tempfile::tempdir().unwrap();
    let sqlite_path = dir.path().join("ledger.db");
    {
        let s: DynStore = Arc::new(SqliteStore::open(&sqlite_path).await.unwrap());
        contract::run_all(Arc::clone(&s)).await;
        contract::run_paging(Arc::clone(&s)).await;
        // Acknowledgements, escalation, silences, audit, the channel summary…
        contract::run_ops(Arc::clone(&s)).await;
        // …a blind spell (one closed, one open) and rollups with their marks.
        s.blind_started("social", "social", 1_000, "connection refused")
            .await
            .unwrap();
        s.blind_ended("social", 2_000).await.unwrap();
        s.blind_started("social (Junk)", "social", 3_000, "login refused")
            .await
            .unwrap();
        assert!(s.roll_up(0, 10 * DAY_MS).await.unwrap() > 0);
    }
    pg.create_db("migrated");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .env("PC_TEST_PG_PASSWORD", &pg.password)
        .args(["migrate", "--from", &format!("sqlite://{}", sqlite_path.display())])
        .args(["--to", &format!("postgres://postcanary@127.0.0.1:{}/migrated", pg.port)])
        .args(["--password", "env:PC_TEST_PG_PASSWORD", "--tls", "none"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(&pg.password));
    let sqlite = rusqlite::Connection::open(&sqlite_path).unwrap();
    for table in [
        "meta",
        "probes",
        "probe_events",
        "inbox_cursors",
        "dns_baselines",
        "incidents",
        "incident_events",
        "outbox",
        "watcher_blind",
        "rollups",
        "silences",
        "audit",
        "channel_latest",
        "channel_days",
    ] {
        let n: i64 = sqlite
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert!(
            stdout.contains(&format!("{table:<16} {n}")),
            "{table}: {n} rows expected in\n{stdout}"
        );
        assert_eq!(
            pg.psql_on("migrated", &format!("SELECT count(*) FROM {table}")),
            n.to_string()
        );
    }
    // Same answers from both ledgers.
    let s = SqliteStore::open(&sqlite_path).await.unwrap();
    let p = PostgresStore::open(&pg.ledger_db("migrated")).await.unwrap();
    assert_eq!(
        p.meta_get_or_put("token_key", "other").await.unwrap(),
        s.meta_get_or_put("token_key", "other").await.unwrap(),
        "the kept token key came along"
    );
    for id in ["id-2", "id-10", "id-12"] {
        let (a, b) = (s.probe(id).await.unwrap().unwrap(), p.probe(id).await.unwrap().unwrap());
        assert_eq!(
            (a.verdict, a.detail, a.latency_ms, a.fault),
            (b.verdict, b.detail, b.latency_ms, b.fault)
        );
        assert_eq!(s.events(id).await.unwrap(), p.events(id).await.unwrap(), "{id}");
    }
    assert_eq!(
        s.recent_incidents(10).await.unwrap(),
        p.recent_incidents(10).await.unwrap()
    );
    assert_eq!(s.incident_events(1).await.unwrap(), p.incident_events(1).await.unwrap());
    // What reports, retention and operating it read came along as well.
    let acked = s.recent_incidents(10).await.unwrap();
    assert!(
        acked.iter().any(|i| i.acknowledged_by.is_some() && i.escalations == 1),
        "the history has an acknowledged, escalated incident: {acked:?}"
    );
    assert_eq!(
        s.blind_spells(0, i64::MAX).await.unwrap(),
        p.blind_spells(0, i64::MAX).await.unwrap()
    );
    assert_eq!(
        s.daily_counts(&[], 0, 30 * DAY_MS).await.unwrap(),
        p.daily_counts(&[], 0, 30 * DAY_MS).await.unwrap()
    );
    assert_eq!(s.silences(None, 10).await.unwrap(), p.silences(None, 10).await.unwrap());
    assert_eq!(
        s.audit_log(None, 10).await.unwrap(),
        p.audit_log(None, 10).await.unwrap()
    );
    assert_eq!(s.channel_latest().await.unwrap(), p.channel_latest().await.unwrap());
    let chans: Vec<String> = s
        .channel_latest()
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.channel)
        .collect();
    assert_eq!(
        s.channel_days(&chans, 0).await.unwrap(),
        p.channel_days(&chans, 0).await.unwrap()
    );
    assert_eq!(s.outbox_states().await.unwrap(), p.outbox_states().await.unwrap());
    assert_eq!(
        pg.psql_on("migrated", "SELECT value FROM meta WHERE key = 'rollups_through'"),
        (10 * DAY_MS).to_string(),
        "the rollups' mark came along"
    );
    assert_eq!(s.cursor("social").await.unwrap(), p.cursor("social").await.unwrap());
    assert_eq!(
        s.dns_baseline("kommune.example").await.unwrap(),
        p.dns_baseline("kommune.example").await.unwrap()
    );
    assert_eq!(
        s.channel_status(&["social-mail".into()], 20_000, 5).await.unwrap()[0].window_30d,
        p.channel_status(&["social-mail".into()], 20_000, 5).await.unwrap()[0].window_30d
    );
    // …and goes on: a new incident gets the next id, its page the next outbox id.
    p.insert_probe(&postcanary::ledger::NewProbe {
        id: "id-after".into(),
        token: "pc-after".into(),
        channel: "borger-mail".into(),
        kind: "mail".into(),
        expect: postcanary::config::Expect::Deliver,
        inbox: Some("borger".into()),
        target: "borger@kommune.example".into(),
        created_at: 30_000,
        deadline: 31_000,
        run_id: "run-after".into(),
    })
    .await
    .unwrap();
    p.record_sent("id-after", 30_100, "250 ok").await.unwrap();
    assert_eq!(p.sweep(31_000, "run-after").await.unwrap().len(), 1);
    let before = s.recent_incidents(10).await.unwrap()[0].id;
    let queued = p.outbox_head("ops").await.unwrap();
    assert!(queued.is_some(), "the history has pages still queued");
    assert_eq!(
        queued,
        s.outbox_head("ops").await.unwrap(),
        "queued pages came along in order"
    );
    assert_eq!(p.outbox_depth().await.unwrap(), s.outbox_depth().await.unwrap());
    let id = p
        .apply_incident(&IncidentChange {
            probe_id: Some("id-after".into()),
            reclassify: None,
            action: IncidentAction::Open {
                channel: "borger-mail".into(),
                dedup_key: "postcanary/borger-mail/id-after".into(),
                verdict: "missed".into(),
                detail: "nothing arrived".into(),
                at: 31_000,
                silenced: None,
                pages: vec![],
            },
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(id, before + 1);
    // A second migrate into a ledger with data is refused, and changes nothing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .env("PC_TEST_PG_PASSWORD", &pg.password)
        .args(["migrate", "--from", &format!("sqlite://{}", sqlite_path.display())])
        .args(["--to", &format!("postgres://postcanary@127.0.0.1:{}/migrated", pg.port)])
        .args(["--password", "env:PC_TEST_PG_PASSWORD", "--tls", "none"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty database"));
    assert_eq!(
        pg.psql_on("migrated", "SELECT count(*) FROM incidents"),
        (before + 1).to_string()
    );
}

/// 2026-11-01T00:00:00Z.
const NOV: i64 = 1_793_491_200_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;

const REPORT_CONFIG: &str = r#"
[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 2525
tls = "none"
from = "canary@kommune.example"
username = "canary"
password = "env:PC_TEST_NEVER_SET"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "canary"
password = "env:PC_TEST_NEVER_SET"

[[notifier]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[channel]]
id = "social-mail"
name = "Social og Familie (e-mail)"
owner = "social"
kind = "mail"
to = "social@kommune.example"
inbox = "social"
notify = ["ops"]

[[channel]]
id = "borger-mail"
name = "Borgerservice (e-mail)"
owner = "borger"
kind = "mail"
to = "borger@kommune.example"
inbox = "social"
notify = ["ops"]
"#;

/// The same small history on any ledger: social-mail delivers three times,
/// misses twice (an incident, paged, acknowledged, resolved the next day);
/// borger-mail delivers once and has a probe pending at the month's end; the
/// watcher was blind for 20 minutes. Returns the incident's id.
async fn history(s: &DynStore) -> i64 {
    use postcanary::config::Expect;
    use postcanary::ledger::{Acknowledgement, NewProbe};
    use postcanary::notify::{Page, PageEvent};
    use postcanary::verdict::{Found, Judgement, Verdict};
    let mut n = 0;
    let mut probe = |channel: &str, created: i64| {
        n += 1;
        NewProbe {
            id: format!("01REPORT{n:018}"),
            token: format!("pc-report-{n}"),
            channel: channel.into(),
            kind: "mail".into(),
            expect: Expect::Deliver,
            inbox: Some("social".into()),
            target: format!("{channel}@kommune.example"),
            created_at: created,
            deadline: created + 15 * MIN,
            run_id: "run".into(),
        }
    };
    let judged = |v: Verdict, at: i64, latency: Option<i64>| Judgement {
        verdict: v,
        detail: format!("{v} as planned"),
        at,
        found: latency.map(|_| Found {
            inbox: "social".into(),
            at,
        }),
        latency_ms: latency,
        fault: None,
    };
    let page = |event: PageEvent, at: i64| Page {
        event,
        dedup_key: "postcanary/social-mail/x".into(),
        incident_id: 0,
        channel: "social-mail".into(),
        channel_name: "Social og Familie (e-mail)".into(),
        owner: "social".into(),
        target: "social@kommune.example".into(),
        verdict: "missed".into(),
        detail: "nothing arrived before the deadline".into(),
        summary: "s".into(),
        opened_at: at,
        at,
        probe_token: None,
        timeline: Vec::new(),
        source: "test".into(),
        by: None,
    };
    let mut ids = Vec::new();
    for (channel, created, verdict, latency) in [
        ("social-mail", NOV + HOUR, Some(Verdict::Delivered), Some(1_000)),
        ("social-mail", NOV + 2 * HOUR, Some(Verdict::Delivered), Some(2_000)),
        ("social-mail", NOV + 3 * HOUR, Some(Verdict::Delivered), Some(3_000)),
        ("social-mail", NOV + 10 * HOUR, Some(Verdict::Missed), None),
        ("social-mail", NOV + 11 * HOUR, Some(Verdict::Missed), None),
        ("social-mail", NOV + 25 * HOUR, Some(Verdict::Delivered), Some(4_000)),
        ("borger-mail", NOV + 5 * HOUR, Some(Verdict::Delivered), Some(1_500)),
        ("borger-mail", NOV + 30 * 24 * HOUR - 2 * MIN, None, None),
    ] {
        let p = probe(channel, created);
        s.insert_probe(&p).await.unwrap();
        s.record_sent(&p.id, created + 1_000, "250 2.0.0 Ok: queued as Q1")
            .await
            .unwrap();
        if let Some(v) = verdict {
            let at = created + 1_000 + latency.unwrap_or(15 * MIN);
            assert!(s.judge(&p.id, &judged(v, at, latency)).await.unwrap());
        }
        ids.push(p.id);
    }
    // The incident logic has seen the deliveries (so retention may slim them).
    for i in [0, 1, 2, 6] {
        s.apply_incident(&IncidentChange {
            probe_id: Some(ids[i].clone()),
            reclassify: None,
            action: IncidentAction::Nothing,
        })
        .await
        .unwrap();
    }
    let opened_at = NOV + 10 * HOUR + 16 * MIN;
    let incident = s
        .apply_incident(&IncidentChange {
            probe_id: Some(ids[3].clone()),
            reclassify: None,
            action: IncidentAction::Open {
                channel: "social-mail".into(),
                dedup_key: "postcanary/social-mail/x".into(),
                verdict: "missed".into(),
                detail: "nothing arrived before the deadline".into(),
                at: opened_at,
                silenced: None,
                pages: vec![("ops".into(), page(PageEvent::Trigger, opened_at))],
            },
        })
        .await
        .unwrap()
        .unwrap();
    let trigger = s.incident_pages(incident).await.unwrap()[0].id;
    s.page_sent(trigger, opened_at + 2_000).await.unwrap();
    assert!(s
        .acknowledge(&Acknowledgement {
            incident_id: incident,
            by: "anne".into(),
            note: "on it".into(),
            at: opened_at + 20 * MIN,
            pages: Vec::new(),
        })
        .await
        .unwrap());
    s.apply_incident(&IncidentChange {
        probe_id: Some(ids[4].clone()),
        reclassify: None,
        action: IncidentAction::Update {
            incident_id: incident,
            verdict: "missed".into(),
            detail: "nothing arrived before the deadline".into(),
            at: NOV + 11 * HOUR + 16 * MIN,
        },
    })
    .await
    .unwrap();
    s.apply_incident(&IncidentChange {
        probe_id: Some(ids[5].clone()),
        reclassify: None,
        action: IncidentAction::Resolve {
            incident_id: incident,
            at: NOV + 25 * HOUR + 5_000,
            detail: "delivered".into(),
            pages: vec![("ops".into(), page(PageEvent::Resolve, NOV + 25 * HOUR + 5_000))],
        },
    })
    .await
    .unwrap();
    s.blind_started("social", "social", NOV + 2 * DAY_MS, "connection refused")
        .await
        .unwrap();
    s.blind_ended("social", NOV + 2 * DAY_MS + 20 * MIN).await.unwrap();
    incident
}

fn cli(cfg: &std::path::Path, args: &[&str], password: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .env("PC_TEST_PG_PASSWORD", password)
        .env_remove("PC_TEST_NEVER_SET")
        .arg(args[0])
        .arg("-c")
        .arg(cfg)
        .args(&args[1..])
        .output()
        .unwrap()
}

fn json_of(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // When it was made is all that may differ.
    if let Some(o) = v.as_object_mut() {
        o.remove("generated_at");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_evidence_and_prune_work_on_a_postgres_ledger_as_on_sqlite() {
    let pg = Postgres::start();
    pg.create_db("report");
    let dir = tempfile::tempdir().unwrap();
    // The same history in both ledgers.
    let sqlite: DynStore = Arc::new(SqliteStore::open(&dir.path().join("ledger.db")).await.unwrap());
    let postgres: DynStore = Arc::new(PostgresStore::open(&pg.ledger_db("report")).await.unwrap());
    let (a, b) = (history(&sqlite).await, history(&postgres).await);
    assert_eq!(a, b);
    drop((sqlite, postgres));
    let on_sqlite = dir.path().join("sqlite.toml");
    std::fs::write(
        &on_sqlite,
        format!("[ledger]\nurl = \"sqlite://ledger.db\"\n{REPORT_CONFIG}"),
    )
    .unwrap();
    let on_pg = dir.path().join("postgres.toml");
    std::fs::write(
        &on_pg,
        format!(
            "[ledger]\nurl = \"postgres://postcanary@127.0.0.1:{}/report\"\n\
             password = \"env:PC_TEST_PG_PASSWORD\"\ntls = \"none\"\n{REPORT_CONFIG}",
            pg.port
        ),
    )
    .unwrap();

    let month = ["report", "--month", "2026-11", "--format", "json"];
    let from_pg = json_of(&cli(&on_pg, &month, &pg.password));
    // Known answers: social-mail 4 of 6, borger-mail 1 of 1 judged (one pending at the edge).
    let channel = |j: &serde_json::Value, id: &str| {
        j["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap()
    };
    let social = channel(&from_pg, "social-mail");
    assert_eq!(
        (social["judged"].as_i64(), social["successful"].as_i64()),
        (Some(6), Some(4))
    );
    let incident = &social["incidents"][0];
    // From the first failing probe sent (+1 s) to the page accepted (16 min 2 s).
    assert_eq!(incident["time_to_detect_ms"], 16 * MIN + 1_000);
    let borger = channel(&from_pg, "borger-mail");
    assert_eq!(borger["judged"].as_i64(), Some(1));
    assert_eq!(
        from_pg,
        json_of(&cli(&on_sqlite, &month, "")),
        "the same report from both ledgers"
    );
    let csv = cli(
        &on_pg,
        &["report", "--month", "2026-11", "--format", "csv"],
        &pg.password,
    );
    assert!(String::from_utf8_lossy(&csv.stdout).contains("social-mail,Social og Familie (e-mail),social,"));

    let evidence = ["evidence", &a.to_string()];
    let ev = json_of(&cli(&on_pg, &evidence, &pg.password));
    assert_eq!(ev["incident"]["acknowledged_by"], "anne", "{ev}");
    let pages: Vec<&str> = ev["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(pages, vec!["sent", "pending"]);
    assert_eq!(
        ev,
        json_of(&cli(&on_sqlite, &evidence, "")),
        "the same evidence from both ledgers"
    );
    let html = cli(&on_pg, &["evidence", &a.to_string(), "--format", "html"], &pg.password);
    assert!(html.status.success() && String::from_utf8_lossy(&html.stdout).contains("Social og Familie (e-mail)"));

    // Without the ledger's password: a clear error, and the password is named nowhere.
    let out = cli(&on_pg, &month, "not-the-password");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("password") && !err.contains("not-the-password"), "{err}");

    // One retention run on each: the same figures afterwards (rollups, slimmed successes).
    for (cfg, pw) in [(&on_pg, pg.password.as_str()), (&on_sqlite, "")] {
        let out = cli(cfg, &["prune"], pw);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("slimmed 4 success(es)"));
    }
    let after = json_of(&cli(&on_pg, &month, &pg.password));
    assert_eq!(after, json_of(&cli(&on_sqlite, &month, "")));
    assert_eq!(channel(&after, "social-mail")["judged"], social["judged"]);
    assert_eq!(
        pg.psql_on(
            "report",
            "SELECT count(*) FROM probe_events WHERE probe_id = '01REPORT000000000000000001'"
        ),
        "0",
        "a slimmed success keeps no evidence trail"
    );
}
