//! The HTTP server through a real socket: access control, JSON API, metrics,
//! the status page (also in headless Chromium when it is installed).

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postcanary::config::{Config, Expect};
use postcanary::engine::Engine;
use postcanary::ledger::NewProbe;
use postcanary::verdict::{now_millis, Judgement, Verdict};

fn write_config(dir: &Path, server: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("token"), "s3cret-token\n").unwrap();
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = []

[server]
{server}

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 9
tls = "none"
from = "canary@kommune.example"

[[channel]]
id = "social-mail"
name = "Social og Familie <b>mail</b>"
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

[[channel]]
id = "never-probed"
name = "New channel"
owner = "borgerservice"
kind = "mail"
to = "new@kommune.example"
expect = "bounce"
"#
    );
    let path = dir.join("postcanary.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

async fn judged(engine: &Engine, n: u32, channel: &str, verdict: Verdict, latency: Option<i64>, detail: &str) {
    let now = now_millis() - 60_000 + i64::from(n) * 1000;
    let id = format!("01TEST{n:020}");
    engine
        .store
        .insert_probe(&NewProbe {
            id: id.clone(),
            token: format!("pc-{id}-0000000000000000"),
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
    engine
        .store
        .record_sent(&id, now, "250 2.0.0 Ok: queued as ABC")
        .await
        .unwrap();
    let j = Judgement {
        verdict,
        detail: detail.into(),
        at: now + 500,
        found: None,
        latency_ms: latency,
        fault: None,
    };
    assert!(engine.store.judge(&id, &j).await.unwrap());
}

/// An engine with a populated ledger, its incident logic run once, and the server started.
async fn serve(dir: &Path, server: &str) -> (Engine, String) {
    let config = Config::load(&write_config(dir, server)).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::start(config).await.unwrap();
    judged(
        &engine,
        1,
        "social-mail",
        Verdict::ExpectedBounce,
        None,
        "refused as expected",
    )
    .await;
    judged(
        &engine,
        2,
        "social-mail",
        Verdict::Missed,
        None,
        "black hole: <script>alert(1)</script>",
    )
    .await;
    judged(
        &engine,
        3,
        "borger-mail",
        Verdict::ExpectedBounce,
        None,
        "refused as expected",
    )
    .await;
    let processor = postcanary::incident::Processor {
        config: Arc::clone(&engine.config),
        store: Arc::clone(&engine.store),
        source: "test".into(),
        outbox: postcanary::outbox::Wake::default(),
    };
    assert_eq!(processor.drain().await.unwrap(), 3);
    let addr = postcanary::server::start(&mut engine).await.unwrap().unwrap();
    (engine, format!("http://{addr}"))
}

const AUTHED: &str = "listen = \"127.0.0.1:0\"\nbearer_tokens = [\"file:token\"]\ntitle = \"Kommune Example\"";

#[tokio::test]
async fn access_api_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, base) = serve(dir.path(), AUTHED).await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: Option<&str>| {
        let mut r = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // /healthz is public by default; the rest needs the token.
    assert_eq!(get("/healthz", None).await.unwrap().status(), 200);
    for path in [
        "/",
        "/api/channels",
        "/metrics",
        "/api/incidents",
        "/channels/social-mail",
    ] {
        assert_eq!(get(path, None).await.unwrap().status(), 401, "{path}");
        assert_eq!(get(path, Some("wrong")).await.unwrap().status(), 401, "{path}");
    }
    let ok = Some("s3cret-token");

    let channels: serde_json::Value = get("/api/channels", ok).await.unwrap().json().await.unwrap();
    let states: Vec<(&str, &str)> = channels
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("social-mail", "failing"),
            ("borger-mail", "ok"),
            ("never-probed", "unknown")
        ]
    );
    let social = &channels[0];
    assert_eq!(social["last"]["verdict"], "missed");
    assert_eq!(social["uptime"]["h24"], 50.0);
    assert_eq!(social["open_incident"]["verdict"], "missed");
    assert!(social["open_incident"]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "opened"));

    // Pages of the channel list: a `next` link until the last.
    let first = get("/api/channels?limit=2", ok).await.unwrap();
    assert_eq!(
        first.headers()["link"],
        "</api/channels?limit=2&after=borger%2Dmail>; rel=\"next\""
    );
    let first: serde_json::Value = first.json().await.unwrap();
    assert_eq!(first.as_array().unwrap().len(), 2);
    let rest = get("/api/channels?limit=2&after=borger-mail", ok).await.unwrap();
    assert!(rest.headers().get("link").is_none());
    let rest: serde_json::Value = rest.json().await.unwrap();
    assert_eq!(rest[0]["id"], "never-probed");

    let one: serde_json::Value = get("/api/channels/borger-mail", ok)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "borger-mail");
    assert_eq!(get("/api/channels/nope", ok).await.unwrap().status(), 404);

    let probes: serde_json::Value = get("/api/channels/social-mail/probes?since=0", ok)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let p = probes.as_array().unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[1]["verdict"], "missed");
    assert_eq!(p[1]["smtp_reply"], "250 2.0.0 Ok: queued as ABC");
    assert!(p[1]["events"].as_array().unwrap().iter().any(|e| e["kind"] == "sent"));
    let future = now_millis() + 10_000;
    let none: serde_json::Value = get(&format!("/api/channels/social-mail/probes?since={future}"), ok)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0);
    assert_eq!(
        get("/api/channels/social-mail/probes?since=yesterday", ok)
            .await
            .unwrap()
            .status(),
        400
    );

    let incidents: serde_json::Value = get("/api/incidents", ok).await.unwrap().json().await.unwrap();
    assert_eq!(incidents[0]["channel"], "social-mail");
    assert_eq!(incidents[0]["open"], true);

    let spec: serde_json::Value = get("/api/openapi.json", ok).await.unwrap().json().await.unwrap();
    for path in [
        "/api/channels",
        "/api/channels/{id}",
        "/api/channels/{id}/probes",
        "/api/incidents",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} documented");
    }

    let metrics = get("/metrics", ok).await.unwrap().text().await.unwrap();
    for line in [
        "postcanary_channel_up{channel=\"social-mail\",owner=\"social\"} 0",
        "postcanary_channel_up{channel=\"borger-mail\",owner=\"borgerservice\"} 1",
        "postcanary_incidents_open 1",
        "postcanary_pending_probes 0",
        "# TYPE postcanary_delivery_latency_seconds histogram",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    // The counters count verdicts from the server's start, by owner.
    assert!(!metrics.contains("postcanary_probes_total{"), "{metrics}");
    judged(&engine, 4, "social-mail", Verdict::Missed, None, "black hole").await;
    judged(&engine, 5, "borger-mail", Verdict::Delivered, Some(1_500), "in INBOX").await;
    let metrics = get("/metrics", ok).await.unwrap().text().await.unwrap();
    for line in [
        "postcanary_probes_total{owner=\"social\",verdict=\"missed\"} 1",
        "postcanary_probes_total{owner=\"borgerservice\",verdict=\"delivered\"} 1",
        "postcanary_delivery_latency_seconds_bucket{owner=\"borgerservice\",le=\"1\"} 0",
        "postcanary_delivery_latency_seconds_bucket{owner=\"borgerservice\",le=\"2\"} 1",
        "postcanary_delivery_latency_seconds_count{owner=\"borgerservice\"} 1",
        "postcanary_last_verdict_timestamp_seconds{channel=\"borger-mail\"} ",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(line)),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("never-probed"),
        "no up/down for a channel never probed"
    );
    engine.stop().await;
}

#[tokio::test]
async fn status_page_shows_failing_channels_escaped_and_in_danish() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, base) = serve(
        dir.path(),
        "listen = \"127.0.0.1:0\"\nlanguage = \"da\"\ntitle = \"Kommune Example\"",
    )
    .await;
    // Loopback without credentials is allowed; /metrics then is open too.
    let html = reqwest::get(format!("{base}/")).await.unwrap().text().await.unwrap();
    assert!(html.contains("<html lang=\"da\">"));
    assert!(
        html.contains("data-channel=\"social-mail\" data-state=\"failing\""),
        "{html}"
    );
    assert!(html.contains("FEJLER") && html.contains("Åbne hændelser"));
    assert!(
        html.contains("Social og Familie &lt;b&gt;mail&lt;/b&gt;"),
        "names are escaped"
    );
    assert!(!html.contains("<script>"), "hostile detail is escaped");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(html.contains("<svg class=\"spark\""));
    let page = reqwest::get(format!("{base}/channels/social-mail"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("ikke modtaget") && page.contains("data-verdict=\"missed\""));
    assert_eq!(
        reqwest::get(format!("{base}/channels/nope")).await.unwrap().status(),
        404
    );

    // In a real browser, when one is installed (scripts/test.sh installs Debian's chromium).
    if let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .find(|p| Path::new(p).exists())
    {
        let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
        std::fs::create_dir_all(&artifacts).unwrap();
        let shot = artifacts.join("status-page.png");
        let _ = std::fs::remove_file(&shot);
        let profile = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--window-size=420,1400",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--screenshot={}", shot.display()))
            .arg(format!("{base}/"))
            .output();
        let out = tokio::time::timeout(Duration::from_secs(60), out)
            .await
            .unwrap()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
            "screenshot written"
        );
        let dom = tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(format!("{base}/"))
            .output();
        let dom = tokio::time::timeout(Duration::from_secs(60), dom)
            .await
            .unwrap()
            .unwrap();
        let dom = String::from_utf8_lossy(&dom.stdout);
        // What a person sees: the failing channel, marked as failing, in its row.
        let row = dom
            .split("<tr")
            .find(|r| r.starts_with(" data-channel=\"social-mail\""))
            .unwrap_or("");
        assert!(row.contains("FEJLER"), "{dom}");
        // Healthy channels are summarised per owner, linked to the owner's page.
        let owner_row = dom
            .split("<tr")
            .find(|r| r.starts_with(" data-owner=\"borgerservice\""))
            .unwrap_or("");
        assert!(owner_row.contains("href=\"/owners/borgerservice\""), "{dom}");
    } else {
        eprintln!("chromium not installed: browser check skipped (scripts/test.sh installs it)");
    }
    engine.stop().await;
}

#[test]
fn an_open_status_page_off_loopback_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "listen = \"0.0.0.0:8080\"");
    let errs = Config::load(&path).unwrap_err();
    assert!(errs.to_string().contains("would be open to anyone"), "{errs}");
}
