//! Form probes: walk a channel's steps in one browser-like session, put the
//! token into the submission, and hand over to the inbox watchers. A form's
//! "thank you" page proves nothing; the probe is only delivered when its
//! token reaches the inbox. A failing step is `rejected` (the site refused
//! or misbehaved) or `error` (our side), named in the verdict.

use std::collections::BTreeMap;

use reqwest::Method;
use scraper::ElementRef;
use tracing::Instrument;

use crate::config::form::{Action, Extract, LoginConfig, LoginKind, Step};
use crate::config::{Channel, Config, Expect};
use crate::ledger::StoreError;
use crate::verdict::{now_millis, Judgement, Verdict};

use super::http::{
    button_list, has_param, login_headers, login_opts, read_form, says, sel, show_url, submit_request, under, Body,
    Fail, FetchOpts, Page, Session,
};
use super::{record, ProbeContext, Started};

/// How a walk through the steps ended when nothing failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The form was accepted; the token is on its way to the inbox.
    Submitted { reply: String },
    /// The hand-off to the IdP was checked and is right.
    HandedOff { detail: String },
}

pub async fn submit(
    ctx: &ProbeContext,
    config: &Config,
    channel: &Channel,
    steps: &[Step],
    p: &Started,
) -> Result<(), StoreError> {
    let mut vars = BTreeMap::new();
    vars.insert("token".to_string(), p.message_token.clone());
    vars.insert("channel".to_string(), channel.id.clone());
    vars.insert("probe_id".to_string(), p.id.clone());
    vars.insert("now".to_string(), chrono::Utc::now().to_rfc3339());
    let (result, evidence) = walk(config, channel, steps, vars).await;
    for (at, line) in &evidence {
        ctx.store.add_event(&p.id, *at, "step", line).await?;
    }
    let now = now_millis();
    let j = |verdict, detail| Judgement {
        verdict,
        detail,
        at: now,
        found: None,
        latency_ms: None,
        fault: None,
    };
    match result {
        Ok(Outcome::Submitted { reply }) => {
            ctx.store.record_sent(&p.id, now, &reply).await?;
            tracing::info!(channel = %channel.id, token = %p.token, %reply, "form submitted");
        }
        Ok(Outcome::HandedOff { detail }) => {
            tracing::info!(channel = %channel.id, %detail, "hand-off checked");
            record(ctx, &p.id, &channel.id, j(Verdict::HandedOff, detail)).await?;
        }
        Err(f) => {
            tracing::warn!(channel = %channel.id, token = %p.token, verdict = %f.verdict, detail = %f.detail, "form probe failed");
            record(ctx, &p.id, &channel.id, j(f.verdict, f.detail)).await?;
        }
    }
    Ok(())
}

/// Runs the steps; returns the outcome and the evidence trail (which is kept
/// whatever the outcome).
pub async fn walk(
    config: &Config,
    channel: &Channel,
    steps: &[Step],
    vars: BTreeMap<String, String>,
) -> (Result<Outcome, Fail>, Vec<(i64, String)>) {
    // The channel's own CA and those of the logins its steps run.
    let mut cas: Vec<&crate::config::ca::CaFile> = channel.ca_file.iter().collect();
    for step in steps {
        if let Action::Login(name) | Action::Handoff(name) = &step.action {
            if let Some(ca) = config.login(name).and_then(|l| l.ca_file.as_ref()) {
                cas.push(ca);
            }
        }
    }
    let mut session = match Session::with_ca(vars, &cas) {
        Ok(s) => s,
        Err(f) => return (Err(f), Vec::new()),
    };
    let mut last = String::new();
    for (i, step) in steps.iter().enumerate() {
        let label = format!("step {} {:?}", i + 1, step.name);
        session.note(format!("{label}: {}", step.action.verb()));
        let span =
            tracing::info_span!("form_step", channel = %channel.id, step = %step.name, action = step.action.verb());
        let result = run_step(config, &mut session, step).instrument(span).await;
        match result {
            Ok(StepDone::Page) => {
                if let Some(page) = &session.page {
                    last = format!("HTTP {} at {}", page.status.as_u16(), show_url(&page.url));
                }
            }
            Ok(StepDone::HandedOff(detail)) if channel.expect == Expect::Handoff => {
                return (Ok(Outcome::HandedOff { detail }), session.evidence);
            }
            Ok(StepDone::HandedOff(detail)) => last = detail,
            Err(mut f) => {
                f.detail = format!("{label} ({}): {}", step.action.verb(), f.detail);
                session.note(format!("failed: {}", f.detail));
                return (Err(f), session.evidence);
            }
        }
    }
    let mut reply = format!("form submitted: {last}");
    if let Some(r) = session.vars.get("receipt") {
        reply.push_str(&format!("; receipt {r}"));
    }
    (Ok(Outcome::Submitted { reply }), session.evidence)
}

enum StepDone {
    Page,
    HandedOff(String),
}

async fn run_step(config: &Config, s: &mut Session, step: &Step) -> Result<StepDone, Fail> {
    let mut headers = Vec::new();
    for (k, v) in &step.headers {
        headers.push((k.clone(), s.render(v)?));
    }
    let fields = s.values(&step.fields)?;
    match &step.action {
        Action::Get(t) => {
            let url = s.resolve(&s.render(t)?)?;
            s.fetch(Method::GET, url, Body::None, &headers, step_opts(step)).await?;
        }
        Action::Post(t) => {
            let url = s.resolve(&s.render(t)?)?;
            let body = if step.multipart {
                Body::Multipart {
                    fields,
                    files: super::http::render_files(s, &step.files)?,
                }
            } else {
                Body::Form(fields)
            };
            s.fetch(Method::POST, url, body, &headers, step_opts(step)).await?;
        }
        Action::Submit(selector) => {
            // The parsed page is not Send: build the request in a block that ends before the await.
            let (method, url, body) = {
                let page = current(s)?;
                let html = page.html();
                let Some(form) = html.select(&sel(selector)).next() else {
                    return Err(Fail::refused(format!(
                        "no form matching {selector:?} at {} (HTTP {})",
                        show_url(&page.url),
                        page.status.as_u16()
                    )));
                };
                if form.value().name() != "form" {
                    return Err(Fail::refused(format!(
                        "{selector:?} matches a <{}>, not a <form>",
                        form.value().name()
                    )));
                }
                submit_request(s, &form, &fields, &step.files, step.multipart, step.button.as_ref())?
            };
            s.fetch(method, url, body, &headers, step_opts(step)).await?;
        }
        Action::Login(name) => {
            let login = config
                .login(name)
                .ok_or_else(|| Fail::ours(format!("no [[login]] named {name:?}")))?;
            login_flow(s, login).await.map_err(|mut f| {
                f.detail = format!("login {name:?} ({}): {}", login.kind.as_str(), f.detail);
                f
            })?;
        }
        Action::Handoff(name) => {
            let login = config
                .login(name)
                .ok_or_else(|| Fail::ours(format!("no [[login]] named {name:?}")))?;
            let detail = super::handoff::check(s, login).await.map_err(|mut f| {
                f.detail = format!("hand-off {name:?}: {}", f.detail);
                f
            })?;
            return Ok(StepDone::HandedOff(detail));
        }
    }
    check_page(s, step)?;
    Ok(StepDone::Page)
}

fn step_opts(step: &Step) -> FetchOpts {
    FetchOpts {
        follow: step.follow_redirects,
        auto_submit: step.auto_submit,
        timeout: step.timeout,
    }
}

fn current(s: &Session) -> Result<&Page, Fail> {
    s.page
        .as_ref()
        .ok_or_else(|| Fail::ours("no page yet: this step needs a `get` before it"))
}

/// The step's assertions and extractions on the page it ended at.
fn check_page(s: &mut Session, step: &Step) -> Result<(), Fail> {
    let page = current(s)?;
    let status = page.status.as_u16();
    let at = show_url(&page.url);
    let status_ok = if step.expect_status.is_empty() {
        page.status.is_success() || (!step.follow_redirects && page.status.is_redirection())
    } else {
        step.expect_status.contains(&status)
    };
    if !status_ok {
        let want = if step.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            format!("{:?}", step.expect_status)
        };
        return Err(Fail::refused(format!(
            "HTTP {status} at {at}, expected {want}{}",
            says(page)
        )));
    }
    if let Some(u) = &step.expect_url {
        if !page.url.as_str().contains(u.as_str()) {
            return Err(Fail::refused(format!("ended at {at}, expected a URL containing {u:?}")));
        }
    }
    let needs_text = step.expect_text.is_some() || step.refuse_text.is_some();
    let text = if needs_text { page.text() } else { String::new() };
    if let Some(t) = &step.refuse_text {
        if text.contains(t.as_str()) {
            return Err(Fail::refused(format!("the page at {at} says {t:?}")));
        }
    }
    if let Some(t) = &step.expect_text {
        if !text.contains(t.as_str()) {
            return Err(Fail::refused(format!(
                "{t:?} not found on the page at {at} (HTTP {status})"
            )));
        }
    }
    let mut found = Vec::new();
    for (name, ex) in &step.extract {
        match extract(page, ex) {
            Some(v) => found.push((name.clone(), v)),
            None => {
                return Err(Fail::refused(format!(
                    "could not extract {name:?} ({}) from the page at {at}",
                    describe(ex)
                )))
            }
        }
    }
    if let Some(ex) = &step.receipt {
        match extract(page, ex) {
            Some(v) => found.push(("receipt".to_string(), v)),
            None => {
                return Err(Fail::refused(format!(
                    "no receipt number ({}) on the page at {at}",
                    describe(ex)
                )))
            }
        }
    }
    for (k, v) in found {
        // Values are evidence only by name: a hidden field may be a session secret.
        if k == "receipt" {
            s.note(format!("receipt {v}"));
        }
        s.vars.insert(k, v);
    }
    Ok(())
}

fn describe(ex: &Extract) -> String {
    match ex {
        Extract::Css {
            selector,
            attr: Some(a),
        } => format!("{selector} @{a}"),
        Extract::Css { selector, attr: None } => selector.clone(),
        Extract::Header(h) => format!("header {h}"),
        Extract::Regex(r) => format!("regex {}", r.as_str()),
    }
}

/// A value from the page; `None` if it is not there (or empty).
pub fn extract(page: &Page, ex: &Extract) -> Option<String> {
    let v = match ex {
        Extract::Header(h) => page.headers.get(h.as_str())?.to_str().ok()?.to_string(),
        Extract::Regex(r) => {
            let text = page.text();
            let c = r.captures(&text)?;
            c.get(1).or_else(|| c.get(0))?.as_str().to_string()
        }
        Extract::Css { selector, attr } => {
            let html = page.html();
            let el = html.select(&sel(selector)).next()?;
            match attr {
                Some(a) => el.value().attr(a)?.to_string(),
                None => el.text().collect::<String>(),
            }
        }
    };
    let v = v.trim().to_string();
    (!v.is_empty()).then_some(v)
}

/// Most intermediate pages (consent, "continue", account choice) in one login.
const MAX_INTERMEDIATE: usize = 4;

/// SP-initiated login: start at the service, arrive at the configured IdP,
/// fill its login form, come back with a SAMLResponse / authorization code.
async fn login_flow(s: &mut Session, login: &LoginConfig) -> Result<(), Fail> {
    let headers = login_headers(s, login)?;
    s.vars.remove("_saml_request");
    let start = s.resolve(&s.render(&login.start)?)?;
    let first_hop = s.hops.len();
    s.fetch(Method::GET, start, Body::None, &headers, login_opts(login, true, true))
        .await
        .map_err(|f| Fail {
            detail: format!("to the IdP: {}", f.detail),
            ..f
        })?;
    let page = current(s)?;
    if !under(&page.url, &login.idp) {
        return Err(Fail::refused(format!(
            "login path changed: the service sent the login to {} (HTTP {}), expected the IdP at {}",
            show_url(&page.url),
            page.status.as_u16(),
            login.idp
        )));
    }
    let hops_in = &s.hops[first_hop..];
    let asked = match login.kind {
        LoginKind::Saml => hops_in
            .iter()
            .any(|h| has_param(&h.url, "SAMLRequest") || h.sent_fields.iter().any(|f| f == "SAMLRequest")),
        LoginKind::Oidc => hops_in
            .iter()
            .any(|h| has_param(&h.url, "response_type") && has_param(&h.url, "client_id")),
        LoginKind::Password => true,
    };
    if !asked {
        let what = match login.kind {
            LoginKind::Saml => "a SAML AuthnRequest",
            _ => "an OpenID Connect authorization request",
        };
        return Err(Fail::refused(format!(
            "reached {} without {what} on the way",
            show_url(&page.url)
        )));
    }
    if let (LoginKind::Saml, Some(pem)) = (login.kind, &login.sp_certificate) {
        let fact = super::handoff::verify_sent_request(&s.hops[first_hop..], s.vars.get("_saml_request"), pem)?;
        s.note(fact);
    }
    let page = current(s)?;
    if !page.status.is_success() {
        return Err(Fail::refused(format!(
            "the IdP answered HTTP {} at {}{}",
            page.status.as_u16(),
            show_url(&page.url),
            says(page)
        )));
    }
    // The IdP's login form.
    let (method, url, body) = {
        let page = current(s)?;
        let html = page.html();
        let form = find_login_form(&html, login)
            .ok_or_else(|| Fail::refused(format!("IdP login form: no login form at {}", show_url(&page.url))))?;
        let filled = read_form(&form);
        let mut fields: Vec<(String, String)> = Vec::new();
        let credentials = [
            ("username", &login.username, &login.username_field, &filled.text_fields),
            (
                "password",
                &login.password,
                &login.password_field,
                &filled.password_fields,
            ),
        ];
        for (what, secret, configured, found) in credentials {
            let Some(secret) = secret else { continue };
            let name = configured
                .clone()
                .or_else(|| found.first().cloned())
                .ok_or_else(|| Fail::refused(format!("IdP login form: no {what} field at {}", show_url(&page.url))))?;
            fields.push((name, secret.expose().to_string()));
        }
        fields.extend(s.values(&login.fields)?);
        submit_request(s, &form, &fields, &[], false, None)?
    };
    let sent_from = s.hops.len();
    s.fetch(method, url, body, &headers, login_opts(login, true, true))
        .await
        .map_err(|f| Fail {
            detail: format!("IdP login: {}", f.detail),
            ..f
        })?;
    // Intermediate pages: consent, "continue", account choice. A page with
    // buttons is only submitted with a button the login names.
    for _ in 0..MAX_INTERMEDIATE {
        let page = current(s)?;
        if !under(&page.url, &login.idp) {
            break;
        }
        let continue_fields = s.values(&login.continue_fields)?;
        let next = {
            let html = page.html();
            let forms: Vec<ElementRef> = html.select(&sel("form")).collect();
            if forms.iter().any(|f| !read_form(f).password_fields.is_empty()) {
                return Err(Fail::refused(format!(
                    "the IdP did not accept the login: still at its login form ({}, HTTP {}){}",
                    show_url(&page.url),
                    page.status.as_u16(),
                    says(page)
                )));
            }
            let mut chosen = None;
            'choice: for b in &login.continue_with {
                for f in &forms {
                    let with = super::http::read_form_with(f, super::http::Press::This(b));
                    if with.buttons.iter().any(|x| x.visible && x.is_pressable(b)) {
                        chosen = Some((b, *f));
                        break 'choice;
                    }
                }
            }
            match chosen {
                Some((b, f)) => {
                    s.note(format!("pressing {} at the IdP", b.describe()));
                    Some(submit_request(s, &f, &continue_fields, &[], false, Some(b))?)
                }
                None => match forms.as_slice() {
                    // A form with nothing to fill and no button: what its script would send.
                    [only] if read_form(only).visible_inputs == 0 && read_form(only).buttons.is_empty() => {
                        s.note("submitting the IdP's form (no buttons)".into());
                        Some(submit_request(s, only, &continue_fields, &[], false, None)?)
                    }
                    _ => None,
                },
            }
        };
        let Some((method, url, body)) = next else {
            let page = current(s)?;
            let html = page.html();
            let buttons: Vec<_> = html
                .select(&sel("form"))
                .flat_map(|f| read_form(&f).buttons)
                .filter(|b| b.visible)
                .collect();
            let hint = if buttons.is_empty() {
                String::new()
            } else if login.continue_with.is_empty() {
                format!(
                    "; a page with buttons {} is not pressed blindly: name the one to press with `continue`",
                    button_list(&buttons)
                )
            } else {
                format!("; none of `continue` is among its buttons {}", button_list(&buttons))
            };
            return Err(Fail::refused(format!(
                "stuck at the IdP: {} (HTTP {}){hint}{}",
                show_url(&page.url),
                page.status.as_u16(),
                says(page)
            )));
        };
        s.fetch(method, url, body, &headers, login_opts(login, true, true))
            .await?;
    }
    let page = current(s)?;
    if under(&page.url, &login.idp) {
        return Err(Fail::refused(format!(
            "never left the IdP: at {}{}",
            show_url(&page.url),
            says(page)
        )));
    }
    let back = &s.hops[sent_from..];
    let answer = idp_answer(back, s.vars.get("_saml_response").map(String::as_str));
    let answered = match login.kind {
        LoginKind::Saml => back.iter().any(|h| h.sent_fields.iter().any(|f| f == "SAMLResponse")),
        LoginKind::Oidc => back
            .iter()
            .any(|h| has_param(&h.url, "code") || h.sent_fields.iter().any(|f| f == "code")),
        LoginKind::Password => true,
    };
    if !answered {
        let said = answer.map(|a| format!(": the IdP answered {a}")).unwrap_or_default();
        return Err(Fail::refused(format!(
            "back at {} without a {} from the IdP{said}{}",
            show_url(&page.url),
            if login.kind == LoginKind::Saml {
                "SAMLResponse"
            } else {
                "authorization code"
            },
            says(page)
        )));
    }
    if !page.status.is_success() {
        let said = idp_answer(back, s.vars.get("_saml_response").map(String::as_str))
            .map(|a| format!(" (the IdP answered {a})"))
            .unwrap_or_default();
        return Err(Fail::refused(format!(
            "back at the service: it refused the login with HTTP {} at {}{said}{}",
            page.status.as_u16(),
            show_url(&page.url),
            says(page)
        )));
    }
    s.note(format!("logged in, at {}", show_url(&page.url)));
    Ok(())
}

/// A failed IdP answer on the way back, quoted: the OAuth `error` and
/// `error_description` of a callback URL, or a SAML status that is not
/// Success. Codes, states and assertions are never quoted.
pub fn idp_answer(back: &[super::http::Hop], saml_response: Option<&str>) -> Option<String> {
    for h in back {
        let q = |name: &str| {
            h.url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| clean(&v, 200))
        };
        if let Some(e) = q("error") {
            let mut out = format!("error={e}");
            if let Some(d) = q("error_description") {
                out.push_str(&format!(" ({d:?})"));
            }
            return Some(out);
        }
    }
    saml_response.and_then(saml_status)
}

/// Printable characters only, cut at `max`.
fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect::<String>()
}

/// The status of a base64 SAMLResponse when it is not Success: the codes
/// (top-level and nested) and the StatusMessage.
pub fn saml_status(b64: &str) -> Option<String> {
    use base64::Engine;
    let cleaned: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = base64::engine::general_purpose::STANDARD.decode(cleaned).ok()?;
    let xml = String::from_utf8(bytes).ok()?;
    let doc = roxmltree::Document::parse(&xml).ok()?;
    const P: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
    let status = doc.root_element().children().find(|n| n.has_tag_name((P, "Status")))?;
    let codes: Vec<&str> = status
        .descendants()
        .filter(|n| n.has_tag_name((P, "StatusCode")))
        .filter_map(|n| n.attribute("Value"))
        .map(|v| v.rsplit(':').next().unwrap_or(v))
        .collect();
    if codes.first() == Some(&"Success") {
        return None;
    }
    let mut out = format!("SAML status {}", codes.join("/"));
    if let Some(m) = status
        .children()
        .find(|n| n.has_tag_name((P, "StatusMessage")))
        .and_then(|n| n.text())
    {
        out.push_str(&format!(" ({:?})", clean(m.trim(), 200)));
    }
    Some(out)
}

fn find_login_form<'a>(html: &'a scraper::Html, login: &LoginConfig) -> Option<ElementRef<'a>> {
    if let Some(selector) = &login.form {
        return html.select(&sel(selector)).next();
    }
    let forms: Vec<ElementRef> = html.select(&sel("form")).collect();
    // The form with a password field; else the first that posts somewhere
    // (IdP pages also carry search boxes and modal forms); else the first.
    forms
        .iter()
        .find(|f| !read_form(f).password_fields.is_empty())
        .or_else(|| forms.iter().find(|f| read_form(f).method_post))
        .or_else(|| forms.first())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn hop(url: &str) -> super::super::http::Hop {
        super::super::http::Hop {
            method: Method::GET,
            url: url::Url::parse(url).expect("url"),
            status: 302,
            sent_fields: Vec::new(),
        }
    }

    #[test]
    fn oauth_errors_are_quoted_without_codes_or_states() {
        let back = [
            hop("https://idp.example/o/authorize/?client_id=c&state=s3cr3t"),
            hop("https://svc.example/cb?error=access_denied&error_description=The+user+said+no&state=s3cr3t"),
        ];
        let a = idp_answer(&back, None).expect("answer");
        assert_eq!(a, "error=access_denied (\"The user said no\")");
        assert!(idp_answer(&[hop("https://svc.example/cb?code=abc&state=x")], None).is_none());
    }

    #[test]
    fn saml_statuses_other_than_success_are_quoted() {
        let resp = |inner: &str| {
            base64::engine::general_purpose::STANDARD.encode(format!(
                r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" ID="_r"><samlp:Status>{inner}</samlp:Status></samlp:Response>"#
            ))
        };
        let failed = resp(
            r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Responder"><samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:AuthnFailed"/></samlp:StatusCode><samlp:StatusMessage>Brugeren afbrød</samlp:StatusMessage>"#,
        );
        assert_eq!(
            saml_status(&failed).as_deref(),
            Some("SAML status Responder/AuthnFailed (\"Brugeren afbrød\")")
        );
        let ok = resp(r#"<samlp:StatusCode Value="urn:oasis:names:tc:SAML:2.0:status:Success"/>"#);
        assert_eq!(saml_status(&ok), None);
        assert_eq!(saml_status("not base64!"), None);
        assert_eq!(
            idp_answer(&[], Some(&failed))
                .as_deref()
                .map(|s| s.starts_with("SAML status")),
            Some(true)
        );
    }
}
