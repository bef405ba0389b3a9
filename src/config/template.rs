//! What a form step's values are made of: templates with `{{variables}}`,
//! field values (text, lists, `env:`/`file:` secrets), button choices,
//! extractions, and the URL rules every step and login follows.

// IMPORTS
use super::loader::Loader;
use super::values::Secret;
use super::values::SecretRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

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

pub(super) fn template_vars(s: &str) -> Result<Vec<String>, String> {
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

pub(super) fn valid_var(name: &str) -> bool {
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
    pub(super) fn values(&self) -> Vec<&str> {
        match self {
            RawFieldValue::One(s) => vec![s.as_str()],
            RawFieldValue::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Whether a field value is a secret reference rather than text: exactly
/// `env:NAME` or `file:PATH` (a path without spaces or `{{`).
pub(super) fn secret_ref(v: &str) -> Option<Result<SecretRef, String>> {
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
pub(super) fn build_fields(
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

pub(super) const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);
/// Steps per channel; a probe is a short conversation, not a crawl.
pub(super) const MAX_STEPS: usize = 32;

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

pub(super) fn is_loopback_host(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// A URL template is checked as a URL when it has no variables, else its
/// fixed prefix must at least name a scheme.
pub(super) fn check_url_template(t: &str) -> Result<(), String> {
    if t.contains("{{") {
        if t.starts_with("http://") || t.starts_with("https://") || t.starts_with("{{") {
            return Ok(());
        }
        return Err(format!("{t:?} is not an http(s) URL"));
    }
    check_url(t).map(|_| ())
}
