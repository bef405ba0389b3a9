//! Operating it through the API and the page's forms (issue 15): roles,
//! acknowledge, silence, end a silence, reload, each with its audit row;
//! forms need the page's token and our origin.

use std::path::Path;
use std::sync::Arc;

use postcanary::config::{Config, Expect};
use postcanary::engine::Engine;
use postcanary::ledger::NewProbe;
use postcanary::verdict::{now_millis, Judgement, Verdict};

fn config_text(schedule: &str) -> String {
    format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = ["hook"]
schedule = "{schedule}"

[server]
listen = "127.0.0.1:0"
timezone = "Europe/Copenhagen"

[[server.user]]
name = "anne"
role = "operator"
token = "file:op-token"
password = "file:op-token"

[[server.user]]
name = "victor"
role = "viewer"
token = "file:view-token"

[[notifier]]
name = "hook"
kind = "webhook"
url = "http://127.0.0.1:9/hook"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 9
tls = "none"
from = "canary@kommune.example"

[[channel]]
id = "social-mail"
name = "Social"
owner = "social"
kind = "mail"
to = "social@kommune.example"
expect = "bounce"
"#
    )
}

async fn fail(engine: &Engine) {
    let now = now_millis() - 10_000;
    let id = "01OPS0000000000000000000001".to_string();
    engine
        .store
        .insert_probe(&NewProbe {
            id: id.clone(),
            token: format!("pc-{id}"),
            channel: "social-mail".into(),
            kind: "mail".into(),
            expect: Expect::Bounce,
            inbox: None,
            target: "social@kommune.example".into(),
            created_at: now,
            deadline: now + 3_600_000,
            run_id: "t".into(),
        })
        .await
        .unwrap();
    engine.store.record_sent(&id, now, "250 ok").await.unwrap();
    let j = Judgement {
        verdict: Verdict::Missed,
        detail: "black hole".into(),
        at: now + 500,
        found: None,
        latency_ms: None,
        fault: None,
    };
    assert!(engine.store.judge(&id, &j).await.unwrap());
    let processor = postcanary::incident::Processor {
        config: Arc::clone(&engine.config),
        store: Arc::clone(&engine.store),
        source: "test".into(),
        outbox: postcanary::outbox::Wake::default(),
    };
    processor.drain().await.unwrap();
}

async fn start(dir: &Path) -> (Engine, String) {
    std::fs::write(dir.join("op-token"), "op-secret\n").unwrap();
    std::fs::write(dir.join("view-token"), "view-secret\n").unwrap();
    std::fs::write(dir.join("postcanary.toml"), config_text("every 10m")).unwrap();
    let config = Config::load(&dir.join("postcanary.toml")).unwrap_or_else(|e| panic!("{e}"));
    let mut engine = Engine::start(config).await.unwrap();
    fail(&engine).await;
    let addr = postcanary::server::start(&mut engine).await.unwrap().unwrap();
    (engine, format!("http://{addr}"))
}

#[tokio::test]
async fn operators_act_viewers_read_and_every_action_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, base) = start(dir.path()).await;
    let http = reqwest::Client::new();
    let incident = engine.store.open_incident("social-mail").await.unwrap().unwrap();
    let ack = format!("{base}/api/incidents/{}/acknowledge", incident.id);

    // A viewer reads but cannot act.
    let r = get(&http, format!("{base}/api/incidents"), "view-secret").await;
    assert_eq!(r.status(), 200);
    let r = post(&http, &ack, "view-secret", &serde_json::json!({"reason": "mine"})).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("victor is a viewer"));
    assert!(
        engine.store.audit_log(None, 10).await.unwrap().is_empty(),
        "a refusal changes nothing"
    );

    // The operator acknowledges: once, recorded with who, when and why.
    let r = post(
        &http,
        &ack,
        "op-secret",
        &serde_json::json!({"reason": "relay restarted"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["acknowledged_by"], "anne");
    let again = post(&http, &ack, "op-secret", &serde_json::json!({})).await;
    assert_eq!(again.status(), 409);
    let log = engine.store.audit_log(None, 10).await.unwrap();
    assert_eq!(
        (log[0].actor.as_str(), log[0].action.as_str(), log[0].reason.as_str()),
        ("anne", "acknowledge", "relay restarted")
    );
    // The webhook notifier was paged, so it hears the acknowledgement.
    let pages = engine.store.pages_of(&[incident.id]).await.unwrap();
    assert!(
        pages.iter().any(|p| p.notifier == "hook" && p.event == "acknowledge"),
        "{pages:?}"
    );

    // Silence an owner, then end it; both audited; bad input is refused clearly.
    let bad = post(
        &http,
        format!("{base}/api/silences"),
        "op-secret",
        &serde_json::json!({"owner": "nobody", "duration": "2h", "reason": "x"}),
    )
    .await;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("no channel has owner"));
    let r = post(
        &http,
        format!("{base}/api/silences"),
        "op-secret",
        &serde_json::json!({"owner": "social", "duration": "2h", "reason": "mail migration"}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let s: serde_json::Value = r.json().await.unwrap();
    let sid = s["id"].as_i64().unwrap();
    let until = s["until"].as_i64().unwrap() - s["from"].as_i64().unwrap();
    assert_eq!(until, 7_200_000);
    let active: serde_json::Value = get_json(&http, format!("{base}/api/silences"), "view-secret").await;
    assert_eq!(active.as_array().unwrap().len(), 1);
    let viewer_end = post(
        &http,
        format!("{base}/api/silences/{sid}/end"),
        "view-secret",
        &serde_json::json!({}),
    )
    .await;
    assert_eq!(viewer_end.status(), 403);
    let r = post(
        &http,
        format!("{base}/api/silences/{sid}/end"),
        "op-secret",
        &serde_json::json!({"reason": "done"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let audit: serde_json::Value = get_json(&http, format!("{base}/api/audit"), "view-secret").await;
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["actor"].as_str().unwrap(), a["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        actions,
        vec![("anne", "end-silence"), ("anne", "silence"), ("anne", "acknowledge")]
    );

    // Channel lists and probe histories page.
    let r = get(&http, format!("{base}/api/channels?limit=1"), "view-secret").await;
    assert!(r.headers().get("link").is_none(), "one channel: no next page");
    let probes: serde_json::Value = get_json(
        &http,
        format!(
            "{base}/api/channels/social-mail/probes?before={}:zzzz&limit=5",
            now_millis()
        ),
        "view-secret",
    )
    .await;
    assert_eq!(probes.as_array().unwrap().len(), 1);
    let bad = get(
        &http,
        format!("{base}/api/channels/social-mail/probes?before=yesterday"),
        "view-secret",
    )
    .await;
    assert_eq!(bad.status(), 400);

    // The page shows the acknowledgement, the zone, and the audit log; no dedup key.
    let html = get(&http, format!("{base}/"), "view-secret")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("acknowledged by <b>anne</b>"), "{html}");
    assert!(html.contains(" CET") || html.contains(" CEST"), "times carry the zone");
    assert!(!html.contains(&incident.dedup_key), "no internal keys on the page");
    assert!(!html.contains("action=\"/silences\""), "a viewer gets no forms");
    engine.stop().await;
}

#[tokio::test]
async fn forms_need_the_pages_token_and_origin() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, base) = start(dir.path()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{base}/"))
        .basic_auth("anne", Some("op-secret"))
        .send()
        .await
        .unwrap();
    let cookie = page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    assert!(page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("SameSite=Strict"));
    let html = page.text().await.unwrap();
    let token = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap()
        .to_string();
    assert!(html.contains("action=\"/silences\""), "an operator gets the forms");
    let host = base.trim_start_matches("http://");
    let post = |token: &str, origin: &str| {
        http.post(format!("{base}/silences"))
            .basic_auth("anne", Some("op-secret"))
            .header("cookie", &cookie)
            .header("origin", origin)
            .form(&[
                ("csrf", token),
                ("back", "/"),
                ("target", "owner:social"),
                ("duration", "30m"),
                ("reason", "planned"),
            ])
            .send()
    };
    assert_eq!(post(&token, "http://evil.example").await.unwrap().status(), 403);
    assert_eq!(post("0000", &format!("http://{host}")).await.unwrap().status(), 403);
    let ok = post(&token, &format!("http://{host}")).await.unwrap();
    assert_eq!(ok.status(), 303);
    assert_eq!(ok.headers()["location"], "/");
    let active = engine.store.silences(Some(now_millis()), 10).await.unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(
        (active[0].created_by.as_str(), active[0].reason.as_str()),
        ("anne", "planned")
    );
    engine.stop().await;
}

#[tokio::test]
async fn reload_takes_a_valid_config_and_keeps_the_old_one_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, base) = start(dir.path()).await;
    let http = reqwest::Client::new();
    let schedule = |v: serde_json::Value| v[0]["schedule"].as_str().unwrap_or("").to_string();
    let before = get(&http, format!("{base}/api/channels"), "view-secret").await;
    assert_eq!(schedule(before.json().await.unwrap()), "every 10m");

    // A broken config: refused, the old one stays, the page says why.
    std::fs::write(
        dir.path().join("postcanary.toml"),
        config_text("every 10m").replace("owner = \"social\"", "owner = \"social\"\nbogus = 1"),
    )
    .unwrap();
    let r = http
        .post(format!("{base}/api/reload"))
        .bearer_auth("op-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let st: serde_json::Value = r.json().await.unwrap();
    assert_eq!(st["ok"], false);
    assert!(st["errors"][0].as_str().unwrap().contains("bogus"), "{st}");
    let html = get(&http, format!("{base}/"), "view-secret")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("id=\"reload-errors\"") && html.contains("bogus"),
        "{html}"
    );
    let still = get(&http, format!("{base}/api/channels"), "view-secret").await;
    assert_eq!(schedule(still.json().await.unwrap()), "every 10m");

    // A viewer cannot reload.
    let r = http
        .post(format!("{base}/api/reload"))
        .bearer_auth("view-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A changed schedule takes effect; the open incident survives.
    std::fs::write(dir.path().join("postcanary.toml"), config_text("every 5m")).unwrap();
    let r = http
        .post(format!("{base}/api/reload"))
        .bearer_auth("op-secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let st: serde_json::Value = r.json().await.unwrap();
    assert!(st["changes"][0].as_str().unwrap().contains("schedule"), "{st}");
    let after = get(&http, format!("{base}/api/channels"), "view-secret").await;
    assert_eq!(schedule(after.json().await.unwrap()), "every 5m");
    assert!(engine.store.open_incident("social-mail").await.unwrap().is_some());
    let html = get(&http, format!("{base}/"), "view-secret")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !html.contains("id=\"reload-errors\""),
        "the banner goes once a reload succeeds"
    );
    let log = engine.store.audit_log(None, 10).await.unwrap();
    assert_eq!(
        log.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
        vec!["reload", "reload-failed"]
    );
    engine.stop().await;
}

async fn get(http: &reqwest::Client, url: impl reqwest::IntoUrl, token: &str) -> reqwest::Response {
    http.get(url).bearer_auth(token).send().await.unwrap()
}

async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl, token: &str) -> serde_json::Value {
    get(http, url, token).await.json().await.unwrap()
}

async fn post(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    token: &str,
    body: &serde_json::Value,
) -> reqwest::Response {
    http.post(url).bearer_auth(token).json(body).send().await.unwrap()
}
