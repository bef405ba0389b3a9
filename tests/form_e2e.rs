//! Form channels end to end: a Drupal-like form site (tests/support/formsite.rs)
//! mailing into the real Postfix + Dovecot, logins through the real npm
//! identity providers `saml-idp` and `oidc-provider` on loopback, and the
//! simulator-style password login.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::ledger::ProbeRecord;
use postcanary::verdict::Verdict;
use support::formsite::{FormSite, OidcRp, Options, PostSigner, SamlSp};
use support::idp::{OidcProvider, SamlIdp};
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
    let first = format!(
        "[[channel.step]]\nname = \"open the form\"\nget = \"{}\"\n",
        site.url("/kontakt")
    );
    let s = setup(&stack, &webform_channel("webform", &first, "deadline = \"10s\""));
    let engine = start(&s).await;

    let p = check(&engine, "webform").await;
    let ev = evidence(&engine, &p).await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}\n{:?}", site.refused());
    assert!(
        p.smtp_reply.as_deref().unwrap_or("").contains("receipt KS-000001"),
        "{p:?}"
    );
    assert!(ev.contains("POST http://127.0.0.1"), "{ev}");
    assert!(ev.contains("/kontakt → 303"), "{ev}");
    // The site got the token in the message, the honeypot empty, and Drupal's hidden fields.
    let fields = site.accepted().remove(0);
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    // The message carries the whole token; the ledger keeps only its shown form (no tag).
    let message = get("message").unwrap_or_default();
    assert!(
        message.starts_with(&format!("Automatisk test {}-", p.token)),
        "{message}"
    );
    assert_eq!(get("url"), Some(String::new()));
    assert!(get("form_build_id").is_some_and(|v| v.starts_with("form-")));
    assert_eq!(get("op").as_deref(), Some("Send"));

    // A thank-you page from a handler that drops the submission proves nothing.
    site.set_drop_submissions(true);
    let p = check(&engine, "webform").await;
    assert_eq!(p.verdict, Verdict::Missed, "{p:?}");
    assert!(
        p.smtp_reply.as_deref().unwrap_or("").contains("receipt KS-000002"),
        "{p:?}"
    );
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
    let honeypot = webform_channel("honeypot", &first, "").replace(
        "message = \"Automatisk",
        "url = \"http://spam.example\", message = \"Automatisk",
    );
    let s = setup(&stack, &format!("{stale}{honeypot}"));
    let engine = start(&s).await;

    let p = check(&engine, "stale").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = p.detail.clone().unwrap_or_default();
    assert!(
        d.starts_with("step 2 \"post with an old build id\" (post): \"Tak for din henvendelse\" not found"),
        "{d}"
    );
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
    let bad = webform_channel(
        "sim-bad",
        "[[channel.step]]\nname = \"log in\"\nlogin = \"sim-wrong\"\n",
        "",
    );
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
    assert!(
        !ev.contains("Hemmelig-123") && !ev.contains("testbruger1"),
        "secrets in evidence: {ev}"
    );

    let p = check(&engine, "sim-bad").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = p.detail.unwrap_or_default();
    assert!(
        d.contains("step 1 \"log in\" (login): login \"sim-wrong\" (password): the IdP did not accept the login"),
        "{d}"
    );
    engine.stop().await;
}

/// Binds the form site's port first: the IdP must know the ACS URL.
async fn bind() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let a = l.local_addr().expect("addr");
    (l, a)
}

fn saml_sp(idp: &SamlIdp, signing_key: Option<Vec<u8>>) -> SamlSp {
    SamlSp {
        idp_sso_url: idp.sso_url.clone(),
        idp_entity_id: idp.entity_id.clone(),
        sp_entity_id: "https://selvbetjening.kommune.example/saml".into(),
        signing_key,
        loa: SUBSTANTIAL.into(),
        post_binding: None,
    }
}

fn saml_login(name: &str, site: &str, idp: &SamlIdp, extra: &str) -> String {
    format!(
        "[[login]]\nname = \"{name}\"\nkind = \"saml\"\nstart = \"{site}/mitid/kontakt\"\nidp = \"{}/\"\n{extra}\n",
        idp.base_url
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saml_login_through_saml_idp_delivers_and_a_moved_login_path_is_caught() {
    support::idp::install().expect("npm identity providers");
    let stack = MailStack::start();
    let (listener, addr) = bind().await;
    let site_url = format!("http://{addr}");
    let sp_entity = "https://selvbetjening.kommune.example/saml";
    let idp = SamlIdp::start(&format!("{site_url}/saml/acs"), sp_entity).expect("saml-idp");
    let other = SamlIdp::start(&format!("{site_url}/saml/acs"), sp_entity).expect("second saml-idp");
    let mut opts = options(&stack);
    opts.saml = Some(saml_sp(&idp, None));
    let site = FormSite::start_on(listener, addr, opts).await;
    let rest = format!(
        "{}{}{}",
        saml_login("mitid", &site_url, &idp, ""),
        webform_channel(
            "mitid-form",
            "[[channel.step]]\nname = \"MitID\"\nlogin = \"mitid\"\n",
            ""
        ),
        "[[channel]]\nid = \"mitid-handoff\"\nname = \"h\"\nkind = \"form\"\nexpect = \"handoff\"\n\
         [[channel.step]]\nhandoff = \"mitid\"\n\n",
    )
    .replace(
        "[[login]]\nname = \"mitid\"",
        "[[login]]\nname = \"mitid\"\nrequire_signed = false",
    );
    let s = setup(&stack, &rest);
    let engine = start(&s).await;

    let p = check(&engine, "mitid-form").await;
    let ev = evidence(&engine, &p).await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}\n{}", idp.log());
    assert!(ev.contains("auto-submitting the form to http://127.0.0.1"), "{ev}");
    assert!(
        !ev.contains("SAMLResponse="),
        "protocol messages stay out of the evidence: {ev}"
    );
    let p = check(&engine, "mitid-handoff").await;
    assert_eq!(p.verdict, Verdict::HandedOff, "{p:?}");

    // The vendor moves the login to another IdP: both the login and the hand-off check fail, naming it.
    site.set_saml_idp(&other.sso_url);
    let p = check(&engine, "mitid-form").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = p.detail.unwrap_or_default();
    assert!(
        d.contains("step 1 \"MitID\" (login): login \"mitid\" (saml): login path changed"),
        "{d}"
    );
    assert!(d.contains(&other.base_url), "{d}");
    let p = check(&engine, "mitid-handoff").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    assert!(p.detail.unwrap_or_default().contains("login path changed"));
    engine.stop().await;
}

/// An RSA key (PKCS#8 DER) and its self-signed certificate (PEM file).
fn sp_key(dir: &std::path::Path) -> (Vec<u8>, PathBuf) {
    let key = dir.join("sp-key.pem");
    let cert = dir.join("sp-cert.pem");
    let der = dir.join("sp-key.der");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let (k, c, d) = (key.to_string_lossy(), cert.to_string_lossy(), der.to_string_lossy());
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &k,
    ]);
    run(&[
        "req",
        "-new",
        "-x509",
        "-key",
        &k,
        "-out",
        &c,
        "-days",
        "400",
        "-subj",
        "/CN=selvbetjening",
    ]);
    run(&["pkcs8", "-topk8", "-nocrypt", "-in", &k, "-outform", "DER", "-out", &d]);
    (std::fs::read(&der).expect("der"), cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_check_verifies_signature_acs_loa_and_idp_metadata() {
    support::idp::install().expect("npm identity providers");
    let stack = MailStack::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let (key_der, cert) = sp_key(keys.path());
    let (listener, addr) = bind().await;
    let site_url = format!("http://{addr}");
    let idp = SamlIdp::start(
        &format!("{site_url}/saml/acs"),
        "https://selvbetjening.kommune.example/saml",
    )
    .expect("saml-idp");
    let mut opts = options(&stack);
    opts.saml = Some(saml_sp(&idp, Some(key_der)));
    let site = FormSite::start_on(listener, addr, opts).await;
    let checks = |name: &str, days: u32| {
        format!(
            "acs = \"{site_url}/saml/acs\"\nloa = \"{SUBSTANTIAL}\"\nmetadata = \"{}\"\nsp_certificate = \"{}\"\n\
             cert_min_days = {days}\n\n[[channel]]\nid = \"{name}\"\nname = \"{name}\"\nkind = \"form\"\n\
             expect = \"handoff\"\n[[channel.step]]\nhandoff = \"{name}\"\n",
            idp.metadata_url,
            cert.display()
        )
    };
    // saml-idp's throwaway certificate lives two days: 1 day of margin passes, 30 fails.
    let rest = format!(
        "{}{}",
        saml_login("handoff", &site_url, &idp, &checks("handoff", 1)),
        saml_login("strict", &site_url, &idp, &checks("strict", 30)),
    );
    let s = setup(&stack, &rest);
    let engine = start(&s).await;
    let p = check(&engine, "handoff").await;
    assert_eq!(p.verdict, Verdict::HandedOff, "{p:?}\n{}", evidence(&engine, &p).await);
    let d = p.detail.unwrap_or_default();
    for fact in [
        "signature verified",
        "ACS as configured",
        "LoA Substantial",
        "SSO endpoint in IdP metadata",
    ] {
        assert!(d.contains(fact), "{fact}: {d}");
    }
    let p = check(&engine, "strict").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    assert!(p.detail.unwrap_or_default().contains("the IdP's signing certificate"));
    site.set_loa("https://data.gov.dk/concept/core/nsis/loa/Low");
    let p = check(&engine, "handoff").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    assert!(p
        .detail
        .unwrap_or_default()
        .contains("asks for https://data.gov.dk/concept/core/nsis/loa/Low"));
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_login_through_oidc_provider_delivers() {
    support::idp::install().expect("npm identity providers");
    let stack = MailStack::start();
    let (listener, addr) = bind().await;
    let site_url = format!("http://{addr}");
    let op = OidcProvider::start(&format!("{site_url}/oidc/callback")).expect("oidc-provider");
    let mut opts = options(&stack);
    opts.oidc = Some(OidcRp {
        authorization_endpoint: op.authorization_endpoint.clone(),
        token_endpoint: op.token_endpoint.clone(),
        client_id: op.client_id.clone(),
        client_secret: op.client_secret.clone(),
    });
    let _site = FormSite::start_on(listener, addr, opts).await;
    // oidc-provider's consent page (one hidden `prompt`, a "Continue" button) is on:
    // it is pressed only because the login names its button.
    let login = |name: &str, extra: &str| {
        format!(
            "[[login]]\nname = \"{name}\"\nkind = \"oidc\"\nstart = \"{site_url}/erhverv/kontakt\"\nidp = \"{}/\"\n\
             username = \"file:sim.user\"\npassword = \"file:sim.pw\"\n{extra}\n\n",
            op.issuer
        )
    };
    let rest = format!(
        "{}{}{}{}",
        login("erhverv", "continue = [\"Continue\"]"),
        login("erhverv-blind", ""),
        webform_channel("erhverv-form", "[[channel.step]]\nlogin = \"erhverv\"\n", ""),
        webform_channel(
            "erhverv-blind-form",
            "[[channel.step]]\nlogin = \"erhverv-blind\"\n",
            ""
        )
    );
    let s = setup(&stack, &rest);
    let engine = start(&s).await;
    let p = check(&engine, "erhverv-form").await;
    let ev = evidence(&engine, &p).await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}\n{}", op.log());
    assert!(ev.contains("pressing the button \"Continue\" at the IdP"), "{ev}");
    let p = check(&engine, "erhverv-blind-form").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    let d = p.detail.unwrap_or_default();
    assert!(
        d.contains("stuck at the IdP") && d.contains("buttons \"Continue\""),
        "{d}"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_binding_signature_is_checked_with_the_right_and_a_wrong_certificate() {
    support::idp::install().expect("npm identity providers");
    let stack = MailStack::start();
    let keys = tempfile::tempdir().expect("tempdir");
    let (_, cert) = sp_key(keys.path());
    let other = tempfile::tempdir().expect("tempdir");
    let (_, wrong_cert) = sp_key(other.path());
    let (listener, addr) = bind().await;
    let site_url = format!("http://{addr}");
    let idp = SamlIdp::start(
        &format!("{site_url}/saml/acs"),
        "https://selvbetjening.kommune.example/saml",
    )
    .expect("saml-idp");
    let mut opts = options(&stack);
    let mut sp = saml_sp(&idp, None);
    sp.post_binding = Some(PostSigner {
        key_pem: keys.path().join("sp-key.pem"),
        cert_pem: cert.clone(),
    });
    opts.saml = Some(sp);
    let _site = FormSite::start_on(listener, addr, opts).await;
    let handoff = |name: &str, cert: &std::path::Path| {
        format!(
            "acs = \"{site_url}/saml/acs\"\nloa = \"{SUBSTANTIAL}\"\nsp_certificate = \"{}\"\n\n\
             [[channel]]\nid = \"{name}\"\nname = \"{name}\"\nkind = \"form\"\nexpect = \"handoff\"\n\
             [[channel.step]]\nhandoff = \"{name}\"\n",
            cert.display()
        )
    };
    let rest = format!(
        "{}{}{}{}{}",
        saml_login("post-right", &site_url, &idp, &handoff("post-right", &cert)),
        saml_login("post-wrong", &site_url, &idp, &handoff("post-wrong", &wrong_cert)),
        saml_login(
            "post-login",
            &site_url,
            &idp,
            &format!("sp_certificate = \"{}\"\n", cert.display())
        ),
        saml_login(
            "post-login-wrong",
            &site_url,
            &idp,
            &format!("sp_certificate = \"{}\"\n", wrong_cert.display())
        ),
        [
            webform_channel("post-form", "[[channel.step]]\nlogin = \"post-login\"\n", ""),
            webform_channel(
                "post-form-wrong",
                "[[channel.step]]\nlogin = \"post-login-wrong\"\n",
                ""
            ),
        ]
        .concat()
    );
    let s = setup(&stack, &rest);
    let engine = start(&s).await;

    let p = check(&engine, "post-right").await;
    assert_eq!(p.verdict, Verdict::HandedOff, "{p:?}\n{}", evidence(&engine, &p).await);
    assert!(
        p.detail
            .unwrap_or_default()
            .contains("signature verified (POST binding, XML-DSig)"),
        "signed by libxmlsec1, verified by postcanary"
    );
    let p = check(&engine, "post-wrong").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    assert!(
        p.detail
            .unwrap_or_default()
            .contains("does not verify with sp_certificate"),
        "a configured certificate that does not verify is never a success"
    );
    // The same in a real login through saml-idp's POST-binding endpoint.
    let p = check(&engine, "post-form").await;
    let ev = evidence(&engine, &p).await;
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{ev}\n{}", idp.log());
    assert!(
        ev.contains("the AuthnRequest's signature verified (POST binding, XML-DSig)"),
        "{ev}"
    );
    let p = check(&engine, "post-form-wrong").await;
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    assert!(p
        .detail
        .unwrap_or_default()
        .contains("does not verify with sp_certificate"));
    engine.stop().await;
}
