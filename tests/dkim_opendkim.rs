//! DKIM-signed probes verify with OpenDKIM (Debian `opendkim`), RSA and
//! Ed25519, keys made by openssl here and published to OpenDKIM through its
//! test key file (`TestPublicKeys`) instead of DNS — nothing leaves the host.
//! `scripts/test.sh` installs the package; without it the test says so and
//! passes (as the other tests that need a daemon do when run alone).

use std::path::Path;
use std::process::Command;

use postcanary::dkim::DkimSigner;
use postcanary::sender::message::{build, ProbeMessage};

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin} || test -x /usr/sbin/{bin}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn opendkim() -> &'static str {
    if Path::new("/usr/sbin/opendkim").exists() {
        "/usr/sbin/opendkim"
    } else {
        "opendkim"
    }
}

fn sh(cmd: &str, dir: &Path) {
    let out = Command::new("sh").args(["-c", cmd]).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Signs a probe, then runs `opendkim -t` on it; returns OpenDKIM's stderr/syslog lines and exit status.
fn sign_and_verify(dir: &Path, signer: &DkimSigner, mangle: bool) -> (bool, String) {
    let from: lettre::message::Mailbox = "Postcanary <canary@example.net>".parse().unwrap();
    let to: lettre::Address = "social@kommune.example".parse().unwrap();
    let token = "pc-01JD0000000000000000000000-0123456789abcdef";
    let mut raw = build(&ProbeMessage {
        token,
        channel_id: "social-mail",
        channel_name: "Social",
        from: &from,
        to: &to,
        dkim: Some(signer),
    })
    .unwrap()
    .formatted();
    let text = String::from_utf8(raw.clone()).unwrap();
    assert!(text.contains("DKIM-Signature: "), "{text}");
    assert!(text.contains(&format!("d={}", signer.domain)) && text.contains(&format!("s={}", signer.selector)));
    assert!(text.contains(&format!("a={}", signer.algorithm_name())), "{text}");
    // What a relay does on the way: prepend Received, refold nothing else.
    let mut relayed = b"Received: from prober.example.net (prober.example.net [203.0.113.9])\r\n\tby relay.example.net (Postfix) with ESMTPSA id 4X; Tue,  2 Dec 2025 09:15:01 +0000\r\n".to_vec();
    if mangle {
        let t = String::from_utf8(raw)
            .unwrap()
            .replace("automated test", "automated tost");
        raw = t.into_bytes();
    }
    relayed.extend_from_slice(&raw);
    let msg = dir.join("probe.eml");
    std::fs::write(&msg, &relayed).unwrap();
    let out = Command::new(opendkim())
        .args(["-x", "opendkim.conf", "-t", "probe.eml"])
        .current_dir(dir)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

#[test]
fn signed_probes_verify_with_opendkim_rsa_and_ed25519() {
    if !have("opendkim") || !have("openssl") {
        eprintln!("SKIP: opendkim or openssl not installed (scripts/test.sh installs them)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sh(
        "openssl genpkey -algorithm rsa -pkeyopt rsa_keygen_bits:2048 -out rsa.pem 2>/dev/null",
        d,
    );
    sh(
        "openssl pkey -in rsa.pem -pubout -outform DER | base64 -w0 > rsa.pub",
        d,
    );
    sh("openssl genpkey -algorithm ed25519 -out ed.pem", d);
    sh(
        "openssl pkey -in ed.pem -pubout -outform DER | tail -c 32 | base64 -w0 > ed.pub",
        d,
    );
    // PKCS#1 as well, the other RSA form operators have.
    sh("openssl pkey -in rsa.pem -traditional -out rsa1.pem 2>/dev/null || openssl rsa -in rsa.pem -traditional -out rsa1.pem", d);
    let rsa_pub = std::fs::read_to_string(d.join("rsa.pub")).unwrap();
    let ed_pub = std::fs::read_to_string(d.join("ed.pub")).unwrap();
    std::fs::write(
        d.join("keys"),
        format!(
            "pc2025._domainkey.example.net v=DKIM1; k=rsa; p={rsa_pub}\npced._domainkey.example.net v=DKIM1; k=ed25519; p={ed_pub}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("opendkim.conf"),
        "Mode v\nTestPublicKeys keys\nSyslog no\nLogResults yes\nLogWhy yes\nBackground no\nAlwaysAddARHeader yes\n",
    )
    .unwrap();
    let pem = |f: &str| std::fs::read_to_string(d.join(f)).unwrap();
    for (selector, key) in [
        ("pc2025", pem("rsa.pem")),
        ("pc2025", pem("rsa1.pem")),
        ("pced", pem("ed.pem")),
    ] {
        let signer = DkimSigner::new("example.net", selector, &key).unwrap();
        let (ok, out) = sign_and_verify(d, &signer, false);
        assert!(ok, "{}: {out}", signer.algorithm_name());
        println!("{} ({selector}): {}", signer.algorithm_name(), out.trim());
        // A changed body no longer verifies.
        let (ok_mangled, out_mangled) = sign_and_verify(d, &signer, true);
        let _ = ok_mangled; // opendkim -t exits 0 either way; its verdict is in the text
        assert!(
            out_mangled.contains("failed: signature verification failed"),
            "{out_mangled}"
        );
        assert!(out.contains("succeeded") && !out.contains("failed"), "{out}");
    }
}
