//! What a page publishes: e-mail addresses (mailto: links, plain text,
//! obfuscated spellings), HTML forms (action, method, fields, hand-off to a
//! login) and the links to follow. Pure functions over bytes; the HTML
//! parser (html5ever through `scraper`) takes malformed markup as a browser
//! does and decodes character references, so `&#64;` is an `@` here.

use std::sync::LazyLock;

use regex::Regex;
use scraper::{Html, Selector};
use url::Url;

/// How an address was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum How {
    Mailto,
    Text,
    Obfuscated,
    Pdf,
    Office,
}

impl How {
    pub fn as_str(self) -> &'static str {
        match self {
            How::Mailto => "mailto",
            How::Text => "text",
            How::Obfuscated => "obfuscated",
            How::Pdf => "pdf",
            How::Office => "office",
        }
    }
}

/// One HTML form as the page declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormFacts {
    /// Resolved action, without query or fragment.
    pub action: String,
    pub method: String,
    /// Field names (with `type` for inputs), in document order.
    pub fields: Vec<String>,
    /// Why this form hands off to a login, if it does.
    pub handoff: Option<String>,
}

/// Everything read from one HTML page.
#[derive(Debug, Default)]
pub struct PageFacts {
    pub addresses: Vec<(String, How)>,
    pub forms: Vec<FormFacts>,
    /// Links to follow (http/https, fragment removed), in document order.
    pub links: Vec<Url>,
    /// Links to a login at a known identity provider (never followed).
    pub login_links: Vec<String>,
}

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9æøåäöü._%+\-]+@(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}\b")
        .unwrap_or_else(|e| panic!("built-in pattern: {e}"))
});

/// Obfuscated spellings and what they stand for. Case-insensitive except
/// the spaced capitals (`navn AT kommune DOT dk`), which would otherwise
/// turn ordinary Danish and English words into separators.
static DEOBFUSCATE: LazyLock<Vec<(Regex, &'static str)>> = LazyLock::new(|| {
    [
        (r"(?i)\s*[\[\(\{<]\s*(?:at|snabel-?a|@)\s*[\]\)\}>]\s*", "@"),
        (r"(?i)\s*[\[\(\{<]\s*(?:dot|punktum|prik|\.)\s*[\]\)\}>]\s*", "."),
        (r"\s+AT\s+", "@"),
        (r"\s+DOT\s+", "."),
        (r"\s*@{1,}\s*", "@"),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).unwrap_or_else(|e| panic!("built-in pattern: {e}")), r))
    .collect()
});

/// "Top-level domains" that are really file names (`logo@2x.png`).
const FILE_SUFFIXES: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "css", "js", "ico", "pdf", "avif",
];

/// Hosts of the identity providers a public form may hand off to (the
/// domain and every host below it).
pub const IDP_HOSTS: &[&str] = &["nemlog-in.dk", "mitid.dk", "mitid-erhverv.dk", "nemid.nu"];

/// Normalizes one address: lowercase, no surrounding dots; `None` when it is not one.
pub fn normalize_address(raw: &str) -> Option<String> {
    let a = raw.trim().trim_matches('.').to_lowercase();
    let (local, domain) = a.rsplit_once('@')?;
    let local = local.trim_start_matches('.');
    if local.is_empty() || local.len() > 64 || domain.len() > 253 || local.contains("..") {
        return None;
    }
    let tld = domain.rsplit('.').next()?;
    if FILE_SUFFIXES.contains(&tld) {
        return None;
    }
    lettre::Address::new(local, domain).ok()?;
    Some(format!("{local}@{domain}"))
}

/// Addresses written plainly in `text`.
pub fn plain_addresses(text: &str) -> Vec<String> {
    EMAIL
        .find_iter(text)
        .filter_map(|m| normalize_address(m.as_str()))
        .collect()
}

/// The text with obfuscated `@` and `.` spelled out.
pub fn deobfuscate(text: &str) -> String {
    let mut out = text.to_string();
    for (re, with) in DEOBFUSCATE.iter() {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

/// Addresses in free text: plain ones as `plain`, the rest (found only once
/// obfuscations are undone) as [`How::Obfuscated`].
pub fn text_addresses(text: &str, plain: How) -> Vec<(String, How)> {
    let mut out: Vec<(String, How)> = Vec::new();
    let direct = plain_addresses(text);
    for a in &direct {
        if !out.iter().any(|(x, _)| x == a) {
            out.push((a.clone(), plain));
        }
    }
    for a in plain_addresses(&deobfuscate(text)) {
        if !out.iter().any(|(x, _)| *x == a) {
            out.push((a, How::Obfuscated));
        }
    }
    out
}

/// The addresses of a `mailto:` URL: percent-decoded, `?subject=…` and the
/// like dropped, several recipients split on commas.
pub fn mailto_addresses(href: &str) -> Vec<String> {
    let Some(rest) = href
        .trim()
        .get(..7)
        .filter(|p| p.eq_ignore_ascii_case("mailto:"))
        .and_then(|_| href.trim().get(7..))
    else {
        return Vec::new();
    };
    let to = rest.split('?').next().unwrap_or("");
    let decoded = percent_encoding::percent_decode_str(to).decode_utf8_lossy();
    decoded
        .split([',', ';'])
        .filter_map(|a| normalize_address(a.trim()))
        .collect()
}

/// Whether `host` is a known IdP host (or one of `extra`), or below one.
pub fn is_idp_host(host: &str, extra: &[String]) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    IDP_HOSTS
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .any(|d| h == d || h.ends_with(&format!(".{d}")))
}

/// A URL that starts a login: never followed by the crawler.
pub fn looks_like_login(u: &Url, extra_idp: &[String]) -> bool {
    if u.host_str().is_some_and(|h| is_idp_host(h, extra_idp)) {
        return true;
    }
    if u.query_pairs().any(|(k, _)| {
        let k = k.to_ascii_lowercase();
        k == "samlrequest" || k == "samlresponse"
    }) {
        return true;
    }
    u.path_segments().into_iter().flatten().any(|seg| {
        let s = seg.to_ascii_lowercase();
        matches!(
            s.as_str(),
            "login"
                | "logon"
                | "signin"
                | "sign-in"
                | "log-ind"
                | "logind"
                | "saml"
                | "saml2"
                | "sso"
                | "oidc"
                | "authorize"
        )
    })
}

/// Without query and fragment.
pub fn bare_url(u: &Url) -> String {
    let mut u = u.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap_or_else(|e| panic!("built-in selector {s}: {e}"))
}

static A: LazyLock<Selector> = LazyLock::new(|| sel("a[href], area[href]"));
static FRAMES: LazyLock<Selector> = LazyLock::new(|| sel("iframe[src], frame[src]"));
static FORM: LazyLock<Selector> = LazyLock::new(|| sel("form"));
static FIELDS: LazyLock<Selector> = LazyLock::new(|| sel("input, select, textarea, button[formaction]"));
static BASE: LazyLock<Selector> = LazyLock::new(|| sel("base[href]"));

/// Reads one HTML page fetched from `url`.
pub fn html_page(body: &str, url: &Url, extra_idp: &[String]) -> PageFacts {
    let doc = Html::parse_document(body);
    let base = doc
        .select(&BASE)
        .next()
        .and_then(|b| b.value().attr("href"))
        .and_then(|h| url.join(h).ok())
        .unwrap_or_else(|| url.clone());
    let mut facts = PageFacts::default();
    let push_addr = |facts: &mut PageFacts, a: String, how: How| {
        if !facts.addresses.iter().any(|(x, _)| *x == a) {
            facts.addresses.push((a, how));
        }
    };
    for a in doc.select(&A) {
        let Some(href) = a.value().attr("href") else { continue };
        let addrs = mailto_addresses(href);
        if !addrs.is_empty() || href.trim_start().to_ascii_lowercase().starts_with("mailto:") {
            for addr in addrs {
                push_addr(&mut facts, addr, How::Mailto);
            }
            continue;
        }
        push_link(&mut facts, &base, href, extra_idp);
    }
    for f in doc.select(&FRAMES) {
        if let Some(src) = f.value().attr("src") {
            push_link(&mut facts, &base, src, extra_idp);
        }
    }
    // The text a reader sees, text nodes separated so that neighbouring
    // cells do not run together; obfuscation handling joins "navn @ x.dk".
    let mut text = String::with_capacity(body.len() / 2);
    for t in doc.root_element().text() {
        text.push_str(t);
        text.push(' ');
    }
    for (addr, how) in text_addresses(&text, How::Text) {
        push_addr(&mut facts, addr, how);
    }
    for form in doc.select(&FORM) {
        let action_attr = form.value().attr("action").unwrap_or("").trim();
        let action = if action_attr.is_empty() {
            Some(url.clone())
        } else {
            base.join(action_attr).ok()
        };
        let Some(action) = action else { continue };
        let method = form
            .value()
            .attr("method")
            .map(|m| m.trim().to_ascii_uppercase())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| "GET".into());
        let mut fields = Vec::new();
        let mut handoff = None;
        if let Some(h) = action.host_str().filter(|h| is_idp_host(h, extra_idp)) {
            handoff = Some(format!("posts to the identity provider {h}"));
        }
        for f in form.select(&FIELDS) {
            let name = f.value().attr("name").unwrap_or("");
            if let Some(fa) = f.value().attr("formaction").and_then(|fa| base.join(fa).ok()) {
                if let Some(h) = fa.host_str().filter(|h| is_idp_host(h, extra_idp)) {
                    handoff.get_or_insert_with(|| format!("a button posts to the identity provider {h}"));
                }
            }
            if name.is_empty() {
                continue;
            }
            if name.eq_ignore_ascii_case("SAMLRequest") {
                handoff.get_or_insert_with(|| "carries a SAMLRequest".to_string());
            }
            let kind = match f.value().name() {
                "input" => f.value().attr("type").unwrap_or("text").to_ascii_lowercase(),
                other => other.to_string(),
            };
            fields.push(format!("{name} ({kind})"));
        }
        for a in form.select(&A) {
            let target = a.value().attr("href").and_then(|h| base.join(h).ok());
            if let Some(h) = target
                .as_ref()
                .and_then(|t| t.host_str())
                .filter(|h| is_idp_host(h, extra_idp))
            {
                handoff.get_or_insert_with(|| format!("links to the identity provider {h}"));
            }
        }
        let facts_form = FormFacts {
            action: bare_url(&action),
            method,
            fields,
            handoff,
        };
        if !facts.forms.contains(&facts_form) {
            facts.forms.push(facts_form);
        }
    }
    facts
}

fn push_link(facts: &mut PageFacts, base: &Url, href: &str, extra_idp: &[String]) {
    let Ok(mut u) = base.join(href.trim()) else { return };
    if !matches!(u.scheme(), "http" | "https") {
        return;
    }
    u.set_fragment(None);
    if u.host_str().is_some_and(|h| is_idp_host(h, extra_idp)) {
        let b = bare_url(&u);
        if !facts.login_links.contains(&b) {
            facts.login_links.push(b);
        }
        return;
    }
    facts.links.push(u);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mailto_is_decoded_and_stripped() {
        assert_eq!(
            mailto_addresses("mailto:%62orger@Kommune.example?subject=Hej%20der"),
            vec!["borger@kommune.example"]
        );
        assert_eq!(mailto_addresses("MAILTO:a@x.dk,b@x.dk"), vec!["a@x.dk", "b@x.dk"]);
        assert!(mailto_addresses("mailto:?subject=x").is_empty());
        assert!(mailto_addresses("https://x.dk").is_empty());
    }

    #[test]
    fn obfuscations_are_read() {
        let text = "Skriv til navn [at] kommune.dk eller familie (at) kommune (dot) dk, \
                    byg@@kommune.dk, jobs AT kommune DOT dk, post@kommune.dk. Mødet [at] 10.";
        let got = text_addresses(text, How::Text);
        let want = [
            ("byg@kommune.dk", How::Obfuscated),
            ("post@kommune.dk", How::Text),
            ("navn@kommune.dk", How::Obfuscated),
            ("familie@kommune.dk", How::Obfuscated),
            ("jobs@kommune.dk", How::Obfuscated),
        ];
        for (a, how) in want {
            assert!(got.contains(&(a.to_string(), how)), "{a} in {got:?}");
        }
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(plain_addresses("logo@2x.png").is_empty());
    }

    #[test]
    fn forms_and_handoffs() {
        let url = Url::parse("https://www.kommune.example/borger/").unwrap();
        let html = r#"<html><body>
            <a href="mailto:a@kommune.example">a</a> &#106;ob&#64;kommune.example
            <form action="/send" method=post><input name=navn><textarea name=besked></textarea></form>
            <form action="https://login.nemlog-in.dk/sso"><input type=hidden name=x></form>
            <form method="post"><input type=hidden name=SAMLRequest value=abc></form>
            <a href="https://mitid.dk/login">log ind</a><a href="side#top">x</a>
            <div><form action=/a><input name=q"#;
        let f = html_page(html, &url, &[]);
        assert!(f.addresses.contains(&("a@kommune.example".into(), How::Mailto)));
        assert!(f.addresses.contains(&("job@kommune.example".into(), How::Text)));
        assert_eq!(f.forms.len(), 4, "{:?}", f.forms);
        assert_eq!(f.forms[0].action, "https://www.kommune.example/send");
        assert_eq!(f.forms[0].method, "POST");
        assert_eq!(f.forms[0].fields, vec!["navn (text)", "besked (textarea)"]);
        assert!(f.forms[0].handoff.is_none());
        assert!(f.forms[1]
            .handoff
            .as_deref()
            .unwrap_or("")
            .contains("login.nemlog-in.dk"));
        assert_eq!(f.forms[2].handoff.as_deref(), Some("carries a SAMLRequest"));
        assert_eq!(f.login_links, vec!["https://mitid.dk/login"]);
        assert_eq!(f.links.len(), 1);
        assert_eq!(f.links[0].as_str(), "https://www.kommune.example/borger/side");
    }

    #[test]
    fn logins_are_recognised() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(looks_like_login(&u("https://x.dk/saml/login"), &[]));
        assert!(looks_like_login(&u("https://x.dk/a?SAMLRequest=1"), &[]));
        assert!(looks_like_login(&u("https://idp.test/a"), &["idp.test".into()]));
        assert!(!looks_like_login(&u("https://x.dk/kontakt"), &[]));
    }
}
