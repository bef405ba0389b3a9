//! Every metric the Grafana dashboard and the Prometheus rules in deploy/ use
//! is one the daemon exports (src/server/metrics.rs), so a renamed metric
//! cannot leave a silent panel or an alert that never fires.

use std::collections::BTreeSet;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Names declared with `# TYPE name kind` in the exposition code; a
/// histogram also exports `_bucket`, `_sum` and `_count`.
fn exported() -> BTreeSet<String> {
    let src = std::fs::read_to_string(root().join("src/server/metrics.rs")).expect("metrics.rs");
    let mut names = BTreeSet::new();
    for line in src.lines() {
        let Some(rest) = line.split("# TYPE ").nth(1) else {
            continue;
        };
        let mut words = rest.split(|c: char| c.is_whitespace() || c == '"');
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        names.insert(name.to_string());
        if kind == "histogram" || kind == "summary" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

fn used_in(text: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("postcanary_") {
        let start = i + pos;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start
            + text[start..]
                .bytes()
                .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
                .count();
        if boundary {
            used.insert(text[start..end].to_string());
        }
        i = end;
    }
    used
}

#[test]
fn deploy_files_use_only_exported_metrics() {
    let exported = exported();
    assert!(exported.contains("postcanary_probes_total"), "parsed {exported:?}");
    let mut checked = 0;
    for (dir, ext) in [("deploy/grafana", "json"), ("deploy/prometheus", "yml")] {
        for entry in std::fs::read_dir(root().join(dir)).expect(dir) {
            let path = entry.expect("dir entry").path();
            if path.extension().is_none_or(|x| x != ext) {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            let used = used_in(&text);
            assert!(!used.is_empty(), "{} uses no postcanary metric", path.display());
            let unknown: Vec<_> = used.difference(&exported).collect();
            assert!(
                unknown.is_empty(),
                "{} uses metrics the daemon does not export: {unknown:?}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked >= 2, "expected the dashboard and the rules");
}

#[test]
fn the_scan_finds_names_and_skips_labels() {
    let used = used_in(r#"rate(postcanary_probes_total{job="postcanary"}[5m]) / my_postcanary_x"#);
    assert_eq!(
        used.into_iter().collect::<Vec<_>>(),
        vec!["postcanary_probes_total".to_string()]
    );
}
