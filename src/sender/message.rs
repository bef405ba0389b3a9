//! The probe message: plainly labelled as an automated test in Danish and
//! English, carrying the token in Subject, `X-Postcanary-Token` and body.

use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::Mailbox;
use lettre::Message;

/// Everything the message says about its probe.
pub struct ProbeMessage<'a> {
    pub token: &'a str,
    pub channel_id: &'a str,
    pub channel_name: &'a str,
    pub from: &'a Mailbox,
    pub to: &'a lettre::Address,
    /// Sign with DKIM.
    pub dkim: Option<&'a crate::dkim::DkimSigner>,
}

/// Builds the RFC 5322 message, DKIM-signed when the sender has a key.
/// Fails only on an address lettre cannot encode.
pub fn build(m: &ProbeMessage<'_>) -> Result<Message, String> {
    let subject = format!("[postcanary test] Automatisk test / automated test - {}", m.token);
    let body = format!(
        "DETTE ER EN AUTOMATISK TESTBESKED - der skal ikke foretages noget.\r\n\
         Beskeden er sendt af postcanary for at kontrollere, at post til denne\r\n\
         adresse når frem. Den må gerne slettes.\r\n\
         \r\n\
         THIS IS AN AUTOMATED TEST MESSAGE - no action is needed.\r\n\
         It was sent by postcanary to verify that mail to this address is\r\n\
         delivered. It may be deleted.\r\n\
         \r\n\
         Kanal / channel: {} ({})\r\n\
         Token: {}\r\n",
        m.channel_name, m.channel_id, m.token
    );
    let to = Mailbox::new(None, m.to.clone());
    let mut message = Message::builder()
        .from(m.from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{}@postcanary.invalid>", m.token)))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Postcanary-Token"),
            m.token.to_string(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Postcanary-Channel"),
            m.channel_id.to_string(),
        ))
        // RFC 3834: this is machine-generated; auto-responders should stay silent.
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ))
        .raw_header(HeaderValue::new(
            HeaderName::new_from_ascii_str("X-Auto-Response-Suppress"),
            "All".into(),
        ))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the probe message: {e}"))?;
    if let Some(signer) = m.dkim {
        signer.sign(&mut message)?;
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_in_subject_header_and_body_and_test_is_labelled() {
        let from: Mailbox = "Postcanary <canary@example.net>".parse().unwrap();
        let to: lettre::Address = "social@kommune.example".parse().unwrap();
        let token = "pc-01JD0000000000000000000000-0123456789abcdef";
        let msg = build(&ProbeMessage {
            token,
            channel_id: "social-mail",
            channel_name: "Social",
            from: &from,
            to: &to,
            dkim: None,
        })
        .unwrap();
        let raw = String::from_utf8(msg.formatted()).unwrap();
        let parsed = mail_parser::MessageParser::default().parse(raw.as_bytes()).unwrap();
        assert!(parsed.subject().unwrap().contains(token));
        assert!(parsed.subject().unwrap().contains("test"));
        assert_eq!(parsed.header_raw("X-Postcanary-Token").map(str::trim), Some(token));
        let text = parsed.body_text(0).unwrap();
        assert!(text.contains(token));
        assert!(text.contains("AUTOMATISK TESTBESKED"));
        assert!(text.contains("AUTOMATED TEST MESSAGE"));
        assert_eq!(
            parsed.header_raw("Auto-Submitted").map(str::trim),
            Some("auto-generated")
        );
    }
}
