//! Vantage points on a real PostgreSQL: two `postcanary run` daemons with
//! different `[vantage] name`s, each with its own relay and inbox (an
//! in-process sandbox each), quorum 2, one ledger. One vantage's relay
//! breaks (it accepts mail and loses it) → that vantage's probes are missed
//! while the other's arrive: exactly one "vantage degraded" page and no
//! channel page. Then the other relay breaks too → one channel page per
//! channel, and still no second vantage page.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use postcanary::sandbox::{MailStore, Route, Sandbox, SandboxOptions};
use support::hadaemons::{count, logs, wait_until, Daemon};
use support::postgres::Postgres;
use support::receiver::Receiver;

const CHANNELS: usize = 2;

async fn sandbox() -> Sandbox {
    let store = MailStore::new();
    store.add_user("canary", "secret");
    store.set_default_route(Route::deliver("canary", "INBOX"));
    Sandbox::start(store, SandboxOptions::default()).await.unwrap()
}

fn config(vantage: &str, pg: &Postgres, sb: &Sandbox, hook: &Receiver) -> String {
    let mut c = format!(
        r#"[ledger]
url = "postgres://postcanary@127.0.0.1:{pg}/postcanary"
password = "env:PC_TEST_PG_PASSWORD"
tls = "none"
ha = true
lease = "6s"
instance = "@INSTANCE@"

[vantage]
name = "{vantage}"
quorum = 2

[server]
listen = "127.0.0.1:@HTTP@"

[defaults]
notify = ["ops"]
schedule = "every 3s"
jitter = "1s"
deadline = "4s"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "canary@sandbox.test"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "canary"
password = "file:pw"
poll_interval = "60s"

[[notifier]]
name = "ops"
kind = "webhook"
url = "{url}"
"#,
        pg = pg.port,
        smtp = sb.smtp_addr().port(),
        imap = sb.imap_addr().port(),
        url = hook.url("/hook"),
    );
    for i in 0..CHANNELS {
        c.push_str(&format!(
            "\n[[channel]]\nid = \"ch-{i}\"\nname = \"Channel {i}\"\nkind = \"mail\"\nto = \"ch{i}@sandbox.test\"\nvia = \"relay\"\ninbox = \"social\"\n"
        ));
    }
    c
}

/// Trigger pages the receiver accepted, by dedup-key prefix (`postcanary/ch-0`, `postcanary/vantage/east`).
fn triggers(hook: &Receiver) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in hook.accepted() {
        let v = r.json();
        if v["event"].as_str() != Some("trigger") {
            continue;
        }
        let key = v["dedup_key"].as_str().unwrap_or("");
        // postcanary/<what>/<probe id>: drop the probe id.
        let prefix = key.rsplit_once('/').map(|(p, _)| p).unwrap_or(key).to_string();
        *m.entry(prefix).or_insert(0) += 1;
    }
    m
}

/// Waits until every channel has had a trigger page; fails after `limit`.
async fn every_channel_paged(hook: &Receiver, ds: &[Daemon], limit: Duration) {
    let paged = wait_until(limit, || {
        let t = triggers(hook);
        (0..CHANNELS).all(|i| t.contains_key(&format!("postcanary/ch-{i}")))
    })
    .await;
    assert!(paged, "the channels were not paged: {:?}\n{}", triggers(hook), logs(ds));
}

/// The two vantages' world: one PostgreSQL, a sandbox relay and inbox
/// each, the webhook receiver, and `east-1`/`west-1` running `config` with
/// `edit` applied, once both have delivered every channel.
struct World {
    pg: Postgres,
    east: Sandbox,
    west: Sandbox,
    hook: Receiver,
    ds: [Daemon; 2],
    _dir: tempfile::TempDir,
}

async fn two_vantages(edit: impl Fn(String) -> String) -> World {
    let pg = Postgres::start();
    // The schema, before the daemons (and this test's queries) use it.
    postcanary::ledger::postgres::PostgresStore::open(&pg.ledger())
        .await
        .unwrap();
    let (east, west) = (sandbox().await, sandbox().await);
    let hook = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "secret").unwrap();
    let pw = pg.password.clone();
    let ds = [
        Daemon::start(dir.path(), "east-1", &edit(config("east", &pg, &east, &hook)), &pw),
        Daemon::start(dir.path(), "west-1", &edit(config("west", &pg, &west, &hook)), &pw),
    ];
    // Both vantages probe every channel on their own and see it delivered.
    let both = wait_until(Duration::from_secs(60), || {
        count(
            &pg,
            "SELECT count(*) FROM (SELECT DISTINCT channel, vantage FROM probes WHERE verdict = 'delivered') d",
        ) == i64::try_from(2 * CHANNELS).unwrap()
    })
    .await;
    assert!(both, "both vantages did not deliver every channel\n{}", logs(&ds));
    World {
        pg,
        east,
        west,
        hook,
        ds,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_broken_vantage_pages_once_as_degraded_and_two_page_the_channel() {
    let World {
        pg,
        east,
        west,
        hook,
        ds,
        _dir,
    } = two_vantages(|c| c).await;
    for d in &ds {
        assert_eq!(
            d.role().await,
            "active",
            "each vantage has its active prober\n{}",
            logs(&ds)
        );
    }
    let leases = pg.psql_on("postcanary", "SELECT name FROM ha_lease ORDER BY name");
    assert_eq!(
        leases, "active\nvantage:east\nvantage:west",
        "one paging lease, one per vantage"
    );
    assert!(triggers(&hook).is_empty(), "nothing failed yet: {:?}", triggers(&hook));

    // East's relay loses every message: east's probes are missed, west's arrive.
    east.store().set_default_route(Route::Discard);
    let degraded = wait_until(Duration::from_secs(40), || {
        triggers(&hook).contains_key("postcanary/vantage/east")
    })
    .await;
    if !degraded {
        for d in &ds {
            let text = std::fs::read_to_string(&d.log).unwrap_or_default();
            for l in text.lines().filter(|l| {
                l.contains("paging") || l.contains("incident") || l.contains("ERROR") || l.contains("lease")
            }) {
                eprintln!("{}: {l}", d.name);
            }
        }
        eprintln!(
            "{}",
            pg.psql_on(
                "postcanary",
                "SELECT channel, vantage, verdict, handled FROM probes ORDER BY created_at"
            )
        );
        eprintln!("{}", pg.psql_on("postcanary", "SELECT * FROM incidents"));
    }
    assert!(
        degraded,
        "no vantage page for east: {:?}\n{}",
        triggers(&hook),
        logs(&ds)
    );
    // Several more rounds: east keeps failing alone.
    let missed_before = count(
        &pg,
        "SELECT count(*) FROM probes WHERE vantage = 'east' AND verdict = 'missed'",
    );
    let more = wait_until(Duration::from_secs(40), || {
        count(
            &pg,
            "SELECT count(*) FROM probes WHERE vantage = 'east' AND verdict = 'missed'",
        ) >= missed_before + 2 * i64::try_from(CHANNELS).unwrap()
            && count(
                &pg,
                "SELECT count(*) FROM probes WHERE handled = false AND verdict <> 'pending'",
            ) == 0
    })
    .await;
    assert!(more, "east's probes were not missed and handled\n{}", logs(&ds));
    let t = triggers(&hook);
    assert_eq!(
        t.get("postcanary/vantage/east"),
        Some(&1),
        "exactly one vantage page: {t:?}\n{}",
        logs(&ds)
    );
    assert_eq!(t.len(), 1, "no channel page, nothing else: {t:?}\n{}", logs(&ds));
    assert_eq!(
        count(
            &pg,
            "SELECT count(*) FROM incidents WHERE resolved_at IS NULL AND channel = 'vantage:east'"
        ),
        1
    );
    assert_eq!(
        count(&pg, "SELECT count(*) FROM incidents WHERE channel LIKE 'ch-%'"),
        0,
        "no channel incident"
    );

    // The readers show each vantage's last verdict; /healthz and /metrics name the vantage.
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move { http.get(path).send().await.unwrap().text().await.unwrap() }
    };
    let api: serde_json::Value =
        serde_json::from_str(&get(format!("http://127.0.0.1:{}/api/channels/ch-0", ds[1].http)).await).unwrap();
    let by: BTreeMap<String, String> = api["vantages"]
        .as_array()
        .unwrap_or_else(|| panic!("no vantages in {api}"))
        .iter()
        .map(|v| {
            (
                v["vantage"].as_str().unwrap().to_string(),
                v["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(by.get("east").map(String::as_str), Some("missed"), "{api}");
    assert_eq!(by.get("west").map(String::as_str), Some("delivered"), "{api}");
    let health = get(format!("http://127.0.0.1:{}/healthz", ds[0].http)).await;
    assert!(health.contains("vantage: east"), "{health}");
    // Every instance names who pages for all vantages; exactly one is it.
    let mut paging = Vec::new();
    for d in &ds {
        let h = get(format!("http://127.0.0.1:{}/healthz", d.http)).await;
        let line = h.lines().find(|l| l.starts_with("paging: ")).map(str::to_string);
        paging.push(line.unwrap_or_else(|| panic!("{}: no paging line in {h}", d.name)));
    }
    assert_eq!(
        paging.iter().filter(|l| l.starts_with("paging: this instance")).count(),
        1,
        "{paging:?}"
    );
    let metrics = get(format!("http://127.0.0.1:{}/metrics", ds[1].http)).await;
    assert!(
        metrics.contains("postcanary_vantage_up{channel=\"ch-0\",vantage=\"east\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("postcanary_vantage_up{channel=\"ch-0\",vantage=\"west\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("postcanary_vantage_info{vantage=\"west\"} 1"),
        "{metrics}"
    );
    // (The channel page's history needs `probes_before`, not on PostgreSQL yet;
    // its vantage table is checked in `server::vantages`.)

    // West's relay breaks too: two vantages fail → the quorum is met, one page per channel.
    west.store().set_default_route(Route::Discard);
    every_channel_paged(&hook, &ds, Duration::from_secs(40)).await;
    // A few more rounds, then count.
    let missed_before = count(
        &pg,
        "SELECT count(*) FROM probes WHERE vantage = 'west' AND verdict = 'missed'",
    );
    let more = wait_until(Duration::from_secs(40), || {
        count(
            &pg,
            "SELECT count(*) FROM probes WHERE vantage = 'west' AND verdict = 'missed'",
        ) >= missed_before + 2 * i64::try_from(CHANNELS).unwrap()
            && count(&pg, "SELECT count(*) FROM outbox WHERE state = 'pending'") == 0
    })
    .await;
    assert!(more, "west's probes were not missed and paged\n{}", logs(&ds));
    let t = triggers(&hook);
    for i in 0..CHANNELS {
        assert_eq!(
            t.get(&format!("postcanary/ch-{i}")),
            Some(&1),
            "one page for ch-{i}: {t:?}"
        );
    }
    assert_eq!(t.get("postcanary/vantage/east"), Some(&1), "{t:?}");
    assert_eq!(
        t.len(),
        CHANNELS + 1,
        "no vantage page for west, nothing else: {t:?}\n{}",
        logs(&ds)
    );
    // Every page left once (the paging lease is single).
    let mut seen = BTreeMap::new();
    for r in hook.accepted() {
        let v = r.json();
        let k = format!(
            "{}|{}",
            v["dedup_key"].as_str().unwrap_or(""),
            v["event"].as_str().unwrap_or("")
        );
        *seen.entry(k).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a page was sent twice: {seen:?}");
}

/// A vantage that is gone (killed, its probing lease expired longer ago
/// than a takeover takes) is not present: when the channel then fails for
/// the vantage that is left, that is the channel's failure (the quorum in
/// force is the one vantage present), not "vantage degraded" — even while
/// the gone vantage's last success is still inside the window (every 20 s,
/// deadline 4 s: a 24 s window).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_vantage_that_is_gone_does_not_make_a_real_failure_look_like_the_others_own() {
    let World {
        east,
        hook,
        mut ds,
        // Bound, so that they live to the end of the test.
        pg: _pg,
        west: _west,
        _dir,
    } = two_vantages(|c| {
        c.replace("lease = \"6s\"", "lease = \"3s\"")
            .replace("schedule = \"every 3s\"", "schedule = \"every 20s\"")
    })
    .await;
    // West goes away for good; once its lease is past the takeover grace
    // (3 s lease, 6 s grace) east's relay starts losing mail.
    ds[1].kill9();
    tokio::time::sleep(Duration::from_secs(11)).await;
    east.store().set_default_route(Route::Discard);
    every_channel_paged(&hook, &ds, Duration::from_secs(60)).await;
    let t = triggers(&hook);
    assert!(
        !t.contains_key("postcanary/vantage/east"),
        "east's failure was the channel's: {t:?}\n{}",
        logs(&ds)
    );
}
