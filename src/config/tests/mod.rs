//! Config loading: a valid layout, and one test per way of getting it wrong,
//! each checking that the error names the right file, line and key.

use super::*;

mod retain;
mod scale;
mod sections;
mod vantage;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, text).unwrap();
        p
    }
}

const MAIN: &str = r#"include = ["probes/*.toml"]

[ledger]
url = "sqlite://state/ledger.db"

[defaults]
schedule = "every 10m"
deadline = "15m"
owner = "it-drift"

[[sender]]
name = "relay"
kind = "smtp"
host = "127.0.0.1"
port = 2525
tls = "none"
from = "Postcanary <canary@kommune.example>"

[[inbox]]
name = "social"
kind = "imap"
host = "127.0.0.1"
port = 1143
tls = "none"
username = "social"
password = "env:POSTCANARY_TEST_PW"
after_confirm = "move:Postcanary"
"#;

const CHANNELS: &str = r#"[[channel]]
id = "social-mail"
name = "Social og Familie"
kind = "mail"
to = "social@kommune.example"
via = "relay"
inbox = "social"

[[channel]]
id = "retired-mail"
name = "Old address"
kind = "mail"
to = "retired@kommune.example"
expect = "bounce"
schedule = "*/5 * * * *"
deadline = "2m"
"#;

fn set_pw() {
    std::env::set_var("POSTCANARY_TEST_PW", "pw-from-env");
}

/// Loads a config made of MAIN (with `main_edit` applied) and CHANNELS
/// (with `channels_edit`), returning the errors.
fn errors_of(main: &str, channels: &str) -> Vec<ConfigError> {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", main);
    d.write("probes/kommune.toml", channels);
    match Config::load(&path) {
        Ok(_) => panic!("config should be invalid"),
        Err(e) => e.0,
    }
}

fn one_error(main: &str, channels: &str) -> ConfigError {
    let errs = errors_of(main, channels);
    assert_eq!(errs.len(), 1, "expected one error, got {errs:#?}");
    errs.into_iter().next().unwrap()
}

fn file_name(e: &ConfigError) -> String {
    e.file.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn valid_config_with_includes_and_defaults() {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", MAIN);
    d.write("probes/kommune.toml", CHANNELS);
    let c = Config::load(&path).unwrap();
    assert_eq!(c.channels.len(), 2);
    let social = c.channel("social-mail").unwrap();
    assert_eq!(social.deadline, Duration::from_secs(900));
    assert_eq!(social.owner, "it-drift");
    assert_eq!(social.expect, Expect::Deliver);
    assert!(social.jitter_offset < Duration::from_secs(60));
    let retired = c.channel("retired-mail").unwrap();
    assert_eq!(retired.expect, Expect::Bounce);
    assert_eq!(retired.deadline, Duration::from_secs(120));
    assert!(
        matches!(&retired.kind, ChannelKind::Mail { via, .. } if via == "relay"),
        "sole sender is the default"
    );
    assert_eq!(c.inbox("social").unwrap().password.expose(), "pw-from-env");
    assert_eq!(
        c.inbox("social").unwrap().after_confirm,
        AfterConfirm::Move("Postcanary".into())
    );
    assert_eq!(
        c.ledger.backend,
        LedgerBackend::Sqlite(d.0.path().join("state/ledger.db"))
    );
}

#[test]
fn jitter_spreads_channels_and_is_stable() {
    let a = jitter_offset("social-mail", Duration::from_secs(60), Duration::from_secs(600));
    let b = jitter_offset("borger-mail", Duration::from_secs(60), Duration::from_secs(600));
    assert_ne!(a, b);
    assert_eq!(
        a,
        jitter_offset("social-mail", Duration::from_secs(60), Duration::from_secs(600))
    );
    // Never more than half the interval.
    assert!(jitter_offset("x", Duration::from_secs(600), Duration::from_secs(10)) < Duration::from_secs(5));
}

#[test]
fn unknown_key_in_main_file() {
    let e = one_error(&MAIN.replace("url = ", "ulr = "), CHANNELS);
    assert_eq!(file_name(&e), "postcanary.toml");
    assert_eq!(e.line, Some(4));
    assert_eq!(e.key.as_deref(), Some("ledger.ulr"));
    assert!(e.message.contains("unknown field `ulr`"), "{e}");
}

#[test]
fn unknown_key_in_included_channel() {
    let e = one_error(MAIN, &CHANNELS.replace("inbox = \"social\"", "inbx = \"social\""));
    assert_eq!(file_name(&e), "kommune.toml");
    assert_eq!(e.line, Some(7));
    assert_eq!(e.key.as_deref(), Some("channel.inbx"));
}

#[test]
fn bad_duration_names_its_line() {
    let e = one_error(MAIN, &CHANNELS.replace("deadline = \"2m\"", "deadline = \"2 minutes\""));
    assert_eq!(file_name(&e), "kommune.toml");
    assert_eq!(e.line, Some(16));
    assert_eq!(e.key.as_deref(), Some("channel.deadline"));
    assert!(e.message.contains("invalid duration"), "{e}");
}

#[test]
fn bad_schedule() {
    let e = one_error(MAIN, &CHANNELS.replace("*/5 * * * *", "*/5 * * *"));
    assert_eq!(e.line, Some(15));
    assert_eq!(e.key.as_deref(), Some("channel.schedule"));
    let e = one_error(&MAIN.replace("every 10m", "every ten minutes"), CHANNELS);
    assert_eq!((e.line, e.key.as_deref()), (Some(7), Some("defaults.schedule")));
}

#[test]
fn inline_password_is_refused_without_echoing_it() {
    let e = one_error(&MAIN.replace("env:POSTCANARY_TEST_PW", "Hunter2Secret"), CHANNELS);
    assert_eq!(e.line, Some(26));
    assert_eq!(e.key.as_deref(), Some("inbox.password"));
    assert!(!e.to_string().contains("Hunter2Secret"), "{e}");
}

#[test]
fn missing_env_secret_names_the_variable() {
    let e = one_error(
        &MAIN.replace("env:POSTCANARY_TEST_PW", "env:POSTCANARY_NOT_SET_ANYWHERE"),
        CHANNELS,
    );
    assert_eq!((e.line, e.key.as_deref()), (Some(26), Some("inbox.password")));
    assert!(e.message.contains("POSTCANARY_NOT_SET_ANYWHERE is not set"), "{e}");
}

#[test]
fn unknown_sender_and_inbox_references() {
    let errs = errors_of(
        MAIN,
        &CHANNELS
            .replace("via = \"relay\"", "via = \"relya\"")
            .replace("inbox = \"social\"", "inbox = \"socail\""),
    );
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert_eq!((errs[0].line, errs[0].key.as_deref()), (Some(6), Some("channel.via")));
    assert!(errs[0].message.contains("no [[sender]] named \"relya\""));
    assert_eq!((errs[1].line, errs[1].key.as_deref()), (Some(7), Some("channel.inbox")));
}

#[test]
fn duplicate_and_malformed_ids() {
    let dup = CHANNELS.replace("id = \"retired-mail\"", "id = \"social-mail\"");
    let e = one_error(MAIN, &dup);
    assert_eq!((e.line, e.key.as_deref()), (Some(10), Some("channel.id")));
    assert!(e.message.contains("already defined"));
    let e = one_error(
        MAIN,
        &CHANNELS.replace("id = \"retired-mail\"", "id = \"Retired_Mail\""),
    );
    assert!(e.message.contains("kebab-case"), "{e}");
}

#[test]
fn plaintext_only_on_loopback() {
    let main = MAIN.replacen("host = \"127.0.0.1\"", "host = \"smtp.example.net\"", 1);
    let e = one_error(&main, CHANNELS);
    assert_eq!((e.line, e.key.as_deref()), (Some(16), Some("sender.tls")));
    assert!(e.message.contains("loopback"));
}

#[test]
fn missing_required_fields() {
    let e = one_error(MAIN, &CHANNELS.replace("to = \"social@kommune.example\"\n", ""));
    assert_eq!((e.line, e.key.as_deref()), (Some(1), Some("channel.to")));
    let e = one_error(MAIN, &CHANNELS.replace("inbox = \"social\"\n", ""));
    assert!(e.message.contains("needs `inbox`"), "{e}");
    // A field serde requires: the error comes from the parser, with the table's line.
    let e = one_error(MAIN, &CHANNELS.replace("name = \"Old address\"\n", ""));
    assert_eq!(file_name(&e), "kommune.toml");
    assert!(e.message.contains("missing field `name`"), "{e}");
    assert_eq!(e.key.as_deref(), Some("channel.name"));
}

#[test]
fn bad_addresses() {
    let e = one_error(MAIN, &CHANNELS.replace("social@kommune.example", "social(at)kommune"));
    assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("channel.to")));
    let e = one_error(&MAIN.replace("<canary@kommune.example>", "<canary>"), CHANNELS);
    assert_eq!((e.line, e.key.as_deref()), (Some(17), Some("sender.from")));
}

#[test]
fn include_that_matches_nothing() {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", &MAIN.replace("probes/*.toml", "probse/*.toml"));
    let errs = Config::load(&path).unwrap_err().0;
    assert_eq!((errs[0].line, errs[0].key.as_deref()), (Some(1), Some("include")));
    assert!(errs[0].message.contains("matches no file"));
}

#[test]
fn included_files_may_not_hold_shared_sections() {
    let e = one_error(MAIN, &format!("{CHANNELS}\n[ledger]\nurl = \"sqlite://x.db\"\n"));
    assert_eq!(file_name(&e), "kommune.toml");
    assert!(e.message.contains("unknown field `ledger`"), "{e}");
}

#[test]
fn toml_syntax_error_names_line() {
    let e = one_error(
        MAIN,
        &CHANNELS.replace("kind = \"mail\"\nto = \"retired", "kind = \"mail\nto = \"retired"),
    );
    assert_eq!(file_name(&e), "kommune.toml");
    assert_eq!(e.line, Some(12));
}

#[test]
fn wrong_value_type_and_enum() {
    let e = one_error(&MAIN.replace("port = 2525", "port = \"2525\""), CHANNELS);
    assert_eq!((e.line, e.key.as_deref()), (Some(15), Some("sender.port")));
    let e = one_error(MAIN, &CHANNELS.replace("expect = \"bounce\"", "expect = \"bounces\""));
    assert_eq!((e.line, e.key.as_deref()), (Some(14), Some("channel.expect")));
    let e = one_error(&MAIN.replace("move:Postcanary", "archive"), CHANNELS);
    assert_eq!((e.line, e.key.as_deref()), (Some(27), Some("inbox.after_confirm")));
}

#[test]
fn postgres_ledger_keys_and_their_errors() {
    // A URL without a user names the line of `url`.
    let e = one_error(
        &MAIN.replace("sqlite://state/ledger.db", "postgres://db/canary"),
        CHANNELS,
    );
    assert_eq!((e.line, e.key.as_deref()), (Some(4), Some("ledger.url")));
    assert!(e.message.contains("user"), "{}", e.message);
    // A password in the URL is refused without being repeated.
    let e = one_error(
        &MAIN.replace("sqlite://state/ledger.db", "postgres://canary:hunter2@db/canary"),
        CHANNELS,
    );
    assert_eq!(e.key.as_deref(), Some("ledger.url"));
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // Postgres keys on a SQLite ledger, and `ha` without Postgres.
    let e = one_error(
        &MAIN.replace(
            "url = \"sqlite://state/ledger.db\"",
            "url = \"sqlite://l.db\"\nha = true",
        ),
        CHANNELS,
    );
    assert_eq!((e.line, e.key.as_deref()), (Some(5), Some("ledger.ha")));
    // A full Postgres ledger with HA loads; the CA file is taken from the config's directory.
    set_pw();
    let d = Dir::new();
    let main = MAIN.replace(
        "url = \"sqlite://state/ledger.db\"",
        "url = \"postgres://canary@db.kommune.example/postcanary\"\npassword = \"env:POSTCANARY_TEST_PW\"\n\
         ca_file = \"pg-ca.pem\"\nha = true\nlease = \"20s\"\ninstance = \"vm-1\"",
    );
    let path = d.write("postcanary.toml", &main);
    d.write("probes/kommune.toml", CHANNELS);
    let c = Config::load(&path).unwrap();
    let LedgerBackend::Postgres(pg) = &c.ledger.backend else {
        panic!("expected a Postgres ledger");
    };
    assert_eq!(pg.display(), "postgres://canary@db.kommune.example:5432/postcanary");
    assert_eq!(pg.password.as_ref().map(Secret::expose), Some("pw-from-env"));
    assert_eq!(pg.ca_file.as_deref(), Some(d.0.path().join("pg-ca.pem").as_path()));
    assert!(!format!("{:?}", c.ledger).contains("pw-from-env"));
    let ha = c.ledger.ha.as_ref().unwrap();
    assert_eq!(
        (ha.lease, ha.instance.as_deref()),
        (Duration::from_secs(20), Some("vm-1"))
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let errs = errors_of(
        &MAIN.replace("<canary@kommune.example>", "<bad>"),
        &CHANNELS
            .replace("deadline = \"2m\"", "deadline = \"0s\"")
            .replace("id = \"retired-mail\"", "id = \"social-mail\""),
    );
    assert!(errs.len() >= 3, "{errs:#?}");
    for e in &errs {
        assert!(e.line.is_some() && e.key.is_some(), "{e}");
    }
}

#[test]
fn missing_main_file() {
    let d = Dir::new();
    let errs = Config::load(&d.0.path().join("nope.toml")).unwrap_err().0;
    assert!(errs[0].message.contains("cannot read config file"));
}

const PAGING: &str = r#"
[defaults]
notify = ["ops"]

[paging]
reminder_interval = "2h"
fallback_after = "5m"

[heartbeat]
url = "env:POSTCANARY_TEST_PW"
interval = "30s"

[[notifier]]
name = "ops"
kind = "pagerduty"
routing_key = "env:POSTCANARY_TEST_PW"
fallback = "mail-ops"

[[notifier]]
name = "mail-ops"
kind = "email"
via = "relay"
to = ["it-vagt@kommune.example"]

[[owner]]
name = "social"
notify = ["mail-ops"]

[[silence]]
owner = "social"
until = "2026-12-01T06:00:00+01:00"
reason = "mailbox migration"
"#;

fn with_paging(main: &str) -> String {
    // [defaults] of MAIN is replaced by the one in PAGING.
    let without_defaults = main.replace(
        "[defaults]\nschedule = \"every 10m\"\ndeadline = \"15m\"\nowner = \"it-drift\"\n",
        "",
    );
    format!("{without_defaults}\n{PAGING}")
}

#[test]
fn paging_sections_parse_and_route() {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", &with_paging(MAIN));
    d.write(
        "probes/kommune.toml",
        &CHANNELS.replace("name = \"Social og Familie\"", "name = \"Social\"\nowner = \"social\""),
    );
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.notifiers.len(), 2);
    assert_eq!(c.notifier("ops").unwrap().fallback.as_deref(), Some("mail-ops"));
    assert_eq!(c.paging.reminder_interval, Some(Duration::from_secs(7200)));
    assert_eq!(c.paging.fallback_after, Duration::from_secs(300));
    assert_eq!(
        c.channel("social-mail").unwrap().notify,
        vec!["mail-ops"],
        "owner route"
    );
    assert_eq!(c.channel("retired-mail").unwrap().notify, vec!["ops"], "defaults");
    assert_eq!(c.silences.len(), 1);
    assert!(c.heartbeat.is_some());
}

#[test]
fn paging_errors_name_their_place() {
    let main = with_paging(MAIN).replace("owner = \"social\"\nuntil", "channel = \"social-mail\"\nuntil");
    let e = one_error(
        &main.replace("fallback = \"mail-ops\"", "fallback = \"nobody\""),
        CHANNELS,
    );
    assert_eq!(e.key.as_deref(), Some("notifier.fallback"));
    assert!(e.message.contains("no [[notifier]] named \"nobody\""), "{e}");
    let e = one_error(
        &main.replace("routing_key = \"env:POSTCANARY_TEST_PW\"\n", ""),
        CHANNELS,
    );
    assert_eq!(e.key.as_deref(), Some("notifier.routing_key"));
    let e = one_error(
        &main.replace("notify = [\"mail-ops\"]", "notify = [\"mail-opz\"]"),
        CHANNELS,
    );
    assert_eq!(e.key.as_deref(), Some("owner.notify"));
    let e = one_error(
        &main.replace("until = \"2026-12-01T06:00:00+01:00\"", "until = \"next tuesday\""),
        CHANNELS,
    );
    assert_eq!(e.key.as_deref(), Some("silence.until"));
    let e = one_error(&main.replace("kind = \"email\"", "kind = \"pager\""), CHANNELS);
    assert_eq!(e.key.as_deref(), Some("notifier.kind"));
    let slack = main.replace(
        "[[owner]]",
        "[[notifier]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/SECRETPART\"\n\n[[owner]]",
    );
    let e = one_error(&slack, CHANNELS);
    assert_eq!(e.key.as_deref(), Some("notifier.url"));
    assert!(!e.to_string().contains("SECRETPART"), "{e}");
    let e = one_error(
        MAIN,
        &CHANNELS.replace("inbox = \"social\"", "inbox = \"social\"\nnotify = [\"ghost\"]"),
    );
    assert_eq!(e.key.as_deref(), Some("channel.notify"));
}
