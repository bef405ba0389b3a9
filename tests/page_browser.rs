//! The status page in headless Chromium (issue 15): a prober-side and a DNS
//! incident are visible; an operator acknowledges and silences through the
//! page's own forms; a viewer has no forms and cannot post; at a phone's
//! 390 px the overview is in the first screen.

#[path = "support/cdp.rs"]
mod cdp;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use postcanary::config::{Config, Expect};
use postcanary::engine::Engine;
use postcanary::ledger::{IncidentAction, IncidentChange, NewProbe};
use postcanary::verdict::{now_millis, Judgement, Verdict};

const CONFIG: &str = r#"[ledger]
url = "sqlite://ledger.db"
[defaults]
notify = []
[server]
listen = "127.0.0.1:0"
title = "Kommune Example"
timezone = "Europe/Copenhagen"
[[server.user]]
name = "anne"
role = "operator"
password = "file:secret"
[[server.user]]
name = "victor"
role = "viewer"
password = "file:secret"
[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 9
tls = "none"
from = "canary@kommune.example"
[[channel]]
id = "social-mail"
name = "Social og Familie"
owner = "social"
kind = "mail"
to = "social@kommune.example"
expect = "bounce"
[[channel]]
id = "borger-mail"
name = "Borgerservice"
owner = "borgerservice"
kind = "mail"
to = "borger@kommune.example"
expect = "bounce"
"#;

async fn judged(engine: &Engine, n: u32, channel: &str, verdict: Verdict) {
    let now = now_millis() - 60_000 + i64::from(n) * 1000;
    let id = format!("01PAGE{n:020}");
    engine
        .store
        .insert_probe(&NewProbe {
            id: id.clone(),
            token: format!("pc-{id}"),
            channel: channel.into(),
            kind: "mail".into(),
            expect: Expect::Bounce,
            inbox: None,
            target: "x@kommune.example".into(),
            created_at: now,
            deadline: now + 3_600_000,
            run_id: "t".into(),
        })
        .await
        .unwrap();
    engine.store.record_sent(&id, now, "250 ok").await.unwrap();
    let j = Judgement {
        verdict,
        detail: "black hole".into(),
        at: now + 500,
        found: None,
        latency_ms: None,
        fault: None,
    };
    assert!(engine.store.judge(&id, &j).await.unwrap());
}

async fn open(engine: &Engine, key: &str, verdict: &str, detail: &str) {
    let change = IncidentChange {
        probe_id: None,
        reclassify: None,
        action: IncidentAction::Open {
            channel: key.into(),
            dedup_key: format!("postcanary/{key}/1"),
            verdict: verdict.into(),
            detail: detail.into(),
            at: now_millis() - 30_000,
            silenced: None,
            pages: Vec::new(),
        },
    };
    engine.store.apply_incident(&change).await.unwrap();
}

fn basic(user: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw-123"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_act_through_the_pages_forms_viewers_cannot_and_phones_see_the_overview() {
    let Some(bin) = cdp::chromium() else {
        eprintln!("chromium not installed: browser test skipped (scripts/test.sh installs it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "pw-123\n").unwrap();
    std::fs::write(dir.path().join("postcanary.toml"), CONFIG).unwrap();
    let config = Config::load(&dir.path().join("postcanary.toml")).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::start(config).await.unwrap();
    judged(&engine, 1, "social-mail", Verdict::Missed).await;
    judged(&engine, 2, "borger-mail", Verdict::ExpectedBounce).await;
    let processor = postcanary::incident::Processor {
        config: Arc::clone(&engine.config),
        store: Arc::clone(&engine.store),
        source: "test".into(),
        outbox: postcanary::outbox::Wake::default(),
    };
    processor.drain().await.unwrap();
    open(
        &engine,
        "postcanary:relay",
        "error",
        "cannot reach the relay 127.0.0.1:9",
    )
    .await;
    open(
        &engine,
        "dns:kommune.example",
        "routing_changed",
        "MX changed: 10 mx1 → 10 mx9",
    )
    .await;
    let addr = postcanary::server::start(&mut engine).await.unwrap().unwrap();
    let base = format!("http://{addr}");
    let incident = engine.store.open_incident("social-mail").await.unwrap().unwrap();

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page-phone.png");
    let base2 = base.clone();
    let shot2 = shot.clone();
    // The browser is blocking I/O: its own thread, the server on the runtime.
    let result = tokio::task::spawn_blocking(move || {
        let base = base2;
        let mut b = cdp::Browser::launch(bin);
        let op = b.tab(&basic("anne"), 390, 844);
        b.goto(&op, &format!("{base}/"));
        // Every kind of open incident is on the page, as a summary.
        let text = |b: &mut cdp::Browser, sel: &str| {
            b.eval(
                &op,
                &format!("(document.querySelector('{sel}')||{{innerText:''}}).innerText"),
            )
            .as_str()
            .unwrap_or("")
            .to_string()
        };
        let relay = text(&mut b, "[data-channel=\"postcanary:relay\"]");
        assert!(
            relay.contains("sender `relay`") && relay.contains("cannot reach"),
            "{relay}"
        );
        let dns = text(&mut b, "[data-channel=\"dns:kommune.example\"]");
        assert!(dns.contains("(DNS)") && dns.contains("MX changed"), "{dns}");
        // At 390 px the overview is in the first screen, with nothing wider than the phone.
        let fits = b.eval(
            &op,
            "(() => { const r = document.getElementById('overview').getBoundingClientRect(); \
              return r.bottom <= window.innerHeight && document.documentElement.scrollWidth <= 400; })()",
        );
        assert_eq!(fits, serde_json::json!(true));
        b.screenshot(&op, &shot2);
        // The operator acknowledges through the incident's own form...
        b.submit(
            &op,
            "(() => { const f = document.querySelector('[data-channel=\"social-mail\"] form.ack'); \
              f.reason.value = 'on it, relay restarted'; f.submit(); return true; })()",
        );
        let acked = text(&mut b, "[data-channel=\"social-mail\"]");
        assert!(acked.contains("anne"), "{acked}");
        // ...and silences an owner through the silence form.
        b.submit(
            &op,
            "(() => { const f = document.querySelector('form.silence'); f.target.value = 'owner:social'; \
              f.duration.value = '1h'; f.reason.value = 'mail migration'; f.submit(); return true; })()",
        );
        let silences = text(&mut b, "#silences");
        assert!(silences.contains("mail migration"), "{silences}");

        // A viewer sees no forms, and a post from the page itself is refused.
        let viewer = b.tab(&basic("victor"), 1200, 900);
        b.goto(&viewer, &format!("{base}/"));
        let forms = b.eval(&viewer, "document.querySelectorAll('form[method=post]').length");
        assert_eq!(forms, serde_json::json!(0));
        let status = b.eval(
            &viewer,
            "fetch('/silences', {method: 'POST', body: new URLSearchParams({target: 'owner:borgerservice', \
              duration: '1h', reason: 'x', csrf: 'guess'})}).then(r => r.status)",
        );
        assert_eq!(status, serde_json::json!(403));
    });
    let outcome = tokio::time::timeout(Duration::from_secs(120), result).await;
    let stored = engine.store.incident(incident.id).await.unwrap().unwrap();
    let silences = engine.store.silences(Some(now_millis()), 10).await.unwrap();
    engine.stop().await;
    outcome.expect("browser steps within 120 s").expect("browser steps");
    assert_eq!(stored.acknowledged_by.as_deref(), Some("anne"));
    assert_eq!(silences.len(), 1, "the viewer's post changed nothing");
    assert_eq!(
        (silences[0].owner.as_deref(), silences[0].created_by.as_str()),
        (Some("social"), "anne")
    );
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "phone screenshot written"
    );
}
