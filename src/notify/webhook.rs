//! Generic JSON webhook: `POST <url>` with postcanary's own schema (version 1,
//! documented in `docs/notifiers.md`). With a `secret`, the request is signed:
//!
//! ```text
//! X-Postcanary-Timestamp: <page.at, milliseconds since the epoch>
//! X-Postcanary-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>
//! ```
//!
//! The timestamp is the page's own time, not the send time, so a retry of the
//! same page sends byte-identical headers and body.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{missing, timeline};
use super::{rfc3339, NotifierConfig, Page, Request};

/// The version of the body schema; bumped only on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

pub const TIMESTAMP_HEADER: &str = "X-Postcanary-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-Postcanary-Signature";

pub fn request(n: &NotifierConfig, page: &Page) -> Result<Request, String> {
    let url = n.url.clone().ok_or_else(|| missing(n, "url"))?;
    let body = json!({
        "version": SCHEMA_VERSION,
        "event": page.event.as_str(),
        "dedup_key": page.dedup_key,
        "incident_id": page.incident_id,
        "channel": {
            "id": page.channel,
            "name": page.channel_name,
            "owner": page.owner,
            "target": page.target,
        },
        "verdict": page.verdict,
        "detail": page.detail,
        "summary": page.summary,
        "opened_at": rfc3339(page.opened_at),
        "at": rfc3339(page.at),
        "probe_token": page.probe_token,
        "timeline": timeline(page),
        "source": page.source,
    });
    let body = serde_json::to_vec(&body).map_err(|e| format!("webhook notifier `{}`: {e}", n.name))?;
    let mut headers = Vec::new();
    if let Some(secret) = &n.secret {
        let timestamp = page.at.to_string();
        let signature = sign(secret.expose().as_bytes(), &timestamp, &body)
            .map_err(|e| format!("webhook notifier `{}`: {e}", n.name))?;
        headers.push((TIMESTAMP_HEADER.to_string(), timestamp));
        headers.push((SIGNATURE_HEADER.to_string(), format!("sha256={signature}")));
    }
    Ok(Request { url, headers, body })
}

/// Hex HMAC-SHA256 over `"<timestamp>." + body`.
fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| format!("unusable secret: {e}"))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::fixtures::{notifier, page};
    use crate::notify::{NotifierKind, PageEvent};
    use serde_json::Value;
    use sha2::Digest;

    /// HMAC-SHA256 written out from RFC 2104, independent of the `hmac` crate.
    fn reference_hmac(key: &[u8], msg: &[u8]) -> String {
        let mut k = if key.len() > 64 {
            Sha256::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        k.resize(64, 0);
        let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
        let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
        let inner = Sha256::new().chain_update(&ipad).chain_update(msg).finalize();
        let outer = Sha256::new().chain_update(&opad).chain_update(inner).finalize();
        hex::encode(outer)
    }

    #[test]
    fn reference_hmac_matches_rfc_4231() {
        // RFC 4231 test case 2.
        assert_eq!(
            reference_hmac(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    fn expected(event: &str, verdict: &str) -> Value {
        json!({
            "version": 1,
            "event": event,
            "dedup_key": "postcanary/social-family-mail/7",
            "incident_id": 7,
            "channel": {
                "id": "social-family-mail",
                "name": "Social og Familie (e-mail)",
                "owner": "social-og-familie",
                "target": "socialogfamilie@kommune.example",
            },
            "verdict": verdict,
            "detail": "nothing arrived before the deadline",
            "summary": "Social og Familie (e-mail): missed - nothing arrived before the deadline",
            "opened_at": "2026-11-18T11:06:40.000Z",
            "at": "2026-11-18T11:07:40.000Z",
            "probe_token": "pc-01KB0000000000000000000000-0123456789abcdef",
            "timeline": [
                {"at": "2026-11-18T10:51:40.000Z", "kind": "sent", "detail": "250 2.0.0 Ok: queued as 4XyZ"},
                {"at": "2026-11-18T11:06:40.000Z", "kind": "verdict",
                 "detail": "missed: nothing arrived before the deadline"},
            ],
            "source": "canary-01",
        })
    }

    #[test]
    fn every_event_is_signed_and_verifies() {
        let n = notifier(NotifierKind::Webhook);
        let cases = [
            (PageEvent::Trigger, "trigger", "missed"),
            (PageEvent::Reminder, "reminder", "missed"),
            (PageEvent::Resolve, "resolve", "delivered"),
        ];
        for (event, name, verdict) in cases {
            let req = request(&n, &page(event)).unwrap();
            assert_eq!(req.url, "http://127.0.0.1:9/hook");
            let got: Value = serde_json::from_slice(&req.body).unwrap();
            assert_eq!(got, expected(name, verdict));

            let mut signed = b"1795000060000.".to_vec();
            signed.extend_from_slice(&req.body);
            let want = format!("sha256={}", reference_hmac(b"hmac-key", &signed));
            assert_eq!(
                req.headers,
                vec![
                    ("X-Postcanary-Timestamp".to_string(), "1795000060000".to_string()),
                    ("X-Postcanary-Signature".to_string(), want),
                ]
            );
        }
    }

    #[test]
    fn a_changed_body_or_timestamp_does_not_verify() {
        let req = request(&notifier(NotifierKind::Webhook), &page(PageEvent::Trigger)).unwrap();
        let sig = req.headers[1].1.trim_start_matches("sha256=").to_string();
        let mut tampered = b"1795000060000.".to_vec();
        tampered.extend_from_slice(&req.body);
        tampered.push(b' ');
        assert_ne!(reference_hmac(b"hmac-key", &tampered), sig);
        let mut other_time = b"1795000060001.".to_vec();
        other_time.extend_from_slice(&req.body);
        assert_ne!(reference_hmac(b"hmac-key", &other_time), sig);
    }

    #[test]
    fn a_retry_is_byte_identical() {
        let n = notifier(NotifierKind::Webhook);
        let p = page(PageEvent::Reminder);
        assert_eq!(request(&n, &p).unwrap(), request(&n, &p).unwrap());
    }

    #[test]
    fn without_a_secret_there_are_no_signature_headers() {
        let mut n = notifier(NotifierKind::Webhook);
        n.secret = None;
        let mut p = page(PageEvent::Trigger);
        p.probe_token = None;
        let req = request(&n, &p).unwrap();
        assert!(req.headers.is_empty());
        let got: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(got["probe_token"], Value::Null);
    }

    #[test]
    fn no_secret_in_the_body() {
        for event in [PageEvent::Trigger, PageEvent::Reminder, PageEvent::Resolve] {
            let req = request(&notifier(NotifierKind::Webhook), &page(event)).unwrap();
            let text = String::from_utf8(req.body).unwrap();
            for s in ["hmac-key", "R0UT1NGKEY", "genie-key"] {
                assert!(!text.contains(s), "{s}");
            }
            assert!(req.headers.iter().all(|(_, v)| !v.contains("hmac-key")));
        }
    }

    #[test]
    fn missing_url_is_an_error() {
        let mut n = notifier(NotifierKind::Webhook);
        n.url = None;
        assert_eq!(
            request(&n, &page(PageEvent::Trigger)),
            Err("webhook notifier `oncall`: missing url".to_string())
        );
    }
}
