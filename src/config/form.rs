//! Form channels and logins: the declarative steps of a `kind = "form"`
//! channel (`[[channel.step]]`) and the reusable `[[login]]` flows they call.
//!
//! Everything a step can go wrong on at run time that is knowable now is
//! checked here: CSS selectors parse, URLs are absolute http(s) (plain http
//! only on loopback), every `{{variable}}` is a built-in or was extracted by
//! an earlier step, and a step does exactly one thing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::values::{Secret, SecretRef};
use super::{base_dir, HumanDuration, Loader, Origin};

/// Variables every step may use.
pub const BUILTIN_VARS: [&str; 4] = ["token", "channel", "probe_id", "now"];

/// A `{{var}}` template, checked at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(pub String);

impl Template {
    /// The variable names used, in order.
    pub fn vars(&self) -> Result<Vec<String>, String> {
        template_vars(&self.0)
    }

    /// Fills the template; a variable without a value is an error naming it.
    pub fn render(&self, vars: &BTreeMap<String, String>) -> Result<String, String> {
        let mut out = String::with_capacity(self.0.len());
        let mut rest = self.0.as_str();
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").ok_or("unclosed {{")?;
            let name = after[..end].trim();
            match vars.get(name) {
                Some(v) => out.push_str(v),
                None => return Err(format!("no value for {{{{{name}}}}}")),
            }
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn template_vars(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| format!("unclosed `{{{{` in {s:?}"))?;
        let name = after[..end].trim();
        if !valid_var(name) {
            return Err(format!("`{{{{{name}}}}}`: a variable name is letters, digits and _"));
        }
        out.push(name.to_string());
        rest = &after[end + 2..];
    }
    Ok(out)
}

fn valid_var(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Where an extracted value comes from.
#[derive(Debug, Clone)]
pub enum Extract {
    /// A CSS selector on the page; the attribute's value, or the element's text.
    Css { selector: String, attr: Option<String> },
    /// A response header.
    Header(String),
    /// The first capture group (or the whole match) of a regex over the page's text.
    Regex(regex::Regex),
}

impl Extract {
    pub fn parse(spec: &str) -> Result<Extract, String> {
        if let Some(h) = spec.strip_prefix("header:") {
            let h = h.trim();
            if h.is_empty() {
                return Err("`header:` needs a header name".into());
            }
            return Ok(Extract::Header(h.to_ascii_lowercase()));
        }
        if let Some(r) = spec.strip_prefix("regex:") {
            return regex::Regex::new(r)
                .map(Extract::Regex)
                .map_err(|e| format!("invalid regex: {e}"));
        }
        let spec = spec.strip_prefix("css:").unwrap_or(spec).trim();
        // `selector @attr`: the attribute follows the last `@` outside brackets.
        let (selector, attr) = match spec.rfind('@') {
            Some(at) if !spec[at..].contains(']') => {
                let attr = spec[at + 1..].trim();
                if attr.is_empty() || !attr.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:".contains(&b)) {
                    return Err(format!("{:?} after `@` is not an attribute name", attr));
                }
                (spec[..at].trim(), Some(attr.to_string()))
            }
            _ => (spec, None),
        };
        check_selector(selector)?;
        Ok(Extract::Css {
            selector: selector.to_string(),
            attr,
        })
    }
}

/// Checks that a CSS selector parses.
pub fn check_selector(selector: &str) -> Result<(), String> {
    if selector.is_empty() {
        return Err("empty CSS selector".into());
    }
    scraper::Selector::parse(selector)
        .map(|_| ())
        .map_err(|e| format!("invalid CSS selector {selector:?}: {e}"))
}

/// Which submit button to press: by its text (`"Næste"` or `"text:Næste"`),
/// by `name=value` (`"wizard_goto_step=2"`), or by CSS (`"css:button.primary"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Button {
    Text(String),
    NameValue(String, String),
    Css(String),
}

impl Button {
    pub fn parse(spec: &str) -> Result<Button, String> {
        if let Some(css) = spec.strip_prefix("css:") {
            let css = css.trim();
            check_selector(css)?;
            return Ok(Button::Css(css.to_string()));
        }
        if let Some(text) = spec.strip_prefix("text:") {
            let text = text.trim();
            if text.is_empty() {
                return Err("`text:` needs the button's text".into());
            }
            return Ok(Button::Text(text.to_string()));
        }
        if let Some((name, value)) = spec.split_once('=') {
            if !name.is_empty() && !name.contains(char::is_whitespace) {
                return Ok(Button::NameValue(name.to_string(), value.to_string()));
            }
        }
        let text = spec.trim();
        if text.is_empty() {
            return Err("an empty button: give its text, name=value or css:SELECTOR".into());
        }
        Ok(Button::Text(text.to_string()))
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Button::Text(t) => format!("the button {t:?}"),
            Button::NameValue(n, v) => format!("the button {n}={v}"),
            Button::Css(c) => format!("the button matching {c:?}"),
        }
    }
}

/// A field's value: text with `{{variables}}`, or a secret (`env:NAME`,
/// `file:PATH`), which is sent and never shown.
#[derive(Debug, Clone)]
pub enum FieldValue {
    Text(Template),
    Secret(Secret),
}

/// A field in TOML: one value, or several (checkbox groups, multi-selects).
#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(untagged)]
pub(super) enum RawFieldValue {
    One(String),
    Many(Vec<String>),
}

impl RawFieldValue {
    fn values(&self) -> Vec<&str> {
        match self {
            RawFieldValue::One(s) => vec![s.as_str()],
            RawFieldValue::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Whether a field value is a secret reference rather than text: exactly
/// `env:NAME` or `file:PATH` (a path without spaces or `{{`).
fn secret_ref(v: &str) -> Option<Result<SecretRef, String>> {
    let is_env = v
        .strip_prefix("env:")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    let is_file = v
        .strip_prefix("file:")
        .is_some_and(|p| !p.is_empty() && !p.contains(char::is_whitespace) && !p.contains("{{"));
    (is_env || is_file).then(|| v.parse::<SecretRef>())
}

/// Reads a `fields` table: each value checked as a template (with `check`)
/// or resolved as a secret; several values of one name stay in order.
fn build_fields(
    loader: &mut Loader,
    base: &std::path::Path,
    raw: &BTreeMap<String, RawFieldValue>,
    mut report: impl FnMut(&mut Loader, String),
    mut check: impl FnMut(&mut Loader, &str, &str),
) -> Vec<(String, FieldValue)> {
    let mut out = Vec::new();
    for (k, v) in raw {
        for value in v.values() {
            match secret_ref(value) {
                Some(Ok(r)) => match loader.resolve(&r, base) {
                    Ok(s) => out.push((k.clone(), FieldValue::Secret(s))),
                    Err(m) => report(loader, format!("field {k:?}: {m}")),
                },
                Some(Err(m)) => report(loader, format!("field {k:?}: {m}")),
                None => {
                    check(loader, k, value);
                    out.push((k.clone(), FieldValue::Text(Template(value.to_string()))));
                }
            }
        }
    }
    out
}

/// A file to upload in a multipart POST.
#[derive(Debug, Clone)]
pub struct FileField {
    pub file_name: String,
    pub content_type: String,
    pub content: FileContent,
}

#[derive(Debug, Clone)]
pub enum FileContent {
    /// Text, with `{{variables}}` (so the token can ride in the attachment too).
    Text(Template),
    /// Bytes read from a file at load time.
    Bytes(Vec<u8>),
}

/// What a step does. Exactly one per step.
#[derive(Debug, Clone)]
pub enum Action {
    Get(Template),
    Post(Template),
    /// Fill and submit the HTML form matching the selector on the current page.
    Submit(String),
    /// Run a `[[login]]` flow.
    Login(String),
    /// Check the hand-off to the IdP of a `[[login]]` without logging in.
    Handoff(String),
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Get(_) => "get",
            Action::Post(_) => "post",
            Action::Submit(_) => "submit",
            Action::Login(_) => "login",
            Action::Handoff(_) => "handoff",
        }
    }
}

/// One step of a form channel.
#[derive(Debug, Clone)]
pub struct Step {
    /// Shown in evidence and verdicts: the configured name or "step N (verb)".
    pub name: String,
    pub action: Action,
    /// Values to send; a name may repeat (several values of one field).
    pub fields: Vec<(String, FieldValue)>,
    /// The submit button to press (`submit` steps); default: the form's first.
    pub button: Option<Button>,
    pub files: Vec<(String, FileField)>,
    pub headers: Vec<(String, Template)>,
    /// POST as multipart/form-data (also when `files` is set or the form says so).
    pub multipart: bool,
    pub follow_redirects: bool,
    /// Submit pages that are nothing but an auto-submitting form (SAML POST
    /// binding, OIDC form_post).
    pub auto_submit: bool,
    pub extract: Vec<(String, Extract)>,
    /// Allowed final status codes; empty means any 2xx.
    pub expect_status: Vec<u16>,
    pub expect_url: Option<String>,
    pub expect_text: Option<String>,
    /// Text that means the site refused (an error banner) even with a 200.
    pub refuse_text: Option<String>,
    /// Where the receipt number is on the resulting page.
    pub receipt: Option<Extract>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LoginKind {
    /// SAML 2.0 SP-initiated (OIOSAML 3 / NemLog-in).
    Saml,
    /// OpenID Connect authorization code flow.
    Oidc,
    /// A plain username/password form (e.g. the MitID simulator of test environments).
    Password,
}

impl LoginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginKind::Saml => "saml",
            LoginKind::Oidc => "oidc",
            LoginKind::Password => "password",
        }
    }
}

/// A reusable login flow (`[[login]]`).
#[derive(Debug, Clone)]
pub struct LoginConfig {
    pub name: String,
    pub kind: LoginKind,
    /// Where the flow starts (the service's login link or the protected form).
    pub start: Template,
    /// The login must pass through this IdP (URL prefix). A hand-off anywhere
    /// else is the "login path changed" failure.
    pub idp: String,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    pub username_field: Option<String>,
    pub password_field: Option<String>,
    /// Selector of the IdP's login form; default: the form holding the password field, else the first form.
    pub form: Option<String>,
    /// Other fields to fill on the IdP's form.
    pub fields: Vec<(String, FieldValue)>,
    /// Extra request headers for every request of the flow.
    pub headers: Vec<(String, Template)>,
    /// Buttons to press on intermediate pages (consent, "continue", account
    /// choice), tried in order on each page. A page with visible buttons is
    /// never submitted without one of these.
    pub continue_with: Vec<Button>,
    /// Fields to set on the form of an intermediate page.
    pub continue_fields: Vec<(String, FieldValue)>,
    /// Extra trust anchors for the flow's HTTPS requests.
    pub ca_file: Option<super::ca::CaFile>,
    // Hand-off checks.
    /// The service's assertion consumer service URL (SAML) or redirect URI (OIDC).
    pub acs: Option<String>,
    /// The level of assurance the request must ask for.
    pub loa: Option<String>,
    pub require_signed: bool,
    /// The SP's signing certificate (PEM) to verify a HTTP-Redirect signature with.
    pub sp_certificate: Option<Vec<u8>>,
    /// IdP metadata URL: the hand-off target must be a published SSO endpoint,
    /// and its signing certificates must not expire within `cert_min_days`.
    pub metadata: Option<String>,
    pub cert_min_days: u32,
    pub timeout: Duration,
}

// ---------------------------------------------------------------------------
// Raw TOML.

#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    name: Option<String>,
    get: Option<String>,
    post: Option<String>,
    submit: Option<String>,
    login: Option<String>,
    handoff: Option<String>,
    /// Insert the steps of the `[[step_list]]` of this name.
    #[serde(rename = "use")]
    use_list: Option<String>,
    /// Values of the step list's parameters (with `use`).
    #[serde(default)]
    params: BTreeMap<String, String>,
    #[serde(default)]
    fields: BTreeMap<String, RawFieldValue>,
    /// The submit button to press: its text, `name=value`, or `css:SELECTOR`.
    button: Option<String>,
    #[serde(default)]
    files: BTreeMap<String, RawFile>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    multipart: Option<bool>,
    follow_redirects: Option<bool>,
    auto_submit: Option<bool>,
    #[serde(default)]
    extract: BTreeMap<String, String>,
    expect_status: Option<StatusList>,
    expect_url: Option<String>,
    expect_text: Option<String>,
    refuse_text: Option<String>,
    receipt: Option<String>,
    timeout: Option<HumanDuration>,
}

#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(untagged)]
enum StatusList {
    One(u16),
    Many(Vec<u16>),
}

#[derive(Deserialize, schemars::JsonSchema, Clone)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    content: Option<String>,
    path: Option<String>,
    content_type: Option<String>,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogin {
    name: String,
    kind: LoginKind,
    start: String,
    idp: String,
    username: Option<SecretRef>,
    password: Option<SecretRef>,
    username_field: Option<String>,
    password_field: Option<String>,
    form: Option<String>,
    /// Fields to set on the IdP's login form; `env:`/`file:` values are secrets.
    #[serde(default)]
    fields: BTreeMap<String, RawFieldValue>,
    /// Extra request headers for every request of the login.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Buttons to press on intermediate pages (consent, "continue", account
    /// choice): text, `name=value` or `css:SELECTOR`, tried in order.
    #[serde(default, rename = "continue")]
    continue_with: Vec<String>,
    /// Fields to set on an intermediate page's form (e.g. the account to choose).
    #[serde(default)]
    continue_fields: BTreeMap<String, RawFieldValue>,
    /// A PEM file of extra CA certificates (an internal CA), added to the built-in roots.
    ca_file: Option<String>,
    acs: Option<String>,
    loa: Option<String>,
    require_signed: Option<bool>,
    /// A path (relative to the config file): the certificate is public, not a secret.
    sp_certificate: Option<String>,
    metadata: Option<String>,
    cert_min_days: Option<u32>,
    timeout: Option<HumanDuration>,
}

const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Steps per channel; a probe is a short conversation, not a crawl.
const MAX_STEPS: usize = 32;

/// Checks an absolute http(s) URL (after templating, where it has variables).
/// Plain http is for loopback only, as `tls = "none"` is for mail.
pub fn check_url(u: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("{u:?} is not an absolute URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if is_loopback_host(&parsed) => Ok(parsed),
        "http" => Err(format!(
            "{u:?}: plain http is allowed only for loopback hosts; use https"
        )),
        s => Err(format!("{u:?}: scheme {s:?} is not http(s)")),
    }
}

fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A URL template is checked as a URL when it has no variables, else its
/// fixed prefix must at least name a scheme.
fn check_url_template(t: &str) -> Result<(), String> {
    if t.contains("{{") {
        if t.starts_with("http://") || t.starts_with("https://") || t.starts_with("{{") {
            return Ok(());
        }
        return Err(format!("{t:?} is not an http(s) URL"));
    }
    check_url(t).map(|_| ())
}

pub(super) fn build_logins(loader: &mut Loader, raw: Vec<(Origin, RawLogin)>) -> Vec<LoginConfig> {
    const A: &str = "login";
    let mut out: Vec<LoginConfig> = Vec::new();
    for (origin, r) in raw {
        if r.name.is_empty() {
            loader.err(&origin, A, "name", "a login needs a name");
        } else if out.iter().any(|l| l.name == r.name) {
            loader.err(&origin, A, "name", format!("login {:?} is already defined", r.name));
        }
        if let Err(m) = check_url_template(&r.start) {
            loader.err(&origin, A, "start", m);
        }
        if let Err(m) = check_url(&r.idp) {
            loader.err(&origin, A, "idp", m);
        }
        for (key, v) in [("acs", &r.acs), ("metadata", &r.metadata)] {
            if let Some(u) = v {
                if let Err(m) = check_url(u) {
                    loader.err(&origin, A, key, m);
                }
            }
        }
        for (key, v) in [("form", &r.form)] {
            if let Some(s) = v {
                if let Err(m) = check_selector(s) {
                    loader.err(&origin, A, key, m);
                }
            }
        }
        let check_builtin = |loader: &mut Loader, key: &str, what: String, v: &str| match template_vars(v) {
            Ok(vars) => {
                if let Some(bad) = vars.iter().find(|v| !BUILTIN_VARS.contains(&v.as_str())) {
                    loader.err(&origin, A, key, format!("{what}: unknown variable `{{{{{bad}}}}}`"));
                }
            }
            Err(m) => loader.err(&origin, A, key, format!("{what}: {m}")),
        };
        let mut field_sets = Vec::new();
        for (key, raw) in [("fields", &r.fields), ("continue_fields", &r.continue_fields)] {
            let base = base_dir(&loader.files[origin.file].path);
            field_sets.push(build_fields(
                loader,
                &base,
                raw,
                |loader, m| loader.err(&origin, A, key, m),
                |loader, k, v| check_builtin(loader, key, format!("field {k:?}"), v),
            ));
        }
        let continue_fields = field_sets.pop().unwrap_or_default();
        let fields = field_sets.pop().unwrap_or_default();
        let mut headers = Vec::new();
        for (k, v) in &r.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                loader.err(&origin, A, "headers", format!("{k:?} is not a header name"));
            }
            check_builtin(loader, "headers", format!("header {k:?}"), v);
            headers.push((k.clone(), Template(v.clone())));
        }
        let mut continue_with = Vec::new();
        for spec in &r.continue_with {
            match Button::parse(spec) {
                Ok(b) => continue_with.push(b),
                Err(m) => loader.err(&origin, A, "continue", format!("{spec:?}: {m}")),
            }
        }
        let username = r
            .username
            .as_ref()
            .and_then(|s| loader.secret(&origin, A, "username", s));
        let password = r
            .password
            .as_ref()
            .and_then(|s| loader.secret(&origin, A, "password", s));
        let base = base_dir(&loader.files[origin.file].path);
        let ca_file = r
            .ca_file
            .as_deref()
            .and_then(|p| match super::ca::CaFile::read(&base, p) {
                Ok(c) => Some(c),
                Err(m) => {
                    loader.err(&origin, A, "ca_file", m);
                    None
                }
            });
        let sp_certificate = r
            .sp_certificate
            .as_ref()
            .and_then(|p| match std::fs::read(base.join(p)) {
                Ok(b) => Some(b),
                Err(e) => {
                    loader.err(&origin, A, "sp_certificate", format!("cannot read {p:?}: {e}"));
                    None
                }
            });
        if let Some(pem) = &sp_certificate {
            if crate::probe::handoff::public_key_from_pem(pem).is_err() {
                loader.err(
                    &origin,
                    A,
                    "sp_certificate",
                    "not a PEM X.509 certificate with an RSA key (-----BEGIN CERTIFICATE-----)",
                );
            }
        }
        out.push(LoginConfig {
            name: r.name,
            kind: r.kind,
            start: Template(r.start),
            idp: r.idp,
            username,
            password,
            username_field: r.username_field,
            password_field: r.password_field,
            form: r.form,
            fields,
            headers,
            continue_with,
            continue_fields,
            ca_file,
            acs: r.acs,
            loa: r.loa,
            require_signed: r.require_signed.unwrap_or(true),
            sp_certificate,
            metadata: r.metadata,
            cert_min_days: r.cert_min_days.unwrap_or(30),
            timeout: r
                .timeout
                .map(HumanDuration::as_duration)
                .unwrap_or(DEFAULT_STEP_TIMEOUT),
        });
    }
    out
}

/// A named list of steps used by many channels (`[[step_list]]`).
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStepList {
    name: String,
    /// Parameter names: written `{{name}}` in the steps, given by `params` where the list is used.
    #[serde(default)]
    params: Vec<String>,
    #[serde(default)]
    step: Vec<RawStep>,
}

/// A checked `[[step_list]]`, expanded where a step says `use`.
pub(super) struct StepList {
    origin: Origin,
    name: String,
    params: Vec<String>,
    steps: Vec<RawStep>,
}

pub(super) fn build_step_lists(loader: &mut Loader, raw: Vec<(Origin, RawStepList)>) -> Vec<StepList> {
    const A: &str = "step_list";
    let mut out: Vec<StepList> = Vec::new();
    for (origin, r) in raw {
        if r.name.is_empty() {
            loader.err(&origin, A, "name", "a step list needs a name");
        } else if out.iter().any(|l| l.name == r.name) {
            loader.err(&origin, A, "name", format!("step list {:?} is already defined", r.name));
        }
        for p in &r.params {
            if !valid_var(p) || BUILTIN_VARS.contains(&p.as_str()) {
                loader.err(
                    &origin,
                    A,
                    "params",
                    format!("{p:?} cannot be a parameter name (letters, digits, _; not a built-in)"),
                );
            }
        }
        if r.step.is_empty() {
            loader.err(&origin, A, "name", "a step list needs at least one [[step_list.step]]");
        }
        for (i, st) in r.step.iter().enumerate() {
            if st.use_list.is_some() {
                let line = loader.files[origin.file].sub_array_key_line(A, origin.index, "step", i, "use");
                let e = loader.files[origin.file].error(
                    line,
                    Some(&format!("step_list.step[{}].use", i + 1)),
                    "a step list cannot use another step list",
                );
                loader.errors.push(e);
            }
        }
        out.push(StepList {
            origin,
            name: r.name,
            params: r.params,
            steps: r.step,
        });
    }
    out
}

/// Replaces `{{param}}` by its value wherever it is written, leaving other `{{variables}}`.
fn subst(s: &str, params: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => match params.get(after[..end].trim()) {
                Some(v) => out.push_str(v),
                None => out.push_str(&rest[start..start + 2 + end + 2]),
            },
            None => {
                out.push_str(&rest[start..]);
                return out;
            }
        }
        rest = &after[after.find("}}").map_or(after.len(), |e| e + 2)..];
    }
    out.push_str(rest);
    out
}

impl RawStep {
    /// This step with the parameters of a step list filled in.
    fn with_params(&self, p: &BTreeMap<String, String>) -> RawStep {
        let o = |v: &Option<String>| v.as_ref().map(|s| subst(s, p));
        let m = |v: &BTreeMap<String, String>| v.iter().map(|(k, s)| (subst(k, p), subst(s, p))).collect();
        RawStep {
            name: o(&self.name),
            get: o(&self.get),
            post: o(&self.post),
            submit: o(&self.submit),
            login: o(&self.login),
            handoff: o(&self.handoff),
            use_list: self.use_list.clone(),
            params: self.params.clone(),
            fields: self
                .fields
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        RawFieldValue::One(s) => RawFieldValue::One(subst(s, p)),
                        RawFieldValue::Many(l) => RawFieldValue::Many(l.iter().map(|s| subst(s, p)).collect()),
                    };
                    (subst(k, p), v)
                })
                .collect(),
            button: o(&self.button),
            files: self
                .files
                .iter()
                .map(|(k, f)| {
                    let f = RawFile {
                        name: subst(&f.name, p),
                        content: o(&f.content),
                        path: o(&f.path),
                        content_type: o(&f.content_type),
                    };
                    (subst(k, p), f)
                })
                .collect(),
            headers: m(&self.headers),
            multipart: self.multipart,
            follow_redirects: self.follow_redirects,
            auto_submit: self.auto_submit,
            extract: m(&self.extract),
            expect_status: self.expect_status.clone(),
            expect_url: o(&self.expect_url),
            expect_text: o(&self.expect_text),
            refuse_text: o(&self.refuse_text),
            receipt: o(&self.receipt),
            timeout: self.timeout,
        }
    }
}

/// Where a step was written: the channel's own `i`-th step, or the `step`-th
/// step of a step list used by the channel's `used_at`-th step.
#[derive(Clone, Copy)]
enum Src<'a> {
    Channel(usize),
    List {
        list: &'a StepList,
        step: usize,
        used_at: usize,
    },
}

fn report(loader: &mut Loader, origin: &Origin, src: Src, key: &str, m: String) {
    match src {
        Src::Channel(i) => loader.err_step(origin, i, key, m),
        Src::List { list, step, used_at } => {
            let use_line =
                loader.files[origin.file].sub_array_key_line("channel", origin.index, "step", used_at, "use");
            let used = match use_line {
                Some(l) => format!("{}:{l}", loader.files[origin.file].path.display()),
                None => loader.files[origin.file].path.display().to_string(),
            };
            let f = &loader.files[list.origin.file];
            let line = f.sub_array_key_line("step_list", list.origin.index, "step", step, key);
            let e = f.error(
                line,
                Some(&format!("step_list.step[{}].{key}", step + 1)),
                format!("step list {:?} (used at {used}): {m}", list.name),
            );
            loader.errors.push(e);
        }
    }
}

/// Replaces each `use` step by the steps of its list, parameters filled in.
fn expand<'a>(
    loader: &mut Loader,
    origin: &Origin,
    raw: Vec<RawStep>,
    lists: &'a [StepList],
) -> Vec<(RawStep, Src<'a>)> {
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let Some(name) = &r.use_list else {
            if !r.params.is_empty() {
                loader.err_step(origin, i, "params", "`params` go with `use`".to_string());
            }
            out.push((r, Src::Channel(i)));
            continue;
        };
        let others = [
            ("get", r.get.is_some()),
            ("post", r.post.is_some()),
            ("submit", r.submit.is_some()),
            ("login", r.login.is_some()),
            ("handoff", r.handoff.is_some()),
        ];
        if let Some((key, _)) = others.iter().find(|(_, set)| *set) {
            loader.err_step(origin, i, key, format!("a step does one thing; found use and {key}"));
            continue;
        }
        let Some(list) = lists.iter().find(|l| &l.name == name) else {
            loader.err_step(origin, i, "use", format!("no [[step_list]] named {name:?}"));
            continue;
        };
        let mut ok = true;
        for p in &list.params {
            if !r.params.contains_key(p) {
                loader.err_step(
                    origin,
                    i,
                    "params",
                    format!("step list {name:?} needs the parameter {p:?}"),
                );
                ok = false;
            }
        }
        for k in r.params.keys() {
            if !list.params.contains(k) {
                loader.err_step(
                    origin,
                    i,
                    "params",
                    format!(
                        "step list {name:?} has no parameter {k:?} (it has: {})",
                        list.params.join(", ")
                    ),
                );
                ok = false;
            }
        }
        if !ok {
            continue;
        }
        for (k, st) in list.steps.iter().enumerate() {
            out.push((
                st.with_params(&r.params),
                Src::List {
                    list,
                    step: k,
                    used_at: i,
                },
            ));
        }
    }
    out
}

/// Builds a channel's steps. `handoff_only` is `expect = "handoff"`: the
/// last step, and only it, must be a hand-off check.
pub(super) fn build_steps(
    loader: &mut Loader,
    origin: &Origin,
    raw: Vec<RawStep>,
    logins: &[String],
    lists: &[StepList],
    handoff_only: bool,
) -> Option<Vec<Step>> {
    let before = loader.errors.len();
    if raw.is_empty() {
        loader.err(
            origin,
            "channel",
            "kind",
            "kind = \"form\" needs at least one [[channel.step]]",
        );
        return None;
    }
    let raw = expand(loader, origin, raw, lists);
    if raw.len() > MAX_STEPS {
        loader.err(
            origin,
            "channel",
            "kind",
            format!("at most {MAX_STEPS} steps per channel (step lists counted out)"),
        );
    }
    let mut known: Vec<String> = BUILTIN_VARS.iter().map(|s| s.to_string()).collect();
    let mut steps = Vec::new();
    let count = raw.len();
    let mut has_page = false;
    for (i, (r, src)) in raw.into_iter().enumerate() {
        let file = match src {
            Src::Channel(_) => origin.file,
            Src::List { list, .. } => list.origin.file,
        };
        let base = base_dir(&loader.files[file].path);
        let err = |loader: &mut Loader, key: &str, m: String| report(loader, origin, src, key, m);
        let actions: Vec<(&str, Action)> = [
            r.get.clone().map(|u| ("get", Action::Get(Template(u)))),
            r.post.clone().map(|u| ("post", Action::Post(Template(u)))),
            r.submit.clone().map(|s| ("submit", Action::Submit(s))),
            r.login.clone().map(|s| ("login", Action::Login(s))),
            r.handoff.clone().map(|s| ("handoff", Action::Handoff(s))),
        ]
        .into_iter()
        .flatten()
        .collect();
        let action = match actions.len() {
            1 => actions.into_iter().next().map(|(_, a)| a),
            0 => {
                err(
                    loader,
                    "name",
                    "a step needs one of get, post, submit, login, handoff, use".into(),
                );
                None
            }
            _ => {
                let names: Vec<&str> = actions.iter().map(|(n, _)| *n).collect();
                err(
                    loader,
                    names[1],
                    format!("a step does one thing; found {}", names.join(" and ")),
                );
                None
            }
        };
        let Some(action) = action else { continue };
        let check_vars = |loader: &mut Loader, key: &str, what: &str, s: &str, known: &[String]| match template_vars(s)
        {
            Ok(vars) => {
                for v in vars {
                    if !known.contains(&v) {
                        report(
                            loader,
                            origin,
                            src,
                            key,
                            format!(
                                "{what}: `{{{{{v}}}}}` is neither built in ({}) nor extracted by an earlier step",
                                BUILTIN_VARS.join(", ")
                            ),
                        );
                    }
                }
            }
            Err(m) => report(loader, origin, src, key, format!("{what}: {m}")),
        };
        match &action {
            Action::Get(t) | Action::Post(t) => {
                let key = action.verb();
                if let Err(m) = check_url_template(&t.0) {
                    err(loader, key, m);
                }
                check_vars(loader, key, "URL", &t.0, &known);
                has_page = true;
            }
            Action::Submit(sel) => {
                if let Err(m) = check_selector(sel) {
                    err(loader, "submit", m);
                }
                if !has_page {
                    err(
                        loader,
                        "submit",
                        "`submit` needs a page: put a `get` (or a login) before it".into(),
                    );
                }
            }
            Action::Login(name) | Action::Handoff(name) => {
                let key = action.verb();
                if !logins.contains(name) {
                    err(loader, key, format!("no [[login]] named {name:?}"));
                }
                has_page = true;
            }
        }
        let is_handoff = matches!(action, Action::Handoff(_));
        if handoff_only && i + 1 == count && !is_handoff {
            err(
                loader,
                action.verb(),
                "expect = \"handoff\": the last step must be a `handoff` check".into(),
            );
        }
        if is_handoff && !(handoff_only && i + 1 == count) {
            err(
                loader,
                "handoff",
                "a `handoff` check ends the probe: it must be the last step of an expect = \"handoff\" channel".into(),
            );
        }
        let fields = build_fields(
            loader,
            &base,
            &r.fields,
            |loader, m| report(loader, origin, src, "fields", m),
            |loader, k, v| check_vars(loader, "fields", &format!("field {k:?}"), v, &known),
        );
        let button = r.button.as_deref().and_then(|b| match Button::parse(b) {
            Ok(b) => Some(b),
            Err(m) => {
                err(loader, "button", m);
                None
            }
        });
        if button.is_some() && !matches!(action, Action::Submit(_)) {
            err(loader, "button", "`button` goes with `submit`".into());
        }
        if !fields.is_empty() && !matches!(action, Action::Post(_) | Action::Submit(_)) {
            err(loader, "fields", "`fields` go with `post` or `submit`".into());
        }
        let mut headers = Vec::new();
        for (k, v) in &r.headers {
            if reqwest::header::HeaderName::from_bytes(k.as_bytes()).is_err() {
                err(loader, "headers", format!("{k:?} is not a header name"));
            }
            check_vars(loader, "headers", &format!("header {k:?}"), v, &known);
            headers.push((k.clone(), Template(v.clone())));
        }
        let mut files = Vec::new();
        for (k, f) in r.files {
            let content = match (f.content, f.path) {
                (Some(text), None) => {
                    check_vars(loader, "files", &format!("file {k:?}"), &text, &known);
                    Some(FileContent::Text(Template(text)))
                }
                (None, Some(p)) => match std::fs::read(base.join(&p)) {
                    Ok(b) => Some(FileContent::Bytes(b)),
                    Err(e) => {
                        err(loader, "files", format!("file {k:?}: cannot read {p:?}: {e}"));
                        None
                    }
                },
                _ => {
                    err(
                        loader,
                        "files",
                        format!("file {k:?}: give exactly one of `content` or `path`"),
                    );
                    None
                }
            };
            if let Some(content) = content {
                files.push((
                    k,
                    FileField {
                        content_type: f.content_type.unwrap_or_else(|| guess_type(&f.name).into()),
                        file_name: f.name,
                        content,
                    },
                ));
            }
        }
        if !files.is_empty() && !matches!(action, Action::Post(_) | Action::Submit(_)) {
            err(loader, "files", "`files` go with `post` or `submit`".into());
        }
        let mut extract = Vec::new();
        for (k, spec) in &r.extract {
            if !valid_var(k) || BUILTIN_VARS.contains(&k.as_str()) {
                err(
                    loader,
                    "extract",
                    format!("{k:?} cannot be a variable name (letters, digits, _; not a built-in)"),
                );
            }
            match Extract::parse(spec) {
                Ok(e) => extract.push((k.clone(), e)),
                Err(m) => err(loader, "extract", format!("{k:?}: {m}")),
            }
        }
        let receipt = r.receipt.as_deref().and_then(|s| match Extract::parse(s) {
            Ok(e) => Some(e),
            Err(m) => {
                err(loader, "receipt", m);
                None
            }
        });
        let expect_status = match r.expect_status {
            None => Vec::new(),
            Some(StatusList::One(s)) => vec![s],
            Some(StatusList::Many(v)) => v,
        };
        if let Some(bad) = expect_status.iter().find(|s| !(100..=599).contains(*s)) {
            err(loader, "expect_status", format!("{bad} is not an HTTP status"));
        }
        let name = r
            .name
            .clone()
            .unwrap_or_else(|| format!("step {} ({})", i + 1, action.verb()));
        known.extend(extract.iter().map(|(k, _)| k.clone()));
        steps.push(Step {
            name,
            multipart: r.multipart.unwrap_or(false) || !files.is_empty(),
            action,
            fields,
            button,
            files,
            headers,
            follow_redirects: r.follow_redirects.unwrap_or(true),
            auto_submit: r.auto_submit.unwrap_or(true),
            extract,
            expect_status,
            expect_url: r.expect_url,
            expect_text: r.expect_text,
            refuse_text: r.refuse_text,
            receipt,
            timeout: r
                .timeout
                .map(HumanDuration::as_duration)
                .unwrap_or(DEFAULT_STEP_TIMEOUT),
        });
    }
    (loader.errors.len() == before).then_some(steps)
}

fn guess_type(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    match lower.rsplit('.').next() {
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_and_name_missing_values() {
        let mut vars = BTreeMap::new();
        vars.insert("token".to_string(), "pc-X".to_string());
        let t = Template("Test {{ token }} / {{token}}".into());
        assert_eq!(t.render(&vars).as_deref(), Ok("Test pc-X / pc-X"));
        assert_eq!(
            Template("{{form_id}}".into()).render(&vars),
            Err("no value for {{form_id}}".to_string())
        );
        assert!(template_vars("{{a b}}").is_err());
        assert!(template_vars("{{open").is_err());
    }

    #[test]
    fn extract_specs() {
        match Extract::parse("input[name=form_build_id] @value") {
            Ok(Extract::Css { selector, attr }) => {
                assert_eq!(selector, "input[name=form_build_id]");
                assert_eq!(attr.as_deref(), Some("value"));
            }
            other => panic!("{other:?}"),
        }
        match Extract::parse("input[name=\"a@b\"]") {
            Ok(Extract::Css { attr: None, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(Extract::parse("header:Location"), Ok(Extract::Header(h)) if h == "location"));
        assert!(matches!(
            Extract::parse("regex:Kvittering: (\\S+)"),
            Ok(Extract::Regex(_))
        ));
        assert!(Extract::parse("regex:(").is_err());
        assert!(Extract::parse("div[[").is_err());
    }

    #[test]
    fn urls_need_https_off_loopback() {
        assert!(check_url("https://www.kommune.example/kontakt").is_ok());
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://localhost/x").is_ok());
        assert!(check_url("http://[::1]:80/").is_ok());
        assert!(check_url("http://www.kommune.example/").is_err());
        assert!(check_url("ftp://127.0.0.1/").is_err());
        assert!(check_url("/relative").is_err());
    }
}
