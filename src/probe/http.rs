//! A browser-like HTTP session for one form probe: its own cookie jar,
//! redirects followed by hand (each hop is evidence, and login checks need
//! to see every URL on the way), HTML forms read and filled the way a
//! browser would, and pages that only auto-submit a form (SAML HTTP-POST
//! binding, OIDC form_post) submitted for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use scraper::{ElementRef, Html, Selector};
use url::Url;

use crate::config::ca::CaFile;
use crate::config::form::{Button, FieldValue, FileContent, FileField, Template};
use crate::verdict::{now_millis, Millis, Verdict};

/// Largest page body read; a probe reads forms, not downloads.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// Redirects and auto-submits followed for one request.
const MAX_HOPS: usize = 20;

/// Why a step failed, and whose side it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    /// `rejected` (the channel refused or misbehaved) or `error` (ours).
    pub verdict: Verdict,
    pub detail: String,
}

impl Fail {
    pub fn refused(detail: impl Into<String>) -> Fail {
        Fail {
            verdict: Verdict::Rejected,
            detail: detail.into(),
        }
    }
    pub fn ours(detail: impl Into<String>) -> Fail {
        Fail {
            verdict: Verdict::Error,
            detail: detail.into(),
        }
    }
}

/// A fetched page.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: Url,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    pub fn html(&self) -> Html {
        Html::parse_document(&self.body)
    }

    /// The text a reader sees (markup stripped), for `expect_text` and regexes.
    pub fn text(&self) -> String {
        let html = self.html();
        let mut out = String::with_capacity(self.body.len() / 2);
        for t in html.root_element().text() {
            out.push_str(t);
        }
        out
    }
}

impl Page {
    /// What the page says, in short: its title and the start of its visible
    /// text (no scripts or styles), whitespace collapsed, at most `max` characters.
    pub fn gist(&self, max: usize) -> String {
        let html = self.html();
        let mut words: Vec<&str> = Vec::new();
        for node in html.root_element().descendants() {
            let Some(text) = node.value().as_text() else { continue };
            let hidden = node.ancestors().any(|a| {
                a.value()
                    .as_element()
                    .is_some_and(|e| matches!(e.name(), "script" | "style" | "template" | "noscript"))
            });
            if !hidden {
                words.extend(text.split_whitespace());
            }
        }
        let mut out = String::new();
        for w in words {
            if out.chars().count() + w.chars().count() + 1 > max {
                out.push('…');
                break;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(w);
        }
        out
    }
}

/// Quoted for a detail: `; the page says "…"`, or nothing for an empty page.
pub fn says(page: &Page) -> String {
    let g = page.gist(200);
    if g.is_empty() {
        String::new()
    } else {
        format!("; the page says {g:?}")
    }
}

/// One hop of a request: what was asked, what came back.
#[derive(Debug, Clone)]
pub struct Hop {
    pub method: Method,
    pub url: Url,
    pub status: u16,
    /// Form fields sent with it (names only are evidence; values may be secret).
    pub sent_fields: Vec<String>,
}

/// A request body.
#[derive(Debug, Clone)]
pub enum Body {
    None,
    Form(Vec<(String, String)>),
    Multipart {
        fields: Vec<(String, String)>,
        files: Vec<Upload>,
    },
}

impl Body {
    fn field_names(&self) -> Vec<String> {
        match self {
            Body::None => Vec::new(),
            Body::Form(f) | Body::Multipart { fields: f, .. } => f.iter().map(|(k, _)| k.clone()).collect(),
        }
    }
    fn field(&self, name: &str) -> Option<&str> {
        match self {
            Body::None => None,
            Body::Form(f) | Body::Multipart { fields: f, .. } => {
                f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
            }
        }
    }
}

/// A URL as evidence: no query or fragment, which can carry codes and SAML messages.
pub fn show_url(u: &Url) -> String {
    let mut s = format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""));
    if let Some(p) = u.port() {
        s.push_str(&format!(":{p}"));
    }
    s.push_str(u.path());
    if u.query().is_some() {
        s.push_str("?…");
    }
    s
}

/// How far one fetch goes.
#[derive(Debug, Clone, Copy)]
pub struct FetchOpts {
    pub follow: bool,
    pub auto_submit: bool,
    pub timeout: Duration,
}

/// The Fetch standard's request facts a browser derives for a navigation:
/// who initiated it and what happened on the way.
#[derive(Debug, Clone)]
struct Nav {
    /// The document the navigation started from (its referrer and origin).
    initiator: Option<Url>,
    /// A person pressed something (`Sec-Fetch-User`); not for scripted submits.
    user: bool,
    /// A redirect crossed origins: the request's origin is now opaque ("null").
    tainted: bool,
    /// The least related site seen on the way (`Sec-Fetch-Site` never improves).
    site: &'static str,
}

/// `Referer` under `strict-origin-when-cross-origin`.
fn referrer(from: &Url, to: &Url) -> Option<String> {
    if from.scheme() == "https" && to.scheme() != "https" {
        return None;
    }
    if from.origin() == to.origin() {
        let mut r = from.clone();
        r.set_fragment(None);
        let _ = r.set_username("");
        let _ = r.set_password(None);
        return Some(r.to_string());
    }
    Some(format!("{}/", from.origin().ascii_serialization()))
}

/// The registrable part of a host, cheaply: the last two labels (IP
/// addresses and single labels as they are). No public-suffix list.
fn site_of(u: &Url) -> Option<String> {
    match u.host()? {
        url::Host::Domain(d) => {
            let labels: Vec<&str> = d.trim_end_matches('.').rsplitn(3, '.').collect();
            Some(match labels.as_slice() {
                [tld, name, ..] => format!("{name}.{tld}").to_ascii_lowercase(),
                _ => d.to_ascii_lowercase(),
            })
        }
        h => Some(h.to_string()),
    }
}

/// `Sec-Fetch-Site` of one hop.
fn fetch_site(from: Option<&Url>, to: &Url) -> &'static str {
    let Some(from) = from else { return "none" };
    if from.origin() == to.origin() {
        "same-origin"
    } else if from.scheme() == to.scheme() && site_of(from).is_some() && site_of(from) == site_of(to) {
        "same-site"
    } else {
        "cross-site"
    }
}

fn rank(site: &str) -> u8 {
    match site {
        "none" | "same-origin" => 0,
        "same-site" => 1,
        _ => 2,
    }
}

/// The headers a browser sends with a navigation hop (configured headers override them).
fn browser_headers(nav: &Nav, method: &Method, url: &Url) -> Vec<(&'static str, String)> {
    let mut h = vec![
        (
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8".to_string(),
        ),
        ("accept-language", "da,en;q=0.8".to_string()),
        ("upgrade-insecure-requests", "1".to_string()),
        ("sec-fetch-site", nav.site.to_string()),
        ("sec-fetch-mode", "navigate".to_string()),
        ("sec-fetch-dest", "document".to_string()),
    ];
    if nav.user {
        h.push(("sec-fetch-user", "?1".to_string()));
    }
    if let Some(from) = &nav.initiator {
        if let Some(r) = referrer(from, url) {
            h.push(("referer", r));
        }
    }
    // Fetch: a navigation sends Origin unless it is a GET or HEAD; the origin
    // is "null" after a cross-origin redirect or on a downgrade to http. A
    // request no page started (a first `post` step) has no origin to send.
    if let (false, Some(from)) = (*method == Method::GET || *method == Method::HEAD, &nav.initiator) {
        let origin = if nav.tainted || from.scheme() == "https" && url.scheme() != "https" {
            "null".to_string()
        } else {
            from.origin().ascii_serialization()
        };
        h.push(("origin", origin));
    }
    h
}

/// The fetch options of a login flow's requests.
pub fn login_opts(login: &crate::config::form::LoginConfig, follow: bool, auto_submit: bool) -> FetchOpts {
    FetchOpts {
        follow,
        auto_submit,
        timeout: login.timeout,
    }
}

/// A file to upload: field, file name, content type, bytes.
#[derive(Debug, Clone)]
pub struct Upload {
    pub field: String,
    pub file_name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// One probe's browser.
pub struct Session {
    client: reqwest::Client,
    pub page: Option<Page>,
    /// Every hop so far, in order.
    pub hops: Vec<Hop>,
    /// Evidence lines: (when, text).
    pub evidence: Vec<(Millis, String)>,
    pub vars: BTreeMap<String, String>,
}

impl Session {
    pub fn new(vars: BTreeMap<String, String>) -> Result<Session, Fail> {
        Session::with_ca(vars, &[])
    }

    /// A session that also trusts the certificates of these `ca_file`s.
    pub fn with_ca(vars: BTreeMap<String, String>, cas: &[&CaFile]) -> Result<Session, Fail> {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let mut builder = reqwest::Client::builder();
        for ca in cas {
            for der in &ca.certs {
                let cert =
                    reqwest::Certificate::from_der(der).map_err(|e| Fail::ours(format!("ca_file {}: {e}", ca.path)))?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .cookie_provider(jar)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "postcanary/",
                env!("CARGO_PKG_VERSION"),
                " (synthetic delivery probe)"
            ))
            .build()
            .map_err(|e| Fail::ours(format!("cannot build the HTTP client: {e}")))?;
        Ok(Session {
            client,
            page: None,
            hops: Vec::new(),
            evidence: Vec::new(),
            vars,
        })
    }

    pub fn render(&self, t: &Template) -> Result<String, Fail> {
        t.render(&self.vars).map_err(Fail::ours)
    }

    /// A field's value: rendered text, or the secret itself (sent, never shown).
    pub fn value(&self, v: &FieldValue) -> Result<String, Fail> {
        match v {
            FieldValue::Text(t) => self.render(t),
            FieldValue::Secret(s) => Ok(s.expose().to_string()),
        }
    }

    /// Rendered `(name, value)` pairs; a name may repeat.
    pub fn values(&self, fields: &[(String, FieldValue)]) -> Result<Vec<(String, String)>, Fail> {
        fields.iter().map(|(k, v)| Ok((k.clone(), self.value(v)?))).collect()
    }

    pub fn note(&mut self, line: String) {
        self.evidence.push((now_millis(), line));
    }

    /// Resolves a (possibly relative) URL against the current page.
    pub fn resolve(&self, target: &str) -> Result<Url, Fail> {
        let parsed = match &self.page {
            Some(p) => p.url.join(target),
            None => Url::parse(target),
        };
        let u = parsed.map_err(|e| Fail::refused(format!("bad URL {target:?}: {e}")))?;
        match u.scheme() {
            "http" | "https" => Ok(u),
            s => Err(Fail::refused(format!("{}: scheme {s:?} is not http(s)", show_url(&u)))),
        }
    }

    /// Sends one request and, if asked, follows redirects and auto-submit
    /// pages, returning the last page (also kept as the current page).
    pub async fn fetch(
        &mut self,
        method: Method,
        url: Url,
        body: Body,
        headers: &[(String, String)],
        opts: FetchOpts,
    ) -> Result<&Page, Fail> {
        let FetchOpts {
            follow,
            auto_submit,
            timeout,
        } = opts;
        let (mut method, mut url, mut body) = (method, url, body);
        let initiator = self.page.as_ref().map(|p| p.url.clone());
        let mut nav = Nav {
            site: fetch_site(initiator.as_ref(), &url),
            initiator,
            user: true,
            tainted: false,
        };
        for hop in 0..=MAX_HOPS {
            if hop == MAX_HOPS {
                return Err(Fail::refused(format!(
                    "more than {MAX_HOPS} redirects, last {}",
                    show_url(&url)
                )));
            }
            let site = fetch_site(nav.initiator.as_ref(), &url);
            if rank(site) > rank(nav.site) {
                nav.site = site;
            }
            let mut all: Vec<(String, String)> = browser_headers(&nav, &method, &url)
                .into_iter()
                .filter(|(k, _)| !headers.iter().any(|(c, _)| c.eq_ignore_ascii_case(k)))
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            all.extend(headers.iter().cloned());
            let page = self.send_once(&method, &url, &body, &all, timeout).await?;
            let status = page.status;
            self.page = Some(page);
            if follow && status.is_redirection() {
                let Some(location) = self
                    .page
                    .as_ref()
                    .and_then(|p| p.headers.get(reqwest::header::LOCATION))
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                else {
                    return Err(Fail::refused(format!(
                        "HTTP {status} without a Location at {}",
                        show_url(&url)
                    )));
                };
                let next = self.resolve(&location)?;
                if next.origin() != url.origin() {
                    nav.tainted = true;
                }
                // 307/308 repeat the request; the others turn into a GET.
                if !matches!(status.as_u16(), 307 | 308) {
                    method = Method::GET;
                    body = Body::None;
                }
                url = next;
                continue;
            }
            if auto_submit && status.is_success() {
                if let Some((m, u, b)) = self.auto_submit_form()? {
                    self.note(format!("auto-submitting the form to {}", show_url(&u)));
                    // A new navigation, started by the page's script.
                    let initiator = self.page.as_ref().map(|p| p.url.clone());
                    nav = Nav {
                        site: fetch_site(initiator.as_ref(), &u),
                        initiator,
                        user: false,
                        tainted: false,
                    };
                    (method, url, body) = (m, u, b);
                    continue;
                }
            }
            break;
        }
        self.page.as_ref().ok_or_else(|| Fail::ours("no page"))
    }

    async fn send_once(
        &mut self,
        method: &Method,
        url: &Url,
        body: &Body,
        headers: &[(String, String)],
        timeout: Duration,
    ) -> Result<Page, Fail> {
        let mut req = self.client.request(method.clone(), url.clone()).timeout(timeout);
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        req = match body {
            Body::None => req,
            Body::Form(fields) => req.form(fields),
            Body::Multipart { fields, files } => {
                let mut form = reqwest::multipart::Form::new();
                for (k, v) in fields {
                    form = form.text(k.clone(), v.clone());
                }
                for f in files {
                    let part = reqwest::multipart::Part::bytes(f.bytes.clone())
                        .file_name(f.file_name.clone())
                        .mime_str(&f.content_type)
                        .map_err(|e| {
                            Fail::ours(format!(
                                "file {:?}: content type {:?}: {e}",
                                f.file_name, f.content_type
                            ))
                        })?;
                    form = form.part(f.field.clone(), part);
                }
                req.multipart(form)
            }
        };
        let started = Instant::now();
        let mut resp = req.send().await.map_err(|e| {
            let what = if e.is_timeout() { "timed out" } else { "could not reach" };
            Fail::refused(format!("{what} {} {}: {}", method, show_url(url), error_chain(&e)))
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut bytes: Vec<u8> = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_BODY {
                        return Err(Fail::refused(format!(
                            "{} answered with more than {} MiB",
                            show_url(url),
                            MAX_BODY / 1024 / 1024
                        )));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Fail::refused(format!(
                        "reading {} failed: {}",
                        show_url(url),
                        error_chain(&e)
                    )))
                }
            }
        }
        let ms = started.elapsed().as_millis();
        self.note(format!("{method} {} → {} ({ms} ms)", show_url(url), status.as_u16()));
        self.hops.push(Hop {
            method: method.clone(),
            url: url.clone(),
            status: status.as_u16(),
            sent_fields: body.field_names(),
        });
        if let Some(v) = body.field("SAMLResponse") {
            self.vars.insert("_saml_response".into(), v.to_string());
        }
        if let Some(v) = body.field("SAMLRequest") {
            self.vars.insert("_saml_request".into(), v.to_string());
        }
        Ok(Page {
            url: url.clone(),
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    /// If the current page is only a form that submits itself (hidden inputs,
    /// nothing to fill), the request it makes.
    fn auto_submit_form(&self) -> Result<Option<(Method, Url, Body)>, Fail> {
        let Some(page) = &self.page else { return Ok(None) };
        let html = page.html();
        let forms: Vec<ElementRef> = html.select(&sel("form")).collect();
        let [form] = forms.as_slice() else { return Ok(None) };
        let filled = read_form_with(form, Press::Nothing);
        if filled.visible_inputs > 0 {
            return Ok(None);
        }
        // A page with buttons to choose from (a consent page: "Cancel" and
        // "Authorize") is never submitted blindly; one button only if a
        // script presses it, and a scripted submit sends no button.
        let buttons = filled.buttons.iter().filter(|b| b.visible).count();
        const PROTOCOL: [&str; 6] = ["SAMLResponse", "SAMLRequest", "RelayState", "code", "id_token", "state"];
        let protocol = filled.fields.iter().any(|(k, _)| PROTOCOL.contains(&k.as_str()));
        let lower = page.body.to_ascii_lowercase();
        let scripted = lower.contains(".submit()") || lower.contains("onload");
        if !(protocol || (scripted && !filled.fields.is_empty())) {
            return Ok(None);
        }
        if buttons > 1 || (buttons == 1 && !scripted) {
            return Ok(None);
        }
        let url = self.resolve(form.value().attr("action").unwrap_or(""))?;
        let method = if filled.method_post { Method::POST } else { Method::GET };
        Ok(Some(form_request(method, url, filled.fields)))
    }
}

/// A GET form puts its fields in the query; a POST form in the body.
fn form_request(method: Method, mut url: Url, fields: Vec<(String, String)>) -> (Method, Url, Body) {
    if method == Method::GET {
        url.query_pairs_mut().clear().extend_pairs(fields.iter());
        (method, url, Body::None)
    } else {
        (method, url, Body::Form(fields))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    s
}

/// A selector known to be valid.
pub fn sel(s: &str) -> Selector {
    // Only called with literals and selectors checked when the config was loaded.
    Selector::parse(s).unwrap_or_else(|_| Selector::parse("*").unwrap_or_else(|_| unreachable!()))
}

/// A form as a browser would submit it untouched.
#[derive(Debug, Default)]
pub struct FilledForm {
    pub fields: Vec<(String, String)>,
    pub method_post: bool,
    pub multipart: bool,
    /// Text-like inputs a person would type into (text, email, password, textarea, ...).
    pub visible_inputs: usize,
    pub password_fields: Vec<String>,
    pub text_fields: Vec<String>,
    pub file_fields: Vec<String>,
    /// The form's submit buttons, in document order.
    pub buttons: Vec<FormButton>,
}

/// A submit button of a form.
#[derive(Debug, Clone)]
pub struct FormButton {
    pub name: String,
    pub value: String,
    /// What a reader sees on it: its text (`<button>`) or value (`<input>`).
    pub label: String,
    /// Not inside `<noscript>`: a browser with scripts shows it.
    pub visible: bool,
    /// Its place among the form's controls, to tell it apart.
    index: usize,
    matches_css: bool,
}

/// Which button a submission presses.
#[derive(Debug, Clone, Copy)]
pub enum Press<'a> {
    /// The first submit button (what pressing Enter does).
    First,
    /// The one the config names.
    This(&'a Button),
    /// None (a scripted `form.submit()`).
    Nothing,
}

fn label_of(el: &ElementRef) -> String {
    let v = el.value();
    let raw = if v.name() == "button" {
        el.text().collect::<String>()
    } else {
        v.attr("value").unwrap_or("").to_string()
    };
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn in_noscript(el: &ElementRef) -> bool {
    el.ancestors()
        .any(|a| a.value().as_element().is_some_and(|e| e.name() == "noscript"))
}

impl FormButton {
    /// Whether this is the button `b` names (CSS: as read with `Press::This(b)`).
    pub fn is_pressable(&self, b: &Button) -> bool {
        match b {
            Button::Text(t) => self.label.to_lowercase() == t.to_lowercase(),
            Button::NameValue(n, v) => &self.name == n && &self.value == v,
            Button::Css(_) => self.matches_css,
        }
    }
}

/// How the form's buttons read in a detail: `"Cancel", "Authorize"`.
pub fn button_list(buttons: &[FormButton]) -> String {
    if buttons.is_empty() {
        return "none".into();
    }
    buttons
        .iter()
        .map(|b| {
            if b.name.is_empty() {
                format!("{:?}", b.label)
            } else {
                format!("{:?} ({}={})", b.label, b.name, b.value)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a form's successful controls: hidden and prefilled inputs, checked
/// boxes, selected options, textareas, and the first named submit button.
/// Empty visible inputs stay empty — which is how a honeypot stays unfilled.
pub fn read_form(form: &ElementRef) -> FilledForm {
    read_form_with(form, Press::First)
}

/// [`read_form`], pressing the given button.
pub fn read_form_with(form: &ElementRef, press: Press) -> FilledForm {
    let css = match press {
        Press::This(Button::Css(c)) => Some(sel(c)),
        _ => None,
    };
    // The buttons first: which one is pressed decides which one is sent.
    let mut buttons = Vec::new();
    for (index, el) in form.select(&sel("input, button")).enumerate() {
        let v = el.value();
        let t = v
            .attr("type")
            .unwrap_or(if v.name() == "button" { "submit" } else { "text" })
            .to_ascii_lowercase();
        if !(t == "submit" || (t == "image" && v.name() == "input")) || v.attr("disabled").is_some() {
            continue;
        }
        buttons.push(FormButton {
            name: v.attr("name").unwrap_or("").to_string(),
            value: v.attr("value").unwrap_or("").to_string(),
            label: label_of(&el),
            visible: !in_noscript(&el),
            index,
            matches_css: css.as_ref().is_some_and(|c| c.matches(&el)),
        });
    }
    let pressed: Option<usize> = match press {
        Press::First => buttons.first().map(|b| b.index),
        Press::This(b) => buttons.iter().find(|x| x.is_pressable(b)).map(|x| x.index),
        Press::Nothing => None,
    };
    let mut out = FilledForm {
        method_post: form
            .value()
            .attr("method")
            .is_some_and(|m| m.eq_ignore_ascii_case("post")),
        multipart: form
            .value()
            .attr("enctype")
            .is_some_and(|e| e.eq_ignore_ascii_case("multipart/form-data")),
        ..FilledForm::default()
    };
    let mut control = 0usize;
    for el in form.select(&sel("input, textarea, select, button")) {
        let this_control = if matches!(el.value().name(), "input" | "button") {
            control += 1;
            Some(control - 1)
        } else {
            None
        };
        let pressed_here = this_control.is_some() && this_control == pressed;
        let v = el.value();
        if v.attr("disabled").is_some() {
            continue;
        }
        let name = v.attr("name").unwrap_or("").to_string();
        match v.name() {
            "textarea" => {
                out.visible_inputs += 1;
                out.text_fields.push(name.clone());
                if !name.is_empty() {
                    out.fields.push((name, el.text().collect()));
                }
            }
            "select" => {
                out.visible_inputs += 1;
                let option_value = |o: &ElementRef| {
                    o.value()
                        .attr("value")
                        .map(str::to_string)
                        .unwrap_or_else(|| o.text().collect::<String>().trim().to_string())
                };
                if !name.is_empty() {
                    if v.attr("multiple").is_some() {
                        // A multi-select sends every selected option, or nothing.
                        for o in el.select(&sel("option[selected]")) {
                            out.fields.push((name.clone(), option_value(&o)));
                        }
                    } else if let Some(o) = el
                        .select(&sel("option[selected]"))
                        .next()
                        .or_else(|| el.select(&sel("option")).next())
                    {
                        out.fields.push((name, option_value(&o)));
                    }
                }
            }
            "button" => {
                if pressed_here && !name.is_empty() {
                    out.fields.push((name, v.attr("value").unwrap_or("").to_string()));
                }
            }
            _ => {
                let t = v.attr("type").unwrap_or("text").to_ascii_lowercase();
                let value = v.attr("value").unwrap_or("").to_string();
                match t.as_str() {
                    "submit" | "image" => {
                        if pressed_here && !name.is_empty() {
                            out.fields.push((name, value));
                        }
                    }
                    "button" | "reset" => {}
                    "file" => {
                        out.visible_inputs += 1;
                        out.file_fields.push(name);
                    }
                    "checkbox" | "radio" => {
                        if v.attr("checked").is_some() && !name.is_empty() {
                            let value = if value.is_empty() { "on".to_string() } else { value };
                            out.fields.push((name, value));
                        }
                    }
                    "hidden" => {
                        if !name.is_empty() {
                            out.fields.push((name, value));
                        }
                    }
                    other => {
                        out.visible_inputs += 1;
                        if other == "password" {
                            out.password_fields.push(name.clone());
                        } else if matches!(other, "text" | "email" | "tel" | "search" | "") {
                            out.text_fields.push(name.clone());
                        }
                        if !name.is_empty() {
                            out.fields.push((name, value));
                        }
                    }
                }
            }
        }
    }
    out.buttons = buttons;
    out
}

/// Puts the configured values in: every value the form had for a configured
/// name is replaced by the configured ones (several for a checkbox group or
/// a multi-select), at the place of the form's first.
pub fn override_fields(fields: &mut Vec<(String, String)>, set: &[(String, String)]) {
    let mut names: Vec<&str> = Vec::new();
    for (k, _) in set {
        if !names.contains(&k.as_str()) {
            names.push(k);
        }
    }
    for name in names {
        let values: Vec<String> = set.iter().filter(|(k, _)| k == name).map(|(_, v)| v.clone()).collect();
        let at = fields.iter().position(|(k, _)| k == name).unwrap_or(fields.len());
        fields.retain(|(k, _)| k != name);
        let at = at.min(fields.len());
        for (j, v) in values.into_iter().enumerate() {
            fields.insert(at + j, (name.to_string(), v));
        }
    }
}

/// Sets a field's value, replacing what the form had or adding it.
pub fn set_field(fields: &mut Vec<(String, String)>, name: &str, value: String) {
    if let Some(slot) = fields.iter_mut().find(|(k, _)| k == name) {
        slot.1 = value;
    } else {
        fields.push((name.to_string(), value));
    }
}

/// Builds the request that submits `form` on the current page with `fields`
/// overriding its own values, and `files` attached.
pub fn submit_request(
    session: &Session,
    form: &ElementRef,
    fields: &[(String, String)],
    files: &[(String, FileField)],
    force_multipart: bool,
    button: Option<&Button>,
) -> Result<(Method, Url, Body), Fail> {
    let press = button.map_or(Press::First, Press::This);
    let mut filled = read_form_with(form, press);
    if let Some(b) = button {
        if !filled.buttons.iter().any(|x| x.is_pressable(b)) {
            return Err(Fail::refused(format!(
                "no {} in the form at {}; its buttons: {}",
                b.describe(),
                session.page.as_ref().map(|p| show_url(&p.url)).unwrap_or_default(),
                button_list(&filled.buttons)
            )));
        }
    }
    override_fields(&mut filled.fields, fields);
    let url = session.resolve(form.value().attr("action").unwrap_or(""))?;
    let method = if filled.method_post { Method::POST } else { Method::GET };
    if filled.multipart || force_multipart || !files.is_empty() {
        if method != Method::POST {
            return Err(Fail::ours("files can only be sent with a POST form"));
        }
        let files = render_files(session, files)?;
        return Ok((
            method,
            url,
            Body::Multipart {
                fields: filled.fields,
                files,
            },
        ));
    }
    Ok(form_request(method, url, filled.fields))
}

pub fn render_files(session: &Session, files: &[(String, FileField)]) -> Result<Vec<Upload>, Fail> {
    files
        .iter()
        .map(|(field, f)| {
            let bytes = match &f.content {
                FileContent::Text(t) => session.render(t)?.into_bytes(),
                FileContent::Bytes(b) => b.clone(),
            };
            Ok(Upload {
                field: field.clone(),
                file_name: f.file_name.clone(),
                content_type: f.content_type.clone(),
                bytes,
            })
        })
        .collect()
}

/// Whether `url` is at or under the configured IdP prefix.
pub fn under(url: &url::Url, prefix: &str) -> bool {
    url.as_str().starts_with(prefix)
        || url::Url::parse(prefix)
            .is_ok_and(|p| p.origin() == url.origin() && url.path().starts_with(p.path().trim_end_matches('/')))
}

/// The login's own request headers, rendered.
pub fn login_headers(s: &Session, login: &crate::config::form::LoginConfig) -> Result<Vec<(String, String)>, Fail> {
    login
        .headers
        .iter()
        .map(|(k, v)| Ok((k.clone(), s.render(v)?)))
        .collect()
}

pub fn has_param(u: &url::Url, name: &str) -> bool {
    u.query_pairs().any(|(k, _)| k == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DRUPAL: &str = r#"<html><body>
<form id="webform-submission-kontakt-form" action="/kontakt?x=1" method="post" enctype="multipart/form-data">
  <input type="text" name="name" value="">
  <input type="email" name="email">
  <textarea name="message">pre</textarea>
  <select name="topic"><option value="a">A</option><option value="b" selected>B</option></select>
  <input type="checkbox" name="consent" value="1" checked>
  <input type="checkbox" name="newsletter" value="1">
  <input type="radio" name="r" value="x"><input type="radio" name="r" value="y" checked>
  <div style="display:none"><input type="text" name="url" value=""></div>
  <input type="file" name="files[attachment]">
  <input type="hidden" name="form_build_id" value="form-abc">
  <input type="hidden" name="form_id" value="webform_submission_kontakt_form">
  <input type="text" name="disabled" value="x" disabled>
  <input type="submit" name="op" value="Send">
  <input type="submit" name="op2" value="Other">
</form></body></html>"#;

    #[test]
    fn reads_a_form_like_a_browser() {
        let html = Html::parse_document(DRUPAL);
        let form = html.select(&sel("form")).next().expect("form");
        let f = read_form(&form);
        assert!(f.method_post && f.multipart);
        let get = |k: &str| f.fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("form_build_id"), Some("form-abc"));
        assert_eq!(get("message"), Some("pre"));
        assert_eq!(get("topic"), Some("b"));
        assert_eq!(get("consent"), Some("1"));
        assert_eq!(get("newsletter"), None);
        assert_eq!(get("r"), Some("y"));
        assert_eq!(get("url"), Some(""), "the honeypot is sent empty");
        assert_eq!(get("op"), Some("Send"));
        assert_eq!(get("op2"), None, "only the first submit button counts");
        assert_eq!(get("disabled"), None);
        assert_eq!(f.file_fields, vec!["files[attachment]".to_string()]);
        assert!(f.password_fields.is_empty());
    }

    #[test]
    fn broken_html_is_read_without_panics() {
        let broken = "<form method=post action='/x'><input type=hidden name=a value=1><input name=b \
                      <select name=c><option>one<textarea name=d>open<form><<<>>&#xZZ;\u{0}</p></div>";
        let html = Html::parse_document(broken);
        let form = html.select(&sel("form")).next().expect("form");
        let f = read_form(&form);
        assert!(f.method_post);
        assert!(f.fields.iter().any(|(k, v)| k == "a" && v == "1"), "{:?}", f.fields);
        for cut in (0..broken.len()).filter(|i| broken.is_char_boundary(*i)) {
            let html = Html::parse_document(&broken[..cut]);
            for form in html.select(&sel("form")) {
                let _ = read_form(&form);
            }
        }
    }

    #[test]
    fn urls_shown_without_query() {
        let u = Url::parse("https://idp.example:8443/sso?SAMLRequest=abc#frag").expect("url");
        assert_eq!(show_url(&u), "https://idp.example:8443/sso?…");
    }

    #[test]
    fn spots_auto_submit_pages_only() {
        let mut s = Session::new(BTreeMap::new()).expect("session");
        let page = |body: &str| Page {
            url: Url::parse("http://127.0.0.1/x").expect("url"),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.to_string(),
        };
        s.page = Some(page(
            r#"<body onload="document.forms[0].submit()"><form method="post" action="http://127.0.0.1/acs">
            <input type="hidden" name="SAMLResponse" value="PHNhbWw+"><input type="hidden" name="RelayState" value="/k">
            <noscript><input type="submit" value="Continue"></noscript></form></body>"#,
        ));
        match s.auto_submit_form() {
            Ok(Some((m, u, Body::Form(f)))) => {
                assert_eq!(m, Method::POST);
                assert_eq!(u.as_str(), "http://127.0.0.1/acs");
                assert_eq!(f[0], ("SAMLResponse".to_string(), "PHNhbWw+".to_string()));
            }
            other => panic!("{other:?}"),
        }
        s.page = Some(page(DRUPAL));
        assert!(matches!(s.auto_submit_form(), Ok(None)));
        s.page = Some(page("<form><input type=hidden name=a value=b></form>"));
        assert!(
            matches!(s.auto_submit_form(), Ok(None)),
            "a hidden field alone is not a protocol form"
        );
    }

    const CONSENT: &str = r#"<html><body><h1>Authorize postcanary?</h1>
<form method="post" action="/o/authorize/">
  <input type="hidden" name="csrfmiddlewaretoken" value="t">
  <input type="hidden" name="state" value="st1">
  <input type="hidden" name="client_id" value="c">
  <input type="submit" class="btn" value="Cancel"/>
  <input type="submit" class="btn btn-primary" name="allow" value="Authorize"/>
</form></body></html>"#;

    fn page(body: &str) -> Page {
        Page {
            url: Url::parse("https://idp.kommune.example/o/authorize/?client_id=c").expect("url"),
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.to_string(),
        }
    }

    #[test]
    fn a_consent_page_with_buttons_is_never_auto_submitted() {
        let mut s = Session::new(BTreeMap::new()).expect("session");
        s.page = Some(page(CONSENT));
        assert!(
            matches!(s.auto_submit_form(), Ok(None)),
            "Cancel/Authorize must not be pressed blindly"
        );
        // The same hidden protocol field with a single visible button and no script: not either.
        s.page = Some(page(
            r#"<form method=post action="/cb"><input type=hidden name=state value=x><button>Continue</button></form>"#,
        ));
        assert!(matches!(s.auto_submit_form(), Ok(None)));
        // A script that submits the form sends no button.
        s.page = Some(page(
            r#"<body onload="document.forms[0].submit()"><form method=post action="/cb"><input type=hidden name=code value=x><input type=submit name=go value=Go></form></body>"#,
        ));
        match s.auto_submit_form() {
            Ok(Some((_, _, Body::Form(f)))) => assert_eq!(f, vec![("code".to_string(), "x".to_string())]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_named_button_is_pressed_by_text_name_value_or_css() {
        let html = Html::parse_document(CONSENT);
        let form = html.select(&sel("form")).next().expect("form");
        let first = read_form(&form);
        assert!(
            first.fields.iter().all(|(k, _)| k != "allow"),
            "the first button (Cancel) has no name"
        );
        assert_eq!(
            button_list(&first.buttons),
            "\"Cancel\", \"Authorize\" (allow=Authorize)"
        );
        for spec in [
            "Authorize",
            "text:authorize",
            "allow=Authorize",
            "css:input.btn-primary",
        ] {
            let b = Button::parse(spec).expect("button");
            let f = read_form_with(&form, Press::This(&b));
            assert!(
                f.fields.contains(&("allow".to_string(), "Authorize".to_string())),
                "{spec}: {:?}",
                f.fields
            );
        }
        let mut s = Session::new(BTreeMap::new()).expect("session");
        s.page = Some(page(CONSENT));
        let b = Button::parse("Godkend").expect("button");
        let e = submit_request(&s, &form, &[], &[], false, Some(&b)).expect_err("no such button");
        assert!(e.detail.contains("its buttons: \"Cancel\""), "{}", e.detail);
    }

    #[test]
    fn several_values_replace_a_checkbox_group_and_multi_selects_send_all_selected() {
        let html = Html::parse_document(
            r#"<form method=post><input type=checkbox name=topic value=a checked><input type=checkbox name=topic value=b>
            <select name=areas multiple><option value=x selected>X</option><option value=y selected>Y</option><option value=z>Z</option></select>
            <input type=hidden name=after value=1></form>"#,
        );
        let form = html.select(&sel("form")).next().expect("form");
        let mut f = read_form(&form).fields;
        let areas: Vec<&str> = f
            .iter()
            .filter(|(k, _)| k == "areas")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(areas, ["x", "y"]);
        override_fields(
            &mut f,
            &[
                ("topic".into(), "b".into()),
                ("topic".into(), "c".into()),
                ("new".into(), "n".into()),
            ],
        );
        let names: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(names, ["topic=b", "topic=c", "areas=x", "areas=y", "after=1", "new=n"]);
    }

    #[test]
    fn requests_carry_origin_referer_and_sec_fetch_like_a_browser() {
        let from = Url::parse("https://www.kommune.example/kontakt?x=1#top").expect("url");
        let same = Url::parse("https://www.kommune.example/kontakt/send").expect("url");
        let sibling = Url::parse("https://login.kommune.example/sso").expect("url");
        let other = Url::parse("https://idp.example.net/sso").expect("url");
        let plain = Url::parse("http://www.kommune.example/x").expect("url");
        assert_eq!(
            referrer(&from, &same).as_deref(),
            Some("https://www.kommune.example/kontakt?x=1")
        );
        assert_eq!(referrer(&from, &other).as_deref(), Some("https://www.kommune.example/"));
        assert_eq!(referrer(&from, &plain), None, "no referrer on a downgrade");
        assert_eq!(fetch_site(Some(&from), &same), "same-origin");
        assert_eq!(fetch_site(Some(&from), &sibling), "same-site");
        assert_eq!(fetch_site(Some(&from), &other), "cross-site");
        assert_eq!(fetch_site(None, &other), "none");
        let nav = Nav {
            initiator: Some(from.clone()),
            user: true,
            tainted: false,
            site: "same-origin",
        };
        let get = |h: &[(&str, String)], k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
        let h = browser_headers(&nav, &Method::POST, &same);
        assert_eq!(get(&h, "origin").as_deref(), Some("https://www.kommune.example"));
        assert_eq!(get(&h, "sec-fetch-user").as_deref(), Some("?1"));
        assert!(get(&h, "accept").is_some_and(|a| a.starts_with("text/html")));
        let h = browser_headers(&nav, &Method::GET, &same);
        assert_eq!(get(&h, "origin"), None, "a navigation GET sends no Origin");
        let tainted = Nav {
            tainted: true,
            ..nav.clone()
        };
        let h = browser_headers(&tainted, &Method::POST, &same);
        assert_eq!(get(&h, "origin").as_deref(), Some("null"));
        let scripted = Nav { user: false, ..nav };
        assert_eq!(
            get(&browser_headers(&scripted, &Method::POST, &same), "sec-fetch-user"),
            None
        );
    }

    #[test]
    fn the_gist_of_a_page_is_its_visible_text() {
        let p = page(
            "<html><head><title>403 Forbidden</title><style>h1{color:red}</style><script>var x=1;</script></head>\
             <body><h1>Forbidden (403)</h1><p>CSRF verification failed. Request aborted.</p></body></html>",
        );
        assert_eq!(
            p.gist(200),
            "403 Forbidden Forbidden (403) CSRF verification failed. Request aborted."
        );
        assert!(p.gist(20).ends_with('…'));
        assert_eq!(says(&page("")), "");
    }
}
