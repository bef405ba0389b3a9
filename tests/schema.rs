//! The committed JSON Schema (docs/postcanary.schema.json) is exactly what
//! `postcanary schema` prints, and the shipped example config validates
//! against it (and a config with an unknown key does not).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generated() -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_postcanary"))
        .arg("schema")
        .output()
        .expect("run postcanary schema");
    assert!(
        out.status.success(),
        "postcanary schema failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("schema output is JSON")
}

fn toml_as_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::to_value(value).expect("TOML as JSON")
}

fn validator() -> jsonschema::Validator {
    jsonschema::validator_for(&generated()).expect("the schema is a valid JSON Schema")
}

fn errors(v: &jsonschema::Validator, instance: &serde_json::Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn committed_schema_is_current() {
    let path = root().join("docs/postcanary.schema.json");
    let committed = std::fs::read_to_string(&path).expect("docs/postcanary.schema.json exists");
    let committed: serde_json::Value = serde_json::from_str(&committed).expect("committed schema is JSON");
    assert!(
        committed == generated(),
        "docs/postcanary.schema.json is stale; regenerate it with\n  cargo run -- schema > docs/postcanary.schema.json"
    );
}

#[test]
fn example_config_validates() {
    let v = validator();
    let mut files = vec![root().join("postcanary.example.toml")];
    let mut probes: Vec<PathBuf> = std::fs::read_dir(root().join("probes"))
        .expect("probes/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    probes.sort();
    assert!(!probes.is_empty());
    files.extend(probes);
    for file in files {
        let errs = errors(&v, &toml_as_json(&file));
        assert!(errs.is_empty(), "{}:\n{}", file.display(), errs.join("\n"));
    }
}

#[test]
fn schema_refuses_what_the_loader_refuses() {
    let v = validator();
    let bad = |toml_text: &str| {
        let value: toml::Value = toml::from_str(toml_text).expect("test TOML");
        let json = serde_json::to_value(value).expect("as JSON");
        assert!(!errors(&v, &json).is_empty(), "should be invalid:\n{toml_text}");
    };
    // Unknown keys (deny_unknown_fields), at the top and inside a table.
    bad("colour = \"red\"\n");
    bad("[[sender]]\nname = \"r\"\nkind = \"smtp\"\nfrom = \"a@b\"\nhots = \"x\"\n");
    // Secrets are references, never inline.
    bad("[[sender]]\nname = \"r\"\nkind = \"smtp\"\nfrom = \"a@b\"\npassword = \"hunter2\"\n");
    // Durations, schedules, enums.
    bad("[defaults]\ndeadline = \"2 minutes\"\n");
    bad("[defaults]\nschedule = \"hourly\"\n");
    bad("[[inbox]]\nname = \"i\"\nkind = \"pop3\"\nusername = \"u\"\n");
    bad("[[inbox]]\nname = \"i\"\nkind = \"imap\"\nusername = \"u\"\nafter_confirm = \"archive\"\n");
    // Required keys.
    bad("[[channel]]\nid = \"x\"\nkind = \"mail\"\n");
}
