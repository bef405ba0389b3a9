//! Sending like a citizen and watching routing drift, against a real
//! authoritative DNS server on loopback (dnsmasq, tests/support/dns.rs) and
//! the real Postfix + Dovecot: an `mx` sender finds the MX in DNS, delivers
//! with STARTTLS and records host, TLS version and cipher; with
//! `require_tls` it refuses a receiving side without TLS; and the daemon pages
//! "routing changed" when the MX record changes, before any probe fails.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use postcanary::config::Config;
use postcanary::engine::Engine;
use postcanary::ledger::{sqlite::SqliteStore, Store};
use postcanary::verdict::Verdict;
use support::canary::{wait_for, Daemon};
use support::dns::{DnsServer, Zone};
use support::mailstack::MailStack;
use support::receiver::Receiver;

fn zone() -> Zone {
    Zone::new("kommune.example")
        .mx(10, "mx.kommune.example")
        .a("mx.kommune.example", "127.0.0.1")
        .txt("kommune.example", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.kommune.example", "v=DMARC1; p=reject")
}

/// A receiving server that speaks SMTP but offers no STARTTLS.
async fn plain_mx() -> u16 {
    support::canary::scripted_smtp("old-mx.kommune.example", "250 ok").await
}

fn write_config(dir: &Path, stack: &MailStack, dns: &DnsServer, extra: &str) -> PathBuf {
    std::fs::write(dir.join("borger.pw"), stack.password("borger")).expect("pw");
    let toml = format!(
        r#"[ledger]
url = "sqlite://ledger.db"

[defaults]
schedule = "every 1h"
deadline = "20s"

[[sender]]
name = "citizen"
kind = "mx"
port = {smtp}
nameserver = "{ns}"
from = "Borger <borger@citizen.example>"
require_tls = true
timeout = "10s"

[[inbox]]
name = "borger"
kind = "imap"
host = "127.0.0.1"
port = {imap}
tls = "none"
username = "borger"
password = "file:borger.pw"

[[channel]]
id = "borger-mx"
name = "Borgerservice, sent like a citizen"
kind = "mail"
to = "borger@kommune.example"
via = "citizen"
inbox = "borger"

{extra}"#,
        smtp = stack.smtp_port,
        imap = stack.imap_port,
        ns = dns.addr,
    );
    let path = dir.join("postcanary.toml");
    std::fs::write(&path, toml).expect("config");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mx_sender_delivers_over_tls_and_refuses_a_receiver_without_it() {
    let stack = MailStack::start();
    let dns = DnsServer::start(&zone());
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = plain_mx().await;
    let extra = format!(
        "[[sender]]\nname = \"citizen-old-mx\"\nkind = \"mx\"\nport = {plain}\nnameserver = \"{}\"\n\
         from = \"borger@citizen.example\"\nrequire_tls = true\ntimeout = \"5s\"\n\n\
         [[channel]]\nid = \"old-mx\"\nname = \"old\"\nkind = \"mail\"\nto = \"borger@kommune.example\"\n\
         via = \"citizen-old-mx\"\ninbox = \"borger\"\n",
        dns.addr
    );
    let config = write_config(dir.path(), &stack, &dns, &extra);
    let engine = Engine::start(Config::load(&config).unwrap_or_else(|e| panic!("{e}")))
        .await
        .expect("engine");
    assert!(engine.wait_watchers_connected(Duration::from_secs(15)).await);
    let ch = engine.config.channel("borger-mx").expect("channel").clone();
    let p = engine.check(&[ch]).await.expect("check").remove(0);
    assert_eq!(p.verdict, Verdict::Delivered, "{p:?}\n{}", stack.log_tail());
    let reply = p.smtp_reply.clone().unwrap_or_default();
    assert!(reply.contains("queued as"), "{reply}");
    assert!(
        reply.contains(&format!("by mx.kommune.example [127.0.0.1]:{}", stack.smtp_port)),
        "{reply}"
    );
    assert!(reply.contains("TLSv1.3") || reply.contains("TLSv1.2"), "{reply}");

    let ch = engine.config.channel("old-mx").expect("channel").clone();
    let p = engine.check(&[ch]).await.expect("check").remove(0);
    assert_eq!(p.verdict, Verdict::Rejected, "{p:?}");
    assert!(
        p.detail.unwrap_or_default().contains("does not offer STARTTLS"),
        "names the missing TLS"
    );
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_mx_pages_routing_changed_and_accepting_resolves_it() {
    let stack = MailStack::start();
    let dns = DnsServer::start(&zone());
    let hook = Receiver::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = format!(
        "[dns]\ninterval = \"1s\"\nnameserver = \"{}\"\n\n[[notifier]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"{}\"\n\n\
         [paging]\n",
        dns.addr,
        hook.url("/hook")
    );
    let config = write_config(dir.path(), &stack, &dns, &extra).to_path_buf();
    // The channel has no notify list of its own: the DNS incident goes to the default.
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("[defaults]\n", "[defaults]\nnotify = [\"ops\"]\n");
    std::fs::write(&config, text).expect("config");
    let mut daemon = Daemon::start(&config, &dir.path().join("daemon.log"));
    let ledger = dir.path().join("ledger.db");
    wait_for("the DNS baseline", Duration::from_secs(20), async || {
        let store = SqliteStore::open(&ledger).await.ok()?;
        store.dns_baseline("kommune.example").await.ok().flatten()
    })
    .await;

    // The vendor repoints the MX and drops DMARC.
    dns.set(
        &Zone::new("kommune.example")
            .mx(10, "mx.closed.example")
            .a("mx.closed.example", "127.0.0.2")
            .txt("kommune.example", "v=spf1 ip4:127.0.0.1 -all"),
    );
    let page = wait_for("a routing-changed page", Duration::from_secs(20), async || {
        hook.accepted().into_iter().find(|p| p.json()["event"] == "trigger")
    })
    .await;
    let v = page.json();
    assert_eq!(v["verdict"], "routing_changed", "{v}");
    let detail = v["detail"].as_str().unwrap_or("");
    assert!(
        detail.contains("mx.closed.example") && detail.contains("DMARC"),
        "{detail}"
    );

    // The operator accepts the new routing: the incident resolves on the next look.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .args(["dns", "-c"])
        .arg(&config)
        .args(["--accept", "kommune.example"])
        .output()
        .expect("postcanary dns");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for("the all-clear", Duration::from_secs(20), async || {
        hook.accepted().into_iter().find(|p| p.json()["event"] == "resolve")
    })
    .await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .args(["dns", "-c"])
        .arg(&config)
        .output()
        .expect("postcanary dns");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("kommune.example: as accepted"),
        "{text}"
    );
    assert_eq!(
        hook.accepted()
            .iter()
            .filter(|p| p.json()["event"] == "trigger")
            .count(),
        1
    );
    daemon.terminate();
}
