//! `[metrics]` and the channel index (issue 20).

use super::*;

fn load(main_extra: &str) -> Config {
    set_pw();
    let d = Dir::new();
    let path = d.write("postcanary.toml", &format!("{MAIN}\n{main_extra}"));
    d.write("probes/kommune.toml", CHANNELS);
    Config::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn metrics_go_by_owner_unless_configured_by_channel() {
    assert_eq!(load("").metrics.by, metrics::MetricsBy::Owner);
    assert_eq!(
        load("[metrics]\nby = \"channel\"\n").metrics.by,
        metrics::MetricsBy::Channel
    );
    let e = one_error(&format!("{MAIN}\n[metrics]\nby = \"inbox\"\n"), CHANNELS);
    assert_eq!(file_name(&e), "postcanary.toml");
    assert!(e.to_string().contains("inbox"), "{e}");
}

#[test]
fn channels_are_found_by_id_through_the_index() {
    let c = load("");
    assert_eq!(c.channel("retired-mail").map(|ch| ch.id.as_str()), Some("retired-mail"));
    assert_eq!(c.channel("social-mail").map(|ch| ch.id.as_str()), Some("social-mail"));
    assert!(c.channel("postcanary:inbox:social").is_none());
    // Channels changed after the index was built: still right.
    let mut changed = c.clone();
    changed.channels.reverse();
    assert_eq!(
        changed.channel("retired-mail").map(|ch| ch.id.as_str()),
        Some("retired-mail")
    );
    changed.channels.pop();
    assert!(
        changed.channel("social-mail").is_none(),
        "{:?}",
        changed.channel("social-mail").map(|c| &c.id)
    );
    assert!(changed.channel("retired-mail").is_some());
}
