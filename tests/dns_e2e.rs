//! The resolver against a real authoritative DNS server (dnsmasq) on loopback.

mod support;

use postcanary::sender::dns::{DnsError, Resolver};
use support::dns::{DnsServer, Zone};

fn zone() -> Zone {
    Zone::new("kommune.example")
        .mx(20, "mx2.kommune.example")
        .mx(10, "mx1.kommune.example")
        .a("mx1.kommune.example", "127.0.0.1")
        .a("mx2.kommune.example", "127.0.0.2")
        .a("noreply.kommune.example", "127.0.0.3")
        .txt("kommune.example", "v=spf1 ip4:127.0.0.1 -all")
        .txt("_dmarc.kommune.example", "v=DMARC1; p=reject")
        .txt("_mta-sts.kommune.example", "v=STSv1; id=20261122")
}

#[tokio::test]
async fn mx_in_preference_order_with_addresses_and_the_implicit_mx() {
    let dns = DnsServer::start(&zone());
    let r = Resolver::with_nameserver(dns.addr);
    let hosts = r.mx("kommune.example").await.expect("mx");
    let got: Vec<(u16, &str, String)> = hosts
        .iter()
        .map(|h| (h.preference, h.host.as_str(), format!("{:?}", h.addrs)))
        .collect();
    assert_eq!(
        got,
        vec![
            (10, "mx1.kommune.example", "[127.0.0.1]".to_string()),
            (20, "mx2.kommune.example", "[127.0.0.2]".to_string())
        ]
    );
    // No MX record: the name itself is the mail server (RFC 5321 §5.1).
    let implicit = r.mx("noreply.kommune.example").await.expect("implicit mx");
    assert_eq!(implicit[0].host, "noreply.kommune.example");
    assert_eq!(format!("{:?}", implicit[0].addrs), "[127.0.0.3]");
    assert!(matches!(r.mx("gone.kommune.example").await, Err(DnsError::NxDomain(_))));
}

#[tokio::test]
async fn snapshots_diff_and_a_dead_server_is_an_error_not_an_empty_answer() {
    let dns = DnsServer::start(&zone());
    let r = Resolver::with_nameserver(dns.addr);
    let before = r.snapshot("kommune.example").await.expect("snapshot");
    assert_eq!(before.mx, vec!["10 mx1.kommune.example", "20 mx2.kommune.example"]);
    assert_eq!(before.spf.as_deref(), Some("v=spf1 ip4:127.0.0.1 -all"));
    assert_eq!(before.dmarc.as_deref(), Some("v=DMARC1; p=reject"));
    assert_eq!(before.mta_sts.as_deref(), Some("v=STSv1; id=20261122"));

    dns.set(
        &Zone::new("kommune.example")
            .mx(10, "mx.closed.example")
            .a("mx.closed.example", "127.0.0.9")
            .txt("kommune.example", "v=spf1 ip4:127.0.0.1 -all")
            .txt("_mta-sts.kommune.example", "v=STSv1; id=20261122"),
    );
    let after = r.snapshot("kommune.example").await.expect("snapshot");
    let changes: Vec<String> = before.diff(&after).iter().map(ToString::to_string).collect();
    assert_eq!(
        changes,
        vec![
            "MX changed: [10 mx1.kommune.example, 20 mx2.kommune.example] → [10 mx.closed.example]",
            "DMARC removed (was v=DMARC1; p=reject)",
        ]
    );

    dns.stop();
    let e = r.snapshot("kommune.example").await.expect_err("no server");
    assert!(matches!(e, DnsError::Timeout(_) | DnsError::Other(_)), "{e:?}");
    // A domain the server does not serve is refused: no answer, not "no records".
    let other = DnsServer::start(&zone());
    let r = Resolver::with_nameserver(other.addr);
    assert!(r.snapshot("elsewhere.example").await.is_err());
}
