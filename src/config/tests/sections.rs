//! Config loading, per section: forms and logins, Graph inboxes, offline
//! validation, DKIM keys, step lists.

use super::*;

const FORMS: &str = r#"[[login]]
name = "mitid"
kind = "saml"
start = "https://selvbetjening.kommune.example/mitid/kontakt"
idp = "https://idp.nemlog-in.example/"
acs = "https://selvbetjening.kommune.example/saml/acs"
loa = "https://data.gov.dk/concept/core/nsis/loa/Substantial"

[[channel]]
id = "kontakt-form"
name = "Kontaktformular"
kind = "form"
inbox = "social"
[[channel.step]]
get = "https://www.kommune.example/kontakt"
extract = { build = "input[name=form_build_id] @value" }
[[channel.step]]
submit = "form#kontakt"
fields = { message = "Test {{token}} {{build}}" }
receipt = "regex:Kvittering: (\\S+)"

[[channel]]
id = "mitid-handoff"
name = "MitID (produktion)"
kind = "form"
expect = "handoff"
[[channel.step]]
handoff = "mitid"
"#;

#[test]
fn form_channels_and_logins_load() {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", MAIN);
    d.write("probes/kommune.toml", FORMS);
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let ChannelKind::Form { steps } = &c.channel("kontakt-form").unwrap().kind else {
        panic!("form")
    };
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[1].name, "step 2 (submit)");
    assert_eq!(c.channel("mitid-handoff").unwrap().expect, Expect::Handoff);
    assert_eq!(c.login("mitid").unwrap().cert_min_days, 30);
    assert!(c.login("mitid").unwrap().require_signed);
}

#[test]
fn form_step_errors_name_the_step_and_line() {
    // An unknown variable: `{{build}}` is extracted by step 1 only if it comes first.
    let swapped = FORMS.replace("{{token}} {{build}}", "{{token}} {{receipt_no}}");
    let e = one_error(MAIN, &swapped);
    assert_eq!(file_name(&e), "kommune.toml");
    assert_eq!(e.key.as_deref(), Some("channel.step[2].fields"));
    assert_eq!(e.line, Some(19));
    assert!(
        e.message.contains("`{{receipt_no}}` is neither built in"),
        "{}",
        e.message
    );

    let e = one_error(MAIN, &FORMS.replace("form#kontakt", "form[[kontakt"));
    assert_eq!(e.key.as_deref(), Some("channel.step[2].submit"));
    assert_eq!(e.line, Some(18));
    assert!(e.message.contains("invalid CSS selector"), "{}", e.message);

    let e = one_error(
        MAIN,
        &FORMS.replace("handoff = \"mitid\"", "handoff = \"mitid-erhverv\""),
    );
    assert_eq!(e.key.as_deref(), Some("channel.step[1].handoff"));
    assert!(
        e.message.contains("no [[login]] named \"mitid-erhverv\""),
        "{}",
        e.message
    );

    let e = one_error(
        MAIN,
        &FORMS.replace(
            "get = \"https://www.kommune.example/kontakt\"",
            "get = \"http://www.kommune.example/kontakt\"",
        ),
    );
    assert!(
        e.message.contains("plain http is allowed only for loopback"),
        "{}",
        e.message
    );

    let both = FORMS.replace(
        "submit = \"form#kontakt\"",
        "submit = \"form#kontakt\"\nget = \"https://x.example/\"",
    );
    let e = one_error(MAIN, &both);
    assert!(e.message.contains("a step does one thing"), "{}", e.message);

    let errs = errors_of(MAIN, &FORMS.replace("expect = \"handoff\"\n", ""));
    assert!(
        errs.iter().any(|e| e
            .message
            .contains("must be the last step of an expect = \"handoff\" channel")),
        "{errs:?}"
    );

    let e = one_error(
        MAIN,
        &FORMS.replace("idp = \"https://idp.nemlog-in.example/\"", "idp = \"nemlog-in\""),
    );
    assert_eq!(e.key.as_deref(), Some("login.idp"));
    assert_eq!(e.line, Some(5));
}

/// MAIN with a second, Graph inbox appended.
fn with_graph_inbox(extra: &str) -> String {
    format!(
        "{MAIN}\n[[inbox]]\nname = \"m365\"\nkind = \"graph\"\nusername = \"social@kommune.example\"\n\
         tenant = \"kommune.onmicrosoft.com\"\nclient_id = \"11111111-2222-3333-4444-555555555555\"\n\
         client_secret = \"env:POSTCANARY_TEST_PW\"\n{extra}"
    )
}

#[test]
fn graph_inboxes_take_junk_nested_folders_and_the_subject_filter() {
    set_pw();
    let d = Dir::new();
    let main = with_graph_inbox("mailbox = \"Inbox/Postcanary\"\njunk = \"junkemail\"\nfilter = \"subject\"\n");
    let path = d.write("postcanary.toml", &main);
    d.write("probes/kommune.toml", CHANNELS);
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let inbox = cfg.inboxes.iter().find(|i| i.name == "m365").expect("inbox");
    let g = inbox.graph_config().expect("graph");
    assert_eq!(g.folder, "Inbox/Postcanary");
    assert_eq!(g.role, crate::config::Folder::Main);
    assert!(g.subject_filter);
    assert_eq!(g.cursor_key(), "m365");
    let junk = inbox
        .junk_watcher()
        .and_then(|j| j.graph_config())
        .expect("junk watcher");
    assert_eq!(junk.folder, "junkemail");
    assert_eq!(junk.role, crate::config::Folder::Junk("junkemail".into()));
    assert_eq!(junk.cursor_key(), "m365#junkemail");
    assert_eq!(junk.watcher_name(), "m365 (junkemail)");
    assert!(
        g.credentials.token_url.contains("kommune.onmicrosoft.com"),
        "{}",
        g.credentials.token_url
    );
}

#[test]
fn filter_errors_name_their_place() {
    let main = with_graph_inbox("filter = \"token\"\n");
    let e = one_error(&main, CHANNELS);
    assert_eq!(e.key.as_deref(), Some("inbox.filter"));
    assert!(e.message.contains("\"subject\""), "{}", e.message);

    let main = MAIN.replace(
        "after_confirm = \"move:Postcanary\"",
        "after_confirm = \"move:Postcanary\"\nfilter = \"subject\"",
    );
    let e = one_error(&main, CHANNELS);
    assert_eq!(e.key.as_deref(), Some("inbox.filter"));
    assert!(e.message.contains("kind = \"graph\""), "{}", e.message);
}

#[test]
fn offline_validation_reads_no_secret_but_still_refuses_inline_ones() {
    let d = Dir::new();
    let main = MAIN.replace("env:POSTCANARY_TEST_PW", "env:POSTCANARY_NOT_SET_ANYWHERE");
    let path = d.write("postcanary.toml", &main);
    d.write("probes/kommune.toml", CHANNELS);
    assert!(Config::load(&path).is_err(), "online, the missing variable is an error");
    let c = Config::load_offline(&path).expect("offline, no secret is read");
    assert_eq!(c.inboxes[0].password.expose(), OFFLINE_SECRET);
    let path = d.write(
        "postcanary.toml",
        &MAIN.replace("env:POSTCANARY_TEST_PW", "Hunter2Secret"),
    );
    let errs = Config::load_offline(&path)
        .expect_err("inline secrets are refused offline too")
        .0;
    assert_eq!(errs[0].key.as_deref(), Some("inbox.password"));
}

const DKIM_SEED: &str = "n4Ni+HpISpVObnQMW0wOhCKROaIKqKtW/2ZYb2p9KcU=";

fn with_dkim(keys: &str) -> String {
    MAIN.replace(
        "from = \"Postcanary <canary@kommune.example>\"\n",
        &format!("from = \"Postcanary <canary@kommune.example>\"\n{keys}"),
    )
}

#[test]
fn dkim_keys_load_and_sign() {
    set_pw();
    let d = Dir::new();
    d.write("dkim.key", DKIM_SEED);
    let path = d.write(
        "postcanary.toml",
        &with_dkim("dkim_domain = \"kommune.example\"\ndkim_selector = \"pc2025\"\ndkim_key = \"file:dkim.key\"\n"),
    );
    d.write("probes/kommune.toml", CHANNELS);
    let c = Config::load(&path).unwrap();
    let dkim = c.sender("relay").unwrap().dkim.as_ref().unwrap();
    assert_eq!(
        (dkim.domain.as_str(), dkim.selector.as_str()),
        ("kommune.example", "pc2025")
    );
    assert_eq!(dkim.algorithm_name(), "ed25519-sha256");
    assert!(!format!("{:?}", c.sender("relay").unwrap()).contains(DKIM_SEED));
}

#[test]
fn dkim_errors_name_file_line_and_key() {
    let e = one_error(
        &with_dkim("dkim_domain = \"kommune.example\"\ndkim_selector = \"pc2025\"\n"),
        CHANNELS,
    );
    assert_eq!(file_name(&e), "postcanary.toml");
    assert_eq!(e.key.as_deref(), Some("sender.dkim_key"));
    assert!(e.message.contains("missing dkim_key"), "{}", e.message);

    let e = one_error(
        &with_dkim(
            "dkim_domain = \"kommune.example\"\ndkim_selector = \"pc2025\"\ndkim_key = \"env:POSTCANARY_TEST_PW\"\n",
        ),
        CHANNELS,
    );
    assert_eq!(e.key.as_deref(), Some("sender.dkim_key"));
    assert_eq!(e.line, Some(20), "the dkim_key line");
    assert!(e.message.contains("base64 Ed25519 seed"), "{}", e.message);
    assert!(!e.message.contains("pw-from-env"));

    std::env::set_var("POSTCANARY_TEST_DKIM", DKIM_SEED);
    let e = one_error(
        &with_dkim(
            "dkim_domain = \"other.example\"\ndkim_selector = \"pc2025\"\ndkim_key = \"env:POSTCANARY_TEST_DKIM\"\n",
        ),
        CHANNELS,
    );
    assert_eq!(e.key.as_deref(), Some("sender.dkim_domain"));
    assert!(e.message.contains("DMARC would not align"), "{}", e.message);
    let e = one_error(
        &with_dkim(
            "dkim_domain = \"kommune.example\"\ndkim_selector = \"pc 2025\"\ndkim_key = \"env:POSTCANARY_TEST_DKIM\"\n",
        ),
        CHANNELS,
    );
    assert_eq!(e.key.as_deref(), Some("sender.dkim_selector"));
}

const STEP_LISTS: &str = r#"[[step_list]]
name = "kontakt"
params = ["path", "topic"]
[[step_list.step]]
get = "https://www.kommune.example/{{path}}"
[[step_list.step]]
submit = "form#kontakt"
button = "Send"
fields = { emne = ["{{topic}}", "andet"], message = "Test {{token}}", pin = "env:POSTCANARY_TEST_PW" }

[[channel]]
id = "born"
name = "Børn"
kind = "form"
inbox = "social"
[[channel.step]]
use = "kontakt"
params = { path = "born/kontakt", topic = "born" }

[[channel]]
id = "aeldre"
name = "Ældre"
kind = "form"
inbox = "social"
[[channel.step]]
use = "kontakt"
params = { path = "aeldre/kontakt", topic = "aeldre" }
[[channel.step]]
get = "https://www.kommune.example/tak"
"#;

#[test]
fn step_lists_expand_with_their_parameters_and_secret_fields_resolve() {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", MAIN);
    d.write("probes/kommune.toml", STEP_LISTS);
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let ChannelKind::Form { steps } = &c.channel("aeldre").unwrap().kind else {
        panic!("form")
    };
    assert_eq!(steps.len(), 3);
    assert!(matches!(&steps[0].action, form::Action::Get(t) if t.0 == "https://www.kommune.example/aeldre/kontakt"));
    assert_eq!(steps[1].button, Some(form::Button::Text("Send".into())));
    let values: Vec<String> = steps[1]
        .fields
        .iter()
        .map(|(k, v)| match v {
            form::FieldValue::Text(t) => format!("{k}={}", t.0),
            form::FieldValue::Secret(s) => format!("{k}=secret:{}", s.expose().len()),
        })
        .collect();
    assert_eq!(
        values,
        ["emne=aeldre", "emne=andet", "message=Test {{token}}", "pin=secret:11"]
    );
    let ChannelKind::Form { steps } = &c.channel("born").unwrap().kind else {
        panic!("form")
    };
    assert!(matches!(&steps[0].action, form::Action::Get(t) if t.0.ends_with("/born/kontakt")));
}

#[test]
fn step_list_errors_name_the_list_line_and_the_use() {
    // A bad selector inside the list: the list's line, and where it is used.
    let errs = errors_of(MAIN, &STEP_LISTS.replace("form#kontakt", "form[[kontakt"));
    assert_eq!(errs.len(), 2, "one per use: {errs:#?}");
    let e = &errs[0];
    assert_eq!(e.key.as_deref(), Some("step_list.step[2].submit"));
    assert_eq!(e.line, Some(7));
    assert!(
        e.message.starts_with("step list \"kontakt\" (used at "),
        "{}",
        e.message
    );
    assert!(e.message.contains("kommune.toml:17"), "{}", e.message);

    let e = one_error(
        MAIN,
        &STEP_LISTS.replace("topic = \"born\" }", "topic = \"born\", tema = \"x\" }"),
    );
    assert_eq!(e.key.as_deref(), Some("channel.step[1].params"));
    assert!(e.message.contains("no parameter \"tema\""), "{}", e.message);
    let e = one_error(MAIN, &STEP_LISTS.replace(", topic = \"born\" }", " }"));
    assert!(e.message.contains("needs the parameter \"topic\""), "{}", e.message);
    let e = one_error(
        MAIN,
        &STEP_LISTS.replace(
            "use = \"kontakt\"\nparams = { path = \"born",
            "use = \"kontak\"\nparams = { path = \"born",
        ),
    );
    assert!(e.message.contains("no [[step_list]] named \"kontak\""), "{}", e.message);
    let e = &errors_of(MAIN, &STEP_LISTS.replace("button = \"Send\"", "button = \"css:a[[\""))[0];
    assert_eq!(e.key.as_deref(), Some("step_list.step[2].button"));
    // A secret field that cannot be read names the variable, never a value.
    let e = &errors_of(
        MAIN,
        &STEP_LISTS.replace("env:POSTCANARY_TEST_PW", "env:POSTCANARY_SURELY_UNSET_PIN"),
    )[0];
    assert!(
        e.message.contains("POSTCANARY_SURELY_UNSET_PIN is not set"),
        "{}",
        e.message
    );
    assert_eq!(e.key.as_deref(), Some("step_list.step[2].fields"));
}

#[test]
fn login_continue_headers_and_ca_file_are_checked() {
    let login = FORMS.replace(
        "loa = \"https://data.gov.dk/concept/core/nsis/loa/Substantial\"",
        "loa = \"https://data.gov.dk/concept/core/nsis/loa/Substantial\"\ncontinue = [\"css:button[[\"]",
    );
    let e = one_error(MAIN, &login);
    assert_eq!(e.key.as_deref(), Some("login.continue"));
    let login = FORMS.replace("acs = ", "ca_file = \"intern-ca.pem\"\nacs = ");
    let e = one_error(MAIN, &login);
    assert_eq!(e.key.as_deref(), Some("login.ca_file"));
    assert!(e.message.contains("cannot read"), "{}", e.message);
    let login = FORMS.replace("acs = ", "headers = { \"bad header\" = \"x\" }\nacs = ");
    assert_eq!(one_error(MAIN, &login).key.as_deref(), Some("login.headers"));
}

#[test]
fn relay_connections_default_and_are_bounded() {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", MAIN);
    d.write("probes/kommune.toml", CHANNELS);
    let c = Config::load(&path).unwrap();
    let relay = c.sender("relay").unwrap();
    assert_eq!((relay.connections, relay.reuse), (DEFAULT_CONNECTIONS, true));

    let main = MAIN.replace("tls = \"none\"\nfrom", "tls = \"none\"\nconnections = 0\nfrom");
    let e = one_error(&main, CHANNELS);
    assert_eq!(e.key.as_deref(), Some("sender.connections"));
    assert!(e.message.contains("between 1 and 500"), "{}", e.message);

    let mx = "[[sender]]\nname = \"direct\"\nkind = \"mx\"\nreuse = false\nfrom = \"c@kommune.example\"\n";
    let errs = errors_of(&format!("{MAIN}\n{mx}"), CHANNELS);
    let e = errs
        .iter()
        .find(|e| e.key.as_deref() == Some("sender.reuse"))
        .unwrap_or_else(|| panic!("{errs:#?}"));
    assert!(e.message.contains("one connection per message"), "{}", e.message);
}
