//! Smoke tests of the loopback identity providers themselves (tests/idp,
//! tests/support/idp.rs): an SP-initiated SAML login against saml-idp and an
//! OIDC authorization-code login against oidc-provider, driven by hand the way
//! a browser without JavaScript would, as tests/idp/README.md describes.

mod support;

use std::io::Write;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::{Client, Response, StatusCode};
use scraper::{ElementRef, Html, Selector};
use url::Url;

use support::idp::{self, OidcProvider, SamlIdp};

const SAML_NS: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
const SAMLP_NS: &str = "urn:oasis:names:tc:SAML:2.0:protocol";

fn client() -> Client {
    Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("valid selector")
}

fn random_hex(bytes: usize) -> String {
    (0..bytes).map(|_| format!("{:02x}", rand::random::<u8>())).collect()
}

/// The first form on the page that has a descendant matching `inner`.
fn form_with<'a>(doc: &'a Html, inner: &str) -> Option<ElementRef<'a>> {
    let inner = sel(inner);
    doc.select(&sel("form")).find(|f| f.select(&inner).next().is_some())
}

/// What a browser would submit from `form` without pressing a named button:
/// inputs with a name (checkboxes and radios only when checked; no buttons,
/// files or disabled controls), selects (the selected option, else the first),
/// and textareas.
fn form_fields(form: ElementRef) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for el in form.select(&sel("input, select, textarea")) {
        let v = el.value();
        let Some(name) = v.attr("name") else { continue };
        if v.attr("disabled").is_some() {
            continue;
        }
        match v.name() {
            "input" => {
                let ty = v.attr("type").unwrap_or("text").to_ascii_lowercase();
                match ty.as_str() {
                    "submit" | "button" | "image" | "reset" | "file" => continue,
                    "checkbox" | "radio" if v.attr("checked").is_none() => continue,
                    "checkbox" | "radio" => out.push((name.into(), v.attr("value").unwrap_or("on").into())),
                    _ => out.push((name.into(), v.attr("value").unwrap_or("").into())),
                }
            }
            "select" => {
                let options: Vec<ElementRef> = el.select(&sel("option")).collect();
                let chosen = options
                    .iter()
                    .find(|o| o.value().attr("selected").is_some())
                    .or(options.first());
                if let Some(o) = chosen {
                    let value = match o.value().attr("value") {
                        Some(v) => v.to_string(),
                        None => o
                            .text()
                            .collect::<String>()
                            .split_whitespace()
                            .collect::<Vec<_>>()
                            .join(" "),
                    };
                    out.push((name.into(), value));
                }
            }
            _ => out.push((name.into(), el.text().collect())),
        }
    }
    out
}

fn set_field(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    match fields.iter_mut().find(|(n, _)| n == name) {
        Some(f) => f.1 = value.to_string(),
        None => fields.push((name.to_string(), value.to_string())),
    }
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// The absolute action URL and the (upper-case) method of a form on `page`.
fn form_target(page: &Url, form: ElementRef) -> (Url, String) {
    let action = form.value().attr("action").unwrap_or("");
    let url = page.join(action).expect("form action is a URL");
    let method = form.value().attr("method").unwrap_or("get").to_ascii_uppercase();
    (url, method)
}

async fn submit(client: &Client, page: &Url, form: ElementRef<'_>, fields: &[(String, String)]) -> Response {
    let (url, method) = form_target(page, form);
    assert_eq!(method, "POST", "form at {page} posts");
    client
        .post(url.clone())
        .form(fields)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

async fn body(resp: Response) -> String {
    resp.text().await.expect("response body")
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, ns: &str, name: &str) -> roxmltree::Node<'a, 'i> {
    node.children()
        .find(|n| n.has_tag_name((ns, name)))
        .unwrap_or_else(|| panic!("<{}> has no <{name}>", node.tag_name().name()))
}

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect::<String>()
}

#[tokio::test]
async fn saml_sp_initiated_redirect_binding_login() {
    idp::install().expect("install the identity providers (node, npm ci)");
    let default_acs = "http://127.0.0.1:9/default-acs";
    let acs = "http://127.0.0.1:9/sp/saml/acs";
    let sp_entity_id = "https://sp.postcanary.test/saml/metadata";
    let idp = SamlIdp::start(default_acs, sp_entity_id).expect("start saml-idp");
    let client = client();

    // Metadata: entity id and SSO endpoints.
    let resp = client.get(&idp.metadata_url).send().await.expect("GET metadata");
    // express-session hands every new visitor an idp_sid cookie (not needed for the flow).
    assert!(resp.cookies().any(|c| c.name() == "idp_sid"), "idp_sid cookie");
    let meta = body(resp).await;
    let meta_doc = roxmltree::Document::parse(&meta).expect("metadata is XML");
    let root = meta_doc.root_element();
    assert_eq!(root.tag_name().name(), "EntityDescriptor");
    assert_eq!(root.attribute("entityID"), Some(idp.entity_id.as_str()));
    let sso_locations: Vec<(&str, &str)> = meta_doc
        .descendants()
        .filter(|n| n.has_tag_name("SingleSignOnService"))
        .map(|n| {
            (
                n.attribute("Binding").unwrap_or(""),
                n.attribute("Location").unwrap_or(""),
            )
        })
        .collect();
    assert!(
        sso_locations.contains(&(
            "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect",
            idp.sso_url.as_str()
        )),
        "metadata SSO services: {sso_locations:?}"
    );
    assert!(
        meta.contains(&pem_body(&idp.cert_pem)),
        "metadata carries the signing cert"
    );

    // The AuthnRequest, HTTP-Redirect binding: raw deflate, base64, URL-encode.
    let request_id = format!("_{}", random_hex(16));
    let instant = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    let authn_request = format!(
        r#"<samlp:AuthnRequest xmlns:samlp="{SAMLP_NS}" xmlns:saml="{SAML_NS}" ID="{request_id}" Version="2.0" IssueInstant="{instant}" Destination="{sso}" AssertionConsumerServiceURL="{acs}" ProtocolBinding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"><saml:Issuer>{sp_entity_id}</saml:Issuer><samlp:NameIDPolicy Format="urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified" AllowCreate="true"/></samlp:AuthnRequest>"#,
        sso = idp.sso_url,
    );
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(authn_request.as_bytes()).expect("deflate");
    let saml_request = STANDARD.encode(enc.finish().expect("deflate"));
    let relay_state = format!("rs-{}", random_hex(6));
    let sso = Url::parse_with_params(
        &idp.sso_url,
        &[
            ("SAMLRequest", saml_request.as_str()),
            ("RelayState", relay_state.as_str()),
        ],
    )
    .expect("SSO URL");

    // The IdP's user page: a form without a password, posting to /signin.
    let resp = client.get(sso.clone()).send().await.expect("GET SSO");
    assert_eq!(resp.status(), StatusCode::OK, "SSO GET status; IdP log:\n{}", idp.log());
    let page = body(resp).await;
    let doc = Html::parse_document(&page);
    assert!(
        doc.select(&sel("input[type=password]")).next().is_none(),
        "saml-idp asks no password"
    );
    let form = form_with(&doc, "input[name=_authnRequest]").expect("user form with the hidden _authnRequest");
    let (action, _) = form_target(&sso, form);
    assert_eq!(action.as_str(), idp.signin_url);
    let mut fields = form_fields(form);
    let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "userName",
            "nameIdFormat",
            "nameIdNameQualifier",
            "nameIdSPNameQualifier",
            "nameIdSPProvidedID",
            "firstName",
            "lastName",
            "displayName",
            "email",
            "mobilePhone",
            "groups",
            "userType",
            "_authnRequest"
        ],
        "user form fields"
    );
    let carried: serde_json::Value = serde_json::from_slice(
        &STANDARD
            .decode(field(&fields, "_authnRequest").expect("_authnRequest"))
            .expect("base64 JSON"),
    )
    .expect("_authnRequest is JSON");
    assert_eq!(carried["id"], request_id.as_str());
    assert_eq!(carried["acsUrl"], acs);
    assert_eq!(carried["relayState"], relay_state.as_str());
    set_field(&mut fields, "userName", "alice@example.test");

    // Sign in: an auto-submit form POSTing SAMLResponse + RelayState to the ACS.
    let resp = submit(&client, &sso, form, &fields).await;
    let signin = Url::parse(&idp.signin_url).expect("signin URL");
    assert_eq!(resp.status(), StatusCode::OK, "sign-in status; IdP log:\n{}", idp.log());
    let page = body(resp).await;
    let doc = Html::parse_document(&page);
    let form = form_with(&doc, "input[name=SAMLResponse]").expect("auto-submit form with SAMLResponse");
    let (action, method) = form_target(&signin, form);
    assert_eq!((action.as_str(), method.as_str()), (acs, "POST"));
    let fields = form_fields(form);
    let hidden: Vec<&str> = form
        .select(&sel("input[type=hidden]"))
        .filter_map(|i| i.value().attr("name"))
        .collect();
    assert_eq!(hidden, ["SAMLResponse", "RelayState"]);
    assert_eq!(field(&fields, "RelayState"), Some(relay_state.as_str()));

    let xml = STANDARD
        .decode(field(&fields, "SAMLResponse").expect("SAMLResponse"))
        .expect("base64");
    let xml = String::from_utf8(xml).expect("UTF-8 XML");
    let doc = roxmltree::Document::parse(&xml).expect("SAMLResponse is XML");
    let response = doc.root_element();
    assert!(response.has_tag_name((SAMLP_NS, "Response")), "{xml}");
    assert_eq!(response.attribute("InResponseTo"), Some(request_id.as_str()));
    assert_eq!(response.attribute("Destination"), Some(acs));
    assert_eq!(child(response, SAML_NS, "Issuer").text(), Some(idp.entity_id.as_str()));
    let status = child(child(response, SAMLP_NS, "Status"), SAMLP_NS, "StatusCode");
    assert_eq!(
        status.attribute("Value"),
        Some("urn:oasis:names:tc:SAML:2.0:status:Success")
    );
    let cert = doc
        .descendants()
        .find(|n| n.has_tag_name("X509Certificate"))
        .and_then(|n| n.text())
        .expect("signed with an X509Certificate");
    assert_eq!(cert.trim(), pem_body(&idp.cert_pem));

    let assertion = child(response, SAML_NS, "Assertion");
    assert_eq!(child(assertion, SAML_NS, "Issuer").text(), Some(idp.entity_id.as_str()));
    let subject = child(assertion, SAML_NS, "Subject");
    assert_eq!(child(subject, SAML_NS, "NameID").text(), Some("alice@example.test"));
    let confirmation = child(
        child(subject, SAML_NS, "SubjectConfirmation"),
        SAML_NS,
        "SubjectConfirmationData",
    );
    assert_eq!(confirmation.attribute("Recipient"), Some(acs));
    assert_eq!(confirmation.attribute("InResponseTo"), Some(request_id.as_str()));
    let audience = child(
        child(child(assertion, SAML_NS, "Conditions"), SAML_NS, "AudienceRestriction"),
        SAML_NS,
        "Audience",
    );
    assert_eq!(audience.text(), Some(sp_entity_id));
}

/// Follows redirects by hand (GET, cookies kept) until a page, or a Location
/// that starts with `stop_prefix` (returned, not followed).
enum Landed {
    Page(Url, String),
    Redirect(Url),
}

async fn follow(client: &Client, mut url: Url, mut resp: Response, stop_prefix: &str) -> Landed {
    for _ in 0..10 {
        if !resp.status().is_redirection() {
            assert_eq!(resp.status(), StatusCode::OK, "at {url}");
            return Landed::Page(url, body(resp).await);
        }
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("redirect has a Location")
            .to_string();
        let next = url.join(&loc).expect("Location is a URL");
        if next.as_str().starts_with(stop_prefix) {
            return Landed::Redirect(next);
        }
        url = next;
        resp = client
            .get(url.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    }
    panic!("too many redirects, last at {url}");
}

fn page(landed: Landed, what: &str) -> (Url, String) {
    match landed {
        Landed::Page(url, html) => (url, html),
        Landed::Redirect(url) => panic!("expected the {what} page, was sent to {url}"),
    }
}

fn jwt_claims(jwt: &str) -> serde_json::Value {
    let payload = jwt.split('.').nth(1).expect("JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON claims")
}

#[tokio::test]
async fn oidc_code_flow_with_dev_login_and_consent() {
    idp::install().expect("install the identity providers (node, npm ci)");
    let redirect_uri = "http://127.0.0.1:9/rp/oidc/callback";
    let op = OidcProvider::start(redirect_uri).expect("start oidc-provider");
    let client = client();

    // Discovery agrees with the endpoints the helper hands out.
    let disco: serde_json::Value = client
        .get(&op.discovery_url)
        .send()
        .await
        .expect("GET discovery")
        .json()
        .await
        .expect("discovery JSON");
    assert_eq!(disco["issuer"], op.issuer.as_str());
    assert_eq!(disco["authorization_endpoint"], op.authorization_endpoint.as_str());
    assert_eq!(disco["token_endpoint"], op.token_endpoint.as_str());
    assert_eq!(disco["userinfo_endpoint"], op.userinfo_endpoint.as_str());
    assert_eq!(disco["jwks_uri"], op.jwks_uri.as_str());

    let state = random_hex(8);
    let nonce = random_hex(8);
    let auth = Url::parse_with_params(
        &op.authorization_endpoint,
        &[
            ("client_id", op.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", "openid email"),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
        ],
    )
    .expect("authorization URL");
    let resp = client
        .get(auth.clone())
        .send()
        .await
        .expect("GET authorization endpoint");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER, "authorization: {}", op.log());

    // Login interaction: login + password (anything), hidden prompt=login.
    let (url, html) = page(follow(&client, auth, resp, redirect_uri).await, "login");
    assert!(url.path().starts_with("/interaction/"), "login page at {url}");
    let doc = Html::parse_document(&html);
    let form = form_with(&doc, "input[type=password]").expect("login form with a password input");
    let mut fields = form_fields(form);
    assert_eq!(
        fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect::<Vec<_>>(),
        [("prompt", "login"), ("login", ""), ("password", "")]
    );
    set_field(&mut fields, "login", "alice");
    set_field(&mut fields, "password", "anything");
    let resp = submit(&client, &url, form, &fields).await;
    let (action, _) = form_target(&url, form);

    // Consent interaction: a form of one hidden input, prompt=consent.
    let (url, html) = page(follow(&client, action, resp, redirect_uri).await, "consent");
    assert!(url.path().starts_with("/interaction/"), "consent page at {url}");
    let doc = Html::parse_document(&html);
    assert!(doc.select(&sel("input[type=password]")).next().is_none());
    let form = form_with(&doc, "input[name=prompt]").expect("consent form");
    let fields = form_fields(form);
    assert_eq!(
        fields.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect::<Vec<_>>(),
        [("prompt", "consent")]
    );
    let resp = submit(&client, &url, form, &fields).await;
    let (action, _) = form_target(&url, form);

    // Back to the client with code, state and iss.
    let callback = match follow(&client, action, resp, redirect_uri).await {
        Landed::Redirect(u) => u,
        Landed::Page(u, html) => panic!("expected the redirect to the client, got a page at {u}:\n{html}"),
    };
    let params: std::collections::HashMap<String, String> = callback.query_pairs().into_owned().collect();
    assert_eq!(params.get("state"), Some(&state), "callback {callback}");
    assert_eq!(params.get("iss"), Some(&op.issuer), "callback {callback}");
    let code = params.get("code").expect("authorization code");

    // Token endpoint, client_secret_basic.
    let resp = client
        .post(&op.token_endpoint)
        .basic_auth(&op.client_id, Some(&op.client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri),
        ])
        .send()
        .await
        .expect("POST token endpoint");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "token endpoint; provider log:\n{}",
        op.log()
    );
    let tokens: serde_json::Value = resp.json().await.expect("token JSON");
    let id_token = tokens["id_token"].as_str().expect("id_token");
    assert!(tokens["access_token"].is_string(), "{tokens}");
    let claims = jwt_claims(id_token);
    assert_eq!(claims["iss"], op.issuer.as_str());
    assert_eq!(claims["aud"], op.client_id.as_str());
    assert_eq!(claims["nonce"], nonce.as_str());
    assert_eq!(claims["sub"], "alice");
}
