//! Compliance evidence end to end, on real mail software (tests/compliance/beds.sh):
//! the daemon sends DKIM-signed canaries through a relay Postfix
//! (relay.kommune.example) to the test MX Postfix (mx.kommune.example), which
//! runs OpenDKIM and OpenDMARC (SPF self-check, DNS from a private dnsmasq)
//! as milters and delivers into Dovecot. The channel requires TLS ≥ 1.2 on
//! every hop after our submission and SPF, DKIM and DMARC `pass`.
//!
//! - relay → MX over STARTTLS: delivered, compliant, DMARC pass at OpenDMARC;
//! - the relay switched to plaintext: still `delivered`, a compliance
//!   incident "hop relay.kommune.example → mx.kommune.example without TLS"
//!   is paged to the channel's notifier;
//! - the relay sends over TLS through an Exim hop (exim.kommune.example):
//!   the next canary is compliant and the incident is resolved (resolve page);
//! - the API's channel view sums the window in one line.

mod support;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use postcanary::compliance::{assess, KeptPath, OurSide, Policy, PATH_EVENT};
use postcanary::ledger::{sqlite::SqliteStore, Store};
use postcanary::mailpath::{TlsLevel, TlsVersion};
use postcanary::verdict::Verdict;
use support::canary::{wait_for, Daemon};
use support::mailstack::MailStack;
use support::receiver::Receiver;

fn beds() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compliance/beds.sh")
}

fn bed(args: &[&str]) {
    let out = Command::new("bash").arg(beds()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "beds.sh {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The beds stopped when the test ends, however it ends.
struct Beds(PathBuf);

impl Drop for Beds {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(beds()).arg("stop").arg(&self.0).output();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback address whose port 53 is free (dnsmasq answers OpenDMARC there).
fn dns_ip() -> String {
    for i in 0..200u32 {
        let ip = format!("127.0.{}.{}", 90 + (std::process::id() + i) % 100, 2 + (i * 37) % 250);
        if UdpSocket::bind((ip.as_str(), 53)).is_ok() && TcpListener::bind((ip.as_str(), 53)).is_ok() {
            return ip;
        }
    }
    panic!("no loopback address with port 53 free");
}

fn can_run() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if std::env::var_os("CI").is_some() {
        assert!(root, "the compliance beds need root (unshare -m, port 53 on loopback)");
        return true;
    }
    root && Command::new("apt-get").arg("--version").output().is_ok()
}

fn kept(detail: &str) -> KeptPath {
    KeptPath::from_event(detail).unwrap_or_else(|| panic!("not a kept path: {detail}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_hop_raises_a_compliance_incident_tls_and_exim_resolve_it_dmarc_passes() {
    if !can_run() {
        eprintln!("SKIP: needs root and apt-get (scripts/test.sh installs the beds)");
        return;
    }
    bed(&["install"]);
    let stack = MailStack::start();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_path_buf();
    let _beds = Beds(dir.clone());
    let (relay, exim, dkim, dmarc, api) = (free_port(), free_port(), free_port(), free_port(), free_port());
    let dir_s = dir.to_str().unwrap();
    bed(&["milters-start", dir_s, &dkim.to_string(), &dmarc.to_string(), &dns_ip()]);
    let main_cf = stack.dir.path().join("postfix/main.cf");
    let mut cf = std::fs::read_to_string(&main_cf).unwrap();
    cf.push_str(&format!(
        "smtpd_milters = inet:127.0.0.1:{dkim}, inet:127.0.0.1:{dmarc}\nmilter_default_action = tempfail\n"
    ));
    std::fs::write(&main_cf, cf).unwrap();
    stack.reload_postfix();
    let mx = stack.smtp_port.to_string();
    bed(&["relay-start", dir_s, &relay.to_string(), &mx, "encrypt"]);
    bed(&["exim-start", dir_s, &exim.to_string(), &mx]);

    let hook = Receiver::start();
    std::fs::write(dir.join("social.pw"), stack.password("social")).unwrap();
    std::fs::write(dir.join("api.token"), "compliance-test-token").unwrap();
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
notify = ["ops"]
require_tls = "1.2"
require_auth = ["spf", "dkim", "dmarc"]

[server]
listen = "127.0.0.1:{api}"
bearer_tokens = ["file:api.token"]

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = {relay}
tls = "none"
helo = "prober.example.net"
from = "Postcanary <canary@example.net>"
dkim_domain = "example.net"
dkim_selector = "pc2025"
dkim_key = "file:dkim/rsa.pem"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "social"
password = "file:social.pw"

[[notifier]]
name = "ops"
kind = "webhook"
url = "{hook}"

[[channel]]
id = "social-mail"
name = "Social"
kind = "mail"
to = "social@kommune.example"
inbox = "social"
schedule = "every 3s"
deadline = "20s"
"#,
        imap = stack.imap_port,
        hook = hook.url("/hook"),
    );
    let config = dir.join("postcanary.toml");
    std::fs::write(&config, toml).unwrap();
    let mut daemon = Daemon::start(&config, &dir.join("daemon.log"));
    let store = SqliteStore::open(&dir.join("ledger.db")).await.unwrap();
    let policy = Policy {
        require_tls: Some(TlsVersion::Tls1_2),
        require_auth: postcanary::compliance::AuthMethod::ALL[..3].to_vec(),
    };
    let ours = OurSide::Relay {
        host: "127.0.0.1".into(),
    };
    let log = || std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();

    // 1. Over STARTTLS: delivered, every hop after ours TLS ≥ 1.2, DMARC pass.
    let (first_id, first) = wait_for(
        "a delivered canary with its path",
        Duration::from_secs(40),
        async || {
            store
                .channel_events("social-mail", PATH_EVENT, 0, 1)
                .await
                .unwrap()
                .into_iter()
                .next()
        },
    )
    .await;
    let path = kept(&first.detail);
    println!("{}", path.line());
    let a = assess(&path, &ours, &policy);
    assert_eq!(a.breaches, Vec::<String>::new(), "{path:?}");
    assert_eq!(
        a.weakest_hop.as_deref(),
        Some("relay.kommune.example → mx.kommune.example")
    );
    assert!(
        matches!(a.weakest, Some(TlsLevel::Tls(v)) if v >= TlsVersion::Tls1_2),
        "{a:?}"
    );
    assert_eq!(a.gateway, "mx.kommune.example");
    for m in ["spf", "dkim", "dmarc"] {
        assert_eq!(a.auth.get(m).map(String::as_str), Some("pass"), "{m}: {path:?}");
    }
    // Our own submission (plaintext to the relay) is in the path, and not judged.
    assert!(
        path.summary.hops[0].contains("→ relay.kommune.example, ESMTP, no TLS"),
        "{path:?}"
    );
    assert_eq!(
        store.probe(&first_id).await.unwrap().unwrap().verdict,
        Verdict::Delivered
    );
    assert!(store.open_incident("compliance:social-mail").await.unwrap().is_none());

    // 2. The relay → MX hop without TLS: delivered all the same, a compliance page.
    bed(&["relay-set", dir_s, "none"]);
    let trigger = wait_for("the compliance trigger page", Duration::from_secs(60), async || {
        hook.accepted().into_iter().find(|p| p.json()["event"] == "trigger")
    })
    .await
    .json();
    assert_eq!(trigger["channel"]["id"], "compliance:social-mail", "{trigger}");
    assert_eq!(trigger["verdict"], "compliance_breach", "{trigger}");
    assert_eq!(
        trigger["detail"], "hop relay.kommune.example → mx.kommune.example without TLS",
        "{trigger}"
    );
    let token = trigger["probe_token"].as_str().unwrap().to_string();
    let breaching = store.probe_by_token(&token).await.unwrap().unwrap();
    assert_eq!(breaching.verdict, Verdict::Delivered, "a breach stays delivered");
    // No channel incident: the channel delivers.
    assert!(store.open_incident("social-mail").await.unwrap().is_none());

    // 3. TLS again, now through an Exim hop: the next compliant canary resolves it.
    bed(&["relay-set", dir_s, "encrypt", &exim.to_string()]);
    wait_for("the compliance resolve page", Duration::from_secs(60), async || {
        hook.accepted().into_iter().find(|p| p.json()["event"] == "resolve")
    })
    .await;
    let (_, newest) = store
        .channel_events("social-mail", PATH_EVENT, 0, 1)
        .await
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let path = kept(&newest.detail);
    println!("{}", path.line());
    let names: Vec<String> = path.facts.iter().map(|f| f.name()).collect();
    assert!(
        names.contains(&"relay.kommune.example → exim.kommune.example".to_string())
            && names.contains(&"exim.kommune.example → mx.kommune.example".to_string()),
        "{names:?}"
    );
    let a = assess(&path, &ours, &policy);
    assert_eq!(a.breaches, Vec::<String>::new(), "{path:?}");
    let exim_hop = path
        .facts
        .iter()
        .find(|f| f.by.as_deref() == Some("exim.kommune.example"))
        .unwrap();
    assert!(exim_hop.tls.at_least(TlsVersion::Tls1_2), "{exim_hop:?}");
    assert!(!exim_hop.local);
    assert!(store.open_incident("compliance:social-mail").await.unwrap().is_none());
    let pages: Vec<String> = hook
        .accepted()
        .iter()
        .map(|p| p.json()["event"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(pages, vec!["trigger", "resolve"], "one trigger, one resolve");

    // 4. The API sums the window in one line.
    let view: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{api}/api/channels/social-mail"))
        .bearer_auth("compliance-test-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let line = view["compliance"]["line"].as_str().unwrap_or_default().to_string();
    println!("{line}");
    assert!(line.starts_with("last 30 days ("), "{line}");
    assert!(line.contains("a hop without TLS in "), "{line}");
    assert!(line.contains("DMARC pass"), "{line}");
    assert!(line.contains("policy broken by "), "{line}");
    assert!(
        view["compliance"]["tally"]["breaches"].as_u64().unwrap_or(0) >= 1,
        "{view}"
    );
    assert!(daemon.terminate().success(), "{}", log());
}
