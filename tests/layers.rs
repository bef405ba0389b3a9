//! The layering of src/, held against the table in ARCHITECTURE.md.
//!
//! Reads every `use crate::…`, `use super::…`, `use self::…` tree and every
//! inline `crate::…`/`super::…` path in src/, resolves each to the module file
//! it names, maps both ends to their unit in the table (longest module-path
//! prefix wins) and fails on:
//! - a file in src/ that no unit of the table covers;
//! - an import that goes up a layer;
//! - an import between two units of one layer whose rule is `alone`;
//! - any import circle between units, or between the modules (files) of one
//!   unit.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug)]
struct Layer {
    rank: usize,
    name: String,
    /// Units of this layer may import each other (without circles).
    siblings: bool,
}

struct Table {
    layers: Vec<Layer>,
    /// Module path (`ledger::sqlite`) → index into `layers`.
    units: BTreeMap<String, usize>,
}

fn table(architecture: &str) -> Table {
    let begin = architecture
        .find("<!-- layers:begin -->")
        .expect("ARCHITECTURE.md has no `<!-- layers:begin -->` marker");
    let end = architecture
        .find("<!-- layers:end -->")
        .expect("ARCHITECTURE.md has no `<!-- layers:end -->` marker");
    let mut layers = Vec::new();
    let mut units = BTreeMap::new();
    for line in architecture[begin..end].lines() {
        let cells: Vec<&str> = line.trim().trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 3 || !cells[0].starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let (rank, name) = cells[0].split_once(' ').expect("layer cell is `N name`");
        let rank: usize = rank.parse().expect("layer rank is a number");
        let siblings = match cells[2] {
            s if s.starts_with("siblings") => true,
            s if s.starts_with("alone") => false,
            other => panic!("layer {name}: rule must start with `siblings` or `alone`, not {other:?}"),
        };
        let index = layers.len();
        layers.push(Layer {
            rank,
            name: name.to_string(),
            siblings,
        });
        for unit in cells[1].split(',') {
            let unit = unit.trim().trim_matches('`').to_string();
            assert!(!unit.is_empty(), "empty unit in layer {name}");
            assert!(units.insert(unit.clone(), index).is_none(), "unit {unit} listed twice");
        }
    }
    assert!(layers.len() >= 3, "the layer table in ARCHITECTURE.md has too few rows");
    Table { layers, units }
}

impl Table {
    /// The unit covering a module path: its longest listed prefix.
    fn unit_of(&self, module: &[String]) -> Option<String> {
        (1..=module.len())
            .rev()
            .map(|n| module[..n].join("::"))
            .find(|p| self.units.contains_key(p))
    }
}

/// src/a/b.rs and src/a/b/mod.rs → [a, b]; src/lib.rs → [].
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib" || p == "main") {
        parts.pop();
    }
    parts
}

fn is_module(src: &Path, module: &[String]) -> bool {
    if module.is_empty() {
        return true;
    }
    let mut p = src.to_path_buf();
    for s in module {
        p.push(s);
    }
    p.with_extension("rs").is_file() || p.join("mod.rs").is_file()
}

/// The longest prefix of `path` that is a module file.
fn resolve(src: &Path, path: &[String]) -> Vec<String> {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| is_module(src, m))
        .unwrap_or_default()
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = match line.find("//") {
            // A `//` inside a string literal (a URL) cuts the line short; harmless here.
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expands one use tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<Vec<String>> {
    // Drop renames (`x as y`) before the whitespace goes.
    let mut words: Vec<&str> = Vec::new();
    let mut it = tree.split_whitespace().peekable();
    while let Some(w) = it.next() {
        if w == "as" {
            // The rename's name, maybe with a trailing `,` or `}` that must stay.
            if let Some(name) = it.next() {
                words.push(name.trim_start_matches(is_ident));
            }
            continue;
        }
        words.push(w);
    }
    let tree: String = words.concat();
    let mut out = Vec::new();
    expand_into(&tree, &mut Vec::new(), &mut out);
    out
}

fn expand_into(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Some(open) = tree.find('{') {
        let head = &tree[..open];
        let close = tree.rfind('}').filter(|c| *c > open).unwrap_or(tree.len());
        let inner = &tree[open + 1..close];
        let base = prefix.len();
        prefix.extend(head.split("::").filter(|s| !s.is_empty()).map(str::to_string));
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_into(&inner[start..i], prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand_into(&inner[start..], prefix, out);
        prefix.truncate(base);
    } else {
        let mut path = prefix.clone();
        path.extend(
            tree.split("::")
                .filter(|s| !s.is_empty() && *s != "*" && *s != "self")
                .map(|s| s.chars().take_while(|c| is_ident(*c)).collect::<String>()),
        );
        if !path.is_empty() {
            out.push(path);
        }
    }
}

/// Makes `path` absolute, seen from the file whose module path is `here`;
/// `None` for a path into another crate.
fn absolute(src: &Path, here: &[String], path: &[String]) -> Option<Vec<String>> {
    let first = path.first()?;
    let mut at: Vec<String> = here.to_vec();
    let rest: &[String] = match first.as_str() {
        "crate" => {
            at.clear();
            &path[1..]
        }
        "super" => {
            let mut i = 0;
            // From a non-mod.rs file, `self` is the file's module: `super` is its parent.
            while path.get(i).is_some_and(|s| s == "super") {
                at.pop();
                i += 1;
            }
            &path[i..]
        }
        "self" => &path[1..],
        _ => {
            // A bare name in a `use`: a child module of this one, or an external crate.
            let mut child = at.clone();
            child.push(first.clone());
            if !is_module(src, &child) {
                return None;
            }
            path
        }
    };
    at.extend(rest.iter().cloned());
    Some(at)
}

/// The byte offset of the `}` that closes the `{` at `open`, skipping string
/// and character literals.
fn closing(code: &str, open: usize) -> usize {
    let b = code.as_bytes();
    let (mut depth, mut i) = (0usize, open);
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'\'' if i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') => {
                i += if b[i + 1] == b'\\' { 3 } else { 2 };
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
        i += 1;
    }
    b.len()
}

/// Inline modules (`mod tests { … }`): (start, end, name).
fn inline_modules(code: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = code[i..].find("mod ") {
        let at = i + off;
        i = at + 4;
        if at > 0 && is_ident(code.as_bytes()[at - 1] as char) {
            continue;
        }
        let name: String = code[at + 4..].chars().take_while(|c| is_ident(*c)).collect();
        let after = code[at + 4 + name.len()..].trim_start();
        if name.is_empty() || !after.starts_with('{') {
            continue;
        }
        let open = code.len() - after.len();
        out.push((at, closing(code, open), name));
    }
    out
}

/// Every module path a file names, with the line it is on.
fn imports(src: &Path, file: &Path) -> Vec<(usize, Vec<String>)> {
    let text = std::fs::read_to_string(file).expect("read source file");
    let code = strip_comments(&text);
    let file_module = module_of(src, file);
    let inline = inline_modules(&code);
    // The module a byte of the file is in: the file's, or an inline one in it.
    let module_at = |at: usize| {
        let mut m = file_module.clone();
        m.extend(
            inline
                .iter()
                .filter(|(s, e, _)| (*s..*e).contains(&at))
                .map(|(_, _, n)| n.clone()),
        );
        m
    };
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut covered: Vec<(usize, usize)> = Vec::new();
    // `use` statements, including bare child-module roots.
    let bytes = code.as_bytes();
    let mut i = 0;
    while let Some(off) = code[i..].find("use ") {
        let at = i + off;
        i = at + 4;
        // A `use` item: first on its line, or after a visibility.
        let line_start = code[..at].rfind('\n').map_or(0, |n| n + 1);
        let lead = code[line_start..at].trim();
        if !(lead.is_empty() || lead == "pub" || lead.starts_with("pub(")) {
            continue;
        }
        let Some(end) = code[at..].find(';') else { break };
        let tree = &code[at + 4..at + end];
        covered.push((at, at + end));
        for path in expand(tree) {
            if let Some(abs) = absolute(src, &module_at(at), &path) {
                found.push((line_of(at), resolve(src, &abs)));
            }
        }
    }
    // Inline paths outside `use` statements.
    for root in ["crate::", "super::"] {
        let mut i = 0;
        while let Some(off) = code[i..].find(root) {
            let at = i + off;
            i = at + root.len();
            if at > 0 && is_ident(bytes[at - 1] as char) {
                continue;
            }
            if covered.iter().any(|(s, e)| (*s..*e).contains(&at)) {
                continue;
            }
            let path: String = code[at..].chars().take_while(|c| is_ident(*c) || *c == ':').collect();
            let segs: Vec<String> = path.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
            if let Some(abs) = absolute(src, &module_at(at), &segs) {
                found.push((line_of(at), resolve(src, &abs)));
            }
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn imports_only_go_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let table = table(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("read ARCHITECTURE.md"));
    let mut files = Vec::new();
    rust_files(&src, &mut files);

    let mut problems = Vec::new();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut file_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let shown = file.strip_prefix(root).unwrap_or(file).display().to_string();
        if module.is_empty() {
            continue; // lib.rs, main.rs: the crate root only declares modules
        }
        let Some(from) = table.unit_of(&module) else {
            problems.push(format!(
                "{shown}: module `{}` is in no layer of ARCHITECTURE.md",
                module.join("::")
            ));
            continue;
        };
        for (line, target) in imports(&src, file) {
            if target.is_empty() {
                continue;
            }
            let Some(to) = table.unit_of(&target) else {
                problems.push(format!(
                    "{shown}:{line}: imports `{}`, which is in no layer",
                    target.join("::")
                ));
                continue;
            };
            let (here, there) = (module.join("::"), target.join("::"));
            if here != there {
                file_edges.entry(here).or_default().insert(there);
            }
            if to == from {
                continue;
            }
            let (lf, lt) = (&table.layers[table.units[&from]], &table.layers[table.units[&to]]);
            let path = target.join("::");
            if lt.rank > lf.rank {
                problems.push(format!(
                    "{shown}:{line}: `{from}` ({}) imports `{path}` from `{to}` ({}), a layer above",
                    lf.name, lt.name
                ));
            } else if lt.rank == lf.rank && !lf.siblings {
                problems.push(format!(
                    "{shown}:{line}: `{from}` imports `{path}` from `{to}`; units of the {} layer do not import each other",
                    lf.name
                ));
            }
            edges.entry(from.clone()).or_default().insert(to);
        }
    }

    // Circles: a depth-first search over the unit graph.
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
        circles: &mut Vec<String>,
    ) {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            match state.get(m.as_str()).copied().unwrap_or(0) {
                0 => visit(m, edges, state, stack, circles),
                1 => {
                    let start = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut c = stack[start..].to_vec();
                    c.push(m.clone());
                    circles.push(c.join(" → "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
    }
    let mut state = BTreeMap::new();
    let mut circles = Vec::new();
    for n in edges.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            visit(n, &edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    for c in circles {
        problems.push(format!("import circle: {c}"));
    }
    // And between the files (modules) of one unit.
    let mut state = BTreeMap::new();
    let mut circles = Vec::new();
    for n in file_edges.keys() {
        if state.get(n.as_str()).copied().unwrap_or(0) == 0 {
            visit(n, &file_edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    for c in circles {
        problems.push(format!("import circle between modules: {c}"));
    }
    assert!(
        problems.is_empty(),
        "{} layering problem(s) (see the layer table in ARCHITECTURE.md):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_relative_imports() {
    let paths = expand("crate::{config::{Config, form::Action}, ledger::Store}");
    assert_eq!(
        paths,
        vec![
            vec!["crate", "config", "Config"],
            vec!["crate", "config", "form", "Action"],
            vec!["crate", "ledger", "Store"],
        ]
    );
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let here = vec!["inbox".to_string(), "imap".to_string()];
    let abs = absolute(&src, &here, &["super".into(), "Matcher".into()]);
    assert_eq!(abs, Some(vec!["inbox".to_string(), "Matcher".to_string()]));
}
