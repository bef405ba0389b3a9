//! Discovery in the daemon: a local site on 127.0.0.1 whose pages change
//! while the engine runs with `[discover]`; a newly published address that
//! no channel probes opens one incident of its own and pages; unpublishing
//! it resolves the incident.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::outbox::RealDelivery;
use support::receiver::Receiver;

type Pages = Arc<Mutex<Vec<(String, String)>>>;

async fn serve(State(pages): State<Pages>, uri: Uri) -> Response {
    let pages = pages.lock().unwrap_or_else(|e| e.into_inner());
    match pages.iter().find(|(p, _)| p == uri.path()) {
        Some((_, body)) => Html(body.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn index(extra_link: bool) -> String {
    format!(
        "<html><body><h1>Kommune</h1><p>Skriv til <a href=\"mailto:post@kommune.example\">post@kommune.example</a></p>{}</body></html>",
        if extra_link { "<a href=\"/ny\">Ny afdeling</a>" } else { "" }
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_published_unmonitored_address_opens_one_incident() {
    let pages: Pages = Arc::new(Mutex::new(vec![("/".into(), index(false))]));
    let app = axum::Router::new().fallback(serve).with_state(Arc::clone(&pages));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let site = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("dir");
    // A relay nobody listens on: the channel is never probed here (the scheduler is off).
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = ["ops"]

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {dead}
tls = "none"
from = "canary@kommune.example"

[[notifier]]
name = "ops"
kind = "webhook"
url = "{hook}"

[[channel]]
id = "post"
name = "Hovedpostkasse"
kind = "mail"
to = "post@kommune.example"
expect = "bounce"
schedule = "every 1h"

[server]
listen = "127.0.0.1:0"

[discover]
sites = ["http://{site}/"]
interval = "1s"
max_pages = 10
"#,
        dead = dead.port(),
        hook = hook.url("/hook"),
    );
    let path = dir.path().join("postcanary.toml");
    std::fs::write(&path, toml).expect("config");
    let mut engine = Engine::start(Config::load(&path).expect("config"))
        .await
        .expect("engine");
    engine.start_paging(Arc::new(
        RealDelivery::new(Arc::clone(&engine.config)).expect("delivery"),
    ));
    let status = postcanary::server::start(&mut engine)
        .await
        .expect("server")
        .expect("address");

    let discover_incidents = |e: &Engine| {
        let store = Arc::clone(&e.store);
        async move {
            store
                .open_incidents()
                .await
                .expect("ledger")
                .into_iter()
                .filter(|i| i.channel.starts_with("discover:"))
                .collect::<Vec<_>>()
        }
    };
    // Everything published is probed: a few rounds, no incident.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(discover_incidents(&engine).await.is_empty());
    assert!(hook.accepted().is_empty());

    // A new page publishes an address nobody probes.
    {
        let mut p = pages.lock().unwrap_or_else(|e| e.into_inner());
        p[0].1 = index(true);
        p.push(("/ny".into(), "<p>Kontakt: nyafdeling [at] kommune.example</p>".into()));
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while hook.accepted().is_empty() && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let open = discover_incidents(&engine).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].channel, "discover:addr:nyafdeling@kommune.example");
    assert!(open[0].detail.contains("/ny"), "{}", open[0].detail);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = reqwest::get(format!("http://{status}/"))
        .await
        .expect("status page")
        .text()
        .await
        .expect("body");
    assert!(
        page.contains("unmonitored public channel nyafdeling@kommune.example"),
        "the status page shows the discovery incident"
    );
    let sent = hook.accepted();
    assert_eq!(sent.len(), 1, "one page, not one per round");
    assert_eq!(sent[0].json()["event"], "trigger");

    // Unpublished again: resolved, with an all-clear.
    {
        let mut p = pages.lock().unwrap_or_else(|e| e.into_inner());
        p[0].1 = index(false);
        p.retain(|(path, _)| path != "/ny");
    }
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    while hook.accepted().len() < 2 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(discover_incidents(&engine).await.is_empty());
    assert_eq!(hook.accepted()[1].json()["event"], "resolve");
    engine.stop().await;
}
