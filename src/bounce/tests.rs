use super::*;

const TOKEN: &str = "pc-01JDXQ5V7Z9R3M8K2N4P6S0T1W-0123456789abcdef";
const MSG_ID: &str = "pc-01JDXQ5V7Z9R3M8K2N4P6S0T1W-0123456789abcdef@postcanary.invalid";

macro_rules! fixture {
    ($name:literal) => {
        (
            $name,
            include_bytes!(concat!("../../tests/fixtures/bounces/", $name, ".eml")) as &[u8],
        )
    };
}

const FIXTURES: &[(&str, &[u8])] = &[
    fixture!("postfix-failed"),
    fixture!("postfix-delayed"),
    fixture!("postfix-relayed"),
    fixture!("exim-classic"),
    fixture!("exim-dsn"),
    fixture!("exchange-ndr"),
    fixture!("office365-recipient-not-found"),
    fixture!("office365-access-denied"),
    fixture!("gmail-address-not-found"),
    fixture!("qmail"),
    fixture!("sendmail-dsn"),
    fixture!("sendmail-classic"),
    fixture!("rfc3464-multi-recipient"),
    fixture!("autoreply-rfc3834"),
    fixture!("autoreply-exchange"),
    fixture!("autoreply-danish"),
    fixture!("ordinary-mentions-bounce"),
    fixture!("probe-delivered"),
];

fn get(name: &str) -> Bounce {
    let raw = FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, r)| *r)
        .unwrap_or_else(|| panic!("no fixture {name}"));
    parse(raw).unwrap_or_else(|| panic!("{name}: not recognised"))
}

/// (address, action, status) of every recipient.
fn rcpts(b: &Bounce) -> Vec<(&str, &str, Option<&str>)> {
    b.recipients
        .iter()
        .map(|r| (r.address.as_str(), r.action.as_str(), r.status.as_deref()))
        .collect()
}

/// Every bounce of the corpus is tied to the probe by token and Message-ID.
fn assert_tied(name: &str, b: &Bounce) {
    assert!(
        b.tokens.iter().any(|t| t == TOKEN),
        "{name}: token missing: {:?}",
        b.tokens
    );
    assert_eq!(b.original_message_id.as_deref(), Some(MSG_ID), "{name}");
}

#[test]
fn postfix_failed() {
    let b = get("postfix-failed");
    // Postfix marks its bounces Auto-Submitted: auto-replied; still a DSN.
    assert_eq!(b.kind, BounceKind::Failed);
    assert!(b.is_failure());
    assert_eq!(b.reporting_mta.as_deref(), Some("mail.example.net"));
    assert_eq!(rcpts(&b), vec![("social@kommune.example", "failed", Some("5.1.1"))]);
    assert_eq!(b.recipients[0].remote_mta.as_deref(), Some("mx.kommune.example"));
    assert_eq!(
        b.recipients[0].diagnostic.as_deref(),
        Some("smtp; 550 5.1.1 <social@kommune.example>: Recipient address rejected: User unknown in local recipient table")
    );
    assert_eq!(
        b.reason,
        "550 5.1.1 <social@kommune.example>: Recipient address rejected: User unknown in local recipient table \
         (reported by mx.kommune.example)"
    );
    assert_tied("postfix-failed", &b);
}

#[test]
fn postfix_delayed_is_not_a_failure() {
    let b = get("postfix-delayed");
    assert_eq!(b.kind, BounceKind::Delayed);
    assert!(!b.is_failure());
    assert_eq!(
        rcpts(&b),
        vec![("borgerservice@kommune.example", "delayed", Some("4.4.1"))]
    );
    assert_eq!(
        b.reason,
        "connect to mx.kommune.example[192.0.2.25]:25: Connection timed out (reported by mail.example.net)"
    );
    // The original comes back as text/rfc822-headers.
    assert_tied("postfix-delayed", &b);
}

#[test]
fn postfix_success_dsn_is_relayed() {
    let b = get("postfix-relayed");
    assert_eq!(b.kind, BounceKind::Relayed);
    assert!(!b.is_failure());
    assert_eq!(rcpts(&b), vec![("social@kommune.example", "relayed", Some("2.0.0"))]);
    assert_eq!(
        b.reason,
        "250 2.0.0 Ok: queued as 7F3A21C0042 (reported by mx.kommune.example)"
    );
    assert_tied("postfix-relayed", &b);
}

#[test]
fn exim_classic_text() {
    let b = get("exim-classic");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(rcpts(&b), vec![("social@kommune.example", "failed", Some("5.1.1"))]);
    assert_eq!(b.recipients[0].remote_mta.as_deref(), Some("mx.kommune.example"));
    assert_eq!(
        b.reason,
        "550 5.1.1 <social@kommune.example>: Recipient address rejected: User unknown (reported by mx.kommune.example)"
    );
    assert_tied("exim-classic", &b);
}

#[test]
fn exim_delay_warning() {
    let raw = format!(
        "From: Mail Delivery System <Mailer-Daemon@mail.example.net>\nTo: bounce@example.net\n\
         Auto-Submitted: auto-replied\nSubject: Warning: message 1tAbCd-000Q2x-1a delayed 24 hours\n\n\
         This message was created automatically by mail delivery software.\n\
         A message that you sent has not yet been delivered to one or more of its\n\
         recipients after more than 24 hours on the queue on mail.example.net.\n\n\
         The message identifier is:     1tAbCd-000Q2x-1a\n\
         The subject of the message is: [postcanary test] Automatisk test / automated test - {TOKEN}\n\n\
         The address(es) that have not yet been delivered are:\n\n\
         \x20 social@kommune.example\n\
         \x20   host mx.kommune.example [192.0.2.25]: Connection timed out\n\n\
         No action is required on your part. Delivery attempts will continue for\n\
         some time, and this warning may be repeated at intervals if the message\n\
         remains undelivered.\n"
    );
    let b = parse(raw.as_bytes()).unwrap_or_else(|| panic!("not recognised"));
    assert_eq!(b.kind, BounceKind::Delayed);
    assert!(!b.is_failure());
    assert_eq!(rcpts(&b), vec![("social@kommune.example", "delayed", None)]);
    assert_eq!(b.reason, "Connection timed out (reported by mx.kommune.example)");
    assert_eq!(b.tokens, vec![TOKEN.to_string()]);
}

#[test]
fn exim_rfc3464() {
    let b = get("exim-dsn");
    assert_eq!(b.kind, BounceKind::Failed);
    // Exim writes Action before Final-Recipient: still one recipient.
    assert_eq!(
        rcpts(&b),
        vec![("borgerservice@kommune.example", "failed", Some("5.0.0"))]
    );
    assert_eq!(
        b.reason,
        "554 5.7.1 Message rejected as spam (reported by mx2.kommune.example)"
    );
    assert_tied("exim-dsn", &b);
}

#[test]
fn exchange_on_premises_ndr() {
    let b = get("exchange-ndr");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(b.reporting_mta.as_deref(), Some("exch01.kommune.example"));
    assert_eq!(
        rcpts(&b),
        vec![("sagsbehandler@kommune.example", "failed", Some("5.1.1"))]
    );
    assert_eq!(
        b.reason,
        "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found (reported by exch01.kommune.example)"
    );
    assert_tied("exchange-ndr", &b);
}

#[test]
fn office365_recipient_not_found() {
    let b = get("office365-recipient-not-found");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(rcpts(&b), vec![("social@kommune.example", "failed", Some("5.1.10"))]);
    assert_eq!(
        b.reason,
        "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup \
         (reported by am0pr01mb1234.eurprd01.prod.exchangelabs.com)"
    );
    assert_tied("office365-recipient-not-found", &b);
}

#[test]
fn office365_access_denied_with_base64_report() {
    let b = get("office365-access-denied");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(rcpts(&b), vec![("post@kommune.example", "failed", Some("5.4.1"))]);
    assert!(
        b.reason
            .starts_with("550 5.4.1 Recipient address rejected: Access denied. AS(201806281)"),
        "{}",
        b.reason
    );
    assert!(b
        .reason
        .ends_with("(reported by db9eur01ft012.mail.protection.outlook.com)"));
    assert_tied("office365-access-denied", &b);
}

#[test]
fn ndr_prose_alone_is_enough() {
    // Without the machine-readable part, the human text still gives the facts.
    for (name, addr, reply) in [
        (
            "office365-recipient-not-found",
            "social@kommune.example",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        ),
        (
            "office365-access-denied",
            "post@kommune.example",
            "550 5.4.1 Recipient address rejected: Access denied.",
        ),
        (
            "exchange-ndr",
            "sagsbehandler@kommune.example",
            "550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
        ),
        (
            "gmail-address-not-found",
            "nobody@kommune.example",
            "550 5.1.1 <nobody@kommune.example>: Recipient address rejected: User unknown in virtual mailbox table",
        ),
    ] {
        let raw = FIXTURES.iter().find(|f| f.0 == name).map(|f| f.1).unwrap_or_default();
        let stripped = String::from_utf8_lossy(raw).replace("message/delivery-status", "application/x-stripped");
        let b = parse(stripped.as_bytes()).unwrap_or_else(|| panic!("{name}: not recognised"));
        assert_eq!(b.kind, BounceKind::Failed, "{name}");
        assert_eq!(b.recipients.len(), 1, "{name}: {:?}", b.recipients);
        assert_eq!(b.recipients[0].address, addr, "{name}");
        assert_eq!(b.recipients[0].diagnostic.as_deref(), Some(reply), "{name}");
        assert!(b.reason.starts_with(reply), "{name}: {}", b.reason);
        assert!(b.tokens.iter().any(|t| t == TOKEN), "{name}");
    }
}

#[test]
fn gmail_address_not_found() {
    let b = get("gmail-address-not-found");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(b.reporting_mta.as_deref(), Some("googlemail.com"));
    assert_eq!(rcpts(&b), vec![("nobody@kommune.example", "failed", Some("5.1.1"))]);
    assert_eq!(b.recipients[0].remote_mta.as_deref(), Some("mx.kommune.example"));
    assert_eq!(
        b.reason,
        "550 5.1.1 <nobody@kommune.example>: Recipient address rejected: User unknown in virtual mailbox table \
         (reported by mx.kommune.example)"
    );
    assert_tied("gmail-address-not-found", &b);
}

#[test]
fn qmail_qsbmf() {
    let b = get("qmail");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(b.reporting_mta.as_deref(), Some("mail.example.net"));
    assert_eq!(rcpts(&b), vec![("kontakt@kommune.example", "failed", Some("5.1.1"))]);
    assert_eq!(
        b.reason,
        "550 5.1.1 <kontakt@kommune.example>: Recipient address rejected: User unknown (reported by 192.0.2.25)"
    );
    assert_tied("qmail", &b);
}

#[test]
fn sendmail_with_dsn() {
    let b = get("sendmail-dsn");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(rcpts(&b), vec![("info@kommune.example", "failed", Some("5.1.1"))]);
    assert_eq!(
        b.reason,
        "550 5.1.1 <info@kommune.example>... User unknown (reported by mx.kommune.example)"
    );
    assert_tied("sendmail-dsn", &b);
}

#[test]
fn sendmail_classic_text() {
    let b = get("sendmail-classic");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(rcpts(&b), vec![("post@kommune.example", "failed", Some("5.1.1"))]);
    assert_eq!(b.recipients[0].remote_mta.as_deref(), Some("mx.kommune.example"));
    assert_eq!(
        b.reason,
        "550 5.1.1 <post@kommune.example>... User unknown (reported by mx.kommune.example)"
    );
    assert_tied("sendmail-classic", &b);
}

#[test]
fn rfc3464_multi_recipient_fails_if_any_failed() {
    let b = get("rfc3464-multi-recipient");
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(b.reporting_mta.as_deref(), Some("relay.example.net"));
    assert_eq!(
        rcpts(&b),
        vec![
            ("borgmester@kommune.example", "failed", Some("5.0.0")),
            ("arkiv@kommune.example", "delayed", Some("4.0.0")),
            ("byraad@kommune.example", "failed", Some("5.0.0")),
        ]
    );
    assert_eq!(
        b.reason,
        "550 'borgmester@kommune.example' is not a registered gateway user (reported by gw.kommune.example)"
    );
    assert_tied("rfc3464-multi-recipient", &b);
}

#[test]
fn auto_replies() {
    for name in ["autoreply-rfc3834", "autoreply-exchange"] {
        let b = get(name);
        assert_eq!(b.kind, BounceKind::AutoReply, "{name}");
        assert!(!b.is_failure());
        assert_eq!(
            rcpts(&b),
            vec![("social@kommune.example", "auto-replied", None)],
            "{name}"
        );
        assert_tied(name, &b);
    }
    let b = get("autoreply-exchange");
    assert_eq!(
        b.reason,
        format!("auto-reply from social@kommune.example: Automatic reply: [postcanary test] Automatisk test / automated test - {TOKEN}")
    );

    // Danish, encoded subject, X-Autoreply and no In-Reply-To: tied by token only.
    let b = get("autoreply-danish");
    assert_eq!(b.kind, BounceKind::AutoReply);
    assert_eq!(b.tokens, vec![TOKEN.to_string()]);
    assert_eq!(b.original_message_id, None);
    assert!(
        b.reason
            .starts_with("auto-reply from borgerservice@kommune.example: Fraværende:"),
        "{}",
        b.reason
    );
}

#[test]
fn ordinary_mail_is_not_a_bounce() {
    assert_eq!(
        parse(
            FIXTURES
                .iter()
                .find(|f| f.0 == "ordinary-mentions-bounce")
                .map(|f| f.1)
                .unwrap_or_default()
        ),
        None
    );
    // The probe itself (Auto-Submitted: auto-generated, X-Auto-Response-Suppress)
    // arriving somewhere is a delivery, not an auto-reply.
    assert_eq!(
        parse(
            FIXTURES
                .iter()
                .find(|f| f.0 == "probe-delivered")
                .map(|f| f.1)
                .unwrap_or_default()
        ),
        None
    );
    let plain = b"From: a@example.net\r\nTo: b@example.net\r\nSubject: Undeliverable parcels\r\n\r\nThe parcel couldn't be delivered.\r\n";
    assert_eq!(parse(plain), None);
}

#[test]
fn other_auto_reply_headers() {
    let raw = format!(
        "From: kontakt@kommune.example\r\nTo: canary@example.net\r\nSubject: Tak for din henvendelse\r\n\
         X-Autorespond: Tak for din henvendelse\r\nIn-Reply-To: <{MSG_ID}>\r\n\r\nVi svarer inden for 5 dage.\r\n"
    );
    let b = parse(raw.as_bytes()).unwrap_or_else(|| panic!("not recognised"));
    assert_eq!(b.kind, BounceKind::AutoReply);
    assert_eq!(b.original_message_id.as_deref(), Some(MSG_ID));
    assert_eq!(b.tokens, vec![TOKEN.to_string()]);

    // Two weak signals (inbox rule loop + auto-generated) count; one does not.
    let weak = "From: x@kommune.example\r\nSubject: Modtaget\r\nAuto-Submitted: auto-generated\r\n\
                X-MS-Exchange-Inbox-Rules-Loop: x@kommune.example\r\n\r\nok\r\n";
    assert_eq!(parse(weak.as_bytes()).map(|b| b.kind), Some(BounceKind::AutoReply));
    let one = "From: x@kommune.example\r\nSubject: Kvittering\r\nAuto-Submitted: auto-generated\r\n\r\nok\r\n";
    assert_eq!(parse(one.as_bytes()), None);
}

#[test]
fn long_reasons_are_cut() {
    let long = "x".repeat(2000);
    let raw = format!(
        "From: MAILER-DAEMON@example.net\r\nSubject: Undelivered Mail\r\n\
         Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n\
         --b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.net\r\n\r\n\
         Final-Recipient: rfc822; a@kommune.example\r\nAction: failed\r\nStatus: 5.0.0\r\n\
         Diagnostic-Code: smtp; 550 {long}\r\n\r\n--b--\r\n"
    );
    let b = parse(raw.as_bytes()).unwrap_or_else(|| panic!("not recognised"));
    assert_eq!(b.kind, BounceKind::Failed);
    assert_eq!(b.reason.chars().count(), MAX_REASON);
    assert!(b.reason.starts_with("550 xxx"));
}

#[test]
fn hostile_input_gives_none_or_partial() {
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"\xff\xfe\x00garbage".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=\"\"\r\n\r\n--\r\n--\r\n".to_vec(),
        b"From: MAILER-DAEMON@x\r\nSubject: Undelivered Mail\r\nX-Failed-Recipients: \xff@\xfe, ,,<>\r\n\r\n\xc3"
            .to_vec(),
    ];
    // Deeply nested multiparts and nested message/rfc822.
    cases.push(
        "Content-Type: multipart/report; report-type=delivery-status; boundary=a\r\n\r\n--a\r\n"
            .repeat(5000)
            .into_bytes(),
    );
    cases.push("Content-Type: message/rfc822\r\n\r\n".repeat(5000).into_bytes());
    // A huge header and a huge DSN.
    let mut huge = b"Subject: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 6 << 20));
    huge.extend(b"\r\nX-Failed-Recipients: a@b\r\n\r\nbody");
    cases.push(huge);
    let mut many = b"From: MAILER-DAEMON@x\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n".to_vec();
    for i in 0..20_000 {
        many.extend(format!("Final-Recipient: rfc822; u{i}@kommune.example\r\nAction: failed\r\n\r\n").as_bytes());
    }
    cases.push(many);
    for raw in &cases {
        if let Some(b) = parse(raw) {
            assert!(b.reason.chars().count() <= MAX_REASON);
            assert!(b.recipients.len() <= MAX_RECIPIENTS);
            assert!(b.tokens.len() <= MAX_TOKENS);
        }
    }
}

/// A small deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn fixtures_truncated_and_mangled_never_panic() {
    const INTERESTING: &[u8] = b"\r\n-:;<>@=\"\\ \t\x00\xff\xc3";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for (name, raw) in FIXTURES {
        // Truncated at ~100 offsets spread over the message, plus the ends.
        let step = (raw.len() / 100).max(1);
        for cut in (0..raw.len()).step_by(step).chain([raw.len().saturating_sub(1)]) {
            if let Some(b) = parse(&raw[..cut]) {
                assert!(b.reason.chars().count() <= MAX_REASON, "{name} cut at {cut}");
            }
        }
        // Random byte flips and insertions of characters that matter to parsers.
        for round in 0..150 {
            let mut m = raw.to_vec();
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(m.len());
                match rng.below(3) {
                    0 => m[at] ^= 1 << rng.below(8),
                    1 => m[at] = INTERESTING[rng.below(INTERESTING.len())],
                    _ => m.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
                }
            }
            if rng.below(4) == 0 {
                m.truncate(rng.below(m.len()));
            }
            if let Some(b) = parse(&m) {
                assert!(b.reason.chars().count() <= MAX_REASON, "{name} round {round}");
            }
        }
    }
}
