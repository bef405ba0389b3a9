//! The PostgreSQL ledger against a real PostgreSQL (Debian's package, a
//! private cluster on loopback): the store contract, TLS with the
//! operator's CA file, concurrent first opens, and `postcanary migrate` from
//! a SQLite ledger with history, after which the ledger goes on working.

mod support;

use std::sync::Arc;

use postcanary::config::ledger::LedgerTls;
use postcanary::config::Secret;
use postcanary::ledger::{
    contract, postgres::PostgresStore, sqlite::SqliteStore, DynStore, IncidentAction, IncidentChange, Store,
};
use support::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_meets_the_store_contract_over_tls_and_takes_a_migrated_sqlite_ledger() {
    let pg = Postgres::start();

    // The contract, plain TCP on loopback.
    pg.create_db("contract");
    let store: DynStore = Arc::new(PostgresStore::open(&pg.ledger_db("contract")).await.unwrap());
    contract::run_all(Arc::clone(&store)).await;
    pg.create_db("paging");
    contract::run_paging(Arc::new(PostgresStore::open(&pg.ledger_db("paging")).await.unwrap())).await;
    pg.create_db("retain");
    contract::run_retain(Arc::new(PostgresStore::open(&pg.ledger_db("retain")).await.unwrap())).await;
    // Reopening applies no migration twice and keeps the data.
    let again = PostgresStore::open(&pg.ledger_db("contract")).await.unwrap();
    assert!(again.probe_by_token("pc-tok-1").await.unwrap().is_some());
    assert_eq!(
        pg.psql_on("contract", "SELECT version FROM schema_version"),
        "3",
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
        contract::run_paging(s).await;
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
