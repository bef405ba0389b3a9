//! A channel's retention canaries: `retain` (the ages at which a delivered
//! canary is looked up again), where it is kept — the inbox it landed in
//! (the default), an IMAP folder of that inbox (`archive`), or a document
//! or case system reached over HTTP (`[channel.retain_check]`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::ca::CaFile;
use super::loader::{base_dir, Loader, Origin};
use super::values::{HumanDuration, Secret, SecretRef};

/// The longest a retention check may be set to wait for an age (10 years).
const MAX_AGE: Duration = Duration::from_secs(10 * 366 * 86_400);
/// The HTTP check's time limit when none is given.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `[channel.retain_check]` table, as written.
#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetainCheck {
    /// The document's URL; `{token}` is the canary's token as postcanary
    /// shows it (`pc-<ULID>`), `{receipt}` the receipt number the form's
    /// steps kept (a probe without one fails the check as not found).
    pub(super) url: String,
    /// The HTTP status a kept document answers with (default 200).
    pub(super) expect_status: Option<u16>,
    /// Text the kept document's body must contain; `{token}` and
    /// `{receipt}` are substituted.
    pub(super) expect_text: Option<String>,
    /// `"sha256"`: the body's hash at the first check is recorded and every
    /// later check must find the same body.
    pub(super) expect_hash: Option<String>,
    /// Extra request headers; a value `env:NAME` or `file:PATH` is a secret.
    pub(super) headers: Option<BTreeMap<String, String>>,
    /// A PEM file of extra CA certificates for the document system's HTTPS.
    pub(super) ca_file: Option<String>,
    /// How long one check may take (default 30s).
    pub(super) timeout: Option<HumanDuration>,
    /// How long the checks may fail on our side (connection refused,
    /// timeouts, HTTP 5xx, 401/403/407/408/429) before "postcanary degraded"
    /// pages (default 5m, like an inbox's `blind_grace`).
    pub(super) blind_grace: Option<HumanDuration>,
}

/// Where a channel's delivered canaries are kept, and when they are looked up again.
#[derive(Debug, Clone)]
pub struct Retain {
    /// Ages after the canary was found, strictly increasing, each > 0.
    pub ages: Vec<Duration>,
    pub place: RetainPlace,
}

#[derive(Debug, Clone)]
pub enum RetainPlace {
    /// Left where it landed: `after_confirm` leaves it alone.
    Inbox,
    /// Moved (or copied and expunged) into this folder of the channel's
    /// inbox after confirmation, instead of the inbox's `after_confirm`.
    Archive(String),
    /// Looked up in a document system; the mail itself gets the usual `after_confirm`.
    Http(RetainHttp),
}

impl RetainPlace {
    /// The IMAP folder the canary stays in (`None`: the inbox's own
    /// mailbox), or `None` for the HTTP check.
    pub fn folder(&self) -> Option<Option<&str>> {
        match self {
            RetainPlace::Inbox => Some(None),
            RetainPlace::Archive(f) => Some(Some(f)),
            RetainPlace::Http(_) => None,
        }
    }
}

/// An HTTP retention check.
#[derive(Debug, Clone)]
pub struct RetainHttp {
    pub url: String,
    pub expect_status: u16,
    pub expect: HttpExpect,
    pub headers: Vec<(String, HeaderValue)>,
    pub ca_file: Option<CaFile>,
    pub timeout: Duration,
    /// How long checks may fail on our side before "postcanary degraded" pages.
    pub blind_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpExpect {
    /// The status alone.
    Status,
    /// The body contains this (a template of `{token}`, `{receipt}`).
    Text(String),
    /// The body's SHA-256 stays what it was at the first check.
    Sha256,
}

#[derive(Debug, Clone)]
pub enum HeaderValue {
    Plain(String),
    Secret(Secret),
}

impl HeaderValue {
    pub fn expose(&self) -> &str {
        match self {
            HeaderValue::Plain(s) => s,
            HeaderValue::Secret(s) => s.expose(),
        }
    }
}

/// Checks `retain` ages: each positive, strictly increasing, at most 10 years.
pub(super) fn check_ages(ages: &[HumanDuration]) -> Result<Vec<Duration>, String> {
    let mut out: Vec<Duration> = Vec::with_capacity(ages.len());
    for a in ages {
        let d = a.as_duration();
        if d.is_zero() {
            return Err("every age in `retain` must be longer than zero".into());
        }
        if d > MAX_AGE {
            return Err(format!("retain age {a} is longer than ten years"));
        }
        if let Some(prev) = out.last() {
            if d <= *prev {
                return Err(format!(
                    "`retain` ages must increase: {a} comes after {}",
                    HumanDuration(*prev)
                ));
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// What a channel's retention keys say, for [`build_retain`].
pub(super) struct RetainKeys<'a> {
    pub(super) retain: Option<&'a [HumanDuration]>,
    pub(super) default_retain: Option<&'a [HumanDuration]>,
    pub(super) archive: Option<&'a str>,
    pub(super) check: Option<&'a RawRetainCheck>,
    /// The channel's inbox and whether it is a Graph inbox.
    pub(super) inbox: Option<(&'a str, bool)>,
    pub(super) expect_arrival: bool,
}

/// A channel's [`Retain`]; errors name `channel.KEY` (or `channel.retain_check.KEY`).
/// `[defaults] retain` applies to channels that name a place (`archive` or
/// `retain_check`) without their own `retain`.
pub(super) fn build_retain(loader: &mut Loader, origin: &Origin, k: RetainKeys<'_>) -> Option<Retain> {
    const A: &str = "channel";
    let named_place = k.archive.is_some() || k.check.is_some();
    let (ages, key) = match (k.retain, k.default_retain) {
        (Some(a), _) => (a, "retain"),
        (None, Some(d)) if named_place => (d, "retain"),
        (None, _) => {
            if named_place {
                let key = if k.archive.is_some() { "archive" } else { "retain_check" };
                loader.err(
                    origin,
                    A,
                    key,
                    format!("`{key}` needs `retain`, the ages at which the canary is looked up again (e.g. [\"1d\", \"7d\", \"30d\"])"),
                );
            }
            return None;
        }
    };
    let ages = match check_ages(ages) {
        Ok(a) => a,
        Err(m) => {
            loader.err(origin, A, key, m);
            return None;
        }
    };
    if ages.is_empty() {
        // `retain = []` turns the defaults off.
        return None;
    }
    if !k.expect_arrival {
        loader.err(
            origin,
            A,
            "retain",
            "`retain` is for channels whose canary is delivered (expect = \"deliver\" or \"forward\")",
        );
        return None;
    }
    if k.archive.is_some() && k.check.is_some() {
        loader.err(
            origin,
            A,
            "archive",
            "a canary is kept in one place: `archive` or `[channel.retain_check]`, not both",
        );
        return None;
    }
    let place = match (k.archive, k.check) {
        (_, Some(c)) => RetainPlace::Http(build_check(loader, origin, c)?),
        (Some(folder), None) => {
            if folder.trim().is_empty() || folder.contains(['\r', '\n', '"', '\\']) {
                loader.err(
                    origin,
                    A,
                    "archive",
                    format!("archive = {folder:?} is not an IMAP folder name"),
                );
                return None;
            }
            RetainPlace::Archive(folder.to_string())
        }
        (None, None) => RetainPlace::Inbox,
    };
    if let (RetainPlace::Archive(folder), Some((inbox, true))) = (&place, k.inbox) {
        if folder.split('/').any(|p| p.trim().is_empty()) {
            loader.err(
                origin,
                A,
                "archive",
                format!(
                    "archive = {folder:?}: inbox {inbox:?} is a Graph inbox, whose folders are paths of display \
                     names such as \"Arkiv/Postcanary\", without an empty part"
                ),
            );
            return None;
        }
    }
    Some(Retain { ages, place })
}

fn check_err(loader: &mut Loader, origin: &Origin, key: &str, m: impl Into<String>) {
    let line = loader.files[origin.file]
        .sub_table_key_line("channel", origin.index, "retain_check", key)
        .or_else(|| loader.files[origin.file].array_key_line("channel", origin.index, "retain_check"));
    let e = loader.files[origin.file].error(line, Some(&format!("channel.retain_check.{key}")), m);
    loader.errors.push(e);
}

fn build_check(loader: &mut Loader, origin: &Origin, c: &RawRetainCheck) -> Option<RetainHttp> {
    let mut ok = true;
    match url::Url::parse(&c.url.replace("{token}", "t").replace("{receipt}", "r")) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            let loopback = u.host_str().is_some_and(|h| {
                h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback()) || h == "[::1]"
            });
            if u.scheme() == "http" && !loopback {
                check_err(
                    loader,
                    origin,
                    "url",
                    "plain http is accepted only for loopback hosts; use https",
                );
                ok = false;
            }
        }
        Ok(u) => {
            check_err(loader, origin, "url", format!("scheme {:?}: use https", u.scheme()));
            ok = false;
        }
        Err(e) => {
            check_err(loader, origin, "url", format!("invalid URL {:?}: {e}", c.url));
            ok = false;
        }
    }
    for var in braces(&c.url)
        .into_iter()
        .chain(c.expect_text.as_deref().map(braces).unwrap_or_default())
    {
        if var != "token" && var != "receipt" {
            let key = if c.url.contains(&format!("{{{var}}}")) {
                "url"
            } else {
                "expect_text"
            };
            check_err(
                loader,
                origin,
                key,
                format!("`{{{var}}}` is not known here: use {{token}} or {{receipt}}"),
            );
            ok = false;
        }
    }
    let expect_status = c.expect_status.unwrap_or(200);
    if !(100..=599).contains(&expect_status) {
        check_err(
            loader,
            origin,
            "expect_status",
            format!("{expect_status} is not an HTTP status"),
        );
        ok = false;
    }
    let expect = match (&c.expect_text, &c.expect_hash) {
        (Some(_), Some(_)) => {
            check_err(
                loader,
                origin,
                "expect_hash",
                "use `expect_text` or `expect_hash`, not both",
            );
            ok = false;
            HttpExpect::Status
        }
        (Some(t), None) if t.is_empty() => {
            check_err(loader, origin, "expect_text", "expect_text must not be empty");
            ok = false;
            HttpExpect::Status
        }
        (Some(t), None) => HttpExpect::Text(t.clone()),
        (None, Some(h)) if h.eq_ignore_ascii_case("sha256") => HttpExpect::Sha256,
        (None, Some(h)) => {
            check_err(
                loader,
                origin,
                "expect_hash",
                format!("expect_hash = {h:?}: only \"sha256\" is known"),
            );
            ok = false;
            HttpExpect::Status
        }
        (None, None) => HttpExpect::Status,
    };
    let base = base_dir(&loader.files[origin.file].path);
    let mut headers = Vec::new();
    for (name, value) in c.headers.iter().flatten() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            check_err(loader, origin, "headers", format!("{name:?} is not a header name"));
            ok = false;
            continue;
        }
        let v = if value.starts_with("env:") || value.starts_with("file:") {
            match value.parse::<SecretRef>().and_then(|r| loader.resolve(&r, &base)) {
                Ok(s) => HeaderValue::Secret(s),
                Err(m) => {
                    check_err(loader, origin, "headers", format!("header {name:?}: {m}"));
                    ok = false;
                    continue;
                }
            }
        } else {
            HeaderValue::Plain(value.clone())
        };
        if reqwest::header::HeaderValue::from_str(v.expose()).is_err() {
            // Never quote the value: it may be a secret.
            check_err(
                loader,
                origin,
                "headers",
                format!("header {name:?}: the value is not a valid header value"),
            );
            ok = false;
            continue;
        }
        headers.push((name.clone(), v));
    }
    let ca_file = match &c.ca_file {
        None => None,
        Some(p) => match CaFile::read(&base, p) {
            Ok(c) => Some(c),
            Err(m) => {
                check_err(loader, origin, "ca_file", m);
                ok = false;
                None
            }
        },
    };
    let timeout = c.timeout.map(HumanDuration::as_duration).unwrap_or(DEFAULT_TIMEOUT);
    if timeout.is_zero() {
        check_err(loader, origin, "timeout", "timeout must be longer than zero");
        ok = false;
    }
    let blind_grace = c
        .blind_grace
        .map(HumanDuration::as_duration)
        .unwrap_or(super::inbox::DEFAULT_BLIND_GRACE);
    ok.then(|| RetainHttp {
        url: c.url.clone(),
        expect_status,
        expect,
        headers,
        ca_file,
        timeout,
        blind_grace,
    })
}

/// The `{name}` placeholders of a template.
fn braces(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) => {
                out.push(after[..end].to_string());
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    out
}

/// Fills `{token}` and `{receipt}` into a template; `url` percent-encodes
/// them (a receipt number may hold `/` or spaces).
pub fn fill(template: &str, token: &str, receipt: Option<&str>, url: bool) -> Result<String, String> {
    if template.contains("{receipt}") && receipt.is_none() {
        return Err("the probe kept no receipt number for `{receipt}`".into());
    }
    let enc = |s: &str| {
        if url {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        } else {
            s.to_string()
        }
    };
    Ok(template
        .replace("{token}", &enc(token))
        .replace("{receipt}", &enc(receipt.unwrap_or_default())))
}
