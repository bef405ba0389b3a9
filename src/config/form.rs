//! Form channels and logins: the declarative steps of a `kind = "form"`
//! channel (`[[channel.step]]`) and the reusable `[[login]]` flows they call.
//!
//! Everything a step can go wrong on at run time that is knowable now is
//! checked here: CSS selectors parse, URLs are absolute http(s) (plain http
//! only on loopback), every `{{variable}}` is a built-in or was extracted by
//! an earlier step, and a step does exactly one thing.

use std::time::Duration;

use super::loader::{base_dir, Loader, Origin};
pub(super) use super::login::{build_logins, RawLogin};
pub use super::login::{public_key_from_pem, LoginConfig, LoginKind};
pub(super) use super::step_list::{build_step_lists, RawStep, RawStepList, StepList};
use super::step_list::{expand, report, Src, StatusList};
use super::template::{build_fields, check_url_template, template_vars, valid_var, DEFAULT_STEP_TIMEOUT, MAX_STEPS};
pub use super::template::{check_selector, check_url, Button, Extract, FieldValue, Template, BUILTIN_VARS};
use super::values::HumanDuration;

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

// ---------------------------------------------------------------------------
// Raw TOML.

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
    use std::collections::BTreeMap;

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
