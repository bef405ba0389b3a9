use std::time::Duration;

use super::*;

const NOW: i64 = 1_795_000_000; // 2026-11-18

fn login() -> LoginConfig {
    LoginConfig {
        name: "mitid".into(),
        kind: LoginKind::Saml,
        start: crate::config::form::Template("https://selvbetjening.kommune.example/kontakt".into()),
        idp: "https://idp.nemlog-in.example/".into(),
        username: None,
        password: None,
        username_field: None,
        password_field: None,
        form: None,
        fields: Vec::new(),
        headers: Vec::new(),
        continue_with: Vec::new(),
        continue_fields: Vec::new(),
        ca_file: None,
        acs: Some("https://selvbetjening.kommune.example/saml/acs".into()),
        loa: Some("https://data.gov.dk/concept/core/nsis/loa/Substantial".into()),
        require_signed: true,
        sp_certificate: None,
        metadata: None,
        cert_min_days: 30,
        timeout: Duration::from_secs(5),
    }
}

fn target() -> Url {
    Url::parse("https://idp.nemlog-in.example/sso?SAMLRequest=x").expect("url")
}

fn request(acs: &str, loa: &str, instant: &str) -> String {
    format!(
        r#"<samlp:AuthnRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion"
  ID="_a1" Version="2.0" IssueInstant="{instant}" Destination="https://idp.nemlog-in.example/sso"
  AssertionConsumerServiceURL="{acs}">
  <saml:Issuer>https://selvbetjening.kommune.example/saml</saml:Issuer>
  <samlp:RequestedAuthnContext Comparison="minimum"><saml:AuthnContextClassRef>{loa}</saml:AuthnContextClassRef></samlp:RequestedAuthnContext>
</samlp:AuthnRequest>"#
    )
}

const ACS: &str = "https://selvbetjening.kommune.example/saml/acs";
const SUBSTANTIAL: &str = "https://data.gov.dk/concept/core/nsis/loa/Substantial";
const INSTANT: &str = "2026-11-18T11:06:40Z";

#[test]
fn a_right_request_passes() {
    let facts = inspect_authn_request(&request(ACS, SUBSTANTIAL, INSTANT), &target(), &login(), NOW).expect("ok");
    assert!(facts.contains(&"ACS as configured".to_string()), "{facts:?}");
    assert!(facts.contains(&"LoA Substantial".to_string()), "{facts:?}");
}

#[test]
fn wrong_acs_loa_age_and_shape_are_refused() {
    let l = login();
    let t = target();
    let e = inspect_authn_request(
        &request("https://old.kommune.example/acs", SUBSTANTIAL, INSTANT),
        &t,
        &l,
        NOW,
    )
    .expect_err("acs");
    assert!(e.detail.contains("expected ACS"), "{}", e.detail);
    assert_eq!(e.verdict, crate::verdict::Verdict::Rejected);
    let low = "https://data.gov.dk/concept/core/nsis/loa/Low";
    let e = inspect_authn_request(&request(ACS, low, INSTANT), &t, &l, NOW).expect_err("loa");
    assert!(
        e.detail
            .contains("asks for https://data.gov.dk/concept/core/nsis/loa/Low"),
        "{}",
        e.detail
    );
    let e = inspect_authn_request(&request(ACS, SUBSTANTIAL, "2026-11-01T00:00:00Z"), &t, &l, NOW).expect_err("old");
    assert!(e.detail.contains("minutes off"), "{}", e.detail);
    let e = inspect_authn_request("<LogoutRequest/>", &t, &l, NOW).expect_err("shape");
    assert!(e.detail.contains("not a SAML 2.0 AuthnRequest"), "{}", e.detail);
    let e = inspect_authn_request("<unclosed", &t, &l, NOW).expect_err("xml");
    assert!(e.detail.contains("not well-formed"), "{}", e.detail);
    let other = Url::parse("https://evil.example/sso").expect("url");
    let e = inspect_authn_request(&request(ACS, SUBSTANTIAL, INSTANT), &other, &l, NOW).expect_err("dest");
    assert!(e.detail.contains("Destination"), "{}", e.detail);
}

#[test]
fn redirect_requests_inflate_and_garbage_is_refused() {
    use std::io::Write;
    let xml = request(ACS, SUBSTANTIAL, INSTANT);
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(xml.as_bytes()).expect("deflate");
    let b64 = base64::engine::general_purpose::STANDARD.encode(enc.finish().expect("finish"));
    assert_eq!(inflate_request(&b64).expect("inflate"), xml);
    assert!(inflate_request("not base64!!").is_err());
    assert!(inflate_request("AAAA").is_err());
}

#[test]
fn redirect_signatures_verify_and_tampering_fails() {
    let pem = include_bytes!("../../../tests/fixtures/saml/sp-signing-cert.pem");
    let key = public_key_from_pem(pem).expect("key");
    let query = include_str!("../../../tests/fixtures/saml/signed-redirect-query.txt").trim();
    verify_redirect_signature(query, &key).expect("verifies");
    let tampered = query.replace("RelayState=%2Fkontakt", "RelayState=%2Fother");
    let e = verify_redirect_signature(&tampered, &key).expect_err("tampered");
    assert!(e.contains("does not verify"), "{e}");
    let unsigned = query.split("&Signature=").next().unwrap_or_default();
    assert!(verify_redirect_signature(unsigned, &key).is_err());
    assert!(public_key_from_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").is_err());
}

fn metadata(location: &str, valid_until: &str) -> String {
    let cert = include_str!("../../../tests/fixtures/saml/sp-signing-cert.b64").trim();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.nemlog-in.example" validUntil="{valid_until}">
<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
{cert}
</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
<md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{location}"/>
</md:IDPSSODescriptor></md:EntityDescriptor>"#
    )
}

#[test]
fn metadata_lists_the_endpoint_and_certificates_last() {
    let l = login();
    let ok = metadata("https://idp.nemlog-in.example/sso", "2030-01-01T00:00:00Z");
    let facts = check_metadata(&ok, &target(), &l, NOW).expect("ok");
    assert!(
        facts.iter().any(|f| f.starts_with("IdP signing certificate valid")),
        "{facts:?}"
    );

    let moved = metadata("https://idp.nemlog-in.example/sso2", "2030-01-01T00:00:00Z");
    let e = check_metadata(&moved, &target(), &l, NOW).expect_err("moved");
    assert!(e.detail.contains("does not list"), "{}", e.detail);

    let expired = metadata("https://idp.nemlog-in.example/sso", "2026-01-01T00:00:00Z");
    let e = check_metadata(&expired, &target(), &l, NOW).expect_err("expired");
    assert!(e.detail.contains("expired"), "{}", e.detail);

    // The fixture certificate lives 100 years; ask for more to see the expiry check fire.
    let strict = LoginConfig {
        cert_min_days: 40_000,
        ..login()
    };
    let e = check_metadata(&ok, &target(), &strict, NOW).expect_err("soon");
    assert!(
        e.detail.contains("CN=sp.kommune.example") && e.detail.contains("days"),
        "{}",
        e.detail
    );
    assert!(check_metadata("<x", &target(), &l, NOW).is_err());
}

#[test]
fn posted_signatures_verify_with_the_right_certificate_only() {
    let xml = include_str!("../../../tests/fixtures/saml/post/signed-authn-request.xml");
    let right = include_bytes!("../../../tests/fixtures/saml/post/sp-cert.pem");
    let wrong = include_bytes!("../../../tests/fixtures/saml/post/other-cert.pem");
    verify_posted_signature(xml, right).expect("signed by libxmlsec1 (xmlsec1 --sign), verifies");
    let e = verify_posted_signature(xml, wrong).expect_err("wrong certificate");
    assert!(e.contains("does not verify with sp_certificate"), "{e}");
    let changed = xml.replace("nsis/loa/Substantial", "nsis/loa/Low");
    let e = verify_posted_signature(&changed, right).expect_err("changed");
    assert!(e.contains("changed after it was signed"), "{e}");

    // Through check_signature: the verdict follows the certificate; an unsigned
    // request with a configured certificate is never passed.
    let h = Handoff {
        target: target(),
        request_xml: None,
        redirect_signed: false,
    };
    let mut l = login();
    l.sp_certificate = Some(right.to_vec());
    assert_eq!(
        check_signature(&h, xml, &l).expect("ok"),
        "signature verified (POST binding, XML-DSig)"
    );
    l.sp_certificate = Some(wrong.to_vec());
    let e = check_signature(&h, xml, &l).expect_err("wrong");
    assert_eq!(e.verdict, crate::verdict::Verdict::Rejected);
    l.require_signed = false;
    let e = check_signature(&h, &request(ACS, SUBSTANTIAL, INSTANT), &l).expect_err("unsigned");
    assert!(e.detail.contains("sp_certificate is configured"), "{}", e.detail);
}
