//! Form channels end to end: a Drupal-like form site (tests/support/formsite.rs)
//! mailing into the real Postfix + Dovecot, logins through the real npm
//! identity providers `saml-idp` and `oidc-provider` on loopback, and the
//! simulator-style password login.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::ledger::{ProbeRecord, Store};
use postcanary::verdict::Verdict;
use support::formsite::{FormSite, OidcRp, Options, SamlSp};
use support::mailstack::MailStack;

const SUBSTANTIAL: &str = "https://data.gov.dk/concept/core/nsis/loa/Substantial";

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

/// A config with the `borger` inbox and the given logins and channels.
fn setup(stack: &MailStack, rest: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("borger.pw");
    std::fs::write(&pw, stack.password("borger")).expect("pw");
    std::fs::write(dir.path().join("sim.user"), "testbruger1").expect("user");
    std::fs::write(dir.path().join("sim.pw"), "Hemmelig-123").expect("pw");
    std::fs::write(dir.path().join("wrong.pw"), "forkert").expect("pw");
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

fn options(stack: &MailStack) -> Options {
    Options {
        smtp_port: stack.smtp_port,
        recipient: "borger@kommune.example".into(),
        saml: None,
        oidc: None,
        simulator_user: "testbruger1".into(),
        simulator_password: "Hemmelig-123".into(),
    }
}

/// The steps of a citizen filling in the contact form (after `first`).
fn webform_channel(id: &str, first: &str, extra: &str) -> String {
    format!(
        r#"[[channel]]
id = "{id}"
name = "{id}"
kind = "form"
inbox = "borger"
{extra}
{first}
[[channel.step]]
name = "send the form"
submit = "form#webform-submission-kontakt-form"
fields = {{ name = "Postcanary", email = "canary@kommune.example", message = "Automatisk test {{{{token}}}}" }}
files = {{ "files[bilag]" = {{ name = "bilag.txt", content = "Bilag til {{{{token}}}}" }} }}
expect_text = "Tak for din henvendelse"
receipt = "strong.receipt"

"#
    )
}

async fn start(s: &Setup) -> Engine {
    let config = Config::load(&s.config).unwrap_or_else(|e| panic!("{e}"));
    let engine = Engine::start(config).await.expect("engine");
    assert!(engine.wait_watchers_connected(Duration::from_secs(15)).await);
    engine
}

async fn check(engine: &Engine, id: &str) -> ProbeRecord {
    let ch = engine.config.channel(id).expect("channel").clone();
    engine.check(&[ch]).await.expect("check").remove(0)
}

async fn evidence(engine: &Engine, p: &ProbeRecord) -> String {
    engine
        .store
        .events(&p.id)
        .await
        .expect("events")
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_webform_is_delivered_and_a_dropping_handler_is_missed() {
    let stack = MailStack::start();
    let site = FormSite::start(options(&stack)).await;
    let first = format!("[[channel.step]]\nname = \"open the form\"\nget = \"{}\"\n", site.url("/kontakt"));
    let s = setup(&stack, &webform_channel("webform", &first, "deadline = \"10s\""));
    let engine = start(&s).await;

    let p = check(&engine, "webform").await;
    let ev = evidence(&engine, &p).await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}\n{:?}", site.refused());
    assert!(p.smtp_reply.as_deref().unwrap_or("").contains("receipt KS-000001"), "{p:?}");
    assert!(ev.contains("POST http://127.0.0.1"), "{ev}");
    assert!(ev.contains("/kontakt → 303"), "{ev}");
    // The site got the token in the message, the honeypot empty, and Drupal's hidden fields.
    let fields = site.accepted().remove(0);
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("message"), Some(format!("Automatisk test {}", p.token)));
    assert_eq!(get("url"), Some(String::new()));
    assert!(get("form_build_id").is_some_and(|v| v.starts_with("form-")));
    assert_eq!(get("op").as_deref(), Some("Send"));

    // A thank-you page from a handler that drops the submission proves nothing.
    site.set_drop_submissions(true);
    let p = check(&engine, "webform").await;
    assert_eq!(p.verdict, Verdict::Missed, "{p:?}");
    assert!(p.smtp_reply.as_deref().unwrap_or("").contains("receipt KS-000002"), "{p:?}");
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_build_id_and_filled_honeypot_are_rejected_naming_the_step() {
    let stack = MailStack::start();
    let site = FormSite::start(options(&stack)).await;
    let stale = format!(
        r#"[[channel]]
id = "stale"
name = "stale"
kind = "form"
inbox = "borger"
[[channel.step]]
get = "{url}"
[[channel.step]]
name = "post with an old build id"
post = "{url}"
multipart = true
fields = {{ name = "x", form_build_id = "form-from-last-week", form_id = "webform_submission_kontakt_form", message = "{{{{token}}}}" }}
expect_text = "Tak for din henvendelse"

"#,
        url = site.url("/kontakt")
    );
    let first = format!("[[channel.step]]\nget = \"{}\"\n", site.url("/kontakt"));
    let honeypot = webform_channel("honeypot", &first, "")
        .replace("message = \"Automatisk", "url = \"http://spam.example\", message = \"Automatisk");
    let s = setup(&stack, &format!("{stale}{honeypot}"));
    let engine = start(&s).await;

    let p = check(&engine, "stale").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = p.detail.clone().unwrap_or_default();
    assert!(d.starts_with("step 2 \"post with an old build id\" (post): \"Tak for din henvendelse\" not found"), "{d}");
    let p = check(&engine, "honeypot").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    assert!(p.detail.unwrap_or_default().contains("step 2 \"send the form\""));
    let refused = site.refused();
    assert!(refused[0].contains("stale or missing form_build_id"), "{refused:?}");
    assert!(refused[1].contains("honeypot"), "{refused:?}");
    engine.stop().await;
}

fn sim_login(site: &FormSite, name: &str, password_file: &str) -> String {
    format!(
        "[[login]]\nname = \"{name}\"\nkind = \"password\"\nstart = \"{}\"\nidp = \"{}\"\n\
         username = \"file:sim.user\"\npassword = \"file:{password_file}\"\n\n",
        site.url("/borger/kontakt"),
        site.url("/simulator/")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulator_login_delivers_and_a_wrong_password_is_rejected_at_the_login() {
    let stack = MailStack::start();
    let site = FormSite::start(options(&stack)).await;
    let ok = webform_channel("sim-form", "[[channel.step]]\nlogin = \"sim\"\n", "");
    let bad = webform_channel("sim-bad", "[[channel.step]]\nname = \"log in\"\nlogin = \"sim-wrong\"\n", "");
    let rest = format!(
        "{}{}{ok}{bad}",
        sim_login(&site, "sim", "sim.pw"),
        sim_login(&site, "sim-wrong", "wrong.pw")
    );
    let s = setup(&stack, &rest);
    let engine = start(&s).await;
    let p = check(&engine, "sim-form").await;
    let ev = evidence(&engine, &p).await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}");
    assert!(ev.contains("logged in, at http://127.0.0.1"), "{ev}");
    assert!(!ev.contains("Hemmelig-123") && !ev.contains("testbruger1"), "secrets in evidence: {ev}");

    let p = check(&engine, "sim-bad").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = p.detail.unwrap_or_default();
    assert!(
        d.contains("step 1 \"log in\" (login): login \"sim-wrong\" (password): the IdP did not accept the login"),
        "{d}"
    );
    engine.stop().await;
}
