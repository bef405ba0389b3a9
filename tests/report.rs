//! `postcanary report` and `postcanary evidence` against a ledger built by
//! hand with known answers: availability per channel, owner and day, a
//! period that starts in the middle of an incident, a probe pending at the
//! period's edge, times to detect and resolve, pages, blind spells. The
//! HTML of both is printed to PDF by headless Chromium and read back with
//! poppler (pdftotext, pdftoppm).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use postcanary::config::{Config, Expect};
use postcanary::ledger::{sqlite::SqliteStore, DynStore, IncidentAction, IncidentChange, NewProbe, DAY_MS};
use postcanary::notify::{Page, PageEvent};
use postcanary::report::figures::Period;
use postcanary::verdict::{Found, Judgement, Verdict};

const MIN: i64 = 60_000;
const HOUR: i64 = 3_600_000;
/// 2026-11-01T00:00:00Z.
const NOV: i64 = 1_793_491_200_000;
const DEC: i64 = NOV + 30 * DAY_MS;

const CONFIG: &str = r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = ["ops", "mail"]

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 2525
tls = "none"
from = "canary@kommune.example"
password = "env:REPORT_TEST_NEVER_SET"
username = "canary"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "canary"
password = "env:REPORT_TEST_NEVER_SET"

[[notifier]]
name = "ops"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[notifier]]
name = "mail"
kind = "webhook"
url = "http://127.0.0.1:9/mail"

[[channel]]
id = "social-mail"
name = "Social og Familie (e-mail)"
owner = "social"
kind = "mail"
to = "social@kommune.example"
inbox = "social"

[[channel]]
id = "byg-mail"
name = "Byggesager (e-mail)"
owner = "social"
kind = "mail"
to = "byg@kommune.example"
inbox = "social"

[[channel]]
id = "borger-mail"
name = "Borgerservice (e-mail)"
owner = "borger"
kind = "mail"
to = "borger@kommune.example"
inbox = "social"
"#;

struct Ledger {
    store: DynStore,
    n: u32,
}

fn page(event: PageEvent, channel: &str, at: i64) -> Page {
    Page {
        event,
        dedup_key: format!("postcanary/{channel}/x"),
        incident_id: 0,
        channel: channel.into(),
        channel_name: channel.into(),
        owner: "o".into(),
        target: "t".into(),
        verdict: "missed".into(),
        detail: "nothing arrived before the deadline".into(),
        summary: "s".into(),
        opened_at: at,
        at,
        probe_token: None,
        timeline: Vec::new(),
        source: "test".into(),
        by: None,
    }
}

impl Ledger {
    /// A probe created at `created`, sent a second later, judged `verdict`
    /// (`None`: left pending) at `created + 15 min` (a delivery after `latency`).
    async fn probe(&mut self, channel: &str, created: i64, verdict: Option<Verdict>, latency: Option<i64>) -> String {
        self.n += 1;
        let id = format!("01PROBE{:019}", self.n);
        self.store
            .insert_probe(&NewProbe {
                id: id.clone(),
                token: format!("pc-{id}"),
                channel: channel.into(),
                kind: "mail".into(),
                expect: Expect::Deliver,
                inbox: Some("social".into()),
                target: format!("{channel}@kommune.example"),
                created_at: created,
                deadline: created + 15 * MIN,
                run_id: "run".into(),
            })
            .await
            .unwrap();
        self.store
            .record_sent(&id, created + 1_000, &format!("250 2.0.0 Ok: queued as Q{}", self.n))
            .await
            .unwrap();
        if let Some(v) = verdict {
            let at = match latency {
                Some(l) => created + 1_000 + l,
                None => created + 15 * MIN,
            };
            let j = Judgement {
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
            assert!(self.store.judge(&id, &j).await.unwrap());
        }
        id
    }

    async fn open(&self, probe: Option<&str>, channel: &str, at: i64, paged: bool, silenced: Option<&str>) -> i64 {
        let pages = if paged {
            vec![
                ("ops".to_string(), page(PageEvent::Trigger, channel, at)),
                ("mail".to_string(), page(PageEvent::Trigger, channel, at)),
            ]
        } else {
            Vec::new()
        };
        self.store
            .apply_incident(&IncidentChange {
                probe_id: probe.map(String::from),
                reclassify: None,
                action: IncidentAction::Open {
                    channel: channel.into(),
                    dedup_key: format!("postcanary/{channel}/{at}"),
                    verdict: "missed".into(),
                    detail: "nothing arrived before the deadline".into(),
                    at,
                    silenced: silenced.map(String::from),
                    pages,
                },
            })
            .await
            .unwrap()
            .unwrap()
    }

    async fn resolve(&self, id: i64, probe: &str, at: i64, channel: &str) {
        self.store
            .apply_incident(&IncidentChange {
                probe_id: Some(probe.into()),
                reclassify: None,
                action: IncidentAction::Resolve {
                    incident_id: id,
                    at,
                    detail: "delivered: arrived".into(),
                    pages: vec![("ops".to_string(), page(PageEvent::Resolve, channel, at))],
                },
            })
            .await
            .unwrap();
    }

    /// Marks the pages of an incident: `ops` accepted after `after` ms, `mail` given up.
    async fn deliver_pages(&self, incident: i64, after: i64) {
        for p in self.store.incident_pages(incident).await.unwrap() {
            if p.state != "pending" {
                continue;
            }
            if p.notifier == "ops" {
                self.store.page_sent(p.id, p.created_at + after).await.unwrap();
            } else {
                self.store
                    .page_failed(
                        p.id,
                        p.created_at + after,
                        "HTTP 404 Not Found: ",
                        p.created_at + after,
                        true,
                    )
                    .await
                    .unwrap();
            }
        }
    }
}

/// The incidents' ids: (A social-mail, B borger-mail from October, C byg-mail open, D postcanary's own).
async fn build(dir: &Path) -> (Config, DynStore, [i64; 4]) {
    let cfg = dir.join("postcanary.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let config = Config::load_offline(&cfg).expect("config");
    let store: DynStore = Arc::new(SqliteStore::open(&dir.join("ledger.db")).await.unwrap());
    let mut l = Ledger {
        store: Arc::clone(&store),
        n: 0,
    };
    let d0 = NOV;
    let d1 = NOV + DAY_MS;
    // social-mail: three deliveries, then two misses (incident A), resolved on day 1.
    for h in [1, 2, 3] {
        l.probe("social-mail", d0 + h * HOUR, Some(Verdict::Delivered), Some(h * 1_000))
            .await;
    }
    let first = l
        .probe("social-mail", d0 + 10 * HOUR, Some(Verdict::Missed), None)
        .await;
    let a = l
        .open(Some(&first), "social-mail", d0 + 10 * HOUR + 15 * MIN + 100, true, None)
        .await;
    l.deliver_pages(a, 2_000).await;
    // An operator acknowledges A 45 min after its first failing probe was
    // sent, and silences the channel for a while.
    assert!(l
        .store
        .acknowledge(&postcanary::ledger::Acknowledgement {
            incident_id: a,
            by: "anne".into(),
            note: "relay team on it".into(),
            at: d0 + 10 * HOUR + 1_000 + 45 * MIN,
            pages: Vec::new(),
        })
        .await
        .unwrap());
    l.store
        .add_silence(&postcanary::ledger::NewSilence {
            channel: Some("social-mail".into()),
            owner: None,
            from: d0 + 10 * HOUR + 50 * MIN,
            until: d0 + 12 * HOUR,
            reason: "relay maintenance".into(),
            by: "bo".into(),
            at: d0 + 10 * HOUR + 50 * MIN,
        })
        .await
        .unwrap();
    let second = l
        .probe("social-mail", d0 + 11 * HOUR, Some(Verdict::Missed), None)
        .await;
    l.store
        .apply_incident(&IncidentChange {
            probe_id: Some(second),
            reclassify: None,
            action: IncidentAction::Update {
                incident_id: a,
                verdict: "missed".into(),
                detail: "nothing arrived before the deadline".into(),
                at: d0 + 11 * HOUR + 15 * MIN,
            },
        })
        .await
        .unwrap();
    let fixed = l
        .probe("social-mail", d1 + HOUR, Some(Verdict::Delivered), Some(4_000))
        .await;
    l.resolve(a, &fixed, d1 + HOUR + 5_000, "social-mail").await;
    l.deliver_pages(a, 500).await;
    l.probe("social-mail", d1 + 5 * HOUR, Some(Verdict::Delivered), Some(5_000))
        .await;

    // borger-mail: incident B opened on 31 October, resolved on 1 November at 01:00.
    let oct = l
        .probe("borger-mail", NOV - 80 * MIN, Some(Verdict::Missed), None)
        .await;
    let b = l.open(Some(&oct), "borger-mail", NOV - HOUR, true, None).await;
    l.deliver_pages(b, 2_000).await;
    l.probe("borger-mail", NOV + 10 * MIN, Some(Verdict::Missed), None)
        .await;
    let ok = l
        .probe("borger-mail", NOV + 55 * MIN, Some(Verdict::Delivered), Some(3_000))
        .await;
    l.resolve(b, &ok, NOV + HOUR, "borger-mail").await;
    l.deliver_pages(b, 1_000).await;
    // Pending at the period's edge, and one of December.
    l.probe("borger-mail", DEC - 2 * MIN, None, None).await;
    l.probe("borger-mail", DEC + 5 * MIN, Some(Verdict::Delivered), Some(1_000))
        .await;

    // byg-mail: one miss on 30 November opens C in a maintenance window (no page), still open.
    let byg = l
        .probe("byg-mail", DEC - 2 * HOUR - 15 * MIN, Some(Verdict::Missed), None)
        .await;
    let c = l
        .open(
            Some(&byg),
            "byg-mail",
            DEC - 2 * HOUR,
            false,
            Some("maintenance window until 2026-12-01T06:00:00.000Z: move"),
        )
        .await;
    // A compliance finding of social-mail (a canary that arrived over a
    // plaintext hop): counted apart, not against availability.
    l.open(None, "compliance:social-mail", NOV + 3 * DAY_MS, true, None)
        .await;
    // postcanary's own incident (no probe, no page), resolved.
    let d = l.open(None, "postcanary:relay", NOV + 4 * DAY_MS, false, None).await;
    store
        .apply_incident(&IncidentChange {
            probe_id: None,
            reclassify: None,
            action: IncidentAction::Resolve {
                incident_id: d,
                at: NOV + 4 * DAY_MS + 10 * MIN,
                detail: "relay works".into(),
                pages: Vec::new(),
            },
        })
        .await
        .unwrap();

    // Blind spells of the watcher `social`: one from October into November,
    // two in November, and one still open at the end.
    for (since, until, why) in [
        (NOV - 10 * MIN, Some(NOV + 20 * MIN), "connection refused"),
        (
            NOV + 2 * DAY_MS + 10 * HOUR,
            Some(NOV + 2 * DAY_MS + 10 * HOUR + 30 * MIN),
            "connection refused",
        ),
        (
            NOV + 9 * DAY_MS + 8 * HOUR,
            Some(NOV + 9 * DAY_MS + 8 * HOUR + 5 * MIN),
            "IDLE timed out",
        ),
        (DEC - HOUR, None, "login refused"),
    ] {
        store.blind_started("social", "social", since, why).await.unwrap();
        if let Some(u) = until {
            store.blind_ended("social", u).await.unwrap();
        }
    }
    (config, store, [a, b, c, d])
}

fn november() -> Period {
    Period {
        from: NOV,
        to: DEC,
        label: "month 2026-11".into(),
    }
}

#[tokio::test]
async fn report_figures_match_the_hand_made_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store, [a, b, c, d]) = build(dir.path()).await;
    let now = DEC + 10 * HOUR;
    let r = postcanary::report::gather(&store, &config, &[], &[], november(), now)
        .await
        .unwrap();
    let ch = |id: &str| r.channels.iter().find(|c| c.id == id).unwrap();

    // social-mail: 7 judged, 5 successful; days 1 and 2 of November.
    let s = ch("social-mail");
    assert_eq!(
        (s.summary.availability.judged, s.summary.availability.successful),
        (7, 5)
    );
    assert!((s.summary.availability.percent.unwrap() - 500.0 / 7.0).abs() < 1e-9);
    assert_eq!(s.summary.availability.mean_latency_ms, Some(3_000), "(1+2+3+4+5)/5 s");
    let days: Vec<_> = s
        .days
        .iter()
        .map(|d| (d.date.as_str(), d.availability.judged, d.availability.successful))
        .collect();
    assert_eq!(days, vec![("2026-11-01", 5, 3), ("2026-11-02", 2, 2)]);
    // Incident A: detected when `ops` accepted the trigger, 15 min 1.1 s
    // after the first failing probe was sent; resolved 15 h 0 min 4 s after it.
    assert_eq!(s.incidents.len(), 1);
    let ia = &s.incidents[0];
    assert_eq!(ia.id, a);
    assert_eq!(ia.time_to_detect_ms, Some(15 * MIN + 1_100));
    assert_eq!(
        ia.time_to_acknowledge_ms,
        Some(45 * MIN),
        "first failing probe sent → acknowledged"
    );
    assert_eq!(ia.time_to_resolve_ms, Some(15 * HOUR + 4_000));
    assert_eq!(ia.pages_sent, 2, "trigger and resolve accepted by ops; mail gave up");
    assert_eq!(ia.failures, 2);
    assert!(!ia.opened_before_period && !ia.open_at_end);
    assert_eq!(s.summary.incidents_opened, 1);
    assert_eq!(s.summary.mean_time_to_detect_ms, Some(15 * MIN + 1_100));
    assert_eq!(s.summary.mean_time_to_acknowledge_ms, Some(45 * MIN));
    assert_eq!(s.summary.compliance_findings, 1);
    assert_eq!(s.compliance_incidents.len(), 1);
    assert_eq!(s.compliance_incidents[0].channel, "compliance:social-mail");

    // borger-mail: the period starts mid-incident (B, opened in October).
    let bo = ch("borger-mail");
    assert_eq!(
        (
            bo.summary.availability.judged,
            bo.summary.availability.successful,
            bo.summary.availability.pending
        ),
        (2, 1, 1),
        "October's miss and December's delivery are not November's; the probe pending at the edge is not judged"
    );
    let ib = &bo.incidents[0];
    assert_eq!(ib.id, b);
    assert!(ib.opened_before_period);
    assert_eq!(ib.open_in_period_ms, HOUR, "open within November from 00:00 to 01:00");
    assert_eq!(ib.time_to_detect_ms, Some(20 * MIN - 1_000 + 2_000));
    assert_eq!(
        ib.pages_sent, 1,
        "the trigger was accepted in October, the resolve in November"
    );
    assert_eq!(bo.summary.incidents_opened, 0);
    assert_eq!(bo.summary.incidents_in_period, 1);
    assert_eq!(
        bo.summary.mean_time_to_detect_ms, None,
        "an incident counts in the means of the period it opened in"
    );
    assert_eq!(bo.summary.incident_time_ms, HOUR);

    // byg-mail: open at the end, never paged (maintenance window).
    let by = ch("byg-mail");
    let ic = &by.incidents[0];
    assert_eq!(ic.id, c);
    assert!(ic.open_at_end && ic.silenced.is_some());
    assert_eq!((ic.time_to_detect_ms, ic.time_to_resolve_ms), (None, None));
    assert_eq!(ic.open_in_period_ms, 2 * HOUR);
    assert_eq!(by.summary.availability.percent, Some(0.0));

    // Owners: social = social-mail + byg-mail.
    let social = r.owners.iter().find(|o| o.owner == "social").unwrap();
    assert_eq!(social.channels, vec!["social-mail", "byg-mail"]);
    assert_eq!(
        (
            social.summary.availability.judged,
            social.summary.availability.successful
        ),
        (8, 5)
    );
    assert_eq!(social.summary.incidents_opened, 2);
    assert_eq!(social.summary.mean_time_to_detect_ms, Some(15 * MIN + 1_100));
    assert_eq!(social.summary.mean_time_to_resolve_ms, Some(15 * HOUR + 4_000));
    assert_eq!(social.summary.pages_sent, 2);
    let days: Vec<_> = social
        .days
        .iter()
        .map(|d| (d.date.as_str(), d.availability.judged, d.availability.successful))
        .collect();
    assert_eq!(
        days,
        vec![("2026-11-01", 5, 3), ("2026-11-02", 2, 2), ("2026-11-30", 1, 0)],
        "the owner's channels together, per day"
    );

    // postcanary's own incident is reported apart.
    assert_eq!(r.other_incidents.iter().map(|i| i.id).collect::<Vec<_>>(), vec![d]);

    // The watcher: four spells, clipped to November; the longest is the open one (1 h).
    let w = r.watchers.iter().find(|w| w.watcher == "social").unwrap();
    assert_eq!(w.spells, 4);
    assert_eq!(w.blind_ms, 20 * MIN + 30 * MIN + 5 * MIN + HOUR);
    let longest = w.longest.as_ref().unwrap();
    assert_eq!((longest.since, longest.until, longest.ms), (DEC - HOUR, None, HOUR));
    assert_eq!(longest.why, "login refused");
    assert!(r.notes.iter().any(|n| n.contains("acknowledge")));

    // Filters: one owner's channels only, no incidents of others.
    let only = postcanary::report::gather(&store, &config, &[], &["borger".into()], november(), now)
        .await
        .unwrap();
    assert_eq!(
        only.channels.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        vec!["borger-mail"]
    );
    assert!(only.other_incidents.is_empty());
    assert!(
        postcanary::report::gather(&store, &config, &["nope".into()], &[], november(), now)
            .await
            .is_err()
    );
}

#[test]
fn periods_are_utc_days_and_months() {
    let p = postcanary::report::period(None, Some("2026-11"), 0).unwrap();
    assert_eq!((p.from, p.to), (NOV, DEC));
    let dec = postcanary::report::period(None, Some("2026-12"), 0).unwrap();
    assert_eq!(dec.to - dec.from, 31 * DAY_MS);
    let now = NOV + 5 * DAY_MS + 7 * HOUR;
    let s = postcanary::report::period(Some("7d"), None, now).unwrap();
    assert_eq!((s.from, s.to), (NOV - DAY_MS, now), "seven UTC days, today included");
    assert!(postcanary::report::period(Some("36h"), None, now).is_err());
    assert!(postcanary::report::period(None, Some("2026-13"), now).is_err());
    assert!(postcanary::report::period(None, Some("nov"), now).is_err());
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_postcanary"));
    c.env_remove("REPORT_TEST_NEVER_SET");
    c
}

fn run(args: &[&str]) -> String {
    let out = bin().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Prints `html` to PDF with headless Chromium; returns the PDF's path, or
/// `None` when Chromium or poppler is missing outside CI.
fn print_pdf(html: &str, name: &str) -> Option<PathBuf> {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let poppler = Path::new("/usr/bin/pdftotext").exists() && Path::new("/usr/bin/pdftoppm").exists();
    let Some(chromium) = chromium.filter(|_| poppler) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have chromium and poppler-utils (scripts/test.sh)"
        );
        eprintln!("chromium or poppler-utils missing: PDF check skipped (scripts/test.sh installs them)");
        return None;
    };
    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let page = artifacts.join(format!("{name}.html"));
    std::fs::write(&page, html).unwrap();
    let pdf = artifacts.join(format!("{name}.pdf"));
    let shot = artifacts.join(format!("{name}.png"));
    let _ = std::fs::remove_file(&pdf);
    let profile = tempfile::tempdir().unwrap();
    let base = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-pdf-header-footer",
    ];
    let out = Command::new(chromium)
        .args(base)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(chromium)
        .args(base)
        .args(["--hide-scrollbars", "--window-size=900,1400"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "screenshot"
    );
    Some(pdf)
}

/// The text of a PDF, and a check that its first page renders to an image.
fn pdf_text(pdf: &Path) -> String {
    let out = Command::new("pdftotext").arg(pdf).arg("-").output().unwrap();
    assert!(out.status.success());
    let prefix = pdf.with_extension("page");
    let render = Command::new("pdftoppm")
        .args(["-png", "-r", "60", "-f", "1", "-l", "1", "-singlefile"])
        .arg(pdf)
        .arg(&prefix)
        .output()
        .unwrap();
    assert!(render.status.success(), "{}", String::from_utf8_lossy(&render.stderr));
    let png = prefix.with_extension("png");
    assert!(
        std::fs::metadata(&png).map(|m| m.len() > 2_000).unwrap_or(false),
        "page 1 rendered"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn the_cli_writes_table_json_csv_and_html_without_secrets_or_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, store, [a, _, _, _]) = build(dir.path()).await;
    drop(store);
    let cfg = dir.path().join("postcanary.toml");
    let cfg = cfg.to_str().unwrap();

    let table = run(&["report", "-c", cfg, "--month", "2026-11"]);
    assert!(table.contains("social-mail") && table.contains("71.43%"), "{table}");
    assert!(table.contains("\u{2014}"), "no acknowledgements: a dash");
    assert!(table.contains("(before)"), "{table}");

    let json: serde_json::Value =
        serde_json::from_str(&run(&["report", "-c", cfg, "--month", "2026-11", "--format", "json"])).unwrap();
    assert_eq!(json["channels"][0]["id"], "social-mail");
    assert_eq!(json["channels"][0]["judged"], 7);
    assert_eq!(
        json["channels"][0]["incidents"][0]["time_to_detect_ms"],
        15 * MIN + 1_100
    );

    let csv = run(&[
        "report",
        "-c",
        cfg,
        "--month",
        "2026-11",
        "--format",
        "csv",
        "--channel",
        "borger-mail",
    ]);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("channel,name,owner,period_from"));
    assert!(
        lines[0].ends_with(",retention_kept,retention_lost,retention_altered,vantage"),
        "{csv}"
    );
    assert!(
        lines[1].starts_with("borger-mail,Borgerservice (e-mail),borger,"),
        "{csv}"
    );
    assert!(lines[1].contains(",2,1,0,1,50.0000,0,1,0,1,"), "{csv}");

    let bad = bin()
        .args(["report", "-c", cfg, "--month", "2026-13"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--month"));

    let html = run(&["report", "-c", cfg, "--month", "2026-11", "--format", "html"]);
    assert!(!html.contains("<script") && !html.contains("src=\"http") && !html.contains("href=\"http"));
    assert!(html.contains("<svg"));
    if let Some(pdf) = print_pdf(&html, "report") {
        let text = pdf_text(&pdf);
        for name in [
            "Social og Familie (e-mail)",
            "Byggesager (e-mail)",
            "Borgerservice (e-mail)",
        ] {
            assert!(text.contains(name), "{name} in the PDF:\n{text}");
        }
    }

    // Evidence of incident A.
    let ev: serde_json::Value = serde_json::from_str(&run(&["evidence", "-c", cfg, &a.to_string()])).unwrap();
    let probes = ev["probes"].as_array().unwrap();
    let roles: Vec<&str> = probes.iter().map(|p| p["role"].as_str().unwrap()).collect();
    assert_eq!(roles, vec!["opened", "during", "resolved"]);
    assert_eq!(probes[0]["verdict"], "missed");
    assert_eq!(probes[0]["queue_id"], "Q4");
    assert_eq!(probes[0]["deadline"], NOV + 10 * HOUR + 15 * MIN);
    assert!(probes[0]["events"].as_array().unwrap().len() >= 3);
    assert_eq!(probes[2]["found_in"], "social");
    let pages = ev["pages"].as_array().unwrap();
    let got: Vec<(&str, &str, &str)> = pages
        .iter()
        .map(|p| {
            (
                p["notifier"].as_str().unwrap(),
                p["event"].as_str().unwrap(),
                p["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ops", "trigger", "sent"),
            ("mail", "trigger", "failed"),
            ("ops", "resolve", "sent")
        ]
    );
    assert_eq!(ev["figures"]["time_to_detect_ms"], 15 * MIN + 1_100);
    assert_eq!(ev["resolution"]["probe"], probes[2]["id"]);
    let acks = ev["acknowledgements"].as_array().unwrap();
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0]["by"], "anne");
    assert_eq!(acks[0]["detail"], "acknowledged by anne: relay team on it");
    assert_eq!(ev["figures"]["time_to_acknowledge_ms"], 45 * MIN);
    let silences = ev["silences"].as_array().unwrap();
    assert_eq!(silences.len(), 1, "{silences:?}");
    assert_eq!(
        (&silences[0]["created_by"], &silences[0]["reason"]),
        (&serde_json::json!("bo"), &serde_json::json!("relay maintenance"))
    );

    let html = run(&["evidence", "-c", cfg, &a.to_string(), "--format", "html"]);
    if let Some(pdf) = print_pdf(&html, "evidence") {
        let text = pdf_text(&pdf);
        assert!(text.contains("Social og Familie (e-mail)"), "{text}");
        assert!(text.contains("Q4"), "queue id in the PDF");
    }
    let missing = bin().args(["evidence", "-c", cfg, "9999"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));

    // No ledger: an error, not an empty report (and no ledger is created).
    let empty = tempfile::tempdir().unwrap();
    let other = empty.path().join("postcanary.toml");
    std::fs::write(&other, CONFIG).unwrap();
    let out = bin().args(["report", "-c", other.to_str().unwrap()]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ledger at"));
    assert!(!empty.path().join("ledger.db").exists());
}

#[tokio::test]
async fn pruning_keeps_reports_rollups_and_open_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let (config, store, [a, _, c, _]) = build(dir.path()).await;
    let now = DEC + 2 * DAY_MS + HOUR;
    let before = postcanary::report::gather(&store, &config, &[], &[], november(), now)
        .await
        .unwrap();
    let mut ledger = config.ledger.clone();
    ledger.keep_probes = Some(std::time::Duration::from_secs(86_400));
    let stats = postcanary::retention::run_once(&store, &ledger, now).await.unwrap();
    // 13 probes, all older than the cut; kept: the pending one, and the
    // probes that opened (A, B, C) or resolved (A, B) an incident.
    assert_eq!(
        (stats.probes_removed, stats.probes_kept_for_incidents),
        (7, 5),
        "{stats:?}"
    );
    let after = postcanary::report::gather(&store, &config, &[], &[], november(), now)
        .await
        .unwrap();
    assert_eq!(after, before, "November's report is the same from the rollups");

    // The open incident keeps every probe; a resolved one its first and last.
    let ev = postcanary::report::evidence::gather(&store, &config, c, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.probes.len(), 1);
    assert!(!ev.probes[0].events.is_empty(), "with its evidence trail");
    let ev = postcanary::report::evidence::gather(&store, &config, a, now)
        .await
        .unwrap()
        .unwrap();
    let roles: Vec<&str> = ev.probes.iter().map(|p| p.role.as_str()).collect();
    assert_eq!(roles, vec!["opened", "resolved"]);

    // The CLI runs the same (with the config's keep times: none here, so only slimming).
    drop(store);
    let cfg = dir.path().join("postcanary.toml");
    let out = run(&["prune", "-c", cfg.to_str().unwrap()]);
    assert!(out.starts_with("removed 0 probe(s)"), "{out}");

    // keep_probes must be whole days.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        CONFIG.replace(
            "url = \"sqlite://ledger.db\"",
            "url = \"sqlite://ledger.db\"\nkeep_probes = \"36h\"",
        ),
    )
    .unwrap();
    let out = bin()
        .args(["validate", "--offline", "-c", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ledger.keep_probes") && err.contains(":3"), "{err}");
}

/// Two vantage points write to one ledger: the report splits each channel's
/// probes per vantage and lists each vantage's own "vantage degraded"
/// incident with it (not among postcanary's other incidents), in JSON,
/// table and CSV; probes without a vantage are in the channel's totals only.
#[tokio::test]
async fn reports_split_probes_and_incidents_per_vantage() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("postcanary.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let config = Config::load_offline(&cfg).expect("config");
    let path = dir.path().join("ledger.db");
    let store = |v: Option<&'static str>| {
        let path = path.clone();
        async move {
            let s: DynStore = Arc::new(SqliteStore::open(&path).await.unwrap().with_vantage(v));
            s
        }
    };
    let mut east = Ledger {
        store: store(Some("east")).await,
        n: 0,
    };
    let mut west = Ledger {
        store: store(Some("west")).await,
        n: 100,
    };
    let mut plain = Ledger {
        store: store(None).await,
        n: 200,
    };
    for h in [1, 2, 3] {
        east.probe("social-mail", NOV + h * HOUR, Some(Verdict::Delivered), Some(1_000))
            .await;
        west.probe("social-mail", NOV + h * HOUR, Some(Verdict::Delivered), Some(1_000))
            .await;
    }
    east.probe("social-mail", NOV + 4 * HOUR, Some(Verdict::Missed), None)
        .await;
    east.probe("byg-mail", NOV + 4 * HOUR, Some(Verdict::Missed), None)
        .await;
    plain
        .probe("social-mail", NOV + 5 * HOUR, Some(Verdict::Missed), None)
        .await;
    let inc = east
        .open(None, "vantage:east", NOV + 4 * HOUR + 20 * MIN, true, None)
        .await;
    east.deliver_pages(inc, 2_000).await;

    let r = postcanary::report::gather(&plain.store, &config, &[], &[], november(), DEC + DAY_MS)
        .await
        .unwrap();
    let v: Vec<(&str, i64, i64, usize)> = r
        .vantages
        .iter()
        .map(|v| {
            (
                v.vantage.as_str(),
                v.availability.successful,
                v.availability.judged,
                v.incidents.len(),
            )
        })
        .collect();
    assert_eq!(v, vec![("east", 3, 5, 1), ("west", 3, 3, 0)], "{:?}", r.vantages);
    let social = r.channels.iter().find(|c| c.id == "social-mail").unwrap();
    assert_eq!(
        social.summary.availability.judged, 8,
        "every probe in the channel's totals"
    );
    let split: Vec<(&str, i64, i64)> = social
        .vantages
        .iter()
        .map(|v| (v.vantage.as_str(), v.availability.successful, v.availability.judged))
        .collect();
    assert_eq!(split, vec![("east", 3, 4), ("west", 3, 3)]);
    assert_eq!(r.vantages[0].incidents[0].channel, "vantage:east");
    assert!(r.vantages[0].incidents[0].time_to_detect_ms.is_some());
    assert!(
        r.other_incidents.iter().all(|i| !i.channel.starts_with("vantage:")),
        "{:?}",
        r.other_incidents
    );

    let table = postcanary::report::table(&r);
    assert!(table.contains("VANTAGE"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("east") && l.contains("60.00%") && l.contains("3/5")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("social-mail") && l.contains("west") && l.contains("3/3")),
        "{table}"
    );
    let csv = postcanary::report::csv(&r).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(
        header.starts_with("channel,name,owner,") && header.ends_with(",vantage"),
        "{header}"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("social-mail,") && l.contains(",4,3,0,0,75.0000,") && l.ends_with(",east")),
        "{csv}"
    );
    assert!(
        csv.lines().any(|l| l.starts_with("social-mail,") && l.ends_with(",")),
        "the channel's own row has no vantage: {csv}"
    );
    let html = postcanary::report::html::report(&r);
    assert!(html.contains("<h2>Vantage points</h2>") && html.contains("Per vantage point: east"));

    // A channel filter keeps the vantage's own incident.
    let only = postcanary::report::gather(
        &plain.store,
        &config,
        &["byg-mail".to_string()],
        &[],
        november(),
        DEC + DAY_MS,
    )
    .await
    .unwrap();
    let v: Vec<(&str, i64, usize)> = only
        .vantages
        .iter()
        .map(|v| (v.vantage.as_str(), v.availability.judged, v.incidents.len()))
        .collect();
    assert_eq!(v, vec![("east", 1, 1)], "{:?}", only.vantages);
}
