//! `[[login]]`: the reusable login flows form steps call (SAML, OIDC,
//! password, simulator), checked when the config loads.

// IMPORTS
use super::loader::base_dir;
use super::loader::Loader;
use super::loader::Origin;
use super::template::build_fields;
use super::template::check_selector;
use super::template::check_url;
use super::template::check_url_template;
use super::template::template_vars;
use super::template::Button;
use super::template::FieldValue;
use super::template::RawFieldValue;
use super::template::Template;
use super::template::BUILTIN_VARS;
use super::template::DEFAULT_STEP_TIMEOUT;
use super::values::HumanDuration;
use super::values::Secret;
use super::values::SecretRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

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

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogin {
    pub(super) name: String,
    pub(super) kind: LoginKind,
    pub(super) start: String,
    pub(super) idp: String,
    pub(super) username: Option<SecretRef>,
    pub(super) password: Option<SecretRef>,
    pub(super) username_field: Option<String>,
    pub(super) password_field: Option<String>,
    pub(super) form: Option<String>,
    /// Fields to set on the IdP's login form; `env:`/`file:` values are secrets.
    #[serde(default)]
    pub(super) fields: BTreeMap<String, RawFieldValue>,
    /// Extra request headers for every request of the login.
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    /// Buttons to press on intermediate pages (consent, "continue", account
    /// choice): text, `name=value` or `css:SELECTOR`, tried in order.
    #[serde(default, rename = "continue")]
    pub(super) continue_with: Vec<String>,
    /// Fields to set on an intermediate page's form (e.g. the account to choose).
    #[serde(default)]
    pub(super) continue_fields: BTreeMap<String, RawFieldValue>,
    /// A PEM file of extra CA certificates (an internal CA), added to the built-in roots.
    pub(super) ca_file: Option<String>,
    pub(super) acs: Option<String>,
    pub(super) loa: Option<String>,
    pub(super) require_signed: Option<bool>,
    /// A path (relative to the config file): the certificate is public, not a secret.
    pub(super) sp_certificate: Option<String>,
    pub(super) metadata: Option<String>,
    pub(super) cert_min_days: Option<u32>,
    pub(super) timeout: Option<HumanDuration>,
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
            if public_key_from_pem(pem).is_err() {
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

/// The RSA public key (PKCS#1 DER) of a PEM certificate.
pub fn public_key_from_pem(pem: &[u8]) -> Result<Vec<u8>, String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem).map_err(|e| format!("not PEM: {e}"))?;
    let cert = p.parse_x509().map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != "1.2.840.113549.1.1.1" {
        return Err("the certificate's key is not RSA".into());
    }
    Ok(spki.subject_public_key.data.to_vec())
}
