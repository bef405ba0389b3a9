use super::*;
use crate::mailpath::parse;

fn kept(name: &str) -> KeptPath {
    let path = format!("{}/tests/fixtures/paths/{name}", env!("CARGO_MANIFEST_DIR"));
    KeptPath::of(&parse(&std::fs::read(path).unwrap()))
}

fn relay(host: &str) -> OurSide {
    OurSide::Relay { host: host.into() }
}

fn strict() -> Policy {
    Policy {
        require_tls: Some(TlsVersion::Tls1_2),
        require_auth: vec![AuthMethod::Spf, AuthMethod::Dkim, AuthMethod::Dmarc],
    }
}

#[test]
fn postfix_path_after_our_submission_meets_tls_1_2_and_auth() {
    let k = kept("postfix.eml");
    // Our relay wrote the oldest hop: that one is ours, the rest is judged.
    assert_eq!(relay("relay.example.net").skip(&k.facts), 1);
    assert_eq!(relay("smtp.elsewhere.example").skip(&k.facts), 1);
    assert_eq!(OurSide::Nothing.skip(&k.facts), 0);
    let a = assess(&k, &relay("relay.example.net"), &strict());
    assert_eq!(a.breaches, Vec::<String>::new());
    assert_eq!(a.weakest, Some(TlsLevel::Tls(TlsVersion::Tls1_3)));
    assert_eq!(a.gateway, "mx.kommune.example");
    // TLS 1.3 required: our own 1.2 submission does not count, the relay → MX hop is 1.3.
    let p13 = Policy {
        require_tls: Some(TlsVersion::Tls1_3),
        require_auth: vec![],
    };
    assert!(assess(&k, &relay("relay.example.net"), &p13).breaches.is_empty());
    // A form's path has nothing of ours: the 1.2 hop is judged.
    assert_eq!(
        assess(&k, &OurSide::Nothing, &p13).breaches,
        vec!["hop prober.example.net → relay.example.net with TLSv1.2, below TLS 1.3".to_string()]
    );
}

#[test]
fn exim_plain_submission_is_ours_and_not_judged() {
    let k = kept("exim.eml");
    let a = assess(&k, &relay("relay.example.net"), &strict());
    assert_eq!(a.breaches, Vec::<String>::new(), "{a:?}");
    // The same path seen as a form's (nothing of ours): the esmtp hop breaks require_tls.
    let a = assess(&k, &OurSide::Nothing, &strict());
    assert_eq!(
        a.breaches,
        vec!["hop prober.example.net → relay.example.net without TLS".to_string()]
    );
    assert_eq!(a.weakest, Some(TlsLevel::Plain));
}

#[test]
fn exchange_online_internal_https_hop_is_tls_unknown() {
    let k = kept("exchange-online.eml");
    let a = assess(&k, &relay("relay.example.net"), &strict());
    // Exchange writes no authserv-id: the gateway is the newest hop's receiver.
    assert_eq!(a.gateway, "AM6PR08MB5678.eurprd08.prod.outlook.com");
    assert_eq!(
        a.breaches,
        vec![
            "hop DB9PR08MB1234.eurprd08.prod.outlook.com → AM6PR08MB5678.eurprd08.prod.outlook.com: TLS unknown (TLS without a stated version)"
                .to_string()
        ]
    );
    // Authentication alone passes.
    let auth_only = Policy {
        require_tls: None,
        require_auth: vec![AuthMethod::Spf, AuthMethod::Dkim, AuthMethod::Dmarc],
    };
    assert!(assess(&k, &relay("relay.example.net"), &auth_only).breaches.is_empty());
}

#[test]
fn gmail_passes_and_a_missing_result_is_unknown() {
    let k = kept("gmail.eml");
    let mut p = strict();
    p.require_auth.push(AuthMethod::Arc);
    let a = assess(&k, &OurSide::Nothing, &p);
    assert_eq!(a.gateway, "mx.google.com");
    assert_eq!(
        a.breaches,
        vec!["ARC unknown: no ARC result at mx.google.com".to_string()]
    );
}

#[test]
fn dmarc_fail_and_plain_hop_on_loopback_between_two_mtas() {
    // What the relay + MX test bed writes: two Postfix on 127.0.0.1, one hop plain.
    let raw = b"Authentication-Results: mx.kommune.example; dmarc=fail (p=reject dis=reject) header.from=example.net\r\n\
Received: from relay.kommune.example (localhost [127.0.0.1])\r\n\tby mx.kommune.example (Postfix) with ESMTP id 1; Tue,  2 Dec 2025 10:15:03 +0100\r\n\
Received: from prober (localhost [127.0.0.1])\r\n\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))\r\n\tby relay.kommune.example (Postfix) with ESMTPS id 2; Tue,  2 Dec 2025 10:15:02 +0100\r\n\r\n";
    let k = KeptPath::of(&parse(raw));
    assert!(!k.facts[1].local, "{k:?}");
    let a = assess(&k, &relay("127.0.0.1"), &strict());
    assert_eq!(
        a.breaches,
        vec![
            "hop relay.kommune.example → mx.kommune.example without TLS".to_string(),
            "SPF unknown: no SPF result at mx.kommune.example".to_string(),
            "DKIM unknown: no DKIM result at mx.kommune.example".to_string(),
            "DMARC fail at mx.kommune.example".to_string(),
        ]
    );
    assert!(a
        .finding()
        .starts_with("hop relay.kommune.example → mx.kommune.example without TLS; "));
    // A content filter on loopback (HELO localhost) stays local.
    let raw = b"Received: from localhost (localhost [127.0.0.1])\r\n\tby mx.kommune.example (Postfix) with ESMTP id 1; Tue,  2 Dec 2025 10:15:03 +0100\r\n\
Received: from mx.kommune.example ([127.0.0.1])\r\n\tby localhost (amavisd-new, port 10024) with ESMTP id 2; Tue,  2 Dec 2025 10:15:02 +0100\r\n\r\n";
    let k = KeptPath::of(&parse(raw));
    assert!(k.facts.iter().all(|f| f.local), "{k:?}");
    assert!(assess(&k, &OurSide::Nothing, &strict()).weakest.is_none());
}

#[test]
fn no_received_line_and_a_hop_without_protocol_are_unknown() {
    let k = KeptPath::of(&parse(b"Subject: x\r\n\r\nbody"));
    let p = Policy {
        require_tls: Some(TlsVersion::Tls1_2),
        require_auth: vec![],
    };
    assert_eq!(
        assess(&k, &OurSide::Nothing, &p).breaches,
        vec!["TLS unknown: the canary carries no Received line".to_string()]
    );
    let k = KeptPath::of(&parse(
        b"Received: from a.example (a.example [192.0.2.1]) by b.example; Tue, 2 Dec 2025 10:15:03 +0100\r\n\r\n",
    ));
    assert_eq!(k.facts[0].tls, TlsLevel::Unknown);
    assert_eq!(
        assess(&k, &OurSide::Nothing, &p).breaches,
        vec!["hop a.example → b.example: TLS unknown (the header does not say)".to_string()]
    );
}

#[test]
fn thousands_of_hops_keep_the_event_small_and_say_unknown() {
    let mut raw = Vec::new();
    for i in 0..3000 {
        raw.extend_from_slice(
            format!(
                "Received: from {h}.example ({h}.example [192.0.2.1]) (using TLSv1.3 with cipher {c}) by {h}{i}.example with ESMTPS id {i}; Tue, 2 Dec 2025 10:15:03 +0100\r\n",
                h = "x".repeat(200),
                c = "C".repeat(250),
            )
            .as_bytes(),
        );
    }
    raw.extend_from_slice(b"\r\n");
    let k = KeptPath::of(&parse(&raw));
    assert_eq!(k.facts.len(), MAX_KEPT_HOPS);
    assert_eq!(k.summary.hops.len(), MAX_KEPT_HOPS);
    let event = k.to_event();
    assert!(event.len() <= MAX_EVENT_BYTES, "{}", event.len());
    assert_eq!(KeptPath::from_event(&event).as_ref(), Some(&k));
    let a = assess(&k, &OurSide::Nothing, &strict());
    assert!(a.incomplete);
    assert!(
        a.breaches[0].starts_with("TLS unknown: the path was cut"),
        "{:?}",
        a.breaches
    );
    assert!(KeptPath::from_event("not json").is_none());
}

#[test]
fn tally_says_every_hop_or_what_failed_how_often() {
    let ok = assess(&kept("postfix.eml"), &relay("relay.example.net"), &strict());
    let mut t = Tally::new(&strict());
    for _ in 0..3 {
        t.add(&ok);
    }
    assert_eq!(
        t.line(),
        "every hop TLS ≥ 1.3; SPF pass, DKIM pass, DMARC pass; policy met by every canary"
    );
    let bad = assess(&kept("exim.eml"), &OurSide::Nothing, &strict());
    let mut t = Tally::new(&strict());
    t.add(&bad);
    t.add(&ok);
    assert_eq!(t.canaries, 2);
    assert_eq!(t.plain, 1);
    assert_eq!(
        t.line(),
        "a hop without TLS in 1 of 2; newest weak hop prober.example.net → relay.example.net; SPF pass, DKIM pass, DMARC pass; policy broken by 1 of 2 (newest: hop prober.example.net → relay.example.net without TLS)"
    );
    let mut t = Tally::new(&Policy::default());
    t.add(&assess(&kept("exchange-online.eml"), &relay("x"), &Policy::default()));
    assert_eq!(t.line(), "TLS unknown on a hop in 1 of 1; newest weak hop DB9PR08MB1234.eurprd08.prod.outlook.com → AM6PR08MB5678.eurprd08.prod.outlook.com; SPF pass, DKIM pass, DMARC pass");
    assert_eq!(Tally::new(&strict()).line(), "no delivered canary with its path");
}

#[test]
fn methods_and_policy_text() {
    assert_eq!(AuthMethod::parse(" DMARC "), Some(AuthMethod::Dmarc));
    assert_eq!(AuthMethod::parse("bimi"), None);
    assert_eq!(strict().describe(), "every hop TLS ≥ 1.2; SPF, DKIM, DMARC pass");
    assert!(Policy::default().is_empty());
}
