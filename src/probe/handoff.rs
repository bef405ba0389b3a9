//! The hand-off check, for logins that cannot be automated (production
//! MitID through NemLog-in): start at the service, stop where it hands the
//! citizen to the IdP, and check that hand-off instead of logging in. It
//! must go to the configured IdP (the seed incident's forms slipped when the
//! login path moved), carry a well-formed, signed AuthnRequest for the right
//! ACS and level of assurance, and the IdP's metadata must still list that
//! endpoint with signing certificates that are not about to expire.

use std::io::Read;

use base64::Engine;
use reqwest::Method;
use url::Url;

use crate::config::form::{public_key_from_pem, LoginConfig, LoginKind};

use super::http::{has_param, login_headers, login_opts, read_form, sel, show_url, under, Body, Fail, Session};

/// Hops followed on the service's side before the hand-off.
const MAX_SP_HOPS: usize = 10;
/// Largest inflated AuthnRequest accepted (a real one is a few KiB).
const MAX_REQUEST: u64 = 256 * 1024;
/// How far an AuthnRequest's IssueInstant may be from now.
const MAX_SKEW_SECS: i64 = 10 * 60;

const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
const DS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// Where the service handed over, and with what.
#[derive(Debug, Clone)]
pub struct Handoff {
    /// The IdP URL with its query (the redirect binding's parameters).
    pub target: Url,
    /// The decoded AuthnRequest XML (SAML only).
    pub request_xml: Option<String>,
    /// The redirect binding's raw query, for signature checking.
    pub redirect_signed: bool,
}

pub async fn check(s: &mut Session, login: &LoginConfig) -> Result<String, Fail> {
    let headers = login_headers(s, login)?;
    let mut url = s.resolve(&s.render(&login.start)?)?;
    let handoff = find_handoff(s, &mut url, login, &headers).await?;
    let target = &handoff.target;
    if !under(target, &login.idp) {
        return Err(Fail::refused(format!(
            "login path changed: the service hands the login to {}, expected the IdP at {}",
            show_url(target),
            login.idp
        )));
    }
    let mut facts = vec![format!("hand-off to {}", show_url(target))];
    match login.kind {
        LoginKind::Saml => {
            let xml = handoff
                .request_xml
                .as_deref()
                .ok_or_else(|| Fail::refused("no SAMLRequest in the hand-off"))?;
            facts.extend(inspect_authn_request(
                xml,
                target,
                login,
                chrono::Utc::now().timestamp(),
            )?);
            facts.push(check_signature(&handoff, xml, login)?);
        }
        LoginKind::Oidc => facts.extend(inspect_authorization_request(target, login)?),
        LoginKind::Password => {}
    }
    // The IdP must answer the hand-off; a 5xx there fails citizens as surely as a wrong address.
    s.fetch(
        Method::GET,
        target.clone(),
        Body::None,
        &headers,
        login_opts(login, true, false),
    )
    .await
    .map_err(|f| Fail {
        detail: format!("the IdP: {}", f.detail),
        ..f
    })?;
    if let Some(page) = &s.page {
        if page.status.is_server_error() || page.status.as_u16() == 404 {
            return Err(Fail::refused(format!(
                "the IdP answered the hand-off with HTTP {} at {}",
                page.status.as_u16(),
                show_url(&page.url)
            )));
        }
    }
    if let Some(pem) = &login.sp_certificate {
        facts.push(cert_days_left(
            "the service's signing certificate",
            pem_der(pem)?.as_slice(),
            login,
        )?);
    }
    if let Some(md) = &login.metadata {
        let url = s.resolve(md)?;
        s.fetch(Method::GET, url, Body::None, &headers, login_opts(login, true, false))
            .await
            .map_err(|f| Fail {
                detail: format!("IdP metadata: {}", f.detail),
                ..f
            })?;
        let page = s.page.as_ref().ok_or_else(|| Fail::ours("no metadata page"))?;
        if !page.status.is_success() {
            return Err(Fail::refused(format!(
                "IdP metadata: HTTP {} at {}",
                page.status.as_u16(),
                show_url(&page.url)
            )));
        }
        let body = page.body.clone();
        facts.extend(check_metadata(&body, target, login, chrono::Utc::now().timestamp())?);
    }
    let detail = facts.join("; ");
    s.note(detail.clone());
    Ok(detail)
}

/// Walks the service's redirects until one leaves for the IdP carrying a
/// login request (HTTP-Redirect), or a page posts one (HTTP-POST binding).
async fn find_handoff(
    s: &mut Session,
    url: &mut Url,
    login: &LoginConfig,
    headers: &[(String, String)],
) -> Result<Handoff, Fail> {
    for _ in 0..MAX_SP_HOPS {
        let page = s
            .fetch(
                Method::GET,
                url.clone(),
                Body::None,
                headers,
                login_opts(login, false, false),
            )
            .await?;
        let status = page.status;
        if status.is_redirection() {
            let location = page
                .headers
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .ok_or_else(|| Fail::refused(format!("HTTP {status} without a Location at {}", show_url(url))))?;
            let next = s.resolve(&location)?;
            if has_param(&next, "SAMLRequest") {
                let raw = param(&next, "SAMLRequest").unwrap_or_default();
                let xml = inflate_request(&raw)?;
                let signed = has_param(&next, "Signature") && has_param(&next, "SigAlg");
                return Ok(Handoff {
                    target: next,
                    request_xml: Some(xml),
                    redirect_signed: signed,
                });
            }
            if has_param(&next, "response_type") && has_param(&next, "client_id") {
                return Ok(Handoff {
                    target: next,
                    request_xml: None,
                    redirect_signed: false,
                });
            }
            *url = next;
            continue;
        }
        if status.is_success() {
            // HTTP-POST binding: a form carrying the SAMLRequest.
            let html = page.html();
            for form in html.select(&sel("form")) {
                let filled = read_form(&form);
                if let Some((_, v)) = filled.fields.iter().find(|(k, _)| k == "SAMLRequest") {
                    let target = s.resolve(form.value().attr("action").unwrap_or(""))?;
                    let xml = decode_b64(v)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .map_err(|e| Fail::refused(format!("the posted SAMLRequest is not base64: {e}")))?;
                    return Ok(Handoff {
                        target,
                        request_xml: Some(xml),
                        redirect_signed: false,
                    });
                }
            }
        }
        return Err(Fail::refused(format!(
            "no hand-off to an IdP: the service answered HTTP {} at {}",
            status.as_u16(),
            show_url(url)
        )));
    }
    Err(Fail::refused(format!(
        "no hand-off to an IdP within {MAX_SP_HOPS} redirects (last {})",
        show_url(url)
    )))
}

fn param(u: &Url, name: &str) -> Option<String> {
    u.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
}

fn decode_b64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    let cleaned: String = s.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(cleaned)
}

/// HTTP-Redirect binding: base64 of a raw DEFLATE stream.
pub fn inflate_request(b64: &str) -> Result<String, Fail> {
    let bytes = decode_b64(b64).map_err(|e| Fail::refused(format!("the SAMLRequest is not base64: {e}")))?;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(bytes.as_slice())
        .take(MAX_REQUEST)
        .read_to_end(&mut out)
        .map_err(|e| Fail::refused(format!("the SAMLRequest is not DEFLATE-compressed: {e}")))?;
    String::from_utf8(out).map_err(|_| Fail::refused("the SAMLRequest is not UTF-8"))
}

/// Checks an AuthnRequest against the login's expectations; returns facts
/// for the evidence.
pub fn inspect_authn_request(xml: &str, target: &Url, login: &LoginConfig, now: i64) -> Result<Vec<String>, Fail> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| Fail::refused(format!("the SAMLRequest is not well-formed XML: {e}")))?;
    let root = doc.root_element();
    if root.tag_name().name() != "AuthnRequest" || root.tag_name().namespace() != Some(SAMLP) {
        return Err(Fail::refused(format!(
            "the SAMLRequest is a <{}>, not a SAML 2.0 AuthnRequest",
            root.tag_name().name()
        )));
    }
    let mut facts = Vec::new();
    if root.attribute("ID").is_none_or(str::is_empty) {
        return Err(Fail::refused("the AuthnRequest has no ID"));
    }
    if root.attribute("Version") != Some("2.0") {
        return Err(Fail::refused("the AuthnRequest is not Version=\"2.0\""));
    }
    match root.attribute("IssueInstant").map(chrono::DateTime::parse_from_rfc3339) {
        Some(Ok(t)) => {
            let skew = (t.timestamp() - now).abs();
            if skew > MAX_SKEW_SECS {
                return Err(Fail::refused(format!(
                    "the AuthnRequest's IssueInstant {} is {} minutes off (a cached request or a wrong clock)",
                    t.to_rfc3339(),
                    skew / 60
                )));
            }
        }
        _ => return Err(Fail::refused("the AuthnRequest has no valid IssueInstant")),
    }
    if let Some(dest) = root.attribute("Destination") {
        let bare = format!("{}://{}{}", target.scheme(), host_port(target), target.path());
        if dest != bare {
            return Err(Fail::refused(format!(
                "the AuthnRequest's Destination {dest:?} is not where it was sent ({bare})"
            )));
        }
    }
    let issuer = root
        .children()
        .find(|n| n.has_tag_name((SAML, "Issuer")))
        .and_then(|n| n.text())
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Fail::refused("the AuthnRequest has no Issuer"))?;
    facts.push(format!("issuer {issuer}"));
    let acs = root.attribute("AssertionConsumerServiceURL");
    if let Some(want) = &login.acs {
        match acs {
            Some(a) if a == want => facts.push("ACS as configured".into()),
            Some(a) => {
                return Err(Fail::refused(format!(
                    "the AuthnRequest sends the answer to {a:?}, expected ACS {want:?}"
                )))
            }
            None => return Err(Fail::refused("the AuthnRequest names no AssertionConsumerServiceURL")),
        }
    }
    if let Some(want) = &login.loa {
        let asked: Vec<&str> = root
            .descendants()
            .filter(|n| n.has_tag_name((SAML, "AuthnContextClassRef")))
            .filter_map(|n| n.text())
            .map(str::trim)
            .collect();
        if !asked.contains(&want.as_str()) {
            return Err(Fail::refused(if asked.is_empty() {
                format!("the AuthnRequest asks for no level of assurance, expected {want}")
            } else {
                format!("the AuthnRequest asks for {}, expected {want}", asked.join(", "))
            }));
        }
        facts.push(format!("LoA {}", want.rsplit('/').next().unwrap_or(want)));
    }
    Ok(facts)
}

fn host_port(u: &Url) -> String {
    match u.port() {
        Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
        None => u.host_str().unwrap_or("").to_string(),
    }
}

fn check_signature(h: &Handoff, xml: &str, login: &LoginConfig) -> Result<String, Fail> {
    let posted_signature = xml.contains(DS) && xml.contains("SignatureValue");
    if h.redirect_signed {
        let Some(pem) = &login.sp_certificate else {
            return Ok("signed (redirect binding; no sp_certificate to verify with)".into());
        };
        let key = public_key_from_pem(pem).map_err(Fail::ours)?;
        verify_redirect_signature(h.target.query().unwrap_or(""), &key).map_err(Fail::refused)?;
        return Ok("signature verified".into());
    }
    if posted_signature {
        let Some(pem) = &login.sp_certificate else {
            return Ok("signed (POST binding; no sp_certificate to verify with)".into());
        };
        verify_posted_signature(xml, pem).map_err(Fail::refused)?;
        return Ok("signature verified (POST binding, XML-DSig)".into());
    }
    if login.sp_certificate.is_some() {
        // A configured certificate is never left unused.
        return Err(Fail::refused(
            "the AuthnRequest is not signed, but sp_certificate is configured to verify its signature",
        ));
    }
    if login.require_signed {
        return Err(Fail::refused("the AuthnRequest is not signed"));
    }
    Ok("unsigned (allowed by require_signed = false)".into())
}

/// In a login (not a hand-off check): the AuthnRequest the service sent on
/// the way to the IdP must carry a signature that verifies with the
/// configured `sp_certificate` (redirect binding: the query's signature;
/// POST binding: the enveloped XML signature).
pub fn verify_sent_request(
    hops: &[super::http::Hop],
    posted: Option<&String>,
    cert_pem: &[u8],
) -> Result<String, Fail> {
    if let Some(hop) = hops.iter().find(|h| has_param(&h.url, "SAMLRequest")) {
        let key = public_key_from_pem(cert_pem).map_err(Fail::ours)?;
        if !has_param(&hop.url, "Signature") {
            return Err(Fail::refused(
                "the AuthnRequest is not signed, but sp_certificate is configured to verify its signature",
            ));
        }
        verify_redirect_signature(hop.url.query().unwrap_or(""), &key).map_err(Fail::refused)?;
        return Ok("the AuthnRequest's signature verified (redirect binding)".into());
    }
    let Some(b64) = posted else {
        return Err(Fail::refused(
            "no SAMLRequest on the way to the IdP to verify with sp_certificate",
        ));
    };
    let xml = decode_b64(b64)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .map_err(|e| Fail::refused(format!("the posted SAMLRequest is not base64: {e}")))?;
    if !(xml.contains(DS) && xml.contains("SignatureValue")) {
        return Err(Fail::refused(
            "the AuthnRequest is not signed, but sp_certificate is configured to verify its signature",
        ));
    }
    verify_posted_signature(&xml, cert_pem).map_err(Fail::refused)?;
    Ok("the AuthnRequest's signature verified (POST binding, XML-DSig)".into())
}

/// The certificate's public key as a `PUBLIC KEY` (SubjectPublicKeyInfo) PEM.
fn spki_pem(cert_pem: &[u8]) -> Result<String, String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(cert_pem).map_err(|e| format!("sp_certificate is not PEM: {e}"))?;
    let cert = p
        .parse_x509()
        .map_err(|e| format!("sp_certificate is not an X.509 certificate: {e}"))?;
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.public_key().raw);
    let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END PUBLIC KEY-----\n");
    Ok(out)
}

/// Verifies the enveloped XML signature (XML-DSig; exclusive C14N, RSA-SHA256
/// or stronger, as the library's default policy allows) of a POST-binding
/// AuthnRequest with the service's certificate, and that it covers the
/// request itself (its `ID`), not some other element.
pub fn verify_posted_signature(xml: &str, cert_pem: &[u8]) -> Result<(), String> {
    use xml_sec::xmldsig::{DsigStatus, FailureReason};
    let key = spki_pem(cert_pem)?;
    let id = roxmltree::Document::parse(xml)
        .ok()
        .and_then(|d| d.root_element().attribute("ID").map(str::to_string))
        .ok_or("the signed AuthnRequest has no ID")?;
    let result = xml_sec::xmldsig::verify_signature_with_pem_key(xml, &key, false)
        .map_err(|e| format!("the AuthnRequest's XML signature cannot be verified: {e}"))?;
    match result.status {
        DsigStatus::Valid => {}
        DsigStatus::Invalid(FailureReason::SignatureMismatch) => {
            return Err("the AuthnRequest's XML signature does not verify with sp_certificate".into())
        }
        DsigStatus::Invalid(FailureReason::ReferenceDigestMismatch { .. }) => {
            return Err("the AuthnRequest was changed after it was signed (its digest does not match)".into())
        }
        DsigStatus::Invalid(reason) => return Err(format!("the AuthnRequest's XML signature is invalid: {reason:?}")),
        _ => return Err("the AuthnRequest's XML signature was not checked".into()),
    }
    let want = format!("#{id}");
    if !result
        .signed_info_references
        .iter()
        .any(|r| r.status == DsigStatus::Valid && (r.uri == want || r.uri.is_empty()))
    {
        let uris: Vec<&str> = result.signed_info_references.iter().map(|r| r.uri.as_str()).collect();
        return Err(format!(
            "the XML signature does not cover the AuthnRequest {id:?} (it signs {})",
            uris.join(", ")
        ));
    }
    Ok(())
}

/// Verifies the HTTP-Redirect binding signature: over the query's own
/// encoded `SAMLRequest=..&RelayState=..&SigAlg=..`, in that order.
pub fn verify_redirect_signature(raw_query: &str, public_key_der: &[u8]) -> Result<(), String> {
    let part = |name: &str| {
        raw_query
            .split('&')
            .find(|p| p.split('=').next() == Some(name))
            .map(str::to_string)
    };
    let mut signed = vec![part("SAMLRequest").ok_or("no SAMLRequest")?];
    if let Some(r) = part("RelayState") {
        signed.push(r);
    }
    let alg_part = part("SigAlg").ok_or("the request is not signed (no SigAlg)")?;
    signed.push(alg_part);
    let signed = signed.join("&");
    let q = |name: &str| {
        url::form_urlencoded::parse(raw_query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let alg = q("SigAlg").unwrap_or_default();
    let sig = q("Signature").ok_or("the request is not signed (no Signature)")?;
    let sig = decode_b64(&sig).map_err(|e| format!("the Signature is not base64: {e}"))?;
    let scheme: &dyn ring::signature::VerificationAlgorithm = match alg.as_str() {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
        "http://www.w3.org/2000/09/xmldsig#rsa-sha1" => {
            return Err("the request is signed with RSA-SHA1, which OIOSAML 3 no longer allows".into())
        }
        other => return Err(format!("unsupported signature algorithm {other:?}")),
    };
    ring::signature::UnparsedPublicKey::new(scheme, public_key_der)
        .verify(signed.as_bytes(), &sig)
        .map_err(|_| "the AuthnRequest's signature does not verify with the service's certificate".to_string())
}

fn pem_der(pem: &[u8]) -> Result<Vec<u8>, Fail> {
    x509_parser::pem::parse_x509_pem(pem)
        .map(|(_, p)| p.contents)
        .map_err(|e| Fail::ours(format!("sp_certificate is not PEM: {e}")))
}

/// Fails if the certificate expires within `cert_min_days`.
fn cert_days_left(what: &str, der: &[u8], login: &LoginConfig) -> Result<String, Fail> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Fail::refused(format!("{what} is not an X.509 certificate: {e}")))?;
    let days = (cert.validity().not_after.timestamp() - chrono::Utc::now().timestamp()) / 86_400;
    if days < i64::from(login.cert_min_days) {
        return Err(Fail::refused(format!(
            "{what} ({}) expires {} — in {days} days (cert_min_days = {})",
            cert.subject(),
            cert.validity().not_after,
            login.cert_min_days
        )));
    }
    Ok(format!("{what} valid {days} more days"))
}

fn oidc_param(u: &Url, name: &str) -> Option<String> {
    param(u, name)
}

fn inspect_authorization_request(target: &Url, login: &LoginConfig) -> Result<Vec<String>, Fail> {
    let mut facts = Vec::new();
    match oidc_param(target, "response_type").as_deref() {
        Some("code") => facts.push("authorization code flow".into()),
        other => {
            return Err(Fail::refused(format!(
                "the authorization request asks for response_type {other:?}, expected \"code\""
            )))
        }
    }
    if !oidc_param(target, "scope").is_some_and(|s| s.split(' ').any(|x| x == "openid")) {
        return Err(Fail::refused("the authorization request has no `openid` scope"));
    }
    if let Some(want) = &login.acs {
        match oidc_param(target, "redirect_uri") {
            Some(r) if &r == want => facts.push("redirect_uri as configured".into()),
            Some(r) => {
                return Err(Fail::refused(format!(
                    "the authorization request returns to {r:?}, expected {want:?}"
                )))
            }
            None => return Err(Fail::refused("the authorization request has no redirect_uri")),
        }
    }
    if let Some(want) = &login.loa {
        let acr = oidc_param(target, "acr_values").unwrap_or_default();
        if !acr.split(' ').any(|a| a == want) {
            return Err(Fail::refused(format!(
                "the authorization request asks for acr_values {acr:?}, expected {want}"
            )));
        }
        facts.push(format!("LoA {}", want.rsplit('/').next().unwrap_or(want)));
    }
    Ok(facts)
}

/// Checks IdP metadata: still valid, the hand-off target is one of its SSO
/// endpoints, and some signing certificate outlives `cert_min_days`.
pub fn check_metadata(xml: &str, target: &Url, login: &LoginConfig, now: i64) -> Result<Vec<String>, Fail> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| Fail::refused(format!("IdP metadata is not well-formed XML: {e}")))?;
    let idp = doc
        .descendants()
        .find(|n| n.has_tag_name((MD, "IDPSSODescriptor")))
        .ok_or_else(|| Fail::refused("IdP metadata has no IDPSSODescriptor"))?;
    let mut facts = Vec::new();
    for n in idp.ancestors().filter(|n| n.is_element()) {
        if let Some(v) = n.attribute("validUntil") {
            match chrono::DateTime::parse_from_rfc3339(v) {
                Ok(t) if t.timestamp() < now => {
                    return Err(Fail::refused(format!("IdP metadata expired (validUntil {v})")))
                }
                Ok(_) => {}
                Err(_) => return Err(Fail::refused(format!("IdP metadata has a bad validUntil {v:?}"))),
            }
        }
    }
    let bare = format!("{}://{}{}", target.scheme(), host_port(target), target.path());
    let endpoints: Vec<&str> = idp
        .children()
        .filter(|n| n.has_tag_name((MD, "SingleSignOnService")))
        .filter_map(|n| n.attribute("Location"))
        .collect();
    if !endpoints.contains(&bare.as_str()) {
        return Err(Fail::refused(format!(
            "the hand-off goes to {bare}, which the IdP's metadata does not list (it lists {})",
            endpoints.join(", ")
        )));
    }
    facts.push("SSO endpoint in IdP metadata".into());
    let mut best: Option<(i64, String)> = None;
    let mut soonest: Option<(i64, String, String)> = None;
    for kd in idp.children().filter(|n| n.has_tag_name((MD, "KeyDescriptor"))) {
        if kd.attribute("use").is_some_and(|u| u != "signing") {
            continue;
        }
        for c in kd.descendants().filter(|n| n.has_tag_name((DS, "X509Certificate"))) {
            let Some(text) = c.text() else { continue };
            let der = decode_b64(text)
                .map_err(|e| Fail::refused(format!("IdP metadata: a certificate is not base64: {e}")))?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| Fail::refused(format!("IdP metadata: a certificate does not parse: {e}")))?;
            let not_after = cert.validity().not_after;
            let days = (not_after.timestamp() - now) / 86_400;
            let subject = cert.subject().to_string();
            if best.as_ref().is_none_or(|(d, _)| days > *d) {
                best = Some((days, subject.clone()));
            }
            if soonest.as_ref().is_none_or(|(d, _, _)| days < *d) {
                soonest = Some((days, subject, not_after.to_string()));
            }
        }
    }
    let Some((days, _)) = best else {
        return Err(Fail::refused("IdP metadata has no signing certificate"));
    };
    if days < i64::from(login.cert_min_days) {
        let (d, subject, when) = soonest.unwrap_or((days, String::new(), String::new()));
        return Err(Fail::refused(format!(
            "the IdP's signing certificate ({subject}) expires {when} — in {d} days (cert_min_days = {})",
            login.cert_min_days
        )));
    }
    facts.push(format!("IdP signing certificate valid {days} more days"));
    Ok(facts)
}

#[cfg(test)]
mod tests;
