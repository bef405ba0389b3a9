//! `postcanary demo`: the whole system on loopback with nothing installed.
//! An in-process sandbox (SMTP receiver and IMAP server over shared
//! mailboxes, a municipal form site with a login, a webhook receiver that
//! prints pages) and the real daemon probing it, replaying the seed incident
//! in about two minutes: a working mailbox; a retired shared address that
//! swallows mail; a mistyped secure-mail address that should bounce but
//! accepts; the vendor switching routing back to the closed mailbox; and the
//! form's login moving while its handler drops submissions. The status page
//! is served throughout; Ctrl-C ends it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::config::Config;
use crate::engine::Engine;
use crate::sandbox::{MailStore, Route, Sandbox, SandboxOptions};

const DOMAIN: &str = "kommune.example";
/// When the story's turns happen, from the start.
const REVERT_AT: Duration = Duration::from_secs(45);
const LOGIN_MOVES_AT: Duration = Duration::from_secs(75);
const FIX_AT: Duration = Duration::from_secs(100);
const STORY_ENDS_AT: Duration = Duration::from_secs(130);

/// The form site's switchable behaviour.
#[derive(Clone, Default)]
struct Site {
    /// After the login change: the login lives elsewhere and the old handler drops submissions.
    moved: Arc<AtomicBool>,
    smtp: Arc<std::sync::OnceLock<SocketAddr>>,
}

impl Site {
    fn login_path(&self) -> &'static str {
        if self.moved.load(Ordering::SeqCst) {
            "/erhverv-login/"
        } else {
            "/login/"
        }
    }
}

fn page(body: &str) -> Html<String> {
    Html(format!(
        "<!DOCTYPE html><html lang=\"da\"><head><meta charset=\"utf-8\"><title>Kommune Example</title></head><body>{body}</body></html>"
    ))
}

fn logged_in(h: &HeaderMap) -> bool {
    h.get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("demo_login=1"))
}

async fn form_page(State(site): State<Site>, h: HeaderMap) -> Response {
    if !logged_in(&h) {
        return Redirect::to(site.login_path()).into_response();
    }
    page(
        "<h1>Skriv til kommunen</h1><form id=\"kontakt\" method=\"post\" action=\"/kontakt\">\
         <input type=\"hidden\" name=\"form_build_id\" value=\"form-demo\">\
         <label>Navn <input type=\"text\" name=\"name\"></label>\
         <label>Besked <textarea name=\"message\"></textarea></label>\
         <input type=\"submit\" name=\"op\" value=\"Send\"></form>",
    )
    .into_response()
}

async fn login_page() -> Html<String> {
    page(
        "<h1>MitID (simulator)</h1><form method=\"post\"><label>Brugernavn <input type=\"text\" name=\"username\"></label>\
         <label>Adgangskode <input type=\"password\" name=\"password\"></label><button type=\"submit\">Log ind</button></form>",
    )
}

async fn login(body: String) -> Response {
    let ok = url::form_urlencoded::parse(body.as_bytes()).any(|(k, v)| k == "password" && v == "demo");
    if !ok {
        return page("<p>Forkert adgangskode</p>").into_response();
    }
    let mut r = Redirect::to("/kontakt").into_response();
    if let Ok(v) = "demo_login=1; Path=/; HttpOnly".parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

async fn submit(State(site): State<Site>, h: HeaderMap, body: String) -> Response {
    if !logged_in(&h) {
        return (StatusCode::FORBIDDEN, "log ind først").into_response();
    }
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // The broken handler: a thank-you page, and the submission goes nowhere.
    if !site.moved.load(Ordering::SeqCst) {
        if let Some(addr) = site.smtp.get() {
            let text = format!("Henvendelse fra {}\n\n{}\n", get("name"), get("message"));
            if let Err(e) = mail(*addr, &text).await {
                return (StatusCode::INTERNAL_SERVER_ERROR, format!("mail failed: {e}")).into_response();
            }
        }
    }
    page("<h1>Tak for din henvendelse</h1>").into_response()
}

async fn mail(smtp: SocketAddr, text: &str) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let from = "Selvbetjening <noreply@kommune.example>"
        .parse()
        .map_err(|e| format!("{e}"))?;
    let to = "borger@kommune.example".parse().map_err(|e| format!("{e}"))?;
    let msg = Message::builder()
        .from(from)
        .to(to)
        .subject("Ny henvendelse via kontaktformularen")
        .body(text.to_string())
        .map_err(|e| e.to_string())?;
    AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.ip().to_string())
        .port(smtp.port())
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Prints every page that arrives, as an on-call phone would show it.
async fn hook(body: String) -> StatusCode {
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    let icon = match s("event").as_str() {
        "resolve" => "✅",
        "acknowledge" => "👀",
        _ => "🚨",
    };
    let channel = v["channel"]["id"].as_str().unwrap_or("");
    println!(
        "{icon} PAGE {} {channel}: {} — {}",
        s("event"),
        s("verdict"),
        s("detail")
    );
    StatusCode::OK
}

async fn serve(router: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

fn config_text(dir: &Path, sandbox: &Sandbox, site: SocketAddr, hook: SocketAddr, listen: &str) -> String {
    let (smtp, imap) = (sandbox.smtp_addr().port(), sandbox.imap_addr().port());
    let mut t = format!(
        r#"[ledger]
url = "sqlite://{ledger}"

[defaults]
schedule = "every 15s"
deadline = "8s"
jitter = "3s"
notify = ["on-call"]

[server]
listen = "{listen}"
language = "en"

[[notifier]]
name = "on-call"
kind = "webhook"
url = "http://{hook}/hook"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "Postcanary <canary@{DOMAIN}>"
timeout = "5s"

[[login]]
name = "mitid"
kind = "password"
start = "http://{site}/kontakt"
idp = "http://{site}/login/"
username = "file:demo.user"
password = "file:demo.pw"
"#,
        ledger = dir.join("demo.db").display(),
    );
    for user in ["social", "closed", "borger", "canary"] {
        t.push_str(&format!(
            "\n[[inbox]]\nname = \"{user}\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {imap}\ntls = \"none\"\n\
             username = \"{user}\"\npassword = \"file:demo.pw\"\nafter_confirm = \"delete\"\npoll_interval = \"30s\"\n"
        ));
    }
    let mail = |id: &str, name: &str, to: &str, extra: &str| {
        format!(
            "\n[[channel]]\nid = \"{id}\"\nname = \"{name}\"\nowner = \"social-og-familie\"\nkind = \"mail\"\n\
             to = \"{to}@{DOMAIN}\"\nvia = \"relay\"\n{extra}\n"
        )
    };
    t.push_str(&mail(
        "social-mail",
        "Social og Familie (e-mail)",
        "social",
        "inbox = \"social\"",
    ));
    t.push_str(&mail(
        "familie-mail",
        "Familieafdelingen (e-mail)",
        "familie",
        "inbox = \"social\"",
    ));
    t.push_str(&mail(
        "familiepost-retired",
        "Retired shared mailbox familiepost@",
        "familiepost",
        "inbox = \"social\"",
    ));
    t.push_str(&mail(
        "sikkerepost-lookalike",
        "Mistyped secure-mail address (must bounce)",
        "sikkerepost",
        "expect = \"bounce\"",
    ));
    t.push_str(
        r#"
[[channel]]
id = "kontakt-form"
name = "Contact form behind MitID"
owner = "borgerservice"
kind = "form"
inbox = "borger"
[[channel.step]]
name = "log in"
login = "mitid"
[[channel.step]]
name = "send the form"
submit = "form#kontakt"
fields = { name = "Postcanary demo", message = "Test {{token}}" }
expect_text = "Tak for din henvendelse"
"#,
    );
    t
}

/// Runs the demo until Ctrl-C. `listen` is the status page's address.
pub async fn run(listen: &str) -> Result<(), String> {
    let store = MailStore::new();
    for user in ["social", "closed", "borger", "canary"] {
        store.add_user(user, "demo");
    }
    let deliver = |user: &str| Route::deliver(user, "INBOX");
    store.set_route(&format!("social@{DOMAIN}"), deliver("social"));
    store.set_route(&format!("familie@{DOMAIN}"), deliver("social"));
    store.set_route(&format!("borger@{DOMAIN}"), deliver("borger"));
    store.set_route(&format!("canary@{DOMAIN}"), deliver("canary"));
    // The seed's silent failures: accepted with 250 OK, then gone.
    store.set_route(&format!("familiepost@{DOMAIN}"), Route::Discard);
    store.set_route(&format!("sikkerepost@{DOMAIN}"), Route::Discard);
    let sandbox = Sandbox::start(store.clone(), SandboxOptions::default())
        .await
        .map_err(|e| format!("cannot start the sandbox mail servers: {e}"))?;

    let site = Site::default();
    let _ = site.smtp.set(sandbox.smtp_addr());
    let site_addr = serve(
        Router::new()
            .route("/kontakt", get(form_page).post(submit))
            .route("/login/", get(login_page).post(login))
            .route("/erhverv-login/", get(login_page).post(login))
            .with_state(site.clone()),
    )
    .await
    .map_err(|e| format!("cannot start the form site: {e}"))?;
    let hook_addr = serve(Router::new().route("/hook", post(hook)))
        .await
        .map_err(|e| format!("cannot start the webhook receiver: {e}"))?;

    let dir = tempfile::tempdir().map_err(|e| format!("cannot make a temp dir: {e}"))?;
    std::fs::write(dir.path().join("demo.pw"), "demo").map_err(|e| e.to_string())?;
    std::fs::write(dir.path().join("demo.user"), "demo").map_err(|e| e.to_string())?;
    let path = dir.path().join("postcanary.toml");
    std::fs::write(&path, config_text(dir.path(), &sandbox, site_addr, hook_addr, listen))
        .map_err(|e| e.to_string())?;
    let config = Config::load(&path).map_err(|e| format!("demo config: {e}"))?;
    let mut engine = Engine::start(config).await.map_err(|e| e.to_string())?;
    let delivery = crate::outbox::RealDelivery::new(Arc::clone(&engine.config)).map_err(|e| e.to_string())?;
    engine.start_paging(Arc::new(delivery));
    let status = crate::server::start(&mut engine).await?;
    if let Some(addr) = status {
        println!("postcanary demo — status page: http://{addr}/  (API: http://{addr}/api/channels, metrics: http://{addr}/metrics)");
    }
    println!(
        "Sandbox mail servers: SMTP {} IMAP {}; form site http://{site_addr}/kontakt",
        sandbox.smtp_addr(),
        sandbox.imap_addr()
    );
    println!("t+0s    five channels, probed every 15 s with an 8 s deadline:");
    println!("        social@ works; familiepost@ (a retired shared mailbox) accepts and drops mail;");
    println!("        sikkerepost@ (a mistyped secure-mail address) should bounce but accepts;");
    println!("        familie@ lands in Social; the contact form logs in with MitID and mails Borgerservice.");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let story = {
        let store = store.clone();
        let site = site.clone();
        tokio::spawn(async move {
            tokio::time::sleep(REVERT_AT).await;
            store.set_route(&format!("familie@{DOMAIN}"), Route::deliver("closed", "INBOX"));
            println!(
                "t+{}s   the IT vendor switches familie@ back to the closed mailbox",
                REVERT_AT.as_secs()
            );
            tokio::time::sleep(LOGIN_MOVES_AT - REVERT_AT).await;
            site.moved.store(true, Ordering::SeqCst);
            println!(
                "t+{}s   the form's login moves to MitID Erhverv; the old handler now drops submissions",
                LOGIN_MOVES_AT.as_secs()
            );
            tokio::time::sleep(FIX_AT - LOGIN_MOVES_AT).await;
            store.set_route(&format!("familie@{DOMAIN}"), Route::deliver("social", "INBOX"));
            println!(
                "t+{}s  the vendor fixes familie@: it delivers to Social again (watch for the all-clear)",
                FIX_AT.as_secs()
            );
            tokio::time::sleep(STORY_ENDS_AT - FIX_AT).await;
            println!(
                "t+{}s  that was the story: every failure paged on its first miss, the fix paged its all-clear. The status page stays up; Ctrl-C ends the demo.",
                STORY_ENDS_AT.as_secs()
            );
        })
    };
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop_tx.send(true);
    });
    engine.run_scheduler(stop_rx).await;
    story.abort();
    engine.stop().await;
    sandbox.shutdown().await;
    println!("demo stopped");
    Ok(())
}
