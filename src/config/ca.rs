//! `ca_file`: extra trust anchors (PEM) for a municipality's internal CA,
//! added to the built-in roots of HTTP steps and logins, IMAP and Graph
//! inboxes and SMTP senders. Certificates are public: the file is read and
//! checked at load time, and its path is what errors name.

use std::path::Path;

/// The certificates of one `ca_file`, read when the config was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFile {
    /// As written in the config (for messages).
    pub path: String,
    /// The PEM text, as read.
    pub pem: Vec<u8>,
    /// Each certificate's DER.
    pub certs: Vec<Vec<u8>>,
}

impl CaFile {
    /// Reads `path` (relative to the config file's directory) and checks that it
    /// holds at least one PEM certificate and nothing that fails to parse.
    pub fn read(base: &Path, path: &str) -> Result<CaFile, String> {
        let full = base.join(path);
        let pem = std::fs::read(&full).map_err(|e| format!("cannot read {}: {e}", full.display()))?;
        let mut certs = Vec::new();
        for (i, block) in x509_parser::pem::Pem::iter_from_buffer(&pem).enumerate() {
            let block = block.map_err(|e| format!("{}: PEM block {}: {e}", full.display(), i + 1))?;
            if block.label != "CERTIFICATE" {
                return Err(format!(
                    "{}: PEM block {} is a {:?}, not a CERTIFICATE",
                    full.display(),
                    i + 1,
                    block.label
                ));
            }
            block
                .parse_x509()
                .map_err(|e| format!("{}: certificate {} does not parse: {e}", full.display(), i + 1))?;
            certs.push(block.contents);
        }
        if certs.is_empty() {
            return Err(format!(
                "{}: no certificate in it (-----BEGIN CERTIFICATE-----)",
                full.display()
            ));
        }
        Ok(CaFile {
            path: path.to_string(),
            pem,
            certs,
        })
    }

    /// The built-in (webpki) roots plus these certificates, for rustls clients.
    pub fn root_store(extra: Option<&CaFile>) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca) = extra {
            for der in &ca.certs {
                // Checked at load time; a certificate rustls cannot use as an anchor is skipped.
                let _ = roots.add(rustls::pki_types::CertificateDer::from(der.clone()));
            }
        }
        roots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pem_certificates_and_refuses_other_things() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = include_bytes!("../../tests/fixtures/saml/sp-signing-cert.pem");
        std::fs::write(dir.path().join("ca.pem"), good).expect("write");
        let ca = CaFile::read(dir.path(), "ca.pem").expect("reads");
        assert_eq!(ca.certs.len(), 1);
        assert_eq!(
            CaFile::root_store(Some(&ca)).len(),
            webpki_roots::TLS_SERVER_ROOTS.len() + 1
        );
        std::fs::write(dir.path().join("empty.pem"), "nothing here\n").expect("write");
        let e = CaFile::read(dir.path(), "empty.pem").expect_err("empty");
        assert!(e.contains("no certificate"), "{e}");
        std::fs::write(
            dir.path().join("key.pem"),
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .expect("write");
        let e = CaFile::read(dir.path(), "key.pem").expect_err("key");
        assert!(e.contains("not a CERTIFICATE"), "{e}");
        let e = CaFile::read(dir.path(), "missing.pem").expect_err("missing");
        assert!(e.contains("cannot read"), "{e}");
    }
}

/// For tests of TLS clients: an internal CA made by the openssl CLI.
#[cfg(test)]
pub(crate) mod testing {
    use std::process::Command;

    /// An internal CA and a server certificate for 127.0.0.1, made by the openssl CLI.
    pub(crate) fn internal_ca(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>) {
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        };
        run(&[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=intern CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        run(&[
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=imap", "-keyout", "srv.key", "-out",
            "srv.csr",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "srv.pem",
        ]);
        run(&[
            "pkcs8", "-topk8", "-nocrypt", "-in", "srv.key", "-outform", "DER", "-out", "srv.der",
        ]);
        let cert = x509_parser::pem::parse_x509_pem(&std::fs::read(dir.join("srv.pem")).expect("pem"))
            .expect("pem")
            .1
            .contents;
        (cert, std::fs::read(dir.join("srv.der")).expect("key"))
    }
}
