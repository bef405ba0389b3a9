//! A municipal form site for the form-channel tests, in-process on loopback.
//! It behaves like a Drupal webform: every form page carries a one-time
//! `form_build_id`, a `form_id` and a session-bound `form_token`, plus a
//! honeypot field hidden by CSS; a stale or missing build id or a filled
//! honeypot gets Drupal's error text with HTTP 200. An accepted submission
//! is mailed by SMTP into the real Postfix (or dropped, to model a broken
//! handler) and answered with a thank-you page and a receipt number.
//!
//! Behind logins: `/mitid/kontakt` (SAML SP, HTTP-Redirect AuthnRequest,
//! optionally signed, SAMLResponse at `/saml/acs`), `/erhverv/kontakt`
//! (OIDC RP, code flow, code exchanged at the provider's token endpoint) and
//! `/borger/kontakt` (the simulator-style username/password form at
//! `/simulator/login`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Multipart, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;

/// What the SP side needs to know about the SAML IdP.
#[derive(Clone, Debug)]
pub struct SamlSp {
    pub idp_sso_url: String,
    pub idp_entity_id: String,
    pub sp_entity_id: String,
    /// PKCS#8 DER of the SP's RSA key: sign the redirect binding when set.
    pub signing_key: Option<Vec<u8>>,
    pub loa: String,
    /// Send the AuthnRequest with the HTTP-POST binding (an auto-submit page),
    /// signed with an enveloped XML signature by `xmlsec1 --sign` (libxmlsec1).
    pub post_binding: Option<PostSigner>,
}

/// The SP's key and certificate (PEM files) for POST-binding signatures.
#[derive(Clone, Debug)]
pub struct PostSigner {
    pub key_pem: std::path::PathBuf,
    pub cert_pem: std::path::PathBuf,
}

/// Signs an AuthnRequest (root `ID` = `id`) with an enveloped RSA-SHA256
/// signature over exclusive C14N, placed after the Issuer as SAML requires.
fn xmlsec_sign(xml: &str, signer: &PostSigner) -> Result<String, String> {
    let sig = r##"<ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:SignedInfo><ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/><ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/><ds:Reference URI="#ID"><ds:Transforms><ds:Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/><ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms><ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><ds:DigestValue/></ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data><ds:X509Certificate/></ds:X509Data></ds:KeyInfo></ds:Signature>"##;
    let id = xml
        .split("ID=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or("no ID")?;
    let template = xml.replacen(
        "</saml:Issuer>",
        &format!("</saml:Issuer>{}", sig.replace("#ID", &format!("#{id}"))),
        1,
    );
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let input = dir.path().join("request.xml");
    std::fs::write(&input, template).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("xmlsec1")
        .arg("--sign")
        .arg("--privkey-pem")
        .arg(format!("{},{}", signer.key_pem.display(), signer.cert_pem.display()))
        .args(["--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:AuthnRequest"])
        .arg(&input)
        .output()
        .map_err(|e| format!("xmlsec1 (apt-get install xmlsec1): {e}"))?;
    if !out.status.success() {
        return Err(format!("xmlsec1 --sign: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Clone, Debug)]
pub struct OidcRp {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub smtp_port: u16,
    /// Where each form's submissions are mailed.
    pub recipient: String,
    pub saml: Option<SamlSp>,
    pub oidc: Option<OidcRp>,
    pub simulator_user: String,
    pub simulator_password: String,
}

#[derive(Default)]
struct Session {
    build_ids: Vec<String>,
    saml_user: Option<String>,
    saml_pending: Option<String>,
    oidc_user: Option<String>,
    oidc_state: Option<String>,
    sim_user: Option<String>,
}

struct Inner {
    opts: Options,
    base: String,
    sessions: HashMap<String, Session>,
    /// Accept-and-drop: the thank-you page is shown, nothing is mailed.
    drop_submissions: bool,
    receipts: u32,
    /// Every accepted submission's fields, for assertions.
    pub accepted: Vec<Vec<(String, String)>>,
    pub refused: Vec<String>,
}

#[derive(Clone)]
struct App(Arc<Mutex<Inner>>);

pub struct FormSite {
    pub addr: SocketAddr,
    app: App,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FormSite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FormSite {
    pub async fn start(opts: Options) -> FormSite {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind form site");
        let addr = listener.local_addr().expect("addr");
        FormSite::start_on(listener, addr, opts).await
    }

    /// For a site whose address must be known before it starts (an IdP
    /// needs the ACS URL): bind first, then start.
    pub async fn start_on(listener: tokio::net::TcpListener, addr: SocketAddr, opts: Options) -> FormSite {
        let app = App(Arc::new(Mutex::new(Inner {
            opts,
            base: format!("http://{addr}"),
            sessions: HashMap::new(),
            drop_submissions: false,
            receipts: 0,
            accepted: Vec::new(),
            refused: Vec::new(),
        })));
        let router = Router::new()
            .route("/kontakt", get(form_page).post(submit))
            .route("/kontakt/tak", get(thanks))
            .route("/mitid/kontakt", get(form_page).post(submit))
            .route("/erhverv/kontakt", get(form_page).post(submit))
            .route("/borger/kontakt", get(form_page).post(submit))
            .route("/saml/acs", post(saml_acs))
            .route("/oidc/callback", get(oidc_callback))
            .route("/simulator/login", get(sim_page).post(sim_login))
            .with_state(app.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        FormSite { addr, app, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_drop_submissions(&self, on: bool) {
        self.app.0.lock().expect("lock").drop_submissions = on;
    }

    /// Points the SAML login at another IdP (the "login path changed" case).
    pub fn set_saml_idp(&self, sso_url: &str) {
        if let Some(s) = self.app.0.lock().expect("lock").opts.saml.as_mut() {
            s.idp_sso_url = sso_url.to_string();
        }
    }

    pub fn set_loa(&self, loa: &str) {
        if let Some(s) = self.app.0.lock().expect("lock").opts.saml.as_mut() {
            s.loa = loa.to_string();
        }
    }

    pub fn accepted(&self) -> Vec<Vec<(String, String)>> {
        self.app.0.lock().expect("lock").accepted.clone()
    }

    pub fn refused(&self) -> Vec<String> {
        self.app.0.lock().expect("lock").refused.clone()
    }
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies
        .split(';')
        .filter_map(|c| c.trim().strip_prefix("fs_session="))
        .next()
        .map(str::to_string)
}

fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", hex::encode(rand::random::<[u8; 12]>()))
}

/// The session for a request, creating one (and a Set-Cookie) if needed.
fn with_session(inner: &mut Inner, headers: &HeaderMap) -> (String, Option<String>) {
    match session_id(headers) {
        Some(id) if inner.sessions.contains_key(&id) => (id, None),
        _ => {
            let id = random_id("s");
            inner.sessions.insert(id.clone(), Session::default());
            let cookie = format!("fs_session={id}; Path=/; HttpOnly; SameSite=Lax");
            (id, Some(cookie))
        }
    }
}

fn respond(cookie: Option<String>, resp: impl IntoResponse) -> Response {
    let mut r = resp.into_response();
    if let Some(c) = cookie {
        if let Ok(v) = c.parse() {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

fn form_token(session: &str, form_id: &str) -> String {
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, format!("{session}/{form_id}").as_bytes()).as_ref()[..12])
}

/// Which login guards a path.
fn guard(path: &str) -> Option<&'static str> {
    match path {
        "/mitid/kontakt" => Some("saml"),
        "/erhverv/kontakt" => Some("oidc"),
        "/borger/kontakt" => Some("sim"),
        _ => None,
    }
}

fn logged_in(s: &Session, guard: &str) -> bool {
    match guard {
        "saml" => s.saml_user.is_some(),
        "oidc" => s.oidc_user.is_some(),
        _ => s.sim_user.is_some(),
    }
}

async fn form_page(State(app): State<App>, uri: axum::http::Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_string();
    let mut inner = app.0.lock().expect("lock");
    let (sid, cookie) = with_session(&mut inner, &headers);
    if let Some(g) = guard(&path) {
        let ok = inner.sessions.get(&sid).is_some_and(|s| logged_in(s, g));
        if !ok {
            let to = login_redirect(&mut inner, &sid, g, &path);
            return respond(cookie, to);
        }
    }
    let build_id = random_id("form-");
    if let Some(s) = inner.sessions.get_mut(&sid) {
        s.build_ids.push(build_id.clone());
    }
    let form_id = format!(
        "webform_submission_{}_form",
        path.trim_start_matches('/').replace('/', "_")
    );
    let token = form_token(&sid, &form_id);
    let page = format!(
        r#"<!DOCTYPE html><html lang="da"><head><title>Kontakt</title>
<style>.url-textfield{{display:none}}</style></head><body>
<h1>Skriv til kommunen</h1>
<form class="webform-submission-form" id="webform-submission-kontakt-form" action="{path}" method="post" enctype="multipart/form-data" accept-charset="UTF-8">
<label>Navn <input type="text" name="name" required></label>
<label>E-mail <input type="email" name="email"></label>
<label>Emne <select name="subject"><option value="generelt" selected>Generelt</option><option value="born">Børn og unge</option></select></label>
<label>Besked <textarea name="message"></textarea></label>
<label>Bilag <input type="file" name="files[bilag]"></label>
<div class="url-textfield"><label>Leave this field blank <input type="text" name="url" value=""></label></div>
<input type="hidden" name="form_build_id" value="{build_id}">
<input type="hidden" name="form_token" value="{token}">
<input type="hidden" name="form_id" value="{form_id}">
<input type="submit" name="op" value="Send" class="button">
</form></body></html>"#
    );
    respond(cookie, Html(page))
}

fn login_redirect(inner: &mut Inner, sid: &str, g: &str, path: &str) -> Response {
    let base = inner.base.clone();
    match g {
        "saml" => {
            let Some(sp) = inner.opts.saml.clone() else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "no SAML").into_response();
            };
            let id = random_id("_");
            if let Some(s) = inner.sessions.get_mut(sid) {
                s.saml_pending = Some(id.clone());
            }
            let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
            let xml = format!(
                r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="{id}" Version="2.0" IssueInstant="{now}" Destination="{dest}" AssertionConsumerServiceURL="{base}/saml/acs" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{issuer}</saml:Issuer><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:2.0:nameid-format:persistent" AllowCreate="true"/><samlp:RequestedAuthnContext Comparison="minimum"><saml:AuthnContextClassRef>{loa}</saml:AuthnContextClassRef></samlp:RequestedAuthnContext></samlp:AuthnRequest>"#,
                dest = sp.idp_sso_url,
                issuer = sp.sp_entity_id,
                loa = sp.loa,
            );
            if let Some(signer) = &sp.post_binding {
                let signed = match xmlsec_sign(&xml, signer) {
                    Ok(x) => x,
                    Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                };
                let b64 = base64::engine::general_purpose::STANDARD.encode(signed.as_bytes());
                let page = format!(
                    r#"<html><body onload="document.forms[0].submit()"><form method="post" action="{}"><input type="hidden" name="SAMLRequest" value="{b64}"><input type="hidden" name="RelayState" value="{}"><noscript><input type="submit" value="Continue"></noscript></form></body></html>"#,
                    html_escape(&sp.idp_sso_url),
                    html_escape(path)
                );
                return Html(page).into_response();
            }
            let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            let _ = enc.write_all(xml.as_bytes());
            let deflated = enc.finish().unwrap_or_default();
            let b64 = base64::engine::general_purpose::STANDARD.encode(deflated);
            let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let mut query = format!("SAMLRequest={}&RelayState={}", enc(&b64), enc(path));
            if let Some(key) = &sp.signing_key {
                query.push_str(&format!(
                    "&SigAlg={}",
                    enc("http://www.w3.org/2001/04/xmldsig-more#rsa-sha256")
                ));
                if let Ok(pair) = ring::signature::RsaKeyPair::from_pkcs8(key) {
                    let mut sig = vec![0; pair.public().modulus_len()];
                    let rng = ring::rand::SystemRandom::new();
                    if pair
                        .sign(&ring::signature::RSA_PKCS1_SHA256, &rng, query.as_bytes(), &mut sig)
                        .is_ok()
                    {
                        let s = base64::engine::general_purpose::STANDARD.encode(sig);
                        query.push_str(&format!("&Signature={}", enc(&s)));
                    }
                }
            }
            let sep = if sp.idp_sso_url.contains('?') { '&' } else { '?' };
            Redirect::to(&format!("{}{sep}{query}", sp.idp_sso_url)).into_response()
        }
        "oidc" => {
            let Some(rp) = inner.opts.oidc.clone() else {
                return (StatusCode::INTERNAL_SERVER_ERROR, "no OIDC").into_response();
            };
            let state = random_id("st");
            if let Some(s) = inner.sessions.get_mut(sid) {
                s.oidc_state = Some(state.clone());
            }
            let mut u = match url::Url::parse(&rp.authorization_endpoint) {
                Ok(u) => u,
                Err(_) => return (StatusCode::INTERNAL_SERVER_ERROR, "bad endpoint").into_response(),
            };
            u.query_pairs_mut()
                .append_pair("client_id", &rp.client_id)
                .append_pair("redirect_uri", &format!("{base}/oidc/callback"))
                .append_pair("response_type", "code")
                .append_pair("scope", "openid")
                .append_pair("state", &state)
                .append_pair("nonce", &random_id("n"));
            Redirect::to(u.as_str()).into_response()
        }
        _ => Redirect::to(&format!("/simulator/login?return={path}")).into_response(),
    }
}

async fn thanks(Query(q): Query<HashMap<String, String>>) -> Html<String> {
    let receipt = q.get("r").cloned().unwrap_or_default();
    Html(format!(
        "<html><body><h1>Tak for din henvendelse</h1><p>Dit kvitteringsnummer er <strong class=\"receipt\">{}</strong>.</p></body></html>",
        html_escape(&receipt)
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn submit(State(app): State<App>, uri: axum::http::Uri, headers: HeaderMap, mut mp: Multipart) -> Response {
    let path = uri.path().to_string();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut attachment: Option<(String, Vec<u8>)> = None;
    while let Ok(Some(field)) = mp.next_field().await {
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().map(str::to_string);
        let Ok(bytes) = field.bytes().await else { break };
        match file_name {
            Some(f) if !f.is_empty() => attachment = Some((f, bytes.to_vec())),
            _ => fields.push((name, String::from_utf8_lossy(&bytes).into_owned())),
        }
    }
    let get = |k: &str| {
        fields
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let (sid, opts, refuse) = {
        let mut inner = app.0.lock().expect("lock");
        let sid = session_id(&headers).unwrap_or_default();
        let g = guard(&path);
        let form_id = format!(
            "webform_submission_{}_form",
            path.trim_start_matches('/').replace('/', "_")
        );
        let refuse = match inner.sessions.get_mut(&sid) {
            None => Some("no session (cookies off?)".to_string()),
            Some(s) if g.is_some_and(|g| !logged_in(s, g)) => Some("not logged in".into()),
            Some(s) => {
                let build = get("form_build_id");
                if !s.build_ids.contains(&build) {
                    Some(format!("stale or missing form_build_id {build:?}"))
                } else if get("form_token") != form_token(&sid, &form_id) || get("form_id") != form_id {
                    Some("bad form_token/form_id".into())
                } else if !get("url").is_empty() {
                    Some("honeypot filled".into())
                } else if get("name").is_empty() {
                    Some("name missing".into())
                } else {
                    s.build_ids.retain(|b| b != &build);
                    None
                }
            }
        };
        if let Some(r) = &refuse {
            inner.refused.push(r.clone());
        }
        (sid, inner.opts.clone(), refuse)
    };
    let _ = sid;
    if let Some(reason) = refuse {
        // Drupal answers a stale form or a honeypot hit with its message and a 200.
        let text = if reason.contains("honeypot") {
            "There was a problem with your form submission. Please wait 6 seconds and try again."
        } else {
            "Formularen er udløbet eller ugyldig. Genindlæs siden og prøv igen."
        };
        return Html(format!(
            "<html><body><div class=\"messages messages--error\">{text}</div></body></html>"
        ))
        .into_response();
    }
    let (drop, receipt) = {
        let mut inner = app.0.lock().expect("lock");
        inner.receipts += 1;
        inner.accepted.push(fields.clone());
        (inner.drop_submissions, format!("KS-{:06}", inner.receipts))
    };
    if !drop {
        let mut body = format!(
            "Ny henvendelse via {path}\nKvittering: {receipt}\nNavn: {}\nE-mail: {}\nEmne: {}\n\n{}\n",
            get("name"),
            get("email"),
            get("subject"),
            get("message")
        );
        if let Some((name, bytes)) = &attachment {
            body.push_str(&format!("\nBilag {name}:\n{}\n", String::from_utf8_lossy(bytes)));
        }
        if let Err(e) = mail(&opts, &format!("Henvendelse {receipt}"), &body).await {
            return (StatusCode::INTERNAL_SERVER_ERROR, format!("mail failed: {e}")).into_response();
        }
    }
    Redirect::to(&format!("/kontakt/tak?r={receipt}")).into_response()
}

async fn mail(opts: &Options, subject: &str, body: &str) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let msg = Message::builder()
        .from(
            "Selvbetjening <noreply@kommune.example>"
                .parse()
                .map_err(|e| format!("{e}"))?,
        )
        .to(opts.recipient.parse().map_err(|e| format!("{e}"))?)
        .subject(subject)
        .body(body.to_string())
        .map_err(|e| e.to_string())?;
    let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(opts.smtp_port)
        .build();
    t.send(msg).await.map(|_| ()).map_err(|e| e.to_string())
}

async fn saml_acs(State(app): State<App>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let mut inner = app.0.lock().expect("lock");
    let sid = session_id(&headers).unwrap_or_default();
    let Some(sp) = inner.opts.saml.clone() else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no SAML").into_response();
    };
    let Some(xml) = form
        .get("SAMLResponse")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
    else {
        return (StatusCode::BAD_REQUEST, "no SAMLResponse").into_response();
    };
    let Ok(doc) = roxmltree::Document::parse(&xml) else {
        return (StatusCode::BAD_REQUEST, "bad XML").into_response();
    };
    let issuer_ok = doc
        .descendants()
        .filter(|n| n.tag_name().name() == "Issuer")
        .any(|n| n.text().map(str::trim) == Some(sp.idp_entity_id.as_str()));
    let Some(s) = inner.sessions.get_mut(&sid) else {
        return (StatusCode::FORBIDDEN, "no session").into_response();
    };
    let in_response_to = doc.root_element().attribute("InResponseTo").map(str::to_string);
    if !issuer_ok || in_response_to.is_none() || in_response_to != s.saml_pending {
        return (StatusCode::FORBIDDEN, "SAMLResponse refused").into_response();
    }
    let name_id = doc
        .descendants()
        .find(|n| n.tag_name().name() == "NameID")
        .and_then(|n| n.text())
        .unwrap_or("user")
        .to_string();
    s.saml_user = Some(name_id);
    s.saml_pending = None;
    let relay = form
        .get("RelayState")
        .cloned()
        .unwrap_or_else(|| "/mitid/kontakt".into());
    Redirect::to(&relay).into_response()
}

async fn oidc_callback(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let sid = session_id(&headers).unwrap_or_default();
    let (rp, base, expected_state) = {
        let inner = app.0.lock().expect("lock");
        let st = inner.sessions.get(&sid).and_then(|s| s.oidc_state.clone());
        (inner.opts.oidc.clone(), inner.base.clone(), st)
    };
    let Some(rp) = rp else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "no OIDC").into_response();
    };
    if expected_state.is_none() || q.get("state") != expected_state.as_ref() {
        return (StatusCode::FORBIDDEN, "bad state").into_response();
    }
    let Some(code) = q.get("code") else {
        return (StatusCode::BAD_REQUEST, "no code").into_response();
    };
    let client = reqwest::Client::new();
    let resp = client
        .post(&rp.token_endpoint)
        .basic_auth(&rp.client_id, Some(&rp.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", &format!("{base}/oidc/callback")),
        ])
        .send()
        .await;
    let json: serde_json::Value = match resp {
        Ok(r) if r.status().is_success() => r.json().await.unwrap_or_default(),
        Ok(r) => return (StatusCode::FORBIDDEN, format!("token endpoint said {}", r.status())).into_response(),
        Err(e) => return (StatusCode::BAD_GATEWAY, format!("token endpoint: {e}")).into_response(),
    };
    if json.get("id_token").and_then(|v| v.as_str()).is_none() {
        return (StatusCode::FORBIDDEN, "no id_token").into_response();
    }
    let mut inner = app.0.lock().expect("lock");
    if let Some(s) = inner.sessions.get_mut(&sid) {
        s.oidc_user = Some("erhverv".into());
        s.oidc_state = None;
    }
    Redirect::to("/erhverv/kontakt").into_response()
}

async fn sim_page(Query(q): Query<HashMap<String, String>>) -> Html<String> {
    Html(sim_form(q.get("return").map(String::as_str).unwrap_or("/"), None))
}

fn sim_form(ret: &str, error: Option<&str>) -> String {
    format!(
        r#"<html><body><h1>MitID simulator</h1>{}
<form method="post" action="/simulator/login">
<input type="hidden" name="return" value="{}">
<label>Brugernavn <input type="text" name="username"></label>
<label>Adgangskode <input type="password" name="password"></label>
<button type="submit">Log ind</button></form></body></html>"#,
        error.map(|e| format!("<p class=\"error\">{e}</p>")).unwrap_or_default(),
        html_escape(ret)
    )
}

async fn sim_login(State(app): State<App>, headers: HeaderMap, body: String) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
    let get = |k: &str| form.get(k).cloned().unwrap_or_default();
    let mut inner = app.0.lock().expect("lock");
    let (sid, cookie) = with_session(&mut inner, &headers);
    let ok = get("username") == inner.opts.simulator_user && get("password") == inner.opts.simulator_password;
    if !ok {
        return respond(
            cookie,
            Html(sim_form(&get("return"), Some("Forkert brugernavn eller adgangskode"))),
        );
    }
    if let Some(s) = inner.sessions.get_mut(&sid) {
        s.sim_user = Some(get("username"));
    }
    let ret = get("return");
    let ret = if ret.starts_with('/') { ret } else { "/".into() };
    respond(cookie, Redirect::to(&ret))
}
