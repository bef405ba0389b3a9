//! `[vantage]`: names, quorum, and their errors.

use crate::config::vantage::valid_vantage_name;
use crate::config::Config;

fn load(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    Config::load(&path).map_err(|e| e.to_string())
}

#[test]
fn vantage_section_and_its_errors() {
    let c = load("[vantage]\nname = \"east\"\n").unwrap();
    let v = c.vantage.unwrap();
    assert_eq!(
        (v.name.as_str(), v.quorum, v.slack),
        ("east", 1, std::time::Duration::ZERO)
    );
    assert!(load("").unwrap().vantage.is_none());

    let e = load("# comment\n[vantage]\nname = \"two words\"\nquorum = 0\n").unwrap_err();
    assert!(e.contains("c.toml:3") && e.contains("vantage.name"), "{e}");
    assert!(
        e.contains("c.toml:4") && e.contains("vantage.quorum") && e.contains("at least 1"),
        "{e}"
    );
    // A quorum above 1 needs several instances on one PostgreSQL ledger.
    let e = load("[vantage]\nname = \"east\"\nquorum = 2\n").unwrap_err();
    assert!(e.contains("c.toml:3") && e.contains("ha = true"), "{e}");
    let e = load("[vantage]\nname = \"east\"\nwhere = \"x\"\n").unwrap_err();
    assert!(e.contains("where"), "unknown keys are errors: {e}");
}

#[test]
fn vantage_names() {
    assert!(valid_vantage_name("aarhus-dc1"));
    assert!(valid_vantage_name("a.b_c"));
    assert!(!valid_vantage_name(""));
    assert!(!valid_vantage_name("two words"));
    assert!(!valid_vantage_name("x/y"));
    assert!(!valid_vantage_name(&"x".repeat(65)));
}
