//! DKIM signing of probe messages (RFC 6376, RFC 8463) through lettre, so
//! the receiving side's DMARC can pass for the canary's own domain.
//!
//! Keys: RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE
//! KEY`, what `openssl genpkey` writes) PEM, Ed25519 as PKCS#8 PEM or the
//! raw 32-byte seed in base64. The key is checked when the config loads and
//! kept only in memory; its `Debug` says nothing about it.

use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use lettre::message::dkim::{
    dkim_sign, DkimCanonicalization, DkimCanonicalizationType, DkimConfig, DkimSigningAlgorithm, DkimSigningKey,
};
use lettre::message::header::HeaderName;
use lettre::Message;

/// Header fields signed, when present.
const SIGNED_HEADERS: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "X-Postcanary-Token",
    "X-Postcanary-Channel",
    "Auto-Submitted",
];

/// The DER prefix of an Ed25519 PKCS#8 private key (RFC 8410 §7); the 32-byte seed follows.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A sender's DKIM identity: `d=`, `s=` and the private key.
#[derive(Clone)]
pub struct DkimSigner {
    pub domain: String,
    pub selector: String,
    algorithm: DkimSigningAlgorithm,
    /// What lettre takes: PKCS#1 PEM (RSA) or the base64 seed (Ed25519).
    material: Arc<str>,
}

impl fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm_name())
            .field("key", &"***")
            .finish()
    }
}

impl DkimSigner {
    /// Reads the key text (PEM or an Ed25519 seed in base64) and checks it by loading it once.
    pub fn new(domain: &str, selector: &str, key_text: &str) -> Result<DkimSigner, String> {
        let (algorithm, material) = normalise(key_text)?;
        DkimSigningKey::new(&material, algorithm).map_err(|e| format!("the key does not load: {e}"))?;
        Ok(DkimSigner {
            domain: domain.to_string(),
            selector: selector.to_string(),
            algorithm,
            material: material.into(),
        })
    }

    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            DkimSigningAlgorithm::Rsa => "rsa-sha256",
            DkimSigningAlgorithm::Ed25519 => "ed25519-sha256",
        }
    }

    /// Adds a DKIM-Signature (relaxed/relaxed) to the message.
    pub fn sign(&self, message: &mut Message) -> Result<(), String> {
        let key = DkimSigningKey::new(&self.material, self.algorithm).map_err(|e| format!("DKIM key: {e}"))?;
        let config = DkimConfig::new(
            self.selector.clone(),
            self.domain.clone(),
            key,
            SIGNED_HEADERS
                .iter()
                .map(|h| HeaderName::new_from_ascii_str(h))
                .collect(),
            DkimCanonicalization {
                header: DkimCanonicalizationType::Relaxed,
                body: DkimCanonicalizationType::Relaxed,
            },
        );
        dkim_sign(message, &config);
        Ok(())
    }
}

/// The algorithm and the key as lettre takes it.
fn normalise(text: &str) -> Result<(DkimSigningAlgorithm, String), String> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::DecodePrivateKey;
    let t = text.trim();
    if t.contains("-----BEGIN RSA PRIVATE KEY-----") {
        return Ok((DkimSigningAlgorithm::Rsa, t.to_string()));
    }
    if t.contains("-----BEGIN PRIVATE KEY-----") {
        let der = pem_body(t, "PRIVATE KEY").ok_or("not a readable PEM block")?;
        if der.len() == 48 && der.starts_with(&ED25519_PKCS8_PREFIX) {
            let seed = der.get(16..).ok_or("short Ed25519 key")?;
            return Ok((
                DkimSigningAlgorithm::Ed25519,
                base64::engine::general_purpose::STANDARD.encode(seed),
            ));
        }
        let key = rsa::RsaPrivateKey::from_pkcs8_der(&der)
            .map_err(|e| format!("a PKCS#8 key that is neither Ed25519 nor RSA ({e})"))?;
        let pem = key
            .to_pkcs1_pem(rsa::pkcs8::LineEnding::LF)
            .map_err(|e| format!("cannot re-encode the RSA key: {e}"))?;
        return Ok((DkimSigningAlgorithm::Rsa, pem.to_string()));
    }
    if t.contains("-----BEGIN") {
        return Err("unsupported PEM block: use an RSA (PKCS#1 or PKCS#8) or Ed25519 (PKCS#8) private key".into());
    }
    match base64::engine::general_purpose::STANDARD.decode(t) {
        Ok(seed) if seed.len() == 32 => Ok((DkimSigningAlgorithm::Ed25519, t.to_string())),
        _ => Err("not a PEM private key nor a base64 Ed25519 seed of 32 bytes".into()),
    }
}

/// The DER inside `-----BEGIN {label}-----` … `-----END {label}-----`.
fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text.get(start..)?.find(&end)?;
    let b64: String = text.get(start..stop)?.split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test keys made for these tests only (openssl genpkey), never used anywhere else.
    const ED25519_PKCS8: &str = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+DYvh6SEqVTm50DFtMDoQikTmiCqirVv9mWG9qfSnF\n-----END PRIVATE KEY-----\n";

    #[test]
    fn keys_are_read_in_each_form_and_bad_ones_named() {
        let s = DkimSigner::new("example.net", "pc2025", ED25519_PKCS8).unwrap();
        assert_eq!(s.algorithm_name(), "ed25519-sha256");
        assert!(!format!("{s:?}").contains("MC4C"));
        let seed = "n4Ni+HpISpVObnQMW0wOhCKROaIKqKtW/2ZYb2p9KcU=";
        assert_eq!(
            DkimSigner::new("example.net", "s", seed).unwrap().algorithm_name(),
            "ed25519-sha256"
        );
        assert!(DkimSigner::new("example.net", "s", "garbage")
            .unwrap_err()
            .contains("base64 Ed25519 seed"));
        assert!(DkimSigner::new(
            "example.net",
            "s",
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----"
        )
        .unwrap_err()
        .contains("unsupported PEM"));
        assert!(DkimSigner::new(
            "example.net",
            "s",
            "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----"
        )
        .unwrap_err()
        .contains("does not load"));
    }
}
