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

#[test]
#[ignore]
fn dump() {
    for (name, raw) in FIXTURES {
        println!("== {name}\n{:#?}", parse(raw));
    }
}
