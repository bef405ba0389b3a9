//! Retention canaries' keys: `retain`, `archive`, `[channel.retain_check]`.

use super::*;

/// The social channel with extra lines (and the rest of CHANNELS).
fn with_social(extra: &str) -> String {
    CHANNELS.replacen("inbox = \"social\"\n", &format!("inbox = \"social\"\n{extra}"), 1)
}

fn load_ok(main: &str, channels: &str) -> Config {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", main);
    d.write("probes/kommune.toml", channels);
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn retain_ages_and_an_archive_folder() {
    let c = load_ok(
        MAIN,
        &with_social("retain = [\"3s\", \"1d\", \"30d\"]\narchive = \"Arkiv/Postcanary\"\n"),
    );
    let r = c.channel("social-mail").unwrap().retain.clone().unwrap();
    assert_eq!(
        r.ages,
        [
            Duration::from_secs(3),
            Duration::from_secs(86_400),
            Duration::from_secs(30 * 86_400)
        ]
    );
    assert!(matches!(&r.place, RetainPlace::Archive(f) if f == "Arkiv/Postcanary"));
    // No `retain`: nothing changes.
    assert!(c.channel("retired-mail").unwrap().retain.is_none());
    let plain = load_ok(MAIN, CHANNELS);
    assert!(plain.channel("social-mail").unwrap().retain.is_none());
}

#[test]
fn retain_alone_keeps_the_canary_in_its_inbox_and_defaults_apply_to_named_places() {
    let c = load_ok(MAIN, &with_social("retain = [\"7d\"]\n"));
    let r = c.channel("social-mail").unwrap().retain.clone().unwrap();
    assert!(matches!(r.place, RetainPlace::Inbox));
    let main = MAIN.replacen(
        "owner = \"it-drift\"\n",
        "owner = \"it-drift\"\nretain = [\"1d\", \"7d\"]\n",
        1,
    );
    let c = load_ok(&main, &with_social("archive = \"Arkiv\"\n"));
    let r = c.channel("social-mail").unwrap().retain.clone().unwrap();
    assert_eq!(r.ages.len(), 2);
    // `[defaults] retain` alone names no place: the channel keeps today's hygiene.
    let c = load_ok(&main, CHANNELS);
    assert!(c.channel("social-mail").unwrap().retain.is_none());
    // `retain = []` turns the defaults off.
    let c = load_ok(&main, &with_social("archive = \"Arkiv\"\nretain = []\n"));
    assert!(c.channel("social-mail").unwrap().retain.is_none());
}

#[test]
fn retain_ages_must_be_positive_and_increasing() {
    let e = one_error(MAIN, &with_social("retain = [\"7d\", \"1d\"]\n"));
    assert_eq!(file_name(&e), "kommune.toml");
    assert_eq!(e.key.as_deref(), Some("channel.retain"));
    assert_eq!(e.line, Some(8));
    assert!(e.message.contains("must increase: 1d comes after 7d"), "{}", e.message);
    let e = one_error(MAIN, &with_social("retain = [\"0s\"]\n"));
    assert!(e.message.contains("longer than zero"), "{}", e.message);
    let e = one_error(MAIN, &with_social("retain = [\"1d\", \"1d\"]\n"));
    assert!(e.message.contains("must increase"), "{}", e.message);
    let e = one_error(MAIN, &with_social("retain = [\"soon\"]\n"));
    assert_eq!(e.line, Some(8));
    assert!(e.message.contains("invalid duration"), "{}", e.message);
}

#[test]
fn a_place_needs_ages_and_only_one_place() {
    let e = one_error(MAIN, &with_social("archive = \"Arkiv\"\n"));
    assert_eq!(e.key.as_deref(), Some("channel.archive"));
    assert!(e.message.contains("needs `retain`"), "{}", e.message);
    let e = one_error(
        MAIN,
        &with_social(
            "retain = [\"1d\"]\narchive = \"Arkiv\"\n[channel.retain_check]\nurl = \"https://sag.example/{token}\"\n",
        ),
    );
    assert!(e.message.contains("not both"), "{}", e.message);
    let bounce = CHANNELS.replacen("expect = \"bounce\"\n", "expect = \"bounce\"\nretain = [\"1d\"]\n", 1);
    let e = one_error(MAIN, &bounce);
    assert!(e.message.contains("whose canary is delivered"), "{}", e.message);
}

#[test]
fn retain_check_keys_are_checked_with_their_line() {
    let check = |body: &str| with_social(&format!("retain = [\"1d\"]\n[channel.retain_check]\n{body}"));
    let e = one_error(MAIN, &check("url = \"http://sag.kommune.example/doc/{token}\"\n"));
    assert_eq!(e.key.as_deref(), Some("channel.retain_check.url"));
    assert_eq!(e.line, Some(10));
    assert!(
        e.message.contains("plain http is accepted only for loopback"),
        "{}",
        e.message
    );
    let e = one_error(MAIN, &check("url = \"https://sag.example/{case}\"\n"));
    assert!(e.message.contains("`{case}` is not known"), "{}", e.message);
    let e = one_error(
        MAIN,
        &check("url = \"https://sag.example/{receipt}\"\nexpect_hash = \"md5\"\n"),
    );
    assert_eq!(e.key.as_deref(), Some("channel.retain_check.expect_hash"));
    assert_eq!(e.line, Some(11));
    let e = one_error(
        MAIN,
        &check("url = \"https://sag.example/{token}\"\nexpect_text = \"x\"\nexpect_hash = \"sha256\"\n"),
    );
    assert!(e.message.contains("not both"), "{}", e.message);
    let e = one_error(
        MAIN,
        &check("url = \"https://sag.example/{token}\"\nheaders = { Authorization = \"Bearer abc\", \"X-Key\" = \"env:POSTCANARY_NOPE_UNSET\" }\n"),
    );
    assert_eq!(e.key.as_deref(), Some("channel.retain_check.headers"));
    assert!(e.message.contains("POSTCANARY_NOPE_UNSET is not set"), "{}", e.message);
    let e = one_error(
        MAIN,
        &check("url = \"https://sag.example/{token}\"\nexpect_status = 999\n"),
    );
    assert!(e.message.contains("not an HTTP status"), "{}", e.message);
    let e = one_error(MAIN, &check("url = \"https://sag.example/{token}\"\nsurprise = 1\n"));
    assert!(e.message.contains("surprise"), "{}", e.message);
}

#[test]
fn an_http_check_with_a_secret_header() {
    std::env::set_var("POSTCANARY_TEST_SAG", "sag-secret");
    let c = load_ok(
        MAIN,
        &with_social(
            "retain = [\"1d\"]\n[channel.retain_check]\nurl = \"https://sag.example/doc?ref={receipt}\"\n\
             expect_text = \"{token}\"\nheaders = { Authorization = \"env:POSTCANARY_TEST_SAG\", Accept = \"text/html\" }\n",
        ),
    );
    let r = c.channel("social-mail").unwrap().retain.clone().unwrap();
    let RetainPlace::Http(h) = &r.place else {
        panic!("{r:?}")
    };
    assert_eq!(h.expect_status, 200);
    assert_eq!(h.expect, HttpExpect::Text("{token}".into()));
    assert_eq!(h.blind_grace, Duration::from_secs(300), "the default, as an inbox's");
    let auth = h.headers.iter().find(|(n, _)| n == "Authorization").unwrap();
    assert_eq!(auth.1.expose(), "sag-secret");
    assert!(
        !format!("{r:?}").contains("sag-secret"),
        "a secret header is redacted in Debug"
    );
    assert_eq!(
        fill(&h.url, "pc-01J", Some("SAG 2026/1"), true).unwrap(),
        "https://sag.example/doc?ref=SAG%202026%2F1"
    );
    assert!(fill(&h.url, "pc-01J", None, true).is_err());
}

#[test]
fn an_http_checks_blind_grace() {
    let c = load_ok(
        MAIN,
        &with_social(
            "retain = [\"1d\"]\n[channel.retain_check]\nurl = \"https://sag.example/{token}\"\nblind_grace = \"90s\"\n",
        ),
    );
    let r = c.channel("social-mail").unwrap().retain.clone().unwrap();
    let RetainPlace::Http(h) = &r.place else {
        panic!("{r:?}")
    };
    assert_eq!(h.blind_grace, Duration::from_secs(90));
    let e = one_error(
        MAIN,
        &with_social(
            "retain = [\"1d\"]\n[channel.retain_check]\nurl = \"https://sag.example/{token}\"\nblind_grace = \"soon\"\n",
        ),
    );
    assert_eq!(e.key.as_deref(), Some("channel.retain_check.blind_grace"), "{e:?}");
}

#[test]
fn a_graph_inbox_holds_retained_canaries_in_a_folder_path() {
    let main = format!(
        "{MAIN}\n[[inbox]]\nname = \"m365\"\nkind = \"graph\"\nusername = \"post@kommune.example\"\n\
         tenant = \"kommune.example\"\nclient_id = \"app\"\nclient_secret = \"env:POSTCANARY_TEST_PW\"\n"
    );
    let channels = CHANNELS.replacen(
        "inbox = \"social\"\n",
        "inbox = \"m365\"\nretain = [\"1d\"]\narchive = \"Arkiv/Postcanary\"\n",
        1,
    );
    let cfg = load_ok(&main, &channels);
    let r = cfg.channels[0].retain.as_ref().expect("retain");
    assert!(
        matches!(&r.place, RetainPlace::Archive(f) if f == "Arkiv/Postcanary"),
        "{:?}",
        r.place
    );
    // A path with an empty part names no Graph folder.
    let channels = CHANNELS.replacen(
        "inbox = \"social\"\n",
        "inbox = \"m365\"\nretain = [\"1d\"]\narchive = \"Arkiv//Postcanary\"\n",
        1,
    );
    let e = one_error(&main, &channels);
    assert_eq!(e.key.as_deref(), Some("channel.archive"));
    assert!(e.message.contains("is a Graph inbox"), "{}", e.message);
}
