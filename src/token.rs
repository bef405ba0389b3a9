//! Probe tokens: `pc-<ULID>-<tag>`, where the tag is the first 8 bytes of
//! HMAC-SHA256(key, ULID) in lower-case hex. The ULID makes every probe
//! unique and carries its creation time; the tag proves that this prober made
//! it, so a forged or mangled token never counts as a delivery.

use std::fmt;
use std::time::{Duration, SystemTime};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use ulid::Ulid;

type HmacSha256 = Hmac<Sha256>;

pub const PREFIX: &str = "pc-";
const ULID_LEN: usize = 26;
const TAG_BYTES: usize = 8;
const TAG_LEN: usize = TAG_BYTES * 2;
/// Length of a whole token: `pc-` + ULID + `-` + tag.
pub const TOKEN_LEN: usize = PREFIX.len() + ULID_LEN + 1 + TAG_LEN;

/// The secret key tags are made with.
#[derive(Clone)]
pub struct TokenKey(Vec<u8>);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

impl TokenKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> TokenKey {
        TokenKey(bytes.into())
    }

    /// A fresh random 32-byte key.
    pub fn generate() -> TokenKey {
        TokenKey(rand::random::<[u8; 32]>().to_vec())
    }

    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<TokenKey> {
        hex::decode(s).ok().filter(|b| !b.is_empty()).map(TokenKey)
    }

    fn mac(&self, ulid: &str) -> HmacSha256 {
        // HMAC accepts keys of any length; new_from_slice cannot fail for it.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(m) => m,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        };
        mac.update(ulid.as_bytes());
        mac
    }

    /// Makes a new token for a probe created at `now`.
    pub fn issue(&self, now: SystemTime) -> Token {
        let ulid = Ulid::from_datetime(now);
        let s = ulid.to_string();
        let tag = self.mac(&s).finalize().into_bytes();
        Token {
            ulid,
            text: format!("{PREFIX}{s}-{}", hex::encode(&tag[..TAG_BYTES])),
        }
    }

    /// Checks a token's tag and age. Returns the token if it is ours and not
    /// older than `max_age` (nor from the future by more than a minute).
    pub fn verify(&self, text: &str, now: SystemTime, max_age: Duration) -> Result<Token, TokenError> {
        let (ulid_str, tag_str) = split(text).ok_or(TokenError::Malformed)?;
        let ulid_up = ulid_str.to_ascii_uppercase();
        let ulid = Ulid::from_string(&ulid_up).map_err(|_| TokenError::Malformed)?;
        let tag = hex::decode(tag_str).map_err(|_| TokenError::Malformed)?;
        self.mac(&ulid.to_string())
            .verify_truncated_left(&tag)
            .map_err(|_| TokenError::BadTag)?;
        let created = ulid.datetime();
        if let Ok(age) = now.duration_since(created) {
            if age > max_age {
                return Err(TokenError::Expired);
            }
        } else if created.duration_since(now).unwrap_or_default() > Duration::from_secs(60) {
            return Err(TokenError::Expired);
        }
        Ok(Token {
            ulid,
            text: format!("{PREFIX}{ulid}-{}", tag_str.to_ascii_lowercase()),
        })
    }
}

/// Why a token-looking string does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a postcanary token")]
    Malformed,
    #[error("tag does not verify (forged or altered token)")]
    BadTag,
    #[error("token is older than the retention window")]
    Expired,
}

/// A verified or freshly issued token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    ulid: Ulid,
    text: String,
}

impl Token {
    /// The whole token, tag included: it goes into probe messages and
    /// nowhere else. Its tag is the probe's proof, so it is never shown.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The form that is shown and stored: `pc-<ULID>`, without the tag. It
    /// names the probe (and is a prefix of the token in its message) but
    /// cannot be turned back into a token that counts.
    pub fn public(&self) -> String {
        format!("{PREFIX}{}", self.ulid)
    }
    /// The probe id: the token's ULID.
    pub fn id(&self) -> String {
        self.ulid.to_string()
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The shown form (`pc-<ULID>`) of any token-shaped text: the tag cut off.
/// Text that is not token-shaped is returned as far as it looks like one.
pub fn public_form(text: &str) -> String {
    match split(text) {
        Some((ulid, _)) => format!("{PREFIX}{}", ulid.to_ascii_uppercase()),
        None => text.chars().take(PREFIX.len() + ULID_LEN).collect(),
    }
}

/// The probe id a token-shaped text claims, whether or not its tag verifies.
pub fn claimed_id(text: &str) -> Option<String> {
    let (ulid, _) = split(text)?;
    Ulid::from_string(&ulid.to_ascii_uppercase())
        .ok()
        .map(|u| u.to_string())
}

fn split(text: &str) -> Option<(&str, &str)> {
    if text.len() != TOKEN_LEN || !text.is_char_boundary(PREFIX.len()) {
        return None;
    }
    if !text[..PREFIX.len()].eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &text[PREFIX.len()..];
    let (ulid, tag) = (rest.get(..ULID_LEN)?, rest.get(ULID_LEN + 1..)?);
    if rest.as_bytes().get(ULID_LEN) != Some(&b'-') {
        return None;
    }
    Some((ulid, tag))
}

fn is_crockford(b: u8) -> bool {
    b.is_ascii_digit() || (b.is_ascii_alphabetic() && !matches!(b.to_ascii_uppercase(), b'I' | b'L' | b'O' | b'U'))
}

/// Every substring of `text` shaped like a token (not yet verified), in order,
/// without duplicates. Works on any bytes, so hostile or broken content is fine.
pub fn find_candidates(text: &[u8]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i + TOKEN_LEN <= text.len() {
        let w = &text[i..i + TOKEN_LEN];
        let shaped = w[..3].eq_ignore_ascii_case(PREFIX.as_bytes())
            && w[3..3 + ULID_LEN].iter().all(|&b| is_crockford(b))
            && w[3 + ULID_LEN] == b'-'
            && w[4 + ULID_LEN..].iter().all(u8::is_ascii_hexdigit);
        // Must not be part of a longer word on either side.
        let clean_left = i == 0 || !text[i - 1].is_ascii_alphanumeric();
        let clean_right = text.get(i + TOKEN_LEN).is_none_or(|b| !b.is_ascii_alphanumeric());
        if shaped && clean_left && clean_right {
            // The window is ASCII by construction.
            let s = String::from_utf8_lossy(w).into_owned();
            if !out.contains(&s) {
                out.push(s);
            }
            i += TOKEN_LEN;
        } else {
            i += 1;
        }
    }
    out
}

/// Every token-shaped string in a raw message: in the raw bytes (headers,
/// plain bodies) and in the decoded subject and text/HTML parts (quoted-
/// printable or base64 bodies, encoded-word subjects). Never fails: broken
/// or hostile content just yields fewer candidates.
pub fn tokens_in_message(raw: &[u8]) -> Vec<String> {
    let mut out = find_candidates(raw);
    // mail-parser's accessors index parts[0]; a broken message may have none.
    if let Some(msg) = mail_parser::MessageParser::default()
        .parse(raw)
        .filter(|m| !m.parts.is_empty())
    {
        let mut add = |text: &str| {
            for c in find_candidates(text.as_bytes()) {
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        };
        if let Some(s) = msg.subject() {
            add(s);
        }
        for i in 0..msg.text_body.len() {
            if let Some(t) = msg.body_text(i) {
                add(&t);
            }
        }
        for i in 0..msg.html_body.len() {
            if let Some(h) = msg.body_html(i) {
                add(&h);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn issued_tokens_verify() {
        let key = TokenKey::new(b"k".to_vec());
        let now = SystemTime::now();
        let t = key.issue(now);
        assert_eq!(t.as_str().len(), TOKEN_LEN);
        assert!(t.as_str().starts_with("pc-"));
        assert_eq!(key.verify(t.as_str(), now, DAY), Ok(t.clone()));
        // Case-folded by a mail system: still ours, normalised back.
        assert_eq!(key.verify(&t.as_str().to_lowercase(), now, DAY), Ok(t));
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let key = TokenKey::new(b"k".to_vec());
        let other = TokenKey::new(b"other".to_vec());
        let now = SystemTime::now();
        let t = other.issue(now);
        assert_eq!(key.verify(t.as_str(), now, DAY), Err(TokenError::BadTag));
        let mine = key.issue(now).to_string();
        let mut flipped = mine.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            key.verify(std::str::from_utf8(&flipped).unwrap(), now, DAY),
            Err(TokenError::BadTag)
        );
        assert_eq!(key.verify("pc-nonsense", now, DAY), Err(TokenError::Malformed));
        assert_eq!(
            key.verify(&mine.replace('-', "_"), now, DAY),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn old_tokens_are_refused() {
        let key = TokenKey::generate();
        let then = SystemTime::now() - 40 * DAY;
        let t = key.issue(then);
        assert_eq!(
            key.verify(t.as_str(), SystemTime::now(), 30 * DAY),
            Err(TokenError::Expired)
        );
        let future = key.issue(SystemTime::now() + DAY);
        assert_eq!(
            key.verify(future.as_str(), SystemTime::now(), 30 * DAY),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn candidates_found_in_noise() {
        let key = TokenKey::generate();
        let a = key.issue(SystemTime::now());
        let b = key.issue(SystemTime::now());
        let text = format!("Subject: [test] {a}\r\n\r\n<p>{b}</p> again {a} x{b}y");
        assert_eq!(find_candidates(text.as_bytes()), vec![a.to_string(), b.to_string()]);
        assert!(find_candidates(b"\xff\xfe pc- nothing here").is_empty());
        assert!(find_candidates(b"").is_empty());
    }

    #[test]
    fn the_shown_form_has_no_tag() {
        let key = TokenKey::new(b"k".to_vec());
        let t = key.issue(SystemTime::now());
        assert_eq!(t.public(), format!("pc-{}", t.id()));
        assert!(t.as_str().starts_with(&t.public()));
        assert_eq!(public_form(t.as_str()), t.public());
        assert_eq!(public_form(&t.as_str().to_lowercase()), t.public());
        assert_eq!(claimed_id(t.as_str()), Some(t.id()));
        assert!(
            find_candidates(t.public().as_bytes()).is_empty(),
            "the shown form never counts"
        );
        assert!(key.verify(&t.public(), SystemTime::now(), DAY).is_err());
    }

    #[test]
    fn key_hex_round_trip() {
        let k = TokenKey::generate();
        let k2 = TokenKey::from_hex(&k.to_hex()).unwrap();
        let now = SystemTime::now();
        assert!(k2.verify(k.issue(now).as_str(), now, DAY).is_ok());
        assert!(TokenKey::from_hex("zz").is_none());
        assert_eq!(format!("{k:?}"), "TokenKey(***)");
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;

    const T: &str = "pc-01JD0000000000000000000000-0123456789abcdef";

    #[test]
    fn finds_tokens_in_encoded_bodies_and_subjects() {
        let b64 = "VG9rZW46IHBjLTAxSkQwMDAwMDAwMDAwMDAwMDAwMDAwMDAwLTAxMjM0NTY3ODlhYmNkZWYK"; // "Token: <T>\n"
        let raw =
            format!("Subject: hello\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}\r\n");
        assert_eq!(tokens_in_message(raw.as_bytes()), vec![T.to_string()]);

        let subject = "Subject: =?utf-8?q?Formular_pc-01JD0000000000000000000000-0123456789abcdef?=\r\n\r\nbody\r\n";
        assert_eq!(tokens_in_message(subject.as_bytes()), vec![T.to_string()]);

        let qp_html = "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
                       <p class=3D\"t\">pc-01JD00000000000=\r\n00000000000-0123456789abcdef</p>\r\n";
        assert_eq!(tokens_in_message(qp_html.as_bytes()), vec![T.to_string()]);
    }

    #[test]
    fn hostile_content_yields_nothing_and_does_not_panic() {
        for raw in [
            &b""[..],
            b"\xff\xfe\x00garbage",
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n--\r\n",
            b"Subject: =?utf-8?b?!!!!?=\r\n\r\n",
        ] {
            assert!(tokens_in_message(raw).is_empty());
        }
        let deep = "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n".repeat(2000);
        let _ = tokens_in_message(deep.as_bytes());
    }
}
