//! Form channels against a real web framework over HTTPS with an internal
//! CA: Django (CsrfViewMiddleware checks Origin/Referer on HTTPS), its
//! formtools wizard (whose first button on step 2 goes back), and
//! django-oauth-toolkit as the OIDC provider of a service, with its consent
//! page ("Cancel" first, "Authorize" second). Served by gunicorn with its own
//! TLS (tests/support/webapp.rs, tests/webapp/); mail goes into the real
//! Postfix + Dovecot.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::ledger::ProbeRecord;
use postcanary::verdict::Verdict;
use support::mailstack::MailStack;
use support::webapp::WebApp;

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup(stack: &MailStack, app: &WebApp, rest: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("borger.pw"), stack.password("borger")).expect("pw");
    std::fs::write(dir.path().join("web.user"), &app.user).expect("user");
    std::fs::write(dir.path().join("web.pw"), &app.password).expect("pw");
    std::fs::copy(&app.ca, dir.path().join("intern-ca.pem")).expect("ca");
    let toml = format!(
        "[ledger]\nurl = \"sqlite://{}\"\n\n[defaults]\nschedule = \"every 1h\"\ndeadline = \"20s\"\n\n\
         [[inbox]]\nname = \"borger\"\nkind = \"imap\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\n\
         username = \"borger\"\npassword = \"file:borger.pw\"\nidle = true\n\n{rest}",
        dir.path().join("ledger.db").display(),
        stack.imap_port,
    );
    let config = dir.path().join("postcanary.toml");
    std::fs::write(&config, toml).expect("config");
    Setup { _dir: dir, config }
}

async fn start(s: &Setup) -> Engine {
    let config = Config::load(&s.config).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(config).await.expect("engine");
    assert!(engine.wait_watchers_connected(Duration::from_secs(15)).await);
    engine
}

async fn check(engine: &Engine, id: &str) -> (ProbeRecord, String) {
    let ch = engine.config.channel(id).expect("channel").clone();
    let p = engine.check(&[ch]).await.expect("check").remove(0);
    let ev = engine
        .store
        .events(&p.id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.detail))
        .collect::<Vec<_>>()
        .join("\n");
    (p, ev)
}

fn detail(p: &ProbeRecord) -> String {
    p.detail.clone().unwrap_or_default()
}

/// The Django contact form: CSRF token from the page, topics as a checkbox group.
fn kontakt(id: &str, first: &str, extra: &str, submit_extra: &str) -> String {
    format!(
        r#"[[channel]]
id = "{id}"
name = "{id}"
kind = "form"
inbox = "borger"
{extra}
{first}
[[channel.step]]
name = "send"
submit = "form#kontakt"
fields = {{ name = "Postcanary", topics = ["veje", "skole"], message = "Automatisk test {{{{token}}}}" }}
expect_text = "Emner: veje, skole"
receipt = "strong.receipt"
{submit_extra}

"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_csrf_form_over_https_with_an_internal_ca() {
    let stack = MailStack::start();
    let app = WebApp::start(stack.smtp_port, "borger@kommune.example").expect("django");
    let get = format!("[[channel.step]]\nget = \"{}/kontakt/\"\n", app.base);
    let rest = [
        kontakt("django", &get, "ca_file = \"intern-ca.pem\"", ""),
        kontakt("django-no-ca", &get, "", ""),
        kontakt(
            "django-foreign-origin",
            &get,
            "ca_file = \"intern-ca.pem\"",
            "headers = { Origin = \"https://evil.example\" }",
        ),
    ]
    .concat();
    let s = setup(&stack, &app, &rest);
    let engine = start(&s).await;

    // Origin and Referer as a browser sends them: Django's CSRF check passes.
    let (p, ev) = check(&engine, "django").await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}\n{}", app.log());
    assert!(p.smtp_reply.as_deref().unwrap_or("").contains("receipt DJ-"), "{p:?}");
    // Without the internal CA: the TLS error names the host and the reason.
    let (p, _) = check(&engine, "django-no-ca").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = detail(&p);
    assert!(d.contains("https://127.0.0.1:") && d.contains("UnknownIssuer"), "{d}");
    // The check is real: a foreign Origin is refused with 403, and the detail says what Django said.
    let (p, _) = check(&engine, "django-foreign-origin").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = detail(&p);
    assert!(d.contains("HTTP 403") && d.contains("CSRF verification failed"), "{d}");
    engine.stop().await;
}

fn wizard(id: &str, base: &str, button: &str) -> String {
    format!(
        r#"[[channel]]
id = "{id}"
name = "{id}"
kind = "form"
inbox = "borger"
ca_file = "intern-ca.pem"
[[channel.step]]
get = "{base}/wizard/"
[[channel.step]]
name = "who"
submit = "form"
fields = {{ "0-name" = "Postcanary" }}
expect_text = "trin 2 af 2"
[[channel.step]]
name = "what"
submit = "form"
{button}
fields = {{ "1-message" = "Automatisk test {{{{token}}}}" }}
expect_text = "Tak for din henvendelse"

"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formtools_wizard_whose_first_button_goes_back() {
    let stack = MailStack::start();
    let app = WebApp::start(stack.smtp_port, "borger@kommune.example").expect("django");
    let rest = [
        wizard("wizard", &app.base, "button = \"submit\""),
        wizard("wizard-first-button", &app.base, ""),
        wizard("wizard-by-name", &app.base, "button = \"css:input[name=submit]\""),
    ]
    .concat();
    let s = setup(&stack, &app, &rest);
    let engine = start(&s).await;
    let (p, ev) = check(&engine, "wizard").await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}\n{}", app.log());
    let (p, _) = check(&engine, "wizard-by-name").await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}");
    // The form's first button is "first step": pressed by default, it goes back.
    let (p, _) = check(&engine, "wizard-first-button").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    assert!(
        detail(&p).starts_with("step 3 \"what\" (submit): \"Tak for din henvendelse\" not found"),
        "{p:?}"
    );
    engine.stop().await;
}

fn erhverv_login(name: &str, app: &WebApp, extra: &str) -> String {
    format!(
        "[[login]]\nname = \"{name}\"\nkind = \"oidc\"\nstart = \"{}/erhverv/kontakt/\"\nidp = \"{}/\"\n\
         username = \"file:web.user\"\npassword = \"file:web.pw\"\nca_file = \"intern-ca.pem\"\n{extra}\n\n",
        app.service, app.base
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_consent_page_cancel_first_is_never_pressed_blindly() {
    let stack = MailStack::start();
    let app = WebApp::start(stack.smtp_port, "borger@kommune.example").expect("django");
    let mut rest = String::new();
    for (name, extra) in [
        ("erhverv", "continue = [\"Authorize\"]"),
        ("erhverv-blind", ""),
        ("erhverv-cancel", "continue = [\"Cancel\"]"),
    ] {
        rest.push_str(&erhverv_login(name, &app, extra));
        rest.push_str(&kontakt(
            &format!("{name}-form"),
            &format!("[[channel.step]]\nname = \"log in\"\nlogin = \"{name}\"\n"),
            "",
            "",
        ));
    }
    let s = setup(&stack, &app, &rest);
    let engine = start(&s).await;

    let (p, ev) = check(&engine, "erhverv-form").await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}\n{}", app.log());
    assert!(ev.contains("pressing the button \"Authorize\" at the IdP"), "{ev}");
    assert!(
        !ev.contains("Hemmelig-123") && !ev.contains("borger1"),
        "secrets in evidence: {ev}"
    );

    let (p, _) = check(&engine, "erhverv-blind-form").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = detail(&p);
    assert!(
        d.contains("stuck at the IdP") && d.contains("\"Cancel\", \"Authorize\" (allow=Authorize)"),
        "{d}"
    );

    let (p, _) = check(&engine, "erhverv-cancel-form").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = detail(&p);
    assert!(d.contains("the IdP answered error=access_denied"), "{d}");
    assert!(!d.contains("state="), "no protocol values in the detail: {d}");
    engine.stop().await;
}
