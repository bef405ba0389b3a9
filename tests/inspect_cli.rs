//! `postcanary inspect`: tokens verified with the configured key or the key
//! kept in the ledger, bounce facts, hops and authentication results; exit
//! codes 0 (read) and 2 (unreadable file or config).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::SystemTime;

use postcanary::token::{public_form, TokenKey};

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn inspect(args: &[&str], stdin: Option<&[u8]>) -> (Option<i32>, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .arg("inspect")
        .args(args)
        .env_remove("POSTCANARY_CONFIG")
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(b) = stdin {
        input.write_all(b).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn message(tokens: &[&str]) -> Vec<u8> {
    let path = std::fs::read_to_string(fixture("paths/postfix.eml")).unwrap();
    let (head, _) = path.split_once("\n\n").unwrap();
    format!(
        "{head}\nX-Postcanary-Token: {}\n\nToken: {}\n",
        tokens[0],
        tokens.join(" ")
    )
    .into_bytes()
}

#[test]
fn tokens_verify_with_the_configured_key_and_json_has_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("key"), "k3y-for-tests").unwrap();
    let cfg = dir.path().join("pc.toml");
    std::fs::write(
        &cfg,
        "[ledger]\nurl = \"sqlite://pc.db\"\n[token]\nkey = \"file:key\"\n",
    )
    .unwrap();
    let ours = TokenKey::new(b"k3y-for-tests".to_vec())
        .issue(SystemTime::now())
        .to_string();
    let theirs = TokenKey::new(b"another".to_vec()).issue(SystemTime::now()).to_string();
    let (code, out, err) = inspect(
        &["--json", "-c", cfg.to_str().unwrap(), "-"],
        Some(&message(&[&ours, &theirs])),
    );
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["file"], "-");
    assert_eq!(v["key"], "[token] key");
    let toks: Vec<(String, String)> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["token"].as_str().unwrap().into(),
                t["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        toks,
        vec![
            (public_form(&ours), "valid".to_string()),
            (
                public_form(&theirs),
                "bad tag (forged, altered or another prober's)".to_string()
            )
        ]
    );
    assert!(v["tokens"][0]["issued"].as_str().is_some());
    assert_eq!(v["auto_reply"], false);
    assert!(v.get("bounce").is_none());
    assert_eq!(v["path"]["hops"].as_array().unwrap().len(), 4);
    assert_eq!(v["summary"]["min_tls"], serde_json::json!({"tls": "TLSv1.2"}));
    assert_eq!(
        v["summary"]["auth"],
        serde_json::json!({"dkim": "pass", "dmarc": "pass", "spf": "pass"})
    );
    assert_eq!(v["summary"]["authserv_id"], "mx.kommune.example");

    // Text form.
    let (code, out, _) = inspect(&["-c", cfg.to_str().unwrap(), "-"], Some(&message(&[&ours])));
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&format!("token {}: valid (issued ", public_form(&ours))),
        "{out}"
    );
    assert!(!out.contains(&ours), "the tag is never shown: {out}");
    assert!(out.contains("1. 2025-12-02 09:15:02Z  relay.example.net [198.51.100.7] → mx.kommune.example, ESMTPS, TLSv1.3 TLS_AES_256_GCM_SHA384, +1s"), "{out}");
    assert!(out.contains("weakest hop in transit: TLSv1.2"), "{out}");
    assert!(out.contains("dmarc=pass header.from=example.net"), "{out}");
}

#[test]
fn the_key_kept_in_the_ledger_is_used_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("pc.toml");
    std::fs::write(&cfg, "[ledger]\nurl = \"sqlite://pc.db\"\n").unwrap();
    let key = TokenKey::generate();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store =
            postcanary::ledger::backend::open(&postcanary::config::LedgerBackend::Sqlite(dir.path().join("pc.db")))
                .await
                .unwrap();
        store.meta_get_or_put("token_key", &key.to_hex()).await.unwrap();
    });
    let token = key.issue(SystemTime::now()).to_string();
    let (code, out, err) = inspect(&["-c", cfg.to_str().unwrap(), "-"], Some(&message(&[&token])));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&format!("token {}: valid", public_form(&token))), "{out}");
    assert!(out.contains("key: the ledger "), "{out}");

    // A fresh config whose ledger does not exist yet: unknown key, and no ledger is made.
    let fresh = tempfile::tempdir().unwrap();
    let cfg = fresh.path().join("pc.toml");
    std::fs::write(&cfg, "[ledger]\nurl = \"sqlite://pc.db\"\n").unwrap();
    let (code, out, _) = inspect(&["-c", cfg.to_str().unwrap(), "-"], Some(&message(&[&token])));
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&format!("token {}: unknown key", public_form(&token))),
        "{out}"
    );
    assert!(!fresh.path().join("pc.db").exists());
}

#[test]
fn without_a_config_the_key_is_unknown_and_bounces_are_read() {
    let (code, out, err) = inspect(&["--json", &fixture("bounces/exim-dsn.eml")], None);
    assert_eq!(code, Some(0), "{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["key"].as_str().unwrap().starts_with("unknown key"));
    assert_eq!(v["bounce"]["kind"], "failed", "{out}");
}

#[test]
fn unreadable_file_or_bad_config_exits_2() {
    let (code, _, err) = inspect(&["/nonexistent/message.eml"], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent/message.eml: cannot read"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[ledger]\nbogus = 1\n").unwrap();
    let (code, _, err) = inspect(&["-c", bad.to_str().unwrap(), "-"], Some(b"Subject: x\n\n"));
    assert_eq!(code, Some(2));
    assert!(err.contains("invalid config"), "{err}");
}
